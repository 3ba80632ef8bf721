"""What happened to each request, kept in bounded memory: records expire and are capped."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .._constants import (
    DEFAULT_TRACKER_MAX_RECORDS,
    DEFAULT_TRACKER_TTL,
    TRACKER_MAX_RECORDS_PER_ID,
)


class RequestStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELLED})


@dataclass(slots=True)
class RequestRecord:
    """One call. Times are on the dispatcher's clock. No headers, bodies or keys are kept.

    ``model`` is the model the call asked for (where the client knows it); the token counts are
    the answer's (for a stream, the last chunk's that had any), None where it gave none.
    """

    request_id: str
    backend: str
    operation: str
    priority: int
    enqueued_at: float
    status: RequestStatus = RequestStatus.QUEUED
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    last_error: str | None = None
    model: str | None = None
    # Plain ints, not the answer's Usage object: a kept record holds no object for the GC.
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def queued_time(self) -> float | None:
        """Seconds from the call's start to its first attempt (waiting for a slot)."""
        return None if self.started_at is None else self.started_at - self.enqueued_at

    @property
    def service_time(self) -> float | None:
        """Seconds from the first attempt to the end: attempts, retries and backoff."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


def _done_before(record: RequestRecord, horizon: float) -> bool:
    return record.status in FINAL_STATUSES and (record.finished_at or record.enqueued_at) <= horizon


# An ID's records: the record itself while it has one (nearly every ID), a list once several calls
# share it. Thousands of records live long enough to reach the garbage collector's oldest
# generation, which scans each container it holds: a list per record doubled what it scans.
_Entry = RequestRecord | list[RequestRecord]


def _last(entry: _Entry) -> RequestRecord:
    return entry[-1] if type(entry) is list else entry  # type: ignore[return-value]


def _size(entry: _Entry) -> int:
    return len(entry) if type(entry) is list else 1


class RequestTracker:
    """Records by request ID. Several calls may share one ID (a ``request_context`` around a
    batch); ``get`` returns the latest, ``all`` every one still kept."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TRACKER_TTL,
        max_records: int = DEFAULT_TRACKER_MAX_RECORDS,
        clock: Callable[[], float],
    ) -> None:
        self.ttl = ttl
        self.max_records = max_records
        self._clock = clock
        self._by_id: OrderedDict[str, _Entry] = OrderedDict()
        self._count = 0
        self._next_sweep = -math.inf
        # IDs added before the last sweep's horizon that were not done then (see _expire).
        self._held: set[str] = set()

    def __len__(self) -> int:
        return self._count

    def add(self, record: RequestRecord) -> RequestRecord:
        by_id = self._by_id
        request_id = record.request_id
        entry = by_id.get(request_id)
        if entry is None:
            by_id[request_id] = record
        else:
            by_id.move_to_end(request_id)
            if type(entry) is not list:
                by_id[request_id] = [entry, record]  # type: ignore[list-item]
            else:
                entry.append(record)
                if len(entry) > TRACKER_MAX_RECORDS_PER_ID:
                    del entry[0]
                    self._count -= 1
        self._count += 1
        self._prune(record.enqueued_at)
        return record

    def get(self, request_id: str) -> RequestRecord | None:
        entry = self._by_id.get(request_id)
        return None if entry is None else _last(entry)

    def all(self, request_id: str) -> list[RequestRecord]:
        entry = self._by_id.get(request_id)
        if entry is None:
            return []
        return list(entry) if type(entry) is list else [entry]  # type: ignore[list-item]

    def running(self, backend: str) -> list[RequestRecord]:
        """The kept records of ``backend``'s calls in an attempt now (a stream until its end).
        A walk over every kept record: for rare events only (adaptive concurrency's decrease)."""
        found: list[RequestRecord] = []
        for entry in self._by_id.values():
            records: list[RequestRecord] = entry if type(entry) is list else [entry]  # type: ignore[list-item]
            for record in records:
                if record.status is RequestStatus.RUNNING and record.backend == backend:
                    found.append(record)
        return found

    def _prune(self, now: float) -> None:
        by_id = self._by_id
        while by_id and self._count > self.max_records:
            _, dropped = by_id.popitem(last=False)
            self._count -= _size(dropped)
        # Expiry is swept at most every 1/16 of the TTL: a call need not pay for it.
        if now >= self._next_sweep:
            self._next_sweep = now + self.ttl / 16
            self._expire(now - self.ttl)

    def _expire(self, horizon: float) -> None:
        """Drop the records that finished before ``horizon``.

        IDs are kept in the order they were added, so the sweep stops at the first one added
        after the horizon. One added before it but not done (still running, or finished since)
        does not stop the sweep: it moves to the back and into ``_held``, the few IDs every sweep
        looks at again, so that one long call never holds back the expiry of those after it.
        """
        by_id = self._by_id
        held = self._held
        for request_id in list(held):
            entry = by_id.get(request_id)
            if entry is None or _last(entry).enqueued_at > horizon:
                held.discard(request_id)  # gone (capped), or added to again: in order again
            elif _done_before(_last(entry), horizon):
                self._drop(request_id)
        for _ in range(len(by_id)):
            request_id, entry = next(iter(by_id.items()))
            last = _last(entry)
            if last.enqueued_at > horizon:
                break
            if _done_before(last, horizon):
                self._drop(request_id)
            else:
                by_id.move_to_end(request_id)
                held.add(request_id)

    def _drop(self, request_id: str) -> None:
        self._held.discard(request_id)
        self._count -= _size(self._by_id.pop(request_id))

    def prune(self) -> None:
        self._next_sweep = -math.inf
        self._prune(self._clock())
