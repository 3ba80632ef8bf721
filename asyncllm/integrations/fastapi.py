"""asyncllm in a FastAPI or Starlette service (``pip install 'asyncllm[fastapi]'``).

    app = FastAPI(lifespan=lifespan(llm=lambda: asyncllm.OpenAI()))
    install(app)                       # request IDs and error answers

    @app.post("/stream")
    async def stream(request: Request, body: Ask) -> StreamingAnswer:
        return await sse_response(request.state.llm.stream_chat(body.messages, model="m"))

``lifespan`` makes the clients at start-up and closes them at shutdown; ``RequestIdMiddleware``
carries the caller's ``X-Request-ID`` (or a fresh one) into every call a request makes, streamed
bodies included, and echoes it; ``install`` adds it and the exception handler, which answers each
asyncllm error with the status ``asyncllm._wire.http_errors`` gives it; ``sse_response`` starts a
stream first, so a failure before its first chunk is an HTTP error, then re-emits the chunks as
server-sent events and closes the upstream stream as soon as the client goes away.

Everything here is plain ASGI or Starlette, so it serves Starlette apps as well as FastAPI ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._constants import REQUEST_ID_HEADER
from .._engine._backend import Backend
from .._engine._context import _request_id, current_request_id, new_request_id
from .._exceptions import AsyncLLMError
from .._wire.http_errors import error_answer
from ..streaming import Stream

__all__ = [
    "RequestIdMiddleware",
    "StreamingAnswer",
    "asyncllm_error_handler",
    "install",
    "lifespan",
    "sse_response",
]

logger = logging.getLogger("asyncllm.integrations.fastapi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a caller's ID may be: long IDs and odd characters are replaced, not forwarded upstream,
# where a 9,000-character ID came back as a 400.
MAX_REQUEST_ID_LENGTH = 128
_VALID_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def accepted_request_id(value: str | None) -> str:
    """The caller's ID if it is at most 128 characters of ``[A-Za-z0-9._:-]``, else a new one."""
    if value is not None and _VALID_ID.fullmatch(value):
        return value
    return new_request_id()


class RequestIdMiddleware:
    """Pure ASGI, so that the ID holds for the whole request, a streamed body included (a
    ``BaseHTTPMiddleware`` runs the body in another context and loses it). The ID is in
    ``request.state.request_id``, in ``asyncllm.current_request_id()`` for every call made
    while the request runs, and in the response's header."""

    def __init__(self, app: ASGIApp, header: str = REQUEST_ID_HEADER) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", ()):
            if name.lower() == self.header:
                given = value.decode("latin-1")
                break
        request_id = accepted_request_id(given)
        scope.setdefault("state", {})["request_id"] = request_id
        header = self.header
        raw_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != header]
                headers.append((header, raw_id))
                message["headers"] = headers
            await send(message)

        token = _request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


def _request_id_of(request: Request | None, error: AsyncLLMError | None) -> str | None:
    rid = current_request_id()
    if rid is None and request is not None:
        rid = getattr(request.state, "request_id", None)
    if rid is None and error is not None:
        rid = getattr(error, "request_id", None)
    return rid


async def asyncllm_error_handler(request: Request, error: Exception) -> Response:
    """Answer an asyncllm error with its mapped status, ``Retry-After`` where known and a small
    JSON body with the request ID; upstream details go to the log, not to the caller."""
    assert isinstance(error, AsyncLLMError)
    answer = error_answer(error, _request_id_of(request, error))
    log = logger.warning if answer.status >= 500 else logger.info
    log(
        "%s %s answered %d: %s",
        request.method,
        request.url.path,
        answer.status,
        type(error).__name__,
        extra={"request_id": answer.body["error"]["request_id"], "status": answer.status},
    )
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


def install(app: Any, *, header: str = REQUEST_ID_HEADER) -> None:
    """Add ``RequestIdMiddleware`` and the asyncllm exception handler to a FastAPI or Starlette
    app (before it starts)."""
    app.add_middleware(RequestIdMiddleware, header=header)
    app.add_exception_handler(AsyncLLMError, asyncllm_error_handler)


def lifespan(
    **clients: Callable[[], Backend],
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Backend]]]:
    """A lifespan that makes each client at start-up (``name=factory``) and closes them all at
    shutdown, last made first closed; each is ``request.state.<name>`` in handlers.

    Factories run inside the server's event loop, so the clients share its dispatcher.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Backend]]:
        async with contextlib.AsyncExitStack() as stack:
            made: dict[str, Backend] = {}
            for name, make in clients.items():
                client = make()
                stack.push_async_callback(client.aclose)
                made[name] = client
            yield made

    return run


def _encode_chunk(chunk: Any) -> str:
    dump = getattr(chunk, "model_dump_json", None)
    if dump is not None:
        return str(dump(exclude={"raw"}, exclude_none=True))
    return json.dumps(chunk, separators=(",", ":"), default=str)


class StreamingAnswer(Response):
    """A started ``Stream`` sent as server-sent events: one ``data:`` event per chunk, then
    ``data: [DONE]``; an upstream error after the first chunk ends it with an ``event: error``
    whose data is the error body. It listens for the client's ``http.disconnect`` itself and
    then closes the upstream stream, which gives its slot back at once."""

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: Stream[Any],
        *,
        encode: Callable[[Any], str] = _encode_chunk,
        done: str | None = "[DONE]",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # Not Response.__init__: with no body it would announce Content-Length: 0.
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        )
        self.stream = stream
        self.encode = encode
        self.done = done

    async def _pump(self, send: Send) -> None:
        try:
            async for chunk in self.stream:
                data = self.encode(chunk).replace("\n", "\ndata: ")
                await send(
                    {
                        "type": "http.response.body",
                        "body": f"data: {data}\n\n".encode(),
                        "more_body": True,
                    }
                )
        except AsyncLLMError as error:
            body = json.dumps(error_answer(error, current_request_id()).body)
            event = f"event: error\ndata: {body}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
        tail = b"" if self.done is None else f"data: {self.done}\n\n".encode()
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(self._disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            results = await asyncio.gather(pump, gone, return_exceptions=True)
            await self.stream.aclose()
        error = results[0]
        if isinstance(error, BaseException) and not isinstance(
            error, (asyncio.CancelledError, OSError)
        ):
            raise error


async def sse_response(
    stream: Stream[Any],
    *,
    encode: Callable[[Any], str] = _encode_chunk,
    done: str | None = "[DONE]",
    headers: Mapping[str, str] | None = None,
) -> StreamingAnswer:
    """Start ``stream`` (its errors until the first chunk raise here, for the exception handler
    to answer with a status) and return it as a server-sent-event response.

    ``encode`` turns a chunk into the event's data (default: the chunk's JSON without ``raw``);
    ``done`` is the last event's data (None for none)."""
    try:
        await stream.start()
    except BaseException:
        await stream.aclose()
        raise
    return StreamingAnswer(stream, encode=encode, done=done, headers=headers)
