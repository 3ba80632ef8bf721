"""The OpenAI protocol under ``/v1``: chat (JSON and SSE), embeddings (``float`` or
``base64``), models (list and retrieve), and the Responses API (``_responses``).

Chat follows the shared conversation rule (``_common``), and as the real API does:

- ``max_completion_tokens`` (or the older ``max_tokens``) cuts the answer after that many tokens
  (``_common.pieces``, reasoning first), with ``finish_reason`` "length".
- A ``response_format`` of type ``json_schema`` is answered with JSON that follows its schema;
  with ``"strict": true`` a schema strict mode cannot take (an object without
  ``additionalProperties: false``, one whose ``required`` misses a property, a root that is no
  object) is a 400 with OpenAI's message.
- JSON mode (``{"type": "json_object"}``) needs the word "json" in the messages (a 400 otherwise).
- A last user message containing ``REFUSAL_PROMPT`` ("REFUSE THIS") is refused: with a
  ``json_schema`` format in ``message.refusal`` (``content`` null; ``delta.refusal`` in a stream),
  otherwise as the text of the answer.

The same routes serve other servers' OpenAI-shaped APIs (Groq, vLLM, OVMS ``/v3``, OPEA's LLM
service) with their own ``Rules``: no strict checks and no refusals by default, and reasoning
where the server returns it (``Rules.reasoning``).
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import FakeServer, Handler
from . import _common, _responses

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


def _bad_request(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    body = error_body(400, message)
    if param is not None:  # OpenAI names the parameter at fault, and the code it broke (if any)
        body["error"].update(param=param, code=code)
    return web.json_response(body, status=400)


# What makes the fake model refuse, and what it says then (OpenAI's usual words).
REFUSAL_PROMPT = "REFUSE THIS"
REFUSAL_TEXT = "I'm sorry, I can't assist with that request."

# Where a ``Rules.reasoning`` hook may put the reasoning besides a message field of its own name:
# in the content, between <think> tags, as a server that does not parse it out sends it.
INLINE = "content"


@dataclass(frozen=True)
class Rules:
    """What one server's OpenAI-shaped chat does beyond the shared reply.

    ``strict_schemas``: a ``json_schema`` format with ``"strict": true`` is checked as OpenAI
    checks it (400 otherwise). ``json_word``: JSON mode (``json_object``) needs the word "json"
    in the messages, as OpenAI's does (400 otherwise). ``refusals``: the model refuses ``REFUSAL_PROMPT`` (see the module
    docstring). ``reasoning``: called with the request body, says where the model's reasoning
    (``reasoning_text``) goes: None for nowhere (the model does not reason, or it is hidden), a
    message and delta field name ("reasoning", "reasoning_content"), or ``INLINE``; an error
    response it returns answers the request instead. ``usage_details``: usage has OpenAI's
    ``prompt_tokens_details`` and ``completion_tokens_details`` (nothing cached, no hidden
    reasoning: zeros, as the API reports them then).
    """

    strict_schemas: bool = False
    tool_types: frozenset[str] = frozenset({"function"})
    refusals: bool = False
    json_word: bool = False
    reasoning: Callable[[dict[str, Any]], str | web.Response | None] | None = None
    usage_details: bool = False


# OpenAI itself: strict structured outputs, custom tools, refusals, no reasoning text in chat
# completions, and usage with its details (cached prompt tokens, reasoning tokens).
OPENAI = Rules(
    strict_schemas=True,
    tool_types=frozenset({"function", "custom"}),
    refusals=True,
    json_word=True,
    usage_details=True,
)
# An OpenAI-compatible server that takes a schema as it is and never refuses.
COMPATIBLE = Rules()


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


def _strict_problem(schema: Any, name: str, what: str = "response_format") -> str | None:
    """OpenAI's message for a strict ``json_schema`` (or function tool, ``what="function"``) it
    refuses, or None when it takes it."""
    prefix = f"Invalid schema for {what} '{name}': "
    if not isinstance(schema, dict):
        return prefix + "schema must be a JSON Schema object."
    if schema.get("type") != "object":
        return (
            prefix + "schema must be a JSON Schema of 'type: \"object\"', "
            f"got 'type: \"{schema.get('type')}\"'."
        )
    return _strict_node(schema, (), prefix)


def _strict_node(node: Any, context: tuple[Any, ...], prefix: str) -> str | None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            if problem := _strict_node(item, (*context, i), prefix):
                return problem
        return None
    if not isinstance(node, dict):
        return None
    if node.get("type") == "object" or "properties" in node:
        where = f"{prefix}In context={context!r}, "
        if node.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        properties = node.get("properties") or {}
        required = node.get("required")
        missing = [p for p in properties if not isinstance(required, list) or p not in required]
        if missing:
            return (
                where + "'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for sub, schema in value.items():
                if problem := _strict_node(schema, (*context, key, sub), prefix):
                    return problem
        elif key in ("items", "anyOf", "allOf", "oneOf", "prefixItems") and (
            problem := _strict_node(value, (*context, key), prefix)
        ):
            return problem
    return None


def strict_refusal(body: dict[str, Any]) -> str | None:
    """OpenAI's 400 message for the body's ``response_format``, or None when strict mode takes
    it (or it asks for no strict schema)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or spec.get("strict") is not True:
        return None
    return _strict_problem(spec.get("schema"), str(spec.get("name", "response")))


def tools_refusal(body: dict[str, Any], rules: Rules) -> web.Response | None:
    """The 400 for ``tools`` the server does not take (a type it has not, a function without a
    name, a strict one whose schema strict mode refuses), or None."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        return _bad_request("Invalid type for 'tools': expected an array of objects.", "tools")
    kinds = " and ".join(
        f"'{k}'" for k in sorted(rules.tool_types, key=lambda k: (k != "function", k))
    )
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        spec = tool.get(kind) if isinstance(kind, str) else None
        if kind not in rules.tool_types:
            message = f"Invalid value: '{kind}'. Supported values are: {kinds}."
            return _bad_request(message, f"tools[{i}].type", "invalid_value")
        if kind not in ("function", "custom"):  # a server-run tool: its type says all
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return _bad_request(f"Missing required parameter: 'tools[{i}].{kind}.name'.")
        strict = spec.get("strict")
        if kind == "function" and strict is not None and not isinstance(strict, bool):
            return _bad_request(f"Invalid type for 'tools[{i}].function.strict'.")
        if strict and rules.strict_schemas:
            problem = _strict_problem(spec.get("parameters"), spec["name"], "function")
            if problem is not None:
                return _bad_request(problem, f"tools[{i}].function.parameters")
    options = body.get("web_search_options")
    if options is not None and not isinstance(options, dict):
        return _bad_request("Invalid type for 'web_search_options'.", "web_search_options")
    return None


def token_limit(body: dict[str, Any]) -> int | web.Response | None:
    """The request's token limit (``max_completion_tokens``, else ``max_tokens``), None for
    none, or OpenAI's 400 for a limit that is no positive integer."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            kind = type(value).__name__
            message = f"Invalid type for '{key}': expected an integer, but got a {kind} instead."
            return _bad_request(message, key, "invalid_type")
        if value < 1:
            message = (
                f"Invalid '{key}': integer below minimum value. Expected a value >= 1, but got "
                f"{value} instead."
            )
            return _bad_request(message, key, "integer_below_min_value")
        return value
    return None


def _says_json(body: dict[str, Any], messages: list[Any]) -> bool:
    """Whether a JSON-mode request's messages say "json" (true of any other request)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_object":
        return True
    return any("json" in _text(m.get("content")).lower() for m in messages if isinstance(m, dict))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    return _text(user.get("content"))


def reasoning_text(messages: list[dict[str, Any]]) -> str:
    """What the fake model thinks before it answers, where a server returns reasoning."""
    return f"thinking about: {_last_user_text(messages)}"


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
                (c.get("function") or c.get("custom") or {}).get("name", "tool")
                for m in messages
                for c in m.get("tool_calls") or ()
                if c.get("id") == last.get("tool_call_id")
            ),
            "tool",
        )
        return _common.tool_result_text(name, _text(last.get("content"))), []
    # The first tool the caller runs (a server-run one, such as Groq's browser_search, is not).
    tools = [t for t in tools or () if t.get("type", "function") in ("function", "custom")]
    if tools and tools[0].get("type") == "custom":
        custom = {"name": tools[0]["custom"]["name"], "input": "test"}
        return "", [{"id": f"call_{next(_ids)}", "type": "custom", "custom": custom}]
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
    return _common.reply_text(_last_user_text(messages)), []


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


@dataclass
class _Said:
    """What the fake model writes, as stream pieces: reasoning first, then a refusal or text."""

    reasoning: list[str]
    refusal: list[str]
    text: list[str]
    calls: list[dict[str, Any]]
    finish: str

    def cut(self, limit: int) -> None:
        """Keep the first ``limit`` pieces (tool calls count none): "length" when any is lost."""
        if len(self.reasoning) + len(self.refusal) + len(self.text) <= limit:
            return
        left = limit
        for field in ("reasoning", "refusal", "text"):
            kept = getattr(self, field)[:left]
            setattr(self, field, kept)
            left -= len(kept)
        self.calls, self.finish = [], "length"

    def tokens(self) -> int:
        return sum(
            _common.count_tokens("".join(part))
            for part in (self.reasoning, self.refusal, self.text)
        )


def _compose(
    body: dict[str, Any], messages: list[dict[str, Any]], refusals: bool, where: str | None
) -> _Said:
    fmt = body.get("response_format")
    structured = isinstance(fmt, dict) and fmt.get("type") == "json_schema"
    refusal = ""
    calls: list[dict[str, Any]]
    if refusals and REFUSAL_PROMPT in _last_user_text(messages):
        text, calls = ("", []) if structured else (REFUSAL_TEXT, [])
        refusal = REFUSAL_TEXT if structured else ""
    else:
        text, calls = plan_reply(messages, body.get("tools"), answer_format(body))
    thought = reasoning_text(messages) if where else ""
    if where == INLINE:
        text, thought = f"<think>\n{thought}\n</think>\n\n{text}", ""

    def split(value: str) -> list[str]:
        return _common.pieces(value) if value else []

    finish = "tool_calls" if calls else "stop"
    return _Said(split(thought), split(refusal), split(text), calls, finish)


def routes(prefix: str = "/v1", rules: Rules = COMPATIBLE) -> list[tuple[str, str, Handler]]:
    """(method, path, handler) of the OpenAI routes, for protocols that serve some of them;
    chat answers by ``rules``."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _bad_request("'messages' must be a non-empty array")
        limit = token_limit(body)
        if isinstance(limit, web.Response):
            return limit
        if rules.strict_schemas and (problem := strict_refusal(body)):
            return _bad_request(problem, param="response_format")
        if (refused := tools_refusal(body, rules)) is not None:
            return refused
        if rules.json_word and not _says_json(body, messages):
            return _bad_request(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
            )
        where = rules.reasoning(body) if rules.reasoning is not None else None
        if isinstance(where, web.Response):
            return where
        said = _compose(body, messages, rules.refusals, where)
        if limit is not None:
            said.cut(limit)
        reasoning, refusal, text = ("".join(p) for p in (said.reasoning, said.refusal, said.text))
        calls, finish = said.calls, said.finish
        prompt = sum(_common.count_tokens(_text(m.get("content"))) for m in messages)
        counts: dict[str, Any] = usage(prompt, said.tokens())
        if rules.usage_details:
            counts["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
            counts["completion_tokens_details"] = {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        cid = f"chatcmpl-{next(_ids)}"
        headers = {"x-request-id": f"srv-{cid}"}
        base = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        n = int(body.get("n") or 1)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if where is not None and where != INLINE and reasoning:
                message[where] = reasoning
            if rules.refusals:
                message["refusal"] = refusal or None
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

        chunks: list[bytes] = []

        def delta(content: dict[str, Any], finish: str | None = None) -> None:
            """The piece for every choice, one event each, interleaved (as the API sends n>1)."""
            for i in range(n):
                chunks.append(chunk([{"index": i, "delta": content, "finish_reason": finish}]))

        first: dict[str, Any] = {"role": "assistant", "content": None if refusal else ""}
        if rules.refusals:
            first["refusal"] = None
        delta(first)
        if where is not None and where != INLINE:
            for piece in said.reasoning:
                delta({where: piece})
        for piece in said.refusal:
            delta({"refusal": piece})
        for piece in said.text:
            delta({"content": piece})
        for i, call in enumerate(calls):  # each call's arguments in two halves
            if call["type"] == "custom":  # a custom tool's input, whole
                delta({"tool_calls": [{"index": i, **call}]})
                continue
            args = call["function"]["arguments"]
            half = len(args) // 2
            head = {"name": call["function"]["name"], "arguments": args[:half]}
            delta({"tool_calls": [{"index": i, **call, "function": head}]})
            delta({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
        delta({}, finish)
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


def setup(
    server: FakeServer,
    prefix: str | None = None,
    rules: Rules | None = None,
    responses: _responses.ResponseRules | None = None,
) -> None:
    """The OpenAI protocol itself (no ``prefix``: ``/v1`` with ``OPENAI``'s rules, and the whole
    Responses API), or another server's OpenAI routes under ``prefix`` (with ``COMPATIBLE`` rules
    unless given, and the part of the Responses API ``responses`` says, if any)."""
    if rules is None:
        rules = OPENAI if prefix is None else COMPATIBLE
    for method, path, handler in routes(prefix or "/v1", rules):
        server.add_route(method, path, handler, error_body=error_body)
    if prefix is None and responses is None:
        responses = _responses.OPENAI
    if responses is not None:
        _responses.setup(server, prefix or "/v1", responses)
    if prefix is None:
        from . import _openai_platform  # files and batches, which only OpenAI itself serves here

        _openai_platform.setup(server)
