"""For tests, ours and our users': a local server that speaks the backends' protocols with
deterministic replies and programmable faults, a transport that answers from a function, and a
fake clock.

    async with FakeServer("openai") as server:
        client = asyncllm.OpenAI(api_key="test", base_url=server.url("/v1"))
        server.fail_next(2, status=429, retry_after="0")
        ...
        assert server.max_in_flight <= 5

Each protocol is a module ``asyncllm.testing.fakes.<name>``; a server may speak several at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import random
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .._http._transport import Request, Response, Transport, response_headers
from ._capacity import Capacity, CapacityMeter

__all__ = [
    "Capacity",
    "CapacityMeter",
    "FakeClock",
    "FakeServer",
    "Faults",
    "MockResponse",
    "MockTransport",
    "RecordedRequest",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorBody = Callable[[int, str], Any]


def default_error_body(status: int, message: str) -> Any:
    return {"error": {"message": message, "type": "fake_error", "code": str(status)}}


@dataclass
class Faults:
    """Random faults, as shares of requests (0.0 to 1.0), drawn from the server's seeded random.
    (A hidden capacity, shedding requests above a concurrency cap, is ``FakeServer(capacity=...)``.)"""

    rate_limit_rate: float = 0.0
    retry_after: str | None = "0"
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    malformed_rate: float = 0.0
    latency: float = 0.0
    hang_seconds: float = 60.0


@dataclass
class _Scripted:
    kind: str  # "status", "drop", "hang", "malformed"
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any


class FakeServer:
    """An aiohttp server on a free loopback port. It counts what it sees: ``requests``,
    ``request_ids`` (the X-Request-ID of each), ``in_flight`` and ``max_in_flight``.

    With ``capacity``, it enforces a vendor's hidden budgets and concurrency cap on every
    request before anything else (faults included) and reports them in the vendor's headers;
    ``server.capacity`` (a ``CapacityMeter``) counts what it admitted and refused."""

    def __init__(
        self,
        *protocols: str,
        faults: Faults | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        history: int = 10_000,
        capacity: Capacity | None = None,
    ) -> None:
        self.protocols = protocols or ("openai",)
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.host = host
        self.port = port
        self.app = web.Application(
            client_max_size=256 * 1024 * 1024, middlewares=[self._protocol_not_found()]
        )
        self._error_bodies: list[tuple[tuple[str, ...], ErrorBody]] = []
        self.requests: deque[RecordedRequest] = deque(maxlen=history)
        self.request_ids: deque[str] = deque(maxlen=history)
        self.request_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_path: dict[str, int] = {}
        self.overrides: dict[str, Handler] = {}
        self.state: dict[str, Any] = {}
        self._script: deque[_Scripted] = deque()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        for name in self.protocols:
            importlib.import_module(f"asyncllm.testing.fakes.{name}").setup(self)
        self.capacity = None if capacity is None else CapacityMeter(capacity)
        if self.capacity is not None:
            # Last, so that the capacity's headers replace any a protocol sets (Groq's).
            self.app.on_response_prepare.append(self._capacity_headers)

    # -- building -------------------------------------------------------------------------

    def add_route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        error_body: ErrorBody = default_error_body,
        read_body: bool = True,
    ) -> None:
        """Serve ``handler`` at ``path`` with faults, counting and recording applied.
        ``read_body=False`` leaves the body to the handler (an upload it streams to disk), and
        records it as empty."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, path, handler, error_body, read_body)

        self.app.router.add_route(method, path, wrapped)
        self._error_bodies.append((_segments(path), error_body))

    def _protocol_not_found(self) -> Any:
        """A middleware that answers unknown routes (404) and unknown methods on known routes
        (405) with the error body of the protocol that serves the nearest path, instead of
        aiohttp's plain text, so SDKs raise their own not-found errors."""

        @web.middleware
        async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                return await handler(request)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
                if request.match_info.http_exception is None:
                    raise  # a handler's own 404, not the router's
                return self._unrouted(request, exc)

        return answer

    def _unrouted(self, request: web.Request, exc: web.HTTPException) -> web.Response:
        wanted = _segments(request.path)

        def shared(entry: tuple[tuple[str, ...], ErrorBody]) -> int:
            n = 0
            for a, b in zip(entry[0], wanted, strict=False):
                if a != b:
                    break
                n += 1
            return n

        # The route sharing the most leading segments wins; on a tie, the first added.
        error_body = max(self._error_bodies, key=shared, default=((), default_error_body))[1]
        if exc.status == 405:
            message = f"Method {request.method} is not allowed for {request.path}"
        else:
            message = f"Not found: {request.method} {request.path}"
        body = error_body(exc.status, message)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response(body, status=exc.status, headers={**_id_header(body), **headers})

    # -- scripting faults -------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After`` if given)."""
        h = dict(headers or {})
        if retry_after is not None:
            h["Retry-After"] = retry_after
        self._script.extend(_Scripted("status", status, h, body) for _ in range(count))

    def drop_next(self, count: int = 1) -> None:
        """Close the connection without answering the next ``count`` requests."""
        self._script.extend(_Scripted("drop") for _ in range(count))

    def hang_next(self, count: int = 1) -> None:
        """Never answer the next ``count`` requests (until the server closes)."""
        self._script.extend(_Scripted("hang") for _ in range(count))

    def malformed_next(self, count: int = 1) -> None:
        """Answer the next ``count`` requests 200 with a body that is not valid JSON."""
        self._script.extend(_Scripted("malformed") for _ in range(count))

    def reset(self) -> None:
        """Forget counts, history and scripted faults."""
        self.requests.clear()
        self.request_ids.clear()
        self.request_count = 0
        self.overloaded = 0
        self.max_in_flight = self.in_flight
        self._script.clear()

    # -- serving ------------------------------------------------------------------------------

    def _pick_fault(self) -> _Scripted | None:
        if self._script:
            return self._script.popleft()
        f = self.faults
        r = self.random.random()
        for share, fault in (
            (f.rate_limit_rate, _Scripted("status", 429, {"Retry-After": f.retry_after} if f.retry_after is not None else {})),
            (f.error_rate, None),
            (f.drop_rate, _Scripted("drop")),
            (f.hang_rate, _Scripted("hang")),
            (f.malformed_rate, _Scripted("malformed")),
        ):  # fmt: skip
            if r < share:
                return fault or _Scripted("status", self.random.choice(f.error_statuses))
            r -= share
        return None

    async def _serve(
        self,
        request: web.Request,
        path: str,
        handler: Handler,
        error_body: ErrorBody,
        read_body: bool = True,
    ) -> web.StreamResponse:
        self.request_count += 1
        admitted = False
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.in_flight_by_path[path] = self.in_flight_by_path.get(path, 0) + 1
        try:
            body = await request.read() if read_body else b""
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            _set(request, "json", parsed)  # what handlers read
            rid = request.headers.get("X-Request-ID")
            if rid is not None:
                self.request_ids.append(rid)
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    dict(request.query),
                    dict(request.headers),
                    body,
                    parsed,
                )
            )
            if self.capacity is not None:
                refused, message, headers = self.capacity.admit(parsed)
                _set(request, _CAPACITY_HEADERS, headers)
                if refused is not None:
                    body = error_body(refused, message)
                    return web.json_response(body, status=refused, headers=_id_header(body))
                admitted = True
            if self.faults.latency:
                await asyncio.sleep(self.faults.latency)
            fault = self._pick_fault()
            if fault is not None:
                return await self._fault(request, fault, error_body)
            override = self.overrides.get(path)
            return await (override or handler)(request)
        finally:
            if admitted:
                assert self.capacity is not None
                self.capacity.release()
            self.in_flight -= 1
            self.in_flight_by_path[path] -= 1

    async def _capacity_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        headers = request.get(_CAPACITY_HEADERS)
        if headers is not None:
            # The capacity's headers are the only rate headers (not a protocol's canned ones).
            for name in list(response.headers):
                if name.lower().startswith(_RATE_HEADERS):
                    del response.headers[name]
            for name, value in headers.items():
                response.headers[name] = value

    async def _fault(
        self, request: web.Request, fault: _Scripted, error_body: ErrorBody
    ) -> web.StreamResponse:
        if fault.kind == "status":
            body = (
                fault.body
                if fault.body is not None
                else error_body(fault.status, f"injected {fault.status}")
            )
            headers = {**_id_header(body), **fault.headers}
            return web.json_response(body, status=fault.status, headers=headers)
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp treats this as a vanished client: nothing sent
        if fault.kind == "hang":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.faults.hang_seconds)
            return web.json_response(error_body(504, "hung"), status=504)
        # malformed
        if "text/event-stream" in request.headers.get("Accept", ""):
            return web.Response(body=b'data: {"broken": \n\n', content_type="text/event-stream")
        return web.Response(body=b'{"id": "x", "choices": [', content_type="application/json")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> FakeServer:
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        return self.base_url + path

    async def aclose(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_CAPACITY_HEADERS = "asyncllm.capacity_headers"
_RATE_HEADERS = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after", "x-ms-retry-after")


def _set(request: web.Request, key: str, value: Any) -> None:
    with warnings.catch_warnings():
        # aiohttp 3.12+ would rather have a RequestKey than a string key.
        warnings.simplefilter("ignore")
        request[key] = value


def _id_header(body: Any) -> dict[str, str]:
    """An error body that carries a ``request_id`` (Anthropic's do) has it in the
    ``request-id`` header too, as the API sends it and SDKs read it."""
    rid = body.get("request_id") if isinstance(body, dict) else None
    return {"request-id": rid} if isinstance(rid, str) else {}


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


# -- no-I/O transport ---------------------------------------------------------------------------


class MockResponse(Response):
    """A canned response. ``chunks`` streams the body in pieces; ``json`` sets a JSON body."""

    def __init__(
        self,
        status: int = 200,
        *,
        json: Any = None,
        content: bytes = b"",
        chunks: Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        if json is not None:
            content = _json_bytes(json)
        self._chunks = list(chunks) if chunks is not None else [content]
        self.headers = response_headers(headers)
        self.closed = False

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        self.closed = True


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class MockTransport(Transport):
    """Answers every request from ``handler(request)`` (sync or async); records the requests."""

    def __init__(
        self,
        handler: Callable[[Request], MockResponse | Awaitable[MockResponse]],
        *,
        history: int = 1000,
    ) -> None:
        self.handler = handler
        self.requests: deque[Request] = deque(maxlen=history)

    async def send(self, request: Request) -> Response:
        self.requests.append(request)
        result = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, MockResponse)
        return result


# -- time ------------------------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that moves only when told to, and a ``sleep`` that moves it instead of
    waiting. Pass ``clock=fake`` (it is callable) and ``sleep=fake.sleep`` to a Dispatcher."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
