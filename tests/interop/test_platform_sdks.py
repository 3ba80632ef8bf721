"""The platform fakes, driven by the vendors' own SDKs: ``openai`` (files, batches,
fine-tuning, audio, moderation), ``anthropic`` (``client.beta.files``, message batches) and
``google-genai`` (``client.aio.files`` with its resumable upload, batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes.anthropic import add_tool_file
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


# -- batches, fine-tuning, audio, moderation -----------------------------------------------------


async def test_openai_sdk_batches_fine_tuning_audio_moderation() -> None:
    openai = require("openai", "2")
    async with FakeServer("openai") as server:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.url("/v1"), max_retries=0)
        try:
            line = (
                b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
                b'"body": {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}}\n'
            )
            made = await client.files.create(file=("in.jsonl", line), purpose="batch")
            batch = await client.batches.create(
                input_file_id=made.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            while batch.status != "completed":
                batch = await client.batches.retrieve(batch.id)
            assert batch.request_counts.completed == 1
            output = await client.files.content(batch.output_file_id)
            assert b'"echo: hi"' in output.content
            assert [b.id async for b in client.batches.list()] == [batch.id]

            data = await client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
            job = await client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=data.id)
            while job.status != "succeeded":
                job = await client.fine_tuning.jobs.retrieve(job.id)
            events = await client.fine_tuning.jobs.list_events(job.id)
            assert events.data[0].message == "The job has successfully completed"
            checkpoints = await client.fine_tuning.jobs.checkpoints.list(job.id)
            assert [c.step_number for c in checkpoints.data] == [20, 10]

            heard = await client.audio.transcriptions.create(
                file=("a.wav", b"RIFF0000"), model="whisper-1"
            )
            assert heard.text == "transcript of a.wav (8 bytes)"
            speech = await client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
            assert speech.content == b"<mp3:hi>"
            verdict = await client.moderations.create(input="I will kill it")
            assert verdict.results[0].flagged and verdict.results[0].categories.violence
        finally:
            await client.close()


async def test_anthropic_sdk_message_batches() -> None:
    anthropic = require("anthropic", "2")
    async with FakeServer("anthropic") as server:
        client = anthropic.AsyncAnthropic(api_key="k", base_url=server.url(), max_retries=0)
        try:
            params = {
                "model": "fake-chat",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            }
            batch = await client.messages.batches.create(
                requests=[{"custom_id": "a", "params": params}]
            )
            while batch.processing_status != "ended":
                batch = await client.messages.batches.retrieve(batch.id)
            assert batch.request_counts.succeeded == 1
            results = [r async for r in await client.messages.batches.results(batch.id)]
            assert results[0].custom_id == "a"
            assert results[0].result.type == "succeeded"
            assert results[0].result.message.content[0].text == "echo: hi"
            deleted = await client.messages.batches.delete(batch.id)
            assert deleted.type == "message_batch_deleted"
        finally:
            await client.close()


async def test_genai_sdk_batches() -> None:
    genai = require("google.genai", "3")
    types = require("google.genai.types")
    async with FakeServer("gemini") as server:
        options = types.HttpOptions(
            base_url=server.url(""), retry_options=types.HttpRetryOptions(attempts=1)
        )
        client: Any = genai.Client(api_key="k", http_options=options)
        try:
            job = await client.aio.batches.create(
                model="gemini-2.0-flash",
                src=[{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}],
            )
            assert job.name.startswith("batches/")
            while job.state.name != "JOB_STATE_SUCCEEDED":
                job = await client.aio.batches.get(name=job.name)
            response = job.dest.inlined_responses[0].response
            assert response.text == "echo: hi"
            await client.aio.batches.delete(name=job.name)
        finally:
            await client.aio.aclose()
            client.close()
