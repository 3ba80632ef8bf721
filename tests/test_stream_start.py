"""``Stream.start()``: the request is sent and its errors raised before any chunk is taken."""

from __future__ import annotations

import pytest

import asyncllm
from asyncllm.testing import FakeServer

USER = [{"role": "user", "content": "say three words"}]
FAST = asyncllm.RetryConfig(initial_delay=0.0, max_delay=0.0, max_retries=2)


async def test_start_raises_the_status_error_before_any_chunk() -> None:
    async with FakeServer("openai") as server:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), retry=FAST)
        server.fail_next(1, status=401)
        stream = client.stream_chat(USER, model="m")
        with pytest.raises(asyncllm.AuthenticationError):
            await stream.start()
        assert server.request_count == 1
        assert client.dispatcher.stats()["openai"].in_flight == 0
        await client.aclose()


async def test_start_retries_then_the_first_chunk_is_still_yielded() -> None:
    async with FakeServer("openai") as server:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), retry=FAST)
        plain = [c.delta async for c in client.stream_chat(USER, model="m")]
        server.fail_next(2, status=503)
        async with client.stream_chat(USER, model="m") as stream:
            assert await stream.start() is stream
            assert stream.http is not None and stream.http.status == 200  # the answer arrived
            assert server.request_count == 4  # the plain stream, two failures, this one
            assert client.dispatcher.stats()["openai"].in_flight == 1
            started = [c.delta async for c in stream]
            await stream.start()  # again: nothing happens
        assert started == plain and "".join(started)
        final = client.stream_chat(USER, model="m")
        await final.start()
        assert (await final.final()).text == "".join(plain)
        await client.aclose()


async def test_a_started_stream_that_is_closed_unread_frees_its_slot() -> None:
    async with FakeServer("openai") as server:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), retry=FAST)
        stream = client.stream_chat(USER, model="m", deadline=30)
        await stream.start()
        lane = client.dispatcher.stats()["openai"]
        assert lane.in_flight == 1
        await stream.aclose()
        stats = client.dispatcher.stats()["openai"]
        assert stats.in_flight == 0 and stats.cancelled == 1
        await client.aclose()
