"""Rate limits: how close each client comes to a vendor's hidden capacity without collecting
429s, and whether urgent calls still get through while the rest is throttled. Side by side in
one run.

    python benchmarks/ratelimits.py             # 10,000 calls per contender (several minutes)
    python benchmarks/ratelimits.py --quick     # 2,000 calls per contender (about two minutes)
    python benchmarks/ratelimits.py --litellm-python .venv-litellm/bin/python   # with LiteLLM

The vendor is ``benchmarks/server.py --kind capacity``: the OpenAI fake with a hidden capacity
(``asyncllm.testing.Capacity``): requests and tokens per minute, sized so that a client using all
of it finishes in about ``--seconds``, a concurrency cap answered 503, and ``--delay`` seconds
per admitted answer. It speaks ``--dialect``'s rate headers. Each contender gets a fresh vendor
(full buckets) and runs in a fresh child process of this script (``--contender``).

The load: ``--calls`` calls, 10% HIGH, 45% NORMAL, 45% LOW. The NORMAL and LOW ones are all
called at once (a backlog far beyond the capacity, so LOW work is throttled for the whole run);
the HIGH ones arrive spread over most of the run, as urgent calls do. A call's wait is from
being called to the arrival at the vendor of the request it was answered by (the vendor notes
when each arrived, by an ``x-bench-call`` header): queueing, rate waits, backoff and refused
attempts, not the vendor's own time.

Reported per contender, beside the targets of issue #20: the share of requests the vendor
answered 429 (over requests sent), the share it answered 503, the capacity used (requests the
vendor admitted over what its buckets allowed in the contender's total time: full at the start,
then their refill), the total time, the calls that failed for the caller, and the HIGH p50/p99
and LOW p99 waits.

The contenders:

* ``retries``: ``asyncllm.OpenAI`` reading no rate headers (``rate_dialect = None``): fixed
  concurrency and retries honouring ``Retry-After`` alone.
* ``limits``: ``asyncllm.OpenAI`` with ``rate_limits=RateLimits(requests_per_minute=...,
  tokens_per_minute=...)`` set to the vendor's hidden budgets (and ``sub_window=1`` for Azure),
  and what it learns from the headers.
* ``learned``: ``asyncllm.OpenAI`` with no budget configured (``RateLimits(max_wait=...)``
  only): what it learns from the vendor's headers. Here and in ``limits`` it reads the headers
  of ``--dialect`` as the backend that speaks it does (``Claude``'s for anthropic, ``Groq``'s
  for groq); Azure's carry no limit, so nothing is learned from them.
* ``litellm``: LiteLLM's ``Router`` with the same limits (``rpm``, ``tpm``,
  ``max_parallel_requests``) and priorities (its scheduler), when ``litellm`` is importable by
  this interpreter or by ``--litellm-python`` (never in CI). ``litellm-rpm``: the same without
  ``max_parallel_requests``, which LiteLLM's pinned version enforces by refusing calls.

``pool_with_one_failing`` (three members, one always failing) runs once ``asyncllm.Pool``
exists; until then its row says "not available".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from child import start_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "bench-not-a-key"  # never a real key; and no key is ever printed
MODEL = "fake-chat"
HIGH, NORMAL, LOW = 0, 1, 2  # asyncllm.Priority's values; LiteLLM's scheduler also runs 0 first
CONTENDERS = ("retries", "limits", "learned", "litellm", "litellm-rpm")
LITELLM = ("litellm", "litellm-rpm")
LABELS = {
    "retries": "asyncllm, fixed concurrency + retries only",
    "limits": "asyncllm, RateLimits configured",
    "learned": "asyncllm, learned from headers",
    "litellm": "LiteLLM Router, same limits",
    "litellm-rpm": "LiteLLM Router, rpm/tpm only",
}
TARGETS = {"429": "<= 1%", "used": ">= 90%", "high_p99": "< 100 ms"}
# Tokens are not what binds: each call asks its prompt and MAX_TOKENS (about 17 tokens, as the
# vendor counts them), and the token budget is this many times the request budget.
TOKENS_PER_REQUEST = 25
MAX_TOKENS = 16
MAX_WAIT = 3600.0  # a LOW call may wait the whole run for its budget
# Each call says which it is, so the vendor can tell when the request it answered arrived.
CALL_HEADER = "x-bench-call"


@dataclass(frozen=True)
class Setup:
    calls: int
    seconds: float  # how long a client using the whole capacity takes
    delay: float
    vendor_concurrency: int
    client_concurrency: int
    dialect: str
    seed: int

    @property
    def rpm(self) -> int:
        """The hidden request budget: a full minute's bucket at the start plus its refill over
        ``seconds`` hold all the calls."""
        return max(1, math.ceil(60 * self.calls / (self.seconds + 60)))

    @property
    def tpm(self) -> int:
        return self.rpm * TOKENS_PER_REQUEST

    @property
    def capacity(self) -> dict[str, Any]:
        return {
            "requests_per_minute": self.rpm,
            "tokens_per_minute": self.tpm,
            "max_concurrent": self.vendor_concurrency,
            "busy_status": 503,
            "dialect": self.dialect,
        }


def plan(setup: Setup) -> list[tuple[float, int]]:
    """Each call's (start offset in seconds, priority), seeded: every contender gets the same."""
    rng = random.Random(setup.seed)
    spread = 0.8 * setup.seconds
    calls = []
    for _ in range(setup.calls):
        draw = rng.random()
        if draw < 0.10:
            calls.append((rng.uniform(0, spread), HIGH))
        else:
            calls.append((0.0, NORMAL if draw < 0.55 else LOW))
    return calls


def message(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"q{i}"}]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


# -- the contenders (each in its own child process) -------------------------------------------

Call = Callable[[int, int], Awaitable[object]]


@asynccontextmanager
async def asyncllm_client(url: str, setup: Setup, name: str) -> AsyncIterator[Call]:
    import asyncllm

    class RetriesOnly(asyncllm.OpenAI):
        """``OpenAI`` that reads no rate headers: retries (and ``Retry-After``) alone."""

        rate_dialect = None

    class Reading(asyncllm.OpenAI):
        """``OpenAI`` that reads the rate headers of ``--dialect`` (the vendor speaks the OpenAI
        protocol with them), as the backend that speaks them does."""

        rate_dialect = {
            "anthropic": asyncllm.Claude.rate_dialect,
            "groq": asyncllm.Groq.rate_dialect,
        }.get(setup.dialect, asyncllm.OpenAI.rate_dialect)

    rate_limits = None
    if name == "limits":
        rate_limits = asyncllm.RateLimits(
            requests_per_minute=setup.rpm,
            tokens_per_minute=setup.tpm,
            sub_window=1.0 if setup.dialect == "azure" else None,
            max_wait=MAX_WAIT,
        )
    elif name == "learned":
        rate_limits = asyncllm.RateLimits(max_wait=MAX_WAIT)  # no budgets: learned ones only
    kind = RetriesOnly if name == "retries" else Reading
    client = kind(
        api_key=KEY,
        base_url=url,
        max_concurrent_requests=setup.client_concurrency,
        queue_size=setup.calls + 1,
        rate_limits=rate_limits,
    )

    async def call(i: int, priority: int) -> object:
        return await client.chat(
            message(i),
            model=MODEL,
            max_tokens=MAX_TOKENS,
            priority=priority,
            extra_headers={CALL_HEADER: str(i)},
        )

    async with client:
        yield call


# LiteLLM's Router reads ``kwargs.get("priority") or default_priority``: a call passing its
# documented top priority, 0, skips the scheduler altogether. Every call is given our priority
# plus one (same order), so that all of them go through the scheduler the benchmark measures.
LITELLM_PRIORITY_OFFSET = 1


@asynccontextmanager
async def litellm_router(url: str, setup: Setup, max_parallel: bool) -> AsyncIterator[Call]:
    """LiteLLM's Router configured as its documentation describes for rate limits and priorities:
    the deployment's ``rpm``, ``tpm`` and ``max_parallel_requests`` in ``litellm_params``,
    ``usage-based-routing-v2`` (the strategy that checks them before each call; the shuffle its
    scheduler page recommends for speed only weighs by them), ``num_retries`` as ours,
    ``polling_interval`` at its documented 30 ms, and each call's ``priority``. Without
    ``max_parallel``, the deployment has no ``max_parallel_requests`` (LiteLLM then derives one
    from ``rpm``): its pinned version refuses a call past that limit (a 429 of its own) rather
    than queueing it, so this row shows its rate limits without those refusals."""
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    router = litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": url,
                    "api_key": KEY,
                    "rpm": setup.rpm,
                    "tpm": setup.tpm,
                    **({"max_parallel_requests": setup.client_concurrency} if max_parallel else {}),
                },
            }
        ],
        routing_strategy="usage-based-routing-v2",
        num_retries=5,
        polling_interval=0.03,
        timeout=MAX_WAIT,
    )

    async def call(i: int, priority: int) -> object:
        return await router.acompletion(
            model="bench",
            messages=message(i),
            max_tokens=MAX_TOKENS,
            priority=priority + LITELLM_PRIORITY_OFFSET,
            extra_headers={CALL_HEADER: str(i)},
        )

    yield call


def client_for(name: str, url: str, setup: Setup) -> Any:
    if name in LITELLM:
        return litellm_router(url, setup, max_parallel=name == "litellm")
    return asyncllm_client(url, setup, name)


async def drive(call: Call, setup: Setup, url: str) -> dict[str, Any]:
    """Run the plan through ``call``; the waits by priority and the errors by type. A call's
    wait is from its start to the arrival, at the vendor, of the request that was answered
    (both wall-clock times on this machine): its queueing, rate waits and retries, not the
    vendor's own time."""
    loop = asyncio.get_running_loop()
    began: dict[int, float] = {}
    answered: dict[int, int] = {}
    errors: dict[str, int] = {}
    samples: dict[str, str] = {}  # the first message of each kind of error
    start = loop.time()

    async def one(i: int, at: float, priority: int) -> None:
        if at > 0:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
        began[i] = time.time()
        try:
            await call(i, priority)
        except Exception as exc:  # every failure is counted, none stops the run
            kind = type(exc).__name__
            errors[kind] = errors.get(kind, 0) + 1
            samples.setdefault(kind, " ".join(str(exc).split())[:160])
        else:
            answered[i] = priority

    await asyncio.gather(*(one(i, at, p) for i, (at, p) in enumerate(plan(setup))))
    total = loop.time() - start
    base = url.removesuffix("/v1")
    arrivals = await loop.run_in_executor(None, fetch_json, base + "/_capacity/arrivals")
    waits: dict[int, list[float]] = {HIGH: [], NORMAL: [], LOW: []}
    for i, priority in answered.items():
        arrived = arrivals.get(str(i))
        if arrived is not None:
            waits[priority].append(max(0.0, arrived - began[i]))
    return {
        "total": total,
        "errors": errors,
        "samples": samples,
        "high_p50": statistics.median(waits[HIGH]) if waits[HIGH] else math.nan,
        "high_p99": pct(waits[HIGH], 0.99),
        "low_p99": pct(waits[LOW], 0.99),
    }


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.load(answer)


async def contender_main(name: str, url: str, setup: Setup) -> None:
    async with client_for(name, url, setup) as call:
        result = await drive(call, setup, url)
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: a fresh vendor and child per contender -----------------------------------------


class Vendor:
    """``benchmarks/server.py --kind capacity`` in a child process (it exits when our end of its
    stdin closes)."""

    def __init__(self, setup: Setup) -> None:
        self.child, port = start_server(
            "--kind",
            "capacity",
            "--delay",
            str(setup.delay),
            "--capacity",
            json.dumps(setup.capacity),
        )
        self.base = f"http://127.0.0.1:{port}"

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = fetch_json(self.base + "/_capacity")
        return counts

    def close(self) -> None:
        self.child.close(5.0)


def litellm_python(given: str | None) -> str | None:
    """The interpreter that can import litellm: ``given``, or this one if it can; else None."""
    if given:
        return given
    return sys.executable if importlib.util.find_spec("litellm") is not None else None


def run_contender(name: str, python: str, setup: Setup, timeout: float) -> dict[str, Any]:
    vendor = Vendor(setup)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # LiteLLM fetches its model cost map from GitHub at import unless told not to.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    try:
        done = subprocess.run(
            [
                python,
                str(Path(__file__).resolve()),
                "--contender",
                name,
                "--url",
                vendor.base + "/v1",
                "--setup",
                json.dumps(asdict(setup)),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            errors = [x for x in done.stderr.splitlines() if "Error" in x] or ["no result"]
            return {"failed": f"exit {done.returncode}: {errors[-1].strip()[:100]}"}
        result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
        result["vendor"] = vendor.counts()
        return result
    except subprocess.TimeoutExpired:
        counts = vendor.counts()
        return {
            "failed": f"stopped after {timeout:.0f} s: the vendor had seen {counts['sent']}"
            f" requests and admitted {counts['admitted']}"
        }
    finally:
        vendor.close()


def row(name: str, setup: Setup, result: dict[str, Any]) -> list[str]:
    label = LABELS[name]
    if "failed" in result:
        return [label, result["failed"], "", "", "", "", "", "", ""]
    counts = result["vendor"]
    sent = max(1, counts["sent"])
    from asyncllm.testing import Capacity, CapacityMeter

    # What the vendor's request buckets (Azure's 1 s window too) allowed in the total time.
    allowed = CapacityMeter(Capacity(**setup.capacity)).allowance(result["total"])
    failed = sum(result["errors"].values())
    used = 100 * counts["admitted"] / allowed

    def wait(seconds: float, unit: str) -> str:
        # NaN: no call of that priority was answered, so it has no wait to report.
        if math.isnan(seconds):
            return "none answered"
        return f"{1000 * seconds:.0f} ms" if unit == "ms" else f"{seconds:.1f} s"

    return [
        label,
        f"{100 * counts['rate_limited'] / sent:.1f}%",
        f"{100 * counts['busy'] / sent:.1f}%",
        f"{used:.0f}%" if used >= 1 else f"{used:.1f}%",
        f"{result['total']:.1f} s",
        f"{failed}" + (f" ({', '.join(sorted(result['errors']))})" if failed else ""),
        wait(result["high_p50"], "ms"),
        wait(result["high_p99"], "ms"),
        wait(result["low_p99"], "s"),
    ]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n### {title}\n")
    print("```")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("```")


# -- a pool of three, one failing --------------------------------------------------------------

POOL_MEMBERS = ("healthy-1", "healthy-2", "failing")


async def pool_with_one_failing(calls: int, setup: Setup) -> tuple[list[list[str]], str] | None:
    """Three members behind ``asyncllm.Pool``, each its own fake vendor with a third of the
    capacity; one answers every request 500. Issue #20's target: the failing member is ejected
    and the others absorb its share with no caller-visible error. Returns a row per member
    (requests its vendor saw, calls it answered by ``r.backend``, its breaker, its ejections and
    the openings the pool's ejection cap kept in rotation, from ``pool.stats()`` before the pool
    closes) and a summary line; None while asyncllm has no ``Pool``."""
    import asyncllm
    from asyncllm.testing import Capacity, FakeServer, Faults

    if not hasattr(asyncllm, "Pool"):
        return None
    third = {**setup.capacity, "requests_per_minute": max(1, setup.rpm // 3)}
    servers = [
        FakeServer("openai", history=1, capacity=Capacity(**third), faults=Faults(latency=setup.delay)),
        FakeServer("openai", history=1, capacity=Capacity(**third), faults=Faults(latency=setup.delay)),
        FakeServer("openai", history=1, capacity=Capacity(**third), faults=Faults(error_rate=1.0, error_statuses=(500,))),
    ]  # fmt: skip
    for server in servers:
        await server.start()
    pool: Any = asyncllm.Pool(
        [
            asyncllm.OpenAI(
                api_key=KEY,
                base_url=server.url("/v1"),
                name=name,
                max_concurrent_requests=setup.client_concurrency,
                queue_size=calls + 1,
            )
            for server, name in zip(servers, POOL_MEMBERS, strict=True)
        ]
    )  # it closes its members
    errors: dict[str, int] = {}
    answered_by: dict[str, int] = {}
    began = time.perf_counter()
    try:

        async def one(i: int) -> None:
            try:
                r = await pool.chat(message(i), model=MODEL)
            except Exception as exc:  # a caller-visible error: what the pool must not let through
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            else:
                answered_by[str(r.backend)] = answered_by.get(str(r.backend), 0) + 1

        await asyncio.gather(*(one(i) for i in range(calls)))
        total = time.perf_counter() - began
        stats = pool.stats()
    finally:
        await pool.aclose()
        for server in servers:
            await server.aclose()
    rows = [
        [
            name,
            f"{server.request_count}",
            f"{answered_by.get(name, 0)} ({100 * answered_by.get(name, 0) / calls:.0f}%)",
            stats[name].breaker,
            f"{stats[name].info['ejections']}",
            f"{stats[name].info['readmitted']}",
        ]
        for server, name in zip(servers, POOL_MEMBERS, strict=True)
    ]
    failed = sum(errors.values())
    summary = f"{calls} calls in {total:.1f} s; caller-visible errors: {failed}" + (
        f" ({', '.join(f'{k} {v}' for k, v in sorted(errors.items()))})" if failed else ""
    )
    return rows, summary


# -- main -------------------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}); Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}; load average at start "
        f"{os.getloadavg()[0]:.2f}"
    )


def main(options: argparse.Namespace) -> int:
    setup = Setup(
        calls=options.calls or (2000 if options.quick else 10_000),
        seconds=options.seconds or (20.0 if options.quick else 60.0),
        delay=options.delay,
        vendor_concurrency=options.vendor_concurrency,
        client_concurrency=options.client_concurrency,
        dialect=options.dialect,
        seed=options.seed,
    )
    print(f"# Rate limits: {setup.calls} calls per contender\n\nmachine: {machine()}")
    print(
        f"\nThe vendor's hidden capacity: {setup.rpm} requests and {setup.tpm} tokens a minute"
        f" ({setup.dialect} headers), at most {setup.vendor_concurrency} requests at once (503"
        f" past that), {1000 * setup.delay:.0f} ms per answer. Clients: at most"
        f" {setup.client_concurrency} requests at once. A client using the whole capacity"
        f" takes about {setup.seconds:.0f} s."
    )
    wanted = [c.strip() for c in options.only.split(",")] if options.only else list(CONTENDERS)
    rows = []
    results: dict[str, dict[str, Any]] = {}
    for name in wanted:
        python: str | None = sys.executable
        if name in LITELLM:
            python = litellm_python(options.litellm_python)
            if python is None:
                rows.append([LABELS[name], "not installed", "", "", "", "", "", "", ""])
                continue
        result = results[name] = run_contender(name, python, setup, timeout=options.timeout)
        rows.append(row(name, setup, result))
        print(f"  {LABELS[name]}: done", file=sys.stderr, flush=True)
    table(
        "Rate limits: 429s, capacity used, waits",
        [
            "contender",
            f"429 share ({TARGETS['429']})",
            "503 share",
            f"capacity used ({TARGETS['used']})",
            "total time",
            "caller errors",
            "HIGH p50 wait",
            f"HIGH p99 wait ({TARGETS['high_p99']})",
            "LOW p99 wait",
        ],
        rows,
    )
    notes = [
        f"- {LABELS[name]}, {kind}: {text}"
        for name, result in results.items()
        for kind, text in sorted(result.get("samples", {}).items())
    ]
    if notes:
        print("\nThe first error of each kind, per contender:\n")
        print("\n".join(notes))
    pool = asyncio.run(pool_with_one_failing(max(30, setup.calls // 10), setup))
    title = "A pool of 3 members, one failing (target: no caller-visible errors)"
    header = [
        "member",
        "requests its vendor saw",
        "calls it answered",
        "breaker at the end",
        "ejections",
        "openings kept in rotation",
    ]
    if pool is None:
        table(title, header, [["asyncllm.Pool", "not available", "", "", "", ""]])
    else:
        table(title, header, pool[0])
        print(pool[1])
    return 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 calls, about 20 s each")
    parser.add_argument("--calls", type=int, default=0, help="calls per contender")
    parser.add_argument("--seconds", type=float, default=0.0, help="ideal time per contender")
    parser.add_argument("--delay", type=float, default=0.02, help="vendor's seconds per answer")
    parser.add_argument("--vendor-concurrency", type=int, default=48)
    parser.add_argument("--client-concurrency", type=int, default=64)
    parser.add_argument(
        "--dialect", default="openai", choices=("openai", "groq", "anthropic", "azure")
    )
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--only", default="", help="contenders, comma-separated")
    parser.add_argument("--litellm-python", default=None, help="a Python that imports litellm")
    parser.add_argument("--timeout", type=float, default=900.0, help="per contender")
    # A child runs one contender against a vendor the parent started.
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    if opts.contender:
        asyncio.run(contender_main(opts.contender, opts.url, Setup(**json.loads(opts.setup))))
    else:
        sys.exit(main(opts))
