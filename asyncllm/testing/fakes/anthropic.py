"""Anthropic's Messages API: ``/v1/messages`` (JSON and the SSE event sequence, ``ping``
included), ``/v1/messages/count_tokens``, ``/v1/models`` (paged) and ``/v1/models/{model_id}``.

Like the real API it refuses, with its ``{"type": "error", "error": {...}}`` body, requests
without a key (``x-api-key``, or ``Authorization: Bearer`` as the anthropic SDK sends it since
2.0), without ``anthropic-version`` or ``max_tokens``, ``system`` roles inside
``messages``, and ``tool_use`` blocks whose ``tool_result`` is not in the next user turn.
Consecutive turns of one role are combined, as the API does.

Structured output: ``output_config.format`` (``{"type": "json_schema", "schema": ...}``) makes
the answer JSON drawn from the schema; a schema the API refuses is 400 (an object without
``additionalProperties: false``, a recursive ``$ref``, numeric and length bounds, ``minItems``
above 1). ``output_config.effort`` is checked.

Extended thinking (``thinking`` of type ``enabled``, with ``budget_tokens`` of at least 1024 and
below ``max_tokens`` unless the ``interleaved-thinking-*`` beta is on, or ``adaptive``): every
answer starts with a ``thinking`` block, "thinking about: <the user's last text>", signed with an
HMAC under a secret of this server (a ``redacted_thinking`` block, its ``data`` sealed the same
way, when the text says "REDACT"); streamed as ``thinking_delta`` and ``signature_delta``. As the
API does, with thinking on it refuses (400) a thinking block whose signature it did not issue,
and a tool loop in progress (the assistant turn since the last user text holds ``tool_use``)
whose assistant turn does not start with a thinking block. Thinking in earlier turns may be
dropped.

Tools: a tool is a custom one (``name`` and ``input_schema``; ``strict: true`` holds its schema
to the structured-output rules above, a 400 otherwise) or a tool of Anthropic's, whose ``type``
is versioned (``web_search_20250305``: other types are a 400). With a ``web_search_*`` server tool
offered, an answer to a user's text starts with a ``server_tool_use`` block and its
``web_search_tool_result`` (streamed as the API streams them); as the API does, a
``server_tool_use`` sent back without its result in the same turn is a 400. The model calls the
first custom tool offered.

A user text that says "REFUSE THIS" is refused: no content, ``stop_reason`` "refusal" and
``stop_details``. An answer longer than ``max_tokens`` words is cut (``stop_reason``
"max_tokens").

Test knobs: ``stream_error_next(server, ...)`` makes the next stream send an ``error`` event
after some text; ``server.state["anthropic.models"]`` replaces the model list and
``server.state["anthropic.page_cap"]`` caps the page size so that listing takes several pages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
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


# The API's own words (as its 400s read).
THINKING_FIRST = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
    "recommend you include thinking blocks from previous turns. To avoid this requirement, "
    "disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
BAD_SIGNATURE = "messages.{index}.content.{block}: Invalid `signature` in `thinking` block"
BAD_REDACTED = "messages.{index}.content.{block}: Invalid `data` in `redacted_thinking` block"
REFUSE = "REFUSE THIS"
REDACT = "REDACT"
EFFORTS = ("low", "medium", "high", "xhigh", "max")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
MIN_BUDGET = 1024
# JSON Schema keywords Claude's structured outputs refuse (the guide's "Not supported" list).
UNSUPPORTED_SCHEMA = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "maxItems",
        "uniqueItems",
    }
)


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
            turns.append({"role": role, "content": blocks, "index": i})
    if turns[0]["role"] != "user":
        raise _Invalid("messages: the first message must use the user role")
    for turn in turns:
        if turn["role"] == "assistant":
            _check_server_results(turn, f"messages.{turn['index']}.content")
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


def _check_server_results(turn: dict[str, Any], where: str) -> None:
    """The API's rule: a server tool's use and its result come in the same assistant turn."""
    uses = [b for b in turn["content"] if b["type"] == "server_tool_use"]
    results = {b.get("tool_use_id") for b in turn["content"] if b["type"].endswith("_tool_result")}
    for use in uses:
        if use.get("id") not in results:
            raise _Invalid(
                f"{where}: `server_tool_use` block with id `{use.get('id')}` was found without a "
                "corresponding `*_tool_result` block"
            )


def _check_block(block: dict[str, Any], where: str) -> None:
    kind = block["type"]
    if kind == "server_tool_use" and not (
        isinstance(block.get("id"), str)
        and isinstance(block.get("name"), str)
        and isinstance(block.get("input"), dict)
    ):
        raise _Invalid(f"{where}: server_tool_use blocks need id, name and an input object")
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
    if kind == "thinking" and not (
        isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str)
    ):
        raise _Invalid(f"{where}: thinking blocks need thinking and signature strings")
    if kind == "redacted_thinking" and not isinstance(block.get("data"), str):
        raise _Invalid(f"{where}.data: Field required")
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url", "file"):
            raise _Invalid(f"{where}.source: Input tag does not match any of the expected tags")


# -- extended thinking -----------------------------------------------------------------------------


def _digest(secret: bytes, text: str) -> bytes:
    return hmac.new(secret, text.encode(), hashlib.sha256).digest()


def thinking_block(secret: bytes, about: str) -> dict[str, Any]:
    """The block the fake model thinks in: signed, or redacted (sealed) when asked to."""
    text = f"thinking about: {about}"
    if REDACT in about:
        data = base64.b64encode(_digest(secret, text) + text.encode()).decode()
        return {"type": "redacted_thinking", "data": data}
    signature = base64.b64encode(_digest(secret, text)).decode()
    return {"type": "thinking", "thinking": text, "signature": signature}


def _genuine(secret: bytes, block: dict[str, Any]) -> bool:
    """Whether a thinking block is one this server issued, unmodified."""
    try:
        if block["type"] == "thinking":
            signature = base64.b64decode(block["signature"], validate=True)
            return hmac.compare_digest(signature, _digest(secret, block["thinking"]))
        sealed = base64.b64decode(block["data"], validate=True)
        text = sealed[32:].decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(sealed[:32], _digest(secret, text))


def _check_thinking(messages: list[Any], turns: list[dict[str, Any]], secret: bytes) -> None:
    """The API's rules with thinking on: every thinking block sent is one it signed, and a tool
    loop in progress has an assistant turn that starts with thinking (the thinking of turns
    before the last user text may be dropped)."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if block["type"] in ("thinking", "redacted_thinking") and not _genuine(secret, block):
                template = BAD_SIGNATURE if block["type"] == "thinking" else BAD_REDACTED
                raise _Invalid(template.format(index=i, block=j))
    asked = max(
        (
            k
            for k, t in enumerate(turns)
            if t["role"] == "user" and any(b["type"] != "tool_result" for b in t["content"])
        ),
        default=-1,
    )
    since = [t for t in turns[asked + 1 :] if t["role"] == "assistant"]
    if since and any(b["type"] == "tool_use" for t in since for b in t["content"]):
        first = since[0]["content"][0]["type"]
        if first not in ("thinking", "redacted_thinking"):
            raise _Invalid(THINKING_FIRST.format(index=since[0]["index"], found=first))


def _thinks(body: dict[str, Any], headers: Any) -> bool:
    """Whether the request turns thinking on; a ``thinking`` the API would refuse is 400."""
    thinking = body.get("thinking")
    if thinking is None:
        return False
    if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
        raise _Invalid(
            "thinking: Input tag does not match any of the expected tags: "
            + ", ".join(repr(t) for t in THINKING_TYPES)
        )
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise _Invalid("thinking.enabled.budget_tokens: Field required")
        if budget < MIN_BUDGET:
            raise _Invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_BUDGET}"
            )
        interleaved = "interleaved-thinking" in headers.get("anthropic-beta", "")
        if budget >= body["max_tokens"] and not interleaved:
            raise _Invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    return bool(thinking["type"] != "disabled")


# -- structured output -----------------------------------------------------------------------------


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema ``output_config.format`` asks for (None: free text), checked as the API
    checks it; ``output_config.effort`` too."""
    config = body.get("output_config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _Invalid("output_config: Input should be an object")
    effort = config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise _Invalid(
            "output_config.effort: Input should be " + ", ".join(repr(e) for e in EFFORTS)
        )
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _Invalid("output_config.format.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _Invalid("output_config.format.schema: Field required")
    _check_schema(schema)
    _check_cycles(schema)
    return schema


_WHERE = "output_config.format.schema"


def _check_schema(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _check_schema(item)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind):
        extra = node.get("additionalProperties")
        if extra is True:
            raise _Invalid(
                f"{_WHERE}: For 'object' type, 'additionalProperties: true' is not supported. "
                "Please set 'additionalProperties' to false"
            )
        if extra is not False:
            raise _Invalid(
                f"{_WHERE}: For 'object' type, 'additionalProperties' must be explicitly set "
                "to false"
            )
    refused = sorted(UNSUPPORTED_SCHEMA & node.keys())
    min_items = node.get("minItems", 0)
    if min_items not in (0, 1):
        refused.append("minItems")
    if refused:
        raise _Invalid(f"{_WHERE}: {', '.join(refused)} not supported")
    for key in ("properties", "$defs", "definitions"):
        if isinstance(node.get(key), dict):
            _check_schema(list(node[key].values()))
    for key in ("items", "anyOf", "allOf", "oneOf", "not", "prefixItems"):
        if key in node:
            _check_schema(node[key])


def _check_cycles(schema: dict[str, Any]) -> None:
    """Recursive schemas are refused: a ``$ref`` that leads back to where it is."""

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, list):
            for item in node:
                yield from refs(item)
        elif isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for key, value in node.items():
                if key not in ("$defs", "definitions", "enum", "const", "default"):
                    yield from refs(value)

    def target(ref: str) -> Any:
        found: Any = schema
        for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else []:
            found = found.get(part) if isinstance(found, dict) else None
        return found

    def walk(ref: str, path: tuple[str, ...]) -> None:
        if ref in path:
            raise _Invalid(f"{_WHERE}: Too many recursive definitions in schema")
        for inner in refs(target(ref)):
            walk(inner, (*path, ref))

    for ref in refs(schema):
        walk(ref, ("#",))


# -- the fake model --------------------------------------------------------------------------------


def _last_user_text(turns: list[dict[str, Any]]) -> str:
    user = next((t for t in reversed(turns) if t["role"] == "user"), turns[-1])
    return _text(user["content"])


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
    custom = [t for t in tools or () if t.get("type") in (None, "custom")]
    if custom:
        tool = custom[0]
        args = _common.tool_arguments(tool.get("input_schema"))
        use = {
            "type": "tool_use",
            "id": f"toolu_fake{next(_ids):06d}",
            "name": tool.get("name", "tool"),
            "input": args,
        }
        return "", [use]
    return _common.reply_text(_last_user_text(turns)), []


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


# Anthropic's tools have versioned types (web_search_20250305, code_execution_20250825...).
_VERSIONED = re.compile(r"[a-z_]+_[0-9]{8}")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _Invalid("tools: Input should be a list of objects")
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if not isinstance(tool.get("name"), str):
            raise _Invalid(f"tools.{i}.name: Field required")
        if kind not in (None, "custom"):
            if not isinstance(kind, str) or not _VERSIONED.fullmatch(kind):
                raise _Invalid(
                    f"tools.{i}: Input tag {kind!r} found using 'type' does not match any of the "
                    "expected tags"
                )
            continue
        if not isinstance(tool.get("input_schema"), dict):
            raise _Invalid(f"tools.{i}.input_schema: Field required")
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _Invalid(f"tools.{i}.strict: Input should be a valid boolean")
        if strict:
            _check_schema(tool["input_schema"])


def _searched(turns: list[dict[str, Any]], tools: Any) -> list[dict[str, Any]]:
    """The server tool blocks an answer starts with: a web search of the user's last text when
    a ``web_search_*`` tool is offered and the last turn is the user's text."""
    search = next(
        (t for t in tools or () if str(t.get("type", "")).startswith("web_search_")), None
    )
    last = turns[-1]["content"]
    if search is None or any(b["type"] == "tool_result" for b in last):
        return []
    uid = f"srvtoolu_fake{next(_ids):06d}"
    query = _last_user_text(turns)
    result = {
        "type": "web_search_result",
        "url": "https://example.com/",
        "title": f"about {query}",
        "encrypted_content": base64.b64encode(query.encode()).decode(),
        "page_age": None,
    }
    return [
        {"type": "server_tool_use", "id": uid, "name": search["name"], "input": {"query": query}},
        {"type": "web_search_tool_result", "tool_use_id": uid, "content": [result]},
    ]


def _common_body(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise _Invalid("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _Invalid("model: Field required")
    turns = _turns(body.get("messages"))
    _system_text(body.get("system"))
    _check_tools(body.get("tools"))
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


def _thinking_events(index: int, block: dict[str, Any]) -> Iterator[bytes]:
    """A thinking block streamed: its text in pieces, then its signature; a redacted one whole."""
    if block["type"] == "redacted_thinking":
        start = block
    else:
        start = {"type": "thinking", "thinking": "", "signature": ""}
    yield _sse(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    if block["type"] == "thinking":
        deltas = [
            {"type": "thinking_delta", "thinking": p} for p in _common.pieces(block["thinking"])
        ]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
        for delta in deltas:
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})


def _input_events(index: int, block: dict[str, Any]) -> Iterator[bytes]:
    """A tool's use (a client's or the server's) streamed: the block with an empty input, then
    the input's JSON in pieces."""
    start = {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}
    yield _sse("content_block_start", start)
    args = json.dumps(block["input"])
    half = len(args) // 2
    for part in ("", args[:half], args[half:]):
        delta = {"type": "input_json_delta", "partial_json": part}
        yield _sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})


def _events(
    message: dict[str, Any],
    text: str,
    calls: list[dict[str, Any]],
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
    start.pop("stop_details", None)
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    index = 0
    sent = 0
    for block in message["content"]:
        if block["type"] in ("thinking", "redacted_thinking"):
            yield from _thinking_events(index, block)
            index += 1
    for block in message["content"]:  # a server tool's use (its input streamed), its result
        if block["type"] == "server_tool_use":
            yield from _input_events(index, block)
            index += 1
        elif block["type"].endswith("_tool_result") and block["type"] != "tool_result":
            start = {"type": "content_block_start", "index": index, "content_block": block}
            yield _sse("content_block_start", start)
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
    if text or error is not None:
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
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
                    "index": index,
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
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    for call in calls:
        yield from _input_events(index, call)
        index += 1
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    if "stop_details" in message:
        delta["stop_details"] = message["stop_details"]
    yield _sse(
        "message_delta",
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}},
    )
    yield _sse("message_stop", {"type": "message_stop"})


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    # Signs the thinking blocks this server issues; another server's do not verify here.
    secret: bytes = server.state.setdefault("anthropic.secret", os.urandom(32))

    async def messages(request: web.Request) -> web.StreamResponse:
        try:
            body, turns = _common_body(request["json"])
            max_tokens = body.get("max_tokens")
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
                raise _Invalid("max_tokens: Field required")
            if max_tokens < 1:
                raise _Invalid("max_tokens: Input should be greater than or equal to 1")
            schema = _output_schema(body)
            thinks = _thinks(body, request.headers)
            if thinks:
                _check_thinking(body["messages"], turns, secret)
            about = _last_user_text(turns)
            refused = REFUSE in about
            text, calls = ("", []) if refused else _plan(turns, body.get("tools"))
            searched = [] if refused else _searched(turns, body.get("tools"))
        except _Invalid as exc:
            return _error(400, str(exc))
        if schema is not None and not calls and not refused:
            text = json.dumps(_common.sample_for(schema))
        thought = [thinking_block(secret, about)] if thinks and not refused else []
        if refused:
            stop_reason, stop_sequence = "refusal", None
        else:
            text, stop_reason, stop_sequence = _finish(text, calls, body)
        thinking_text = " ".join(str(b.get("thinking", "")) for b in thought)
        output_tokens = (
            _common.count_tokens(text) + _common.count_tokens(thinking_text) + 10 * len(calls)
        )
        mid = f"msg_fake{next(_ids):06d}"
        headers = {"request-id": f"req_srv_{mid}"}
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": thought + searched + content + calls,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": _input_tokens(body, turns),
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if refused:
            message["stop_details"] = {
                "type": "refusal",
                "category": None,
                "explanation": f"The fake model refuses text that says {REFUSE!r}.",
            }
        if not body.get("stream"):
            return web.json_response(message, headers=headers)
        queue = server.state.get("anthropic.stream_errors")
        error = queue.popleft() if queue else None
        events = _events(message, text, calls, output_tokens, error)
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

    from . import _anthropic_platform  # the Files API (beta) and Message Batches

    _anthropic_platform.setup(server, prefix)


def add_tool_file(
    server: FakeServer, content: bytes, filename: str, mime_type: str = "text/plain"
) -> str:
    """Store a file as Anthropic's tools (code execution, say) make one: downloadable, unlike an
    upload. Its id."""
    from ._files import store

    return (
        store(server, "anthropic", "file_")
        .add_bytes(content, filename=filename, mime_type=mime_type)
        .id
    )
