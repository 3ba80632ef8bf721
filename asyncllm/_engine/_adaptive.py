"""Adaptive concurrency: a lane's concurrency limit follows the server's overload signals.

The lane's ``limit`` starts at its ``max_concurrent_requests`` and slot acceptance reads it, not
the configured maximum: a lane with limit L has at most L calls in flight, and when the limit
falls below the calls in flight, none starts until enough have finished; the waiting calls keep
their priority order, since ``Lane.fill`` still starts the best of them first. A stream holds its
slot until it ends, so it counts like any call.

Which signal feeds which mechanism (see ``AdaptiveConcurrency`` for the rule and its numbers):

* 503, 529, and an attempt that timed out after it was sent: the server is overloaded, so the
  limit shrinks multiplicatively, once per window. This is per attempt; the breaker still
  counts a call whose retries all ended so as one failure (``breaker_verdict``), since a server
  that answers nothing but 503 is down for its callers and the breaker is what fails them fast.
* 429: the rate gate's (``_ratelimit``): its headers adjust the budgets, its Retry-After blocks
  the lane. Shrinking concurrency for it as well would punish the same cause twice.
* Connection errors (a connect timeout included: nothing was sent) and other 5xx: the breaker's.

The window of a decrease ends when every attempt in flight at the decrease has finished (their
failures describe the load before the decrease) and ``min_interval`` has passed. The window has
one decrease, sized by what the window sees: ``decrease_factor`` at its first overload signal,
and, as more of the attempts in flight at the decrease are refused, down to their number less
the refused ones (never below half the limit before it). At a server's concurrency cap every
attempt over the cap is refused, so those refusals count how far over it the lane was: the limit
lands on the cap within one window, where the factor alone, once a second, would take seconds
of refusals (a burst of a few hundred calls is over before a second decrease). Attempts sent
after the decrease count for nothing in its window: they went out under the new limit.

Through Redis (``Dispatcher(redis_url=...)``) the limit is the fleet's: each decrease that opens
a window, and each increase, is told to the store (``AdaptiveLimit.fleet``), which applies it to
the fleet's limit at most once per ``min_interval`` for the whole fleet and hands every process
the result (``adopt``: another process's decrease opens a window here too); see ``_redis``. The
shrinking within a window stays the process's own (it counts the refusals of its own calls). In
one process nothing of this runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._exceptions import APIError, APITimeoutError
from ._tracking import RequestRecord, RequestStatus

if TYPE_CHECKING:
    from .._config import AdaptiveConcurrency
    from ._dispatcher import Lane

__all__ = ["OVERLOAD_STATUSES", "AdaptiveLimit", "is_overload"]

# The statuses by which a server says it is overloaded: 503 (Service Unavailable) and 529
# (Anthropic's Overloaded).
OVERLOAD_STATUSES = frozenset({503, 529})


def is_overload(error: APIError) -> bool:
    """Whether an attempt's error says the server is overloaded (see the module docstring)."""
    if error.status_code is not None:
        return error.status_code in OVERLOAD_STATUSES
    return isinstance(error, APITimeoutError) and not error.unsent


class AdaptiveLimit:
    """One lane's AIMD state: its counters and the window of its last decrease. The limit
    itself is ``lane.limit``, which slot acceptance reads."""

    __slots__ = (
        "_floor",
        "_held",
        "_held_count",
        "_held_ids",
        "_last_change",
        "_last_decrease",
        "_refused",
        "_successes",
        "config",
        "decreases",
        "fleet",
        "increases",
    )

    def __init__(self, config: AdaptiveConcurrency) -> None:
        self.config = config
        self.decreases = 0
        self.increases = 0
        self._last_decrease = self._last_change = -math.inf
        # Successes at high utilisation since the last change of the limit.
        self._successes = 0
        # The attempts in flight at the last decrease, as (record, its attempt number).
        self._held: list[tuple[RequestRecord, int]] = []
        # The last decrease's window: how many attempts were in flight at it, how many overload
        # signals it has had since, and the lowest the limit may go in it.
        self._held_count = 0
        self._held_ids: frozenset[tuple[str, int]] = frozenset()
        self._refused = 0
        self._floor = 1
        # Told of each decrease that opens a window (-1) and each increase (+1): set by the
        # Redis store, which makes it the fleet's and answers with ``adopt``.
        self.fleet: Callable[[int], None] | None = None

    def _in_window(self, now: float) -> bool:
        """Whether the last decrease's window is still open (see the module docstring)."""
        if now - self._last_decrease < self.config.min_interval:
            return True
        held = self._held
        if held:
            self._held = held = [
                (record, attempt)
                for record, attempt in held
                if record.status is RequestStatus.RUNNING and record.attempts == attempt
            ]
        return bool(held)

    def overloaded(self, lane: Lane, error: APIError) -> bool:
        """An attempt of the lane failed with ``error``: shrink the limit if it is an overload
        signal, by the factor when the last decrease's window is over, else to what the window's
        refusals show (see the module docstring). True if the limit shrank."""
        if not is_overload(error) or lane.limit <= 1:
            return False
        dispatcher = lane.dispatcher
        now = dispatcher.clock()
        if self._in_window(now):
            if (error.request_id, error.attempts) not in self._held_ids:
                return False
            self._refused += 1
            admitted = max(self._floor, self._held_count - self._refused)
            if admitted >= lane.limit:
                return False
            lane.limit = admitted
            self._successes = 0
            return True
        held = dispatcher.tracker.running(lane.name)
        self._floor = max(1, lane.limit // 2)
        # The attempts in flight, this one included (the tracker may have dropped its record).
        self._held_count = max(len(held), lane.in_flight)
        self._refused = 1
        lane.limit = max(
            1, min(lane.limit - 1, math.floor(lane.limit * self.config.decrease_factor))
        )
        self.decreases += 1
        self._last_decrease = self._last_change = now
        self._successes = 0
        self._open_window(lane, held)
        if self.fleet is not None:
            self.fleet(-1)
        return True

    def _open_window(self, lane: Lane, held: list[RequestRecord]) -> None:
        self._held = [(r, r.attempts) for r in held]
        self._held_ids = frozenset((r.request_id, r.attempts) for r in held)

    def succeeded(self, lane: Lane, busy: int) -> None:
        """An attempt of the lane succeeded with ``busy`` attempts in flight (itself included)
        while the limit is below its ceiling: grow the limit by one for every limit's worth of
        successes while the lane is busy, and at most once per ``min_interval``. Each growth
        probes the server's capacity (at the capacity, the next call above it is refused), so
        the interval bounds that cost to one refusal per interval whatever the throughput. The
        caller starts the calls a grown limit lets in."""
        limit = lane.limit
        if busy < self.config.utilisation * limit and not lane.queued:
            return
        self._successes += 1
        if self._successes >= limit:
            now = lane.dispatcher.clock()
            if now - self._last_change < self.config.min_interval:
                return
            self._successes = 0
            self._last_change = now
            lane.limit = min(limit + 1, lane.ceiling)
            self.increases += 1
            if self.fleet is not None:
                self.fleet(1)

    def adopt(self, lane: Lane, limit: int) -> None:
        """The fleet's limit (shared through Redis) is now ``limit``: the lane takes it. A
        decrease made by another process opens this one's window as its own would, so that the
        failures of the same overload do not shrink the limit by the factor again here (they
        may still shrink it within the window, by their count). A higher limit waits while this
        lane's own window is open (its refusals are still saying where the server's cap is); a
        later announcement or heartbeat brings it. The caller starts the calls a grown limit
        lets in."""
        limit = max(1, min(limit, lane.ceiling))
        if limit == lane.limit:
            return
        now = lane.dispatcher.clock()
        if limit > lane.limit:
            if self._in_window(now):
                return
        else:
            held = lane.dispatcher.tracker.running(lane.name)
            self._floor = max(1, lane.limit // 2)
            self._held_count = max(len(held), lane.in_flight)
            self._refused = 0
            self._last_decrease = now
            self._open_window(lane, held)
        self._last_change = now
        self._successes = 0
        lane.limit = limit
