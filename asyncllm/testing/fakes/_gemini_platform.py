"""Gemini's Files API and batch generation, mounted by the Gemini fake. Batches:
``models/{model}:batchGenerateContent`` takes inline requests (each with ``metadata.key``), or
an uploaded JSONL file of ``{"key", "request"}`` lines (its results then go to a JSONL file of
``{"key", "response" | "error"}`` lines, served as a generated file), and
answers with the batch as a long-running operation, ``BATCH_STATE_PENDING``; each get moves it
on (``RUNNING``, then ``SUCCEEDED`` with ``output.inlinedResponses``: the fake model's answer per
request, or the ``google.rpc.Status`` of a request generateContent would refuse); cancel,
delete and list as the API has them. ``server.state["gemini.batches"]`` holds the batches. Files: the resumable upload protocol under
``/upload/v1beta/files`` (``start`` answers with ``X-Goog-Upload-URL``; ``upload, finalize``
streams the bytes there, into a spooled file), and list, get, delete and download under
``/v1beta/files``. Uploads are ``source: UPLOADED`` and not downloadable, as on the real API;
``gemini.add_generated_file`` stores one as a model would generate it."""

from __future__ import annotations

import base64
import datetime
import itertools
import json
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, gemini
from ._files import StoredFile, send_file, spool, store


def file_json(stored: StoredFile) -> dict[str, Any]:
    created = datetime.datetime.fromtimestamp(stored.created_at, datetime.timezone.utc)
    stamp = created.isoformat().replace("+00:00", "Z")
    return {
        "name": stored.id,
        "displayName": stored.filename,
        "mimeType": stored.mime_type,
        "sizeBytes": str(stored.size),
        "createTime": stamp,
        "updateTime": stamp,
        "uri": f"https://generativelanguage.googleapis.com/v1beta/{stored.id}",
        "state": "ACTIVE",
        "source": "GENERATED" if stored.downloadable else "UPLOADED",
    }


BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
ENDED = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED")


class Batch:
    def __init__(
        self,
        name: str,
        model: str,
        display_name: str,
        requests: list[Any],
        output_file: Any = None,
    ) -> None:
        self.name = name
        # Given for a batch whose input came in a file: writes its results to a file as well.
        self.output_file = output_file
        self.responses_file: str | None = None
        self.model = model
        self.display_name = display_name
        self.requests = requests
        self.state = "BATCH_STATE_PENDING"
        self.created = datetime.datetime.now(datetime.timezone.utc)
        self.output: list[dict[str, Any]] | None = None

    def advance(self, answer: Any) -> None:
        if self.state == "BATCH_STATE_PENDING":
            self.state = "BATCH_STATE_RUNNING"
        elif self.state == "BATCH_STATE_RUNNING":
            self.output = []
            for item in self.requests:
                meta = item.get("metadata")
                try:
                    reply: dict[str, Any] = {"response": answer(item.get("request"), self.model)}
                except gemini._Invalid as exc:
                    reply = {"error": {"code": 3, "message": str(exc)}}
                if meta is not None:
                    reply["metadata"] = meta
                self.output.append(reply)
            if self.output_file is not None:
                self.responses_file = self.output_file(self.output)
            self.state = "BATCH_STATE_SUCCEEDED"

    def json(self) -> dict[str, Any]:
        failed = sum(1 for r in self.output or () if "error" in r)
        done = self.output is not None
        stats = {
            "requestCount": str(len(self.requests)),
            "successfulRequestCount": str(len(self.requests) - failed if done else 0),
            "failedRequestCount": str(failed),
            "pendingRequestCount": str(0 if done else len(self.requests)),
        }
        metadata: dict[str, Any] = {
            "@type": BATCH_TYPE,
            "model": f"models/{self.model}",
            "displayName": self.display_name,
            "createTime": self.created.isoformat().replace("+00:00", "Z"),
            "state": self.state,
            "name": self.name,
            "batchStats": stats,
        }
        operation: dict[str, Any] = {"name": self.name, "metadata": metadata}
        if self.state in ENDED:
            operation["done"] = True
        if self.responses_file is not None:
            metadata["output"] = {"responsesFile": self.responses_file}
            operation["response"] = {"@type": OUTPUT_TYPE, "responsesFile": self.responses_file}
        elif self.output is not None:
            output = {"inlinedResponses": {"inlinedResponses": self.output}}
            metadata["output"] = output
            operation["response"] = {"@type": OUTPUT_TYPE, **output}
        return operation


def setup(server: FakeServer, prefix: str = gemini.PREFIX) -> None:
    files = store(server, "gemini", "files/up-")
    batches: dict[str, Batch] = server.state.setdefault("gemini.batches", {})
    batch_ids = itertools.count(1)
    answer = server.state["gemini.answer"]
    sessions: dict[str, dict[str, Any]] = {}
    session_ids = itertools.count(1)

    def check_key(request: web.Request) -> web.Response | None:
        if not request.headers.get("x-goog-api-key") and "key" not in request.query:
            return gemini._error(403, "Method doesn't allow unregistered callers.")
        return None

    async def upload(request: web.Request) -> web.StreamResponse:
        command = request.headers.get("X-Goog-Upload-Command", "")
        if request.headers.get("X-Goog-Upload-Protocol") == "resumable" and command == "start":
            refused = check_key(request)
            if refused is not None:
                return refused
            body = await request.json() if request.can_read_body else {}
            meta = body.get("file") if isinstance(body, dict) else None
            if meta is not None and not isinstance(meta, dict):
                return gemini._error(400, "file must be an object")
            sid = str(next(session_ids))
            sessions[sid] = {
                "displayName": (meta or {}).get("displayName") or (meta or {}).get("display_name"),
                "mimeType": request.headers.get(
                    "X-Goog-Upload-Header-Content-Type", "application/octet-stream"
                ),
            }
            url = f"{request.url.origin()}{request.path}?upload_id={sid}&upload_protocol=resumable"
            return web.Response(
                headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"}
            )
        session = sessions.get(request.query.get("upload_id", ""))
        if session is None:
            return gemini._error(404, "no such upload session")
        steps = [s.strip() for s in command.split(",")]
        if "upload" not in steps or "finalize" not in steps:
            return gemini._error(400, f"unsupported upload command {command!r}")
        if request.headers.get("X-Goog-Upload-Offset") != "0":
            return gemini._error(400, "the fake takes the whole file from offset 0")
        data, size = await spool(request.content)
        del sessions[request.query["upload_id"]]
        stored = files.add(
            data,
            size,
            filename=session["displayName"] or "",
            mime_type=session["mimeType"],
            downloadable=False,
        )
        return web.json_response(
            {"file": file_json(stored)}, headers={"X-Goog-Upload-Status": "final"}
        )

    found = _common.entry(
        files.files,
        "id",
        lambda name: gemini._error(
            403, f"You do not have permission to access the File {name} or it may not exist."
        ),
        prefix="files/",
    )

    async def list_files(request: web.Request) -> web.StreamResponse:
        try:
            size = int(request.query.get("pageSize") or 10)
            token = request.query.get("pageToken")
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            return gemini._error(400, "invalid page size or page token")
        every = [file_json(f) for f in reversed(files.files.values())]
        body: dict[str, Any] = {}
        if every[start : start + size]:
            body["files"] = every[start : start + size]
        if start + size < len(every):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return web.json_response(body)

    @_common.finding(found)
    async def get(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        return web.json_response(file_json(stored))

    @_common.finding(found)
    async def delete(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        files.remove(stored.id)
        return web.json_response({})

    @_common.finding(found)
    async def download(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        if not stored.downloadable or request.query.get("alt") != "media":
            return gemini._error(400, "Only generated files can be downloaded.")
        return await send_file(request, stored)

    async def create_batch(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        batch: dict[str, Any] = (body.get("batch") if isinstance(body, dict) else None) or {}
        config = batch.get("inputConfig") if isinstance(batch, dict) else None
        if not isinstance(batch, dict):
            return gemini._error(400, "batch must be an object")
        inline = (config or {}).get("requests") if isinstance(config, dict) else None
        items = inline.get("requests") if isinstance(inline, dict) else None
        output_file = None
        file_name = (config or {}).get("fileName") if isinstance(config, dict) else None
        if file_name is not None:
            stored = files.files.get(str(file_name))
            if stored is None:
                return gemini._error(404, f"File {file_name} not found.")
            items = []
            for line in stored.read().decode().splitlines():
                if line.strip():
                    record = json.loads(line)
                    items.append(
                        {"request": record.get("request"), "metadata": {"key": record.get("key")}}
                    )

            def output_file(replies: list[dict[str, Any]]) -> str:
                lines = []
                for reply in replies:
                    record = {k: v for k, v in reply.items() if k != "metadata"}
                    lines.append(json.dumps({"key": reply["metadata"]["key"], **record}))
                content = ("\n".join(lines) + "\n").encode()
                out = files.add_bytes(
                    content,
                    filename="batch-results",
                    mime_type="application/jsonl",
                    file_id="files/batch-" + files.new_id().rpartition("-")[2],
                )
                return out.id

        if not isinstance(items, list) or not items:
            return gemini._error(
                400, "batch.input_config.requests: at least one request is required"
            )
        if not all(isinstance(i, dict) and isinstance(i.get("request"), dict) for i in items):
            return gemini._error(400, "every inlined request needs a request object")
        name = f"batches/fake{next(batch_ids):06d}"
        made = Batch(
            name,
            request.match_info["model"],
            str(batch.get("displayName") or ""),
            items,
            output_file,
        )
        batches[name] = made
        return web.json_response(made.json())

    batch_of = _common.entry(
        batches,
        "id",
        lambda name: gemini._error(404, f"Batch batches/{name} not found."),
        prefix="batches/",
    )

    @_common.finding(batch_of)
    async def get_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        answer_now = batch.json()
        batch.advance(answer)  # the next look finds it one step further
        return web.json_response(answer_now)

    @_common.finding(batch_of)
    async def cancel_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        if batch.state not in ENDED:
            batch.state = "BATCH_STATE_CANCELLED"
        return web.json_response({})

    @_common.finding(batch_of)
    async def delete_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        del batches[batch.name]
        return web.json_response({})

    async def list_batches(request: web.Request) -> web.StreamResponse:
        every = [b.json() for b in reversed(batches.values())]
        size = int(request.query.get("pageSize") or 10)
        token = request.query.get("pageToken")
        start = int(token) if token else 0
        page: dict[str, Any] = {"operations": every[start : start + size]}
        if start + size < len(every):
            page["nextPageToken"] = str(start + size)
        return web.json_response(page)

    # The API answers under /v1 (google-genai's default) and /v1beta alike.
    for base in (prefix, "/v1") if prefix == gemini.PREFIX else (prefix,):
        server.add_route(
            "POST",
            f"/upload{base}/files",
            upload,  # the key starts a session; the session's id authorizes its upload
            error_body=gemini.error_body,
            read_body=False,
        )
        for method, path, handler in (
            ("GET", "/files", list_files),
            ("GET", "/files/{id:[^/:]+}:download", download),
            ("GET", "/files/{id:[^/:]+}", get),
            ("DELETE", "/files/{id:[^/:]+}", delete),
            ("POST", "/models/{model}:batchGenerateContent", create_batch),
            ("GET", "/batches", list_batches),
            ("POST", "/batches/{id:[^/:]+}:cancel", cancel_batch),
            ("GET", "/batches/{id:[^/:]+}", get_batch),
            ("DELETE", "/batches/{id:[^/:]+}", delete_batch),
        ):
            guarded = _common.guarded(check_key, handler)
            server.add_route(method, base + path, guarded, error_body=gemini.error_body)
