"""Hugging Face text-generation-inference (TGI): a self-hosted server or an Inference Endpoint.

Chat goes through TGI's OpenAI-compatible ``/v1/chat/completions``; the native routes
(``/generate``, ``/generate_stream``, ``/info``, ``/health``, ``/tokenize``) have typed methods.
TGI's error body is ``{"error": "...", "error_type": "..."}``; ``error_type`` picks the error class
where the status alone would not (``validation`` is always UnprocessableEntityError, ``overloaded``
is always retried), and the same body sent as a stream event becomes the same typed error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .._engine._dispatcher import Priority
from .._exceptions import (
    APIError,
    APIStatusError,
    ConfigurationError,
    UnprocessableEntityError,
    status_error,
)
from .._http._backend import Meta, check_int, check_number, merge_extra
from .._http._transport import Response
from .._wire.openai import OpenAICompatible
from ..streaming import Stream

__all__ = [
    "TGI",
    "TGIBestOfSequence",
    "TGIDetails",
    "TGIGeneration",
    "TGIInfo",
    "TGIPrefillToken",
    "TGIStreamDetails",
    "TGIStreamToken",
    "TGIToken",
    "TGITokenSpan",
]

# The status each TGI ``error_type`` stands for (router/src/server.rs, ``impl From<InferError>``).
ERROR_TYPE_STATUS: dict[str, int] = {
    "validation": 422,
    "generation": 424,
    "overloaded": 429,
    "incomplete_generation": 500,
    "healthcheck": 503,
}
# Set while health() runs (attempts run in the caller's task): its failures are not retried.
MAX_STOP_SEQUENCES = 4  # GenerateParameters.stop.maxItems
GRAMMAR_TYPES = ("json", "regex", "json_schema")


class TGIToken(BaseModel):
    """A generated token. ``special`` tokens (say, end of sequence) are not part of the text."""

    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class TGIPrefillToken(BaseModel):
    """A prompt token, returned with ``decoder_input_details=True``."""

    id: int
    text: str
    logprob: float | None = None


class TGIBestOfSequence(BaseModel):
    generated_text: str
    finish_reason: str
    generated_tokens: int
    seed: int | None = None
    prefill: list[TGIPrefillToken] = Field(default_factory=list)
    tokens: list[TGIToken] = Field(default_factory=list)
    top_tokens: list[list[TGIToken]] = Field(default_factory=list)


class TGIDetails(BaseModel):
    """What ``details=True`` adds to a generation: why it stopped, its tokens and their logprobs."""

    finish_reason: str
    generated_tokens: int
    seed: int | None = None
    prefill: list[TGIPrefillToken] = Field(default_factory=list)
    tokens: list[TGIToken] = Field(default_factory=list)
    top_tokens: list[list[TGIToken]] = Field(default_factory=list)
    best_of_sequences: list[TGIBestOfSequence] | None = None


class TGIGeneration(BaseModel):
    """The answer of ``/generate``."""

    text: str
    details: TGIDetails | None = None
    request_id: str
    server_request_id: str | None = None
    raw: Any = None

    @property
    def finish_reason(self) -> str | None:
        return None if self.details is None else self.details.finish_reason


class TGIStreamDetails(BaseModel):
    finish_reason: str
    generated_tokens: int
    input_length: int
    seed: int | None = None


class TGIStreamToken(BaseModel):
    """One event of ``/generate_stream``. The last one carries ``generated_text`` (and
    ``details`` when asked for); ``delta`` is the token's text, or "" for a special token."""

    index: int
    token: TGIToken
    top_tokens: list[TGIToken] = Field(default_factory=list)
    generated_text: str | None = None
    details: TGIStreamDetails | None = None
    request_id: str
    raw: Any = None

    @property
    def delta(self) -> str:
        return "" if self.token.special else self.token.text


class TGIInfo(BaseModel):
    """``GET /info``: the served model and the router's limits."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int
    max_client_batch_size: int
    router: str
    version: str
    model_sha: str | None = None
    model_pipeline_tag: str | None = None
    sha: str | None = None
    docker_label: str | None = None


class TGITokenSpan(BaseModel):
    """A token of ``/tokenize``: its id, text and character span in the input."""

    id: int
    text: str
    start: int
    stop: int


class _WireGeneration(BaseModel):
    generated_text: str
    details: TGIDetails | None = None


class _WireStreamToken(BaseModel):
    index: int
    token: TGIToken
    top_tokens: list[TGIToken] = Field(default_factory=list)
    generated_text: str | None = None
    details: TGIStreamDetails | None = None


def _check_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a bool")


def _check_int_below(name: str, value: Any, low: int, bits: int) -> None:
    """An int the router reads into a Rust integer of ``bits`` bits (u32, i32, u64): a larger
    one would fail its JSON parser."""
    check_int(name, value, low)
    if value is not None and value >= 2**bits:
        raise ConfigurationError(f"{name} must be below 2**{bits}")


def _check_positive(name: str, value: Any, high: float | None = None) -> None:
    """Numbers the spec bounds with ``exclusiveMinimum: 0`` (and, for top_p/typical_p, max 1)."""
    check_number(name, value, None, high)
    if value is not None and value <= 0:
        raise ConfigurationError(f"{name} must be > 0")


def _grammar(value: Any) -> dict[str, Any] | None:
    """A GrammarType: a dict as TGI spells it, or a pydantic model class (a JSON grammar)."""
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"type": "json", "value": value.model_json_schema()}
    if isinstance(value, Mapping):
        if value.get("type") not in GRAMMAR_TYPES or "value" not in value:
            raise ConfigurationError(
                "grammar needs 'type' (one of json, regex, json_schema) and 'value'"
            )
        if value["type"] == "regex" and not isinstance(value["value"], str):
            raise ConfigurationError("a regex grammar's value must be a string")
        return dict(value)
    raise ConfigurationError("grammar must be a dict or a pydantic model class")


def _stop_list(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise ConfigurationError("stop must be a string or a list of strings")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ConfigurationError(f"TGI takes at most {MAX_STOP_SEQUENCES} stop sequences")
    return list(stops)


def retype_error(error: APIError) -> APIError:
    """Let TGI's ``error_type`` decide the class where the status alone would not."""
    etype = (error.error_type or "").lower()
    if etype == "validation" and not isinstance(error, UnprocessableEntityError):
        typed = UnprocessableEntityError(
            error.message,
            backend=error.backend,
            request_id=error.request_id,
            status_code=error.status_code,
            body=error.body,
            server_request_id=error.server_request_id,
            code=error.code,
            error_type=error.error_type,
            retry_after=error.retry_after,
        )
        typed.should_retry = error.should_retry
        return typed
    if etype == "overloaded" and error.should_retry is None:
        error.should_retry = True
    return error


class TGI(OpenAICompatible):
    """``TGI(base_url=None, api_key=None)``: base from ``TGI_BASE_URL`` (required: TGI is
    self-hosted or an Inference Endpoint), Bearer token from ``HF_TOKEN`` or ``HF_API_TOKEN``.

    Chat and stream_chat are OpenAI-shaped. TGI serves one model and ignores the name, so
    ``model`` defaults to "tgi".
    """

    backend: ClassVar[str] = "tgi"
    base_url_env: ClassVar[tuple[str, ...]] = ("TGI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("HF_TOKEN", "HF_API_TOKEN")
    server_request_id_header: ClassVar[str | None] = "x-request-id"
    chat_path: ClassVar[str] = "/v1/chat/completions"
    models_path: ClassVar[str] = "/v1/models"

    def __init__(self, base_url: str | None = None, api_key: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("model", "tgi")
        super().__init__(api_key=api_key, base_url=base_url, **kwargs)

    # -- errors ----------------------------------------------------------------------------------

    async def _status_error(self, response: Response, request_id: str) -> APIStatusError:
        error = retype_error(await super()._status_error(response, request_id))
        assert isinstance(error, APIStatusError)
        return error

    def _stream_error(self, payload: Mapping[str, Any], request_id: str) -> APIError:
        message, etype, code = self._error_details(payload)
        status = ERROR_TYPE_STATUS.get((etype or "").lower())
        error: APIError
        if status is None:
            error = super()._stream_error(payload, request_id)
        else:
            error = status_error(
                status,
                message or "error in stream",
                backend=self.name,
                request_id=request_id,
                body=str(payload),
                code=code,
                error_type=etype,
            )
        return retype_error(error)

    # -- chat: TGI's ChatRequest differs from OpenAI's in two fields ------------------------------

    def _chat_body(self, messages: Any, **kwargs: Any) -> dict[str, Any]:
        body = super()._chat_body(messages, **kwargs)
        if isinstance(body.get("stop"), str):
            body["stop"] = [body["stop"]]
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" and "json_schema" in fmt:
            # TGI's GrammarType carries the schema config under "value".
            body["response_format"] = {"type": "json_schema", "value": fmt["json_schema"]}
        return body

    # -- the native API ---------------------------------------------------------------------------

    def _generate_body(
        self,
        inputs: str,
        parameters: Mapping[str, Any],
        extra_parameters: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if not isinstance(inputs, str) or not inputs:
            raise ConfigurationError("inputs must be a non-empty string")
        p = dict(parameters)
        _check_int_below("max_new_tokens", p["max_new_tokens"], 0, 32)
        _check_positive("temperature", p["temperature"])
        _check_positive("top_p", p["top_p"], 1)
        _check_int_below("top_k", p["top_k"], 1, 31)
        _check_positive("typical_p", p["typical_p"], 1)
        _check_positive("repetition_penalty", p["repetition_penalty"])
        check_number("frequency_penalty", p["frequency_penalty"])
        if p["frequency_penalty"] is not None and p["frequency_penalty"] <= -2:
            raise ConfigurationError("frequency_penalty must be > -2")
        _check_int_below("seed", p["seed"], 1, 64)  # exclusiveMinimum: 0
        _check_int_below("truncate", p["truncate"], 0, 64)
        _check_int_below("top_n_tokens", p["top_n_tokens"], 1, 32)
        _check_int_below("best_of", p["best_of"], 1, 64)
        for flag in (
            "do_sample",
            "return_full_text",
            "details",
            "decoder_input_details",
            "watermark",
        ):
            _check_bool(flag, p[flag])
        if p["adapter_id"] is not None and not isinstance(p["adapter_id"], str):
            raise ConfigurationError("adapter_id must be a string")
        p["stop"] = _stop_list(p["stop"])
        p["grammar"] = _grammar(p["grammar"])
        wire = {k: v for k, v in p.items() if v is not None}
        merge_extra(wire, extra_parameters)
        body: dict[str, Any] = {"inputs": inputs}
        if wire:
            body["parameters"] = wire
        return body

    async def generate(
        self,
        inputs: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        typical_p: float | None = None,
        repetition_penalty: float | None = None,
        frequency_penalty: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        do_sample: bool | None = None,
        truncate: int | None = None,
        return_full_text: bool | None = None,
        details: bool | None = None,
        decoder_input_details: bool | None = None,
        top_n_tokens: int | None = None,
        watermark: bool | None = None,
        grammar: Any = None,
        best_of: int | None = None,
        adapter_id: str | None = None,
        extra_parameters: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> TGIGeneration:
        """Raw text completion of a prompt you templated yourself (no chat template applied).

        Use ``details=True`` for the finish reason, tokens and logprobs; ``grammar`` (a
        GrammarType dict or a pydantic model class) constrains the output. Parameters are
        checked against TGI's published bounds before anything is sent.
        """
        body = self._generate_body(
            inputs,
            {
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "typical_p": typical_p,
                "repetition_penalty": repetition_penalty,
                "frequency_penalty": frequency_penalty,
                "stop": stop,
                "seed": seed,
                "do_sample": do_sample,
                "truncate": truncate,
                "return_full_text": return_full_text,
                "details": details,
                "decoder_input_details": decoder_input_details,
                "top_n_tokens": top_n_tokens,
                "watermark": watermark,
                "grammar": grammar,
                "best_of": best_of,
                "adapter_id": adapter_id,
            },
            extra_parameters,
        )

        def parse(payload: Any, meta: Meta) -> TGIGeneration:
            wire = _WireGeneration.model_validate(payload)
            return TGIGeneration(
                text=wire.generated_text,
                details=wire.details,
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
                raw=payload,
            )

        return await self._request(
            "generate",
            "POST",
            "/generate",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    def stream_generate(
        self,
        inputs: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        typical_p: float | None = None,
        repetition_penalty: float | None = None,
        frequency_penalty: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        do_sample: bool | None = None,
        truncate: int | None = None,
        return_full_text: bool | None = None,
        details: bool | None = None,
        decoder_input_details: bool | None = None,
        top_n_tokens: int | None = None,
        watermark: bool | None = None,
        grammar: Any = None,
        adapter_id: str | None = None,
        extra_parameters: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[TGIStreamToken]:
        """``generate`` token by token (SSE). Retried only until the first token arrives; an
        error event after that raises the typed error for its ``error_type``."""
        body = self._generate_body(
            inputs,
            {
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "typical_p": typical_p,
                "repetition_penalty": repetition_penalty,
                "frequency_penalty": frequency_penalty,
                "stop": stop,
                "seed": seed,
                "do_sample": do_sample,
                "truncate": truncate,
                "return_full_text": return_full_text,
                "details": details,
                "decoder_input_details": decoder_input_details,
                "top_n_tokens": top_n_tokens,
                "watermark": watermark,
                "grammar": grammar,
                "best_of": None,
                "adapter_id": adapter_id,
            },
            extra_parameters,
        )
        return self._stream(
            "stream_generate",
            "POST",
            "/generate_stream",
            self._decode_generate_stream,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    async def _decode_generate_stream(
        self, response: Response, meta: Meta
    ) -> AsyncIterator[TGIStreamToken]:
        async for event in self._sse(response):
            if event.data.strip() == "[DONE]":
                return
            payload = event.json()
            if isinstance(payload, Mapping) and "error" in payload:
                raise self._stream_error(payload, meta.request_id)
            yield self._parse(self._stream_token, payload, meta)

    @staticmethod
    def _stream_token(payload: Any, meta: Meta) -> TGIStreamToken:
        wire = _WireStreamToken.model_validate(payload)
        return TGIStreamToken(**wire.model_dump(), request_id=meta.request_id, raw=payload)

    async def info(
        self,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> TGIInfo:
        """The served model and the router's limits (max input/total tokens, stop sequences...)."""
        return await self._request(
            "info",
            "GET",
            "/info",
            lambda payload, meta: TGIInfo.model_validate(payload),
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def health(
        self,
        *,
        priority: int = Priority.HIGH,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bool:
        """True when the model can serve, False when the server says it cannot (503); never
        retried. Connection and auth failures still raise."""
        return await self._probe(
            "health", "/health", priority=priority, timeout=timeout, deadline=deadline
        )

    async def tokenize(
        self,
        inputs: str,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> list[TGITokenSpan]:
        """How the served model's tokenizer splits ``inputs`` (404 if it has no fast tokenizer)."""
        if not isinstance(inputs, str) or not inputs:
            raise ConfigurationError("inputs must be a non-empty string")

        def parse(payload: Any, meta: Meta) -> list[TGITokenSpan]:
            if not isinstance(payload, list):
                raise TypeError("expected a list of tokens")
            return [TGITokenSpan.model_validate(t) for t in payload]

        return await self._request(
            "tokenize",
            "POST",
            "/tokenize",
            parse,
            body={"inputs": inputs},
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )
