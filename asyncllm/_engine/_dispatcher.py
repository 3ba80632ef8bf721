"""The one dispatcher per event loop: every call of every backend goes through it.

Each backend instance has a *lane*: its slots (``max_concurrent_requests``), its waiting calls in
order, its circuit breaker and its counters. A call that finds a free slot takes it at once; one
that does not waits in its lane, ordered by its key: ``(priority, sequence)``, or with aging
``(enqueued_at + priority * aging, sequence)``, a continuous key under which a LOW call that has
waited long enough goes before a HIGH one that just came (every heap stays valid, since a key never
changes once given). A full lane holds its own calls only, so a slow backend never delays another's.

A lane's slots are its ``limit``: ``max_concurrent_requests``, or less while adaptive concurrency
has shrunk it after overload signals (503, 529, timeouts; see ``_adaptive``).

Above the lanes, ``max_in_flight`` bounds the calls in flight across every backend (unlimited by
default). Where that limit is what a lane waits for, the lane has one entry in the dispatcher's
``asyncio.PriorityQueue``, keyed by its best waiting call's key; a freed global slot goes to the
best entry, so the best call among the lanes that could run it starts next, in O(log lanes), with
no head-of-line blocking (a lane that is full, or whose breaker refuses, has no valid entry) and no
re-pushing of calls. Entries are invalidated lazily: a lane's entry is valid while its key is the
one the lane last pushed. Every attempt holds one lane slot and one global slot while it runs: a
stream holds both until it is read to the end or closed, a half-open probe counts like any attempt,
and an LLVM micro-batch is one request, so one slot.

The caller's own task runs each attempt: there are no worker tasks to leak, and cancelling the
caller frees its queue entry or its slot at once. Retries wait out their backoff *without* a slot.

The breaker counts failed *calls*, not attempts: a call's failed attempts give the breaker nothing
until the call gives up, and then one verdict (``breaker_verdict`` of its last error: connection
errors, timeouts and 5xx count; 429, other 4xx and TLS verification give none; a success resets
the count). A half-open probe is the exception: its attempt's verdict closes or reopens the
breaker at once. Only a call that never made an attempt gets ``CircuitOpenError``; one that did
and whose retry the breaker refuses raises its own last error, noted (``circuit_open``).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import random
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

from .._config import BreakerConfig, LimitsConfig, RateLimits, RetryConfig
from .._constants import DEFAULT_CLOSE_TIMEOUT, DEFAULT_REDIS_LEASE, LATENCY_WINDOW
from .._exceptions import (
    APIError,
    APITimeoutError,
    AsyncLLMError,
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
    QueueFullError,
    RateLimitError,
)
from .._validate import check_int, check_positive
from ..streaming import Stream
from ._adaptive import AdaptiveLimit, is_overload
from ._backoff import BackoffSchedule, breaker_verdict, is_retryable, may_resend
from ._breaker import BreakerState, CircuitBreaker
from ._context import _request_id, new_request_id
from ._observe import AUTO, CallObserver, Observer, default_observer
from ._ratelimit import (
    BudgetStore,
    Lease,
    MemoryBudgetStore,
    RateDialect,
    RateGate,
    block_lane,
    limit_lane,
    share_lane,
)
from ._tracking import RequestRecord, RequestStatus, RequestTracker

if TYPE_CHECKING:
    from ._redis import SharedSlots

logger = logging.getLogger("asyncllm")

T = TypeVar("T")


class Priority(enum.IntEnum):
    """Lower runs first. Any int is accepted where a Priority is."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class Attempt(NamedTuple):
    """What one attempt needs to know: its request ID, its number (1-based), its time limit, the
    headers an observer asks it to send (trace context), if any, and its rate lease, if its lane
    has budgets (the reply's rate headers are reconciled with it). A NamedTuple built with
    ``tuple.__new__``: one is made per attempt, and a frozen dataclass cost ten times as much."""

    request_id: str
    number: int
    timeout: float | None
    headers: Mapping[str, str] | None = None
    lease: Lease | None = None


_tuple_new = tuple.__new__


class _Job:
    """A queued call: its future gets the probe flag when a slot is its; an abandoned job's
    future is cancelled, and it leaves the heap when it surfaces."""

    __slots__ = ("future", "key", "request_id")

    def __init__(
        self, key: tuple[float, int], future: asyncio.Future[bool], request_id: str
    ) -> None:
        self.request_id = request_id
        self.key = key
        self.future = future

    def __lt__(self, other: _Job) -> bool:
        return self.key < other.key


@dataclass(slots=True)
class TokenUsage:
    """Tokens of one backend's calls to one model, summed over the calls that reported any."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class BackendStats:
    """One backend's counters. Latency is from a call's start to its end; ``queued_*`` is the
    part spent waiting for a slot, ``service_*`` the rest (attempts, retries, backoff), each
    over the last successful calls. ``usage`` is keyed by model ("-" where none was known).
    ``concurrency_limit`` is the limit slot acceptance keeps to now (``max_concurrent`` unless
    adaptive concurrency shrank it), ``limit_decreases`` and ``limit_increases`` how often
    adaptive concurrency changed it."""

    backend: str
    queued: int
    in_flight: int
    max_concurrent: int
    succeeded: int
    failed: int
    retried: int
    cancelled: int
    rejected: int
    breaker: str
    breaker_transitions: dict[str, int]
    latency_p50: float | None
    latency_p95: float | None
    info: dict[str, Any]
    queued_p50: float | None = None
    queued_p95: float | None = None
    service_p50: float | None = None
    service_p95: float | None = None
    usage: dict[str, TokenUsage] | None = None
    concurrency_limit: int | None = None
    limit_decreases: int = 0
    limit_increases: int = 0


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Lane:
    """One backend instance inside the dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        name: str,
        limits: LimitsConfig,
        retry: RetryConfig,
        breaker: BreakerConfig,
        host: str | None = None,
        kind: str | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.name = name
        # What kind of backend this is (say, "claude"), whatever the lane is named.
        self.kind = kind or name
        # The backend's host (say, "api.openai.com:443"), if its client told us: for messages.
        self.host = host
        self.limits = limits
        self.retry = retry
        self.breaker = CircuitBreaker(breaker, dispatcher.clock, name)
        # Slot acceptance reads ``limit``: ``ceiling`` (max_concurrent_requests) unless adaptive
        # concurrency has shrunk it (see ``_adaptive``).
        self.ceiling = self.limit = limits.max_concurrent_requests
        self.adaptive = None if limits.adaptive is None else AdaptiveLimit(limits.adaptive)
        self.in_flight = 0
        self.queued = 0
        self.closed = False
        # Waiting jobs, and abandoned ones not yet dropped (len(_heap) - queued of them).
        self._heap: list[_Job] = []
        # The key of this lane's latest entry in the dispatcher's queue; an entry with another
        # key is stale (see the module docstring).
        self._entry_key: tuple[float, int] | None = None
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self.succeeded = self.failed = self.retried = self.cancelled = self.rejected = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.queue_times: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # Per model: [calls, input tokens, output tokens]; lists, so that a call adds cheaply.
        self.usage: dict[str, list[int]] = {}
        # Free-form facts a backend reports (say, rate-limit headers); shown in stats.
        self.info: dict[str, Any] = {}
        # Set while the lane is rate limited (see ``_ratelimit``); None costs a call one check.
        self.gate: RateGate | None = None
        # The lane's concurrency shared with other processes through Redis (see ``_redis``).
        self.shared: SharedSlots | None = None

    # -- slots -------------------------------------------------------------------------------

    def _take_slot(self) -> bool:
        """Take a lane slot and a global one; returns the probe flag."""
        self.in_flight += 1
        self.dispatcher.in_flight += 1
        # The common case, read without the state property: closed allows, and is no probe.
        return self.breaker._state is not BreakerState.CLOSED and self.breaker.acquire()

    def _global_slot_free(self) -> bool:
        limit = self.dispatcher.max_in_flight
        return limit is None or self.dispatcher.in_flight < limit

    def _best(self) -> _Job | None:
        """The best waiting job, dropping abandoned ones from the top of the heap."""
        heap = self._heap
        while heap:
            job = heap[0]
            if not job.future.done():
                return job
            # Abandoned, or cancelled with its task (Task.cancel): that task's abandon() does the
            # bookkeeping when it sees the CancelledError.
            heapq.heappop(heap)
        return None

    def fill(self) -> None:
        """Start waiting jobs while this lane's slots and the global ones allow, best first; a
        lane that waits only for a global slot gets its entry in the dispatcher's queue."""
        while self.in_flight < self.limit:
            job = self._best()
            if job is None:
                break
            if self.breaker.state is BreakerState.OPEN:
                heapq.heappop(self._heap)
                self._leave_queue()
                job.future.set_exception(self.circuit_error(job.request_id))
                continue
            if not self.breaker.allows():
                break  # half-open and its probes are out: wait for their verdict
            if not self._global_slot_free():
                self.dispatcher._want(self, job)
                break
            heapq.heappop(self._heap)
            self._leave_queue()
            job.future.set_result(self._take_slot())
        stale = len(self._heap) - self.queued
        if stale > 32 and stale * 2 > len(self._heap):
            self._heap = [job for job in self._heap if not job.future.done()]
            heapq.heapify(self._heap)

    def release(self, probe: bool, outcome: bool | None, error: APIError | None = None) -> None:
        """Give a slot back. ``outcome``, the breaker's verdict: True success, False failure
        (``error``), None no verdict (a probe then frees its place)."""
        if self.limit < self.ceiling and outcome is True and self.adaptive is not None:
            self.adaptive.succeeded(self, self.in_flight)
        if self.shared is not None:
            self.shared.release(outcome)
        self.in_flight -= 1
        dispatcher = self.dispatcher
        dispatcher.in_flight -= 1
        breaker = self.breaker
        # A success on a closed breaker with no failures counted (the common case) changes
        # nothing: it skips the verdict's method calls.
        if (
            outcome is not True
            or probe
            or breaker._failures
            or breaker._state is not BreakerState.CLOSED
        ):
            self.judge(outcome, error, probe)
        if dispatcher.max_in_flight is None:
            if self._heap:
                self.fill()
        else:
            # The freed global slot goes to the best waiting job of any lane, this one included.
            job = self._best()
            if job is not None and self.in_flight < self.limit:
                dispatcher._want(self, job)
            dispatcher._serve()
            if self._heap and dispatcher.in_flight < dispatcher.max_in_flight:
                self.fill()  # say, a breaker that now refuses: fail or hold this lane's jobs
        if self.gate is not None:
            self.gate.room_freed()  # a call waiting for its budget may wait for a slot, too
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def judge(self, outcome: bool | None, error: APIError | None, probe: bool = False) -> bool:
        """Give the breaker a verdict (see ``release``); True if it opened the breaker."""
        if outcome is True:
            self.breaker.record_success(probe)
        elif outcome is False:
            if self.breaker.record_failure(probe, error):
                if error is not None:
                    self.note_open(error)
                if self.shared is not None:
                    self.shared.tripped(self.breaker.open_time)
                return True
        elif probe:
            self.breaker.release_probe()
        return False

    def _where(self) -> str:
        return self.name if self.host is None else f"{self.name} ({self.host})"

    def circuit_error(self, request_id: str | None, *, rejected: bool = True) -> CircuitOpenError:
        """The error of a call the open breaker refuses: names the backend, says why it opened
        and carries the failure that opened it (``last_error``, ``__cause__``)."""
        breaker = self.breaker
        retry_in = breaker.retry_in()
        if rejected:
            self.rejected += 1
        cause = breaker.opened_by
        if breaker.opened_elsewhere:
            why = "the breaker of another process sharing it through Redis opened"
        elif breaker.opened_from is BreakerState.HALF_OPEN:
            why = "its half-open probe failed"
        else:
            n = breaker._config.failure_threshold
            why = f"{n} calls in a row failed" if n > 1 else "a call failed"
        if cause is not None:
            why += f", the last with {type(cause).__name__}: {cause.message}"
        return CircuitOpenError(
            f"circuit open for {self._where()}: {why}; not sent, next try in {retry_in:.1f}s",
            backend=self.name,
            request_id=request_id,
            retry_in=retry_in,
            retry_at=self.dispatcher.clock() + retry_in,
            host=self.host,
            last_error=cause,
        )

    def note_open(self, error: APIError) -> None:
        """Note on a call's own error that the breaker opened: by this failure, or while the
        call was between attempts (its retry then was not sent)."""
        if error.circuit_open is not None:
            return
        refusal = error.circuit_open = self.circuit_error(error.request_id, rejected=False)
        if self.breaker.opened_by is error:
            text = (
                f"this failure opened the circuit breaker of {self._where()}: calls to it fail"
                f" fast with CircuitOpenError for {refusal.retry_in:.1f}s"
            )
        else:
            text = (
                f"the circuit breaker of {self._where()} opened while this call waited to retry,"
                f" so its retry was not sent; next try in {refusal.retry_in:.1f}s"
            )
        if sys.version_info >= (3, 11):
            error.add_note(text)

    def refuse_retry(self, error: APIError) -> APIError:
        """A call that reached the backend and whose retry the open breaker refuses: its own
        last error, noted."""
        self.rejected += 1
        self.note_open(error)
        return error

    # -- the queue ---------------------------------------------------------------------------

    def _leave_queue(self) -> None:
        self.queued -= 1
        self._wake_room_waiter()

    def _wake_room_waiter(self) -> None:
        """If the queue has room, wake the first caller still waiting for it."""
        waiters = self._room_waiters
        while waiters and self.queued < self.limits.queue_size:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _wait_for_room(self, request_id: str, deadline_at: float | None) -> None:
        timeout = self.limits.queue_timeout
        if deadline_at is not None:
            remaining = max(0.0, deadline_at - self.dispatcher.clock())
            timeout = remaining if timeout is None else min(timeout, remaining)
        while self.queued >= self.limits.queue_size:
            if timeout == 0:
                self.rejected += 1
                raise QueueFullError(
                    f"queue of {self.limits.queue_size} is full",
                    backend=self.name,
                    request_id=request_id,
                )
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                self.rejected += 1
                raise QueueFullError(
                    f"queue of {self.limits.queue_size} stayed full for {timeout}s",
                    backend=self.name,
                    request_id=request_id,
                ) from None
            except asyncio.CancelledError:
                # Pass the wake-up on if we were woken and cancelled at once.
                if waiter.done() and not waiter.cancelled():
                    self._wake_room_waiter()
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
            if self.closed:
                raise ClientClosedError("client closed", backend=self.name, request_id=request_id)

    def acquire_nowait(self, request_id: str) -> bool | None:
        """A slot at once if one is free and nothing waits (the probe flag), else None.

        Raises when the lane is closed or its breaker open; the attempt loop tries this first, so
        a call that need not wait creates no future and no coroutine for it.
        """
        if self.closed:
            raise ClientClosedError("client is closed", backend=self.name, request_id=request_id)
        breaker = self.breaker
        if breaker._state is not BreakerState.CLOSED and breaker.state is BreakerState.OPEN:
            raise self.circuit_error(request_id)
        if self.queued or self.in_flight >= self.limit:
            return None
        dispatcher = self.dispatcher
        limit = dispatcher.max_in_flight
        if limit is not None and dispatcher.in_flight >= limit:
            return None
        # Every call passes here: the closed breaker is read without a method call.
        if breaker._state is BreakerState.CLOSED:
            self.in_flight += 1
            dispatcher.in_flight += 1
            return False
        if not breaker.allows():
            return None
        return self._take_slot()

    # The three steps of waiting for a slot, taken inline by the attempt loop: a queued call then
    # holds one coroutine frame, not two.

    def enqueue(self, priority: int, request_id: str) -> _Job:
        """Queue a call (there is room); its future gets the probe flag when a slot is its."""
        dispatcher = self.dispatcher
        seq = next(dispatcher._seq)
        aging = dispatcher.aging
        key = (priority, seq) if aging is None else (dispatcher.clock() + priority * aging, seq)
        job = _Job(key, asyncio.get_running_loop().create_future(), request_id)
        self.queued += 1
        heapq.heappush(self._heap, job)
        self.fill()
        return job

    def wait_job(self, job: _Job, deadline_at: float | None) -> Awaitable[bool]:
        if deadline_at is None:
            return job.future
        remaining = deadline_at - self.dispatcher.clock()
        return asyncio.wait_for(job.future, max(0.0, remaining))

    def abandon(self, job: _Job, exc: BaseException) -> APITimeoutError | None:
        """Tidy up after a queued call stopped waiting with ``exc``; returns the error to raise
        instead of it (a deadline passed while queued), or None to re-raise it."""
        future = job.future
        if not future.done() or future.cancelled():
            future.cancel()
            self._leave_queue()
        elif future.exception() is None:
            # Granted, but we were cancelled before we could use it.
            if self.shared is not None:
                self.shared.never_acquired()
            self.release(future.result(), None)
        if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, AsyncLLMError):
            return APITimeoutError(
                "deadline passed while queued", backend=self.name, request_id=job.request_id
            )
        return None

    # -- closing -----------------------------------------------------------------------------

    def closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
            if self.closed:
                self._closing.set()
        return self._closing

    async def aclose(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Refuse new calls, fail the queued ones, let running ones finish for up to ``timeout``."""
        if self.closed:
            return
        self.closed = True
        self.closing_event().set()
        for job in self._heap:
            if not job.future.done():
                self.queued -= 1
                job.future.set_exception(
                    ClientClosedError(
                        "client closed while the call was queued",
                        backend=self.name,
                        request_id=job.request_id,
                    )
                )
        self._heap.clear()
        for waiter in self._room_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._room_waiters.clear()
        if self.gate is not None:
            self.gate.room_freed()
        if self.in_flight:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                logger.warning(
                    "%s: %d calls still running after %.1fs; cutting them off",
                    self.name,
                    self.in_flight,
                    timeout,
                    extra={"backend": self.name, "request_id": "-"},
                )
        self.dispatcher._lanes.pop(self.name, None)
        self.dispatcher.budgets.forget(self.name)

    def stats(self) -> BackendStats:
        latencies = sorted(self.latencies)
        queued = sorted(self.queue_times)
        # Service time per call: its latency less its time queued, pairwise (both deques get an
        # entry per successful call).
        service = sorted(t - q for t, q in zip(self.latencies, self.queue_times, strict=True))
        adaptive = self.adaptive
        return BackendStats(
            backend=self.name,
            queued=self.queued,
            in_flight=self.in_flight,
            max_concurrent=self.limits.max_concurrent_requests,
            succeeded=self.succeeded,
            failed=self.failed,
            retried=self.retried,
            cancelled=self.cancelled,
            rejected=self.rejected,
            breaker=self.breaker.state.value,
            breaker_transitions=dict(self.breaker.transitions),
            latency_p50=_percentile(latencies, 0.5),
            latency_p95=_percentile(latencies, 0.95),
            info=dict(self.info)
            if self.shared is None
            else {**self.info, "redis": self.shared.stats()},
            queued_p50=_percentile(queued, 0.5),
            queued_p95=_percentile(queued, 0.95),
            service_p50=_percentile(service, 0.5),
            service_p95=_percentile(service, 0.95),
            usage={model: TokenUsage(*sums) for model, sums in self.usage.items()},
            concurrency_limit=self.limit,
            limit_decreases=0 if adaptive is None else adaptive.decreases,
            limit_increases=0 if adaptive is None else adaptive.increases,
        )


def _refuse(
    lane: Lane,
    refusal: RateLimitError,
    error: APIError | None,
    verdict: bool | None,
    counted: bool,
) -> NoReturn:
    """Raise the rate gate's refusal: as itself on a first attempt; on a retry, from the last
    attempt's error, after the breaker has the call's one verdict (unless a probe gave it)."""
    if error is None:
        raise refusal
    if not counted and lane.judge(verdict, error):
        lane.fill()
    raise refusal from error


class Dispatcher:
    """Queues, limits, retries and tracks the calls of every client on one event loop.

    ``max_in_flight`` bounds the calls in flight across every backend (None: unlimited); the
    best waiting call of the lanes that could run it gets each freed slot. ``aging`` (seconds per
    priority level) lets waiting calls age: a call of priority p queued at t is ordered as if
    queued at t + p * aging, so LOW work cannot starve behind a steady stream of HIGH work. Without
    it, priority is strict: a LOW call waits for as long as HIGH calls keep the backend busy.
    ``clock``, ``sleep`` and ``rng`` are injectable so that tests of timing never wait.
    ``observer`` watches every call for telemetry (see ``_observe``): by default OpenTelemetry's
    where ``opentelemetry-api`` is installed, else none; None turns it off.
    ``redis_url`` shares every lane's budgets, ``Retry-After`` blocks, concurrency limit and
    open breaker with every process whose dispatcher uses the same Redis (a lane is shared by
    name; see ``_redis``); a process killed while it holds slots gives them back after
    ``redis_lease`` seconds. Needs the ``asyncllm[redis]`` extra.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        tracker_ttl: float | None = None,
        tracker_max_records: int | None = None,
        max_in_flight: int | None = None,
        aging: float | None = None,
        observer: Observer | None = AUTO,
        redis_url: str | None = None,
        redis_lease: float = DEFAULT_REDIS_LEASE,
    ) -> None:
        check_int("max_in_flight", max_in_flight, 1)
        check_positive("redis_lease", redis_lease)
        check_positive("aging", aging)
        self.max_in_flight = max_in_flight
        self.aging = aging
        # Attempts in flight across every lane (each holds a slot of its lane, too).
        self.in_flight = 0
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        kwargs: dict[str, Any] = {}
        if tracker_ttl is not None:
            kwargs["ttl"] = tracker_ttl
        if tracker_max_records is not None:
            kwargs["max_records"] = tracker_max_records
        self.tracker = RequestTracker(clock=clock, **kwargs)
        # Every lane's rate budgets and blocks, keyed by lane name.
        self.budgets: BudgetStore = MemoryBudgetStore()
        if redis_url is not None:
            from ._redis import RedisBudgetStore

            self.budgets = RedisBudgetStore(
                redis_url, clock=clock, lease_ttl=redis_lease, heartbeat=redis_lease / 5
            )
        self._lanes: dict[str, Lane] = {}
        self._seq = itertools.count()
        # One entry per lane waiting for a global slot: (its best job's key, lane).
        self._queue: asyncio.PriorityQueue[tuple[tuple[float, int], Lane]] = asyncio.PriorityQueue()
        self.closed = False
        self.observer: Observer | None = default_observer() if observer is AUTO else observer
        if self.observer is not None:
            self.observer.attach(self)

    # -- lanes -------------------------------------------------------------------------------

    def lane(
        self,
        name: str,
        *,
        limits: LimitsConfig | None = None,
        retry: RetryConfig | None = None,
        breaker: BreakerConfig | None = None,
        host: str | None = None,
        kind: str | None = None,
        rate_limits: RateLimits | None = None,
        rate_dialect: RateDialect | None = None,
    ) -> Lane:
        """Register a backend instance; a taken name gets a numeric suffix. ``host``, the
        backend's host (and port), is named by its ``CircuitOpenError``; ``kind``, the kind of
        backend (its client's ``backend``), is reported to telemetry; ``rate_limits``, the
        budgets its calls wait for, and ``rate_dialect`` how its backend reports them (see
        ``_ratelimit``)."""
        if self.closed:
            raise ClientClosedError("dispatcher is closed", backend=name)
        unique = name
        n = 2
        while unique in self._lanes:
            unique = f"{name}#{n}"
            n += 1
        lane = Lane(
            self,
            unique,
            limits or LimitsConfig(),
            retry or RetryConfig(),
            breaker or BreakerConfig(),
            host,
            kind,
        )
        self._lanes[unique] = lane
        if rate_limits is not None:
            limit_lane(lane, rate_limits, self.budgets, rate_dialect)
        if self.budgets.shared:
            share_lane(lane, self.budgets)
        return lane

    # -- the priority queue ------------------------------------------------------------------

    def _want(self, lane: Lane, job: _Job) -> None:
        """``lane`` waits for a global slot for ``job``, its best waiting job."""
        if lane._entry_key != job.key:
            lane._entry_key = job.key
            self._queue.put_nowait((job.key, lane))

    def _serve(self) -> None:
        """Give free global slots to the best entries; stale ones are dropped as they surface."""
        queue = self._queue
        limit = self.max_in_flight
        while limit is not None and self.in_flight < limit and not queue.empty():
            key, lane = queue.get_nowait()
            if lane._entry_key != key or lane.closed:
                continue
            lane._entry_key = None
            lane.fill()

    # -- running calls -----------------------------------------------------------------------

    def _begin(
        self, lane: Lane, operation: str, priority: int, request_id: str, model: str | None
    ) -> RequestRecord:
        if not isinstance(priority, int):
            raise ConfigurationError("priority must be an int or a Priority")
        record = RequestRecord(request_id, lane.name, operation, int(priority), self.clock())
        if model is not None:
            record.model = model
        return self.tracker.add(record)

    def _finish(
        self,
        lane: Lane,
        record: RequestRecord,
        exc: BaseException | None,
        watch: CallObserver | None,
        answer: Any = None,
    ) -> None:
        """Record how the call ended; ``answer``, what it returned (for a stream: its last item
        that carried usage, else its last item), is read for token usage and the model."""
        now = self.clock()
        record.finished_at = now
        if exc is None:
            record.status = RequestStatus.SUCCEEDED
            lane.succeeded += 1
            enqueued = record.enqueued_at
            lane.latencies.append(now - enqueued)
            lane.queue_times.append((record.started_at or enqueued) - enqueued)
            usage = getattr(answer, "usage", None)
            if usage is not None:
                input_tokens = getattr(usage, "prompt_tokens", None)
                output_tokens = getattr(usage, "completion_tokens", None)
                if input_tokens is None and output_tokens is None:  # the Responses API's names
                    input_tokens = getattr(usage, "input_tokens", None)
                    output_tokens = getattr(usage, "output_tokens", None)
                if input_tokens is not None or output_tokens is not None:
                    record.input_tokens = input_tokens
                    record.output_tokens = output_tokens
                    key = record.model or getattr(answer, "model", None) or "-"
                    sums = lane.usage.get(key)
                    if sums is None:
                        sums = lane.usage[key] = [0, 0, 0]
                    sums[0] += 1
                    sums[1] += input_tokens or 0
                    sums[2] += output_tokens or 0
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            record.status = RequestStatus.CANCELLED
            lane.cancelled += 1
        else:
            record.status = RequestStatus.FAILED
            record.last_error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:300]
            lane.failed += 1
        if watch is not None:
            watch.call_ended(record, getattr(answer, "model", None), exc)
        if logger.isEnabledFor(logging.DEBUG):
            _log_finished(record, exc)

    def _retry_delay(
        self,
        lane: Lane,
        record: RequestRecord,
        error: APIError,
        schedule: BackoffSchedule,
        deadline_at: float | None,
        max_retries: int | None,
        creates: bool = False,
        at_once: bool = False,
    ) -> float:
        """The wait before the next attempt, or raise ``error`` if we must not retry (a call that
        ``creates`` something also only as ``may_resend`` allows). ``at_once``: no backoff (the
        lane's queue paces the retry), and the schedule does not advance."""
        retry = lane.retry
        limit = retry.max_retries if max_retries is None else max_retries
        if not is_retryable(error) or record.attempts > limit:
            raise error
        if creates and not may_resend(error):
            if sys.version_info >= (3, 11):
                error.add_note(
                    "not retried: this call creates something, and is sent again only when it"
                    " never left or the server asked for it later (429/503 with Retry-After);"
                    + (
                        " it may have been applied: look before sending it again"
                        if error.may_have_been_applied
                        else " it was not applied"
                    )
                )
            raise error
        if error.retry_after is not None and error.retry_after > retry.max_retry_after:
            raise error
        delay = 0.0 if at_once else schedule.next_delay(error.retry_after)
        if deadline_at is not None and self.clock() + delay >= deadline_at:
            raise error
        record.status = RequestStatus.RETRYING
        record.last_error = f"{type(error).__name__}: {error.message}"[:300]
        lane.retried += 1
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            lane.name,
            record.attempts,
            type(error).__name__,
            delay,
            extra={
                "request_id": record.request_id,
                "backend": lane.name,
                "model": record.model,
                "operation": record.operation,
                "attempt": record.attempts,
                "status": error.status_code,
                "error_type": type(error).__name__,
                "retry_delay": delay,
            },
        )
        return delay

    async def _backoff(
        self, lane: Lane, record: RequestRecord, error: APIError, delay: float
    ) -> None:
        """Wait out a retry's backoff, without a slot; a closing client cuts it short."""
        if delay > 0:
            sleeper = asyncio.ensure_future(self.sleep(delay))
            closing = asyncio.ensure_future(lane.closing_event().wait())
            try:
                await asyncio.wait((sleeper, closing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                closing.cancel()
        else:
            await asyncio.sleep(0)
        if lane.closed:
            raise ClientClosedError(
                "client closed during a retry backoff",
                backend=lane.name,
                request_id=record.request_id,
            ) from error

    @staticmethod
    def _label(exc: APIError, lane: Lane, request_id: str, attempts: int) -> APIError:
        if exc.backend is None:
            exc.backend = lane.name
        if exc.request_id is None:
            exc.request_id = request_id
        exc.attempts = attempts
        return exc

    def _attempt_timeout(self, timeout: float | None, deadline_at: float | None) -> float | None:
        if deadline_at is None:
            return timeout
        remaining = max(0.001, deadline_at - self.clock())
        return remaining if timeout is None else min(timeout, remaining)

    async def _attempts(
        self,
        lane: Lane,
        attempt: Callable[[Attempt], Awaitable[T]],
        priority: int,
        timeout: float | None,
        max_retries: int | None,
        creates: bool,
        opened: tuple[RequestRecord, CallObserver | None, float | None] | None,
        operation: str = "",
        deadline: float | None = None,
        request_id: str | None = None,
        model: str | None = None,
        payload: Any = None,
    ) -> Any:
        """The one attempt loop, for calls and streams: take a slot (at once, or by waiting in
        the lane), run ``attempt`` in the caller's task, give the slot back, and on a retryable
        error wait out the backoff without a slot and go again.
        ``creates``: the call creates something, so it is retried only as ``may_resend`` allows.

        A call (``opened`` None, from ``run``) is begun and finished here, and its result
        returned: ``run`` hands this coroutine to its caller, so that a queued call holds one
        frame, not two. A stream (``opened``: the record, observer and deadline that ``_stream``
        began) gets its first item, that attempt's probe flag and its lease (below); a success
        keeps its slot (the stream gives it back when it ends) and its attempt stays open for
        the observer.
        ``payload``: the call's JSON body, which a lane with budgets reads its cost from; a call
        settles the lease of its successful attempt with its result here, a stream gets it back
        with its gate, to be settled with its usage.

        The breaker hears of the call once, when it gives up (see the module docstring)."""
        if opened is None:
            rid = request_id or _request_id.get() or new_request_id()
            record = self._begin(lane, operation, priority, rid, model)
            observer = self.observer
            watch = None if observer is None else observer.start_call(record, lane)
            deadline_at = None if deadline is None else self.clock() + deadline
        else:
            record, watch, deadline_at = opened
            rid = record.request_id
        schedule: BackoffSchedule | None = None
        # The last attempt's error and its verdict; ``counted`` once the breaker has had this
        # call's verdict (from a half-open probe), so that the call counts at most once.
        error: APIError | None = None
        verdict: bool | None = None
        counted = False
        waited = 0.0
        # A lease that must wait for a budget learned since it was taken, without a slot.
        stale: Lease | None = None
        try:
            while True:
                if error is not None and lane.breaker.state is BreakerState.OPEN:
                    raise lane.refuse_retry(error)
                held: tuple[RateGate, Lease] | None = None
                gate = lane.gate
                if gate is not None:
                    admitted: Lease | RateLimitError | None
                    if stale is not None:
                        admitted = await gate.extend(rid, priority, deadline_at, stale)
                        stale = None
                    else:
                        admitted = await gate.admit(
                            rid, priority, deadline_at, record.operation, payload
                        )
                    if isinstance(admitted, RateLimitError):
                        _refuse(lane, admitted, error, verdict, counted)
                    if admitted is not None:
                        held = (gate, admitted)
                probe = lane.acquire_nowait(rid)
                if probe is None:
                    if lane.queued >= lane.limits.queue_size:
                        await lane._wait_for_room(rid, deadline_at)
                    job = lane.enqueue(priority, rid)
                    ended: BaseException | None = None
                    try:
                        probe = await lane.wait_job(job, deadline_at)
                    except BaseException as exc:
                        replaced = lane.abandon(job, exc)
                        if replaced is not None:
                            if error is None:
                                raise replaced from None
                            ended = replaced
                        elif error is not None and isinstance(exc, CircuitOpenError):
                            ended = exc
                        else:
                            raise
                    if probe is None:
                        # A retry the breaker refused, or whose deadline passed while it was queued:
                        # raised outside the handler, so that no error gets the other as context.
                        assert error is not None
                        assert ended is not None
                        if isinstance(ended, CircuitOpenError):
                            raise lane.refuse_retry(error)
                        if not counted and lane.judge(verdict, error):
                            lane.fill()  # the calls queued behind it fail at once
                        raise ended from error
                    if gate is None and lane.gate is not None:
                        # The lane learned its budgets (a reply named them) while this call
                        # waited for a slot: it keeps to them too, rather than going out with
                        # the backlog that was queued before they were known.
                        gate = lane.gate
                        try:
                            admitted = await gate.admit(
                                rid, priority, deadline_at, record.operation, payload, True
                            )
                        except BaseException:
                            lane.release(probe, None)
                            raise
                        if isinstance(admitted, RateLimitError):
                            lane.release(probe, None)
                            _refuse(lane, admitted, error, verdict, counted)
                        if admitted is not None:
                            held = (gate, admitted)
                    elif held is not None and held[0].store.uncounted(held[1]):
                        # Likewise for a lease taken before the lane learned a budget it
                        # spends from (a lane whose RateLimits name no budget of their own); if
                        # it must wait for it, it gives its slot back meanwhile, so that calls
                        # already within the budget are not held up behind it.
                        try:
                            extended = await held[0].extend_now(held[1])
                        except BaseException:
                            lane.release(probe, None)
                            raise
                        if not extended:
                            lane.release(probe, None)
                            stale = held[1]
                            continue
                if lane.shared is not None:
                    try:
                        await lane.shared.acquire(rid, deadline_at)
                    except BaseException:
                        lane.release(probe, None)
                        raise
                gate = lane.gate
                if gate is not None and gate.blocked_until > self.clock():
                    # A 429 blocked the lane (in this process, or in another one sharing it
                    # through Redis) while this call waited for its slot: rather than be sent
                    # into the block, it gives the slot back and waits the block out at the
                    # gate, in priority order, as a call arriving now does.
                    lane.release(probe, None)
                    if held is not None:
                        await held[0].give_back(held[1])
                    continue
                record.attempts += 1
                record.status = RequestStatus.RUNNING
                if record.started_at is None:
                    record.started_at = self.clock()
                headers = None if watch is None else watch.attempt_started(record.attempts, waited)
                if held is not None:
                    held[0].store.sending(held[1])
                try:
                    result = await attempt(
                        _tuple_new(
                            Attempt,
                            (
                                rid,
                                record.attempts,
                                self._attempt_timeout(timeout, deadline_at),
                                headers,
                                None if held is None else held[1],
                            ),
                        )
                    )
                except APIError as exc:
                    error = self._label(exc, lane, rid, record.attempts)
                    if watch is not None:
                        watch.attempt_ended(error)
                except BaseException as exc:
                    lane.release(probe, None)
                    if watch is not None:
                        watch.attempt_ended(exc)
                    raise
                else:
                    if opened is not None:
                        return result, probe, held
                    lane.release(probe, True)
                    if watch is not None:
                        watch.attempt_ended(None)
                    break
                verdict = breaker_verdict(error)
                # A refusal for overload while the lane has more in flight than its (now
                # shrunk) limit is the lane's own excess: its retry waits in the lane's queue,
                # in priority order, for a slot under the new limit, instead of a backoff.
                excess = False
                if lane.adaptive is not None:
                    lane.adaptive.overloaded(lane, error)
                    excess = (
                        lane.in_flight > lane.limit
                        and error.retry_after is None
                        and is_overload(error)
                    )
                if held is not None and (error.status_code is not None or error.unsent):
                    # Answered with an error, or never sent: no tokens counted.
                    await held[0].give_back(held[1])
                if error.status_code == 429 and error.retry_after is not None:
                    await block_lane(lane, error.retry_after, self.budgets)
                if lane.closed:
                    lane.release(probe, None)
                    raise ClientClosedError(
                        "client closed while the call was running",
                        backend=lane.name,
                        request_id=rid,
                    ) from error
                if schedule is None:
                    schedule = BackoffSchedule(lane.retry, self.rng)
                try:
                    delay = self._retry_delay(
                        lane, record, error, schedule, deadline_at, max_retries, creates, excess
                    )
                except BaseException:
                    # The call gives up: its one verdict goes with its slot, before the slot can go
                    # to a queued call (which an opening breaker then refuses).
                    lane.release(probe, None if counted else verdict, error)
                    raise
                if probe:
                    # A half-open probe's verdict is its attempt's: it closes or reopens now.
                    counted = verdict is not None
                    lane.release(True, verdict, error)
                else:
                    lane.release(False, None)  # no verdict until the call ends
                await self._backoff(lane, record, error, delay)
                waited = delay
            if held is not None:
                await held[0].settle(held[1], result)
        except BaseException as exc:
            if opened is None:
                self._finish(lane, record, exc, watch)
            raise
        self._finish(lane, record, None, watch, result)
        return result

    def run(
        self,
        lane: Lane,
        operation: str,
        attempt: Callable[[Attempt], Awaitable[T]],
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
        max_retries: int | None = None,
        model: str | None = None,
        creates: bool = False,
        payload: Any = None,
    ) -> Coroutine[Any, Any, T]:
        """Run ``attempt`` under the lane's limits, retrying per its policy (``max_retries``
        overrides the lane's count for this call); returns its result. A call that ``creates``
        something (a background response, a batch, an upload) is retried only while it cannot
        have been applied (``may_resend``). ``model``, the model the call asks for, is kept on
        its record and reported to telemetry; ``payload``, the call's JSON body, what a lane with
        rate budgets reserves its tokens by.
        (A plain function returning the attempt loop's coroutine, which begins and finishes
        the call when awaited: no frame of its own per call.)"""
        return self._attempts(
            lane,
            attempt,
            priority,
            timeout,
            max_retries,
            creates,
            None,
            operation,
            deadline,
            request_id,
            model,
            payload,
        )

    def stream(
        self,
        lane: Lane,
        operation: str,
        open_stream: Callable[[Attempt], AsyncIterator[T]],
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
        max_retries: int | None = None,
        model: str | None = None,
        creates: bool = False,
        payload: Any = None,
    ) -> Stream[T]:
        """Like ``run`` for a stream: retried only until its first item reaches the caller."""
        rid = request_id or _request_id.get() or new_request_id()
        return Stream(
            self._stream(
                lane,
                operation,
                open_stream,
                priority,
                timeout,
                deadline,
                rid,
                max_retries,
                model,
                creates,
                payload,
            ),
            rid,
        )

    async def _stream(
        self,
        lane: Lane,
        operation: str,
        open_stream: Callable[[Attempt], AsyncIterator[T]],
        priority: int,
        timeout: float | None,
        deadline: float | None,
        rid: str,
        max_retries: int | None,
        model: str | None,
        creates: bool,
        payload: Any = None,
    ) -> AsyncIterator[T]:
        record = self._begin(lane, operation, priority, rid, model)
        observer = self.observer
        watch = None if observer is None else observer.start_call(record, lane)
        deadline_at = None if deadline is None else self.clock() + deadline

        async def first_item(a: Attempt) -> tuple[AsyncIterator[T], T | None, bool]:
            """Open the stream and read its first item: the part of a stream that is retried."""
            source = open_stream(a)
            try:
                return source, await source.__anext__(), False
            except StopAsyncIteration:
                await _aclose(source)
                return source, None, True
            except BaseException:
                await _aclose(source)
                raise

        try:
            began: tuple[
                tuple[AsyncIterator[T], T | None, bool], bool, tuple[RateGate, Lease] | None
            ] = await self._attempts(
                lane,
                first_item,
                priority,
                timeout,
                max_retries,
                creates,
                (record, watch, deadline_at),
                payload=payload,
            )
            (source, first, empty), probe, leased = began
        except BaseException as exc:
            self._finish(lane, record, exc, watch)
            raise
        outcome: bool | None = None
        failure: APIError | None = None
        # The last item, or the last that carried usage: what _finish reads usage and model from.
        last: Any = None
        try:
            if not empty:
                last = first
                yield first  # type: ignore[misc]  # not empty: the first item is a T
                held = getattr(first, "usage", None) is not None
                async for item in source:
                    if getattr(item, "usage", None) is not None:
                        last, held = item, True
                    elif not held:
                        last = item
                    yield item
            outcome = True
            if watch is not None:
                watch.attempt_ended(None)
            self._finish(lane, record, None, watch, last)
        except APIError as exc:
            failure = self._label(exc, lane, rid, record.attempts)
            outcome = breaker_verdict(failure)
            if lane.adaptive is not None:
                lane.adaptive.overloaded(lane, failure)
            if watch is not None:
                watch.attempt_ended(failure)
            self._finish(lane, record, exc, watch)
            raise
        except BaseException as exc:
            if watch is not None:
                watch.attempt_ended(exc)
            self._finish(lane, record, exc, watch)
            raise
        finally:
            try:
                await _aclose(source)
            finally:
                lane.release(probe, outcome, failure)
            if leased is not None:
                # The final usage settles the reservation, even of a stream that failed after
                # it (a stream cut before it leaves the reservation standing).
                await leased[0].settle(leased[1], last)

    # -- reporting and shutdown -----------------------------------------------------------

    def stats(self) -> dict[str, BackendStats]:
        """Per backend: queued, in flight, outcomes, retries, breaker state, latency p50/p95."""
        return {name: lane.stats() for name, lane in self._lanes.items()}

    def stats_table(self) -> str:
        """The stats as a table. Time queued (waiting for a slot) and service time (attempts,
        retries and backoff) are shown apart, p50/p95 in ms over the last successful calls, so
        a saturated backend reads as queueing, not as a slow server; tokens are summed. "limit"
        is the concurrency limit now over its maximum, "limit -/+" how often adaptive
        concurrency shrank and grew it, so that overload reads as a lower limit."""
        header = (
            "backend",
            "queued",
            "in_flight",
            "ok",
            "failed",
            "retried",
            "cancelled",
            "rejected",
            "breaker",
            "limit",
            "limit -/+",
            "queued p50/p95 ms",
            "service p50/p95 ms",
            "tokens in/out",
        )

        def ms(p50: float | None, p95: float | None) -> str:
            return "-" if p50 is None or p95 is None else f"{p50 * 1000:.1f}/{p95 * 1000:.1f}"

        rows = [header]
        for s in self.stats().values():
            usage = s.usage or {}
            tokens_in = sum(u.input_tokens for u in usage.values())
            tokens_out = sum(u.output_tokens for u in usage.values())
            rows.append(
                (
                    s.backend,
                    str(s.queued),
                    str(s.in_flight),
                    str(s.succeeded),
                    str(s.failed),
                    str(s.retried),
                    str(s.cancelled),
                    str(s.rejected),
                    s.breaker,
                    f"{s.concurrency_limit}/{s.max_concurrent}",
                    f"{s.limit_decreases}/{s.limit_increases}",
                    ms(s.queued_p50, s.queued_p95),
                    ms(s.service_p50, s.service_p95),
                    f"{tokens_in}/{tokens_out}" if usage else "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
        )

    async def aclose(self) -> None:
        """Close every lane: queued calls fail with ClientClosedError, running ones may finish."""
        self.closed = True
        lanes = list(self._lanes.values())
        await asyncio.gather(*(lane.aclose() for lane in lanes))
        self._lanes.clear()
        await self.budgets.aclose()
        loop = asyncio.get_running_loop()
        if _dispatchers.get(loop) is self:
            del _dispatchers[loop]

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _log_finished(record: RequestRecord, exc: BaseException | None) -> None:
    """The one DEBUG record per finished call, its facts in ``extra`` for JSON formatters."""
    latency = (record.finished_at or record.enqueued_at) - record.enqueued_at
    queued = record.queued_time
    logger.debug(
        "%s %s %s: %s after %d attempt(s) in %.1f ms (%.1f ms queued)",
        record.backend,
        record.operation,
        record.model or "-",
        record.status.value,
        record.attempts,
        latency * 1000,
        (queued or 0.0) * 1000,
        extra={
            "request_id": record.request_id,
            "backend": record.backend,
            "model": record.model,
            "operation": record.operation,
            "attempt": record.attempts,
            "status": record.status.value,
            "error_type": None if exc is None else type(exc).__name__,
            "latency": latency,
            "queued_time": queued,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
        },
    )


async def _aclose(source: AsyncIterator[Any]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


_dispatchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dispatcher] = (
    weakref.WeakKeyDictionary()
)


def get_dispatcher() -> Dispatcher:
    """The shared dispatcher of the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    dispatcher = _dispatchers.get(loop)
    if dispatcher is None or dispatcher.closed:
        dispatcher = _dispatchers[loop] = Dispatcher()
    return dispatcher
