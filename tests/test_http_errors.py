"""The answer a service gives its caller for each asyncllm error, and which request IDs it takes."""

from __future__ import annotations

import pytest

import asyncllm
from asyncllm._exceptions import status_error
from asyncllm._wire.http_errors import error_answer
from asyncllm.integrations.fastapi import accepted_request_id


def upstream(status: int, retry_after: float | None = None) -> asyncllm.APIError:
    error = status_error(status, f"upstream said {status}", backend="openai", request_id="up")
    error.retry_after = retry_after
    return error


@pytest.mark.parametrize(
    ("error", "status", "retry_after", "code"),
    [
        (upstream(429, 7.2), 429, "8", "rate_limited"),
        (upstream(429), 429, None, "rate_limited"),
        (upstream(529, 3), 503, "3", "overloaded"),
        (
            asyncllm.CircuitOpenError("open", backend="openai", retry_in=12.5),
            503,
            "13",
            "unavailable",
        ),
        (asyncllm.QueueFullError("full", backend="openai"), 503, None, "busy"),
        (asyncllm.ClientClosedError("closed", backend="openai"), 503, None, "shutting_down"),
        (asyncllm.APITimeoutError("slow", backend="openai"), 504, None, "upstream_timeout"),
        (asyncllm.APIConnectionError("refused"), 502, None, "upstream_unreachable"),
        (upstream(500), 502, None, "upstream_error"),
        (upstream(503, 4), 502, None, "upstream_error"),
        (upstream(400), 502, None, "upstream_error"),
        (upstream(401), 502, None, "upstream_error"),  # our key: never the caller's fault
        (upstream(403), 502, None, "upstream_error"),
        (upstream(404), 502, None, "upstream_error"),
        (asyncllm.ResponseValidationError("bad json"), 502, None, "upstream_error"),
        (asyncllm.ContentBlockedError("unsafe"), 422, None, "content_blocked"),
        (asyncllm.ConfigurationError("api key sk-secret is bad"), 500, None, "internal_error"),
    ],
)
def test_each_error_has_its_status(
    error: asyncllm.AsyncLLMError, status: int, retry_after: str | None, code: str
) -> None:
    answer = error_answer(error, "caller-1")
    assert answer.status == status
    assert answer.headers.get("Retry-After") == retry_after
    assert answer.body["error"]["type"] == code
    assert answer.body["error"]["request_id"] == "caller-1"
    assert str(error) not in str(answer.body)  # the upstream's or our own text stays inside


def test_a_later_subclass_is_answered_as_its_parent() -> None:
    class FallbackExhaustedError(asyncllm.APIConnectionError):
        pass

    assert error_answer(FallbackExhaustedError("all failed"), None).status == 502


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("order-1234", True),
        ("a.b_c:d-e", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("x" * 9000, False),
        ("", False),
        ("has space", False),
        ("semi;colon", False),
        ("ünïcode", False),
        (None, False),
    ],
)
def test_request_ids_are_taken_only_when_short_and_plain(given: str | None, kept: bool) -> None:
    got = accepted_request_id(given)
    assert (got == given) is kept
    assert accepted_request_id(got) == got  # a fresh one is itself acceptable
