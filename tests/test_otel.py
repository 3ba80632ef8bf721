"""OpenTelemetry: spans and metrics per call, read back through the SDK's in-memory exporters."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import asyncllm
from asyncllm.integrations import otel
from asyncllm.testing import FakeServer

USER = [{"role": "user", "content": "say three words"}]
FAST = asyncllm.RetryConfig(initial_delay=0.0, max_delay=0.0, max_retries=3)


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.observer = otel.OTelObserver(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("openai") as s:
        yield s


async def test_a_call_has_a_genai_span_and_an_attempt_span_sent_as_traceparent(
    telemetry: Telemetry, server: FakeServer
) -> None:
    async with asyncllm.Dispatcher(observer=telemetry.observer) as d:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), dispatcher=d)
        with asyncllm.request_context("order-7"):
            r = await client.chat(USER, model="fake-chat")
        await client.aclose()
    attempt, call = telemetry.finished()
    assert call.name == "chat fake-chat" and call.kind is SpanKind.CLIENT
    attributes = dict(call.attributes or {})
    assert attributes[otel.GEN_AI_OPERATION_NAME] == "chat"
    assert attributes[otel.GEN_AI_PROVIDER_NAME] == "openai"
    assert attributes[otel.GEN_AI_SYSTEM] == "openai"  # the v1.36.0 name, kept by default
    assert attributes[otel.GEN_AI_REQUEST_MODEL] == "fake-chat"
    assert attributes[otel.GEN_AI_RESPONSE_MODEL] == "fake-chat"
    assert r.usage is not None
    assert attributes[otel.GEN_AI_USAGE_INPUT_TOKENS] == r.usage.prompt_tokens
    assert attributes[otel.GEN_AI_USAGE_OUTPUT_TOKENS] == r.usage.completion_tokens
    assert attributes[otel.REQUEST_ID] == "order-7"
    assert attributes[otel.SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[otel.SERVER_PORT] == server.port
    assert otel.ERROR_TYPE not in attributes
    assert attempt.parent is not None and attempt.parent.span_id == call.context.span_id
    assert otel.HTTP_REQUEST_RESEND_COUNT not in (attempt.attributes or {})
    sent = server.requests[-1].headers["traceparent"]
    trace_id, span_id = sent.split("-")[1:3]
    assert int(trace_id, 16) == attempt.context.trace_id
    assert int(span_id, 16) == attempt.context.span_id


async def test_retries_are_attempt_spans_with_resend_count_and_backoff(
    telemetry: Telemetry, server: FakeServer
) -> None:
    retry = asyncllm.RetryConfig(max_retries=3, max_retry_after=5)
    async with asyncllm.Dispatcher(observer=telemetry.observer) as d:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), dispatcher=d, retry=retry)
        server.fail_next(1, status=503, retry_after="0.01")
        await client.chat(USER, model="fake-chat")
        await client.aclose()
    first, second, call = telemetry.finished()
    assert first.status.status_code is StatusCode.ERROR
    assert (first.attributes or {})[otel.ERROR_TYPE] == "InternalServerError"
    assert (first.attributes or {})["http.response.status_code"] == 503
    assert (second.attributes or {})[otel.HTTP_REQUEST_RESEND_COUNT] == 1
    assert (second.attributes or {})[otel.RETRY_BACKOFF] == pytest.approx(0.01)
    assert call.status.status_code is StatusCode.UNSET
    assert (call.attributes or {})[otel.ATTEMPTS] == 2
    [retries] = telemetry.metrics()[otel.RETRIES]
    assert retries.value == 1


async def test_a_failed_call_has_its_error_type_on_span_and_metrics(
    telemetry: Telemetry, server: FakeServer
) -> None:
    async with asyncllm.Dispatcher(observer=telemetry.observer) as d:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), dispatcher=d, retry=FAST)
        server.fail_next(1, status=400)
        with pytest.raises(asyncllm.BadRequestError):
            await client.chat(USER, model="fake-chat")
        await client.chat(USER, model="fake-chat")
        await client.aclose()
    call = telemetry.finished()[1]
    assert (call.attributes or {})[otel.ERROR_TYPE] == "BadRequestError"
    assert call.status.status_code is StatusCode.ERROR
    metrics = telemetry.metrics()
    [errors] = metrics[otel.ERRORS]
    assert errors.value == 1 and errors.attributes[otel.ERROR_TYPE] == "BadRequestError"
    outcomes = {p.attributes[otel.OUTCOME]: p.value for p in metrics[otel.CALLS]}
    assert outcomes == {"failed": 1, "succeeded": 1}
    durations = metrics[otel.GEN_AI_CLIENT_OPERATION_DURATION]
    assert sum(p.count for p in durations) == 2
    assert {p.attributes.get(otel.ERROR_TYPE) for p in durations} == {None, "BadRequestError"}


async def test_streams_report_usage_and_the_gauges_read_the_lanes(
    telemetry: Telemetry, server: FakeServer
) -> None:
    async with asyncllm.Dispatcher(observer=telemetry.observer) as d:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), dispatcher=d)
        async with client.stream_chat(USER, model="fake-chat") as stream:
            await stream.start()
            in_flight = {
                p.attributes[otel.BACKEND]: p.value for p in telemetry.metrics()[otel.IN_FLIGHT]
            }
            final = await stream.final()
        metrics = telemetry.metrics()
        await client.aclose()
    assert in_flight == {"openai": 1}
    assert final.usage is not None and final.usage.prompt_tokens
    tokens = {
        p.attributes[otel.GEN_AI_TOKEN_TYPE]: p.sum for p in metrics[otel.GEN_AI_CLIENT_TOKEN_USAGE]
    }
    assert tokens == {"input": final.usage.prompt_tokens, "output": final.usage.completion_tokens}
    assert [p.value for p in metrics[otel.IN_FLIGHT]] == [0]
    assert [p.value for p in metrics[otel.QUEUE_DEPTH]] == [0]
    assert [p.value for p in metrics[otel.BREAKER_STATE]] == [0]
    assert [p.value for p in metrics[otel.CONCURRENCY_LIMIT]] == [5]
    assert sum(p.count for p in metrics[otel.QUEUE_DURATION]) == 1
    [attempt, call] = telemetry.finished()
    assert (call.attributes or {})[otel.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.completion_tokens
    assert attempt.end_time is not None and call.end_time is not None
    assert attempt.end_time <= call.end_time


async def test_opting_in_to_the_latest_conventions_drops_the_old_attribute(
    monkeypatch: pytest.MonkeyPatch, server: FakeServer
) -> None:
    monkeypatch.setenv(otel.OPT_IN_ENV, "http, gen_ai_latest_experimental")
    telemetry = Telemetry()
    async with asyncllm.Dispatcher(observer=telemetry.observer) as d:
        client = asyncllm.Claude(api_key="k", base_url=server.url(""), dispatcher=d)
        # The OpenAI fake has no Claude routes: the span is what counts.
        with contextlib.suppress(asyncllm.APIError):
            await client.models()
        await client.aclose()
    [*_, call] = telemetry.finished()
    assert (call.attributes or {})[otel.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert otel.GEN_AI_SYSTEM not in (call.attributes or {})


async def test_without_an_sdk_the_observer_does_nothing_per_call() -> None:
    observer = otel.OTelObserver()  # the global providers: the API's stand-ins in this process
    async with asyncllm.Dispatcher(observer=observer) as d:
        lane = d.lane("x")
        record = d._begin(lane, "chat", 1, "r", None)
        assert observer.start_call(record, lane) is None


def test_without_opentelemetry_nothing_of_it_is_imported() -> None:
    script = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if not installed
import asyncllm
from asyncllm.testing import MockResponse, MockTransport
from tests.helpers import chat_json

async def main():
    t = MockTransport(lambda r: MockResponse(200, json=chat_json()))
    async with asyncllm.OpenAI(api_key="k", transport=t) as c:
        await c.chat([{"role": "user", "content": "x"}], model="m")
        assert c.dispatcher.observer is None

asyncio.run(main())
assert "asyncllm.integrations.otel" not in sys.modules
assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
print("clean")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "clean"


async def test_a_stream_closed_early_is_cancelled_not_an_error(
    telemetry: Telemetry, server: FakeServer
) -> None:
    async with asyncllm.Dispatcher(observer=telemetry.observer) as d:
        client = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), dispatcher=d)
        async with client.stream_chat(USER, model="fake-chat") as stream:
            await stream.__anext__()
        await client.aclose()
    attempt, call = telemetry.finished()
    assert attempt.status.status_code is StatusCode.UNSET
    assert call.status.status_code is StatusCode.UNSET
    assert (call.attributes or {})[otel.OUTCOME] == "cancelled"
    outcomes = {p.attributes[otel.OUTCOME]: p.value for p in telemetry.metrics()[otel.CALLS]}
    assert outcomes == {"cancelled": 1}
