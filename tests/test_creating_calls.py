"""Calls that create something (a background response, a batch, an upload) are not sent twice:
retried only when the request never left or the server asked for it later, and their errors say
whether the call may have been applied. The rule from a table, through the dispatcher with a fake
clock, and through a real loopback socket (a refused connection, a server that never answers)."""

from __future__ import annotations

import socket
from typing import Any, ClassVar

import pytest

import asyncllm
from asyncllm._engine._backoff import is_retryable, may_resend
from asyncllm._engine._dispatcher import Attempt
from asyncllm._exceptions import status_error
from asyncllm.testing import FakeClock, FakeServer


def _error(
    cls: type[asyncllm.APIError] = asyncllm.APIError,
    status: int | None = None,
    retry_after: float | None = None,
    unsent: bool = False,
) -> asyncllm.APIError:
    if issubclass(cls, asyncllm.APIStatusError):
        error: asyncllm.APIError = status_error(status or 500, "failed", retry_after=retry_after)
    else:
        error = cls("failed", status_code=status, retry_after=retry_after)
    error.unsent = unsent
    return error


# (error, may it be sent again, may it have been applied)
TABLE: list[tuple[str, asyncllm.APIError, bool, bool]] = [
    ("refused", _error(asyncllm.APIConnectionError, unsent=True), True, False),
    ("connect timed out", _error(asyncllm.APITimeoutError, unsent=True), True, False),
    ("read timed out", _error(asyncllm.APITimeoutError), False, True),
    ("dropped", _error(asyncllm.APIConnectionError), False, True),
    ("500", _error(asyncllm.APIStatusError, 500), False, True),
    ("502", _error(asyncllm.APIStatusError, 502), False, True),
    ("503 bare", _error(asyncllm.APIStatusError, 503), False, True),
    ("503 retry-after", _error(asyncllm.APIStatusError, 503, retry_after=2.0), True, False),
    ("429 retry-after", _error(asyncllm.APIStatusError, 429, retry_after=0.0), True, False),
    ("429 bare", _error(asyncllm.APIStatusError, 429), False, False),
    ("529", _error(asyncllm.APIStatusError, 529), False, True),
    ("409", _error(asyncllm.APIStatusError, 409), False, False),
    ("400", _error(asyncllm.APIStatusError, 400), False, False),
    ("broken 2xx", _error(asyncllm.ResponseValidationError), False, True),
]


@pytest.mark.parametrize(
    ("error", "resend", "applied"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_rule_from_a_table(error: asyncllm.APIError, resend: bool, applied: bool) -> None:
    assert (is_retryable(error) and may_resend(error)) is resend
    assert error.may_have_been_applied is applied


def _dispatcher(clock: FakeClock) -> tuple[asyncllm.Dispatcher, Any]:
    d = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    lane = d.lane("x", retry=asyncllm.RetryConfig(max_retries=3, jitter=False))
    return d, lane


def _failing(*errors: asyncllm.APIError) -> tuple[list[int], Any]:
    """An attempt that fails with each of ``errors`` in turn, then succeeds."""
    seen: list[int] = []

    async def attempt(a: Attempt) -> str:
        seen.append(a.number)
        if len(seen) <= len(errors):
            raise errors[len(seen) - 1]
        return "created"

    return seen, attempt


@pytest.mark.parametrize(
    "make",
    [
        lambda: _error(asyncllm.APITimeoutError),
        lambda: _error(asyncllm.APIConnectionError),
        lambda: _error(asyncllm.APIStatusError, 500),
        lambda: _error(asyncllm.APIStatusError, 503),
    ],
    ids=["timeout", "dropped", "500", "503 bare"],
)
async def test_creating_call_is_not_retried_once_it_may_have_been_sent(make: Any) -> None:
    clock = FakeClock()
    d, lane = _dispatcher(clock)
    seen, attempt = _failing(make())
    with pytest.raises(asyncllm.APIError) as caught:
        await d.run(lane, "create", attempt, creates=True)
    assert seen == [1]
    assert caught.value.attempts == 1
    assert caught.value.may_have_been_applied
    assert clock.sleeps == []
    assert any("look before sending it again" in n for n in getattr(caught.value, "__notes__", []))
    # The same failures on an ordinary call are retried.
    seen, attempt = _failing(make(), make())
    assert await d.run(lane, "read", attempt) == "created"
    assert seen == [1, 2, 3]
    await d.aclose()


async def test_creating_call_is_retried_when_never_sent_or_asked_later() -> None:
    clock = FakeClock()
    d, lane = _dispatcher(clock)
    seen, attempt = _failing(
        _error(asyncllm.APIConnectionError, unsent=True),
        _error(asyncllm.APIStatusError, 429, retry_after=1.5),
        _error(asyncllm.APIStatusError, 503, retry_after=2.5),
    )
    assert await d.run(lane, "create", attempt, creates=True) == "created"
    assert seen == [1, 2, 3, 4]
    assert clock.sleeps[1:] == [1.5, 2.5]  # the server's Retry-After, not our backoff
    await d.aclose()


async def test_creating_stream_is_not_retried_after_a_timeout() -> None:
    clock = FakeClock()
    d, lane = _dispatcher(clock)
    opened: list[int] = []

    async def open_stream(a: Attempt) -> Any:
        opened.append(a.number)
        raise _error(asyncllm.APITimeoutError)
        yield "never"  # pragma: no cover - makes this an async generator

    with pytest.raises(asyncllm.APITimeoutError):
        async for _ in d.stream(lane, "create", open_stream, creates=True):
            pass
    assert opened == [1]
    await d.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(base_url: str, cls: type[asyncllm.OpenAI] = asyncllm.OpenAI) -> asyncllm.OpenAI:
    return cls(
        api_key="sk-test",
        base_url=base_url,
        max_retries=2,
        retry=asyncllm.RetryConfig(initial_delay=0.0, max_delay=0.0),
        dispatcher=asyncllm.Dispatcher(),
    )


def _create(client: asyncllm.OpenAI, **options: Any) -> Any:
    """A POST that the engine treats as creating something (the fake answers it as a chat)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    parse = lambda payload, meta: payload  # noqa: E731 - the answer as it came
    return client._request(
        "create", "POST", "/chat/completions", parse, options, body=body, creates=True
    )


async def test_refused_connection_is_unsent_and_retried() -> None:
    client = _client(f"http://127.0.0.1:{_closed_port()}/v1")
    with pytest.raises(asyncllm.APIConnectionError) as caught:
        await _create(client)
    assert caught.value.unsent
    assert not caught.value.may_have_been_applied
    assert caught.value.attempts == 3
    await client.aclose()


async def test_timeout_and_5xx_of_a_creating_call_are_not_retried() -> None:
    async with FakeServer("openai") as server:
        client = _client(server.url("/v1"))
        server.hang_next()
        with pytest.raises(asyncllm.APITimeoutError) as timed_out:
            await _create(client, timeout=0.2)
        assert not timed_out.value.unsent
        assert timed_out.value.may_have_been_applied
        assert timed_out.value.attempts == 1
        server.fail_next(status=502)
        with pytest.raises(asyncllm.InternalServerError) as failed:
            await _create(client)
        assert failed.value.attempts == 1
        assert failed.value.may_have_been_applied
        sent = server.request_count
        server.fail_next(status=429, retry_after="0")
        server.fail_next(status=503, retry_after="0")
        answer = await _create(client)
        assert answer["choices"][0]["message"]["content"] == "echo: hi"
        assert server.request_count == sent + 3
        await client.aclose()


class _Keyed(asyncllm.OpenAI):
    idempotency_header: ClassVar[str | None] = "Idempotency-Key"


async def test_an_honoured_idempotency_key_makes_a_creating_call_retryable() -> None:
    async with FakeServer("openai") as server:
        client = _client(server.url("/v1"), _Keyed)
        server.fail_next(status=500)
        with pytest.raises(asyncllm.InternalServerError):
            await _create(client)
        server.fail_next(status=500)
        answer = await _create(client, extra_headers={"idempotency-key": "k-1"})
        assert answer["object"] == "chat.completion"
        keys = [
            {k.lower(): v for k, v in r.headers.items()}.get("idempotency-key")
            for r in list(server.requests)[-2:]
        ]
        assert keys == ["k-1", "k-1"]  # the same key on every attempt
        await client.aclose()
