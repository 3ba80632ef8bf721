"""Gemini's Files API and batch generation, on the Gemini REST wire.

An upload uses Google's resumable protocol: a ``start`` request (the file's metadata, JSON)
answers with an upload URL, and one ``upload, finalize`` request streams the bytes there. Starting
is harmless to repeat (an unused session expires); the upload creates the file, so it follows the
creating-call rule. The upload URL must be on the client's own origin, since the API key goes with
it. Gemini serves the content only of files its models generated (``source: GENERATED``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from typing_extensions import Unpack

from .._exceptions import FileNotDownloadableError
from .._http._backend import Meta
from .._options import HttpOptions
from ..streaming import Stream
from ._files import (
    Deleted,
    FileObject,
    SubClient,
    check_id,
    check_limit,
    content_stream,
    paginate,
    query,
    save,
    upload_options,
)
from ._upload import FileSource, Upload

if TYPE_CHECKING:
    from ..backends.gemini import Gemini  # noqa: F401 - named in a string (an import cycle)


def resource(prefix: str, name: Any) -> str:
    """``files/abc`` from ``abc`` or ``files/abc``, checked to name nothing else."""
    if isinstance(name, str) and name.startswith(prefix + "/"):
        name = name[len(prefix) + 1 :]
    return f"{prefix}/{check_id('name', name)}"


def file_object(payload: Any, meta: Meta) -> FileObject:
    """A Gemini File: ``name`` (``files/...``) is its id; ``sizeBytes`` an int64 as a string."""
    size = payload.get("sizeBytes")
    return FileObject(
        id=payload["name"],
        filename=payload.get("displayName"),
        size=None if size is None else int(size),
        created_at=payload.get("createTime"),
        mime_type=payload.get("mimeType"),
        status=payload.get("state"),
        downloadable=payload.get("source") == "GENERATED",
        expires_at=payload.get("expirationTime"),
        uri=payload.get("uri"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


class Files(SubClient["Gemini"]):
    """``client.files``: Gemini's Files API: upload (resumable, streamed), list, retrieve,
    delete, and download the files Gemini's models generated. ``id`` is the file's resource name
    (``files/abc``); name a file in a prompt by its ``uri``."""

    __slots__ = ()

    def _upload_url(self) -> str:
        """``https://host/upload/v1beta/files`` for a base of ``https://host/v1beta``."""
        parts = urlsplit(self._client.base_url)
        return f"{parts.scheme}://{parts.netloc}/upload{parts.path}/files"

    async def create(
        self,
        file: FileSource,
        *,
        display_name: str | None = None,
        mime_type: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> FileObject:
        """Upload ``file`` (a path, bytes or an async iterator of bytes); ``display_name``
        defaults to the path's name."""
        upload = Upload(file, filename=display_name, content_type=mime_type)
        client = self._client
        start_url = self._upload_url()
        origin = urlsplit(start_url)[:2]
        headers = {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Type": upload.content_type,
        }
        if upload.size is not None:
            headers["X-Goog-Upload-Header-Content-Length"] = str(upload.size)
        given = dict(options.get("extra_headers") or {})

        def session(payload: Any, meta: Meta) -> str:
            url = meta.headers.get("X-Goog-Upload-URL")
            if not url:
                raise ValueError("no X-Goog-Upload-URL in the answer to the upload start")
            if urlsplit(url)[:2] != origin:
                raise ValueError("the upload URL is on another origin; the API key stays home")
            return url

        body = {"file": {"displayName": upload.filename}} if upload.filename else {"file": {}}
        url = await client._request(
            "files.create",
            "POST",
            start_url,
            session,
            {**options, "extra_headers": {**given, **headers}},
            body=body,
            raw_body=False,
        )
        finish = {
            "X-Goog-Upload-Command": "upload, finalize",
            "X-Goog-Upload-Offset": "0",
        }
        return await client._request(
            "files.create",
            "POST",
            url,
            lambda payload, meta: file_object(payload["file"], meta),
            upload_options({**options, "extra_headers": {**given, **finish}}, upload),
            data=upload.payload,
            creates=True,
        )

    async def retrieve(self, name: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata (``state`` is ``PROCESSING`` until it can be used)."""
        path = "/" + resource("files", name)
        return await self._client._request("files.retrieve", "GET", path, file_object, options)

    async def delete(self, name: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete the file."""
        path = "/" + resource("files", name)

        def parse(payload: Any, meta: Meta) -> Deleted:
            return Deleted(
                id=path[1:],
                deleted=True,
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
            )

        return await self._client._request("files.delete", "DELETE", path, parse, options)

    async def content(
        self, file: str | FileObject, **options: Unpack[HttpOptions]
    ) -> Stream[bytes]:
        """The content of a file Gemini generated, as it arrives. An upload raises
        ``FileNotDownloadableError`` before its content is asked for."""
        found = file if isinstance(file, FileObject) else await self.retrieve(file, **options)
        if not found.downloadable:
            raise FileNotDownloadableError(
                f"Gemini serves the content only of files its models generated; {found.id} "
                "was uploaded"
            )
        path = "/" + resource("files", found.id) + ":download"
        params = {"alt": "media"}
        return content_stream(self._client, "files.content", path, options, params=params)

    async def download(
        self, file: str | FileObject, path: str | os.PathLike[str], **options: Unpack[HttpOptions]
    ) -> int:
        """Write a generated file's content to ``path`` as it arrives; the bytes written."""
        return await save(await self.content(file, **options), path)

    def list(
        self, *, page_size: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[FileObject]:
        """Every file (``async for``), ``page_size`` at a time."""
        size = check_limit(page_size)
        client = self._client

        async def fetch(token: str | None) -> tuple[Any, str | None]:
            def parse(payload: Any, meta: Meta) -> tuple[Any, str | None]:
                payload = payload or {}
                items = [file_object(item, meta) for item in payload.get("files") or ()]
                return items, payload.get("nextPageToken") or None

            params = query(pageSize=size, pageToken=token)
            return await client._request(
                "files.list", "GET", "/files", parse, options, params=params
            )

        return paginate(fetch)
