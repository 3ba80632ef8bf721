"""Rate budgets: what a backend lets us send, so that calls wait here instead of collecting 429s.

Two pieces, kept apart so that the budgets can later live in a shared store (Redis) while the
dispatcher's hook stays the same:

* ``BudgetStore``, the interface of one place that holds every lane's budgets: ``lease`` a call's
  cost before sending it (or learn how long to wait), ``settle`` the lease with what the reply
  used, ``report`` what the vendor's headers said, ``block`` a lane until a time, and read its
  ``current`` limits. ``MemoryBudgetStore`` is the in-process one. Its methods are coroutines
  because a shared store's are; the in-memory one never suspends.
* ``RateGate``, one lane's door: the dispatcher asks it before every attempt of the lane's calls,
  and only when the lane has one (``lane.gate is not None``), so a lane with no limits and no
  block pays one attribute check. A 429 that carries ``Retry-After`` blocks the whole lane until
  then, for every call (the later of the current and the new time), not only the call that got
  it; a call whose wait would pass its deadline, or the lane's ``max_retry_after``, fails at once
  with ``RateLimitError`` carrying ``retry_after``.

The header parsers read every dialect the vendors speak, and never raise: a missing, malformed or
negative (``-1``: "no such limit") value is None.

* OpenAI and Groq: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset a Go
  duration (``6m0s``, ``12ms``) until the budget is whole again. Groq's request limit is per day.
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
  reset}``, the reset an RFC 3339 time.
* Azure OpenAI: ``x-ratelimit-remaining-{requests,tokens}`` (no reset) and ``retry-after-ms`` /
  ``x-ms-retry-after-ms`` on a 429 (read by ``parse_retry_after``).
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from .._exceptions import ClientClosedError, RateLimitError
from ._backoff import parse_retry_after

if TYPE_CHECKING:
    from .._config import RateLimits
    from ._dispatcher import Lane
    from ._redis import SharedSlots

__all__ = [
    "KINDS",
    "BudgetStore",
    "Cost",
    "Lease",
    "MemoryBudgetStore",
    "RateGate",
    "RateHeaders",
    "TokenBucket",
    "Window",
    "block_lane",
    "limit_lane",
    "parse_duration",
    "parse_rate_headers",
    "parse_rfc3339",
    "share_lane",
]

# The budgets a vendor can report, by the names its headers use.
KINDS = ("requests", "tokens", "input-tokens", "output-tokens")

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds from a Go-style duration as OpenAI and Groq send it ("2m59.56s", "7.66s",
    "12ms", "1h0m0s"); a bare number counts as seconds. None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos = 0
        seconds = 0.0
        while pos < len(text):
            match = _PART.match(text, pos)
            if match is None:
                return None
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_FRACTION = re.compile(r"\.(\d+)")


def parse_rfc3339(value: str | None) -> float | None:
    """Epoch seconds from an RFC 3339 time as Anthropic sends it ("2024-05-01T12:00:30Z", any
    number of fraction digits); None when absent, unreadable or without a time zone (which
    RFC 3339 requires: a naive time would be read in the machine's zone)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes 3 or 6 fraction digits only.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    try:
        return at.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _count(value: str | None) -> int | None:
    """A non-negative integer header; None when absent, malformed or negative (-1 means none)."""
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        try:
            real = float(value)
        except ValueError:
            return None
        if not math.isfinite(real) or real != int(real):
            return None
        number = int(real)
    return number if number >= 0 else None


class Window(NamedTuple):
    """One budget as a response reported it: its limit, what was left, and seconds until it is
    whole again (None where the header was absent or unreadable)."""

    limit: int | None
    remaining: int | None
    reset_in: float | None


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """What one response said of a backend's budgets: a ``Window`` per kind in ``KINDS`` that any
    header named, and ``retry_after`` (seconds), if given."""

    windows: Mapping[str, Window] = field(default_factory=dict)
    retry_after: float | None = None


def _window(limit: int | None, remaining: int | None, reset_in: float | None) -> Window | None:
    if limit is None and remaining is None and reset_in is None:
        return None
    return Window(limit, remaining, reset_in)


def parse_rate_headers(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> RateHeaders | None:
    """The budgets a response's headers report, in any dialect; None when it reports none.

    ``headers`` is looked up with lower-case names (aiohttp's are case-insensitive); ``now``
    returns wall-clock epoch seconds, for Anthropic's reset times and HTTP dates.
    """
    windows: dict[str, Window] = {}
    wall: float | None = None
    for kind in KINDS:
        found = _window(
            _count(headers.get(f"x-ratelimit-limit-{kind}")),
            _count(headers.get(f"x-ratelimit-remaining-{kind}")),
            parse_duration(headers.get(f"x-ratelimit-reset-{kind}")),
        )
        if found is None:
            reset_at = parse_rfc3339(headers.get(f"anthropic-ratelimit-{kind}-reset"))
            reset_in = None
            if reset_at is not None:
                if wall is None:
                    wall = now()
                reset_in = max(0.0, reset_at - wall)
            found = _window(
                _count(headers.get(f"anthropic-ratelimit-{kind}-limit")),
                _count(headers.get(f"anthropic-ratelimit-{kind}-remaining")),
                reset_in,
            )
        if found is not None:
            windows[kind] = found
    retry_after = parse_retry_after(headers, now)
    if not windows and retry_after is None:
        return None
    return RateHeaders(windows, retry_after)


# -- budgets -----------------------------------------------------------------------------------


class Cost(NamedTuple):
    """What one call spends: requests (one, or none for file management) and tokens (an estimate
    before sending; the reply's usage settles it)."""

    requests: int = 1
    tokens: int = 0


@dataclass(slots=True)
class TokenBucket:
    """A budget that refills continuously: ``capacity`` at most, ``rate`` units a second. A
    per-minute limit L is ``TokenBucket(L, L / 60)``; the vendors' own are of this shape (their
    reset is the time until the bucket is full again)."""

    capacity: float
    rate: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is there (0: now; inf: never, it exceeds the capacity)."""
        self.refill(now)
        if amount <= self.level:
            return 0.0
        if amount > self.capacity or self.rate <= 0:
            return math.inf
        return (amount - self.level) / self.rate

    def learn(self, window: Window, now: float) -> None:
        """Take what a response reported as the truth: its limit, what is left, and (from the
        time until it is whole) how fast it refills."""
        self.refill(now)
        if window.limit is not None and window.limit > 0:
            self.capacity = float(window.limit)
        if window.remaining is not None:
            self.level = min(self.capacity, float(window.remaining))
            if window.reset_in is not None and window.reset_in > 0:
                missing = self.capacity - self.level
                if missing > 0:
                    self.rate = missing / window.reset_in


@dataclass(slots=True)
class Lease:
    """A call's reservation: given back or topped up by ``settle`` when its reply's usage is
    known."""

    key: str
    requests: int
    tokens: int


class BudgetStore(abc.ABC):
    """Where the budgets of every lane (``key``) live. The in-memory store serves one process;
    a shared one (the scale-out issue's Redis store) implements the same five coroutines.

    ``now`` is always the dispatcher's clock (monotonic seconds), passed in so that a store keeps
    no clock of its own and tests drive it with a fake one.

    ``shared``: the store is shared with other processes, so every call of every lane asks it
    (another process's 429 blocks this one's lane) and lanes share their concurrency (``slots``).
    """

    shared: ClassVar[bool] = False

    @abc.abstractmethod
    def configure(
        self,
        key: str,
        now: float,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> None:
        """Set the lane's configured limits (per minute for requests and tokens, per day for
        requests)."""

    def slots(self, key: str, limit: int) -> SharedSlots | None:
        """The lane's concurrency shared with other processes (``limit`` slots in all), or None
        where concurrency is this process's alone."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - a store that holds nothing has nothing to do
        """Let go of what the store holds (connections, leases); the dispatcher's ``aclose``
        calls it."""

    @abc.abstractmethod
    async def lease(self, key: str, cost: Cost, now: float) -> Lease | float:
        """Reserve ``cost``: a ``Lease``, or the seconds to wait before it could be had (``inf``
        when it never could: it exceeds a whole budget). A blocked lane's wait is its block."""

    @abc.abstractmethod
    async def settle(self, lease: Lease, tokens_used: int, now: float) -> None:
        """The reply used ``tokens_used``: give back what the lease over-reserved, or take the
        rest."""

    @abc.abstractmethod
    async def report(self, key: str, headers: RateHeaders, now: float) -> None:
        """A response's headers said this of the lane's budgets: learn it."""

    @abc.abstractmethod
    async def block(self, key: str, until: float) -> float:
        """Block the lane until ``until`` (the later of this and any current block); returns the
        time it is now blocked until."""

    @abc.abstractmethod
    async def current(self, key: str, now: float) -> dict[str, Window]:
        """The lane's budgets as the store sees them now: per kind, limit, left and time until
        whole; ``"blocked"`` holds the seconds of a current block as its ``reset_in``."""


_PER_MINUTE = 60.0
_PER_DAY = 86400.0


@dataclass(slots=True)
class _Budgets:
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    blocked_until: float = -math.inf


class MemoryBudgetStore(BudgetStore):
    """The budgets of one process's lanes, in memory. ``configure`` sets a lane's limits (per
    minute for requests and tokens, per day for requests); a vendor's headers, once reported,
    override what they name."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Budgets] = {}

    def _budgets(self, key: str) -> _Budgets:
        budgets = self._lanes.get(key)
        if budgets is None:
            budgets = self._lanes[key] = _Budgets()
        return budgets

    def configure(
        self,
        key: str,
        now: float,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> None:
        """Set the lane's configured limits (each starts full)."""
        budgets = self._budgets(key)
        for name, limit, period in (
            ("requests", requests_per_minute, _PER_MINUTE),
            ("tokens", tokens_per_minute, _PER_MINUTE),
            ("requests-per-day", requests_per_day, _PER_DAY),
        ):
            if limit is not None:
                budgets.buckets[name] = TokenBucket(limit, limit / period, limit, now)

    async def lease(self, key: str, cost: Cost, now: float) -> Lease | float:
        budgets = self._lanes.get(key)
        if budgets is None:
            return Lease(key, cost.requests, cost.tokens)
        wait = max(0.0, budgets.blocked_until - now)
        needs = []
        for name, bucket in budgets.buckets.items():
            amount = cost.tokens if name.endswith("tokens") else cost.requests
            if amount:
                needs.append((bucket, amount))
                wait = max(wait, bucket.wait_for(amount, now))
        if wait > 0:
            return wait
        for bucket, amount in needs:
            bucket.level -= amount
        return Lease(key, cost.requests, cost.tokens)

    async def settle(self, lease: Lease, tokens_used: int, now: float) -> None:
        budgets = self._lanes.get(lease.key)
        if budgets is None:
            return
        bucket = budgets.buckets.get("tokens")
        if bucket is not None:
            bucket.refill(now)
            # A reply that used more than was reserved may take the level below zero: the next
            # calls wait for the debt to refill, as the vendor's own budget would make them.
            bucket.level = min(bucket.capacity, bucket.level + lease.tokens - tokens_used)

    async def report(self, key: str, headers: RateHeaders, now: float) -> None:
        budgets = self._budgets(key)
        for kind, window in headers.windows.items():
            bucket = budgets.buckets.get(kind)
            if bucket is None:
                if window.limit is None:
                    continue  # Azure's remaining without a limit: nothing to size a budget by
                bucket = budgets.buckets[kind] = TokenBucket(
                    window.limit, window.limit / _PER_MINUTE, window.limit, now
                )
            bucket.learn(window, now)

    async def block(self, key: str, until: float) -> float:
        budgets = self._budgets(key)
        budgets.blocked_until = max(budgets.blocked_until, until)
        return budgets.blocked_until

    async def current(self, key: str, now: float) -> dict[str, Window]:
        budgets = self._lanes.get(key)
        if budgets is None:
            return {}
        seen: dict[str, Window] = {}
        for kind, bucket in budgets.buckets.items():
            bucket.refill(now)
            missing = bucket.capacity - bucket.level
            seen[kind] = Window(
                int(bucket.capacity),
                math.floor(bucket.level),
                missing / bucket.rate if missing > 0 and bucket.rate > 0 else 0.0,
            )
        if budgets.blocked_until > now:
            seen["blocked"] = Window(None, None, budgets.blocked_until - now)
        return seen


# -- the dispatcher's hook -----------------------------------------------------------------------


class RateGate:
    """One lane's door to its budgets. A lane has one while it is blocked, and for good once it
    has configured budgets (``budgeted``). ``blocked_until`` mirrors the store's, so that a call to
    an unblocked lane with no budgets asks nothing of the store.

    Calls that must wait for a budget wait in priority order, then arrival: only the best waiting
    call asks the store for a lease (and sleeps until one could be had); it wakes the next when it
    leaves. A call that arrives while others wait joins them rather than take a budget they are
    waiting for."""

    __slots__ = (
        "_ready_at",
        "_seq",
        "_waiters",
        "blocked_until",
        "budgeted",
        "lane",
        "max_wait",
        "store",
    )

    def __init__(self, lane: Lane, store: BudgetStore) -> None:
        self.lane = lane
        self.store = store
        self.blocked_until = -math.inf
        self.budgeted = False
        self.max_wait = math.inf
        self._waiters: list[_Waiter] = []
        self._seq = 0
        # When the best waiting call expects its lease: no call behind it is sent sooner.
        self._ready_at = -math.inf

    def _refusal(
        self, request_id: str, wait: float, deadline_at: float | None, now: float
    ) -> RateLimitError | None:
        """The error of a call that may not wait ``wait`` seconds, or None if it may."""
        lane = self.lane
        blocked = self.blocked_until > now
        if math.isinf(wait):
            why = "the call is larger than a whole budget"
        elif blocked and wait > lane.retry.max_retry_after:
            why = "the block (Retry-After) outlasts the client's max_retry_after"
        elif not blocked and wait > self.max_wait:
            why = f"the wait outlasts rate_limits.max_wait ({self.max_wait:g}s)"
        elif deadline_at is not None and now + wait >= deadline_at:
            why = "the wait outlasts the call's deadline"
        else:
            return None
        lane.rejected += 1
        return RateLimitError(
            f"{lane.name} is rate limited for {wait:.2f}s more and {why}; not sent",
            backend=lane.name,
            request_id=request_id,
            retry_after=None if math.isinf(wait) else wait,
        )

    async def admit(
        self, request_id: str, priority: int, deadline_at: float | None
    ) -> RateLimitError | None:
        """Wait until the call may be sent: the lane's block is over and its budgets hold one
        more request. Returns the error to fail the call with instead (see ``_refusal``)."""
        lane = self.lane
        clock = lane.dispatcher.clock
        if not self.budgeted:
            while True:
                now = clock()
                wait = self.blocked_until - now
                if wait <= 0:
                    if lane.gate is self:
                        lane.gate = None  # nothing left to guard: one check per call again
                    return None
                refusal = self._refusal(request_id, wait, deadline_at, now)
                if refusal is not None:
                    return refusal
                await self._sleep(request_id, wait)
        if not self._waiters:
            now = clock()
            got = await self.store.lease(lane.name, _ONE_REQUEST, now)
            if isinstance(got, Lease):
                return None
            refusal = self._refusal(request_id, got, deadline_at, now)
            if refusal is not None:
                return refusal
        return await self._wait_in_turn(request_id, priority, deadline_at)

    async def _wait_in_turn(
        self, request_id: str, priority: int, deadline_at: float | None
    ) -> RateLimitError | None:
        lane = self.lane
        clock = lane.dispatcher.clock
        if self._waiters and deadline_at is not None:
            now = clock()
            ahead = self._ready_at - now
            if ahead > 0:
                refusal = self._refusal(request_id, ahead, deadline_at, now)
                if refusal is not None:
                    return refusal
        self._seq += 1
        me = _Waiter(priority, self._seq)
        heapq.heappush(self._waiters, me)
        try:
            while True:
                if self._waiters[0] is not me:
                    me.turn = asyncio.get_running_loop().create_future()
                    if deadline_at is None:
                        await me.turn
                    else:
                        try:
                            await asyncio.wait_for(me.turn, max(0.0, deadline_at - clock()))
                        except asyncio.TimeoutError:
                            lane.rejected += 1
                            return RateLimitError(
                                f"{lane.name} is rate limited and the call's deadline passed"
                                " while it waited its turn; not sent",
                                backend=lane.name,
                                request_id=request_id,
                            )
                    continue
                now = clock()
                got = await self.store.lease(lane.name, _ONE_REQUEST, now)
                if isinstance(got, Lease):
                    return None
                refusal = self._refusal(request_id, got, deadline_at, now)
                if refusal is not None:
                    return refusal
                self._ready_at = now + got
                await self._sleep(request_id, got)
        finally:
            waiters = self._waiters
            waiters.remove(me)
            heapq.heapify(waiters)
            if waiters:
                turn = waiters[0].turn
                if turn is not None and not turn.done():
                    turn.set_result(None)

    async def _sleep(self, request_id: str, seconds: float) -> None:
        lane = self.lane
        await lane.dispatcher.sleep(seconds)
        if lane.closed:
            raise ClientClosedError(
                "client closed while the call waited out a rate limit",
                backend=lane.name,
                request_id=request_id,
            )


_ONE_REQUEST = Cost(1, 0)


class _Waiter:
    """A call waiting for a budget: ordered by priority, then arrival; ``turn`` is set when it is
    the best waiting call again."""

    __slots__ = ("key", "turn")

    def __init__(self, priority: int, seq: int) -> None:
        self.key = (priority, seq)
        self.turn: asyncio.Future[None] | None = None

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


def _gate(lane: Lane, store: BudgetStore) -> RateGate:
    gate = lane.gate
    if gate is None:
        gate = lane.gate = RateGate(lane, store)
    return gate


async def block_lane(lane: Lane, seconds: float, store: BudgetStore) -> None:
    """A 429 asked for ``seconds``: block every call of the lane until then (the later of the
    current block and the new one)."""
    until = await store.block(lane.name, lane.dispatcher.clock() + seconds)
    gate = _gate(lane, store)
    gate.blocked_until = max(gate.blocked_until, until)


def limit_lane(lane: Lane, limits: RateLimits, store: BudgetStore) -> None:
    """Give a new lane its configured budgets: its gate stays for good."""
    if limits.requests_per_minute is None and limits.requests_per_day is None:
        return
    store.configure(
        lane.name,
        lane.dispatcher.clock(),
        requests_per_minute=limits.requests_per_minute,
        requests_per_day=limits.requests_per_day,
    )
    gate = _gate(lane, store)
    gate.budgeted = True
    gate.max_wait = limits.max_wait


def share_lane(lane: Lane, store: BudgetStore) -> None:
    """Give a new lane of a shared store its gate for good (another process may block it or
    spend its budgets at any time) and its share of the fleet's concurrency."""
    _gate(lane, store).budgeted = True
    shared = lane.shared = store.slots(lane.name, lane.limits.max_concurrent_requests)
    if shared is not None:
        shared.lane = lane
