"""Audio (transcriptions and translations on OpenAI, Groq and vLLM; speech on OpenAI) and
moderation (OpenAI), through the fakes."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm.testing import FakeServer

CLIENTS = {
    "openai": lambda s: asyncllm.OpenAI(api_key="k", base_url=s.url("/v1")),
    "groq": lambda s: asyncllm.Groq(api_key="k", base_url=s.url("/openai/v1")),
    "vllm": lambda s: asyncllm.VLLM(base_url=s.url("/v1")),
}


async def frames(count: int, size: int) -> AsyncIterator[bytes]:
    block = b"\x01" * size
    for _ in range(count):
        yield block


@pytest.mark.parametrize("protocol", list(CLIENTS))
async def test_transcription_and_translation(protocol: str, tmp_path: Path) -> None:
    async with FakeServer(protocol) as server, CLIENTS[protocol](server) as client:
        path = tmp_path / "talk.wav"
        path.write_bytes(b"RIFF" + b"\0" * 96)
        heard = await client.audio.transcriptions.create(path, model="whisper-1")
        assert heard.text == "transcript of talk.wav (100 bytes)"
        assert heard.request_id == server.request_ids[-1]
        sent = server.requests[-1]
        assert sent.path.endswith("/audio/transcriptions")
        assert sent.headers["Content-Type"].startswith("multipart/form-data")
        said = await client.audio.translations.create(
            b"abc", model="whisper-1", filename="f.mp3", response_format="text"
        )
        assert said.text == "translation of f.mp3 (3 bytes)"


async def test_transcription_formats() -> None:
    async with FakeServer("openai") as server, CLIENTS["openai"](server) as client:
        verbose = await client.audio.transcriptions.create(
            b"x" * 32000,
            model="whisper-1",
            filename="a.wav",
            language="de",
            response_format="verbose_json",
            temperature=0.2,
        )
        assert (verbose.language, verbose.duration) == ("de", 2.0)
        assert verbose.segments is not None and verbose.segments[0]["text"] == verbose.text
        srt = await client.audio.transcriptions.create(
            b"x", model="whisper-1", filename="a.wav", response_format="srt"
        )
        assert srt.text.startswith("1\n00:00:00,000 -->")
        with pytest.raises(asyncllm.BadRequestError):
            await client.audio.transcriptions.create(b"x", model="whisper-1", response_format="mp4")


async def test_bad_audio_arguments_are_refused_before_sending() -> None:
    async with FakeServer("openai") as server, CLIENTS["openai"](server) as client:
        with pytest.raises(asyncllm.ConfigurationError):
            await client.audio.transcriptions.create(b"x", model="w", temperature=3)
        with pytest.raises(asyncllm.ConfigurationError):
            await client.audio.transcriptions.create(123, model="w")  # type: ignore[arg-type]
        with pytest.raises(asyncllm.ConfigurationError):
            client.audio.speech.create("", voice="alloy", model="tts-1")
        with pytest.raises(asyncllm.ConfigurationError):
            client.audio.speech.create("hi", voice="alloy", model="tts-1", speed=9)
        with pytest.raises(asyncllm.ConfigurationError):
            await client.moderations.create([])
        assert server.request_count == 0


async def test_a_long_recording_is_streamed_up() -> None:
    """32 MiB of audio from an async iterator: never held whole (by client or fake)."""
    size = 32 * 1024 * 1024
    async with FakeServer("openai") as server, CLIENTS["openai"](server) as client:
        tracemalloc.start()
        try:
            heard = await client.audio.transcriptions.create(
                frames(size // 65536, 65536), model="whisper-1", filename="long.wav"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert heard.text == f"transcript of long.wav ({size} bytes)"
    assert peak < size // 4, peak


async def test_speech_is_streamed_down(tmp_path: Path) -> None:
    async with FakeServer("openai") as server, CLIENTS["openai"](server) as client:
        async with client.audio.speech.create(
            "hello there world", voice="alloy", model="tts-1", response_format="wav"
        ) as stream:
            pieces = [piece async for piece in stream]
        assert b"".join(pieces) == b"<wav:hello><wav:there><wav:world>"
        assert server.requests[-1].json == {
            "model": "tts-1",
            "input": "hello there world",
            "voice": "alloy",
            "response_format": "wav",
        }
        target = tmp_path / "out.mp3"
        written = await client.audio.speech.download("hi", target, voice="nova", model="tts-1")
        assert target.read_bytes() == b"<mp3:hi>" and written == 8
        with pytest.raises(asyncllm.BadRequestError):
            async with client.audio.speech.create("x", voice="nobody", model="tts-1") as stream:
                async for _ in stream:
                    pass


async def test_moderation() -> None:
    async with FakeServer("openai") as server, CLIENTS["openai"](server) as client:
        verdict = await client.moderations.create(["a nice day", "I will kill it"])
        assert [r.flagged for r in verdict.results] == [False, True]
        assert verdict.flagged and verdict.results[1].categories["violence"]
        assert verdict.model == "omni-moderation-latest"
        one: Any = await client.moderations.create("hello", model="omni-moderation-latest")
        assert not one.flagged
        assert server.requests[-1].json == {"input": "hello", "model": "omni-moderation-latest"}
