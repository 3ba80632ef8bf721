"""Streams: what a streaming call returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Stream(Generic[T]):
    """An async iterator of chunks that holds its backend slot until read to the end or closed.

    Use ``async with`` (or read to the end) so the slot and the connection come back promptly.
    """

    def __init__(self, source: AsyncIterator[T], request_id: str) -> None:
        self._source = source
        self.request_id = request_id

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        return await self._source.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
