"""When to retry and how long to wait: small pure functions, tested from tables."""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

from .._config import RetryConfig
from .._constants import RETRYABLE_STATUSES
from .._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    CertificateVerificationError,
)


def is_retryable(exc: BaseException) -> bool:
    """Connection errors, timeouts and the transient statuses; never another 4xx.

    A server's ``x-should-retry`` header (as OpenAI sends) overrides the status rule.
    """
    if isinstance(exc, APIError) and exc.should_retry is not None:
        return exc.should_retry
    if isinstance(exc, APIConnectionError):
        return True
    if isinstance(exc, APIStatusError):
        return exc.status_code in RETRYABLE_STATUSES
    return False


def may_resend(exc: APIError) -> bool:
    """Whether a call that creates something may be sent again after ``exc`` (besides
    ``is_retryable``): only if the request provably never left (``unsent``: refused, unresolved,
    connect timed out), or the server refused it and said when to come back (429 or 503 with
    ``Retry-After``). A timeout, a dropped connection or another 5xx may have created the thing
    already, and a second send would create it twice: that call fails instead, and its error's
    ``may_have_been_applied`` tells the caller to look before trying again."""
    if exc.unsent:
        return True
    return exc.status_code in (429, 503) and exc.retry_after is not None


def breaker_verdict(exc: APIError) -> bool | None:
    """What a failed call says of its backend's health, for the circuit breaker.

    False, the backend is failing: connection errors, timeouts and 5xx (529 "overloaded" and a
    503 with ``Retry-After`` included). None, no verdict: 429 (a rate limit proves the backend is
    up), every other 3xx/4xx (the request's fault, not the backend's) and TLS certificate
    failures (our trust settings, not the backend's health). True, the backend answered: a 2xx
    that breaks its protocol, a prompt refused for safety. An error a backend marked
    ``spares_breaker`` gives no verdict, whatever its status.
    """
    if exc.spares_breaker or isinstance(exc, CertificateVerificationError):
        return None
    if isinstance(exc, APIConnectionError):
        return False
    status = exc.status_code
    if status is not None and status >= 500:
        return False
    if isinstance(exc, APIStatusError):
        return None
    return True


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], float] | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (Azure also sends it as ``x-ms-retry-after-ms``),
    ``Retry-After`` (seconds or HTTP date); None if absent or unreadable.

    ``now`` returns wall-clock seconds since the epoch, for the HTTP-date form.
    """
    ms = headers.get("retry-after-ms")
    if ms is None:
        ms = headers.get("x-ms-retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        try:
            at = float(email.utils.mktime_tz(parsed))
        except (ValueError, OverflowError):  # a date no calendar holds, e.g. the year 99999
            return None
        return max(0.0, at - (now or time.time)())
    return value if math.isfinite(value) and value >= 0 else None


class BackoffSchedule:
    """The ceilings of one call's retries: initial, initial*factor, ... capped at max_delay.

    The sequence comes from ``backoff.expo``, imported at the first retry rather than at start-up
    (its import costs a few milliseconds that a process which never retries should not pay); the
    jitter is drawn from an injectable ``rng`` so tests are repeatable.
    """

    __slots__ = ("_ceilings", "_config", "_rng")

    def __init__(self, config: RetryConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._ceilings: Generator[float, Any, None] | None = None

    def next_delay(self, retry_after: float | None = None) -> float:
        """The wait before the next attempt. A server's ``Retry-After`` wins over our own backoff."""
        config = self._config
        if self._ceilings is None:
            import backoff

            self._ceilings = backoff.expo(
                base=config.backoff_factor, factor=config.initial_delay, max_value=config.max_delay
            )
            next(self._ceilings)  # prime, as backoff itself does
        # expo stops growing once at max_value, so a long run at the cap takes no overflowing power
        ceiling = min(next(self._ceilings), config.max_delay)
        if retry_after is not None:
            return retry_after
        return self._rng.uniform(0.0, ceiling) if config.jitter else ceiling
