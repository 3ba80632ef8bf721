"""The fake vendor's hidden capacity (``asyncllm.testing.Capacity``): its buckets refill as the
headers it sends say they do, it refuses at its budgets and its concurrency cap, and the vendors'
own SDKs read its 429s and headers as they read a real vendor's. Time is a ``FakeClock``."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from asyncllm._engine._ratelimit import parse_duration, parse_rate_headers, parse_rfc3339
from asyncllm.testing import Capacity, FakeClock, FakeServer, Faults
from asyncllm.testing._capacity import go_duration, request_tokens, rfc3339
from tests.interop import require

CHAT = "/v1/chat/completions"
# Enough for every fake's checks (Anthropic's wants a key and a version).
VENDOR_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def chat_body(words: int = 1, max_tokens: int | None = 4) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fake-chat",
        "messages": [{"role": "user", "content": " ".join(["w"] * words)}],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def post(
    server: FakeServer, body: dict[str, Any], path: str = CHAT
) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url(path), json=body, headers=VENDOR_HEADERS) as resp,
    ):
        await resp.read()
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@asynccontextmanager
async def vendor(*protocols: str, **config: Any) -> AsyncIterator[FakeServer]:
    async with FakeServer(*protocols, capacity=Capacity(**config)) as server:
        yield server


# -- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.012, "12ms"),
        (0.0004, "1ms"),
        (1.0, "1s"),
        (7.66, "7.66s"),
        (59.5, "59.5s"),
        (360.0, "6m0s"),
        (179.56, "2m59.56s"),
        (3600.0, "1h0m0s"),
        (86_399.0, "23h59m59s"),
    ],
)
def test_go_duration_reads_back_as_the_vendors_resets_do(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(math.ceil(seconds * 1000 - 1e-6) / 1000)


def test_rfc3339_rounds_up_to_the_second() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1000.2) == "1970-01-01T00:16:41Z"
    assert parse_rfc3339(rfc3339(1_700_000_000.0)) == 1_700_000_000.0


def test_request_tokens_are_the_prompt_and_max_tokens() -> None:
    assert request_tokens(chat_body(3, 10), 16) == (3, 10)
    assert request_tokens({"messages": [], "max_completion_tokens": 7}, 16) == (0, 7)
    assert request_tokens(chat_body(2, None), 16) == (2, 16)
    system = {"system": "be brief", "messages": [{"role": "user", "content": "hi"}]}
    assert request_tokens(system, 5) == (3, 5)
    assert request_tokens({"input": ["a b", "c"]}, 16) == (3, 0)  # an embedding: no output
    assert request_tokens(None, 16) == (0, 0)


@pytest.mark.parametrize(
    "config",
    [
        {"dialect": "vertex"},
        {"busy_status": 500},
        {"requests_per_minute": 0},
        {"max_concurrent": True},
        {"default_max_tokens": -1},
        {"busy_retry_after": -1.0},
    ],
)
def test_a_bad_capacity_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Capacity(**config)


# -- OpenAI's dialect ------------------------------------------------------------------------------


async def test_openai_headers_count_down_and_refill_over_injected_time(clock: FakeClock) -> None:
    async with vendor(requests_per_minute=2, tokens_per_minute=100, clock=clock) as server:
        status, h = await post(server, chat_body(6, 4))
        assert status == 200
        assert h["x-ratelimit-limit-requests"] == "2"
        assert h["x-ratelimit-remaining-requests"] == "1"
        assert h["x-ratelimit-reset-requests"] == "30s"  # one request back in 60/2 s
        assert h["x-ratelimit-limit-tokens"] == "100"
        assert h["x-ratelimit-remaining-tokens"] == "90"
        assert h["x-ratelimit-reset-tokens"] == "6s"  # 10 tokens at 100/60 a second

        status, h = await post(server, chat_body(1, 4))
        assert status == 200
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert h["x-ratelimit-reset-requests"] == "1m0s"

        status, h = await post(server, chat_body(1, 4))
        assert status == 429
        assert h["retry-after"] == "30"
        assert h["x-ratelimit-remaining-requests"] == "0"

        clock.advance(15)  # half a request back: still none whole
        status, h = await post(server, chat_body(1, 4))
        assert (status, h["retry-after"]) == (429, "15")
        assert h["x-ratelimit-reset-requests"] == "45s"

        clock.advance(15)
        status, h = await post(server, chat_body(1, 4))
        assert status == 200
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert server.capacity is not None
        snapshot = server.capacity.snapshot()
        assert snapshot["sent"] == 5
        assert snapshot["admitted"] == 3
        assert snapshot["rate_limited"] == 2
        assert snapshot["tokens_admitted"] == 10 + 5 + 5
        assert snapshot["elapsed"] == 30.0
        assert server.capacity.allowance(30.0) == pytest.approx(3.0)


async def test_a_token_budget_refuses_what_does_not_fit(clock: FakeClock) -> None:
    async with vendor(tokens_per_minute=60, clock=clock) as server:
        assert (await post(server, chat_body(30, 20)))[0] == 200
        status, h = await post(server, chat_body(10, 5))  # 15 needed, 10 left: 5 s more
        assert (status, h["retry-after"]) == (429, "5")
        assert "x-ratelimit-limit-requests" not in h  # no request budget: none reported
        status, h = await post(server, chat_body(50, 20))  # more than the whole budget
        assert status == 429
        assert "retry-after" not in h
        clock.advance(5)
        assert (await post(server, chat_body(10, 5)))[0] == 200


async def test_the_rate_limit_answer_is_the_protocols_error(clock: FakeClock) -> None:
    async with vendor(requests_per_minute=1, clock=clock) as server:
        await post(server, chat_body())
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url(CHAT), json=chat_body()) as resp,
        ):
            body = await resp.json()
        assert resp.status == 429
        assert body["error"]["type"] == "rate_limit_exceeded"
        assert "requests" in body["error"]["message"]


async def test_asyncllms_parser_reads_what_the_fake_reports(clock: FakeClock) -> None:
    """The client's parser against the fake's own state: the same limit, remaining and reset."""
    async with vendor(requests_per_minute=600, tokens_per_minute=6000, clock=clock) as server:
        for _ in range(3):
            await post(server, chat_body(10, 10))
        clock.advance(0.0625)
        _, h = await post(server, chat_body(10, 10))
    parsed = parse_rate_headers(h, now=clock)
    assert parsed is not None
    requests, tokens = parsed.windows["requests"], parsed.windows["tokens"]
    # 4 requests spent, 0.625 refilled at 10 a second: 3.375 missing, 338 ms (rounded up).
    assert requests == (600, 596, pytest.approx(0.338))
    # 80 tokens spent, 6.25 refilled at 100 a second: 73.75 missing, 738 ms.
    assert tokens == (6000, 5926, pytest.approx(0.738))


# -- Groq, Anthropic, Azure ----------------------------------------------------------------------------


async def test_groq_reports_its_requests_per_day(clock: FakeClock) -> None:
    async with vendor(
        "groq",
        dialect="groq",
        requests_per_minute=30,
        requests_per_day=14_400,
        tokens_per_minute=6000,
        clock=clock,
    ) as server:
        status, h = await post(server, chat_body(3, 7), path="/openai/v1/chat/completions")
    assert status == 200
    assert h["x-ratelimit-limit-requests"] == "14400"
    assert h["x-ratelimit-remaining-requests"] == "14399"
    assert h["x-ratelimit-reset-requests"] == "6s"  # one of 14 400 a day: 6 s
    assert h["x-ratelimit-limit-tokens"] == "6000"
    assert h["x-ratelimit-remaining-tokens"] == "5990"
    assert h["x-ratelimit-reset-tokens"] == "100ms"


async def test_groq_enforces_its_unreported_minute_budget(clock: FakeClock) -> None:
    async with vendor(
        "groq", dialect="groq", requests_per_minute=1, requests_per_day=100, clock=clock
    ) as server:
        path = "/openai/v1/chat/completions"
        assert (await post(server, chat_body(), path=path))[0] == 200
        status, h = await post(server, chat_body(), path=path)
    assert (status, h["retry-after"]) == (429, "60")
    assert h["x-ratelimit-remaining-requests"] == "99"  # the day's budget, not the minute's


async def test_anthropic_splits_input_and_output_tokens(clock: FakeClock) -> None:
    async with vendor(
        "anthropic",
        dialect="anthropic",
        requests_per_minute=50,
        input_tokens_per_minute=600,
        output_tokens_per_minute=120,
        clock=clock,
    ) as server:
        status, h = await post(server, chat_body(6, 60), path="/v1/messages")
        assert status == 200
        prefix = "anthropic-ratelimit-"
        assert h[prefix + "requests-limit"] == "50"
        assert h[prefix + "requests-remaining"] == "49"
        assert h[prefix + "input-tokens-remaining"] == "594"
        assert h[prefix + "output-tokens-remaining"] == "60"
        # "tokens" is the most restrictive of the two.
        assert h[prefix + "tokens-limit"] == "120"
        assert h[prefix + "tokens-remaining"] == "60"
        # Full again in 30 s (60 output tokens at 2 a second): 1000 + 30 as an RFC 3339 time.
        assert h[prefix + "output-tokens-reset"] == "1970-01-01T00:17:10Z"
        assert h[prefix + "requests-reset"] == "1970-01-01T00:16:42Z"  # 1.2 s, rounded up
        parsed = parse_rate_headers(h, now=clock)
        assert parsed is not None
        assert parsed.windows["output-tokens"] == (120, 60, 30.0)
        assert parsed.windows["input-tokens"].remaining == 594

        status, h = await post(server, chat_body(1, 61), path="/v1/messages")
        assert (status, h["retry-after"]) == (429, "1")  # one output token short: 0.5 s
        assert h["content-type"].startswith("application/json")


async def test_anthropic_sdk_reads_the_429_and_the_headers(clock: FakeClock) -> None:
    anthropic = require("anthropic", "2")
    async with vendor(
        "anthropic", dialect="anthropic", requests_per_minute=1, clock=clock
    ) as server:
        client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=server.url(), max_retries=0)
        try:
            raw = await client.messages.with_raw_response.create(
                model="fake-claude",
                max_tokens=8,
                messages=[{"role": "user", "content": "hi"}],
            )
            assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert (await raw.parse()).content[0].text == "echo: hi"
            with pytest.raises(anthropic.RateLimitError) as caught:
                await client.messages.create(
                    model="fake-claude", max_tokens=8, messages=[{"role": "user", "content": "x"}]
                )
        finally:
            await client.close()
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "60"
    assert caught.value.body["error"]["type"] == "rate_limit_error"


async def test_azure_enforces_its_sub_windows(clock: FakeClock) -> None:
    """A 600 RPM deployment takes 10 requests a second, not 600 at once."""
    async with vendor(
        dialect="azure", requests_per_minute=600, tokens_per_minute=60_000, clock=clock
    ) as server:
        for i in range(10):
            status, h = await post(server, chat_body())
            assert status == 200
            assert h["x-ratelimit-remaining-requests"] == str(599 - i)
        assert "x-ratelimit-limit-requests" not in h  # Azure reports what is left only
        assert "x-ratelimit-reset-requests" not in h
        status, h = await post(server, chat_body())
        assert status == 429
        assert h["retry-after-ms"] == h["x-ms-retry-after-ms"] == "100"
        assert h["retry-after"] == "1"
        clock.advance(0.1)
        assert (await post(server, chat_body()))[0] == 200


async def test_azure_tokens_are_spread_over_ten_seconds(clock: FakeClock) -> None:
    async with vendor(dialect="azure", tokens_per_minute=600, clock=clock) as server:
        assert (await post(server, chat_body(50, 50)))[0] == 200  # 100: the 10 s window's all
        status, h = await post(server, chat_body(1, 0))
        assert (status, h["retry-after-ms"]) == (429, "100")  # 1 token at 10 a second
        assert h["x-ratelimit-remaining-tokens"] == "500"


# -- the concurrency cap ------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, 2.0)])
async def test_past_the_concurrency_cap_the_vendor_is_busy(
    clock: FakeClock, status: int, retry_after: float | None
) -> None:
    async with FakeServer(
        "openai",
        faults=Faults(hang_seconds=30),
        capacity=Capacity(
            max_concurrent=2, busy_status=status, busy_retry_after=retry_after, clock=clock
        ),
    ) as server:
        server.hang_next(2)
        hung = [asyncio.create_task(post(server, chat_body())) for _ in range(2)]
        meter = server.capacity
        assert meter is not None

        async def both_held() -> None:
            while meter.in_flight < 2:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(both_held(), 30)  # a guard against a hang, not a speed check
        refused, h = await post(server, chat_body())
        assert refused == status
        assert h.get("retry-after") == (None if retry_after is None else "2")
        assert meter.busy == 1
        assert meter.max_in_flight == 2
        await server.aclose()  # ends the hung requests
        await asyncio.gather(*hung, return_exceptions=True)
        assert meter.in_flight == 0


# -- the vendors' SDKs ---------------------------------------------------------------------------


async def test_openai_sdk_reads_the_headers_and_the_429(clock: FakeClock) -> None:
    openai = require("openai", "2")
    async with vendor(requests_per_minute=1, tokens_per_minute=1000, clock=clock) as server:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.url("/v1"), max_retries=0)
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="fake-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
            assert raw.headers["x-ratelimit-remaining-requests"] == "0"
            assert raw.headers["x-ratelimit-remaining-tokens"] == "994"
            assert raw.parse().choices[0].message.content == "echo: hi"
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(
                    model="fake-chat", messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            await client.close()
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "60"
    assert caught.value.code == "429"


async def test_openai_sdk_retries_after_the_azure_retry_after_ms(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK waits what ``retry-after-ms`` says (its own log tells how long), then gets in;
    the fake's clock moves by that much when the 429 arrives, standing in for the wait."""
    openai = require("openai", "2")

    async def on_response(response: Any) -> None:
        if response.status_code == 429:
            clock.advance(int(response.headers["retry-after-ms"]) / 1000)

    async with vendor(dialect="azure", requests_per_minute=600, clock=clock) as server:
        http = openai.DefaultAsyncHttpxClient(event_hooks={"response": [on_response]})
        client = openai.AsyncOpenAI(
            api_key="sk-test", base_url=server.url("/v1"), max_retries=1, http_client=http
        )
        try:
            for _ in range(10):
                await client.chat.completions.create(
                    model="fake-chat", messages=[{"role": "user", "content": "hi"}]
                )
            clock.advance(0.0625)  # 0.625 of a request back: 37.5 ms more for one
            with caplog.at_level(logging.INFO, logger="openai"):
                done = await client.chat.completions.create(
                    model="fake-chat", messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            await client.close()
    assert done.choices[0].message.content == "echo: hi"
    assert server.capacity is not None
    assert server.capacity.rate_limited == 1
    waits = [
        float(m.group(1))
        for m in (
            re.search(r"Retrying request in ([\d.]+) seconds", r.message) for r in caplog.records
        )
        if m
    ]
    assert waits == [pytest.approx(0.038)]  # retry-after-ms: 38


async def test_a_stream_carries_the_headers_and_a_refusal_comes_before_any_fault(
    clock: FakeClock,
) -> None:
    async with vendor(requests_per_minute=1, clock=clock) as server:
        server.fail_next(1, status=500)
        status, h = await post(server, {**chat_body(), "stream": True})
        assert status == 500  # admitted (the budget spent), then the scripted fault
        assert h["x-ratelimit-remaining-requests"] == "0"
        server.fail_next(1, status=500)
        status, h = await post(server, {**chat_body(), "stream": True})
        assert status == 429  # refused at the budget: the scripted fault is still there
        clock.advance(60)
        assert (await post(server, chat_body()))[0] == 500
        clock.advance(60)
        status, h = await post(server, {**chat_body(), "stream": True})
    assert status == 200
    assert h["content-type"].startswith("text/event-stream")
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "1m0s"


async def test_a_refused_request_can_be_charged_as_openai_charges_it(clock: FakeClock) -> None:
    async with vendor(requests_per_minute=2, charge_refused=True, clock=clock) as server:
        for _ in range(2):
            await post(server, chat_body())
        status, h = await post(server, chat_body())
        assert (status, h["retry-after"]) == (429, "30")
        status, h = await post(server, chat_body())  # the first refusal cost a request
        assert (status, h["retry-after"]) == (429, "60")
        assert h["x-ratelimit-reset-requests"] == "2m0s"  # from -2 to 2 at one per 30 s
        clock.advance(90)
        assert (await post(server, chat_body()))[0] == 200


# -- asyncllm against it ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("rate_limits", [False, True])
async def test_a_backlog_through_a_learning_client_collects_no_429(
    clock: FakeClock, dialect: str, rate_limits: bool
) -> None:
    # 80 calls at once, 8 at a time, through a client that knows no budget: the first replies
    # name the vendor's 30 a minute and the whole backlog keeps to it, the calls that were
    # already queued (or had passed an empty gate) included.
    import asyncllm

    class Reading(asyncllm.OpenAI):
        rate_dialect = (
            asyncllm.Claude.rate_dialect if dialect == "anthropic" else asyncllm.OpenAI.rate_dialect
        )

    async with vendor("openai", requests_per_minute=30, dialect=dialect, clock=clock) as server:
        dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
        client = Reading(
            api_key="k",
            base_url=server.url("/v1"),
            dispatcher=dispatcher,
            max_concurrent_requests=8,
            rate_limits=asyncllm.RateLimits(max_wait=3600.0) if rate_limits else None,
        )
        async with client:
            calls = [client.chat([{"role": "user", "content": "q"}], model="m") for _ in range(80)]
            await asyncio.gather(*calls)
        await dispatcher.aclose()
        assert server.capacity is not None
        assert (server.capacity.admitted, server.capacity.rate_limited) == (80, 0)


async def test_a_closed_clients_learned_limits_do_not_reach_a_new_client_of_its_name(
    clock: FakeClock,
) -> None:
    # One client spends a vendor's 2 a minute and closes; a new client with the same (default)
    # name, another key and another server with no limit, starts from nothing it did not learn.
    import asyncllm

    async with (
        vendor("openai", requests_per_minute=2, clock=clock) as limited,
        FakeServer("openai") as free,
    ):
        dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
        first = asyncllm.OpenAI(
            api_key="k1",
            base_url=limited.url("/v1"),
            dispatcher=dispatcher,
            max_retries=0,
            rate_limits=asyncllm.RateLimits(max_wait=0.5),
        )
        async with first:
            for _ in range(2):
                await first.chat([{"role": "user", "content": "q"}], model="m")
            with pytest.raises(asyncllm.RateLimitError):
                await first.chat([{"role": "user", "content": "q"}], model="m")
        second = asyncllm.OpenAI(
            api_key="k2",
            base_url=free.url("/v1"),
            dispatcher=dispatcher,
            max_retries=0,
            rate_limits=asyncllm.RateLimits(max_wait=0.5),
        )
        async with second:
            await second.chat([{"role": "user", "content": "q"}], model="m")
        await dispatcher.aclose()
        assert free.request_count == 1
