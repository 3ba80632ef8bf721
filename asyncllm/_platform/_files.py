"""The shape every vendor's Files API shares: the file object, the deleted marker, pagination,
downloads streamed to a path or an iterator, and the rule for creating calls."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from .._exceptions import ConfigurationError, ResponseValidationError
from .._http._backend import Meta
from .._http._transport import Response
from ..streaming import Stream
from ._upload import Upload

if TYPE_CHECKING:
    from .._http._backend import HttpBackend

T = TypeVar("T")
B = TypeVar("B", bound="HttpBackend")


class FileObject(BaseModel):
    """A stored file, as each vendor describes it; what a vendor does not say is None.

    ``size`` in bytes; ``purpose`` (OpenAI); ``mime_type`` (Anthropic, Gemini); ``status``
    (OpenAI's ``processed``, Gemini's ``ACTIVE``); ``downloadable``: whether the vendor serves its
    content (OpenAI: always; Anthropic: files its tools made; Gemini: generated files); ``uri``:
    Gemini's URI to name the file in a prompt. ``raw`` is the vendor's object as it came.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    filename: str | None = None
    size: int | None = None
    created_at: int | str | None = None
    purpose: str | None = None
    mime_type: str | None = None
    status: str | None = None
    downloadable: bool | None = None
    expires_at: int | str | None = None
    uri: str | None = None
    request_id: str
    server_request_id: str | None = None
    raw: Any = None


class Deleted(BaseModel):
    """What a delete answers (a file, a batch): the id and whether it is gone."""

    id: str
    deleted: bool
    request_id: str
    server_request_id: str | None = None


def deletion(read: Callable[[Any], tuple[str, bool]]) -> Callable[[Any, Meta], Deleted]:
    """The parser of a delete's answer: ``read`` says, from the vendor's payload, which id is
    gone and whether it is."""

    def parse(payload: Any, meta: Meta) -> Deleted:
        deleted_id, deleted = read(payload)
        return Deleted(
            id=deleted_id,
            deleted=deleted,
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
        )

    return parse


def check_id(name: str, value: Any) -> str:
    """An id that goes into a URL path: a non-empty str without ``/``, ``?`` or ``#``, so that
    it cannot reach another endpoint."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty str")
    if any(c in value for c in "/?#") or value in (".", "..") or not value.isprintable():
        raise ConfigurationError(f"{name} must not hold '/', '?', '#' or control characters")
    return value


def check_limit(value: Any) -> str | None:
    """A page size, as a query value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError("limit must be a positive int")
    return str(value)


def query(**values: str | None) -> dict[str, str] | None:
    """The given query parameters (None left out), or None when there are none."""
    given = {k: v for k, v in values.items() if v is not None}
    return given or None


async def paginate(
    fetch: Callable[[str | None], Awaitable[tuple[list[T], str | None]]],
) -> AsyncIterator[T]:
    """Every item of a paginated listing: ``fetch(cursor)`` gets one page (each page its own
    call through the dispatcher) and the cursor of the next, None after the last."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        items, cursor = await fetch(cursor)
        for item in items:
            yield item
        if cursor is None:
            return
        if cursor in seen:  # a server that repeats a page would be read forever
            raise ResponseValidationError(f"the listing repeated its page cursor {cursor!r}")
        seen.add(cursor)


def listing(
    client: HttpBackend,
    operation: str,
    path: str,
    options: Mapping[str, Any],
    *,
    page: Callable[[Any], tuple[Iterable[Any], str | None]],
    item: Callable[[Any, Meta], T],
    cursor: str,
    params: Mapping[str, str | None],
) -> AsyncIterator[T]:
    """Every item of a vendor's paginated ``GET path``, each page its own call: ``page`` reads a
    page's items and the next cursor (None after the last), ``item`` parses one item, and the
    cursor goes back as the query parameter named ``cursor``, after ``params`` (checked by the
    caller when ``list`` is called, so bad arguments raise before anything is sent)."""

    async def fetch(after: str | None) -> tuple[list[T], str | None]:
        def parse(payload: Any, meta: Meta) -> tuple[list[T], str | None]:
            items, following = page(payload)
            return [item(each, meta) for each in items], following

        given = query(**params, **{cursor: after})
        return await client._request(operation, "GET", path, parse, options, params=given)

    return paginate(fetch)


def content_stream(
    client: HttpBackend,
    operation: str,
    path: str,
    options: Mapping[str, Any],
    *,
    method: str = "GET",
    **kw: Any,
) -> Stream[bytes]:
    """A body in pieces as they arrive (a file's content, generated speech): one streamed
    exchange, retried only before the first piece reaches the caller, its ``timeout`` the
    longest wait for the next piece."""

    def decode(response: Response, meta: Meta) -> AsyncIterator[bytes]:
        return response.iter_bytes()

    return client._stream(operation, method, path, decode, options, sse=False, **kw)


async def save(stream: Stream[bytes], path: str | os.PathLike[str]) -> int:
    """Write a content stream to ``path`` (through a ``.part`` file, renamed once whole, so a
    failed download leaves no truncated file under the name asked for); the bytes written."""
    target = Path(path)
    if await asyncio.to_thread(target.is_dir):
        raise ConfigurationError(f"download target is a directory: {str(target)!r}")
    partial = target.with_name(target.name + ".part")
    written = 0
    handle = await asyncio.to_thread(partial.open, "wb")
    try:
        async with stream:
            async for chunk in stream:
                await asyncio.to_thread(handle.write, chunk)
                written += len(chunk)
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(os.replace, partial, target)
    except BaseException:
        handle.close()
        partial.unlink(missing_ok=True)
        raise
    return written


def upload_options(options: Mapping[str, Any], upload: Upload) -> Mapping[str, Any]:
    """The options of an upload, a creating call (sent with ``creates=True``: retried only
    while it cannot have reached the server): one from an async iterator is never retried at
    all, since the iterator cannot be replayed."""
    return options if upload.replayable else {**options, "max_retries": 0}


class SubClient(Generic[B]):
    """A group of calls on one client (``client.files``, ``client.batches``...): it holds the
    client, whose dispatcher lane, options, errors and request IDs every call uses."""

    __slots__ = ("_client",)

    def __init__(self, client: B) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._client!r}>"
