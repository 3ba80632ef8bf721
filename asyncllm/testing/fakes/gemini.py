"""The Gemini protocol under ``/v1beta`` (REST JSON of google.ai.generativelanguage.v1beta).

``models/{model}:generateContent`` (JSON), ``:streamGenerateContent`` (SSE with ``alt=sse``, a
JSON array without), ``:embedContent``, ``:batchEmbedContents``, ``:countTokens`` and paged
``GET models``, ``GET models/{model}``; the same routes answer under ``/v1`` too (the
google-genai SDK's default). A function declared with ``parametersJsonSchema`` (or its proto name
``parameters_json_schema``) is called with arguments made from that schema. Replies follow
``_common``'s rules (a function response that is a lone string under ``output`` or ``result`` is
that string); function calls carry no id, as Gemini's often do not. Errors (injected ones too)
are google.rpc.Status bodies. Tools: each ``tools`` entry holds ``functionDeclarations`` or one of the built-in tools
(``googleSearch``, ``codeExecution``, ``urlContext``..., camelCase or the proto's snake_case),
anything else a 400; ``toolConfig.functionCallingConfig.mode`` is one the API has (``VALIDATED``
too). With ``codeExecution`` offered, an answer to a user's text starts with the code the model
ran and its result (``executableCode``, ``codeExecutionResult`` parts). A prompt containing
``BLOCKME`` is refused with
``promptFeedback.blockReason``; one containing ``UNSAFEREPLY`` gets a candidate that stopped for
``SAFETY`` with no content. ``server.state["gemini_max_page_size"]`` (default 2) caps the models
page size, so paging is exercised.

Structured output: with ``responseMimeType: application/json`` the answer is JSON that follows
``responseJsonSchema`` (or ``responseSchema``), made by ``_common.sample_for``, unless tools are
offered. ``maxOutputTokens`` cuts an answer at that many words, with ``finishReason:
MAX_TOKENS``.

Thinking, as Gemini 3 and 2.5 do it: a model named ``gemini-3*`` or ``gemini-2.5*``, or any
model given a ``thinkingConfig`` (other than ``thinkingBudget: 0``), thinks. With
``includeThoughts`` the answer starts with a thought part, ``"thinking about: <user text>"``.
A thinking model signs its answer (``thoughtSignature``: an HMAC with this server's secret): the
first ``functionCall`` part of a step, else the last part (in a stream, a last piece with empty
text, as Gemini sends it). For ``gemini-3*`` models the API's rule is enforced: each step of the
current turn (the model turns after the last user turn with text) must send back its first
``functionCall`` part with the signature it was given, else 400 ``Function call is missing a
thought_signature``; a signature this server did not issue is ``Corrupted thought signature.``
(Google's documented placeholders ``skip_thought_signature_validator`` and
``context_engineering_is_the_way_to_go`` pass). A ``$ref`` beside keys other than
``description``, ``default`` and ``$``-keys in a JSON schema is refused, as Gemini refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common

PREFIX = "/v1beta"

_ids = itertools.count(1)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    422: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

MODELS = [
    ("fake-chat", ["generateContent", "countTokens"]),
    ("fake-chat-lite", ["generateContent", "countTokens"]),
    ("fake-embed", ["embedContent", "batchEmbedContents"]),
    ("fake-chat-pro", ["generateContent", "countTokens"]),
    ("fake-vision", ["generateContent"]),
]

_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]


def error_body(status: int, message: str) -> Any:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
    }
    if status == 429:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"},
        ]
    return {"error": error}


def _error(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


class _Invalid(Exception):
    pass


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(
        p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")
    )


def _check_contents(contents: Any) -> list[dict[str, Any]]:
    if not isinstance(contents, list) or not contents:
        raise _Invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            raise _Invalid(f"contents[{i}].role must be 'user' or 'model'")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _Invalid(f"contents[{i}].parts must not be empty")
        for part in parts:
            response = part.get("functionResponse") if isinstance(part, dict) else None
            if response is not None and not (
                isinstance(response.get("name"), str) and isinstance(response.get("response"), dict)
            ):
                raise _Invalid(f"contents[{i}]: functionResponse needs a name and a response")
    return contents


def _lower_types(schema: Any) -> Any:
    """Gemini's Schema (types in upper case) as the JSON schema ``_common.sample_for`` reads."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


_BESIDE_REF = frozenset({"description", "default"})


def _check_refs(schema: Any) -> None:
    """Gemini's rule for JSON schemas: beside a ``$ref`` only ``description``, ``default`` and
    keys starting with ``$``."""
    if isinstance(schema, list):
        for item in schema:
            _check_refs(item)
    elif isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is not None and any(
            k not in _BESIDE_REF and not str(k).startswith("$") for k in schema
        ):
            name = str(ref).rsplit("/", 1)[-1]
            raise _Invalid(
                f"$ref '{name}' was set alongside unsupported fields. If a schema node has $ref "
                "set, then only description and default can be set alongside it"
            )
        for value in schema.values():
            _check_refs(value)


def _json_field(spec: dict[str, Any], name: str) -> Any:
    """A ``google.protobuf.Value`` field by its JSON name or its proto name (the SDK sends
    either): ``responseJsonSchema`` or ``response_json_schema``."""
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return spec.get(name, spec.get(snake))


def answer_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the answer must follow (``{}`` for any JSON), None for text; raises
    _Invalid for a request the API refuses."""
    config = body.get("generationConfig") or {}
    json_schema = _json_field(config, "responseJsonSchema")
    if json_schema is None:
        json_schema = config.get("_responseJsonSchema")
    schema = _json_field(config, "responseSchema")
    mime = _json_field(config, "responseMimeType")
    if json_schema is not None and schema is not None:
        raise _Invalid("response_schema and response_json_schema cannot both be set")
    if json_schema is not None:
        if mime != "application/json":
            raise _Invalid("response_json_schema requires response_mime_type application/json")
        _check_refs(json_schema)
        return json_schema if isinstance(json_schema, dict) else {}
    if schema is not None:
        return _lower_types(schema) if isinstance(schema, dict) else {}
    return {} if mime == "application/json" else None


BUILTIN_TOOLS = frozenset(
    {
        "googleSearch", "google_search", "googleSearchRetrieval", "google_search_retrieval",
        "codeExecution", "code_execution", "urlContext", "url_context", "computerUse",
        "computer_use", "fileSearch", "file_search", "googleMaps", "google_maps",
    }
)  # fmt: skip
MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _Invalid("Invalid JSON payload received. 'tools' must be a list of Tool")
        for i, tool in enumerate(tools):
            for key, value in tool.items():
                if key in ("functionDeclarations", "function_declarations"):
                    if not isinstance(value, list):
                        raise _Invalid(f"tools[{i}].{key} must be a list")
                elif key not in BUILTIN_TOOLS:
                    raise _Invalid(
                        f"Invalid JSON payload received. Unknown name \"{key}\" at 'tools[{i}]': "
                        "Cannot find field."
                    )
                elif not isinstance(value, dict):
                    raise _Invalid(f"tools[{i}].{key} must be an object")
    config = _json_field(body.get("toolConfig") or {}, "functionCallingConfig") or {}
    mode = config.get("mode") if isinstance(config, dict) else None
    if mode is not None and mode not in MODES:
        raise _Invalid(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode!r})")


def _ran_code(body: dict[str, Any], contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts of the code the model ran, when code execution is offered and the last turn is
    the user's text."""
    offered = any("codeExecution" in t or "code_execution" in t for t in body.get("tools") or ())
    if not offered or any("functionResponse" in p for p in contents[-1]["parts"]):
        return []
    code = f"print({_user_text(contents)!r})"
    return [
        {"executableCode": {"language": "PYTHON", "code": code}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": _user_text(contents)}},
    ]


def plan_reply(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(text, functionCall parts) the fake model answers with."""
    _check_tools(body)
    contents = _check_contents(body.get("contents"))
    last_parts = contents[-1]["parts"]
    responses = [p["functionResponse"] for p in last_parts if "functionResponse" in p]
    declarations = [
        d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()
    ]
    schema = answer_format(body)
    if responses:
        first = responses[0]
        result = first["response"]
        # A lone string under "output" (our client's wrapping) or "result" (google-genai's) is
        # the result itself
        (key, output), *rest = list(result.items()) or [("", None)]
        plain = key in ("output", "result") and isinstance(output, str) and not rest
        text = output if plain else json.dumps(result)
        return _common.tool_result_text(first["name"], text), []
    if schema is not None and not declarations:
        return json.dumps(_sample(schema, "response_json_schema") if schema else {"answer": "test"}), []  # fmt: skip
    if declarations:
        fn = declarations[0]
        # ``parametersJsonSchema`` is plain JSON schema (proto JSON takes the field's proto name,
        # ``parameters_json_schema``, too: google-genai sends that); ``parameters`` is a Schema
        json_schema = _json_field(fn, "parametersJsonSchema")
        if json_schema is not None:
            _check_refs(json_schema)
        args = _sample(
            json_schema if json_schema is not None else _lower_types(fn.get("parameters") or {}),
            "function_declarations[0].parameters",
            _common.tool_arguments,
        )
        return "", [{"functionCall": {"name": fn.get("name", "tool"), "args": args}}]
    return _common.reply_text(_user_text(contents)), []


def _sample(schema: Any, where: str, make: Callable[[Any], Any] = _common.sample_for) -> Any:
    """A value made from a schema the request gave, which may be no schema at all: the API
    answers that with 400, never 500."""
    try:
        return make(schema)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, RecursionError) as exc:
        raise _Invalid(f"{where} is not a valid schema: {type(exc).__name__}") from None


def _user_text(contents: list[dict[str, Any]]) -> str:
    user = next((c for c in reversed(contents) if c["role"] == "user"), contents[-1])
    return _text(user["parts"])


# -- thinking and thought signatures ------------------------------------------------------------

MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {position}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
CORRUPTED_SIGNATURE = "Corrupted thought signature."
# Google's documented stand-ins for a signature, for history the model did not write.
PLACEHOLDER_SIGNATURES = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)
_THINKING_LEVELS = frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"})  # fmt: skip


class Signer:
    """Thought signatures as this server issues them: a nonce and an HMAC (this server's secret)
    of the nonce and what the signature is bound to (a function call's name, or the text)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = os.urandom(16) if secret is None else secret

    def _mac(self, kind: bytes, nonce: bytes, name: str) -> bytes:
        message = kind + nonce + name.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]

    def sign(self, part: dict[str, Any]) -> str:
        kind, name = self._binding(part)
        nonce = os.urandom(8)
        return base64.b64encode(kind + nonce + self._mac(kind, nonce, name)).decode()

    def valid(self, part: dict[str, Any]) -> bool:
        """Whether the part's signature is one this server issued for such a part."""
        signature = part.get("thoughtSignature", part.get("thought_signature"))
        if signature in PLACEHOLDER_SIGNATURES:
            return True
        if not isinstance(signature, str):
            return False
        try:  # proto JSON takes bytes in either base64 alphabet
            raw = base64.b64decode(signature.replace("-", "+").replace("_", "/") + "==")
        except (binascii.Error, ValueError):
            return False
        kind, name = self._binding(part)
        return len(raw) == 25 and hmac.compare_digest(
            raw, kind + raw[1:9] + self._mac(kind, raw[1:9], name)
        )

    @staticmethod
    def _binding(part: dict[str, Any]) -> tuple[bytes, str]:
        call = part.get("functionCall", part.get("function_call"))
        if isinstance(call, dict):
            return b"f", str(call.get("name"))
        return b"t", ""


def thinking_of(model: str, config: dict[str, Any]) -> tuple[bool, bool]:
    """(whether the model thinks, whether it shows its thoughts) for a generationConfig; raises
    _Invalid for a thinkingConfig the API refuses."""
    thinking = _json_field(config, "thinkingConfig") or {}
    if not isinstance(thinking, dict):
        raise _Invalid("generation_config.thinking_config must be an object")
    level = _json_field(thinking, "thinkingLevel")
    budget = _json_field(thinking, "thinkingBudget")
    if level is not None and budget is not None:
        raise _Invalid("thinking_level and thinking_budget cannot both be set")
    if level is not None and str(level).upper() not in _THINKING_LEVELS:
        raise _Invalid(f"Invalid value at 'generation_config.thinking_config.thinking_level', {json.dumps(level)}")  # fmt: skip
    thinks = model.startswith(("gemini-3", "gemini-2.5")) or bool(thinking)
    if budget == 0 and not model.startswith("gemini-3"):
        thinks = False
    return thinks, thinks and _json_field(thinking, "includeThoughts") is True


def check_signatures(contents: list[dict[str, Any]], signer: Signer) -> None:
    """Gemini 3's rule: the first functionCall part of each model step after the last user turn
    with text must carry the signature it was given; any signature sent must be genuine."""
    start = 0
    for i, content in enumerate(contents):
        if content["role"] == "user" and any(
            not isinstance(p, dict) or "functionResponse" not in p for p in content["parts"]
        ):
            start = i + 1
    for i, content in enumerate(contents):
        parts = [p for p in content["parts"] if isinstance(p, dict)]
        calls = [p for p in parts if "functionCall" in p or "function_call" in p]
        for part in parts:
            signed = "thoughtSignature" in part or "thought_signature" in part
            if signed and not signer.valid(part):
                raise _Invalid(CORRUPTED_SIGNATURE)
        if i >= start and content["role"] == "model" and calls:
            first = calls[0]
            if "thoughtSignature" not in first and "thought_signature" not in first:
                call = first.get("functionCall", first.get("function_call")) or {}
                name = call.get("name", "") if isinstance(call, dict) else ""
                raise _Invalid(MISSING_SIGNATURE.format(name=name, position=i + 1))


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [_text(c.get("parts") or []) for c in body.get("contents") or ()]
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        texts.append(_text(system.get("parts") or []))
    return sum(_common.count_tokens(t) for t in texts)


def _usage(prompt: int, text: str) -> dict[str, int]:
    out = _common.count_tokens(text)
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out,
        "totalTokenCount": prompt + out,
    }


def _all_text(body: dict[str, Any]) -> str:
    return " ".join(_text(c.get("parts") or []) for c in body.get("contents") or ())


def model_body(name: str, methods: list[str]) -> dict[str, Any]:
    """A google.ai.generativelanguage.v1beta.Model."""
    return {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "inputTokenLimit": 32768,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": methods,
    }


def setup(server: FakeServer, prefix: str = PREFIX) -> None:
    def check_key(request: web.Request) -> web.Response | None:
        if not request.headers.get("x-goog-api-key") and "key" not in request.query:
            return _error(403, "Method doesn't allow unregistered callers. Please use an API key.")
        return None

    signer = Signer()

    def answer(body: Any, model: str) -> dict[str, Any]:
        """The whole (non-streamed) GenerateContentResponse; raises _Invalid."""
        if not isinstance(body, dict):
            raise _Invalid("request body must be a JSON object")
        config = body.get("generationConfig") or {}
        thinks, shows = thinking_of(model, config)
        text, calls = plan_reply(body)
        if model.startswith("gemini-3"):
            check_signatures(body["contents"], signer)
        rid = f"resp-{next(_ids)}"
        finish = "STOP"
        limit = _json_field(config, "maxOutputTokens")
        if text and not calls and isinstance(limit, int) and _common.count_tokens(text) > limit:
            text = "".join(_common.pieces(text)[:limit])
            finish = "MAX_TOKENS"
        thought = f"thinking about: {_user_text(body['contents'])}" if shows else ""
        usage = _usage(_prompt_tokens(body), text)
        if thought:
            usage["thoughtsTokenCount"] = _common.count_tokens(thought)
            usage["totalTokenCount"] += usage["thoughtsTokenCount"]
        words = _all_text(body)
        if "BLOCKME" in words:
            return {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _RATINGS},
                "usageMetadata": {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]},
                "modelVersion": model,
                "responseId": rid,
            }  # fmt: skip
        if "UNSAFEREPLY" in words:
            candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _RATINGS}
            return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": rid}  # fmt: skip
        parts = ([{"text": thought, "thought": True}] if thought else []) + (
            [{"text": text}] if text else []
        )
        parts[len(parts) - bool(text) : len(parts) - bool(text)] = _ran_code(body, body["contents"])
        parts += [dict(call) for call in calls]
        if thinks and parts:
            # Gemini signs the first function call of a step, or else the last part.
            signed = next((p for p in parts if "functionCall" in p), parts[-1])
            signed["thoughtSignature"] = signer.sign(signed)
        n = int(config.get("candidateCount") or 1)
        candidates = [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": i}
            for i in range(n)
        ]
        return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": rid}  # fmt: skip

    server.state["gemini.answer"] = answer  # batch generation answers each request with it

    async def generate(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        try:
            return web.json_response(answer(request["json"], model))
        except _Invalid as exc:
            return _error(400, str(exc))

    def stream_event(parts: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], **base}

    async def stream(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        try:
            whole = answer(request["json"], model)
        except _Invalid as exc:
            return _error(400, str(exc))
        events: list[dict[str, Any]] = []
        base = {"modelVersion": model, "responseId": whole["responseId"]}
        candidates = whole.get("candidates")
        if not candidates or "content" not in candidates[0]:
            events.append(whole)
        else:
            signature = None
            for part in candidates[0]["content"]["parts"]:
                if "text" not in part:  # a function call, code and its result: whole
                    events.append(stream_event([part], base))
                    continue
                # Text comes word by word; its signature on a last piece with empty text.
                signature = part.get("thoughtSignature", signature)
                for piece in _common.pieces(part["text"]) if part["text"] else ():
                    events.append(stream_event([{**part, "text": piece}] if part.get("thought") else [{"text": piece}], base))  # fmt: skip
            if signature is not None:
                events.append(stream_event([{"text": "", "thoughtSignature": signature}], base))
            last = events[-1] if events else {"candidates": [{"index": 0}], **base}
            if not events:
                events.append(last)
            last["candidates"][0]["finishReason"] = candidates[0]["finishReason"]
            last["usageMetadata"] = whole["usageMetadata"]
        if request.query.get("alt") != "sse":
            return web.json_response(events)
        # Google's servers end each event with CRLF pairs, which clients must accept
        chunks = (b"data: " + json.dumps(event).encode() + b"\r\n\r\n" for event in events)
        return await _common.stream(request, chunks)

    def embed_values(item: Any) -> list[float]:
        if not isinstance(item, dict) or not isinstance(item.get("content"), dict):
            raise _Invalid("* EmbedContentRequest.content: content is not specified")
        text = _text(item["content"].get("parts") or [])
        return _common.vector(text, int(item.get("outputDimensionality") or 8))

    async def embed(request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response({"embedding": {"values": embed_values(request["json"])}})
        except _Invalid as exc:
            return _error(400, str(exc))

    async def batch_embed(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        model = "models/" + request.match_info["model"]
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        if len(requests) > 100:
            return _error(
                400,
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
            )
        try:
            for i, item in enumerate(requests):
                if item.get("model") != model:
                    raise _Invalid(f"requests[{i}].model must be the batch model {model}")
            values = [{"values": embed_values(item)} for item in requests]
        except _Invalid as exc:
            return _error(400, str(exc))
        return web.json_response({"embeddings": values})

    async def count(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        inner = body.get("generateContentRequest")
        if inner is not None and "contents" in body:
            return _error(400, "give contents or generateContentRequest, not both")
        target = inner if isinstance(inner, dict) else body
        try:
            _check_contents(target.get("contents"))
        except _Invalid as exc:
            return _error(400, str(exc))
        return web.json_response({"totalTokens": _prompt_tokens(target)})

    async def models(request: web.Request) -> web.StreamResponse:
        try:
            size = int(request.query.get("pageSize") or 50)
            token = request.query.get("pageToken")
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            return _error(400, "invalid page size or page token")
        size = max(1, min(size, int(server.state.get("gemini_max_page_size", 2))))
        page = MODELS[start : start + size]
        body: dict[str, Any] = {"models": [model_body(name, methods) for name, methods in page]}
        if start + size < len(MODELS):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return web.json_response(body)

    async def get_model(request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        methods = dict(MODELS).get(name)
        if methods is None:
            version = request.path.split("/")[1]
            return _error(404, f"models/{name} is not found for API version {version}")
        return web.json_response(model_body(name, methods))

    routes = [
        ("generateContent", generate),
        ("streamGenerateContent", stream),
        ("embedContent", embed),
        ("batchEmbedContents", batch_embed),
        ("countTokens", count),
    ]
    # The API answers the same methods under /v1 (google-genai's default) and /v1beta.
    for base in (prefix, "/v1") if prefix == PREFIX else (prefix,):
        for method, handler in routes:
            path = f"{base}/models/{{model}}:{method}"
            guarded = _common.guarded(check_key, handler)
            server.add_route("POST", path, guarded, error_body=error_body)
        for path, handler in ((f"{base}/models", models), (f"{base}/models/{{model}}", get_model)):
            server.add_route(
                "GET", path, _common.guarded(check_key, handler), error_body=error_body
            )
    from . import _gemini_platform  # the Files API and batch generation

    _gemini_platform.setup(server, prefix)


def add_generated_file(
    server: FakeServer, content: bytes, display_name: str, mime_type: str = "video/mp4"
) -> str:
    """Store a file as a Gemini model generates one (``source: GENERATED``, downloadable, unlike
    an upload). Its name."""
    from ._files import store

    files = store(server, "gemini", "files/up-")
    file_id = "files/gen-" + files.new_id().rpartition("-")[2]
    return files.add_bytes(content, filename=display_name, mime_type=mime_type, file_id=file_id).id
