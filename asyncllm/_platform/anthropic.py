"""Anthropic's Files API (beta) and Message Batches, on the Messages API's wire.

The Files API is a beta: each of its calls sends ``anthropic-beta: files-api-2025-04-14`` beside
the client's own ``betas``. Anthropic serves the content only of files its tools made
(``downloadable``); asking for an upload's content is a ``FileNotDownloadableError``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import Unpack

from .._exceptions import ConfigurationError, FileNotDownloadableError
from .._http import _json
from .._http._backend import Meta, named_status
from .._http._transport import iter_lines
from .._options import BODY_KEYS, BodyOptions, HttpOptions, check_keys
from ..streaming import Stream
from ._batch import BatchCounts, BatchJob, BatchRequest
from ._files import (
    Deleted,
    FileObject,
    SubClient,
    check_id,
    check_limit,
    content_stream,
    deletion,
    listing,
    save,
    upload_options,
)
from ._upload import FileSource, Upload

if TYPE_CHECKING:
    from ..backends.claude import Claude

FILES_BETA = "files-api-2025-04-14"
T = TypeVar("T")


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


def _id_listing(
    client: Claude,
    operation: str,
    path: str,
    item: Callable[[Any, Meta], T],
    limit: int | None,
    options: Mapping[str, Any],
) -> AsyncIterator[T]:
    """An Anthropic listing: ``id_page`` pages of ``limit``, the cursor sent back as
    ``after_id``."""
    params = {"limit": check_limit(limit)}
    return listing(
        client, operation, path, options, page=id_page, item=item, cursor="after_id", params=params
    )


def _deleted(kind: str) -> Callable[[Any, Meta], Deleted]:
    """Anthropic answers a delete with the id and a ``type`` of ``kind`` when it is gone."""
    return deletion(lambda payload: (payload["id"], payload.get("type") == kind))


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
        return await upload.sending(
            self._client._request(
                "files.create",
                "POST",
                "/v1/files",
                file_object,
                upload_options(with_beta(self._client, options, FILES_BETA), upload),
                data=lambda: upload.form("file", {}),
                creates=True,
            )
        )

    async def retrieve(self, file_id: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata; ``NotFoundError`` if there is no such file."""
        path = f"/v1/files/{check_id('file_id', file_id)}"
        opts = with_beta(self._client, options, FILES_BETA)
        return await self._client._request("files.retrieve", "GET", path, file_object, opts)

    async def delete(self, file_id: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete the file."""
        path = f"/v1/files/{check_id('file_id', file_id)}"
        opts = with_beta(self._client, options, FILES_BETA)
        parse = _deleted("file_deleted")
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
        opts = with_beta(self._client, options, FILES_BETA)
        return _id_listing(self._client, "files.list", "/v1/files", file_object, limit, opts)


# -- Message Batches ----------------------------------------------------------------------------


def batch_job(payload: Any, meta: Meta) -> BatchJob:
    """A ``message_batch``: done once ``ended``; its counts say how each request ended."""
    if payload.get("type") != "message_batch":
        raise ValueError(f"expected a message_batch, got type {payload.get('type')!r}")
    counts = payload.get("request_counts") or {}
    number = {k: int(counts.get(k) or 0) for k in _COUNTS}
    failed = number["errored"] + number["canceled"] + number["expired"]
    status = str(payload["processing_status"])
    return BatchJob(
        id=payload["id"],
        status=status,
        done=status == "ended",
        counts=BatchCounts(
            total=sum(number.values()),
            succeeded=number["succeeded"],
            failed=failed,
            processing=number["processing"],
        ),
        created_at=payload.get("created_at"),
        results_url=payload.get("results_url"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


class Batches(SubClient["Claude"]):
    """``client.batches``: Anthropic's Message Batches (``/v1/messages/batches``), half-price
    Messages requests run within a day: create (not retried once it may have reached the server:
    it starts a paid job), retrieve, list, cancel, delete (an ended batch), and the results as a
    stream of JSONL lines. ``asyncllm.run_batch_job`` runs a list of chat requests as one."""

    __slots__ = ()

    async def create(
        self, requests: Sequence[Mapping[str, Any]], **options: Unpack[BodyOptions]
    ) -> BatchJob:
        """Start a batch of ``{"custom_id": ..., "params": <a Messages body>}`` requests."""
        if (
            isinstance(requests, (str, bytes))
            or not isinstance(requests, Sequence)
            or not all(
                isinstance(r, Mapping) and isinstance(r.get("custom_id"), str) for r in requests
            )
        ):
            raise ConfigurationError(
                "requests must be a list of {'custom_id': str, 'params': {...}} mappings"
            )
        body = {"requests": [dict(r) for r in requests]}
        return await self._client._request(
            "batches.create", "POST", BATCHES, batch_job, options, body=body, creates=True
        )

    async def retrieve(self, batch_id: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """The batch as it is now."""
        path = f"{BATCHES}/{check_id('batch_id', batch_id)}"
        return await self._client._request("batches.retrieve", "GET", path, batch_job, options)

    async def cancel(self, batch_id: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """Ask the batch to stop (``canceling``, then ``ended``); what ran is kept."""
        path = f"{BATCHES}/{check_id('batch_id', batch_id)}/cancel"
        return await self._client._request("batches.cancel", "POST", path, batch_job, options)

    async def delete(self, batch_id: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete an ended batch and its results (a batch still running must be cancelled)."""
        path = f"{BATCHES}/{check_id('batch_id', batch_id)}"
        parse = _deleted("message_batch_deleted")
        return await self._client._request("batches.delete", "DELETE", path, parse, options)

    def results(self, batch_id: str, **options: Unpack[HttpOptions]) -> AsyncIterator[Any]:
        """An ended batch's results, one decoded JSONL line at a time as they arrive:
        ``{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored",
        "error"} | {"type": "canceled"} | {"type": "expired"}}``. Read from the client's own
        origin (the batch's ``results_url`` names it), so the key goes nowhere else."""
        path = f"{BATCHES}/{check_id('batch_id', batch_id)}/results"
        client = self._client
        stream = content_stream(client, "batches.results", path, options)

        async def lines() -> AsyncIterator[Any]:
            meta = Meta(stream.request_id, None, {}, 200)
            async with stream:
                async for raw in iter_lines(stream, client.max_line_bytes):
                    if raw.strip():
                        yield client._parse(lambda raw, meta: _json.loads(raw), raw, meta)

        return lines()

    def list(
        self, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[BatchJob]:
        """Every batch, newest first (``async for``), a page of ``limit`` at a time."""
        return _id_listing(self._client, "batches.list", BATCHES, batch_job, limit, options)

    # -- what run_batch_job needs ------------------------------------------------------------------

    async def submit_chat(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """Start a batch of the requests, each body built and checked before anything is sent."""
        from ..backends.claude import CHAT_KEYS  # the chat parameters (a cycle at import time)

        client = self._client
        items = []
        for request in requests:
            check_keys(request.params, CHAT_KEYS - BODY_KEYS, "BatchRequest")
            body = client._chat_body(
                request.messages, request.params, False, request.output_format()
            )
            items.append({"custom_id": request.id, "params": body})
        return await self.create(items)

    async def chat_results(self, job: BatchJob) -> AsyncIterator[tuple[str, Any]]:
        """Each result: its ``custom_id`` and its ``ChatResponse``, or the typed error the same
        call would have raised (``errored``), or an ``APIError`` saying it was ``canceled`` or
        ``expired``."""
        client = self._client
        async for line in self.results(job.id):
            custom_id = str(line["custom_id"])
            result = line["result"]
            kind = result.get("type")
            meta = Meta(job.request_id, None, {}, 200)
            if kind == "succeeded":
                yield custom_id, client._parse(client._parse_chat, result["message"], meta)
                continue
            payload = result.get("error") or {}
            info = client._error_info(payload)
            error = client._error(
                named_status(info),
                info,
                job.request_id,
                _json.excerpt(payload),
                fallback=f"batch request {custom_id} {kind}",
            )
            yield custom_id, error


BATCHES = "/v1/messages/batches"
