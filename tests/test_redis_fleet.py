"""What travels between the processes of a fleet through Redis besides budgets and slots: the
adaptive concurrency limit (one for the fleet, changed by one Lua script at most once per window)
and the announcements that carry it and a 429's block to every process at once (pub/sub), with
the heartbeat as the path that still carries the limit when an announcement is lost. Against the
real redis-server of tests/redis_fixtures.py; the dispatchers run on fake clocks where the rule
under test is timed, so that nothing here waits for a batch to age."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

import asyncllm
from asyncllm._engine._ratelimit import Cost, Lease, RateHeaders, Window
from asyncllm._engine._redis import RedisBudgetStore
from asyncllm._engine._redis_scripts import Scripts, budget_key
from asyncllm.testing import FakeClock

KEY = budget_key("t", "m")
T0 = 1_800_000_000.0
# A window far longer than a test: the fleet's is on Redis's clock, which no fake clock moves.
ADAPTIVE = asyncllm.AdaptiveConcurrency(decrease_factor=0.5, min_interval=600.0)
LIMITS = asyncllm.LimitsConfig(max_concurrent_requests=16, adaptive=ADAPTIVE)


@pytest.fixture
async def scripts(redis_url: str) -> AsyncIterator[Scripts]:
    client = Redis.from_url(redis_url)
    try:
        yield Scripts(client)
    finally:
        await client.aclose()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for something another connection delivers (a message, a reply): a bound on a
    hang, not a measurement (the test asserts what arrived, never how soon)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


# -- the script ----------------------------------------------------------------------------------


async def test_the_fleet_shrinks_its_limit_once_per_window(scripts: Scripts) -> None:
    # No limit yet: the ceiling. A decrease halves it (at least one less, never below 1).
    assert await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0) == 8
    # Another process, seeing the same overload within the window, changes nothing.
    assert await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0 + 0.5) == 8
    # Nor does an increase within the interval of the last change.
    assert await scripts.adapt(KEY, 1, 16, 0.5, 1.0, now=T0 + 0.9) == 8
    assert await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0 + 1.0) == 4
    assert await scripts.adapt(KEY, 1, 16, 0.5, 1.0, now=T0 + 2.0) == 5
    assert await scripts.adapt(KEY, 1, 16, 0.5, 1.0, now=T0 + 2.5) == 5
    # A decrease is not held back by a recent increase, only by a recent decrease.
    assert await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0 + 2.5) == 2
    for at in (4, 5, 6):
        await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0 + at)
    assert await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0 + 7) == 1
    # A process configured lower than the fleet's limit reads its own ceiling.
    for at in range(8, 20):
        await scripts.adapt(KEY, 1, 16, 0.5, 1.0, now=T0 + at)
    assert await scripts.adapt(KEY, 1, 16, 0.5, 1.0, now=T0 + 20) == 14
    assert await scripts.adapt(KEY, 1, 6, 0.5, 1.0, now=T0 + 22) == 6


async def test_changes_and_longer_blocks_are_announced(scripts: Scripts) -> None:
    listener = scripts.client.pubsub()
    await listener.subscribe("t:signals")
    heard: list[str] = []

    async def hear(count: int) -> None:
        while len(heard) < count:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                heard.append(message["data"].decode())

    try:
        signals = {"channel": "t:signals", "sender": "p1"}
        await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0, **signals)
        await scripts.adapt(KEY, -1, 16, 0.5, 1.0, now=T0 + 0.1, **signals)  # no change: silent
        await scripts.block(KEY, 30, now=T0, **signals)
        await scripts.block(KEY, 10, now=T0 + 1, **signals)  # ends sooner: silent
        await scripts.block(KEY, 40, now=T0 + 1, **signals)
        await scripts.block(KEY, 90, now=T0 + 1)  # no channel: silent
        await scripts.adapt(KEY, 1, 16, 0.5, 1.0, now=T0 + 2, **signals)
        await asyncio.wait_for(hear(4), 10)
        assert heard == [
            f"limit p1 8 {KEY}",
            f"block p1 30 {KEY}",
            f"block p1 40 {KEY}",
            f"limit p1 9 {KEY}",
        ]
    finally:
        await listener.aclose()


# -- between dispatchers -------------------------------------------------------------------------


def overloaded(status: int = 503) -> Callable[[Any], Awaitable[int]]:
    async def attempt(_: Any) -> int:
        raise asyncllm.APIStatusError(
            "overloaded", status_code=status, backend="vendor", request_id="r"
        )

    return attempt


async def test_one_processs_decrease_reaches_the_other_without_a_call(redis_url: str) -> None:
    """A 503 in one process halves the fleet's limit; the other process's lane takes it from
    the announcement, with no call of its own, and asks for the fleet's slots under it."""
    clocks = [FakeClock(), FakeClock()]
    one, two = (
        asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
        for clock in clocks
    )
    try:
        lane_one, lane_two = one.lane("vendor", limits=LIMITS), two.lane("vendor", limits=LIMITS)
        assert lane_one.shared is not None and lane_two.shared is not None
        store_two = two.budgets
        assert isinstance(store_two, RedisBudgetStore)

        async def fine(_: Any) -> int:
            return 1

        assert await two.run(lane_two, "chat", fine) == 1  # starts its listener
        await asyncio.wait_for(store_two.listening.wait(), 10)
        with pytest.raises(asyncllm.APIStatusError):
            await one.run(lane_one, "chat", overloaded(), max_retries=0)
        assert lane_one.limit == 8
        await until(lambda: lane_two.limit == 8, "the other process adopts the fleet's limit")
        assert lane_two.shared.limit == 8
        assert lane_two.stats().concurrency_limit == 8
        assert lane_two.stats().info["redis"]["limit"] == 8
        # The other process's own overload within the fleet's window does not halve it again.
        with pytest.raises(asyncllm.APIStatusError):
            await two.run(lane_two, "chat", overloaded(529), max_retries=0)
        assert lane_two.limit == 8
        # (its adopted decrease opened its own window: no local decrease either)
        assert lane_two.adaptive is not None and lane_two.adaptive.decreases == 0
        # (The fleet's window is on Redis's clock, which the fake clocks do not move: the
        # script's table test above steps it.)
    finally:
        await one.aclose()
        await two.aclose()


async def test_simultaneous_overload_in_every_process_shrinks_the_fleet_once(
    redis_url: str,
) -> None:
    """Four processes see a 503 at the same time (each its own first decrease, so each local
    window is open): the fleet's limit halves once, and each lane ends at the fleet's."""
    clocks = [FakeClock() for _ in range(4)]
    dispatchers = [
        asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
        for clock in clocks
    ]
    try:
        lanes = [d.lane("vendor", limits=LIMITS) for d in dispatchers]
        calls = [
            d.run(lane, "chat", overloaded(), max_retries=0)
            for d, lane in zip(dispatchers, lanes, strict=True)
        ]
        failed = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(e, asyncllm.APIStatusError) for e in failed)
        await until(lambda: all(lane.limit == 8 for lane in lanes), "every lane at the fleet's")
        for lane in lanes:
            assert lane.shared is not None
            await asyncio.gather(*lane.shared._tasks)
        assert [lane.limit for lane in lanes] == [8] * 4
        store = dispatchers[0].budgets
        assert isinstance(store, RedisBudgetStore)
        assert int(await store.client.hget(budget_key("asyncllm", "vendor"), "limit")) == 8
    finally:
        for d in dispatchers:
            await d.aclose()


async def test_the_heartbeat_carries_the_limit_when_an_announcement_is_lost(
    redis_url: str,
) -> None:
    """A process that was not listening (reconnecting) when the limit changed takes it at its
    next heartbeat; one that starts later takes it when it starts listening."""
    clock = FakeClock()
    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
    try:
        lane = one.lane("vendor", limits=LIMITS)
        store = one.budgets
        assert isinstance(store, RedisBudgetStore)
        await store.scripts.adapt(budget_key("asyncllm", "vendor"), -1, 16, 0.5, 1.0)
        assert lane.limit == 16  # nobody listened
        await store.beat()
        assert lane.limit == 8
        assert lane.shared is not None and lane.shared.limit == 8

        async def fine(_: Any) -> int:
            return 1

        late = asyncllm.Dispatcher(
            redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep
        )
        try:
            late_lane = late.lane("vendor", limits=LIMITS)
            assert late_lane.limit == 16
            await late.run(late_lane, "chat", fine)
            await until(lambda: late_lane.limit == 8, "the limit read when it starts listening")
        finally:
            await late.aclose()
    finally:
        await one.aclose()


async def test_a_grown_fleet_limit_starts_the_calls_it_lets_in(redis_url: str) -> None:
    """Calls waiting in a lane whose limit was shrunk start when the fleet's limit grows."""
    clock = FakeClock()
    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
    try:
        limits = asyncllm.LimitsConfig(max_concurrent_requests=2, adaptive=ADAPTIVE)
        lane = one.lane("vendor", limits=limits)
        assert lane.shared is not None
        lane.shared.adopt(1)
        assert lane.limit == 1
        gate = asyncio.Event()
        started: list[int] = []

        async def held(attempt: Any) -> int:
            started.append(1)
            await gate.wait()
            return 1

        calls = [asyncio.create_task(one.run(lane, "chat", held)) for _ in range(2)]
        await until(lambda: len(started) == 1 and lane.queued == 1, "one in flight, one queued")
        # Within the window of the decrease it adopted, a higher fleet limit waits (this lane's
        # own refusals may still be saying where the server's cap is) ...
        lane.shared.adopt(2)
        assert lane.limit == 1 and lane.queued == 1
        # ... and is taken once the window is over.
        clock.advance(ADAPTIVE.min_interval)
        lane.shared.adopt(2)
        await until(lambda: len(started) == 2, "the queued call starts")
        gate.set()
        assert await asyncio.gather(*calls) == [1, 1]
        # Never above the configured maximum, whatever the fleet says.
        lane.shared.adopt(50)
        assert lane.limit == 2 and lane.shared.limit == 2
    finally:
        await one.aclose()


async def test_a_lane_that_does_not_adapt_still_asks_under_the_fleets_limit(
    redis_url: str,
) -> None:
    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    try:
        limits = asyncllm.LimitsConfig(max_concurrent_requests=16, adaptive=None)
        lane = one.lane("vendor", limits=limits)
        assert lane.shared is not None
        lane.shared.adopt(4)
        assert lane.shared.limit == 4
        assert lane.limit == 16  # its own limit does not adapt
    finally:
        await one.aclose()


async def test_a_block_reaches_a_process_spending_its_batch_by_announcement(
    redis_url: str,
) -> None:
    """The other process's batch would be spent for ``_BATCH_FRESH`` on its own clock, which
    does not move here: only the announcement can stop it. It stops at once, and its calls wait
    the block out without a round trip each."""
    clocks = [FakeClock(), FakeClock()]
    one, two = (
        asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
        for clock in clocks
    )
    try:
        lane_one, lane_two = one.lane("vendor"), two.lane("vendor")
        store_two = two.budgets
        assert isinstance(store_two, RedisBudgetStore)
        now = clocks[1]()
        await store_two.report("vendor", RateHeaders({"requests": Window(1000, 1000, None)}), now)
        leases = [await store_two.lease("vendor", Cost(1, 0), now) for _ in range(8)]
        assert all(isinstance(got, Lease) for got in leases)
        assert store_two._allowances["vendor"].calls > 0  # a batch in hand
        assert lane_two.shared is not None
        store_two._start_heartbeat()  # what its first call does: it listens
        await asyncio.wait_for(store_two.listening.wait(), 10)
        trips: list[float] = []
        lease_batch = store_two.scripts.lease_batch

        async def counted(*args: Any, **kwargs: Any) -> tuple[int, float, bool]:
            got = await lease_batch(*args, **kwargs)
            trips.append(got[1])
            return got

        store_two.scripts.lease_batch = counted  # type: ignore[method-assign]
        error = asyncllm.RateLimitError(
            "slow down", status_code=429, backend="vendor", retry_after=30.0
        )

        async def limited(_: Any) -> int:
            raise error

        with pytest.raises(asyncllm.RateLimitError):
            await one.run(lane_one, "chat", limited, max_retries=0)
        await until(lambda: store_two.signals == 1, "the announcement of the block")
        assert "vendor" not in store_two._allowances
        assert lane_two.gate is not None and lane_two.gate.blocked_until > clocks[1]() + 29
        for _ in range(3):
            wait = await store_two.lease("vendor", Cost(1, 0), clocks[1]())
            assert isinstance(wait, float) and 29 < wait <= 30
        assert trips == []
        # Once the block is over (on this process's clock), the calls ask Redis again.
        clocks[1].advance(31)
        await store_two.lease("vendor", Cost(1, 0), clocks[1]())
        assert len(trips) == 1
        # The announcing process does not act on its own announcement.
        store_one = one.budgets
        assert isinstance(store_one, RedisBudgetStore) and store_one.signals == 0
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_call_waiting_for_a_slot_is_not_sent_into_an_announced_block(
    redis_url: str,
) -> None:
    """Process two has a call in flight and one waiting for its slot (it passed the gate before
    any block) when process one gets a 429: the waiting call is not sent into the block (it goes
    back to the gate, which refuses it here: the block outlasts its deadline)."""
    clocks = [FakeClock(), FakeClock()]
    one, two = (
        asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
        for clock in clocks
    )
    try:
        lane_one = one.lane("vendor", limits=asyncllm.LimitsConfig(max_concurrent_requests=2))
        lane_two = two.lane("vendor", limits=asyncllm.LimitsConfig(max_concurrent_requests=1))
        store_two = two.budgets
        assert isinstance(store_two, RedisBudgetStore)
        answer = asyncio.Event()
        sent: list[str] = []

        async def held(_: Any) -> str:
            sent.append("held")
            await answer.wait()
            return "held"

        async def waiting(_: Any) -> str:
            sent.append("waiting")
            return "waiting"

        first = asyncio.create_task(two.run(lane_two, "chat", held))
        await until(lambda: sent == ["held"], "the first call is sent")
        await asyncio.wait_for(store_two.listening.wait(), 10)
        second = asyncio.create_task(two.run(lane_two, "chat", waiting, deadline=5))
        await until(lambda: lane_two.queued == 1, "the second call waits for the slot")

        async def limited(_: Any) -> int:
            raise asyncllm.RateLimitError(
                "slow down", status_code=429, backend="vendor", retry_after=30.0
            )

        with pytest.raises(asyncllm.RateLimitError):
            await one.run(lane_one, "chat", limited, max_retries=0)
        await until(lambda: store_two.signals == 1, "the announcement of the block")
        answer.set()
        assert await first == "held"
        with pytest.raises(asyncllm.RateLimitError, match="deadline"):
            await second
        assert sent == ["held"]
    finally:
        await one.aclose()
        await two.aclose()


async def test_announcements_of_other_lanes_or_malformed_ones_are_ignored(redis_url: str) -> None:
    store = RedisBudgetStore(redis_url, prefix="s")
    try:
        slots = store.slots("m", 8)
        store._signal(b"limit other 2 " + budget_key("s", "elsewhere").encode())
        store._signal(b"limit " + store.process.encode() + b" 2 " + budget_key("s", "m").encode())
        store._signal(b"nonsense")
        store._signal("limit other many " + budget_key("s", "m"))
        store._signal("block other nan " + budget_key("s", "m"))
        assert store.signals == 0 and slots.limit == 8
        store._signal("limit other 2 " + budget_key("s", "m"))
        assert store.signals == 1 and slots.limit == 2
    finally:
        await store.aclose()


# -- priority ------------------------------------------------------------------------------------


async def test_priority_holds_within_a_process_when_the_leased_budget_is_short(
    redis_url: str,
) -> None:
    """LOW calls arrive first and wait for a budget another process has spent; HIGH calls
    arrive after them. As the shared budget comes back (one call's worth at a time), this
    process sends every HIGH call before any LOW one: the calls waiting for a budget are
    ordered within the process (across processes there is no order: README)."""
    released = asyncio.Event()

    async def sleep(seconds: float) -> None:
        # Waits for a budget are held until every call is waiting; then the best waiting call
        # asks again every 10 ms (the block it was told to wait out is lifted, and Redis's
        # clock refills the budget).
        await released.wait()
        await asyncio.sleep(min(seconds, 0.01))

    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None, sleep=sleep)
    try:
        lane = one.lane(
            "vendor", rate_limits=asyncllm.RateLimits(requests_per_minute=1200, max_wait=60)
        )
        store = one.budgets
        assert isinstance(store, RedisBudgetStore) and lane.gate is not None
        # The vendor says nothing is left (another process spent it): 20 a second come back.
        await store.report("vendor", RateHeaders({"requests": Window(1200, 0, 60.0)}), 0.0)
        # Another process's block (unannounced), held until every call waits.
        await store.scripts.block(budget_key("asyncllm", "vendor"), 50)
        sent: list[str] = []

        def call(name: str) -> Callable[[Any], Awaitable[str]]:
            async def attempt(_: Any) -> str:
                sent.append(name)
                return name

            return attempt

        low = [
            asyncio.create_task(one.run(lane, "chat", call("low"), priority=asyncllm.Priority.LOW))
            for _ in range(5)
        ]
        await until(lambda: len(lane.gate._waiters) == 5, "the LOW calls wait")
        high = [
            asyncio.create_task(
                one.run(lane, "chat", call("high"), priority=asyncllm.Priority.HIGH)
            )
            for _ in range(5)
        ]
        await until(lambda: len(lane.gate._waiters) == 10, "every call waits")
        await store.client.hdel(budget_key("asyncllm", "vendor"), "blocked")
        released.set()
        await asyncio.wait_for(asyncio.gather(*low, *high), 30)
        assert sent == ["high"] * 5 + ["low"] * 5
    finally:
        await one.aclose()


async def test_a_block_this_process_knows_of_holds_while_redis_is_unreachable(
    redis_server: Any,
) -> None:
    """The budgets a degraded process keeps know nothing of blocks; the blocks it heard of (its
    own 429s, the announced ones) still hold its calls until they end."""
    from tests.redis_fixtures import RedisServer

    own = RedisServer(redis_server.executable)
    clock = [100.0]
    store = RedisBudgetStore(own.url, clock=lambda: clock[0], prefix="d", timeout=0.5)
    try:
        store.slots("m", 8)
        store._signal("block elsewhere 30 " + budget_key("d", "m"))
        own.stop()
        await store.current("m", clock[0])  # finds Redis gone: degraded
        assert store.degraded_since is not None
        clock[0] += 2  # past the retry interval: a lease would ask Redis, and the fallback
        wait = await store.lease("m", Cost(1, 0), clock[0])
        assert wait == 28.0
        clock[0] += 8
        assert await store.lease("m", Cost(1, 0), clock[0]) == 20.0
        clock[0] += 20
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), Lease)
        assert store.degradations == 1
    finally:
        own.stop()
        await store.aclose()


async def test_announcements_travel_on_a_redis_cluster(redis_cluster: Any) -> None:
    """On a cluster the scripts publish from the member's node; every listener hears it
    whichever node it subscribed on (classic pub/sub is broadcast to the whole cluster)."""
    # (The cluster is not emptied between tests: a prefix of this test's own.)
    one = RedisBudgetStore(redis_cluster.url, prefix="announce")
    two = RedisBudgetStore(redis_cluster.url, prefix="announce")
    try:
        members = [f"member-{i}" for i in range(6)]
        for member in members:
            two.slots(member, 8)
        two._start_heartbeat()
        await asyncio.wait_for(two.listening.wait(), 10)
        for member in members:
            await one.block(member, one.clock() + 30)
        await until(lambda: two.signals == len(members), "every member's announcement")
        for member in members:
            wait = await two.lease(member, Cost(1, 0), two.clock())
            assert isinstance(wait, float) and 29 < wait <= 30
        assert one.degradations == two.degradations == 0
    finally:
        await one.aclose()
        await two.aclose()
