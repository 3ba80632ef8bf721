"""Frozen settings objects, checked when they are made so that a bad value fails at start-up."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _constants as c
from ._exceptions import ConfigurationError


def finite_number(value: Any) -> bool:
    """A real number a float can hold (an int beyond float range is not one: it overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _at_least(name: str, value: Any, low: int, *, integer: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number (with ``integer``, an int) >= ``low``."""
    valid = isinstance(value, int) if integer else finite_number(value)
    if not (valid and value >= low):
        kind = "an int " if integer else ""
        raise ConfigurationError(f"{name} must be {kind}>= {low}")


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
        _at_least("max_retries", self.max_retries, 0, integer=True)
        _at_least("initial_delay", self.initial_delay, 0)
        _at_least("backoff_factor", self.backoff_factor, 1)
        _at_least("max_delay", self.max_delay, 0)
        _at_least("max_retry_after", self.max_retry_after, 0)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """CLOSED -> OPEN after ``failure_threshold`` failed calls in a row (one count per call, when
    it gives up: connection errors, timeouts, 5xx; 429 and other 4xx give no verdict); OPEN for
    ``reset_timeout`` seconds; then HALF_OPEN lets ``half_open_max_calls`` probes through."""

    failure_threshold: int = c.DEFAULT_FAILURE_THRESHOLD
    reset_timeout: float = c.DEFAULT_RESET_TIMEOUT
    half_open_max_calls: int = c.DEFAULT_HALF_OPEN_MAX_CALLS

    def __post_init__(self) -> None:
        _at_least("failure_threshold", self.failure_threshold, 1, integer=True)
        _at_least("reset_timeout", self.reset_timeout, 0)
        _at_least("half_open_max_calls", self.half_open_max_calls, 1, integer=True)


@dataclass(frozen=True, slots=True)
class AdaptiveConcurrency:
    """How a backend's concurrency limit follows overload (AIMD), between 1 and its
    ``max_concurrent_requests``, where it starts.

    Only the server's own overload signals shrink it: a 503, a 529, or an attempt that timed out
    after it was sent. Each multiplies the limit by ``decrease_factor`` (rounded down, at least
    one less, never below 1), at most once per ``min_interval`` seconds and not again until every
    call that was in flight at the last decrease has finished, so one burst of failures counts
    once; within that window each further refusal of those calls lowers the limit to their
    number less the refused ones (never below half the limit before the decrease), so that at a
    server's concurrency cap the limit lands on the cap at once. An attempt refused while the
    lane has more in flight than its new limit retries without a backoff: it waits in the queue,
    in priority order, for a slot under that limit. A success grows it back while the lane is
    busy (at least ``utilisation`` of the limit in flight, or calls waiting): one step per
    limit's worth of such successes, and at most one per ``min_interval`` (each step probes the
    server's capacity, and may cost a refusal: the interval bounds that cost whatever the
    throughput). A 429 with rate headers adjusts the rate budgets instead, and connection errors
    and other 5xx feed the breaker; latency is never read (an LLM's grows with its output, not
    only with load).

    On by default: with no overload the limit stays at ``max_concurrent_requests``, so it costs
    no throughput, and a server that sends no rate headers (a self-hosted one) is protected only
    by it. Turn it off per client with ``adaptive_concurrency=False``.
    """

    decrease_factor: float = c.DEFAULT_ADAPTIVE_DECREASE
    min_interval: float = c.DEFAULT_ADAPTIVE_INTERVAL
    utilisation: float = c.DEFAULT_ADAPTIVE_UTILISATION

    def __post_init__(self) -> None:
        if not (finite_number(self.decrease_factor) and 0 < self.decrease_factor < 1):
            raise ConfigurationError("decrease_factor must be > 0 and < 1")
        _at_least("min_interval", self.min_interval, 0)
        if not (finite_number(self.utilisation) and 0 < self.utilisation <= 1):
            raise ConfigurationError("utilisation must be > 0 and <= 1")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Per backend instance: how many requests run at once and how many may wait.

    ``queue_timeout`` is how long a caller waits for room in a full queue: None waits for as
    long as it takes (backpressure), 0 raises ``QueueFullError`` at once. ``adaptive``: how the
    concurrency limit shrinks under overload and grows back (see ``AdaptiveConcurrency``); None
    keeps it at ``max_concurrent_requests``.
    """

    max_concurrent_requests: int = c.DEFAULT_MAX_CONCURRENT_REQUESTS
    queue_size: int = c.DEFAULT_QUEUE_SIZE
    queue_timeout: float | None = None
    adaptive: AdaptiveConcurrency | None = AdaptiveConcurrency()

    def __post_init__(self) -> None:
        _at_least("max_concurrent_requests", self.max_concurrent_requests, 1, integer=True)
        _at_least("queue_size", self.queue_size, 1, integer=True)
        if self.queue_timeout is not None:
            _at_least("queue_timeout", self.queue_timeout, 0)
        if self.adaptive is not None and not isinstance(self.adaptive, AdaptiveConcurrency):
            raise ConfigurationError("adaptive must be an AdaptiveConcurrency or None")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per backend instance: the request and token budgets to keep to, so that calls wait here
    (in priority order) instead of being sent to collect a 429.

    Every budget refills continuously (500 requests a minute come back one every 0.12 s).
    ``tokens_per_minute`` counts input and output together; ``input_tokens_per_minute`` and
    ``output_tokens_per_minute`` are the split budgets of vendors that keep them apart
    (Anthropic). A call reserves its tokens before it is sent (``estimator`` over its JSON body
    for the input, by default about four characters a token; its ``max_tokens`` for the output,
    or ``default_output_tokens`` when it names none) and its reply's usage settles the
    reservation. A call that would wait longer than ``max_wait``, or past its deadline, fails at
    once with ``RateLimitError`` carrying ``retry_after``; one larger than a whole budget with
    ``BudgetExceededError``.

    ``high_reserve``: the share of each budget that calls less urgent than ``Priority.HIGH``
    leave unspent for HIGH ones while calls wait for the budget, so that a HIGH call arriving
    at a throttled backend is sent at once instead of waiting its turn for the refill (0: none).
    Learned budgets keep the default share.

    ``sub_window`` (seconds): also hold the per-minute request budget over windows this short,
    as Azure OpenAI does (a 600-a-minute deployment throttles above 10 requests in a second:
    ``sub_window=1``; some deployments count over 10 s). None: only the minute counts.
    """

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    max_wait: float = c.DEFAULT_MAX_RATE_WAIT
    tokens_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    sub_window: float | None = None
    estimator: Callable[[Mapping[str, Any]], int] | None = None
    default_output_tokens: int = c.DEFAULT_OUTPUT_TOKENS
    high_reserve: float = c.DEFAULT_HIGH_RESERVE

    def __post_init__(self) -> None:
        for name in (
            "requests_per_minute",
            "requests_per_day",
            "tokens_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
        ):
            value = getattr(self, name)
            if value is not None:
                _at_least(name, value, 1, integer=True)
        _at_least("max_wait", self.max_wait, 0)
        _at_least("default_output_tokens", self.default_output_tokens, 0, integer=True)
        if not (finite_number(self.high_reserve) and 0 <= self.high_reserve < 1):
            raise ConfigurationError("high_reserve must be >= 0 and < 1")
        if self.sub_window is not None:
            if not (finite_number(self.sub_window) and 0 < self.sub_window < 60):
                raise ConfigurationError("sub_window must be None or seconds in (0, 60)")
            if self.requests_per_minute is None:
                raise ConfigurationError("sub_window needs requests_per_minute")
        if self.estimator is not None and not callable(self.estimator):
            raise ConfigurationError("estimator must be a callable (body -> input tokens)")


def check_timeout(name: str, value: float | None) -> float | None:
    if value is not None and not (finite_number(value) and value > 0):
        raise ConfigurationError(f"{name} must be None or > 0")
    return value
