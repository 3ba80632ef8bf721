"""What every backend shares: configuration, the lane in the dispatcher, sending and error reading.

A backend subclass says only what is particular to its wire format: base URL and environment
variables, auth headers, how bodies are built and how answers and errors are read.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import SecretStr, ValidationError

from .._config import BreakerConfig, LimitsConfig, RetryConfig, check_timeout, finite_number
from .._constants import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
    REQUEST_ID_HEADER,
)
from .._engine._backoff import parse_retry_after
from .._engine._context import _request_id, check_header_value, check_headers, new_request_id
from .._engine._dispatcher import Attempt, Dispatcher, Lane, Priority, get_dispatcher
from .._exceptions import (
    APIError,
    APIStatusError,
    AsyncLLMError,
    ClientClosedError,
    ConfigurationError,
    ResponseValidationError,
    status_error,
)
from ..streaming import Stream
from . import _json
from ._transport import (
    AiohttpTransport,
    Request,
    Response,
    ServerSentEvent,
    Transport,
    iter_lines,
    iter_ndjson,
    iter_sse,
)

T = TypeVar("T")

ERROR_BODY_LIMIT = 64 * 1024


class Meta(NamedTuple):
    """What a parser may need besides the body: our request ID and the response headers."""

    request_id: str
    server_request_id: str | None
    headers: Mapping[str, str]
    status: int


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


def _timeout_value(name: str, value: float | None) -> float | None:
    if value is not None and value == math.inf:
        return None
    return check_timeout(name, value)


class BaseClient:
    """The shared part of every client. Create once, use from many tasks, ``await aclose()``.

    ``model`` sets the model used by calls that do not name one.

    Every call takes ``priority`` (lower first), ``timeout`` (seconds per attempt; ``math.inf``
    for none) and ``deadline`` (seconds for the whole call, retries and queueing included).
    """

    backend: ClassVar[str] = "base"
    default_base_url: ClassVar[str | None] = None
    base_url_env: ClassVar[tuple[str, ...]] = ()
    api_key_env: ClassVar[tuple[str, ...]] = ()
    server_request_id_header: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        name: str | None = None,
        model: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int | None = None,
        retry: RetryConfig | None = None,
        breaker: BreakerConfig | None = None,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_timeout: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        dispatcher: Dispatcher | None = None,
        transport: Transport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        key = api_key if api_key is not None else _env(self.api_key_env)
        if isinstance(key, str):
            key = SecretStr(key)
        if key is not None:
            if not isinstance(key, SecretStr):
                raise ConfigurationError("api_key must be a str or a pydantic SecretStr")
            check_header_value("api_key", key.get_secret_value())
        self.api_key: SecretStr | None = key
        url = base_url or _env(self.base_url_env) or self.default_base_url
        if url is None:
            raise ConfigurationError(
                f"{type(self).__name__} needs base_url"
                + (f" (or ${self.base_url_env[0]})" if self.base_url_env else "")
            )
        self.base_url = _check_base_url(url)
        self.name = name or self.backend
        self.model = None if model is None else check_model(model)
        self.timeout = _timeout_value("timeout", timeout)
        retry = retry or RetryConfig()
        if max_retries is not None:
            retry = dataclasses.replace(retry, max_retries=max_retries)
        self.retry = retry
        self.breaker = breaker or BreakerConfig()
        self.limits = LimitsConfig(max_concurrent_requests, queue_size, queue_timeout)
        self.max_response_bytes = max_response_bytes
        self.max_line_bytes = max_line_bytes
        self.close_timeout = close_timeout
        self._dispatcher = dispatcher
        self._owns_transport = transport is None
        self._transport = transport or AiohttpTransport(connect_timeout=connect_timeout)
        headers = {"Accept": "application/json", **self._auth_headers()}
        if default_headers is not None:
            headers.update(check_headers(default_headers, "default_headers"))
        self._headers = headers
        self._lane: Lane | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    def _model(self, model: str | None) -> str:
        """The call's model, or the one the client was made with."""
        if model is None:
            if self.model is None:
                raise ConfigurationError(
                    f"give model=, or make the client with {type(self).__name__}(model=...)"
                )
            return self.model
        return check_model(model)

    # -- hooks for backends -------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        """Headers that authenticate; the default is a Bearer token when a key is set."""
        if self.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}

    def _error_details(self, payload: Any) -> tuple[str | None, str | None, str | None]:
        """(message, type, code) from an error body; override for the vendor's error shape."""
        if isinstance(payload, Mapping):
            error = payload.get("error", payload)
            if isinstance(error, Mapping):
                message = error.get("message") or error.get("detail")
                etype = error.get("type") or error.get("error_type") or error.get("status")
                code = error.get("code")
                return (
                    None if message is None else str(message),
                    None if etype is None else str(etype),
                    None if code is None else str(code),
                )
            if isinstance(error, str):
                etype = payload.get("error_type") or payload.get("type")
                return error, None if etype is None else str(etype), None
            detail = payload.get("detail") or payload.get("message")
            if detail is not None:
                return str(detail), None, None
        return None, None, None

    def _observe(self, status: int, headers: Mapping[str, str], lane: Lane) -> None:
        """Called on every response (say, to record rate-limit headers in ``lane.info``)."""

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher this client runs on: the one given, or the running loop's shared one."""
        return self._dispatcher if self._dispatcher is not None else get_dispatcher()

    def _get_lane(self) -> Lane:
        if self._closed:
            raise ClientClosedError("client is closed", backend=self.name)
        dispatcher = self.dispatcher
        lane = self._lane
        if lane is None or lane.dispatcher is not dispatcher or lane.closed:
            lane = self._lane = dispatcher.lane(
                self.name, limits=self.limits, retry=self.retry, breaker=self.breaker
            )
        return lane

    def _headers_for(self, request_id: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(self._headers)
        headers[REQUEST_ID_HEADER] = request_id
        if extra is not None:
            headers.update(check_headers(extra, "extra_headers"))
        return headers

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    @staticmethod
    def _encode(body: Any) -> bytes:
        try:
            return _json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"request body cannot be sent as JSON: {exc}") from exc

    def _call_timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else _timeout_value("timeout", timeout)

    async def _status_error(self, response: Response, request_id: str) -> APIStatusError:
        try:
            raw = await response.read(ERROR_BODY_LIMIT)
        except APIError:
            raw = b""
        payload: Any = None
        try:
            payload = _json.loads(raw) if raw else None
        except ValueError:
            payload = None
        message, etype, code = self._error_details(payload)
        headers = response.headers
        error = status_error(
            response.status,
            message or f"HTTP {response.status}",
            backend=self.name,
            request_id=request_id,
            body=raw.decode("utf-8", "replace") if raw else None,
            server_request_id=self._server_request_id(headers),
            code=code,
            error_type=etype,
            retry_after=parse_retry_after(headers),
        )
        hint = headers.get("x-should-retry")
        if hint in ("true", "false"):
            error.should_retry = hint == "true"
        return error

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

    async def _send(
        self,
        attempt: Attempt,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, str] | None,
        extra_headers: Mapping[str, str] | None,
        *,
        stream: bool = False,
        data: Any = None,
        lane: Lane,
    ) -> Response:
        """Send one attempt; a non-2xx answer becomes its typed error here."""
        headers = self._headers_for(attempt.request_id, extra_headers)
        if content is not None:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = "text/event-stream, application/x-ndjson, application/json"
        response = await self._transport.send(
            Request(
                method,
                self._url(path),
                headers,
                content,
                params,
                attempt.timeout,
                stream,
                data,
            )
        )
        self._observe(response.status, response.headers, lane)
        if response.status >= 400:
            try:
                raise await self._status_error(response, attempt.request_id)
            finally:
                response.close()
        return response

    # -- the two ways to call ------------------------------------------------------------------

    async def _request(
        self,
        operation: str,
        method: str,
        path: str,
        parse: Callable[[Any, Meta], T],
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        raw_body: bool = False,
        data: Callable[[], Any] | None = None,
        max_retries: int | None = None,
    ) -> T:
        """One JSON exchange through the dispatcher. ``parse`` gets the decoded body (or the raw
        bytes with ``raw_body``) and ``request_id`` is always set on what it returns or raises.

        ``data`` builds a non-JSON body (say, a multipart form) anew for every attempt, since a
        sent form is spent; it may be a coroutine function."""
        content = None if body is None else self._encode(body)
        deadline = _timeout_value("deadline", deadline)
        per_attempt = self._call_timeout(timeout)
        request_id = _request_id.get() or new_request_id()
        lane = self._get_lane()

        async def attempt(a: Attempt) -> T:
            response = await self._send(
                a,
                method,
                path,
                content,
                params,
                extra_headers,
                lane=lane,
                data=None if data is None else await _build(data),
            )
            try:
                raw = await response.read(self.max_response_bytes)
            finally:
                response.close()
            meta = Meta(
                request_id,
                self._server_request_id(response.headers),
                response.headers,
                response.status,
            )
            if raw_body:
                return self._parse(parse, raw, meta)
            try:
                payload = _json.loads(raw) if raw else None
            except ValueError as exc:
                raise self._validation_error(exc, raw, request_id) from exc
            return self._parse(parse, payload, meta)

        return await lane.dispatcher.run(
            lane,
            operation,
            attempt,
            priority=priority,
            timeout=per_attempt,
            deadline=deadline,
            request_id=request_id,
            max_retries=max_retries,
        )

    async def _probe(
        self,
        operation: str,
        path: str,
        *,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> bool:
        """A health or readiness check: True on 2xx, False when the server answers that it is
        not ready (5xx, or a 4xx such as 404 for an unknown model). Never retried: a probe
        reports the state now. Auth errors (401, 403, 407), 429 and connection failures raise."""
        try:
            return await self._request(
                operation,
                "GET",
                path,
                lambda payload, meta: True,
                priority=priority,
                timeout=timeout,
                deadline=deadline,
                raw_body=True,
                max_retries=0,
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
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        data: Callable[[], Any] | None = None,
    ) -> Stream[T]:
        """A streamed exchange: ``decode`` turns the open response into items as they arrive."""
        content = None if body is None else self._encode(body)
        deadline = _timeout_value("deadline", deadline)
        per_attempt = self._call_timeout(timeout)
        request_id = _request_id.get() or new_request_id()
        lane = self._get_lane()

        async def open_stream(a: Attempt) -> AsyncIterator[T]:
            response = await self._send(
                a,
                method,
                path,
                content,
                params,
                extra_headers,
                stream=True,
                lane=lane,
                data=None if data is None else await _build(data),
            )
            meta = Meta(
                request_id,
                self._server_request_id(response.headers),
                response.headers,
                response.status,
            )
            try:
                async for item in decode(response, meta):
                    yield item
            finally:
                response.close()

        return lane.dispatcher.stream(
            lane,
            operation,
            open_stream,
            priority=priority,
            timeout=per_attempt,
            deadline=deadline,
            request_id=request_id,
        )

    def _lines(self, response: Response) -> AsyncIterator[bytes]:
        return iter_lines(response.iter_bytes(), self.max_line_bytes)

    def _sse(self, response: Response) -> AsyncIterator[ServerSentEvent]:
        return iter_sse(self._lines(response))

    def _ndjson(self, response: Response) -> AsyncIterator[Any]:
        return iter_ndjson(self._lines(response))

    # -- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Refuse new calls, fail queued ones with ClientClosedError, let running ones finish
        (up to ``close_timeout``), then close the connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        lane, self._lane = self._lane, None
        try:
            if lane is not None:
                await lane.aclose(self.close_timeout)
        finally:
            if self._owns_transport:
                await self._transport.aclose()

    async def __aenter__(self: _C) -> _C:
        if self._closed:
            raise ClientClosedError("a closed client cannot be reopened", backend=self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_C = TypeVar("_C", bound=BaseClient)


def check_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("model must be a non-empty string")
    return model


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> None:
    if value is None:
        return
    if not finite_number(value):
        raise ConfigurationError(f"{name} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigurationError(f"{name} must be between {low} and {high}")


def check_int(name: str, value: Any, low: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int")
    if low is not None and value < low:
        raise ConfigurationError(f"{name} must be >= {low}")


def check_stop(stop: Any) -> list[str] | str | None:
    if stop is None or isinstance(stop, str):
        return stop
    if isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise ConfigurationError("stop must be a string or a list of strings")


def merge_extra(body: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra_body:
        if not isinstance(extra_body, Mapping):
            raise ConfigurationError("extra_body must be a mapping")
        body.update(extra_body)
    return body


def path_segment(name: str, value: str) -> str:
    """``value`` as one URL path segment: %-quoted, and never '.' or '..', which a client resolves
    against the path before sending (so ``/models/../infer`` would go to ``/infer``)."""
    if value in (".", ".."):
        raise ConfigurationError(f"{name} {value!r} cannot be a URL path segment")
    try:
        return quote(value, safe="")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise ConfigurationError(f"{name} is not valid Unicode text") from exc
