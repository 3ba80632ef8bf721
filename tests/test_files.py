"""Files on OpenAI, through the fake: uploads streamed from a path, bytes or an async iterator,
listing with pagination, retrieve, delete and downloads; bad input refused before sending."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm.testing import FakeServer, MockResponse, MockTransport

PROTOCOLS = ("openai",)
FILES_BETA = "files-api-2025-04-14"  # the beta header Anthropic's Files API asks for


def make_client(server: FakeServer) -> asyncllm.OpenAI:
    return asyncllm.OpenAI(
        api_key="sk-test",
        base_url=server.url("/v1"),
        retry=asyncllm.RetryConfig(initial_delay=0, max_delay=0),
    )


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_upload_from_bytes_path_and_iterator(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    from_path = await client.files.create(path, purpose="batch")
    from_bytes = await client.files.create(b"hello", purpose="user_data", filename="h.txt")
    from_iter = await client.files.create(
        pieces(b"ab", b"cd"), purpose="user_data", filename="it.bin"
    )
    assert (from_path.filename, from_path.size, from_path.purpose) == ("data.jsonl", 9, "batch")
    assert (from_bytes.filename, from_bytes.size) == ("h.txt", 5)
    assert (from_iter.filename, from_iter.size) == ("it.bin", 4)
    assert from_path.request_id == server.request_ids[-3]
    sent = [r for r in server.requests if r.path == "/v1/files"]
    assert "Content-Length" in sent[0].headers  # a path's size is known: not chunked
    assert sent[2].headers.get("Transfer-Encoding") == "chunked"  # an iterator's is not
    assert from_path.raw["object"] == "file"
    got = b"".join([c async for c in await client.files.content(from_iter.id)])
    assert got == b"abcd"


async def test_list_pages_through_every_file(client: asyncllm.OpenAI, server: FakeServer) -> None:
    made = [
        await client.files.create(b"x" * n, purpose="user_data", filename=f"{n}")
        for n in range(1, 6)
    ]
    seen = [f.id async for f in client.files.list(limit=2, order="asc")]
    assert seen == [f.id for f in made]
    pages = [r for r in server.requests if r.method == "GET" and r.path == "/v1/files"]
    assert [r.query.get("after") for r in pages] == [None, made[1].id, made[3].id]
    only_batch = [f async for f in client.files.list(purpose="batch")]
    assert only_batch == []


async def test_retrieve_delete_and_not_found(client: asyncllm.OpenAI) -> None:
    made = await client.files.create(b"abc", purpose="user_data", filename="a")
    assert (await client.files.retrieve(made.id)).size == 3
    deleted = await client.files.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.files.retrieve(made.id)
    assert info.value.url is not None and made.id in info.value.url


async def test_download_streams_to_a_path(client: asyncllm.OpenAI, tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, several network pieces
    made = await client.files.create(content, purpose="user_data", filename="blob")
    target = tmp_path / "out.bin"
    assert await client.files.download(made.id, target) == len(content)
    assert target.read_bytes() == content
    assert not (tmp_path / "out.bin.part").exists()


async def test_failed_download_leaves_no_file(client: asyncllm.OpenAI, tmp_path: Path) -> None:
    target = tmp_path / "missing.bin"
    with pytest.raises(asyncllm.NotFoundError):
        await client.files.download("file-nope", target)
    assert await asyncio.to_thread(os.listdir, tmp_path) == []


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("/no/such/file", {"purpose": "batch"}, "not found"),
        (123, {"purpose": "batch"}, "must be a path, bytes or an async iterator"),
        (b"x", {"purpose": ""}, "purpose"),
        (b"x", {"purpose": "batch", "filename": 'a"b'}, "filename"),
    ],
)
async def test_bad_upload_refused_before_sending(
    client: asyncllm.OpenAI, server: FakeServer, source: Any, kwargs: Any, match: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=match):
        await client.files.create(source, **kwargs)
    assert server.request_count == 0


@pytest.mark.parametrize("file_id", ["", "a/b", "../models", "x?y=1", "a#b"])
async def test_ids_cannot_reach_another_path(
    client: asyncllm.OpenAI, server: FakeServer, file_id: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.files.retrieve(file_id)
    assert server.request_count == 0


async def test_iterator_upload_is_never_retried(
    client: asyncllm.OpenAI, server: FakeServer
) -> None:
    server.fail_next(1, status=500)
    with pytest.raises(asyncllm.InternalServerError) as info:
        await client.files.create(pieces(b"a"), purpose="user_data", filename="a")
    assert info.value.attempts == 1
    assert server.request_count == 1


@pytest.mark.parametrize("error", [asyncllm.APITimeoutError, asyncllm.APIConnectionError])
async def test_upload_is_not_retried_once_it_may_have_arrived(
    tmp_path: Path, error: type[asyncllm.APIError]
) -> None:
    """The upload was sent but no answer came (a read timeout, a dropped connection): sending it
    again could store the file twice, so the call raises, saying it may have been applied."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"{}\n")

    def handler(request: asyncllm.Request) -> MockResponse:
        raise error("no answer")

    transport = MockTransport(handler)
    async with asyncllm.OpenAI(
        api_key="k", base_url="http://127.0.0.1:9/v1", transport=transport
    ) as client:
        with pytest.raises(error) as info:
            await client.files.create(path, purpose="batch")
    assert info.value.may_have_been_applied and info.value.attempts == 1
    assert len(transport.requests) == 1


async def test_bytes_upload_retried_after_429(client: asyncllm.OpenAI, server: FakeServer) -> None:
    server.fail_next(1, status=429, retry_after="0")
    made = await client.files.create(b"abc", purpose="user_data", filename="a")
    assert made.size == 3 and server.request_count == 2


async def test_large_upload_is_streamed_not_held_in_memory(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path
) -> None:
    """A 48 MiB upload from a path and another from an async iterator: the process (client and
    fake server both) never holds more than a few MiB at once."""
    size = 48 * 1024 * 1024
    path = tmp_path / "big.bin"
    block = bytes(range(256)) * 4096
    with path.open("wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)

    async def generated() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    tracemalloc.start()
    try:
        made = await client.files.create(path, purpose="user_data")
        _, from_path = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        streamed = await client.files.create(generated(), purpose="user_data", filename="g")
        _, from_iter = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made.size == size and streamed.size == size
    assert from_path < size // 6, from_path
    assert from_iter < size // 6, from_iter


# -- Anthropic (beta Files API) ------------------------------------------------------------------


async def test_anthropic_files_round_trip(tmp_path: Path) -> None:
    from asyncllm.testing.fakes.anthropic import add_tool_file

    async with FakeServer("anthropic") as server:
        client = asyncllm.Claude(api_key="k", base_url=server.url(), betas=["other-beta"])
        async with client:
            path = tmp_path / "notes.txt"
            path.write_bytes(b"some notes")
            made = await client.files.create(path, content_type="text/plain")
            assert (made.filename, made.size, made.mime_type) == ("notes.txt", 10, "text/plain")
            assert made.downloadable is False
            sent = server.requests[-1].headers["anthropic-beta"]
            assert sent.split(",") == ["other-beta", FILES_BETA]
            more = [await client.files.create(b"x", filename=f"{n}") for n in range(3)]
            listed = [f.id async for f in client.files.list(limit=2)]
            assert listed == [f.id for f in reversed([made, *more])]
            assert (await client.files.retrieve(made.id)).filename == "notes.txt"
            count = server.request_count
            with pytest.raises(asyncllm.FileNotDownloadableError):
                await client.files.content(made)
            assert server.request_count == count  # refused before anything was sent
            with pytest.raises(asyncllm.FileNotDownloadableError):
                await client.files.download(made.id, tmp_path / "x")  # looked up first
            tool_made = add_tool_file(server, b"chart data", "chart.csv")
            assert await client.files.download(tool_made, tmp_path / "c.csv") == 10
            assert (tmp_path / "c.csv").read_bytes() == b"chart data"
            assert (await client.files.delete(made.id)).deleted
            with pytest.raises(asyncllm.NotFoundError):
                await client.files.retrieve(made.id)


async def test_anthropic_beta_header_kept_with_the_callers() -> None:

    async with (
        FakeServer("anthropic") as server,
        asyncllm.Claude(api_key="k", base_url=server.url()) as client,
    ):
        await client.files.create(b"x", filename="x", extra_headers={"Anthropic-Beta": "mine-1"})
        assert server.requests[-1].headers["anthropic-beta"] == f"mine-1,{FILES_BETA}"


# -- Gemini (resumable uploads) ------------------------------------------------------------------


async def test_gemini_files_round_trip(tmp_path: Path) -> None:
    from asyncllm.testing.fakes.gemini import add_generated_file

    async with (
        FakeServer("gemini") as server,
        asyncllm.Gemini(api_key="k", base_url=server.url("/v1beta")) as client,
    ):
        made = await client.files.create(
            pieces(b"GIF89a", b"..."), display_name="cat.gif", mime_type="image/gif"
        )
        start, finish = list(server.requests)[-2:]
        assert start.path == finish.path == "/upload/v1beta/files"
        assert start.headers["X-Goog-Upload-Command"] == "start"
        assert "X-Goog-Upload-Header-Content-Length" not in start.headers  # unknown size
        assert finish.headers["X-Goog-Upload-Command"] == "upload, finalize"
        assert (made.filename, made.size, made.mime_type) == ("cat.gif", 9, "image/gif")
        assert made.id.startswith("files/") and made.uri and made.status == "ACTIVE"
        sized = await client.files.create(b"abc", display_name="a")
        assert server.requests[-2].headers["X-Goog-Upload-Header-Content-Length"] == "3"
        typed = await client.files.create(b"%PDF", display_name="paper.pdf")
        assert typed.mime_type == "application/pdf"  # guessed from the name
        await client.files.delete(typed.id)
        listed = [f.id async for f in client.files.list(page_size=1)]
        assert listed == [sized.id, made.id]
        assert (await client.files.retrieve(made.id.removeprefix("files/"))).size == 9
        with pytest.raises(asyncllm.FileNotDownloadableError):
            await client.files.content(made)
        generated = add_generated_file(server, b"\x00video", "clip.mp4")
        chunks = [c async for c in await client.files.content(generated)]
        assert b"".join(chunks) == b"\x00video"
        await client.files.delete(made.id)
        with pytest.raises(asyncllm.PermissionDeniedError):  # as Gemini answers a gone file
            await client.files.retrieve(made.id)


async def test_gemini_upload_url_on_another_origin_is_refused() -> None:
    async with FakeServer("gemini") as server:

        async def elsewhere(request: Any) -> Any:
            from aiohttp import web

            return web.Response(headers={"X-Goog-Upload-URL": "http://198.51.100.7/steal"})

        server.overrides["/upload/v1beta/files"] = elsewhere
        async with asyncllm.Gemini(api_key="k", base_url=server.url("/v1beta")) as client:
            with pytest.raises(asyncllm.ResponseValidationError, match="another origin"):
                await client.files.create(b"x", display_name="x")
            assert server.request_count == 1


async def test_an_iterator_that_yields_no_bytes_is_a_configuration_error(
    client: asyncllm.OpenAI, server: FakeServer
) -> None:
    async def mixed() -> AsyncIterator[Any]:
        yield b"fine"
        yield "not bytes"

    with pytest.raises(asyncllm.ConfigurationError, match="must yield bytes, not str"):
        await client.files.create(mixed(), purpose="user_data", filename="m")
