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

What a call costs (``RateGate.cost``): one request, and tokens reserved before it is sent, the
input estimated from its JSON body (``estimate_tokens``: about four characters a token, or the
``RateLimits.estimator``), the output from its ``max_tokens`` (or the vendor's name for it), else
``RateLimits.default_output_tokens`` for a call that generates. Embeddings and the like reserve
input only; file, batch and fine-tuning management costs nothing, not even a request. The reply's
usage settles the reservation (a stream's final usage); an attempt the server answered with an
error gives its tokens back (the vendors do not count them), while one that timed out or broke
keeps its reservation, since the server may have done the work. Groq and Anthropic do not count
tokens read from a prompt cache (``RateDialect.counts_cached_tokens``), so those are settled as
unused. A call larger than a whole budget fails at once with ``BudgetExceededError``.

Budgets are configured (``RateLimits``) or learned: the HTTP layer hands the headers of every
reply whose backend speaks a dialect (``RateDialect``) to ``learn_limits``, which costs a backend
that speaks none one attribute check, and one header look-up for a reply that carries no
budgets. From the first reply that names a limit the lane waits for its budgets proactively, as
a configured one does; a call that passed the gate before that (its lease has none of the new
budgets: ``uncounted``) is charged in them when it leaves the slot queue (``extend``), waiting
for them without its slot. A reply's ``remaining`` only ever lowers what the store holds: it does
not know of the calls still in flight, which the store has already reserved. The in-memory store
also reconciles each reply with what it held when that call was sent (the lease's ``marks``,
taken by ``sending``; ``TokenBucket.reconcile``): what the vendor counted and the store did not
(calls sent before the first reply, another program on the key, tokens the vendor keeps although
the reply used fewer) is taken off once, and an error answer that left its request uncounted
gives it back.

The header parsers read every dialect the vendors speak, and never raise: a missing, malformed or
negative (``-1``: "no such limit") value is None.

* OpenAI and Groq: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset a Go
  duration (``6m0s``, ``12ms``) until the budget is whole again. Groq's request limit is per day.
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
  reset}``, the reset an RFC 3339 time.
* Azure OpenAI: ``x-ratelimit-remaining-{requests,tokens}`` (no reset) and ``retry-after-ms`` /
  ``x-ms-retry-after-ms`` on a 429 (read by ``parse_retry_after``). Its 1 s / 10 s sub-windows
  (a 600-a-minute deployment throttles above 10 requests in a second) are modelled by
  ``RateLimits.sub_window``: a second request budget of the per-minute rate over that window.
* Gemini sends no rate headers: its 429's ``RetryInfo`` blocks the lane (as ``Retry-After``
  does) and its ``QuotaFailure`` names the quota that ran out (``quota_windows``), which becomes
  a learned budget.
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
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from .._constants import DEFAULT_HIGH_RESERVE, DEFAULT_MAX_RATE_WAIT, DEFAULT_OUTPUT_TOKENS
from .._exceptions import (
    BudgetExceededError,
    ClientClosedError,
    ConfigurationError,
    RateLimitError,
)
from ._backoff import parse_retry_after

if TYPE_CHECKING:
    from .._config import RateLimits
    from ._dispatcher import Lane
    from ._redis import SharedSlots

__all__ = [
    "ANTHROPIC_HEADERS",
    "GROQ_HEADERS",
    "KINDS",
    "OPENAI_HEADERS",
    "TOKEN_KINDS",
    "BudgetStore",
    "Cost",
    "Lease",
    "MemoryBudgetStore",
    "RateDialect",
    "RateGate",
    "RateHeaders",
    "TokenBucket",
    "Window",
    "block_lane",
    "estimate_tokens",
    "learn_limits",
    "limit_lane",
    "parse_duration",
    "parse_rate_headers",
    "parse_rfc3339",
    "quota_windows",
    "read_windows",
    "share_lane",
]

# Priority.HIGH's value (the dispatcher, which defines it, imports this module): calls this
# urgent or more may spend a budget's reserve (``RateGate.reserve``).
_HIGH = 0
# Where a call that holds its slot waits for its budget: after HIGH calls, before the rest.
_SLOTTED = 0.5

# The budgets a vendor can report, by the names its headers use.
KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
TOKEN_KINDS = KINDS[1:]

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


@dataclass(frozen=True, slots=True)
class RateDialect:
    """How a backend reports its budgets, named by its client class (``rate_dialect``).

    ``probe``: a header every reply that reports budgets carries; a reply without it is not
    parsed. ``anthropic``: the headers are ``anthropic-ratelimit-*`` (RFC 3339 resets), not
    ``x-ratelimit-*`` (durations). ``requests_per_day``: the requests budget the headers name is a day's (Groq's), not a
    minute's. ``counts_cached_tokens``: whether prompt tokens read from a cache count against the
    token budgets (not at Groq or Anthropic)."""

    probe: str
    anthropic: bool = False
    requests_per_day: bool = False
    counts_cached_tokens: bool = True


OPENAI_HEADERS = RateDialect("x-ratelimit-remaining-requests")
GROQ_HEADERS = RateDialect(
    "x-ratelimit-remaining-requests", requests_per_day=True, counts_cached_tokens=False
)
ANTHROPIC_HEADERS = RateDialect(
    "anthropic-ratelimit-requests-remaining", anthropic=True, counts_cached_tokens=False
)


def quota_windows(violations: Any) -> dict[str, Window]:
    """The budgets a Gemini ``google.rpc.QuotaFailure`` names as spent: per violation whose
    ``quotaId`` says what and per when (``GenerateRequestsPerMinutePerProjectPerModel``,
    ``...PerDay...``, ``GenerateContentInputTokensPerModelPerMinute``) and whose ``quotaValue``
    is its limit, a ``Window(limit, 0, None)``: none left, refilling at the quota's own rate
    (``RetryInfo``'s delay is when a request is back, not when the budget is whole, and blocks
    the lane on its own). Ids it cannot read are skipped."""
    windows: dict[str, Window] = {}
    for violation in violations if isinstance(violations, list) else ():
        if not isinstance(violation, Mapping):
            continue
        quota_id = violation.get("quotaId")
        value = violation.get("quotaValue")
        limit = _count(str(value)) if isinstance(value, (str, int)) else None
        if not isinstance(quota_id, str) or not limit:
            continue
        name = quota_id.split("-", 1)[0].lower()
        if "perday" in name:
            kind = "requests-per-day" if "requests" in name else None
        elif "perminute" in name:
            if "inputtoken" in name:
                kind = "input-tokens"
            elif "outputtoken" in name:
                kind = "output-tokens"
            elif "token" in name:
                kind = "tokens"
            else:
                kind = "requests" if "requests" in name else None
        else:
            kind = None
        if kind is not None:
            windows[kind] = Window(limit, 0, None)
    return windows


# Per dialect family, the header names of each budget it reports: (kind, limit, remaining, reset).
_OPENAI_NAMES = tuple(
    (
        kind,
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind in ("requests", "tokens")
)
_ANTHROPIC_NAMES = tuple(
    (
        kind,
        f"anthropic-ratelimit-{kind}-limit",
        f"anthropic-ratelimit-{kind}-remaining",
        f"anthropic-ratelimit-{kind}-reset",
    )
    for kind in KINDS
)


def read_windows(
    headers: Mapping[str, str], dialect: RateDialect, now: Callable[[], float] = time.time
) -> dict[str, Window]:
    """The budgets one reply reports in its backend's own dialect: ``parse_rate_headers`` for
    the hot path, which reads only the names the dialect uses and no ``Retry-After`` (a 429's
    delay reaches the dispatcher through its error)."""
    windows: dict[str, Window] = {}
    anthropic = dialect.anthropic
    for kind, limit_name, remaining_name, reset_name in (
        _ANTHROPIC_NAMES if anthropic else _OPENAI_NAMES
    ):
        limit = headers.get(limit_name)
        remaining = headers.get(remaining_name)
        reset = headers.get(reset_name)
        if limit is None and remaining is None and reset is None:
            continue
        if anthropic:
            reset_at = parse_rfc3339(reset)
            reset_in = None if reset_at is None else max(0.0, reset_at - now())
        else:
            reset_in = parse_duration(reset)
        found = _window(_count(limit), _count(remaining), reset_in)
        if found is not None:
            windows[kind] = found
    return windows


# -- budgets -----------------------------------------------------------------------------------


class Cost(NamedTuple):
    """What one call spends: requests (one, or none for file management) and tokens (an estimate
    before sending; the reply's usage settles it). ``tokens`` counts input and output;
    ``output_tokens`` is the part of it that is output (for the vendors' split budgets)."""

    requests: int = 1
    tokens: int = 0
    output_tokens: int = 0


_ONE_REQUEST = Cost(1, 0)
_NOTHING = Cost(0, 0)


def _amount(kind: str, cost: Cost | Lease) -> int:
    """What ``cost`` takes from the budget named ``kind``."""
    if kind == "tokens":
        return cost.tokens
    if kind == "input-tokens":
        return cost.tokens - cost.output_tokens
    if kind == "output-tokens":
        return cost.output_tokens
    if kind.startswith("requests"):
        return cost.requests
    return 0


@dataclass(slots=True)
class TokenBucket:
    """A budget that refills continuously: ``capacity`` at most, ``rate`` units a second. A
    per-minute limit L is ``TokenBucket(L, L / 60)``; the vendors' own are of this shape (their
    reset is the time until the bucket is full again). ``ceiling``: a configured limit, which a
    vendor's reported one never raises (a key shared with other programs gets a smaller share)."""

    capacity: float
    rate: float
    level: float
    updated: float
    ceiling: float = math.inf
    # Leased by calls not yet sent: the vendor cannot have counted it yet.
    pending: float = 0.0
    # What ``reconcile`` has taken off the level so far: a lease's mark counts it, so that the
    # replies of calls sent before a correction do not make it again.
    corrected: float = 0.0

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

    def mark(self) -> float:
        """What the vendor should report left when the request being sent now arrives (the
        level without what calls not yet sent hold), with the corrections so far (see
        ``reconcile``)."""
        return self.level + self.pending + self.corrected

    def reconcile(self, remaining: float, mark: float, refused: float = 0.0) -> None:
        """A call sent at ``mark`` was answered with ``remaining`` left. When the vendor had
        counted what this budget had not (requests sent before the budget was known, another
        program's calls on the same key, tokens it keeps where the reply's usage gave them back
        here), the level drops by the difference, less the corrections made since the call was
        sent. It rises only for an answer that refused the call (``refused``: what the call
        took from this budget) and left more than expected, by that much: the vendor did not
        count it (as the fake does not count a request refused at its concurrency cap).
        A reply to a call it counted never raises the level: its ``remaining`` may predate
        requests sent before it that arrived after it."""
        drift = mark - self.corrected - remaining
        if drift > 0:
            self.level -= drift
            self.corrected += drift
        elif refused and drift < 0:
            # The mark counts the call itself: any more left says it was not counted (the
            # vendor's remaining is whole, the mark need not be, so less than one more is
            # still the whole request).
            self.level = min(self.capacity, self.level + refused)
            self.corrected -= refused

    def learn(
        self,
        window: Window,
        now: float,
        period: float = 60.0,
        mark: float | None = None,
        refused: float = 0.0,
    ) -> None:
        """Take what a response reported: its limit, what is left (which only lowers the level:
        the reply does not know of the calls still in flight, which the level already counts;
        with ``mark``, what the level was when the answered call was sent, it is reconciled
        with that too, see ``reconcile``), and how fast it refills: a whole budget in
        ``period`` at least, faster when the time until it is whole says so."""
        self.refill(now)
        limit = window.limit
        if limit is not None and 0 < limit < self.ceiling and limit != self.capacity:
            self.capacity = float(limit)
            self.rate = self.capacity / period
            mark = None  # taken against another capacity
        if window.remaining is not None:
            remaining = min(self.capacity, float(window.remaining))
            if mark is not None:
                self.reconcile(remaining, mark, refused)
                if refused:
                    return  # a refusal's remaining predates the calls sent since: stale
            self.level = min(self.level, remaining)
            missing = self.capacity - remaining
            if window.reset_in is not None and window.reset_in > 0 and missing > 0:
                self.rate = max(self.capacity / period, missing / window.reset_in)


@dataclass(slots=True)
class Lease:
    """A call's reservation: given back or topped up by ``settle`` when its reply's usage is
    known. ``output_tokens``: the part of ``tokens`` reserved for output."""

    key: str
    requests: int
    tokens: int
    output_tokens: int = 0
    # The in-memory store's: the budgets this lease was charged in, and once its call is sent
    # (``sending``), per budget its ``TokenBucket.mark`` then, for the reply's headers to be
    # reconciled with.
    charged: tuple[str, ...] = field(default=(), compare=False)
    marks: dict[str, float] | None = field(default=None, compare=False)


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
        input_tokens_per_minute: int | None = None,
        output_tokens_per_minute: int | None = None,
        sub_window: float | None = None,
    ) -> None:
        """Set the lane's configured limits (per minute for requests and tokens, per day for
        requests; see ``MemoryBudgetStore.configure``)."""

    def slots(self, key: str, limit: int) -> SharedSlots | None:
        """The lane's concurrency shared with other processes (``limit`` slots in all), or None
        where concurrency is this process's alone."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - a store that holds nothing has nothing to do
        """Let go of what the store holds (connections, leases); the dispatcher's ``aclose``
        calls it."""

    def forget(self, key: str) -> None:  # noqa: B027 - a shared store keeps its lanes' budgets
        """The lane ``key`` closed. A store of this process's budgets drops what it learned of
        that lane, so that a later client given the same name (another key, another server)
        does not start from its predecessor's limits and blocks. A shared store keeps them: the
        name is the fleet's name for one vendor budget, which outlives any one client."""

    @abc.abstractmethod
    async def lease(self, key: str, cost: Cost, now: float) -> Lease | float:
        """Reserve ``cost``: a ``Lease``, or the seconds to wait before it could be had (``inf``
        when it never could: it exceeds a whole budget). A blocked lane's wait is its block."""

    def uncounted(self, lease: Lease) -> bool:
        """Whether the lane has learned a budget since ``lease`` was taken that the lease's call
        would spend from (``extend`` charges it). Not a coroutine, and False unless a store
        learns budgets apart from its leases (the in-memory one)."""
        return False

    async def extend(self, lease: Lease, now: float) -> float:
        """Charge ``lease`` in the budgets it was not charged in (learned since it was taken):
        0 once it is, else the seconds to wait (``inf``: larger than a whole budget)."""
        return 0.0

    def sending(self, lease: Lease) -> None:  # noqa: B027 - a store that reconciles nothing
        """The call holding ``lease`` is being sent now (each attempt has its own lease): a store
        that reconciles the reply's headers with what it held then (``report``'s ``lease``)
        notes it. Not a coroutine: it runs on every attempt of a lane with budgets, and a
        shared store has nothing to note."""

    @abc.abstractmethod
    async def settle(self, lease: Lease, tokens_used: int, now: float) -> None:
        """The reply used ``tokens_used``: give back what the lease over-reserved, or take the
        rest."""

    async def settle_usage(
        self, lease: Lease, input_tokens: int, output_tokens: int, now: float
    ) -> None:
        """Like ``settle``, with the usage split into input and output, for the budgets that
        count them apart. A store without split budgets need not override it."""
        await self.settle(lease, input_tokens + output_tokens, now)

    @abc.abstractmethod
    async def report(
        self,
        key: str,
        headers: RateHeaders,
        now: float,
        lease: Lease | None = None,
        refused: bool = False,
    ) -> None:
        """A response's headers said this of the lane's budgets: learn it. ``lease``: the lease
        of the call the response answered, if it had one (what was left when it was sent);
        ``refused``: the response refused the call (an error status)."""

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


def _period(kind: str) -> float:
    return _PER_DAY if kind == "requests-per-day" else _PER_MINUTE


@dataclass(slots=True)
class _Budgets:
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    blocked_until: float = -math.inf


def configured_buckets(
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
    requests_per_day: int | None,
    input_tokens_per_minute: int | None,
    output_tokens_per_minute: int | None,
    sub_window: float | None,
) -> list[tuple[str, float, float]]:
    """The buckets configured limits make, as (name, capacity, refill per second): every store
    keeps these, by these names. ``sub_window`` adds ``requests-burst``, the per-minute request
    rate held over windows that many seconds long (at most ``requests_per_minute * sub_window /
    60`` at once, never less than one)."""
    buckets = [
        (name, float(limit), limit / period)
        for name, limit, period in (
            ("requests", requests_per_minute, _PER_MINUTE),
            ("tokens", tokens_per_minute, _PER_MINUTE),
            ("input-tokens", input_tokens_per_minute, _PER_MINUTE),
            ("output-tokens", output_tokens_per_minute, _PER_MINUTE),
            ("requests-per-day", requests_per_day, _PER_DAY),
        )
        if limit is not None
    ]
    if sub_window is not None and requests_per_minute is not None:
        rate = requests_per_minute / _PER_MINUTE
        buckets.append(("requests-burst", max(1.0, rate * sub_window), rate))
    return buckets


class MemoryBudgetStore(BudgetStore):
    """The budgets of one process's lanes, in memory. ``configure`` sets a lane's limits (per
    minute for requests and tokens, per day for requests); a vendor's headers, once reported,
    lower what they name (a configured limit is a ceiling: they never raise it) and add the
    budgets the configuration left out."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Budgets] = {}

    def _budgets(self, key: str) -> _Budgets:
        budgets = self._lanes.get(key)
        if budgets is None:
            budgets = self._lanes[key] = _Budgets()
        return budgets

    def forget(self, key: str) -> None:
        self._lanes.pop(key, None)

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
        """Set the lane's configured limits (each starts full). ``sub_window``: also hold the
        per-minute request rate over windows this many seconds long (``requests-burst``: at
        most ``requests_per_minute * sub_window / 60`` at once, never less than one)."""
        buckets = self._budgets(key).buckets
        for name, capacity, rate in configured_buckets(
            requests_per_minute,
            tokens_per_minute,
            requests_per_day,
            input_tokens_per_minute,
            output_tokens_per_minute,
            sub_window,
        ):
            # Its capacity is also its ceiling (no header ever reports a burst window).
            buckets[name] = TokenBucket(capacity, rate, capacity, now, capacity)

    async def lease(self, key: str, cost: Cost, now: float) -> Lease | float:
        budgets = self._lanes.get(key)
        if budgets is None:
            return Lease(key, cost.requests, cost.tokens)
        got = self._charge(budgets, cost, now)
        if isinstance(got, float):
            return got
        return Lease(key, cost.requests, cost.tokens, cost.output_tokens, got)

    @staticmethod
    def _charge(
        budgets: _Budgets, cost: Cost | Lease, now: float, skip: tuple[str, ...] = ()
    ) -> tuple[str, ...] | float:
        """Take ``cost`` from every budget of the lane it spends from (but those in ``skip``),
        from all or none: the names of those charged, or the seconds to wait first."""
        wait = max(0.0, budgets.blocked_until - now)
        needs = []
        for name, bucket in budgets.buckets.items():
            amount = _amount(name, cost)
            if amount and name not in skip:
                needs.append((name, bucket, amount))
                wait = max(wait, bucket.wait_for(amount, now))
        if wait > 0:
            return wait
        for _, bucket, amount in needs:
            bucket.level -= amount
            bucket.pending += amount
        return tuple(name for name, _, _ in needs)

    def uncounted(self, lease: Lease) -> bool:
        budgets = self._lanes.get(lease.key)
        if budgets is None or lease.marks is not None:
            return False
        return any(name not in lease.charged and _amount(name, lease) for name in budgets.buckets)

    async def extend(self, lease: Lease, now: float) -> float:
        budgets = self._lanes.get(lease.key)
        if budgets is None or lease.marks is not None:
            return 0.0
        got = self._charge(budgets, lease, now, lease.charged)
        if isinstance(got, float):
            return got
        lease.charged += got
        return 0.0

    def sending(self, lease: Lease) -> None:
        """Mark what every budget of the lane holds as ``lease``'s call is sent (``report``
        reconciles its reply with it). A lease never sent (its call cancelled while it waited
        for a slot) stays pending: the next reconciled reply takes it off once more."""
        budgets = self._lanes.get(lease.key)
        if budgets is None or lease.marks is not None:
            return
        buckets = budgets.buckets
        for name in lease.charged:
            bucket = buckets.get(name)
            if bucket is not None:
                bucket.pending -= _amount(name, lease)
        lease.marks = {name: bucket.mark() for name, bucket in buckets.items()}

    async def settle(self, lease: Lease, tokens_used: int, now: float) -> None:
        # Without a split, the usage is taken as the reservation's own split.
        output = min(lease.output_tokens, tokens_used)
        await self.settle_usage(lease, tokens_used - output, output, now)

    async def settle_usage(
        self, lease: Lease, input_tokens: int, output_tokens: int, now: float
    ) -> None:
        budgets = self._lanes.get(lease.key)
        if budgets is None:
            return
        used = Cost(0, input_tokens + output_tokens, output_tokens)
        for kind in TOKEN_KINDS:
            bucket = budgets.buckets.get(kind)
            if bucket is not None:
                bucket.refill(now)
                # A reply that used more than was reserved may take the level below zero: the
                # next calls wait for the debt to refill, as the vendor's own budget would.
                change = _amount(kind, lease) - _amount(kind, used)
                bucket.level = min(bucket.capacity, bucket.level + change)

    async def report(
        self,
        key: str,
        headers: RateHeaders,
        now: float,
        lease: Lease | None = None,
        refused: bool = False,
    ) -> None:
        budgets = self._budgets(key)
        marks = None if lease is None else lease.marks
        for kind, window in headers.windows.items():
            bucket = budgets.buckets.get(kind)
            if bucket is None:
                if window.limit is None:
                    continue  # Azure's remaining without a limit: nothing to size a budget by
                bucket = budgets.buckets[kind] = TokenBucket(
                    window.limit, window.limit / _period(kind), window.limit, now
                )
            if marks is None or lease is None:
                bucket.learn(window, now, _period(kind))
            else:
                # Tokens of a refused call come back by ``RateGate.give_back``, not here.
                back = lease.requests if refused and kind.startswith("requests") else 0
                bucket.learn(window, now, _period(kind), marks.get(kind), back)

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


# -- what a call costs ---------------------------------------------------------------------------

# Operations that manage stored things rather than run a model: the vendors count them against
# no request or token budget.
_FREE = ("files.", "batches.", "fine_tuning.", "uploads.")
# Operations that generate, and so reserve output tokens even when they name no maximum.
_GENERATES = frozenset(
    {"chat", "stream_chat", "completions", "generate", "stream_generate", "responses.create"}
)
# Where the vendors put a call's output maximum: top level (OpenAI, Anthropic, Responses), in
# Gemini's generationConfig, Ollama's options, TGI's parameters.
_MAX_OUTPUT = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_NESTED_MAX_OUTPUT = (
    ("generationConfig", "maxOutputTokens"),
    ("options", "num_predict"),
    ("parameters", "max_new_tokens"),
)
# Keys whose strings are no prompt text: names, roles, ids, media (a base64 image read as text
# would count as tens of thousands of tokens).
_NOT_TEXT = frozenset(
    {
        "model",
        "role",
        "type",
        "id",
        "tool_call_id",
        "url",
        "image_url",
        "data",
        "file_data",
        "file_id",
        "file_uri",
        "fileUri",
        "inlineData",
        "inline_data",
        "mime_type",
        "mimeType",
        "media_type",
        "source",
        "detail",
        "format",
        "encoding_format",
        "images",
        "service_tier",
        "user",
        "cache_control",
    }
)


def _characters(value: Any, depth: int = 0) -> int:
    if isinstance(value, str):
        return len(value)
    if depth > 32:
        return 0
    if isinstance(value, Mapping):
        return sum(
            _characters(item, depth + 1) for key, item in value.items() if key not in _NOT_TEXT
        )
    if isinstance(value, (list, tuple)):
        return sum(_characters(item, depth + 1) for item in value)
    return 0


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """The default estimate of a call's input tokens: about four characters a token over the
    text of its body (messages, system, tools, input), leaving out model names, roles, ids and
    media. An estimate to reserve by; the reply's usage settles it."""
    return -(-_characters(body) // 4)


def _max_output(body: Mapping[str, Any]) -> int | None:
    for key in _MAX_OUTPUT:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    for outer, key in _NESTED_MAX_OUTPUT:
        inner = body.get(outer)
        if isinstance(inner, Mapping):
            value = inner.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def used_tokens(answer: Any, counts_cached: bool) -> tuple[int, int] | None:
    """The input and output tokens a reply's usage reports, as the vendor's budgets count them
    (without cache reads where ``counts_cached`` is False); None when it reports none."""
    usage = getattr(answer, "usage", None)
    if usage is None:
        return None
    input_tokens = getattr(usage, "prompt_tokens", None)
    output_tokens = getattr(usage, "completion_tokens", None)
    if input_tokens is None and output_tokens is None:  # the Responses API's names
        input_tokens = getattr(usage, "input_tokens", None)
        output_tokens = getattr(usage, "output_tokens", None)
    if not isinstance(input_tokens, int) and not isinstance(output_tokens, int):
        return None
    input_tokens = input_tokens if isinstance(input_tokens, int) else 0
    output_tokens = output_tokens if isinstance(output_tokens, int) else 0
    if not counts_cached:
        cached = getattr(usage, "cached_tokens", None)
        if isinstance(cached, int):
            input_tokens = max(0, input_tokens - cached)
    return input_tokens, output_tokens


# -- the dispatcher's hook -----------------------------------------------------------------------


class RateGate:
    """One lane's door to its budgets. A lane has one while it is blocked, and for good once it
    has configured budgets (``budgeted``). ``blocked_until`` mirrors the store's, so that a call to
    an unblocked lane with no budgets asks nothing of the store.

    Calls that must wait for a budget wait in priority order, then arrival: only the best waiting
    call asks the store for a lease (and sleeps until one could be had); it wakes the next when it
    leaves. A call that arrives while others wait joins them rather than take a budget they are
    waiting for.

    A call leases its budget only while the lane's queue holds less than one limit's worth of
    calls (one round of slots): past that it waits here instead, in the same order, and the best
    waiting call leases when a slot frees (``room_freed``). Otherwise a backlog would lease the
    whole budget at once and hold it while it queued for slots, and a HIGH call coming later
    would find the budget spent by the calls queued ahead of it; with one round queued, a freed
    slot still starts the next call at once (``Lane.fill``), not after a hand-over here. A HIGH
    call waits for no slot here: it leases as soon as it may and goes to the front of the lane's
    queue (which may hold a backlog queued before the lane's budgets were learned).

    ``reserve``: the share of each budget that calls less urgent than ``Priority.HIGH`` leave for
    HIGH ones while calls wait (the lane is throttled): the best waiting call of lower priority
    leases only once its cost leaves that much, so a HIGH call finds a budget at once instead of
    waiting its turn for the refill. A lane with nothing waiting lends it."""

    __slots__ = (
        "_ready_at",
        "_seq",
        "_waiters",
        "blocked_until",
        "budgeted",
        "counts_cached",
        "default_output",
        "estimator",
        "lane",
        "max_wait",
        "reserve",
        "store",
    )

    def __init__(self, lane: Lane, store: BudgetStore) -> None:
        self.lane = lane
        self.store = store
        self.blocked_until = -math.inf
        self.budgeted = False
        self.max_wait = math.inf
        self.estimator: Callable[[Mapping[str, Any]], int] = estimate_tokens
        self.default_output = DEFAULT_OUTPUT_TOKENS
        self.counts_cached = True
        self.reserve = DEFAULT_HIGH_RESERVE
        self._waiters: list[_Waiter] = []
        self._seq = 0
        # When the best waiting call expects its lease: no call behind it is sent sooner.
        self._ready_at = -math.inf

    def cost(self, operation: str, payload: Any) -> Cost:
        """What a call of ``operation`` with the JSON body ``payload`` spends (see the module
        docstring); asked only of a lane with budgets."""
        if operation.startswith(_FREE):
            return _NOTHING
        if not isinstance(payload, Mapping):
            return _ONE_REQUEST
        output = _max_output(payload)
        if output is None:
            output = self.default_output if operation in _GENERATES else 0
        estimated = self.estimator(payload)
        if isinstance(estimated, bool) or not isinstance(estimated, int) or estimated < 0:
            raise ConfigurationError(
                f"RateLimits.estimator returned {estimated!r}, not an int >= 0; not sent"
            )
        return Cost(1, estimated + output, output)

    async def settle(self, lease: Lease, answer: Any) -> None:
        """The call succeeded (or a stream ended) with ``answer``: settle its tokens with the
        usage it reports; with none, the reservation stands."""
        used = used_tokens(answer, self.counts_cached)
        if used is not None:
            now = self.lane.dispatcher.clock()
            await self.store.settle_usage(lease, used[0], used[1], now)

    async def give_back(self, lease: Lease) -> None:
        """The server answered the attempt with an error: it counted no tokens, so the
        reservation comes back (the request stays spent)."""
        if lease.tokens:
            await self.store.settle_usage(lease, 0, 0, self.lane.dispatcher.clock())

    def _refusal(
        self,
        request_id: str,
        wait: float,
        deadline_at: float | None,
        now: float,
        cost: Cost = _ONE_REQUEST,
    ) -> RateLimitError | None:
        """The error of a call that may not wait ``wait`` seconds, or None if it may."""
        lane = self.lane
        blocked = self.blocked_until > now
        if math.isinf(wait):
            lane.rejected += 1
            return BudgetExceededError(
                f"{lane.name}: the call needs {cost.requests} request(s) and about {cost.tokens}"
                f" tokens ({cost.output_tokens} of them output), more than a whole rate budget;"
                " not sent",
                backend=lane.name,
                request_id=request_id,
            )
        if blocked and wait > lane.retry.max_retry_after:
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
        self,
        request_id: str,
        priority: int,
        deadline_at: float | None,
        operation: str = "",
        payload: Any = None,
        slotted: bool = False,
    ) -> Lease | RateLimitError | None:
        """Wait until the call may be sent: the lane's block is over and its budgets hold what
        a call of ``operation`` with the body ``payload`` costs (``cost``). Returns its lease
        (None for a lane with no budgets, only a block), or the error to fail the call with
        instead (see ``_refusal``). ``slotted``: the call already holds its slot, so it waits
        for none."""
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
        cost = self.cost(operation, payload)
        now = clock()
        if not self._waiters and (slotted or priority <= _HIGH or self._has_room()):
            got = await self.store.lease(lane.name, cost, now)
            if isinstance(got, Lease):
                return got
            refusal = self._refusal(request_id, got, deadline_at, now, cost)
            if refusal is not None:
                return refusal
        elif cost.tokens and not await self._fits(cost, now):
            # Too large for any budget: fail now, not once the calls ahead have gone.
            return self._refusal(request_id, math.inf, deadline_at, now, cost)
        return await self._wait_in_turn(request_id, priority, deadline_at, cost, slotted)

    async def extend_now(self, lease: Lease) -> bool:
        """Charge ``lease`` in the budgets learned since it was taken if they hold its cost now
        and no call waits ahead of it; False when it must wait (``extend``)."""
        if self._waiters:
            return False
        return await self.store.extend(lease, self.lane.dispatcher.clock()) <= 0

    async def extend(
        self, request_id: str, priority: int, deadline_at: float | None, lease: Lease
    ) -> Lease | RateLimitError:
        """A call that passed the gate before the lane learned a budget it spends from (it
        then queued for a slot while the first reply named a limit) waits for that budget too,
        in turn, rather than going out uncounted with the backlog: ``lease`` charged in it, or
        the error to fail the call with (see ``_refusal``)."""
        store = self.store
        lane = self.lane
        now = lane.dispatcher.clock()
        cost = Cost(lease.requests, lease.tokens, lease.output_tokens)
        if not self._waiters:
            got = await store.extend(lease, now)
            if got <= 0:
                return lease
            refusal = self._refusal(request_id, got, deadline_at, now, cost)
            if refusal is not None:
                return refusal
        return await self._wait_in_turn(request_id, priority, deadline_at, cost, False, lease)

    async def _fits(self, cost: Cost, now: float) -> bool:
        """Whether ``cost`` fits in every whole budget of the lane."""
        windows = await self.store.current(self.lane.name, now)
        return all(
            window.limit is None or _amount(kind, cost) <= window.limit
            for kind, window in windows.items()
        )

    def _has_room(self) -> bool:
        """Whether the lane's slots and its queue hold less than two limits' worth of calls (see
        the class docstring; its own slots: a dispatcher-wide limit, which frees slots in other
        lanes too, is left to the lane's queue), or it is closed (the call then goes on, to
        fail as any call of a closed lane)."""
        lane = self.lane
        return lane.in_flight + lane.queued < 2 * lane.limit or lane.closed

    def room_freed(self) -> None:
        """The best waiting call may go now: the lane gave a slot back (it may be waiting for
        one), or the call ahead of it left (``_wait_in_turn``)."""
        waiters = self._waiters
        if waiters:
            turn = waiters[0].turn
            if turn is not None and not turn.done():
                turn.set_result(None)

    async def _short_of_reserve(self, cost: Cost, now: float) -> float:
        """Seconds until every budget holds ``cost`` and the HIGH reserve besides (0: now)."""
        wait = 0.0
        for kind, window in (await self.store.current(self.lane.name, now)).items():
            amount = _amount(kind, cost)
            limit, remaining, reset_in = window
            if not amount or limit is None or remaining is None:
                continue
            # Whole units, as ``remaining`` is (rounded: Azure's 25-a-second window keeps one; a
            # budget of 2 keeps none), so the wait below is never short of what the refill needs.
            keep = math.floor(self.reserve * limit + 0.5)
            short = amount + keep - remaining
            if short <= 0 or not keep or amount + keep > limit or not reset_in:
                continue  # enough; or a reserve this call could never leave: it goes as before
            wait = max(wait, short * reset_in / (limit - remaining))
        return wait

    async def _wait_in_turn(
        self,
        request_id: str,
        priority: int,
        deadline_at: float | None,
        cost: Cost,
        slotless: bool = False,
        extending: Lease | None = None,
    ) -> Lease | RateLimitError:
        """Wait with the other calls for a lease of ``cost`` (or for ``extending`` to be charged
        in the budgets it lacks: ``extend``)."""
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
        # A call that holds its slot goes before every call that may wait for a slot (it may be
        # waiting for this one), after the HIGH ones, which wait for none.
        me = _Waiter(min(priority, _SLOTTED) if slotless else priority, self._seq)
        heapq.heappush(self._waiters, me)
        # ``slotless``: the call waits for no slot: it holds one, or it is HIGH (it goes to the
        # front of the lane's queue, behind no backlog), or its deadline passed while it waited
        # for one (the lane's queue then fails it as it fails any call whose deadline passed).
        slotless = slotless or priority <= _HIGH
        try:
            while True:
                first = self._waiters[0] is me
                if not first or not (slotless or self._has_room()):
                    me.turn = asyncio.get_running_loop().create_future()
                    if deadline_at is None:
                        await me.turn
                    else:
                        try:
                            await asyncio.wait_for(me.turn, max(0.0, deadline_at - clock()))
                        except asyncio.TimeoutError:
                            if first:
                                slotless = True
                                continue
                            lane.rejected += 1
                            return RateLimitError(
                                f"{lane.name} is rate limited and the call's deadline passed"
                                " while it waited its turn; not sent",
                                backend=lane.name,
                                request_id=request_id,
                            )
                    continue
                now = clock()
                if self.reserve and priority > _HIGH:
                    short = await self._short_of_reserve(cost, now)
                    if short > 0:
                        refusal = self._refusal(request_id, short, deadline_at, now, cost)
                        if refusal is not None:
                            return refusal
                        # Not ``_ready_at``: a HIGH call coming meanwhile goes at once.
                        await self._sleep(request_id, short)
                        continue
                if extending is None:
                    got = await self.store.lease(lane.name, cost, now)
                    if isinstance(got, Lease):
                        return got
                else:
                    got = await self.store.extend(extending, now)
                    if got <= 0:
                        return extending
                refusal = self._refusal(request_id, got, deadline_at, now, cost)
                if refusal is not None:
                    return refusal
                self._ready_at = now + got
                await self._sleep(request_id, got)
        finally:
            waiters = self._waiters
            if waiters[0] is me:
                heapq.heappop(waiters)  # the usual way out: O(log n) with a backlog waiting
            else:
                waiters.remove(me)
                heapq.heapify(waiters)
            self.room_freed()

    async def _sleep(self, request_id: str, seconds: float) -> None:
        lane = self.lane
        await lane.dispatcher.sleep(seconds)
        if lane.closed:
            raise ClientClosedError(
                "client closed while the call waited out a rate limit",
                backend=lane.name,
                request_id=request_id,
            )


class _Waiter:
    """A call waiting for a budget: ordered by priority, then arrival; ``turn`` is set when it is
    the best waiting call again."""

    __slots__ = ("key", "turn")

    def __init__(self, priority: float, seq: int) -> None:
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


def limit_lane(
    lane: Lane,
    limits: RateLimits,
    store: MemoryBudgetStore | BudgetStore,
    dialect: RateDialect | None = None,
) -> None:
    """Give a new lane its configured budgets: its gate stays for good. ``dialect``, the
    backend's, says whether cached prompt tokens count."""
    store.configure(
        lane.name,
        lane.dispatcher.clock(),
        requests_per_minute=limits.requests_per_minute,
        requests_per_day=limits.requests_per_day,
        tokens_per_minute=limits.tokens_per_minute,
        input_tokens_per_minute=limits.input_tokens_per_minute,
        output_tokens_per_minute=limits.output_tokens_per_minute,
        sub_window=limits.sub_window,
    )
    gate = _gate(lane, store)
    gate.budgeted = True
    gate.max_wait = limits.max_wait
    gate.default_output = limits.default_output_tokens
    gate.reserve = limits.high_reserve
    if limits.estimator is not None:
        gate.estimator = limits.estimator
    if dialect is not None:
        gate.counts_cached = dialect.counts_cached_tokens


async def learn_limits(
    lane: Lane,
    windows: Mapping[str, Window],
    dialect: RateDialect | None = None,
    lease: Lease | None = None,
    refused: bool = False,
) -> None:
    """A reply reported these budgets of the lane (its headers, or Gemini's quota details):
    the store learns them, and from the first that names a limit the lane waits for them before
    sending, as for configured budgets (within the default ``max_wait``). ``lease``: the lease
    of the attempt the reply answered, which the store reconciles the reply with; ``refused``:
    the reply is an error answer."""
    if dialect is not None and dialect.requests_per_day and "requests" in windows:
        windows = {("requests-per-day" if k == "requests" else k): w for k, w in windows.items()}
    store = lane.dispatcher.budgets
    await store.report(lane.name, RateHeaders(windows), lane.dispatcher.clock(), lease, refused)
    gate = lane.gate
    if gate is None or not gate.budgeted:
        if all(window.limit is None for window in windows.values()):
            return  # Azure's remaining counts alone: nothing to wait for
        gate = _gate(lane, store)
        gate.budgeted = True
        gate.max_wait = DEFAULT_MAX_RATE_WAIT
    if dialect is not None:
        gate.counts_cached = dialect.counts_cached_tokens


def share_lane(lane: Lane, store: BudgetStore) -> None:
    """Give a new lane of a shared store its gate for good (another process may block it or
    spend its budgets at any time) and its share of the fleet's concurrency."""
    _gate(lane, store).budgeted = True
    shared = lane.shared = store.slots(lane.name, lane.limits.max_concurrent_requests)
    if shared is not None:
        shared.lane = lane
        if lane.adaptive is not None:
            lane.adaptive.fleet = shared.step
