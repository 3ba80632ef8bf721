"""The OpenAI protocol under ``/v1``: chat (JSON and SSE), embeddings, models."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import web

from . import _common

if False:  # pragma: no cover - typing only, avoids an import cycle at run time
    from .. import FakeServer

_ids = itertools.count(1)


def error_body(status: int, message: str) -> Any:
    kinds = {
        400: "invalid_request_error",
        401: "invalid_api_key",
        404: "not_found_error",
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


def plan_reply(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool_calls) the fake model answers with, in OpenAI form."""
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
        args = _common.sample_for(fn.get("parameters") or {})
        return "", [
            {
                "id": f"call_{next(_ids)}",
                "type": "function",
                "function": {"name": fn.get("name", "tool"), "arguments": json.dumps(args)},
            }
        ]
    user = next((m for m in reversed(messages) if m.get("role") == "user"), last)
    return _common.reply_text(_text(user.get("content"))), []


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _bad_request("'messages' must be a non-empty array")
        text, calls = plan_reply(messages, body.get("tools"))
        prompt = sum(_common.count_tokens(_text(m.get("content"))) for m in messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": _common.count_tokens(text),
            "total_tokens": prompt + _common.count_tokens(text),
        }
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
            return web.json_response({**base, "choices": choices, "usage": usage}, headers=headers)
        resp = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        chunk_base = {**base, "object": "chat.completion.chunk"}

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await resp.write(
                b"data: "
                + json.dumps({**chunk_base, "choices": choices, **extra}).encode()
                + b"\n\n"
            )

        await send(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        if text:
            for piece in _common.pieces(text):
                await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        for i, call in enumerate(calls):
            args = call["function"]["arguments"]
            half = len(args) // 2
            await send(
                [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {
                                        "name": call["function"]["name"],
                                        "arguments": args[:half],
                                    },
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ]
            )
            await send(
                [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]
                        },
                        "finish_reason": None,
                    }
                ]
            )
        await send([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

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
        dim = int(body.get("dimensions") or 8)
        data = [
            {"object": "embedding", "index": i, "embedding": _common.vector(t, dim)}
            for i, t in enumerate(inputs)
        ]
        data.reverse()  # the index, not the order, says which input a vector belongs to
        tokens = sum(_common.count_tokens(t) for t in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": "fake-chat",
                        "object": "model",
                        "created": 1700000000,
                        "owned_by": "asyncllm",
                    },
                    {
                        "id": "fake-embed",
                        "object": "model",
                        "created": 1700000000,
                        "owned_by": "asyncllm",
                    },
                ],
            }
        )

    server.add_route("POST", f"{prefix}/chat/completions", chat, error_body=error_body)
    server.add_route("POST", f"{prefix}/embeddings", embeddings, error_body=error_body)
    server.add_route("GET", f"{prefix}/models", models, error_body=error_body)
