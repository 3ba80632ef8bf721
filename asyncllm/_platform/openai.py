"""OpenAI's platform APIs on the OpenAI wire: Files, Batches, fine-tuning, audio and moderation.

Only the wire format lives here: paths, form fields, and how each answer is read. The shared
pieces (uploads, pagination, downloads, the creating-call rule) are in ``_upload`` and ``_files``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from .._exceptions import ConfigurationError
from .._http import _json
from .._http._backend import Meta
from .._http._transport import iter_lines
from .._options import BodyOptions, HttpOptions
from .._validate import check_str
from .._wire.openai import OpenAIChat
from ..streaming import Stream
from ._batch import BatchCounts, BatchJob, BatchRequest
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
            upload_options(options, upload),
            data=lambda: upload.form("file", {"purpose": purpose}),
            creates=True,
        )

    async def retrieve(self, file_id: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata; ``NotFoundError`` if there is no such file."""
        path = f"/files/{check_id('file_id', file_id)}"
        return await self._client._request("files.retrieve", "GET", path, file_object, options)

    async def delete(self, file_id: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete the file (retried: deleting twice deletes once)."""
        path = f"/files/{check_id('file_id', file_id)}"

        def parse(payload: Any, meta: Meta) -> Deleted:
            return Deleted(
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


# -- batches ------------------------------------------------------------------------------------

BATCH_DONE = frozenset({"completed", "failed", "expired", "cancelled"})
CHAT_ENDPOINT = "/v1/chat/completions"


def batch_job(payload: Any, meta: Meta) -> BatchJob:
    """OpenAI's batch object: done once ``completed``, ``failed``, ``expired`` or ``cancelled``."""
    if payload.get("object") != "batch":
        raise ValueError(f"expected a batch, got object {payload.get('object')!r}")
    counts = payload.get("request_counts") or {}
    total, completed, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
    status = str(payload["status"])
    return BatchJob(
        id=payload["id"],
        status=status,
        done=status in BATCH_DONE,
        counts=BatchCounts(
            total=total,
            succeeded=completed,
            failed=failed,
            processing=max(0, total - completed - failed),
        ),
        created_at=payload.get("created_at"),
        output_file_id=payload.get("output_file_id"),
        error_file_id=payload.get("error_file_id"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


class Batches(SubClient[OpenAIChat]):
    """``client.batches``: OpenAI's Batch API (``/batches``): half-price jobs that run a JSONL
    file of requests within ``completion_window``. Create (not retried once it may have reached
    the server: it starts a paid job), retrieve, cancel and list; OpenAI deletes no batch.
    ``asyncllm.run_batch`` runs a list of chat requests as one, end to end."""

    __slots__ = ()

    async def create(
        self,
        *,
        input_file_id: str,
        endpoint: str = CHAT_ENDPOINT,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[BodyOptions],
    ) -> BatchJob:
        """Start a batch over an uploaded JSONL file (``purpose="batch"``)."""
        check_id("input_file_id", input_file_id)
        check_str("endpoint", endpoint)
        check_str("completion_window", completion_window)
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata is not None:
            if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
            ):
                raise ConfigurationError("metadata must be a mapping of str to str")
            body["metadata"] = dict(metadata)
        return await self._client._request(
            "batches.create", "POST", "/batches", batch_job, options, body=body, creates=True
        )

    async def retrieve(self, batch_id: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """The batch as it is now."""
        path = f"/batches/{check_id('batch_id', batch_id)}"
        return await self._client._request("batches.retrieve", "GET", path, batch_job, options)

    async def cancel(self, batch_id: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """Ask the batch to stop (``cancelling``, then ``cancelled``); what ran is kept."""
        path = f"/batches/{check_id('batch_id', batch_id)}/cancel"
        return await self._client._request("batches.cancel", "POST", path, batch_job, options)

    def list(
        self, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[BatchJob]:
        """Every batch, newest first (``async for``), a page of ``limit`` at a time."""
        size = check_limit(limit)
        client = self._client

        async def fetch(after: str | None) -> tuple[Any, str | None]:
            def parse(payload: Any, meta: Meta) -> tuple[Any, str | None]:
                items, cursor = list_page(payload)
                return [batch_job(item, meta) for item in items], cursor

            params = query(limit=size, after=after)
            return await client._request(
                "batches.list", "GET", "/batches", parse, options, params=params
            )

        return paginate(fetch)

    # -- what run_batch needs ------------------------------------------------------------------

    async def submit_chat(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """Upload the requests as a JSONL file and start a chat batch over it; every body is
        built and checked before anything is sent."""
        client = self._client
        lines = []
        for request in requests:
            fmt = request.output_format()
            body = client._chat_body(request.messages, request.params, False, fmt)
            line = {"custom_id": request.id, "method": "POST", "url": CHAT_ENDPOINT, "body": body}
            lines.append(_json.dumps(line))
        content = b"\n".join(lines) + b"\n"
        made = await Files(client).create(content, purpose="batch", filename="batch.jsonl")
        return await self.create(input_file_id=made.id)

    async def chat_results(self, job: BatchJob) -> AsyncIterator[tuple[str, Any]]:
        """Each line of the job's output and error files: its ``custom_id`` and its
        ``ChatResponse``, or the typed error the same call would have raised."""
        client = self._client
        files = Files(client)

        def read_line(raw: bytes, meta: Meta) -> tuple[str, Any]:
            return batch_line(client, _json.loads(raw), job)

        for file_id in (job.output_file_id, job.error_file_id):
            if file_id is None:
                continue
            meta = Meta(job.request_id, None, {}, 200)
            async with files.content(file_id) as stream:
                async for raw in iter_lines(stream, client.max_line_bytes):
                    if raw.strip():
                        yield client._parse(read_line, raw, meta)


def batch_line(client: OpenAIChat, line: Any, job: BatchJob) -> tuple[str, Any]:
    """One output or error line: ``{"custom_id", "response": {"status_code", "request_id",
    "body"}, "error"}``."""
    custom_id = str(line["custom_id"])
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    meta = Meta(job.request_id, response.get("request_id"), {}, status or 0)
    if status == 200 and line.get("error") is None:
        return custom_id, client._parse(client._parse_chat, body, meta)
    payload = body if body is not None else {"error": line.get("error")}
    info = client._error_info(payload)
    error = client._error(
        status,
        info,
        job.request_id,
        _json.excerpt(payload),
        server_request_id=meta.server_request_id,
        fallback=f"batch request {custom_id} failed",
    )
    error.backend = client.name
    return custom_id, error
