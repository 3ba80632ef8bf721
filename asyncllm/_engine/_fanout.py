"""Fan-out: one call split into parallel sub-calls (TEI batches, Gemini and LLVM batches, S3 parts).

Every sub-call runs under the caller's request ID (one is made if the caller has none), so the
tracker and the server's logs tie them together. The first error cancels the rest and is raised as
itself, not wrapped in an exception group, so callers catch the same typed errors as for one call;
partial results are never returned as a success. Cancelling the caller cancels every sub-call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from ._context import _request_id, new_request_id

T = TypeVar("T")


async def fan_out(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` concurrently; their results in the order given, or the first error."""
    if len(calls) == 1:
        return [await calls[0]()]
    results: list[T | None] = [None] * len(calls)
    errors: list[Exception] = []

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            results[index] = await call()
        except Exception as exc:
            if not errors:
                errors.append(exc)
            group.cancel_scope.cancel()

    token = _request_id.set(_request_id.get() or new_request_id())
    try:
        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(run, index, call)
    finally:
        _request_id.reset(token)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every slot was filled: no error
