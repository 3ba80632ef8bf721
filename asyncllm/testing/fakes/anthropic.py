"""Anthropic's Messages API: ``/v1/messages`` (JSON and the SSE event sequence, ``ping``
included), ``/v1/messages/count_tokens``, ``/v1/models`` (paged) and ``/v1/models/{model_id}``.

Like the real API it refuses, with its ``{"type": "error", "error": {...}}`` body, requests
without a key (``x-api-key``, or ``Authorization: Bearer`` as the anthropic SDK sends it since
2.0), without ``anthropic-version`` or ``max_tokens``, ``system`` roles inside
``messages``, and ``tool_use`` blocks whose ``tool_result`` is not in the next user turn.
Consecutive turns of one role are combined, as the API does.

Test knobs: ``stream_error_next(server, ...)`` makes the next stream send an ``error`` event
after some text; ``server.state["anthropic.models"]`` replaces the model list and
``server.state["anthropic.page_cap"]`` caps the page size so that listing takes several pages.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common

_ids = itertools.count(1)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

MODELS = [
    {
        "type": "model",
        "id": "fake-chat",
        "display_name": "Fake Chat",
        "created_at": "2025-05-14T00:00:00Z",
        "lifecycle": "active",
    },
    {
        "type": "model",
        "id": "claude-fake-opus",
        "display_name": "Claude Fake Opus",
        "created_at": "2025-02-24T00:00:00Z",
        "lifecycle": "active",
    },
    {
        "type": "model",
        "id": "claude-fake-haiku",
        "display_name": "Claude Fake Haiku",
        "created_at": "2024-10-22T00:00:00Z",
        "lifecycle": "active",
    },
]


class _Invalid(Exception):
    """A request the real API would refuse with 400."""


def error_body(status: int, message: str) -> Any:
    etype = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {
        "type": "error",
        "error": {"type": etype, "message": message},
        "request_id": f"req_fake{next(_ids):06d}",
    }


def _error(status: int, message: str) -> web.Response:
    body = error_body(status, message)
    return web.json_response(body, status=status, headers={"request-id": body["request_id"]})


def stream_error_next(
    server: FakeServer, error_type: str = "overloaded_error", *, after: int = 0
) -> None:
    """Make the next stream send an ``error`` event after ``after`` text deltas."""
    queue = server.state.setdefault("anthropic.stream_errors", deque())
    queue.append((error_type, after))


def _has_key(request: web.Request) -> bool:
    if request.headers.get("x-api-key"):
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _check_headers(request: web.Request) -> web.Response | None:
    if not _has_key(request):
        return _error(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _error(400, "anthropic-version: header is required")
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text(block.get("content")))
        return " ".join(p for p in parts if p)
    return ""


def _turns(messages: Any) -> list[dict[str, Any]]:
    """Checked messages with consecutive turns of one role combined into one."""
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _Invalid(f"messages.{i}: Input should be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _Invalid(
                f"messages.{i}.role: Unexpected role {role!r}. The Messages API accepts a "
                'top-level `system` parameter, not "system" as an input message role.'
            )
        content = message.get("content")
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}]
        elif isinstance(content, list) and all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
        ):
            blocks = list(content)
        else:
            raise _Invalid(f"messages.{i}.content: Input should be a string or a list of blocks")
        for j, block in enumerate(blocks):
            _check_block(block, f"messages.{i}.content.{j}")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    if turns[0]["role"] != "user":
        raise _Invalid("messages: the first message must use the user role")
    for i, turn in enumerate(turns):
        uses = [b["id"] for b in turn["content"] if b["type"] == "tool_use"]
        if not uses:
            continue
        following = turns[i + 1]["content"] if i + 1 < len(turns) else []
        results = {b.get("tool_use_id") for b in following if b["type"] == "tool_result"}
        missing = [u for u in uses if u not in results]
        if missing and i + 1 < len(turns):
            raise _Invalid(
                "messages: tool_use ids were found without tool_result blocks immediately "
                f"after: {', '.join(missing)}. Each tool_use block must have a corresponding "
                "tool_result block in the next message."
            )
    return turns


def _check_block(block: dict[str, Any], where: str) -> None:
    kind = block["type"]
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
        raise _Invalid(f"{where}: text content blocks must be non-empty")
    if kind == "tool_use" and not (
        isinstance(block.get("id"), str)
        and isinstance(block.get("name"), str)
        and isinstance(block.get("input"), dict)
    ):
        raise _Invalid(f"{where}: tool_use blocks need id, name and an input object")
    if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        raise _Invalid(f"{where}.tool_use_id: Field required")
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url", "file"):
            raise _Invalid(f"{where}.source: Input tag does not match any of the expected tags")


def _plan(turns: list[dict[str, Any]], tools: Any) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool_use blocks) the fake model answers with."""
    last = turns[-1]
    results = [b for b in last["content"] if b["type"] == "tool_result"]
    if last["role"] == "user" and results:
        result = results[-1]
        name = next(
            (
                b["name"]
                for t in turns
                for b in t["content"]
                if b["type"] == "tool_use" and b["id"] == result["tool_use_id"]
            ),
            "tool",
        )
        return _common.tool_result_text(name, _text(result.get("content"))), []
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        tool = tools[0]
        args = _common.tool_arguments(tool.get("input_schema"))
        use = {
            "type": "tool_use",
            "id": f"toolu_fake{next(_ids):06d}",
            "name": tool.get("name", "tool"),
            "input": args,
        }
        return "", [use]
    user = next((t for t in reversed(turns) if t["role"] == "user"), last)
    return _common.reply_text(_text(user["content"])), []


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" for b in system
    ):
        return " ".join(str(b.get("text", "")) for b in system)
    raise _Invalid("system: Input should be a string or a list of text blocks")


def _input_tokens(body: dict[str, Any], turns: list[dict[str, Any]]) -> int:
    text = " ".join([_system_text(body.get("system"))] + [_text(t["content"]) for t in turns])
    return _common.count_tokens(text.strip())


def _common_body(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise _Invalid("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _Invalid("model: Field required")
    turns = _turns(body.get("messages"))
    _system_text(body.get("system"))
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list)
        and all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
        and all(isinstance(t.get("input_schema"), dict) for t in tools if "type" not in t)
    ):
        raise _Invalid("tools: each tool needs a name and an input_schema")
    return body, turns


def _finish(
    text: str, calls: list[dict[str, Any]], body: dict[str, Any]
) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) after stop sequences and max_tokens apply."""
    if calls:
        return text, "tool_use", None
    for seq in body.get("stop_sequences") or ():
        at = text.find(seq) if isinstance(seq, str) and seq else -1
        if at >= 0:
            return text[:at], "stop_sequence", seq
    words = _common.pieces(text)
    if len(words) > body["max_tokens"]:
        return "".join(words[: body["max_tokens"]]), "max_tokens", None
    return text, "end_turn", None


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return _common.sse(data, event=kind)


def _events(
    message: dict[str, Any],
    text: str,
    calls: list[dict[str, Any]],
    stop_reason: str,
    stop_sequence: str | None,
    output_tokens: int,
    error: tuple[str, int] | None,
) -> Iterator[bytes]:
    """The event sequence of one streamed message, in the order the API sends it."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    index = 0
    sent = 0
    if text or error is not None:
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        for piece in _common.pieces(text) if text else []:
            if error is not None and sent == error[1]:
                break
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
            sent += 1
            if sent % 3 == 0:
                yield _sse("ping", {"type": "ping"})
        if error is not None:
            body = {"type": "error", "error": {"type": error[0], "message": f"injected {error[0]}"}}
            yield _sse("error", body)
            return
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        index = 1
    for call in calls:
        block = {**call, "input": {}}
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        args = json.dumps(call["input"])
        half = len(args) // 2
        for part in ("", args[:half], args[half:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": output_tokens},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        try:
            body, turns = _common_body(request["json"])
            max_tokens = body.get("max_tokens")
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
                raise _Invalid("max_tokens: Field required")
            if max_tokens < 1:
                raise _Invalid("max_tokens: Input should be greater than or equal to 1")
            text, calls = _plan(turns, body.get("tools"))
        except _Invalid as exc:
            return _error(400, str(exc))
        text, stop_reason, stop_sequence = _finish(text, calls, body)
        output_tokens = _common.count_tokens(text) + 10 * len(calls)
        mid = f"msg_fake{next(_ids):06d}"
        headers = {"request-id": f"req_srv_{mid}"}
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content + calls,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": _input_tokens(body, turns),
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if not body.get("stream"):
            return web.json_response(message, headers=headers)
        queue = server.state.get("anthropic.stream_errors")
        error = queue.popleft() if queue else None
        events = _events(message, text, calls, stop_reason, stop_sequence, output_tokens, error)
        return await _common.stream(request, events, headers=headers)

    async def count_tokens(request: web.Request) -> web.StreamResponse:
        try:
            body, turns = _common_body(request["json"])
        except _Invalid as exc:
            return _error(400, str(exc))
        return web.json_response({"input_tokens": _input_tokens(body, turns)})

    async def models(request: web.Request) -> web.StreamResponse:
        catalogue: list[dict[str, Any]] = server.state.get("anthropic.models", MODELS)
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _error(400, "limit: Input should be a valid integer")
        if not 1 <= limit <= 1000:
            return _error(400, "limit: Input should be between 1 and 1000")
        limit = min(limit, int(server.state.get("anthropic.page_cap", 1000)))
        ids = [m["id"] for m in catalogue]
        start = 0
        after = request.query.get("after_id")
        if after is not None:
            if after not in ids:
                return _error(404, f"model {after!r} not found")
            start = ids.index(after) + 1
        page = catalogue[start : start + limit]
        return web.json_response(
            {
                "data": page,
                "has_more": start + limit < len(catalogue),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    async def model(request: web.Request) -> web.StreamResponse:
        catalogue: list[dict[str, Any]] = server.state.get("anthropic.models", MODELS)
        name = request.match_info["model_id"]
        found = next((m for m in catalogue if m["id"] == name), None)
        if found is None:
            return _error(404, f"model: {name}")
        return web.json_response(found)

    for method, path, handler in (
        ("POST", "/messages", messages),
        ("POST", "/messages/count_tokens", count_tokens),
        ("GET", "/models", models),
        ("GET", "/models/{model_id:.+}", model),
    ):
        guarded = _common.guarded(_check_headers, handler)
        server.add_route(method, prefix + path, guarded, error_body=error_body)
