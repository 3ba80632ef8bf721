"""What sharing limits through Redis costs a call, with the in-process dispatcher side by side,
against the fast loopback server (benchmarks/server.py, its own process) and a redis-server
started here on a free loopback port.

    python benchmarks/shared_limits.py [--rate 250] [--seconds 4] [--rounds 20] [--calls 400]
                                       [--concurrency 32] [--trials 40]

Three measures:

* Redis operations per call at steady state: one client paced at ``--rate`` calls a second (the
  issue's target is at most 0.05 at 200 calls/s or more per process), after a warm-up, counted
  from Redis's own ``INFO commandstats``: the commands clients sent (each a round trip; the
  scripts' and the heartbeats' alike), not those run inside scripts. Twice: against the fast
  server, whose answers say nothing of budgets, and against ``server.py --kind capacity``, whose
  every answer reports the request budget (OpenAI's headers), as real vendors' do; and once more
  against one that reports a token budget too, whose tokens are leased in the same batches.
* CPU per call with Redis coordination over in-process (target: within 10%): both clients live
  in this one process and run blocks of ``--calls`` calls at concurrency ``--concurrency`` in
  turn (local, Redis, Redis, local, ...), so each pair of blocks is measured under the same
  load; the ratio of each pair, then their median and spread (as ``paired.py`` does).
* 429 propagation: from a block set by one store until another, spending calls from its batches,
  is refused (target: p99 at most 250 ms).

Needs ``redis-server`` on PATH and the ``asyncllm[redis]`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import bootstrap, med, pct  # noqa: E402

import asyncllm  # noqa: E402 - after the path so that this checkout's package is measured
from tests.redis_fixtures import RedisServer  # noqa: E402

# The vendors of the second and third counts: they report their request budget, then their
# request and token budgets, on every answer (OpenAI's headers), far above what the benchmark
# spends. A member with token budgets leases its tokens in the same batches as its requests, and
# settles each reply's usage with the batch in hand: the third count shows what that costs.
REPORTING = ("--kind", "capacity", "--capacity", '{"requests_per_minute": 100000000}')
REPORTING_TOKENS = (
    "--kind",
    "capacity",
    "--capacity",
    '{"requests_per_minute": 100000000, "tokens_per_minute": 100000000000}',
)


async def start_server(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "benchmarks" / "server.py"),
        *(args or ("--kind", "fast")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode().split()
    return process, int(line[1])


# Commands a client sends itself: INFO commandstats also counts those a script runs, which cost
# no round trip of their own, so only these are counted (the store sends nothing but scripts).
TOP_LEVEL = ("eval", "evalsha", "script|load", "script|exists", "hello", "ping", "select")


async def redis_ops(url: str) -> dict[str, int]:
    """Per command a client sends (``TOP_LEVEL``), the calls Redis has served so far."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        info = await client.info("commandstats")
        return {
            name: int(info.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in TOP_LEVEL
            if f"cmdstat_{name}" in info
        }
    finally:
        await client.aclose()


def make_client(port: int, concurrency: int, redis_url: str | None) -> asyncllm.OpenAI:
    dispatcher = asyncllm.Dispatcher(redis_url=redis_url, observer=None)
    return asyncllm.OpenAI(
        api_key="bench-not-a-key",
        base_url=f"http://127.0.0.1:{port}/v1",
        dispatcher=dispatcher,
        name="bench",
        max_concurrent_requests=concurrency,
        rate_limits=asyncllm.RateLimits(requests_per_minute=10_000_000),
    )


async def block(client: asyncllm.OpenAI, calls: int, concurrency: int) -> float:
    """CPU seconds per call of ``calls`` calls made by ``concurrency`` callers."""
    left = [calls]

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            await client.chat([{"role": "user", "content": "hi"}], model="m")

    cpu = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return (time.process_time() - cpu) / calls


async def paced(client: asyncllm.OpenAI, rate: float, seconds: float) -> int:
    """Calls started at ``rate`` a second for ``seconds`` (each in its own task); returns how
    many were made."""
    tasks: set[asyncio.Task[object]] = set()
    start = time.perf_counter()
    made = 0
    while (now := time.perf_counter() - start) < seconds:
        due = int(now * rate) + 1
        for _ in range(due - made):
            task = asyncio.ensure_future(
                client.chat([{"role": "user", "content": "hi"}], model="m")
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        made = due
        await asyncio.sleep(1 / rate)
    if tasks:
        await asyncio.gather(*tasks)
    return made


async def flush(url: str) -> None:
    """Empty Redis between the parts: each starts from no budget (a token budget one vendor
    reported would otherwise be leased in the next part's batches too)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def ops_per_call(
    port: int, url: str, rate: float, seconds: float, concurrency: int
) -> tuple[dict[str, float], float]:
    """Redis operations per call at steady state, per command, and the calls a second
    achieved."""
    await flush(url)
    client = make_client(port, concurrency, url)
    try:
        await paced(client, rate, 1.0)  # warm up: connections, scripts, batch sizes
        before = await redis_ops(url)
        wall = time.perf_counter()
        made = await paced(client, rate, seconds)
        wall = time.perf_counter() - wall
        after = await redis_ops(url)
    finally:
        await client.aclose()
        await client.dispatcher.aclose()
    ops = {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}
    return {name: n / made for name, n in ops.items()}, made / wall


async def cpu_pairs(
    port: int, url: str, rounds: int, calls: int, concurrency: int
) -> tuple[list[float], list[float], list[float]]:
    """Per round: CPU per call in-process, with Redis, and their ratio (Redis / in-process)."""
    await flush(url)
    local = make_client(port, concurrency, None)
    shared = make_client(port, concurrency, url)
    out: tuple[list[float], list[float], list[float]] = ([], [], [])
    try:
        for client in (local, shared):
            await block(client, calls, concurrency)  # warm up
        for rnd in range(rounds):
            order = [local, shared] if rnd % 2 == 0 else [shared, local]
            got = {id(client): await block(client, calls, concurrency) for client in order}
            out[0].append(got[id(local)])
            out[1].append(got[id(shared)])
            out[2].append(got[id(shared)] / got[id(local)])
    finally:
        for client in (local, shared):
            await client.aclose()
            await client.dispatcher.aclose()
    return out


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
                await asyncio.sleep(0)
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


def spread(values: list[float], scale: float, fmt: str) -> str:
    return (
        f"{fmt.format(med(values) * scale)} [{fmt.format(min(values) * scale)}-"
        f"{fmt.format(max(values) * scale)}]"
    )


async def main(options: argparse.Namespace) -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    redis = RedisServer(executable)
    server, port = await start_server()
    reporting, reporting_port = await start_server(*REPORTING)
    tokens, tokens_port = await start_server(*REPORTING_TOKENS)
    try:
        ops, achieved = await ops_per_call(
            port, redis.url, options.rate, options.seconds, options.concurrency
        )
        reported_ops, reported_achieved = await ops_per_call(
            reporting_port, redis.url, options.rate, options.seconds, options.concurrency
        )
        token_ops, token_achieved = await ops_per_call(
            tokens_port, redis.url, options.rate, options.seconds, options.concurrency
        )
        local, shared, ratios = await cpu_pairs(
            port, redis.url, options.rounds, options.calls, options.concurrency
        )
        spread_ms = await propagation(redis.url, options.trials)
    finally:
        for process in (server, reporting, tokens):
            assert process.stdin is not None
            process.stdin.close()
            await process.wait()
        redis.stop()
    print(f"Redis coordination vs in-process; load average {os.getloadavg()[0]:.2f}")
    print(
        f"Redis operations per call at steady state, paced at {options.rate:.0f} calls/s for"
        f" {options.seconds:.0f} s (target: at most 0.05):"
    )
    for title, got, rate in (
        ("a vendor that reports no budget", ops, achieved),
        ("a vendor that reports its budget on every answer", reported_ops, reported_achieved),
        ("one that reports a token budget too", token_ops, token_achieved),
    ):
        by_command = ", ".join(
            f"{name} {n:.4f}" for name, n in sorted(got.items(), key=lambda o: -o[1])
        )
        print(f"  {title}: {sum(got.values()):.4f} at {rate:.0f} calls/s ({by_command})")
    low, high = bootstrap(ratios)
    print(
        f"CPU per call, {options.rounds} paired rounds of {options.calls} calls at concurrency"
        f" {options.concurrency}: in-process {spread(local, 1e6, '{:.0f}')} us, Redis"
        f" {spread(shared, 1e6, '{:.0f}')} us (median [min-max])"
    )
    print(
        f"CPU ratio Redis / in-process: median {med(ratios):.3f} [{min(ratios):.3f}-"
        f"{max(ratios):.3f}], quartiles {pct(ratios, 0.25):.3f}-{pct(ratios, 0.75):.3f},"
        f" bootstrap 90% {low:.3f}-{high:.3f} (target: at most 1.10)"
    )
    p50 = pct(spread_ms, 0.5) * 1e3
    p99 = pct(spread_ms, 0.99) * 1e3
    print(
        f"429 propagation to another process: p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        f" over {len(spread_ms)} blocks (target: p99 at most 250 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=250.0, help="calls/s of the ops count")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the ops count")
    parser.add_argument("--rounds", type=int, default=20, help="paired rounds of the CPU ratio")
    parser.add_argument("--calls", type=int, default=400, help="calls per block of a round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--trials", type=int, default=40, help="blocks of the propagation")
    asyncio.run(main(parser.parse_args()))
