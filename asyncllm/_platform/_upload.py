"""What an upload reads from: a path, bytes or an async iterator of bytes, never held whole in
memory by us (a path is read in pieces off the event loop, an iterator is passed through)."""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar, Union

import aiohttp
from aiohttp.payload import AsyncIterablePayload, BytesPayload

from .._exceptions import APIError, ConfigurationError

T = TypeVar("T")

FileSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, AsyncIterable[bytes]]

# Pieces read from a file at a time: large enough to keep the syscall count low, small enough to
# keep an upload's memory flat.
CHUNK_BYTES = 256 * 1024


class Upload:
    """One file to send, checked before anything is sent.

    ``replayable``: a path or bytes can be sent again by a retry; an async iterator cannot (it is
    spent by the first attempt), so a call that uploads one is never retried.
    """

    __slots__ = ("_bytes", "_iter", "_path", "content_type", "failure", "filename", "size", "used")

    def __init__(
        self, source: Any, *, filename: str | None = None, content_type: str | None = None
    ) -> None:
        self._path: Path | None = None
        self._bytes: bytes | None = None
        self._iter: AsyncIterable[bytes] | None = None
        self.used = False
        # Set when the caller's iterator yields something that is not bytes: aiohttp reports
        # that as a failed send, and the upload raises this instead.
        self.failure: ConfigurationError | None = None
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise ConfigurationError(f"file to upload not found or not a file: {str(path)!r}")
            self._path = path
            self.size: int | None = path.stat().st_size
            filename = filename or path.name
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self._bytes = bytes(source)
            self.size = len(self._bytes)
        elif isinstance(source, AsyncIterable):
            self._iter = source
            self.size = None
        else:
            raise ConfigurationError(
                "file must be a path, bytes or an async iterator of bytes, "
                f"not {type(source).__name__}"
            )
        if filename is not None and (not isinstance(filename, str) or not filename):
            raise ConfigurationError("filename must be a non-empty str")
        if filename is not None and any(c in filename for c in '\r\n"'):
            raise ConfigurationError("filename must not hold quotes or line breaks")
        if content_type is not None and (
            not isinstance(content_type, str) or not content_type.isprintable()
        ):
            raise ConfigurationError("content_type must be a str without control characters")
        self.filename = filename or "upload"
        # A type the name says (Gemini refuses octet-stream for most uses, as a server that
        # sniffs by type would); else the generic one.
        guessed = mimetypes.guess_type(self.filename)[0] if filename else None
        self.content_type = content_type or guessed or "application/octet-stream"

    @property
    def replayable(self) -> bool:
        return self._iter is None

    def chunks(self) -> AsyncIterator[bytes]:
        """The content in pieces, anew for each attempt (an iterator only once)."""
        if self._path is not None:
            return _read_file(self._path)
        if self._bytes is not None:
            return _once(self._bytes)
        assert self._iter is not None
        if self.used:
            raise ConfigurationError("an async iterator upload cannot be sent twice")
        self.used = True
        return self._checked(self._iter)

    async def _checked(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in source:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                self.failure = ConfigurationError(
                    f"an upload iterator must yield bytes, not {type(chunk).__name__}"
                )
                raise self.failure
            yield bytes(chunk)

    async def sending(self, call: Awaitable[T]) -> T:
        """``call`` (the request that sends this upload), raising the iterator's own mistake
        (``failure``) rather than the connection error aiohttp makes of it."""
        try:
            return await call
        except APIError as exc:
            if self.failure is not None:
                raise self.failure from exc
            raise

    def payload(self) -> aiohttp.Payload:
        """A body part for a multipart form, or a whole request body: bytes as they are, the
        rest streamed."""
        if self._bytes is not None:
            return BytesPayload(self._bytes, content_type=self.content_type)
        if self._path is not None:
            return _SizedPayload(self.chunks(), self.size, content_type=self.content_type)
        return AsyncIterablePayload(self.chunks(), content_type=self.content_type)

    def form(self, field: str, fields: dict[str, str]) -> aiohttp.FormData:
        """A multipart form with ``fields`` first and the file last, as the vendors' SDKs send it;
        built anew for each attempt (a sent form is spent)."""
        form = aiohttp.FormData(quote_fields=False)
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field(
            field, self.payload(), filename=self.filename, content_type=self.content_type
        )
        return form


class _SizedPayload(AsyncIterablePayload):
    """A file read in pieces whose size is known: sent with a ``Content-Length`` (and so is a
    form holding it) rather than chunked, which some servers and proxies refuse."""

    def __init__(self, value: AsyncIterator[bytes], size: int | None, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self._known_size = size

    @property
    def size(self) -> int | None:
        return self._known_size


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
