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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, ClassVar, Literal, TypeGuard, TypeVar, Union

from pydantic import SecretStr
from typing_extensions import TypedDict, Unpack

from .._config import check_timeout
from .._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    REQUEST_ID_HEADER,
)
from .._engine._backend import Backend, Call
from .._engine._backoff import parse_retry_after
from .._engine._context import _request_id, check_header_value
from .._engine._dispatcher import Attempt, Priority
from .._engine._fanout import fan_out
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
from .._http._backend import _check_base_url, _env
from .._options import CALL_KEYS, CallOptions, EngineClientOptions, keys_of
from .._validate import check_int, given
from ..streaming import Stream

__all__ = [
    "S3",
    "BucketInfo",
    "DeleteError",
    "DeleteResult",
    "GetOptions",
    "GetParams",
    "ObjectInfo",
    "ObjectSummary",
    "StreamObjectOptions",
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
            _import("aiohttp").ClientError,
        ),
    ):
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


def _is_offset(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_range(byte_range: tuple[int, int | None] | None) -> str | None:
    if byte_range is None:
        return None
    ok = isinstance(byte_range, tuple) and len(byte_range) == 2
    start, end = byte_range if ok else (None, None)
    if not _is_offset(start) or not (end is None or (_is_offset(end) and end >= start)):
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
    if part_size is None:
        raise ConfigurationError("part_size must be an int")
    check_int("part_size", part_size, MIN_PART_SIZE)
    if part_size > MAX_PART_SIZE:
        raise ConfigurationError("part_size must be at most 5 GiB")
    return part_size


def _read(path: str, offset: int = 0, length: int = -1) -> bytes:
    """``length`` bytes of the file from ``offset``; by default all of it."""
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


async def _blocks(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytearray]:
    """``chunks`` gathered into blocks of at least ``size`` bytes (the last may hold fewer)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) >= size:
            yield buffer
            buffer = bytearray()
    if buffer:
        yield buffer


async def _report(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is not None:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result


# -- per-call keyword arguments -------------------------------------------------------------------


class GetParams(TypedDict, total=False):
    """What ``get_object`` and ``stream_object`` share. ``byte_range``: ``(start, end)``, both
    inclusive, or ``(start, None)`` for the rest of the object; unset (or None) for all of it."""

    byte_range: tuple[int, int | None] | None


class GetOptions(GetParams, CallOptions, total=False):
    """``get_object``'s keyword arguments: its parameters and the call options."""


class StreamObjectOptions(GetOptions, total=False):
    """``stream_object``'s keyword arguments: ``GetOptions`` plus ``chunk_size``, the most bytes
    one chunk holds (1 MiB unless given)."""

    chunk_size: int


GET_KEYS = keys_of(GetOptions)
STREAM_OBJECT_KEYS = keys_of(StreamObjectOptions)


# -- the client -----------------------------------------------------------------------------------


class S3(Backend):
    """``S3(*, endpoint_url=None, access_key=None, secret_key=None, region=None, bucket=None)``.

    ``endpoint_url`` (or ``$S3_ENDPOINT``) points at an S3-compatible store; unset means AWS.
    Keys come from the arguments, ``$S3_ACCESS_KEY``/``$S3_SECRET_KEY``, or else botocore's own
    chain (``AWS_*`` variables, ``profile``, instance roles). With a default ``bucket``, pass
    ``None`` as the bucket of any call. ``part_size`` is the default part of ``upload_file``;
    ``connect_timeout`` limits each connection attempt; ``get_object`` refuses objects larger
    than ``max_response_bytes``. The other keyword arguments are every client's
    (``EngineClientOptions``: ``name``, ``timeout``, ``retry``, ``max_concurrent_requests``...).

    One aiobotocore client is made on first use, in the running loop (so one ``S3`` serves one
    event loop), and closed by ``aclose()``. Every call takes the ``CallOptions``: ``priority``,
    ``timeout`` (per attempt; for reads of a body, per wait for data), ``deadline`` (for the whole
    call) and ``max_retries``.
    """

    backend: ClassVar[str] = "s3"
    endpoint_env: ClassVar[tuple[str, ...]] = ("S3_ENDPOINT",)
    access_key_env: ClassVar[tuple[str, ...]] = ("S3_ACCESS_KEY",)
    secret_key_env: ClassVar[tuple[str, ...]] = ("S3_SECRET_KEY",)
    region_env: ClassVar[tuple[str, ...]] = ("S3_REGION",)

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        access_key: str | SecretStr | None = None,
        secret_key: str | SecretStr | None = None,
        session_token: str | SecretStr | None = None,
        region: str | None = None,
        profile: str | None = None,
        addressing_style: AddressingStyle | None = None,
        bucket: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        **options: Unpack[EngineClientOptions],
    ) -> None:
        _require_aiobotocore()
        url = endpoint_url or _env(self.endpoint_env)
        self.endpoint_url: str | None = None if url is None else _check_base_url(url)
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
        self.connect_timeout = check_timeout("connect_timeout", connect_timeout)
        check_int("max_response_bytes", max_response_bytes, 1)
        self.max_response_bytes = max_response_bytes
        super().__init__(**options)
        self._redact = _Redactor(self.access_key, self.secret_key, self.session_token)
        # The aiobotocore client and what closes it; a client from with_options() uses its root's.
        self._s3: Any = None
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:
        endpoint = self.endpoint_url or (
            f"https://s3.{self.region}.amazonaws.com" if self.region else "https://s3.amazonaws.com"
        )
        return (
            f"S3(name={self.name!r}, endpoint_url={endpoint!r}, "
            f"region={self.region!r}, bucket={self.bucket!r})"
        )

    # -- the aiobotocore client ---------------------------------------------------------------

    @property
    def _owner(self) -> S3:
        """The client that owns the lane and the aiobotocore client (``self`` but for a client
        from ``with_options``)."""
        root = self._root
        assert isinstance(root, S3)
        return root

    async def _client(self) -> Any:
        """The one aiobotocore client, made on first use in the running loop.

        It belongs to that loop: the engine would give another loop a lane of its own, but the
        connections would still be the first loop's, so another loop is refused here."""
        owner = self._owner
        if owner._closed:
            raise ClientClosedError("client is closed", backend=self.name)
        loop = asyncio.get_running_loop()
        if owner._s3 is not None and owner._loop is loop:
            return owner._s3
        if owner._loop is not None and owner._loop is not loop:
            raise ConfigurationError(
                "this S3 client belongs to another event loop; make one per loop"
            )
        if owner._opening is None:
            owner._opening = asyncio.Lock()
        async with owner._opening:
            if owner._s3 is None:
                await owner._open(loop)
        return owner._s3

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        session_mod = _import("aiobotocore.session")
        config_mod = _import("aiobotocore.config")
        config: dict[str, Any] = {
            # The dispatcher retries; botocore must not retry underneath it.
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            # SigV4 for presigned URLs too (botocore would presign with the legacy SigV2).
            "signature_version": "s3v4",
            "s3": {"addressing_style": self.addressing_style},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.timeout,
            "max_pool_connections": max(10, self.limits.max_concurrent_requests),
        }
        defaults = getattr(config_mod.AioConfig, "OPTION_DEFAULTS", {})
        if "request_checksum_calculation" in defaults:
            # Many S3-compatible stores reject the newer default checksum headers.
            config["request_checksum_calculation"] = "when_required"
            config["response_checksum_validation"] = "when_required"
        stack = AsyncExitStack()
        with self._typed_errors():
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
                    config=config_mod.AioConfig(**config),
                )
            )
        client.meta.events.register("before-call.s3", _add_request_id_header)
        self._s3, self._stack, self._loop = client, stack, loop

    async def _close_resources(self) -> None:
        """Close the aiobotocore client and its connections, after the lane."""
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

    @contextlib.contextmanager
    def _typed_errors(self) -> Iterator[None]:
        """botocore's errors raised as ours, for the work done outside a job (a job's go through
        ``_guard``)."""
        try:
            yield
        except Exception as exc:
            mapped = map_error(exc, backend=self.name, redact=self._redact)
            if mapped is exc:
                raise
            raise mapped from None

    async def _guard(self, a: Attempt, awaitable: Awaitable[T]) -> T:
        """Await one botocore call within the attempt's time limit, its errors typed. The
        attempt's request ID is the current one meanwhile, so the ``before-call`` hook puts it on
        the request's headers (a call made outside ``request_context`` has none of its own)."""
        token = _request_id.set(a.request_id)
        try:
            if a.timeout is None:
                return await awaitable
            return await asyncio.wait_for(awaitable, a.timeout)
        except AsyncLLMError:
            raise
        except asyncio.TimeoutError as exc:
            raise APITimeoutError(
                f"S3 request took longer than {a.timeout}s",
                backend=self.name,
                request_id=a.request_id,
            ) from exc
        except Exception as exc:
            mapped = map_error(exc, backend=self.name, request_id=a.request_id, redact=self._redact)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            _request_id.reset(token)

    async def _chunks(self, a: Attempt, body: Any, size: int) -> AsyncIterator[bytes]:
        """An object's data as it arrives, at most ``size`` bytes a chunk, each wait for data
        within the attempt's time limit."""
        while chunk := await self._guard(a, body.read(size)):
            yield chunk

    async def _send(self, call: Call, operation: str, request: Callable[[Any], Awaitable[T]]) -> T:
        """One S3 request as a dispatcher job: ``request(client)`` runs once per attempt."""
        client = await self._client()

        async def attempt(a: Attempt) -> T:
            return await self._guard(a, request(client))

        return await self._run(call, operation, attempt)

    async def _api(
        self, call: Call, operation: str, /, *, method: str | None = None, **params: Any
    ) -> Any:
        """The botocore request ``method`` (by default the ``operation`` it is tracked as) with
        ``params``, as a dispatcher job; its response as botocore parsed it."""
        return await self._send(
            call, operation, lambda client: getattr(client, method or operation)(**params)
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
        **options: Unpack[CallOptions],
    ) -> UploadResult:
        """Store ``data`` in one request: bytes, a file path (``str`` is always a path) or an
        async iterator of bytes (gathered first, so that a retry can send it again). For large
        files ``upload_file`` is faster and needs less memory. ``content_type`` and
        ``metadata`` (str to str, sent as ``x-amz-meta-*``) are stored with the object."""
        call = self._call(options, CALL_KEYS, "put_object")
        bucket = self._bucket(bucket)
        _check_key(key)
        extra = _object_params(content_type, metadata)
        body: bytes | str
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        elif isinstance(data, (str, os.PathLike)):
            body = os.fspath(data)
            if not await asyncio.to_thread(os.path.isfile, body):
                raise ConfigurationError(f"no such file: {body!r}")
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
        return await self._put(call, bucket, key, body, extra)

    async def _put(
        self, call: Call, bucket: str, key: str, body: bytes | str, extra: dict[str, Any]
    ) -> UploadResult:
        """PutObject of ``body``: bytes, or the path of a file read afresh on every attempt."""

        async def request(client: Any) -> UploadResult:
            payload = body if isinstance(body, bytes) else await asyncio.to_thread(_read, body)
            response = await client.put_object(Bucket=bucket, Key=key, Body=payload, **extra)
            return UploadResult(
                bucket,
                key,
                _strip_etag(response.get("ETag")),
                response.get("VersionId"),
                len(payload),
            )

        return await self._send(call, "put_object", request)

    async def get_object(
        self, bucket: str | None, key: str, **options: Unpack[GetOptions]
    ) -> bytes:
        """The object's bytes (or those of ``byte_range``). Objects larger than
        ``max_response_bytes`` are refused: read those with ``stream_object``/``download_file``."""
        call = self._call(options, GET_KEYS, "get_object")
        params = self._get_params(bucket, key, options.get("byte_range"))
        limit = self.max_response_bytes

        async def request(client: Any) -> bytes:
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

        return await self._send(call, "get_object", request)

    def stream_object(
        self, bucket: str | None, key: str, **options: Unpack[StreamObjectOptions]
    ) -> Stream[bytes]:
        """The object (or ``byte_range`` of it) in chunks of at most ``chunk_size`` as they
        arrive, holding a slot (and a connection) until read to the end or closed: use
        ``async with``. Retried only until the first chunk is out; ``timeout`` limits each wait
        for data."""
        call = self._call(options, STREAM_OBJECT_KEYS, "stream_object")
        params = self._get_params(bucket, key, options.get("byte_range"))
        chunk_size = options.get("chunk_size", DEFAULT_CHUNK_SIZE)
        check_int("chunk_size", chunk_size, 1)

        async def open_stream(a: Attempt) -> AsyncIterator[bytes]:
            client = await self._client()
            response = await self._guard(a, client.get_object(**params))
            body = response["Body"]
            try:
                async for chunk in self._chunks(a, body, chunk_size):
                    yield chunk
            finally:
                body.close()

        return self._run_stream(call, "stream_object", open_stream)

    async def head_object(
        self, bucket: str | None, key: str, **options: Unpack[CallOptions]
    ) -> ObjectInfo:
        """Size, ETag, type and metadata; ``NotFoundError`` (code ``"404"``) if there is none."""
        call = self._call(options, CALL_KEYS, "head_object")
        r = await self._api(call, "head_object", **self._where(bucket, key))
        return ObjectInfo(
            key,
            int(r.get("ContentLength") or 0),
            _strip_etag(r.get("ETag")),
            r.get("LastModified"),
            r.get("ContentType"),
            r.get("VersionId"),
            dict(r.get("Metadata") or {}),
        )

    async def delete_object(
        self, bucket: str | None, key: str, **options: Unpack[CallOptions]
    ) -> None:
        """Remove one object; deleting an absent key succeeds, as S3 has it."""
        call = self._call(options, CALL_KEYS, "delete_object")
        await self._api(call, "delete_object", **self._where(bucket, key))

    async def delete_objects(
        self,
        bucket: str | None,
        keys: list[str] | tuple[str, ...],
        **options: Unpack[CallOptions],
    ) -> DeleteResult:
        """Remove many objects, 1000 keys per request (each request its own job with its own
        ``timeout`` and ``deadline``, in order). Keys S3 refuses are in ``errors``; they do not
        raise. An empty list sends nothing."""
        call = self._call(options, CALL_KEYS, "delete_objects")
        bucket = self._bucket(bucket)
        if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
            raise ConfigurationError("keys must be a list of strings")
        for key in keys:
            _check_key(key)
        deleted: list[str] = []
        errors: list[DeleteError] = []
        for start in range(0, len(keys), DELETE_BATCH_SIZE):
            batch = keys[start : start + DELETE_BATCH_SIZE]
            response = await self._api(
                call,
                "delete_objects",
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            refused = [
                DeleteError(str(e.get("Key")), e.get("Code"), e.get("Message"))
                for e in response.get("Errors") or ()
            ]
            gone = {e.key for e in refused}
            deleted.extend(k for k in batch if k not in gone)
            errors.extend(refused)
        return DeleteResult(tuple(deleted), tuple(errors))

    def list_objects(
        self,
        bucket: str | None,
        prefix: str = "",
        *,
        page_size: int = 1000,
        start_after: str | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[ObjectSummary]:
        """Every object under ``prefix`` (after the key ``start_after``, if given), in key order,
        fetching pages of up to ``page_size`` as the iteration needs them. Each page is a job
        with its own ``timeout`` and ``deadline``; all share one request ID. The arguments are
        checked here, the first page is fetched by the first iteration."""
        call = self._call(options, CALL_KEYS, "list_objects")
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix must be a string")
        check_int("page_size", page_size, 1)
        params: dict[str, Any] = {
            "Bucket": self._bucket(bucket),
            "Prefix": prefix,
            "MaxKeys": min(page_size, 1000),
        }
        if start_after is not None:
            params["StartAfter"] = _check_key(start_after)
        return self._list_pages(call, params)

    async def _list_pages(self, call: Call, params: dict[str, Any]) -> AsyncIterator[ObjectSummary]:
        while True:
            page = await self._api(call, "list_objects", method="list_objects_v2", **params)
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
        **options: Unpack[CallOptions],
    ) -> UploadResult:
        """Copy server-side (up to 5 GiB), into ``dest_bucket`` or the same bucket."""
        call = self._call(options, CALL_KEYS, "copy_object")
        bucket = self._bucket(bucket)
        _check_key(key)
        _check_key(dest_key)
        target = bucket if dest_bucket is None else _check_bucket(dest_bucket)

        r = await self._api(
            call,
            "copy_object",
            Bucket=target,
            Key=dest_key,
            CopySource={"Bucket": bucket, "Key": key},
        )
        etag = (r.get("CopyObjectResult") or {}).get("ETag")
        return UploadResult(target, dest_key, _strip_etag(etag), r.get("VersionId"))

    # -- buckets --------------------------------------------------------------------------------

    async def create_bucket(
        self, bucket: str | None, *, exist_ok: bool = False, **options: Unpack[CallOptions]
    ) -> None:
        """Create a bucket in this client's region. With ``exist_ok`` a bucket we already own
        is fine; one owned by someone else is always a ``ConflictError``."""
        call = self._call(options, CALL_KEYS, "create_bucket")
        params: dict[str, Any] = {"Bucket": self._bucket(bucket)}
        if self.region and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}

        try:
            await self._api(call, "create_bucket", **params)
        except ConflictError as exc:
            if not (exist_ok and exc.code == "BucketAlreadyOwnedByYou"):
                raise

    async def list_buckets(self, **options: Unpack[CallOptions]) -> list[BucketInfo]:
        """The buckets these credentials own."""
        call = self._call(options, CALL_KEYS, "list_buckets")

        r = await self._api(call, "list_buckets")
        return [BucketInfo(str(b["Name"]), b.get("CreationDate")) for b in r.get("Buckets") or ()]

    async def presign(
        self,
        bucket: str | None,
        key: str,
        method: PresignMethod = "get",
        expires_in: int = 3600,
    ) -> str:
        """A URL that lets anyone holding it ``method`` the object for ``expires_in`` seconds.

        Signing happens locally and sends nothing, so it is not a dispatcher job and takes no
        call options: it never waits behind a full lane or fails on an open breaker."""
        where = self._where(bucket, key)
        if method not in ("get", "put", "head", "delete"):
            raise ConfigurationError("method must be 'get', 'put', 'head' or 'delete'")
        check_int("expires_in", expires_in, 1)
        if expires_in > MAX_PRESIGN_SECONDS:
            raise ConfigurationError("expires_in must be at most 604800 (7 days)")
        client = await self._client()
        with self._typed_errors():
            url: str = await client.generate_presigned_url(
                f"{method}_object", Params=where, ExpiresIn=expires_in
            )
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
        **options: Unpack[CallOptions],
    ) -> UploadResult:
        """Upload a file of any size. Up to ``part_size`` (the client's unless given) it is one
        request; larger files go as a multipart upload whose parts (each its own job, retried on
        its own) run concurrently within the lane's limit (or ``max_concurrency``) and are read
        from disk as they go. If the upload fails for good or is cancelled, it is aborted: no
        parts are left behind. ``timeout`` is per part attempt, ``deadline`` for the whole
        upload; all jobs share one request ID. ``progress(bytes_done, total)`` follows each
        finished part."""
        call = self._call(options, CALL_KEYS, "upload_file")
        bucket = self._bucket(bucket)
        _check_key(key)
        file = os.fspath(path)
        extra = _object_params(content_type, metadata)
        size_of_part = self.part_size if part_size is None else _check_part_size(part_size)
        check_int("max_concurrency", max_concurrency, 1)
        try:
            stat = await asyncio.to_thread(os.stat, file)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {file!r}: {exc.strerror}") from None
        total = stat.st_size
        if total <= size_of_part:
            result = await self._put(call, bucket, key, file, extra)
            await _report(progress, total, total)
            return result
        # Grow the parts if 10 000 of them would not hold the file.
        size_of_part = max(size_of_part, math.ceil(total / MAX_PARTS / MiB) * MiB)
        count = math.ceil(total / size_of_part)
        clock = call.lane.dispatcher.clock
        deadline_at = None if call.deadline is None else clock() + call.deadline

        def job() -> Call:
            """The settings of the upload's next job: its deadline is what is left of the
            upload's."""
            if deadline_at is None:
                return call
            return call._replace(deadline=max(0.001, deadline_at - clock()))

        created = await self._api(job(), "create_multipart_upload", Bucket=bucket, Key=key, **extra)
        upload = {"Bucket": bucket, "Key": key, "UploadId": str(created["UploadId"])}
        etags: dict[int, str] = {}
        numbers = iter(range(1, count + 1))
        done = 0

        async def upload_part(number: int) -> None:
            nonlocal done
            offset = (number - 1) * size_of_part
            length = min(size_of_part, total - offset)

            async def request(client: Any) -> str:
                data = await asyncio.to_thread(_read, file, offset, length)
                r = await client.upload_part(**upload, PartNumber=number, Body=data)
                return str(r["ETag"])

            etags[number] = await self._send(job(), "upload_part", request)
            done += length
            await _report(progress, done, total)

        async def worker() -> None:
            """Takes the next part until none is left. A few workers rather than a job per part,
            so that no more jobs wait in the dispatcher's queue than can run and a part is read
            from disk only when its turn comes; fan_out cancels the others on the first failure."""
            for number in numbers:
                await upload_part(number)

        try:
            width = min(count, max_concurrency or self.limits.max_concurrent_requests)
            await fan_out([worker] * width)
            r = await self._api(
                job(),
                "complete_multipart_upload",
                **upload,
                MultipartUpload={
                    "Parts": [{"ETag": etags[n], "PartNumber": n} for n in range(1, count + 1)]
                },
            )
        except BaseException:
            await self._abort(call, upload)
            raise
        return UploadResult(
            bucket, key, _strip_etag(r.get("ETag")), r.get("VersionId"), total, count
        )

    async def _abort(self, call: Call, upload: dict[str, str]) -> None:
        """Abort a multipart upload so that its parts stop costing storage; never raises but
        for the caller's cancellation. It runs first in the lane, without time limits, shielded
        from the cancellation that may have caused it; on a client closed meanwhile it goes
        straight to the aiobotocore client while that is still open. ``upload``: its Bucket, Key
        and UploadId."""

        async def abort() -> None:
            try:
                urgent = Call(
                    self._get_lane(), call.request_id, Priority.HIGH, None, None, None, None
                )
                await self._api(urgent, "abort_multipart_upload", **upload)
            except ClientClosedError:
                client = self._owner._s3
                if client is not None:
                    await client.abort_multipart_upload(**upload)

        task = asyncio.ensure_future(abort())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "%s: could not abort multipart upload of %s/%s (%s); parts may remain",
                self.name,
                upload["Bucket"],
                upload["Key"],
                type(exc).__name__,
                extra={"backend": self.name, "request_id": call.request_id},
            )

    async def download_file(
        self,
        bucket: str | None,
        key: str,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: ProgressCallback | None = None,
        **options: Unpack[CallOptions],
    ) -> int:
        """Stream an object to ``path`` in chunks of ``chunk_size`` (never whole in memory) and
        return its size.

        The data goes to a temporary file beside ``path`` that replaces it only when complete.
        A retry after a dropped connection resumes where it stopped, if the object is unchanged
        (by its ETag); if it changed, the download fails with the code ``"PreconditionFailed"``
        (S3's 412, or a ``ResponseValidationError`` where the store ignores ``If-Match``); where
        the store ignores ``Range`` and sends the whole object again, it is written from the start.
        ``timeout`` limits each wait for data; ``progress(bytes_done, total)`` follows each chunk
        written."""
        call = self._call(options, CALL_KEYS, "download_file")
        where = self._where(bucket, key)
        check_int("chunk_size", chunk_size, 1)
        target = os.fspath(path)
        partial = f"{target}.{secrets.token_hex(4)}.part"
        client = await self._client()
        # What earlier attempts learnt and wrote, so that a retry resumes.
        written = 0
        etag: str | None = None
        size = 0

        async def attempt(a: Attempt) -> int:
            nonlocal written, etag, size
            resume = {"Range": f"bytes={written}-", "IfMatch": etag} if written else {}
            response = await self._guard(a, client.get_object(**where, **resume))
            body = response["Body"]
            try:
                if not written:
                    size = int(response.get("ContentLength") or 0)
                    etag = response.get("ETag")
                elif _strip_etag(response.get("ETag")) != _strip_etag(etag):
                    # S3 answers 412 to a resumed read of a changed object; a store that ignores
                    # If-Match (s3rver) sends the new object's bytes instead, which must not be
                    # appended to the old one's.
                    raise ResponseValidationError(
                        f"the object changed while it was downloading (ETag "
                        f"{_strip_etag(etag)} became {_strip_etag(response.get('ETag'))}) and "
                        "the store ignored If-Match",
                        backend=self.name,
                        request_id=a.request_id,
                        code="PreconditionFailed",
                    )
                if written and not str(response.get("ContentRange", "")).startswith(
                    f"bytes {written}-"
                ):
                    # A store that ignores Range sends the whole object (200, no Content-Range):
                    # it is written from the start, not appended to what is there.
                    written = 0
                total = size
                f = await asyncio.to_thread(_open_at, partial, written)
                try:
                    async for block in _blocks(self._chunks(a, body, chunk_size), chunk_size):
                        await asyncio.to_thread(f.write, block)
                        written += len(block)
                        await _report(progress, written, total)
                finally:
                    await asyncio.shield(asyncio.to_thread(f.close))
                return total
            finally:
                body.close()

        try:
            result = await self._run(call, "download_file", attempt)
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_remove, partial))
            raise
        return result

    # -- helpers --------------------------------------------------------------------------------

    def _where(self, bucket: str | None, key: str) -> dict[str, Any]:
        """The parameters that name one object: its bucket (or the default one) and key, checked."""
        return {"Bucket": self._bucket(bucket), "Key": _check_key(key)}

    def _get_params(
        self, bucket: str | None, key: str, byte_range: tuple[int, int | None] | None
    ) -> dict[str, Any]:
        return {**self._where(bucket, key), **given(Range=_check_range(byte_range))}


def _object_params(content_type: str | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """A new object's ContentType and Metadata, checked; only those given (no empty Metadata)."""
    if content_type is not None:
        check_header_value("content_type", content_type)
    return given(ContentType=content_type, Metadata=_check_metadata(metadata) or None)


_shared_loader: list[Any] = []


def _share_data_loader(session: Any) -> None:
    """Let every client use the first one's parsed service models (~0.2 s to parse each time)."""
    if _shared_loader:
        session.register_component("data_loader", _shared_loader[0])
    else:
        _shared_loader.append(session.get_component("data_loader"))


def _add_request_id_header(params: dict[str, Any], **_: Any) -> None:
    """botocore's ``before-call`` hook: the current request ID (the attempt's, set by
    ``S3._guard``) as ``X-Request-ID``."""
    request_id = _request_id.get()
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
