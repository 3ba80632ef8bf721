"""Failures that tell the truth, stream half: streams bounded by time (``timeout`` an idle limit
that pings do not reset, ``deadline`` over the whole call, reading included), readers that never
stall the event loop (decompression bombs, floods of blank lines), and ``aclose`` ending open
streams. Timing is on the injected clock where timing is the point; real sockets (loopback) where
the socket is."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

import asyncllm
from asyncllm import Dispatcher
from asyncllm._constants import DEFAULT_MAX_NOISE_BYTES
from asyncllm._http._transport import iter_lines, iter_ndjson, iter_sse
from asyncllm.testing import FakeClock, MockResponse, MockTransport

MESSAGES = [{"role": "user", "content": "hi"}]


def chunk_event(text: str, finish: str | None = None) -> bytes:
    payload = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


# -- helpers -----------------------------------------------------------------------------------


class Timed(MockResponse):
    """A streamed body whose pieces come with pauses on the fake clock: ``(seconds, bytes)``."""

    def __init__(self, clock: FakeClock, steps: list[tuple[float, bytes]]) -> None:
        super().__init__(200, headers={"Content-Type": "text/event-stream"})
        self.clock = clock
        self.steps = steps
        self.sent = 0

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for pause, data in self.steps:
            if pause:
                await self.clock.sleep(pause)
            self.sent += 1
            yield data


def fake_client(
    clock: FakeClock, respond: Callable[[], MockResponse], **options: Any
) -> asyncllm.OpenAI:
    return asyncllm.OpenAI(
        api_key="k",
        base_url="http://llm.test/v1",
        transport=MockTransport(lambda request: respond()),
        dispatcher=Dispatcher(clock=clock, sleep=clock.sleep),
        **options,
    )


async def read_all(stream: Any, between: Callable[[], None] | None = None) -> list[str]:
    got: list[str] = []
    async with stream:
        async for chunk in stream:
            got.append(chunk.delta)
            if between is not None:
                between()
    return got


@contextlib.asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A hostile server on a loopback port; yields its ``/v1`` base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def sse_response(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


class LagMonitor:
    """A task that sleeps 10 ms in a loop and records the worst overshoot: how long the event
    loop was held by someone else."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - start - 0.01)

    async def __aenter__(self) -> LagMonitor:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- 1. streams bounded by time (injected clock) -----------------------------------------------


async def test_pings_do_not_keep_a_stream_open_past_its_timeout() -> None:
    clock = FakeClock()
    # A first chunk, then nothing but keep-alive pings every 0.5 s (for 30 s, so that the old
    # code ends instead of hanging: it read all of them and "succeeded").
    steps = [(0.0, chunk_event("a")), *[(0.5, PING)] * 60]
    response = Timed(clock, steps)
    client = fake_client(clock, lambda: response)
    start = clock()
    got: list[str] = []
    with pytest.raises(asyncllm.APITimeoutError, match="idle"):
        stream = client.stream_chat(MESSAGES, model="m", timeout=2, max_retries=0)
        async for chunk in stream:
            got.append(chunk.delta)
    assert got == ["a"]
    assert 2.0 <= clock() - start <= 2.5
    assert response.closed
    await client.aclose()


async def test_pings_before_the_first_chunk_are_cut_and_retried_within_the_timeout() -> None:
    clock = FakeClock()
    responses: list[Timed] = []

    def respond() -> Timed:
        responses.append(Timed(clock, [(0.5, PING)] * 60))
        return responses[-1]

    client = fake_client(clock, respond, max_retries=1)
    with pytest.raises(asyncllm.APITimeoutError) as info:
        await read_all(client.stream_chat(MESSAGES, model="m", timeout=2))
    assert info.value.attempts == 2  # no chunk reached the caller: retried once
    assert all(r.sent <= 5 for r in responses)
    await client.aclose()


async def test_pings_do_not_keep_a_stream_open_past_its_deadline() -> None:
    clock = FakeClock()
    client = fake_client(clock, lambda: Timed(clock, [(0.5, PING)] * 60))
    start = clock()
    with pytest.raises(asyncllm.APITimeoutError, match="deadline"):
        await read_all(client.stream_chat(MESSAGES, model="m", deadline=2, timeout=math.inf))
    assert clock() - start <= 2.5
    await client.aclose()


async def test_real_chunks_do_not_run_past_the_deadline() -> None:
    clock = FakeClock()
    steps = [(0.5, chunk_event(str(i))) for i in range(20)] + [(0.0, DONE)]
    client = fake_client(clock, lambda: Timed(clock, steps))
    start = clock()
    got: list[str] = []
    with pytest.raises(asyncllm.APITimeoutError, match="deadline"):
        async for chunk in client.stream_chat(MESSAGES, model="m", deadline=2, timeout=1):
            got.append(chunk.delta)
    assert got == ["0", "1", "2"]  # at 0.5, 1.0, 1.5; the one at 2.0 is past the deadline
    assert clock() - start <= 2.0
    await client.aclose()


async def test_time_the_caller_spends_between_chunks_counts_toward_the_deadline() -> None:
    clock = FakeClock()
    steps = [(0.0, chunk_event(str(i))) for i in range(5)] + [(0.0, DONE)]
    client = fake_client(clock, lambda: Timed(clock, steps))
    got: list[str] = []
    with pytest.raises(asyncllm.APITimeoutError, match="deadline"):
        async for chunk in client.stream_chat(MESSAGES, model="m", deadline=2):
            got.append(chunk.delta)
            clock.advance(1.5)  # the caller's own work
    assert got == ["0", "1"]
    # The same stream read promptly is complete.
    assert await read_all(client.stream_chat(MESSAGES, model="m", deadline=2)) == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]
    await client.aclose()


async def test_slow_but_steady_chunks_are_within_the_idle_timeout() -> None:
    clock = FakeClock()
    steps = [(1.5, PING + chunk_event(str(i))) for i in range(10)] + [(0.0, DONE)]
    client = fake_client(clock, lambda: Timed(clock, steps))
    got = await read_all(client.stream_chat(MESSAGES, model="m", timeout=2))
    assert got == [str(i) for i in range(10)]  # 15 s in all, never 2 s without data
    await client.aclose()


# -- 1. the same on a real socket --------------------------------------------------------------


async def pinging(request: web.Request) -> web.StreamResponse:
    response = await sse_response(request)
    await response.write(chunk_event("a"))
    for _ in range(50):  # 5 s of pings, then the stream ends (without [DONE])
        await asyncio.sleep(0.1)
        await response.write(PING)
    return response


@pytest.mark.parametrize("limit", ["timeout", "deadline"])
async def test_a_server_pinging_every_100ms_is_cut_at_the_limit(limit: str) -> None:
    async with serve(pinging) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)
        options: dict[str, Any] = {"timeout": 0.5} if limit == "timeout" else {"deadline": 0.5}
        started = time.monotonic()
        got: list[str] = []
        with pytest.raises(asyncllm.APITimeoutError) as info:

            async def read() -> None:
                async for chunk in client.stream_chat(MESSAGES, model="m", **options):
                    got.append(chunk.delta)

            await asyncio.wait_for(read(), 2.5)
        elapsed = time.monotonic() - started
        assert got == ["a"]
        assert 0.4 <= elapsed <= 1.5
        assert info.value.url is not None and info.value.url.endswith("/v1/chat/completions")
        await client.aclose()


async def test_a_server_silent_after_its_first_chunk_is_cut_at_the_idle_timeout() -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        response = await sse_response(request)
        await response.write(chunk_event("a"))
        await asyncio.sleep(5)
        return response

    async with serve(silent) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)
        started = time.monotonic()
        with pytest.raises(asyncllm.APITimeoutError):
            await asyncio.wait_for(
                read_all(client.stream_chat(MESSAGES, model="m", timeout=0.4)), 2.5
            )
        assert time.monotonic() - started <= 1.5
        await client.aclose()


async def test_steady_chunks_outlast_the_timer_armed_at_the_first_and_silence_is_cut() -> None:
    # One timer serves many waits: it fires during a later wait, sleeps on to that wait's limit,
    # and cuts only a wait that really outlasts the timeout.
    async def steady_then_silent(request: web.Request) -> web.StreamResponse:
        response = await sse_response(request)
        for i in range(8):  # 1.2 s of chunks, 0.15 s apart: three times the timeout in all
            await response.write(chunk_event(str(i)))
            await asyncio.sleep(0.15)
        await asyncio.sleep(5)
        return response

    async with serve(steady_then_silent) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)
        got: list[str] = []
        with pytest.raises(asyncllm.APITimeoutError, match="stream idle"):

            async def read() -> None:
                async for chunk in client.stream_chat(MESSAGES, model="m", timeout=0.4):
                    got.append(chunk.delta)

            await asyncio.wait_for(read(), 4)
        assert got == [str(i) for i in range(8)]
        await client.aclose()


# -- 2. event-loop stalls: bombs and floods ----------------------------------------------------


def blank_line_bomb(compressed_size: int) -> bytes:
    """gzip of blank lines: ~1 KiB per MiB."""
    body = gzip.compress(b"\n" * (compressed_size * 1024), compresslevel=9)
    assert compressed_size * 0.8 < len(body) < compressed_size * 1.3
    return body


@pytest.mark.parametrize("size", [8 * 1024, 16 * 1024])
async def test_a_gzip_bomb_of_blank_lines_neither_stalls_the_loop_nor_passes(size: int) -> None:
    bomb = blank_line_bomb(size)  # 8 MiB and 16 MiB of blank lines

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=bomb,
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
        )

    async with serve(handler) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)  # imports done
        async with LagMonitor() as lag:
            with pytest.raises(asyncllm.ResponseValidationError, match="carry no event"):
                await asyncio.wait_for(read_all(client.stream_chat(MESSAGES, model="m")), 30)
        await client.aclose()
    assert lag.worst < 0.1, f"the event loop was held for {lag.worst * 1000:.0f} ms"


async def test_megabytes_of_uncompressed_blank_lines_neither_stall_nor_pass() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await sse_response(request)
        with contextlib.suppress(ConnectionError):
            await response.write(b"\n" * (8 * 1024 * 1024))
        return response

    async with serve(handler) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)  # imports done
        async with LagMonitor() as lag:
            with pytest.raises(asyncllm.ResponseValidationError, match="carry no event"):
                await asyncio.wait_for(read_all(client.stream_chat(MESSAGES, model="m")), 30)
        await client.aclose()
    assert lag.worst < 0.1, f"the event loop was held for {lag.worst * 1000:.0f} ms"


async def test_a_gzip_bomb_of_real_events_hits_the_decompression_ratio() -> None:
    # Real events compress about 100x too well to be anything but a bomb: the noise budget
    # cannot catch these (each is an event), the ratio bound does.
    body = gzip.compress(chunk_event("x") * 200_000, compresslevel=9)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        )

    async with serve(handler) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)
        got = 0
        with pytest.raises(asyncllm.ResponseValidationError, match="decompresses to more"):
            async for _ in client.stream_chat(MESSAGES, model="m"):
                got += 1
        assert 0 < got < 200_000
        await client.aclose()


async def test_a_gzip_bomb_answer_is_refused_by_the_decompression_ratio() -> None:
    answer = {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a" * 20_000_000}}],
    }
    body = gzip.compress(json.dumps(answer).encode(), compresslevel=9)  # ~20 KB

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async with serve(handler) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, max_retries=0)
        with pytest.raises(asyncllm.ResponseValidationError, match="decompresses to more"):
            await client.chat(MESSAGES, model="m")
        await client.aclose()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_and_streams_still_decode(encoding: str) -> None:
    seen: list[str | None] = []

    def compress(data: bytes) -> bytes:
        if encoding == "gzip":
            return gzip.compress(data)
        if encoding == "deflate":
            return zlib.compress(data)
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return c.compress(data) + c.flush()

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Accept-Encoding"))
        name = "deflate" if encoding == "raw-deflate" else encoding
        if (await request.json()).get("stream"):
            return web.Response(
                body=compress(chunk_event("he") + PING + chunk_event("llo", "stop") + DONE),
                headers={"Content-Type": "text/event-stream", "Content-Encoding": name},
            )
        answer = {
            "id": "c",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        }
        return web.Response(
            body=compress(json.dumps(answer).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": name},
        )

    async with serve(handler) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url)
        assert (await client.chat(MESSAGES, model="m")).text == "hello"
        assert "".join(await read_all(client.stream_chat(MESSAGES, model="m"))) == "hello"
        await client.aclose()
    # Only what the client decodes itself is asked for.
    assert seen == ["gzip, deflate", "gzip, deflate"]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_the_noise_budget_is_reset_by_each_event() -> None:
    pings = PING * ((DEFAULT_MAX_NOISE_BYTES - 100) // len(PING))  # just under the budget
    body = [pings, b"data: 1\n\n", pings, b"data: 2\n\n", pings]
    events = [e.data async for e in iter_sse(iter_lines(chunks(*body)), DEFAULT_MAX_NOISE_BYTES)]
    assert events == ["1", "2"]
    with pytest.raises(asyncllm.ResponseValidationError, match="carry no event"):
        async for _ in iter_sse(iter_lines(chunks(pings, pings)), DEFAULT_MAX_NOISE_BYTES):
            pass
    # Fields of events that never carry data are noise too.
    with pytest.raises(asyncllm.ResponseValidationError, match="carry no event"):
        async for _ in iter_sse(iter_lines(chunks(b"event: x\n\n" * 10_000)), 64 * 1024):
            pass
    # NDJSON: blank lines; a plain line reader: blank and comment lines.
    blank = b"\n" * (DEFAULT_MAX_NOISE_BYTES - 10)
    got = [v async for v in iter_ndjson(iter_lines(chunks(blank, b"1\n", blank, b"2\n")), 65536)]
    assert got == [1, 2]
    with pytest.raises(asyncllm.ResponseValidationError, match="carry no event"):
        async for _ in iter_ndjson(iter_lines(chunks(blank, blank)), DEFAULT_MAX_NOISE_BYTES):
            pass
    with pytest.raises(asyncllm.ResponseValidationError, match="carry no event"):
        async for _ in iter_lines(chunks(pings, pings), max_noise=DEFAULT_MAX_NOISE_BYTES):
            pass


async def test_readers_give_the_loop_a_turn_per_network_chunk() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    seen: list[int] = []
    body = [chunk_event(str(i)).replace(b"data: ", b"data:") for i in range(50)]
    async for _ in iter_sse(iter_lines(chunks(*body))):  # a source that never suspends
        seen.append(ticks)
    task.cancel()
    assert len(seen) == 50
    assert seen[-1] - seen[0] >= 45  # the other task ran between (nearly) every two chunks


# -- 3. aclose ends open streams ---------------------------------------------------------------


async def test_aclose_ends_open_streams_with_client_closed_error() -> None:
    async def first_then_silence(request: web.Request) -> web.StreamResponse:
        response = await sse_response(request)
        await response.write(chunk_event("a"))
        await asyncio.sleep(5)
        return response

    async with serve(first_then_silence) as url:
        client = asyncllm.OpenAI(api_key="k", base_url=url, close_timeout=0.3, timeout=3)
        firsts = asyncio.Event()
        count = 0

        async def reader() -> BaseException | None:
            nonlocal count
            try:
                async for _ in client.stream_chat(MESSAGES, model="m"):
                    count += 1
                    if count == 3:
                        firsts.set()
            except BaseException as exc:
                return exc
            return None

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        await asyncio.wait_for(firsts.wait(), 2)
        started = time.monotonic()
        await client.aclose()
        done, pending = await asyncio.wait(readers, timeout=1)
        for task in pending:
            task.cancel()
        assert not pending, "readers still hanging after aclose"
        assert time.monotonic() - started < 1.0
        for task in done:
            assert isinstance(task.result(), asyncllm.ClientClosedError)


async def test_aclose_closes_the_responses_of_a_transport_that_never_wakes_its_readers() -> None:
    # A transport whose response never ends and ignores the session being closed: the SDK
    # must close what it opened itself.
    never = asyncio.Event()
    responses: list[MockResponse] = []

    class Endless(MockResponse):
        async def iter_bytes(self) -> AsyncIterator[bytes]:
            yield chunk_event("a")
            await never.wait()
            yield DONE

    def respond(request: Any) -> MockResponse:
        responses.append(Endless(200, headers={"Content-Type": "text/event-stream"}))
        return responses[-1]

    client = asyncllm.OpenAI(
        api_key="k",
        base_url="http://llm.test/v1",
        transport=MockTransport(respond),
        close_timeout=0.2,
    )
    waiting = client.stream_chat(MESSAGES, model="m")
    idle = client.stream_chat(MESSAGES, model="m")
    assert (await waiting.__anext__()).delta == "a"
    assert (await idle.__anext__()).delta == "a"
    blocked = asyncio.create_task(waiting.__anext__())  # waits for more, forever
    await asyncio.sleep(0.01)
    await client.aclose()
    with pytest.raises(asyncllm.ClientClosedError):
        await asyncio.wait_for(blocked, 1)
    with pytest.raises(asyncllm.ClientClosedError):  # one the caller was not reading just then
        await asyncio.wait_for(idle.__anext__(), 1)
    assert all(r.closed for r in responses)
