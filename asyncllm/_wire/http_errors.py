"""How a service built on asyncllm answers its own caller when a call fails: the status, the
headers and a small JSON body, written once for every web framework.

The mapping follows who can act on the failure. An upstream that limits us is passed on as 429,
and one that is down or shedding load (an open breaker, 529, a full queue, a closing client) as
503, with ``Retry-After`` where we know when to come back; an upstream that timed out is 504.
Everything else the upstream did wrong (5xx, connection errors, answers that break the protocol)
is 502, and so is every upstream 4xx: the service built the request, so a 400 is our bug and a
401/403 our key, never the caller's fault. Our own misconfiguration is a 500 that names no
internals. The body carries the request ID and never the upstream's message, URL or body, which
may hold internals.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncLLMError,
    CircuitOpenError,
    ClientClosedError,
    ContentBlockedError,
    OverloadedError,
    QueueFullError,
    RateLimitError,
)


class ErrorAnswer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


# (error class, status, code, public message), most specific first: the first match wins, so
# an error a later version adds under one of these classes is answered as its parent is.
_RULES: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (RateLimitError, 429, "rate_limited", "the upstream model service is rate limiting us"),
    (OverloadedError, 503, "overloaded", "the upstream model service is overloaded"),
    (CircuitOpenError, 503, "unavailable", "the upstream model service is unavailable"),
    (QueueFullError, 503, "busy", "too many requests are waiting for the model service"),
    (ClientClosedError, 503, "shutting_down", "the service is shutting down"),
    (APITimeoutError, 504, "upstream_timeout", "the upstream model service timed out"),
    (ContentBlockedError, 422, "content_blocked", "the model refused the content"),
    (APIConnectionError, 502, "upstream_unreachable", "the upstream model service is unreachable"),
    (APIStatusError, 502, "upstream_error", "the upstream model service failed"),
    (APIError, 502, "upstream_error", "the upstream model service gave an invalid answer"),
)
_INTERNAL = (500, "internal_error", "internal error")


def _retry_after(error: BaseException) -> float | None:
    if isinstance(error, CircuitOpenError):
        return error.retry_in
    value = getattr(error, "retry_after", None)
    return value if isinstance(value, (int, float)) else None


def error_answer(error: AsyncLLMError, request_id: str | None) -> ErrorAnswer:
    """The answer to give a caller for ``error`` (see the module docstring)."""
    status, code, message = _INTERNAL
    for cls, rule_status, rule_code, rule_message in _RULES:
        if isinstance(error, cls):
            status, code, message = rule_status, rule_code, rule_message
            break
    headers: dict[str, str] = {}
    if status in (429, 503):
        after = _retry_after(error)
        if after is not None and math.isfinite(after) and after >= 0:
            headers["Retry-After"] = str(math.ceil(after))
    body: dict[str, Any] = {"error": {"type": code, "message": message, "request_id": request_id}}
    return ErrorAnswer(status, headers, body)
