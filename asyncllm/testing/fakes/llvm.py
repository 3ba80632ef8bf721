"""The LLVM model server protocol (``docs/protocols/llvm.md``), deterministic.

The output for an input is ``"<model>:<input as JSON>"`` reversed, so a test can tell which
input and which model an output belongs to. Models, their ``max_batch`` and a required key
are in ``server.state["llvm"]`` (see ``setup``); counters follow the statistics route.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common

OPTIMIZATION_TYPES = ("speed", "memory", "balanced")
LATENCY_MS = 0.5  # what the fake reports per input; deterministic

error_body = _common.error_only_body
_error = _common.error_only


def output_for(model: str, value: Any) -> str:
    """The fake model's answer: ``"<model>:<input as JSON>"`` reversed."""
    return f"{model}:{json.dumps(value, sort_keys=True)}"[::-1]


def _new_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "inferences": 0,
        "batches": 0,
        "errors": 0,
        "latency_total_ms": 0.0,
        "reloads": 0,
    }


def setup(
    server: FakeServer,
    *,
    models: tuple[str, ...] = ("resnet-50", "bert-base", "org/model v2"),
    max_batch: int = 32,
    api_key: str | None = None,
) -> None:
    """``server.state["llvm"]`` holds ``models`` (id -> Model), ``stats`` (id -> counters),
    ``api_key`` (a Bearer key to require, or None) and ``batch_sizes`` (every batch's length)."""
    started = time.monotonic()
    state: dict[str, Any] = {
        "models": {
            m: {
                "id": m,
                "name": m,
                "version": "1",
                "status": "ready",
                "optimization": "balanced",
                "max_batch": max_batch,
            }
            for m in models
        },
        "stats": {m: _new_stats() for m in models},
        "api_key": api_key,
        "batch_sizes": [],
    }
    server.state["llvm"] = state

    def refusal(request: web.Request) -> web.Response | None:
        """The error to send, if any: auth first, then the model's existence."""
        key = state["api_key"]
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return _error(401, "missing or invalid API key")
        model = request.match_info.get("model")
        if model is not None and model not in state["models"]:
            return _error(404, f"model {model!r} not found")
        return None

    def fail(model: str, status: int, message: str) -> web.Response:
        state["stats"][model]["errors"] += 1
        return _error(status, message)

    def parameters_error(body: dict[str, Any]) -> str | None:
        params = body.get("parameters", {})
        return None if isinstance(params, dict) else "'parameters' must be an object"

    async def list_models(request: web.Request) -> web.StreamResponse:
        return web.json_response({"models": list(state["models"].values())})

    async def model_info(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        return web.json_response(state["models"][model])

    async def infer(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        body = request["json"]
        stats = state["stats"][model]
        stats["requests"] += 1
        if not isinstance(body, dict) or "input" not in body:
            return fail(model, 400, "'input' is required")
        problem = parameters_error(body)
        if problem:
            return fail(model, 400, problem)
        stats["inferences"] += 1
        stats["latency_total_ms"] += LATENCY_MS
        return web.json_response(
            {
                "model": model,
                "output": output_for(model, body["input"]),
                "metrics": {"latency_ms": LATENCY_MS, "batch_size": 1},
            },
            headers={"x-request-id": f"llvm-{server.request_count}"},
        )

    async def batch_infer(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        body = request["json"]
        stats = state["stats"][model]
        stats["requests"] += 1
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return fail(model, 400, "'inputs' must be a non-empty array")
        problem = parameters_error(body)
        if problem:
            return fail(model, 400, problem)
        limit = state["models"][model]["max_batch"]
        if len(inputs) > limit:
            return fail(model, 413, f"batch of {len(inputs)} exceeds max_batch {limit}")
        state["batch_sizes"].append(len(inputs))
        stats["batches"] += 1
        stats["inferences"] += len(inputs)
        latency = LATENCY_MS * len(inputs)
        stats["latency_total_ms"] += latency
        metrics = {"latency_ms": latency, "batch_size": len(inputs)}
        return web.json_response(
            {
                "model": model,
                "results": [
                    {"output": output_for(model, value), "metrics": metrics} for value in inputs
                ],
            }
        )

    async def statistics(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        s = state["stats"][model]
        done = s["inferences"]
        return web.json_response(
            {
                "model": model,
                "requests": s["requests"],
                "inferences": done,
                "batches": s["batches"],
                "errors": s["errors"],
                "average_latency_ms": s["latency_total_ms"] / done if done else None,
                "optimization": state["models"][model]["optimization"],
                "reloads": s["reloads"],
            }
        )

    async def optimize(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        body = request["json"]
        kind = body.get("optimization_type") if isinstance(body, dict) else None
        if kind not in OPTIMIZATION_TYPES:
            return _error(400, f"optimization_type must be one of {', '.join(OPTIMIZATION_TYPES)}")
        state["models"][model]["optimization"] = kind
        return web.json_response({"model": model, "optimization_type": kind, "status": "optimized"})

    async def reload(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        state["stats"][model]["reloads"] += 1
        return web.json_response({"model": model, "status": "reloaded"})

    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "status": "ok",
                "version": "1.0.0-fake",
                "uptime_seconds": round(time.monotonic() - started, 3),
                "models_loaded": len(state["models"]),
            }
        )

    routes = [
        ("GET", "/models", list_models),
        ("GET", "/models/{model}", model_info),
        ("POST", "/models/{model}/infer", infer),
        ("POST", "/models/{model}/batch_infer", batch_infer),
        ("GET", "/models/{model}/statistics", statistics),
        ("POST", "/models/{model}/optimize", optimize),
        ("POST", "/models/{model}/reload", reload),
        ("GET", "/status", status),
    ]
    for method, path, handler in routes:
        server.add_route(method, path, _common.guarded(refusal, handler), error_body=error_body)
