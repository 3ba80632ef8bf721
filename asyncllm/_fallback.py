"""Fallbacks: one chat call tried on an ordered chain of clients of different backends (say
OpenAI, then Claude, then a local vLLM), each with the model it serves.

The decisions, in one place:

- A member is tried only when the ones before it failed in a way that says nothing against the
  request (``moves_on``): no answer (connection errors, timeouts), a server error (5xx, 529), a
  408 or 409, a rate limit that outlasts the call (a ``RateLimitError``: raised before sending
  because the wait would pass the deadline or ``max_wait`` or the call exceeds a whole budget,
  or a 429 that outlived the member's retries), an open breaker or a full queue. Everything else is the caller's and is
  raised at once: other 4xx (the next member would refuse the same request), a
  ``ConfigurationError`` or ``TypeError`` (bad arguments), an answer that breaks its protocol
  or does not fit ``response_format``, a refusal for safety, a closed client, and cancellation.
- Each member retries as its client is set to before the chain moves on (give a member
  ``client.with_options(max_retries=1)`` to move on sooner).
- A call's ``deadline`` covers the whole chain: each member gets what is left of it, and a
  member reached after it passed is not tried. It is measured on the first member's
  dispatcher clock (the one tests replace with a ``FakeClock``).
- Every member's attempt runs under the call's one request ID, so the tracker and the servers'
  logs tie them together. Each move on is logged (``asyncllm.fallback``, INFO).
- The error raised is itself (the last member's, when the chain is exhausted), so callers catch
  the same classes as for one client; ``fallback_errors`` holds every member's error in order,
  and its notes name each one (its class, status, request URL and backend).
- A stream moves on only until its first chunk: the member's ``start()`` (status and first
  event) decides. Once a chunk may have reached the caller, an error is raised as it is.
- The chain owns its members: ``aclose()`` closes each of them. A member that other code goes
  on using is given as ``client.with_options()``, which owns nothing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, TypeVar, overload

import anyio
from typing_extensions import Self, Unpack

from ._engine._backend import _check_call_values, timeout_value
from ._engine._context import _request_id, new_request_id
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AsyncLLMError,
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
    QueueFullError,
    RateLimitError,
)
from ._models import ChatChunk, ChatResponse, HttpInfo, Messages, P, keep_backend
from ._options import CALL_KEYS, CallOptions, check_keys
from ._tools import ToolRunner
from ._validate import check_model
from .streaming import ChatStream, Stream

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ._wire.openai import ChatOptions

__all__ = ["Fallback", "moves_on"]

M = TypeVar("M", bound="BaseModel")

logger = logging.getLogger("asyncllm.fallback")

# The statuses of a request that another backend may well answer: 408 (the server gave up
# waiting for it), 409 (a conflict on the server's side), 429; and every 5xx.
_TRANSIENT_4XX = frozenset({408, 409, 429})


class ChatClient(Protocol):
    """What the chain needs of a member: any chat client of asyncllm (or another chain)."""

    name: str

    @property
    def chat(self) -> Callable[..., Awaitable[ChatResponse[Any]]]: ...

    @property
    def stream_chat(self) -> Callable[..., ChatStream[Any]]: ...

    @property
    def aclose(self) -> Callable[[], Coroutine[Any, Any, None]]: ...


class Member(NamedTuple):
    """A client of the chain, with the model it is asked for (None: the call's ``model=``, or
    else the client's own)."""

    client: ChatClient
    model: str | None


def moves_on(error: BaseException) -> bool:
    """Whether the chain tries its next member after ``error``: True for failures of the
    backend or of its capacity, which another backend may not have; False for anything the
    request or the caller is answerable for, which the next member would meet again."""
    if isinstance(error, (CircuitOpenError, QueueFullError, RateLimitError, APIConnectionError)):
        return True
    if isinstance(error, APIStatusError):
        status = error.status_code
        return status is not None and (status >= 500 or status in _TRANSIENT_4XX)
    return False


def _members(members: Any) -> tuple[Member, ...]:
    if isinstance(members, (str, bytes, Mapping)) or not isinstance(members, Sequence):
        raise ConfigurationError("Fallback takes a list of chat clients or (client, model) pairs")
    if not members:
        raise ConfigurationError("Fallback needs at least one chat client")
    chain: list[Member] = []
    for i, item in enumerate(members):
        model: str | None = None
        client = item
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise ConfigurationError(f"members[{i}]: a pair must be (client, model name)")
            client, model = item[0], check_model(item[1])
        if not all(callable(getattr(client, m, None)) for m in ("chat", "stream_chat", "aclose")):
            raise ConfigurationError(
                f"members[{i}]: {type(client).__name__} is not a chat client (no chat/stream_chat)"
            )
        chain.append(Member(client, model))
    return tuple(chain)


def _name(member: Member) -> str:
    name = getattr(member.client, "name", None)
    return name if isinstance(name, str) else type(member.client).__name__


def _note(error: BaseException, text: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(text)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Run:
    """One call's walk along the chain: the time left, the request ID, the errors so far."""

    def __init__(self, chain: Fallback, options: Mapping[str, Any], response_format: Any) -> None:
        self.chain = chain
        deadline = options.get("deadline")
        self.deadline = None if deadline is None else timeout_value("deadline", deadline)
        self.options = dict(options)
        if response_format is not None:
            self.options["response_format"] = response_format
        self.request_id = _request_id.get() or new_request_id()
        self.clock = time.monotonic if self.deadline is None else chain._clock()
        self.started: float | None = None
        self.errors: list[AsyncLLMError] = []

    def options_for(self, member: Member) -> dict[str, Any] | None:
        """The options of ``member``'s call: its model, what is left of the deadline; None when
        the deadline has passed. (Never changed after: the member's ``**options`` copies it.)"""
        options = self.options
        if member.model is None and self.deadline is None:
            return options
        options = dict(options)
        if member.model is not None:
            options["model"] = member.model
        if self.deadline is not None:
            now = self.clock()
            if self.started is None:  # the first member's turn: a stream's first read
                self.started = now
            left = self.deadline - (now - self.started)
            if left <= 0:
                return None
            options["deadline"] = left
        return options

    def failed(self, member: Member, error: Exception, following: Member) -> bool:
        """Note ``error`` of ``member``; whether the chain moves on (to ``following``)."""
        if isinstance(error, AsyncLLMError):
            self.errors.append(error)
        if not moves_on(error):
            return False
        logger.info(
            "fallback: %s failed (%s); trying %s",
            _name(member),
            _describe(error),
            _name(following),
            extra={"request_id": self.request_id, "backend": _name(member)},
        )
        return True

    def raise_(self, error: BaseException, untried: Sequence[Member] = ()) -> NoReturn:
        """Raise ``error`` (this walk's last), carrying what the members before it met."""
        if isinstance(error, AsyncLLMError):
            if not self.errors or self.errors[-1] is not error:
                self.errors.append(error)
            error.fallback_errors = tuple(self.errors)
            for earlier in self.errors[:-1]:
                _note(
                    error, f"fallback: {earlier.backend or '?'} failed before: {_describe(earlier)}"
                )
        if untried:
            names = ", ".join(_name(m) for m in untried)
            _note(
                error,
                f"fallback: not tried, the call's deadline ({self.deadline}s) had passed: {names}",
            )
        elif isinstance(error, AsyncLLMError) and len(self.errors) == len(self.chain.members) > 1:
            _note(
                error,
                f"fallback: all {len(self.errors)} members failed; this is the last one's error",
            )
        raise error


class Fallback(ToolRunner):
    """One chat API over an ordered chain of clients of different backends::

        chain = asyncllm.Fallback([
            (asyncllm.OpenAI(), "gpt-4o-mini"),
            (asyncllm.Claude(), "claude-3-5-haiku-latest"),
            asyncllm.VLLM(base_url="http://127.0.0.1:8000/v1", model="qwen"),
        ])
        r = await chain.chat(messages, deadline=30)
        r.backend        # the name of the client that answered

    A member is a chat client, or a ``(client, model)`` pair: its model, since model names
    differ between backends (a member without one takes the call's ``model=``, or its client's
    own). ``chat``, ``stream_chat`` and ``run_tools`` take what every chat client takes and
    pass it to each member in turn, which checks it as it always does.

    The next member is tried after failures of the backend, not of the request (see
    ``moves_on``); the ``deadline`` covers the whole chain. The error raised is the one that
    ended the walk (the last member's, when all failed), with every member's error in
    ``fallback_errors``. The chain owns its members: ``aclose()`` (or ``async with``) closes
    them; ``close_members=False`` leaves them open (as ``Pool`` does), and a client given as
    ``client.with_options()`` stays open beyond the chain either way.
    """

    def __init__(
        self,
        members: Sequence[ChatClient | tuple[ChatClient, str]],
        *,
        close_members: bool = True,
    ) -> None:
        self.members: tuple[Member, ...] = _members(members)
        self.close_members = close_members
        self.name = "fallback(" + ", ".join(_name(m) for m in self.members) + ")"
        self._closed = False
        self._clocks: tuple[asyncio.AbstractEventLoop, Callable[[], float]] | None = None
        # A chain from with_options() points at the chain that owns the members.
        self._root: Fallback = self
        self._defaults: CallOptions = {}

    def __repr__(self) -> str:
        members = [_name(m) if m.model is None else (_name(m), m.model) for m in self.members]
        return f"Fallback({members!r})"

    def _clock(self) -> Callable[[], float]:
        """The first member's dispatcher clock, looked up once per event loop (the lookup of
        the loop's dispatcher costs more than the rest of the chain's work)."""
        loop = asyncio.get_running_loop()
        cached = self._clocks
        if cached is not None and cached[0] is loop:
            return cached[1]
        dispatcher = getattr(self.members[0].client, "dispatcher", None)
        clock = getattr(dispatcher, "clock", None)
        if not callable(clock):
            clock = time.monotonic
        self._clocks = (loop, clock)
        return clock

    def _check_open(self) -> None:
        if self._root._closed:
            raise ClientClosedError("the fallback chain is closed", backend=self.name)

    def with_options(self, **options: Unpack[CallOptions]) -> Self:
        """A light chain with other per-call defaults (``deadline``, ``timeout``, ``priority``,
        ``max_retries``) for every call along it; a ``deadline`` still covers the whole chain.

        It owns nothing: its ``aclose()`` does nothing, and closing this chain ends it too."""
        check_keys(options, CALL_KEYS, "with_options")
        _check_call_values(options)
        clone = copy.copy(self)
        clone._defaults = {**self._defaults, **options}
        clone._root = self._root
        return clone

    @overload
    async def chat(
        self, messages: Messages, *, response_format: type[M], **options: Unpack[ChatOptions]
    ) -> ChatResponse[M]: ...
    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatResponse: ...
    async def chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> ChatResponse[Any]:
        """The first answer along the chain; ``r.backend`` names the member that gave it.
        Raises as ``Fallback`` says: the error that ended the walk, with ``fallback_errors``."""
        self._check_open()
        run = _Run(
            self, {**self._defaults, **options} if self._defaults else options, response_format
        )
        members = self.members
        token = _request_id.set(run.request_id)
        try:
            for i, member in enumerate(members):
                member_options = run.options_for(member)
                if member_options is None:
                    run.raise_(run.errors[-1], members[i:])
                try:
                    response = await member.client.chat(messages, **member_options)
                except Exception as exc:
                    if i + 1 < len(members) and run.failed(member, exc, members[i + 1]):
                        continue
                    run.raise_(exc)
                if response.backend is None:  # a nested chain has named its own member
                    keep_backend(response, _name(member))
                return response
        finally:
            _request_id.reset(token)
        raise AssertionError("unreachable: the last member returns or raises")  # pragma: no cover

    @overload
    def stream_chat(
        self, messages: Messages, *, response_format: type[M], **options: Unpack[ChatOptions]
    ) -> FallbackStream[M]: ...
    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> FallbackStream[Any]: ...
    def stream_chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> FallbackStream[Any]:
        """A stream from the first member that starts one (its status and first event arrive).
        Nothing is sent until the first read or ``start()``; ``stream.backend`` names the member
        once chosen. An error after that is raised as it is: the chain never moves on once a
        chunk may have reached the caller."""
        self._check_open()
        run = _Run(
            self, {**self._defaults, **options} if self._defaults else options, response_format
        )
        return FallbackStream(run, messages)

    async def aclose(self) -> None:
        """Refuse new calls; with ``close_members`` (the default), close every member (at
        once), so that each finishes its running calls as its ``aclose()`` says; a member whose
        ``aclose()`` raises does not keep the others open (the first such error is raised
        after). Safe to call twice."""
        if self._closed or self._root is not self:
            return
        self._closed = True
        if not self.close_members:
            return
        clients = list({id(m.client): m.client for m in self.members}.values())
        errors: list[Exception] = []

        async def close(client: ChatClient) -> None:
            try:
                await client.aclose()
            except Exception as exc:  # the others still close; the first error is raised
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for client in clients:
                group.start_soon(close, client)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        if self._root._closed:
            raise ClientClosedError("a closed fallback chain cannot be reopened", backend=self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class FallbackStream(ChatStream[P]):
    """The stream of ``Fallback.stream_chat``: a ``ChatStream`` read from the first member
    that started one. ``backend`` is that member's name (None until chosen)."""

    def __init__(self, run: _Run, messages: Messages) -> None:
        Stream.__init__(self, _Closed(), run.request_id)  # the chosen member's stream reads
        self._run = run
        self._messages = messages
        self._current: ChatStream[Any] | None = None
        self._ended = False
        self.backend: str | None = None

    @property
    def http(self) -> HttpInfo | None:
        return None if self._current is None else self._current.http

    async def _choose(self) -> ChatStream[Any] | None:
        """Start the members' streams in turn until one starts; None once closed."""
        if self._current is not None or self._ended:
            return self._current
        run = self._run
        run.chain._check_open()
        members = run.chain.members
        token = _request_id.set(run.request_id)
        try:
            for i, member in enumerate(members):
                options = run.options_for(member)
                if options is None:
                    run.raise_(run.errors[-1], members[i:])
                try:
                    stream = member.client.stream_chat(self._messages, **options)
                except Exception as exc:
                    run.raise_(exc)
                try:
                    await stream.start()
                except BaseException as exc:
                    with anyio.CancelScope(shield=True):
                        await stream.aclose()
                    if not isinstance(exc, Exception):
                        raise
                    if i + 1 < len(members) and run.failed(member, exc, members[i + 1]):
                        continue
                    run.raise_(exc)
                self._current = stream
                self.backend = getattr(stream, "backend", None) or _name(member)
                return stream
        finally:
            _request_id.reset(token)
        raise AssertionError("unreachable: the last member starts or raises")  # pragma: no cover

    async def start(self) -> Self:
        """Start the first member's stream that will start (see ``Fallback.stream_chat``)."""
        await self._choose()
        return self

    async def __anext__(self) -> ChatChunk:
        current = self._current
        if current is None:
            current = await self._choose()
            if current is None:
                raise StopAsyncIteration
        return await current.__anext__()

    async def final(self) -> ChatResponse[P]:
        """The whole answer of the member that streamed it (``backend`` names it)."""
        current = await self._choose()
        if current is None:
            raise ClientClosedError(
                "the stream was closed before it started", backend=self._run.chain.name
            )
        response: ChatResponse[P] = await current.final()
        if response.backend is None and self.backend is not None:
            keep_backend(response, self.backend)
        return response

    async def aclose(self) -> None:
        self._ended = True
        if self._current is not None:
            await self._current.aclose()


class _Closed:
    """The base class's source, never read: ``FallbackStream`` reads its chosen member."""

    def __aiter__(self) -> _Closed:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration
