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


def test_shared_ids_keep_every_call_boundedly() -> None:
    clock = FakeClock()
    tracker = RequestTracker(clock=clock)
    for _ in range(500):
        tracker.add(record("batch", clock()))
    assert len(tracker.all("batch")) == 100
    assert len(tracker) == 100
