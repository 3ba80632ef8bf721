from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm import _cli
from asyncllm.testing import FakeServer, Faults

ROOT = Path(__file__).resolve().parents[1]
# `python -m asyncllm`, with Ctrl-C turned back on: a shell without job control starts background
# commands (this test run, say) with SIGINT ignored, and children inherit that.
CLI = [
    sys.executable,
    "-c",
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('asyncllm', run_name='__main__', alter_sys=True)",
]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def write_input(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n")


def read_output(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_BASE_URL")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


# -- --help stays light ----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["batch", "--help"], ["chat", "--help"]])
def test_help_imports_no_backend_and_no_progress_library(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "asyncllm", *argv],
        capture_output=True,
        text=True,
        env=child_env(),
        check=True,
    )
    assert "usage: asyncllm" in out.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()]
    assert "asyncllm._cli" in imported  # the check sees the command line's own imports
    assert not [m for m in imported if m.startswith("asyncllm.backends")]
    assert not [m for m in imported if m.split(".")[0] in ("rich", "tqdm")]


def test_the_fake_server_serves_every_fake() -> None:
    assert "openai" in _cli.PROTOCOLS and "anthropic" in _cli.PROTOCOLS
    for protocol in _cli.PROTOCOLS:
        FakeServer(protocol)  # each sets itself up


def test_every_backend_name_makes_a_client_with_chat_or_embed() -> None:
    for name in _cli.BACKENDS.values():
        client = getattr(asyncllm, name)
        assert hasattr(client, "chat") or hasattr(client, "embed"), name


# -- batch, end to end against the embedded fakes ----------------------------------------------


async def test_batch_of_1000_lines_with_faults_writes_1000_lines(
    tmp_path: Path, openai_env: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 1000)
    faults = Faults(rate_limit_rate=0.1, error_rate=0.03, error_statuses=(400,), drop_rate=0.02)
    async with FakeServer("openai", faults=faults, seed=11) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url("/v1"))
        argv = ["batch", str(src), str(out), "--model", "fake-chat", "--concurrency", "16"]
        code = await asyncio.to_thread(_cli.main, argv)
        assert server.max_in_flight <= 16
    assert code == 0
    lines = read_output(out)
    assert len(lines) == 1000
    assert sorted(line["index"] for line in lines) == list(range(1000))
    assert {line["id"] for line in lines} == {f"q{i}" for i in range(1000)}
    errors = [line["error"] for line in lines if "error" in line]
    assert errors and {e["type"] for e in errors} <= {"BadRequestError", "APIConnectionError"}
    printed = capsys.readouterr()
    assert printed.err == ""  # no terminal, no progress
    table = dict(
        line.rsplit(None, 1) for line in printed.out.splitlines() if line and line[0] != " "
    )
    assert table["calls"] == "1000"
    assert int(table["failed"]) == len(errors)
    assert int(table["retried"]) > 0
    assert int(table["total tokens"]) > 0
    assert "latency p95" in printed.out


async def test_batch_ordered_and_chat_parameters_per_line(
    tmp_path: Path, openai_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        '{"messages": [{"role": "user", "content": "one"}], "max_tokens": 5}\n'
        "\n"
        '{"prompt": "two", "model": "other-model", "temperature": 0}\n'
        '{"prompt": "three", "temprature": 0}\n'
    )
    async with FakeServer("openai") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url("/v1"))
        argv = ["batch", str(src), str(out), "--model", "fake-chat", "--ordered"]
        assert await asyncio.to_thread(_cli.main, argv) == 0
        sent = [r.json for r in server.requests]
    lines = read_output(out)
    assert [line["id"] for line in lines] == [0, 1, 2]
    assert lines[0]["response"]["text"] == "echo: one"
    assert lines[1]["response"]["model"] == "other-model"
    assert lines[2]["error"]["type"] == "TypeError"  # a misspelt parameter, nothing sent
    assert len(sent) == 2
    assert {s["model"] for s in sent} == {"fake-chat", "other-model"}


async def test_batch_embed(
    tmp_path: Path, openai_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"id": "e1", "input": "hello"}\n{"id": "e2", "input": ["a", "b"]}\n')
    async with FakeServer("openai") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url("/v1"))
        argv = ["batch", str(src), str(out), "--model", "fake-embed", "--embed", "--ordered"]
        assert await asyncio.to_thread(_cli.main, argv) == 0
    lines = read_output(out)
    assert [len(line["response"]["vectors"]) for line in lines] == [1, 2]


# -- bad input: one line, non-zero exit, nothing written lost ---------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n', "in.jsonl:3: not valid JSON"),
        ('{"prompt": "a"}\n\n["b"]\n', "in.jsonl:3: a JSON object was expected"),
        ('{"prompt": "a"}\n{"text": "b"}\n', "in.jsonl:2: needs 'messages'"),
    ],
)
def test_a_bad_input_line_is_named_and_the_output_kept(
    tmp_path: Path, openai_env: None, capsys: Any, content: str, message: str
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(content)
    before = b'{"id":0,"index":0,"response":{"text":"kept"}}\n'
    out.write_bytes(before)
    argv = ["batch", str(src), str(out), "--model", "m", "--resume"]
    argv += ["--base-url", "http://127.0.0.1:9/v1"]
    assert _cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert out.read_bytes() == before


def test_unknown_backend_missing_key_and_existing_output(
    tmp_path: Path, openai_env: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 3)
    assert _cli.main(["batch", str(src), str(out), "--model", "m", "--backend", "nope"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err
    monkeypatch.delenv("OPENAI_API_KEY")
    assert _cli.main(["batch", str(src), str(out), "--model", "m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OPENAI_API_KEY" in err
    assert not out.exists()
    out.write_text("")
    assert _cli.main(["batch", str(src), str(out), "--model", "m"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert _cli.main(["batch", str(src), str(out), "--resume"]) == 2
    assert "in.jsonl:1: names no model" in capsys.readouterr().err


def test_chat_needs_a_model_and_an_output_folder_must_exist(
    tmp_path: Path, openai_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _cli.main(["chat", "hi"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err
    src = tmp_path / "in.jsonl"
    write_input(src, 2)
    argv = ["batch", str(src), str(tmp_path / "no" / "out.jsonl"), "--model", "m"]
    assert _cli.main([*argv, "--base-url", "http://127.0.0.1:9/v1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such file or directory" in err


# -- chat and bench ---------------------------------------------------------------------------


async def test_chat_streams_the_answer(
    openai_env: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    async with FakeServer("openai") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url("/v1"))
        argv = ["chat", "--model", "fake-chat", "--system", "be brief", "hello there"]
        assert await asyncio.to_thread(_cli.main, argv) == 0
        body = server.requests[-1].json
    assert capsys.readouterr().out == "echo: hello there\n"
    assert body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


async def test_bench_prints_throughput_and_the_dispatchers_table(
    openai_env: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    async with FakeServer("openai", faults=Faults(rate_limit_rate=0.1)) as server:
        argv = ["bench", "--base-url", server.url("/v1"), "--model", "fake-chat"]
        argv += ["--requests", "100", "--concurrency", "4"]
        assert await asyncio.to_thread(_cli.main, argv) == 0
        assert server.max_in_flight <= 4
    out = capsys.readouterr().out
    assert "calls/s" in out and "latency p95" in out
    assert "backend  queued  in_flight  ok" in out
    assert "openai   0       0          100" in out


# -- processes: Ctrl-C, the fake server, a terminal --------------------------------------------


@contextlib.contextmanager
def fake_server(*args: str) -> Iterator[str]:
    """``asyncllm fake-server`` in its own process; yields its base URL, stops it with SIGINT."""
    argv = [*CLI, "fake-server", *args, "--port", "0"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=child_env()) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("asyncllm fake-server: "), first
            yield first.split()[-1]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            proc.kill()


def test_ctrl_c_stops_a_batch_cleanly_and_resume_finishes_it(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 1000)
    # Each call takes 5 ms at the server, so the run is mid-way when it is interrupted.
    with fake_server("openai", "--latency", "5") as url:
        env = child_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=url + "/v1")
        argv = [*CLI, "batch", str(src), str(out), "--model", "fake-chat", "--concurrency", "8"]
        with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as proc:
            try:
                while not out.exists() or out.stat().st_size < 10_000:
                    assert proc.poll() is None, "the run ended before it could be interrupted"
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(0.01)
                proc.send_signal(signal.SIGINT)
                assert proc.wait(10) == 130
            finally:
                proc.kill()
            assert proc.stderr is not None
            err = proc.stderr.read()
        assert "interrupted:" in err and "--resume" in err
        first = read_output(out)
        assert 0 < len(first) < 1000
        done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    lines = read_output(out)
    assert sorted(line["index"] for line in lines) == list(range(1000))
    assert lines[: len(first)] == first
    assert f"skipped (already written)  {len(first)}" in done.stdout


def client_side(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    where = "" if code is None else code.co_filename
    return ("asyncllm" in where and "testing" not in where) or "aiohttp/client" in where


async def test_a_cancelled_run_leaves_no_task_and_no_connection(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    faults = Faults(hang_rate=0.5, hang_seconds=60)
    async with FakeServer("openai", faults=faults, seed=2) as server:
        client = asyncllm.OpenAI(api_key="sk-test", base_url=server.url("/v1"))

        async def call(i: int) -> Any:
            return await client.chat([{"role": "user", "content": str(i)}], model="m")

        async def go() -> None:
            async with client:
                await asyncllm.batch.run(call, range(1000), out, window=16, progress=False)

        task = asyncio.create_task(go())
        while server.in_flight < 5:  # every slot of the client held by a hung call
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nothing of the client's is left; the server's handlers (same loop) end as they notice.
        left = asyncio.all_tasks() - {asyncio.current_task()}
        assert not [t for t in left if client_side(t)], left
        while server.in_flight:  # the server sees each dropped connection on its next turn
            await asyncio.sleep(0.01)
    assert all("index" in line for line in read_output(out))


def test_progress_shows_only_on_a_terminal(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(src, 200)
    with fake_server("openai", "--rate-limit-rate", "0.1") as url:
        env = child_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=url + "/v1", COLUMNS="120")
        leader, follower = pty.openpty()
        argv = [*CLI, "batch", str(src), str(out), "--model", "fake-chat"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        seen = b""
        try:
            while True:
                ready, _, _ = select.select([leader], [], [], 30)
                assert ready, "no output from the run"
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the run closed its end
                    break
                if not chunk:
                    break
                seen += chunk
            assert proc.wait(30) == 0
        finally:
            proc.kill()
            os.close(leader)
    text = seen.decode(errors="replace")
    assert "200/200" in text and "calls/s" in text and "retried" in text
