"""The text-generation-inference protocol: ``POST /`` (TGI's ``compat_generate``), /generate,
/generate_stream (SSE), /info, /health (also ``GET /`` and /ping), /tokenize, TGI's
OpenAI-compatible /v1/chat/completions, and /v1/models.

``/generate`` answers ``"echo: <inputs>"``, one token per ``_common.pieces`` piece, ending with a
special ``</s>`` token (finish ``eos_token``) unless ``max_new_tokens`` or a ``stop`` sequence ends
it first. ``POST /`` is what Hugging Face's clients call: with ``"stream": true`` in the body it
answers as /generate_stream, otherwise as /generate wrapped in a one-item list; and since the model
is tagged ``text-generation`` it puts the prompt in front of the text unless the request says
``return_full_text: false``. Stream events count from 1, and a stream refused by TGI's validation
is a 200 whose one event is the error. Errors use TGI's body ``{"error": ..., "error_type": ...}``.

Chat answers by the shared conversation rule, in TGI's shape rather than OpenAI's: a
``system_fingerprint``, ``"role": "assistant"`` in every stream delta, one chunk per token (the
last, for the end-of-sequence token, carries the finish reason and empty content), the model named
in the request echoed unless it is "tgi" or missing (then the served model's id), and tool call
arguments as a JSON string. A ``response_format`` (TGI's GrammarType: ``json`` or its alias
``json_object`` with the schema under ``value``, ``json_schema`` with ``{"name", "schema"}``
under ``value``, ``regex``) makes the answer follow it, checked as TGI's router checks it (a
JSON schema needs ``properties`` at its root; tools with it are a ``tool_error``); so does a
``grammar`` on the native routes. Chat sampling parameters are validated as TGI validates the
generation they become (``presence_penalty`` as ``repetition_penalty`` = it + 2, ``top_logprobs``
as ``top_n_tokens``, ``temperature`` 0 as greedy).

Scripted stream errors: ``server.state["tgi_stream_errors"]`` is a list of ``(after_tokens,
error_type)``; each generate stream takes the first one and sends that error event after
``after_tokens`` tokens, then ends.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from .. import FakeServer, Handler
from . import _common, openai

EOS = "</s>"
MODEL_ID = "fake/tgi-model"
VERSION = "3.3.6-dev0"
# "<version>-<docker label>", the label being "native" outside TGI's images.
SYSTEM_FINGERPRINT = f"{VERSION}-native"
MAX_STOP_SEQUENCES = 4
MAX_TOP_N_TOKENS = 5  # the launcher's default --max-top-n-tokens
MAX_INPUT_TOKENS = 1024
# error_type -> status, as TGI's router maps its InferError kinds.
STATUS_OF = {
    "validation": 422,
    "generation": 424,
    "overloaded": 429,
    "incomplete_generation": 500,
    "healthcheck": 503,
    "tool_error": 422,
}
GRAMMAR_TYPES = ("json", "json_object", "regex", "json_schema")
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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_grammar(grammar: Any) -> tuple[str, Any] | str:
    """(type, value) of a GrammarType as TGI's parser reads it (``json_object`` is ``json``), or
    the parser's complaint."""
    if not isinstance(grammar, dict):
        return "invalid type: expected internally tagged enum GrammarType"
    kind = grammar.get("type")
    if kind not in GRAMMAR_TYPES:
        names = ", ".join(f"`{t}`" for t in GRAMMAR_TYPES)
        return f"unknown variant `{kind}`, expected one of {names}"
    if "value" not in grammar:
        return "missing field `value`"
    value = grammar["value"]
    if kind == "regex" and not isinstance(value, str):
        return "invalid type: expected a string"
    if kind == "json_schema" and (not isinstance(value, dict) or "schema" not in value):
        return "missing field `schema`"
    return ("json" if kind == "json_object" else kind), value


def grammar_problem(kind: str, value: Any) -> str | None:
    """What TGI's validation says of a grammar it has read (a JSON schema needs an object with
    ``properties`` at its root), or None."""
    if kind == "regex":
        return None
    schema = value["schema"] if kind == "json_schema" else value
    if kind == "json" and isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            return f"grammar is not valid: {exc}"
    if not isinstance(schema, dict):
        return "grammar is not supported"
    if "properties" not in schema:
        return "grammar is not valid: Grammar must have a 'properties' field"
    return None


def grammar_answer(kind: str, value: Any, echo: str) -> str:
    """What the fake model answers under a valid grammar: a JSON value of the schema, or a text
    the regex matches (the echo when the fake cannot build one)."""
    if kind == "regex":
        built = _common.matching(value, echo)
        return echo if built is None else built
    schema = value["schema"] if kind == "json_schema" else value
    return json.dumps(_common.sample_for(json.loads(schema) if isinstance(schema, str) else schema))


def _validate(params: Any, inputs: str = "x") -> str | None:
    """The message TGI's validation (router/src/validation.rs) gives for a bad parameter or
    empty inputs, or None. Checked in TGI's order."""
    if not isinstance(params, dict):
        return "`parameters` must be an object"
    best_of = params.get("best_of")
    if best_of is not None and (not isinstance(best_of, int) or best_of < 1):
        return "`best_of` must be a positive integer"  # TGI's parser refuses these
    if best_of is not None and best_of > 1 and not _sampling(params):
        return "you must use sampling when `best_of` is > 1"
    for name in ("temperature", "repetition_penalty"):
        value = params.get(name)
        if value is not None and (not _number(value) or value <= 0):
            return f"`{name}` must be strictly positive"
    value = params.get("frequency_penalty")
    if value is not None and (not _number(value) or not -2 <= value <= 2):
        return "`frequency_penalty` must be >= -2.0 and <= 2.0"
    for name in ("top_p", "typical_p"):
        value = params.get(name)
        if value is not None and (not _number(value) or not 0 < value < 1):
            return f"`{name}` must be > 0.0 and < 1.0"
    value = params.get("top_k")
    if value is not None and (not _number(value) or value <= 0):
        return "`top_k` must be strictly positive"
    value = params.get("max_new_tokens")
    if value is not None and (not isinstance(value, int) or value < 0):
        return "`max_new_tokens` must be a non-negative integer"  # TGI's parser refuses these
    if value == 0:
        return "`max_new_tokens` must be strictly positive"
    stop = params.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        return "`stop` must be a list of strings"  # TGI's parser refuses these
    if len(stop) > MAX_STOP_SEQUENCES:
        return f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stop)}"
    if best_of is not None and best_of > 1 and params.get("seed") is not None:
        return "`seed` must not be set when `best_of` > 1"
    value = params.get("top_n_tokens")
    if value is not None and (not isinstance(value, int) or value > MAX_TOP_N_TOKENS):
        return f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {value}"
    if not inputs:
        return "`inputs` cannot be empty"
    value = params.get("truncate")
    if value is not None and (not isinstance(value, int) or not 0 < value <= MAX_INPUT_TOKENS):
        return (
            f"`truncate` must be strictly positive and less than {MAX_INPUT_TOKENS}. Given: {value}"
        )
    grammar = params.get("grammar")
    if grammar is not None:
        read = read_grammar(grammar)
        return read if isinstance(read, str) else grammar_problem(*read)
    return None


def _sampling(params: dict[str, Any]) -> bool:
    """Whether TGI samples: asked to, or told to warp the distribution."""
    return bool(
        params.get("do_sample")
        or params.get("temperature") not in (None, 1, 1.0)
        or params.get("top_k")
        or params.get("top_p") not in (None, 1, 1.0)
        or params.get("typical_p") not in (None, 1, 1.0)
    )


def _seed(server: FakeServer, params: dict[str, Any]) -> int | None:
    """The seed TGI reports: only when it sampled, and then one it drew if none was given."""
    if not _sampling(params):
        return None
    seed = params.get("seed")
    return seed if isinstance(seed, int) else server.random.getrandbits(63)


def _tokens(text: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """(tokens, text, finish_reason) of a model whose answer is ``text``, cut short by
    ``max_new_tokens`` or a ``stop`` sequence."""
    words = _common.pieces(text)
    limit = params.get("max_new_tokens")
    stops = params.get("stop") or []
    tokens: list[dict[str, Any]] = []
    out = ""
    finish = "eos_token"
    for i, piece in enumerate(words):
        if limit is not None and len(tokens) >= limit:
            finish = "length"
            break
        tokens.append({"id": 100 + i, "text": piece, "logprob": -0.25, "special": False})
        out += piece
        hit = next((s for s in stops if s and s in out), None)
        if hit is not None:
            finish = "stop_sequence"
            break
    if finish == "eos_token":
        if limit is not None and len(tokens) >= limit:
            finish = "length"
        else:
            tokens.append({"id": 2, "text": EOS, "logprob": -0.01, "special": True})
    return tokens, out, finish


def _generation(inputs: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """(tokens, generated_text, finish_reason) for the echo rule (or the grammar's answer) under
    the given parameters."""
    answer = _common.reply_text(inputs)
    grammar = params.get("grammar")
    if grammar is not None:
        read = read_grammar(grammar)
        if not isinstance(read, str):
            answer = grammar_answer(*read, answer)
    tokens, text, finish = _tokens(answer, params)
    if params.get("return_full_text"):
        text = inputs + text
    return tokens, text, finish


def _prefill(inputs: str) -> list[dict[str, Any]]:
    return [
        {"id": 10 + i, "text": piece, "logprob": None if i == 0 else -1.0}
        for i, piece in enumerate(_common.pieces(inputs))
    ]


def _event(data: Any) -> bytes:
    """One server-sent event as TGI's router (axum 0.7) writes it."""
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _event_text(data: str) -> bytes:
    """A server-sent event whose data is ``data`` as it is (TGI's closing ``[DONE]``)."""
    return b"data: " + data.encode() + b"\n\n"


def _chat_finish(finish: str) -> str:
    """TGI's chat names an end-of-sequence finish "stop", as OpenAI does; the others as they are."""
    return "stop" if finish == "eos_token" else finish


def _tool_call_id(messages: list[Any], server: FakeServer) -> str:
    """TGI's id for a streamed tool call: one more than the largest integer id of the calls in
    the conversation ("0" for the first), or a UUID when an id is not an integer."""
    next_id = 0
    for message in messages:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            try:
                next_id = max(next_id, int(call.get("id")) + 1)
            except (TypeError, ValueError, AttributeError):
                return str(uuid.UUID(int=server.random.getrandbits(128), version=4))
    return str(next_id)


def setup(server: FakeServer) -> None:
    def request_of(request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        """(inputs, parameters) of a generate request, or the 422 of a body TGI cannot read."""
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            return _error("validation", "missing field `inputs`")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return _error("validation", "Input validation error: `parameters` must be an object")
        return body["inputs"], dict(params)

    def refusal(inputs: str, params: dict[str, Any]) -> str | None:
        problem = _validate(params, inputs)
        return None if problem is None else f"Input validation error: {problem}"

    def generated(inputs: str, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        """What /generate answers, or TGI's refusal."""
        problem = refusal(inputs, params)
        if problem is not None:
            return _error("validation", problem)
        tokens, text, finish = _generation(inputs, params)
        out: dict[str, Any] = {"generated_text": text}
        if params.get("details") or params.get("decoder_input_details"):
            details: dict[str, Any] = {
                "finish_reason": finish,
                "generated_tokens": len(tokens),
                "seed": _seed(server, params),
                "prefill": _prefill(inputs) if params.get("decoder_input_details") else [],
                "tokens": tokens,
            }
            if params.get("top_n_tokens"):
                details["top_tokens"] = [[t] for t in tokens]
            out["details"] = details
        return out

    def stream_events(inputs: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """What /generate_stream sends: TGI validates inside the stream, so a refused request
        is a 200 whose one event is the error."""
        problem: str | None
        if (params.get("best_of") or 1) != 1:  # checked before the request is validated
            problem = (
                "Input validation error: `best_of` != 1 is not supported when streaming tokens"
            )
        elif params.get("decoder_input_details"):
            problem = (
                "Input validation error: `decoder_input_details` == true is not supported"
                " when streaming tokens"
            )
        else:
            problem = refusal(inputs, params)
        if problem is not None:
            return [{"error": problem, "error_type": "validation"}]
        tokens, text, finish = _generation(inputs, params)
        scripted: list[tuple[int, str]] = server.state.get("tgi_stream_errors") or []
        fail = scripted.pop(0) if scripted else None
        events: list[dict[str, Any]] = []
        for i, token in enumerate(tokens):
            if fail is not None and i == fail[0]:
                events.append({"error": f"injected {fail[1]} error", "error_type": fail[1]})
                break
            event: dict[str, Any] = {
                "index": i + 1,  # TGI counts the events from 1
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
                        "seed": _seed(server, params),
                    }
            events.append(event)
        return events

    def answer(out: Any) -> web.Response:
        return web.json_response(out, headers={"x-request-id": f"tgi-{server.request_count}"})

    async def generate(request: web.Request) -> web.StreamResponse:
        parsed = request_of(request)
        if isinstance(parsed, web.Response):
            return parsed
        out = generated(*parsed)
        return out if isinstance(out, web.Response) else answer(out)

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        parsed = request_of(request)
        if isinstance(parsed, web.Response):
            return parsed
        events = stream_events(*parsed)
        return await _common.stream(request, (_event(e) for e in events))

    async def compat_generate(request: web.Request) -> web.StreamResponse:
        """``POST /``: generate or generate_stream by the body's ``stream`` flag; the model is
        tagged text-generation, so the prompt comes back in front unless asked otherwise."""
        parsed = request_of(request)
        if isinstance(parsed, web.Response):
            return parsed
        inputs, params = parsed
        if params.get("return_full_text") is None:
            params["return_full_text"] = True
        if request["json"].get("stream"):
            events = stream_events(inputs, params)
            return await _common.stream(request, (_event(e) for e in events))
        out = generated(inputs, params)
        return out if isinstance(out, web.Response) else answer([out])  # a list, as api-inference

    async def chat(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _error("validation", "Input validation error: `messages` cannot be empty")
        fmt = body.get("response_format")
        grammar = None if fmt is None else read_grammar(fmt)
        if isinstance(grammar, str):
            return _error("validation", f"response_format: {grammar}")
        if grammar is not None and body.get("tools") is not None:
            return _error("tool_error", "Tool error: Grammar and tools are mutually exclusive")
        tools = body.get("tools")
        if tools is not None and not (
            isinstance(tools, list)
            and all(
                isinstance(t, dict)
                and t.get("type") == "function"
                and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str)
                for t in tools
            )
        ):  # TGI's Tool: {"type": "function", "function": {name, description, arguments}}
            return _error("validation", "Input validation error: tools: unknown variant")
        # What the chat request becomes: a generation with these parameters (TGI's
        # ChatRequest::try_into_generate), validated as any other.
        temperature, presence = body.get("temperature"), body.get("presence_penalty")
        params = {
            "max_new_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
            "stop": body.get("stop") or [],
            "temperature": None if temperature == 0 else temperature,
            "top_p": body.get("top_p"),
            "frequency_penalty": body.get("frequency_penalty"),
            "repetition_penalty": presence + 2 if _number(presence) else presence,
            "top_n_tokens": body.get("top_logprobs"),
        }
        problem = _validate(params)
        if problem is None and grammar is not None:
            problem = grammar_problem(*grammar)
        if problem is not None:
            return _error("validation", f"Input validation error: {problem}")
        model = body.get("model")
        model_id = MODEL_ID if model in (None, "tgi") else str(model)
        tools = None if body.get("tool_choice") == "none" else body.get("tools")
        text, calls = openai.plan_reply(messages, tools)
        if grammar is not None:
            text = grammar_answer(*grammar, text)
        prompt_tokens = sum(_common.count_tokens(openai._text(m.get("content"))) for m in messages)
        base = {
            "id": "",
            "created": int(time.time()),
            "model": model_id,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if calls:  # TGI generates the call as JSON, names it, and ends
            call = calls[0]["function"]
            name, args = call["name"], json.loads(call["arguments"])
            tokens, _, finish = _tokens(json.dumps({"function": {"_name": name, **args}}), {})
        else:
            tokens, text, finish = _tokens(text, params)
        usage = openai.usage(prompt_tokens, len(tokens))
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                arguments = json.dumps(args, separators=(",", ":"))
                function = {"description": None, "name": name, "arguments": arguments}
                message = {
                    "role": "assistant",
                    "tool_calls": [{"id": "0", "type": "function", "function": function}],
                }
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _chat_finish(finish),
            }
            answer = {"object": "chat.completion", **base, "choices": [choice], "usage": usage}
            return web.json_response(answer)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _event({"object": "chat.completion.chunk", **base, "choices": [choice]})

        chunks: list[bytes] = []
        if calls:
            # Once the generated JSON names the function, TGI sends the name with "{" and then
            # the arguments as they come; the end-of-sequence token after a whole call sends
            # nothing, so such a stream has no finish reason.
            call_id = _tool_call_id(messages, server)
            rest = json.dumps(args)[1:]
            for i, piece in enumerate(("{", rest[: len(rest) // 2], rest[len(rest) // 2 :])):
                function = {"name": name if i == 0 else None, "arguments": piece}
                delta = {"index": 0, "id": call_id, "type": "function", "function": function}
                chunks.append(chunk({"role": "assistant", "tool_calls": [delta]}))
        else:
            for i, token in enumerate(tokens):
                content = "" if token["special"] else token["text"]
                last = i == len(tokens) - 1
                chunks.append(
                    chunk(
                        {"role": "assistant", "content": content},
                        _chat_finish(finish) if last else None,
                    )
                )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(
                _event({"object": "chat.completion.chunk", **base, "choices": [], "usage": usage})
            )
        chunks.append(_event_text("[DONE]"))
        return await _common.stream(request, chunks)

    async def info(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": MAX_STOP_SEQUENCES,
                "max_input_tokens": MAX_INPUT_TOKENS,
                "max_total_tokens": 2048,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSION,
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

    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/generate", generate),
        ("POST", "/generate_stream", generate_stream),
        ("GET", "/info", info),
        ("GET", "/health", health),
        ("POST", "/tokenize", tokenize),
        ("POST", "/v1/chat/completions", chat),
        *((m, p, h) for m, p, h in openai.routes("/v1") if p.startswith("/v1/models")),
        ("POST", "/", compat_generate),
        ("GET", "/", health),  # TGI answers GET / and /ping as /health
        ("GET", "/ping", health),
    ]
    for method, path, handler in routes:
        server.add_route(method, path, handler, error_body=error_body)
