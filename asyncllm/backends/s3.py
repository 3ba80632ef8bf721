"""S3 and S3-compatible object stores (MinIO, Ceph, moto) through aiobotocore, on the dispatcher.

Every request is a dispatcher job on this instance's lane, so priority, request IDs, tracking,
retries (with botocore's own retries switched off), the breaker and the concurrency limit apply
as to any other backend. Several endpoints are several ``S3`` instances, each with its own lane.

aiobotocore is optional (``pip install 'asyncllm[s3]'``) and imported only when a client is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import logging
import math
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, ClassVar, Literal, TypeVar, Union

from pydantic import SecretStr

from .._config import BreakerConfig, RetryConfig
from .._constants import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
    REQUEST_ID_HEADER,
)
from .._engine._backoff import parse_retry_after
from .._engine._context import _request_id, check_header_value, new_request_id, request_context
from .._engine._dispatcher import Attempt, Dispatcher, Priority
from .._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncLLMError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    status_error,
)
from .._http._backend import BaseClient, _env, _timeout_value, check_int
from ..streaming import Stream

__all__ = [
    "S3",
    "BucketInfo",
    "DeleteError",
    "DeleteResult",
    "ObjectInfo",
    "ObjectSummary",
    "UploadResult",
]

logger = logging.getLogger("asyncllm")

T = TypeVar("T")

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_CHUNK_SIZE = 1 * MiB
DELETE_BATCH_SIZE = 1000  # DeleteObjects takes at most this many keys
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the SigV4 limit
INSTALL_HINT = "S3 needs aiobotocore: pip install 'asyncllm[s3]'"

AddressingStyle = Literal["path", "virtual", "auto"]
PresignMethod = Literal["get", "put", "head", "delete"]
ProgressCallback = Callable[[int, int], Any]
"""Called as ``progress(bytes_done, total)``; may be sync or async."""
ObjectData = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", AsyncIterable[bytes]]

# The request ID of the attempt running in this task, for the X-Request-ID header.
_attempt_request_id: ContextVar[str | None] = ContextVar("asyncllm_s3_request_id", default=None)

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NoSuchVersion", "NotFound"})
_THROTTLED = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
    }
)
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_UNAUTHENTICATED = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)
# Worth another try whatever their status says (RequestTimeout comes as a 400).
_TRANSIENT = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "OperationAborted",
    }
)
# 409s that another try cannot fix.
_FINAL_CONFLICTS = frozenset(
    {"BucketAlreadyExists", "BucketAlreadyOwnedByYou", "BucketNotEmpty", "InvalidBucketState"}
)


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    """One entry of a listing. ``etag`` is without its quotes."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None
    storage_class: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``head_object`` learns about an object without reading it."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None
    content_type: str | None = None
    version_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BucketInfo:
    name: str
    created: datetime | None


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The stored object: for a multipart upload ``etag`` is S3's ``<md5-of-md5s>-<parts>``."""

    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    size: int | None = None
    parts: int = 0


@dataclass(frozen=True, slots=True)
class DeleteError:
    key: str
    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """Keys S3 reports deleted (absent keys count as deleted) and the ones it refused."""

    deleted: tuple[str, ...]
    errors: tuple[DeleteError, ...]


# -- aiobotocore, imported on first use ---------------------------------------------------------


def _require_aiobotocore() -> None:
    if importlib.util.find_spec("aiobotocore") is None:
        raise ConfigurationError(INSTALL_HINT)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc


def _strip_etag(etag: Any) -> str:
    return "" if etag is None else str(etag).strip('"')


# -- errors ---------------------------------------------------------------------------------------


class _Redactor:
    """Removes the configured credentials from any text that leaves this module."""

    def __init__(self, *values: SecretStr | None) -> None:
        self._values = [v.get_secret_value() for v in values if v is not None]

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value:
                text = text.replace(value, "***")
        return text


def _client_error(
    exc: Any, backend: str | None, request_id: str | None, redact: Callable[[str], str]
) -> APIStatusError:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    error: Mapping[str, Any] = response.get("Error") or {}
    meta: Mapping[str, Any] = response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "") or None
    status = meta.get("HTTPStatusCode")
    if not isinstance(status, int) and code is not None and code.isdigit():
        status = int(code)
    headers: Mapping[str, str] = meta.get("HTTPHeaders") or {}
    text = redact(str(error.get("Message") or code or (f"HTTP {status}" if status else "S3 error")))
    message = f"{text} ({code})" if code and not code.isdigit() else text
    kwargs: dict[str, Any] = {
        "backend": backend,
        "request_id": request_id,
        "body": text,
        "server_request_id": meta.get("RequestId") or headers.get("x-amz-request-id") or None,
        "code": code,
        "retry_after": parse_retry_after(headers),
    }
    cls: type[APIStatusError] | None = None
    should_retry: bool | None = None
    if code in _NOT_FOUND:
        cls = NotFoundError
    elif code in _THROTTLED:
        cls, should_retry = RateLimitError, True
    elif code in _DENIED:
        cls = PermissionDeniedError
    elif code in _UNAUTHENTICATED:
        cls = AuthenticationError
    elif code in _FINAL_CONFLICTS:
        cls, should_retry = ConflictError, False
    elif code in _TRANSIENT:
        should_retry = True
    if cls is not None:
        result = cls(message, status_code=status if isinstance(status, int) else None, **kwargs)
    elif isinstance(status, int):
        result = status_error(status, message, **kwargs)
    else:
        result = APIStatusError(message, **kwargs)
    result.should_retry = should_retry
    return result


def map_error(
    exc: BaseException,
    *,
    backend: str | None = None,
    request_id: str | None = None,
    redact: Callable[[str], str] = str,
) -> BaseException:
    """The typed error for what botocore/aiohttp raised; ``exc`` itself if it is not theirs."""
    if isinstance(exc, AsyncLLMError):
        return exc
    errors = _import("botocore.exceptions")
    if isinstance(exc, errors.ClientError):
        return _client_error(exc, backend, request_id, redact)
    if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
        return ConfigurationError(
            "no S3 credentials: pass access_key/secret_key, set S3_ACCESS_KEY/S3_SECRET_KEY "
            "or configure AWS credentials",
            backend=backend,
            request_id=request_id,
        )
    if isinstance(exc, (errors.ParamValidationError, errors.ProfileNotFound)):
        return ConfigurationError(redact(str(exc)), backend=backend, request_id=request_id)
    if isinstance(
        exc,
        (errors.ConnectTimeoutError, errors.ReadTimeoutError, TimeoutError, asyncio.TimeoutError),
    ):
        return APITimeoutError(
            redact(f"S3 request timed out: {exc}"), backend=backend, request_id=request_id
        )
    if isinstance(
        exc,
        (
            errors.HTTPClientError,
            errors.ConnectionError,
            errors.ResponseStreamingError,
            errors.IncompleteReadError,
            errors.FlexibleChecksumError,
            ConnectionError,
        ),
    ):
        return APIConnectionError(
            redact(f"S3 connection failed: {exc}"), backend=backend, request_id=request_id
        )
    aiohttp = importlib.import_module("aiohttp")
    if isinstance(exc, aiohttp.ClientError):
        return APIConnectionError(
            redact(f"S3 connection failed: {exc}"), backend=backend, request_id=request_id
        )
    if isinstance(exc, errors.BotoCoreError):
        return APIError(redact(str(exc)), backend=backend, request_id=request_id)
    return exc


# -- checks ---------------------------------------------------------------------------------------


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ConfigurationError("key must be a non-empty string")
    if len(key.encode("utf-8")) > 1024:
        raise ConfigurationError("key must be at most 1024 bytes of UTF-8")
    return key


def _check_range(byte_range: tuple[int, int | None] | None) -> str | None:
    if byte_range is None:
        return None
    ok = isinstance(byte_range, tuple) and len(byte_range) == 2
    start, end = byte_range if ok else (None, None)
    if (
        not isinstance(start, int)
        or isinstance(start, bool)
        or start < 0
        or not (
            end is None or (isinstance(end, int) and not isinstance(end, bool) and end >= start)
        )
    ):
        raise ConfigurationError(
            "byte_range must be (start, end) with 0 <= start <= end, or (start, None)"
        )
    return f"bytes={start}-" if end is None else f"bytes={start}-{end}"


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError("metadata must be a mapping of str to str")
    for name, value in metadata.items():
        check_header_value("metadata", name)
        check_header_value(name, value)
    return dict(metadata)


def _check_part_size(part_size: int) -> int:
    check_int("part_size", part_size, MIN_PART_SIZE)
    if part_size > MAX_PART_SIZE:
        raise ConfigurationError("part_size must be at most 5 GiB")
    return part_size


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _open_at(path: str, offset: int) -> BinaryIO:
    """The partial download, cut back to ``offset`` bytes (what earlier attempts wrote)."""
    f = open(path, "r+b" if offset else "wb")  # noqa: SIM115 - closed by the caller
    f.truncate(offset)
    f.seek(offset)
    return f


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def _report(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is not None:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have all unwound (their slots are back)."""
    for task in tasks:
        task.cancel()
    await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))


# -- the client -----------------------------------------------------------------------------------


class S3(BaseClient):
    """``S3(endpoint_url=None, *, access_key=None, secret_key=None, region=None, bucket=None)``.

    ``endpoint_url`` (or ``$S3_ENDPOINT``) points at an S3-compatible store; unset means AWS.
    Keys come from the arguments, ``$S3_ACCESS_KEY``/``$S3_SECRET_KEY``, or else botocore's own
    chain (``AWS_*`` variables, ``profile``, instance roles). With a default ``bucket``, pass
    ``None`` as the bucket of any call. One aiobotocore client is made on first use, in the
    running loop, and closed by ``aclose()``.

    Every call takes ``priority``, ``timeout`` (per attempt; for reads of a body, per chunk)
    and ``deadline`` (for the whole call).
    """

    backend: ClassVar[str] = "s3"
    endpoint_env: ClassVar[tuple[str, ...]] = ("S3_ENDPOINT",)
    access_key_env: ClassVar[tuple[str, ...]] = ("S3_ACCESS_KEY",)
    secret_key_env: ClassVar[tuple[str, ...]] = ("S3_SECRET_KEY",)
    region_env: ClassVar[tuple[str, ...]] = ("S3_REGION",)

    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        access_key: str | SecretStr | None = None,
        secret_key: str | SecretStr | None = None,
        session_token: str | SecretStr | None = None,
        region: str | None = None,
        profile: str | None = None,
        addressing_style: AddressingStyle | None = None,
        bucket: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int | None = None,
        retry: RetryConfig | None = None,
        breaker: BreakerConfig | None = None,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_timeout: float | None = None,
        dispatcher: Dispatcher | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        _require_aiobotocore()
        self.endpoint_url = endpoint_url or _env(self.endpoint_env)
        self.region = region or _env(self.region_env)
        self.access_key = _secret("access_key", access_key, self.access_key_env)
        self.secret_key = _secret("secret_key", secret_key, self.secret_key_env)
        self.session_token = _secret("session_token", session_token, ())
        if (self.access_key is None) != (self.secret_key is None):
            raise ConfigurationError("give both access_key and secret_key, or neither")
        if addressing_style is None:
            addressing_style = "auto" if self.endpoint_url is None else "path"
        if addressing_style not in ("path", "virtual", "auto"):
            raise ConfigurationError("addressing_style must be 'path', 'virtual' or 'auto'")
        self.addressing_style: AddressingStyle = addressing_style
        if bucket is not None:
            _check_bucket(bucket)
        self.bucket = bucket
        self.profile = profile
        self.part_size = _check_part_size(part_size)
        check_int("max_response_bytes", max_response_bytes, 1)
        aws = (
            f"https://s3.{self.region}.amazonaws.com" if self.region else "https://s3.amazonaws.com"
        )
        super().__init__(
            api_key=None,
            base_url=self.endpoint_url or aws,
            name=name,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            retry=retry,
            breaker=breaker,
            max_concurrent_requests=max_concurrent_requests,
            queue_size=queue_size,
            queue_timeout=queue_timeout,
            dispatcher=dispatcher,
            max_response_bytes=max_response_bytes,
            close_timeout=close_timeout,
        )
        self._connect_timeout = connect_timeout
        self._redact = _Redactor(self.access_key, self.secret_key, self.session_token)
        self._s3: Any = None
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return (
            f"S3(name={self.name!r}, endpoint_url={self.base_url!r}, "
            f"region={self.region!r}, bucket={self.bucket!r})"
        )

    # -- the aiobotocore client ---------------------------------------------------------------

    async def _client(self) -> Any:
        """The one aiobotocore client, made on first use in the running loop."""
        if self._closed:
            raise ClientClosedError("client is closed", backend=self.name)
        loop = asyncio.get_running_loop()
        if self._s3 is not None and self._loop is loop:
            return self._s3
        if self._loop is not None and self._loop is not loop:
            raise ConfigurationError(
                "this S3 client belongs to another event loop; make one per loop"
            )
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._s3 is None:
                await self._open(loop)
        return self._s3

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        session_mod = _import("aiobotocore.session")
        config_mod = _import("aiobotocore.config")
        options: dict[str, Any] = {
            # The dispatcher retries; botocore must not retry underneath it.
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            # SigV4 for presigned URLs too (botocore would presign with the legacy SigV2).
            "signature_version": "s3v4",
            "s3": {"addressing_style": self.addressing_style},
            "connect_timeout": self._connect_timeout,
            "read_timeout": self.timeout,
            "max_pool_connections": max(10, self.limits.max_concurrent_requests),
        }
        defaults = getattr(config_mod.AioConfig, "OPTION_DEFAULTS", {})
        if "request_checksum_calculation" in defaults:
            # Many S3-compatible stores reject the newer default checksum headers.
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        stack = AsyncExitStack()
        try:
            session = session_mod.AioSession(profile=self.profile)
            _share_data_loader(session)
            client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=_reveal(self.access_key),
                    aws_secret_access_key=_reveal(self.secret_key),
                    aws_session_token=_reveal(self.session_token),
                    config=config_mod.AioConfig(**options),
                )
            )
        except BaseException as exc:
            await stack.aclose()
            mapped = map_error(exc, backend=self.name, redact=self._redact)
            if mapped is exc:
                raise
            raise mapped from None
        client.meta.events.register("before-call.s3", _add_request_id_header)
        self._s3, self._stack, self._loop = client, stack, loop

    async def aclose(self) -> None:
        """Refuse new calls, let running ones finish (up to ``close_timeout``), then close the
        aiobotocore client and its connections. Safe to call twice."""
        try:
            await super().aclose()
        finally:
            stack, self._stack, self._s3 = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    # -- running a job ------------------------------------------------------------------------

    def _bucket(self, bucket: str | None) -> str:
        if bucket is None:
            if self.bucket is None:
                raise ConfigurationError("no bucket given and no default bucket configured")
            return self.bucket
        return _check_bucket(bucket)

    def _mapped(self, exc: BaseException, request_id: str) -> BaseException:
        return map_error(exc, backend=self.name, request_id=request_id, redact=self._redact)

    async def _guard(self, a: Attempt, awaitable: Awaitable[T], timeout: float | None) -> T:
        """Await one botocore call within ``timeout``, its errors typed, our ID on its headers."""
        token = _attempt_request_id.set(a.request_id)
        try:
            if timeout is None:
                return await awaitable
            return await asyncio.wait_for(awaitable, timeout)
        except AsyncLLMError:
            raise
        except asyncio.TimeoutError as exc:
            raise APITimeoutError(
                f"S3 request took longer than {timeout}s",
                backend=self.name,
                request_id=a.request_id,
            ) from exc
        except Exception as exc:
            mapped = self._mapped(exc, a.request_id)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            _attempt_request_id.reset(token)

    async def _run(
        self,
        operation: str,
        call: Callable[[Any], Awaitable[T]],
        *,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> T:
        """One S3 request as a dispatcher job: ``call(client)`` is run once per attempt."""
        deadline = _timeout_value("deadline", deadline)
        per_attempt = self._call_timeout(timeout)
        lane = self._get_lane()
        client = await self._client()

        async def attempt(a: Attempt) -> T:
            return await self._guard(a, call(client), a.timeout)

        return await self.dispatcher.run(
            lane, operation, attempt, priority=priority, timeout=per_attempt, deadline=deadline
        )

    # -- objects --------------------------------------------------------------------------------

    async def put_object(
        self,
        bucket: str | None,
        key: str,
        data: ObjectData,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> UploadResult:
        """Store ``data`` in one request: bytes, a file path (``str`` is always a path) or an
        async iterator of bytes (gathered first, so that a retry can send it again). For large
        files ``upload_file`` is faster and needs less memory."""
        bucket = self._bucket(bucket)
        _check_key(key)
        extra = self._object_params(content_type, metadata)
        body: bytes | None = None
        path = ""
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        elif isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            if not await asyncio.to_thread(os.path.isfile, path):
                raise ConfigurationError(f"no such file: {path!r}")
        elif isinstance(data, AsyncIterable):
            parts: list[bytes] = []
            async for piece in data:
                if not isinstance(piece, (bytes, bytearray, memoryview)):
                    raise ConfigurationError("an async iterator given as data must yield bytes")
                parts.append(bytes(piece))
            body = b"".join(parts)
        else:
            raise ConfigurationError(
                "data must be bytes, a file path or an async iterator of bytes"
            )

        async def call(client: Any) -> UploadResult:
            payload = body if body is not None else await asyncio.to_thread(_read_all, path)
            response = await client.put_object(Bucket=bucket, Key=key, Body=payload, **extra)
            return UploadResult(
                bucket,
                key,
                _strip_etag(response.get("ETag")),
                response.get("VersionId"),
                len(payload),
            )

        return await self._run(
            "put_object", call, priority=priority, timeout=timeout, deadline=deadline
        )

    async def get_object(
        self,
        bucket: str | None,
        key: str,
        byte_range: tuple[int, int | None] | None = None,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """The object's bytes (or the inclusive ``byte_range``). Objects larger than
        ``max_response_bytes`` are refused: read those with ``stream_object``/``download_file``."""
        params = self._get_params(bucket, key, byte_range)
        limit = self.max_response_bytes

        async def call(client: Any) -> bytes:
            response = await client.get_object(**params)
            body = response["Body"]
            try:
                size = response.get("ContentLength")
                if isinstance(size, int) and size > limit:
                    raise ResponseValidationError(
                        f"object of {size} bytes is larger than max_response_bytes={limit}; "
                        "use stream_object or download_file",
                        backend=self.name,
                    )
                data: bytes = await body.read()
                return data
            finally:
                body.close()

        return await self._run(
            "get_object", call, priority=priority, timeout=timeout, deadline=deadline
        )

    def stream_object(
        self,
        bucket: str | None,
        key: str,
        byte_range: tuple[int, int | None] | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[bytes]:
        """The object in chunks of at most ``chunk_size`` as they arrive, holding a slot (and a
        connection) until read to the end or closed: use ``async with``. Retried only until the
        first chunk is out; ``timeout`` limits each wait for data."""
        params = self._get_params(bucket, key, byte_range)
        check_int("chunk_size", chunk_size, 1)
        deadline = _timeout_value("deadline", deadline)
        per_attempt = self._call_timeout(timeout)
        lane = self._get_lane()

        async def open_stream(a: Attempt) -> AsyncIterator[bytes]:
            client = await self._client()
            response = await self._guard(a, client.get_object(**params), a.timeout)
            body = response["Body"]
            try:
                while True:
                    chunk: bytes = await self._guard(a, body.read(chunk_size), a.timeout)
                    if not chunk:
                        return
                    yield chunk
            finally:
                body.close()

        return self.dispatcher.stream(
            lane,
            "stream_object",
            open_stream,
            priority=priority,
            timeout=per_attempt,
            deadline=deadline,
        )

    async def head_object(
        self,
        bucket: str | None,
        key: str,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ObjectInfo:
        """Size, ETag, type and metadata; ``NotFoundError`` (code ``"404"``) if there is none."""
        bucket = self._bucket(bucket)
        _check_key(key)

        async def call(client: Any) -> ObjectInfo:
            r = await client.head_object(Bucket=bucket, Key=key)
            return ObjectInfo(
                key,
                int(r.get("ContentLength") or 0),
                _strip_etag(r.get("ETag")),
                r.get("LastModified"),
                r.get("ContentType"),
                r.get("VersionId"),
                dict(r.get("Metadata") or {}),
            )

        return await self._run(
            "head_object", call, priority=priority, timeout=timeout, deadline=deadline
        )

    async def delete_object(
        self,
        bucket: str | None,
        key: str,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        """Remove one object; deleting an absent key succeeds, as S3 has it."""
        bucket = self._bucket(bucket)
        _check_key(key)

        async def call(client: Any) -> None:
            await client.delete_object(Bucket=bucket, Key=key)

        await self._run(
            "delete_object", call, priority=priority, timeout=timeout, deadline=deadline
        )

    async def delete_objects(
        self,
        bucket: str | None,
        keys: list[str] | tuple[str, ...],
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> DeleteResult:
        """Remove many objects, 1000 keys per request (each request its own job, in order).
        Keys S3 refuses are in ``errors``; they do not raise."""
        bucket = self._bucket(bucket)
        if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
            raise ConfigurationError("keys must be a list of strings")
        for key in keys:
            _check_key(key)
        deleted: list[str] = []
        errors: list[DeleteError] = []
        for start in range(0, len(keys), DELETE_BATCH_SIZE):
            batch = list(keys[start : start + DELETE_BATCH_SIZE])

            async def call(client: Any, batch: list[str] = batch) -> Any:
                return await client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )

            response = await self._run(
                "delete_objects", call, priority=priority, timeout=timeout, deadline=deadline
            )
            refused = [
                DeleteError(str(e.get("Key")), e.get("Code"), e.get("Message"))
                for e in response.get("Errors") or ()
            ]
            gone = {e.key for e in refused}
            deleted.extend(k for k in batch if k not in gone)
            errors.extend(refused)
        return DeleteResult(tuple(deleted), tuple(errors))

    async def list_objects(
        self,
        bucket: str | None,
        prefix: str = "",
        *,
        page_size: int = 1000,
        start_after: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[ObjectSummary]:
        """Every object under ``prefix``, in key order, fetching page after page (each page a
        job, with its own ``timeout`` and ``deadline``) as the iteration needs them."""
        bucket = self._bucket(bucket)
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a string")
        check_int("page_size", page_size, 1)
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Prefix": prefix,
            "MaxKeys": min(page_size, 1000),
        }
        if start_after is not None:
            params["StartAfter"] = _check_key(start_after)
        while True:
            snapshot = dict(params)

            async def call(client: Any, snapshot: dict[str, Any] = snapshot) -> Any:
                return await client.list_objects_v2(**snapshot)

            page = await self._run(
                "list_objects", call, priority=priority, timeout=timeout, deadline=deadline
            )
            for item in page.get("Contents") or ():
                yield ObjectSummary(
                    str(item["Key"]),
                    int(item.get("Size") or 0),
                    _strip_etag(item.get("ETag")),
                    item.get("LastModified"),
                    item.get("StorageClass"),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token
            params.pop("StartAfter", None)

    async def copy_object(
        self,
        bucket: str | None,
        key: str,
        dest_key: str,
        *,
        dest_bucket: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> UploadResult:
        """Copy server-side (up to 5 GiB), into ``dest_bucket`` or the same bucket."""
        bucket = self._bucket(bucket)
        _check_key(key)
        _check_key(dest_key)
        target = bucket if dest_bucket is None else _check_bucket(dest_bucket)

        async def call(client: Any) -> UploadResult:
            r = await client.copy_object(
                Bucket=target, Key=dest_key, CopySource={"Bucket": bucket, "Key": key}
            )
            etag = (r.get("CopyObjectResult") or {}).get("ETag")
            return UploadResult(target, dest_key, _strip_etag(etag), r.get("VersionId"))

        return await self._run(
            "copy_object", call, priority=priority, timeout=timeout, deadline=deadline
        )

    # -- buckets --------------------------------------------------------------------------------

    async def create_bucket(
        self,
        bucket: str | None,
        *,
        exist_ok: bool = False,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        """Create a bucket in this client's region. With ``exist_ok`` a bucket we already own
        is fine; one owned by someone else is always a ``ConflictError``."""
        bucket = self._bucket(bucket)
        params: dict[str, Any] = {"Bucket": bucket}
        if self.region and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}

        async def call(client: Any) -> None:
            await client.create_bucket(**params)

        try:
            await self._run(
                "create_bucket", call, priority=priority, timeout=timeout, deadline=deadline
            )
        except ConflictError as exc:
            if not (exist_ok and exc.code == "BucketAlreadyOwnedByYou"):
                raise

    async def list_buckets(
        self,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> list[BucketInfo]:
        """The buckets these credentials own."""

        async def call(client: Any) -> list[BucketInfo]:
            r = await client.list_buckets()
            return [
                BucketInfo(str(b["Name"]), b.get("CreationDate")) for b in r.get("Buckets") or ()
            ]

        return await self._run(
            "list_buckets", call, priority=priority, timeout=timeout, deadline=deadline
        )

    async def presign(
        self,
        bucket: str | None,
        key: str,
        method: PresignMethod = "get",
        expires_in: int = 3600,
    ) -> str:
        """A URL that lets anyone holding it ``method`` the object for ``expires_in`` seconds.

        Signing happens locally and sends nothing, so it is not a dispatcher job: it never waits
        behind a full lane or fails on an open breaker."""
        bucket = self._bucket(bucket)
        _check_key(key)
        operations = {
            "get": "get_object",
            "put": "put_object",
            "head": "head_object",
            "delete": "delete_object",
        }
        if method not in operations:
            raise ConfigurationError("method must be 'get', 'put', 'head' or 'delete'")
        check_int("expires_in", expires_in, 1)
        if expires_in > MAX_PRESIGN_SECONDS:
            raise ConfigurationError("expires_in must be at most 604800 (7 days)")
        client = await self._client()
        try:
            url: str = await client.generate_presigned_url(
                operations[method],
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_in,
            )
        except Exception as exc:
            mapped = map_error(exc, backend=self.name, redact=self._redact)
            if mapped is exc:
                raise
            raise mapped from None
        return url

    # -- large files ----------------------------------------------------------------------------

    async def upload_file(
        self,
        bucket: str | None,
        key: str,
        path: str | os.PathLike[str],
        *,
        part_size: int | None = None,
        max_concurrency: int | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> UploadResult:
        """Upload a file of any size. Up to ``part_size`` it is one request; larger files go as
        a multipart upload whose parts (each its own job, retried on its own) run concurrently
        within the lane's limit (or ``max_concurrency``) and are read from disk as they go.
        If the upload fails for good or is cancelled, it is aborted: no parts are left behind.
        ``timeout`` is per part attempt, ``deadline`` for the whole upload; all jobs share one
        request ID. ``progress(bytes_done, total)`` follows each finished part."""
        bucket = self._bucket(bucket)
        _check_key(key)
        file = os.fspath(path)
        extra = self._object_params(content_type, metadata)
        size_of_part = self.part_size if part_size is None else _check_part_size(part_size)
        if max_concurrency is not None:
            check_int("max_concurrency", max_concurrency, 1)
        deadline = _timeout_value("deadline", deadline)
        try:
            stat = await asyncio.to_thread(os.stat, file)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {file!r}: {exc.strerror}") from None
        total = stat.st_size
        if total <= size_of_part:
            result = await self.put_object(
                bucket,
                key,
                file,
                content_type=content_type,
                metadata=metadata,
                priority=priority,
                timeout=timeout,
                deadline=deadline,
            )
            await _report(progress, total, total)
            return result
        # Grow the parts if 10 000 of them would not hold the file.
        size_of_part = max(size_of_part, math.ceil(total / MAX_PARTS / MiB) * MiB)
        count = math.ceil(total / size_of_part)
        deadline_at = None if deadline is None else self.dispatcher.clock() + deadline

        def remaining() -> float | None:
            if deadline_at is None:
                return None
            return max(0.001, deadline_at - self.dispatcher.clock())

        with request_context(_request_id.get() or new_request_id()):

            async def create(client: Any) -> str:
                r = await client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
                return str(r["UploadId"])

            upload_id = await self._run(
                "create_multipart_upload",
                create,
                priority=priority,
                timeout=timeout,
                deadline=remaining(),
            )
            try:
                etags = await self._upload_parts(
                    bucket,
                    key,
                    upload_id,
                    file,
                    total,
                    size_of_part,
                    count,
                    max_concurrency,
                    progress,
                    priority,
                    timeout,
                    remaining,
                )

                async def complete(client: Any) -> Any:
                    return await client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={
                            "Parts": [
                                {"ETag": etags[n], "PartNumber": n} for n in range(1, count + 1)
                            ]
                        },
                    )

                r = await self._run(
                    "complete_multipart_upload",
                    complete,
                    priority=priority,
                    timeout=timeout,
                    deadline=remaining(),
                )
            except BaseException:
                await self._abort(bucket, key, upload_id)
                raise
        return UploadResult(
            bucket, key, _strip_etag(r.get("ETag")), r.get("VersionId"), total, count
        )

    async def _upload_parts(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        file: str,
        total: int,
        part_size: int,
        count: int,
        max_concurrency: int | None,
        progress: ProgressCallback | None,
        priority: int,
        timeout: float | None,
        remaining: Callable[[], float | None],
    ) -> dict[int, str]:
        etags: dict[int, str] = {}
        numbers = iter(range(1, count + 1))
        done = 0

        async def worker() -> None:
            nonlocal done
            for number in numbers:
                offset = (number - 1) * part_size
                length = min(part_size, total - offset)

                async def call(
                    client: Any, number: int = number, offset: int = offset, length: int = length
                ) -> str:
                    data = await asyncio.to_thread(_read_range, file, offset, length)
                    r = await client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                    )
                    return str(r["ETag"])

                etags[number] = await self._run(
                    "upload_part", call, priority=priority, timeout=timeout, deadline=remaining()
                )
                done += length
                await _report(progress, done, total)

        width = min(count, max_concurrency or self.limits.max_concurrent_requests)
        tasks = [asyncio.ensure_future(worker()) for _ in range(width)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            await _settle(tasks)
            raise
        return etags

    async def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort a multipart upload so that its parts stop costing storage; never raises."""

        async def call(client: Any) -> None:
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

        async def abort() -> None:
            try:
                await self._run(
                    "abort_multipart_upload",
                    call,
                    priority=Priority.HIGH,
                    timeout=None,
                    deadline=None,
                )
            except ClientClosedError:
                client = self._s3
                if client is not None:
                    await call(client)

        task = asyncio.ensure_future(abort())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "%s: could not abort multipart upload of %s/%s (%s); parts may remain",
                self.name,
                bucket,
                key,
                type(exc).__name__,
                extra={"backend": self.name, "request_id": _request_id.get() or "-"},
            )

    async def download_file(
        self,
        bucket: str | None,
        key: str,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: ProgressCallback | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> int:
        """Stream an object to ``path`` in chunks (never whole in memory) and return its size.

        The data goes to a temporary file beside ``path`` that replaces it only when complete.
        A retry after a dropped connection resumes where it stopped (only if the object is
        unchanged, by its ETag). ``timeout`` limits each wait for data; ``progress(bytes_done,
        total)`` follows each chunk written."""
        bucket = self._bucket(bucket)
        _check_key(key)
        check_int("chunk_size", chunk_size, 1)
        deadline = _timeout_value("deadline", deadline)
        per_attempt = self._call_timeout(timeout)
        target = os.fspath(path)
        partial = f"{target}.{secrets.token_hex(4)}.part"
        lane = self._get_lane()
        client = await self._client()
        state: dict[str, Any] = {"written": 0, "etag": None, "total": None}

        async def attempt(a: Attempt) -> int:
            params: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if state["written"]:
                params["Range"] = f"bytes={state['written']}-"
                params["IfMatch"] = state["etag"]
            response = await self._guard(a, client.get_object(**params), a.timeout)
            body = response["Body"]
            try:
                if state["total"] is None:
                    state["total"] = int(response.get("ContentLength") or 0)
                    state["etag"] = response.get("ETag")
                total: int = state["total"]
                f = await asyncio.to_thread(_open_at, partial, state["written"])
                try:
                    buffer = bytearray()
                    while True:
                        chunk = await self._guard(a, body.read(chunk_size), a.timeout)
                        if chunk:
                            buffer += chunk
                        if buffer and (len(buffer) >= chunk_size or not chunk):
                            await asyncio.to_thread(f.write, buffer)
                            state["written"] += len(buffer)
                            buffer.clear()
                            await _report(progress, state["written"], total)
                        if not chunk:
                            break
                finally:
                    await asyncio.shield(asyncio.to_thread(f.close))
                return total
            finally:
                body.close()

        try:
            size = await self.dispatcher.run(
                lane,
                "download_file",
                attempt,
                priority=priority,
                timeout=per_attempt,
                deadline=deadline,
            )
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_remove, partial))
            raise
        return size

    # -- helpers --------------------------------------------------------------------------------

    def _get_params(
        self, bucket: str | None, key: str, byte_range: tuple[int, int | None] | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": self._bucket(bucket), "Key": _check_key(key)}
        header = _check_range(byte_range)
        if header is not None:
            params["Range"] = header
        return params

    @staticmethod
    def _object_params(
        content_type: str | None, metadata: Mapping[str, str] | None
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if content_type is not None:
            extra["ContentType"] = check_header_value("content_type", content_type)
        meta = _check_metadata(metadata)
        if meta:
            extra["Metadata"] = meta
        return extra


_shared_loader: list[Any] = []


def _share_data_loader(session: Any) -> None:
    """Let every client use the first one's parsed service models (~0.2 s to parse each time)."""
    if _shared_loader:
        session.register_component("data_loader", _shared_loader[0])
    else:
        _shared_loader.append(session.get_component("data_loader"))


def _add_request_id_header(params: dict[str, Any], **_: Any) -> None:
    request_id = _attempt_request_id.get()
    if request_id is not None:
        params.setdefault("headers", {})[REQUEST_ID_HEADER] = request_id


def _check_bucket(bucket: Any) -> str:
    if not isinstance(bucket, str) or not 3 <= len(bucket) <= 255:
        raise ConfigurationError("bucket must be a string of 3 to 255 characters")
    if "/" in bucket or any(c.isspace() for c in bucket):
        raise ConfigurationError("bucket must not contain '/' or whitespace")
    return bucket


def _secret(name: str, value: str | SecretStr | None, env: tuple[str, ...]) -> SecretStr | None:
    if value is None:
        value = _env(env)
    if value is None:
        return None
    if isinstance(value, str):
        return SecretStr(check_header_value(name, value))
    if isinstance(value, SecretStr):
        return value
    raise ConfigurationError(f"{name} must be a str or SecretStr")


def _reveal(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
