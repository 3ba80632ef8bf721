from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm import batch
from asyncllm.testing import FakeServer, Faults


def lines_of(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes()
    assert text == b"" or text.endswith(b"\n")
    return [json.loads(line) for line in text.splitlines()]


# -- imap: order, errors, window ---------------------------------------------------------------


async def test_ordered_yields_input_order_unordered_yields_finishing_order() -> None:
    delays = [random.Random(7).random() / 100 for _ in range(40)]

    async def call(i: int) -> int:
        await asyncio.sleep(delays[i])
        return i * 10

    ordered = [r async for r in batch.imap(call, range(40), window=8, ordered=True)]
    assert [r.index for r in ordered] == list(range(40))
    assert [r.value for r in ordered] == [i * 10 for i in range(40)]

    unordered = [r async for r in batch.imap(call, range(40), window=40)]
    assert sorted(r.index for r in unordered) == list(range(40))
    # With every item in flight at once, they finish in the order of their delays.
    by_delay = sorted(range(40), key=lambda i: delays[i])
    assert [r.index for r in unordered] == by_delay


async def test_a_captured_error_is_the_items_result_with_its_id() -> None:
    async def call(item: dict[str, Any]) -> str:
        if item["n"] % 3 == 0:
            raise asyncllm.RateLimitError("slow down", status_code=429)
        return "ok"

    items = [{"id": f"q{n}", "n": n} for n in range(9)]
    results = [r async for r in batch.imap(call, items, id_of=lambda it: it["id"], ordered=True)]
    assert [r.id for r in results] == [f"q{n}" for n in range(9)]
    failed = [r for r in results if not r.ok]
    assert [r.index for r in failed] == [0, 3, 6]
    assert all(isinstance(r.error, asyncllm.RateLimitError) and r.value is None for r in failed)
    assert all(r.value == "ok" for r in results if r.ok)


async def test_an_uncaptured_error_is_raised_and_cancels_the_items_in_flight() -> None:
    cancelled = 0
    started = 0

    async def call(i: int) -> int:
        nonlocal cancelled, started
        started += 1
        if i == 5:
            await asyncio.sleep(0)
            raise asyncllm.BadRequestError("bad", status_code=400)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return i

    with pytest.raises(asyncllm.BadRequestError):
        async with contextlib.aclosing(batch.imap(call, range(100), window=10, capture=())) as it:
            async for _ in it:
                pass
    assert started == 10
    assert cancelled == 9
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("ordered", [False, True])
async def test_the_window_bounds_tasks_and_results_not_the_input(ordered: bool) -> None:
    window = 16
    n = 20_000
    pulled = 0
    live = 0
    most_live = 0
    most_tasks = 0
    rng = random.Random(3)

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    async def call(i: int) -> int:
        nonlocal live, most_live, most_tasks
        live += 1
        most_live = max(most_live, live)
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        live -= 1
        return i

    handed = 0
    async for result in batch.imap(call, source(), window=window, ordered=ordered):
        handed += 1
        # Pulled from the input but not handed on: never more than the window.
        assert pulled - handed < window
        if ordered:
            assert result.index == handed - 1
    assert handed == n
    assert most_live <= window
    assert most_tasks <= window + 1  # the items' tasks and this test's own


async def test_async_iterables_and_skip() -> None:
    async def source() -> AsyncIterator[str]:
        for i in range(10):
            yield f"item{i}"

    async def call(item: str) -> str:
        return item.upper()

    results = [r async for r in batch.imap(call, source(), skip=lambda i: i % 2 == 0, ordered=True)]
    assert [(r.index, r.value) for r in results] == [(i, f"ITEM{i}") for i in range(1, 10, 2)]


async def test_bad_window_is_refused() -> None:
    async def call(i: int) -> int:
        return i

    with pytest.raises(asyncllm.ConfigurationError):
        [r async for r in batch.imap(call, [1], window=0)]


# -- run: JSONL output, resumption, a real client ---------------------------------------------


async def test_run_writes_one_line_per_item_through_a_client(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    faults = Faults(rate_limit_rate=0.1, error_rate=0.05, error_statuses=(400,))
    async with (
        FakeServer("openai", faults=faults, seed=5) as server,
        asyncllm.OpenAI(
            api_key="sk-test", base_url=server.url("/v1"), max_concurrent_requests=8
        ) as client,
    ):
        items = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(300)]

        async def call(item: dict[str, Any]) -> asyncllm.ChatResponse[Any]:
            messages = [{"role": "user", "content": item["prompt"]}]
            return await client.chat(messages, model="fake-chat")

        summary = await batch.run(
            call, items, out, window=32, id_of=lambda it: it["id"], ordered_output=True
        )
        retried = client.dispatcher.stats()["openai"].retried
    lines = lines_of(out)
    assert [line["index"] for line in lines] == list(range(300))
    assert [line["id"] for line in lines] == [f"r{i}" for i in range(300)]
    errors = [line for line in lines if "error" in line]
    assert errors and all(e["error"]["type"] == "BadRequestError" for e in errors)
    assert all(e["error"]["status_code"] == 400 and e["error"]["request_id"] for e in errors)
    ok = [line for line in lines if "response" in line]
    assert all(line["response"]["text"] and "raw" not in line["response"] for line in ok)
    assert summary.succeeded == len(ok) and summary.failed == len(errors)
    assert summary.errors == Counter({"BadRequestError": len(errors)})
    assert summary.retried == retried > 0
    assert summary.usage["total_tokens"] == sum(
        line["response"]["usage"]["total_tokens"] for line in ok
    )
    assert summary.usage["total_tokens"] > 0
    assert summary.latency_p50 is not None and summary.latency_p95 is not None
    assert summary.latency_p50 <= summary.latency_p95
    assert "calls  " in summary.table() and "BadRequestError" in summary.table()


async def test_an_existing_output_is_refused_without_resume(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": 0, "index": 0, "response": 1}\n')

    async def call(i: int) -> int:
        return i

    with pytest.raises(asyncllm.ConfigurationError, match="resume"):
        await batch.run(call, range(3), out)
    assert out.read_bytes() == b'{"id": 0, "index": 0, "response": 1}\n'


async def test_resume_skips_written_items_and_redoes_a_cut_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(
        b'{"id":3,"index":3,"response":"old3"}\n'
        b'{"id":0,"index":0,"error":{"type":"RateLimitError","message":"m"}}\n'
        b'{"id":5,"index":5,"resp'
    )
    calls: list[int] = []

    async def call(i: int) -> str:
        calls.append(i)
        return f"new{i}"

    summary = await batch.run(call, range(8), out, resume=True, ordered_output=True)
    assert sorted(calls) == [1, 2, 4, 5, 6, 7]
    lines = lines_of(out)
    assert [line["index"] for line in lines] == list(range(8))
    assert lines[3]["response"] == "old3" and lines[5]["response"] == "new5"
    assert summary.skipped == 2 and summary.succeeded == 6


async def test_failed_items_are_redone_once_their_lines_are_dropped(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fail = True

    async def call(i: int) -> int:
        if fail and i % 4 == 0:
            raise asyncllm.APIConnectionError("down")
        return i

    first = await batch.run(call, range(20), out)
    assert first.failed == 5
    # The README's recipe: grep -v '"index":[0-9]*,"error":'
    kept = [
        line
        for line in out.read_bytes().splitlines(keepends=True)
        if not re.search(rb'"index":[0-9]*,"error":', line)
    ]
    out.write_bytes(b"".join(kept))
    fail = False
    again = await batch.run(call, range(20), out, resume=True, ordered_output=True)
    assert (again.skipped, again.succeeded) == (15, 5)
    assert [line["response"] for line in lines_of(out)] == list(range(20))


async def test_resume_refuses_an_output_that_is_not_a_runs(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"hello": 1}\n')

    async def call(i: int) -> int:
        return i

    with pytest.raises(asyncllm.ConfigurationError, match=r"out.jsonl:1"):
        await batch.run(call, range(3), out, resume=True)


async def test_cancelling_a_run_leaves_valid_jsonl_and_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    written = asyncio.Event()

    async def call(i: int) -> int:
        if i >= 20:
            await asyncio.Event().wait()
        return i

    def seen(p: batch.BatchProgress) -> None:
        if p.done >= 20:
            written.set()

    task = asyncio.create_task(batch.run(call, range(1000), out, window=50, progress=seen))
    while not out.exists() or len(out.read_bytes().splitlines()) < 20:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [line["index"] for line in lines_of(out)] == list(range(20))
    assert written.is_set()  # the final report after cancellation


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    reader = batch.read_jsonl(path)
    assert next(reader) == {"a": 1}
    assert next(reader) == {"a": 2}
    with pytest.raises(asyncllm.ConfigurationError, match=r"in.jsonl:4: not valid JSON"):
        next(reader)
    path.write_text("[1]\n")
    with pytest.raises(asyncllm.ConfigurationError, match=r"in.jsonl:1: a JSON object"):
        list(batch.read_jsonl(path))


def test_progress_eta_and_text() -> None:
    p = batch.BatchProgress(
        done=50, failed=2, retried=3, skipped=10, total=110, elapsed=5.0, final=True
    )
    assert p.calls_per_second == 10.0
    assert p.eta == 5.0
    assert batch.BatchProgress(0, 0, 0, 0, None, 1.0).eta is None

    class Sink:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    sink = Sink()
    batch.TextProgress(sink)(p)  # type: ignore[arg-type]
    assert sink.text == "\r50/100 done  2 failed  3 retried  10.0 calls/s  ETA 0:00:05 \n"


def test_latency_percentiles_are_within_two_percent() -> None:
    lat = batch._Latencies()
    values = [random.Random(1).uniform(0.001, 2.0) for _ in range(10_000)]
    for v in values:
        lat.add(v)
    ordered = sorted(values)
    for q in (0.5, 0.95):
        got = lat.percentile(q)
        assert got is not None
        exact = ordered[round(q * len(ordered)) - 1]
        assert abs(got - exact) / exact < 0.02


# -- a run killed with SIGKILL, then resumed ----------------------------------------------------

KILLED_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from asyncllm import batch

    async def call(i):
        await asyncio.sleep(0.001 * (i % 7))
        return {"double": 2 * i}

    asyncio.run(batch.run(call, range(int(sys.argv[2])), sys.argv[1], resume=True, window=32,
                          progress=False))
    """
)


def test_a_killed_run_resumes_without_writing_any_item_twice(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    n = 3000
    argv = [sys.executable, "-c", KILLED_RUN, str(out), str(n)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(argv, env=env)
    try:
        while not out.exists() or out.stat().st_size < 20_000:
            assert proc.poll() is None, "the run ended before it could be killed"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    first = out.read_bytes().splitlines()
    assert 0 < len(first) < n
    # Leave a cut line as a kill during a write would.
    with out.open("ab") as f:
        f.write(b'{"id":2999,"index":29')
    subprocess.run(argv, env=env, check=True, timeout=60)
    lines = lines_of(out)
    indexes = [line["index"] for line in lines]
    assert len(indexes) == len(set(indexes)) == n
    assert all(line["response"] == {"double": 2 * line["index"]} for line in lines)


def test_public_names() -> None:
    assert batch.__all__ == sorted(batch.__all__, key=lambda n: (not n[0].isupper(), n))
    assert all(getattr(batch, name) is not None for name in batch.__all__)
