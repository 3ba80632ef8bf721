"""Streams: what a streaming call returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from ._models import ChatChunk, ChatResponse, Message, P, ToolCall, Usage
from ._structured import OutputFormat, finish

T = TypeVar("T")


class Stream(Generic[T]):
    """An async iterator of chunks that holds its backend slot until read to the end or closed.

    Use ``async with`` (or read to the end) so the slot and the connection come back promptly.
    """

    def __init__(self, source: AsyncIterator[T], request_id: str) -> None:
        self._source = source
        self.request_id = request_id
        self._started = False

    async def start(self) -> Self:
        """Send the request and wait for the answer's status and first event, without taking a
        chunk from you: the first ``async for`` step still yields it.

        Opening a stream sends nothing, so its errors would otherwise surface only at the first
        chunk; after ``start()`` they have been raised here (retried first, as for any stream
        before its first chunk), which lets a web handler answer with an error status before
        it commits to a streamed 200. A started stream holds its slot until it is read to the
        end or closed. Calling it again does nothing.
        """
        if self._started:
            return self
        self._started = True
        source = self._source
        if isinstance(source, Stream):
            await source.start()
            return self
        try:
            first = await self.__anext__()
        except StopAsyncIteration:
            return self
        self._source = _Replay(first, source)
        return self

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


class _Replay(Generic[T]):
    """The item ``start()`` read, then the rest; closing it closes the rest, even unread (an
    async generator that never ran would skip its ``finally``)."""

    __slots__ = ("_first", "_held", "_rest")

    def __init__(self, first: T, rest: AsyncIterator[T]) -> None:
        self._first = first
        self._rest = rest
        self._held = True

    def __aiter__(self) -> _Replay[T]:
        return self

    async def __anext__(self) -> T:
        if self._held:
            self._held = False
            return self._first
        return await self._rest.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


class ChatStream(Stream[ChatChunk], Generic[P]):
    """A chat stream that also builds the whole answer as it is read: ``await stream.final()``
    reads what is left and returns the ``ChatResponse`` a non-streamed call would have (text,
    reasoning, refusal, tool calls assembled from their pieces, finish reason, usage, and
    ``parsed`` with ``response_format``)."""

    def __init__(
        self, inner: Stream[ChatChunk], fmt: OutputFormat | None = None, backend: str = ""
    ) -> None:
        super().__init__(inner, inner.request_id)
        self._fmt = fmt
        self._backend = backend
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, list[Any]] = {}
        self._extra: dict[str, Any] = {}
        self._last: ChatChunk | None = None
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._model: str | None = None
        self._final: ChatResponse[P] | None = None

    async def __anext__(self) -> ChatChunk:
        chunk = await self._source.__anext__()
        if chunk.delta:
            self._text.append(chunk.delta)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        if chunk.refusal:
            self._refusal.append(chunk.refusal)
        for piece in chunk.tool_calls:
            call = self._calls.setdefault(piece.index, [None, None, []])
            call[0] = piece.id or call[0]
            call[1] = piece.name or call[1]
            call[2].append(piece.arguments)
        if chunk.message_extra:
            self._extra.update(chunk.message_extra)
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.model is not None:
            self._model = chunk.model
        self._last = chunk
        return chunk

    async def final(self) -> ChatResponse[P]:
        """The whole answer, once the stream is read to its end (reading the rest here)."""
        if self._final is None:
            async for _ in self:
                pass
            text = "".join(self._text)
            calls = [
                ToolCall(id=c[0] or f"call_{i}", name=c[1] or "", arguments="".join(c[2]) or "{}")
                for i, c in sorted(self._calls.items())
            ]
            message = Message(
                role="assistant",
                content=text if text or not calls else None,
                tool_calls=calls or None,
                **self._extra,
            )
            response: ChatResponse[P] = ChatResponse(
                text=text,
                message=message,
                tool_calls=calls,
                finish_reason=self._finish,
                usage=self._usage,
                model=self._model,
                request_id=self.request_id,
                choices=[message],
                refusal="".join(self._refusal) or None,
                reasoning="".join(self._reasoning) or None,
                raw=None if self._last is None else self._last.raw,
            )
            self._final = finish(response, self._fmt, self._backend)
        return self._final
