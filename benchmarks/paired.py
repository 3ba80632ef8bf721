"""Calls/s at concurrency 1 of this checkout against another revision, in short paired blocks.

    python benchmarks/paired.py --base main~5 [--head REV] [--processes 20] [--rounds 20]

At c=1 one call is in flight, so every stall of the client, the server or the scheduler is wall
time; on a shared machine, ``compare.py``'s runs of ``run.py --quick`` (50 calls per cell, a few
cells per run, runs a minute apart) then scatter by tens of percent, and a revision compared with
itself can show a 25% "change". Here each revision runs in its own long-lived child process with
its client warmed up, against one fast server; the parent asks them in turn for ``--calls`` calls
of ``OpenAI.chat`` (base, head, head, base, ...), so that each pair of blocks is measured within
milliseconds of each other, under the same load. Each round gives the ratio of head's calls/s to
base's (and of their client CPU per call, base's over head's).

A process has a speed of its own (which core it shares with the server, where its memory
landed, its hash seed): a revision paired with itself in one pair of processes for 300 rounds
came out 3% apart, with a bootstrap interval over rounds that excluded 1. So the rounds run in
``--processes`` fresh pairs of processes, one after another, and the unit of the statistics is
the pair: the median of each pair's rounds, then the median over pairs, its range and a
percentile bootstrap 90% interval over pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import KEY, ServerProcess, bootstrap, med, message

ROOT = Path(__file__).resolve().parents[1]


def child(url: str) -> None:
    """Answer each line ``n`` on stdin with the wall and CPU seconds of ``n`` calls."""
    import asyncllm

    with asyncio.Runner() as runner:
        client = asyncllm.OpenAI(api_key=KEY, base_url=url)

        async def block(n: int) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                reply = await client.chat(message(i), model="m")
                if reply.text != f"echo: q{i}":
                    raise RuntimeError(f"wrong reply: {reply.text!r}")
            return time.perf_counter() - wall, time.process_time() - cpu

        runner.run(block(50))  # warm the connection and first-use paths
        print("ready", flush=True)
        for line in sys.stdin:
            print(json.dumps(runner.run(block(int(line)))), flush=True)
        runner.run(client.aclose())


class Contender:
    """One revision's child process."""

    def __init__(self, checkout: Path, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(checkout)},
        )
        if self.ask_line() != "ready":
            raise RuntimeError(f"the child for {checkout} did not start")

    def ask_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def block(self, calls: int) -> tuple[float, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{calls}\n")
        self.proc.stdin.flush()
        wall, cpu = json.loads(self.ask_line())
        return float(wall), float(cpu)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the revision to compare against (required)")
    parser.add_argument("--head", help="the revision to compare (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per pair of processes")
    parser.add_argument("--calls", type=int, default=50, help="calls per block")
    parser.add_argument(
        "--processes",
        type=int,
        default=20,
        help="pairs of child processes, one after another",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if args.base is None:
        parser.error("--base is required")
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"base": Path(tmp) / "base", "head": ROOT}
        if args.head is not None:
            checkouts["head"] = Path(tmp) / "head"
        made: list[Path] = []
        server = ServerProcess("fast")
        try:
            for name, rev in (("base", args.base), ("head", args.head)):
                if rev is not None:
                    path = checkouts[name]
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                        check=True,
                        capture_output=True,
                    )
                    made.append(path)
            # Per pair of processes: the ratio of each of its rounds.
            rates: list[list[float]] = []
            cpus: list[list[float]] = []
            for _ in range(args.processes):
                contenders = {name: Contender(path, server.url) for name, path in checkouts.items()}
                rates.append([])
                cpus.append([])
                try:
                    for rnd in range(args.rounds):
                        order = ["base", "head"] if rnd % 2 == 0 else ["head", "base"]
                        got = {name: contenders[name].block(args.calls) for name in order}
                        rates[-1].append(got["base"][0] / got["head"][0])
                        cpus[-1].append(got["base"][1] / got["head"][1])
                finally:
                    for contender in contenders.values():
                        contender.close()
        finally:
            server.close()
            for path in made:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                    check=True,
                )
    head = args.head or "this checkout"
    print(
        f"base {args.base} vs head {head}: OpenAI.chat at c=1, {args.processes} pairs of "
        f"processes, {args.rounds} rounds of {args.calls} calls each per revision; "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("per pair of processes: the median of its rounds' ratios; over pairs: median [min-max]")
    for title, ratios in (
        ("calls/s, head / base", rates),
        ("client CPU per call, base / head", cpus),
    ):
        pairs = [med(r) for r in ratios]
        low, high = bootstrap(pairs)
        print(
            f"{title:34} {med(pairs):.3f} [{min(pairs):.3f}-{max(pairs):.3f}]  bootstrap 90% "
            f"{low:.3f}-{high:.3f}  (all rounds pooled: {med([x for r in ratios for x in r]):.3f})"
        )


if __name__ == "__main__":
    main()
