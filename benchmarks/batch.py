"""What asyncllm.batch costs per item, and that its memory follows the window, not the input.

    python benchmarks/batch.py            # 1 000 000 items
    python benchmarks/batch.py --quick    # 100 000

Two runs of ``batch.run`` to a JSONL file in a temporary folder: one over a call that does no
work (the runner's own cost: a task, a JSON line and a write per item) and one over
``OpenAI.chat`` on a ``MockTransport`` (the whole client and dispatcher, no network). Items come
from a generator; the peak RSS is read after a tenth of the items and at the end, and stays flat
when the runner holds only its window. Then a resume over the finished output (every item
skipped) and the rewrite in input order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncllm
from asyncllm import batch
from asyncllm.testing import MockResponse, MockTransport

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def measure(name: str, call: Any, n: int, out: Path) -> list[str]:
    rss: dict[str, float] = {}

    def items() -> Iterator[int]:
        for i in range(n):
            if i == n // 10:
                rss["tenth"] = peak_rss_mib()
            yield i

    start = time.perf_counter()
    summary = await batch.run(call, items(), out, progress=False)
    elapsed = time.perf_counter() - start
    assert summary.calls == n
    return [
        name,
        f"{n:,}",
        f"{elapsed / n * 1e6:.1f}",
        f"{n / elapsed:,.0f}",
        f"{rss['tenth']:.0f}",
        f"{peak_rss_mib():.0f}",
    ]


async def main(n: int) -> None:
    async def nothing(i: int) -> dict[str, int]:
        return {"i": i}

    rows = [["call", "items", "us/item", "items/s", "peak RSS at 10% MiB", "at 100% MiB"]]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.jsonl"
        rows.append(await measure("no work", nothing, n, Path(folder) / "nothing.jsonl"))
        client = asyncllm.OpenAI(
            api_key="bench-not-a-key",
            base_url="http://mock.invalid/v1",
            transport=MockTransport(lambda _: MockResponse(200, json=REPLY)),
            max_concurrent_requests=64,
        )
        messages = [{"role": "user", "content": "hi"}]
        async with client:
            rows.append(
                await measure(
                    "OpenAI.chat (MockTransport)",
                    lambda _: client.chat(messages, model="m"),
                    n // 4,
                    out,
                )
            )
        start = time.perf_counter()
        again = await batch.run(nothing, range(n // 4), out, resume=True, progress=False)
        resumed = time.perf_counter() - start
        assert again.skipped == n // 4
        assert again.calls == 0
        start = time.perf_counter()
        batch._rewrite_in_order(out)
        rewritten = time.perf_counter() - start
        first = json.loads(out.open().readline())
        assert first["index"] == 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\nresume over {n // 4:,} written lines (all skipped): {resumed:.2f} s")
    print(f"rewrite of {n // 4:,} lines in input order: {rewritten:.2f} s")
    print(f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 000 items instead of 1 000 000")
    parser.add_argument("--items", type=int, help="this many items")
    args = parser.parse_args()
    asyncio.run(main(args.items or (100_000 if args.quick else 1_000_000)))
