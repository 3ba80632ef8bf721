"""Gemini's Files API and batch generation, on the Gemini REST wire.

An upload uses Google's resumable protocol: a ``start`` request (the file's metadata, JSON)
answers with an upload URL, and one ``upload, finalize`` request streams the bytes there. Starting
is harmless to repeat (an unused session expires); the upload creates the file, so it follows the
creating-call rule. The upload URL must be on the client's own origin, since the API key goes with
it. Gemini serves the content only of files its models generated (``source: GENERATED``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from typing_extensions import Unpack

from .._exceptions import ConfigurationError, FileNotDownloadableError
from .._http import _json
from .._http._backend import ErrorInfo, Meta
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
    from ..backends.gemini import Gemini

T = TypeVar("T")


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


def _token_listing(
    client: Gemini,
    operation: str,
    path: str,
    key: str,
    item: Callable[[Any, Meta], T],
    page_size: int | None,
    options: Mapping[str, Any],
) -> AsyncIterator[T]:
    """A Google listing: pages of ``pageSize`` whose items are under ``key`` (left out when
    there are none), the next page named by ``nextPageToken`` and asked for as ``pageToken``."""

    def page(payload: Any) -> tuple[Any, str | None]:
        payload = payload or {}
        return payload.get(key) or (), payload.get("nextPageToken") or None

    params = {"pageSize": check_limit(page_size)}
    return listing(
        client, operation, path, options, page=page, item=item, cursor="pageToken", params=params
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
        )
        finish = {
            "X-Goog-Upload-Command": "upload, finalize",
            "X-Goog-Upload-Offset": "0",
        }
        return await upload.sending(
            client._request(
                "files.create",
                "POST",
                url,
                lambda payload, meta: file_object(payload["file"], meta),
                upload_options({**options, "extra_headers": {**given, **finish}}, upload),
                data=upload.payload,
                creates=True,
            )
        )

    async def retrieve(self, name: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata (``state`` is ``PROCESSING`` until it can be used)."""
        path = "/" + resource("files", name)
        return await self._client._request("files.retrieve", "GET", path, file_object, options)

    async def delete(self, name: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete the file."""
        path = "/" + resource("files", name)
        parse = deletion(lambda payload: (path[1:], True))  # Google answers {}
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
        return _token_listing(
            self._client, "files.list", "/files", "files", file_object, page_size, options
        )


# -- batch generation ---------------------------------------------------------------------------

# Above this many bytes of requests, a batch goes up as a JSONL file rather than inline (the
# API takes up to 20 MB inline).
INLINE_BYTES = 10 * 1024 * 1024

BATCH_ENDED = frozenset(
    {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}
)
# google.rpc.Code -> the HTTP status Google's REST APIs answer with it.
RPC_STATUS = {
    1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip


def batch_job(payload: Any, meta: Meta) -> BatchJob:
    """A batch, as the long-running operation that carries it (``{"name", "metadata":
    GenerateContentBatch, "done"}``) or as the batch itself; done in a final ``state``."""
    batch = payload.get("metadata") or payload
    stats = batch.get("batchStats") or {}
    number = {
        k: int(stats.get(k) or 0)
        for k in ("requestCount", "successfulRequestCount", "failedRequestCount")
    }
    state = str(batch.get("state") or "BATCH_STATE_UNSPECIFIED")
    total, succeeded, failed = number.values()
    return BatchJob(
        id=str(payload.get("name") or batch["name"]),
        status=state,
        done=state in BATCH_ENDED,
        counts=BatchCounts(
            total=total,
            succeeded=succeeded,
            failed=failed,
            processing=int(stats.get("pendingRequestCount") or 0),
        ),
        created_at=batch.get("createTime"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


class Batches(SubClient["Gemini"]):
    """``client.batches``: Gemini batch generation (``models/*:batchGenerateContent``), half-price
    generateContent requests run within a day, results matched by each request's
    ``metadata.key``: create (not retried once it may have reached the server: it starts a paid
    job), retrieve, list, cancel, delete. ``asyncllm.run_batch_job`` runs a list of chat requests as
    one: inline up to ``INLINE_BYTES`` of requests, through a JSONL file beyond."""

    __slots__ = ()

    async def create(
        self,
        requests: Sequence[Mapping[str, Any]] | None = None,
        *,
        input_file: str | FileObject | None = None,
        model: str | None = None,
        display_name: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> BatchJob:
        """Start a batch on ``model`` (default: the client's) of inline ``{"request": <a
        GenerateContentRequest>, "metadata": {"key": ...}}`` requests, or of an uploaded JSONL
        ``input_file`` whose lines are ``{"key": ..., "request": {...}}`` (for batches beyond
        the inline limit; the results then come in a file too)."""
        if (requests is None) == (input_file is None):
            raise ConfigurationError("give either requests or input_file")
        if requests is not None and (
            isinstance(requests, (str, bytes))
            or not isinstance(requests, Sequence)
            or not all(
                isinstance(r, Mapping) and isinstance(r.get("request"), Mapping) for r in requests
            )
        ):
            raise ConfigurationError(
                "requests must be a list of {'request': {...}, 'metadata': {'key': ...}} mappings"
            )
        if display_name is not None and not isinstance(display_name, str):
            raise ConfigurationError("display_name must be a str")
        client = self._client
        if requests is not None:
            config: dict[str, Any] = {"requests": {"requests": [dict(r) for r in requests]}}
        else:
            name = input_file.id if isinstance(input_file, FileObject) else input_file
            config = {"fileName": resource("files", name)}
        batch: dict[str, Any] = {"inputConfig": config}
        if display_name:
            batch["displayName"] = display_name
        path = client._method_path(model, "batchGenerateContent")
        return await client._request(
            "batches.create", "POST", path, batch_job, options, body={"batch": batch}, creates=True
        )

    async def retrieve(self, name: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """The batch as it is now (``name``: ``batches/...`` or its last part)."""
        path = "/" + resource("batches", name)
        return await self._client._request("batches.retrieve", "GET", path, batch_job, options)

    async def cancel(self, name: str, **options: Unpack[HttpOptions]) -> None:
        """Ask the batch to stop (it ends ``BATCH_STATE_CANCELLED``)."""
        path = "/" + resource("batches", name) + ":cancel"
        await self._client._request("batches.cancel", "POST", path, lambda p, m: None, options)

    async def delete(self, name: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete the batch."""
        path = "/" + resource("batches", name)
        parse = deletion(lambda payload: (path[1:], True))  # Google answers {}
        return await self._client._request("batches.delete", "DELETE", path, parse, options)

    def list(
        self, *, page_size: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[BatchJob]:
        """Every batch (``async for``), ``page_size`` at a time."""
        return _token_listing(
            self._client, "batches.list", "/batches", "operations", batch_job, page_size, options
        )

    # -- what run_batch_job needs ------------------------------------------------------------------

    async def submit_chat(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """Start a batch of the requests (on one model: a Gemini batch has one), each body
        built and checked before anything is sent."""
        from ..backends.gemini import CHAT_KEYS  # the chat parameters (a cycle at import time)

        client = self._client
        models = {client._model(r.params.get("model")) for r in requests}
        if len(models) != 1:
            raise ConfigurationError(
                "a Gemini batch runs on one model: give every request the same"
            )
        items = []
        for request in requests:
            check_keys(request.params, CHAT_KEYS - BODY_KEYS, "BatchRequest")
            params = request.params
            body = client._generate_body(
                request.messages, params, params.get("n"), request.output_format()
            )
            items.append({"request": body, "metadata": {"key": request.id}})
        model = models.pop()
        lines = [_json.dumps({"key": i["metadata"]["key"], "request": i["request"]}) for i in items]
        if sum(len(line) for line in lines) <= INLINE_BYTES:
            return await self.create(items, model=model)
        content = b"\n".join(lines) + b"\n"
        made = await Files(client).create(content, display_name="batch.jsonl", mime_type="jsonl")
        return await self.create(input_file=made, model=model)

    async def chat_results(self, job: BatchJob) -> AsyncIterator[tuple[str, Any]]:
        """Each response, inline or in the job's results file (read as it arrives): its key and
        its ``ChatResponse``, or the typed error its ``google.rpc.Status`` names."""
        client = self._client
        raw = job.raw or {}
        output = (raw.get("metadata") or raw).get("output") or raw.get("response") or {}
        meta = Meta(job.request_id, None, {}, 200)
        responses_file = output.get("responsesFile")
        if responses_file:
            path = "/" + resource("files", responses_file) + ":download"
            stream = content_stream(client, "batches.results", path, {}, params={"alt": "media"})
            async with stream:
                async for line in iter_lines(stream, client.max_line_bytes):
                    if line.strip():
                        item = client._parse(lambda raw, meta: _json.loads(raw), line, meta)
                        yield self._outcome(str(item.get("key")), item, job, meta)
            return
        for item in (output.get("inlinedResponses") or {}).get("inlinedResponses") or ():
            key = str((item.get("metadata") or {}).get("key"))
            yield self._outcome(key, item, job, meta)

    def _outcome(self, key: str, item: Any, job: BatchJob, meta: Meta) -> tuple[str, Any]:
        client = self._client
        if "error" in item:
            status = item["error"]
            info = ErrorInfo(message=status.get("message"), code=str(status.get("code")))
            error = client._error(
                RPC_STATUS.get(status.get("code"), 500),
                info,
                job.request_id,
                _json.excerpt(status),
                fallback=f"batch request {key} failed",
            )
            return key, error
        return key, client._parse(client._parse_generate, item.get("response"), meta)
