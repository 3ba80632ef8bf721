"""The long fault soak: nothing lost, nothing doubled, limits held, nothing left behind.

    python benchmarks/soak.py            # the long run
    python benchmarks/soak.py --quick    # a short one

Three backend instances (loopback ``FakeServer``s) answer 30% of requests with faults: 429 with
Retry-After, 500/503, dropped connections, hangs longer than the timeout and malformed JSON. Then
a cancellation storm, then a shutdown with calls running and queued. Prints a table of what
happened and exits non-zero if any invariant broke. (``tests/test_soak.py`` is the short version
that runs in the test suite.)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time
from typing import Any

import asyncllm
from asyncllm.testing import FakeServer, Faults

LIMIT = 4
MAX_RETRIES = 3
TIMEOUT = 0.25
FAULTS = Faults(
    rate_limit_rate=0.10,
    retry_after="0",
    error_rate=0.10,
    error_statuses=(500, 503),
    drop_rate=0.04,
    hang_rate=0.002,
    malformed_rate=0.058,
    hang_seconds=2.0,  # longer than TIMEOUT: the client must give up first
)


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool]] = []

    def check(self, what: str, value: Any, limit: str, ok: bool) -> None:
        self.rows.append((what, str(value), limit, ok))

    def info(self, what: str, value: Any) -> None:
        self.rows.append((what, str(value), "", True))

    @property
    def ok(self) -> bool:
        return all(r[3] for r in self.rows)

    def print(self) -> None:
        header = ("what", "value", "must be", "ok")
        rows = [header] + [
            (a, b, c, ("yes" if d else "NO") if c else "") for a, b, c, d in self.rows
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        print("```")
        for n, r in enumerate(rows):
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))
        print("```")


async def instant(_: float) -> None:
    await asyncio.sleep(0)


async def fault_soak(calls: int, report: Report) -> None:
    servers = [
        FakeServer("openai", faults=FAULTS, seed=i, history=calls * (MAX_RETRIES + 1))
        for i in range(3)
    ]
    for s in servers:
        await s.start()
    dispatcher = asyncllm.Dispatcher(sleep=instant, tracker_max_records=5_000)
    clients = [
        asyncllm.OpenAI(
            api_key="soak-not-a-key",
            base_url=s.url("/v1"),
            name=f"soak-{i}",
            dispatcher=dispatcher,
            timeout=TIMEOUT,
            max_concurrent_requests=LIMIT,
            queue_size=calls,
            retry=asyncllm.RetryConfig(max_retries=MAX_RETRIES),
            breaker=asyncllm.BreakerConfig(failure_threshold=8, reset_timeout=0.05),
            close_timeout=1,
        )
        for i, s in enumerate(servers)
    ]
    rng = random.Random(42)
    outcome: dict[str, Any] = {}
    doubled = wrong = 0

    async def call(i: int) -> None:
        nonlocal doubled, wrong
        rid = f"soak-{i}"
        with asyncllm.request_context(rid):
            try:
                result: Any = await clients[i % 3].chat(
                    [{"role": "user", "content": f"q{i}"}],
                    model="m",
                    priority=rng.choice((0, 1, 2)),
                )
                if result.text != f"echo: q{i}":
                    wrong += 1
            except Exception as exc:  # typed or not: the table tells
                result = exc
        if rid in outcome:
            doubled += 1
        outcome[rid] = result

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(calls))), calls / 50 + 60)
        elapsed = time.perf_counter() - started
        results = sum(isinstance(v, asyncllm.ChatResponse) for v in outcome.values())
        errors = collections.Counter(
            type(v).__name__ for v in outcome.values() if not isinstance(v, asyncllm.ChatResponse)
        )
        stats = dispatcher.stats()
        report.info("fault soak: calls", f"{calls:,} in {elapsed:.1f}s ({calls / elapsed:.0f}/s)")
        report.info("requests the servers saw", f"{sum(s.request_count for s in servers):,}")
        report.info("results", f"{results:,} ({100 * results / calls:.1f}%)")
        for name, count in sorted(errors.items()):
            report.info(f"  typed error {name}", f"{count:,}")
        untyped = sum(not isinstance(v, asyncllm.AsyncLLMError) for v in outcome.values()) - results
        report.check("untyped errors", untyped, "0", untyped == 0)
        accounted = results + sum(errors.values())
        report.check("results + typed errors", f"{accounted:,}", f"= {calls:,}", accounted == calls)
        lost = calls - len(outcome)
        report.check("lost (no result, no error)", lost, "0", lost == 0)
        report.check("doubled (answered twice)", doubled, "0", doubled == 0)
        report.check("someone else's answer", wrong, "0", wrong == 0)
        max_in_flight = max(s.max_in_flight for s in servers)
        report.check(
            "max in flight per backend", max_in_flight, f"<= {LIMIT}", max_in_flight <= LIMIT
        )
        attempts = max(max(collections.Counter(s.request_ids).values()) for s in servers)
        report.check(
            "max attempts per call", attempts, f"<= {MAX_RETRIES + 1}", attempts <= MAX_RETRIES + 1
        )
        ok = sum(st.succeeded for st in stats.values())
        report.check("dispatcher successes", f"{ok:,}", "= results", ok == results)
        transitions: collections.Counter[str] = collections.Counter()
        for st in stats.values():
            transitions.update(st.breaker_transitions)
        report.info(
            "breaker transitions",
            ", ".join(f"{k} {v}" for k, v in sorted(transitions.items())) or "none",
        )
        idle = all(st.in_flight == 0 and st.queued == 0 for st in stats.values())
        report.check("in flight + queued at the end", 0 if idle else "not 0", "0", idle)
        tracked = len(dispatcher.tracker)
        report.check("tracker records", f"{tracked:,}", "<= 5,000", tracked <= 5_000)
    finally:
        for c in clients:
            await c.aclose()
        for s in servers:
            await s.aclose()
    sessions = sum(c._transport._session is not None for c in clients)  # type: ignore[attr-defined]
    report.check("open sessions after close", sessions, "0", sessions == 0)


async def cancellation_storm(tasks_count: int, report: Report) -> None:
    faults = Faults(rate_limit_rate=0.2, retry_after="0.01", latency=0.005)
    async with FakeServer("openai", faults=faults, seed=5) as server:
        client = asyncllm.OpenAI(
            api_key="soak-not-a-key",
            base_url=server.url("/v1"),
            max_concurrent_requests=LIMIT,
            queue_size=tasks_count,
            retry=asyncllm.RetryConfig(initial_delay=0.01, max_delay=0.02),
            breaker=asyncllm.BreakerConfig(failure_threshold=1000),
        )
        rng = random.Random(9)

        async def streamed(i: int) -> None:
            async with client.stream_chat(
                [{"role": "user", "content": f"s {i} a b c"}], model="m"
            ) as s:
                async for _ in s:
                    await asyncio.sleep(0.001)

        async def plain(i: int) -> None:
            await client.chat([{"role": "user", "content": f"p{i}"}], model="m", priority=i % 3)

        tasks = [
            asyncio.create_task(streamed(i) if i % 4 == 0 else plain(i)) for i in range(tasks_count)
        ]
        victims = rng.sample(tasks, len(tasks) // 2)

        async def cancel_later(t: asyncio.Task[None]) -> None:
            await asyncio.sleep(rng.uniform(0, 0.3))
            t.cancel()

        await asyncio.gather(*(cancel_later(t) for t in victims))
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        odd = [
            r
            for r in results
            if not (r is None or isinstance(r, (asyncio.CancelledError, asyncllm.AsyncLLMError)))
        ]
        stats = client.dispatcher.stats()["openai"]
        report.info("cancellation storm: calls (1 in 4 streamed)", f"{tasks_count:,}")
        report.check(
            "  cancelled", cancelled, "> 0, = dispatcher's count", 0 < cancelled == stats.cancelled
        )
        report.check("  unexpected outcomes", len(odd), "0", not odd)
        report.check(
            "  in flight + queued after",
            stats.in_flight + stats.queued,
            "0",
            stats.in_flight + stats.queued == 0,
        )
        report.check(
            "  max in flight", server.max_in_flight, f"<= {LIMIT}", server.max_in_flight <= LIMIT
        )
        server.reset()
        server.faults = Faults(latency=0.05)
        await asyncio.gather(*(plain(i) for i in range(LIMIT)))
        report.check(
            "  slots back (calls side by side after)",
            server.max_in_flight,
            f"= {LIMIT}",
            server.max_in_flight == LIMIT,
        )
        await client.aclose()


async def shutdown(calls: int, report: Report) -> None:
    async with FakeServer("openai", faults=Faults(latency=0.05)) as server:
        client = asyncllm.OpenAI(
            api_key="soak-not-a-key",
            base_url=server.url("/v1"),
            max_concurrent_requests=3,
            queue_size=calls,
            close_timeout=1,
        )
        server.hang_next(1)
        tasks = [
            asyncio.create_task(client.chat([{"role": "user", "content": f"{i}"}], model="m"))
            for i in range(calls)
        ]
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await client.aclose()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        took = time.perf_counter() - started
    kinds = collections.Counter(type(r).__name__ for r in results)
    report.info("shutdown: calls running or queued", calls)
    report.check("  close took (s)", f"{took:.2f}", "< 2", took < 2)
    report.check(
        "  outcomes",
        ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        "results or ClientClosedError",
        set(kinds) <= {"ChatResponse", "ClientClosedError"},
    )
    closed = kinds["ClientClosedError"]
    report.check("  ClientClosedError", closed, f">= {calls - 3}", closed >= calls - 3)


async def main(quick: bool) -> int:
    report = Report()
    calls, storm, queued = (5_000, 600, 30) if quick else (60_000, 3_000, 300)
    started = time.perf_counter()
    await fault_soak(calls, report)
    await cancellation_storm(storm, report)
    await shutdown(queued, report)
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    report.check("leftover tasks", len(leftover), "0", not leftover)
    print(
        f"\n### Fault soak ({'--quick' if quick else 'full'}; 30% faults, 3 backends, "
        f"limit {LIMIT} each, max_retries {MAX_RETRIES}, timeout {TIMEOUT}s), "
        f"{time.perf_counter() - started:.0f}s\n"
    )
    report.print()
    print("all invariants held" if report.ok else "INVARIANTS BROKEN")
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
