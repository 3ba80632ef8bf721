"""The Groq protocol: OpenAI's routes under ``/openai/v1``, with Groq's rate-limit headers.

Every answer under the prefix (injected faults included) carries ``x-ratelimit-*`` headers taken
from ``server.state["groq_rate_limits"]`` (tests may change them); ``remaining-requests`` counts
down with each request. A 429 reports no tokens left and carries ``retry-after`` (``"0"`` unless
the fault or the state says otherwise).

Chat keeps Groq's rules (``GROQ``): strict ``json_schema`` formats are checked as OpenAI checks
them, and the fake model reasons when asked to (``reasoning_format``, ``include_reasoning: true``,
or a ``reasoning_effort`` other than "none"): ``reasoning_format`` "parsed" (and
``include_reasoning: true``) put it in ``message.reasoning`` (``delta.reasoning`` in a stream),
"raw" (the default otherwise) in the content between ``<think>`` tags, "hidden" (and
``include_reasoning: false``) nowhere. As on Groq, ``reasoning_format`` and ``include_reasoning``
together, or "raw" with JSON mode or tools, are a 400. Groq has no refusal field.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _responses, openai

PREFIX = "/openai/v1"
REASONING_FORMATS = ("parsed", "raw", "hidden")


def _bad_request(message: str, param: str) -> web.Response:
    body = openai.error_body(400, message)
    body["error"].update(param=param, code=None)
    return web.json_response(body, status=400)


def reasoning(body: dict[str, Any]) -> str | web.Response | None:
    """Where Groq puts the fake model's reasoning for this request (see the module docstring)."""
    fmt = body.get("reasoning_format")
    include = body.get("include_reasoning")
    effort = body.get("reasoning_effort")
    if fmt is not None and include is not None:
        return _bad_request(
            "reasoning_format and include_reasoning cannot be used together", "reasoning_format"
        )
    if fmt is not None and fmt not in REASONING_FORMATS:
        return _bad_request(
            "'reasoning_format' must be one of " + ", ".join(REASONING_FORMATS), "reasoning_format"
        )
    if include is not None and not isinstance(include, bool):
        return _bad_request("'include_reasoning' must be a boolean", "include_reasoning")
    json_mode = isinstance(body.get("response_format"), dict) and body["response_format"].get(
        "type"
    ) in ("json_object", "json_schema")
    if fmt == "raw" and (json_mode or body.get("tools")):
        return _bad_request(
            "reasoning_format=raw is not supported with JSON mode or tool calling",
            "reasoning_format",
        )
    if effort == "none" or not (fmt is not None or include is True or effort is not None):
        return None  # the model does not reason
    if fmt == "hidden" or include is False:
        return None
    if fmt == "parsed" or include is True or json_mode or body.get("tools"):
        return "reasoning"
    return openai.INLINE


# Groq's built-in tools (GPT-OSS models): server-run, offered beside functions.
GROQ = openai.Rules(
    strict_schemas=True,
    tool_types=frozenset({"function", "browser_search", "code_interpreter"}),
    reasoning=reasoning,
)


def default_rate_limits() -> dict[str, Any]:
    return {
        "x-ratelimit-limit-requests": 14400,
        "x-ratelimit-remaining-requests": 14400,
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-limit-tokens": 18000,
        "x-ratelimit-remaining-tokens": 17997,
        "x-ratelimit-reset-tokens": "7.66s",
        "retry-after": "0",
    }


def setup(server: FakeServer, prefix: str = PREFIX) -> None:
    openai.setup(server, prefix=prefix, rules=GROQ, responses=_responses.GROQ)
    from . import _openai_platform

    _openai_platform.setup_audio(server, prefix)
    limits = server.state.setdefault("groq_rate_limits", default_rate_limits())

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith(prefix + "/"):
            return
        remaining = max(0, int(limits["x-ratelimit-remaining-requests"]) - 1)
        limits["x-ratelimit-remaining-requests"] = remaining
        for name, value in limits.items():
            if name != "retry-after":
                response.headers[name] = str(value)
        response.headers.setdefault("x-request-id", f"req_groq_{remaining}")
        if response.status == 429:
            response.headers["x-ratelimit-remaining-tokens"] = "0"
            response.headers.setdefault("retry-after", str(limits["retry-after"]))

    server.app.on_response_prepare.append(add_headers)
