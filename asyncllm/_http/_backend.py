"""The HTTP half of a backend: auth, sending, JSON requests and streams, status to error.

A backend subclass says only what is particular to its wire format: base URL and environment
variables, auth headers, how bodies are built and how answers and errors are read (the
``_error_info`` hook).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
from pydantic import SecretStr, ValidationError
from typing_extensions import Unpack

from .._constants import (
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_NOISE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    REQUEST_ID_HEADER,
)
from .._engine._backend import Backend, Call
from .._engine._backoff import parse_retry_after
from .._engine._context import check_header_value, check_headers
from .._engine._dispatcher import Attempt, Lane
from .._engine._ratelimit import Window, learn_limits, read_windows
from .._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncLLMError,
    ClientClosedError,
    ConfigurationError,
    ResponseValidationError,
    status_error,
)
from .._models import HTTP_KEY
from .._options import (
    BODY_KEYS,
    CLIENT_KEYS,
    HTTP_KEYS,
    TRANSPORT_KEYS,
    ClientOptions,
    check_keys,
    merge_body,
)
from ..streaming import Stream
from . import _json
from ._transport import (
    AiohttpTransport,
    Headers,
    Request,
    Response,
    ServerSentEvent,
    Transport,
    display_url,
    iter_lines,
    iter_ndjson,
    iter_sse,
)

T = TypeVar("T")

_tuple_new = tuple.__new__

ERROR_BODY_LIMIT = 64 * 1024


class Meta(NamedTuple):
    """What a parser may need besides the body: our request ID and the response headers."""

    request_id: str
    server_request_id: str | None
    headers: Mapping[str, str]
    status: int


class Prepared(NamedTuple):
    """A call as decided before it queues: its engine settings, its encoded body, its query and
    its extra headers, all checked."""

    call: Call
    content: bytes | None
    params: Mapping[str, str] | None
    extra_headers: Mapping[str, str] | None
    # The JSON body as sent, which rate budgets estimate a call's tokens from.
    body: Any = None


class ErrorInfo(NamedTuple):
    """What a vendor's error body says, read by one hook (``HttpBackend._error_info``) for status
    errors and in-stream errors alike.

    ``status``: the HTTP status the body names, which types an error inside a 200 stream.
    ``kind``: the status whose exception class to use where the vendor's error type says more
    than the status (TGI's "validation" is an ``UnprocessableEntityError`` whatever its status).
    ``retry_after``: a delay the body asks for (Gemini's ``RetryInfo``), used when no header gives
    one. ``should_retry``: the body's own verdict, if it gives one. ``quotas``: the rate budgets
    the body says ran out (Gemini's ``QuotaFailure``), which the lane learns.
    """

    message: str | None = None
    type: str | None = None
    code: str | None = None
    retry_after: float | None = None
    status: int | None = None
    kind: int | None = None
    should_retry: bool | None = None
    quotas: Mapping[str, Window] | None = None


def _env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


async def _build(data: Callable[[], Any]) -> Any:
    value = data()
    return await value if inspect.isawaitable(value) else value


def _check_base_url(url: Any) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # say, an unclosed IPv6 bracket
        raise ConfigurationError(f"base_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"base_url must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigurationError("base_url must not hold a query or fragment: paths go after it")
    check_header_value("base_url", url)
    return url.rstrip("/")


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without ``user:password@``, and those credentials as a Basic Authorization value
    (aiohttp would send them so; kept apart, the URL can be shown anywhere)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return f"{scheme}{sep}{host}{slash}{path}", f"Basic {token}"


def _name_request(error: APIError, method: str, url: str) -> None:
    """Name the failed request on its error (once: the innermost layer knows best)."""
    if error.url is None:
        error.method = method
        error.url = display_url(url)


def _user_agent() -> str:
    from .. import __version__

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"asyncllm/{__version__} python/{python} aiohttp/{aiohttp.__version__}"


USER_AGENT = _user_agent()


def _check_query(query: Any) -> dict[str, str]:
    if not isinstance(query, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in query.items()
    ):
        raise ConfigurationError("extra_query must be a mapping of str to str")
    return dict(query)


# Keys of the other shapes, which say more than a FastAPI detail beside them.
_NAMED = frozenset(("error", "message"))


def _detail_text(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of ``{"loc", "msg", "type"}`` validation errors."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for item in detail[:5]:
        if isinstance(item, Mapping):
            where = item.get("loc")
            loc = ".".join(map(str, where)) if isinstance(where, list) else str(where or "")
            msg = str(item.get("msg", ""))
            parts.append(f"{loc}: {msg}" if loc else msg)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def default_error_info(payload: Any) -> ErrorInfo:
    """The common error shapes: ``{"error": {"message", "type", "code"}}``, ``{"error": "..."}``,
    ``{"message": ...}`` and FastAPI's ``{"detail": ...}`` (a list of validation errors reads as
    ``loc: msg; ...``, typed by the first one's ``type``), which OPEA, vLLM, MLServer and every
    other FastAPI server answer."""
    if isinstance(payload, Mapping) and "detail" in payload and payload.keys().isdisjoint(_NAMED):
        detail = payload["detail"]
        first = detail[0] if isinstance(detail, list) and detail else None
        etype = first.get("type") if isinstance(first, Mapping) else None
        return ErrorInfo(_detail_text(detail), None if etype is None else str(etype))
    if isinstance(payload, Mapping):
        error = payload.get("error", payload)
        if isinstance(error, Mapping):
            message = error.get("message") or error.get("detail")
            etype = error.get("type") or error.get("error_type") or error.get("status")
            code = error.get("code")
            status = error.get("status")
            return ErrorInfo(
                None if message is None else str(message),
                None if etype is None else str(etype),
                None if code is None else str(code),
                status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            )
        if isinstance(error, str):
            etype = payload.get("error_type") or payload.get("type")
            return ErrorInfo(error, None if etype is None else str(etype))
        detail = payload.get("detail") or payload.get("message")
        if detail is not None:
            return ErrorInfo(str(detail))
    return ErrorInfo()


def named_status(info: ErrorInfo) -> int | None:
    """The HTTP status an error body names: its ``status``, or else a ``code`` that is an error
    status, as OpenAI-compatible servers write it (LiteLLM ``"code": "500"``, vLLM ``400``).
    OpenAI's own codes are words (``"rate_limit_exceeded"``) and name none."""
    if info.status is not None:
        return info.status
    code = info.code
    if code is not None and code.isascii() and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    return None


def _is_json(content_type: str | None) -> bool:
    """``application/json`` and its kin (``+json``, ``text/json``); not NDJSON."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


class _Deadline:
    """A streaming call's deadline, on the dispatcher's clock: it runs from the first read of the
    stream (when the dispatcher's own deadline starts) to the end of reading it."""

    __slots__ = ("at", "clock", "seconds")

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.at: float | None = None


class _DeadlineStream(Stream[T]):
    """A ``Stream`` that starts its deadline on its first read."""

    def __init__(self, stream: Stream[T], deadline: _Deadline) -> None:
        super().__init__(stream._source, stream.request_id)
        self._deadline = deadline

    async def __anext__(self) -> T:
        deadline = self._deadline
        if deadline.at is None:
            deadline.at = deadline.clock() + deadline.seconds
        return await self._source.__anext__()


class _OpenStream(Response):
    """One attempt of a stream: its response as the decoder reads it, bounded in time and
    closable by the client.

    Before each item the decoder is asked for (``begin``) the limit is set: ``idle`` seconds
    (the call's ``timeout``) from now, or the deadline if sooner. The wait for the item (``wait``)
    is cut by a timer at that limit, and every network chunk that arrives meanwhile is checked
    against it: keep-alive pings and comments make chunks but no items, so they do not extend
    it. The timer is armed lazily: a wait whose limit is no sooner than the armed timer's keeps
    that timer, which on firing sleeps on to the limit of the wait then in progress; so a
    stream of many items schedules about one timer per ``idle`` seconds, not one per item.
    ``shut`` (the client's ``aclose``) closes the response and cuts a wait in progress; the
    reader then gets ``ClientClosedError``. Time is the dispatcher's clock; the timer runs on the
    loop's, for the same span.
    """

    __slots__ = (
        "_cut",
        "_due",
        "_released",
        "_response",
        "_task",
        "_timer",
        "_timer_at",
        "clock",
        "closed",
        "deadline",
        "headers",
        "idle",
        "limit_at",
        "status",
    )

    def __init__(
        self, clock: Callable[[], float], idle: float | None, deadline: _Deadline | None
    ) -> None:
        self.clock = clock
        self.idle = idle
        self.deadline = deadline
        self.limit_at: float | None = None
        self.closed = False
        self._response: Response | None = None
        self._released = False
        self._task: asyncio.Task[Any] | None = None
        self._cut: str | None = None
        # The loop time at which the wait in progress is cut (None: no limit), and the timer
        # armed for it or for an earlier wait's sooner limit (see the class docstring).
        self._due: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def attach(self, response: Response) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers
        if self.closed:  # shut while the request was being sent
            self.close()

    # -- limits --------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the wait for the next item: raise if the client closed or the deadline passed,
        else set the limit of the wait."""
        if self.closed:
            raise self._closed_error()
        now = self.clock()
        limit = None if self.idle is None else now + self.idle
        deadline = self.deadline
        if deadline is not None and deadline.at is not None:
            if now >= deadline.at:
                raise self._deadline_error()
            if limit is None or deadline.at < limit:
                limit = deadline.at
        self.limit_at = limit

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``, cut at the limit (``APITimeoutError``) or by ``shut``."""
        limit = self.limit_at
        if limit is None:
            self._due = None
        else:
            loop = asyncio.get_running_loop()
            due = self._due = loop.time() + (limit - self.clock())
            timer = self._timer
            if timer is None or due < self._timer_at:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(due, self._expire)
                self._timer_at = due
        task = self._task = asyncio.current_task()
        try:
            return await awaitable
        except asyncio.CancelledError:
            cut = self._cut
            if cut is None or task is None:
                raise
            self._cut = None
            if sys.version_info >= (3, 11) and task.uncancel() > 0:
                raise  # cancelled from outside as well
            raise self._closed_error() if cut == "closed" else self._timeout_error() from None
        finally:
            self._task = None

    def _expire(self) -> None:
        """The timer: cut the wait in progress if its limit is this timer's, else sleep on to
        that wait's limit (a wait that began after the timer was armed)."""
        self._timer = None
        due = self._due
        if self._task is None or due is None:
            return  # between items (the next wait arms a timer), or a wait without a limit
        if due > self._timer_at:
            self._timer = asyncio.get_running_loop().call_at(due, self._expire)
            self._timer_at = due
            return
        self._fire("timeout")

    def _fire(self, cut: str) -> None:
        task = self._task
        if task is not None and self._cut is None:
            self._cut = cut
            task.cancel()

    def shut(self) -> None:
        """The client is closing: end this stream with ``ClientClosedError``."""
        self.closed = True
        self._fire("closed")
        if self._response is not None:
            self.close()

    def _check(self) -> None:
        if self.closed:
            raise self._closed_error()
        limit = self.limit_at
        if limit is not None and self.clock() >= limit:
            raise self._timeout_error()

    def _timeout_error(self) -> APITimeoutError:
        deadline = self.deadline
        if deadline is not None and deadline.at is not None and self.limit_at == deadline.at:
            return self._deadline_error()
        return APITimeoutError(
            f"stream idle: no event with data for {self.idle}s (timeout={self.idle}; "
            "keep-alive pings and comments do not count)"
        )

    def _deadline_error(self) -> APITimeoutError:
        seconds = None if self.deadline is None else self.deadline.seconds
        return APITimeoutError(f"deadline of {seconds}s passed while the stream was open")

    @staticmethod
    def _closed_error() -> ClientClosedError:
        return ClientClosedError("client closed while the stream was open")

    # -- Response ------------------------------------------------------------------------------

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        assert self._response is not None
        self._check()
        async for chunk in self._response.iter_bytes():
            self._check()
            yield chunk

    async def read(self, limit: int) -> bytes:
        assert self._response is not None
        self._check()
        return await self._response.read(limit)

    def close(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        if not self._released and self._response is not None:
            self._released = True
            self._response.close()


class _Exchange(Generic[T]):
    """The attempt of one JSON exchange (``HttpBackend._request``): sends the prepared request
    and reads the answer, once per try. A slotted object rather than a closure: a queued call
    holds it, and a closure over its seven names held a cell for each (about 450 bytes more
    per queued call)."""

    __slots__ = ("backend", "data", "method", "parse", "path", "prepared", "raw_body")

    def __init__(
        self,
        backend: HttpBackend,
        prepared: Prepared,
        method: str,
        path: str,
        parse: Callable[[Any, Meta], T],
        raw_body: bool,
        data: Callable[[], Any] | None,
    ) -> None:
        self.backend = backend
        self.prepared = prepared
        self.method = method
        self.path = path
        self.parse = parse
        self.raw_body = raw_body
        self.data = data

    async def __call__(self, a: Attempt) -> T:
        backend = self.backend
        response = await backend._send(a, self.prepared, self.method, self.path, self.data)
        try:
            raw = await response.read(backend.max_response_bytes)
        finally:
            response.close()
        request_id = self.prepared.call.request_id
        meta = backend._meta(response, request_id)
        if self.raw_body:
            answer = backend._parse(self.parse, raw, meta)
        else:
            try:
                payload = _json.loads(raw) if raw else None
            except ValueError as exc:
                raise backend._validation_error(exc, raw, request_id) from exc
            answer = backend._parse(self.parse, payload, meta)
        # The status and headers, for ``answer.http`` (a HasHttp) to read if asked; a bare
        # try costs nothing where contextlib.suppress would cost every call.
        try:  # noqa: SIM105
            answer.__dict__[HTTP_KEY] = meta
        except AttributeError:  # a list, a bool: nothing to keep them on
            pass
        return answer


class HttpBackend(Backend):
    """The HTTP half of every client but S3: a base URL, auth headers, a transport, and the two
    ways to call (``_request`` for one JSON exchange, ``_stream`` for a streamed one).

    Constructor options are ``ClientOptions`` (keyword-only); per-call options are ``HttpOptions``,
    plus ``extra_body`` on calls that send a JSON body.
    """

    client_keys: ClassVar[frozenset[str]] = CLIENT_KEYS
    default_base_url: ClassVar[str | None] = None
    base_url_env: ClassVar[tuple[str, ...]] = ()
    api_key_env: ClassVar[tuple[str, ...]] = ()
    # True for a hosted API: no key (given or from api_key_env) at default_base_url is a
    # ConfigurationError naming api_key_env[0]; at another URL (a proxy, a local server) it is not.
    api_key_required: ClassVar[bool] = False
    server_request_id_header: ClassVar[str | None] = None
    # The header under which the vendor honours an idempotency key (it answers a repeat of the
    # key with the first request's result): a creating call that carries it, in the client's
    # default_headers or the call's extra_headers, is retried like any call. None: the vendor
    # honours none (OpenAI, Anthropic and Gemini document none), so the header changes nothing.
    idempotency_header: ClassVar[str | None] = None

    def __init__(self, **options: Unpack[ClientOptions]) -> None:
        check_keys(options, self.client_keys, type(self).__name__)
        self._init_engine(options)
        api_key = options.get("api_key")
        key = api_key if api_key is not None else _env(self.api_key_env)
        if isinstance(key, str):
            key = SecretStr(key)
        if key is not None:
            if not isinstance(key, SecretStr):
                raise ConfigurationError("api_key must be a str or a pydantic SecretStr")
            check_header_value("api_key", key.get_secret_value())
        self.api_key: SecretStr | None = key
        # An explicit base_url, empty included, is checked as given: "" is no way to ask for
        # the public API (an empty variable in the environment is as good as none, though).
        url = options.get("base_url")
        if url is None:
            url = _env(self.base_url_env) or self.default_base_url
        if url is None:
            raise ConfigurationError(
                f"{type(self).__name__} needs base_url"
                + (f" (or ${self.base_url_env[0]})" if self.base_url_env else "")
            )
        self.base_url, url_auth = _split_userinfo(_check_base_url(url))
        if self.api_key_required and key is None and self.base_url == self.default_base_url:
            raise ConfigurationError(f"no API key: pass api_key= or set {self.api_key_env[0]}")
        self.max_response_bytes: int = options.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
        self.max_line_bytes: int = options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)
        transport = options.get("transport")
        self._owns_transport = transport is None
        if transport is None:
            transport = AiohttpTransport.from_options(options)
        else:
            given = sorted(k for k in options.keys() & TRANSPORT_KEYS if k != "connect_timeout")
            if given:
                raise ConfigurationError(
                    f"{given[0]}= sets up the built-in transport; with transport= given, "
                    "configure that transport instead"
                )
        self._transport: Transport = transport
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self._auth_headers()}
        if url_auth is not None:
            if any(name.lower() == "authorization" for name in headers):
                raise ConfigurationError(
                    "base_url holds credentials (user:password@) and the API key sets the "
                    "Authorization header too: give one of them"
                )
            headers["Authorization"] = url_auth
        default_headers = options.get("default_headers")
        if default_headers is not None:
            headers.update(check_headers(default_headers, "default_headers"))
        # Credentials stay in objects whose repr masks them (see Headers), made once here.
        self._headers = Headers.masking(headers)
        # The streams open now (shared with with_options clients): aclose ends them.
        self._open_streams: set[_OpenStream] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={display_url(self.base_url)!r})"

    def _host(self) -> str | None:
        return urlsplit(self.base_url).netloc

    # -- hooks for backends -------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        """Headers that authenticate; the default is a Bearer token when a key is set."""
        if self.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}

    def _error_info(self, payload: Any) -> ErrorInfo:
        """What an error body (a status error's, or an error event inside a stream) says;
        override for the vendor's error shape."""
        return default_error_info(payload)

    def _observe(self, status: int, headers: Mapping[str, str], lane: Lane) -> None:
        """Called on every response (say, to record rate-limit headers in ``lane.info``)."""

    # -- errors -------------------------------------------------------------------------------

    def _error(
        self,
        status: int | None,
        info: ErrorInfo,
        request_id: str,
        body: Any,
        *,
        server_request_id: str | None = None,
        retry_after: float | None = None,
        fallback: str,
    ) -> APIError:
        """The one place an error body becomes a typed error: a status error when there is a
        status (the response's, or one the body names), else a plain ``APIError``."""
        kwargs: dict[str, Any] = {
            "backend": self.name,
            "request_id": request_id,
            "body": body,
            "server_request_id": server_request_id,
            "code": info.code,
            "error_type": info.type,
            "retry_after": retry_after if retry_after is not None else info.retry_after,
        }
        error: APIError
        if status is not None and status >= 400:
            error = status_error(status, info.message or fallback, kind=info.kind, **kwargs)
        else:
            error = APIError(info.message or fallback, **kwargs)
        if info.should_retry is not None:
            error.should_retry = info.should_retry
        return error

    def _stream_error(self, payload: Any, meta: Meta) -> APIError:
        """An error event inside a stream, typed by the status its body names (``named_status``),
        if any: LiteLLM reports an upstream that broke mid-stream as ``"code": "500"``."""
        info = self._error_info(payload)
        return self._error(
            named_status(info),
            info,
            meta.request_id,
            _json.excerpt(payload),
            server_request_id=meta.server_request_id,
            fallback="error in stream",
        )

    async def _status_error(
        self, response: Response, request_id: str, lane: Lane | None = None
    ) -> APIError:
        try:
            raw = await response.read(ERROR_BODY_LIMIT)
        except APIError:
            raw = b""
        try:
            payload: Any = _json.loads(raw) if raw else None
        except ValueError:
            payload = None
        headers = response.headers
        info = self._error_info(payload)
        if info.quotas and lane is not None:
            await learn_limits(lane, info.quotas)
        error = self._error(
            response.status,
            info,
            request_id,
            raw.decode("utf-8", "replace") if raw else None,
            server_request_id=self._server_request_id(headers),
            retry_after=parse_retry_after(headers),
            fallback=f"HTTP {response.status}",
        )
        hint = headers.get("x-should-retry")
        if hint in ("true", "false"):
            error.should_retry = hint == "true"
        return error

    def _redirect_error(self, response: Response, request_id: str, url: str) -> APIStatusError:
        """A 3xx: never followed (the transport sends no request to another host, which could
        carry the key there), so an ``APIStatusError`` that is not retried. Its ``location`` is
        the ``Location`` header resolved against the request's URL (None without one); the
        message shows it without userinfo or query."""
        status = response.status
        location = response.headers.get("Location")
        if location:
            with contextlib.suppress(ValueError):  # say, an unclosed IPv6 bracket
                location = urljoin(url, location)
        target = f"to {display_url(location)}" if location else "with no Location"
        error = status_error(
            status,
            f"HTTP {status}: redirected {target}; redirects are not followed (the request "
            "carries credentials): point base_url at the final URL",
            backend=self.name,
            request_id=request_id,
            server_request_id=self._server_request_id(response.headers),
        )
        error.should_retry = False
        error.location = location or None
        return error

    def _not_a_stream(self, raw: bytes, response: Response, meta: Meta) -> APIError:
        """A JSON body where an event stream was asked for (some OpenAI-compatible proxies
        answer so): an error body becomes the status error it names (its ``status``, or a
        numeric ``code``), any other body a ResponseValidationError. Neither is retried but as
        its status says."""
        try:
            payload: Any = _json.loads(raw) if raw else None
        except ValueError:
            payload = None
        if isinstance(payload, Mapping) and (
            "error" in payload
            or "detail" in payload
            or payload.get("object") == "error"
            or payload.get("type") == "error"
        ):
            info = self._error_info(payload)
            status = named_status(info)
            if status is not None and status >= 400:
                return self._error(
                    status,
                    info,
                    meta.request_id,
                    raw.decode("utf-8", "replace"),
                    server_request_id=meta.server_request_id,
                    retry_after=parse_retry_after(response.headers),
                    fallback=f"HTTP {status} in a JSON body answering a stream request",
                )
            error = self._error(
                None,
                info,
                meta.request_id,
                raw.decode("utf-8", "replace"),
                server_request_id=meta.server_request_id,
                fallback="error body answering a stream request",
            )
            error.should_retry = False
            return error
        return ResponseValidationError(
            f"a stream was asked for, but the {self.backend} server answered with a JSON body "
            f"({response.headers.get('Content-Type')}), not an event stream",
            backend=self.name,
            request_id=meta.request_id,
            status_code=response.status,
            body=raw.decode("utf-8", "replace") if raw else None,
            server_request_id=meta.server_request_id,
        )

    def _cut_short(self, meta: Meta, end: str) -> APIConnectionError:
        """A stream whose body ended before its protocol's ``end`` (a dropped connection, or a
        proxy or server that stopped early): what arrived is not the whole answer. Retried
        like any connection failure, which the dispatcher does only before the first chunk."""
        return APIConnectionError(
            f"stream ended before {end}: the answer is incomplete",
            backend=self.name,
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
        )

    def _server_request_id(self, headers: Mapping[str, str]) -> str | None:
        name = self.server_request_id_header
        return None if name is None else headers.get(name)

    def _validation_error(
        self, exc: Exception, body: Any, request_id: str
    ) -> ResponseValidationError:
        return ResponseValidationError(
            f"response does not follow the {self.backend} protocol: {exc}".splitlines()[0][:300],
            backend=self.name,
            request_id=request_id,
            body=body,
        )

    def _parse(self, parse: Callable[[Any, Meta], T], payload: Any, meta: Meta) -> T:
        try:
            return parse(payload, meta)
        except AsyncLLMError:
            raise
        except (
            ValidationError,
            KeyError,
            TypeError,
            IndexError,
            ValueError,
            AttributeError,
            ArithmeticError,  # say, an integer too large for a float
            RecursionError,
        ) as exc:
            shown = payload if isinstance(payload, bytes) else _json.excerpt(payload)
            raise self._validation_error(exc, shown, meta.request_id) from exc

    # -- sending --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    @staticmethod
    def _encode(body: Any) -> bytes:
        try:
            return _json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"request body cannot be sent as JSON: {exc}") from exc

    def _prepare(
        self,
        operation: str,
        options: Mapping[str, Any],
        allowed: frozenset[str] | None,
        body: Any,
        params: Mapping[str, str] | None,
    ) -> Prepared:
        """Everything a call decides before it queues (``extra_body`` merged into the body)."""
        if allowed is None:
            allowed = BODY_KEYS if body is not None else HTTP_KEYS
        model = body.get("model") if type(body) is dict else None
        call = self._call(options, allowed, operation, model if isinstance(model, str) else None)
        extra_body = options.get("extra_body")
        if extra_body is not None:
            if not isinstance(extra_body, Mapping) or not isinstance(body, dict):
                raise ConfigurationError("extra_body must be a mapping, on a call with a JSON body")
            body = merge_body(body, extra_body)
        extra_query = options.get("extra_query")
        if extra_query is not None:
            params = {**(params or {}), **_check_query(extra_query)}
        extra_headers = options.get("extra_headers")
        if extra_headers is not None:
            extra_headers = Headers.masking(check_headers(extra_headers, "extra_headers"))
        content = None if body is None else self._encode(body)
        # tuple.__new__ as in Backend._call
        return _tuple_new(Prepared, (call, content, params, extra_headers, body))

    async def _send(
        self,
        attempt: Attempt,
        prepared: Prepared,
        method: str,
        path: str,
        data: Callable[[], Any] | None,
        *,
        stream: bool = False,
    ) -> Response:
        """Send one attempt; a non-2xx answer becomes its typed error here, naming the request."""
        headers = Headers(self._headers)
        headers[REQUEST_ID_HEADER] = attempt.request_id
        if prepared.extra_headers is not None:
            headers.update(prepared.extra_headers)
        if attempt.headers is not None:
            headers.update(attempt.headers)  # an observer's trace context (traceparent)
        if prepared.content is not None:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = "text/event-stream, application/x-ndjson, application/json"
        url = self._url(path)
        request = Request(
            method,
            url,
            headers,
            prepared.content,
            prepared.params,
            attempt.timeout,
            stream,
            None if data is None else await _build(data),
        )
        try:
            response = await self._transport.send(request)
        except APIError as exc:
            _name_request(exc, method, url)
            raise
        lane = prepared.call.lane
        self._observe(response.status, response.headers, lane)
        dialect = self.rate_dialect
        if dialect is not None and dialect.probe in response.headers:
            windows = read_windows(response.headers, dialect)
            if windows:
                await learn_limits(lane, windows, dialect, attempt.lease, response.status >= 300)
        if response.status >= 300:
            error: APIError
            try:
                if response.status < 400:
                    error = self._redirect_error(response, attempt.request_id, url)
                else:
                    error = await self._status_error(response, attempt.request_id, lane)
            finally:
                response.close()
            _name_request(error, method, url)
            raise error
        return response

    def _keyed(self, prepared: Prepared) -> bool:
        """Whether the call carries an idempotency key its vendor honours (``idempotency_header``),
        which makes a creating call safe to send again."""
        name = self.idempotency_header
        if name is None:
            return False
        wanted = name.lower()
        sources = (self._headers, prepared.extra_headers or {})
        return any(key.lower() == wanted for headers in sources for key in headers)

    def _meta(self, response: Response, request_id: str) -> Meta:
        headers = response.headers
        server_id = self._server_request_id(headers)
        return _tuple_new(Meta, (request_id, server_id, headers, response.status))

    # -- the two ways to call ------------------------------------------------------------------

    def _request(
        self,
        operation: str,
        method: str,
        path: str,
        parse: Callable[[Any, Meta], T],
        options: Mapping[str, Any],
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        raw_body: bool = False,
        data: Callable[[], Any] | None = None,
        allowed: frozenset[str] | None = None,
        creates: bool = False,
    ) -> Coroutine[Any, Any, T]:
        """One JSON exchange through the dispatcher. ``parse`` gets the decoded body (or the raw
        bytes with ``raw_body``) and ``request_id`` is always set on what it returns or raises.
        Bad arguments raise here, before the dispatcher's coroutine (returned, to be awaited)
        exists; a plain function, so a call costs no coroutine frame of its own.

        ``options`` are the call's keyword arguments; ``allowed`` names the keys it may hold
        (default: the HTTP options, and ``extra_body`` when there is a JSON ``body``). ``data``
        builds a non-JSON body (say, a multipart form) anew for every attempt, since a sent form
        is spent; it may be a coroutine function. ``creates``: the call creates something (a
        background response, a batch, a file), so it is retried only while it cannot have been
        applied, unless it carries an idempotency key the vendor honours."""
        prepared = self._prepare(operation, options, allowed, body, params)
        attempt = _Exchange(self, prepared, method, path, parse, raw_body, data)
        return self._run(
            prepared.call,
            operation,
            attempt,
            creates and not self._keyed(prepared),
            prepared.body,
        )

    async def _probe(self, operation: str, path: str, options: Mapping[str, Any]) -> bool:
        """A health or readiness check: True on 2xx, False when the server answers that it is
        not ready (5xx, or a 4xx such as 404 for an unknown model). Never retried: a probe
        reports the state now. Auth errors (401, 403, 407), 429 and connection failures raise."""
        try:
            return await self._request(
                operation,
                "GET",
                path,
                lambda payload, meta: True,
                {**options, "max_retries": 0},
                raw_body=True,
            )
        except APIStatusError as exc:
            if exc.status_code in (401, 403, 407, 429):
                raise
            return False

    def _stream(
        self,
        operation: str,
        method: str,
        path: str,
        decode: Callable[[Response, Meta], AsyncIterator[T]],
        options: Mapping[str, Any],
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        data: Callable[[], Any] | None = None,
        allowed: frozenset[str] | None = None,
        sse: bool = True,
        creates: bool = False,
    ) -> Stream[T]:
        """A streamed exchange: ``decode`` turns the open response into items as they arrive,
        and raises (``_cut_short``) when the body ends before its protocol's end.

        ``sse``: the answer must be an event stream, so a JSON body instead is read here as the
        error it holds (``_not_a_stream``). NDJSON streams, and decoders that read a whole JSON
        answer themselves, pass False.

        Bounded in time: the call's ``timeout`` is the longest wait for the next item (pings and
        comments do not count), its ``deadline`` bounds the whole call, reading included (time the
        caller spends between items counts); either is an ``APITimeoutError``. ``aclose`` ends
        open streams with ``ClientClosedError``. ``creates`` as for ``_request``."""
        prepared = self._prepare(operation, options, allowed, body, params)
        call = prepared.call
        request_id = call.request_id
        url = self._url(path)
        clock = call.lane.dispatcher.clock
        deadline = None if call.deadline is None else _Deadline(clock, call.deadline)
        streams = self._open_streams

        async def open_stream(a: Attempt) -> AsyncIterator[T]:
            guard = _OpenStream(clock, call.timeout, deadline)
            streams.add(guard)
            try:
                guard.begin()
                response = await guard.wait(
                    self._send(a, prepared, method, path, data, stream=True)
                )
                guard.attach(response)
                meta = self._meta(response, request_id)
                stream.http_source = meta  # this attempt's: the one the chunks come from
                if sse and _is_json(response.headers.get("Content-Type")):
                    raw = await guard.wait(guard.read(ERROR_BODY_LIMIT))
                    raise self._not_a_stream(raw, response, meta)
                items = decode(guard, meta)
                while True:
                    try:
                        item = await guard.wait(items.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item
                    guard.begin()
            except APIError as exc:
                _name_request(exc, method, url)
                raise
            finally:
                streams.discard(guard)
                guard.close()

        run = self._run_stream(
            call, operation, open_stream, creates and not self._keyed(prepared), prepared.body
        )
        stream = run if deadline is None else _DeadlineStream(run, deadline)
        return stream

    def _lines(self, response: Response) -> AsyncIterable[bytes]:
        return iter_lines(response.iter_bytes(), self.max_line_bytes, DEFAULT_MAX_NOISE_BYTES)

    def _sse(self, response: Response) -> AsyncIterator[ServerSentEvent]:
        lines = iter_lines(response.iter_bytes(), self.max_line_bytes)
        return iter_sse(lines, DEFAULT_MAX_NOISE_BYTES, self.max_line_bytes)

    def _ndjson(self, response: Response) -> AsyncIterator[Any]:
        lines = iter_lines(response.iter_bytes(), self.max_line_bytes)
        return iter_ndjson(lines, DEFAULT_MAX_NOISE_BYTES)

    # -- lifecycle ----------------------------------------------------------------------------

    async def _close_resources(self) -> None:
        # Our own open streams end now (their readers get ClientClosedError), whatever the
        # transport does with its connections.
        for stream in list(self._open_streams):
            stream.shut()
        if self._owns_transport:
            await self._transport.aclose()
