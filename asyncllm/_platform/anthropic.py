"""Anthropic's Files API (beta) and Message Batches, on the Messages API's wire.

The Files API is a beta: each of its calls sends ``anthropic-beta: files-api-2025-04-14`` beside
the client's own ``betas``. Anthropic serves the content only of files its tools made
(``downloadable``); asking for an upload's content is a ``FileNotDownloadableError``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from .._exceptions import FileNotDownloadableError
from .._http._backend import Meta
from .._options import HttpOptions
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

if TYPE_CHECKING:
    from ..backends.claude import Claude

FILES_BETA = "files-api-2025-04-14"


def with_beta(client: Claude, options: Mapping[str, Any], beta: str) -> dict[str, Any]:
    """``options`` with ``beta`` added to the ``anthropic-beta`` header the call sends (the
    client's ``betas`` and any the caller gave in ``extra_headers`` kept)."""
    extra = dict(options.get("extra_headers") or {})
    given = next((k for k in extra if k.lower() == "anthropic-beta"), None)
    names = [*client.betas, *(extra.pop(given).split(",") if given else ())]
    names = [n.strip() for n in names if n.strip()]
    if beta not in names:
        names.append(beta)
    extra["anthropic-beta"] = ",".join(dict.fromkeys(names))
    return {**options, "extra_headers": extra}


def file_object(payload: Any, meta: Meta) -> FileObject:
    if payload.get("type") != "file":
        raise ValueError(f"expected a file, got type {payload.get('type')!r}")
    return FileObject(
        id=payload["id"],
        filename=payload.get("filename"),
        size=payload.get("size_bytes"),
        created_at=payload.get("created_at"),
        mime_type=payload.get("mime_type"),
        downloadable=bool(payload.get("downloadable", False)),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


def id_page(payload: Any) -> tuple[list[Any], str | None]:
    """Anthropic's page, ``{"data", "has_more", "last_id"}``: its items and the next
    ``after_id``."""
    data = payload["data"]
    if not isinstance(data, list):
        raise TypeError("data is not a list")
    last = payload.get("last_id")
    return data, (str(last) if payload.get("has_more") and last and data else None)


class Files(SubClient["Claude"]):
    """``client.files``: Anthropic's Files API (beta): upload, list, retrieve, delete, and
    download the files Anthropic's tools made.

    An upload is streamed (a path in pieces, an async iterator as it yields); it creates a file,
    so it is retried only when it cannot have reached the server, and never from an iterator.
    """

    __slots__ = ()

    async def create(
        self,
        file: FileSource,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> FileObject:
        """Upload ``file`` (a path, bytes or an async iterator of bytes)."""
        upload = Upload(file, filename=filename, content_type=content_type)
        return await self._client._request(
            "files.create",
            "POST",
            "/v1/files",
            file_object,
            creating(with_beta(self._client, options, FILES_BETA), upload),
            data=lambda: upload.form("file", {}),
        )

    async def retrieve(self, file_id: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata; ``NotFoundError`` if there is no such file."""
        path = f"/v1/files/{check_id('file_id', file_id)}"
        opts = with_beta(self._client, options, FILES_BETA)
        return await self._client._request("files.retrieve", "GET", path, file_object, opts)

    async def delete(self, file_id: str, **options: Unpack[HttpOptions]) -> FileDeleted:
        """Delete the file."""
        path = f"/v1/files/{check_id('file_id', file_id)}"

        def parse(payload: Any, meta: Meta) -> FileDeleted:
            return FileDeleted(
                id=payload["id"],
                deleted=payload.get("type") == "file_deleted",
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
            )

        opts = with_beta(self._client, options, FILES_BETA)
        return await self._client._request("files.delete", "DELETE", path, parse, opts)

    async def content(
        self, file: str | FileObject, **options: Unpack[HttpOptions]
    ) -> Stream[bytes]:
        """The content of a file Anthropic's tools made, as it arrives. Given an id, the file is
        looked up first; an upload (``downloadable`` false) raises ``FileNotDownloadableError``
        before its content is asked for."""
        found = file if isinstance(file, FileObject) else await self.retrieve(file, **options)
        if not found.downloadable:
            raise FileNotDownloadableError(
                f"Anthropic serves the content only of files its tools made; {found.id} "
                "is not downloadable"
            )
        path = f"/v1/files/{check_id('file_id', found.id)}/content"
        opts = with_beta(self._client, options, FILES_BETA)
        return content_stream(self._client, "files.content", path, opts)

    async def download(
        self, file: str | FileObject, path: str | os.PathLike[str], **options: Unpack[HttpOptions]
    ) -> int:
        """Write a tool-made file's content to ``path`` as it arrives; the bytes written."""
        return await save(await self.content(file, **options), path)

    def list(
        self, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[FileObject]:
        """Every file (``async for``), a page of ``limit`` at a time."""
        size = check_limit(limit)
        client = self._client
        opts = with_beta(client, options, FILES_BETA)

        async def fetch(after: str | None) -> tuple[Any, str | None]:
            def parse(payload: Any, meta: Meta) -> tuple[Any, str | None]:
                items, cursor = id_page(payload)
                return [file_object(item, meta) for item in items], cursor

            params = query(limit=size, after_id=after)
            return await client._request(
                "files.list", "GET", "/v1/files", parse, opts, params=params
            )

        return paginate(fetch)
