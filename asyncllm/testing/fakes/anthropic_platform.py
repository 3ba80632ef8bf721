"""Anthropic's Files API (beta) under ``/v1/files``, mounted by the Anthropic fake.

Anthropic documents the Files API as a beta behind ``anthropic-beta: files-api-2025-04-14``,
which asyncllm sends; the ``anthropic`` SDK (2.x) sends it only when asked, so the fake, like the
SDK's own expectations, does not insist on it. Uploads are not downloadable, as on the real API; ``add_tool_file`` stores a file as Anthropic's
code execution tool would make one, which is.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, anthropic
from ._files import StoredFile, read_form, send_file, store

FILES_BETA = "files-api-2025-04-14"


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


def add_tool_file(
    server: FakeServer, content: bytes, filename: str, mime_type: str = "text/plain"
) -> str:
    """Store a file as Anthropic's tools make one (downloadable); its id."""
    files = store(server, "anthropic", "file_")
    return files.add_bytes(content, filename=filename, mime_type=mime_type).id


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    files = store(server, "anthropic", "file_")

    def found(request: web.Request) -> StoredFile | web.Response:
        stored = files.files.get(request.match_info["file_id"])
        if stored is None:
            return anthropic._error(404, f"File not found: {request.match_info['file_id']}")
        return stored

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
        items = [file_json(f) for f in reversed(files.files.values())]
        after = request.query.get("after_id")
        try:
            limit = int(request.query.get("limit", 20))
        except ValueError:
            return anthropic._error(400, "limit: Input should be a valid integer")
        if after is not None:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        chosen = items[:limit]
        return web.json_response(
            {
                "data": chosen,
                "has_more": len(items) > limit,
                "first_id": chosen[0]["id"] if chosen else None,
                "last_id": chosen[-1]["id"] if chosen else None,
            }
        )

    async def retrieve(request: web.Request) -> web.StreamResponse:
        stored = found(request)
        return stored if isinstance(stored, web.Response) else web.json_response(file_json(stored))

    async def delete(request: web.Request) -> web.StreamResponse:
        stored = found(request)
        if isinstance(stored, web.Response):
            return stored
        files.remove(stored.id)
        return web.json_response({"id": stored.id, "type": "file_deleted"})

    async def content(request: web.Request) -> web.StreamResponse:
        stored = found(request)
        if isinstance(stored, web.Response):
            return stored
        if not stored.downloadable:
            return anthropic._error(400, f"File {stored.id} is not downloadable")
        return await send_file(request, stored)

    for method, path, handler, read_body in (
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
