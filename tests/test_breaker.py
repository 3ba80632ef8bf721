"""The breaker state machine on a fake clock."""

from __future__ import annotations

from asyncllm import BreakerConfig, BreakerState
from asyncllm._engine._breaker import CircuitBreaker
from asyncllm.testing import FakeClock


def make(
    threshold: int = 3, reset: float = 30, probes: int = 1
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(BreakerConfig(threshold, reset, probes), clock, "t"), clock


def test_opens_after_threshold_consecutive_failures() -> None:
    b, _ = make()
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the run
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allows()


def test_half_open_after_reset_timeout_and_probe_success_closes() -> None:
    b, clock = make()
    for _ in range(3):
        b.record_failure()
    clock.advance(29.9)
    assert b.state is BreakerState.OPEN
    assert 0 < b.retry_in() <= 0.1 + 1e-9
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows()
    probe = b.acquire()
    assert probe is True
    assert not b.allows()  # one probe at a time
    b.record_success(probe)
    assert b.state is BreakerState.CLOSED
    assert b.transitions == {"closed->open": 1, "open->half_open": 1, "half_open->closed": 1}


def test_probe_failure_reopens_for_a_full_timeout() -> None:
    b, clock = make(threshold=1, reset=10)
    b.record_failure()
    clock.advance(10)
    probe = b.acquire()
    b.record_failure(probe)
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == 10


def test_cancelled_probe_lets_another_through() -> None:
    b, clock = make(threshold=1, reset=1, probes=2)
    b.record_failure()
    clock.advance(1)
    assert b.acquire() and b.acquire()
    assert not b.allows()
    b.release_probe()
    assert b.allows()
    assert b.state is BreakerState.HALF_OPEN


def test_failure_that_opens_is_kept_until_it_closes() -> None:
    from asyncllm import APIConnectionError

    b, clock = make(threshold=2, reset=5)
    first, second = APIConnectionError("a"), APIConnectionError("b")
    assert b.record_failure(False, first) is False
    assert b.opened_by is None
    assert b.record_failure(False, second) is True
    assert b.opened_by is second and b.opened_from is BreakerState.CLOSED
    clock.advance(5)
    probe = b.acquire()
    third = APIConnectionError("c")
    assert b.record_failure(probe, third) is True  # the probe's failure reopens
    assert b.opened_by is third and b.opened_from is BreakerState.HALF_OPEN
    clock.advance(5)
    b.record_success(b.acquire())
    assert b.opened_by is None and b.opened_from is None


def test_a_probe_without_verdict_keeps_it_half_open() -> None:
    b, clock = make(threshold=1, reset=1)
    b.record_failure()
    clock.advance(1)
    assert b.acquire()
    assert not b.allows()
    b.release_probe()  # what a 429, another 4xx or a TLS failure gives a probe
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows()


def test_open_for_lengthens_this_opening_only() -> None:
    b, clock = make(threshold=1, reset=10)
    b.record_failure()
    opened = b.opened_at
    b.open_for(25)
    assert b.retry_in() == 25
    clock.advance(24.9)
    assert b.state is BreakerState.OPEN
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    b.record_failure(b.acquire())  # the probe fails: a new opening, of the config's length
    assert b.opened_at == opened + 25
    assert b.retry_in() == 10


def test_probe_now_and_readmit() -> None:
    b, _ = make(threshold=1, reset=60)
    b.record_failure()
    b.probe_now()
    assert b.state is BreakerState.HALF_OPEN
    assert b.acquire() is True
    b.record_failure(probe=True)
    assert b.state is BreakerState.OPEN
    b.readmit()
    assert b.state is BreakerState.CLOSED
    assert b.consecutive_failures == 0
    assert b.opened_by is None
    b.probe_now()  # a closed breaker stays closed
    assert b.state is BreakerState.CLOSED
