"""The circuit breaker of one backend instance: a small state machine on an injected clock."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._config import BreakerConfig

if TYPE_CHECKING:
    from .._exceptions import APIError

logger = logging.getLogger("asyncllm.breaker")


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """CLOSED counts failed calls in a row; at the threshold it opens. OPEN refuses calls until
    ``reset_timeout`` has passed, then HALF_OPEN admits up to ``half_open_max_calls`` probes: a
    probe's success closes the breaker, its failure opens it again.

    The dispatcher decides what is a failure (``breaker_verdict``) and when: one count per call,
    when the call gives up, never one per attempt; a half-open probe's verdict is its attempt's.
    Answers that give no verdict (429, other 4xx, TLS verification) reach the breaker only as
    ``release_probe``. The failure that opened the breaker is kept in ``opened_by`` for the
    ``CircuitOpenError`` of the calls it refuses.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_failures",
        "_name",
        "_opened_at",
        "_probes",
        "_state",
        "open_time",
        "opened_by",
        "opened_from",
        "transitions",
    )

    def __init__(self, config: BreakerConfig, clock: Callable[[], float], name: str = "") -> None:
        self._config = config
        self._clock = clock
        self._name = name
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        # How long the current opening lasts: the config's, unless a pool lengthened it
        # (``open_for``); set anew at each opening.
        self.open_time = config.reset_timeout
        self.transitions: dict[str, int] = {}
        # While open: the failure that opened it, and the state it opened from.
        self.opened_by: APIError | None = None
        self.opened_from: BreakerState | None = None

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_time:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.open_time - self._clock())

    @property
    def opened_at(self) -> float:
        """When the breaker last opened (on its clock); meaningless before it ever has."""
        return self._opened_at

    def open_for(self, seconds: float) -> None:
        """Make the current opening last ``seconds`` from when it opened: a pool's ejection time,
        which grows with repeated openings."""
        self.open_time = seconds

    def probe_now(self) -> None:
        """An open breaker lets a probe through now: a pool whose every member is ejected
        probes the one ejected first rather than fail outright."""
        if self.state is BreakerState.OPEN:
            self._move(BreakerState.HALF_OPEN)

    def readmit(self) -> None:
        """Close an open breaker without a probe: a pool that may not eject this member (its
        share of ejected members is at its cap) keeps it in rotation."""
        if self._state is not BreakerState.CLOSED:
            self._failures = 0
            self._move(BreakerState.CLOSED)

    def allows(self) -> bool:
        """Whether a call may start now (without taking a probe place)."""
        if self._state is BreakerState.CLOSED:
            return True  # the common case, read without the state property
        state = self.state
        if state is BreakerState.OPEN:
            return False
        return self._probes < self._config.half_open_max_calls

    def acquire(self) -> bool:
        """Take the right to start a call; True if it is a half-open probe."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes += 1
            return True
        return False

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled): let another one through."""
        self._probes = max(0, self._probes - 1)

    def record_success(self, probe: bool = False) -> None:
        if probe:
            self.release_probe()
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self, probe: bool = False, error: APIError | None = None) -> bool:
        """Count a failed call (or a failed probe); True if this opened the breaker."""
        if probe:
            self.release_probe()
        self._failures += 1
        old = self._state
        if old is BreakerState.HALF_OPEN or (
            old is BreakerState.CLOSED and self._failures >= self._config.failure_threshold
        ):
            self._opened_at = self._clock()
            self.open_time = self._config.reset_timeout
            self.opened_by = error
            self.opened_from = old
            self._move(BreakerState.OPEN)
            return True
        return False

    def _move(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        if new is not BreakerState.HALF_OPEN:
            self._probes = 0
        if new is BreakerState.CLOSED:
            self.opened_by = self.opened_from = None
        key = f"{old.value}->{new.value}"
        self.transitions[key] = self.transitions.get(key, 0) + 1
        log = logger.warning if new is BreakerState.OPEN else logger.info
        log(
            "circuit breaker %s: %s -> %s",
            self._name,
            old.value,
            new.value,
            extra={"backend": self._name, "request_id": "-"},
        )
