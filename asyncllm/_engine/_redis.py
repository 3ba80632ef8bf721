"""Budgets and concurrency shared by every process that uses the same Redis.

``Dispatcher(redis_url=...)`` puts its lanes' budgets here instead of in process memory, so that
a fleet of processes (uvicorn workers, batch workers, several hosts behind one key) keeps to one
vendor limit instead of each keeping to its own and multiplying it. A lane is shared by name: two
processes' lanes called ``openai`` spend from one budget.

Why it is built this way:

* Every read-modify-write is one Lua script, so two processes never read the same level and both
  spend it. Time inside a script is Redis's own (``TIME``): the processes' clocks may disagree by
  minutes and it does not matter. The scripts take a time argument only so that tests can check
  them against a plain Python model (``tests/test_redis.py``); the store never passes one.
* Every key of one member carries the hash tag ``{member}``, so each script touches one Redis
  Cluster slot; work that spans members (the heartbeat) is pipelined, one script per member
  (on a cluster, sent concurrently, each to its slot's node).
* A missing budget (first use, Redis flushed or restarted) is seeded from what the vendor last
  reported to this process, aged by its refill rate, while that report is at most a second old
  (older, the rest of the fleet may have spent it), or else from a probe allowance of one
  second's refill: neither a burst (a whole minute's, or a whole day's, budget at once) nor a
  budget that starts empty and starves. Per-day budgets are therefore never refilled from zero.
* No round trip per call at steady state. Budgets: a process leases a batch of one-request calls
  and of tokens, in one script run (twice what it spent since the last batch, capped at a fair
  share of what is left; for tokens, never less than the cost of the call waiting for it), takes
  each call's estimated tokens from it and settles the reply's usage with it (no round trip: a
  debt is paid with the next batch), spends it
  locally for at most ``_BATCH_FRESH`` seconds, so that a block set by another process reaches
  it within that time, and leases the next in the background before this one runs out or goes
  stale. Concurrency: a process holds a batch of the fleet's slots (sized from its calls' recent
  peak; see ``SharedSlots``), takes and gives back slots locally, and resizes the batch when it
  fills, on its heartbeat, and when it holds more than its fair share while others wait (which
  it hears of at its next budget batch). The batches never add up to more than the limit: each
  is set by one script that sees them all.
* Those slots are held per process under an expiring lease that one heartbeat renews for all of
  the process's members. A process killed with SIGKILL stops renewing, and its slots return to
  the fleet when its lease expires; a process paused past its lease does not trust its batch
  when it resumes (it asks Redis before new work), finds that its slots in use were counted
  again, and starts no new work until the fleet is under its limit.
* A breaker that opens in one process opens the fleet's: the slot scripts give no batch while it
  is open, and a process learns it at its next budget batch, claim or heartbeat and opens its
  own breaker for the rest of the time; while it is half-open each call asks for its slot, so
  that one process probes for the fleet. The counting of failures stays local (sharing every
  outcome would cost a round trip per call).
* A block (another process's 429) and a change of the fleet's adaptive concurrency limit are
  announced on a pub/sub channel by the script that makes them; every process listens, drops the
  batch in hand at a block and adopts a new limit at once (see ``_listen_forever`` for why not a
  shorter refill). Announcements may be lost, so the batches' freshness still bounds a block's
  delay, and the heartbeat carries the limit.
* The adaptive concurrency limit is the fleet's: a process's decrease (a 503, 529 or timeout)
  or increase is one script that applies it at most once per ``min_interval`` for the whole
  fleet (``_ADAPT``), so that every process seeing the same overload shrinks it once.
* A Redis that fails or is slow degrades the store instead of failing calls (see
  ``RedisBudgetStore``); what was spent meanwhile is taken from the shared budgets on return,
  and a 429 heard meanwhile blocks the fleet for the rest of its time.

The scripts, and ``Scripts`` that runs them, are in ``_redis_scripts``; this module is the store
that drives them. The Redis client (``redis.asyncio``, the ``asyncllm[redis]`` extra) is imported
when a store is made, so that ``import asyncllm`` never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._constants import DEFAULT_REDIS_LEASE, DEFAULT_REDIS_SHARE, DEFAULT_REDIS_TIMEOUT
from .._exceptions import APITimeoutError, ConfigurationError
from ._breaker import BreakerState
from ._ratelimit import (
    _PER_MINUTE,
    TOKEN_KINDS,
    BudgetStore,
    Cost,
    Lease,
    MemoryBudgetStore,
    RateHeaders,
    TokenBucket,
    Window,
    configured_buckets,
)
from ._redis_scripts import (
    _BATCH_FRESH,
    Claimed,
    Scripts,
    budget_key,
    slot_keys,
    starved_key,
    token_amounts,
    want_key,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from ._dispatcher import Lane

__all__ = ["RedisBudgetStore", "SharedSlots", "probe_allowance"]

logger = logging.getLogger("asyncllm.redis")
T = TypeVar("T")

# How long a call that found the fleet's slots all taken waits before asking again (doubling
# up to the second value).
_SLOT_POLL = (0.005, 0.05)
# While degraded, Redis is tried again this often (seconds).
_REDIS_RETRY = 1.0
# A batch of budget leased by a process (spent within ``_BATCH_FRESH`` seconds or given back)
# holds at most this many calls; the next is leased in the background this long before the batch
# goes stale (or once half of it is spent), so that calls do not wait for it.
_BATCH_MAX = 256
_BATCH_EARLY = 0.05
# What the vendor last reported to this process seeds a budget Redis lost while it is at most
# this many seconds old (``_Reported``).
_REPORT_FRESH = 1.0
# How long the listener waits for a message before it asks again (a bound, not a poll interval:
# a message wakes it at once).
_LISTEN_WAIT = 1.0
# While another process holds the fleet's half-open probe, this one asks again this often.
_PROBE_RECHECK = 1.0

# -- the store -----------------------------------------------------------------------------------

# The ``charged`` of a lease taken from a batch in hand: it settles with that batch.
_FROM_BATCH = ("redis-batch",)


@dataclass(slots=True)
class _Allowance:
    """Calls of one request each, and tokens, that this process leased from Redis in batches
    and spends without a round trip while they are fresh (until ``until``: a block set by
    another process reaches this one within ``_BATCH_FRESH``). The next batch is leased in the
    background before this one runs out or goes stale; its size is twice what was spent since
    the last, so that a batch lasts about two refills at the current pace. A call takes its
    estimated tokens from the batch, and its reply's usage settles with the batch, not with
    Redis: the tokens it did not use go back to the batch, the extra it used is taken from it
    (which may go below zero: a debt paid with the next batch)."""

    calls: int = 0
    until: float = -math.inf
    # Calls in hand after the last refill, and spent since it was sent.
    size: int = 0
    spent: int = 0
    # Per token budget (``TOKEN_KINDS``): the tokens in hand, after the last refill, and spent
    # since it was sent; and whether the member has that budget (else nothing limits it).
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0])
    token_size: list[int] = field(default_factory=lambda: [0, 0, 0])
    token_spent: list[int] = field(default_factory=lambda: [0, 0, 0])
    limited: tuple[bool, ...] = (False, False, False)
    # The last refill granted less than was needed: the seconds until it would be.
    wait: float = 0.0
    refilling: asyncio.Task[bool] | None = None

    def fits(self, cost: Cost) -> bool:
        """Whether the batch in hand holds a call of ``cost`` (one request)."""
        if self.calls < 1:
            return False
        amounts = token_amounts(cost)
        return all(not on or amounts[k] <= self.tokens[k] for k, on in enumerate(self.limited))

    def take(self, cost: Cost) -> None:
        self.calls -= 1
        self.spent += 1
        for k, amount in enumerate(token_amounts(cost)):
            if self.limited[k]:
                self.tokens[k] -= amount
                self.token_spent[k] += amount

    def settle(self, lease: Lease, used: tuple[int, int, int]) -> None:
        """A reply's usage (per ``TOKEN_KINDS``) against what its call took from the batch."""
        for k, reserved in enumerate(token_amounts(lease)):
            if self.limited[k]:
                self.tokens[k] += reserved - used[k]

    def low(self) -> bool:
        """Half of the batch is spent: time to lease the next."""
        return self.calls * 2 < self.size or any(
            on and self.tokens[k] * 2 < self.token_size[k] for k, on in enumerate(self.limited)
        )


@dataclass(slots=True)
class _Reported:
    """What the vendor last said of one budget, as this process heard it: the seed of that
    budget if Redis loses it. Trusted for one second (``_REPORT_FRESH``), aged by its refill;
    after that, what it said is no better than a probe allowance (one second's refill), and the
    seed is the lower of the two. The other processes of the fleet spend from the vendor's budget
    too, and one process's last word says nothing of what they spent since: a worker whose last
    report (20 left) was seconds old seeded a restarted Redis with 22 while the vendor had 11."""

    capacity: float
    rate: float
    level: float
    at: float  # the dispatcher's clock

    def level_at(self, now: float) -> float:
        age = max(0.0, now - self.at)
        if age > _REPORT_FRESH:
            return min(self.level + self.rate, probe_allowance(self.capacity, self.rate))
        return min(self.capacity, self.level + age * self.rate)


class SharedSlots:
    """One member's share of the fleet's concurrency limit, for one process.

    The process holds a batch of the fleet's slots in Redis (``held``, under its expiring lease)
    and spends them locally: ``acquire`` takes one of them without a round trip while the batch
    has one free and the lease is surely alive (``_valid_until``, on this process's clock: a
    process paused past its lease asks Redis before it starts new work). The batch is sized from
    the calls in use and waiting (their peak since the last heartbeat, plus a quarter) and set by
    ``_CLAIM``: in the background when it fills, when a call finds it full, on each heartbeat,
    when a budget batch says another process waits for slots (``RedisBudgetStore._refill``), and
    while the process holds more than its fair share (then each slot freed goes back). The sum of
    the batches never exceeds the limit, so neither do the calls in flight.

    While the lane's breaker is not closed, or the fleet's is half-open, each call asks Redis for
    its slot (``_ACQUIRE``), which lets one process at a time probe for the fleet. Whatever
    ``acquire`` does (takes a slot, or raises), exactly one ``release`` balances it: the lane
    gives its slot back once either way.
    """

    def __init__(self, store: RedisBudgetStore, member: str, limit: int) -> None:
        self.store = store
        self.member = member
        self.limit = limit
        self.keys = (
            *slot_keys(store.prefix, member),
            want_key(store.prefix, member),
            starved_key(budget_key(store.prefix, member)),
        )
        # Slots Redis counts for this process, and those of them in use by calls.
        self.held = 0
        self.busy = 0
        # How many of ``held`` calls may take now: all of them, less, while a claim that may
        # shrink the batch is on its way, those it may take back.
        self._usable = 0
        # This process's fair share while others wait (``held`` above it: freed slots go back).
        self.share = limit
        # The most calls in use or waiting since the last heartbeat, and the batch the last claim
        # asked for.
        self.peak = 0
        self._wanted = 0
        self._valid_until = -math.inf
        # The fleet's breaker was half-open at the last claim: slots are asked one by one.
        self._half_open = False
        # One claim at a time per member, so that each answer sets ``held`` in order.
        self._lock = asyncio.Lock()
        self._claiming: asyncio.Task[bool] | None = None
        self._reclaim = False
        # Releases owed by acquires that failed (nothing to give back).
        self._unowed = 0
        # Calls asking for a slot the batch did not have (in ``_take``), and calls waiting to
        # ask again: a slot freed here wakes one at once; the others ask Redis again after a
        # short wait.
        self._asking = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Slots taken while Redis was unreachable, counted here only (degraded mode).
        self.local = 0
        # The lane these slots are for (its breaker opens when the fleet's does).
        self.lane: Lane | None = None
        self._tripping: asyncio.Task[None] | None = None
        # This process holds the fleet's half-open probe: the next verdict decides it.
        self._probing = False
        self.lapses = 0
        # Slots this process held when it found its lease lapsed: its calls that ran past their
        # lease, the most by which the fleet may have gone over its limit meanwhile.
        self.lapsed_slots = 0
        # Calls that ended after the batch stopped being trusted (the lease may have lapsed
        # under them): counted as lapsed if the next claim finds it did.
        self._late = 0
        self.waits = 0
        self.claims = 0
        # The fleet's concurrency limit is at most the configured one (the lane's ceiling);
        # ``limit`` follows the fleet's adaptive limit (see ``adopt``).
        self.ceiling = limit
        # Changes of the fleet's limit this process has sent and not yet heard back from: a
        # heartbeat's reading meanwhile may predate them, and is not adopted.
        self._adapting = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def stats(self) -> dict[str, Any]:
        """What ``Dispatcher.stats()`` shows of the lane's sharing (``info["redis"]``)."""
        store = self.store
        return {
            "state": "degraded" if store.degraded_since is not None else "shared",
            "held": self.held + self.local,
            "in_use": self.busy + self.local,
            "share": self.share,
            "fleet": store.fleet,
            "waits": self.waits,
            "lapses": self.lapses,
            "lapsed_slots": self.lapsed_slots,
            "claims": self.claims,
            "degradations": store.degradations,
            "limit": self.limit,
        }

    def _closed(self) -> bool:
        lane = self.lane
        return lane is None or lane.breaker._state is BreakerState.CLOSED

    def _take_held(self) -> bool:
        """Take a free slot of the batch, if the batch may be used: no round trip."""
        if (
            self.busy < self._usable
            and not self._half_open
            and self.store.clock() < self._valid_until
            and self._closed()
        ):
            self.busy += 1
            if self.busy > self.peak:
                self.peak = self.busy
                if self.busy == self.held < self.limit and self.share >= self._wanted:
                    # The batch is full, and not held back by a fair share: ask for more before a
                    # call has to wait.
                    self._start_claim()
            return True
        return False

    def wanting(self) -> bool:
        """Whether calls of this process wait for a slot."""
        return bool(self._asking or self._waiters)

    def _want(self) -> int:
        """The batch this process would hold: its calls in use and waiting at their peak since
        the last heartbeat, and a quarter more (so that a little growth costs no claim)."""
        demand = self.busy + self.local + self._asking + len(self._waiters)
        peak = self.peak = max(self.peak, demand)
        return min(self.limit, peak + -(-peak // 4))

    def _keep(self, want: int) -> int:
        """Slots a claim may not take back: those in use, and, unless the batch must shrink to
        the fair share, those calls may take while the claim is on its way (up to ``want``). The
        batch is usable up to it meanwhile."""
        busy = self.busy + self.local
        lapsed = self.store.clock() >= self._valid_until
        keep = busy if lapsed or self.held > self.share else max(busy, min(self.held, want))
        self._usable = min(self._usable, keep)
        return keep

    def _apply(self, claimed: Claimed, sent_at: float) -> None:
        """Take a claim's answer (sent at ``sent_at``, on this process's clock)."""
        self.claims += 1
        store = self.store
        store.fleet = max(store.fleet or 1, claimed.fleet)
        if claimed.lapsed:
            self._lapsed()
        self._late = 0
        # Slots taken while Redis was unreachable are counted in Redis now (the claim kept them).
        self.busy += self.local
        self.local = 0
        self.held = claimed.held
        self.share = claimed.share
        # Over its share, the batch is used no further than its share (or its calls in use).
        self._usable = min(self.held, max(self.busy, self.share))
        self._valid_until = sent_at + store.lease_ttl - store.heartbeat
        self._half_open = claimed.half_open
        if claimed.limit is not None and not self._adapting:
            self.adopt(claimed.limit)
        if claimed.open_for > 0 and self.lane is not None:
            # Another process's breaker opened: this one's opens for the rest of it.
            self.lane.breaker.trip(claimed.open_for)
        if self.busy < self._usable:
            self._wake(self._usable - self.busy)

    async def _claim(self) -> bool:
        """Claim this process's batch (see ``_CLAIM``); False if Redis could not be reached."""
        store = self.store
        async with self._lock:
            while True:
                self._reclaim = False
                want = self._want()
                keep = self._keep(want)
                self._wanted = want
                sent_at = store.clock()
                try:
                    claimed = await store.scripts.claim(
                        self.keys,
                        store.process,
                        self.limit,
                        store.lease_ttl,
                        keep,
                        want,
                        believed=self.held,
                    )
                except store.errors as exc:
                    self._usable = self.held
                    store._down(exc)
                    return False
                store._up()
                self._apply(claimed, sent_at)
                if not self._reclaim:
                    return True

    def _start_claim(self) -> asyncio.Task[bool]:
        """Claim in the background, or once more after the claim on its way."""
        task = self._claiming
        if task is None or task.done():
            task = self._claiming = asyncio.get_running_loop().create_task(self._claim())
        else:
            self._reclaim = True
        return task

    async def _take(self, request_id: str) -> bool:
        """One try at a slot: from the batch, else from Redis, or, while it is unreachable, from
        this process's share of the limit. Raises ``CircuitOpenError`` while the fleet's breaker
        is open."""
        if self._take_held():
            return True
        self._asking += 1
        try:
            return await self._take_new(request_id)
        finally:
            self._asking -= 1

    async def _take_new(self, request_id: str) -> bool:
        store = self.store
        if store._reachable():
            if self._closed() and not self._half_open and await asyncio.shield(self._start_claim()):
                if self.lane is not None and self.lane.breaker._state is BreakerState.OPEN:
                    raise self.lane.circuit_error(request_id)
                if not self._half_open:
                    return self._take_held()
            if store._reachable():
                try:
                    return await self._take_one(request_id)
                except store.errors as exc:
                    store._down(exc)
        if self.busy + self.local < max(1, math.floor(self.limit * store.share())):
            self.local += 1
            return True
        return False

    async def _take_one(self, request_id: str) -> bool:
        """Ask Redis for one slot (``_ACQUIRE``), for a call the fleet's half-open breaker must
        let through, or refuse while another process probes."""
        store = self.store
        async with self._lock:
            sent_at = store.clock()
            taken, lapsed, open_for, probing = await store.scripts.acquire(
                self.keys[:3], store.process, self.limit, store.lease_ttl, self.busy + self.local
            )
            store._up()
            if lapsed:
                # Redis counts the slots in use again, those taken while it was unreachable too.
                self._lapsed()
                self.busy += self.local
                self.local = 0
                self.held = self._usable = self.busy
            if taken:
                self.held += 1
                self._usable = self.held
                self.busy += 1
                self._valid_until = sent_at + store.lease_ttl - store.heartbeat
        if open_for > 0 and self.lane is not None:
            # Another process's breaker opened: this one's opens for the rest of it (or, while
            # another process probes, until it is worth asking again).
            if probing == 2:
                open_for = min(open_for, _PROBE_RECHECK)
            self.lane.breaker.trip(open_for)
            raise self.lane.circuit_error(request_id)
        if taken:
            self._probing = self._probing or probing == 1
            self._half_open = probing == 1
        return taken

    async def acquire(self, request_id: str, deadline_at: float | None) -> None:
        """Take one of the fleet's slots, waiting (polling Redis) while all are taken. Raises
        ``APITimeoutError`` if the call's deadline passes first."""
        if self._take_held():
            return
        store = self.store
        store._start_heartbeat()
        delay = _SLOT_POLL[0]
        try:
            while True:
                if await self._take(request_id):
                    return
                self.waits += 1
                if deadline_at is not None and store.clock() + delay >= deadline_at:
                    raise APITimeoutError(
                        "deadline passed while waiting for a slot shared through Redis",
                        backend=self.member,
                        request_id=request_id,
                    )
                woken = asyncio.get_running_loop().create_future()
                self._waiters.append(woken)
                try:
                    await asyncio.wait_for(woken, delay)
                except asyncio.TimeoutError:
                    delay = min(delay * 2, _SLOT_POLL[1])
                finally:
                    if not woken.done():
                        woken.cancel()
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(woken)
        except BaseException:
            self._unowed += 1
            raise

    def _lapsed(self) -> None:
        """This process's lease had lapsed with calls in flight: Redis counts their slots again
        (``_CLAIM`` and ``_ACQUIRE`` put them back), but the fleet had them back while they
        ran past their lease."""
        slots = self.busy + self.local + self._late
        self._late = 0
        self.lapses += 1
        self.lapsed_slots += slots
        logger.warning(
            "%s: this process's Redis lease lapsed (paused or Redis flushed) with %d calls in"
            " flight, past their lease",
            self.member,
            slots,
            extra={"backend": self.member, "request_id": "-"},
        )

    def tripped(self, seconds: float) -> None:
        """This process's breaker for the member opened for ``seconds``: so does the fleet's
        (sent in the background; the lane's calls refuse themselves meanwhile)."""
        self._tripping = asyncio.get_running_loop().create_task(self._trip(seconds))

    async def _close(self) -> None:
        store = self.store
        try:
            await store.scripts.close(self.keys[2])
        except store.errors as exc:
            # The probe's claim expires after lease_ttl and another process probes.
            store._down(exc)

    async def _trip(self, seconds: float) -> None:
        store = self.store
        if not store._reachable():
            return
        try:
            await store.scripts.trip(self.keys[2], seconds)
        except store.errors as exc:
            store._down(exc)

    def step(self, step: int) -> None:
        """The lane's adaptive concurrency moved its limit one ``step`` (-1 down, 1 up): so
        does the fleet's, at most once per ``min_interval`` for the whole fleet, in the
        background; the reply (the fleet's limit, changed or not) is adopted. While Redis is
        unreachable the lane keeps its own change."""
        self._adapting += 1
        task = asyncio.get_running_loop().create_task(self._step(step))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step(self, step: int) -> None:
        store, lane = self.store, self.lane
        try:
            if lane is None or lane.adaptive is None or not store._reachable():
                return
            config = lane.adaptive.config
            try:
                limit = await store.scripts.adapt(
                    self.keys[2],
                    step,
                    self.ceiling,
                    config.decrease_factor,
                    config.min_interval,
                    channel=store.channel,
                    sender=store.process,
                )
            except store.errors as exc:
                store._down(exc)
                return
            self.adopt(limit)
        finally:
            self._adapting -= 1

    def adopt(self, limit: int) -> None:
        """The fleet's adaptive concurrency limit is ``limit`` (a reply, a heartbeat, another
        process's announcement): this process's share of the fleet's slots is asked for under
        it, and the lane's own limit follows (if the lane adapts), starting the calls it now
        lets in."""
        limit = max(1, min(limit, self.ceiling))
        self.limit = limit
        lane = self.lane
        if lane is None or lane.adaptive is None or lane.limit == limit:
            return
        grew = limit > lane.limit
        lane.adaptive.adopt(lane, limit)
        if grew:
            lane.fill()

    def never_acquired(self) -> None:
        """The lane's slot about to be given back never asked for a shared one (its call was
        cancelled in the lane's queue): its ``release`` gives nothing back."""
        self._unowed += 1

    def release(self, outcome: bool | None = None) -> None:
        """Give a slot back to the batch (``outcome``: the breaker's verdict on the call, if
        any, which decides the fleet's half-open probe when this process holds it). No round
        trip, unless the batch is over the fair share while others wait."""
        if self._probing and outcome is not None:
            self._probing = False
            if outcome:
                self._half_open = False
                self._tripping = asyncio.get_running_loop().create_task(self._close())
            elif self.lane is not None:
                self.tripped(self.lane.breaker.open_time)
        if self._unowed:
            self._unowed -= 1
            return
        if self.local:
            self.local -= 1
        else:
            self.busy -= 1
            if self.store.clock() >= self._valid_until:
                self._late += 1
            if self.held > self.share:
                # The freed slot goes back to the fleet (no call here may take it meanwhile).
                self._usable = min(self._usable, max(self.busy, self.share))
                self._start_claim()
                return
        self._wake(1)

    def _wake(self, n: int) -> None:
        for _ in range(n):
            if not self._waiters:
                break
            woken = self._waiters.popleft()
            if not woken.done():
                woken.set_result(None)


class RedisBudgetStore(BudgetStore):
    """Budgets, blocks and concurrency slots in Redis, shared by every process using ``url``.

    A ``url`` of the form ``redis+cluster://host:port`` (or ``rediss+cluster://``) is a Redis
    Cluster: every script touches one member's keys, which share one hash slot.

    ``clock`` is the dispatcher's (blocks are handed over in its time and kept in Redis's);
    ``lease_ttl`` is how long a process's slots outlive its last heartbeat (every
    ``heartbeat`` seconds); ``timeout`` bounds every Redis call; ``prefix`` begins every key.

    When Redis fails or does not answer within ``timeout``, the store is degraded (logged, and
    ``"degraded"`` in the lanes' ``stats().info["redis"]``) rather than failing calls or letting
    them all through: each process keeps its share of the last known limits (divided by the
    number of processes last seen holding leases, or ``DEFAULT_REDIS_SHARE`` of them if it never
    saw one) in memory, and tries Redis again every ``_REDIS_RETRY`` seconds.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "asyncllm",
        lease_ttl: float = DEFAULT_REDIS_LEASE,
        heartbeat: float = DEFAULT_REDIS_LEASE / 5,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        if not (heartbeat > 0 and lease_ttl > heartbeat):
            raise ConfigurationError("RedisBudgetStore needs 0 < heartbeat < lease_ttl")
        try:
            from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
        except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
            raise ConfigurationError(
                'redis_url needs the redis package: pip install "asyncllm[redis]"'
            ) from exc
        from redis.exceptions import RedisError

        self.client: Redis | RedisCluster
        scheme, sep, rest = url.partition("://")
        self.cluster = scheme in ("redis+cluster", "rediss+cluster") and bool(sep)
        try:
            if self.cluster:
                self.client = RedisCluster.from_url(
                    f"{scheme.removesuffix('+cluster')}://{rest}",
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                )
            else:
                # A blocking pool: past its connections, a call waits (up to ``timeout``) for
                # one to come free instead of raising MaxConnectionsError, which the store would
                # take for Redis being away (more than 100 call-by-call token leases at once
                # sent a busy worker degraded for moments).
                self.client = Redis.from_pool(
                    BlockingConnectionPool.from_url(
                        url,
                        socket_timeout=timeout,
                        socket_connect_timeout=timeout,
                        timeout=timeout,
                    )
                )
        except ValueError as exc:
            # redis-py's reason names no password; the URL itself is never shown.
            raise ConfigurationError(f"redis_url is not a Redis URL: {exc}") from None
        # What a Redis call raises when Redis is unreachable or slow.
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self.degraded_since: float | None = None
        self.degradations = 0
        self._retry_at = -math.inf
        # Processes last seen holding leases (the heartbeat counts them); None: never seen.
        self.fleet: int | None = None
        self._fallback = MemoryBudgetStore()
        # Per lane, [requests, tokens] spent while degraded: taken from the shared budgets when
        # Redis is back, so that the fleet's spend stays whole.
        self._owed: dict[str, list[int]] = {}
        self._allowances: dict[str, _Allowance] = {}
        # Budget refills and slot claims running in the background.
        self._tasks: set[asyncio.Task[Any]] = set()
        # Per member: the reports waiting to be sent as one, the task that sends them, and the
        # time (the event loop's) before which a report waits (one was sent, alone or with a
        # budget batch, less than ``_BATCH_FRESH`` ago).
        self._reports: dict[str, dict[str, Window]] = {}
        self._reporting: dict[str, asyncio.Task[None]] = {}
        self._report_after: dict[str, float] = {}
        # Per member, when a block this process knows of ends (its own 429s and the ones
        # announced): see ``_known_block``.
        self._blocked: dict[str, float] = {}
        # Per member, when a block this process heard of while Redis was unreachable ends: the
        # fleet is told of it on Redis's return (``_repay``), with what was spent meanwhile.
        self._unannounced: dict[str, float] = {}
        self._repaying: asyncio.Task[None] | None = None
        self.scripts = Scripts(self.client)
        self.clock = clock
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.heartbeat = heartbeat
        # Unique per process and store: host, pid and a random part (pids are reused).
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._specs: dict[str, list[tuple[str, float, float]]] = {}
        self._reported: dict[str, dict[str, _Reported]] = {}
        self._slots: dict[str, SharedSlots] = {}
        # The same, by their budgets' key (what announcements name).
        self._by_key: dict[str, SharedSlots] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self.heartbeats = 0
        # Blocks and limit changes are announced here by the process that makes them; each
        # process listens, so they reach it within a Redis hop rather than at its next batch or
        # heartbeat (which still carry them if an announcement is lost).
        self.channel = f"{prefix}:signals"
        self._listener: asyncio.Task[None] | None = None
        # Set by ``aclose``: the listener stops even if redis-py swallowed its cancellation (a
        # cancel that lands as its read times out comes back as an empty read).
        self._closing = False
        self.listening = asyncio.Event()
        self.signals = 0

    # -- degraded mode -----------------------------------------------------------------------

    def share(self) -> float:
        """This process's share of the fleet's limits while Redis is unreachable."""
        return 1.0 / self.fleet if self.fleet else DEFAULT_REDIS_SHARE

    def _reachable(self) -> bool:
        """Whether to ask Redis now: always when connected, once per ``_REDIS_RETRY`` when
        degraded (so that a down Redis costs a call nothing, and its return is noticed)."""
        return self.degraded_since is None or self.clock() >= self._retry_at

    def _down(self, exc: BaseException) -> None:
        now = self.clock()
        self._retry_at = now + _REDIS_RETRY
        if self.degraded_since is not None:
            return
        self.degraded_since = now
        self.degradations += 1
        # The budget batches in hand are dropped, not given back later: Redis may come back
        # without the budgets they were taken from (a restart), reseeded from the vendor's word,
        # which counts them as unspent already.
        for allowance in self._allowances.values():
            allowance.calls = 0
            allowance.tokens = [0, 0, 0]
            allowance.until = -math.inf
        share = self.share()
        logger.warning(
            "Redis unreachable (%s): degraded mode, this process keeps %.3g of the last known"
            " limits until it is back",
            type(exc).__name__,
            share,
            extra={"backend": "-", "request_id": "-"},
        )
        # The budgets this process would have had, less what the others may spend meanwhile.
        # Each starts at one second's refill at most: what this process last heard of a budget
        # may be old, and the others have spent from it since (four workers started from their
        # own last replies sent 8 requests of 12 into a vendor with none left).
        self._fallback = MemoryBudgetStore()
        for key in set(self._specs) | set(self._reported):
            buckets = self._fallback._budgets(key).buckets
            for name, capacity, rate, level in self._learned(key, now):
                level = min(level, probe_allowance(capacity, rate))
                buckets[name] = TokenBucket(capacity * share, rate * share, level * share, now)

    def _up(self) -> None:
        if self.degraded_since is None:
            return
        logger.warning(
            "Redis reachable again after %.1fs: budgets and slots shared again",
            self.clock() - self.degraded_since,
            extra={"backend": "-", "request_id": "-"},
        )
        self.degraded_since = None
        if (self._owed or self._unannounced) and (self._repaying is None or self._repaying.done()):
            self._repaying = asyncio.get_running_loop().create_task(self._repay())

    async def _repay(self) -> None:
        """Spend in the shared budgets what this process spent while Redis was unreachable,
        and block the fleet for what is left of the 429s it was answered meanwhile (the other
        processes heard nothing of them, and would otherwise collect their own)."""
        blocks, self._unannounced = self._unannounced, {}
        for key, until in blocks.items():
            left = until - self.clock()
            if left <= 0:
                continue
            try:
                await self.scripts.block(
                    budget_key(self.prefix, key), left, channel=self.channel, sender=self.process
                )
            except self.errors as exc:
                self._unannounced[key] = max(until, self._unannounced.get(key, -math.inf))
                self._down(exc)
        owed, self._owed = self._owed, {}
        now = self.clock()
        for key, (requests, tokens) in owed.items():
            try:
                await self.scripts.lease(
                    budget_key(self.prefix, key),
                    requests,
                    max(0, tokens),
                    self._seeds(key, now),
                    force=True,
                    learned=self._reported_only(key, now),
                )
            except self.errors as exc:
                # Still owed: paid when Redis is back again.
                spent = self._owed.setdefault(key, [0, 0])
                spent[0] += requests
                spent[1] += tokens
                self._down(exc)

    def _spent(self, key: str, requests: int, tokens: int) -> None:
        spent = self._owed.setdefault(key, [0, 0])
        spent[0] += requests
        spent[1] += tokens

    def __repr__(self) -> str:
        # The URL may carry a password: never shown.
        return f"RedisBudgetStore(prefix={self.prefix!r}, process={self.process!r})"

    # -- budgets -----------------------------------------------------------------------------

    def configure(
        self,
        key: str,
        now: float,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        requests_per_day: int | None = None,
        input_tokens_per_minute: int | None = None,
        output_tokens_per_minute: int | None = None,
        sub_window: float | None = None,
    ) -> None:
        """The buckets of ``MemoryBudgetStore.configure``, by the same names, kept in Redis."""
        self._specs.setdefault(key, []).extend(
            configured_buckets(
                requests_per_minute,
                tokens_per_minute,
                requests_per_day,
                input_tokens_per_minute,
                output_tokens_per_minute,
                sub_window,
            )
        )

    def _seeds(self, key: str, now: float) -> list[tuple[str, float, float, float]]:
        """The configured buckets with the level each starts at if Redis has lost it."""
        reported = self._reported.get(key, {})
        seeds = []
        for name, capacity, rate in self._specs.get(key, ()):
            last = reported.get(name)
            if last is not None:
                seeds.append((name, last.capacity, last.rate, last.level_at(now)))
            else:
                seeds.append((name, capacity, rate, probe_allowance(capacity, rate)))
        return seeds

    def _learned(self, key: str, now: float) -> list[tuple[str, float, float, float]]:
        """The configured buckets' seeds, and those of the budgets only the vendor reported."""
        return self._seeds(key, now) + self._reported_only(key, now)

    def _reported_only(self, key: str, now: float) -> list[tuple[str, float, float, float]]:
        """The seeds of the budgets the vendor reported and none configured: where Redis lost
        one (a restart, a flush), it starts from the vendor's last word, aged by its refill,
        instead of letting calls through unmetered until the next reply says how few are left."""
        configured = {name for name, _, _ in self._specs.get(key, ())}
        return [
            (name, last.capacity, last.rate, last.level_at(now))
            for name, last in self._reported.get(key, {}).items()
            if name not in configured
        ]

    async def lease(self, key: str, cost: Cost, now: float) -> Lease | float:
        blocked = self._blocked.get(key)
        if blocked is not None:
            if blocked > now:
                return blocked - now
            del self._blocked[key]
        if cost.requests == 1 and self.degraded_since is None:
            allowance = self._allowances.get(key)
            if allowance is None:
                allowance = self._allowances[key] = _Allowance()
            if now < allowance.until and allowance.fits(cost):
                # The hot path: a call of the batch in hand, no round trip.
                allowance.take(cost)
                if allowance.refilling is None and (
                    allowance.low() or now >= allowance.until - _BATCH_EARLY
                ):
                    allowance.refilling = self._spawn(self._refill(key, allowance))
                return Lease(key, 1, cost.tokens, cost.output_tokens, charged=_FROM_BATCH)
            got = await self._lease_batch(key, allowance, cost)
            if got is not None:
                return got
        if self._reachable():
            try:
                wait = await self.scripts.lease(
                    budget_key(self.prefix, key),
                    cost.requests,
                    cost.tokens,
                    self._seeds(key, now),
                    output=cost.output_tokens,
                    learned=self._reported_only(key, now),
                )
            except self.errors as exc:
                self._down(exc)
            else:
                self._up()
                if wait > 0:
                    return wait
                return Lease(key, cost.requests, cost.tokens, cost.output_tokens)
        got = await self._fallback.lease(key, cost, now)
        if isinstance(got, Lease):
            self._spent(key, cost.requests, cost.tokens)
        return got

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A background task the store waits for when it closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _lease_batch(
        self, key: str, allowance: _Allowance, cost: Cost
    ) -> Lease | float | None:
        """A call from a new batch, once the refill on its way (or one started now) is in:
        the batch in hand ran out, went stale or does not hold this call's tokens. None if
        Redis could not be reached."""
        while True:
            task = allowance.refilling
            if task is None:
                task = allowance.refilling = self._spawn(self._refill(key, allowance, cost))
            if not await asyncio.shield(task):
                return None
            if self.clock() < allowance.until and allowance.fits(cost):
                allowance.take(cost)
                return Lease(key, 1, cost.tokens, cost.output_tokens, charged=_FROM_BATCH)
            if allowance.wait > 0:
                return allowance.wait
            # Other calls spent the refill first, or it was leased for less: another.

    async def _refill(self, key: str, allowance: _Allowance, need: Cost | None = None) -> bool:
        """Lease the member's next batch of calls and tokens (``_LEASE_BATCH``); False if
        Redis could not be reached. A stale batch is given back with it; a fresh one's calls and
        tokens are kept (and stay fresh as long as the new one, since Redis has seen no block
        since), unless the member is now blocked. ``need``: the call waiting for this batch
        because the one in hand does not hold its tokens: its tokens are given back (debts
        paid) and the new batch holds the call's whole cost at least, or says how long until
        it would (never, if it is more than a whole budget)."""
        try:
            sent_at = self.clock()
            back = 0
            token_back = [0, 0, 0]
            if sent_at >= allowance.until:
                back, allowance.calls = allowance.calls, 0
            if sent_at >= allowance.until or need is not None:
                token_back, allowance.tokens = allowance.tokens, [0, 0, 0]
            target = min(_BATCH_MAX, 2 * max(1, allowance.spent))
            want = max(0 if allowance.calls else 1, target - allowance.calls)
            needed = token_amounts(need) if need is not None else (0, 0, 0)
            tokens = [
                (
                    max(needed[k], 2 * allowance.token_spent[k] - allowance.tokens[k]),
                    needed[k],
                    token_back[k],
                )
                for k in range(len(TOKEN_KINDS))
            ]
            allowance.spent = 0
            allowance.token_spent = [0, 0, 0]
            # The reports waiting for their time go with it (and are lost with it on a failure:
            # they are this process's seeds meanwhile).
            reports = self._reports.pop(key, {})
            if reports:
                self._report_after[key] = asyncio.get_running_loop().time() + _BATCH_FRESH
            try:
                batch = await self.scripts.lease_batch(
                    budget_key(self.prefix, key),
                    want,
                    back,
                    self.fleet or 1,
                    self._seeds(key, sent_at),
                    reports=list(reports.items()),
                    learned=self._reported_only(key, sent_at),
                    tokens=tokens,
                )
            except self.errors as exc:
                self._down(exc)
                return False
            self._up()
            slots = self._slots.get(key)
            if batch.open_for > 0 and slots is not None and slots.lane is not None:
                # Another process's breaker opened: this one's opens for the rest of it.
                slots.lane.breaker.trip(batch.open_for)
            if batch.starved and slots is not None and slots.held and not slots.wanting():
                # Another process waits for slots: claim, to learn this one's fair share (and
                # give back, as calls end, what is over it).
                slots._start_claim()
            if batch.blocked > 0:
                # Not given back: they stay unused, as in ``block`` (a debt is kept).
                allowance.calls = 0
                allowance.tokens = [min(0, t) for t in allowance.tokens]
            allowance.calls += batch.grant
            allowance.size = allowance.calls
            allowance.limited = tuple(g is not None for g in batch.tokens)
            for k, granted in enumerate(batch.tokens):
                # A budget the member does not have holds nothing (and owes nothing).
                allowance.tokens[k] = 0 if granted is None else allowance.tokens[k] + granted
            allowance.token_size = list(allowance.tokens)
            allowance.wait = batch.wait
            allowance.until = sent_at + _BATCH_FRESH
            return True
        finally:
            allowance.refilling = None

    async def _give_back(self) -> None:
        """Return the calls and tokens of the batches not spent (the store is closing), and pay
        their token debts."""
        allowances, self._allowances = self._allowances, {}
        for key, allowance in allowances.items():
            if allowance.calls > 0 or any(allowance.tokens):
                await self.scripts.lease_batch(
                    budget_key(self.prefix, key),
                    0,
                    allowance.calls,
                    1,
                    self._seeds(key, self.clock()),
                    learned=self._reported_only(key, self.clock()),
                    tokens=[(0, 0, t) for t in allowance.tokens],
                )

    async def settle(self, lease: Lease, tokens_used: int, now: float) -> None:
        # Without a split, the usage is taken as the reservation's own split.
        output = min(lease.output_tokens, tokens_used)
        await self.settle_usage(lease, tokens_used - output, output, now)

    async def settle_usage(
        self, lease: Lease, input_tokens: int, output_tokens: int, now: float
    ) -> None:
        used = input_tokens + output_tokens
        if lease.tokens == used and lease.output_tokens == output_tokens:
            return
        if lease.charged is _FROM_BATCH:
            # Settled with the batch in hand, without a round trip: what the call did not use
            # goes back to it, the extra is taken from it; the next batch returns or pays it.
            allowance = self._allowances.get(lease.key)
            if allowance is None:
                allowance = self._allowances[lease.key] = _Allowance()
            allowance.settle(lease, (used, input_tokens, output_tokens))
            return
        if self._reachable():
            try:
                await self.scripts.settle(
                    budget_key(self.prefix, lease.key),
                    (lease.tokens, lease.output_tokens),
                    (used, output_tokens),
                )
            except self.errors as exc:
                self._down(exc)
            else:
                return
        self._spent(lease.key, 0, used - lease.tokens)
        await self._fallback.settle_usage(lease, input_tokens, output_tokens, now)

    async def report(
        self,
        key: str,
        headers: RateHeaders,
        now: float,
        lease: Lease | None = None,
        refused: bool = False,
    ) -> None:
        # ``lease`` is not reconciled: the shared budget is spent by other processes' calls too,
        # which no lease here marks (the headers' remaining lowers it, as before).
        if not headers.windows:
            return
        mine = self._reported.setdefault(key, {})
        for kind, window in headers.windows.items():
            if window.limit is not None and window.remaining is not None:
                rate = window.limit / _PER_MINUTE
                if window.reset_in and window.limit > window.remaining:
                    rate = (window.limit - window.remaining) / window.reset_in
                mine[kind] = _Reported(
                    float(window.limit), rate, float(min(window.remaining, window.limit)), now
                )
        if self._reachable():
            pending = self._reports.get(key)
            if pending is not None:
                pending.update(headers.windows)  # sent with the report already waiting
                return
            loop_now = asyncio.get_running_loop().time()
            if loop_now < self._report_after.get(key, -math.inf):
                self._reports[key] = dict(headers.windows)
                if key not in self._reporting:
                    self._reporting[key] = self._spawn(self._report_later(key))
                return
            self._report_after[key] = loop_now + _BATCH_FRESH
            if await self._send_report(key, headers.windows):
                return
        await self._report_share(key, headers.windows, now, headers.retry_after)

    async def _report_share(
        self,
        key: str,
        windows: Mapping[str, Window],
        now: float,
        retry_after: float | None = None,
    ) -> None:
        """What the vendor says is the fleet's: while Redis is away, this process learns its
        share of it (a whole limit would let each process spend the fleet's refill)."""
        share = self.share()
        await self._fallback.report(
            key,
            RateHeaders(
                {
                    kind: Window(
                        None if w.limit is None else max(1, math.floor(w.limit * share)),
                        None if w.remaining is None else math.floor(w.remaining * share),
                        w.reset_in,
                    )
                    for kind, w in windows.items()
                },
                retry_after,
            ),
            now,
        )

    async def _send_report(self, key: str, windows: Mapping[str, Window]) -> bool:
        try:
            await self.scripts.report(budget_key(self.prefix, key), list(windows.items()))
        except self.errors as exc:
            self._down(exc)
            return False
        self._up()
        return True

    async def _report_later(self, key: str) -> None:
        """Send the member's reports that came within ``_BATCH_FRESH`` of its last one, as one
        (each window as last reported), unless the next budget batch took them first: a vendor
        that reports its budgets on every answer costs no round trip of its own while calls
        flow, and one per ``_BATCH_FRESH`` at most otherwise."""
        loop = asyncio.get_running_loop()
        try:
            # Each budget batch that takes the reports waiting puts the time off again.
            while True:
                delay = self._report_after[key] - loop.time()
                if delay <= 0:
                    break
                await asyncio.sleep(min(_BATCH_FRESH, delay))
        finally:
            self._reporting.pop(key, None)
        await self._flush_report(key)

    async def _flush_report(self, key: str) -> None:
        windows = self._reports.pop(key, None)
        if windows is None:
            return
        self._report_after[key] = asyncio.get_running_loop().time() + _BATCH_FRESH
        if not (self._reachable() and await self._send_report(key, windows)):
            await self._report_share(key, windows, self.clock())

    async def block(self, key: str, until: float) -> float:
        # The batch in hand is not spent during the block (nor given back: it stays unused).
        self._allowances.pop(key, None)
        now = self.clock()
        if self._reachable():
            try:
                left = await self.scripts.block(
                    budget_key(self.prefix, key),
                    max(0.0, until - now),
                    channel=self.channel,
                    sender=self.process,
                )
            except self.errors as exc:
                self._down(exc)
            else:
                return self._known_block(key, now + left)
        until = self._known_block(key, await self._fallback.block(key, until))
        self._unannounced[key] = until
        return until

    def _known_block(self, key: str, until: float) -> float:
        """This process knows the member is blocked until ``until`` (its clock): its calls wait
        without asking Redis, and still wait if Redis becomes unreachable meanwhile (the
        degraded budgets know nothing of it)."""
        until = max(until, self._blocked.get(key, -math.inf))
        self._blocked[key] = until
        return until

    async def current(self, key: str, now: float) -> dict[str, Window]:
        if not self._reachable():
            return await self._fallback.current(key, now)
        try:
            blocked, buckets = await self.scripts.current(budget_key(self.prefix, key))
        except self.errors as exc:
            self._down(exc)
            return await self._fallback.current(key, now)
        self._up()
        seen: dict[str, Window] = {}
        for name, (capacity, level, rate) in buckets.items():
            missing = capacity - level
            seen[name] = Window(
                int(capacity),
                math.floor(level),
                missing / rate if missing > 0 and rate > 0 else 0.0,
            )
        if blocked > 0:
            seen["blocked"] = Window(None, None, blocked)
        return seen

    # -- concurrency -------------------------------------------------------------------------

    def slots(self, key: str, limit: int) -> SharedSlots:
        found = self._slots.get(key)
        if found is None:
            found = self._slots[key] = SharedSlots(self, key, limit)
            self._by_key[found.keys[2]] = found
        return found

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat_forever())
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen_forever())

    async def _read_limits(self) -> None:
        """Adopt each member's fleet limit as Redis has it now (one read each, not a claim: the
        batches stay as their last claim sized them)."""
        for slots in list(self._slots.values()):
            limit = await self.client.hget(slots.keys[2], "limit")
            if limit and not slots._adapting:
                slots.adopt(int(limit))

    async def _listen_forever(self) -> None:
        """Hear the fleet's announcements (see ``_signal``) for as long as the store is open.

        Pub/sub, not a shorter refill interval, carries a 429's block to the other processes:
        an announcement reaches every listener within one Redis hop whatever its traffic, and
        costs one message per block, where a refill interval short enough to bound the delay
        (under 250 ms with the round trip) would cost every busy process a round trip per
        interval for nothing, most of the time. Announcements are at most once (a listener that
        is reconnecting misses them), so the refills and heartbeats still carry the same state:
        they bound the delay when one is lost."""
        while not self._closing:
            try:
                if self.cluster:
                    # The cluster's pub/sub picks a node by the channel's slot: it needs the
                    # slot map, which a client has only once it has sent a command.
                    await cast("RedisCluster", self.client).initialize()
                pubsub = self.client.pubsub()
            except self.errors as exc:
                self._listener_lost(exc)
                await asyncio.sleep(_REDIS_RETRY)
                continue
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                # The fleet's limits as they are now: a change made before this process
                # listened was announced to the others only.
                if self._reachable():
                    await self._read_limits()
                while not self._closing:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_LISTEN_WAIT
                    )
                    if message is not None and message.get("type") == "message":
                        self._signal(message["data"])
            except self.errors as exc:
                self._listener_lost(exc)
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call] # redis-py leaves it untyped
            if not self._closing:
                await asyncio.sleep(_REDIS_RETRY)

    def _listener_lost(self, exc: BaseException) -> None:
        # The calls' own scripts notice an unreachable Redis and degrade; the listener only
        # tries again.
        logger.debug(
            "Redis listener lost (%s); trying again",
            type(exc).__name__,
            extra={"backend": "-", "request_id": "-"},
        )

    def _signal(self, data: bytes | str) -> None:
        """Another process announced a block ("block <sender> <seconds> <key>": its 429) or a
        new fleet limit ("limit <sender> <limit> <key>"). A block drops the batch in hand, so
        the calls wait it out without asking Redis, and marks the lane's gate blocked; a limit is
        adopted. Announcements of lanes this process does not have, and its own, are ignored."""
        text = data.decode() if isinstance(data, bytes) else data
        parts = text.split(" ", 3)
        if len(parts) != 4 or parts[1] == self.process:
            return
        kind, _, value, key = parts
        slots = self._by_key.get(key)
        try:
            number = float(value)
        except ValueError:
            return
        if slots is None or not math.isfinite(number):
            return
        self.signals += 1
        if kind == "block":
            self._allowances.pop(slots.member, None)
            until = self._known_block(slots.member, self.clock() + number)
            gate = None if slots.lane is None else slots.lane.gate
            if gate is not None:
                gate.blocked_until = max(gate.blocked_until, until)
        elif kind == "limit":
            slots.adopt(int(number))

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if not self._reachable():
                continue
            try:
                await self.beat()
            except self.errors as exc:
                # Not renewed: the slots lapse after lease_ttl and come back when Redis does.
                self._down(exc)
            else:
                self._up()

    async def beat(self, now: float | None = None, *, leaving: bool = False) -> None:
        """Renew this process's lease and set its batch of slots (``_CLAIM``) for every member:
        one script per member (each on its own Cluster slot), pipelined into one round trip.
        Each batch is sized from its peak since the last beat, which starts again. ``leaving``:
        the batches shrink to the slots in use, and the members that have none drop their lease
        (the store is closing)."""
        members = list(self._slots.values())
        if not members:
            return
        await self.scripts.load()
        async with contextlib.AsyncExitStack() as locks:
            for slots in members:
                await locks.enter_async_context(slots._lock)
            calls = []
            for slots in members:
                in_use = slots.busy + slots.local
                want = slots._want()
                slots.peak = in_use + slots._asking + len(slots._waiters)
                if leaving:
                    want = 0 if in_use else -1
                keep = slots._keep(max(0, want))
                slots._wanted = want
                args = self.scripts.claim_args(
                    self.process, slots.limit, self.lease_ttl, keep, want, now, slots.held
                )
                calls.append((list(slots.keys), args))
            script = self.scripts.claim_script
            sent_at = self.clock()
            results: list[Any]
            try:
                if self.cluster or len(calls) == 1:
                    # One script per member, each sent to its slot's node, all at once (a
                    # pipeline would ask first whether Redis has the script: a round trip more).
                    results = list(
                        await asyncio.gather(
                            *(script(keys=keys, args=args) for keys, args in calls)
                        )
                    )
                else:
                    async with cast("Redis", self.client).pipeline(transaction=False) as pipe:
                        for keys, args in calls:
                            await script(keys=keys, args=args, client=pipe)
                        results = await pipe.execute()
            except BaseException:
                for slots in members:
                    slots._usable = slots.held
                raise
            self.heartbeats += 1
            before = self.fleet
            counted = 1
            for slots, reply in zip(members, results, strict=True):
                claimed = Claimed.of(reply)
                counted = max(counted, claimed.fleet)
                slots._apply(claimed, sent_at)
        # The count falls by one process a heartbeat at most (a claim between heartbeats only
        # raises it): after a restart or a flush the processes register again one by one, and a
        # process that went degraded meanwhile would keep the whole limit for itself if it
        # believed the first count (a restart under four workers: 10 of 17 requests answered 429
        # while Redis was away).
        self.fleet = counted if before is None else max(counted, before - 1)

    async def aclose(self) -> None:
        """Stop the heartbeat, give back the slots still held, close the connections."""
        self._closing = True
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeat = self._listener = None
        for reporting in list(self._reporting.values()):
            reporting.cancel()  # waiting for its time: the reports go now
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for key in list(self._reports):
            with contextlib.suppress(Exception):
                await self._flush_report(key)
        for slots in self._slots.values():
            claiming = slots._claiming
            if claiming is not None:
                with contextlib.suppress(Exception):
                    await claiming
        with contextlib.suppress(Exception):
            await self.beat(leaving=True)
        with contextlib.suppress(Exception):
            await self._give_back()
        repaying = self._repaying
        if repaying is not None:
            with contextlib.suppress(Exception):
                await repaying
        await self.client.aclose()


def probe_allowance(capacity: float, rate: float) -> float:
    """Where a budget Redis has lost starts when the vendor has reported nothing: one second's
    refill (at least one unit, at most the capacity), so the first calls go out and their replies'
    headers say the rest."""
    return min(capacity, max(1.0, rate))
