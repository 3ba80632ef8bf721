"""Many calls of any client, run through the client's own dispatcher: the glue every batch
script writes, written once.

    async with asyncllm.OpenAI() as client:
        summary = await asyncllm.batch.run(
            lambda line: client.chat(line["messages"], model="gpt-4o-mini"),
            asyncllm.batch.read_jsonl("in.jsonl"),
            "out.jsonl",
            resume=True,
        )
    print(summary.table())

Why a window instead of ``asyncio.gather``: gather over a million items makes a million tasks
and keeps a million results. ``imap`` and ``run`` pull items from the input only while fewer than
``window`` are submitted and not yet handed on, so memory follows the window, not the input. The
concurrency itself stays the client's (its ``max_concurrent_requests`` and queue): the window only
has to be large enough to keep the client's slots busy.

Why JSONL written as items finish: a crash or Ctrl-C loses at most the items in flight. Each line
names its item's input position (``index``) and ``id``; a rerun with ``resume=True`` skips the
indexes already in the output and redoes a last line cut short, so no item is written twice
(the call itself is at least once: an item in flight when the process died may have been served).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from pydantic import BaseModel

from ._constants import BATCH_PROGRESS_INTERVAL, DEFAULT_BATCH_WINDOW
from ._engine._dispatcher import Dispatcher, get_dispatcher
from ._exceptions import APIError, AsyncLLMError, ConfigurationError
from ._http import _json
from ._models import Usage
from ._validate import check_int

__all__ = [
    "BatchProgress",
    "BatchResult",
    "BatchSummary",
    "TextProgress",
    "imap",
    "read_jsonl",
    "run",
]

T = TypeVar("T")
R = TypeVar("R")

Captured = type[BaseException] | tuple[type[BaseException], ...]
Progress = Callable[["BatchProgress"], None]

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[T, R]):
    """One item's outcome: ``value`` if its call returned, ``error`` if it raised an error of the
    captured types. ``index`` is its position in the input (from 0), ``id`` what ``id_of`` gave
    for it or, if that is None, its index; ``latency`` is seconds from submission to the end of its call (queueing
    and retries included)."""

    index: int
    id: Any
    item: T
    value: R | None
    error: BaseException | None
    latency: float

    @property
    def ok(self) -> bool:
        return self.error is None


async def imap(
    call: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    window: int = DEFAULT_BATCH_WINDOW,
    ordered: bool = False,
    capture: Captured = AsyncLLMError,
    id_of: Callable[[T], Any] | None = None,
    skip: Callable[[int], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[BatchResult[T, R], None]:
    """Run ``call(item)`` for every item, at most ``window`` submitted and not yet handed on at a
    time, and yield each item's ``BatchResult``: as it finishes, or in input order with
    ``ordered=True`` (then a slow item holds back the ones after it, and the window bounds those
    waiting behind it too).

    An error of a ``capture`` type is the item's result; any other error (pass ``capture=()`` to
    include every one) cancels the items in flight and is raised. Items whose index ``skip``
    accepts are not called and not yielded. Leaving the loop early (``break``, an error,
    cancellation) cancels the calls in flight before the generator closes; use it with
    ``contextlib.aclosing`` so that this happens at once rather than when it is collected.
    """
    check_int("window", window, 1)
    source = _items(items)
    finished: asyncio.Queue[asyncio.Task[BatchResult[T, R]]] = asyncio.Queue()
    running: set[asyncio.Task[BatchResult[T, R]]] = set()
    waiting: dict[int, BatchResult[T, R]] = {}  # ordered: finished, behind an unfinished one
    order: deque[int] = deque()  # ordered: submitted indexes, oldest first

    async def one(index: int, item: T) -> BatchResult[T, R]:
        ident = None if id_of is None else id_of(item)
        if ident is None:
            ident = index
        start = clock()
        try:
            value = await call(item)
        except capture as exc:
            return BatchResult(index, ident, item, None, exc, clock() - start)
        return BatchResult(index, ident, item, value, None, clock() - start)

    index = -1
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) + len(waiting) < window:
                item = await _next(source)
                if item is _END:
                    exhausted = True
                    break
                index += 1
                if skip is not None and skip(index):
                    continue
                task = asyncio.create_task(one(index, item))
                task.add_done_callback(finished.put_nowait)
                running.add(task)
                if ordered:
                    order.append(index)
            if not running:
                return
            done = await finished.get()
            running.discard(done)
            result = done.result()
            if not ordered:
                yield result
                continue
            waiting[result.index] = result
            while order and order[0] in waiting:
                yield waiting.pop(order.popleft())
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        await _close(source)


_END: Any = object()


def _items(items: Iterable[T] | AsyncIterable[T]) -> Iterator[T] | AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        return aiter(items)
    return iter(items)


async def _next(source: Iterator[T] | AsyncIterator[T]) -> T:
    if isinstance(source, Iterator):
        return next(source, _END)
    try:
        return await anext(source)
    except StopAsyncIteration:
        return _END  # type: ignore[no-any-return]


async def _close(source: Iterator[Any] | AsyncIterator[Any]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
        return
    close = getattr(source, "close", None)
    if close is not None:
        close()


# -- input ------------------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, one at a time (blank lines skipped). A line that is not
    a JSON object raises ``ConfigurationError`` naming the file and line; read the file once
    through this before a run (``for _ in read_jsonl(p): pass``) to refuse bad input before
    anything is sent."""
    for _, value in _numbered_jsonl(path):
        yield value


def _numbered_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``read_jsonl``'s objects with their line numbers (from 1), for messages that name them."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = _json.loads(line)
            except ValueError:
                raise ConfigurationError(f"{path}:{number}: not valid JSON") from None
            if not isinstance(value, dict):
                raise ConfigurationError(
                    f"{path}:{number}: a JSON object was expected, not {type(value).__name__}"
                )
            yield number, value


# -- accounting -------------------------------------------------------------------------------


class _Indexes:
    """A set of item indexes as a bitmap: a million done items cost 125 kB, not a set's 30 MB."""

    __slots__ = ("_bits", "count")

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, index: int) -> bool:
        """Add ``index``; False if it was already there."""
        byte, bit = divmod(index, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if self._bits[byte] >> bit & 1:
            return False
        self._bits[byte] |= 1 << bit
        self.count += 1
        return True

    def __call__(self, index: int) -> bool:
        byte, bit = divmod(index, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


class _Latencies:
    """Percentiles in bounded memory: counts in buckets 2% apart, so p50 and p95 of a million
    calls are as exact as those of a thousand (to 2%) at the cost of a few hundred counters."""

    _STEP = math.log(1.02)
    _FLOOR = 1e-6

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        self._buckets[int(math.log(max(seconds, self._FLOOR) / self._FLOOR) / self._STEP)] += 1
        self.count += 1

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                # The bucket's middle: within 1% of every latency it counted.
                return self._FLOOR * math.exp((bucket + 0.5) * self._STEP)
        raise AssertionError("unreachable: the buckets hold count latencies")


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Where a run stands, as given to a progress display: ``done`` items written this run
    (``failed`` of them errors), ``skipped`` found already written, ``retried`` the attempts the
    dispatcher retried since the run started, ``total`` the input's length if known."""

    done: int
    failed: int
    retried: int
    skipped: int
    total: int | None
    elapsed: float
    final: bool = False

    @property
    def calls_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None without a total or before the first result."""
        rate = self.calls_per_second
        if self.total is None or rate <= 0:
            return None
        return max(0, self.total - self.skipped - self.done) / rate


@dataclass(slots=True)
class BatchSummary:
    """What a run did. ``errors`` counts failed items by error type; ``usage`` sums the token
    counts of the responses that carry a ``Usage``; ``retried`` counts the dispatcher's retries
    during the run (of every call on it); latencies are per item, queueing and retries included."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))
    latency_p50: float | None = None
    latency_p95: float | None = None
    elapsed: float = 0.0

    @property
    def calls(self) -> int:
        return self.succeeded + self.failed

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (name, value) rows, for any table renderer."""

        def ms(seconds: float | None) -> str:
            return "-" if seconds is None else f"{seconds * 1000:.1f} ms"

        rows = [
            ("calls", str(self.calls)),
            ("succeeded", str(self.succeeded)),
            ("failed", str(self.failed)),
        ]
        rows += [(f"  {name}", str(n)) for name, n in sorted(self.errors.items())]
        rows += [
            ("skipped (already written)", str(self.skipped)),
            ("retried", str(self.retried)),
            ("latency p50", ms(self.latency_p50)),
            ("latency p95", ms(self.latency_p95)),
            ("calls/s", f"{self.calls_per_second:.1f}"),
        ]
        rows += [(name.replace("_", " "), str(self.usage[name])) for name in USAGE_FIELDS]
        return rows

    def table(self) -> str:
        return _two_columns(self.rows())


def _two_columns(rows: list[tuple[str, str]]) -> str:
    """(name, value) rows as plain text, the names padded to one width."""
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _add_usage(totals: dict[str, int], value: Any) -> None:
    usage = getattr(value, "usage", None)
    if isinstance(usage, Usage):
        for name in USAGE_FIELDS:
            n = getattr(usage, name)
            if isinstance(n, int):
                totals[name] += n


def _retried(dispatcher: Dispatcher) -> int:
    return sum(s.retried for s in dispatcher.stats().values())


# -- output -----------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """A response as JSON data: a pydantic model dumped without its ``raw`` reply (the parsed
    fields already say what it said) and without empty fields."""
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="json", exclude_none=True)
        data.pop("raw", None)
        return data
    return value


def _error_data(error: BaseException) -> dict[str, Any]:
    data: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, AsyncLLMError) and error.request_id:
        data["request_id"] = error.request_id
    if isinstance(error, APIError) and error.status_code is not None:
        data["status_code"] = error.status_code
    return data


def _line(result: BatchResult[Any, Any], encode: Callable[[Any], Any]) -> bytes:
    data: dict[str, Any] = {"id": result.id, "index": result.index}
    if result.error is None:
        data["response"] = encode(result.value)
    else:
        data["error"] = _error_data(result.error)
    return _json.dumps(data) + b"\n"


def _written(path: Path) -> _Indexes:
    """The indexes the output already holds; a last line cut short (no newline) is cut off the
    file, so its item is done again and written whole."""
    done = _Indexes()
    good = 0
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                break
            try:
                index = _json.loads(line)["index"]
            except (ValueError, TypeError, KeyError):
                index = None
            if not isinstance(index, int) or index < 0:
                raise ConfigurationError(
                    f"{path}:{number}: not a line of a batch run (no index); "
                    "resume only into a run's own output"
                )
            done.add(index)
            good += len(line)
    if good < path.stat().st_size:
        os.truncate(path, good)
    return done


def _prepare(path: Path, resume: bool) -> _Indexes:
    if not path.exists():
        return _Indexes()
    if not resume:
        raise ConfigurationError(
            f"{path} exists: resume it (resume=True, --resume) or choose another output"
        )
    return _written(path)


def _rewrite_in_order(path: Path) -> None:
    """Rewrite the output sorted by input index, through a temporary file replaced at once: an
    interruption leaves the output as it was. Memory: 8 bytes per line, for its offset."""
    offsets = array("q")
    with path.open("rb") as lines:
        at = 0
        for line in lines:
            index = _json.loads(line)["index"]
            if index >= len(offsets):
                offsets.extend([-1] * (index + 1 - len(offsets)))
            offsets[index] = at
            at += len(line)
    temporary = path.with_name(path.name + ".sorting")
    with path.open("rb") as source, temporary.open("wb") as target:
        for at in offsets:
            if at >= 0:
                source.seek(at)
                target.write(source.readline())
        target.flush()
        os.fsync(target.fileno())
    os.replace(temporary, path)


def _open_append(path: Path) -> IO[bytes]:
    # Unbuffered: each line reaches the file in one write as its item finishes.
    return path.open("ab", buffering=0)


class TextProgress:
    """A one-line progress display, redrawn in place on a terminal: done, failed, retried,
    calls/s and ETA. ``run`` uses it when stderr is a terminal and no other display is given."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr

    def __call__(self, p: BatchProgress) -> None:
        total = "" if p.total is None else f"/{p.total - p.skipped}"
        eta = "-" if p.eta is None else _clock_text(p.eta)
        self.stream.write(
            f"\r{p.done}{total} done  {p.failed} failed  {p.retried} retried  "
            f"{p.calls_per_second:.1f} calls/s  ETA {eta} "
        )
        if p.final:
            self.stream.write("\n")
        self.stream.flush()


def _clock_text(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


async def run(
    call: Callable[[T], Awaitable[Any]],
    items: Iterable[T] | AsyncIterable[T],
    output: str | os.PathLike[str],
    *,
    window: int = DEFAULT_BATCH_WINDOW,
    resume: bool = False,
    ordered_output: bool = False,
    capture: Captured = AsyncLLMError,
    id_of: Callable[[T], Any] | None = None,
    encode: Callable[[Any], Any] = _encode,
    total: int | None = None,
    progress: Progress | bool | None = None,
    dispatcher: Dispatcher | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BatchSummary:
    """Run ``call(item)`` for every item (as ``imap`` does) and write one JSONL line per item to
    ``output`` as it finishes: ``{"id", "index", "response"}`` or ``{"id", "index", "error":
    {"type", "message", "status_code", "request_id"}}``.

    An existing ``output`` is refused unless ``resume=True``, which skips the items it already
    holds. ``ordered_output=True`` rewrites the output in input order once every item is in it.
    ``encode`` turns a response into JSON data (default: a pydantic model's fields, without
    ``raw``). ``progress``: a callable given a ``BatchProgress`` a few times a second and once at
    the end, True for ``TextProgress`` on stderr, False for none; by default ``TextProgress`` if
    stderr is a terminal. ``dispatcher`` (default: the loop's shared one, which clients use
    unless given another) is where retries are counted. Cancellation (Ctrl-C) cancels the calls in
    flight and leaves the output valid JSONL.
    """
    path = Path(output)
    done = await asyncio.to_thread(_prepare, path, resume)
    if progress is None:
        progress = sys.stderr.isatty()
    show: Progress | None = TextProgress() if progress is True else progress or None
    dispatcher = dispatcher or get_dispatcher()
    retried_before = _retried(dispatcher)
    summary = BatchSummary(skipped=done.count)
    latencies = _Latencies()
    started = clock()
    shown = started

    def report(final: bool = False) -> None:
        summary.retried = _retried(dispatcher) - retried_before
        summary.elapsed = clock() - started
        if show is not None:
            show(
                BatchProgress(
                    summary.calls,
                    summary.failed,
                    summary.retried,
                    summary.skipped,
                    total,
                    summary.elapsed,
                    final,
                )
            )

    results = imap(call, items, window=window, capture=capture, id_of=id_of, skip=done, clock=clock)
    try:
        with _open_append(path) as out:
            async with contextlib.aclosing(results):
                async for result in results:
                    out.write(_line(result, encode))
                    latencies.add(result.latency)
                    if result.error is None:
                        summary.succeeded += 1
                        _add_usage(summary.usage, result.value)
                    else:
                        summary.failed += 1
                        summary.errors[type(result.error).__name__] += 1
                    if show is not None and clock() - shown >= BATCH_PROGRESS_INTERVAL:
                        shown = clock()
                        report()
    finally:
        report(final=True)
        summary.latency_p50 = latencies.percentile(0.5)
        summary.latency_p95 = latencies.percentile(0.95)
    if ordered_output:
        await asyncio.to_thread(_rewrite_in_order, path)
    return summary
