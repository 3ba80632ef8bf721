"""Retry decisions and delays as pure functions, from tables."""

from __future__ import annotations

import random

import pytest

import asyncllm
from asyncllm._engine._backoff import BackoffSchedule, is_retryable, parse_retry_after
from asyncllm._exceptions import status_error


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": " 12 "}, 12.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after": "Mon, 01 Jan 99999 00:00:00 GMT"}, None),  # no calendar holds it
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(headers, now=lambda: now) == expected


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (asyncllm.APIConnectionError("x"), True),
        (asyncllm.APITimeoutError("x"), True),
        (asyncllm.ResponseValidationError("x"), False),
        *[(status_error(s, "x"), True) for s in (408, 409, 429, 500, 502, 503, 504, 529)],
        *[(status_error(s, "x"), False) for s in (400, 401, 403, 404, 413, 422, 501)],
    ],
)
def test_is_retryable(error: Exception, retry: bool) -> None:
    assert is_retryable(error) is retry


def test_timeout_error_is_also_a_builtin_timeout() -> None:
    assert isinstance(asyncllm.APITimeoutError("x"), TimeoutError)
    assert isinstance(asyncllm.ConfigurationError("x"), ValueError)


def test_status_classes() -> None:
    assert type(status_error(529, "x")) is asyncllm.OverloadedError
    assert type(status_error(502, "x")) is asyncllm.InternalServerError
    assert type(status_error(418, "x")) is asyncllm.APIStatusError


def test_ceilings_without_jitter_follow_the_defaults() -> None:
    schedule = BackoffSchedule(asyncllm.RetryConfig(jitter=False), random.Random(0))
    assert [schedule.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 16, 16]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"initial_delay": 0.5, "backoff_factor": 3, "max_delay": 10}, [0.5, 1.5, 4.5, 10, 10]),
        (
            {"initial_delay": 0.25, "backoff_factor": 1.5, "max_delay": 1},
            [0.25, 0.375, 0.5625, 0.84375, 1],
        ),
        ({"initial_delay": 0, "backoff_factor": 2, "max_delay": 8}, [0, 0, 0, 0, 0]),
        ({"initial_delay": 20, "backoff_factor": 2, "max_delay": 8}, [8, 8, 8, 8, 8]),
        ({"initial_delay": 1, "backoff_factor": 1, "max_delay": 8}, [1, 1, 1, 1, 1]),
    ],
)
def test_ceilings_grow_by_the_factor_up_to_the_cap(
    config: dict[str, float], expected: list[float]
) -> None:
    schedule = BackoffSchedule(asyncllm.RetryConfig(jitter=False, **config), random.Random(0))  # type: ignore[arg-type]
    assert [schedule.next_delay() for _ in expected] == pytest.approx(expected)


def test_a_long_run_of_retries_stays_at_the_cap_without_overflow() -> None:
    schedule = BackoffSchedule(
        asyncllm.RetryConfig(jitter=False, backoff_factor=1e300, max_delay=5), random.Random(0)
    )
    assert [schedule.next_delay() for _ in range(2000)][-3:] == [5, 5, 5]


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(1234)
    samples = []
    for _ in range(2000):
        schedule = BackoffSchedule(asyncllm.RetryConfig(), rng)
        samples.append([schedule.next_delay() for _ in range(6)])
    for attempt, ceiling in enumerate([1, 2, 4, 8, 16, 16]):
        column = [row[attempt] for row in samples]
        assert 0 <= min(column) < ceiling * 0.05
        assert ceiling * 0.95 < max(column) <= ceiling
        assert abs(sum(column) / len(column) - ceiling / 2) < ceiling * 0.05


def test_retry_after_wins_over_backoff() -> None:
    schedule = BackoffSchedule(asyncllm.RetryConfig(), random.Random(0))
    assert schedule.next_delay(retry_after=42.0) == 42.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"initial_delay": -0.1},
        {"backoff_factor": 0.5},
        {"max_delay": float("inf")},
        {"max_retry_after": -1},
    ],
)
def test_bad_retry_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.RetryConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (asyncllm.BreakerConfig, {"failure_threshold": 0}),
        (asyncllm.BreakerConfig, {"half_open_max_calls": 0}),
        (asyncllm.LimitsConfig, {"max_concurrent_requests": 0}),
        (asyncllm.LimitsConfig, {"queue_size": 0}),
        (asyncllm.LimitsConfig, {"queue_timeout": -1}),
    ],
)
def test_bad_limits_are_refused(cls: type, kwargs: dict[str, int]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        cls(**kwargs)
