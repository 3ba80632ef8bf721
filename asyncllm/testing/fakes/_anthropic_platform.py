"""Anthropic's Files API (beta) under ``/v1/files`` and Message Batches under
``/v1/messages/batches``, mounted by the Anthropic fake.

A batch is ``in_progress`` when made and ``ended`` from its second retrieve on (as a real batch
ends hours later); each request is then answered by the fake model (``succeeded``) or refused as
the Messages API would refuse it (``errored``, with its ``invalid_request_error``).
``server.state["anthropic.batches"]`` holds the batches.

Anthropic documents the Files API as a beta behind ``anthropic-beta: files-api-2025-04-14``,
which asyncllm sends; the ``anthropic`` SDK (2.x) sends it only when asked, so the fake, like the
SDK's own expectations, does not insist on it. Uploads are not downloadable, as on the real API;
``anthropic.add_tool_file`` stores a file as Anthropic's code execution tool would make one,
which is.
"""

from __future__ import annotations

import datetime
import itertools
import json
import time
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, anthropic
from ._files import StoredFile, cursor_page, read_form, send_file, store


def file_json(stored: StoredFile) -> dict[str, Any]:
    created = datetime.datetime.fromtimestamp(stored.created_at, datetime.timezone.utc)
    return {
        "id": stored.id,
        "type": "file",
        "filename": stored.filename,
        "mime_type": stored.mime_type,
        "size_bytes": stored.size,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "downloadable": stored.downloadable,
    }


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def answer(params: Any) -> dict[str, Any]:
    """One batch request's result: the message the fake model answers, or the error the
    Messages API would give."""
    try:
        body, turns = anthropic._common_body(params)
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise anthropic._Invalid("max_tokens: Field required")
        text, calls = anthropic._plan(turns, body.get("tools"))
    except anthropic._Invalid as exc:
        error = anthropic.error_body(400, str(exc))
        return {"type": "errored", "error": error}
    text, stop_reason, stop_sequence = anthropic._finish(text, calls, body)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    message = {
        "id": f"msg_batch{next(_message_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content + calls,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": anthropic._input_tokens(body, turns),
            "output_tokens": _common.count_tokens(text) + 10 * len(calls),
        },
    }
    return {"type": "succeeded", "message": message}


_message_ids = itertools.count(1)


class Batch:
    def __init__(self, batch_id: str, requests: list[dict[str, Any]], url: str) -> None:
        self.id = batch_id
        self.requests = requests
        self.url = url
        self.looks = 0
        self.created = time.time()
        self.ended_at: float | None = None
        self.cancelled_at: float | None = None
        self.results: list[dict[str, Any]] = []

    def end(self) -> None:
        if self.ended_at is not None:
            return
        self.ended_at = time.time()
        for request in self.requests:
            if self.cancelled_at is not None:
                result: dict[str, Any] = {"type": "canceled"}
            else:
                result = answer(request.get("params"))
            self.results.append({"custom_id": request["custom_id"], "result": result})

    def json(self) -> dict[str, Any]:
        ended = self.ended_at is not None
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if ended:
            for line in self.results:
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(self.requests)
        status = "ended" if ended else "canceling" if self.cancelled_at else "in_progress"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": None if self.ended_at is None else _stamp(self.ended_at),
            "created_at": _stamp(self.created),
            "expires_at": _stamp(self.created + 86400),
            "archived_at": None,
            "cancel_initiated_at": None if self.cancelled_at is None else _stamp(self.cancelled_at),
            "results_url": f"{self.url}/{self.id}/results" if ended else None,
        }


def page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
    """A page of ``items`` (already in order) after ``?after_id=`` with ``?limit=`` (20)."""
    try:
        limit = int(request.query.get("limit", 20))
    except ValueError:
        return anthropic._error(400, "limit: Input should be a valid integer")
    return web.json_response(cursor_page(items, request.query.get("after_id"), limit))


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    files = store(server, "anthropic", "file_")
    batches: dict[str, Batch] = server.state.setdefault("anthropic.batches", {})
    batch_ids = itertools.count(1)

    found = _common.entry(
        files.files, "file_id", lambda name: anthropic._error(404, f"File not found: {name}")
    )

    async def create(request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            return anthropic._error(400, "the request must be multipart/form-data")
        _, upload = await read_form(request, "file")
        if upload is None:
            return anthropic._error(400, "file: Field required")
        data, size, filename, mime = upload
        stored = files.add(data, size, filename=filename, mime_type=mime, downloadable=False)
        return web.json_response(file_json(stored))

    async def list_files(request: web.Request) -> web.StreamResponse:
        return page([file_json(f) for f in reversed(files.files.values())], request)

    @_common.finding(found)
    async def retrieve(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        return web.json_response(file_json(stored))

    @_common.finding(found)
    async def delete(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        files.remove(stored.id)
        return web.json_response({"id": stored.id, "type": "file_deleted"})

    @_common.finding(found)
    async def content(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        if not stored.downloadable:
            return anthropic._error(400, f"File {stored.id} is not downloadable")
        return await send_file(request, stored)

    async def create_batch(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return anthropic._error(400, "requests: Field required")
        ids = []
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
                return anthropic._error(400, f"requests.{n}.custom_id: Field required")
            if not isinstance(item.get("params"), dict):
                return anthropic._error(400, f"requests.{n}.params: Field required")
            ids.append(item["custom_id"])
        if len(set(ids)) != len(ids):
            return anthropic._error(400, "custom_id values must be unique within a batch")
        url = f"{request.url.origin()}{prefix}/messages/batches"
        batch = Batch(f"msgbatch_{next(batch_ids):06d}", items, url)
        batches[batch.id] = batch
        return web.json_response(batch.json())

    batch_of = _common.entry(
        batches, "batch_id", lambda name: anthropic._error(404, f"batch not found: {name}")
    )

    @_common.finding(batch_of)
    async def retrieve_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        batch.looks += 1
        if batch.looks >= 2:
            batch.end()
        return web.json_response(batch.json())

    @_common.finding(batch_of)
    async def cancel_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        if batch.ended_at is None and batch.cancelled_at is None:
            batch.cancelled_at = time.time()
        return web.json_response(batch.json())

    @_common.finding(batch_of)
    async def delete_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        if batch.ended_at is None:
            return anthropic._error(400, "a batch must end (or be canceled) before it is deleted")
        del batches[batch.id]
        return web.json_response({"id": batch.id, "type": "message_batch_deleted"})

    @_common.finding(batch_of)
    async def batch_results(request: web.Request, batch: Batch) -> web.StreamResponse:
        if batch.ended_at is None:
            return anthropic._error(400, f"batch {batch.id} has not ended: no results yet")
        response = web.StreamResponse(headers={"Content-Type": "application/binary"})
        await response.prepare(request)
        for line in batch.results:
            await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response

    async def list_batches(request: web.Request) -> web.StreamResponse:
        return page([b.json() for b in reversed(batches.values())], request)

    for method, path, handler, read_body in (
        ("POST", "/messages/batches", create_batch, True),
        ("GET", "/messages/batches", list_batches, True),
        ("GET", "/messages/batches/{batch_id}", retrieve_batch, True),
        ("DELETE", "/messages/batches/{batch_id}", delete_batch, True),
        ("POST", "/messages/batches/{batch_id}/cancel", cancel_batch, True),
        ("GET", "/messages/batches/{batch_id}/results", batch_results, True),
        ("POST", "/files", create, False),
        ("GET", "/files", list_files, True),
        ("GET", "/files/{file_id}", retrieve, True),
        ("DELETE", "/files/{file_id}", delete, True),
        ("GET", "/files/{file_id}/content", content, True),
    ):
        server.add_route(
            method,
            prefix + path,
            _common.guarded(anthropic._check_headers, handler),
            error_body=anthropic.error_body,
            read_body=read_body,
        )
