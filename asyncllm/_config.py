"""Frozen settings objects, checked when they are made so that a bad value fails at start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import _constants as c
from ._exceptions import ConfigurationError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigurationError(message)


def finite_number(value: Any) -> bool:
    """A real number a float can hold (an int beyond float range is not one: it overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Jittered exponential backoff: attempt n waits uniform(0, min(max_delay, initial * factor**(n-1)))."""

    max_retries: int = c.DEFAULT_MAX_RETRIES
    initial_delay: float = c.DEFAULT_INITIAL_RETRY_DELAY
    backoff_factor: float = c.DEFAULT_BACKOFF_FACTOR
    max_delay: float = c.DEFAULT_MAX_RETRY_DELAY
    max_retry_after: float = c.DEFAULT_MAX_RETRY_AFTER
    jitter: bool = True

    def __post_init__(self) -> None:
        _check(
            isinstance(self.max_retries, int) and self.max_retries >= 0,
            "max_retries must be an int >= 0",
        )
        _check(
            finite_number(self.initial_delay) and self.initial_delay >= 0,
            "initial_delay must be >= 0",
        )
        _check(
            finite_number(self.backoff_factor) and self.backoff_factor >= 1,
            "backoff_factor must be >= 1",
        )
        _check(finite_number(self.max_delay) and self.max_delay >= 0, "max_delay must be >= 0")
        _check(
            finite_number(self.max_retry_after) and self.max_retry_after >= 0,
            "max_retry_after must be >= 0",
        )


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """CLOSED -> OPEN after ``failure_threshold`` failed calls in a row (one count per call, when
    it gives up: connection errors, timeouts, 5xx; 429 and other 4xx give no verdict); OPEN for
    ``reset_timeout`` seconds; then HALF_OPEN lets ``half_open_max_calls`` probes through."""

    failure_threshold: int = c.DEFAULT_FAILURE_THRESHOLD
    reset_timeout: float = c.DEFAULT_RESET_TIMEOUT
    half_open_max_calls: int = c.DEFAULT_HALF_OPEN_MAX_CALLS

    def __post_init__(self) -> None:
        _check(
            isinstance(self.failure_threshold, int) and self.failure_threshold >= 1,
            "failure_threshold must be an int >= 1",
        )
        _check(
            finite_number(self.reset_timeout) and self.reset_timeout >= 0,
            "reset_timeout must be >= 0",
        )
        _check(
            isinstance(self.half_open_max_calls, int) and self.half_open_max_calls >= 1,
            "half_open_max_calls must be an int >= 1",
        )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Per backend instance: how many requests run at once and how many may wait.

    ``queue_timeout`` is how long a caller waits for room in a full queue: None waits for as
    long as it takes (backpressure), 0 raises ``QueueFullError`` at once.
    """

    max_concurrent_requests: int = c.DEFAULT_MAX_CONCURRENT_REQUESTS
    queue_size: int = c.DEFAULT_QUEUE_SIZE
    queue_timeout: float | None = None

    def __post_init__(self) -> None:
        _check(
            isinstance(self.max_concurrent_requests, int) and self.max_concurrent_requests >= 1,
            "max_concurrent_requests must be an int >= 1",
        )
        _check(isinstance(self.queue_size, int) and self.queue_size >= 1, "queue_size must be >= 1")
        _check(
            self.queue_timeout is None
            or (finite_number(self.queue_timeout) and self.queue_timeout >= 0),
            "queue_timeout must be None or >= 0",
        )


def check_timeout(name: str, value: float | None) -> float | None:
    _check(value is None or (finite_number(value) and value > 0), f"{name} must be None or > 0")
    return value
