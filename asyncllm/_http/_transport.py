"""The HTTP layer: one aiohttp session per client, and readers for SSE and NDJSON streams.

A transport has one job, ``send(request) -> response``. ``MockTransport`` (in ``asyncllm.testing``)
answers from a handler so clients can be exercised, and timed, without any I/O.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import os
import ssl
import sys
import urllib.request
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .._constants import (
    ACCEPT_ENCODING,
    DECOMPRESSION_ALLOWANCE,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_LINE_BYTES,
    MAX_DECOMPRESSION_RATIO,
    READ_STEP_BYTES,
)
from .._exceptions import (
    APIConnectionError,
    APITimeoutError,
    CertificateVerificationError,
    ClientClosedError,
    ConfigurationError,
    ResponseValidationError,
)
from . import _json

logger = logging.getLogger("asyncllm")


# Header names whose values are credentials: exact names, then parts of names.
_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "set-cookie",
    }
)
_SECRET_PARTS = ("key", "token", "secret", "auth", "password", "signature", "credential", "cookie")


def is_secret_header(name: str) -> bool:
    """Whether a header's value is shown masked: credentials, keys, tokens, cookies."""
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(part in lowered for part in _SECRET_PARTS)


class SecretValue(str):
    """A header value that is a credential: sent as itself, shown as ``'***'`` by ``repr``, so a
    traceback printed with its local variables (Sentry, ``rich``, ``pytest --showlocals``,
    ``traceback`` with ``capture_locals``) does not show it, in our frames or in aiohttp's."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class Headers(dict[str, str]):
    """Request headers whose ``repr`` masks the values of credential headers
    (``Authorization``, ``x-api-key``, ``x-goog-api-key``, cookies, anything named like a key or
    token). ``Headers.masking(mapping)`` also wraps those values in ``SecretValue``, so that they
    stay masked once aiohttp copies them into its own header multidict."""

    __slots__ = ()

    @classmethod
    def masking(cls, headers: Mapping[str, str]) -> Headers:
        return cls(
            {
                name: SecretValue(value) if is_secret_header(name) and type(value) is str else value
                for name, value in headers.items()
            }
        )

    def copy(self) -> Headers:
        return Headers(self)

    def __repr__(self) -> str:
        return mask_headers(self)


def mask_headers(headers: Mapping[str, str]) -> str:
    shown = (
        f"{name!r}: {'***' if is_secret_header(name) else repr(value)}"
        for name, value in headers.items()
    )
    return "{" + ", ".join(shown) + "}"


def display_url(url: str) -> str:
    """``url`` as errors, logs and reprs show it: without userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(slots=True, repr=False)
class Request:
    """One HTTP request, as a ``Transport`` receives it.

    ``url`` is absolute; ``params`` are query parameters to add to it. ``headers`` are the final
    headers (``Headers``: their repr masks credentials). The body is ``content`` (bytes, already
    encoded) or, for multipart forms, ``data`` (an ``aiohttp.FormData``), never both.
    ``timeout`` is the attempt's limit in seconds (None: none): for a plain request the whole
    exchange, for a ``stream`` the longest wait for more data (the client itself also bounds the
    wait for the next event, which keep-alive bytes do not extend, and the call's deadline). ``extensions`` carries anything
    else a custom transport wants to see.
    """

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

    def __repr__(self) -> str:
        size = None if self.content is None else len(self.content)
        return (
            f"Request(method={self.method!r}, url={display_url(self.url)!r}, "
            f"headers={mask_headers(self.headers)}, content=<{size} bytes>, "
            f"timeout={self.timeout!r}, stream={self.stream!r})"
        )


class Response(abc.ABC):
    """A response whose headers have arrived, as a ``Transport`` returns it.

    A custom transport sets ``status`` and ``headers`` (a case-insensitive mapping, say a
    ``multidict.CIMultiDictProxy``), implements ``iter_bytes`` (the body in pieces as they arrive;
    a dropped connection raises ``APIConnectionError``, a read timeout ``APITimeoutError``) and
    ``close`` (release the connection; called exactly once, whether or not the body was read).
    ``read(limit)`` reads the whole body through ``iter_bytes``; override it for speed.
    """

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
    """What carries a client's requests: ``send(request) -> response``, and ``aclose()``.

    Give one to any HTTP client as ``transport=`` (the client then does not close it). A custom
    transport must:

    - send ``request`` as given: its method, absolute ``url`` plus ``params``, ``headers`` and
      body (``content`` bytes, or ``data``), without following redirects (a key must never travel
      to another host) and without adding credentials of its own;
    - return a ``Response`` as soon as the status and headers have arrived, whatever the status
      (the client turns 3xx, 4xx and 5xx into errors and calls ``close()`` on every response);
    - honour ``request.timeout`` (seconds; None for none), raising ``APITimeoutError``;
    - raise ``APIConnectionError`` (or a subclass) when no answer came, and ``ClientClosedError``
      once closed; the client retries connection errors as the retry policy says; set the
      error's ``unsent`` when the request provably never left (connection refused, name not
      resolved, connect timed out): only then is a call that creates something sent again;
    - be safe to use from many tasks of one event loop at once.

    ``asyncllm.testing.MockTransport`` answers from a function, with no I/O.
    """

    @abc.abstractmethod
    async def send(self, request: Request) -> Response:
        """Send ``request``; return once the status and headers have arrived."""

    async def aclose(self) -> None:  # noqa: B027 - optional for transports that hold nothing
        """Release connections."""


class _Inflater:
    """A gzip or deflate body decompressed as it arrives, in pieces of at most
    ``READ_STEP_BYTES``, and never to more than ``MAX_DECOMPRESSION_RATIO`` times the bytes
    received (plus ``DECOMPRESSION_ALLOWANCE``): a small body that expands to gigabytes (a
    decompression bomb) ends as a ``ResponseValidationError`` after a bounded amount of work."""

    __slots__ = ("_gzip", "_obj", "_produced", "_received", "_status")

    def __init__(self, encoding: str, status: int) -> None:
        self._gzip = encoding != "deflate"
        self._obj: Any = None
        self._received = 0
        self._produced = 0
        self._status = status

    def _new(self, data: bytes) -> Any:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is meant to be zlib-wrapped; some servers send raw deflate (as aiohttp, accept
        # both: a zlib header has compression method 8 in its low nibble).
        raw = not data or data[0] & 0x0F != 8
        return zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._received += len(data)
        obj = self._obj
        while data:
            if obj is None:
                obj = self._obj = self._new(data)
            try:
                out = obj.decompress(data, READ_STEP_BYTES)
            except zlib.error as exc:
                raise APIConnectionError(
                    f"cannot decompress the {'gzip' if self._gzip else 'deflate'} body: {exc}"
                ) from None
            data = obj.unconsumed_tail
            if obj.eof:
                # Another gzip member may follow; anything after a deflate stream is ignored.
                data = obj.unused_data if self._gzip else b""
                obj = self._obj = None
            if out:
                self._produced += len(out)
                if self._produced > self._received * MAX_DECOMPRESSION_RATIO + (
                    DECOMPRESSION_ALLOWANCE
                ):
                    raise ResponseValidationError(
                        f"response body decompresses to more than {MAX_DECOMPRESSION_RATIO} "
                        f"times its {self._received} received bytes (a decompression bomb?)",
                        status_code=self._status,
                    )
                yield out


def _inflater(headers: Mapping[str, str], status: int) -> _Inflater | None:
    encoding = headers.get("Content-Encoding")
    if encoding is None:
        return None
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(encoding, status)
    return None  # identity, or one we never asked for: the body as it came


class _AiohttpResponse(Response):
    __slots__ = ("_inflater", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, decompress: bool) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        # aiohttp does not decompress for us (it would do it all at once, unbounded, inside its
        # protocol callback); we do it here, piece by piece.
        self._inflater = _inflater(resp.headers, resp.status) if decompress else None

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        inflater = self._inflater
        try:
            async for chunk in self._resp.content.iter_any():
                if inflater is None:
                    yield chunk
                else:
                    for piece in inflater.feed(chunk):
                        yield piece
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise _connection_error(exc) from exc
        except asyncio.TimeoutError as exc:
            raise APITimeoutError("timed out reading the response") from exc

    async def read(self, limit: int) -> bytes:
        if self._inflater is not None:
            return await super().read(limit)
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


# aiohttp's error for a connect that timed out (3.10 on): no byte of the request left.
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    getattr(aiohttp, name) for name in ("ConnectionTimeoutError",) if hasattr(aiohttp, name)
)


def _connection_error(exc: BaseException) -> APIConnectionError:
    """The error of a request that got no answer; ``unsent`` where it provably never left (no
    connection was made), which is what lets a creating call be sent again."""
    error = _classify(exc)
    error.unsent = isinstance(exc, (aiohttp.ClientConnectorError, *_CONNECT_TIMEOUT))
    return error


def _classify(exc: BaseException) -> APIConnectionError:
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


def _ssl_setting(value: Any) -> ssl.SSLContext | bool | None:
    """``ssl=`` as aiohttp takes it: None for default verification, False for none (with a loud
    warning), or a context (a CA bundle path is loaded here, once)."""
    if value is None or value is True:
        return None
    if value is False:
        logger.warning(
            "TLS certificate verification is OFF (ssl=False): any server can pose as the "
            "backend and read its API key; give ssl=<CA bundle path or ssl.SSLContext> instead",
            extra={"backend": "-", "request_id": "-"},
        )
        return False
    if isinstance(value, ssl.SSLContext):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        try:
            if os.path.isdir(path):
                return ssl.create_default_context(capath=path)
            return ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"ssl: cannot load the CA bundle {path!r}: {exc}") from None
    raise ConfigurationError(
        "ssl must be an ssl.SSLContext, a CA bundle path, True or False, "
        f"not {type(value).__name__}"
    )


def _proxy_setting(value: Any, what: str) -> tuple[URL, dict[str, str] | None]:
    """A proxy URL, its credentials taken out into a Proxy-Authorization header."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str URL, not {type(value).__name__}")
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{what} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(f"{what} must be an http(s) URL, got {display_url(value)!r}")
    headers = None
    if url.user is not None:
        auth = aiohttp.encode_basic_auth(url.user, url.password or "")
        headers = Headers.masking({"Proxy-Authorization": auth})
        url = url.with_user(None)
    return url, headers


def is_loopback(host: str | None) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8 and ::1."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Whether this aiohttp takes auto_decompress per request (so that a given session's responses can
# be decompressed here too).
_REQUEST_AUTO_DECOMPRESS = (
    "auto_decompress" in inspect.signature(aiohttp.ClientSession._request).parameters
)

# A proxy URL and the Proxy-Authorization headers its credentials make.
_Proxy = tuple[URL | None, dict[str, str] | None]
_NO_PROXY: _Proxy = (None, None)


class AiohttpTransport(Transport):
    """One ``aiohttp.ClientSession``, made on first use inside the running loop.

    ``ssl``: an ``ssl.SSLContext``, a CA bundle path (file or directory), or ``False`` for no
    verification (logged as a warning). ``proxy``: a proxy URL for every request. ``trust_env``
    (default True): without ``proxy``, use ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and honour
    ``NO_PROXY``, read when the transport is made; loopback targets never go through an
    environment proxy. ``~/.netrc`` is never read. ``max_connections`` and
    ``max_connections_per_host``: pool limits (None: no limit). ``session``: an
    ``aiohttp.ClientSession`` to send through (its own settings apply; not closed here).
    ``connector``: an ``aiohttp.BaseConnector`` for the session made here (not closed here).

    A transport made outside any loop binds to the first loop that uses it. When that loop has
    been closed (a script's or a test's successive ``asyncio.run``), it rebinds to the new one,
    closing the old connections; used from two live loops, it raises ``ConfigurationError``.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        limit: int = 0,
        max_connections: int | None = None,
        max_connections_per_host: int | None = None,
        ssl: ssl.SSLContext | str | os.PathLike[str] | bool | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        session: aiohttp.ClientSession | None = None,
        connector: aiohttp.BaseConnector | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        for name, value in (
            ("max_connections", max_connections),
            ("max_connections_per_host", max_connections_per_host),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigurationError(f"{name} must be a positive int or None")
        self._limit = max_connections if max_connections is not None else limit
        self._limit_per_host = max_connections_per_host or 0
        if not isinstance(trust_env, bool):
            raise ConfigurationError("trust_env must be True or False")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigurationError("session must be an aiohttp.ClientSession")
        if connector is not None and not isinstance(connector, aiohttp.BaseConnector):
            raise ConfigurationError("connector must be an aiohttp.BaseConnector")
        if session is not None and (
            connector is not None or max_connections is not None or max_connections_per_host
        ):
            raise ConfigurationError(
                "session= brings its own connector and pool: give connector= or the pool "
                "limits instead, not both"
            )
        if connector is not None and (max_connections is not None or max_connections_per_host):
            raise ConfigurationError(
                "connector= brings its own pool limits: set them on the connector"
            )
        self._given_session = session
        self._given_connector = connector
        self._ssl = _ssl_setting(ssl)
        # Keyword arguments of every session.request call, made once.
        self._request_kwargs: dict[str, Any] = {"allow_redirects": False}
        if self._ssl is not None and (session is not None or connector is not None):
            self._request_kwargs["ssl"] = self._ssl
        # Whether responses are decompressed here (always with our own session; with a given one
        # when aiohttp lets a request turn its decompression off, else the session's setting).
        self._decompress = True
        self._ask_encoding = False
        if session is not None and _REQUEST_AUTO_DECOMPRESS:
            self._request_kwargs["auto_decompress"] = False
            self._ask_encoding = True
        # Proxies: an explicit one for every request, or the environment's, per origin.
        self._proxy: _Proxy | None = None
        self._env_proxies: dict[str, str] | None = None
        self._proxy_cache: dict[str, _Proxy] = {}
        if proxy is not None:
            self._proxy = _proxy_setting(proxy, "proxy")
        elif trust_env:
            env = {
                scheme: url
                for scheme, url in urllib.request.getproxies_environment().items()
                if scheme in ("http", "https", "all", "no")
            }
            if env.keys() - {"no"}:
                self._env_proxies = env
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        self._closed = False
        self._timeouts: dict[tuple[float | None, bool], aiohttp.ClientTimeout] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AiohttpTransport:
        """The transport a client's constructor options (``ClientOptions``) describe."""
        return cls(
            connect_timeout=options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            max_connections=options.get("max_connections"),
            max_connections_per_host=options.get("max_connections_per_host"),
            ssl=options.get("ssl"),
            proxy=options.get("proxy"),
            trust_env=options.get("trust_env", True),
            session=options.get("session"),
            connector=options.get("connector"),
        )

    # -- proxies ----------------------------------------------------------------------------------

    def proxy_for(self, url: str) -> _Proxy:
        """The proxy (and the headers carrying its credentials) a request to ``url`` goes
        through, if any."""
        if self._proxy is not None:
            return self._proxy
        env = self._env_proxies
        if env is None:
            return _NO_PROXY
        # Decided once per origin (scheme://host:port), cheaply found without parsing.
        slash = url.find("/", url.find("//") + 2)
        origin = url if slash < 0 else url[:slash]
        cached = self._proxy_cache.get(origin)
        if cached is None:
            cached = self._env_proxy(origin, env)
            if len(self._proxy_cache) < 256:
                self._proxy_cache[origin] = cached
        return cached

    @staticmethod
    def _env_proxy(origin: str, env: dict[str, str]) -> _Proxy:
        try:
            parts = urlsplit(origin)
            host = parts.hostname
        except ValueError:
            return _NO_PROXY
        if host is None or is_loopback(host):
            return _NO_PROXY
        netloc = parts.netloc.rpartition("@")[2]
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if "no" in env and bypass(netloc, env):
            return _NO_PROXY
        proxy = env.get(parts.scheme) or env.get("all")
        if not proxy:
            return _NO_PROXY
        if "://" not in proxy:
            proxy = "http://" + proxy
        try:
            return _proxy_setting(proxy, f"the {parts.scheme.upper()}_PROXY environment variable")
        except ConfigurationError:
            return _NO_PROXY

    # -- the session and its loop -----------------------------------------------------------------

    async def _open(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("transport is closed")
        session = self._session
        if session is not None and self._loop is not loop:
            old = self._loop
            if old is not None and not old.is_closed():
                # aiohttp sessions and their sockets belong to one loop; a silent switch would
                # hang or fail deep inside aiohttp.
                raise ConfigurationError(
                    "this client is in use on another event loop that is still open; make one "
                    "client per loop (a client whose loop was closed moves to the new one)"
                )
            if self._given_session is not None or self._given_connector is not None:
                raise ConfigurationError(
                    "the aiohttp session or connector given to this client belongs to an event "
                    "loop that is closed; give one made on the running loop"
                )
            await self._abandon(session)
            # Another call may have opened a session on this loop meanwhile: share it.
            session = self._session
            if session is not None and self._loop is not loop:
                session = None
        if session is not None and not session.closed:
            return session
        given = self._given_session
        if given is not None:
            if given.closed:
                raise ConfigurationError("the aiohttp session given as session= is closed")
            if getattr(given, "_loop", loop) is not loop:
                raise ConfigurationError(
                    "the aiohttp session given as session= belongs to another event loop"
                )
            self._session, self._loop = given, loop
            self._decompress = _REQUEST_AUTO_DECOMPRESS or not getattr(
                given, "auto_decompress", True
            )
            return given
        connector = self._given_connector
        if connector is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                ssl=True if self._ssl is None else self._ssl,
                enable_cleanup_closed=False,
            )
        session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=self._given_connector is None,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            # Bodies are decompressed by _AiohttpResponse, bounded (see _Inflater); we ask only
            # for the encodings it decodes.
            auto_decompress=False,
            headers={"Accept-Encoding": ACCEPT_ENCODING},
            # Proxies from the environment are resolved here, once; aiohttp's trust_env would
            # also read ~/.netrc and add (or clash with) an Authorization header.
            trust_env=False,
            skip_auto_headers=("User-Agent",),
        )
        self._session, self._loop = session, loop
        # An async generator the loop finalizes at its end (asyncio.run calls shutdown_asyncgens
        # before closing the loop): the session is then closed while its loop still runs.
        guard = self._guard = self._loop_guard(session)
        await guard.__anext__()
        return session

    async def _loop_guard(self, session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._session is session:
                self._session = None
            if not session.closed:
                await session.close()

    async def _abandon(self, session: aiohttp.ClientSession) -> None:
        """Let go of a session whose loop was closed without finalizing it: close its sockets
        directly (the closed loop cannot schedule that) and mark it closed."""
        self._session = self._guard = None
        connector = session.connector
        if connector is not None:
            pooled: Any = getattr(connector, "_conns", {})
            acquired: Any = getattr(connector, "_acquired", ())
            protocols = [proto for conns in pooled.values() for proto, _ in conns]
            protocols.extend(acquired)
            for proto in protocols:
                _force_close(getattr(proto, "transport", None))
        with contextlib.suppress(Exception):
            # aiohttp's close only marks the connector closed when its loop is closed.
            await session.close()

    def _timeout(self, timeout: float | None, stream: bool) -> aiohttp.ClientTimeout:
        """A whole-request limit, or for streams a backstop on each wait for data: the stream's
        own timer (``_OpenStream``) cuts a wait at ``timeout`` and says it was the stream that
        fell idle; aiohttp's read timer at the same span raced it, and whichever fired first
        named the error (at times "request timed out (SocketTimeoutError)"), so it is twice
        that."""
        key = (timeout, stream)
        cached = self._timeouts.get(key)
        if cached is None:
            if stream:
                cached = aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._connect_timeout,
                    sock_read=None if timeout is None else 2 * timeout,
                )
            else:
                cached = aiohttp.ClientTimeout(total=timeout, sock_connect=self._connect_timeout)
            if len(self._timeouts) < 64:
                self._timeouts[key] = cached
        return cached

    async def send(self, request: Request) -> Response:
        session = self._session
        loop = asyncio.get_running_loop()
        if session is None or self._loop is not loop or session.closed:
            session = await self._open(loop)
        kwargs = self._request_kwargs
        headers = request.headers
        if self._ask_encoding and "Accept-Encoding" not in headers:
            # A given session would ask for what aiohttp can decode (br, zstd), not what we can.
            headers = Headers(headers)
            headers["Accept-Encoding"] = ACCEPT_ENCODING
        if self._proxy is not None or self._env_proxies is not None:
            proxy, proxy_headers = self.proxy_for(request.url)
            if proxy is not None:
                kwargs = {**kwargs, "proxy": proxy}
                if proxy_headers is not None and request.url.startswith("https:"):
                    kwargs["proxy_headers"] = proxy_headers  # sent on the CONNECT
                elif proxy_headers is not None:
                    # A forward proxy reads its credentials from the request itself.
                    headers = Headers(headers)
                    headers.update(proxy_headers)
        try:
            resp = await session.request(
                request.method,
                request.url,
                data=request.content if request.data is None else request.data,
                headers=headers,
                params=request.params,
                timeout=self._timeout(request.timeout, request.stream),
                **kwargs,
            )
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            if self._closed or session.closed:
                raise ClientClosedError("client closed while the request was in flight") from exc
            error = _connection_error(exc)
            reason = _reason(exc)
            if reason and reason not in error.message.lower():
                error.message = f"{error.message} ({reason})"
            raise error from exc
        if resp.status >= 500:
            _not_reused(resp, session.connector)
        return _AiohttpResponse(resp, self._decompress)

    async def aclose(self) -> None:
        self._closed = True
        session, guard, loop = self._session, self._guard, self._loop
        self._session = self._guard = None
        if session is None:
            return
        if loop is asyncio.get_running_loop():
            if guard is not None:
                await guard.aclose()  # closes the session (if it is ours)
        elif loop is not None and loop.is_closed() and self._given_session is None:
            await self._abandon(session)


def _reason(exc: BaseException) -> str | None:
    """The operating system's word for a failed connection ("connection refused"), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, OSError):
            current = os_error
        if isinstance(current, OSError) and current.errno:
            return os.strerror(current.errno).lower()
        current = current.__cause__ or current.__context__
    return None


def _not_reused(resp: aiohttp.ClientResponse, connector: Any) -> None:
    """Keep the connection that carried a 5xx out of the pool. A server that failed a request
    may close its end right after answering, without a ``Connection: close`` (uvicorn does after
    an unhandled exception, which is how OPEA's megaservices answer their bare 500), and the next
    call on that connection would fail as a spurious connection error (and count against the
    breaker). Still in use, it is closed when released; already pooled (a short body is read
    with the headers), it is taken out and closed, unless another request has it by now."""
    connection = resp.connection
    if connection is not None:
        if connection.protocol is not None:
            connection.protocol.force_close()
        return
    protocol = getattr(resp, "_protocol", None)
    pooled: Any = getattr(connector, "_conns", None)
    if protocol is None or not isinstance(pooled, dict):
        return
    for conns in pooled.values():
        for entry in conns:
            if entry[0] is protocol:
                conns.remove(entry)
                protocol.close()
                return


def _force_close(transport: Any) -> None:
    """Close an asyncio transport's socket without its (closed) loop; best effort."""
    if transport is None:
        return
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    for t in (transport, inner):
        if t is None:
            continue
        sock = getattr(t, "_sock", None)
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()
            with contextlib.suppress(Exception):
                t._sock = None  # so that its __del__ finds nothing left to warn about
        if isinstance(getattr(t, "_closed", None), bool):
            t._closed = True  # an SSL transport's own unclosed-transport flag


def response_headers(headers: Mapping[str, str] | None = None) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(headers or {}))


def _line_error(max_line: int) -> ResponseValidationError:
    return ResponseValidationError(f"stream line exceeds the {max_line}-byte limit")


def _noise_error(max_noise: int) -> ResponseValidationError:
    return ResponseValidationError(
        f"stream sent more than {max_noise} bytes that carry no event (blank lines, comments, "
        "keep-alives) in a row"
    )


class _Turn:
    """Whether the event loop has run since ``expect()``: a reader that finds it has not (its
    source answered from a buffer, without waiting) gives the loop a turn itself."""

    __slots__ = ("ran",)

    def __init__(self) -> None:
        self.ran = True

    def mark(self) -> None:
        self.ran = True

    def expect(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ran = False
        loop.call_soon(self.mark)


async def line_batches(
    chunks: AsyncIterable[bytes], max_line: int = DEFAULT_MAX_LINE_BYTES
) -> AsyncIterator[list[bytes]]:
    """The lines of a byte stream (without the newline, CR stripped), a list per piece of the
    stream: each network chunk, cut into pieces of at most ``READ_STEP_BYTES``. The event loop
    runs between any two pieces (a turn is given unless the source waited for data anyway), so a
    body that arrives all at once (buffered, or decompressed) never holds the loop for more than a
    piece's work. A line longer than ``max_line`` is a ``ResponseValidationError``.

    Lines are split by ``bytes.split`` (in C): a piece of many short lines costs its readers a
    loop over a list, not a generator step per line."""
    loop = asyncio.get_running_loop()
    turn = _Turn()
    pending: list[bytes] = []  # the start of a line whose end has not come yet
    pending_size = 0
    async for chunk in chunks:
        size = len(chunk)
        for offset in range(0, size, READ_STEP_BYTES):
            if not turn.ran:
                await asyncio.sleep(0)
            turn.expect(loop)
            piece = chunk if size <= READ_STEP_BYTES else chunk[offset : offset + READ_STEP_BYTES]
            if b"\n" not in piece:
                pending.append(piece)
                pending_size += len(piece)
                if pending_size > max_line + 1:
                    raise _line_error(max_line)
                continue
            lines = piece.split(b"\n")
            rest = lines.pop()
            if pending:
                lines[0] = b"".join(pending) + lines[0]
                pending.clear()
            if rest:
                pending.append(rest)
            pending_size = len(rest)
            if b"\r" in piece or lines[0].endswith(b"\r"):
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            if max(map(len, lines)) > max_line or pending_size > max_line + 1:
                raise _line_error(max_line)
            yield lines
    if pending:
        tail = b"".join(pending)
        yield [tail[:-1] if tail.endswith(b"\r") else tail]


async def _single_lines(lines: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
    async for line in lines:
        yield [line]


def _batches(lines: AsyncIterable[bytes] | AsyncIterable[list[bytes]]) -> Any:
    """Line batches from ``iter_lines`` (read as batches, without a step per line) or any
    iterable of lines."""
    if isinstance(lines, _Lines):
        return lines.batches
    return _single_lines(lines)  # type: ignore[arg-type]


class _Lines:
    """What ``iter_lines`` returns: an async iterable of lines whose readers (``iter_sse``,
    ``iter_ndjson``) can take its batches instead."""

    __slots__ = ("batches", "max_noise")

    def __init__(self, batches: AsyncIterator[list[bytes]], max_noise: int | None) -> None:
        self.batches = batches
        self.max_noise = max_noise

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._flat()

    async def _flat(self) -> AsyncIterator[bytes]:
        max_noise = self.max_noise
        if max_noise is None:
            async for lines in self.batches:
                for line in lines:
                    yield line
            return
        noise = 0
        async for lines in self.batches:
            for line in lines:
                if not line or line[:1] == b":":
                    noise += len(line) + 1
                    if noise > max_noise:
                        raise _noise_error(max_noise)
                else:
                    noise = 0
                yield line


def iter_lines(
    chunks: AsyncIterable[bytes],
    max_line: int = DEFAULT_MAX_LINE_BYTES,
    max_noise: int | None = None,
) -> AsyncIterable[bytes]:
    """Split a byte stream into lines (without the newline, CR stripped), refusing endless lines
    and, with ``max_noise``, more than that many bytes of blank and ``:`` comment lines in a row
    (any other line resets the count). See ``line_batches``."""
    return _Lines(line_batches(chunks, max_line), max_noise)


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


async def iter_sse(
    lines: AsyncIterable[bytes],
    max_noise: int | None = None,
    max_event: int | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Events per the WHATWG server-sent events rules: ``field: value`` lines, blank line ends one.

    ``max_noise``: the bytes of lines that carry no event (blank lines, comments, fields of events
    without data) allowed in a row; each event with data resets the count. ``max_event``: the
    largest an event's data may grow. Past either, ``ResponseValidationError``."""
    noise_limit = sys.maxsize if max_noise is None else max_noise
    event_limit = sys.maxsize if max_event is None else max_event
    event = ""
    data: list[str] = []
    size = 0
    noise = 0
    last_id: str | None = None
    async for batch in _batches(lines):
        for raw in batch:
            if not raw:
                if data:
                    noise = 0
                    yield ServerSentEvent(event or "message", "\n".join(data), last_id)
                    data = []
                    size = 0
                else:
                    noise += 1
                    if noise > noise_limit:
                        raise _noise_error(noise_limit)
                event = ""
                continue
            if raw[:1] == b":":
                noise += len(raw) + 1
                if noise > noise_limit:
                    raise _noise_error(noise_limit)
                continue
            line = raw.decode("utf-8", "replace")
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                size += len(value) + 1
                if size > event_limit:
                    raise ResponseValidationError(
                        f"stream event exceeds the {event_limit}-byte limit"
                    )
                data.append(value)
                continue
            noise += len(raw) + 1
            if noise > noise_limit:
                raise _noise_error(noise_limit)
            if name == "event":
                event = value
            elif name == "id":
                last_id = value
    if data:
        yield ServerSentEvent(event or "message", "\n".join(data), last_id)


async def iter_ndjson(
    lines: AsyncIterable[bytes], max_noise: int | None = None
) -> AsyncIterator[Any]:
    """One JSON value per non-blank line; with ``max_noise``, more than that many bytes of blank
    lines in a row is a ``ResponseValidationError``."""
    noise_limit = sys.maxsize if max_noise is None else max_noise
    noise = 0
    async for batch in _batches(lines):
        for line in batch:
            if not line.strip():
                noise += len(line) + 1
                if noise > noise_limit:
                    raise _noise_error(noise_limit)
                continue
            noise = 0
            try:
                value = _json.loads(line)
            except ValueError as exc:
                raise ResponseValidationError(f"stream line is not JSON: {exc}", body=line) from exc
            yield value
