"""Adaptive concurrency (``asyncllm._engine._adaptive``): the lane's limit shrinks on overload
signals once per window, grows back at high utilisation, and slot acceptance keeps to it.

The unit tests drive one lane through the dispatcher with attempts the test ends by hand, on a
fake clock; the last test runs a real client against the OpenAI fake with a hidden capacity."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import asyncllm
from asyncllm import (
    AdaptiveConcurrency,
    APIConnectionError,
    APITimeoutError,
    BreakerConfig,
    Dispatcher,
    LimitsConfig,
    RetryConfig,
)
from asyncllm._engine._dispatcher import Attempt, Lane
from asyncllm._exceptions import APIError, status_error
from asyncllm.testing import Capacity, FakeClock, FakeServer
from tests.helpers import settle


def overloaded(status: int = 503) -> APIError:
    return status_error(status, f"injected {status}")


class Calls:
    """Calls on one lane (named "b") whose attempts run until the test ends them."""

    def __init__(
        self,
        max_concurrent: int = 10,
        adaptive: AdaptiveConcurrency | None = AdaptiveConcurrency(),  # noqa: B008  # frozen
        max_retries: int = 0,
        retry_delay: float = 0.0,
        **dispatcher: Any,
    ) -> None:
        self.clock = FakeClock()
        self.dispatcher = Dispatcher(
            clock=self.clock, sleep=self.clock.sleep, rng=random.Random(0), observer=None,
            **dispatcher,
        )  # fmt: skip
        self.lane: Lane = self.dispatcher.lane(
            "b",
            limits=LimitsConfig(max_concurrent, 10_000, None, adaptive),
            retry=RetryConfig(
                max_retries=max_retries, initial_delay=retry_delay, max_delay=retry_delay
            ),
            breaker=BreakerConfig(failure_threshold=1000),
        )
        self.running: dict[str, asyncio.Future[str]] = {}
        self.started: list[str] = []
        self.tasks: dict[str, asyncio.Task[str]] = {}

    def call(self, name: str, priority: int = asyncllm.Priority.NORMAL) -> None:
        async def attempt(a: Attempt) -> str:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.running[name] = future
            self.started.append(name)
            try:
                return await future
            finally:
                del self.running[name]

        run = self.dispatcher.run(self.lane, "chat", attempt, priority=priority)
        self.tasks[name] = asyncio.create_task(run)

    async def start(self, *names: str) -> None:
        for name in names:
            self.call(name)
        await settle()

    async def end(self, name: str, error: BaseException | None = None) -> None:
        """End ``name``'s running attempt: a success, or ``error``."""
        future = self.running[name]
        if error is None:
            future.set_result(name)
        else:
            future.set_exception(error)
        await settle()

    @property
    def limit(self) -> int:
        return self.lane.limit

    async def aclose(self) -> None:
        """End every call, the queued ones as they start."""
        while not all(task.done() for task in self.tasks.values()):
            for future in list(self.running.values()):
                if not future.done():
                    future.set_result("closed")
            await settle()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.dispatcher.aclose()


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


async def test_an_overload_signal_shrinks_the_limit_by_the_factor() -> None:
    calls = Calls(10)
    await calls.start(*names("c", 10))
    assert calls.limit == 10
    await calls.end("c0", overloaded(503))
    assert calls.limit == 9
    stats = calls.dispatcher.stats()["b"]
    assert (stats.concurrency_limit, stats.limit_decreases, stats.limit_increases) == (9, 1, 0)
    assert stats.max_concurrent == 10
    await calls.aclose()


async def test_refusals_of_the_calls_in_flight_at_the_decrease_size_its_one_decrease() -> None:
    """Of the 10 attempts in flight at the decrease, each one refused shows one more over the
    server's capacity: the window's one decrease goes down to those not refused. A new decrease
    (by the factor) waits until every one of them has finished."""
    calls = Calls(10)
    await calls.start(*names("c", 10))
    await calls.end("c0", overloaded())
    assert calls.limit == 9
    calls.clock.advance(5)  # the interval is long over: only the calls in flight hold the window
    await calls.end("c1", overloaded())
    assert calls.limit == 8  # 10 in flight at the decrease, 2 of them refused
    await calls.end("c2")
    await calls.start("n0")
    assert "n0" in calls.running
    # Sent after the decrease, under the new limit: its 503 is no part of the old window.
    await calls.end("n0", overloaded())
    assert calls.limit == 8
    for name in names("c", 10)[3:9]:
        await calls.end(name)
    # c9 was in flight at the decrease: its own 503 is still the old load speaking.
    await calls.end("c9", overloaded())
    assert calls.limit == 7
    assert calls.dispatcher.stats()["b"].limit_decreases == 1
    await calls.start("n1")
    await calls.end("n1", overloaded())
    assert calls.limit == 6  # floor(7 * 0.9): the window was over
    assert calls.dispatcher.stats()["b"].limit_decreases == 2
    await calls.aclose()


async def test_one_window_at_most_halves_the_limit() -> None:
    calls = Calls(10)
    await calls.start(*names("c", 10))
    for name in names("c", 10):
        await calls.end(name, overloaded())
    assert calls.limit == 5
    assert calls.dispatcher.stats()["b"].limit_decreases == 1
    await calls.aclose()


async def test_a_call_refused_over_the_shrunk_limit_retries_in_the_queue_without_backoff() -> None:
    """The refused attempt was one of the lane's excess over its new limit: its retry waits for
    a slot under that limit, in priority order, rather than a backoff (a HIGH call would
    otherwise wait out seconds of it)."""
    calls = Calls(4, max_retries=1, retry_delay=10.0)
    await calls.start(*names("c", 4))
    await calls.end("c0", overloaded())
    assert calls.limit == 3
    assert calls.clock.sleeps == []  # no backoff: c0 waits in the lane's queue
    assert "c0" not in calls.running
    calls.call("high", asyncllm.Priority.HIGH)
    calls.call("low", asyncllm.Priority.LOW)
    await settle()
    await calls.end("c1")
    assert calls.started[4:] == ["high"]
    await calls.end("c2")
    assert calls.started[4:] == ["high", "c0"]  # NORMAL, ahead of LOW
    await calls.end("c0")
    assert await calls.tasks["c0"] == "c0"
    assert calls.clock.sleeps == []
    await calls.aclose()


@pytest.mark.parametrize("retry_after", [None, 2.0], ids=["within-the-limit", "retry-after"])
async def test_other_refused_calls_still_back_off(retry_after: float | None) -> None:
    calls = Calls(4, max_retries=1, retry_delay=10.0)
    if retry_after is None:
        await calls.start("c0")  # one in flight: well within the shrunk limit
        error = overloaded()
    else:
        await calls.start(*names("c", 4))  # over the shrunk limit, but the server named a time
        error = status_error(503, "busy", retry_after=retry_after)
    await calls.end("c0", error)
    assert calls.limit == 3
    assert len(calls.clock.sleeps) == 1
    await calls.aclose()


async def test_no_second_decrease_within_the_interval() -> None:
    calls = Calls(10)
    await calls.start("c0", "c1")
    await calls.end("c0", overloaded())
    await calls.end("c1")  # every call in flight at the decrease has finished
    calls.clock.advance(0.5)
    await calls.start("n0")
    await calls.end("n0", overloaded())
    assert calls.limit == 9
    calls.clock.advance(0.5)  # one second since the decrease
    await calls.start("n1")
    await calls.end("n1", overloaded())
    assert calls.limit == 8
    await calls.aclose()


async def test_a_retried_attempt_ends_its_part_in_the_window() -> None:
    """A call in flight at the decrease that fails and retries has finished that attempt: its
    next attempt is new load."""
    calls = Calls(10, max_retries=3)
    await calls.start("c0", "c1")
    await calls.end("c0", overloaded())
    calls.clock.advance(2)
    await calls.end("c1", APIConnectionError("reset"))  # retried: its second attempt starts
    assert "c1" in calls.running
    await calls.end("c1", overloaded())
    assert calls.limit == 8
    await calls.aclose()


@pytest.mark.parametrize(
    "error",
    [
        overloaded(503),
        overloaded(529),
        APITimeoutError("request timed out (ServerTimeoutError)"),
    ],
    ids=["503", "529", "timeout"],
)
async def test_overload_signals_shrink_the_limit(error: APIError) -> None:
    calls = Calls(10)
    await calls.start("c0")
    await calls.end("c0", error)
    assert calls.limit == 9
    await calls.aclose()


def _unsent_timeout() -> APIError:
    error = APITimeoutError("connect timed out")
    error.unsent = True
    return error


@pytest.mark.parametrize(
    "error",
    [
        overloaded(500),
        overloaded(502),
        overloaded(504),
        APIConnectionError("connection reset"),
        _unsent_timeout(),
        status_error(429, "slow down", retry_after=0.0),
        status_error(429, "slow down"),
        overloaded(400),
    ],
    ids=["500", "502", "504", "connection", "connect-timeout", "429-retry-after", "429", "400"],
)
async def test_other_failures_leave_the_limit_alone(error: APIError) -> None:
    calls = Calls(10)
    await calls.start("c0")
    await calls.end("c0", error)
    await asyncio.gather(*calls.tasks.values(), return_exceptions=True)
    assert calls.limit == 10
    assert calls.dispatcher.stats()["b"].limit_decreases == 0
    await calls.aclose()


async def test_the_limit_never_goes_below_one() -> None:
    calls = Calls(2, AdaptiveConcurrency(min_interval=0))
    for i in range(5):
        await calls.start(f"n{i}")
        await calls.end(f"n{i}", overloaded())
    assert calls.limit == 1
    assert calls.dispatcher.stats()["b"].limit_decreases == 1  # 2 -> 1, then nothing to shrink
    await calls.start("a", "b")
    assert calls.started[-1] == "a"
    assert set(calls.running) == {"a"}  # limit 1: one at a time
    await calls.end("a")
    assert set(calls.running) == {"b"}
    await calls.aclose()


async def test_a_shrunk_limit_holds_new_calls_and_keeps_their_priority_order() -> None:
    calls = Calls(4)
    await calls.start(*names("c", 4))
    calls.call("low", asyncllm.Priority.LOW)
    calls.call("normal", asyncllm.Priority.NORMAL)
    calls.call("high", asyncllm.Priority.HIGH)
    await settle()
    await calls.end("c0", overloaded())
    assert calls.limit == 3  # floor(4 * 0.9)
    assert len(calls.running) == 3  # three in flight: none starts
    assert calls.started[4:] == []
    await calls.end("c1")
    assert calls.started[4:] == ["high"]
    assert calls.lane.in_flight == 3
    await calls.end("c2")
    assert calls.started[4:] == ["high", "normal"]
    await calls.end("c3")
    assert calls.started[4:] == ["high", "normal", "low"]
    assert calls.lane.in_flight == 3
    await calls.aclose()


async def test_busy_successes_grow_the_limit_additively_up_to_the_maximum() -> None:
    calls = Calls(10)
    await calls.start(*names("c", 10))
    for i in range(60):
        calls.call(f"q{i}")
    await settle()
    await calls.end("c0", overloaded())
    assert calls.limit == 9
    assert calls.lane.in_flight == 9
    # Each success frees a slot the queue refills: the lane stays busy.
    for _ in range(12):
        await calls.end(next(iter(calls.running)))
    assert calls.limit == 9  # enough successes, but within a second of the decrease
    calls.clock.advance(1)
    await calls.end(next(iter(calls.running)))  # the next busy success, a second on
    assert calls.limit == 10
    assert calls.lane.in_flight == 10  # the freed slot and the new one both taken
    calls.clock.advance(5)
    for _ in range(25):
        await calls.end(next(iter(calls.running)))
    assert calls.limit == 10  # the ceiling: max_concurrent_requests
    stats = calls.dispatcher.stats()["b"]
    assert (stats.limit_decreases, stats.limit_increases) == (1, 1)
    await calls.aclose()


async def test_no_growth_while_the_lane_is_mostly_idle() -> None:
    calls = Calls(10)
    await calls.start("c0")
    await calls.end("c0", overloaded())
    assert calls.limit == 9
    for i in range(50):  # one call at a time: 1 of 9 slots in use
        await calls.start(f"n{i}")
        await calls.end(f"n{i}")
    assert calls.limit == 9
    assert calls.dispatcher.stats()["b"].limit_increases == 0
    await calls.aclose()


async def test_a_stream_in_flight_holds_the_window_until_it_ends() -> None:
    calls = Calls(10)
    finish: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def chunks(a: Attempt) -> AsyncIterator[str]:
        yield "first"
        await finish
        yield "last"

    stream = calls.dispatcher.stream(calls.lane, "chat", chunks)
    iterator = stream.__aiter__()
    assert await iterator.__anext__() == "first"  # the stream holds its slot now
    await calls.start("c0")
    await calls.end("c0", overloaded())
    assert calls.limit == 9
    calls.clock.advance(5)
    await calls.start("n0")
    await calls.end("n0", overloaded())
    assert calls.limit == 9  # the stream, in flight at the decrease, has not ended
    finish.set_result(None)
    assert [item async for item in iterator] == ["last"]
    await calls.start("n1")
    await calls.end("n1", overloaded())
    assert calls.limit == 8
    await calls.aclose()


async def test_switched_off_the_limit_stays_fixed() -> None:
    calls = Calls(10, adaptive=None)
    await calls.start(*names("c", 10))
    for i, name in enumerate(names("c", 10)):
        calls.clock.advance(2)
        await calls.end(name, overloaded(503 if i % 2 else 529))
    assert calls.limit == 10
    stats = calls.dispatcher.stats()["b"]
    assert (stats.concurrency_limit, stats.limit_decreases, stats.limit_increases) == (10, 0, 0)
    await calls.aclose()


async def test_the_dispatcher_wide_limit_still_bounds_a_lane() -> None:
    calls = Calls(10, max_in_flight=3)
    await calls.start(*names("c", 6))
    assert len(calls.running) == 3
    await calls.end("c0", overloaded())
    assert calls.limit == 9
    assert len(calls.running) == 3  # the global limit, not the lane's, holds the rest
    await calls.aclose()


async def test_with_a_dispatcher_wide_limit_a_grown_limit_lets_a_call_in() -> None:
    calls = Calls(10, max_in_flight=20)
    await calls.start(*names("c", 10))
    for i in range(20):
        calls.call(f"q{i}")
    await settle()
    await calls.end("c0", overloaded())
    assert calls.lane.in_flight == 9
    calls.clock.advance(1)
    for _ in range(9):  # busy successes: each one's slot goes to a waiting call
        await calls.end(next(iter(calls.running)))
    assert calls.limit == 10
    assert calls.lane.in_flight == 10
    assert calls.dispatcher.in_flight == 10
    await calls.aclose()


async def test_the_stats_table_shows_the_limit_and_its_changes() -> None:
    calls = Calls(10)
    await calls.start(*names("c", 10))
    await calls.end("c0", overloaded())
    table = calls.dispatcher.stats_table()
    header, row = table.splitlines()
    columns = header.split()
    assert "limit" in columns
    assert "-/+" in columns
    assert "9/10" in row.split()
    assert "1/0" in row.split()
    await calls.aclose()


def test_the_client_option() -> None:
    assert asyncllm.OpenAI(api_key="k").limits.adaptive == AdaptiveConcurrency()
    off = asyncllm.OpenAI(api_key="k", adaptive_concurrency=False)
    assert off.limits.adaptive is None
    tuned = AdaptiveConcurrency(decrease_factor=0.5, min_interval=2.0, utilisation=0.5)
    client = asyncllm.OpenAI(api_key="k", adaptive_concurrency=tuned)
    assert client.limits.adaptive is tuned
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.OpenAI(api_key="k", adaptive_concurrency=0.9)  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decrease_factor": 1.0},
        {"decrease_factor": 0.0},
        {"decrease_factor": float("nan")},
        {"min_interval": -1.0},
        {"utilisation": 0.0},
        {"utilisation": 1.5},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        AdaptiveConcurrency(**kwargs)


async def _run_against_capacity(adaptive: bool, calls: int) -> tuple[int, int, int]:
    """``calls`` calls at concurrency 16 against a server that serves 4 at once and answers 503
    above that. Returns the requests the server shed, the lane's final limit, its decreases."""
    async with FakeServer("openai", capacity=Capacity(max_concurrent=4, busy_status=503)) as server:
        server.faults.latency = 0.005
        # A clock that runs 100 times faster than the wall's: the one-second interval between
        # decreases passes in 10 ms, the server's service time (backoff does not wait: 0 delay).
        dispatcher = Dispatcher(clock=lambda: time.monotonic() * 100, observer=None)
        client = asyncllm.OpenAI(
            api_key="k",
            base_url=server.url("/v1"),
            dispatcher=dispatcher,
            max_concurrent_requests=16,
            queue_size=1000,
            adaptive_concurrency=adaptive,
            retry=RetryConfig(max_retries=100, initial_delay=0.0, max_delay=0.0),
            breaker=BreakerConfig(failure_threshold=1000),
        )
        messages = [{"role": "user", "content": "hi"}]
        answers = await asyncio.gather(*(client.chat(messages, model="m") for _ in range(calls)))
        assert len(answers) == calls
        stats = dispatcher.stats()["openai"]
        await client.aclose()
        await dispatcher.aclose()
    assert stats.concurrency_limit is not None
    assert server.capacity is not None
    return server.capacity.busy, stats.concurrency_limit, stats.limit_decreases


async def test_the_limit_converges_near_a_servers_hidden_capacity() -> None:
    shed, limit, decreases = await _run_against_capacity(adaptive=True, calls=300)
    # AIMD around the capacity of 4: it dips below and probes above (and a slot is held a little
    # longer than the server's part of the call, the more so on a loaded machine).
    assert 3 <= limit <= 8
    assert decreases >= 5
    assert shed < 200  # about one refusal per probe above the capacity: 100 measured
    fixed_shed, fixed_limit, _ = await _run_against_capacity(adaptive=False, calls=100)
    assert fixed_limit == 16
    # At a fixed 16, more requests are shed than there are calls; adapting, few are.
    assert fixed_shed > 100
    assert shed / 300 * 4 < fixed_shed / 100
