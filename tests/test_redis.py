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
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

import asyncllm
from asyncllm._engine._ratelimit import TOKEN_KINDS, Cost, Lease, RateHeaders, Window
from asyncllm._engine._redis import _BATCH_EARLY, RedisBudgetStore, probe_allowance
from asyncllm._engine._redis_scripts import (
    _BATCH_FRESH,
    Batch,
    Claimed,
    Scripts,
    budget_key,
    slot_keys,
    starved_key,
    want_key,
)
from asyncllm.testing import FakeClock
from tests.redis_fixtures import RedisServer

T = TypeVar("T")
KEY = budget_key("t", "m")
SLOTS = slot_keys("t", "m")
CLAIM = (*SLOTS, want_key("t", "m"), starved_key(KEY))
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
    breaker: float = 0.0  # when the fleet's breaker stops being open
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
        kept: set[str] | None = None,
        tokens: list[tuple[float, float, float]] | None = None,
    ) -> Batch:
        """``kept``: the buckets there were before this call's reports (default: before its
        seeds); calls and tokens given back go only to those. ``tokens``: per token budget
        (``TOKEN_KINDS``) the tokens wanted, needed and given back."""
        kept = set(self.buckets) if kept is None else kept
        asked = dict(zip(TOKEN_KINDS, tokens or [(0.0, 0.0, 0.0)] * 3, strict=True))
        for name, cap, rate, seed in specs:
            if name not in self.buckets:
                self.buckets[name] = Bucket(cap, rate, min(cap, seed), now, cap)
        has_tokens = False
        for name, bucket in self.buckets.items():
            bucket.refill(now)
            if not name.startswith("requests"):
                has_tokens = True
                given = asked[name][2] if name in asked else 0
                if given and name in kept:
                    bucket.level = min(bucket.cap, bucket.level + given)
            elif back > 0 and name in kept:
                bucket.level = min(bucket.cap, bucket.level + back)
        grant: float = want
        wait = max(0.0, self.blocked - now)
        if wait > 0:
            grant = 0
        requests = [b for name, b in self.buckets.items() if name.startswith("requests")]
        for bucket in requests:
            level = bucket.level
            grant = min(grant, math.floor(level), max(1, math.floor(level / fleet)))
        # The tokens: all of them or none, each at least what the waiting call needs.
        token_wait = 0.0
        for name, bucket in self.buckets.items():
            need = asked[name][1] if name in asked else 0
            if need > 0 and need > bucket.level:
                token_wait = max(token_wait, bucket.wait_for(need, now))
        tokens_granted = wait <= 0 and token_wait <= 0
        if grant < 1:
            grant = 0
            if wait <= 0:
                for bucket in requests:
                    wait = max(wait, bucket.wait_for(1, now))
        else:
            for bucket in requests:
                bucket.level -= grant
        granted: list[int | None] = []
        for kind in TOKEN_KINDS:
            bucket = self.buckets.get(kind)
            if bucket is None:
                granted.append(None)
                continue
            wanted, need, _ = asked[kind]
            got = 0
            if tokens_granted:
                share = min(wanted, math.floor(bucket.level / fleet))
                got = max(0, min(math.floor(bucket.level), int(max(need, share))))
                bucket.level -= got
            granted.append(got)
        self._unmetered(grant - back)
        # (No process waits for slots here: no claim runs on this key.)
        return Batch(
            int(grant),
            max(wait, token_wait),
            has_tokens,
            max(0.0, self.blocked - now),
            max(0.0, self.breaker - now),
            False,
            tuple(granted),
        )

    def trip(self, seconds: float, now: float) -> float:
        self.breaker = max(self.breaker, now + seconds)
        return self.breaker - now

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


async def test_a_token_batch_holds_a_fair_share_and_the_waiting_calls_cost_at_least(
    scripts: Scripts,
) -> None:
    """Tokens in a batch: what the process wants, at most its fair share, but always the whole
    cost of the call waiting for it; none at all while that cost does not fit (then the wait is
    for it: never, if it is more than the budget's capacity); a debt given back is taken."""
    specs = [("tokens", 10_000.0, 100.0, 4_000.0)]

    async def batch(want: float, need: float, back: float = 0.0) -> Batch:
        asked = [(want, need, back), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
        return await scripts.lease_batch(KEY, 1, 0, 4, specs, now=T0, tokens=asked)

    assert (await batch(3_000, 0)).tokens == (1_000, None, None)  # a quarter of 4000
    assert (await batch(2_500, 2_500)).tokens == (2_500, None, None)  # more than 3000 / 4
    got = await batch(600, 600)  # 500 left
    assert got.tokens == (0, None, None) and close(got.wait, 1.0)
    got = await batch(20_000, 20_000, back=-200)  # a debt of 200 paid: 300 left
    assert got.tokens == (0, None, None) and got.wait == math.inf
    _, buckets = await scripts.current(KEY, now=T0)
    assert close(buckets["tokens"][1], 300.0)


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
    assert (await scripts.claim(CLAIM, "b", 3, 10, 0, 0, now=T0 + 11)).held == 0  # b's calls end
    assert await scripts.acquire(SLOTS, "a", 3, 10, 2, now=T0 + 11) == (True, False, 0.0, 0)
    assert await scripts.acquire(SLOTS, "a", 3, 10, 3, now=T0 + 11) == (False, False, 0.0, 0)


async def test_batches_of_slots_keep_to_the_limit_and_to_fair_shares(scripts: Scripts) -> None:
    def claim(process: str, keep: int, want: int, at: float) -> Coroutine[Any, Any, Claimed]:
        return scripts.claim(CLAIM, process, 6, 10, keep, want, now=T0 + at)

    # Alone, "a" gets the batch it wants (its share: all it wants).
    assert await claim("a", 0, 6, 0) == Claimed(6, False, 6, 1, 0.0, False)
    # "b" wants 4: nothing is free. Its fair share is 3 (6 water-filled over 6 and 4), but its
    # share now is what "a" leaves it: none.
    assert await claim("b", 0, 4, 0) == Claimed(0, False, 0, 2, 0.0, False)
    # "b" got less than its share: every process's next budget batch hears of it, for a while.
    assert (await scripts.lease_batch(KEY, 0, 0, 2, [], now=T0 + 0.1)).starved
    assert not (await scripts.lease_batch(KEY, 0, 0, 2, [], now=T0 + _BATCH_FRESH)).starved
    # "a" has all 6 in use: it keeps them, and learns its share.
    assert await claim("a", 6, 6, 1) == Claimed(6, False, 3, 2, 0.0, False)
    # Two of its calls ended: it shrinks to its share, and "b" gets the slots.
    assert await claim("a", 2, 6, 2) == Claimed(3, False, 3, 2, 0.0, False)
    assert await claim("b", 0, 4, 2) == Claimed(3, False, 3, 2, 0.0, False)
    # A small want is met whole, and the rest is shared in whole slots adding up to the limit:
    # 1 for "c", then 5 over two, the slot left over to the first by name (3 for "a", 2 for
    # "b"); "a" and "b" leave "c" none for now.
    assert await claim("c", 0, 1, 3) == Claimed(0, False, 0, 3, 0.0, False)
    assert await claim("b", 0, 4, 3) == Claimed(2, False, 2, 3, 0.0, False)
    assert await claim("a", 1, 6, 4) == Claimed(3, False, 3, 3, 0.0, False)
    # "a" and "c" die (no renewal): after their leases, their slots and wants are gone.
    assert await claim("b", 0, 4, 14) == Claimed(4, False, 4, 1, 0.0, False)
    assert await scripts.client.hkeys(CLAIM[3]) == [b"b"]
    # A process that was paused past its lease is counted again with the slots it keeps; "b"
    # holds 4 of the 6, so its share is 2.
    assert await claim("a", 2, 6, 15) == Claimed(2, True, 2, 2, 0.0, False)
    # While the fleet's breaker is open, batches shrink to the slots in use; once it is
    # half-open, they stay so (calls ask one by one, for the fleet's probe).
    await scripts.trip(KEY, 5, now=T0 + 16)
    assert await claim("b", 1, 4, 16) == Claimed(1, False, 3, 2, 5.0, False)
    assert await claim("b", 0, 4, 22) == Claimed(0, False, 3, 2, 0.0, True)
    await scripts.close(KEY)
    # A process that leaves drops its lease, count and want.
    assert await claim("a", 0, -1, 22) == Claimed(0, False, 0, 1, 0.0, False)
    assert await scripts.client.hget(CLAIM[0], "a") is None


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
        reported=st.lists(st.tuples(st.sampled_from(KINDS), windows), max_size=2),
        tokens=st.lists(
            st.tuples(
                st.integers(0, 4000),
                # Often small or none: a batch is granted only when every need fits.
                st.one_of(st.just(0), st.integers(0, 300), st.integers(0, 3000)),
                st.integers(-2000, 2000),
            ),
            min_size=3,
            max_size=3,
        ),
    )
    def lease_batch(
        self,
        step: float,
        want: int,
        back: int,
        fleet: int,
        specs: list[tuple[str, int, float, int]],
        reported: list[tuple[str, Window]],
        tokens: list[tuple[int, int, int]],
    ) -> None:
        self.now += step
        floats = [(n, float(c), r, float(s)) for n, c, r, s in specs]
        # As the store asks: at least what it needs.
        asked = [(float(max(w, n)), float(n), float(b)) for w, n, b in tokens]
        got = run(
            self.loop,
            self.scripts.lease_batch(
                KEY, want, back, fleet, floats, now=self.now, reports=reported, tokens=asked
            ),
        )
        # The reports that came with the batch are learned first.
        kept = set(self.model.buckets)
        self.model.report(reported, self.now)
        expected = self.model.lease_batch(want, back, fleet, floats, self.now, kept, asked)
        assert got.grant == expected.grant and close(got.wait, expected.wait), (got, expected)
        assert got.has_tokens == expected.has_tokens and close(got.blocked, expected.blocked)
        assert close(got.open_for, expected.open_for) and got.starved == expected.starved
        assert got.tokens == expected.tokens, (got, expected)

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
    def trip(self, step: float, seconds: float) -> None:
        self.now += step
        got = run(self.loop, self.scripts.trip(KEY, seconds, now=self.now))
        assert close(got, self.model.trip(seconds, self.now))

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


def fair_share(wants: dict[str, int], limit: int, process: str) -> int:
    """``process``'s share when ``wants`` add up to more than ``limit``: the limit water-filled
    over them, the slots left over one each to the first by name (as ``_CLAIM`` does)."""
    ordered = sorted(wants.items(), key=lambda pw: pw[1])
    left = limit
    for i, (_, want) in enumerate(ordered):
        rest = len(ordered) - i
        level = left // rest
        if want > level:
            names = sorted(p for p, _ in ordered[i:])
            extra = names[: left - level * rest]
            return min(wants.get(process, 0), level + (1 if process in extra else 0))
        left -= want
    return wants.get(process, 0)


class SlotMachine(RuleBasedStateMachine):
    """The slot scripts against a model: processes take slots one by one or claim batches,
    renew or stop renewing their leases; the fleet never holds more than the limit except by
    what processes keep in use, counting only live processes, fair shares follow the live
    processes' wants, and a lapsed process's slots count again when it comes back."""

    url: str = ""
    LIMIT = 4
    TTL = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(self.url)
        self.scripts = Scripts(self.client)
        self.now = T0
        # The model: per process, slots held by its own count, when its lease expires, and the
        # batch it last said it wants.
        self.held = dict.fromkeys("abc", 0)
        self.expires: dict[str, float] = {}
        self.wants: dict[str, int] = {}

    @initialize()
    def empty(self) -> None:
        run(self.loop, self.client.delete(*CLAIM))

    def teardown(self) -> None:
        run(self.loop, self.client.aclose())
        self.loop.close()

    def _expire(self) -> None:
        for p, at in list(self.expires.items()):
            if at <= self.now:
                del self.expires[p]

    def _renew(self, p: str, held: int) -> bool:
        if p in self.expires:
            self.expires[p] = self.now + self.TTL
            return False
        # A process that holds nothing is counted in the fleet all the same.
        self.expires[p] = self.now + self.TTL
        if held > 0:
            self.held[p] = held
            return True
        return False

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
        lapsed = self._renew(p, self.held[p])
        taken = self._counted() < self.LIMIT
        if taken:
            self.held[p] += 1
            self.expires[p] = self.now + self.TTL
        assert got == (taken, lapsed, 0.0, 0)

    @rule(
        step=st.floats(0, 15, allow_nan=False),
        p=st.sampled_from("abc"),
        keep=st.integers(0, 6),
        want=st.integers(-1, 6),
    )
    def claim(self, step: float, p: str, keep: int, want: int) -> None:
        self.now += step
        keep = min(keep, self.held[p])  # a process keeps at most what it holds
        if want < 0:
            keep = 0  # and leaves only with none in use
        believed = self.held[p]
        got = run(
            self.loop,
            self.scripts.claim(
                CLAIM, p, self.LIMIT, self.TTL, keep, want, now=self.now, believed=believed
            ),
        )
        self._expire()
        if want < 0:
            self.expires.pop(p, None)
            self.wants.pop(p, None)
            self.held[p] = 0
            assert got == Claimed(0, False, 0, len(self.expires), 0.0, False)
            return
        alive = p in self.expires
        lapsed = self._renew(p, keep) or (not alive and believed > 0)
        mine = self.held[p] if alive else keep
        self.held[p] = mine
        self.expires[p] = self.now + self.TTL
        if want > 0:
            self.wants[p] = want
        else:
            self.wants.pop(p, None)
        self.wants = {q: w for q, w in self.wants.items() if q in self.expires}
        fair = want
        if sum(self.wants.values()) > self.LIMIT:
            fair = fair_share(self.wants, self.LIMIT, p)
        total = self._counted()
        share = min(fair, max(0, self.LIMIT - (total - mine)))
        held = share
        if share > mine:
            held = mine + max(0, min(share - mine, self.LIMIT - total))
        self.held[p] = max(held, keep)
        assert got == Claimed(self.held[p], lapsed, share, len(self.expires), 0.0, False)

    @invariant()
    def same_slots(self) -> None:
        counted = run(self.loop, self.client.hgetall(SLOTS[0]))
        alive = run(self.loop, self.client.zrange(SLOTS[1], 0, -1))
        live = {p.decode() for p in alive}
        assert live == set(self.expires)
        assert {p.decode(): int(v) for p, v in counted.items()} == {
            p: self.held[p] for p in self.expires if self.held[p]
        }
        wants = run(self.loop, self.client.hgetall(CLAIM[3]))
        assert {p.decode(): int(v) for p, v in wants.items()} == self.wants


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
    the fleet's limit at random times; a claim (the heartbeat's script) reads the same limit
    back."""

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
        run(self.loop, self.client.delete(*CLAIM))

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
    def a_claim_reads_the_fleets_limit(self) -> None:
        args = self.scripts.claim_args("reader", 16, 10.0, 0, 0, self.now)
        got = run(self.loop, self.scripts.claim_script(keys=list(CLAIM), args=args))
        expected = b"" if self.model.limit is None else str(self.model.limit).encode()
        assert got[6] == expected


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


@pytest.mark.parametrize(("age", "granted"), [(0.5, 5), (10.0, 1)])
async def test_a_seed_from_an_old_report_is_a_probe_allowance(
    redis_url: str, age: float, granted: int
) -> None:
    """A report at most a second old seeds a lost budget with what it said, aged by its refill
    (5 left and half a second at one a second: 5.5). An older one seeds no more than one second's
    refill (one call), whatever it said: the other processes may have spent its 5 since."""
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="o")
    try:
        store.configure("m", 0.0, requests_per_minute=60)
        # 5 left of 60, 55 back within 55 s: one a second.
        await store.report("m", RateHeaders({"requests": Window(60, 5, 55.0)}), 0.0)
        clock[0] = age
        await store.client.flushall()
        leases = [await store.lease("m", Cost(1, 0), age) for _ in range(8)]
        assert [isinstance(got, Lease) for got in leases] == [True] * granted + [False] * (
            8 - granted
        )
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
        # The call left of the batch in hand (taken from the shared budget before), then the
        # probe allowance (10) halved: 5 calls, then a wait; never an error.
        assert store._allowances["m"].calls == 1
        got = [await store.lease("m", Cost(1, 0), clock[0]) for _ in range(7)]
        assert [isinstance(g, Lease) for g in got] == [True] * 6 + [False]
        assert slots.stats()["state"] == "degraded"
        assert store.degradations == 1
        # What a reply says meanwhile is the fleet's: this process learns its half of it, and
        # does not take the whole limit for its own.
        await store.report("m", RateHeaders({"tokens": Window(60000, 59000, 1.0)}), clock[0])
        assert (await store.current("m", clock[0]))["tokens"].limit == 30000
        # The batch of slots (2, one in use) is Redis's count for this process until its lease
        # ends: its free slot is used; then half of 8 slots, two of them in use: two more.
        assert slots.held == 2 and slots.busy == 1
        assert [await slots._take("r") for _ in range(4)] == [True, True, True, False]
        assert (slots.busy, slots.local) == (2, 2)
        slots.release()
        assert (slots.busy, slots.local) == (2, 1)
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
        # Reseeded at the probe allowance (10), not 600; less this call and the batch's calls in
        # hand, and less what was spent while Redis was away (settled into the shared budget on
        # its return). (Redis's clock refills it by 10 a second meanwhile: the bound leaves room
        # for that.)
        left = seen["requests"].remaining
        taken = 1 + store._allowances["m"].calls
        assert left is not None
        assert 10 - taken - spent_while_down <= left < 10 - taken
        # The slots in use since before Redis went away, those taken while it was away too,
        # are counted again, and the batch grows for this call.
        assert await slots._take("r")
        assert slots.lapses == 1
        assert (slots.busy, slots.local) == (4, 0)
        if slots._claiming is not None:
            await slots._claiming  # the batch may be growing in the background
        assert int(await store.client.hget(slots.keys[0], store.process)) == slots.held >= 4
    finally:
        await store.aclose()
        own.stop()


async def test_a_429_heard_while_redis_was_away_blocks_the_fleet_on_its_return(
    redis_server: RedisServer,
) -> None:
    """A process answered 429 (Retry-After 30 s) while Redis was unreachable blocks its own
    calls at once, and the other processes' as soon as Redis is back: they heard nothing of it,
    and would otherwise send into the vendor's block and collect 429s of their own."""
    own = RedisServer(redis_server.executable)
    clock = [100.0]
    store = RedisBudgetStore(own.url, clock=lambda: clock[0], prefix="u", timeout=0.5)
    other = RedisBudgetStore(own.url, prefix="u", timeout=0.5)
    try:
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), Lease)
        own.stop()
        await store.block("m", clock[0] + 30)
        assert store.degraded_since is not None
        assert await store.lease("m", Cost(1, 0), clock[0]) == 30
        own = RedisServer(redis_server.executable, own.port)  # back, and empty
        clock[0] += 1.5
        assert await store.lease("m", Cost(1, 0), clock[0]) == 28.5  # its own block, still
        await store.current("m", clock[0])  # asks Redis: back
        assert store.degraded_since is None
        await asyncio.sleep(0)
        assert store._repaying is not None
        await store._repaying
        wait = await other.lease("m", Cost(1, 0), other.clock())
        assert isinstance(wait, float) and 27 < wait <= 28.5
    finally:
        await store.aclose()
        await other.aclose()
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


async def test_a_breaker_opened_elsewhere_reaches_a_process_spending_its_batches(
    redis_url: str,
) -> None:
    """A process with slots and budget in hand learns of the fleet's open breaker at its next
    budget batch (within ``_BATCH_FRESH``), not only at its next claim or heartbeat: its calls
    are refused from then on, none sent."""
    breaker = asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=30)
    clock = FakeClock()
    one = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    two = asyncllm.Dispatcher(redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep)
    try:
        lane_one = one.lane("vendor", breaker=breaker)
        lane_two = two.lane("vendor", breaker=breaker)
        sent: list[Any] = []

        async def up(attempt: Any) -> int:
            sent.append(attempt)
            return 1

        for _ in range(3):
            assert await two.run(lane_two, "chat", up) == 1
        assert lane_two.shared is not None and lane_two.shared.held > lane_two.shared.busy
        sent.clear()

        async def down(attempt: Any) -> int:
            raise asyncllm.APIConnectionError("connection refused", backend="vendor")

        with pytest.raises(asyncllm.APIConnectionError):
            await one.run(lane_one, "chat", down, max_retries=0)
        assert lane_one.shared is not None and lane_one.shared._tripping is not None
        await lane_one.shared._tripping
        clock.advance(_BATCH_FRESH)  # the budget in hand is stale: the next call takes a batch
        with pytest.raises(asyncllm.CircuitOpenError, match="another process"):
            await two.run(lane_two, "chat", up)
        assert sent == []
        assert lane_two.breaker.state.value == "open"
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


def at_once(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``, which must finish without suspending (no round trip, no wait)."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise AssertionError("it suspended")


async def test_budgets_are_leased_in_batches_without_a_round_trip_per_call(redis_url: str) -> None:
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="b")
    # Per refill: (calls wanted, calls given back, calls granted).
    trips: list[tuple[int, int, int]] = []
    lease_batch = store.scripts.lease_batch
    hold = asyncio.Event()
    hold.set()

    async def counted(*args: Any, **kwargs: Any) -> Batch:
        await hold.wait()
        got = await lease_batch(*args, **kwargs)
        trips.append((args[1], args[2], got[0]))
        return got

    store.scripts.lease_batch = counted  # type: ignore[method-assign]
    try:
        await store.report("m", RateHeaders({"requests": Window(1000, 1000, None)}), 0.0)
        leases = [await store.lease("m", Cost(1, 0), clock[0]) for _ in range(200)]
        assert all(isinstance(got, Lease) for got in leases)
        # Batches of twice what was spent since the last: a few round trips for 200, not 200.
        assert len(trips) <= 10
        allowance = store._allowances["m"]
        granted = sum(grant for _, _, grant in trips)
        assert granted - allowance.calls == 200
        left = (await store.current("m", clock[0]))["requests"].remaining
        assert left is not None and 1000 - granted <= left < 1000 - granted + 20

        # The next batch is leased in the background before this one runs out: with the refill
        # held up in Redis, the calls still in hand go out without waiting for it.
        while allowance.refilling is None:
            at_once(store.lease("m", Cost(1, 0), clock[0]))
        hold.clear()
        await asyncio.sleep(0)  # the refill is on its way
        assert allowance.refilling is not None and not allowance.refilling.done()
        while allowance.calls:
            assert isinstance(at_once(store.lease("m", Cost(1, 0), clock[0])), Lease)
        hold.set()
        await allowance.refilling
        assert allowance.calls > 0

        # A batch not spent in time is given back with the next one.
        unspent = allowance.calls
        clock[0] += 1
        assert isinstance(await store.lease("m", Cost(1, 0), clock[0]), Lease)
        assert trips[-1][1] == unspent
        # A block (this process's own 429) stops the spending of the batch in hand at once.
        await store.block("m", store.clock() + 30)
        wait = await store.lease("m", Cost(1, 0), clock[0])
        assert isinstance(wait, float) and 29 < wait <= 30
    finally:
        await store.aclose()


async def test_reports_within_a_batch_time_go_to_redis_as_one(redis_url: str) -> None:
    """A vendor that reports its budget on every answer: the first report goes at once, those
    that follow within ``_BATCH_FRESH`` wait and go as one (the last of each window), with the
    next budget batch if it comes first."""
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="r")
    sent: list[int] = []
    report = store.scripts.report

    async def counted(key: str, windows: Any, now: float | None = None) -> None:
        sent.append(len(windows))
        await report(key, windows, now)

    store.scripts.report = counted  # type: ignore[method-assign]
    try:
        await store.report("m", RateHeaders({"requests": Window(1000, 900, None)}), 0.0)
        assert sent == [1]
        clock[0] = 0.1
        for remaining in (800, 700):
            await store.report("m", RateHeaders({"requests": Window(1000, remaining, None)}), 0.1)
        await store.report("m", RateHeaders({"tokens": Window(5000, 4000, None)}), 0.1)
        assert sent == [1]  # waiting for their time
        await store._reporting["m"]
        assert sent == [1, 2]
        seen = await store.current("m", clock[0])
        assert 700 <= (seen["requests"].remaining or 0) < 710
        assert 4000 <= (seen["tokens"].remaining or 0) < 4010
        # Within the time again: the next batch of calls takes the report with it.
        clock[0] = 0.2
        await store.report("m", RateHeaders({"requests": Window(1000, 100, None)}), 0.2)
        store.configure("n", 0.0, requests_per_minute=1000)
        await store.report("n", RateHeaders({"requests": Window(1000, 900, None)}), 0.2)
        await store.report("n", RateHeaders({"requests": Window(1000, 50, None)}), 0.2)
        assert isinstance(await store.lease("n", Cost(1, 0), 0.2), Lease)
        assert "n" not in store._reports
        seen = await store.current("n", clock[0])
        assert (seen["requests"].remaining or 0) < 50  # learned before the batch was taken
    finally:
        await store.aclose()
    assert sent == [1, 2, 1, 1]  # "n"'s first, and "m"'s last (at its time, or on closing)


async def test_calls_at_steady_state_cost_few_round_trips(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The efficiency, loosely (``benchmarks/shared_limits.py`` measures it): 400 calls of 8
    callers through a dispatcher shared through Redis, with a request budget, cost a few dozen
    Redis round trips (batches of budget and slots, growing), not one or two per call."""
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(
        redis_url=redis_url, observer=None, clock=clock, sleep=clock.sleep
    )
    admin = Redis.from_url(redis_url)

    async def scripts_run() -> int:
        stats = await admin.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    try:
        lane = dispatcher.lane(
            "vendor",
            limits=asyncllm.LimitsConfig(max_concurrent_requests=8),
            rate_limits=asyncllm.RateLimits(requests_per_minute=600_000),
        )

        async def answer(attempt: Any) -> int:
            await asyncio.sleep(0)
            return 1

        async def caller() -> None:
            for _ in range(50):
                assert await dispatcher.run(lane, "chat", answer) == 1
                clock.advance(0.001)  # 400 calls over 0.4 s: the batches go stale meanwhile

        before = await scripts_run()
        await asyncio.gather(*(caller() for _ in range(8)))
        trips = await scripts_run() - before
        assert trips <= 40, trips
    finally:
        await dispatcher.aclose()
        await admin.aclose()


async def test_calls_with_token_budgets_cost_few_round_trips(redis_url: str) -> None:
    """A member with token budgets (total and output) at steady state: 400 calls, each leased
    from the batch in hand and settled with its usage, cost a few dozen Redis round trips (the
    batches), not two per call (a lease and a settlement each, before)."""
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="tok")
    admin = Redis.from_url(redis_url)
    settles = 0
    settle = store.scripts.settle

    async def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal settles
        settles += 1
        await settle(*args, **kwargs)

    store.scripts.settle = counted  # type: ignore[method-assign]

    async def scripts_run() -> int:
        stats = await admin.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    try:
        store.configure(
            "m",
            0.0,
            requests_per_minute=600_000,
            tokens_per_minute=60_000_000,
            output_tokens_per_minute=6_000_000,
        )
        before = await scripts_run()
        for _ in range(400):
            lease = await store.lease("m", Cost(1, 120, 30), clock[0])
            assert isinstance(lease, Lease)
            await store.settle_usage(lease, 60, 10, clock[0])  # less than reserved
            clock[0] += 0.001
            await asyncio.sleep(0)
        trips = await scripts_run() - before
        assert trips <= 40 and settles == 0, (trips, settles)
        assert store._allowances["m"].limited == (True, False, True)
    finally:
        await store.aclose()
        await admin.aclose()


async def test_a_block_set_elsewhere_drops_the_batch_at_the_next_refill(redis_url: str) -> None:
    """Another process's 429: the batch in hand is spent until its refill (at most
    ``_BATCH_FRESH`` later), which finds the block and drops the rest."""
    clock = [0.0]
    one = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="x")
    two = RedisBudgetStore(redis_url, prefix="x")
    try:
        await one.report("m", RateHeaders({"requests": Window(1000, 1000, None)}), 0.0)
        for _ in range(20):
            assert isinstance(await one.lease("m", Cost(1, 0), clock[0]), Lease)
        allowance = one._allowances["m"]
        if allowance.refilling is not None:
            await allowance.refilling
        assert allowance.calls > 0
        await two.block("m", two.clock() + 30)
        clock[0] += _BATCH_FRESH - _BATCH_EARLY / 2  # the batch is due for its refill
        assert isinstance(at_once(one.lease("m", Cost(1, 0), clock[0])), Lease)
        assert allowance.refilling is not None
        await allowance.refilling
        assert allowance.calls == 0
        wait = await one.lease("m", Cost(1, 0), clock[0])
        assert isinstance(wait, float) and 29 < wait <= 30
    finally:
        await one.aclose()
        await two.aclose()


async def test_slots_are_leased_in_batches_and_given_back_on_the_heartbeat(
    redis_url: str,
) -> None:
    store = RedisBudgetStore(redis_url, prefix="sb")
    slots = store.slots("m", 8)
    try:
        await slots.acquire("r1", None)  # the first claim: a batch of 2 (1, and a quarter more)
        assert (slots.claims, slots.held, slots.busy) == (1, 2, 1)
        at_once(slots.acquire("r2", None))  # from the batch: no round trip
        assert (slots.claims, slots.busy) == (1, 2)
        await slots.acquire("r3", None)  # the batch is full: a claim, for 3 and a quarter more
        assert (slots.claims, slots.held, slots.busy) == (2, 4, 3)
        # The call that fills the batch goes at once, and the batch grows in the background.
        at_once(slots.acquire("r4", None))
        assert (slots.claims, slots.busy) == (2, 4) and slots._claiming is not None
        await slots._claiming
        assert (slots.claims, slots.held) == (3, 5)
        for _ in range(4):
            slots.release()  # no round trip: the slots stay in the batch
        assert (slots.claims, slots.held, slots.busy) == (3, 5, 0)
        assert int(await store.client.hget(slots.keys[0], store.process)) == 5
        # The heartbeat sizes the batch from the peak since the last (4): 5; then from none.
        # (With a second member, its claims go in one pipeline.)
        other = store.slots("n", 2)
        await other.acquire("o", None)
        await store.beat()
        assert (slots.held, slots.peak) == (5, 0)
        assert (other.held, other.busy) == (2, 1)
        other.release()
        await store.beat()
        assert slots.held == 0
        assert await store.client.hget(slots.keys[0], store.process) is None
        assert await store.client.hget(other.keys[0], store.process) == b"2"  # its peak was 1
    finally:
        await store.aclose()


async def test_a_process_over_its_share_gives_slots_back_as_calls_end(redis_url: str) -> None:
    """One process holds the whole limit; another comes and waits, which marks the member
    starved: the first learns it at its next budget batch, claims, and learns its fair share;
    then each slot it frees goes back to the fleet until it is at its share, and the waiting
    process gets them."""
    clock = [0.0]
    one = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="f")
    two = RedisBudgetStore(redis_url, prefix="f")
    mine, theirs = one.slots("m", 4), two.slots("m", 4)
    try:
        for i in range(4):
            await mine.acquire(f"r{i}", None)
        assert isinstance(await one.lease("m", Cost(1, 0), clock[0]), Lease)
        assert mine.held == mine.busy == 4
        claims = mine.claims
        waiting = asyncio.ensure_future(theirs.acquire("w", None))
        while not theirs.claims:
            await asyncio.sleep(0.001)
        assert not waiting.done() and theirs.held == 0
        clock[0] += 1  # the budget in hand is stale: the next call takes a batch, which says
        assert isinstance(await one.lease("m", Cost(1, 0), clock[0]), Lease)  # "starved"
        assert mine._claiming is not None
        await mine._claiming
        assert mine.claims == claims + 1
        assert (mine.held, mine.share) == (4, 2)  # all 4 in use: none can go back yet
        mine.release()
        await asyncio.wait_for(waiting, 10)  # a guard against a hang, not a measure
        assert (theirs.held, theirs.busy) == (1, 1)
        assert (mine.held, mine.busy) == (3, 3)
        for _ in range(3):
            mine.release()
        theirs.release()
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_paused_process_asks_redis_before_new_work(redis_url: str) -> None:
    """A process paused past its lease does not spend its batch when it resumes: its next call
    claims first, learns its lease lapsed, and the slot in use is counted again."""
    clock = [0.0]
    store = RedisBudgetStore(redis_url, clock=lambda: clock[0], prefix="z")
    slots = store.slots("m", 4)
    try:
        await slots.acquire("r1", None)
        assert slots.held == 2 and slots.busy == 1
        # Paused for 9 s (past the time a batch is trusted: the lease, 10 s, less a heartbeat);
        # meanwhile another process found the lease expired and dropped it.
        clock[0] += 9
        await store.client.zrem(slots.keys[1], store.process)
        await store.client.hdel(slots.keys[0], store.process)
        await slots.acquire("r2", None)  # not from the batch: a claim
        assert slots.claims == 2 and slots.lapses == 1
        assert slots.busy == 2
        assert int(await store.client.hget(slots.keys[0], store.process)) == slots.held >= 2
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


async def test_token_budgets_are_leased_in_batches_and_settled_locally(redis_url: str) -> None:
    """Token budgets (total, input, output) by main's per-kind costs: a batch holds a call's
    whole cost at least; the reply's usage settles with the batch in hand, without a round
    trip; a call the batch does not hold gives the batch back and waits for its own cost (or
    fails at once if no budget could ever hold it); what is left, or owed, goes back on
    closing."""
    store = RedisBudgetStore(redis_url, prefix="t")
    settles = 0
    settle = store.scripts.settle

    async def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal settles
        settles += 1
        await settle(*args, **kwargs)

    store.scripts.settle = counted  # type: ignore[method-assign]
    try:
        store.configure(
            "m",
            0.0,
            requests_per_minute=600,
            tokens_per_minute=60_000,
            output_tokens_per_minute=6_000,
            sub_window=1.0,
        )
        # The probe allowance: one second's refill of each (1000 tokens, 100 output). The first
        # batch holds the first call's cost (nothing was spent before it).
        lease = await store.lease("m", Cost(1, 600, 100), 0.0)
        assert isinstance(lease, Lease) and (lease.tokens, lease.output_tokens) == (600, 100)
        seen = await store.current("m", 0.0)
        assert {"tokens", "output-tokens", "requests-burst"} <= set(seen)
        assert 400 <= (seen["tokens"].remaining or 0) < 420
        assert 0 <= (seen["output-tokens"].remaining or 0) < 10
        allowance = store._allowances["m"]
        assert allowance.limited == (True, False, True) and allowance.tokens == [0, 0, 0]
        await store.settle_usage(lease, 150, 50, 0.0)  # used 200 of 600, 50 of 100 output
        assert allowance.tokens == [400, 0, 50] and settles == 0  # back to the batch, not Redis
        seen = await store.current("m", 0.0)
        assert 400 <= (seen["tokens"].remaining or 0) < 450
        # More output than the batch holds: its tokens go back, and the call waits for the
        # output budget to hold its 100 (about half a second at 100 a second), not sent.
        wait = await store.lease("m", Cost(1, 500, 100), 0.0)
        assert isinstance(wait, float) and 0.3 < wait < 0.6, wait
        assert allowance.tokens == [0, 0, 0]
        seen = await store.current("m", 0.0)
        assert 800 <= (seen["tokens"].remaining or 0) < 900
        # More output than the budget holds at all: refused at once, not sent.
        assert await store.lease("m", Cost(1, 7_000, 7_000), 0.0) == math.inf
        # A reply that used more than its call took leaves a debt in the batch, paid on closing.
        await asyncio.sleep(0.7)  # Redis's clock: the output budget refills
        lease = await store.lease("m", Cost(1, 100, 10), 0.0)
        assert isinstance(lease, Lease)
        before = await store.current("m", 0.0)
        await store.settle_usage(lease, 2_000, 10, 0.0)
        assert allowance.tokens[0] < 0 and settles == 0
    finally:
        await store.aclose()
    # The batch's tokens came from Redis already; closing paid the 1910 used beyond them.
    reader = RedisBudgetStore(redis_url, prefix="t")
    try:
        after = await reader.current("m", 0.0)
    finally:
        await reader.aclose()
    assert (after["tokens"].remaining or 0) < (before["tokens"].remaining or 0) - 1000
