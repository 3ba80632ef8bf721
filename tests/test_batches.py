"""Vendor batches and the uniform helper: OpenAI's Batch API through Files, and ``run_batch_job``
with its state file, a simulated crash mid-poll and resumed polling, on a fake clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm.testing import FakeClock, FakeServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def dispatcher(clock: FakeClock) -> AsyncIterator[asyncllm.Dispatcher]:
    async with asyncllm.Dispatcher(clock=clock, sleep=clock.sleep) as dispatcher:
        yield dispatcher


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("openai") as server:
        yield server


@pytest.fixture
async def client(
    server: FakeServer, dispatcher: asyncllm.Dispatcher
) -> AsyncIterator[asyncllm.OpenAI]:
    async with asyncllm.OpenAI(
        api_key="sk-test", base_url=server.url("/v1"), model="fake-chat", dispatcher=dispatcher
    ) as client:
        yield client


def requests(n: int = 3) -> list[asyncllm.BatchRequest]:
    return [
        asyncllm.BatchRequest(f"q{i}", [{"role": "user", "content": f"question {i}"}])
        for i in range(n)
    ]


def created(server: FakeServer, path: str) -> int:
    return sum(1 for r in server.requests if r.method == "POST" and r.path == path)


async def test_batch_api_round_trip(client: asyncllm.OpenAI, server: FakeServer) -> None:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]},
    }
    made = await client.files.create(json.dumps(line).encode(), purpose="batch", filename="in")
    job = await client.batches.create(input_file_id=made.id, metadata={"run": "1"})
    assert (job.status, job.done, job.counts.total) == ("validating", False, 1)
    assert server.requests[-1].json["metadata"] == {"run": "1"}
    while not job.done:
        job = await client.batches.retrieve(job.id)
    assert job.status == "completed" and job.counts.succeeded == 1
    assert job.output_file_id is not None and job.error_file_id is None
    assert [b.id async for b in client.batches.list()] == [job.id]
    with pytest.raises(asyncllm.BadRequestError):
        await client.batches.cancel(job.id)


async def test_batch_cancel(client: asyncllm.OpenAI) -> None:
    made = await client.files.create(b"", purpose="batch", filename="empty.jsonl")
    job = await client.batches.create(input_file_id=made.id)
    cancelled = await client.batches.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.done


async def test_batch_create_is_not_retried_after_a_500(
    client: asyncllm.OpenAI, server: FakeServer
) -> None:
    made = await client.files.create(b"", purpose="batch", filename="empty.jsonl")
    server.fail_next(1, status=500)
    with pytest.raises(asyncllm.InternalServerError) as info:
        await client.batches.create(input_file_id=made.id)
    assert info.value.attempts == 1
    assert created(server, "/v1/batches") == 1


async def test_batch_create_is_retried_when_the_server_asks(
    client: asyncllm.OpenAI, server: FakeServer
) -> None:
    made = await client.files.create(b"", purpose="batch", filename="empty.jsonl")
    server.fail_next(1, status=503, retry_after="1")  # refused: nothing was started
    job = await client.batches.create(input_file_id=made.id)
    assert job.status == "validating"
    assert created(server, "/v1/batches") == 2


async def test_run_batch_yields_results_matched_by_id(
    client: asyncllm.OpenAI, server: FakeServer, clock: FakeClock, tmp_path: Path
) -> None:
    state = tmp_path / "job.json"
    batch = [
        *requests(2),
        asyncllm.BatchRequest("bad", [{"role": "user", "content": "x"}], model="no-such-model"),
    ]
    seen: list[str] = []
    results = {
        r.id: r
        async for r in asyncllm.run_batch_job(
            client,
            batch,
            state_file=state,
            poll_interval=10,
            on_progress=lambda j: seen.append(j.status),
        )
    }
    assert set(results) == {"q0", "q1", "bad"}
    assert results["q0"].response is not None
    assert results["q0"].response.text == "echo: question 0"
    assert results["q1"].request is batch[1]
    error = results["bad"].error
    assert isinstance(error, asyncllm.NotFoundError) and "no-such-model" in error.message
    assert not results["bad"].ok and results["bad"].response is None
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    job = await client.batches.retrieve(next(iter(server.state["openai.batches"])))
    assert str(job) == f"{job.id}: completed, 3 of 3 done (1 failed)"
    assert clock.sleeps == [10, 15, 22.5]  # backoff between polls, on the dispatcher's sleep
    assert not state.exists()  # every result was read


async def test_crash_mid_poll_then_resume_from_the_state_file(
    client: asyncllm.OpenAI, server: FakeServer, clock: FakeClock, tmp_path: Path
) -> None:
    """The helper is cancelled (a crash, a Ctrl-C) while it polls: the state file holds the job
    id, and a second run with the same requests polls that job, submitting nothing."""
    state = tmp_path / "job.json"
    batch = requests(3)
    polls = 0

    def crash_on_second_poll(job: asyncllm.BatchJob) -> None:
        nonlocal polls
        polls += 1
        if polls == 2:
            task.cancel()  # lands at the helper's next await: its sleep between polls

    async def first_run() -> None:
        async for _ in asyncllm.run_batch_job(
            client, batch, state_file=state, on_progress=crash_on_second_poll
        ):
            pytest.fail("no result can come before the job is done")

    task = asyncio.ensure_future(first_run())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert polls == 2
    saved = json.loads(state.read_text())
    jobs = server.state["openai.batches"]
    assert list(jobs) == [saved["job_id"]]
    assert created(server, "/v1/files") == created(server, "/v1/batches") == 1

    results = [r async for r in asyncllm.run_batch_job(client, batch, state_file=state)]
    assert [r.id for r in results] == ["q0", "q1", "q2"]
    assert all(r.ok for r in results)
    assert created(server, "/v1/files") == created(server, "/v1/batches") == 1  # not resubmitted
    assert not state.exists()


async def test_state_file_of_another_batch_is_refused(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path
) -> None:
    state = tmp_path / "job.json"
    with pytest.raises(asyncio.CancelledError):
        async for _ in asyncllm.run_batch_job(
            client,
            requests(2),
            state_file=state,
            on_progress=lambda job: (_ for _ in ()).throw(asyncio.CancelledError()),
        ):
            pass
    with pytest.raises(asyncllm.ConfigurationError, match="another batch"):
        async for _ in asyncllm.run_batch_job(client, requests(3), state_file=state):
            pass
    assert created(server, "/v1/batches") == 1


async def test_a_refused_submission_leaves_no_state(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path
) -> None:
    state = tmp_path / "job.json"
    server.fail_next(1, status=400)  # the upload is refused: nothing was made
    with pytest.raises(asyncllm.BadRequestError):
        async for _ in asyncllm.run_batch_job(client, requests(1), state_file=state):
            pass
    assert not state.exists()


async def test_a_submission_that_may_have_created_the_job_is_not_repeated(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path
) -> None:
    """The batch creation fails with a 502 after it was sent: the job may exist, so the state
    file keeps a marker and the next run refuses to submit again (raise, not pay twice)."""
    from aiohttp import web

    async def bad_gateway(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "bad gateway"}}, status=502)

    state = tmp_path / "job.json"
    server.overrides["/v1/batches"] = bad_gateway
    with pytest.raises(asyncllm.InternalServerError):
        async for _ in asyncllm.run_batch_job(client, requests(1), state_file=state):
            pass
    assert json.loads(state.read_text())["job_id"] is None
    del server.overrides["/v1/batches"]
    sent = server.request_count
    with pytest.raises(asyncllm.ConfigurationError, match="may have been created"):
        async for _ in asyncllm.run_batch_job(client, requests(1), state_file=state):
            pass
    assert server.request_count == sent


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (list, "non-empty"),
        (lambda: [asyncllm.BatchRequest("a", []), asyncllm.BatchRequest("a", [])], "unique"),
    ],
)
async def test_bad_batches_refused_before_sending(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path, build: Any, match: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=match):
        async for _ in asyncllm.run_batch_job(client, build(), state_file=tmp_path / "s"):
            pass
    assert server.request_count == 0


def test_call_options_are_not_request_parameters() -> None:
    with pytest.raises(asyncllm.ConfigurationError, match="timeout"):
        asyncllm.BatchRequest("a", [], timeout=3)


# -- Anthropic Message Batches -------------------------------------------------------------------


@pytest.fixture
async def claude(dispatcher: asyncllm.Dispatcher) -> AsyncIterator[tuple[Any, FakeServer]]:
    async with (
        FakeServer("anthropic") as server,
        asyncllm.Claude(
            api_key="k", base_url=server.url(), model="fake-chat", dispatcher=dispatcher
        ) as client,
    ):
        yield client, server


async def test_anthropic_message_batches(claude: tuple[Any, FakeServer]) -> None:
    client, _ = claude
    good = {"model": "fake-chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    job = await client.batches.create(
        [{"custom_id": "a", "params": good}, {"custom_id": "b", "params": {"model": "fake-chat"}}]
    )
    assert (job.status, job.done, job.counts.processing) == ("in_progress", False, 2)
    with pytest.raises(asyncllm.BadRequestError):  # still running
        await client.batches.delete(job.id)
    while not job.done:
        job = await client.batches.retrieve(job.id)
    assert (job.counts.succeeded, job.counts.failed) == (1, 1)
    lines = {line["custom_id"]: line async for line in client.batches.results(job.id)}
    assert lines["a"]["result"]["type"] == "succeeded"
    assert lines["b"]["result"]["type"] == "errored"
    assert [b.id async for b in client.batches.list(limit=1)] == [job.id]
    assert (await client.batches.delete(job.id)).deleted
    with pytest.raises(asyncllm.NotFoundError):
        await client.batches.retrieve(job.id)


async def test_anthropic_cancel_ends_with_canceled_requests(
    claude: tuple[Any, FakeServer],
) -> None:
    client, _ = claude
    job = await client.batches.create(
        [{"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": []}}]
    )
    assert (await client.batches.cancel(job.id)).status == "canceling"
    job = await client.batches.retrieve(job.id)
    job = await client.batches.retrieve(job.id)
    assert job.done and job.counts.failed == 1
    results = [r async for r in client.batches.chat_results(job)]
    assert results[0][0] == "a" and isinstance(results[0][1], asyncllm.APIError)


async def test_run_batch_on_claude(
    claude: tuple[Any, FakeServer], clock: FakeClock, tmp_path: Path
) -> None:
    client, server = claude
    batch = [
        asyncllm.BatchRequest("x", [{"role": "user", "content": "one"}], max_tokens=20),
        asyncllm.BatchRequest("y", [{"role": "user", "content": "two"}], system="be brief"),
    ]
    results = [r async for r in asyncllm.run_batch_job(client, batch, state_file=tmp_path / "s")]
    assert {r.id: r.response.text for r in results if r.response} == {
        "x": "echo: one",
        "y": "echo: two",
    }
    sent = server.requests[0].json["requests"]
    assert "be brief" in json.dumps(sent[1]["params"]["system"])
    with pytest.raises(TypeError, match="nonsense"):
        async for _ in asyncllm.run_batch_job(
            client, [asyncllm.BatchRequest("z", [], nonsense=1)], state_file=tmp_path / "t"
        ):
            pass
    assert not (tmp_path / "t").exists()


# -- Gemini batch generation ---------------------------------------------------------------------


@pytest.fixture
async def gemini(dispatcher: asyncllm.Dispatcher) -> AsyncIterator[tuple[Any, FakeServer]]:
    async with (
        FakeServer("gemini") as server,
        asyncllm.Gemini(
            api_key="k",
            base_url=server.url("/v1beta"),
            model="gemini-2.0-flash",
            dispatcher=dispatcher,
        ) as client,
    ):
        yield client, server


async def test_gemini_batch_generation(gemini: tuple[Any, FakeServer]) -> None:
    client, server = gemini
    good = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    job = await client.batches.create(
        [{"request": good, "metadata": {"key": "a"}}, {"request": {}, "metadata": {"key": "b"}}],
        display_name="nightly",
    )
    assert job.id.startswith("batches/") and job.status == "BATCH_STATE_PENDING" and not job.done
    assert server.requests[-1].path == "/v1beta/models/gemini-2.0-flash:batchGenerateContent"
    while not job.done:
        job = await client.batches.retrieve(job.id)
    assert job.status == "BATCH_STATE_SUCCEEDED"
    assert (job.counts.total, job.counts.succeeded, job.counts.failed) == (2, 1, 1)
    results = dict([r async for r in client.batches.chat_results(job)])
    assert results["a"].text == "echo: hi"
    assert isinstance(results["b"], asyncllm.BadRequestError)
    assert [b.id async for b in client.batches.list()] == [job.id]
    assert (await client.batches.delete(job.id)).deleted
    with pytest.raises(asyncllm.NotFoundError):
        await client.batches.retrieve(job.id)


async def test_gemini_cancel(gemini: tuple[Any, FakeServer]) -> None:
    client, _ = gemini
    job = await client.batches.create([{"request": {"contents": []}}])
    await client.batches.cancel(job.id)
    job = await client.batches.retrieve(job.id)
    assert job.done and job.status == "BATCH_STATE_CANCELLED"


async def test_run_batch_on_gemini(gemini: tuple[Any, FakeServer], tmp_path: Path) -> None:
    client, _ = gemini
    batch = [
        asyncllm.BatchRequest("x", [{"role": "user", "content": "one"}], temperature=0.5),
        asyncllm.BatchRequest("y", [{"role": "user", "content": "two"}]),
    ]
    results = [r async for r in asyncllm.run_batch_job(client, batch, state_file=tmp_path / "s")]
    assert {r.id: r.response.text for r in results if r.response} == {
        "x": "echo: one",
        "y": "echo: two",
    }
    mixed = [*batch, asyncllm.BatchRequest("z", [{"role": "user", "content": "3"}], model="other")]
    with pytest.raises(asyncllm.ConfigurationError, match="one model"):
        async for _ in asyncllm.run_batch_job(client, mixed, state_file=tmp_path / "t"):
            pass


async def test_a_batch_cancelled_elsewhere_yields_an_error_per_request(
    client: asyncllm.OpenAI, server: FakeServer, tmp_path: Path
) -> None:
    def cancel_it(job: asyncllm.BatchJob) -> None:
        server.state["openai.batches"][job.id].cancelled = True  # say, from the dashboard

    results = [
        r
        async for r in asyncllm.run_batch_job(
            client, requests(2), state_file=tmp_path / "s", on_progress=cancel_it
        )
    ]
    assert [r.id for r in results] == ["q0", "q1"]
    assert all(isinstance(r.error, asyncllm.APIError) for r in results)
    assert "ended (cancelled) without a result" in str(results[0].error)


async def test_a_large_gemini_batch_goes_through_files(
    gemini: tuple[Any, FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the inline limit the requests go up as a JSONL file, and the results come back in
    a file, read as it arrives."""
    from asyncllm._platform import gemini as platform

    monkeypatch.setattr(platform, "INLINE_BYTES", 10)
    client, server = gemini
    results = [
        r async for r in asyncllm.run_batch_job(client, requests(3), state_file=tmp_path / "s")
    ]
    assert {r.id: r.response.text for r in results if r.response} == {
        f"q{i}": f"echo: question {i}" for i in range(3)
    }
    created = next(r for r in server.requests if r.path.endswith(":batchGenerateContent"))
    assert created.json["batch"]["inputConfig"]["fileName"].startswith("files/")
    downloads = [r for r in server.requests if r.path.endswith(":download")]
    assert len(downloads) == 1 and downloads[0].query == {"alt": "media"}
