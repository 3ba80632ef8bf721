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
    """One call. Times are on the dispatcher's clock. No headers, bodies or keys are kept."""

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
        self._by_id: OrderedDict[str, list[RequestRecord]] = OrderedDict()
        self._count = 0
        self._next_sweep = -math.inf

    def __len__(self) -> int:
        return self._count

    def add(self, record: RequestRecord) -> RequestRecord:
        records = self._by_id.get(record.request_id)
        if records is None:
            self._by_id[record.request_id] = [record]
        else:
            self._by_id.move_to_end(record.request_id)
            records.append(record)
            if len(records) > TRACKER_MAX_RECORDS_PER_ID:
                del records[0]
                self._count -= 1
        self._count += 1
        self._prune(record.enqueued_at)
        return record

    def get(self, request_id: str) -> RequestRecord | None:
        records = self._by_id.get(request_id)
        return records[-1] if records else None

    def all(self, request_id: str) -> list[RequestRecord]:
        return list(self._by_id.get(request_id, ()))

    def _prune(self, now: float) -> None:
        by_id = self._by_id
        while by_id and self._count > self.max_records:
            _, dropped = by_id.popitem(last=False)
            self._count -= len(dropped)
        # Expiry is swept at most every 1/16 of the TTL: a call need not pay for it.
        if now >= self._next_sweep:
            self._next_sweep = now + self.ttl / 16
            self._expire(now - self.ttl)

    def _expire(self, horizon: float) -> None:
        by_id = self._by_id
        while by_id:
            first = next(iter(by_id.values()))
            last = first[-1]
            if (
                last.status not in FINAL_STATUSES
                or (last.finished_at or last.enqueued_at) > horizon
            ):
                break
            by_id.popitem(last=False)
            self._count -= len(first)

    def prune(self) -> None:
        self._next_sweep = -math.inf
        self._prune(self._clock())
