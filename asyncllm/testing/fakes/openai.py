"""The OpenAI protocol under ``/v1``: chat (JSON and SSE), embeddings (``float`` or
``base64``), models (list and retrieve)."""

from __future__ import annotations

import base64
import itertools
import json
import struct
import time
from typing import Any

from aiohttp import web

from .. import FakeServer, Handler
from . import _common

_ids = itertools.count(1)


def error_body(status: int, message: str) -> Any:
    kinds = {
        400: "invalid_request_error",
        401: "invalid_api_key",
        404: "not_found_error",
        405: "invalid_request_error",
        429: "rate_limit_exceeded",
    }
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "server_error"),
            "param": None,
            "code": str(status),
        }
    }


def _bad_request(message: str) -> web.Response:
    return web.json_response(error_body(400, message), status=400)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def answer_format(body: Any) -> dict[str, Any] | None:
    """The JSON schema a chat body's ``response_format`` asks the answer to follow: OpenAI's
    ``json_schema`` (or TGI's, under ``value``), ``{}`` for any JSON object, None for text."""
    fmt = body.get("response_format") if isinstance(body, dict) else None
    if not isinstance(fmt, dict):
        return None
    kind, spec = fmt.get("type"), fmt.get("json_schema") or fmt.get("value")
    if kind == "json_object":
        return {}
    if kind in ("json_schema", "json") and isinstance(spec, dict):
        schema = spec.get("schema", spec) if kind == "json_schema" else spec
        return schema if isinstance(schema, dict) else {}
    return None


def plan_reply(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    schema: dict[str, Any] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool_calls) the fake model answers with, in OpenAI form: with a ``schema``
    (``answer_format``), a JSON value that follows it."""
    if schema is not None and not tools:
        return json.dumps(_common.sample_for(schema) if schema else {"answer": "test"}), []
    last = messages[-1]
    if last.get("role") == "tool":
        name = last.get("name") or next(
            (
                c["function"]["name"]
                for m in messages
                for c in m.get("tool_calls") or ()
                if c.get("id") == last.get("tool_call_id")
            ),
            "tool",
        )
        return _common.tool_result_text(name, _text(last.get("content"))), []
    if tools:
        fn = tools[0].get("function", {})
        args = _common.tool_arguments(fn.get("parameters"))
        return "", [
            {
                "id": f"call_{next(_ids)}",
                "type": "function",
                "function": {"name": fn.get("name", "tool"), "arguments": json.dumps(args)},
            }
        ]
    user = next((m for m in reversed(messages) if m.get("role") == "user"), last)
    return _common.reply_text(_text(user.get("content"))), []


def usage(prompt_tokens: int, completion_tokens: int = 0) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def embedding_list(model: str, inputs: list[str], dim: int) -> dict[str, Any]:
    """An embeddings answer with the vectors in input order."""
    tokens = sum(_common.count_tokens(t) for t in inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _common.vector(t, dim)}
            for i, t in enumerate(inputs)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def base64_vector(values: list[float]) -> str:
    """A vector as the API sends it for ``encoding_format="base64"``: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


MODELS = ("fake-chat", "fake-embed")


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "asyncllm"}


def routes(prefix: str = "/v1") -> list[tuple[str, str, Handler]]:
    """(method, path, handler) of the OpenAI routes, for protocols that serve some of them."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _bad_request("'messages' must be a non-empty array")
        text, calls = plan_reply(messages, body.get("tools"), answer_format(body))
        prompt = sum(_common.count_tokens(_text(m.get("content"))) for m in messages)
        counts = usage(prompt, _common.count_tokens(text))
        cid = f"chatcmpl-{next(_ids)}"
        headers = {"x-request-id": f"srv-{cid}"}
        finish = "tool_calls" if calls else "stop"
        base = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        if not body.get("stream"):
            n = int(body.get("n") or 1)
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            choices = [
                {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
                for i in range(n)
            ]
            return web.json_response({**base, "choices": choices, "usage": counts}, headers=headers)
        chunk_base = {**base, "object": "chat.completion.chunk"}

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return _common.sse({**chunk_base, "choices": choices, **extra})

        def delta(content: dict[str, Any], finish: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": content, "finish_reason": finish}])

        chunks = [delta({"role": "assistant", "content": ""})]
        if text:
            chunks += [delta({"content": piece}) for piece in _common.pieces(text)]
        for i, call in enumerate(calls):  # each call's arguments in two halves
            args = call["function"]["arguments"]
            half = len(args) // 2
            first = {"name": call["function"]["name"], "arguments": args[:half]}
            chunks.append(delta({"tool_calls": [{"index": i, **call, "function": first}]}))
            rest = {"index": i, "function": {"arguments": args[half:]}}
            chunks.append(delta({"tool_calls": [rest]}))
        chunks.append(delta({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(chunk([], usage=counts))
        chunks.append(_common.DONE)
        return await _common.stream(request, chunks, headers=headers)

    async def embeddings(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is required")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            return _bad_request("'input' must be a string or an array of strings")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return _bad_request("'encoding_format' must be 'float' or 'base64'")
        answer = embedding_list(body["model"], inputs, int(body.get("dimensions") or 8))
        if encoding == "base64":
            for item in answer["data"]:
                item["embedding"] = base64_vector(item["embedding"])
        answer["data"].reverse()  # the index, not the order, says which input a vector belongs to
        return web.json_response(answer)

    async def models(request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [model_object(n) for n in MODELS]})

    async def model(request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        if name in MODELS:
            return web.json_response(model_object(name))
        body = error_body(404, f"The model '{name}' does not exist")
        body["error"].update(type="invalid_request_error", param="model", code="model_not_found")
        return web.json_response(body, status=404)

    return [
        ("POST", f"{prefix}/chat/completions", chat),
        ("POST", f"{prefix}/embeddings", embeddings),
        ("GET", f"{prefix}/models", models),
        ("GET", f"{prefix}/models/{{model:.+}}", model),
    ]


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    for method, path, handler in routes(prefix):
        server.add_route(method, path, handler, error_body=error_body)
