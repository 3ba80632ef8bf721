"""Throughput of this checkout against another revision, measured side by side.

    python benchmarks/compare.py --base main~5 --repeats 5

Checks the base revision out into a temporary git worktree, then runs this checkout's ``run.py
--quick --only throughput`` against each checkout's ``asyncllm`` in turn (base, head, base, head,
...), so both see the same machine load and the same harness: each revision's own ``run.py`` would
measure a base with an older benchmark setup (a harness change once showed as a 25% "regression"
that one harness did not reproduce). Each run already measures asyncllm as a ratio to raw aiohttp in that same run; this script
reports, per concurrency, the median and range of those ratios for base and head, and head's
median over base's. A change is a regression when head / base falls below 0.97.
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
ROW = re.compile(r"^asyncllm\s{2,}(.*)$", re.M)
RATIO = re.compile(r"(\d+\.\d+) \[[^\]]*\]x")


def ratios(checkout: Path) -> list[float]:
    """asyncllm's calls/s over raw aiohttp's, per concurrency, from one quick throughput run of
    this checkout's harness with ``checkout``'s package."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--only",
            "throughput",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=checkout,
    ).stdout
    match = ROW.search(out)
    if match is None:
        raise SystemExit(f"no asyncllm row in the output of {checkout}:\n{out}")
    return [float(x) for x in RATIO.findall(match.group(1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            runs: dict[str, list[list[float]]] = {"base": [], "head": []}
            for rep in range(args.repeats):
                order = [("base", base), ("head", ROOT)]
                for name, checkout in order if rep % 2 == 0 else reversed(order):
                    runs[name].append(ratios(checkout))
                    print(f"repeat {rep + 1} {name}: {runs[name][-1]}", file=sys.stderr)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True
            )
    levels = ["c=1", "c=16", "c=64", "c=256"]
    print(f"base {args.base} vs head, {args.repeats} interleaved repeats of run.py --quick")
    print("asyncllm calls/s as a ratio to raw aiohttp in the same run: median [min-max]\n")
    print(f"{'':6}{'base':>22}{'head':>22}{'head / base':>14}")
    for i, level in enumerate(levels):
        b = [r[i] for r in runs["base"]]
        h = [r[i] for r in runs["head"]]
        mb, mh = statistics.median(b), statistics.median(h)
        print(
            f"{level:6}{f'{mb:.2f} [{min(b):.2f}-{max(b):.2f}]':>22}"
            f"{f'{mh:.2f} [{min(h):.2f}-{max(h):.2f}]':>22}{mh / mb:>14.3f}"
        )


if __name__ == "__main__":
    main()
