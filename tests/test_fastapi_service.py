"""The example FastAPI service under a real uvicorn, driven over HTTP by aiohttp: request IDs
round-trip, upstream errors arrive as their mapped statuses, a client that leaves a stream frees
its upstream slot, and shutdown leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import random
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import asyncllm
from asyncllm.integrations.fastapi import accepted_request_id
from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common
from asyncllm.testing.fakes import openai as openai_fake

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_service.py"
_spec = importlib.util.spec_from_file_location("fastapi_service_example", EXAMPLE)
assert _spec is not None and _spec.loader is not None
example = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = example
_spec.loader.exec_module(example)

CHAT = "/v1/chat/completions"


def scripted_upstream(server: FakeServer) -> None:
    """Upstream faults chosen by the prompt, so each of 200 concurrent requests knows its own:
    ``fail <status> [retry-after]`` answers that status, ``hang`` never answers, ``slow stream``
    sends one chunk and then nothing until the client goes away (so only listening for the
    disconnect can notice it); anything else is the fake's own answer."""
    chat = next(h for method, path, h in openai_fake.routes("/v1") if path == CHAT)
    # Only the plain prompt gets random faults: a scripted one must end in its own error.
    rng = random.Random(18)

    async def answer(request: web.Request) -> web.StreamResponse:
        prompt = request["json"]["messages"][-1]["content"]
        if prompt == "hello there":  # random 429s and 5xx on top, which the client retries
            draw = rng.random()
            if draw < 0.05:
                return web.json_response(
                    openai_fake.error_body(429, "slow down"),
                    status=429,
                    headers={"Retry-After": "0"},
                )
            if draw < 0.15:
                status = rng.choice((500, 502, 503))
                return web.json_response(openai_fake.error_body(status, "oops"), status=status)
        if prompt.startswith("fail "):
            status, *after = prompt.split()[1:]
            headers = {"Retry-After": after[0]} if after else {}
            body = openai_fake.error_body(int(status), "scripted secret-upstream-detail")
            return web.json_response(body, status=int(status), headers=headers)
        if prompt == "hang":  # until the client gives up (aiohttp cancels this handler)
            await asyncio.sleep(30)
        if prompt == "slow stream":  # one chunk, then nothing until the client goes away
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "fake-chat",
                     "choices": [{"index": 0, "delta": {"content": "w "}, "finish_reason": None}]}  # fmt: skip
            await response.write(_common.sse(chunk))
            await asyncio.sleep(30)
        return await chat(request)

    server.overrides[CHAT] = answer


@pytest.fixture
async def upstream() -> AsyncIterator[FakeServer]:
    async with FakeServer("openai") as server:
        scripted_upstream(server)
        yield server


def make_app(upstream: FakeServer) -> Any:
    return example.create_app(
        api_key="test-key",
        base_url=upstream.url("/v1"),
        max_concurrent_requests=32,
        queue_size=1000,
        retry=asyncllm.RetryConfig(max_retries=8, initial_delay=0.001, max_delay=0.01),
        breaker=asyncllm.BreakerConfig(failure_threshold=1000),
    )


# (prompt, extra body, expected status, expected Retry-After)
CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("hello there", {}, 200, None),
    ("fail 401", {}, 502, None),
    ("fail 403", {}, 502, None),
    ("fail 400", {}, 502, None),
    ("fail 404", {}, 502, None),
    # Retry-After 0: a longer one would block the whole client for every later call (#20)
    ("fail 429 0", {}, 429, "0"),
    ("fail 529 0", {}, 503, "0"),
    ("fail 501", {}, 502, None),
    ("hang", {"deadline": 0.3}, 504, None),
    ("", {"model": " "}, 500, None),
]


async def test_two_hundred_concurrent_requests_with_faults(upstream: FakeServer) -> None:
    # Collect what earlier tests left, so that the check at the end sees only this test's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
    rng = random.Random(7)
    plan: list[tuple[str, str, dict[str, Any], int, str | None]] = []
    for i in range(200):
        prompt, extra, status, after = CASES[0] if i < 100 else rng.choice(CASES)
        rid = f"caller-{i}.x:y_z"
        if i % 50 == 7:
            rid = "x" * 9000  # too long: replaced
        elif i % 50 == 8:
            rid = "bad id/with spaces"
        path = "/stream" if i % 10 == 3 and status == 200 else "/chat"
        plan.append((rid, path, {"prompt": prompt, **extra}, status, after))
    hang_prompts = sum(1 for p in plan if p[2]["prompt"] == "hang")

    async with example.serve(make_app(upstream)) as url:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(rid: str, path: str, body: dict[str, Any]) -> tuple[int, Any, Any, str]:
                async with http.post(url + path, json=body, headers={"X-Request-ID": rid}) as r:
                    raw = await r.read()
                    return r.status, r.headers, raw, r.headers.get("Content-Type", "")

            results = await asyncio.gather(
                *(one(rid, path, body) for rid, path, body, _, _ in plan)
            )
            async with http.get(url + "/stats") as r:
                stats = (await r.json())["openai"]

    for (rid, path, body, status, after), (got, headers, raw, ctype) in zip(
        plan, results, strict=True
    ):
        echoed = headers["X-Request-ID"]
        if len(rid) > 128 or " " in rid:
            assert echoed != rid and accepted_request_id(echoed) == echoed
        else:
            assert echoed == rid
        assert got == status, (rid, body, raw[:300])
        assert headers.get("Retry-After") == after
        if path == "/stream":
            assert ctype.startswith("text/event-stream")
            events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert "".join(json.loads(e)["delta"] for e in events[:-1]) == "echo: hello there"
            assert all(json.loads(e)["request_id"] == echoed for e in events[:-1])
        elif status == 200:
            answer = json.loads(raw)
            assert answer["request_id"] == echoed and answer["text"] == "echo: hello there"
        else:
            error = json.loads(raw)["error"]
            assert error["request_id"] == echoed
            assert set(error) == {"type", "message", "request_id"}
            assert "secret-upstream-detail" not in raw.decode()  # upstream details stay inside
            if status == 500:  # our own misconfiguration: no internals either
                assert error == {
                    "type": "internal_error",
                    "message": "internal error",
                    "request_id": echoed,
                }
    # Each caller's ID reached the model server: all but the config errors, which never leave,
    # and the hung calls, whose 0.3 s may run out while they queue behind the others.
    sent_upstream = {rid for rid, _, body, status, _ in plan if status not in (500, 504) and len(rid) <= 128 and " " not in rid}  # fmt: skip
    missing = sent_upstream - set(upstream.request_ids)
    assert not missing, [p for p in plan if p[0] in missing]
    assert stats["in_flight"] == 0 and stats["queued"] == 0
    assert hang_prompts > 0 and stats["usage"]["fake-chat"]["calls"] >= 100
    # Shut down: the lifespan closed the client; nothing is left running or unclosed.
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not caught, [str(w.message) for w in caught]
    assert not loop_errors, loop_errors


async def test_a_client_leaving_a_stream_frees_the_upstream_slot_within_a_second(
    upstream: FakeServer,
) -> None:
    async with example.serve(make_app(upstream)) as url, aiohttp.ClientSession() as http:
        r = await http.post(url + "/stream", json={"prompt": "slow stream"})
        assert r.status == 200
        first = await r.content.readline()
        assert first.startswith(b"data: {")
        async with http.get(url + "/stats") as s:
            assert (await s.json())["openai"]["in_flight"] == 1
        assert upstream.in_flight_by_path[CHAT] == 1
        r.close()  # the client goes away mid-stream
        loop = asyncio.get_running_loop()
        gone_at = loop.time()
        while True:
            async with http.get(url + "/stats") as s:
                stats = (await s.json())["openai"]
            if stats["in_flight"] == 0 and upstream.in_flight_by_path[CHAT] == 0:
                break
            assert loop.time() - gone_at < 1.0, stats
            await asyncio.sleep(0.02)
        assert stats["cancelled"] == 1 and stats["failed"] == 0


async def test_an_error_before_the_first_chunk_is_an_http_error(upstream: FakeServer) -> None:
    async with example.serve(make_app(upstream)) as url, aiohttp.ClientSession() as http:
        async with http.post(
            url + "/stream", json={"prompt": "fail 429 600"}, headers={"X-Request-ID": "s-1"}
        ) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "600"
            assert (await r.json())["error"]["request_id"] == "s-1"
        # The vendor's Retry-After holds the whole client (#20): the next call, an embedding,
        # is refused at once with the time left, and nothing more reaches the upstream.
        sent = len(upstream.requests)
        async with http.post(url + "/embed", json={"texts": ["a", "b"]}) as r:
            assert r.status == 429 and 0 < float(r.headers["Retry-After"]) <= 600
        assert len(upstream.requests) == sent
