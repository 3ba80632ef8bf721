"""The OpenAI wire format, for every backend that speaks it (OpenAI, Groq, vLLM, TGI, OVMS /v3...)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema
from pydantic_core import core_schema
from typing_extensions import Unpack

from .._exceptions import ConfigurationError
from .._http._backend import HttpBackend, Meta
from .._http._transport import Response
from .._models import (
    MODERN_KEYS,
    RARE,
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    GenerationParams,
    HasHttp,
    M,
    Message,
    Messages,
    ModelInfo,
    ModernParams,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    coerce_tools,
    empty_list,
    modern_params,
    normalize_messages,
    token_logprobs,
)
from .._options import BodyOptions, HttpOptions, check_keys, keys_of
from .._structured import OutputFormat, finish, output_format
from .._tools import ToolRunner
from .._validate import check_bool, check_int, check_number, check_stop, check_str, check_str_list
from ..streaming import ChatStream
from .parts import read_media, refuse

T = TypeVar("T")


class ChatParams(GenerationParams, ModernParams, total=False):
    """The parameters of an OpenAI-shaped chat call, shared by ``chat`` and ``stream_chat``.

    ``model`` defaults to the client's. The ``ModernParams`` (``max_completion_tokens``,
    ``parallel_tool_calls``, ``logprobs``, ``top_logprobs``, ``service_tier``, ``store``,
    ``metadata``, ``prompt_cache_key``) go out as OpenAI names them, on the servers that take
    them (each backend's docstring says which it refuses). ``tools``: functions, pydantic models, ``asyncllm.Tool``
    or OpenAI tool dicts. ``tool_choice``: "auto", "none", "required", a tool name or a dict.
    ``reasoning_effort`` ("minimal", "low", "medium", "high"...) for reasoning models.
    Anything else the server takes goes in ``extra_body``. (``response_format`` is a parameter
    of its own, so that ``parsed`` is typed by the model it names.)
    """

    tools: Sequence[Any] | None
    tool_choice: Any
    reasoning_effort: str | None
    user: str | None
    n: int | None


class ChatOptions(ChatParams, BodyOptions, total=False):
    """A chat call's keyword arguments: its parameters and the call options."""


class EmbedOptions(BodyOptions, total=False):
    """``model`` defaults to the client's; ``dimensions`` asks for shorter vectors."""

    model: str | None
    dimensions: int | None
    user: str | None


class CompletionParams(GenerationParams, total=False):
    """The parameters of an OpenAI-shaped ``/completions`` call (a raw prompt, no chat template).

    ``model`` defaults to the client's; ``n`` completions per prompt; ``echo`` puts the prompt
    before each completion. Anything else the server takes goes in ``extra_body`` (it has the
    last word over the fields built here).
    """

    n: int | None
    echo: bool | None


class CompletionOptions(CompletionParams, BodyOptions, total=False):
    """A completions call's keyword arguments: its parameters and the call options."""


CHAT_KEYS = keys_of(ChatOptions)
EMBED_KEYS = keys_of(EmbedOptions)
COMPLETION_KEYS = keys_of(CompletionOptions)


class CompletionChoice(BaseModel):
    """One completion; vLLM adds ``stop_reason`` (the stop string or token id that ended it)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    index: int = 0
    text: str
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class CompletionResponse(HasHttp, BaseModel):
    """A text completion; ``text`` is the first choice's."""

    model_config = RARE

    text: str
    choices: list[CompletionChoice]
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    request_id: str
    server_request_id: str | None = None
    raw: Any = None


class _WireFunction(BaseModel):
    name: str
    arguments: str = ""


class _WireCustom(BaseModel):
    name: str
    input: str = ""


class _WireToolCall(BaseModel):
    id: str
    type: str = "function"
    function: _WireFunction | None = None
    custom: _WireCustom | None = None


def _tool_calls(wire: list[_WireToolCall]) -> list[ToolCall] | None:
    return [_tool_call(c) for c in wire] or None


def _reply_message(_source: Any, _handler: Any) -> core_schema.CoreSchema:
    """The schema that reads an answer's wire message straight into the public ``Message``, in
    the one pydantic-core pass that validates the whole reply (no wire model, then a second
    pass building ``Message`` from it). It checks what the wire model checked: ``content`` text
    or null, ``role`` defaulting to "assistant", tool calls in the wire's shape (made
    ``ToolCall``s as they are read); ``tool_call_id`` and ``name`` are never read from a reply
    and extras (refusal, reasoning) are left out of the message, as before: the choice reads
    them from the raw message (``_WireChoice.said``)."""

    def optional(schema: core_schema.CoreSchema, alias: str | None = None) -> Any:
        nullable = core_schema.nullable_schema(schema)
        return core_schema.model_field(
            core_schema.with_default_schema(nullable, default=None), validation_alias=alias
        )

    calls = core_schema.no_info_after_validator_function(
        _tool_calls, core_schema.list_schema(_WireToolCall.__pydantic_core_schema__)
    )
    unread = "\x00"  # a key no JSON object from a server has: the field keeps its default
    fields = {
        "role": core_schema.model_field(
            core_schema.with_default_schema(core_schema.str_schema(), default="assistant")
        ),
        "content": optional(core_schema.str_schema()),
        "tool_calls": optional(calls),
        "tool_call_id": optional(core_schema.str_schema(), unread),
        "name": optional(core_schema.str_schema(), unread),
    }
    return core_schema.model_schema(
        Message,
        core_schema.model_fields_schema(fields, extra_behavior="ignore"),
        config={"extra_fields_behavior": "ignore"},
    )


def _one_pass_model(build: Callable[[], type[T]]) -> type[T]:
    """``build()``, with pydantic-core made to compile ``Message`` from the schema given rather
    than reuse the class's own validator (it reuses a complete model class's validator for any
    schema naming that class, which would read the wire's tool calls as ``ToolCall``s)."""
    Message.__pydantic_complete__ = False
    try:
        return build()
    finally:
        Message.__pydantic_complete__ = True


def _wire_chat() -> type[BaseModel]:
    class _WireChoice(BaseModel):
        index: int = 0
        message: Annotated[Any, GetPydanticSchema(_reply_message)]  # a Message
        # The same wire message, as it came: its refusal and reasoning are read from it, and only
        # for the first choice (a declared field would cost every answer a validation).
        said: Any = Field(validation_alias="message")
        finish_reason: str | None = None
        logprobs: Any = None  # parsed (token_logprobs) only when the answer has them

    class _WireChat(BaseModel):
        id: str | None = None
        model: str | None = None
        choices: list[_WireChoice] = Field(min_length=1)
        usage: Usage | None = None

    return _WireChat


_WireChat = _one_pass_model(_wire_chat)


class _WireCompletions(BaseModel):
    model_config = RARE

    id: str | None = None
    model: str | None = None
    choices: list[CompletionChoice] = Field(min_length=1)
    usage: Usage | None = None


class _WireDeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class _WireDeltaCustom(BaseModel):
    name: str | None = None
    input: str | None = None


class _WireDeltaToolCall(BaseModel):
    index: int = 0
    id: str | None = None
    function: _WireDeltaFunction | None = None
    custom: _WireDeltaCustom | None = None


class _WireDelta(BaseModel):
    model_config = ConfigDict(extra="allow")

    content: str | None = None
    tool_calls: list[_WireDeltaToolCall] | None = None
    # refusal and reasoning are read from the extras, as in _WireMessage: every chunk would
    # otherwise pay for three declared fields it almost never has.


class _WireChunkChoice(BaseModel):
    index: int = 0
    delta: _WireDelta = Field(default_factory=_WireDelta)
    finish_reason: str | None = None
    # logprobs are read from the payload itself, when a choice has them (see _chunk): a
    # declared field would cost every chunk a validation.


class _WireChunk(BaseModel):
    model: str | None = None
    choices: list[_WireChunkChoice] = Field(default_factory=empty_list)
    usage: Usage | None = None


class _WireEmbedding(BaseModel):
    model_config = RARE

    index: int
    embedding: list[float]


class _WireEmbeddings(BaseModel):
    model_config = RARE

    data: list[_WireEmbedding]
    model: str | None = None
    usage: Usage | None = None


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)

    id: str
    owned_by: str | None = None
    created: int | None = None


class _WireModels(BaseModel):
    model_config = RARE

    data: list[_WireModel]


class ChoiceEnds:
    """Whether an OpenAI-shaped stream is complete without ``[DONE]``: called with each chunk,
    True once every choice seen has had a ``finish_reason`` (a usage-only chunk after them
    changes nothing)."""

    __slots__ = ("_finished", "_seen")

    def __init__(self) -> None:
        self._seen: set[Any] = set()
        self._finished: set[Any] = set()

    def __call__(self, payload: Any) -> bool:
        choices = payload.get("choices") if isinstance(payload, Mapping) else None
        for position, choice in enumerate(choices if isinstance(choices, list) else ()):
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", position)
            key = index if isinstance(index, (int, str)) else position
            self._seen.add(key)
            if choice.get("finish_reason"):
                self._finished.add(key)
        return bool(self._seen) and self._seen <= self._finished


def _said_apart(said: Mapping[str, Any]) -> dict[str, str]:
    """A message's or delta's refusal and reasoning, from the wire's extra fields: the
    ``refusal`` OpenAI sends, and the reasoning DeepSeek and vLLM before 0.10 send as
    ``reasoning_content``, vLLM 0.10+ and Groq as ``reasoning``. Only those that are text."""
    out: dict[str, str] = {}
    refusal = said.get("refusal")
    if isinstance(refusal, str):
        out["refusal"] = refusal
    reasoning = said.get("reasoning_content") or said.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out["reasoning"] = reasoning
    return out


def _tool_call(wire: _WireToolCall) -> ToolCall:
    if wire.function is not None:
        return ToolCall(
            id=wire.id, name=wire.function.name, arguments=wire.function.arguments or "{}"
        )
    if wire.custom is not None:  # a custom tool's input is free text, not JSON
        return ToolCall(
            id=wire.id, name=wire.custom.name, arguments=wire.custom.input, type="custom"
        )
    raise ValueError(f"tool call {wire.id!r} has neither a function nor a custom tool")


# What the delta of an event that ``_plain_chunk`` reads may hold (the role is not kept).
_PLAIN_DELTA = frozenset({"content", "role"})


def _plain_chunk(payload: Any, meta: Meta) -> ChatChunk | None:
    """The chunk of the commonest event, without the wire models' pass: one choice, at index 0,
    whose delta holds text (or only a role), with no logprobs and no usage. Nearly every event
    of a stream is one, and validating it into ``_WireChunk`` first was a third of what a chunk
    cost. Any other event, or one whose values have other types, gives None: the wire models
    read it (and refuse what they refuse). The chunk is the one ``_choice_chunk`` makes of it
    (``tests/test_openai.py`` holds the two to agreeing)."""
    if type(payload) is not dict or payload.get("usage") is not None:
        return None
    choices = payload.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("logprobs") is not None:
        return None
    index = choice.get("index", 0)
    delta = choice.get("delta", _NO_DELTA)
    if (
        type(index) is not int
        or index
        or type(delta) is not dict
        or not delta.keys() <= _PLAIN_DELTA
    ):
        return None
    text = delta.get("content")
    finish = choice.get("finish_reason")
    model = payload.get("model")
    if (
        (text is not None and type(text) is not str)
        or (finish is not None and type(finish) is not str)
        or (model is not None and type(model) is not str)
    ):
        return None
    return ChatChunk(
        delta=text or "",
        finish_reason=finish,
        model=model,
        request_id=meta.request_id,
        raw=payload,
    )


_NO_DELTA: dict[str, Any] = {}


def _choice_chunk(
    choice: _WireChunkChoice,
    usage: Usage | None,
    model: str | None,
    meta: Meta,
    payload: Any,
    position: int = 0,
) -> ChatChunk:
    said = choice.delta
    calls: list[ToolCallDelta] = []
    if said.tool_calls:
        for c in said.tool_calls:
            if c.custom is not None:  # a custom tool's call: its input is free text
                piece = ToolCallDelta(
                    index=c.index,
                    id=c.id,
                    name=c.custom.name,
                    arguments=c.custom.input or "",
                    type="custom",
                )
            else:
                piece = ToolCallDelta(
                    index=c.index,
                    id=c.id,
                    name=c.function.name if c.function else None,
                    arguments=(c.function.arguments or "") if c.function else "",
                )
            calls.append(piece)
    # reasoning, refusal and the choice index only when the chunk has them (see _parse_chat).
    extra: dict[str, Any] = _said_apart(said.__pydantic_extra__) if said.__pydantic_extra__ else {}
    if choice.index:
        extra["index"] = choice.index
    # logprobs read from the payload's choice (at ``position``) when it has them: a declared
    # wire field would cost every chunk a validation.
    logprobs = payload["choices"][position].get("logprobs")
    if logprobs is not None:
        extra["logprobs"] = _logprobs(logprobs)
    return ChatChunk(
        delta=said.content or "",
        tool_calls=calls,
        finish_reason=choice.finish_reason,
        usage=usage,
        model=model,
        request_id=meta.request_id,
        raw=payload,
        **extra,
    )


SAMPLING_KEYS = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed", "n"})


def sampling_body(params: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling parameters chat and completions share, checked against OpenAI's bounds; only
    those given are checked and sent (the common call gives none, and pays six lookups)."""
    body: dict[str, Any] = {}
    get = params.get
    if (temperature := get("temperature")) is not None:
        check_number("temperature", temperature, 0, 2)
        body["temperature"] = temperature
    if (top_p := get("top_p")) is not None:
        check_number("top_p", top_p, 0, 1)
        body["top_p"] = top_p
    if (max_tokens := get("max_tokens")) is not None:
        check_int("max_tokens", max_tokens, 1)
        body["max_tokens"] = max_tokens
    if (stop := get("stop")) is not None:
        body["stop"] = check_stop(stop)
    if (seed := get("seed")) is not None:
        check_int("seed", seed)
        body["seed"] = seed
    if (n := get("n")) is not None:
        check_int("n", n, 1)
        body["n"] = n
    return body


def _logprobs(value: Any) -> list[Any] | None:
    """The tokens of a choice's ``logprobs`` (``{"content": [...]}``), parsed."""
    if not isinstance(value, Mapping):
        raise ValueError("a choice's logprobs must be an object")
    return token_logprobs(value.get("content"))


def tool_choice_body(value: Any) -> Any:
    if value in ("auto", "none", "required") or isinstance(value, Mapping):
        return value
    if isinstance(value, str):
        return {"type": "function", "function": {"name": value}}
    raise ConfigurationError(
        "tool_choice must be 'auto', 'none', 'required', a tool name or a dict"
    )


def embeddings_body(texts: list[str], options: Mapping[str, Any]) -> dict[str, Any]:
    """An embeddings body but its model: float vectors, and ``dimensions`` and ``user`` (both
    checked) only when given."""
    body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
    if (dimensions := options.get("dimensions")) is not None:
        check_int("dimensions", dimensions, 1)
        body["dimensions"] = dimensions
    if (user := options.get("user")) is not None:
        check_str("user", user)
        body["user"] = user
    return body


def embeddings_parser(count: int) -> Callable[[Any, Meta], EmbeddingResponse]:
    """The parser of an OpenAI embeddings answer to ``count`` inputs: vectors in input order, or
    an error when the indexes are not exactly 0..count-1."""

    def parse(payload: Any, meta: Meta) -> EmbeddingResponse:
        wire = _WireEmbeddings.model_validate(payload)
        ordered = sorted(wire.data, key=lambda d: d.index)
        if [d.index for d in ordered] != list(range(count)):
            raise ValueError(f"expected {count} embeddings indexed 0..{count - 1}")
        return EmbeddingResponse(
            vectors=[d.embedding for d in ordered],
            usage=wire.usage,
            model=wire.model,
            request_id=meta.request_id,
            raw=payload,
        )

    return parse


class OpenAIChat(HttpBackend, ToolRunner):
    """A client for a server that speaks OpenAI's chat and models routes (TGI's messages API:
    no embeddings route); ``OpenAICompatible`` adds embeddings."""

    backend: ClassVar[str] = "openai-compatible"
    server_request_id_header: ClassVar[str | None] = "x-request-id"
    # Ask for a usage chunk at the end of streams (``stream_options.include_usage``).
    stream_usage: ClassVar[bool] = True
    chat_path: ClassVar[str] = "/chat/completions"
    embeddings_path: ClassVar[str] = "/embeddings"
    models_path: ClassVar[str] = "/models"
    # The keyword arguments chat and stream_chat take (a backend with more extends ChatOptions).
    chat_keys: ClassVar[frozenset[str]] = CHAT_KEYS
    # A server that serves one model (say, an OPEA microservice) uses it when a request names
    # none: then a call without a model sends none, instead of raising.
    model_required: ClassVar[bool] = True
    # Whether the server holds a ``strict`` function tool's arguments to its schema (then
    # ``strict`` is sent); a server that cannot refuses such a tool with ConfigurationError.
    tool_strict: ClassVar[bool] = True
    # The vendor tools (``Tool.kind``) the server takes in ``tools`` beside functions: none on
    # an OpenAI-compatible server; OpenAI's own adds ``custom`` (and web search).
    builtin_tools: ClassVar[frozenset[str]] = frozenset()
    # The ModernParams the server's API cannot take: ConfigurationError before sending.
    refused_params: ClassVar[frozenset[str]] = frozenset()
    # The body field ``max_tokens`` goes out as, and ``max_completion_tokens``: the same limit,
    # under the name the server reads (OpenAI refuses max_tokens for its reasoning models; TGI
    # and OPEA know only max_tokens).
    max_tokens_field: ClassVar[str] = "max_tokens"
    max_completion_tokens_field: ClassVar[str] = "max_completion_tokens"
    # Whether streams carry logprobs (OVMS returns them only in whole answers).
    stream_logprobs: ClassVar[bool] = True
    # The media parts the server takes (``_wire.parts``): images, and on OpenAI files.
    media_parts: ClassVar[frozenset[str]] = frozenset({"image_url"})
    # Whether the server answers ``n`` > 1 with that many choices; one that does not (it
    # refuses, or ignores ``n``) makes ``n`` > 1 a ConfigurationError before anything is sent.
    multiple_choices: ClassVar[bool] = True

    def _with_model(self, body: dict[str, Any], model: str | None) -> dict[str, Any]:
        """``body`` with the call's model (or the client's) under "model"; without one, an error
        unless the server picks its own (``model_required = False``)."""
        if model is None and self.model is None and not self.model_required:
            return body
        body["model"] = self._model(model)
        return body

    def _response_format_body(self, fmt: OutputFormat) -> dict[str, Any]:
        """The body fields that ask for ``fmt``: OpenAI's ``response_format`` (a strict JSON
        schema for a model); a server with its own mechanism (vLLM, TGI) overrides this."""
        return {"response_format": fmt.openai()}

    def _chat_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        stream: bool,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        if not params.keys() <= self.chat_keys:  # a misspelt keyword first, before any check
            check_keys(params, self.chat_keys, "stream_chat" if stream else "chat")
        body = self._with_model({}, params.get("model"))
        body["messages"] = normalize_messages(
            messages, custom_calls="custom" in self.builtin_tools, media=self._check_media
        )
        if not SAMPLING_KEYS.isdisjoint(params):
            sampling = sampling_body(params)
            if "max_tokens" in sampling and self.max_tokens_field != "max_tokens":
                sampling[self.max_tokens_field] = sampling.pop("max_tokens")
            body.update(sampling)
            if body.get("n", 1) != 1 and not self.multiple_choices:
                raise ConfigurationError(f"{self.backend} gives one choice: n must be 1")
        if not MODERN_KEYS.isdisjoint(params):  # the common call: one set comparison
            body.update(self._modern_body(params, stream))
        get = params.get
        if (user := get("user")) is not None:
            check_str("user", user)
            body["user"] = user
        if fmt is not None:
            body.update(self._response_format_body(fmt))
        if (effort := get("reasoning_effort")) is not None:
            check_str("reasoning_effort", effort)
            body["reasoning_effort"] = effort
        if (tool_choice := get("tool_choice")) is not None:
            body["tool_choice"] = tool_choice_body(tool_choice)
        if (tools := get("tools")) is not None:
            coerced = coerce_tools(tools)
            if coerced:
                self._tools_body(coerced, body)
        if stream:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def _tools_body(self, tools: list[Tool], body: dict[str, Any]) -> None:
        """``tools`` into ``body``: functions (``strict`` where the server enforces it) and the
        vendor tools this server has (``builtin_tools``), each checked before anything is sent;
        a backend whose vendor tool is not a ``tools`` entry (OpenAI's web search) overrides
        ``_builtin_tool``."""
        entries = []
        for tool in tools:
            if tool.builtin is not None:
                if tool.kind not in self.builtin_tools:
                    has = ", ".join(sorted(self.builtin_tools)) or "none"
                    raise ConfigurationError(
                        f"{self.backend} has no built-in tool {tool.kind!r} (it has: {has})"
                    )
                entry = self._builtin_tool(tool, body)
                if entry is not None:
                    entries.append(entry)
                continue
            if tool.strict and not self.tool_strict:
                raise ConfigurationError(
                    f"{self.backend} cannot hold tool {tool.name!r} to its schema "
                    "(strict): drop strict=True"
                )
            entries.append(tool.to_openai())
        if entries:
            body["tools"] = entries

    def _builtin_tool(self, tool: Tool, body: dict[str, Any]) -> dict[str, Any] | None:
        """The ``tools`` entry of a vendor tool this server has, or None when it goes into
        ``body`` some other way."""
        return tool.to_openai()

    def _modern_body(self, params: Mapping[str, Any], stream: bool) -> dict[str, Any]:
        """The ``ModernParams`` given, checked, under the names this server reads."""
        body = modern_params(params, self.refused_params, self.backend)
        if stream and body.get("logprobs") and not self.stream_logprobs:
            raise ConfigurationError(
                f"{self.backend} returns no logprobs in streams: use chat() for them"
            )
        limit = body.pop("max_completion_tokens", None)
        if limit is not None:
            body[self.max_completion_tokens_field] = limit
        return body

    def _check_media(self, part: Mapping[str, Any], where: str) -> None:
        """An image or file part, checked, sent as it is if this server takes its kind (files
        only inline or by id: OpenAI's chat has no file URLs)."""
        media = read_media(part, where)
        if media.part_type not in self.media_parts:
            raise refuse(media, self.backend, where)
        if media.kind == "document" and media.url is not None:
            raise refuse(media, self.backend, where, " by URL: send file_data or file_id")

    def _parse_chat(self, payload: Any, meta: Meta) -> ChatResponse:
        wire: Any = _WireChat.model_validate(payload)
        if len(wire.choices) > 1:  # n > 1: in index order, as a stream's final() has them
            wire.choices.sort(key=lambda c: c.index)
        choices: list[Message] = [c.message for c in wire.choices]
        first = choices[0]
        # refusal and reasoning only when the answer has them: each field given costs a
        # validation on every call, and most answers have neither.
        extra: dict[str, Any] = _said_apart(wire.choices[0].said)
        if wire.choices[0].logprobs is not None:
            extra["logprobs"] = _logprobs(wire.choices[0].logprobs)
        return ChatResponse(
            text=first.content or "",
            message=first,
            tool_calls=first.tool_calls or [],
            finish_reason=wire.choices[0].finish_reason,
            usage=wire.usage,
            model=wire.model,
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
            choices=choices,
            raw=payload,
            **extra,
        )

    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: type[M],
        **options: Unpack[ChatOptions],
    ) -> ChatResponse[M]: ...
    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatResponse: ...
    async def chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> ChatResponse[Any]:
        """A chat completion. Raises a typed APIError subclass on failure (see ``asyncllm``).

        ``response_format``: a pydantic model class (sent as a strict JSON schema; the answer
        comes back validated in ``parsed``), a JSON schema dict, or one of OpenAI's
        ``response_format`` dicts (sent as it is)."""
        fmt = None if response_format is None else output_format(response_format)
        call = self._request(
            "chat",
            "POST",
            self.chat_path,
            self._parse_chat,
            options,
            body=self._chat_body(messages, options, False, fmt),
            allowed=self.chat_keys,
        )
        response: ChatResponse[Any] = await call
        return response if fmt is None else finish(response, fmt, self.name)

    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: type[M],
        **options: Unpack[ChatOptions],
    ) -> ChatStream[M]: ...
    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatStream: ...
    def stream_chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> ChatStream[Any]:
        """Chunks as the server sends them (SSE). Use ``async with`` or read to the end;
        ``await stream.final()`` gives the whole answer (``parsed`` with ``response_format``)."""
        fmt = None if response_format is None else output_format(response_format)
        return ChatStream(
            self._stream(
                "stream_chat",
                "POST",
                self.chat_path,
                lambda response, meta: self._decode_sse(
                    response, meta, self._chunk, more=self._other_choices
                ),
                options,
                body=self._chat_body(messages, options, True, fmt),
                allowed=self.chat_keys,
            ),
            fmt,
            self.name,
        )

    async def _decode_sse(
        self,
        response: Response,
        meta: Meta,
        parse: Callable[[Any, Meta], T],
        ended: Callable[[Any], bool] | None = None,
        more: Callable[[Any, Meta], list[T]] | None = None,
    ) -> AsyncIterator[T]:
        """The events of an SSE stream through ``parse``, up to ``[DONE]``; an event that is an
        error body raises the typed error it stands for.

        A body that ends without ``[DONE]`` is complete only if ``ended`` says so of the events
        seen (called with each payload, it answers whether the stream is complete as of that
        one); by default, when every choice seen has its ``finish_reason`` (some compatible
        servers never send ``[DONE]``). Otherwise the answer was cut: APIConnectionError.
        ``more`` gives the items of an event's later choices, asked only of an event (a JSON
        object, as ``parse`` has checked) with more than one."""
        if ended is None:
            ended = ChoiceEnds()
        complete = False
        async for event in self._sse(response):
            if event.data.strip() == "[DONE]":
                return
            payload = event.json()
            if isinstance(payload, Mapping) and "error" in payload:
                raise self._stream_error(payload, meta)
            item = self._parse(parse, payload, meta)
            complete = ended(payload)
            yield item
            if more is not None and len(payload.get("choices") or ()) > 1:
                for other in self._parse(more, payload, meta):
                    yield other
        if not complete:
            raise self._cut_short(meta, "data: [DONE]")

    @staticmethod
    def _chunk(payload: Any, meta: Meta) -> ChatChunk:
        """The chunk of an event's first choice (or of none: the usage chunk); the others, with
        ``n`` > 1, come from ``_other_choices``."""
        plain = _plain_chunk(payload, meta)
        if plain is not None:
            return plain
        wire = _WireChunk.model_validate(payload)
        if not wire.choices:
            return ChatChunk(
                usage=wire.usage, model=wire.model, request_id=meta.request_id, raw=payload
            )
        return _choice_chunk(wire.choices[0], wire.usage, wire.model, meta, payload)

    @staticmethod
    def _other_choices(payload: Any, meta: Meta) -> list[ChatChunk]:
        """The chunks of an event's choices after its first, for a server that sends several
        choices in one event (most send one an event)."""
        wire = _WireChunk.model_validate(payload)
        return [
            _choice_chunk(c, None, wire.model, meta, payload, position)
            for position, c in enumerate(wire.choices[1:], 1)
        ]

    async def models(self, **options: Unpack[HttpOptions]) -> list[ModelInfo]:
        """The models the server offers."""

        def parse(payload: Any, meta: Meta) -> list[ModelInfo]:
            wire = _WireModels.model_validate(payload)
            return [
                ModelInfo(id=m.id, owned_by=m.owned_by, created=m.created, raw=m.model_dump())
                for m in wire.data
            ]

        return await self._request("models", "GET", self.models_path, parse, options)


class OpenAICompatible(OpenAIChat):
    """A client for any server that speaks OpenAI's chat, embeddings and models routes."""

    async def embed(
        self, inputs: str | Sequence[str], **options: Unpack[EmbedOptions]
    ) -> EmbeddingResponse:
        """Embeddings of ``inputs``, returned in input order."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        body = self._with_model(embeddings_body(texts, options), options.get("model"))
        return await self._request(
            "embed",
            "POST",
            self.embeddings_path,
            embeddings_parser(len(texts)),
            options,
            body=body,
            allowed=EMBED_KEYS,
        )


class OpenAICompletions(OpenAICompatible):
    """An OpenAI-compatible server that also serves the ``/completions`` route (vLLM, OVMS).

    Each backend declares its own public ``completions`` (its prompt forms and parameters differ)
    on ``_complete``; one with more parameters extends ``_completion_body`` and
    ``completion_keys``."""

    completions_path: ClassVar[str] = "/completions"
    completion_keys: ClassVar[frozenset[str]] = COMPLETION_KEYS

    def _completion_body(
        self, prompt: str | list[str], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = self._with_model({}, params.get("model"))
        body["prompt"] = prompt
        body.update(sampling_body(params))
        if (echo := params.get("echo")) is not None:
            check_bool("echo", echo)
            body["echo"] = echo
        return body

    @staticmethod
    def _parse_completion(payload: Any, meta: Meta) -> CompletionResponse:
        wire = _WireCompletions.model_validate(payload)
        choices = sorted(wire.choices, key=lambda c: c.index)
        return CompletionResponse(
            text=choices[0].text,
            choices=choices,
            finish_reason=choices[0].finish_reason,
            usage=wire.usage,
            model=wire.model,
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
            raw=payload,
        )

    async def _complete(
        self, prompt: str | list[str], options: Mapping[str, Any]
    ) -> CompletionResponse:
        """A completion of ``prompt`` (already checked) with the call's ``options``."""
        return await self._request(
            "completions",
            "POST",
            self.completions_path,
            self._parse_completion,
            options,
            body=self._completion_body(prompt, options),
            allowed=self.completion_keys,
        )
