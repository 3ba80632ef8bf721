"""Pools: a failing member ejected while the others absorb its share, and what a pooled call costs.

    python benchmarks/pool.py             # 6000 calls at concurrency 60
    python benchmarks/pool.py --quick     # 600 calls

1. Three local fake OpenAI servers behind one ``asyncllm.Pool``, one of them answering every
   request with a 503: every call should succeed (the failing member's attempts are retried on
   the others at once, and its breaker ejects it), the failing server should see only the few
   requests it takes to eject it and then a probe each time its ejection ends.
2. CPU time per call (``time.process_time``, so that other work on the machine counts less) of
   ``chat`` on a ``MockTransport``: one client, and a pool of three such clients.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from typing import Any

import asyncllm
from asyncllm.testing import FakeServer, Faults, MockResponse, MockTransport

USER = [{"role": "user", "content": "hi"}]
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
KEY = "bench-not-a-key"


async def one_failing(calls: int, concurrency: int) -> None:
    servers = [
        FakeServer("openai", faults=Faults(error_rate=1.0, error_statuses=(503,))),
        FakeServer("openai"),
        FakeServer("openai"),
    ]
    for server in servers:
        await server.__aenter__()
    try:
        pool = asyncllm.Pool(
            [
                asyncllm.OpenAI(
                    api_key=KEY,
                    base_url=server.url("/v1"),
                    name=name,
                    max_concurrent_requests=concurrency,
                    breaker=asyncllm.BreakerConfig(failure_threshold=3, reset_timeout=0.5),
                )
                for server, name in zip(servers, ("failing", "b", "c"), strict=True)
            ],
            rng=random.Random(0),
        )
        errors = 0
        backends: dict[str, int] = {}
        left = iter(range(calls))

        async def worker() -> None:
            nonlocal errors
            for _ in left:
                try:
                    r = await pool.chat(USER, model="m")
                except asyncllm.APIError:
                    errors += 1
                else:
                    backends[str(r.backend)] = backends.get(str(r.backend), 0) + 1

        async with pool:
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
            stats = pool.stats()
        print(
            f"1. A pool of 3, one answering 503 to everything: {calls} calls, {concurrency} at once"
        )
        print(f"   caller-visible errors: {errors}   answered by: {backends}   {elapsed:.2f} s")
        for (name, s), server in zip(stats.items(), servers, strict=True):
            print(
                f"   {name:8} requests seen {server.request_count:5}"
                f"   breaker {s.breaker:9} ejections {s.info['ejections']}"
            )
    finally:
        for server in servers:
            await server.__aexit__(None, None, None)


def mock_client(dispatcher: asyncllm.Dispatcher, name: str) -> asyncllm.OpenAI:
    return asyncllm.OpenAI(
        api_key=KEY,
        base_url="http://mock.invalid/v1",
        transport=MockTransport(lambda request: MockResponse(200, json=REPLY)),
        dispatcher=dispatcher,
        name=name,
        max_concurrent_requests=64,
    )


async def cpu_per_call(calls: int) -> None:
    async def run(pooled: bool) -> float:
        dispatcher = asyncllm.Dispatcher(observer=None)
        client: Any
        if pooled:
            members = [mock_client(dispatcher, f"m{i}") for i in range(3)]
            client = asyncllm.Pool(members, rng=random.Random(0))
        else:
            client = mock_client(dispatcher, "one")
        async with client:
            start = time.process_time()
            for _ in range(calls // 64):
                await asyncio.gather(*(client.chat(USER, model="m") for _ in range(64)))
            return (time.process_time() - start) / (calls // 64 * 64) * 1e6

    results: dict[str, list[float]] = {"one client": [], "a pool of 3": []}
    for _ in range(3):
        results["one client"].append(await run(False))
        results["a pool of 3"].append(await run(True))
    print(f"2. CPU time per chat call on a MockTransport ({calls} calls, best of 3)")
    for name, times in results.items():
        print(f"   {name:12} {min(times):7.1f} us")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls")
    args = parser.parse_args()
    logging.getLogger("asyncllm").setLevel(logging.ERROR)  # the breaker's warnings: see the table
    scale = 10 if args.quick else 1
    await one_failing(6000 // scale, 60)
    await cpu_per_call(20000 // scale)


if __name__ == "__main__":
    asyncio.run(main())
