"""OpenAI fine-tuning through the fake: a job's whole life, its events and checkpoints,
cancelling, and creation sent once."""

from __future__ import annotations

import pytest

import asyncllm
from asyncllm.testing import FakeServer

PROTOCOLS = ("openai",)


def make_client(server: FakeServer) -> asyncllm.OpenAI:
    return asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"))


TRAINING = (
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
)


async def test_job_lifecycle(client: asyncllm.OpenAI) -> None:
    data = await client.files.create(TRAINING, purpose="fine-tune", filename="train.jsonl")
    job = await client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=data.id, suffix="demo", seed=7
    )
    assert (job.status, job.done, job.fine_tuned_model) == ("validating_files", False, None)
    seen = [job.status]
    while not job.done:
        job = await client.fine_tuning.jobs.retrieve(job.id)
        seen.append(job.status)
    assert seen == ["validating_files", "validating_files", "queued", "running", "succeeded"]
    assert job.fine_tuned_model is not None and ":demo:" in job.fine_tuned_model
    assert job.trained_tokens == 1000
    events = [e.message async for e in client.fine_tuning.jobs.list_events(job.id, limit=2)]
    assert events[0] == "The job has successfully completed"
    assert events[-1] == "Created fine-tuning job" and len(events) == 5
    checkpoints = [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert [c.step_number for c in checkpoints] == [20, 10]
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith("ckpt-step-20")
    assert [j.id async for j in client.fine_tuning.jobs.list()] == [job.id]
    with pytest.raises(asyncllm.BadRequestError):
        await client.fine_tuning.jobs.cancel(job.id)


async def test_cancel(client: asyncllm.OpenAI) -> None:
    data = await client.files.create(TRAINING, purpose="fine-tune", filename="t.jsonl")
    job = await client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=data.id)
    cancelled = await client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.done


async def test_training_file_must_be_for_fine_tuning(client: asyncllm.OpenAI) -> None:
    data = await client.files.create(b"{}\n", purpose="batch", filename="b.jsonl")
    with pytest.raises(asyncllm.BadRequestError, match="not for fine-tuning"):
        await client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=data.id)


async def test_creation_is_not_retried_after_a_500(
    client: asyncllm.OpenAI, server: FakeServer
) -> None:
    data = await client.files.create(TRAINING, purpose="fine-tune", filename="t.jsonl")
    server.fail_next(1, status=500)
    with pytest.raises(asyncllm.InternalServerError) as info:
        await client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=data.id)
    assert info.value.may_have_been_applied and info.value.attempts == 1
    assert server.state["openai.fine_tuning"] == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "", "training_file": "file-1"},
        {"model": "m", "training_file": "../x"},
        {"model": "m", "training_file": "file-1", "suffix": "x" * 65},
        {"model": "m", "training_file": "file-1", "method": {"kind": "dpo"}},
        {"model": "m", "training_file": "file-1", "metadata": {"a": 1}},
    ],
)
async def test_bad_jobs_refused_before_sending(
    client: asyncllm.OpenAI, server: FakeServer, kwargs: dict[str, object]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.fine_tuning.jobs.create(**kwargs)  # type: ignore[arg-type]
    assert server.request_count == 0
