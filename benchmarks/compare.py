"""Throughput of this checkout against another revision, measured side by side.

    python benchmarks/compare.py --base main~5 --repeats 5
    python benchmarks/compare.py --base main~5 --head main~5 --repeats 9   # the noise floor
    python benchmarks/compare.py --base main~5 --concurrency 1 --repeats 21  # c=1 alone

Checks the base revision out into a temporary git worktree (and ``--head``, if given; else the
head is this checkout), then runs this checkout's ``run.py --quick --only throughput`` against
each checkout's ``asyncllm`` in turn (base, head, base, head, ...), so both see the same machine
load and the same harness: each revision's own ``run.py`` would measure a base with an older
benchmark setup (a harness change once showed as a 25% "regression" that one harness did not
reproduce). Each run already measures asyncllm as a ratio to raw aiohttp in that same run; this
script reports, per concurrency, the median and range of those ratios for base and head, and
head's median over base's. A change is a regression when head / base falls below 0.97.

A second table does the same for client CPU per call (raw aiohttp's over asyncllm's, from the
run's table 1b): process time leaves out the time the client waits for the server or for a
core, so on a shared machine it moves far less than calls/s, most of all at c=1 (one call in
flight: every stall of the server or the scheduler is wall time). Comparing a revision with
itself (``--head`` = ``--base``) gives the noise floor of both tables on this machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Table 1's row and table 1b's, in that order: the rate ratios, then CPU per call.
OURS = re.compile(r"^asyncllm\s{2,}(.*)$", re.M)
RAW = re.compile(r"^raw aiohttp\s{2,}(.*)$", re.M)
RATIO = re.compile(r"(\d+\.\d+) \[[^\]]*\]x")
MEDIAN = re.compile(r"(\d+(?:\.\d+)?) \[")


def measure(checkout: Path, concurrency: str) -> tuple[list[float], list[float]]:
    """From one quick throughput run of this checkout's harness with ``checkout``'s package,
    per concurrency: asyncllm's calls/s over raw aiohttp's, and raw aiohttp's client CPU per
    call over asyncllm's (so that for both, higher is better)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--only",
            "throughput",
            "--concurrency",
            concurrency,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=checkout,
    ).stdout
    ours, raw = OURS.findall(out), RAW.findall(out)
    if len(ours) < 2 or len(raw) < 2:
        raise SystemExit(f"no asyncllm and raw aiohttp rows in the output of {checkout}:\n{out}")
    rates = [float(x) for x in RATIO.findall(ours[0])]
    cpu_ours = [float(x) for x in MEDIAN.findall(ours[1])]
    cpu_raw = [float(x) for x in MEDIAN.findall(raw[1])]
    return rates, [r / o for r, o in zip(cpu_raw, cpu_ours, strict=True)]


def report(title: str, levels: list[str], runs: dict[str, list[list[float]]]) -> None:
    print(f"\n{title}: median [min-max]\n")
    print(f"{'':6}{'base':>22}{'head':>22}{'head / base':>14}")
    for i, level in enumerate(levels):
        b = [r[i] for r in runs["base"]]
        h = [r[i] for r in runs["head"]]
        mb, mh = statistics.median(b), statistics.median(h)
        print(
            f"{level:6}{f'{mb:.2f} [{min(b):.2f}-{max(b):.2f}]':>22}"
            f"{f'{mh:.2f} [{min(h):.2f}-{max(h):.2f}]':>22}{mh / mb:>14.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--head", help="the revision to compare (default: this checkout)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--concurrency",
        default="1,16,64,256",
        help="comma-separated levels to measure (say, 1 alone, for more repeats in the same time)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"base": Path(tmp) / "base", "head": ROOT}
        if args.head is not None:
            checkouts["head"] = Path(tmp) / "head"
        made = []
        try:
            for name, rev in (("base", args.base), ("head", args.head)):
                if rev is not None:
                    subprocess.run(
                        [
                            "git",
                            "-C",
                            str(ROOT),
                            "worktree",
                            "add",
                            "--detach",
                            str(checkouts[name]),
                            rev,
                        ],
                        check=True,
                        capture_output=True,
                    )
                    made.append(checkouts[name])
            rates: dict[str, list[list[float]]] = {"base": [], "head": []}
            cpus: dict[str, list[list[float]]] = {"base": [], "head": []}
            for rep in range(args.repeats):
                order = ["base", "head"] if rep % 2 == 0 else ["head", "base"]
                for name in order:
                    rate, cpu = measure(checkouts[name], args.concurrency)
                    rates[name].append(rate)
                    cpus[name].append(cpu)
                    print(f"repeat {rep + 1} {name}: rate {rate}, cpu {cpu}", file=sys.stderr)
        finally:
            for path in made:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                    check=True,
                )
    head = args.head or "this checkout"
    print(f"base {args.base} vs head {head}, {args.repeats} interleaved repeats of run.py --quick")
    levels = [f"c={c}" for c in args.concurrency.split(",")]
    report("asyncllm calls/s as a ratio to raw aiohttp in the same run", levels, rates)
    report("raw aiohttp's client CPU per call over asyncllm's, in the same run", levels, cpus)


if __name__ == "__main__":
    main()
