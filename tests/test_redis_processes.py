"""Real processes sharing one concurrency limit through a real Redis (tests/redis_fixtures.py):
four workers (tests/redis_worker.py), each with many concurrent callers, against one fake vendor
that counts the requests it has in flight. These wait on real time, since they exercise real
processes; their bounds are generous, and the whole file takes about 10 s on an idle 2-core
machine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from redis.asyncio import Redis

from asyncllm._engine._redis_scripts import slot_keys
from asyncllm.testing import FakeServer, Faults

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 6
WORKERS = 4
# Starting four interpreters on a busy 2-core machine takes seconds; the bounds below are not
# what the tests measure.
pytestmark = pytest.mark.timeout(300)


async def start_worker(
    redis_url: str, server: FakeServer, callers: int, calls: int, lease: float, *rpm: str
) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.redis_worker",
        redis_url,
        server.url("/v1"),
        str(LIMIT),
        str(callers),
        str(calls),
        str(lease),
        *rpm,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.strip() == b"ready"
    return process


async def start_workers(
    redis_url: str, server: FakeServer, callers: int, calls: int, lease: float, *rpm: str
) -> list[asyncio.subprocess.Process]:
    return list(
        await asyncio.gather(
            *(start_worker(redis_url, server, callers, calls, lease, *rpm) for _ in range(WORKERS))
        )
    )


async def result(process: asyncio.subprocess.Process) -> dict[str, int]:
    assert process.stdout is not None
    out = await asyncio.wait_for(process.stdout.read(), 120)
    assert await process.wait() == 0
    last: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return last


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("openai", faults=Faults(latency=0.05)) as fake:
        yield fake


async def test_four_processes_never_exceed_the_shared_limit(
    redis_url: str, server: FakeServer
) -> None:
    workers = await start_workers(redis_url, server, 20, 60, 5.0)
    results = [await result(worker) for worker in workers]
    assert sum(r["ok"] for r in results) == WORKERS * 60
    assert sum(r["failed"] for r in results) == 0
    # 80 callers, 6 slots for the fleet: the vendor saw the limit, never more.
    assert server.max_in_flight == LIMIT
    client = Redis.from_url(redis_url)
    try:
        # Every worker gave its slots back when it closed.
        assert await client.hgetall(slot_keys("asyncllm", "vendor")[0]) == {}
    finally:
        await client.aclose()


async def test_a_killed_workers_slots_return_within_the_lease(redis_url: str) -> None:
    lease = 2.0
    async with FakeServer("openai", faults=Faults(latency=0.2)) as server:
        workers = await start_workers(redis_url, server, 10, 0, lease)
        slots, alive, _ = slot_keys("asyncllm", "vendor")
        client = Redis.from_url(redis_url)
        try:
            victim = workers[0]
            mine = f":{victim.pid}:"

            async def held_by_victim() -> int:
                held = await client.hgetall(slots)
                return sum(int(n) for p, n in held.items() if mine in p.decode())

            # Wait until the victim holds slots, then kill it without a chance to give them back.
            # The victim may be the last of the four interpreters to start, and then wins its
            # first slots from three busy workers: allow it time (a guard, not a measure). The
            # read that found slots is the one that counts: a second read could find the victim
            # between a batch of slots given back and the next one taken.
            waited_from = time.monotonic()
            while not await held_by_victim():
                assert time.monotonic() - waited_from < 30.0, "the victim never held a slot"
                await asyncio.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await victim.wait()
            # Its slots stay taken until its lease runs out, then the fleet has them again.
            while await held_by_victim():
                assert time.monotonic() - killed_at < lease + 2.0, "slots never came back"
                await asyncio.sleep(0.02)
            returned_after = time.monotonic() - killed_at
            assert returned_after <= lease + 2.0
            assert not [p for p in await client.zrange(alive, 0, -1) if mine in p.decode()]
            # The survivors take the whole limit again.
            for _ in range(300):
                if server.in_flight == LIMIT:
                    break
                await asyncio.sleep(0.01)
            assert server.in_flight == LIMIT
            assert server.max_in_flight <= LIMIT
        finally:
            for worker in workers[1:]:
                assert worker.stdin is not None
                worker.stdin.close()
            survivors = [await result(worker) for worker in workers[1:]]
            await client.aclose()
        assert all(r["failed"] == 0 for r in survivors)
        assert server.max_in_flight <= LIMIT


class Bucket:
    """The vendor's own request budget: ``capacity`` at most, refilled at ``rate`` a second."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level < 1:
            return False
        self.level -= 1
        return True


async def test_four_processes_keep_to_one_request_budget(
    redis_url: str, server: FakeServer
) -> None:
    """A budget of 50 requests a second for the fleet, and a vendor that enforces it with a
    bucket of two seconds' burst: four processes sharing the budget never get a 429. (Four
    keeping a budget each would send four probe allowances at once, and more than the vendor's
    burst.)"""
    vendor = Bucket(capacity=100, rate=50)
    refused = []

    async def chat(request: web.Request) -> web.StreamResponse:
        if not vendor.take():
            refused.append(time.monotonic())
            return web.json_response(
                {"error": {"message": "rate limited", "type": "requests", "code": None}},
                status=429,
            )
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    server.overrides["/v1/chat/completions"] = chat
    workers = await start_workers(redis_url, server, 10, 50, 5.0, str(50 * 60))
    results = [await result(worker) for worker in workers]
    assert sum(r["ok"] for r in results) == WORKERS * 50
    assert refused == []
    assert sum(r["failed"] for r in results) == 0
