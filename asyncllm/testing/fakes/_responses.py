"""The Responses API (``/responses``), stateful, for the OpenAI fake and the servers that serve
part of it (vLLM, OVMS ``/v3``, Groq), each by its ``ResponseRules``.

The model follows the shared conversation rule (``_common``) over the whole conversation (the
previous responses' input and output first, with ``previous_response_id``): it calls the first
function tool with arguments made from its schema unless the last item is a function's output,
then answers ``"tool <name> returned: <output>"``; otherwise ``"echo: <last user text>"``. A
``text.format`` of type ``json_schema`` is answered with JSON that follows the schema;
``max_output_tokens`` cuts the answer (status ``incomplete``, reason ``max_output_tokens``).

State, as OpenAI keeps it: a response is stored unless ``store`` is false, and can then be
retrieved, chained, listed (its input items) and deleted. A ``background`` response (which must
be stored) is answered ``queued`` at once; each retrieve moves it on (``queued`` ->
``in_progress`` -> ``completed``), and ``cancel`` stops it (``cancelled``) while it has not
ended. A retrieve with ``?stream=true`` streams a stored response's events (a background one
to its end), those after ``starting_after`` only. Everything lives in ``server.state["responses"]``, by response ID.

Streams send OpenAI's events in OpenAI's order, each with its ``sequence_number``:
``response.created``, ``response.in_progress``, then per output item ``output_item.added``,
(``content_part.added``, ``output_text.delta``..., ``output_text.done``,
``content_part.done``) or (``function_call_arguments.delta`` x2, ``.done``),
``output_item.done``, and last ``response.completed`` (or ``response.incomplete``).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import FakeServer, Handler
from . import _common

_ids = itertools.count(1)


@dataclass(frozen=True)
class ResponseRules:
    """What one server's ``/responses`` serves: ``store`` (stored responses, chaining,
    retrieve), ``background``, ``cancel``, ``delete``, ``input_items``, ``input_tokens``;
    ``instructions`` and ``text_format`` (``text.format``) taken or refused with a 400;
    ``refusals``: with a ``json_schema`` format, a last user text holding ``REFUSAL_PROMPT`` is
    refused (a ``refusal`` content part, streamed as ``response.refusal.delta``), as OpenAI's;
    ``done``: a stream ends with ``data: [DONE]`` after its last event (OVMS)."""

    store: bool = True
    background: bool = True
    cancel: bool = True
    delete: bool = True
    input_items: bool = True
    input_tokens: bool = True
    instructions: bool = True
    text_format: bool = True
    refusals: bool = False
    done: bool = False


OPENAI = ResponseRules(refusals=True)
# vLLM started with VLLM_ENABLE_RESPONSES_API_STORE=1: create, stream, retrieve, cancel.
VLLM = ResponseRules(delete=False, input_items=False, input_tokens=False)
# OVMS /v3/responses: create and stream only; a stream ends with [DONE].
OVMS = ResponseRules(
    store=False,
    background=False,
    cancel=False,
    delete=False,
    input_items=False,
    input_tokens=False,
    instructions=False,
    text_format=False,
    done=True,
)
# Groq: create and stream, no stored state.
GROQ = ResponseRules(
    store=False, background=False, cancel=False, delete=False, input_items=False, input_tokens=False
)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> Any:
    kinds = {400: "invalid_request_error", 404: "invalid_request_error"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> web.Response:
    return web.json_response(error_body(status, message, param, code), status=status)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):08x}"


def _input_items(value: Any) -> list[dict[str, Any]] | None:
    """The request's input as stored items (each with an ID), or None if it is malformed."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return None
    items: list[dict[str, Any]] = []
    for entry in value:
        if not isinstance(entry, dict):
            return None
        kind = entry.get("type", "message" if "role" in entry else None)
        if kind == "message":
            content = entry.get("content")
            if isinstance(content, str):
                part = "output_text" if entry.get("role") == "assistant" else "input_text"
                content = [{"type": part, "text": content}]
            if not isinstance(content, list):
                return None
            items.append(
                {
                    "id": entry.get("id") or _new_id("msg"),
                    "type": "message",
                    "role": entry.get("role"),
                    "status": "completed",
                    "content": content,
                }
            )
        elif kind in ("function_call", "function_call_output"):
            if not isinstance(entry.get("call_id"), str):
                return None
            items.append({"id": entry.get("id") or _new_id("fc"), **entry})
        elif isinstance(kind, str):
            items.append({"id": entry.get("id") or _new_id("item"), **entry})
        else:
            return None
    return items


def _text_of(item: dict[str, Any]) -> str:
    return "".join(
        str(part.get("text", ""))
        for part in item.get("content") or ()
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text")
    )


def _reply(
    conversation: list[dict[str, Any]], tools: list[Any], fmt: Any
) -> tuple[str, dict[str, Any] | None]:
    """What the fake model says: its text, or the function it calls."""
    functions = [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]
    last = conversation[-1] if conversation else {}
    if last.get("type") == "function_call_output":
        names = {
            item.get("call_id"): item.get("name")
            for item in conversation
            if item.get("type") == "function_call"
        }
        name = names.get(last.get("call_id"), "unknown")
        return _common.tool_result_text(str(name), str(last.get("output", ""))), None
    if functions:
        tool = functions[0]
        args = _common.sample_for(tool.get("parameters") or {"type": "object"})
        call = {
            "id": _new_id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": _new_id("call"),
            "name": tool.get("name"),
            "arguments": json.dumps(args),
        }
        return "", call
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return json.dumps(_common.sample_for(fmt.get("schema") or {})), None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return json.dumps({"answer": "test"}), None
    users = [item for item in conversation if item.get("role") == "user"]
    return _common.reply_text(_text_of(users[-1]) if users else ""), None


def _asks_refusal(conversation: list[dict[str, Any]], fmt: Any) -> bool:
    from .openai import REFUSAL_PROMPT  # a cycle at import time: openai mounts this

    users = [item for item in conversation if item.get("role") == "user"]
    return (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and bool(users)
        and REFUSAL_PROMPT in _text_of(users[-1])
    )


def _unfinished(response: dict[str, Any]) -> dict[str, Any]:
    """``response`` as it stands before its answer: no output, no usage (which OpenAI leaves
    out rather than null), not completed."""
    out = {**response, "output": [], "completed_at": None}
    del out["usage"]
    return out


def _tokens(items: list[dict[str, Any]], instructions: Any) -> int:
    words = sum(
        _common.count_tokens(
            _text_of(item) or str(item.get("output") or item.get("arguments") or "")
        )
        for item in items
    )
    return words + (_common.count_tokens(instructions) if isinstance(instructions, str) else 0)


def routes(
    prefix: str = "/v1",
    rules: ResponseRules = OPENAI,
    stored: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[str, str, Handler]]:
    """(method, path, handler) of the Responses routes ``rules`` serves, under ``prefix``;
    ``stored`` holds the stored responses by ID (each ``{"response", "conversation",
    "input_items"}``, and ``"final"`` for a background one still running)."""
    base = f"{prefix}/responses"
    if stored is None:
        stored = {}

    def conversation_of(body: dict[str, Any]) -> list[dict[str, Any]] | web.Response:
        """The items before this request's input: the chain of previous responses."""
        previous = body.get("previous_response_id")
        if previous is None:
            return []
        if not rules.store:
            return _error(400, "previous_response_id is not supported", "previous_response_id")
        entry = stored.get(previous) if isinstance(previous, str) else None
        if entry is None:
            return _error(
                404,
                f"Previous response with id '{previous}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        return [*entry["conversation"], *entry["response"]["output"]]

    def check(body: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | web.Response:
        """The request's (earlier conversation, input items), or its 400."""
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(
                400, "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        if "input" not in body and body.get("previous_response_id") is None:
            return _error(
                400, "Missing required parameter: 'input'.", "input", "missing_required_parameter"
            )
        items = _input_items(body.get("input", []))
        if items is None:
            return _error(400, "Invalid value for 'input'.", "input", "invalid_value")
        if body.get("instructions") is not None and not rules.instructions:
            return _error(400, "instructions are not supported", "instructions")
        if (body.get("text") or {}).get("format") is not None and not rules.text_format:
            return _error(400, "text.format is not supported", "text")
        tools = body.get("tools", [])
        if not isinstance(tools, list):
            return _error(
                400, "Invalid type for 'tools': expected an array.", "tools", "invalid_type"
            )
        earlier = conversation_of(body)
        if isinstance(earlier, web.Response):
            return earlier
        return earlier, items

    def answer(
        body: dict[str, Any], earlier: list[dict[str, Any]], items: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], list[str]]:
        """The finished response, and the pieces its text streams in."""
        conversation = [*earlier, *items]
        fmt = (body.get("text") or {}).get("format")
        refuses = rules.refusals and _asks_refusal(conversation, fmt)
        if refuses:
            from .openai import REFUSAL_TEXT  # a cycle at import time: openai mounts this

            text, call = REFUSAL_TEXT, None
        else:
            text, call = _reply(conversation, body.get("tools") or [], fmt)
        pieces = _common.pieces(text) if text else []
        limit = body.get("max_output_tokens")
        incomplete = isinstance(limit, int) and len(pieces) > limit
        if incomplete:
            pieces = pieces[:limit]
        output: list[dict[str, Any]] = []
        if call is not None:
            output.append(call)
        else:
            output.append(
                {
                    "id": _new_id("msg"),
                    "type": "message",
                    "status": "incomplete" if incomplete else "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "refusal", "refusal": "".join(pieces)}
                        if refuses
                        else {
                            "type": "output_text",
                            "text": "".join(pieces),
                            "annotations": [],
                            "logprobs": [],
                        }
                    ],
                }
            )
        input_tokens = _tokens(conversation, body.get("instructions"))
        output_tokens = len(pieces) if call is None else _common.count_tokens(call["arguments"])
        response = {
            "id": _new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if incomplete else "completed",
            "completed_at": None if incomplete else int(time.time()),
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": limit,
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": bool(rules.store and body.get("store", True)),
            "background": bool(body.get("background", False)),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": fmt or {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": body.get("metadata") or {},
        }
        return response, pieces

    def keep(
        response: dict[str, Any], earlier: list[dict[str, Any]], items: list[dict[str, Any]]
    ) -> None:
        if response["store"]:
            stored[response["id"]] = {
                "response": response,
                "conversation": [*earlier, *items],
                "input_items": items,
            }

    async def create(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        checked = check(body)
        if isinstance(checked, web.Response):
            return checked
        earlier, items = checked
        if body.get("store") and not rules.store:
            return _error(400, "store is not supported", "store")
        if body.get("background"):
            if not rules.background:
                return _error(400, "background is not supported", "background")
            if body.get("store") is False:
                return _error(400, "Background mode requires store=true.", "background")
        response, pieces = answer(body, earlier, items)
        keep(response, earlier, items)
        headers = {"x-request-id": f"req_{response['id']}"}
        if body.get("background") and not body.get("stream"):
            entry = stored[response["id"]]
            entry["final"] = response
            entry["response"] = queued = {
                **_unfinished(response),
                "status": "queued",
                "incomplete_details": None,
            }
            return web.json_response(queued, headers=headers)
        if not body.get("stream"):
            return web.json_response(response, headers=headers)
        return await _common.stream(request, events(response, pieces), headers=headers)

    def events(response: dict[str, Any], pieces: list[str]) -> list[bytes]:
        numbers = itertools.count()
        out: list[bytes] = []

        def send(kind: str, **fields: Any) -> None:
            out.append(
                _common.sse({"type": kind, "sequence_number": next(numbers), **fields}, kind)
            )

        start = {**_unfinished(response), "status": "in_progress"}
        send("response.created", response=start)
        send("response.in_progress", response=start)
        for index, item in enumerate(response["output"]):
            if item["type"] == "function_call":
                send(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
                args = item["arguments"]
                half = len(args) // 2
                for delta in (args[:half], args[half:]):
                    send(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=delta,
                    )
                send(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=args,
                )
                send("response.output_item.done", output_index=index, item=item)
                continue
            send(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            text = "".join(pieces)
            if item["content"][0]["type"] == "refusal":
                send(
                    "response.content_part.added", **where, part={"type": "refusal", "refusal": ""}
                )
                for piece in pieces:
                    send("response.refusal.delta", **where, delta=piece)
                send("response.refusal.done", **where, refusal=text)
                send("response.content_part.done", **where, part=item["content"][0])
            else:
                empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                send("response.content_part.added", **where, part=empty)
                for piece in pieces:
                    send("response.output_text.delta", **where, delta=piece, logprobs=[])
                send("response.output_text.done", **where, text=text, logprobs=[])
                send("response.content_part.done", **where, part={**empty, "text": text})
            send("response.output_item.done", output_index=index, item=item)
        end = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        send(end, response=response)
        if rules.done:
            out.append(_common.DONE)
        return out

    def find(request: web.Request) -> dict[str, Any] | web.Response:
        rid = request.match_info["id"]
        entry = stored.get(rid)
        if entry is None:
            return _error(404, f"Response with id '{rid}' not found.", "response_id", "not_found")
        return entry

    async def retrieve(request: web.Request) -> web.StreamResponse:
        entry = find(request)
        if isinstance(entry, web.Response):
            return entry
        if request.query.get("stream") == "true":
            return await follow(request, entry)
        current = entry["response"]
        if current["status"] == "queued":  # each look moves a background response on
            entry["response"] = {**current, "status": "in_progress"}
        elif current["status"] == "in_progress" and "final" in entry:
            entry["response"] = entry.pop("final")
        return web.json_response(entry["response"])

    async def follow(request: web.Request, entry: dict[str, Any]) -> web.StreamResponse:
        """A stored response's events (``?stream=true``), after ``starting_after``: a
        background response is followed to its end."""
        if "final" in entry:
            entry["response"] = entry.pop("final")
        current = entry["response"]
        if current["status"] not in ("completed", "incomplete"):
            return _error(400, f"Cannot stream a response with status '{current['status']}'.")
        try:
            after = int(request.query.get("starting_after", "-1"))
        except ValueError:
            return _error(400, "Invalid value for 'starting_after'.", "starting_after")
        text = "".join(
            part.get("text") or part.get("refusal") or ""
            for item in current["output"]
            if item["type"] == "message"
            for part in item["content"]
        )
        chunks = events(current, _common.pieces(text) if text else [])
        return await _common.stream(request, chunks[after + 1 :])

    async def cancel(request: web.Request) -> web.StreamResponse:
        entry = find(request)
        if isinstance(entry, web.Response):
            return entry
        current = entry["response"]
        if not current.get("background"):
            return _error(
                400, "Only responses created with background=true can be cancelled.", "response_id"
            )
        if current["status"] in ("queued", "in_progress"):
            entry.pop("final", None)
            entry["response"] = {**current, "status": "cancelled"}
        elif current["status"] != "cancelled":
            return _error(
                400, f"Cannot cancel a response with status '{current['status']}'.", "response_id"
            )
        return web.json_response(entry["response"])

    async def delete(request: web.Request) -> web.StreamResponse:
        entry = find(request)
        if isinstance(entry, web.Response):
            return entry
        rid = entry["response"]["id"]
        del stored[rid]
        return web.json_response({"id": rid, "object": "response", "deleted": True})

    async def input_items(request: web.Request) -> web.StreamResponse:
        entry = find(request)
        if isinstance(entry, web.Response):
            return entry
        items = list(entry["input_items"])
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            return _error(400, "Invalid value for 'order'.", "order", "invalid_value")
        if order == "desc":
            items.reverse()
        after = request.query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                return _error(400, f"Invalid 'after': no item with id '{after}'.", "after")
            items = items[ids.index(after) + 1 :]
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _error(400, "Invalid value for 'limit'.", "limit", "invalid_value")
        if not 1 <= limit <= 100:
            return _error(400, "Invalid 'limit': expected a value from 1 to 100.", "limit")
        page = items[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

    async def input_tokens(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        checked = check(body)
        if isinstance(checked, web.Response):
            return checked
        earlier, items = checked
        count = _tokens([*earlier, *items], body.get("instructions"))
        return web.json_response({"object": "response.input_tokens", "input_tokens": count})

    out: list[tuple[str, str, Handler]] = [("POST", base, create)]
    if rules.input_tokens:
        out.append(("POST", f"{base}/input_tokens", input_tokens))
    if rules.store:
        out.append(("GET", f"{base}/{{id}}", retrieve))
    if rules.cancel:
        out.append(("POST", f"{base}/{{id}}/cancel", cancel))
    if rules.delete:
        out.append(("DELETE", f"{base}/{{id}}", delete))
    if rules.input_items:
        out.append(("GET", f"{base}/{{id}}/input_items", input_items))
    return out


def setup(server: FakeServer, prefix: str = "/v1", rules: ResponseRules = OPENAI) -> None:
    """Serve ``rules``' part of the Responses API under ``prefix`` on ``server``."""
    stored = server.state.setdefault("responses", {})
    for method, path, handler in routes(prefix, rules, stored):
        server.add_route(method, path, handler, error_body=_status_body)


def _status_body(status: int, message: str) -> Any:
    return error_body(status, message)
