"""OpenAI's platform APIs on the OpenAI wire: Files, Batches, fine-tuning, audio and moderation.

Only the wire format lives here: paths, form fields, and how each answer is read. The shared
pieces (uploads, pagination, downloads, the creating-call rule) are in ``_upload`` and ``_files``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from typing_extensions import Unpack

from .._exceptions import ConfigurationError
from .._http._backend import Meta
from .._options import HttpOptions
from .._wire.openai import OpenAIChat
from ..streaming import Stream
from ._files import (
    FileDeleted,
    FileObject,
    SubClient,
    check_id,
    check_limit,
    content_stream,
    creating,
    paginate,
    query,
    save,
)
from ._upload import FileSource, Upload


def file_object(payload: Any, meta: Meta) -> FileObject:
    """OpenAI's file object: ``bytes`` is its size, ``created_at`` and ``expires_at`` Unix times."""
    return FileObject(
        id=payload["id"],
        filename=payload.get("filename"),
        size=payload.get("bytes"),
        created_at=payload.get("created_at"),
        purpose=payload.get("purpose"),
        status=payload.get("status"),
        downloadable=True,
        expires_at=payload.get("expires_at"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


def list_page(payload: Any) -> tuple[list[Any], str | None]:
    """A cursor page, ``{"data", "has_more", "last_id"}``: its items and the next ``after``."""
    data = payload["data"]
    if not isinstance(data, list):
        raise TypeError("data is not a list")
    more = payload.get("has_more") and data
    last = payload.get("last_id") or (data[-1].get("id") if more else None)
    return data, (str(last) if more and last else None)


class Files(SubClient[OpenAIChat]):
    """``client.files``: upload, list, retrieve, delete and download files (``/files``).

    An upload is streamed (from a path in pieces, from an async iterator as it yields), never read
    whole into memory. It creates a file, so it is retried only when it cannot have reached the
    server; an upload from an async iterator is never retried (it cannot be replayed).
    """

    __slots__ = ()

    async def create(
        self,
        file: FileSource,
        *,
        purpose: str,
        filename: str | None = None,
        content_type: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> FileObject:
        """Upload ``file`` (a path, bytes or an async iterator of bytes) for ``purpose``
        (``"batch"``, ``"fine-tune"``, ``"assistants"``, ``"user_data"``...)."""
        if not isinstance(purpose, str) or not purpose:
            raise ConfigurationError("purpose must be a non-empty str")
        upload = Upload(file, filename=filename, content_type=content_type)
        return await self._client._request(
            "files.create",
            "POST",
            "/files",
            file_object,
            creating(options, upload),
            data=lambda: upload.form("file", {"purpose": purpose}),
        )

    async def retrieve(self, file_id: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata; ``NotFoundError`` if there is no such file."""
        path = f"/files/{check_id('file_id', file_id)}"
        return await self._client._request("files.retrieve", "GET", path, file_object, options)

    async def delete(self, file_id: str, **options: Unpack[HttpOptions]) -> FileDeleted:
        """Delete the file (retried: deleting twice deletes once)."""
        path = f"/files/{check_id('file_id', file_id)}"

        def parse(payload: Any, meta: Meta) -> FileDeleted:
            return FileDeleted(
                id=payload["id"],
                deleted=bool(payload["deleted"]),
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
            )

        return await self._client._request("files.delete", "DELETE", path, parse, options)

    def content(self, file_id: str, **options: Unpack[HttpOptions]) -> Stream[bytes]:
        """The file's content as it arrives (``async with`` ... ``async for chunk in it``)."""
        path = f"/files/{check_id('file_id', file_id)}/content"
        return content_stream(self._client, "files.content", path, options)

    async def download(
        self, file_id: str, path: str | os.PathLike[str], **options: Unpack[HttpOptions]
    ) -> int:
        """Write the file's content to ``path`` as it arrives; the bytes written."""
        return await save(self.content(file_id, **options), path)

    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> AsyncIterator[FileObject]:
        """Every file (``async for``), fetched a page of ``limit`` at a time."""
        if purpose is not None and not isinstance(purpose, str):
            raise ConfigurationError("purpose must be a str")
        if order not in (None, "asc", "desc"):
            raise ConfigurationError("order must be 'asc' or 'desc'")
        size = check_limit(limit)
        client = self._client

        async def fetch(after: str | None) -> tuple[Any, str | None]:
            params = query(purpose=purpose, limit=size, order=order, after=after)

            def parse(payload: Any, meta: Meta) -> tuple[Any, str | None]:
                items, cursor = list_page(payload)
                return [file_object(item, meta) for item in items], cursor

            return await client._request(
                "files.list", "GET", "/files", parse, options, params=params
            )

        return paginate(fetch)
