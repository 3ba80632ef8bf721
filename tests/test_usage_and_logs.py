"""Usage accounting on the tracker and in stats, queued and service time apart, and the log
records a call leaves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import asyncllm
from asyncllm._engine._dispatcher import TokenUsage
from asyncllm.testing import FakeClock, FakeServer, MockResponse
from tests.helpers import USER, chat_json
from tests.helpers import client as mock_client


def usage_reply(request: Any) -> MockResponse:
    body = request.json()
    words = len(body["messages"][0]["content"].split())
    reply = chat_json()
    reply["model"] = body["model"] + "-2024"
    reply["usage"] = {"prompt_tokens": words, "completion_tokens": 10, "total_tokens": words + 10}
    return MockResponse(200, json=reply)


async def test_usage_is_on_the_record_and_summed_per_backend_and_model() -> None:
    c = mock_client(usage_reply, dispatcher=asyncllm.Dispatcher(observer=None))
    r = await c.chat([{"role": "user", "content": "one two three"}], model="small")
    await c.chat([{"role": "user", "content": "four"}], model="small")
    await c.chat([{"role": "user", "content": "five six"}], model="large")
    record = c.dispatcher.tracker.get(r.request_id)
    assert record is not None
    assert (record.model, record.input_tokens, record.output_tokens) == ("small", 3, 10)
    stats = c.dispatcher.stats()["openai"]
    assert stats.usage == {"small": TokenUsage(2, 4, 20), "large": TokenUsage(1, 2, 10)}
    assert "6/30" in c.dispatcher.stats_table()
    await c.aclose()


async def test_a_call_without_usage_adds_nothing_and_streams_count_their_last_usage() -> None:
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(
            api_key="k", base_url=server.url("/v1"), dispatcher=asyncllm.Dispatcher(observer=None)
        )
        await c.models()
        assert c.dispatcher.stats()["openai"].usage == {}
        assert c.dispatcher.stats_table().splitlines()[1].split()[-1] == "-"
        async with c.stream_chat(USER, model="fake-chat") as stream:
            final = await stream.final()
        assert final.usage is not None
        record = c.dispatcher.tracker.get(stream.request_id)
        assert record is not None
        assert record.input_tokens == final.usage.prompt_tokens
        assert record.output_tokens == final.usage.completion_tokens
        assert c.dispatcher.stats()["openai"].usage == {
            "fake-chat": TokenUsage(1, final.usage.prompt_tokens, final.usage.completion_tokens)
        }
        await c.aclose()


async def test_stats_table_shows_time_queued_apart_from_service_time() -> None:
    clock = FakeClock()

    async def slow(request: Any) -> MockResponse:
        await asyncio.sleep(0)
        clock.advance(0.05)
        return MockResponse(200, json=chat_json())

    d = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, observer=None)
    c = mock_client(slow, dispatcher=d, max_concurrent_requests=1)
    first, second = await asyncio.gather(c.chat(USER, model="m"), c.chat(USER, model="m"))
    records = [d.tracker.get(first.request_id), d.tracker.get(second.request_id)]
    assert [r.queued_time for r in records if r] == [0.0, pytest.approx(0.05)]
    assert [r.service_time for r in records if r] == [pytest.approx(0.05)] * 2
    stats = d.stats()["openai"]
    assert stats.queued_p95 == pytest.approx(0.05) and stats.service_p50 == pytest.approx(0.05)
    header, row = d.stats_table().splitlines()
    assert "queued p50/p95 ms" in header and "service p50/p95 ms" in header
    assert "0.0/50.0" in row and "50.0/50.0" in row
    await c.aclose()


async def test_one_debug_record_per_call_and_nothing_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = mock_client(usage_reply, dispatcher=asyncllm.Dispatcher(observer=None))
    with caplog.at_level(logging.INFO, logger="asyncllm"):
        await c.chat(USER, model="m")
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="asyncllm"), asyncllm.request_context("abc"):
        await c.chat(USER, model="m")
    [record] = [r for r in caplog.records if r.name == "asyncllm"]
    assert record.levelno == logging.DEBUG
    fields = {
        k: getattr(record, k) for k in ("request_id", "backend", "model", "attempt", "status")
    }
    assert fields == {
        "request_id": "abc",
        "backend": "openai",
        "model": "m",
        "attempt": 1,
        "status": "succeeded",
    }
    assert record.latency >= 0 and record.queued_time is not None  # type: ignore[attr-defined]
    assert record.input_tokens == 1 and record.output_tokens == 10  # type: ignore[attr-defined]
    await c.aclose()


async def test_a_retry_logs_at_info_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([MockResponse(503, json={"error": {"message": "busy"}}), None])

    def handler(request: Any) -> MockResponse:
        return next(answers) or MockResponse(200, json=chat_json())

    c = mock_client(handler, dispatcher=asyncllm.Dispatcher(observer=None))
    with caplog.at_level(logging.INFO, logger="asyncllm"):
        await c.chat(USER, model="m")
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert (record.attempt, record.status, record.model) == (1, 503, "m")  # type: ignore[attr-defined]
    assert record.error_type == "InternalServerError"  # type: ignore[attr-defined]
    await c.aclose()


async def test_usage_under_the_responses_api_names_counts_too() -> None:
    from types import SimpleNamespace

    d = asyncllm.Dispatcher(observer=None)
    lane = d.lane("responses")

    async def attempt(_: Any) -> Any:
        return SimpleNamespace(usage=SimpleNamespace(input_tokens=3, output_tokens=4), model="r-1")

    await d.run(lane, "responses.create", attempt, request_id="r")
    record = d.tracker.get("r")
    assert record is not None and (record.input_tokens, record.output_tokens) == (3, 4)
    assert d.stats()["responses"].usage == {"r-1": TokenUsage(1, 3, 4)}
