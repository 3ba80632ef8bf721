"""vLLM: the OpenAI-compatible server under ``/v1`` plus vLLM's own routes at the server root.

Chat, streaming, embeddings and models are the OpenAI wire format. vLLM adds sampling extras
(``structured_outputs``, ``top_k``, ``min_p``, ``repetition_penalty``, and ``chat_template_kwargs``
on chat) as top-level body fields, ``/v1/completions``, and at the root (not under ``/v1``):
``/tokenize``, ``/detokenize``, ``/health``, ``/version``, ``/rerank`` and ``/score``.

``response_format`` is sent as ``structured_outputs: {"json": schema}``, vLLM's own mechanism. The
``guided_*`` fields vLLM took before 0.12 are refused: vLLM 0.12 dropped them and ignores them
(with a warning in its log only), so the output would come back unconstrained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast, overload

from pydantic import BaseModel, TypeAdapter
from typing_extensions import TypedDict, Unpack

from .._exceptions import ConfigurationError
from .._http import _json
from .._http._backend import Meta, _check_base_url
from .._models import (
    ChatResponse,
    M,
    Messages,
    OpenModel,
    Usage,
    from_json,
    normalize_messages,
    parse_as,
)
from .._options import BodyOptions, ClientOptions, HttpOptions, keys_of
from .._structured import OutputFormat
from .._validate import (
    check_bool,
    check_int,
    check_model,
    check_name,
    check_number,
    check_positive,
    check_str,
    check_str_list,
    given,
)
from .._wire.openai import ChatOptions, ChatParams, OpenAICompletions
from .._wire.openai import CompletionChoice as CompletionChoice  # vLLM's public names
from .._wire.openai import CompletionParams as OpenAICompletionParams
from .._wire.openai import CompletionResponse as CompletionResponse
from .._wire.responses_support import VLLM_RESPONSES, ResponsesSupport, ServesResponses
from ..streaming import ChatStream

if TYPE_CHECKING:
    from .._platform.openai import Audio

VLLM_BASE_URL = "http://localhost:8000/v1"


class TokenizeResponse(OpenModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class RerankDocument(OpenModel):
    text: str | None = None


class RerankResult(OpenModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    """Results best first; ``index`` points into the documents sent."""

    id: str | None = None
    model: str | None = None
    results: list[RerankResult]
    usage: Usage | None = None
    request_id: str
    raw: Any = None


class ScoreData(OpenModel):
    index: int
    score: float


class ScoreResponse(BaseModel):
    """``scores[i]`` is the score of pair ``i`` (sorted by the server's ``index``)."""

    scores: list[float]
    data: list[ScoreData]
    model: str | None = None
    usage: Usage | None = None
    request_id: str
    raw: Any = None


# A text field of vLLM's answer (/detokenize's "prompt", /version's "version"), checked as a str.
_TEXT = TypeAdapter(str)


class StructuredOutputs(TypedDict, total=False):
    """vLLM's ``structured_outputs``: exactly one constraint on the output.

    ``json``: a JSON schema (dict or JSON text) or a pydantic model class it must follow;
    ``regex``: a regular expression it must match; ``choice``: the strings it must be one of;
    ``grammar``: a context-free grammar (EBNF, as the server's structured-output backend reads
    it). For an answer parsed into a model, give ``response_format`` instead.
    """

    json: Any
    regex: str
    choice: Sequence[str]
    grammar: str


class SamplingParams(TypedDict, total=False):
    """vLLM's sampling extras, taken by ``chat``, ``stream_chat`` and ``completions`` and sent as
    top-level body fields (only those given).

    ``structured_outputs`` constrains the output (``StructuredOutputs``: one of ``json``,
    ``regex``, ``choice``, ``grammar``). ``top_k`` (-1 for all), ``min_p`` (0 to 1) and
    ``repetition_penalty`` (> 0, 1 for none) tune sampling.
    """

    structured_outputs: StructuredOutputs | None
    top_k: int | None
    min_p: float | None
    repetition_penalty: float | None


class VLLMChatParams(ChatParams, SamplingParams, total=False):
    """The OpenAI chat parameters plus vLLM's sampling extras and ``chat_template_kwargs``: the
    variables the model's chat template reads (``{"enable_thinking": True}`` turns on the
    reasoning of Qwen3-style models; it comes back in ``reasoning``)."""

    chat_template_kwargs: Mapping[str, Any] | None


class VLLMChatOptions(VLLMChatParams, BodyOptions, total=False):
    """A vLLM chat call's keyword arguments: its parameters and the call options."""


class CompletionParams(OpenAICompletionParams, SamplingParams, total=False):
    """The parameters of ``completions``: the OpenAI ones plus vLLM's sampling extras."""


class CompletionOptions(CompletionParams, BodyOptions, total=False):
    """A completions call's keyword arguments: its parameters and the call options."""


VLLM_CHAT_KEYS = keys_of(VLLMChatOptions)
COMPLETION_KEYS = keys_of(CompletionOptions)


def _one_or_many(name: str, value: Any) -> str | list[str]:
    """A string as is (the server takes one or many), or a non-empty list of strings."""
    return value if isinstance(value, str) else check_str_list(name, value, allow_str=True)


def _named_model(model: str | None) -> str | None:
    """The model a call names, checked; None sends none (vLLM's own routes then use the
    served model, not the client's)."""
    return None if model is None else check_model(model)


# The guided decoding fields vLLM removed in 0.12: it ignores them (a warning in its log), so
# the output would come back unconstrained. Refused, in the call's arguments and in extra_body.
REMOVED_FIELDS = (
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "guided_decoding_backend",
    "guided_whitespace_pattern",
)
_REMOVED = frozenset(REMOVED_FIELDS)
_CONSTRAINTS = ("json", "regex", "choice", "grammar")
_EXTRAS = frozenset({"structured_outputs", "top_k", "min_p", "repetition_penalty"})


def _refuse_removed(params: Mapping[str, Any]) -> None:
    """ConfigurationError for a ``guided_*`` field, given as an argument or in ``extra_body``."""
    removed = _REMOVED & params.keys()
    extra = params.get("extra_body")
    if isinstance(extra, Mapping):
        removed |= _REMOVED & extra.keys()
    if removed:
        name = min(removed)
        raise ConfigurationError(
            f"{name} was removed in vLLM 0.12, which ignores it (the output would not be "
            f"constrained): use structured_outputs={{{name.removeprefix('guided_')!r}: ...}} "
            "or response_format"
        )


def _schema(value: Any) -> Any:
    """A JSON schema as it is sent: a pydantic model class's schema, a dict, or JSON text."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            _json.loads(value)
        except (TypeError, ValueError) as exc:  # TypeError: a lone surrogate (pydantic-core)
            raise ConfigurationError("structured_outputs json text must be a JSON schema") from exc
        return value
    raise ConfigurationError(
        "structured_outputs json must be a JSON schema (dict or str) or a pydantic model class"
    )


def structured_outputs_body(value: Any) -> dict[str, Any]:
    """``structured_outputs`` checked as vLLM checks it (exactly one constraint), as sent."""
    if not isinstance(value, Mapping):
        raise ConfigurationError("structured_outputs must be a dict, such as {'regex': '...'}")
    unknown = sorted(set(value) - set(_CONSTRAINTS), key=str)
    if unknown:
        raise ConfigurationError(
            f"structured_outputs takes json, regex, choice or grammar, not {unknown[0]!r} "
            "(anything else vLLM takes goes in extra_body)"
        )
    kinds = [k for k in _CONSTRAINTS if value.get(k) is not None]
    if len(kinds) != 1:
        raise ConfigurationError(
            "structured_outputs takes exactly one of json, regex, choice, grammar"
            + (f" (got {', '.join(kinds)})" if kinds else "")
        )
    kind = kinds[0]
    item = value[kind]
    if kind == "json":
        item = _schema(item)
    elif kind == "choice":
        item = check_str_list("structured_outputs choice", item)
    else:
        check_name(f"structured_outputs {kind}", item)
    return {kind: item}


def _sampling_extras(params: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM's sampling fields in ``params``, checked, as top-level body fields (only those given)."""
    if _EXTRAS.isdisjoint(params):  # the common call gives none
        return {}
    get = params.get
    outputs = get("structured_outputs")
    check_int("top_k", get("top_k"), -1)
    check_number("min_p", get("min_p"), 0, 1)
    check_positive("repetition_penalty", get("repetition_penalty"))
    return given(
        structured_outputs=None if outputs is None else structured_outputs_body(outputs),
        top_k=get("top_k"),
        min_p=get("min_p"),
        repetition_penalty=get("repetition_penalty"),
    )


class VLLM(ServesResponses, OpenAICompletions):
    """``VLLM(base_url=..., api_key=..., root_url=...)``: base from ``VLLM_BASE_URL`` (default
    ``http://localhost:8000/v1``), optional key from ``VLLM_API_KEY``. vLLM's own routes go to
    ``root_url``: by default ``base_url`` without its trailing ``/v1`` (give it when a proxy
    serves them elsewhere).

    ``chat`` and ``stream_chat`` take vLLM's sampling extras (``SamplingParams``) and
    ``chat_template_kwargs`` besides the OpenAI parameters; ``response_format`` is sent as
    ``structured_outputs``. Every call takes the call options (``BodyOptions``, or
    ``HttpOptions`` on the GET routes).

    ``responses``: create, stream, retrieve and cancel; ``store``, ``previous_response_id`` and
    ``background`` work on a server started with ``VLLM_ENABLE_RESPONSES_API_STORE=1`` (without
    it vLLM ignores ``store`` and refuses ``background``). No delete, input items or counting.

    ``max_tokens`` and ``max_completion_tokens`` go out as given (vLLM takes both);
    ``parallel_tool_calls``, ``logprobs`` and ``top_logprobs`` are taken, while
    ``service_tier``, ``store``, ``metadata`` and ``prompt_cache_key``, which vLLM would ignore,
    are a ConfigurationError. Images go as ``image_url`` parts (multimodal models); files are
    refused.
    """

    backend: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str | None] = VLLM_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("VLLM_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("VLLM_API_KEY",)
    chat_keys: ClassVar[frozenset[str]] = VLLM_CHAT_KEYS
    completion_keys: ClassVar[frozenset[str]] = COMPLETION_KEYS
    responses_support: ClassVar[ResponsesSupport] = VLLM_RESPONSES
    refused_params: ClassVar[frozenset[str]] = frozenset(
        {"service_tier", "store", "metadata", "prompt_cache_key"}
    )

    def __init__(self, *, root_url: str | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(**options)
        served_at = self.base_url.removesuffix("/v1")
        self.root_url = served_at if root_url is None else _check_base_url(root_url)

    def _at_root(self, path: str) -> str:
        return self.root_url + path

    # -- OpenAI routes with vLLM's sampling extras --------------------------------------------

    def _chat_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        stream: bool,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        if not params.keys() <= self.chat_keys or "extra_body" in params:
            _refuse_removed(params)
        body = super()._chat_body(messages, params, stream, fmt)
        extras = _sampling_extras(params)
        if "structured_outputs" in extras and fmt is not None:
            raise ConfigurationError("give response_format or structured_outputs, not both")
        body.update(extras)
        if (kwargs := params.get("chat_template_kwargs")) is not None:
            if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
                raise ConfigurationError("chat_template_kwargs must be a dict with string keys")
            body["chat_template_kwargs"] = dict(kwargs)
        return body

    def _response_format_body(self, fmt: OutputFormat) -> dict[str, Any]:
        """vLLM's own mechanism: ``structured_outputs`` with the schema as given (vLLM's
        grammar backends take open maps and every keyword OpenAI's strict mode refuses), or
        ``json_object`` for any JSON object."""
        if fmt.schema is None:
            return {"structured_outputs": {"json_object": True}}
        return {"structured_outputs": {"json": fmt.schema}}

    def _completion_body(
        self, prompt: str | list[str], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        if not params.keys() <= self.completion_keys or "extra_body" in params:
            _refuse_removed(params)
        body = super()._completion_body(prompt, params)
        body.update(_sampling_extras(params))
        return body

    # chat and stream_chat are OpenAICompatible's (the body comes from _chat_body above, the
    # allowed keys from chat_keys); they are re-declared only so that type checkers know the
    # sampling extras.

    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: type[M],
        **options: Unpack[VLLMChatOptions],
    ) -> ChatResponse[M]: ...
    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[VLLMChatOptions],
    ) -> ChatResponse: ...
    async def chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[VLLMChatOptions]
    ) -> ChatResponse[Any]:
        """A chat completion. ``response_format`` (a pydantic model class or a JSON schema) is
        sent as ``structured_outputs`` and the answer parsed into ``parsed``;
        ``structured_outputs`` constrains the output without parsing it; ``top_k``, ``min_p`` and
        ``repetition_penalty`` tune sampling (see ``SamplingParams``). The reasoning of a model
        served with a reasoning parser is in ``reasoning``."""
        return await super().chat(
            messages, response_format=response_format, **cast(ChatOptions, options)
        )

    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: type[M],
        **options: Unpack[VLLMChatOptions],
    ) -> ChatStream[M]: ...
    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[VLLMChatOptions],
    ) -> ChatStream: ...
    def stream_chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[VLLMChatOptions]
    ) -> ChatStream[Any]:
        """Chunks as they arrive (SSE), with the same parameters as ``chat``; reasoning arrives
        in ``chunk.reasoning``, and ``await stream.final()`` gives the whole answer."""
        return super().stream_chat(
            messages, response_format=response_format, **cast(ChatOptions, options)
        )

    async def completions(
        self, prompt: str | Sequence[str], **options: Unpack[CompletionOptions]
    ) -> CompletionResponse:
        """A raw-prompt completion (``/v1/completions``): for base models and prompts you have
        already formatted with the chat template. ``prompt`` may be a list: the choices then
        come prompt by prompt, ``n`` each."""
        return await self._complete(_one_or_many("prompt", prompt), options)

    # -- vLLM's own routes, at the server root -----------------------------------------------------

    async def tokenize(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        model: str | None = None,
        add_special_tokens: bool | None = None,
        add_generation_prompt: bool | None = None,
        return_token_strs: bool | None = None,
        **options: Unpack[BodyOptions],
    ) -> TokenizeResponse:
        """Token ids of a ``prompt`` or of chat ``messages`` (rendered with the server's chat
        template): to count tokens or check a prompt against ``max_model_len``.
        ``add_generation_prompt`` applies to ``messages`` only; ``return_token_strs`` asks for
        the token texts as well."""
        if (prompt is None) == (messages is None):
            raise ConfigurationError("give exactly one of prompt or messages")
        check_bool("add_special_tokens", add_special_tokens)
        check_bool("add_generation_prompt", add_generation_prompt)
        check_bool("return_token_strs", return_token_strs)
        model = _named_model(model)
        check_str("prompt", prompt)
        body = given(
            model=model,
            prompt=prompt,
            messages=None if messages is None else normalize_messages(messages),
            add_generation_prompt=None if messages is None else add_generation_prompt,
            add_special_tokens=add_special_tokens,
            return_token_strs=return_token_strs,
        )
        return await self._request(
            "tokenize",
            "POST",
            self._at_root("/tokenize"),
            parse_as(TokenizeResponse),
            options,
            body=body,
        )

    async def detokenize(
        self, tokens: Sequence[int], *, model: str | None = None, **options: Unpack[BodyOptions]
    ) -> str:
        """The text of token ids, as the server's tokenizer decodes them."""
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
            raise ConfigurationError("tokens must be a list of ints")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
            raise ConfigurationError("tokens must be a list of non-negative ints")
        body = given(tokens=list(tokens), model=_named_model(model))
        return await self._request(
            "detokenize",
            "POST",
            self._at_root("/detokenize"),
            lambda payload, meta: _TEXT.validate_python(payload["prompt"]),
            options,
            body=body,
        )

    async def health(self, **options: Unpack[HttpOptions]) -> bool:
        """True when the server answers ``/health`` with 200, False when it answers that the
        engine is down; never retried. Connection and auth failures raise."""
        return await self._probe("health", self._at_root("/health"), options)

    async def version(self, **options: Unpack[HttpOptions]) -> str:
        """The vLLM version the server runs (say, to gate features)."""
        return await self._request(
            "version",
            "GET",
            self._at_root("/version"),
            lambda payload, meta: _TEXT.validate_python(payload["version"]),
            options,
        )

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        **options: Unpack[BodyOptions],
    ) -> RerankResponse:
        """Documents ordered by relevance to ``query`` (a cross-encoder/reranker model);
        ``top_n`` keeps the best n."""
        if not isinstance(query, str):
            raise ConfigurationError("query must be a string")
        docs = check_str_list("documents", documents)
        check_int("top_n", top_n, 1)
        body = given(query=query, documents=docs, model=_named_model(model), top_n=top_n)
        count = len(docs)

        def parse(payload: Any, meta: Meta) -> RerankResponse:
            response = from_json(RerankResponse, payload, request_id=meta.request_id)
            if any(not 0 <= r.index < count for r in response.results):
                raise ValueError(f"rerank result index outside 0..{count - 1}")
            response.results.sort(key=lambda r: -r.relevance_score)
            return response

        return await self._request(
            "rerank", "POST", self._at_root("/rerank"), parse, options, body=body
        )

    async def score(
        self,
        text_1: str | Sequence[str],
        text_2: str | Sequence[str],
        *,
        model: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> ScoreResponse:
        """Similarity scores of text pairs: one against one, one against many, or pairwise
        (two lists of the same length)."""
        first = _one_or_many("text_1", text_1)
        second = _one_or_many("text_2", text_2)
        n1 = len(first) if isinstance(first, list) else 1
        pairs = len(second) if isinstance(second, list) else 1
        if n1 > 1 and n1 != pairs:
            raise ConfigurationError("a text_1 list longer than 1 needs a text_2 of equal length")
        body = given(text_1=first, text_2=second, model=_named_model(model))

        def parse(payload: Any, meta: Meta) -> ScoreResponse:
            # ``scores`` is not on the wire: it is read from ``data`` once that is sorted.
            response = from_json(ScoreResponse, payload, request_id=meta.request_id, scores=[])
            data = response.data
            data.sort(key=lambda d: d.index)
            if [d.index for d in data] != list(range(pairs)):
                raise ValueError(f"expected {pairs} scores indexed 0..{pairs - 1}")
            if not all(math.isfinite(d.score) for d in data):
                raise ValueError("score is not a finite number")
            response.scores = [d.score for d in data]
            return response

        return await self._request(
            "score", "POST", self._at_root("/score"), parse, options, body=body
        )

    @property
    def audio(self) -> Audio:
        """Transcriptions and translations (``/audio/...``), the audio streamed up."""
        # loaded on first use: a program that only chats never needs it
        from .._platform.openai import Audio

        return Audio(self)
