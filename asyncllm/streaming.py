"""Streams: what a streaming call returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from ._models import ChatChunk, ChatResponse, HttpInfo, Message, P, ToolCall, Usage, keep_http
from ._structured import OutputFormat, finish

T = TypeVar("T")


class Stream(Generic[T]):
    """An async iterator of chunks that holds its backend slot until read to the end or closed.

    Use ``async with`` (or read to the end) so the slot and the connection come back promptly.
    ``http`` is the status and headers of the response the chunks come from, once it has
    arrived (after the first chunk is read).
    """

    def __init__(self, source: AsyncIterator[T], request_id: str) -> None:
        self._source = source
        self.request_id = request_id
        self._started = False
        # What ``http`` is built from (anything with ``status`` and ``headers``), set by the
        # HTTP layer as each attempt's response arrives.
        self.http_source: Any = None

    @property
    def http(self) -> HttpInfo | None:
        """The HTTP status and headers of the response being read; None before it has arrived,
        and for a stream that is not read over HTTP."""
        source = self.http_source
        if source is None:
            inner = self._source
            return inner.http if isinstance(inner, Stream) else None
        return HttpInfo(source.status, source.headers)

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


class _Choice:
    """What a stream has said so far for one choice."""

    __slots__ = ("calls", "extra", "finish", "reasoning", "refusal", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, list[Any]] = {}
        self.extra: dict[str, Any] = {}
        self.finish: str | None = None

    def message(self) -> Message:
        text = "".join(self.text)
        calls = [
            ToolCall(
                id=c[0] or f"call_{i}",
                name=c[1] or "",
                arguments="".join(c[2]) or ("{}" if c[3] == "function" else ""),
                type=c[3],  # "custom" for a call of an OpenAI custom tool (free-text input)
            )
            for i, c in sorted(self.calls.items())
        ]
        return Message(
            role="assistant",
            content=text if text or not calls else None,
            tool_calls=calls or None,
            **self.extra,
        )


class ChatStream(Stream[ChatChunk], Generic[P]):
    """A chat stream that also builds the whole answer as it is read: ``await stream.final()``
    reads what is left and returns the ``ChatResponse`` a non-streamed call would have (text,
    reasoning, refusal, tool calls assembled from their pieces, finish reason, usage, and
    ``parsed`` with ``response_format``). With ``n`` > 1 each choice is assembled apart, from
    the chunks with its ``index``: the response's ``choices`` has them all, in index order, and
    its other fields are the first choice's."""

    def __init__(
        self, inner: Stream[ChatChunk], fmt: OutputFormat | None = None, backend: str = ""
    ) -> None:
        super().__init__(inner, inner.request_id)
        self._fmt = fmt
        self._backend = backend
        self._first = _Choice()
        self._choices: dict[int, _Choice] = {0: self._first}
        self._last: ChatChunk | None = None
        self._usage: Usage | None = None
        self._model: str | None = None
        self._final: ChatResponse[P] | None = None

    async def __anext__(self) -> ChatChunk:
        chunk = await self._source.__anext__()
        index = chunk.index
        if index:
            choice = self._choices.get(index)
            if choice is None:
                choice = self._choices[index] = _Choice()
        else:
            choice = self._first
        # Inline, not a method of _Choice: a call would cost every chunk.
        if chunk.delta:
            choice.text.append(chunk.delta)
        if chunk.reasoning:
            choice.reasoning.append(chunk.reasoning)
        if chunk.refusal:
            choice.refusal.append(chunk.refusal)
        for piece in chunk.tool_calls:
            call = choice.calls.setdefault(piece.index, [None, None, [], "function"])
            call[0] = piece.id or call[0]
            call[1] = piece.name or call[1]
            call[2].append(piece.arguments)
            call[3] = piece.type or call[3]
        if chunk.message_extra:
            choice.extra.update(chunk.message_extra)
        if chunk.finish_reason is not None:
            choice.finish = chunk.finish_reason
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
            first = self._first
            messages = [choice.message() for _, choice in sorted(self._choices.items())]
            message = messages[0]
            response: ChatResponse[P] = ChatResponse(
                text="".join(first.text),
                message=message,
                tool_calls=message.tool_calls or [],
                finish_reason=first.finish,
                usage=self._usage,
                model=self._model,
                request_id=self.request_id,
                choices=messages,
                refusal="".join(first.refusal) or None,
                reasoning="".join(first.reasoning) or None,
                raw=None if self._last is None else self._last.raw,
            )
            http = self.http
            if http is not None:
                keep_http(response, http)
            self._final = finish(response, self._fmt, self._backend)
        return self._final
