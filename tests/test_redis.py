"""The Redis store's Lua scripts against a real redis-server (tests/redis_fixtures.py): tables of
their rules with the time passed explicitly, and hypothesis stateful tests that run random
sequences of script calls against a plain Python model of the same rules."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

import asyncllm
from asyncllm._engine._ratelimit import Cost, Lease, RateHeaders, Window
from asyncllm._engine._redis import (
    RedisBudgetStore,
    Scripts,
    budget_key,
    probe_allowance,
    slot_keys,
)
from asyncllm.testing import FakeClock
from tests.redis_fixtures import RedisServer

T = TypeVar("T")
KEY = budget_key("t", "m")
SLOTS = slot_keys("t", "m")
T0 = 1_800_000_000.0


@pytest.fixture
async def scripts(redis_url: str) -> AsyncIterator[Scripts]:
    client = Redis.from_url(redis_url)
    try:
        yield Scripts(client)
    finally:
        await client.aclose()


# -- the model -----------------------------------------------------------------------------------


@dataclass
class Bucket:
    cap: float
    rate: float
    level: float
    t: float
    ceil: float = math.inf

    def refill(self, now: float) -> None:
        if now > self.t:
            self.level = min(self.cap, self.level + (now - self.t) * self.rate)
        self.t = max(self.t, now)

    def wait_for(self, amount: float, now: float) -> float:
        self.refill(now)
        if amount <= self.level:
            return 0.0
        if amount > self.cap or self.rate <= 0:
            return math.inf
        return (amount - self.level) / self.rate


def amount(name: str, requests: int, tokens: int, output: int) -> int:
    """What a call takes from the budget ``name`` (as ``_ratelimit._amount``)."""
    if name == "tokens":
        return tokens
    if name == "input-tokens":
        return tokens - output
    if name == "output-tokens":
        return output
    return requests if name.startswith("requests") else 0


@dataclass
class Model:
    """The budget rules in plain Python, as the scripts should apply them."""

    buckets: dict[str, Bucket] = field(default_factory=dict)
    blocked: float = -math.inf
    # Requests let through while there was no request budget: the one a report creates starts
    # lower by them.
    unmetered: float = 0.0

    def _unmetered(self, n: float) -> None:
        if n and not any(name.startswith("requests") for name in self.buckets):
            self.unmetered += n

    def lease(
        self,
        requests: int,
        tokens: int,
        specs: list[tuple[str, float, float, float]],
        now: float,
        force: bool = False,
        output: int = 0,
    ) -> float:
        for name, cap, rate, seed in specs:
            if name not in self.buckets:
                self.buckets[name] = Bucket(cap, rate, min(cap, seed), now, cap)
        wait = max(0.0, self.blocked - now)
        for name, bucket in self.buckets.items():
            need = amount(name, requests, tokens, output)
            if need > 0:
                wait = max(wait, bucket.wait_for(need, now))
            else:
                bucket.refill(now)
        if force:
            wait = 0.0
        if wait <= 0:
            for name, bucket in self.buckets.items():
                bucket.level -= amount(name, requests, tokens, output)
            self._unmetered(requests)
        return wait

    def lease_batch(
        self,
        want: int,
        back: int,
        fleet: int,
        specs: list[tuple[str, float, float, float]],
        now: float,
    ) -> tuple[int, float, bool]:
        for name, cap, rate, seed in specs:
            if name not in self.buckets:
                self.buckets[name] = Bucket(cap, rate, min(cap, seed), now, cap)
        has_tokens = False
        for name, bucket in self.buckets.items():
            bucket.refill(now)
            if not name.startswith("requests"):
                has_tokens = True
            elif back > 0:
                bucket.level = min(bucket.cap, bucket.level + back)
        grant: float = want
        wait = max(0.0, self.blocked - now)
        if wait > 0 or has_tokens:
            grant = 0
        requests = [b for name, b in self.buckets.items() if name.startswith("requests")]
        for bucket in requests:
            level = bucket.level
            grant = min(grant, math.floor(level), max(1, math.floor(level / fleet)))
        if grant < 1:
            grant = 0
            if wait <= 0 and not has_tokens:
                for bucket in requests:
                    wait = max(wait, bucket.wait_for(1, now))
        else:
            for bucket in requests:
                bucket.level -= grant
        self._unmetered(grant - back)
        return int(grant), wait, has_tokens

    def settle(self, reserved: tuple[int, int], used: tuple[int, int], now: float) -> None:
        for name, bucket in self.buckets.items():
            if not name.startswith("requests"):
                bucket.refill(now)
                change = amount(name, 0, *reserved) - amount(name, 0, *used)
                bucket.level = min(bucket.cap, bucket.level + change)

    def report(self, windows: list[tuple[str, Window]], now: float) -> None:
        for kind, window in windows:
            period = 86400 if kind == "requests-per-day" else 60
            bucket = self.buckets.get(kind)
            fresh = False
            if bucket is None and window.limit is not None:
                limit = window.limit
                bucket = self.buckets[kind] = Bucket(limit, limit / period, limit, now)
                fresh = kind.startswith("requests")
            if bucket is None:
                continue
            bucket.refill(now)
            limit = window.limit
            if limit is not None and 0 < limit < bucket.ceil and limit != bucket.cap:
                bucket.cap = limit
                bucket.rate = limit / period
            if window.remaining is not None:
                left = min(bucket.cap, window.remaining)
                bucket.level = min(bucket.level, left)
                missing = bucket.cap - left
                if window.reset_in is not None and window.reset_in > 0 and missing > 0:
                    bucket.rate = max(bucket.cap / period, missing / window.reset_in)
            if fresh:
                bucket.level -= self.unmetered
        if any(name.startswith("requests") for name in self.buckets):
            self.unmetered = 0.0

    def block(self, seconds: float, now: float) -> float:
        self.blocked = max(self.blocked, now + seconds)
        return self.blocked - now


def close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# -- tables --------------------------------------------------------------------------------------


async def test_a_missing_budget_starts_at_its_seed_and_refills(scripts: Scripts) -> None:
    spec = [("requests", 60.0, 1.0, 2.0)]
    assert await scripts.lease(KEY, 1, 0, spec, now=T0) == 0
    assert await scripts.lease(KEY, 1, 0, spec, now=T0) == 0
    # The seed (2) is spent: the third waits one refill (1 a second), not a whole minute's burst.
    assert await scripts.lease(KEY, 1, 0, spec, now=T0) == pytest.approx(1.0)
    assert await scripts.lease(KEY, 1, 0, spec, now=T0 + 1) == 0
    blocked, buckets = await scripts.current(KEY, now=T0 + 1)
    assert blocked == 0
    assert buckets["requests"] == (60.0, pytest.approx(0.0), 1.0)


async def test_a_call_larger_than_the_budget_waits_forever(scripts: Scripts) -> None:
    assert await scripts.lease(KEY, 0, 500, [("tokens", 100.0, 10.0, 100.0)], now=T0) == math.inf


async def test_a_block_holds_every_lease_and_keeps_the_later_time(scripts: Scripts) -> None:
    assert await scripts.block(KEY, 5, now=T0) == 5
    assert await scripts.block(KEY, 1, now=T0 + 1) == 4  # the later time stays
    assert await scripts.lease(KEY, 1, 0, [], now=T0 + 2) == pytest.approx(3)
    assert await scripts.lease(KEY, 1, 0, [], now=T0 + 5) == 0


async def test_a_report_seeds_from_what_the_vendor_said(scripts: Scripts) -> None:
    # A per-day budget the vendor says is nearly spent is not refilled from zero.
    await scripts.report(KEY, [("requests", Window(14400, 3, 21600.0))], now=T0)
    spec = [("requests", 14400.0, 14400 / 86400, 14400.0)]  # configured: would be a burst
    for _ in range(3):
        assert await scripts.lease(KEY, 1, 0, spec, now=T0) == 0
    assert await scripts.lease(KEY, 1, 0, spec, now=T0) > 0


async def test_a_learned_budget_counts_the_requests_sent_before_it_was_learned(
    scripts: Scripts,
) -> None:
    """Before the vendor's first reply the member has no request budget, and the calls leased
    meanwhile go out unmetered. The reply's "remaining" does not count those sent after it: the
    budget it creates starts lower by every unmetered call (less those given back)."""
    assert (await scripts.lease_batch(KEY, 5, 0, 1, [], now=T0))[0] == 5
    assert await scripts.lease(KEY, 1, 0, [], now=T0) == 0.0
    await scripts.lease_batch(KEY, 0, 2, 1, [], now=T0)  # two of the batch come back
    await scripts.report(KEY, [("requests", Window(100, 99, 0.6))], now=T0)
    assert (await scripts.current(KEY, now=T0))[1]["requests"][1] == 95
    # Counted once: the next reply finds the budget there.
    await scripts.report(KEY, [("requests", Window(100, 99, 0.6))], now=T0)
    assert (await scripts.current(KEY, now=T0))[1]["requests"][1] == 95
    # Calls leased once the budget exists are spent from it, not counted again.
    assert (await scripts.lease_batch(KEY, 5, 0, 1, [], now=T0))[0] == 5
    await scripts.report(KEY, [("requests", Window(100, 99, 0.6))], now=T0)
    assert (await scripts.current(KEY, now=T0))[1]["requests"][1] == 90


async def test_settle_gives_back_or_takes_tokens(scripts: Scripts) -> None:
    spec = [("tokens", 1000.0, 0.0, 1000.0)]
    assert await scripts.lease(KEY, 1, 600, spec, now=T0) == 0
    await scripts.settle(KEY, (600, 0), (100, 0), now=T0)  # used 100 of 600
    assert (await scripts.current(KEY, now=T0))[1]["tokens"][1] == 900
    await scripts.settle(KEY, (0, 0), (1000, 0), now=T0)  # 1000 more than reserved: a debt
    assert (await scripts.current(KEY, now=T0))[1]["tokens"][1] == -100


async def test_redis_time_is_used_when_no_time_is_passed(scripts: Scripts) -> None:
    assert await scripts.block(KEY, 30) == pytest.approx(30, abs=0.5)
    blocked, _ = await scripts.current(KEY)
    assert 28 < blocked <= 30


async def test_slots_are_shared_and_a_dead_process_gives_them_back(scripts: Scripts) -> None:
    a = [(await scripts.acquire(SLOTS, "a", 3, 10, held, now=T0))[:2] for held in range(2)]
    assert a == [(True, False), (True, False)]
    assert await scripts.acquire(SLOTS, "b", 3, 10, 0, now=T0) == (True, False, 0.0, 0)
    assert await scripts.acquire(SLOTS, "b", 3, 10, 1, now=T0 + 1) == (False, False, 0.0, 0)
    # "a" stops renewing; after its lease (10 s) its two slots are the fleet's again.
    assert await scripts.acquire(SLOTS, "b", 3, 10, 1, now=T0 + 9.9) == (False, False, 0.0, 0)
    assert await scripts.acquire(SLOTS, "b", 3, 10, 1, now=T0 + 10.5) == (True, False, 0.0, 0)
    assert await scripts.acquire(SLOTS, "b", 3, 10, 2, now=T0 + 10.5) == (True, False, 0.0, 0)
    assert await scripts.acquire(SLOTS, "b", 3, 10, 3, now=T0 + 10.5) == (False, False, 0.0, 0)
    # "a" was only paused: it comes back holding 2, which count again, and it takes no more.
    assert await scripts.acquire(SLOTS, "a", 3, 10, 2, now=T0 + 11) == (False, True, 0.0, 0)
    await scripts.release(SLOTS, "b", 3, now=T0 + 11)
    assert await scripts.acquire(SLOTS, "a", 3, 10, 2, now=T0 + 11) == (True, False, 0.0, 0)
    assert await scripts.acquire(SLOTS, "a", 3, 10, 3, now=T0 + 11) == (False, False, 0.0, 0)


async def test_scripts_survive_a_script_flush(scripts: Scripts, redis_server: RedisServer) -> None:
    assert await scripts.block(KEY, 5, now=T0) == 5
    await scripts.client.script_flush()
    assert await scripts.block(KEY, 1, now=T0) == 5


# -- stateful: random sequences against the model ------------------------------------------------

KINDS = ["requests", "tokens", "requests-per-day", "input-tokens", "output-tokens"]
times = st.floats(0, 120, allow_nan=False)


def bucket_specs(most: int) -> st.SearchStrategy[list[tuple[str, int, float, int]]]:
    """Up to ``most`` configured buckets of distinct kinds: (name, cap, rate, seed level)."""
    return st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.integers(1, 5000),
            st.floats(0, 100, allow_nan=False),
            st.integers(0, 5000),
        ),
        max_size=most,
        unique_by=lambda spec: spec[0],
    )


windows = st.builds(
    Window,
    st.one_of(st.none(), st.integers(0, 5000)),
    st.one_of(st.none(), st.integers(0, 5000)),
    st.one_of(st.none(), st.floats(0, 120, allow_nan=False)),
)


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(coro)


class BudgetMachine(RuleBasedStateMachine):
    """The budget scripts and the model, fed the same random calls at increasing times."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(self.url)
        self.scripts = Scripts(self.client)
        self.model = Model()
        self.now = T0

    @initialize()
    def empty(self) -> None:
        run(self.loop, self.client.delete(KEY))

    def teardown(self) -> None:
        run(self.loop, self.client.aclose())
        self.loop.close()

    @rule(
        step=times,
        requests=st.integers(0, 3),
        tokens=st.integers(0, 3000),
        specs=bucket_specs(3),
        force=st.booleans(),
        output=st.integers(0, 3000),
    )
    def lease(
        self,
        step: float,
        requests: int,
        tokens: int,
        specs: list[tuple[str, int, float, int]],
        force: bool,
        output: int,
    ) -> None:
        self.now += step
        output = min(output, tokens)
        floats = [(n, float(c), r, float(s)) for n, c, r, s in specs]
        got = run(
            self.loop,
            self.scripts.lease(
                KEY, requests, tokens, floats, now=self.now, force=force, output=output
            ),
        )
        expected = self.model.lease(requests, tokens, floats, self.now, force, output)
        assert close(got, expected), (got, expected)

    @rule(
        step=times,
        want=st.integers(0, 70),
        back=st.integers(0, 10),
        fleet=st.integers(1, 4),
        specs=bucket_specs(2),
    )
    def lease_batch(
        self,
        step: float,
        want: int,
        back: int,
        fleet: int,
        specs: list[tuple[str, int, float, int]],
    ) -> None:
        self.now += step
        floats = [(n, float(c), r, float(s)) for n, c, r, s in specs]
        got = run(
            self.loop,
            self.scripts.lease_batch(KEY, want, back, fleet, floats, now=self.now),
        )
        expected = self.model.lease_batch(want, back, fleet, floats, self.now)
        assert got[0] == expected[0] and close(got[1], expected[1]), (got, expected)
        assert got[2] == expected[2]

    @rule(
        step=times,
        reserved=st.tuples(st.integers(0, 3000), st.integers(0, 3000)),
        used=st.tuples(st.integers(0, 3000), st.integers(0, 3000)),
    )
    def settle(self, step: float, reserved: tuple[int, int], used: tuple[int, int]) -> None:
        self.now += step
        reserved = (reserved[0], min(reserved))
        used = (used[0], min(used))
        run(self.loop, self.scripts.settle(KEY, reserved, used, now=self.now))
        self.model.settle(reserved, used, self.now)

    @rule(step=times, reported=st.lists(st.tuples(st.sampled_from(KINDS), windows), max_size=3))
    def report(self, step: float, reported: list[tuple[str, Window]]) -> None:
        self.now += step
        run(self.loop, self.scripts.report(KEY, reported, now=self.now))
        self.model.report(reported, self.now)

    @rule(step=times, seconds=st.floats(0, 300, allow_nan=False))
    def block(self, step: float, seconds: float) -> None:
        self.now += step
        got = run(self.loop, self.scripts.block(KEY, seconds, now=self.now))
        assert close(got, self.model.block(seconds, self.now))

    @invariant()
    def same_budgets(self) -> None:
        blocked, buckets = run(self.loop, self.scripts.current(KEY, now=self.now))
        assert close(blocked, max(0.0, self.model.blocked - self.now))
        assert set(buckets) == set(self.model.buckets)
        for name, (cap, level, rate) in buckets.items():
            bucket = self.model.buckets[name]
            bucket.refill(self.now)
            assert close(cap, bucket.cap)
            assert close(level, bucket.level), (name, level, bucket.level)
            assert close(rate, bucket.rate)


class SlotMachine(RuleBasedStateMachine):
    """The slot scripts against a model: processes take and give back slots, renew or stop
    renewing their leases; the fleet never holds more than the limit, counting only live
    processes, and a lapsed process's slots count again when it comes back."""

    url: str = ""
    LIMIT = 4
    TTL = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(self.url)
        self.scripts = Scripts(self.client)
        self.now = T0
        # The model: per process, slots held by its own count, and when its lease expires.
        self.held = dict.fromkeys("abc", 0)
        self.expires: dict[str, float] = {}

    @initialize()
    def empty(self) -> None:
        run(self.loop, self.client.delete(*SLOTS))

    def teardown(self) -> None:
        run(self.loop, self.client.aclose())
        self.loop.close()

    def _expire(self) -> None:
        for p, at in list(self.expires.items()):
            if at <= self.now:
                del self.expires[p]

    def _renew(self, p: str) -> bool:
        if p in self.expires:
            self.expires[p] = self.now + self.TTL
            return False
        # A process that holds nothing is counted in the fleet all the same.
        self.expires[p] = self.now + self.TTL
        return self.held[p] > 0

    def _counted(self) -> int:
        return sum(self.held[p] for p in self.expires)

    @rule(step=st.floats(0, 15, allow_nan=False), p=st.sampled_from("abc"))
    def acquire(self, step: float, p: str) -> None:
        self.now += step
        got = run(
            self.loop,
            self.scripts.acquire(SLOTS, p, self.LIMIT, self.TTL, self.held[p], now=self.now),
        )
        self._expire()
        lapsed = self._renew(p)
        taken = self._counted() < self.LIMIT
        if taken:
            self.held[p] += 1
            self.expires[p] = self.now + self.TTL
        assert got == (taken, lapsed, 0.0, 0)

    @rule(p=st.sampled_from("abc"))
    @precondition(lambda self: any(self.held.values()))
    def release(self, p: str) -> None:
        if self.held[p] == 0:
            return
        run(self.loop, self.scripts.release(SLOTS, p, 1, now=self.now))
        self.held[p] -= 1

    @rule(step=st.floats(0, 15, allow_nan=False), p=st.sampled_from("abc"), leave=st.booleans())
    def heartbeat(self, step: float, p: str, leave: bool) -> None:
        self.now += step
        held = -1 if leave and not self.held[p] else self.held[p]
        args = self.scripts.heartbeat_args(p, self.TTL, held, self.now)
        got = run(self.loop, self.scripts.heartbeat_script(keys=list(SLOTS), args=args))
        self._expire()
        lapsed = False
        if held < 0:
            self.expires.pop(p, None)
        else:
            lapsed = self._renew(p)
        assert bool(int(got[0])) == lapsed
        assert int(got[1]) == len(self.expires)

    @invariant()
    def never_over_the_limit_by_new_work(self) -> None:
        counted = run(self.loop, self.client.hgetall(SLOTS[0]))
        alive = run(self.loop, self.client.zrange(SLOTS[1], 0, -1))
        live = {p.decode() for p in alive}
        assert live == set(self.expires)
        assert {p.decode(): int(v) for p, v in counted.items()} == {
            p: self.held[p] for p in self.expires if self.held[p]
        }


@dataclass
class FleetLimit:
    """The fleet's adaptive concurrency limit as ``_ADAPT`` should keep it: AIMD's steps, at
    most one decrease per interval and one change of any kind before an increase."""

    limit: int | None = None
    down: float = -math.inf
    changed: float = -math.inf

    def adapt(self, step: int, ceiling: int, factor: float, interval: float, now: float) -> int:
        limit = min(ceiling, ceiling if self.limit is None else self.limit)
        new = limit
        if step < 0 and limit > 1 and now - self.down >= interval:
            new = max(1, min(limit - 1, math.floor(limit * factor)))
            self.down = now
        elif step > 0 and limit < ceiling and now - self.changed >= interval:
            new = limit + 1
        if new != limit:
            self.limit, self.changed = new, now
        return new


class LimitMachine(RuleBasedStateMachine):
    """The adaptive-limit script against ``FleetLimit``: processes with different ceilings step
    the fleet's limit at random times; the heartbeat reads the same limit back."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(self.url)
        self.scripts = Scripts(self.client)
        self.model = FleetLimit()
        self.now = T0

    @initialize()
    def empty(self) -> None:
        run(self.loop, self.client.delete(*SLOTS))

    def teardown(self) -> None:
        run(self.loop, self.client.aclose())
        self.loop.close()

    @rule(
        elapsed=st.floats(0, 3, allow_nan=False),
        step=st.sampled_from([-1, 1]),
        ceiling=st.sampled_from([3, 8, 16]),
        factor=st.sampled_from([0.5, 0.9]),
        interval=st.sampled_from([0.0, 1.0]),
    )
    def adapt(
        self, elapsed: float, step: int, ceiling: int, factor: float, interval: float
    ) -> None:
        self.now += elapsed
        got = run(self.loop, self.scripts.adapt(KEY, step, ceiling, factor, interval, now=self.now))
        assert got == self.model.adapt(step, ceiling, factor, interval, self.now)
        assert 1 <= got <= ceiling

    @invariant()
    def the_heartbeat_reads_the_fleets_limit(self) -> None:
        args = self.scripts.heartbeat_args("reader", 10.0, 0, self.now)
        got = run(self.loop, self.scripts.heartbeat_script(keys=list(SLOTS), args=args))
        expected = b"" if self.model.limit is None else str(self.model.limit).encode()
        assert got[2] == expected


stateful = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def test_budget_scripts_match_the_model(redis_url: str) -> None:
    BudgetMachine.url = redis_url
    run_machine(BudgetMachine)


def test_slot_scripts_match_the_model(redis_url: str) -> None:
    SlotMachine.url = redis_url
    run_machine(SlotMachine)


def test_the_limit_script_matches_the_model(redis_url: str) -> None:
    LimitMachine.url = redis_url
    run_machine(LimitMachine)


def run_machine(machine: type[RuleBasedStateMachine]) -> None:
    run_state_machine_as_test(machine, settings=stateful)


# -- the store behind a dispatcher ---------------------------------------------------------------


async def test_a_missing_budget_is_seeded_from_the_last_report(redis_url: str) -> None:
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="s")
    try:
        store.configure("m", 0.0, requests_per_minute=60)
        # Nothing reported: a probe allowance (one second's refill, 1), not the whole 60. (Redis's
        # clock runs meanwhile: the next one comes a second later.)
        assert probe_allowance(600, 10) == 10
        assert probe_allowance(60, 1) == 1
        leases = [await store.lease("m", Cost(1, 0), 0.0) for _ in range(2)]
        assert isinstance(leases[0], Lease)
        assert isinstance(leases[1], float) and 0 < leases[1] <= 1
        # The vendor says 5 are left; Redis then loses everything; the seed is what was said.
        await store.report("m", RateHeaders({"requests": Window(60, 5, 55.0)}), 0.0)
        await store.client.flushall()
        leases = [await store.lease("m", Cost(1, 0), 0.0) for _ in range(6)]
        assert [isinstance(got, Lease) for got in leases] == [True] * 5 + [False]
        seen = await store.current("m", 0.0)
        assert seen["requests"].limit == 60
    finally:
        await store.aclose()


async def test_a_block_travels_between_dispatchers(redis_url: str) -> None:
    """A 429 with Retry-After seen by one process blocks the lane of every process."""
    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    two = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    try:
        lane_one = one.lane("vendor")
        lane_two = two.lane("vendor")
        await one.budgets.block("vendor", one.clock() + 30)
        assert lane_two.gate is not None
        refusal = await lane_two.gate.admit("r1", 0, two.clock() + 1)
        assert isinstance(refusal, asyncllm.RateLimitError)
        assert refusal.retry_after is not None and 28 < refusal.retry_after <= 30
        assert lane_one.shared is not None and lane_two.shared is not None
        assert "redis://" not in repr(one.budgets)
        assert one.stats()["vendor"].info["redis"]["state"] == "shared"
    finally:
        await one.aclose()
        await two.aclose()


async def test_degraded_mode_keeps_a_share_and_recovers(redis_server: RedisServer) -> None:
    """Redis goes away: no call fails and none bursts; this process keeps its share of the last
    known limits (half: two processes held leases), and shares again once Redis is back, its
    budgets reseeded rather than refilled whole."""
    own = RedisServer(redis_server.executable)
    clock = [100.0]
    store = RedisBudgetStore(own.url, clock=lambda: clock[0], prefix="d", timeout=0.5)
    try:
        store.configure("m", clock[0], requests_per_minute=600)
        slots = store.slots("m", 8)
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), Lease)
        assert await slots._take("r")
        await store.scripts.acquire(slots.keys, "another process", 8, 10, 0)
        await store.beat()
        assert store.fleet == 2
        assert slots.stats()["state"] == "shared"

        own.stop()
        # The probe allowance (10) halved: 5 calls now, then a wait; never an error.
        got = [await store.lease("m", Cost(1, 0), clock[0]) for _ in range(6)]
        assert [isinstance(g, Lease) for g in got] == [True] * 5 + [False]
        assert slots.stats()["state"] == "degraded"
        assert store.degradations == 1
        # What a reply says meanwhile is the fleet's: this process learns its half of it, and
        # does not take the whole limit for its own.
        await store.report("m", RateHeaders({"tokens": Window(60000, 59000, 1.0)}), clock[0])
        assert (await store.current("m", clock[0]))["tokens"].limit == 30000
        # Half of 8 slots, one of them held since before: three more, then none.
        assert [await slots._take("r") for _ in range(4)] == [True, True, True, False]
        slots.release()
        assert slots.local == 2
        spent_while_down = 5

        own = RedisServer(redis_server.executable, own.port)  # back, and empty
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), float)  # not retried yet
        clock[0] += 1.5
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), Lease)
        assert store.degraded_since is None
        await asyncio.sleep(0)
        assert store._repaying is not None
        await store._repaying
        seen = await store.current("m", clock[0])
        # Reseeded at the probe allowance (10), not 600; less this call, and less what was spent
        # while Redis was away (settled into the shared budget on its return).
        # (Redis's clock refills it by 10 a second meanwhile: the bound leaves room for that.)
        left = seen["requests"].remaining
        assert left is not None
        assert 10 - 1 - spent_while_down <= left < 10 - 1
        # The slot held since before Redis went away is counted again.
        assert await slots._take("r")
        assert slots.lapses == 1
        assert int(await store.client.hget(slots.keys[0], store.process)) == 2
    finally:
        await store.aclose()
        own.stop()


async def test_a_paused_redis_degrades_instead_of_hanging(redis_url: str) -> None:
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="p", timeout=0.3)
    admin = Redis.from_url(redis_url)
    try:
        store.configure("m", 0.0, requests_per_minute=60)
        assert isinstance(await store.lease("m", Cost(1, 0), 0.0), Lease)
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        # The store's call times out (0.3 s) and is served by the fallback instead.
        assert isinstance(await store.lease("m", Cost(1, 0), 0.0), Lease | float)
        assert store.degraded_since is not None
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await store.aclose()


async def test_every_script_runs_on_a_redis_cluster(redis_cluster: Any) -> None:
    """Members on different nodes, every script and the heartbeat: no cross-slot error, since
    each script touches one member's keys (one hash tag)."""
    store = RedisBudgetStore(redis_cluster.url, prefix="c")
    try:
        assert store.cluster
        members = [f"member-{i}" for i in range(12)]
        nodes = {store.client.keyslot(budget_key("c", m)) // 5462 for m in members}
        assert len(nodes) > 1  # the members' keys are spread over the primaries
        for member in members:
            store.configure(member, 0.0, requests_per_minute=600)
            assert isinstance(await store.lease(member, Cost(1, 0), 0.0), Lease)
            await store.report(member, RateHeaders({"tokens": Window(1000, 900, 6.0)}), 0.0)
            await store.settle(Lease(member, 1, 10), 5, 0.0)
            assert await store.block(member, store.clock() + 5) > store.clock()
            assert "blocked" in await store.current(member, 0.0)
            await store.slots(member, 4).acquire("r", None)
        await store.beat()
        assert store.fleet == 1
        assert store.degradations == 0  # no script failed (a failure would degrade, not raise)
        for member in members:
            store.slots(member, 4).release()
    finally:
        await store.aclose()


async def test_the_fleets_breaker_opens_with_any_process(scripts: Scripts) -> None:
    assert await scripts.trip(KEY, 30, now=T0) == 30
    assert await scripts.trip(KEY, 5, now=T0 + 10) == 20  # the later time stays
    # No slot while it is open, and how long it stays open.
    assert await scripts.acquire(SLOTS, "a", 3, 10, 0, now=T0 + 10) == (False, False, 20.0, 0)
    # Then one probe for the fleet: "a" has it (its retries too); "b" waits for its verdict.
    assert await scripts.acquire(SLOTS, "a", 3, 10, 0, now=T0 + 30) == (True, False, 0.0, 1)
    assert await scripts.acquire(SLOTS, "a", 3, 10, 1, now=T0 + 31) == (True, False, 0.0, 1)
    # (each attempt of the probe renews its claim, for the lease's ten seconds)
    assert await scripts.acquire(SLOTS, "b", 3, 10, 0, now=T0 + 31) == (False, False, 10.0, 2)
    await scripts.close(KEY)
    assert await scripts.acquire(SLOTS, "b", 3, 10, 0, now=T0 + 31) == (True, False, 0.0, 0)
    # A probe that fails opens the fleet's breaker again; one whose process died expires.
    assert await scripts.trip(KEY, 30, now=T0 + 40) == 30
    assert await scripts.acquire(SLOTS, "b", 3, 10, 0, now=T0 + 70) == (True, False, 0.0, 1)
    assert await scripts.acquire(SLOTS, "a", 3, 10, 0, now=T0 + 75) == (False, False, 5.0, 2)
    assert await scripts.acquire(SLOTS, "a", 3, 10, 0, now=T0 + 80) == (True, False, 0.0, 1)


async def test_a_breaker_opened_in_one_process_refuses_calls_in_another(redis_url: str) -> None:
    breaker = asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=30)
    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    two = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    try:
        lane_one = one.lane("vendor", breaker=breaker)
        lane_two = two.lane("vendor", breaker=breaker)

        async def down(attempt: Any) -> int:
            raise asyncllm.APIConnectionError("connection refused", backend="vendor")

        with pytest.raises(asyncllm.APIConnectionError):
            await one.run(lane_one, "chat", down, max_retries=0)
        assert lane_one.shared is not None and lane_one.shared._tripping is not None
        await lane_one.shared._tripping
        sent: list[Any] = []

        async def up(attempt: Any) -> int:
            sent.append(attempt)
            return 1

        with pytest.raises(asyncllm.CircuitOpenError, match="another process") as refused:
            await two.run(lane_two, "chat", up)
        assert sent == []
        assert 28 < refused.value.retry_in <= 30
        assert lane_two.breaker.state.value == "open"
        # Its later calls fail fast here, without asking Redis.
        with pytest.raises(asyncllm.CircuitOpenError):
            await two.run(lane_two, "chat", up)
        assert sent == []
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_worker_whose_clock_is_minutes_off_sees_the_same_block(redis_url: str) -> None:
    """Times in Redis are Redis's: a process whose clock is ten minutes ahead blocks the others
    for the seconds it asked, not ten minutes more or less."""
    ahead = RedisBudgetStore(redis_url, clock=lambda: time.monotonic() + 600, prefix="k")
    right = RedisBudgetStore(redis_url, clock=time.monotonic, prefix="k")
    try:
        until = await ahead.block("m", ahead.clock() + 30)
        assert 29 < until - ahead.clock() <= 30
        wait = await right.lease("m", Cost(1, 0), right.clock())
        assert isinstance(wait, float) and 29 < wait <= 30
        seen = await right.current("m", right.clock())
        assert 29 < (seen["blocked"].reset_in or 0) <= 30
    finally:
        await ahead.aclose()
        await right.aclose()


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@cache:6379", "redis://user:hunter2@cache:port", "cache:6379"]
)
def test_a_bad_redis_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match="redis_url") as refused:
        asyncllm.Dispatcher(redis_url=url, observer=None)
    assert "hunter2" not in str(refused.value)
    assert refused.value.__cause__ is None


def test_redis_lease_must_be_positive() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.Dispatcher(redis_url="redis://127.0.0.1:1/0", redis_lease=0, observer=None)


async def test_budgets_are_leased_in_batches_without_a_round_trip_per_call(redis_url: str) -> None:
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="b")
    trips = []
    lease_batch = store.scripts.lease_batch

    async def counted(*args: Any, **kwargs: Any) -> tuple[int, float, bool]:
        got = await lease_batch(*args, **kwargs)
        trips.append(got[0])
        return got

    store.scripts.lease_batch = counted  # type: ignore[method-assign]
    try:
        await store.report("m", RateHeaders({"requests": Window(1000, 1000, None)}), 0.0)
        leases = [await store.lease("m", Cost(1, 0), clock[0]) for _ in range(200)]
        assert all(isinstance(got, Lease) for got in leases)
        # Batches of 1, 2, 4 ... 64 calls: 9 round trips for 200 calls, not 200.
        assert trips == [1, 2, 4, 8, 16, 32, 64, 64, 64]
        left = (await store.current("m", clock[0]))["requests"].remaining
        assert left is not None and 1000 - sum(trips) <= left < 1000 - sum(trips) + 20
        # A batch not spent in time is given back with the next one, which is smaller.
        clock[0] += 1
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), Lease)
        # (55 of the last 64 were not spent: the next batch is the 9 that were.)
        assert trips[-1] == 9
        left = (await store.current("m", clock[0]))["requests"].remaining
        assert left is not None and 1000 - 255 + 55 - 9 <= left < 1000 - 255 + 55 - 9 + 20
        # A block (this process's own 429) stops the spending of the batch in hand at once.
        await store.block("m", store.clock() + 30)
        wait = await store.lease("m", Cost(1, 0), clock[0])
        assert isinstance(wait, float) and 29 < wait <= 30
    finally:
        await store.aclose()


async def test_one_process_probes_for_the_fleet(redis_url: str) -> None:
    """After the fleet's open time, the first process to call probes; the others are refused
    until its verdict, and its success closes the breaker for all."""
    breaker = asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=0.05)
    clocks = [FakeClock(), FakeClock()]
    one, two = (
        asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
        for clock in clocks
    )
    try:
        lane_one = one.lane("vendor", breaker=breaker)
        lane_two = two.lane("vendor", breaker=breaker)

        async def down(attempt: Any) -> int:
            raise asyncllm.APIConnectionError("connection refused", backend="vendor")

        with pytest.raises(asyncllm.APIConnectionError):
            await one.run(lane_one, "chat", down, max_retries=0)
        assert lane_one.shared is not None and lane_one.shared._tripping is not None
        await lane_one.shared._tripping
        await asyncio.sleep(0.1)  # the fleet's open time, on Redis's clock
        clocks[0].advance(0.1)  # and on process one's
        answer = asyncio.Event()

        async def slow(attempt: Any) -> int:
            await answer.wait()
            return 1

        async def up(attempt: Any) -> int:
            return 1

        probe = asyncio.create_task(two.run(lane_two, "chat", slow))
        while not (lane_two.shared is not None and lane_two.shared._probing):
            await asyncio.sleep(0)
        with pytest.raises(asyncllm.CircuitOpenError):
            await one.run(lane_one, "chat", up)
        answer.set()
        assert await probe == 1
        assert lane_two.shared._tripping is not None
        await lane_two.shared._tripping
        clocks[0].advance(1.5)  # past the recheck time of the refused process
        assert await one.run(lane_one, "chat", up) == 1
    finally:
        await one.aclose()
        await two.aclose()


async def test_token_budgets_are_reserved_and_settled_in_redis(redis_url: str) -> None:
    """Token budgets (total, input, output) by main's per-kind costs: reserved whole, settled
    with the usage; such a member's calls are leased one by one, not in batches."""
    store = RedisBudgetStore(redis_url, prefix="t")
    try:
        store.configure(
            "m",
            0.0,
            requests_per_minute=600,
            tokens_per_minute=60_000,
            output_tokens_per_minute=6_000,
            sub_window=1.0,
        )
        # The probe allowance: one second's refill of each (1000 tokens, 100 output).
        lease = await store.lease("m", Cost(1, 600, 100), 0.0)
        assert isinstance(lease, Lease) and (lease.tokens, lease.output_tokens) == (600, 100)
        seen = await store.current("m", 0.0)
        assert {"tokens", "output-tokens", "requests-burst"} <= set(seen)
        assert 400 <= (seen["tokens"].remaining or 0) < 420
        assert 0 <= (seen["output-tokens"].remaining or 0) < 10
        await store.settle_usage(lease, 150, 50, 0.0)  # used 200 of 600, 50 of 100 output
        seen = await store.current("m", 0.0)
        assert 800 <= (seen["tokens"].remaining or 0) < 830
        assert 50 <= (seen["output-tokens"].remaining or 0) < 60
        assert store._allowances["m"].has_tokens
        # More output than the budget holds at all: refused at once, not sent.
        assert await store.lease("m", Cost(1, 7_000, 7_000), 0.0) == math.inf
    finally:
        await store.aclose()
