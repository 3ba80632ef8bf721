"""The Files fakes, driven by the vendors' own SDKs: ``openai`` (``client.files``), ``anthropic``
(``client.beta.files``) and ``google-genai`` (``client.aio.files``, its resumable upload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes.anthropic_platform import add_tool_file
from tests.interop import require

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession from ClientSession:DeprecationWarning"
)


async def test_openai_sdk_files() -> None:
    openai = require("openai", "2")
    async with FakeServer("openai") as server:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.url("/v1"), max_retries=0)
        try:
            made = await client.files.create(file=("in.jsonl", b'{"a": 1}\n'), purpose="batch")
            assert (made.object, made.filename, made.bytes, made.purpose) == (
                "file",
                "in.jsonl",
                9,
                "batch",
            )
            page = await client.files.list(purpose="batch")
            assert [f.id for f in page.data] == [made.id]
            assert (await client.files.retrieve(made.id)).bytes == 9
            content = await client.files.content(made.id)
            assert content.content == b'{"a": 1}\n'
            deleted = await client.files.delete(made.id)
            assert deleted.deleted
            with pytest.raises(openai.NotFoundError):
                await client.files.retrieve(made.id)
        finally:
            await client.close()


async def test_anthropic_sdk_beta_files() -> None:
    anthropic = require("anthropic", "2")
    async with FakeServer("anthropic") as server:
        client = anthropic.AsyncAnthropic(api_key="k", base_url=server.url(), max_retries=0)
        try:
            made = await client.beta.files.upload(file=("n.txt", b"notes", "text/plain"))
            assert (made.filename, made.size_bytes, made.downloadable) == ("n.txt", 5, False)
            listed = await client.beta.files.list()
            assert [f.id for f in listed.data] == [made.id]
            assert (await client.beta.files.retrieve_metadata(made.id)).mime_type == "text/plain"
            tool_made = add_tool_file(server, b"a,b\n", "t.csv")
            got = await client.beta.files.download(tool_made)
            assert await got.read() == b"a,b\n"
            deleted = await client.beta.files.delete(made.id)
            assert deleted.type == "file_deleted"
        finally:
            await client.close()


async def test_genai_sdk_files(tmp_path: Path) -> None:
    genai = require("google.genai", "3")
    types = require("google.genai.types")
    async with FakeServer("gemini") as server:
        options = types.HttpOptions(
            base_url=server.url(""), retry_options=types.HttpRetryOptions(attempts=1)
        )
        client: Any = genai.Client(api_key="k", http_options=options)
        try:
            path = tmp_path / "cat.txt"
            path.write_bytes(b"meow" * 1000)
            made = await client.aio.files.upload(
                file=path, config={"display_name": "cat", "mime_type": "text/plain"}
            )
            assert (made.display_name, made.size_bytes, made.mime_type) == (
                "cat",
                4000,
                "text/plain",
            )
            got = await client.aio.files.get(name=made.name)
            assert got.uri == made.uri
            names = [f.name async for f in await client.aio.files.list()]
            assert names == [made.name]
            await client.aio.files.delete(name=made.name)
            assert [f.name async for f in await client.aio.files.list()] == []
        finally:
            await client.aio.aclose()
            client.close()
