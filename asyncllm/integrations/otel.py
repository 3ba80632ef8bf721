"""OpenTelemetry traces and metrics for every call (``pip install 'asyncllm[otel]'``).

Where ``opentelemetry-api`` is installed, every dispatcher reports to one ``OTelObserver``
(through the engine's observer interface, ``asyncllm._engine._observe``); with no SDK configured
it checks that every hundred calls and does nothing more, and without the package nothing of
this module is imported.

Traces follow the OpenTelemetry GenAI semantic conventions, version ``SEMCONV_VERSION``
(still in development, so the attribute names are written out here rather than taken from an
incubating package): a CLIENT span per call named ``"{gen_ai.operation.name} {model}"``, and a
child span per attempt with ``http.request.resend_count`` and the backoff waited before it,
whose context is sent on the request as ``traceparent``. ``gen_ai.provider.name`` was
``gen_ai.system`` up to v1.36.0: both are set unless ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists
``gen_ai_latest_experimental``, which asks for the latest conventions only.

Metrics: ``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` as the
conventions define them, and asyncllm's own: calls by outcome, errors by type, retries, time
queued (apart from service time), and, read when exported, queue depth, calls in flight,
concurrency limit (lowered by adaptive concurrency under overload) and breaker state per backend.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

from .. import __version__
from .._engine._dispatcher import Dispatcher, Lane
from .._engine._observe import CallObserver, Observer
from .._engine._tracking import RequestRecord, RequestStatus

__all__ = ["SEMCONV_VERSION", "OTelObserver"]

SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST_EXPERIMENTAL = "gen_ai_latest_experimental"

# Attributes (GenAI, HTTP and general conventions), then asyncllm's own.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"  # v1.36.0 and before: what gen_ai.provider.name was called
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_RESEND_COUNT = "http.request.resend_count"
REQUEST_ID = "asyncllm.request_id"
BACKEND = "asyncllm.backend"
OPERATION = "asyncllm.operation"
OUTCOME = "asyncllm.outcome"
RETRY_BACKOFF = "asyncllm.retry.backoff"  # seconds waited before this attempt
QUEUE_DURATION_ATTR = "asyncllm.queue.duration"
ATTEMPTS = "asyncllm.attempts"

# Metrics.
GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"
CALLS = "asyncllm.client.calls"
ERRORS = "asyncllm.client.errors"
RETRIES = "asyncllm.client.retries"
QUEUE_DURATION = "asyncllm.client.queue.duration"
QUEUE_DEPTH = "asyncllm.client.queue.depth"
IN_FLIGHT = "asyncllm.client.in_flight"
CONCURRENCY_LIMIT = "asyncllm.client.concurrency.limit"
BREAKER_STATE = "asyncllm.client.breaker.state"

# The conventions' advised bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)  # fmt: skip
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864

# Registered gen_ai.provider.name values by client; other clients report their own name.
PROVIDERS = {"openai": "openai", "claude": "anthropic", "gemini": "gcp.gen_ai", "groq": "groq"}
# Registered gen_ai.operation.name values by operation; other operations keep their name.
OPERATIONS = {
    "chat": "chat",
    "stream_chat": "chat",
    "embed": "embeddings",
    "completions": "text_completion",
    "generate": "text_completion",
    "stream_generate": "text_completion",
}
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
# Global providers are looked up again every this many calls: an SDK set after the first call
# is picked up, and a call costs no clock read.
RECHECK_CALLS = 100


def _latest_only() -> bool:
    return LATEST_EXPERIMENTAL in {v.strip() for v in os.environ.get(OPT_IN_ENV, "").split(",")}


def _unconfigured(provider: Any) -> bool:
    """The API's stand-ins, which record nothing until an SDK is set."""
    return isinstance(
        provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider, metrics.NoOpMeterProvider)
    ) or type(provider).__name__ in ("_ProxyMeterProvider", "_DefaultMeterProvider")


class _Instruments:
    def __init__(self, meter: Meter, observer: OTelObserver) -> None:
        self.duration = meter.create_histogram(
            GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.calls = meter.create_counter(CALLS, unit="{call}", description="Calls, by outcome")
        self.errors = meter.create_counter(
            ERRORS, unit="{error}", description="Failed calls, by error type"
        )
        self.retries = meter.create_counter(
            RETRIES, unit="{retry}", description="Attempts after the first"
        )
        self.queued = meter.create_histogram(
            QUEUE_DURATION,
            unit="s",
            description="Time a call waited for a slot before its first attempt",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_gauge(
            QUEUE_DEPTH, [observer._queue_depth], unit="{call}", description="Calls waiting"
        )
        meter.create_observable_gauge(
            IN_FLIGHT, [observer._in_flight], unit="{call}", description="Attempts running"
        )
        meter.create_observable_gauge(
            CONCURRENCY_LIMIT,
            [observer._concurrency_limit],
            unit="{call}",
            description="Attempts allowed at once: the maximum, or less after overload",
        )
        meter.create_observable_gauge(
            BREAKER_STATE,
            [observer._breaker_state],
            description="Circuit breaker: 0 closed, 1 half-open, 2 open",
        )


class OTelObserver(Observer):
    """Reports calls to OpenTelemetry (see the module docstring).

    By default it uses the global tracer and meter providers, looked up again every
    ``RECHECK_CALLS`` calls so that providers set after the first call are picked up; ``tracer_provider`` and
    ``meter_provider`` fix them instead. Give it to ``asyncllm.Dispatcher(observer=...)``.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._fixed = tracer_provider is not None or meter_provider is not None
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._seen: tuple[Any, Any] = (None, None)
        self.tracer: Tracer | None = None
        self.instruments: _Instruments | None = None
        self._countdown = 0
        self.latest_only = _latest_only()
        self._dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()

    def attach(self, dispatcher: Dispatcher) -> None:
        self._dispatchers.add(dispatcher)

    def _refresh(self) -> None:
        if self._fixed:
            tp, mp = self._tracer_provider, self._meter_provider
            self._countdown = 1 << 62
        else:
            tp, mp = trace.get_tracer_provider(), metrics.get_meter_provider()
            self._countdown = RECHECK_CALLS
        if tp is not self._seen[0]:
            self.tracer = (
                None
                if tp is None or _unconfigured(tp)
                else tp.get_tracer("asyncllm", __version__, schema_url=SCHEMA_URL)
            )
        if mp is not self._seen[1]:
            self.instruments = (
                None
                if mp is None or _unconfigured(mp)
                else _Instruments(
                    mp.get_meter("asyncllm", __version__, schema_url=SCHEMA_URL), self
                )
            )
        self._seen = (tp, mp)

    def start_call(self, record: RequestRecord, lane: Lane) -> CallObserver | None:
        self._countdown -= 1
        if self._countdown < 0:
            self._refresh()
        if self.tracer is None and self.instruments is None:
            return None
        return _Call(self, record, lane)

    # -- gauges, read at export ------------------------------------------------------------

    def _lanes(self) -> Iterable[Lane]:
        for dispatcher in list(self._dispatchers):
            yield from list(dispatcher._lanes.values())

    def _lane_attributes(self, lane: Lane) -> dict[str, str]:
        attributes = {BACKEND: lane.name, GEN_AI_PROVIDER_NAME: PROVIDERS.get(lane.kind, lane.kind)}
        if not self.latest_only:
            attributes[GEN_AI_SYSTEM] = attributes[GEN_AI_PROVIDER_NAME]
        return attributes

    def _queue_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lane.queued, self._lane_attributes(lane)) for lane in self._lanes()]

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lane.in_flight, self._lane_attributes(lane)) for lane in self._lanes()]

    def _concurrency_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lane.limit, self._lane_attributes(lane)) for lane in self._lanes()]

    def _breaker_state(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(BREAKER_VALUES[lane.breaker.state.value], self._lane_attributes(lane))
            for lane in self._lanes()
        ]


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


class _Call(CallObserver):
    """One call's span, its current attempt's span, and the attributes its metrics carry."""

    __slots__ = (
        "attempt",
        "context",
        "instruments",
        "metric_attributes",
        "observer",
        "request_id",
        "span",
    )

    def __init__(self, observer: OTelObserver, record: RequestRecord, lane: Lane) -> None:
        self.observer = observer
        self.instruments = observer.instruments
        self.request_id = record.request_id
        operation = OPERATIONS.get(record.operation, record.operation)
        attributes: dict[str, Any] = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: PROVIDERS.get(lane.kind, lane.kind),
        }
        if not observer.latest_only:
            attributes[GEN_AI_SYSTEM] = attributes[GEN_AI_PROVIDER_NAME]
        if record.model is not None:
            attributes[GEN_AI_REQUEST_MODEL] = record.model
        if lane.host is not None:
            host, _, port = lane.host.rpartition(":")
            if host and port.isdigit():
                attributes[SERVER_ADDRESS] = host.strip("[]")
                attributes[SERVER_PORT] = int(port)
        self.metric_attributes = {**attributes, BACKEND: lane.name}
        self.attempt: trace.Span | None = None
        tracer = observer.tracer
        if tracer is None:
            self.span: trace.Span | None = None
            self.context: Any = None
        else:
            name = operation if record.model is None else f"{operation} {record.model}"
            self.span = tracer.start_span(
                name,
                kind=SpanKind.CLIENT,
                attributes={
                    **attributes,
                    BACKEND: lane.name,
                    OPERATION: record.operation,
                    REQUEST_ID: record.request_id,
                },
            )
            self.context = trace.set_span_in_context(self.span)

    def attempt_started(self, number: int, backoff: float) -> Mapping[str, str] | None:
        if number > 1 and self.instruments is not None:
            self.instruments.retries.add(1, self.metric_attributes)
        tracer = self.observer.tracer
        if tracer is None or self.span is None:
            return None
        attributes: dict[str, Any] = {REQUEST_ID: self.request_id}
        if number > 1:
            attributes[HTTP_REQUEST_RESEND_COUNT] = number - 1
            attributes[RETRY_BACKOFF] = backoff
        self.attempt = tracer.start_span(
            f"{self.metric_attributes[GEN_AI_OPERATION_NAME]} attempt {number}",
            context=self.context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self.attempt))
        return carrier

    def attempt_ended(self, error: BaseException | None) -> None:
        """An attempt cut short by cancellation (the caller left) is no error."""
        span, self.attempt = self.attempt, None
        if span is None:
            return
        if error is not None and not isinstance(error, (GeneratorExit, asyncio.CancelledError)):
            status = getattr(error, "status_code", None)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            span.set_attribute(ERROR_TYPE, _error_type(error))
            span.set_status(Status(StatusCode.ERROR, _error_type(error)))
        span.end()

    def call_ended(
        self, record: RequestRecord, response_model: str | None, error: BaseException | None
    ) -> None:
        outcome = record.status.value
        failed = record.status is RequestStatus.FAILED and error is not None
        error_type = _error_type(error) if failed and error is not None else None
        span = self.span
        if span is not None:
            if response_model is not None:
                span.set_attribute(GEN_AI_RESPONSE_MODEL, response_model)
            if record.input_tokens is not None:
                span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, record.input_tokens)
            if record.output_tokens is not None:
                span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, record.output_tokens)
            span.set_attribute(ATTEMPTS, record.attempts)
            span.set_attribute(OUTCOME, outcome)
            queued = record.queued_time
            if queued is not None:
                span.set_attribute(QUEUE_DURATION_ATTR, queued)
            if error_type is not None:
                span.set_attribute(ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.end()
        instruments = self.instruments
        if instruments is None:
            return
        attributes = self.metric_attributes
        if response_model is not None:
            attributes = {**attributes, GEN_AI_RESPONSE_MODEL: response_model}
        if error_type is not None:
            attributes = {**attributes, ERROR_TYPE: error_type}
            instruments.errors.add(1, attributes)
        finished = record.finished_at if record.finished_at is not None else record.enqueued_at
        instruments.duration.record(finished - record.enqueued_at, attributes)
        instruments.calls.add(1, {**attributes, OUTCOME: outcome})
        queued = record.queued_time
        if queued is not None:
            instruments.queued.record(queued, self.metric_attributes)
        if record.input_tokens is not None:
            instruments.tokens.record(
                record.input_tokens, {**attributes, GEN_AI_TOKEN_TYPE: "input"}
            )
        if record.output_tokens is not None:
            instruments.tokens.record(
                record.output_tokens, {**attributes, GEN_AI_TOKEN_TYPE: "output"}
            )
