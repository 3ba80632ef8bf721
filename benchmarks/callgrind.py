"""Instructions per ``OpenAI.chat`` call, counted by callgrind: a figure machine load cannot move.

    python benchmarks/callgrind.py          # needs valgrind; prints instructions per call
    python benchmarks/callgrind.py --stream # instructions per streamed chunk instead

Runs a fresh interpreter under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``) twice, making
200 and then 600 calls of ``OpenAI.chat`` through ``asyncllm.testing.MockTransport`` (one task,
no I/O, the reply canned), and reports ``(I600 - I200) / 400``: the instructions of one call with
interpreter start, imports and warm-up cancelled out. Compare two revisions by running it from
each. Request IDs are seeded (still made per call); two runs of one revision then agree within
a few hundred instructions per call.

``--stream`` counts a streamed chunk the same way: ``stream_chat`` read to the end over
``MockTransport``, 100 SSE events per stream, each in its own network chunk (as a server that
flushes every token sends them), 20 and then 60 streams: ``(I60 - I20) / 4000``.
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


STREAM_WORDS = 100


def sse(words: int) -> list[bytes]:
    """An OpenAI chat stream of ``words`` one-word chunks, a finish chunk and ``[DONE]``."""
    events = [
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        + b'"delta":{"content":"w%d "},"finish_reason":null}]}\n\n' % i
        for i in range(words)
    ]
    events.append(
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    events.append(b"data: [DONE]\n\n")
    return events


async def streams(n: int) -> None:
    """Warm up with 5 streams, then read ``n`` more to the end."""
    import asyncllm
    from asyncllm._engine import _context
    from asyncllm.testing import MockResponse, MockTransport

    _context._ids.seed(0)
    events = sse(STREAM_WORDS)
    client = asyncllm.OpenAI(
        api_key="bench-not-a-key",
        base_url="http://bench.invalid/v1",
        transport=MockTransport(lambda _: MockResponse(chunks=events), history=1),
        dispatcher=asyncllm.Dispatcher(),
    )
    for _ in range(5 + n):
        count = 0
        async with client.stream_chat([{"role": "user", "content": "q"}], model="m") as s:
            async for _chunk in s:
                count += 1
        assert count == STREAM_WORDS + 1
    await client.aclose()


def count(n: int, stream: bool = False) -> int:
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
                *(["--stream"] if stream else []),
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


def per_chunk(low: int = 20, high: int = 60) -> float:
    return (count(high, True) - count(low, True)) / ((high - low) * (STREAM_WORDS + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="instructions per streamed chunk")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child is not None:
        asyncio.run(streams(options.child) if options.stream else calls(options.child))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    if options.stream:
        print(f"OpenAI.stream_chat over MockTransport: {per_chunk():,.0f} instructions per chunk")
        return
    print(f"OpenAI.chat over MockTransport: {per_call():,.0f} instructions per call")


if __name__ == "__main__":
    main()
