from __future__ import annotations

from asyncllm import RequestRecord, RequestStatus, RequestTracker
from asyncllm.testing import FakeClock


def record(rid: str, at: float, status: RequestStatus = RequestStatus.SUCCEEDED) -> RequestRecord:
    return RequestRecord(rid, "b", "chat", 1, at, status=status, finished_at=at)


def test_records_are_capped() -> None:
    clock = FakeClock()
    tracker = RequestTracker(max_records=100, clock=clock)
    for i in range(1000):
        tracker.add(record(f"r{i}", clock()))
    assert len(tracker) == 100
    assert tracker.get("r0") is None
    assert tracker.get("r999") is not None


def test_records_expire_but_unfinished_ones_stay_until_finished() -> None:
    clock = FakeClock()
    tracker = RequestTracker(ttl=60, clock=clock)
    tracker.add(record("running", clock(), RequestStatus.RUNNING))
    tracker.add(record("old", clock()))
    clock.advance(61)
    tracker.add(record("new", clock()))
    assert tracker.get("running") is not None  # never expire what is still going on
    tracker.get("running").status = RequestStatus.SUCCEEDED  # type: ignore[union-attr]
    tracker.get("running").finished_at = clock() - 61  # type: ignore[union-attr]
    tracker.prune()
    assert tracker.get("running") is None
    assert tracker.get("old") is None
    assert tracker.get("new") is not None


def test_one_record_and_a_shared_id_read_the_same() -> None:
    clock = FakeClock()
    tracker = RequestTracker(clock=clock)
    first = tracker.add(record("alone", clock()))
    assert tracker.get("alone") is first
    assert tracker.all("alone") == [first]
    tracker.all("alone").clear()  # a copy: the tracker keeps its record
    assert tracker.all("alone") == [first]
    second = tracker.add(record("alone", clock()))
    assert tracker.get("alone") is second
    assert tracker.all("alone") == [first, second]
    assert len(tracker) == 2
    assert tracker.all("missing") == []
    assert tracker.get("missing") is None


def test_capping_counts_a_shared_id_by_its_records() -> None:
    clock = FakeClock()
    tracker = RequestTracker(max_records=3, clock=clock)
    tracker.add(record("pair", clock()))
    tracker.add(record("pair", clock()))
    tracker.add(record("one", clock()))
    tracker.add(record("two", clock()))  # four records: the oldest ID goes with both of its
    assert len(tracker) == 2
    assert tracker.get("pair") is None
    assert tracker.get("one") is not None and tracker.get("two") is not None


def test_shared_ids_keep_every_call_boundedly() -> None:
    clock = FakeClock()
    tracker = RequestTracker(clock=clock)
    for _ in range(500):
        tracker.add(record("batch", clock()))
    assert len(tracker.all("batch")) == 100
    assert len(tracker) == 100


def test_a_running_record_does_not_hold_back_expiry_of_later_ones() -> None:
    """Before, one unfinished record at the front stopped every sweep: 2,002 kept past the TTL."""
    clock = FakeClock()
    tracker = RequestTracker(ttl=0.5, clock=clock)
    tracker.add(record("long", clock(), RequestStatus.RUNNING))
    for i in range(2000):
        tracker.add(record(f"r{i}", clock()))
        clock.advance(0.0001)
    clock.advance(1.0)
    tracker.add(record("new", clock()))
    assert len(tracker) == 2
    assert tracker.get("long") is not None and tracker.get("new") is not None
    # Finished, it expires a TTL after it finished, though newer records are now ahead of it.
    long = tracker.get("long")
    assert long is not None
    long.status, long.finished_at = RequestStatus.SUCCEEDED, clock()
    clock.advance(0.4)
    tracker.add(record("newer", clock()))
    tracker.prune()
    assert tracker.get("long") is not None
    clock.advance(0.2)
    tracker.prune()
    assert tracker.get("long") is None
    assert tracker.get("new") is None
    assert tracker.get("newer") is not None


def test_a_late_finisher_does_not_hold_back_expiry() -> None:
    """A record that finished late (a long call) stays a TTL after it finished, and the records
    added after it that finished early still go."""
    clock = FakeClock()
    tracker = RequestTracker(ttl=10, clock=clock)
    tracker.add(record("long", clock(), RequestStatus.RUNNING))
    tracker.add(record("short", clock()))
    clock.advance(100)
    long = tracker.get("long")
    assert long is not None
    long.status, long.finished_at = RequestStatus.FAILED, clock()
    clock.advance(5)
    tracker.prune()
    assert tracker.get("short") is None
    assert tracker.get("long") is not None
    clock.advance(6)
    tracker.prune()
    assert len(tracker) == 0
