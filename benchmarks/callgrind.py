"""Instructions per ``OpenAI.chat`` call, counted by callgrind: a figure machine load cannot move.

    python benchmarks/callgrind.py          # needs valgrind; prints instructions per call

Runs a fresh interpreter under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``) twice, making
200 and then 600 calls of ``OpenAI.chat`` through ``asyncllm.testing.MockTransport`` (one task,
no I/O, the reply canned), and reports ``(I600 - I200) / 400``: the instructions of one call with
interpreter start, imports and warm-up cancelled out. Compare two revisions by running it from
each. Request IDs are seeded (still made per call); two runs of one revision then agree within
a few hundred instructions per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
REPLY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"echo: q"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
)


async def calls(n: int) -> None:
    """Warm up with 50 calls, then make ``n`` more: what callgrind counts."""
    import asyncllm
    from asyncllm._engine import _context
    from asyncllm.testing import MockResponse, MockTransport

    # Request IDs are still made per call, but the same ones on every run: a fresh random ID
    # changes how dicts and the allocator fall, by a thousand or two instructions a call.
    _context._ids.seed(0)

    client = asyncllm.OpenAI(
        api_key="bench-not-a-key",
        base_url="http://bench.invalid/v1",
        transport=MockTransport(lambda _: MockResponse(content=REPLY), history=1),
        dispatcher=asyncllm.Dispatcher(),
    )
    for i in range(50 + n):
        reply = await client.chat([{"role": "user", "content": f"q{i}"}], model="m")
        assert reply.text == "echo: q"
    await client.aclose()


def count(n: int) -> int:
    """Instructions of a whole interpreter run that makes ``n`` calls."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                str(HERE),
                "--child",
                str(n),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
    match = COLLECTED.search(done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def per_call(low: int = 200, high: int = 600) -> float:
    return (count(high) - count(low)) / (high - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        asyncio.run(calls(options.child))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    print(f"OpenAI.chat over MockTransport: {per_call():,.0f} instructions per call")


if __name__ == "__main__":
    main()
