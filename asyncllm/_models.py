"""Types every chat backend returns, and the one tool format every chat backend accepts.

Messages travel in the common (OpenAI-style) form: ``{"role", "content", "tool_calls",
"tool_call_id", "name"}``; each backend translates to and from its own wire form.
"""

from __future__ import annotations

import inspect
import json
import logging
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, NamedTuple, Union, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict, TypeVar

from ._exceptions import ConfigurationError, ResponseValidationError
from ._http import _json
from ._structured import strict_schema
from ._validate import check_bool, check_int, check_metadata, check_name, check_str
from ._wire.parts import MEDIA_PARTS

M = TypeVar("M", bound=BaseModel)
# What ``ChatResponse.parsed`` holds: for type checkers only, never parametrized at run time.
P = TypeVar("P", default=Any)
T = TypeVar("T")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# What a chat call takes as ``messages``: common-form dicts, or pydantic models of them.
Messages = Sequence[Mapping[str, Any] | BaseModel]


class GenerationParams(TypedDict, total=False):
    """The parameters chat and completion calls share by name (OpenAI's, Gemini's, Ollama's):
    ``model`` (the client's by default), ``temperature``, ``top_p``, ``max_tokens``, ``stop``
    and ``seed``. Each backend checks them against its own bounds, which its docstring gives."""

    model: str | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: str | Sequence[str] | None
    seed: int | None


class ModernParams(TypedDict, total=False):
    """The newer chat parameters every chat backend declares, so that a call reads the same on
    each; a backend whose API has no counterpart for one raises ConfigurationError before
    sending (its docstring and the README's feature table say which).

    ``max_completion_tokens``: the output limit, reasoning included (give it or ``max_tokens``,
    which means the same here, not both). ``parallel_tool_calls``: False asks for one tool call
    at most per turn. ``logprobs`` and ``top_logprobs`` (0 to 20, with ``logprobs=True``): the
    answer's token log probabilities, parsed into ``ChatResponse.logprobs`` and
    ``ChatChunk.logprobs``. ``service_tier``: the vendor's processing tier ("auto", "flex"...).
    ``store`` and ``metadata`` (string keys and values): keep the completion, tagged, on the
    vendor's side. ``prompt_cache_key``: groups requests that share a prompt prefix for caching.
    """

    max_completion_tokens: int | None
    parallel_tool_calls: bool | None
    logprobs: bool | None
    top_logprobs: int | None
    service_tier: str | None
    store: bool | None
    metadata: Mapping[str, str] | None
    prompt_cache_key: str | None


MODERN_KEYS: frozenset[str] = frozenset(ModernParams.__optional_keys__)


def modern_params(
    params: Mapping[str, Any], refused: frozenset[str], backend: str
) -> dict[str, Any]:
    """The ``ModernParams`` given in ``params`` (None means not given), checked: a parameter in
    ``refused`` (what the backend's API cannot take) is a ConfigurationError naming it and the
    backend. Called only when a call gives one of them, so a plain call pays nothing."""
    out = {k: params[k] for k in MODERN_KEYS & params.keys() if params[k] is not None}
    refuse = sorted(refused & out.keys())
    if refuse:
        raise ConfigurationError(
            f"{backend} cannot take {', '.join(refuse)}: its API has no such parameter "
            "(see the README's feature table)"
        )
    get = out.get
    check_int("max_completion_tokens", get("max_completion_tokens"), 1)
    if "max_completion_tokens" in out and params.get("max_tokens") is not None:
        raise ConfigurationError("give max_tokens or max_completion_tokens, not both")
    check_bool("parallel_tool_calls", get("parallel_tool_calls"))
    check_bool("logprobs", get("logprobs"))
    top = get("top_logprobs")
    check_int("top_logprobs", top, 0)
    if top is not None:
        if top > MAX_TOP_LOGPROBS:
            raise ConfigurationError(f"top_logprobs must be <= {MAX_TOP_LOGPROBS}")
        if get("logprobs") is not True:
            raise ConfigurationError("top_logprobs needs logprobs=True")
    check_name("service_tier", get("service_tier"))
    check_bool("store", get("store"))
    check_name("prompt_cache_key", get("prompt_cache_key"))
    metadata = get("metadata")
    if metadata is not None:
        out["metadata"] = check_metadata(metadata)
    return out


# OpenAI's bound on top_logprobs, which the other APIs that take it share or exceed.
MAX_TOP_LOGPROBS = 20


def empty_list() -> list[Any]:
    """``default_factory`` for a list field. Not ``list`` itself: pydantic reads a factory's
    signature, and a builtin's is parsed from text, which compiles the tokenizer's regexes the
    first time (about 10 ms of ``import asyncllm``)."""
    return []


# The config of a model only a rare call reads (embeddings, the model list, text completions):
# pydantic builds its validator on first use instead of at import, about half of what the model
# costs there (measured in benchmarks/RESULTS.md, "Imports"); validation is the same.
RARE = ConfigDict(defer_build=True)


class OpenModel(BaseModel):
    """A server's object: the fields a model declares are checked, any others it sends are kept
    (a newer server's additions stay readable as attributes and in ``model_dump()``)."""

    model_config = ConfigDict(extra="allow")


class Usage(OpenModel):
    """Token counts, with one meaning on every backend: ``prompt_tokens`` includes the tokens
    read from (or written to) a prompt cache, ``completion_tokens`` includes reasoning tokens.
    Backends keep their own counts (durations, Claude's cache reads and writes, Gemini's
    thoughts) as extra fields."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    # Read on access, from the extras: a declared field would cost every answer a validation.
    @property
    def cached_tokens(self) -> int | None:
        """Prompt tokens read from the server's prompt cache (part of ``prompt_tokens``), where
        the API reports them: OpenAI-shaped ``prompt_tokens_details``, Claude's
        ``cache_read_input_tokens``, Gemini's ``cachedContentTokenCount``; None otherwise."""
        return _count(self.__pydantic_extra__, "cached_tokens", "prompt_tokens_details")

    @property
    def reasoning_tokens(self) -> int | None:
        """Completion tokens the model spent reasoning (part of ``completion_tokens``), where the
        API reports them: OpenAI-shaped ``completion_tokens_details``, Gemini's
        ``thoughtsTokenCount``; None otherwise."""
        return _count(self.__pydantic_extra__, "reasoning_tokens", "completion_tokens_details")


def _count(extra: dict[str, Any] | None, name: str, details: str) -> int | None:
    """A count a backend set as an extra ``name``, or that the OpenAI shape nests in
    ``details``."""
    if not extra:
        return None
    value = extra.get(name)
    if value is None:
        nested = extra.get(details)
        value = nested.get(name) if isinstance(nested, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class HttpInfo(NamedTuple):
    """The HTTP status and headers of the response a call's answer came from (for a stream, the
    one its chunks are read from): ``r.http.status``, ``r.http.headers["x-ratelimit-..."]``.

    ``headers`` is the response's own case-insensitive mapping, not a copy."""

    status: int
    headers: Mapping[str, str]


# Where an answer keeps what ``http`` is built from: a key of the instance's ``__dict__`` and
# no field, so an answer pays one store for it, and pydantic leaves it out of dumps,
# comparisons and ``repr`` (as it does a ``cached_property``'s value).
HTTP_KEY = "_http"
BACKEND_KEY = "_backend"


class HasHttp:
    """An answer that read from an HTTP response: ``http`` gives its status and headers."""

    __slots__ = ()

    @property
    def http(self) -> HttpInfo | None:
        """The status and headers of the HTTP response this came from; None for an answer built
        otherwise (say, by hand in a test)."""
        source = self.__dict__.get(HTTP_KEY)
        return None if source is None else HttpInfo(source.status, source.headers)

    @property
    def backend(self) -> str | None:
        """The name of the pool member that answered (``asyncllm.Pool``); None for an answer
        from a client called directly, which is the one you called."""
        name: str | None = self.__dict__.get(BACKEND_KEY)
        return name


def keep_backend(answer: Any, name: str) -> None:
    """Say on ``answer`` (a ``HasHttp``) which pool member answered it (``answer.backend``)."""
    answer.__dict__[BACKEND_KEY] = name


def keep_http(answer: Any, source: Any) -> None:
    """Let ``answer`` (a ``HasHttp``) give ``source``'s status and headers (anything with
    ``status`` and ``headers``: the call's metadata, another answer's ``HttpInfo``) as
    ``answer.http``, read only when asked for."""
    answer.__dict__[HTTP_KEY] = source


class TopLogprob(OpenModel):
    """One candidate token at a position, with its log probability; ``bytes`` is its UTF-8
    encoding where the API gives it (a token may be part of a character)."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A token of the answer, with its log probability and the most likely alternatives at
    its position (as many as ``top_logprobs`` asked for, or fewer)."""

    top_logprobs: list[TopLogprob] = Field(default_factory=empty_list)


class ToolCall(BaseModel):
    """A model's request to run a tool. ``arguments`` is the JSON text the model produced; for a
    call of an OpenAI ``custom`` tool (``type="custom"``), the free text it wrote as the input."""

    id: str
    name: str
    arguments: str = "{}"
    type: Literal["function", "custom"] = "function"

    def args(self) -> dict[str, Any]:
        """The arguments parsed; a model that produced invalid JSON raises ResponseValidationError."""
        try:
            value = _json.loads(self.arguments or "{}")
        except ValueError as exc:
            raise ResponseValidationError(
                f"tool call {self.name!r} has arguments that are not JSON", body=self.arguments
            ) from exc
        if not isinstance(value, dict):
            raise ResponseValidationError(
                f"tool call {self.name!r} arguments are not a JSON object", body=self.arguments
            )
        return value

    def to_openai(self) -> dict[str, Any]:
        if self.type == "custom":
            return {
                "id": self.id,
                "type": "custom",
                "custom": {"name": self.name, "input": self.arguments},
            }
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


class Message(OpenModel):
    """A message in the common form."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True, exclude={"tool_calls"})
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return out


class ChatResponse(HasHttp, BaseModel, Generic[P]):
    """One chat completion. ``text``, ``message``, ``tool_calls`` and ``finish_reason`` are the
    first choice's; ``choices`` holds every choice's message, in index order (more than one
    with ``n`` > 1), streamed or not.

    With ``response_format``, ``parsed`` is the answer validated into the model (or the decoded
    JSON for a schema dict), None when the model refused (``refusal`` says why) or only called
    tools. ``reasoning`` is the model's reasoning text, where the API returns it; what a backend
    needs to send it back in the next turn (Claude's signed thinking blocks, Gemini's thought
    signatures) stays on ``message``. ``logprobs``: the first choice's tokens with their log
    probabilities, when the call asked for them (``logprobs=True``) and the API returns them.
    """

    text: str
    message: Message
    tool_calls: list[ToolCall] = Field(default_factory=empty_list)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    request_id: str
    server_request_id: str | None = None
    choices: list[Message] = Field(default_factory=empty_list)
    parsed: P | None = None
    refusal: str | None = None
    reasoning: str | None = None
    logprobs: list[TokenLogprob] | None = None
    raw: Any = None


class ToolCallDelta(BaseModel):
    """A piece of a tool call as it streams in; pieces with the same ``index`` belong together.
    ``type`` is "custom" on the first piece of a call of an OpenAI custom tool (whose
    ``arguments`` are then pieces of its free-text input)."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: Literal["function", "custom"] | None = None


class ChatChunk(BaseModel):
    """A piece of a streamed answer: text, reasoning and refusal deltas, tool-call pieces; the
    last carries ``finish_reason`` and ``usage``. ``index`` is the choice it belongs to (0 but
    with ``n`` > 1). ``message_extra``, on the last chunk where a backend has any, is what it
    keeps on the final message to send back (signed thinking).
    ``logprobs``: the log probabilities of this chunk's tokens, when the call asked for them."""

    index: int = 0
    delta: str = ""
    reasoning: str = ""
    refusal: str = ""
    tool_calls: list[ToolCallDelta] = Field(default_factory=empty_list)
    message_extra: dict[str, Any] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    logprobs: list[TokenLogprob] | None = None
    request_id: str
    raw: Any = None


class EmbeddingResponse(HasHttp, BaseModel):
    """Vectors in the order of the inputs."""

    model_config = RARE

    vectors: list[list[float]]
    usage: Usage | None = None
    model: str | None = None
    request_id: str
    raw: Any = None


class ModelInfo(OpenModel):
    model_config = RARE

    id: str
    owned_by: str | None = None
    created: int | None = None
    raw: Any = None


_TOKEN_LOGPROBS = TypeAdapter(list[TokenLogprob])


def token_logprobs(items: Any) -> list[TokenLogprob] | None:
    """Token log probabilities from a list in OpenAI's shape (``{"token", "logprob", "bytes",
    "top_logprobs"}``, which Ollama and TGI share); None for none. Anything else is an invalid
    answer (a pydantic error, which the caller's parse turns into ResponseValidationError)."""
    return None if items is None else _TOKEN_LOGPROBS.validate_python(items)


def from_json(model: type[M], payload: Any, /, **fields: Any) -> M:
    """``model`` read straight from a server's JSON object, which it keeps whole as ``raw``;
    ``fields`` add what the object does not hold (say, ``request_id``)."""
    return model.model_validate({**payload, **fields, "raw": payload})


@overload
def parse_as(model: type[M]) -> Callable[[Any, object], M]: ...
@overload
def parse_as(model: TypeAdapter[T]) -> Callable[[Any, object], T]: ...
def parse_as(model: Any) -> Callable[[Any, object], Any]:
    """A ``parse`` hook that reads the whole JSON body as ``model`` (a pydantic model class or a
    ``TypeAdapter``); the call's metadata is not needed."""
    validate = model.validate_python if isinstance(model, TypeAdapter) else model.model_validate
    return lambda payload, meta: validate(payload)


class Tool(BaseModel):
    """A tool the model may call: a name, a description and a JSON schema of its parameters.

    ``Tool.coerce`` also takes an OpenAI-style dict, a pydantic model class or a plain function
    (its signature and docstring become the schema and description).

    ``strict=True`` asks the server to hold the model's arguments to the schema; a backend that
    cannot enforce it raises ``ConfigurationError`` rather than drop it. ``builtin`` is a
    vendor's own tool entry (OpenAI's ``custom`` tools and web search, Claude's server tools,
    Gemini's ``googleSearch``...), sent as it is by the backend that has it; any other backend
    raises ``ConfigurationError`` naming it (``kind``).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    builtin: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        """What the tool is: "function", or a vendor tool's type (``web_search_20250305``,
        ``custom``) or key (Gemini's ``googleSearch``), which backends check it by."""
        if self.builtin is None:
            return "function"
        kind = self.builtin.get("type")
        return kind if isinstance(kind, str) else next(iter(self.builtin), "builtin")

    @classmethod
    def coerce(cls, value: Any) -> Tool:
        if isinstance(value, Tool):
            return value
        if isinstance(value, Mapping):
            return cls._from_dict(value)
        if isinstance(value, type) and issubclass(value, BaseModel):
            schema = value.model_json_schema()
            schema.pop("title", None)
            return cls(
                name=value.__name__,
                description=inspect.cleandoc(value.__doc__ or ""),
                parameters=schema,
            )
        if callable(value):
            return cls.from_function(value)
        raise ConfigurationError(f"cannot make a tool from {type(value).__name__}")

    @classmethod
    def _from_dict(cls, value: Mapping[str, Any]) -> Tool:
        kind = value.get("type")
        if kind is None and "function" in value:  # OpenAI's form without its type
            kind = "function"
        if kind is None and "name" not in value and len(value) == 1:
            key = next(iter(value))  # Gemini's form: {"googleSearch": {}}
            if not isinstance(key, str) or not isinstance(value[key], Mapping):
                raise ConfigurationError("a built-in tool dict must be {name: {settings}}")
            return cls(name=key, builtin=dict(value))
        if kind not in (None, "function") and "input_schema" not in value:
            if not isinstance(kind, str):
                raise ConfigurationError(f"a tool's type must be a string, not {kind!r}")
            inner = value.get(kind)
            name = value.get("name") or (inner.get("name") if isinstance(inner, Mapping) else None)
            return cls(name=name if isinstance(name, str) else kind, builtin=dict(value))
        spec = value.get("function", value) if kind == "function" else value
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ConfigurationError("a tool dict needs a 'name' (or a 'function' with one)")
        description = spec.get("description") or ""
        # Claude's own form names the schema input_schema.
        parameters = spec.get("parameters") or spec.get("input_schema")
        strict = spec.get("strict")
        if not isinstance(description, str):
            raise ConfigurationError(f"tool {spec['name']!r}: description must be a string")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, Mapping):
            raise ConfigurationError(f"tool {spec['name']!r}: parameters must be a JSON schema")
        if strict is not None and not isinstance(strict, bool):
            raise ConfigurationError(f"tool {spec['name']!r}: strict must be a bool")
        return cls(
            name=spec["name"], description=description, parameters=dict(parameters), strict=strict
        )

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, strict: bool | None = None) -> Tool:
        """The tool ``fn`` describes: its name, its docstring, a schema of its parameters."""
        try:
            hints = typing.get_type_hints(fn)
            signature = inspect.signature(fn)
        except (TypeError, ValueError, NameError) as exc:  # say, a builtin without a signature
            raise ConfigurationError(f"cannot make a tool from {fn!r}: {exc}") from None
        properties: dict[str, Any] = {}
        required: list[str] = []
        for pname, param in signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            properties[pname] = _json_type(hints.get(pname, Any))
            if param.default is param.empty:
                required.append(pname)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        return cls(
            name=fn.__name__,
            description=inspect.cleandoc(fn.__doc__ or ""),
            parameters=schema,
            strict=strict,
        )

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's tool entry: a function (with ``strict`` when given; a strict one's schema
        made to strict mode's rules, see ``_structured.strict_schema``), or the built-in entry."""
        if self.builtin is not None:
            return dict(self.builtin)
        parameters = self.parameters
        if self.strict:
            parameters = strict_schema(parameters, f"tool {self.name!r}")
        function: dict[str, Any] = {"name": self.name, "parameters": parameters}
        if self.description:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


_SIMPLE_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}


def _json_type(tp: Any) -> dict[str, Any]:
    if tp in _SIMPLE_TYPES:
        return {"type": _SIMPLE_TYPES[tp]}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, Sequence, tuple):
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        options = [_json_type(a) for a in args if a is not type(None)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_json_schema()
    return {}


def coerce_tools(tools: Sequence[Any] | None) -> list[Tool] | None:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigurationError("tools must be a list")
    return [Tool.coerce(t) for t in tools]


# Message keys that carry one vendor's reasoning into its next turn (Claude's signed thinking
# blocks, Gemini's parts with thought signatures, Ollama's thinking, DeepSeek-style
# reasoning_content). A backend keeps its own; any other drops them (with a debug log), since
# they mean nothing to it, and sending them as text would leak another model's reasoning.
# Claude's ``claude_content`` (an answer's blocks in order, when it holds server tool blocks) is
# kept and dropped the same way: another backend cannot take a server tool's results.
REASONING_KEYS = frozenset(
    {"thinking_blocks", "gemini_parts", "thinking", "reasoning_content", "claude_content"}
)
_logger = logging.getLogger("asyncllm")


def normalize_messages(
    messages: Any,
    keep: frozenset[str] = frozenset(),
    custom_calls: bool = False,
    media: Callable[[Mapping[str, Any], str], object] | None = None,
) -> list[dict[str, Any]]:
    """Plain dicts or pydantic models in, checked plain dicts out; bad input never reaches a server.
    Reasoning keys (``REASONING_KEYS``) other than those in ``keep`` are dropped. Calls of
    OpenAI's ``custom`` tools are taken only with ``custom_calls`` (a backend whose wire has
    them); elsewhere they are a ``ConfigurationError``. ``media``, if given, is called with each
    image or file part (``_wire.parts.MEDIA_PARTS``) and where it is, to check that the backend
    takes it: only content lists are looked at, so a text message pays nothing."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ConfigurationError("messages must be a list of messages")
    if not messages:
        raise ConfigurationError("messages must not be empty")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if isinstance(message, Message):
            item = message.to_dict()
        elif isinstance(message, BaseModel):
            item = message.model_dump(exclude_none=True)
        elif type(message) is dict and "tool_calls" not in message:
            item = message  # sent as it is: nothing below changes it
        elif isinstance(message, Mapping):
            item = dict(message)
        else:
            raise ConfigurationError(
                f"messages[{i}] must be a dict or a pydantic model, not {type(message).__name__}"
            )
        if not REASONING_KEYS.isdisjoint(item):  # the common message has none: one check
            dropped = (REASONING_KEYS & item.keys()) - keep
            if dropped:
                _logger.debug(
                    "messages[%d]: dropped %s, which this backend cannot take", i, sorted(dropped)
                )
                item = {k: v for k, v in item.items() if k not in dropped}
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ConfigurationError(f"messages[{i}] has an invalid role {role!r}")
        content = item.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ConfigurationError(f"messages[{i}].content must be a str, a list or None")
        if isinstance(content, list):
            if not all(isinstance(p, Mapping) for p in content):
                raise ConfigurationError(f"messages[{i}].content parts must be dicts")
            if media is not None:
                for j, part in enumerate(content):
                    if part.get("type") in MEDIA_PARTS:
                        media(part, f"messages[{i}].content[{j}]")
        if content is None and not item.get("tool_calls") and role != "assistant":
            raise ConfigurationError(f"messages[{i}] has no content")
        if role == "tool" and not isinstance(item.get("tool_call_id"), str):
            raise ConfigurationError(f"messages[{i}] (a tool result) needs a tool_call_id")
        for key in ("name", "tool_call_id"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):  # the name is built only here
                check_str(f"messages[{i}].{key}", value)
        calls = item.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, (list, tuple)):
                raise ConfigurationError(f"messages[{i}].tool_calls must be a list")
            item["tool_calls"] = [_tool_call_dict(c, i, custom_calls) for c in calls]
        out.append(item)
    return out


def _tool_call_dict(call: Any, index: int, custom_calls: bool) -> dict[str, Any]:
    if isinstance(call, ToolCall):
        call = call.to_openai()
    if isinstance(call, Mapping) and call.get("type") == "custom":
        custom = call.get("custom")
        if not custom_calls:
            raise ConfigurationError(
                f"messages[{index}] holds a call of a custom tool, which only OpenAI takes"
            )
        if (
            isinstance(call.get("id"), str)
            and isinstance(custom, Mapping)
            and isinstance(custom.get("name"), str)
            and isinstance(custom.get("input"), str)
        ):
            return dict(call)
    elif isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
        function = call["function"]
        if (
            isinstance(call.get("id"), str)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments", ""), str)
        ):
            return dict(call)
    raise ConfigurationError(f"messages[{index}].tool_calls holds an invalid tool call")


def call_arguments(call: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The arguments of a tool call from ``normalize_messages`` (JSON text) as a dict, for a
    backend whose wire form sends them as an object; ``where`` names the message in an error."""
    name = call["function"]["name"]
    try:
        value = _json.loads(call["function"].get("arguments") or "{}")
    except ValueError as exc:
        raise ConfigurationError(f"{where}: tool call {name!r} arguments are not JSON") from exc
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where}: tool call {name!r} arguments must be a JSON object")
    return value


def tool_result(call: ToolCall, content: Any) -> dict[str, Any]:
    """The message that returns a tool's result to the model, in the common form."""
    text = content if isinstance(content, str) else json.dumps(content)
    return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": text}


def message_text(content: Any) -> str:
    """The text of a common-form content (a string, or parts with ``text``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        str(p.get("text", ""))
        for p in content
        if isinstance(p, Mapping) and p.get("type") == "text"
    )
