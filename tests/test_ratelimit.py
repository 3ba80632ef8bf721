"""Rate budgets: the vendors' header dialects, the in-memory budget store, and the lane-wide block
a 429 with Retry-After sets. Every clock here is a fake one."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import asyncllm
from asyncllm._engine._backoff import parse_retry_after
from asyncllm._engine._ratelimit import (
    Cost,
    Lease,
    MemoryBudgetStore,
    RateHeaders,
    Window,
    block_lane,
    parse_duration,
    parse_rate_headers,
    parse_rfc3339,
)
from asyncllm.testing import FakeClock, MockResponse
from tests.helpers import USER, client, ok, settle

# 2024-05-01T12:00:00Z
WALL = 1714564800.0


def wall() -> float:
    return WALL


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("2m59.56s", 179.56),
        ("1h0m0s", 3600.0),
        ("7.66s", 7.66),
        ("20us", 2e-5),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("", None),
        ("soon", None),
        ("6m0", None),
        ("-1s", None),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        (None, None),
    ],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2024-05-01T12:00:30Z", WALL + 30),
        ("2024-05-01T12:00:30z", WALL + 30),
        ("2024-05-01T14:00:30+02:00", WALL + 30),
        ("2024-05-01T12:00:30.5Z", WALL + 30.5),
        ("2024-05-01T12:00:30.123456789Z", WALL + 30.123456),
        ("2024-05-01T12:00:30", None),  # no zone: RFC 3339 requires one
        ("tomorrow", None),
        ("", None),
        ("-1", None),
        (None, None),
    ],
)
def test_parse_rfc3339(text: str | None, at: float | None) -> None:
    assert parse_rfc3339(text) == (None if at is None else pytest.approx(at))


def test_openai_and_groq_headers() -> None:
    parsed = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        wall,
    )
    assert parsed == RateHeaders(
        {"requests": Window(60, 59, 1.0), "tokens": Window(150000, 149984, 360.0)}
    )


def test_anthropic_headers_with_rfc3339_resets() -> None:
    parsed = parse_rate_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:01Z",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": "2024-05-01T12:00:03Z",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "8000",
            "anthropic-ratelimit-output-tokens-reset": "2024-05-01T11:59:00Z",  # past: now
            "anthropic-ratelimit-tokens-limit": "48000",
            "anthropic-ratelimit-tokens-remaining": "47000",
            "anthropic-ratelimit-tokens-reset": "garbage",
        },
        wall,
    )
    assert parsed is not None
    assert parsed.windows == {
        "requests": Window(50, 49, 1.0),
        "input-tokens": Window(40000, 39000, 3.0),
        "output-tokens": Window(8000, 8000, 0.0),
        "tokens": Window(48000, 47000, None),
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Azure: remaining counts without limits or resets, and the delay of a 429 in ms.
        (
            {"x-ratelimit-remaining-requests": "9", "x-ratelimit-remaining-tokens": "900"},
            RateHeaders({"requests": Window(None, 9, None), "tokens": Window(None, 900, None)}),
        ),
        ({"x-ms-retry-after-ms": "1500"}, RateHeaders({}, 1.5)),
        ({"retry-after-ms": "250", "retry-after": "9"}, RateHeaders({}, 0.25)),
        ({"retry-after": "4"}, RateHeaders({}, 4.0)),
        # -1 is "no such limit"; malformed values are as if absent.
        (
            {"x-ratelimit-limit-requests": "-1", "x-ratelimit-remaining-requests": "-1"},
            None,
        ),
        (
            {
                "x-ratelimit-limit-tokens": "many",
                "x-ratelimit-remaining-tokens": "12.0",
                "x-ratelimit-reset-tokens": "forever",
            },
            RateHeaders({"tokens": Window(None, 12, None)}),
        ),
        ({"x-ratelimit-limit-requests": "1.5"}, None),
        ({"anthropic-ratelimit-requests-limit": "-1"}, None),
        ({"x-ms-retry-after-ms": "soon"}, None),
        ({}, None),
        ({"content-type": "application/json"}, None),
    ],
)
def test_other_dialects_and_bad_values(
    headers: dict[str, str], expected: RateHeaders | None
) -> None:
    assert parse_rate_headers(headers, wall) == expected


def test_parse_retry_after_reads_azures_header() -> None:
    assert parse_retry_after({"x-ms-retry-after-ms": "2000"}) == 2.0
    assert parse_retry_after({"x-ms-retry-after-ms": "-5"}) is None


# -- the in-memory store -----------------------------------------------------------------------


async def test_requests_per_minute_lease_then_wait() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, requests_per_minute=2)
    assert await store.lease("a", Cost(), 0.0) == Lease("a", 1, 0)
    assert await store.lease("a", Cost(), 0.0) == Lease("a", 1, 0)
    # Two a minute refill one every 30 s.
    assert await store.lease("a", Cost(), 0.0) == pytest.approx(30.0)
    assert await store.lease("a", Cost(), 10.0) == pytest.approx(20.0)
    assert await store.lease("a", Cost(), 30.0) == Lease("a", 1, 0)
    # Another lane is not limited by this one's budget.
    assert await store.lease("b", Cost(), 30.0) == Lease("b", 1, 0)


async def test_tokens_reserved_then_settled_with_usage() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, tokens_per_minute=600)  # 10 a second
    lease = await store.lease("a", Cost(tokens=500), 0.0)
    assert isinstance(lease, Lease)
    assert await store.lease("a", Cost(tokens=200), 0.0) == pytest.approx(10.0)
    await store.settle(lease, 100, 0.0)  # used less: 400 come back
    assert isinstance(await store.lease("a", Cost(tokens=200), 0.0), Lease)
    current = await store.current("a", 0.0)
    assert current["tokens"] == Window(600, 300, 30.0)
    # A reply that used more than reserved leaves a debt the next calls wait for.
    lease = await store.lease("a", Cost(tokens=300), 0.0)
    assert isinstance(lease, Lease)
    await store.settle(lease, 400, 0.0)
    assert await store.lease("a", Cost(tokens=50), 0.0) == pytest.approx(15.0)


async def test_a_call_larger_than_a_whole_budget_never_fits() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, tokens_per_minute=100)
    assert await store.lease("a", Cost(tokens=101), 0.0) == math.inf
    # File management costs no request: it passes a spent request budget.
    store.configure("b", 0.0, requests_per_minute=1)
    assert isinstance(await store.lease("b", Cost(), 0.0), Lease)
    assert isinstance(await store.lease("b", Cost(requests=0), 0.0), Lease)


async def test_requests_per_day_binds_with_per_minute() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, requests_per_minute=100, requests_per_day=1)
    assert isinstance(await store.lease("a", Cost(), 0.0), Lease)
    assert await store.lease("a", Cost(), 0.0) == pytest.approx(86400.0)


async def test_reported_headers_are_learned() -> None:
    store = MemoryBudgetStore()
    headers = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "50s",  # 100 back in 50 s: 2 a second
        },
        wall,
    )
    assert headers is not None
    await store.report("a", headers, 0.0)
    assert await store.lease("a", Cost(), 0.0) == pytest.approx(0.5)
    assert isinstance(await store.lease("a", Cost(), 0.5), Lease)
    # A remaining count with no limit (Azure) sizes nothing new.
    azure = parse_rate_headers({"x-ratelimit-remaining-tokens": "5"}, wall)
    assert azure is not None
    await store.report("a", azure, 0.5)
    assert "tokens" not in await store.current("a", 0.5)


async def test_block_keeps_the_later_time() -> None:
    store = MemoryBudgetStore()
    assert await store.block("a", 10.0) == 10.0
    assert await store.block("a", 4.0) == 10.0
    assert await store.lease("a", Cost(), 3.0) == pytest.approx(7.0)
    assert (await store.current("a", 3.0))["blocked"] == Window(None, None, 7.0)
    assert await store.block("a", 12.0) == 12.0
    assert isinstance(await store.lease("a", Cost(), 12.0), Lease)
    assert "blocked" not in await store.current("a", 12.0)


# -- a 429 with Retry-After blocks the lane ------------------------------------------------------


def limited(clock: FakeClock, first: MockResponse) -> tuple[Any, list[float]]:
    """A handler that answers ``first`` once, then ok; it notes when each request arrived."""
    arrivals: list[float] = []
    responses = [first]

    def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        return responses.pop(0) if responses else ok()

    return handler, arrivals


def too_many(retry_after: str) -> MockResponse:
    return MockResponse(
        429, json={"error": {"message": "slow down"}}, headers={"Retry-After": retry_after}
    )


async def test_a_429_with_retry_after_blocks_every_call_of_the_lane() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, arrivals = limited(clock, too_many("5"))
    c = client(handler, dispatcher, retry=asyncllm.RetryConfig(max_retries=0))
    with pytest.raises(asyncllm.RateLimitError):
        await c.chat(USER, model="m")
    lane = dispatcher._lanes["openai"]
    assert lane.gate is not None
    # Another call waits out the block before it is sent.
    assert (await c.chat(USER, model="m")).text == "ok"
    assert clock.sleeps == [pytest.approx(5.0)]
    assert arrivals == [1000.0, pytest.approx(1005.0)]
    # Once the block has passed the lane is back to its one check.
    assert lane.gate is None
    assert (await c.chat(USER, model="m")).text == "ok"
    assert len(clock.sleeps) == 1
    await dispatcher.aclose()


async def test_the_retried_call_itself_waits_once() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, arrivals = limited(clock, too_many("7"))
    c = client(handler, dispatcher, retry=asyncllm.RetryConfig())
    assert (await c.chat(USER, model="m")).text == "ok"
    assert clock.sleeps == [pytest.approx(7.0)]
    assert arrivals == [1000.0, pytest.approx(1007.0)]
    await dispatcher.aclose()


async def test_a_block_past_the_deadline_fails_at_once_with_when_to_retry() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, arrivals = limited(clock, too_many("30"))
    c = client(handler, dispatcher, retry=asyncllm.RetryConfig(max_retries=0))
    with pytest.raises(asyncllm.RateLimitError):
        await c.chat(USER, model="m")
    clock.advance(10)
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(USER, model="m", deadline=15)
    assert info.value.retry_after == pytest.approx(20.0)
    assert info.value.status_code is None  # refused here, never sent
    assert "deadline" in info.value.message
    assert arrivals == [1000.0]
    assert clock.sleeps == []
    # Without a deadline the call waits it out.
    assert (await c.chat(USER, model="m")).text == "ok"
    assert arrivals == [1000.0, pytest.approx(1030.0)]
    await dispatcher.aclose()


async def test_a_block_past_max_retry_after_fails_at_once() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, arrivals = limited(clock, too_many("600"))
    c = client(handler, dispatcher, retry=asyncllm.RetryConfig(max_retry_after=120))
    with pytest.raises(asyncllm.RateLimitError) as first:
        await c.chat(USER, model="m")
    assert first.value.status_code == 429
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(USER, model="m")
    assert info.value.retry_after == pytest.approx(600.0)
    assert "max_retry_after" in info.value.message
    assert arrivals == [1000.0]
    assert dispatcher.stats()["openai"].rejected == 1
    await dispatcher.aclose()


async def test_a_shorter_retry_after_never_shortens_the_block() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, arrivals = limited(clock, too_many("10"))
    c = client(handler, dispatcher, retry=asyncllm.RetryConfig(max_retries=0))
    with pytest.raises(asyncllm.RateLimitError):
        await c.chat(USER, model="m")
    lane = dispatcher._lanes["openai"]
    await block_lane(lane, 2.0, dispatcher.budgets)  # a later 429 asking for less
    assert (await c.chat(USER, model="m")).text == "ok"
    assert arrivals == [1000.0, pytest.approx(1010.0)]
    await block_lane(lane, 3.0, dispatcher.budgets)
    await block_lane(lane, 8.0, dispatcher.budgets)  # a longer one extends it
    assert (await c.chat(USER, model="m")).text == "ok"
    assert arrivals[-1] == pytest.approx(1018.0)
    await dispatcher.aclose()


async def test_a_429_without_retry_after_blocks_nothing() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    responses = [MockResponse(429, json={"error": {"message": "slow"}})]
    c = client(
        lambda r: responses.pop(0) if responses else ok(),
        dispatcher,
        retry=asyncllm.RetryConfig(max_retries=0),
    )
    with pytest.raises(asyncllm.RateLimitError):
        await c.chat(USER, model="m")
    assert dispatcher._lanes["openai"].gate is None
    assert (await c.chat(USER, model="m")).text == "ok"
    assert clock.sleeps == []
    await dispatcher.aclose()


async def test_a_block_holds_other_lanes_back_not() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, _ = limited(clock, too_many("50"))
    blocked = client(handler, dispatcher, retry=asyncllm.RetryConfig(max_retries=0))
    other = client(lambda r: ok(), dispatcher)
    with pytest.raises(asyncllm.RateLimitError):
        await blocked.chat(USER, model="m")
    assert (await other.chat(USER, model="m")).text == "ok"
    assert clock.sleeps == []
    await dispatcher.aclose()


# -- configured request budgets ------------------------------------------------------------------


class ManualClock:
    """A clock whose sleepers wake only when the test advances it, in the order they slept: for
    the tests where several calls wait at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [f for at, f in self._sleepers if at <= self.now]
        self._sleepers = [(at, f) for at, f in self._sleepers if at > self.now]
        for future in due:
            if not future.done():  # a sleeper that was cancelled
                future.set_result(None)
        await settle()


def budgeted(handler: Any, dispatcher: asyncllm.Dispatcher, **limits: Any) -> asyncllm.OpenAI:
    return client(handler, dispatcher, rate_limits=asyncllm.RateLimits(**limits))


async def test_requests_per_minute_make_calls_wait_instead_of_collecting_429s() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []

    def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        return ok()

    c = budgeted(handler, dispatcher, requests_per_minute=2)
    for _ in range(4):
        assert (await c.chat(USER, model="m")).text == "ok"
    assert arrivals == [1000.0, 1000.0, pytest.approx(1030.0), pytest.approx(1060.0)]
    assert clock.sleeps == [pytest.approx(30.0), pytest.approx(30.0)]
    # The budget holds the gate for good, unlike a passed block.
    assert dispatcher._lanes["openai"].gate is not None
    await dispatcher.aclose()


async def test_every_attempt_spends_a_request() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    responses = [MockResponse(500, json={"error": {"message": "boom"}})]
    c = budgeted(lambda r: responses.pop(0) if responses else ok(), dispatcher, requests_per_day=2)
    assert (await c.chat(USER, model="m")).text == "ok"  # two attempts
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(USER, model="m")
    assert info.value.retry_after == pytest.approx(43200.0, rel=1e-3)
    assert "max_wait" in info.value.message
    await dispatcher.aclose()


async def test_calls_waiting_for_a_budget_go_in_priority_order() -> None:
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrived: list[str] = []

    def handler(request: Any) -> MockResponse:
        arrived.append(request.json()["messages"][0]["content"])
        return ok()

    c = budgeted(handler, dispatcher, requests_per_minute=1, max_wait=600)

    def say(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    await c.chat(say("first"), model="m")
    order = [
        ("low", asyncllm.Priority.LOW),
        ("normal", asyncllm.Priority.NORMAL),
        ("high", asyncllm.Priority.HIGH),
        ("low-2", asyncllm.Priority.LOW),
    ]
    tasks = [asyncio.create_task(c.chat(say(t), model="m", priority=p)) for t, p in order]
    await settle()
    assert arrived == ["first"]
    for _ in range(4):
        await clock.advance(60)
    await asyncio.gather(*tasks)
    assert arrived == ["first", "high", "normal", "low", "low-2"]
    assert clock() == 1240.0
    await dispatcher.aclose()


async def test_a_budget_wait_past_the_deadline_fails_at_once() -> None:
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    def handler(request: Any) -> MockResponse:
        sent.append(clock())
        return ok()

    c = budgeted(handler, dispatcher, requests_per_minute=1)
    await c.chat(USER, model="m")
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(USER, model="m", deadline=30)
    assert info.value.retry_after == pytest.approx(60.0)
    assert "deadline" in info.value.message
    # One call waits for the next request; another behind it whose deadline comes sooner than
    # that request fails at once too, without waiting its turn.
    waiting = asyncio.create_task(c.chat(USER, model="m"))
    await settle()
    with pytest.raises(asyncllm.RateLimitError) as behind:
        await c.chat(USER, model="m", deadline=45)
    assert behind.value.retry_after == pytest.approx(60.0)
    await clock.advance(60)
    await waiting
    assert sent == [1000.0, 1060.0]
    assert dispatcher.stats()["openai"].rejected == 2
    await dispatcher.aclose()


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    c = budgeted(lambda r: ok(), dispatcher, requests_per_minute=1)
    await c.chat(USER, model="m")
    head = asyncio.create_task(c.chat(USER, model="m", priority=asyncllm.Priority.HIGH))
    await settle()
    behind = asyncio.create_task(c.chat(USER, model="m", priority=asyncllm.Priority.LOW))
    await settle()
    head.cancel()
    await settle()
    await clock.advance(60)
    assert (await behind).text == "ok"
    assert head.cancelled()
    assert dispatcher._lanes["openai"].gate._waiters == []  # type: ignore[union-attr]
    await dispatcher.aclose()


def say(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_a_backlog_leases_its_budget_as_slots_free_not_while_it_queues() -> None:
    """Calls past one round of slots wait for their budget in turn instead of leasing it and
    holding it in the queue: a HIGH call coming later finds the budget there."""
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrived: list[tuple[str, float]] = []
    answers: list[asyncio.Future[None]] = []

    async def handler(request: Any) -> MockResponse:
        arrived.append((request.json()["messages"][0]["content"], clock()))
        answers.append(asyncio.get_running_loop().create_future())
        await answers[-1]
        return ok()

    c = client(
        handler,
        dispatcher,
        max_concurrent_requests=1,
        rate_limits=asyncllm.RateLimits(requests_per_minute=3, high_reserve=0),
    )
    low = [
        asyncio.create_task(c.chat(say(f"low-{i}"), model="m", priority=asyncllm.Priority.LOW))
        for i in range(4)
    ]
    await settle()
    # One sent, one queued for the slot; the two behind them hold no budget while they wait.
    assert (await dispatcher.budgets.current("openai", clock()))["requests"].remaining == 1
    high = asyncio.create_task(c.chat(say("high"), model="m", priority=asyncllm.Priority.HIGH))
    await settle()
    for i in range(3):
        answers[i].set_result(None)
        await settle()
    # HIGH waits for no slot in the gate: it takes the last request and goes to the front.
    assert arrived == [("low-0", 1000.0), ("high", 1000.0), ("low-1", 1000.0)]
    await clock.advance(20)  # the budget's next request
    answers[3].set_result(None)
    await clock.advance(20)
    answers[4].set_result(None)
    await asyncio.gather(high, *low)
    assert arrived[3:] == [("low-2", 1020.0), ("low-3", 1040.0)]
    await dispatcher.aclose()


async def test_less_urgent_calls_leave_the_reserve_to_high_ones_while_calls_wait() -> None:
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrived: list[str] = []

    def handler(request: Any) -> MockResponse:
        arrived.append(request.json()["messages"][0]["content"])
        return ok()

    # 60 a minute, one a second; a tenth of it (6 requests) kept for HIGH calls.
    c = budgeted(handler, dispatcher, requests_per_minute=60, high_reserve=0.1, max_wait=600)
    await asyncio.gather(*(c.chat(say("first"), model="m") for _ in range(60)))
    low = [
        asyncio.create_task(c.chat(say(f"low-{i}"), model="m", priority=asyncllm.Priority.LOW))
        for i in range(3)
    ]
    await settle()
    await clock.advance(3)  # three requests back: the reserve, not yet theirs
    assert arrived[60:] == []
    # At once, from the reserve: a deadline shorter than the LOW calls' wait is no matter.
    await c.chat(say("high"), model="m", priority=asyncllm.Priority.HIGH, deadline=0.5)
    assert arrived[60:] == ["high"]
    await clock.advance(5)  # 7 left: one LOW call may go, leaving 6
    assert arrived[60:] == ["high", "low-0"]
    for _ in range(2):
        await clock.advance(1)
    await asyncio.gather(*low)
    assert arrived[60:] == ["high", "low-0", "low-1", "low-2"]
    await dispatcher.aclose()


async def test_the_reserve_is_rounded_to_whole_requests() -> None:
    """2% of 25 a minute rounds to one request kept for HIGH calls (Azure's one-second window of
    a 1 500-a-minute deployment is 25); 2% of 2 keeps none (another test's budget)."""
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrived: list[str] = []

    def handler(request: Any) -> MockResponse:
        arrived.append(request.json()["messages"][0]["content"])
        return ok()

    c = budgeted(handler, dispatcher, requests_per_minute=25, max_wait=600)
    await asyncio.gather(*(c.chat(say("first"), model="m") for _ in range(25)))
    low = asyncio.create_task(c.chat(say("low"), model="m", priority=asyncllm.Priority.LOW))
    await settle()
    await clock.advance(2.5)  # one request back: the reserve
    assert arrived[25:] == []
    await c.chat(say("high"), model="m", priority=asyncllm.Priority.HIGH)
    for _ in range(3):
        await clock.advance(2.5)
    await low
    assert arrived[25:] == ["high", "low"]
    await dispatcher.aclose()


async def test_a_call_holding_its_slot_does_not_wait_behind_one_waiting_for_that_slot() -> None:
    """A call that got its slot before the lane's budgets were known leases with the slot in
    hand: it goes before the calls that wait for a slot, or it and they would wait for each
    other."""
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    lane = dispatcher.lane(
        "b",
        limits=asyncllm.LimitsConfig(max_concurrent_requests=1),
        rate_limits=asyncllm.RateLimits(requests_per_minute=60),
    )
    gate = lane.gate
    assert gate is not None
    # The one slot, held by the call below, and a round's worth of calls queued for it.
    lane.in_flight += 1
    lane.queued += 1
    waiting = asyncio.create_task(gate.admit("r1", asyncllm.Priority.NORMAL, None, "chat", {}))
    await settle()
    assert not waiting.done()  # no slot
    holder = asyncio.create_task(gate.admit("r2", asyncllm.Priority.LOW, None, "chat", {}, True))
    await settle()
    assert holder.done()
    assert isinstance(holder.result(), Lease)
    lane.in_flight -= 1
    lane.queued -= 1
    gate.room_freed()
    await settle()
    assert isinstance(waiting.result(), Lease)
    await dispatcher.aclose()


def test_rate_limits_are_checked_when_made() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.RateLimits(requests_per_minute=0)
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.RateLimits(requests_per_day=1.5)  # type: ignore[arg-type]
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.RateLimits(max_wait=-1)
    for reserve in (-0.1, 1.0, math.nan):
        with pytest.raises(asyncllm.ConfigurationError):
            asyncllm.RateLimits(high_reserve=reserve)
    assert asyncllm.RateLimits().high_reserve == 0.02


async def test_a_block_holds_a_budgeted_lane_too() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    handler, arrivals = limited(clock, too_many("10"))
    c = client(
        handler,
        dispatcher,
        retry=asyncllm.RetryConfig(max_retries=0),
        rate_limits=asyncllm.RateLimits(requests_per_minute=600),
    )
    with pytest.raises(asyncllm.RateLimitError):
        await c.chat(USER, model="m")
    assert (await c.chat(USER, model="m")).text == "ok"
    assert arrivals == [1000.0, pytest.approx(1010.0)]
    await block_lane(dispatcher._lanes["openai"], 5.0, dispatcher.budgets)
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(USER, model="m", deadline=1)
    assert info.value.retry_after == pytest.approx(5.0)
    await dispatcher.aclose()


async def test_a_call_waiting_for_a_slot_is_not_sent_into_a_block() -> None:
    """A call that passed the gate of a budgeted lane before a 429 blocked it, and waited for a
    slot meanwhile, waits the block out at the gate instead of being sent into it."""
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, observer=None)
    lane = dispatcher.lane(
        "vendor",
        limits=asyncllm.LimitsConfig(max_concurrent_requests=1),
        rate_limits=asyncllm.RateLimits(requests_per_minute=600),
    )
    answer = asyncio.Event()
    start = clock()
    sent: list[tuple[str, float]] = []

    async def limited_first(_: Any) -> int:
        sent.append(("first", clock()))
        await answer.wait()
        raise asyncllm.RateLimitError(
            "slow down", status_code=429, backend="vendor", retry_after=5.0
        )

    async def second(_: Any) -> int:
        sent.append(("second", clock()))
        return 2

    first = asyncio.create_task(dispatcher.run(lane, "chat", limited_first, max_retries=0))
    while lane.in_flight < 1:
        await asyncio.sleep(0)
    waiting = asyncio.create_task(dispatcher.run(lane, "chat", second))
    while lane.queued < 1:
        await asyncio.sleep(0)
    answer.set()
    with pytest.raises(asyncllm.RateLimitError):
        await first
    assert await waiting == 2
    assert sent == [("first", start), ("second", pytest.approx(start + 5.0))]
    await dispatcher.aclose()
