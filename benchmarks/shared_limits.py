"""What sharing limits through Redis costs a call: CPU per call and Redis round trips per call, with
the in-process dispatcher side by side, against the fast loopback server (benchmarks/server.py,
its own process) and a redis-server started here on a free loopback port.

    python benchmarks/shared_limits.py [--calls 2000] [--concurrency 32]

Needs ``redis-server`` on PATH and the ``asyncllm[redis]`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncllm  # noqa: E402 - after the path so that this checkout's package is measured
from tests.redis_fixtures import RedisServer  # noqa: E402


async def start_server() -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "benchmarks" / "server.py"),
        "--kind",
        "fast",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode().split()
    return process, int(line[1])


async def round_trips(url: str) -> int:
    """Script calls Redis has served: each is one round trip of a call (the commands inside a
    script are not)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        info = await client.info("commandstats")
        return sum(
            int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
        )
    finally:
        await client.aclose()


async def run(
    port: int, calls: int, concurrency: int, redis_url: str | None
) -> tuple[float, float]:
    """CPU seconds per call, and wall seconds in all."""
    dispatcher = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    client = asyncllm.OpenAI(
        api_key="bench-not-a-key",
        base_url=f"http://127.0.0.1:{port}/v1",
        dispatcher=dispatcher,
        name="bench",
        max_concurrent_requests=concurrency,
        rate_limits=asyncllm.RateLimits(requests_per_minute=10_000_000),
    )
    left = [calls]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            await client.chat([{"role": "user", "content": "hi"}], model="m")

    await asyncio.gather(*(caller() for _ in range(concurrency)))  # warm up: connections, scripts
    left[0] = calls
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    await dispatcher.aclose()
    return cpu / calls, wall


async def propagation(url: str, trials: int = 40) -> list[float]:
    """Seconds from a block set by one store (a 429 seen by one process) until another store,
    spending a steady stream of calls from its batches, is refused: one sample per trial."""
    from asyncllm._engine._ratelimit import Cost, Lease
    from asyncllm._engine._redis import RedisBudgetStore

    seen = RedisBudgetStore(url, prefix="propagation")
    other = RedisBudgetStore(url, prefix="propagation")
    samples = []
    try:
        for trial in range(trials):
            key = f"member-{trial}"
            seen.configure(key, 0.0, requests_per_minute=6_000_000)
            other.configure(key, 0.0, requests_per_minute=6_000_000)
            for _ in range(200):  # warm the batches up
                await other.lease(key, Cost(1, 0), other.clock())
            await asyncio.sleep(0.05 * (trial % 5) / 5)  # the block lands anywhere in a batch
            blocked_at = time.perf_counter()
            await seen.block(key, seen.clock() + 60)
            # A call every millisecond, as a busy process makes them.
            refused = False
            while not refused:
                refused = not isinstance(await other.lease(key, Cost(1, 0), other.clock()), Lease)
                await asyncio.sleep(0.001)
            samples.append(time.perf_counter() - blocked_at)
    finally:
        await seen.aclose()
        await other.aclose()
    return sorted(samples)


async def main(calls: int, concurrency: int) -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    redis = RedisServer(executable)
    server, port = await start_server()
    try:
        local_cpu, local_wall = await run(port, calls, concurrency, None)
        shared_cpu, shared_wall = await run(port, calls, concurrency, redis.url)
        # Every call in the run, the warm-up's included, and the heartbeats (a few).
        ops = await round_trips(redis.url) / (2 * calls)
        spread = await propagation(redis.url)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        await server.wait()
        redis.stop()
    print(f"Redis coordination vs in-process: {calls} calls, concurrency {concurrency}")
    print(f"{'':28}{'in-process':>14}{'Redis':>14}")
    print(f"{'CPU per call (us)':28}{local_cpu * 1e6:>14.0f}{shared_cpu * 1e6:>14.0f}")
    print(f"{'calls/s':28}{calls / local_wall:>14.0f}{calls / shared_wall:>14.0f}")
    print(f"{'Redis round trips per call':28}{0:>14.2f}{ops:>14.2f}")
    print(f"CPU ratio (Redis / in-process): {shared_cpu / local_cpu:.2f} (target: at most 1.10)")
    p50 = spread[len(spread) // 2] * 1e3
    p99 = spread[min(len(spread) - 1, round(0.99 * (len(spread) - 1)))] * 1e3
    print(
        f"429 propagation to another process: p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        f" over {len(spread)} blocks (target: p99 at most 250 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.concurrency))
