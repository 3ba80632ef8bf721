"""A fleet sharing one vendor's limits through Redis: ``--processes`` worker processes of
``--callers`` callers each, against one fake vendor that enforces the budgets it advertises, and
one redis-server, both started here on free loopback ports.

    python benchmarks/fleet.py              # 8 processes x 200 callers (about a minute)
    python benchmarks/fleet.py --quick      # 2 processes x 20 callers (about 15 s)

The vendor is ``benchmarks/server.py --kind capacity`` (``asyncllm.testing.Capacity``):
``--rpm`` requests a minute in one bucket (full at the start, then refilled continuously), at
most ``--concurrency`` requests at once (one more is answered 503), ``--delay`` seconds per
answer, OpenAI's rate headers on every answer. Every worker's client is configured with the
same budget (``RateLimits(requests_per_minute=rpm)``) and concurrency, shared through Redis
(``Dispatcher(redis_url=...)``), so the fleet as a whole should keep to them.

Two phases, on one wall-clock schedule every worker follows:

1. Steady load (after ``--warmup`` seconds, for ``--seconds``): every caller calls in a loop.
   Reported: the requests the vendor answered 429 (each was sent when the vendor's bucket did
   not hold it: the fleet's budget overshoot, target 0) and their share, the requests admitted
   a second beside the vendor's refill rate (its bucket starts full, a minute's worth, so the
   fleet may take more while that lasts), the most requests the vendor saw at once (against the
   shared concurrency limit), and Redis round trips per call (scripts run over calls sent).
2. 429 propagation (``--trials`` times), against a second vendor with the same concurrency
   but no budget, so that the workers spend the batches they lease rather than wait at Redis
   for a budget (where a block would stop them anyway): worker 0 receives a 429 with
   ``Retry-After`` (an attempt that raises it, through the dispatcher's own path for one) while
   everyone keeps calling; each other worker notes when each of its requests is sent (an
   observer's ``attempt_started``), and its propagation time is from the 429 to the last
   request it sent during the block (0 if it sent none). Target: p99 at most 250 ms. Beside
   it, when the announcement of the block reached each worker's handler (the Redis hop plus
   the time its busy event loop took to run the listener; ``block`` if it never came).

Needs ``redis-server`` on PATH and the ``asyncllm[redis]`` extra. The processes share this
machine's clock (``time.time``), so their times compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from child import SERVER, Child

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncllm  # noqa: E402 - after the path so that this checkout's package is measured
from asyncllm._engine._observe import CallObserver, Observer  # noqa: E402
from tests.redis_fixtures import RedisServer  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi"}]


# -- a worker ------------------------------------------------------------------------------------


class _SendTimes(CallObserver):
    __slots__ = ("sends",)

    def __init__(self, sends: list[float]) -> None:
        self.sends = sends

    def attempt_started(self, number: int, backoff: float) -> None:
        self.sends.append(time.time())


class SendTimes(Observer):
    """Notes the wall-clock time at which each attempt of one lane is sent (after its budget
    and slot). One lane only: calls of phase 1 still waiting for its budget when phase 2 starts
    are sent during it, and must not count as sent into phase 2's blocks."""

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self.sends: list[float] = []
        self._watch = _SendTimes(self.sends)

    def start_call(self, record: Any, lane: Any) -> CallObserver | None:
        return self._watch if lane.name == self.lane else None


def schedule(options: argparse.Namespace, start: float) -> tuple[float, float, list[float]]:
    """When the steady window begins and ends, and when each 429 trial begins."""
    begin = start + options.warmup
    end = begin + options.seconds
    trials = [end + 0.5 + k * options.period for k in range(options.trials)]
    return begin, end, trials


async def worker(options: argparse.Namespace) -> None:
    observer = SendTimes("fleet-free")
    dispatcher = asyncllm.Dispatcher(redis_url=options.redis, observer=observer)
    client = asyncllm.OpenAI(
        api_key="bench-not-a-key",
        base_url=options.vendor + "/v1",
        dispatcher=dispatcher,
        name="fleet",
        max_concurrent_requests=options.concurrency,
        rate_limits=asyncllm.RateLimits(requests_per_minute=options.rpm, max_wait=600),
    )
    # Phase 2's backend: a vendor with no budget, so that the calls spend the batches in hand
    # (no budget to wait for at Redis) and only a block stops them.
    free = asyncllm.OpenAI(
        api_key="bench-not-a-key",
        base_url=options.free_vendor + "/v1",
        dispatcher=dispatcher,
        name="fleet-free",
        max_concurrent_requests=options.concurrency,
    )
    lane = free._get_lane()
    # When each announcement from another process arrived (the store's handler, wrapped).
    heard: list[float] = []
    store = dispatcher.budgets
    handler = store._signal  # type: ignore[attr-defined]

    def noted(data: bytes | str) -> None:
        heard.append(time.time())
        handler(data)

    store._signal = noted  # type: ignore[attr-defined]
    for each in (client, free):  # connections, scripts, listener
        await each.chat(MESSAGES, model="m", max_tokens=1)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    start = float(line.split()[1])
    _, end, trials = schedule(options, start)
    stop = (trials[-1] + options.period) if trials else end
    errors: Counter[str] = Counter()
    await asyncio.sleep(max(0.0, start - time.time()))

    async def caller() -> None:
        while time.time() < stop:
            # Each caller moves to the budget-free vendor once the steady window is over.
            using = client if time.time() < end else free
            try:
                await using.chat(MESSAGES, model="m", max_tokens=1)
            except asyncllm.APIError as exc:
                errors[type(exc).__name__] += 1

    limited: list[float] = []

    async def receive_429s() -> None:
        """Worker 0: at each trial, one attempt answered 429 with Retry-After."""

        async def answered_429(_: Any) -> None:
            limited.append(time.time())
            raise asyncllm.RateLimitError(
                "rate limited (benchmark)",
                status_code=429,
                backend="fleet",
                retry_after=options.block,
            )

        for at in trials:
            await asyncio.sleep(max(0.0, at - time.time()))
            with contextlib.suppress(asyncllm.RateLimitError):
                await dispatcher.run(lane, "chat", answered_429, max_retries=0)

    tasks = [caller() for _ in range(options.callers)]
    if options.worker == 0:
        tasks.append(receive_429s())
    await asyncio.gather(*tasks)
    stats = lane.stats()
    await client.aclose()
    await free.aclose()
    await dispatcher.aclose()
    result = {
        "sends": observer.sends,
        "limited": limited,
        "errors": dict(errors),
        "limit": stats.concurrency_limit,
        "heard": heard,
    }
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ----------------------------------------------------------------------------------


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def round_trips(url: str) -> int:
    """Scripts Redis has run: each is one round trip (the commands inside a script are not)."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        info: dict[str, Any] = client.info("commandstats")
        return sum(int(info.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in ("evalsha", "eval"))
    finally:
        client.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def propagation(results: list[dict[str, Any]], block: float) -> tuple[list[float], list[float]]:
    """Per trial and other worker: seconds from worker 0's 429 to the last request that worker
    sent while the block lasted (0 if none), and to the first announcement it heard then (the
    Redis hop and its event loop's delay in running the listener)."""
    samples, heard = [], []
    for at in results[0]["limited"]:
        for other in results[1:]:
            during = [s - at for s in other["sends"] if at <= s < at + block]
            samples.append(max(during, default=0.0))
            heard += [min((h - at for h in other["heard"] if at <= h < at + block), default=block)]
    return samples, heard


def main(options: argparse.Namespace) -> int:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    redis = RedisServer(executable)
    capacity = {
        "requests_per_minute": options.rpm,
        "max_concurrent": options.concurrency,
        "busy_status": 503,
    }
    vendors = [
        Child([SERVER, "--kind", "capacity", "--delay", str(options.delay), "--capacity", spec])
        for spec in (
            json.dumps(capacity),
            json.dumps({"max_concurrent": options.concurrency, "busy_status": 503}),
        )
    ]
    workers: list[Child] = []
    try:
        base, free = (f"http://127.0.0.1:{v.port('the vendor')}" for v in vendors)
        common = [__file__, "--redis", redis.url, "--vendor", base, "--free-vendor", free]
        for name in ("rpm", "concurrency", "callers", "seconds", "warmup", "trials", "period"):
            common += [f"--{name}", str(getattr(options, name))]
        common += ["--block", str(options.block)]
        workers = [Child([*common, "--worker", str(i)]) for i in range(options.processes)]
        for child in workers:
            if child.first.strip() != "READY":
                raise RuntimeError(f"a worker did not start: {child.first!r}")
        start = time.time() + 0.5
        begin, end, _ = schedule(options, start)
        for child in workers:
            child.tell(f"GO {start!r}")
        # The vendor's counts at the edges of the steady window, and Redis's scripts run.
        time.sleep(max(0.0, begin - time.time()))
        before, scripts_before = fetch_json(base + "/_capacity"), round_trips(redis.url)
        time.sleep(max(0.0, end - time.time()))
        after, scripts_after = fetch_json(base + "/_capacity"), round_trips(redis.url)
        total = options.warmup + options.seconds + options.trials * options.period + 60
        results = [child.result(timeout=total) for child in workers]
    finally:
        for child in workers:
            child.close()
        for vendor in vendors:
            vendor.close()
        redis.stop()

    sent = after["sent"] - before["sent"]
    admitted = after["admitted"] - before["admitted"]
    limited = after["rate_limited"] - before["rate_limited"]
    busy = after["busy"] - before["busy"]
    refill = options.rpm / 60
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
    spread, heard = propagation(results, options.block)
    print(
        f"A fleet of {options.processes} processes x {options.callers} callers sharing one"
        f" vendor's limits through Redis: {options.rpm} requests a minute, {options.concurrency}"
        f" at once, {options.delay * 1000:.0f} ms per answer; steady window {options.seconds} s"
    )
    rows = [
        ("requests sent in the window", f"{sent}", ""),
        ("answered 429 (budget overshoot)", f"{limited}", "0"),
        ("429 share", f"{100 * limited / max(1, sent):.2f}%", "at most 1%"),
        ("answered 503 (over its concurrency)", f"{busy}", ""),
        # The vendor's bucket starts full (a minute's worth), so the fleet may take more than
        # the refill while that lasts.
        ("admitted per second", f"{admitted / options.seconds:.0f}", f"refill {refill:.0f}/s"),
        ("most in flight at the vendor", f"{after['max_in_flight']}", f"<= {options.concurrency}"),
        (
            "Redis round trips per call",
            f"{(scripts_after - scripts_before) / max(1, sent):.3f}",
            "",
        ),
        ("errors the callers saw", f"{sum(errors.values())} {dict(errors) or ''}".strip(), ""),
    ]
    if spread:
        rows += [
            (
                "429 propagation p50",
                f"{1000 * statistics.median(spread):.0f} ms",
                "",
            ),
            (
                "429 propagation p99",
                f"{1000 * pct(spread, 0.99):.0f} ms",
                "at most 250 ms",
            ),
            ("429 propagation max", f"{1000 * max(spread):.0f} ms", ""),
            (
                "announcement heard p50 / p99",
                f"{1000 * statistics.median(heard):.0f} / {1000 * pct(heard, 0.99):.0f} ms",
                "",
            ),
            ("  samples (trials x other processes)", f"{len(spread)}", ""),
        ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':{width}}{'measured':>18}   target")
    for label, value, target in rows:
        print(f"{label:{width}}{value:>18}   {target}")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 processes x 20 callers, short")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--rpm", type=int, default=6000, help="the vendor's requests a minute")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between 429s")
    parser.add_argument("--block", type=float, default=1.0, help="the 429's Retry-After")
    # A worker's own options (the parent passes them).
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--vendor", help=argparse.SUPPRESS)
    parser.add_argument("--free-vendor", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.quick:
        options.processes, options.callers = 2, 20
        options.warmup, options.seconds, options.trials = 1.0, 2.0, 3
    return options


if __name__ == "__main__":
    parsed = parse()
    if parsed.worker is not None:
        asyncio.run(worker(parsed))
    else:
        sys.exit(main(parsed))
