"""Failures that tell the truth: what the circuit breaker counts, and what a failing call raises.

The breaker counts failed *calls* (one verdict when a call gives up), not attempts; connection
errors, timeouts and 5xx count; 429, other 4xx and TLS verification give no verdict. A call that
reached the backend raises its own last error; only a call never sent gets CircuitOpenError.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import asyncllm
from asyncllm._engine._backoff import breaker_verdict, is_retryable
from asyncllm._exceptions import CertificateVerificationError, status_error
from asyncllm.testing import FakeClock, FakeServer, Faults, MockResponse, MockTransport
from tests.helpers import USER, Gate, chat_json, ok, self_signed_cert, settle


def down(status: int = 503, headers: dict[str, str] | None = None) -> MockResponse:
    return MockResponse(status, json={"error": {"message": f"down {status}"}}, headers=headers)


def defaults_client(
    handler: Any, dispatcher: asyncllm.Dispatcher, **kwargs: Any
) -> asyncllm.OpenAI:
    """An OpenAI client with the default retry and breaker settings on a MockTransport."""
    return asyncllm.OpenAI(
        api_key="sk-test",
        base_url="http://mock.invalid/v1",
        transport=MockTransport(handler),
        dispatcher=dispatcher,
        **kwargs,
    )


def noted(error: BaseException, text: str) -> bool:
    """Whether a note on ``error`` says ``text`` (notes exist from Python 3.11)."""
    if sys.version_info < (3, 11):
        return True
    return any(text in note for note in getattr(error, "__notes__", ()))


def fake_dispatcher() -> tuple[asyncllm.Dispatcher, FakeClock]:
    clock = FakeClock()
    return asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, rng=random.Random(3)), clock


# -- 429 ------------------------------------------------------------------------------------------


async def test_rate_limits_do_not_open_the_breaker() -> None:
    """Each call's first request is answered 429 Retry-After: 0, its retry 200: all 30 concurrent
    calls succeed with the default settings (before: all 30 ended in CircuitOpenError)."""
    async with FakeServer("openai") as server:
        seen: set[str] = set()

        async def first_limited(request: web.Request) -> web.StreamResponse:
            rid = request.headers["X-Request-ID"]
            if rid not in seen:
                seen.add(rid)
                return web.json_response(
                    {"error": {"message": "slow down", "type": "rate_limit"}},
                    status=429,
                    headers={"Retry-After": "0"},
                )
            return web.json_response(chat_json("ok"))

        server.overrides["/v1/chat/completions"] = first_limited
        client = asyncllm.OpenAI(
            api_key="k", base_url=server.url("/v1"), dispatcher=asyncllm.Dispatcher()
        )
        async with client:
            results = await asyncio.gather(
                *(client.chat(USER, model="m") for _ in range(30)), return_exceptions=True
            )
            assert [type(r).__name__ for r in results] == ["ChatResponse"] * 30
            stats = client.dispatcher.stats()["openai"]
            assert stats.breaker == "closed"
            assert stats.breaker_transitions == {}
            assert client.dispatcher._lanes["openai"].breaker.consecutive_failures == 0
        assert server.request_count == 60


# -- a call's own error ----------------------------------------------------------------------------


async def test_a_failing_call_raises_its_own_error_and_counts_once() -> None:
    """Defaults (max_retries=5, failure_threshold=5) against 503: six requests, and the call
    raises its InternalServerError with status, body and attempts (before: CircuitOpenError after
    five requests, with none of them); the breaker counted one failed call."""
    dispatcher, _ = fake_dispatcher()
    c = defaults_client(lambda r: down(), dispatcher)
    with pytest.raises(asyncllm.InternalServerError) as info:
        await c.chat(USER, model="m")
    error = info.value
    assert error.status_code == 503
    assert error.body is not None and "down 503" in error.body
    assert error.attempts == 6
    assert error.circuit_open is None
    assert len(c._transport.requests) == 6  # type: ignore[attr-defined]
    record = dispatcher.tracker.get(error.request_id or "")
    assert record is not None and record.attempts == 6
    assert record.last_error is not None and record.last_error.startswith("InternalServerError")
    breaker = dispatcher._lanes["openai"].breaker
    assert breaker.consecutive_failures == 1
    assert dispatcher.stats()["openai"].breaker == "closed"
    await dispatcher.aclose()


async def test_the_call_that_opens_the_breaker_raises_its_own_error() -> None:
    dispatcher, _ = fake_dispatcher()
    c = defaults_client(lambda r: down(), dispatcher)
    errors = []
    for _ in range(5):
        with pytest.raises(asyncllm.InternalServerError) as info:
            await c.chat(USER, model="m")
        errors.append(info.value)
    assert len(c._transport.requests) == 30  # type: ignore[attr-defined]
    assert [e.circuit_open is None for e in errors] == [True] * 4 + [False]
    opener = errors[-1]
    assert opener.attempts == 6
    assert noted(opener, "this failure opened the circuit breaker of openai")
    assert dispatcher.stats()["openai"].breaker == "open"

    with pytest.raises(asyncllm.CircuitOpenError) as refused:
        await c.chat(USER, model="m")
    coe = refused.value
    assert len(c._transport.requests) == 30  # type: ignore[attr-defined]  # not sent
    assert coe.backend == "openai"
    assert coe.last_error is opener
    assert coe.__cause__ is opener
    assert "5 calls in a row failed" in str(coe)
    assert "InternalServerError" in str(coe) and "down 503" in str(coe)
    assert coe.retry_in == pytest.approx(30)
    # The tracker keeps each call's real error; only the call never sent has CircuitOpenError.
    opened = dispatcher.tracker.get(opener.request_id or "")
    assert opened is not None and (opened.last_error or "").startswith("InternalServerError")
    never = dispatcher.tracker.get(coe.request_id or "")
    assert never is not None and never.attempts == 0
    assert (never.last_error or "").startswith("CircuitOpenError")
    await dispatcher.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_nothing_listening_says_connection_refused_and_names_the_host() -> None:
    """Against a port with nothing listening (before: ``CircuitOpenError: circuit open after
    repeated failures; next try in 29.4s``, no host, no "connection refused")."""
    port = _free_port()
    dispatcher, _ = fake_dispatcher()
    c = asyncllm.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", dispatcher=dispatcher)
    async with c:
        for _ in range(5):
            with pytest.raises(asyncllm.APIConnectionError) as info:
                await c.chat(USER, model="m")
            assert type(info.value) is asyncllm.APIConnectionError
            assert f"127.0.0.1:{port}" in str(info.value)
            assert "Connection refused" in str(info.value)
            assert info.value.attempts == 6
        with pytest.raises(asyncllm.CircuitOpenError) as refused:
            await c.chat(USER, model="m")
    text = str(refused.value)
    assert f"127.0.0.1:{port}" in text and "Connection refused" in text
    assert "openai" in text
    assert isinstance(refused.value.last_error, asyncllm.APIConnectionError)


async def test_circuit_open_error_names_the_lane_host() -> None:
    dispatcher, _ = fake_dispatcher()
    lane = dispatcher.lane(
        "svc",
        host="llm.internal:8443",
        retry=asyncllm.RetryConfig(max_retries=0),
        breaker=asyncllm.BreakerConfig(failure_threshold=1),
    )

    async def fail(_: Any) -> None:
        raise asyncllm.APIConnectionError("cannot connect to llm.internal:8443: Connection refused")

    with pytest.raises(asyncllm.APIConnectionError):
        await dispatcher.run(lane, "op", fail)
    with pytest.raises(asyncllm.CircuitOpenError) as info:
        await dispatcher.run(lane, "op", fail)
    assert info.value.host == "llm.internal:8443"
    assert "svc (llm.internal:8443)" in str(info.value)
    await dispatcher.aclose()


async def test_calls_that_reached_the_backend_never_get_circuit_open_error() -> None:
    """Many concurrent calls while the breaker opens: a call that made an attempt raises its own
    error (noted when the breaker refused its retry); only calls never sent get
    CircuitOpenError, which carries the failure that opened the breaker."""
    dispatcher, _ = fake_dispatcher()
    c = defaults_client(
        lambda r: down(),
        dispatcher,
        max_concurrent_requests=3,
        max_retries=3,
        breaker=asyncllm.BreakerConfig(failure_threshold=2, reset_timeout=60),
    )
    rids = [f"r{i}" for i in range(20)]

    async def one(rid: str) -> BaseException:
        with asyncllm.request_context(rid):
            try:
                await c.chat(USER, model="m")
            except asyncllm.AsyncLLMError as exc:
                return exc
        raise AssertionError("succeeded against a dead backend")

    results = await asyncio.gather(*(one(rid) for rid in rids))
    refused = marked = 0
    for rid, exc in zip(rids, results, strict=True):
        record = dispatcher.tracker.get(rid)
        assert record is not None
        if isinstance(exc, asyncllm.CircuitOpenError):
            refused += 1
            assert record.attempts == 0
            assert isinstance(exc.last_error, asyncllm.InternalServerError)
            assert exc.__cause__ is exc.last_error
        else:
            assert isinstance(exc, asyncllm.InternalServerError), exc
            assert record.attempts == exc.attempts >= 1
            assert exc.__context__ is None or not isinstance(
                exc.__context__, asyncllm.CircuitOpenError
            )
            if exc.circuit_open is not None:
                marked += 1
    # Here every call got its first attempt in before the breaker opened: none is refused. All
    # but the first to give up (one count of the two that open it) note the opening: the second
    # to give up opened it, the others' retries were refused.
    assert refused == 0
    assert marked == 19
    retried_refused = [e for e in results if isinstance(e, asyncllm.APIError) and e.attempts < 4]
    assert retried_refused
    for e in retried_refused:
        assert noted(e, "opened while this call waited to retry")
    assert dispatcher.stats()["openai"].breaker_transitions == {"closed->open": 1}
    sent = len(c._transport.requests)  # type: ignore[attr-defined]
    with pytest.raises(asyncllm.CircuitOpenError) as info:
        await c.chat(USER, model="m")
    assert len(c._transport.requests) == sent  # type: ignore[attr-defined]
    assert isinstance(info.value.last_error, asyncllm.InternalServerError)
    assert info.value.last_error.attempts == 4  # the call that gave up and opened it
    await dispatcher.aclose()


# -- the counting rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (500, None),
        (502, None),
        (503, None),
        (504, None),
        (529, None),
        (503, {"Retry-After": "1"}),
    ],
)
async def test_5xx_529_and_503_with_retry_after_count(
    status: int, headers: dict[str, str] | None
) -> None:
    dispatcher, _ = fake_dispatcher()
    c = defaults_client(
        lambda r: down(status, headers),
        dispatcher,
        max_retries=2,
        breaker=asyncllm.BreakerConfig(failure_threshold=2),
    )
    with pytest.raises(asyncllm.APIStatusError):
        await c.chat(USER, model="m")
    assert dispatcher._lanes["openai"].breaker.consecutive_failures == 1  # one call, one count
    with pytest.raises(asyncllm.APIStatusError):
        await c.chat(USER, model="m")
    assert dispatcher.stats()["openai"].breaker == "open"
    assert len(c._transport.requests) == 6  # type: ignore[attr-defined]
    await dispatcher.aclose()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 429])
async def test_4xx_and_429_give_no_verdict(status: int) -> None:
    """Neither a failure (429 used to count) nor a success (4xx used to reset the count)."""
    dispatcher, _ = fake_dispatcher()
    answers = [down(503), down(status), down(503)]
    c = defaults_client(
        lambda r: answers.pop(0),
        dispatcher,
        max_retries=0,
        breaker=asyncllm.BreakerConfig(failure_threshold=2),
    )
    with pytest.raises(asyncllm.InternalServerError):
        await c.chat(USER, model="m")
    breaker = dispatcher._lanes["openai"].breaker
    assert breaker.consecutive_failures == 1
    with pytest.raises(asyncllm.APIStatusError) as info:
        await c.chat(USER, model="m")
    assert info.value.status_code == status
    assert breaker.consecutive_failures == 1
    assert dispatcher.stats()["openai"].breaker == "closed"
    with pytest.raises(asyncllm.InternalServerError) as last:
        await c.chat(USER, model="m")
    assert dispatcher.stats()["openai"].breaker == "open"
    assert last.value.circuit_open is not None
    await dispatcher.aclose()


async def test_a_call_that_recovers_resets_the_count() -> None:
    dispatcher, _ = fake_dispatcher()
    answers = [down(), down(), down(), ok()]
    c = defaults_client(
        lambda r: answers.pop(0) if answers else down(),
        dispatcher,
        max_retries=5,
        breaker=asyncllm.BreakerConfig(failure_threshold=2),
    )
    assert (await c.chat(USER, model="m")).text == "ok"  # three failed attempts, then success
    breaker = dispatcher._lanes["openai"].breaker
    assert breaker.consecutive_failures == 0
    assert dispatcher.stats()["openai"].breaker == "closed"
    await dispatcher.aclose()


async def test_half_open_probe_with_429_frees_its_place() -> None:
    dispatcher, clock = fake_dispatcher()
    answers = [down(503), down(429), ok()]
    c = defaults_client(
        lambda r: answers.pop(0),
        dispatcher,
        max_retries=0,
        breaker=asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=10),
    )
    with pytest.raises(asyncllm.InternalServerError):
        await c.chat(USER, model="m")
    clock.advance(10)
    with pytest.raises(asyncllm.RateLimitError):  # the probe is rate limited: no verdict
        await c.chat(USER, model="m")
    assert dispatcher.stats()["openai"].breaker == "half_open"
    assert (await c.chat(USER, model="m")).text == "ok"  # the next probe closes it
    assert dispatcher.stats()["openai"].breaker_transitions == {
        "closed->open": 1,
        "open->half_open": 1,
        "half_open->closed": 1,
    }
    await dispatcher.aclose()


async def test_failed_probe_reopens_at_once_and_its_call_raises_its_own_error() -> None:
    dispatcher, clock = fake_dispatcher()
    c = defaults_client(
        lambda r: down(503),
        dispatcher,
        max_retries=3,
        breaker=asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=10),
    )
    with pytest.raises(asyncllm.InternalServerError):
        await c.chat(USER, model="m")
    assert len(c._transport.requests) == 4  # type: ignore[attr-defined]
    clock.advance(10)
    with pytest.raises(asyncllm.InternalServerError) as info:
        await c.chat(USER, model="m")
    # The probe's one attempt failed: reopened, its retry not sent, its own error raised.
    assert len(c._transport.requests) == 5  # type: ignore[attr-defined]
    assert info.value.attempts == 1
    assert info.value.circuit_open is not None
    assert dispatcher.stats()["openai"].breaker == "open"
    with pytest.raises(asyncllm.CircuitOpenError) as refused:
        await c.chat(USER, model="m")
    assert "half-open probe failed" in str(refused.value)
    assert refused.value.last_error is info.value
    await dispatcher.aclose()


async def test_queued_calls_fail_at_once_when_the_breaker_opens() -> None:
    """The calls queued behind the call that opens it get CircuitOpenError, none is sent."""
    dispatcher, _ = fake_dispatcher()
    gate = Gate()
    failing = {"on": True}

    async def handler(request: Any) -> MockResponse:
        await gate.release.wait()
        return down() if failing["on"] else ok()

    c = defaults_client(
        handler,
        dispatcher,
        max_concurrent_requests=1,
        max_retries=0,
        breaker=asyncllm.BreakerConfig(failure_threshold=1),
    )
    first = asyncio.create_task(c.chat(USER, model="m"))
    await settle()
    queued = [asyncio.create_task(c.chat(USER, model="m")) for _ in range(3)]
    await settle()
    gate.release.set()
    with pytest.raises(asyncllm.InternalServerError):
        await first
    for task in queued:
        with pytest.raises(asyncllm.CircuitOpenError):
            await task
    assert len(c._transport.requests) == 1  # type: ignore[attr-defined]
    await dispatcher.aclose()


def test_breaker_verdict_table() -> None:
    def status(code: int) -> asyncllm.APIError:
        return status_error(code, "x")

    assert breaker_verdict(asyncllm.APIConnectionError("x")) is False
    assert breaker_verdict(asyncllm.APITimeoutError("x")) is False
    for code in (500, 502, 503, 504, 529, 599):
        assert breaker_verdict(status(code)) is False, code
    for code in (301, 400, 401, 404, 408, 409, 429):
        assert breaker_verdict(status(code)) is None, code
    cert = CertificateVerificationError("x")
    assert breaker_verdict(cert) is None
    assert not is_retryable(cert)
    assert breaker_verdict(asyncllm.ResponseValidationError("x", status_code=200)) is True
    for spared in (status(500), asyncllm.APIConnectionError("x")):
        spared.spares_breaker = True
        assert breaker_verdict(spared) is None
        assert is_retryable(spared)  # sparing the breaker says nothing of retrying


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTPS server on loopback with a self-signed certificate nobody trusts."""
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[str] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response(chat_json("ok"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/v1", seen
    finally:
        await runner.cleanup()


async def test_untrusted_certificate_fails_at_once(tls_server: tuple[str, list[str]]) -> None:
    """Not retried, not counted, never CircuitOpenError; the message names the host and the
    verification error (before: five retries with backoff, then CircuitOpenError)."""
    base_url, seen = tls_server
    dispatcher, clock = fake_dispatcher()
    c = asyncllm.OpenAI(
        api_key="k",
        base_url=base_url,
        dispatcher=dispatcher,
        breaker=asyncllm.BreakerConfig(failure_threshold=1),
    )
    async with c:
        for _ in range(3):
            with pytest.raises(CertificateVerificationError) as info:
                await c.chat(USER, model="m")
            error = info.value
            assert isinstance(error, asyncllm.APIConnectionError)
            assert error.attempts == 1
            host = base_url.split("//")[1].split("/")[0]
            assert f"TLS certificate verification failed for {host}" in str(error)
            assert "certificate verify failed" in str(error)
        assert clock.sleeps == []  # no backoff: nothing was retried
        assert dispatcher.stats()["openai"].breaker == "closed"
        assert dispatcher._lanes["openai"].breaker.consecutive_failures == 0
        assert dispatcher.stats()["openai"].retried == 0
    assert seen == []


# -- tracker expiry --------------------------------------------------------------------------------


async def test_a_long_call_does_not_hold_back_tracker_expiry() -> None:
    """One running call used to keep every later record past the TTL (2,002 kept past 0.5 s)."""
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, tracker_ttl=0.5)
    gate = Gate()

    async def handler(request: Any) -> MockResponse:
        if request.json()["messages"][0]["content"] == "long":
            return await gate(request)
        return ok()

    c = defaults_client(handler, dispatcher)
    long = asyncio.create_task(c.chat([{"role": "user", "content": "long"}], model="m"))
    await settle()
    for _ in range(2000):
        await c.chat(USER, model="m")
        clock.advance(0.0001)
    clock.advance(1.0)
    await c.chat(USER, model="m")  # a sweep is due
    assert len(dispatcher.tracker) <= 2  # the running call and the newest
    gate.release.set()
    await long
    clock.advance(1.0)
    dispatcher.tracker.prune()
    assert len(dispatcher.tracker) == 0
    await dispatcher.aclose()


async def instant(_: float) -> None:
    await asyncio.sleep(0)


async def test_breaker_opens_after_threshold_failed_calls_and_closes_after_recovery() -> None:
    """Against a real server answering 503: five calls of three attempts each reach it (one count
    per call), the fifth raises its own error marked as the opener, the sixth is not sent; after
    ``reset_timeout`` one probe closes it again. (Replaces test_soak's per-attempt version.)"""
    async with FakeServer("openai", faults=Faults(error_rate=1.0, error_statuses=(503,))) as server:
        client = asyncllm.OpenAI(
            api_key="k",
            base_url=server.url("/v1"),
            dispatcher=asyncllm.Dispatcher(sleep=instant),
            retry=asyncllm.RetryConfig(max_retries=2),
            breaker=asyncllm.BreakerConfig(failure_threshold=5, reset_timeout=0.1),
        )
        async with client:
            errors: list[asyncllm.AsyncLLMError] = []
            for _ in range(6):
                try:
                    await client.chat(USER, model="m")
                except asyncllm.AsyncLLMError as exc:
                    errors.append(exc)
            assert server.request_count == 15  # five calls of three attempts; the sixth not sent
            assert [type(e).__name__ for e in errors] == ["InternalServerError"] * 5 + [
                "CircuitOpenError"
            ]
            assert isinstance(errors[4], asyncllm.APIError) and errors[4].circuit_open is not None
            assert client.dispatcher.stats()["openai"].breaker == "open"
            server.faults.error_rate = 0.0
            await asyncio.sleep(0.12)
            r = await client.chat([{"role": "user", "content": "back"}], model="m")
            assert r.text == "echo: back"
            assert client.dispatcher.stats()["openai"].breaker == "closed"


async def test_a_client_s_lane_knows_its_host() -> None:
    client = asyncllm.OpenAI(base_url="http://user:pw@127.0.0.1:9/v1")
    lane = client._get_lane()
    assert lane.host == "127.0.0.1:9"
    await client.aclose()
