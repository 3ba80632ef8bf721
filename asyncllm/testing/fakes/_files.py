"""A file store the platform fakes share: uploads are streamed into spooled temporary files (in
memory up to 1 MiB, on disk beyond), so a large upload costs the test process no memory, and
served back in pieces."""

from __future__ import annotations

import itertools
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from aiohttp import BodyPartReader, web

from .. import FakeServer

SPOOL_BYTES = 1024 * 1024
CHUNK = 256 * 1024


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str | None
    mime_type: str
    created_at: int
    data: IO[bytes] = field(repr=False)
    size: int
    downloadable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def read(self) -> bytes:
        """The whole content (for the fakes' batch inputs, which are small)."""
        self.data.seek(0)
        return self.data.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        self.data.seek(0)
        while chunk := self.data.read(CHUNK):
            yield chunk


class FileStore:
    """The files of one fake server, by id, in upload order."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.files: dict[str, StoredFile] = {}
        self._ids = itertools.count(1)

    def remove(self, file_id: str) -> None:
        self.files.pop(file_id).data.close()

    def new_id(self) -> str:
        return f"{self.prefix}{next(self._ids):06d}"

    def add(
        self,
        data: IO[bytes],
        size: int,
        *,
        filename: str,
        purpose: str | None = None,
        mime_type: str = "application/octet-stream",
        downloadable: bool = True,
        file_id: str | None = None,
    ) -> StoredFile:
        stored = StoredFile(
            file_id or self.new_id(),
            filename,
            purpose,
            mime_type,
            int(time.time()),
            data,
            size,
            downloadable,
        )
        self.files[stored.id] = stored
        return stored

    def add_bytes(self, content: bytes, **kwargs: Any) -> StoredFile:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - kept open
        spool.write(content)
        return self.add(spool, len(content), **kwargs)


def store(server: FakeServer, name: str, prefix: str) -> FileStore:
    """The server's store called ``name`` (one per protocol), made on first use."""
    key = f"files.{name}"
    found: FileStore | None = server.state.get(key)
    if found is None:
        found = server.state[key] = FileStore(prefix)
        files = found.files

        async def close(app: web.Application) -> None:
            for stored in files.values():
                stored.data.close()

        server.app.on_cleanup.append(close)
    return found


def cursor_page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """The page of ``items`` (already in order) that follows the item ``after`` names (none
    when no item has that id), ``limit`` long, in the ``data``/``has_more``/``first_id``/
    ``last_id`` shape OpenAI's and Anthropic's listings share."""
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    chosen = items[:limit]
    return {
        "data": chosen,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
        "has_more": len(items) > limit,
    }


async def spool(reader: Any) -> tuple[IO[bytes], int]:
    """Read a multipart part (or a request's ``content``) in pieces into a spooled file: its
    handle and size."""
    read = reader.read_chunk if hasattr(reader, "read_chunk") else reader.read
    data = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - kept open
    size = 0
    while True:
        with warnings.catch_warnings():
            # aiohttp reads a part of unknown length with its deprecated unread_data().
            warnings.simplefilter("ignore", DeprecationWarning)
            chunk = await read(CHUNK)
        if not chunk:
            return data, size
        data.write(chunk)
        size += len(chunk)


async def read_form(
    request: web.Request, file_field: str
) -> tuple[dict[str, str], tuple[IO[bytes], int, str, str] | None]:
    """A multipart form's text fields, and its file part streamed to a spool as (data, size,
    filename, content type), or None without one."""
    fields: dict[str, str] = {}
    upload = None
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            return fields, upload
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == file_field and part.filename is not None:
            data, size = await spool(part)
            mime = part.headers.get("Content-Type", "application/octet-stream")
            upload = (data, size, part.filename, mime)
        else:
            fields[part.name] = await part.text()


async def send_file(request: web.Request, stored: StoredFile) -> web.StreamResponse:
    """The file's content, streamed in pieces."""
    response = web.StreamResponse(
        headers={"Content-Type": stored.mime_type, "Content-Length": str(stored.size)}
    )
    await response.prepare(request)
    async for chunk in stored.chunks():
        await response.write(chunk)
    await response.write_eof()
    return response
