"""The text-generation-inference protocol: /generate, /generate_stream (SSE), /info, /health,
/tokenize, and the OpenAI-compatible /v1/chat/completions and /v1/models.

``/generate`` answers ``"echo: <inputs>"``, one token per ``_common.pieces`` piece, ending with a
special ``</s>`` token (finish ``eos_token``) unless ``max_new_tokens`` or a ``stop`` sequence ends
it first. Errors use TGI's body ``{"error": ..., "error_type": ...}``.

Scripted stream errors: ``server.state["tgi_stream_errors"]`` is a list of ``(after_tokens,
error_type)``; each stream takes the first one and sends that error event after ``after_tokens``
tokens, then ends.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, openai

EOS = "</s>"
MODEL_ID = "fake/tgi-model"
# error_type -> status, as TGI's router maps its InferError kinds.
STATUS_OF = {
    "validation": 422,
    "generation": 424,
    "overloaded": 429,
    "incomplete_generation": 500,
    "healthcheck": 503,
}
# What an injected fault says it is; statuses TGI itself never sends get "unknown".
_TYPE_OF = {
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "incomplete_generation",
}


def error_body(status: int, message: str) -> Any:
    return {"error": message, "error_type": _TYPE_OF.get(status, "unknown")}


def _error(error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message, "error_type": error_type}, status=STATUS_OF[error_type]
    )


def _validate(params: Any) -> str | None:
    """The message TGI's validation gives for a bad parameter, or None."""
    if not isinstance(params, dict):
        return "`parameters` must be an object"
    positive = ("temperature", "top_p", "top_k", "typical_p", "repetition_penalty", "top_n_tokens")
    for name in positive:
        value = params.get(name)
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            return f"`{name}` must be strictly positive"
    for name in ("top_p", "typical_p"):
        value = params.get(name)
        if value is not None and value > 1:
            return f"`{name}` must be <= 1.0"
    value = params.get("max_new_tokens")
    if value is not None and (not isinstance(value, int) or value < 0):
        return "`max_new_tokens` must be a non-negative integer"
    stop = params.get("stop") or []
    if not isinstance(stop, list) or len(stop) > 4:
        return "`stop` supports up to 4 stop sequences"
    return None


def _generation(inputs: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """(tokens, generated_text, finish_reason) for the echo rule under the given parameters."""
    words = _common.pieces(_common.reply_text(inputs))
    limit = params.get("max_new_tokens")
    stops = params.get("stop") or []
    tokens: list[dict[str, Any]] = []
    text = ""
    finish = "eos_token"
    for i, piece in enumerate(words):
        if limit is not None and len(tokens) >= limit:
            finish = "length"
            break
        tokens.append({"id": 100 + i, "text": piece, "logprob": -0.25, "special": False})
        text += piece
        hit = next((s for s in stops if s and s in text), None)
        if hit is not None:
            finish = "stop_sequence"
            break
    if finish == "eos_token":
        if limit is not None and len(tokens) >= limit:
            finish = "length"
        else:
            tokens.append({"id": 2, "text": EOS, "logprob": -0.01, "special": True})
    if params.get("return_full_text"):
        text = inputs + text
    return tokens, text, finish


def _prefill(inputs: str) -> list[dict[str, Any]]:
    return [
        {"id": 10 + i, "text": piece, "logprob": None if i == 0 else -1.0}
        for i, piece in enumerate(_common.pieces(inputs))
    ]


def setup(server: FakeServer) -> None:
    def request_of(request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            return _error("validation", "missing field `inputs`")
        if not body["inputs"]:
            return _error("validation", "`inputs` cannot be empty")
        params = body.get("parameters") or {}
        problem = _validate(params)
        if problem is not None:
            return _error("validation", f"Input validation error: {problem}")
        return body["inputs"], params

    async def generate(request: web.Request) -> web.StreamResponse:
        parsed = request_of(request)
        if isinstance(parsed, web.Response):
            return parsed
        inputs, params = parsed
        tokens, text, finish = _generation(inputs, params)
        out: dict[str, Any] = {"generated_text": text}
        if params.get("details"):
            details: dict[str, Any] = {
                "finish_reason": finish,
                "generated_tokens": len(tokens),
                "seed": params.get("seed"),
                "prefill": _prefill(inputs) if params.get("decoder_input_details") else [],
                "tokens": tokens,
            }
            if params.get("top_n_tokens"):
                details["top_tokens"] = [[t] for t in tokens]
            out["details"] = details
        return web.json_response(out, headers={"x-request-id": f"tgi-{server.request_count}"})

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        parsed = request_of(request)
        if isinstance(parsed, web.Response):
            return parsed
        inputs, params = parsed
        tokens, text, finish = _generation(inputs, params)
        scripted: list[tuple[int, str]] = server.state.get("tgi_stream_errors") or []
        fail = scripted.pop(0) if scripted else None
        events: list[dict[str, Any]] = []
        for i, token in enumerate(tokens):
            if fail is not None and i == fail[0]:
                events.append({"error": f"injected {fail[1]} error", "error_type": fail[1]})
                break
            event: dict[str, Any] = {
                "index": i,
                "token": token,
                "generated_text": None,
                "details": None,
            }
            if params.get("top_n_tokens"):
                event["top_tokens"] = [token]
            if i == len(tokens) - 1:
                event["generated_text"] = text
                if params.get("details"):
                    event["details"] = {
                        "finish_reason": finish,
                        "generated_tokens": len(tokens),
                        "input_length": len(_common.pieces(inputs)),
                        "seed": params.get("seed"),
                    }
            events.append(event)
        # TGI writes "data:" with no space after the colon
        chunks = (b"data:" + json.dumps(event).encode() + b"\n\n" for event in events)
        return await _common.stream(request, chunks)

    async def info(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 1024,
                "max_total_tokens": 2048,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "3.3.6-dev0",
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(request: web.Request) -> web.StreamResponse:
        if server.state.get("tgi_unhealthy"):
            return _error("healthcheck", "unhealthy")
        return web.Response(status=200)

    async def tokenize(request: web.Request) -> web.StreamResponse:
        parsed = request_of(request)
        if isinstance(parsed, web.Response):
            return parsed
        inputs, _ = parsed
        spans = []
        offset = 0
        for i, piece in enumerate(_common.pieces(inputs)):
            spans.append(
                {"id": 10 + i, "text": piece, "start": offset, "stop": offset + len(piece)}
            )
            offset += len(piece)
        return web.json_response(spans)

    server.add_route("POST", "/generate", generate, error_body=error_body)
    server.add_route("POST", "/generate_stream", generate_stream, error_body=error_body)
    server.add_route("GET", "/info", info, error_body=error_body)
    server.add_route("GET", "/health", health, error_body=error_body)
    server.add_route("POST", "/tokenize", tokenize, error_body=error_body)
    for method, path, handler in openai.routes("/v1"):
        if path != "/v1/embeddings":  # TGI serves OpenAI's chat and models, with its own errors
            server.add_route(method, path, handler, error_body=error_body)
