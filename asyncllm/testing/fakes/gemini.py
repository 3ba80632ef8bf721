"""The Gemini protocol under ``/v1beta`` (REST JSON of google.ai.generativelanguage.v1beta).

``models/{model}:generateContent`` (JSON), ``:streamGenerateContent`` (SSE with ``alt=sse``, a
JSON array without), ``:embedContent``, ``:batchEmbedContents``, ``:countTokens`` and paged
``GET models``, ``GET models/{model}``; the same routes answer under ``/v1`` too (the
google-genai SDK's default). A function declared with ``parametersJsonSchema`` (or its proto name
``parameters_json_schema``) is called with arguments made from that schema. Replies follow
``_common``'s rules (a function response that is a lone string under ``output`` or ``result`` is
that string); function calls carry no id, as Gemini's often do not. Errors (injected ones too) are google.rpc.Status bodies. A prompt containing ``BLOCKME``
is refused with ``promptFeedback.blockReason``; one containing ``UNSAFEREPLY`` gets a candidate
that stopped for ``SAFETY`` with no content. ``server.state["gemini_max_page_size"]`` (default 2)
caps the models page size, so paging is exercised.
"""

from __future__ import annotations

import base64
import itertools
import json
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


def plan_reply(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(text, functionCall parts) the fake model answers with."""
    contents = _check_contents(body.get("contents"))
    last_parts = contents[-1]["parts"]
    responses = [p["functionResponse"] for p in last_parts if "functionResponse" in p]
    if responses:
        first = responses[0]
        result = first["response"]
        # A lone string under "output" (our client's wrapping) or "result" (google-genai's) is
        # the result itself
        (key, output), *rest = list(result.items()) or [("", None)]
        plain = key in ("output", "result") and isinstance(output, str) and not rest
        text = output if plain else json.dumps(result)
        return _common.tool_result_text(first["name"], text), []
    declarations = [
        d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()
    ]
    if declarations:
        fn = declarations[0]
        # ``parametersJsonSchema`` is plain JSON schema (proto JSON takes the field's proto name,
        # ``parameters_json_schema``, too: google-genai sends that); ``parameters`` is a Schema
        schema = (
            fn.get("parametersJsonSchema")
            or fn.get("parameters_json_schema")
            or _lower_types(fn.get("parameters") or {})
        )
        args = _common.tool_arguments(schema)
        return "", [{"functionCall": {"name": fn.get("name", "tool"), "args": args}}]
    user = next((c for c in reversed(contents) if c["role"] == "user"), contents[-1])
    return _common.reply_text(_text(user["parts"])), []


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

    def answer(body: Any, model: str) -> dict[str, Any]:
        """The whole (non-streamed) GenerateContentResponse; raises _Invalid."""
        if not isinstance(body, dict):
            raise _Invalid("request body must be a JSON object")
        text, calls = plan_reply(body)
        rid = f"resp-{next(_ids)}"
        usage = _usage(_prompt_tokens(body), text)
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
        parts = ([{"text": text}] if text else []) + calls
        config = body.get("generationConfig") or {}
        n = int(config.get("candidateCount") or 1)
        candidates = [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": i}
            for i in range(n)
        ]
        return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": rid}  # fmt: skip

    async def generate(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        try:
            return web.json_response(answer(request["json"], model))
        except _Invalid as exc:
            return _error(400, str(exc))

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
            parts = candidates[0]["content"]["parts"]
            text = _text(parts)
            for piece in _common.pieces(text) if text else ():
                events.append({"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}], **base})  # fmt: skip
            calls = [p for p in parts if "functionCall" in p]
            if calls:
                events.append({"candidates": [{"content": {"role": "model", "parts": calls}, "index": 0}], **base})  # fmt: skip
            last = events[-1] if events else {"candidates": [{"index": 0}], **base}
            if not events:
                events.append(last)
            last["candidates"][0]["finishReason"] = "STOP"
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
