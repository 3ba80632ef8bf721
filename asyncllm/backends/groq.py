"""Groq: OpenAI-compatible under ``/openai/v1``, plus rate-limit headers on every answer.

Groq reports its limits on each response (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
and ``retry-after`` on a 429). They are read into ``GroqRateLimits``: on each chat response
(``GroqChatResponse.rate_limits``), on the client (``Groq.last_rate_limits``, the latest seen) and in the
dispatcher stats (``stats()[name].info["rate_limits"]``). Streams end with usage in ``x_groq.usage``.

Reasoning models (qwen3, gpt-oss) take ``reasoning_format`` ("parsed": the reasoning comes apart
in ``r.reasoning`` and ``chunk.reasoning``; "raw": inside ``<think>`` tags in the text, which Groq
refuses with JSON mode or tools; "hidden": not at all) or ``include_reasoning``, not both, and
``reasoning_effort``. ``response_format=Model`` is sent as a strict JSON schema, which Groq
enforces on the models that support strict mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, overload

from pydantic import BaseModel, ConfigDict
from typing_extensions import Unpack

from .._engine._backoff import parse_retry_after
from .._engine._dispatcher import Lane
from .._engine._ratelimit import GROQ_HEADERS, RateDialect, parse_duration
from .._exceptions import ConfigurationError
from .._http._backend import Meta
from .._models import ChatChunk, ChatResponse, M, Messages, P, Usage
from .._options import BodyOptions, ClientOptions, keys_of
from .._structured import OutputFormat
from .._validate import check_bool
from .._wire.openai import ChatParams, OpenAICompatible
from .._wire.responses_support import GROQ_RESPONSES, ResponsesSupport, ServesResponses
from ..streaming import ChatStream

if TYPE_CHECKING:
    from .._platform.openai import Audio

__all__ = [
    "GROQ_BASE_URL",
    "Groq",
    "GroqChatOptions",
    "GroqChatParams",
    "GroqChatResponse",
    "GroqRateLimits",
    "parse_duration",
]

GROQ_BASE_URL = "https://api.groq.com/openai/v1"
REASONING_FORMATS = ("parsed", "raw", "hidden")
_REASONING_KEYS = frozenset({"reasoning_format", "include_reasoning"})


class GroqChatParams(ChatParams, total=False):
    """The OpenAI chat parameters plus Groq's reasoning controls: ``reasoning_format``
    ("parsed", "raw" or "hidden") or ``include_reasoning`` (give one of them at most)."""

    reasoning_format: Literal["parsed", "raw", "hidden"] | None
    include_reasoning: bool | None


class GroqChatOptions(GroqChatParams, BodyOptions, total=False):
    """A Groq chat call's keyword arguments: its parameters and the call options."""


GROQ_CHAT_KEYS = keys_of(GroqChatOptions)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class GroqRateLimits(BaseModel):
    """Groq's limits as of one response. ``reset_*`` and ``retry_after`` are seconds from then.

    Groq's request limit is per day (RPD) and its token limit per minute (TPM).
    """

    model_config = ConfigDict(frozen=True)

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> GroqRateLimits | None:
        """The limits in ``headers``; None when the response carries none of them."""
        limits = cls(
            limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
            remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
            reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
            limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
            remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
            reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
            retry_after=parse_retry_after(headers),
        )
        return None if limits == cls() else limits


class GroqChatResponse(ChatResponse[P], Generic[P]):
    """A chat response with the rate limits Groq reported alongside it."""

    rate_limits: GroqRateLimits | None = None


class Groq(ServesResponses, OpenAICompatible):
    """``Groq(api_key=..., base_url=...)``: key from ``GROQ_API_KEY`` (required for Groq's own
    URL), base from ``GROQ_BASE_URL`` (default ``https://api.groq.com/openai/v1``).

    ``chat`` returns a ``GroqChatResponse``; ``last_rate_limits`` holds the latest limits seen.
    ``responses``: create and stream (structured output and built-in tools included), no stored
    state (``store``, ``previous_response_id``, ``background``, retrieve and the rest refused).

    ``tools`` takes, beside functions (``strict`` sent), the built-in tools of Groq's GPT-OSS
    models, ``{"type": "browser_search"}`` and ``{"type": "code_interpreter"}``, which Groq runs.
    ``max_tokens`` goes out as ``max_completion_tokens`` (Groq deprecated ``max_tokens``);
    ``parallel_tool_calls`` and ``service_tier`` are taken, while ``logprobs``,
    ``top_logprobs``, ``store``, ``metadata`` and ``prompt_cache_key``, which Groq documents as
    not supported, are a ConfigurationError. Images go as ``image_url`` parts (vision models);
    files are refused.
    """

    backend: ClassVar[str] = "groq"
    default_base_url: ClassVar[str | None] = GROQ_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("GROQ_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("GROQ_API_KEY",)
    # "Only n=1 is supported" (the API reference); more is a 400.
    multiple_choices: ClassVar[bool] = False
    api_key_required: ClassVar[bool] = True
    chat_keys: ClassVar[frozenset[str]] = GROQ_CHAT_KEYS
    responses_support: ClassVar[ResponsesSupport] = GROQ_RESPONSES
    builtin_tools: ClassVar[frozenset[str]] = frozenset({"browser_search", "code_interpreter"})
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    rate_dialect: ClassVar[RateDialect | None] = GROQ_HEADERS
    refused_params: ClassVar[frozenset[str]] = frozenset(
        {"logprobs", "top_logprobs", "store", "metadata", "prompt_cache_key"}
    )

    def __init__(self, **options: Unpack[ClientOptions]) -> None:
        self._rate_limits: GroqRateLimits | None = None
        super().__init__(**options)

    @property
    def last_rate_limits(self) -> GroqRateLimits | None:
        """The latest limits Groq reported to this client (or to the client it came from through
        ``with_options``). Not ``rate_limits``: that is the constructor's option, the budgets
        this client keeps itself (``asyncllm.RateLimits``)."""
        root = self._root
        assert isinstance(root, Groq)
        return root._rate_limits

    def _observe(self, status: int, headers: Mapping[str, str], lane: Lane) -> None:
        limits = GroqRateLimits.from_headers(headers)
        if limits is not None:
            root = self._root
            assert isinstance(root, Groq)
            root._rate_limits = limits
            lane.info["rate_limits"] = limits
            lane.info["rate_limits_at"] = lane.dispatcher.clock()

    def _chat_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        stream: bool,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        body = super()._chat_body(messages, params, stream, fmt)
        if _REASONING_KEYS.isdisjoint(params):  # the common call: one set comparison
            return body
        reasoning_format = params.get("reasoning_format")
        include = params.get("include_reasoning")
        if reasoning_format is not None and include is not None:
            raise ConfigurationError("give reasoning_format or include_reasoning, not both")
        if reasoning_format is not None:
            if reasoning_format not in REASONING_FORMATS:
                raise ConfigurationError(
                    f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}"
                )
            body["reasoning_format"] = reasoning_format
        if include is not None:
            check_bool("include_reasoning", include)
            body["include_reasoning"] = include
        return body

    if TYPE_CHECKING:
        # chat and stream_chat are OpenAICompatible's at run time (the body from _chat_body
        # above, the keys from chat_keys): re-declared for type checkers only, with Groq's
        # parameters and response type, so that a call costs no extra frame.

        @overload
        async def chat(
            self,
            messages: Messages,
            *,
            response_format: type[M],
            **options: Unpack[GroqChatOptions],
        ) -> GroqChatResponse[M]: ...
        @overload
        async def chat(
            self,
            messages: Messages,
            *,
            response_format: Mapping[str, Any] | None = None,
            **options: Unpack[GroqChatOptions],
        ) -> GroqChatResponse: ...
        async def chat(
            self,
            messages: Messages,
            *,
            response_format: Any = None,
            **options: Unpack[GroqChatOptions],
        ) -> GroqChatResponse[Any]: ...

        @overload
        def stream_chat(
            self,
            messages: Messages,
            *,
            response_format: type[M],
            **options: Unpack[GroqChatOptions],
        ) -> ChatStream[M]: ...
        @overload
        def stream_chat(
            self,
            messages: Messages,
            *,
            response_format: Mapping[str, Any] | None = None,
            **options: Unpack[GroqChatOptions],
        ) -> ChatStream: ...
        def stream_chat(
            self,
            messages: Messages,
            *,
            response_format: Any = None,
            **options: Unpack[GroqChatOptions],
        ) -> ChatStream[Any]: ...

    def _parse_chat(self, payload: Any, meta: Meta) -> GroqChatResponse:
        base = dict(super()._parse_chat(payload, meta))  # its fields, not copied
        return GroqChatResponse(**base, rate_limits=GroqRateLimits.from_headers(meta.headers))

    @staticmethod
    def _chunk(payload: Any, meta: Meta) -> ChatChunk:
        chunk = OpenAICompatible._chunk(payload, meta)
        if chunk.usage is None and isinstance(payload, Mapping):
            extra = payload.get("x_groq")
            if isinstance(extra, Mapping) and isinstance(extra.get("usage"), Mapping):
                chunk.usage = Usage.model_validate(extra["usage"])
        return chunk

    @property
    def audio(self) -> Audio:
        """Transcriptions and translations (``/audio/...``), the audio streamed up."""
        # loaded on first use: a program that only chats never needs it
        from .._platform.openai import Audio

        return Audio(self)
