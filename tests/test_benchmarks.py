"""The benchmark script still runs: a quick pass over some of its parts (numbers not checked;
timing belongs to benchmarks/, never to tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_script_runs_and_prints_its_tables() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--only",
            "ratio,backend,cpu,priority",
        ],
        capture_output=True,
        text=True,
        timeout=120,  # a guard against a hang, not a speed check: the machine may be busy
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for title in (
        "0. CPU ratio",
        "1c. Throughput",
        "2b. CPU time per call",
        "6. Wait from enqueue",
    ):
        assert title in out
    assert "asyncllm " in out and "raw aiohttp + typed reply" in out
    assert "raw aiohttp + asyncllm's JSON" in out and "Dispatcher(max_in_flight=64)" in out
    assert "bench-not-a-key" not in out  # the benchmark's stand-in key is never printed


def test_batch_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "batch.py"), "--items", "2000"],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OpenAI.chat (MockTransport)" in done.stdout
    assert "resume over 500 written lines" in done.stdout


def test_rate_limit_benchmark_runs() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ratelimits.py"),
            "--calls",
            "60",
            "--seconds",
            "1",
            "--vendor-concurrency",
            "1000",
            "--only",
            "retries,limits",
        ],
        capture_output=True,
        text=True,
        timeout=120,  # a guard against a hang, not a speed check: the machine may be busy
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "Rate limits: 429s, capacity used, waits" in out
    assert "asyncllm, fixed concurrency + retries only" in out
    assert "asyncllm, RateLimits configured" in out
    assert "A pool of 3 members, one failing" in out
    assert "bench-not-a-key" not in out
