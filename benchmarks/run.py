"""How much does asyncllm's dispatcher cost? Every figure of one run, measured side by side.

    python benchmarks/run.py            # the full run (several minutes)
    python benchmarks/run.py --quick    # reduced counts, about a minute
    python benchmarks/run.py --markdown # the same, its tables ready to paste into RESULTS.md

Last it prints every figure issue #16 sets a target for, beside its target (with ``--markdown``
as a Markdown table for README and RESULTS.md). Ratios are measured in interleaved pairs and
shown as the median with a bootstrap 90% interval: on a shared machine wall clock moves by more
than any target's margin, so a figure is judged by the pairs, not by a single run.

The servers run in separate processes (``benchmarks/server.py``), contenders are interleaved and
every measurement is repeated: tables show the median and, in brackets, the spread (min-max).
Memory figures come from fresh child processes of this script (``--child``), so that one
measurement's garbage does not land in the next one's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
from child import start_server

import asyncllm
from asyncllm import Dispatcher, LimitsConfig, Priority
from asyncllm._engine._dispatcher import Attempt
from asyncllm._http import _json as fast_json
from asyncllm.testing import MockResponse, MockTransport

KEY = "bench-not-a-key"  # never a real key; and no key is ever printed
CONCURRENCY = (1, 16, 64, 256)
BACKEND_DELAY = 0.020  # seconds per answer in table 1c
# The openai SDK's own timeout: long, since at c=256 on a loaded machine its calls wait their
# turn for seconds (its default, with no retries, once ended a full run).
SDK_TIMEOUT = 300.0
Call = Callable[[int], Awaitable[str]]
SAME_JSON = "raw aiohttp + asyncllm's JSON"
RATIO_CONCURRENCY = 64
LIMITED = f"asyncllm, Dispatcher(max_in_flight={RATIO_CONCURRENCY})"


@dataclass(frozen=True)
class Sizes:
    repeats: int
    calls: int  # per throughput cell
    latency_calls: int
    cpu_calls: int
    streams: int  # interleaved repetitions of the streaming pair
    stream_words: int
    queued: int
    completed: int
    import_runs: int  # interleaved pairs of fresh interpreters (the issue asks for at least 15)
    low_calls: int
    high_calls: int
    rounds: int  # a throughput cell has at least this many calls per task
    pairs: int  # interleaved repetitions of the CPU ratio (the issue asks for at least 15)
    pair_calls: int  # calls per contender per repetition


FULL = Sizes(5, 2000, 3000, 20_000, 21, 400, 100_000, 1_000_000, 21, 4000, 200, 4, 21, 2000)
QUICK = Sizes(3, 100, 300, 2000, 5, 200, 10_000, 20_000, 3, 600, 40, 2, 15, 128)


# -- small helpers ---------------------------------------------------------------------------------


def rss() -> int:
    """Resident set size in bytes, from /proc (psutil where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss)


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(med(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bootstrap(
    values: Sequence[float], level: float = 0.90, draws: int = 4000
) -> tuple[float, float]:
    """A percentile-bootstrap interval for the median of ``values`` (seeded: reruns agree)."""
    rng = random.Random(1)
    n = len(values)
    medians = [med([values[rng.randrange(n)] for _ in range(n)]) for _ in range(draws)]
    tail = (1 - level) / 2
    return pct(medians, tail), pct(medians, 1 - tail)


# "####" with --markdown: the level RESULTS.md gives each table.
HEADING = ["###"]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{HEADING[0]} {title}\n")
    print("```")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("```")


# -- the targets of issue #16, each figure beside its target --------------------------------------


@dataclass(frozen=True)
class Target:
    figure: str
    measured: str
    target: str
    verdict: str


# Filled by each part as it runs, printed last (``print_targets``).
TARGETS: list[Target] = []


def at_least(values: Sequence[float], target: float, slack: float) -> str:
    """The verdict of the issue's rule for a ratio measured in pairs: met when the median meets
    the target and the bootstrap interval's lower end is within ``slack`` of it."""
    low, _ = bootstrap(values)
    return "met" if med(values) >= target and low >= target - slack else "missed"


def at_most(values: Sequence[float], target: float, slack: float) -> str:
    _, high = bootstrap(values)
    return "met" if med(values) <= target and high <= target + slack else "missed"


def with_interval(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """The median and its bootstrap 90% interval, as the target tables show them."""
    low, high = bootstrap(values)
    return f"{fmt.format(med(values))} [{fmt.format(low)} to {fmt.format(high)}]"


def print_targets(markdown: bool) -> None:
    if not TARGETS:
        return
    if markdown:
        print(f"\n{HEADING[0]} Issue #16: every target, measured in this run\n")
        print("| figure | measured (median [bootstrap 90%]) | target | |")
        print("|---|---|---|---|")
        for t in TARGETS:
            print(f"| {t.figure} | {t.measured} | {t.target} | {t.verdict} |")
        return
    table(
        "Issue #16: every target, measured in this run (median [bootstrap 90% interval])",
        ["figure", "measured", "target", "verdict"],
        [[t.figure, t.measured, t.target, t.verdict] for t in TARGETS],
    )


class _ReplyMessage(pydantic.BaseModel):
    role: str
    content: str | None = None


class _ReplyChoice(pydantic.BaseModel):
    index: int
    message: _ReplyMessage
    finish_reason: str | None = None


class _ReplyUsage(pydantic.BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Reply(pydantic.BaseModel):
    id: str
    model: str
    choices: list[_ReplyChoice]
    usage: _ReplyUsage | None = None


def message(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"q{i}"}]


class ServerProcess:
    """``benchmarks/server.py`` in a child process; it exits when our end of its stdin closes."""

    def __init__(self, kind: str, delay: float = 0.0) -> None:
        self.child, port = start_server("--kind", kind, "--delay", str(delay))
        self.url = f"http://127.0.0.1:{port}/v1"

    def close(self) -> None:
        self.child.close(5.0)


# -- the contenders ------------------------------------------------------------------------------


class Contenders:
    """One client per library, made once and warmed up, each as ``call(i) -> reply text``."""

    def __init__(self, url: str, only: Sequence[str] | None = None) -> None:
        self.url = url
        self.only = only
        self.names: list[str] = []
        self.calls: dict[str, Call] = {}
        self.missing: dict[str, str] = {}
        self._closers: list[Callable[[], Awaitable[Any]]] = []

    async def start(self) -> Contenders:
        url = self.url
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._closers.append(session.close)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

        async def raw(i: int) -> str:
            body = json.dumps({"model": "m", "messages": message(i)}).encode()
            async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
                payload = json.loads(await r.read())
            return str(payload["choices"][0]["message"]["content"])

        self._add("raw aiohttp", raw)

        # The same raw call with asyncllm's own JSON encoder and decoder: what of asyncllm's
        # figures comes from JSON, and what from everything else.
        async def raw_same_json(i: int) -> str:
            body = fast_json.dumps({"model": "m", "messages": message(i)})
            async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
                payload = fast_json.loads(await r.read())
            return str(payload["choices"][0]["message"]["content"])

        self._add(SAME_JSON, raw_same_json)

        # The same raw call with its reply validated into a pydantic model (one pass, from the
        # bytes): the least any client with typed replies pays on top of raw aiohttp.
        async def typed(i: int) -> str:
            body = json.dumps({"model": "m", "messages": message(i)}).encode()
            async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
                reply = _Reply.model_validate_json(await r.read())
            return str(reply.choices[0].message.content)

        self._add("raw aiohttp + typed reply", typed)

        # The same raw call run by the dispatcher (queue, breaker, tracker, retry policy, request
        # ID): what the dispatcher alone costs under real I/O.
        dispatcher = Dispatcher()
        lane = dispatcher.lane("dispatched", limits=LimitsConfig(max(CONCURRENCY), 100_000))

        async def dispatched(i: int) -> str:
            async def attempt(_: Attempt) -> str:
                return await raw(i)

            return await dispatcher.run(lane, "chat", attempt)

        self._add("aiohttp in Dispatcher.run", dispatched)

        client = asyncllm.OpenAI(
            api_key=KEY,
            base_url=url,
            max_concurrent_requests=max(CONCURRENCY),
            queue_size=100_000,
        )
        self._closers.append(client.aclose)

        async def ours(i: int) -> str:
            return (await client.chat(message(i), model="m")).text

        self._add("asyncllm", ours)

        if self.only is not None and LIMITED in self.only:  # the CPU ratio's contender only
            # The same client on a dispatcher with a dispatcher-wide limit: every slot then also
            # passes through the dispatcher's global queue. The limit equals the concurrency, so
            # that it costs its bookkeeping without holding calls back.
            limited_client = asyncllm.OpenAI(
                api_key=KEY,
                base_url=url,
                max_concurrent_requests=max(CONCURRENCY),
                queue_size=100_000,
                dispatcher=Dispatcher(max_in_flight=RATIO_CONCURRENCY),
            )
            self._closers.append(limited_client.aclose)

            async def limited(i: int) -> str:
                return (await limited_client.chat(message(i), model="m")).text

            self._add(LIMITED, limited)

        if not self.wants("openai SDK"):
            pass
        elif importlib.util.find_spec("openai") is None:
            self.missing["openai SDK"] = "not installed"
        else:
            from openai import AsyncOpenAI

            sdk = AsyncOpenAI(api_key=KEY, base_url=url, max_retries=0, timeout=SDK_TIMEOUT)
            self._closers.append(sdk.close)

            async def official(i: int) -> str:
                r = await sdk.chat.completions.create(model="m", messages=message(i))  # type: ignore[arg-type]
                return str(r.choices[0].message.content)

            self._add("openai SDK", official)

        if not self.wants("litellm"):
            pass
        elif importlib.util.find_spec("litellm") is None:
            self.missing["litellm"] = "not installed"
        else:
            litellm: Any = importlib.import_module("litellm")

            async def lite(i: int) -> str:
                r = await litellm.acompletion(
                    model="openai/m", api_base=url, api_key=KEY, messages=message(i)
                )
                return str(r.choices[0].message.content)

            self._add("litellm", lite)

        for name, call in self.calls.items():  # warm connections and first-use imports
            for i in range(20):
                reply = await call(i)
                if reply != f"echo: q{i}":
                    raise RuntimeError(f"{name} got a wrong reply: {reply!r}")
        return self

    def wants(self, name: str) -> bool:
        return self.only is None or name in self.only

    def _add(self, name: str, call: Call) -> None:
        if self.wants(name):
            self.names.append(name)
            self.calls[name] = call

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            await close()


async def drive(call: Call, concurrency: int, n: int) -> float:
    """Calls per second for ``n`` calls made by ``concurrency`` tasks side by side."""
    numbers = iter(range(n))

    async def worker() -> None:
        for i in numbers:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def drive_cpu(call: Call, concurrency: int, n: int) -> tuple[float, float]:
    """``drive``, and this process's CPU seconds per call during it."""
    cpu = time.process_time()
    rate = await drive(call, concurrency, n)
    return rate, (time.process_time() - cpu) / n


def rotated(names: list[str], k: int) -> list[str]:
    k %= len(names)
    return names[k:] + names[:k]


# -- 1. throughput ---------------------------------------------------------------------------------


async def bench_throughput(
    c: Contenders,
    sizes: Sizes,
    title: str = "1. Throughput, calls/s (loopback, fast server process), and ratio to raw aiohttp",
    levels: tuple[int, ...] = CONCURRENCY,
    cpu_title: str | None = "1b. Client CPU per call at the same runs, us (process time / calls)",
    reported: str | None = None,
    aim: str = "reported",
) -> None:
    """Calls/s of every contender at each concurrency; ``reported``, the figure's name in the
    targets table for asyncllm's wall-clock ratio at c=64 (reported, not a target: ``aim``)."""
    rates: dict[tuple[str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for rep in range(sizes.repeats):
        for conc in levels:
            n = max(sizes.calls // 2 if conc == 1 else sizes.calls, conc * sizes.rounds)
            this: dict[str, float] = {}
            for name in rotated(c.names, rep + conc):
                this[name], cpu = await drive_cpu(c.calls[name], conc, n)
                rates.setdefault((name, conc), []).append(this[name])
                cpus.setdefault((name, conc), []).append(cpu * 1e6)
            for name, rate in this.items():
                ratios.setdefault((name, conc), []).append(rate / this["raw aiohttp"])
    rows = []
    for name in c.names:
        rows.append(
            [name]
            + [spread(rates[name, conc]) for conc in levels]
            + [spread(ratios[name, conc], "{:.2f}") + "x" for conc in levels]
        )
    for name, why in c.missing.items():
        rows.append([name] + [why] * 2 * len(levels))
    table(
        title,
        ["client"] + [f"c={conc}" for conc in levels] + [f"ratio c={conc}" for conc in levels],
        rows,
    )
    if reported is not None and ("asyncllm", RATIO_CONCURRENCY) in ratios:
        TARGETS.append(
            Target(
                reported,
                with_interval(ratios["asyncllm", RATIO_CONCURRENCY]) + "x",
                aim,
                "-",
            )
        )
    # Past c=1 the client process runs out of CPU before the server does, so a throughput ratio
    # is a ratio of CPU per call: this table is where the calls/s above come from.
    if cpu_title is None:
        return
    table(
        cpu_title,
        ["client"] + [f"c={conc}" for conc in levels],
        [[name] + [spread(cpus[name, conc], "{:.1f}") for conc in levels] for name in c.names],
    )


# -- 0. the CPU ratio ------------------------------------------------------------------------------

RATIO_TARGET = 0.85


async def bench_ratio(url: str, sizes: Sizes) -> None:
    """The CPU ratio as issue #16 defines it: raw aiohttp's client CPU per call over each
    contender's, at concurrency 64 against the instant server, one ratio per interleaved pair."""
    names = ["raw aiohttp", SAME_JSON, "asyncllm", LIMITED]
    c = await Contenders(url, only=names).start()
    cpus: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    n = sizes.pair_calls
    try:
        for rep in range(sizes.pairs):
            this: dict[str, float] = {}
            for name in rotated(names, rep):
                gc.collect()
                _, this[name] = await drive_cpu(c.calls[name], RATIO_CONCURRENCY, n)
                cpus[name].append(this[name] * 1e6)
            for name in names:
                ratios[name].append(this["raw aiohttp"] / this[name])
    finally:
        await c.aclose()
    rows = []
    for name in names[1:]:
        low, high = bootstrap(ratios[name])
        verdict = "-"
        if name != SAME_JSON:
            verdict = at_least(ratios[name], RATIO_TARGET, 0.05)
        TARGETS.append(
            Target(
                f"CPU ratio, {name} (c={RATIO_CONCURRENCY}, instant server, {sizes.pairs} pairs)",
                with_interval(ratios[name]),
                "second baseline, reported" if name == SAME_JSON else f">= {RATIO_TARGET}",
                "-" if name == SAME_JSON else verdict,
            )
        )
        rows.append(
            [
                name,
                spread(cpus[name], "{:.1f}"),
                f"{med(ratios[name]):.2f}",
                f"{low:.2f}-{high:.2f}",
                f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f}",
                verdict,
            ]
        )
    table(
        f"0. CPU ratio: raw aiohttp's client CPU per call / the contender's (OpenAI.chat, "
        f"c={RATIO_CONCURRENCY}, instant server; {sizes.pairs} interleaved repetitions of "
        f"{n} calls each; raw aiohttp {spread(cpus['raw aiohttp'], '{:.1f}')} us per call)",
        [
            "contender",
            "CPU us per call",
            "ratio (median)",
            "bootstrap 90%",
            "min-max",
            f"target >= {RATIO_TARGET}",
        ],
        rows,
    )


# -- 2. latency and CPU per call -------------------------------------------------------------------


async def bench_latency(c: Contenders, sizes: Sizes) -> None:
    samples: dict[str, list[list[float]]] = {n: [[] for _ in range(sizes.repeats)] for n in c.names}
    per_block = sizes.latency_calls // sizes.repeats
    for block in range(sizes.repeats):
        for i in range(per_block):
            for name in rotated(c.names, i):
                started = time.perf_counter()
                await c.calls[name](i)
                samples[name][block].append(time.perf_counter() - started)
    rows = []
    for name in c.names:
        p50 = [pct(s, 0.5) * 1e6 for s in samples[name]]
        p99 = [pct(s, 0.99) * 1e6 for s in samples[name]]
        base50 = [pct(s, 0.5) * 1e6 for s in samples["raw aiohttp"]]
        base99 = [pct(s, 0.99) * 1e6 for s in samples["raw aiohttp"]]
        add50 = [a - b for a, b in zip(p50, base50, strict=True)]
        add99 = [a - b for a, b in zip(p99, base99, strict=True)]
        rows.append([name, spread(p50), spread(p99), spread(add50), spread(add99)])
    table(
        "2a. Latency per call at concurrency 1 (us), and what each adds over raw aiohttp",
        ["client", "p50", "p99", "added p50", "added p99"],
        rows,
    )


CANNED = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: q"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
).encode()


def canned(_: Any) -> MockResponse:
    return MockResponse(content=CANNED)


async def cpu_per_call(make: Callable[[], Awaitable[Any]], n: int, tasks: int = 1) -> float:
    """Process CPU seconds per call of ``make`` (``tasks`` side by side)."""
    numbers = iter(range(n))

    async def worker() -> None:
        for _ in numbers:
            await make()

    gc.collect()
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.process_time() - started) / n


async def bench_cpu(sizes: Sizes) -> None:
    n = sizes.cpu_calls
    dispatcher = Dispatcher()
    lane = dispatcher.lane("bench", limits=LimitsConfig(1000, 100_000))
    small = dispatcher.lane("bench-small", limits=LimitsConfig(16, 100_000))

    async def trivial(_: Attempt | None) -> int:
        return 1

    async def yielding(_: Attempt | None) -> int:
        await asyncio.sleep(0)
        return 1

    transport = MockTransport(canned)
    client = asyncllm.OpenAI(
        api_key=KEY,
        base_url="http://bench.invalid/v1",
        transport=transport,
        dispatcher=dispatcher,
        max_concurrent_requests=1000,
        queue_size=100_000,
    )
    request = asyncllm._http._transport.Request("POST", "http://bench.invalid", {}, b"{}")

    async def mock_only() -> None:
        r = await transport.send(request)
        await r.read(1 << 20)

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare attempt": lambda: trivial(None),
        "Dispatcher.run": lambda: dispatcher.run(lane, "op", trivial),
        "bare attempt, yielding, 64 tasks": lambda: yielding(None),
        "Dispatcher.run, yielding, 64 tasks, 16 slots": lambda: dispatcher.run(
            small, "op", yielding
        ),
        "MockTransport alone": mock_only,
        "OpenAI.chat over MockTransport": lambda: client.chat(message(0), model="m"),
    }
    tasks = {
        "bare attempt, yielding, 64 tasks": 64,
        "Dispatcher.run, yielding, 64 tasks, 16 slots": 64,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(sizes.repeats):
        for name, make in cases.items():
            results[name].append(await cpu_per_call(make, n, tasks.get(name, 1)) * 1e6)
    await client.aclose()

    def minus(a: str, b: str) -> list[float]:
        return [x - y for x, y in zip(results[a], results[b], strict=True)]

    rows = [
        [
            "dispatcher, fast path (slot free)",
            spread(minus("Dispatcher.run", "bare attempt"), "{:.1f}"),
        ],
        [
            "dispatcher, queued path (64 tasks on 16 slots)",
            spread(
                minus(
                    "Dispatcher.run, yielding, 64 tasks, 16 slots",
                    "bare attempt, yielding, 64 tasks",
                ),
                "{:.1f}",
            ),
        ],
        [
            "whole OpenAI.chat (body, dispatcher, parse), mock excluded",
            spread(minus("OpenAI.chat over MockTransport", "MockTransport alone"), "{:.1f}"),
        ],
        [
            "  (MockTransport's own cost, excluded above)",
            spread(results["MockTransport alone"], "{:.1f}"),
        ],
    ]
    table(
        "2b. CPU time per call spent in asyncllm (us, MockTransport: no I/O)",
        ["what", "us per call"],
        rows,
    )


async def bench_otel(sizes: Sizes) -> None:
    """What telemetry costs a call: no observer (as without opentelemetry installed), the default
    with the OpenTelemetry API installed and no SDK configured (the target: within 3%), and an SDK
    that records spans and metrics (with no exporter, so only the recording is measured)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from asyncllm._engine._observe import default_observer
    from asyncllm.integrations.otel import OTelObserver

    n = sizes.cpu_calls
    recording = OTelObserver(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    observers = {
        "no observer": None,
        "OTel API, no SDK (default)": default_observer(),
        "OTel SDK recording": recording,
    }
    clients = {
        name: asyncllm.OpenAI(
            api_key=KEY,
            base_url="http://bench.invalid/v1",
            transport=MockTransport(canned),
            dispatcher=Dispatcher(observer=observer),
            max_concurrent_requests=1000,
            queue_size=100_000,
        )
        for name, observer in observers.items()
    }
    results: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(sizes.repeats):
        for name, client in clients.items():  # interleaved, so drift hits every case alike
            results[name].append(
                await cpu_per_call(lambda c=client: c.chat(message(0), model="m"), n) * 1e6
            )
    for client in clients.values():
        await client.aclose()
    # Against no observer by the fastest run as well as the median: on a busy machine the
    # fastest run is the one least disturbed by others.
    base, base_min = med(results["no observer"]), min(results["no observer"])
    rows = [
        [
            name,
            spread(values, "{:.1f}"),
            f"{(med(values) / base - 1) * 100:+.1f}%",
            f"{(min(values) / base_min - 1) * 100:+.1f}%",
        ]
        for name, values in results.items()
    ]
    table(
        "2c. Telemetry: CPU per OpenAI.chat over MockTransport (us), and against no observer",
        ["observer", "us per call", "vs none, median", "vs none, fastest"],
        rows,
    )


# -- 3. streaming ------------------------------------------------------------------------------------

STREAM_TARGET = 0.95
# What one streamed reply gave: seconds to the first chunk, seconds from it to the end, chunks,
# the text, and this process's CPU seconds for the whole stream.
Streamed = tuple[float, float, int, str, float]


async def bench_streaming(url: str, sizes: Sizes) -> None:
    """asyncllm's ``stream_chat`` against raw aiohttp reading the same SSE stream (and the openai
    SDK where installed), one repetition of each after the other in rotated order. Per repetition
    each contender gets a ratio to raw aiohttp's stream of the same repetition: chunks/s (wall
    clock, the target) and CPU per chunk (this process's CPU time, which a loaded machine moves
    less)."""
    text = " ".join(f"w{i}" for i in range(sizes.stream_words))
    messages = [{"role": "user", "content": text}]
    expected = f"echo: {text}"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    client = asyncllm.OpenAI(api_key=KEY, base_url=url)
    body = json.dumps({"model": "m", "messages": messages, "stream": True}).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    async def raw() -> Streamed:
        cpu = time.process_time()
        started = time.perf_counter()
        first = 0.0
        count = 0
        parts: list[str] = []
        async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
            async for line in r.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if not count:
                    first = time.perf_counter()
                count += 1
                if chunk["choices"]:
                    parts.append(chunk["choices"][0]["delta"].get("content") or "")
        ended = time.perf_counter()
        return first - started, ended - first, count, "".join(parts), time.process_time() - cpu

    async def ours() -> Streamed:
        cpu = time.process_time()
        started = time.perf_counter()
        first = 0.0
        count = 0
        parts: list[str] = []
        async with client.stream_chat(messages, model="m") as stream:
            async for chunk in stream:
                if not count:
                    first = time.perf_counter()
                count += 1
                parts.append(chunk.delta)
        ended = time.perf_counter()
        return first - started, ended - first, count, "".join(parts), time.process_time() - cpu

    contenders: dict[str, Callable[[], Awaitable[Streamed]]] = {
        "raw aiohttp": raw,
        "asyncllm": ours,
    }
    closers: list[Callable[[], Awaitable[Any]]] = [session.close, client.aclose]
    if importlib.util.find_spec("openai") is not None:
        from openai import AsyncOpenAI

        sdk = AsyncOpenAI(api_key=KEY, base_url=url, max_retries=0, timeout=SDK_TIMEOUT)
        closers.append(sdk.close)

        async def official() -> Streamed:
            cpu = time.process_time()
            started = time.perf_counter()
            first = 0.0
            count = 0
            parts: list[str] = []
            stream = await sdk.chat.completions.create(  # type: ignore[call-overload]
                model="m",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if not count:
                    first = time.perf_counter()
                count += 1
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
            ended = time.perf_counter()
            return first - started, ended - first, count, "".join(parts), time.process_time() - cpu

        contenders["openai SDK"] = official

    names = list(contenders)
    for name in names:  # warm up, and check every contender reads the whole reply
        got = (await contenders[name]())[3]
        if got != expected:
            raise RuntimeError(f"{name} streamed a wrong reply")
    ttfc: dict[str, list[float]] = {n: [] for n in names}
    whole: dict[str, list[float]] = {n: [] for n in names}
    rate: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    chunks: dict[str, int] = {}
    for i in range(sizes.streams):
        for name in rotated(names, i):
            gc.collect()
            first, rest, count, _, used = await contenders[name]()
            ttfc[name].append(first * 1e3)
            whole[name].append((first + rest) * 1e3)
            rate[name].append((count - 1) / rest)
            cpu[name].append(used / count * 1e6)
            chunks[name] = count
    for close in closers:
        await close()

    def ratios(name: str) -> tuple[list[float], list[float]]:
        by_rate = [a / b for a, b in zip(rate[name], rate["raw aiohttp"], strict=True)]
        by_cpu = [b / a for a, b in zip(cpu[name], cpu["raw aiohttp"], strict=True)]
        return by_rate, by_cpu

    rows = []
    for name in names:
        by_rate, by_cpu = ratios(name)
        rows.append(
            [
                name,
                str(chunks[name]),
                spread(ttfc[name], "{:.2f}"),
                spread(whole[name], "{:.1f}"),
                spread(rate[name]),
                with_interval(by_rate) + "x",
                spread(cpu[name], "{:.1f}"),
                with_interval(by_cpu) + "x",
            ]
        )
    table(
        f"3. Streaming a {sizes.stream_words + 1}-word reply (FakeServer process, SSE; "
        f"{sizes.streams} interleaved repetitions; ratios: median [bootstrap 90%])",
        [
            "client",
            "chunks",
            "first chunk ms",
            "whole stream ms",
            "chunks/s",
            "chunks/s ratio",
            "CPU us per chunk",
            "CPU ratio",
        ],
        rows,
    )
    by_rate, by_cpu = ratios("asyncllm")
    TARGETS.append(
        Target(
            f"streaming chunks/s, asyncllm / raw aiohttp ({sizes.streams} pairs, wall clock)",
            with_interval(by_rate) + "x",
            f">= {STREAM_TARGET}",
            at_least(by_rate, STREAM_TARGET, 0.05),
        )
    )
    TARGETS.append(
        Target(
            "streaming CPU per chunk, raw aiohttp / asyncllm (same runs)",
            with_interval(by_cpu) + "x",
            "reported",
            "-",
        )
    )
    TARGETS.append(
        Target(
            "streaming time to first chunk, ms: asyncllm; raw aiohttp",
            f"{med(ttfc['asyncllm']):.2f}; {med(ttfc['raw aiohttp']):.2f}",
            "reported",
            "-",
        )
    )


# -- 4. memory (in child processes) ---------------------------------------------------------------


async def child_queued(kind: str, n: int, trace: bool = False) -> dict[str, Any]:
    """RSS growth for ``n`` calls that wait at once behind a backend that does not answer; with
    ``trace``, the growth of what tracemalloc sees instead (its own bookkeeping would inflate
    RSS, so the two come from separate runs)."""
    release = asyncio.Event()
    limit = 16

    async def hold(_: Any) -> MockResponse:
        await release.wait()
        return MockResponse(content=CANNED)

    dispatcher = Dispatcher()
    lane = dispatcher.lane("slow", limits=LimitsConfig(limit, n))
    client = asyncllm.OpenAI(
        api_key=KEY,
        base_url="http://bench.invalid/v1",
        transport=MockTransport(hold),
        dispatcher=dispatcher,
        max_concurrent_requests=limit,
        queue_size=n,
    )

    async def attempt(_: Attempt) -> int:
        await release.wait()
        return 1

    async def bare(future: asyncio.Future[None]) -> None:
        await future

    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    # Warm every code path once, so that first-use allocations are not counted per call.
    warm_tasks = [asyncio.ensure_future(bare(loop.create_future())) for _ in range(2)]
    for t in warm_tasks:
        t.cancel()
    await asyncio.gather(*warm_tasks, return_exceptions=True)
    gc.collect()
    if trace:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if trace else rss()
    tasks: list[asyncio.Future[Any]]
    if kind == "bare":
        tasks = [asyncio.ensure_future(bare(future)) for _ in range(n)]
    elif kind == "dispatcher":
        tasks = [asyncio.ensure_future(dispatcher.run(lane, "op", attempt)) for _ in range(n)]
    else:
        tasks = [
            asyncio.ensure_future(client.chat(message(i), model="m", priority=Priority.LOW))
            for i in range(n)
        ]
    for _ in range(5):
        await asyncio.sleep(0)
    queued = {"bare": n, "dispatcher": lane.queued}.get(kind, 0)
    if kind == "client":
        queued = sum(s.queued for s in dispatcher.stats().values())
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if trace else rss()
    tracemalloc.stop()
    release.set()
    future.set_result(None)
    await asyncio.gather(*tasks)
    await client.aclose()
    return {"kind": kind, "n": n, "queued": queued, "growth": after - before}


async def child_completed(n: int) -> dict[str, Any]:
    """RSS while ``n`` calls complete one after another (64 at a time); sampled ten times."""
    dispatcher = Dispatcher()
    client = asyncllm.OpenAI(
        api_key=KEY,
        base_url="http://bench.invalid/v1",
        transport=MockTransport(canned),
        dispatcher=dispatcher,
        max_concurrent_requests=64,
        queue_size=1000,
    )
    step = n // 10
    samples: list[tuple[int, int]] = []
    done = 0
    for _ in range(10):
        numbers = iter(range(step))

        async def worker(numbers: Any = numbers) -> None:
            for i in numbers:
                await client.chat(message(i), model="m")

        await asyncio.gather(*(worker() for _ in range(64)))
        done += step
        gc.collect()
        samples.append((done, rss()))
    tracked = len(dispatcher.tracker)
    await client.aclose()
    return {"samples": samples, "tracked": tracked}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


MEMORY_TARGET = 1500


def bench_memory(sizes: Sizes) -> None:
    n = sizes.queued
    growth: dict[str, list[float]] = {"bare": [], "dispatcher": [], "client": []}
    traced: dict[str, list[float]] = {"bare": [], "dispatcher": [], "client": []}
    for rep in range(max(2, sizes.repeats - 2)):
        for kind in rotated(list(growth), rep):
            for how, into in (("rss", growth), ("trace", traced)):
                result = run_child("queued", kind, str(n), how)
                if kind != "bare" and result["queued"] < n - 16:
                    raise RuntimeError(f"only {result['queued']} of {n} calls were queued")
                into[kind].append(result["growth"])
    rows = []
    for kind, label in (
        ("bare", "bare tasks awaiting a future (baseline)"),
        ("dispatcher", "Dispatcher.run"),
        ("client", "OpenAI.chat (body built, then queued)"),
    ):
        per = [g / n for g in growth[kind]]
        part = [(g - b) / n for g, b in zip(growth[kind], growth["bare"], strict=True)]
        traced_part = [(g - b) / n for g, b in zip(traced[kind], traced["bare"], strict=True)]
        rows.append(
            [
                label,
                spread([g / 2**20 for g in growth[kind]], "{:.1f}"),
                spread(per),
                "-" if kind == "bare" else spread(part),
                spread([g / n for g in traced[kind]]),
                "-" if kind == "bare" else spread(traced_part),
            ]
        )
    client_part = [(g - b) / n for g, b in zip(growth["client"], growth["bare"], strict=True)]
    traced_client = [(g - b) / n for g, b in zip(traced["client"], traced["bare"], strict=True)]
    TARGETS.append(
        Target(
            f"asyncllm's memory per queued OpenAI.chat, bytes, RSS ({n:,} queued, minus bare tasks)",
            spread(client_part),
            "<= 1500",
            "met" if med(client_part) <= MEMORY_TARGET else "missed",
        )
    )
    TARGETS.append(
        Target(
            "the same by tracemalloc",
            spread(traced_client),
            "<= 1500",
            "met" if med(traced_client) <= MEMORY_TARGET else "missed",
        )
    )
    table(
        f"4a. Memory for {n:,} calls queued at once (16 running, the rest queued; distinct "
        "messages, each body built before it queues); target: asyncllm's part of a queued "
        "OpenAI.chat <= 1,500 bytes",
        [
            "what",
            "RSS growth MiB",
            "RSS bytes per call",
            "asyncllm's part (minus baseline)",
            "tracemalloc bytes per call",
            "asyncllm's part (tracemalloc)",
        ],
        rows,
    )
    result = run_child("completed", str(sizes.completed))
    samples = result["samples"]
    rows = [
        [f"{done:,}", f"{r / 2**20:.1f}", f"{(r - samples[0][1]) / 2**20:+.1f}"]
        for done, r in samples
    ]
    table(
        f"4b. RSS while {sizes.completed:,} calls complete (OpenAI.chat over MockTransport, 64 at a time); "
        f"tracker holds {result['tracked']:,} records at the end",
        ["calls done", "RSS MiB", "since first sample"],
        rows,
    )


CONSTRUCT = "import asyncllm; asyncllm.OpenAI(api_key='x')"
DEPENDENCIES = "import aiohttp, pydantic"
IMPORT_TARGET = 30.0  # ms
# Run in a fresh interpreter: times the code in between, after the interpreter has started (its
# start is the same for every case, and on a loaded machine its noise would swamp the rest).
TIMED = (
    "import time as _t\n_w, _c = _t.perf_counter(), _t.process_time()\n{code}\n"
    "print(_t.perf_counter() - _w, _t.process_time() - _c)"
)


# -- 5. import time ------------------------------------------------------------------------------------


def bench_imports(sizes: Sizes) -> None:
    """Each case in a fresh interpreter, the cases interleaved in rotated order, ``import_runs``
    rounds after a warm-up round; the target is the difference, paired by round, between
    constructing ``asyncllm.OpenAI`` (import included) and importing its two dependencies."""
    cases = {
        "import aiohttp": "import aiohttp",
        DEPENDENCIES: DEPENDENCIES,
        "import asyncllm": "import asyncllm",
        CONSTRUCT: CONSTRUCT,
    }
    missing = []
    for module in ("openai", "litellm"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"import {module}")
        else:
            cases[f"import {module}"] = f"import {module}"
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    # The interpreter's own settings are left out, but not where asyncllm comes from: this
    # checkout's package, as in every other part.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(Path(asyncllm.__file__).resolve().parents[1])
    for rep in range(sizes.import_runs + 1):
        for name in rotated(list(cases), rep):
            out = subprocess.run(
                [sys.executable, "-c", TIMED.format(code=cases[name])],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            ).stdout.split()
            if rep:  # the first round only warms the disk cache
                wall[name].append(float(out[-2]) * 1e3)
                cpu[name].append(float(out[-1]) * 1e3)
    aio = med(wall["import aiohttp"])

    def more(values: dict[str, list[float]], name: str) -> list[float]:
        # Paired by round: the two ran close together, under the same load.
        return [v - d for v, d in zip(values[name], values[DEPENDENCIES], strict=True)]

    rows = []
    for name in cases:
        rows.append(
            [
                name,
                spread(wall[name], "{:.1f}"),
                spread(cpu[name], "{:.1f}"),
                f"{med(wall[name]) / aio:.2f}x",
                "-" if name == DEPENDENCIES else with_interval(more(wall, name), "{:+.1f}"),
                "-" if name == DEPENDENCIES else with_interval(more(cpu, name), "{:+.1f}"),
            ]
        )
    rows.extend([name, "not installed", "-", "-", "-", "-"] for name in missing)
    table(
        f"5. Import time in a fresh interpreter (ms, timed inside it; {sizes.import_runs} "
        f"interleaved rounds); the target: constructing asyncllm.OpenAI at most "
        f"{IMPORT_TARGET:.0f} ms more than {DEPENDENCIES}",
        [
            "what",
            "wall ms",
            "CPU ms",
            "wall vs import aiohttp",
            f"wall minus {DEPENDENCIES} (median [90%])",
            "CPU minus it",
        ],
        rows,
    )
    extra = more(wall, CONSTRUCT)
    TARGETS.append(
        Target(
            f"{CONSTRUCT} minus {DEPENDENCIES}, ms of wall clock ({sizes.import_runs} pairs)",
            with_interval(extra, "{:+.1f}"),
            f"<= {IMPORT_TARGET:.0f}",
            at_most(extra, IMPORT_TARGET, 5.0),
        )
    )
    TARGETS.append(
        Target(
            "the same in CPU time (what a loaded machine moves less)",
            with_interval(more(cpu, CONSTRUCT), "{:+.1f}"),
            "reported",
            "-",
        )
    )


# -- 6. priority under saturation ----------------------------------------------------------------------


async def bench_priority(sizes: Sizes) -> None:
    dispatcher = Dispatcher()
    lane = dispatcher.lane("saturated", limits=LimitsConfig(4, 100_000))

    async def work(_: Attempt) -> None:
        await asyncio.sleep(0.001)

    low = [
        asyncio.ensure_future(
            dispatcher.run(lane, "op", work, priority=Priority.LOW, request_id=f"low-{i}")
        )
        for i in range(sizes.low_calls)
    ]
    await asyncio.sleep(0.01)
    high = []
    for i in range(sizes.high_calls):
        high.append(
            asyncio.ensure_future(
                dispatcher.run(lane, "op", work, priority=Priority.HIGH, request_id=f"high-{i}")
            )
        )
        await asyncio.sleep(0.003)
    await asyncio.gather(*low, *high)

    def waits(prefix: str, count: int) -> list[float]:
        out = []
        for i in range(count):
            record = dispatcher.tracker.get(f"{prefix}-{i}")
            assert record is not None
            assert record.started_at is not None
            out.append((record.started_at - record.enqueued_at) * 1e3)
        return out

    rows = []
    for label, prefix, count in (
        ("HIGH", "high", sizes.high_calls),
        ("LOW", "low", sizes.low_calls),
    ):
        w = waits(prefix, count)
        rows.append(
            [label, str(count), f"{pct(w, 0.5):.2f}", f"{pct(w, 0.99):.2f}", f"{max(w):.2f}"]
        )
    table(
        "6. Wait from enqueue to start with the backend saturated by LOW calls (ms; 4 slots, "
        "1 ms calls, HIGH arriving every 3 ms)",
        ["priority", "calls", "p50 wait", "p99 wait", "max wait"],
        rows,
    )


# -- main ----------------------------------------------------------------------------------------------


def describe_machine() -> None:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    print(
        f"machine: {os.cpu_count()} CPUs ({model}); Python {platform.python_version()} "
        f"({platform.python_implementation()}); {platform.system()} {platform.release()}"
    )
    print(f"aiohttp {aiohttp.__version__}", end="")
    if importlib.util.find_spec("openai") is not None:
        import openai

        print(f"; openai {openai.__version__}", end="")
    print(f"; load average at start {os.getloadavg()[0]:.2f}")


async def main(
    quick: bool, only: set[str], markdown: bool = False, levels: tuple[int, ...] = CONCURRENCY
) -> None:
    sizes = QUICK if quick else FULL
    if markdown:
        HEADING[0] = "####"

    def wanted(part: str) -> bool:
        return not only or part in only

    started = time.perf_counter()
    describe_machine()
    print(f"mode: {'--quick' if quick else 'full'}; {sizes.repeats} repeats; median [min-max]")
    if wanted("ratio"):
        fast = ServerProcess("fast")
        try:
            await bench_ratio(fast.url, sizes)
        finally:
            fast.close()
    if wanted("throughput") or wanted("latency"):
        fast = ServerProcess("fast")
        try:
            contenders = await Contenders(fast.url).start()
            try:
                if wanted("throughput"):
                    await bench_throughput(
                        contenders,
                        sizes,
                        levels=levels,
                        reported=f"wall-clock ratio, asyncllm / raw aiohttp, c={RATIO_CONCURRENCY}, "
                        f"instant server ({sizes.repeats} repeats)",
                    )
                if wanted("latency"):
                    await bench_latency(contenders, sizes)
            finally:
                await contenders.aclose()
        finally:
            fast.close()
    if wanted("backend"):
        # The same contenders against a server that takes 20 ms per answer, as a fast model
        # would: what the client's CPU per call means once the backend sets the pace.
        slow = ServerProcess("fast", delay=BACKEND_DELAY)
        try:
            contenders = await Contenders(slow.url).start()
            try:
                await bench_throughput(
                    contenders,
                    sizes,
                    f"1c. Throughput, calls/s, against a server that answers after "
                    f"{BACKEND_DELAY * 1000:.0f} ms, and ratio to raw aiohttp",
                    (64,) if quick else (16, 64, 256),
                    None,
                    f"wall-clock ratio, asyncllm / raw aiohttp, c={RATIO_CONCURRENCY}, server "
                    f"answering after {BACKEND_DELAY * 1000:.0f} ms ({sizes.repeats} repeats)",
                    "reported (0.95 on a quiet machine is the aim)",
                )
            finally:
                await contenders.aclose()
        finally:
            slow.close()
    if wanted("cpu"):
        await bench_cpu(sizes)
    if wanted("otel") and importlib.util.find_spec("opentelemetry.sdk") is not None:
        await bench_otel(sizes)
    if wanted("streaming"):
        fake = ServerProcess("fake")
        try:
            await bench_streaming(fake.url, sizes)
        finally:
            fake.close()
    if wanted("memory"):
        bench_memory(sizes)
    if wanted("imports"):
        bench_imports(sizes)
    if wanted("priority"):
        await bench_priority(sizes)
    print_targets(markdown)
    print(f"\ntotal time {time.perf_counter() - started:.0f}s")


def child(args: list[str]) -> None:
    if args[0] == "queued":
        result = asyncio.run(child_queued(args[1], int(args[2]), args[3:] == ["trace"]))
    else:
        result = asyncio.run(child_completed(int(args[1])))
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced counts, under 30 seconds")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated parts: "
        "ratio,throughput,latency,backend,cpu,otel,streaming,memory,imports,priority",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="tables as RESULTS.md has them, the targets as a table for README and RESULTS.md",
    )
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, CONCURRENCY)),
        help="comma-separated concurrency levels of the throughput tables (1 and 1b)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child)
    else:
        parts = {p for p in options.only.split(",") if p}
        levels = tuple(int(c) for c in options.concurrency.split(","))
        asyncio.run(main(options.quick, parts, options.markdown, levels))
