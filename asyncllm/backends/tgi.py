"""Hugging Face text-generation-inference (TGI): a self-hosted server or an Inference Endpoint.

Chat goes through TGI's OpenAI-compatible ``/v1/chat/completions``; the native routes
(``/generate``, ``/generate_stream``, ``/info``, ``/health``, ``/tokenize``) have typed methods.
Sampling parameters are checked against the bounds TGI's router enforces (``router/src/
validation.rs``), which are narrower than its OpenAPI schema says: ``top_p`` and ``typical_p``
below 1, ``truncate`` above 0.
TGI's error body is ``{"error": "...", "error_type": "..."}``; ``error_type`` picks the error class
where the status alone would not (``validation`` is always UnprocessableEntityError, ``overloaded``
is always retried), and the same body sent as a stream event becomes the same typed error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict, Unpack

from .._engine._dispatcher import Priority
from .._exceptions import ConfigurationError
from .._http._backend import ErrorInfo, Meta
from .._models import from_json, parse_as
from .._options import BodyOptions, ClientOptions, HttpOptions, keys_of
from .._structured import OutputFormat, rooted_schema
from .._validate import check_bool, check_int, check_number, check_stop, check_str
from .._wire.openai import OpenAIChat
from ..streaming import Stream

__all__ = [
    "TGI",
    "GenerateOptions",
    "GenerateParams",
    "StreamGenerateOptions",
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


class _SequenceDetails(BaseModel):
    """What TGI reports of one generated sequence: why it stopped, its tokens and their logprobs."""

    finish_reason: str
    generated_tokens: int
    seed: int | None = None
    prefill: list[TGIPrefillToken] = Field(default_factory=list)
    tokens: list[TGIToken] = Field(default_factory=list)
    top_tokens: list[list[TGIToken]] = Field(default_factory=list)


class TGIBestOfSequence(_SequenceDetails):
    generated_text: str


class TGIDetails(_SequenceDetails):
    """What ``details=True`` adds to a generation (``best_of_sequences`` with ``best_of``)."""

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


_TOKEN_SPANS = parse_as(TypeAdapter(list[TGITokenSpan]))


def _check_int_below(name: str, value: Any, low: int, bits: int) -> None:
    """An int the router reads into a Rust integer of ``bits`` bits (u32, i32, u64): a larger
    one would fail its JSON parser."""
    check_int(name, value, low)
    if value is not None and value >= 2**bits:
        raise ConfigurationError(f"{name} must be below 2**{bits}")


def _check_positive(name: str, value: Any) -> None:
    """Numbers TGI's router wants strictly positive (temperature, repetition_penalty)."""
    check_number(name, value)
    if value is not None and value <= 0:
        raise ConfigurationError(f"{name} must be > 0")


def _check_below_one(name: str, value: Any) -> None:
    """``top_p`` and ``typical_p``: TGI's router takes 0 < p < 1 (1, which its OpenAPI schema
    allows, is a 422: leave the parameter out to sample from the whole distribution)."""
    check_number(name, value)
    if value is not None and not 0 < value < 1:
        raise ConfigurationError(f"{name} must be > 0 and < 1 (TGI refuses 1: leave it out)")


def json_grammar(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema as TGI's JSON grammar takes it: an object with ``properties`` at its root
    (TGI's router refuses any other). A recursive model's schema, a reference at the root, is
    given its target in place, which the references inside still point at."""
    out = rooted_schema(schema, "the JSON grammar")
    if not isinstance(out.get("properties"), Mapping):
        raise ConfigurationError(
            "TGI's JSON grammar needs an object schema with properties at its root (TGI refuses "
            "any other): wrap the value in a model with one field"
        )
    return out


def _grammar(value: Any) -> dict[str, Any] | None:
    """A GrammarType: a dict as TGI spells it, or a pydantic model class (a JSON grammar)."""
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"type": "json", "value": json_grammar(value.model_json_schema())}
    if isinstance(value, Mapping):
        if value.get("type") not in GRAMMAR_TYPES or "value" not in value:
            raise ConfigurationError(
                "grammar needs 'type' (one of json, regex, json_schema) and 'value'"
            )
        if value["type"] == "regex" and not isinstance(value["value"], str):
            raise ConfigurationError("a regex grammar's value must be a string")
        if value["type"] == "json":
            if not isinstance(value["value"], Mapping):
                raise ConfigurationError("a json grammar's value must be a JSON schema dict")
            return {**value, "value": json_grammar(value["value"])}
        return dict(value)
    raise ConfigurationError("grammar must be a dict or a pydantic model class")


def _stop_list(stop: Any) -> list[str] | None:
    stops = check_stop(stop)
    if isinstance(stops, str):
        stops = [stops]
    if stops is not None and len(stops) > MAX_STOP_SEQUENCES:
        raise ConfigurationError(f"TGI takes at most {MAX_STOP_SEQUENCES} stop sequences")
    return stops


class GenerateParams(TypedDict, total=False):
    """The parameters of ``/generate`` and ``/generate_stream`` (TGI's ``GenerateParameters``),
    shared by ``generate`` and ``stream_generate``. Each is checked against TGI's published
    bounds before anything is sent, and sent only when given.

    ``max_new_tokens``: tokens to generate at most. ``temperature``, ``top_p`` (0 < p < 1),
    ``top_k``, ``typical_p`` (0 < p < 1): sampling; ``do_sample`` turns sampling on.
    ``repetition_penalty`` (> 0) and ``frequency_penalty`` (-2 to 2): penalties. ``stop``: up to
    4 stop sequences (one string is a list of one). ``seed``: for sampling. ``truncate``: keep
    only the last this many input tokens (at least 1). ``return_full_text``: prepend the prompt
    to the text. ``details``: the finish reason, tokens and logprobs; ``decoder_input_details``
    adds the prompt's tokens, ``top_n_tokens`` the likeliest alternatives of each token (0 for
    none). ``watermark``:
    watermark the output. ``grammar``: a GrammarType dict (``{"type": "json" | "regex" |
    "json_schema", "value": ...}``, the ``json_schema`` form since TGI 3.3) or a pydantic model
    class (a JSON grammar) constraining the output. ``adapter_id``: the LoRA adapter to use. ``extra_parameters``: merged last into the
    ``parameters`` object (one level; ``extra_body`` merges into the top of the body instead).
    """

    max_new_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    typical_p: float | None
    repetition_penalty: float | None
    frequency_penalty: float | None
    stop: str | Sequence[str] | None
    seed: int | None
    do_sample: bool | None
    truncate: int | None
    return_full_text: bool | None
    details: bool | None
    decoder_input_details: bool | None
    top_n_tokens: int | None
    watermark: bool | None
    grammar: Any
    adapter_id: str | None
    extra_parameters: Mapping[str, Any] | None


class StreamGenerateOptions(GenerateParams, BodyOptions, total=False):
    """``stream_generate``'s keyword arguments: the generation parameters and the call options."""


class GenerateOptions(StreamGenerateOptions, total=False):
    """``generate``'s keyword arguments: those of ``stream_generate`` plus ``best_of`` (generate
    this many sequences and return the likeliest; TGI refuses it on a stream)."""

    best_of: int | None


GENERATE_KEYS = keys_of(GenerateOptions)
STREAM_GENERATE_KEYS = keys_of(StreamGenerateOptions)
_FLAGS = ("do_sample", "return_full_text", "details", "decoder_input_details", "watermark")
# GenerateOptions' parameters in the order they are sent.
_PARAMS = (*GenerateParams.__annotations__, "best_of")


def _generate_body(inputs: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``/generate`` and ``/generate_stream``, every parameter checked."""
    if not isinstance(inputs, str) or not inputs:
        raise ConfigurationError("inputs must be a non-empty string")
    p = {key: params.get(key) for key in _PARAMS}
    extra_parameters = p.pop("extra_parameters")
    _check_int_below("max_new_tokens", p["max_new_tokens"], 0, 32)
    _check_positive("temperature", p["temperature"])
    _check_below_one("top_p", p["top_p"])
    _check_int_below("top_k", p["top_k"], 1, 31)
    _check_below_one("typical_p", p["typical_p"])
    _check_positive("repetition_penalty", p["repetition_penalty"])
    check_number("frequency_penalty", p["frequency_penalty"], -2, 2)
    _check_int_below("seed", p["seed"], 0, 64)  # the schema says > 0; the router takes 0
    _check_int_below("truncate", p["truncate"], 1, 64)
    _check_int_below("top_n_tokens", p["top_n_tokens"], 0, 32)
    _check_int_below("best_of", p["best_of"], 1, 64)
    for flag in _FLAGS:
        check_bool(flag, p[flag])
    check_str("adapter_id", p["adapter_id"])
    p["stop"] = _stop_list(p["stop"])
    p["grammar"] = _grammar(p["grammar"])
    wire = {k: v for k, v in p.items() if v is not None}
    if extra_parameters:
        if not isinstance(extra_parameters, Mapping):
            raise ConfigurationError("extra_parameters must be a mapping")
        wire.update(extra_parameters)
    body: dict[str, Any] = {"inputs": inputs}
    if wire:
        body["parameters"] = wire
    return body


def _final_token(payload: Any) -> bool:
    """TGI's native stream ends with the token that carries ``generated_text`` (and ``details``
    when asked for); a stream that stops before it was cut."""
    return isinstance(payload, Mapping) and (
        payload.get("generated_text") is not None or payload.get("details") is not None
    )


class TGI(OpenAIChat):
    """``TGI(base_url=..., api_key=...)``: base from ``TGI_BASE_URL`` (required: TGI is
    self-hosted or an Inference Endpoint), Bearer token from ``HF_TOKEN`` or ``HF_API_TOKEN``.

    Chat and stream_chat are OpenAI-shaped. TGI serves one model and ignores the name, so
    ``model`` defaults to "tgi". ``response_format`` (a pydantic model class or a JSON schema
    with properties at its root) is sent as TGI's JSON grammar and the answer parsed into
    ``parsed``; TGI takes no tools with it, nor a bare ``{"type": "json_object"}``.
    """

    backend: ClassVar[str] = "tgi"
    # The messages API lists ``n`` as unused: more would come back as one choice.
    multiple_choices: ClassVar[bool] = False
    base_url_env: ClassVar[tuple[str, ...]] = ("TGI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("HF_TOKEN", "HF_API_TOKEN")
    chat_path: ClassVar[str] = "/v1/chat/completions"
    models_path: ClassVar[str] = "/v1/models"

    def __init__(self, **options: Unpack[ClientOptions]) -> None:
        options.setdefault("model", "tgi")
        super().__init__(**options)

    # -- errors ----------------------------------------------------------------------------------

    def _error_info(self, payload: Any) -> ErrorInfo:
        """TGI's ``{"error", "error_type"}``: ``validation`` is an UnprocessableEntityError
        whatever the status, ``overloaded`` is retried unless the server says otherwise, and an
        error event in a 200 stream takes the status its ``error_type`` stands for."""
        info = super()._error_info(payload)
        etype = (info.type or "").lower()
        return info._replace(
            status=info.status if info.status is not None else ERROR_TYPE_STATUS.get(etype),
            kind=422 if etype == "validation" else info.kind,
            should_retry=(
                True if etype == "overloaded" and info.should_retry is None else info.should_retry
            ),
        )

    # -- chat: TGI's ChatRequest differs from OpenAI's in a few fields ----------------------------

    def _chat_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        stream: bool,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        body = super()._chat_body(messages, params, stream, fmt)
        if isinstance(body.get("stop"), str):
            body["stop"] = [body["stop"]]
        if "top_p" in body:
            _check_below_one("top_p", body["top_p"])
        if fmt is not None and "tools" in body:
            raise ConfigurationError(
                "TGI takes tools or response_format, not both (its grammar is either)"
            )
        return body

    def _response_format_body(self, fmt: OutputFormat) -> dict[str, Any]:
        """TGI's GrammarType ``{"type": "json", "value": schema}``, which every TGI 3 takes
        (``json_schema`` came in 3.3). The schema is sent as it is, not made strict: TGI's
        grammar compiler (outlines-core) keeps optional fields optional and reads open maps and
        length limits, which OpenAI's strict mode would drop."""
        if fmt.schema is None:
            raise ConfigurationError(
                "TGI cannot ask for any JSON object (its JSON grammar needs a schema with "
                "properties): give a pydantic model class or a JSON schema"
            )
        return {"response_format": {"type": "json", "value": json_grammar(fmt.schema)}}

    # -- the native API ---------------------------------------------------------------------------

    async def generate(self, inputs: str, **options: Unpack[GenerateOptions]) -> TGIGeneration:
        """Raw text completion of a prompt you templated yourself (no chat template applied).

        Use ``details=True`` for the finish reason, tokens and logprobs; ``grammar`` constrains
        the output. The parameters are those of ``GenerateParams``, plus ``best_of``.
        """

        def parse(payload: Any, meta: Meta) -> TGIGeneration:
            return from_json(
                TGIGeneration,
                payload,
                text=payload["generated_text"],
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
            )

        return await self._request(
            "generate",
            "POST",
            "/generate",
            parse,
            options,
            body=_generate_body(inputs, options),
            allowed=GENERATE_KEYS,
        )

    def stream_generate(
        self, inputs: str, **options: Unpack[StreamGenerateOptions]
    ) -> Stream[TGIStreamToken]:
        """``generate`` token by token (SSE), with the same parameters but ``best_of``. Retried
        only until the first token arrives; an error event after that raises the typed error
        for its ``error_type``, and a stream that ends before its final token (the one with
        ``generated_text``) raises APIConnectionError."""
        return self._stream(
            "stream_generate",
            "POST",
            "/generate_stream",
            lambda response, meta: self._decode_sse(
                response, meta, self._stream_token, _final_token
            ),
            options,
            body=_generate_body(inputs, options),
            allowed=STREAM_GENERATE_KEYS,
        )

    @staticmethod
    def _stream_token(payload: Any, meta: Meta) -> TGIStreamToken:
        return from_json(TGIStreamToken, payload, request_id=meta.request_id)

    async def info(self, **options: Unpack[HttpOptions]) -> TGIInfo:
        """The served model and the router's limits (max input/total tokens, stop sequences...)."""
        return await self._request("info", "GET", "/info", parse_as(TGIInfo), options)

    async def health(self, **options: Unpack[HttpOptions]) -> bool:
        """True when the model can serve, False when the server says it cannot (503); never
        retried. Connection and auth failures still raise. Runs at ``Priority.HIGH`` unless
        given another ``priority``."""
        return await self._probe("health", "/health", {"priority": Priority.HIGH, **options})

    async def tokenize(self, inputs: str, **options: Unpack[BodyOptions]) -> list[TGITokenSpan]:
        """How the served model's tokenizer splits ``inputs`` (404 if it has no fast tokenizer)."""
        if not isinstance(inputs, str) or not inputs:
            raise ConfigurationError("inputs must be a non-empty string")

        return await self._request(
            "tokenize", "POST", "/tokenize", _TOKEN_SPANS, options, body={"inputs": inputs}
        )
