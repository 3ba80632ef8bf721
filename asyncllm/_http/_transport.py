"""The HTTP layer: one aiohttp session per client, and readers for SSE and NDJSON streams.

A transport has one job, ``send(request) -> response``. ``MockTransport`` (in ``asyncllm.testing``)
answers from a handler so clients can be exercised, and timed, without any I/O.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .._constants import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_LINE_BYTES
from .._exceptions import (
    APIConnectionError,
    APITimeoutError,
    CertificateVerificationError,
    ClientClosedError,
    ConfigurationError,
    ResponseValidationError,
)
from . import _json


@dataclass(slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None
    params: Mapping[str, str] | None = None
    timeout: float | None = None
    stream: bool = False
    # An escape hatch for multipart bodies (aiohttp.FormData); tests see it as-is.
    data: Any = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return None if self.content is None else json.loads(self.content)


class Response(abc.ABC):
    """A response whose headers have arrived; the body is read (bounded) or iterated."""

    status: int
    headers: Mapping[str, str]

    @abc.abstractmethod
    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive."""

    @abc.abstractmethod
    def close(self) -> None:
        """Give the connection back (or drop it, if the body was not read to the end)."""

    async def read(self, limit: int) -> bytes:
        """The whole body; more than ``limit`` bytes is a ResponseValidationError."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseValidationError(
                    f"response body exceeds the {limit}-byte limit", status_code=self.status
                )
            parts.append(chunk)
        return b"".join(parts)


class Transport(abc.ABC):
    @abc.abstractmethod
    async def send(self, request: Request) -> Response: ...

    async def aclose(self) -> None:  # noqa: B027 - optional for transports that hold nothing
        """Release connections."""


class _AiohttpResponse(Response):
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise _connection_error(exc) from exc
        except asyncio.TimeoutError as exc:
            raise APITimeoutError("timed out reading the response") from exc

    async def read(self, limit: int) -> bytes:
        length = self._resp.content_length
        if length is not None and length > limit:
            raise ResponseValidationError(
                f"response body of {length} bytes exceeds the {limit}-byte limit",
                status_code=self.status,
            )
        # Response.read over iter_bytes, without an async generator per response.
        content = self._resp.content
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await content.readany()
            except aiohttp.EofStream:
                chunk = b""
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise _connection_error(exc) from exc
            except asyncio.TimeoutError as exc:
                raise APITimeoutError("timed out reading the response") from exc
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise ResponseValidationError(
                    f"response body exceeds the {limit}-byte limit", status_code=self.status
                )
            parts.append(chunk)

    def close(self) -> None:
        self._resp.release() if self._resp.content.at_eof() else self._resp.close()


def _connection_error(exc: BaseException) -> APIConnectionError:
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return APITimeoutError(f"request timed out ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # Not transient: not retried, no verdict for the breaker.
        cert = exc.certificate_error
        reason = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or cert
        return CertificateVerificationError(
            f"TLS certificate verification failed for {exc.host}:{exc.port}: {reason} ({cert})"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Name the host and what the OS said ("Connection refused"), not just aiohttp's text.
        # (asyncio's text for a refused connection is "Connect call failed"; gaierror's errno is
        # negative and its strerror the resolver's text.)
        os_error = exc.os_error
        errno = os_error.errno
        if isinstance(errno, int) and errno > 0:
            reason = os.strerror(errno)
        else:
            reason = os_error.strerror or str(os_error) or type(os_error).__name__
        return APIConnectionError(
            f"cannot connect to {exc.host}:{exc.port}: {reason} ({type(exc).__name__})"
        )
    return APIConnectionError(f"connection failed: {type(exc).__name__}: {exc}")


class AiohttpTransport(Transport):
    """One ``aiohttp.ClientSession``, made on first use inside the running loop."""

    def __init__(self, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, limit: int = 0) -> None:
        self._connect_timeout = connect_timeout
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._timeouts: dict[tuple[float | None, bool], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("transport is closed")
        session = self._session
        loop = asyncio.get_running_loop()
        if session is not None and self._loop is not loop:
            # aiohttp sessions and their sockets belong to one loop; a silent switch would hang
            # or fail deep inside aiohttp.
            raise ConfigurationError(
                "this client was first used on another event loop; make one client per loop"
            )
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, enable_cleanup_closed=False)
            self._loop = loop
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return session

    def _timeout(self, timeout: float | None, stream: bool) -> aiohttp.ClientTimeout:
        """A whole-request limit, or for streams a limit on each wait for data."""
        key = (timeout, stream)
        cached = self._timeouts.get(key)
        if cached is None:
            if stream:
                cached = aiohttp.ClientTimeout(
                    total=None, sock_connect=self._connect_timeout, sock_read=timeout
                )
            else:
                cached = aiohttp.ClientTimeout(total=timeout, sock_connect=self._connect_timeout)
            if len(self._timeouts) < 64:
                self._timeouts[key] = cached
        return cached

    async def send(self, request: Request) -> Response:
        session = self._get_session()
        try:
            resp = await session.request(
                request.method,
                request.url,
                data=request.content if request.data is None else request.data,
                headers=request.headers,
                params=request.params,
                timeout=self._timeout(request.timeout, request.stream),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            if self._closed or session.closed:
                raise ClientClosedError("client closed while the request was in flight") from exc
            raise _connection_error(exc) from exc
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def response_headers(headers: Mapping[str, str] | None = None) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(headers or {}))


async def iter_lines(
    chunks: AsyncIterator[bytes], max_line: int = DEFAULT_MAX_LINE_BYTES
) -> AsyncIterator[bytes]:
    """Split a byte stream into lines (without the newline, CR stripped), refusing endless lines."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > max_line:
                raise ResponseValidationError(f"stream line exceeds the {max_line}-byte limit")
            line = bytes(buffer[start:end])
            start = end + 1
            yield line[:-1] if line.endswith(b"\r") else line
        if start:
            del buffer[:start]
        if len(buffer) > max_line:
            raise ResponseValidationError(f"stream line exceeds the {max_line}-byte limit")
    if buffer:
        yield bytes(buffer[:-1] if buffer.endswith(b"\r") else buffer)


@dataclass(slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        try:
            return _json.loads(self.data)
        except ValueError as exc:
            raise ResponseValidationError(
                f"stream event is not JSON: {exc}", body=self.data
            ) from exc


async def iter_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
    """Events per the WHATWG server-sent events rules: ``field: value`` lines, blank line ends one."""
    event = ""
    data: list[str] = []
    last_id: str | None = None
    async for raw in lines:
        if not raw:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if raw.startswith(b":"):
            continue
        line = raw.decode("utf-8", "replace")
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    if data:
        yield ServerSentEvent(event or "message", "\n".join(data), last_id)


async def iter_ndjson(lines: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """One JSON value per non-blank line."""
    async for line in lines:
        if not line.strip():
            continue
        try:
            yield _json.loads(line)
        except ValueError as exc:
            raise ResponseValidationError(f"stream line is not JSON: {exc}", body=line) from exc
