"""Gemini's Files API, mounted by the Gemini fake: the resumable upload protocol under
``/upload/v1beta/files`` (``start`` answers with ``X-Goog-Upload-URL``; ``upload, finalize``
streams the bytes there, into a spooled file), and list, get, delete and download under
``/v1beta/files``. Uploads are ``source: UPLOADED`` and not downloadable, as on the real API;
``add_generated_file`` stores one as a model would generate it."""

from __future__ import annotations

import base64
import datetime
import itertools
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


def add_generated_file(
    server: FakeServer, content: bytes, display_name: str, mime_type: str = "video/mp4"
) -> str:
    """Store a file as a Gemini model would generate one (downloadable); its name."""
    files = store(server, "gemini", "files/up-")
    file_id = "files/gen-" + files.new_id().rpartition("-")[2]
    return files.add_bytes(content, filename=display_name, mime_type=mime_type, file_id=file_id).id


def setup(server: FakeServer, prefix: str = gemini.PREFIX) -> None:
    files = store(server, "gemini", "files/up-")
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

    def found(request: web.Request) -> StoredFile | web.Response:
        name = f"files/{request.match_info['id']}"
        stored = files.files.get(name)
        if stored is None:
            return gemini._error(
                403,
                f"You do not have permission to access the File {request.match_info['id']} or it may not exist.",
            )
        return stored

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

    async def get(request: web.Request) -> web.StreamResponse:
        stored = found(request)
        return stored if isinstance(stored, web.Response) else web.json_response(file_json(stored))

    async def delete(request: web.Request) -> web.StreamResponse:
        stored = found(request)
        if isinstance(stored, web.Response):
            return stored
        files.remove(stored.id)
        return web.json_response({})

    async def download(request: web.Request) -> web.StreamResponse:
        stored = found(request)
        if isinstance(stored, web.Response):
            return stored
        if not stored.downloadable or request.query.get("alt") != "media":
            return gemini._error(400, "Only generated files can be downloaded.")
        return await send_file(request, stored)

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
        ):
            guarded = _common.guarded(check_key, handler)
            server.add_route(method, base + path, guarded, error_body=gemini.error_body)
