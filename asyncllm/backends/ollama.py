"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/embed``, model management).

Streams are newline-delimited JSON; every call but the streamed ones sends ``"stream": false``
because Ollama streams by default. Errors are ``{"error": "..."}``, with an HTTP status before
the stream starts and as a line of their own once it has.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, overload
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from typing_extensions import TypedDict, Unpack

from .._exceptions import ConfigurationError
from .._http._backend import HttpBackend, Meta
from .._http._transport import Response
from .._models import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    GenerationParams,
    M,
    Message,
    Messages,
    ModelInfo,
    OpenModel,
    P,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    call_arguments,
    coerce_tools,
    normalize_messages,
    parse_as,
)
from .._options import BodyOptions, ClientOptions, HttpOptions, keys_of
from .._structured import OutputFormat, finish, output_format
from .._tools import ToolRunner
from .._validate import (
    check_bool,
    check_int,
    check_model,
    check_number,
    check_stop,
    check_str,
    check_str_list,
)
from ..streaming import ChatStream, Stream

T = TypeVar("T")

OLLAMA_DEFAULT_PORT = 11434
OLLAMA_BASE_URL = f"http://localhost:{OLLAMA_DEFAULT_PORT}"

Think = bool | Literal["high", "medium", "low", "max"]
KeepAlive = str | int | float

_THINK_LEVELS = ("high", "medium", "low", "max")
# Go's time.Duration, as Ollama sends durations: int64 nanoseconds. A larger number is no duration
# (and has no float to turn into seconds).
_Nanoseconds = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
# The common roles Ollama names otherwise; the rest it names alike.
_ROLES = {"developer": "system", "function": "tool"}


def ollama_host(value: str) -> str:
    """A base URL from an ``OLLAMA_HOST`` value, read the way Ollama reads it.

    The scheme is optional (``http``); the port defaults to 11434 without a scheme and to 80/443
    with one; a path is kept. The bind-all addresses ``0.0.0.0`` and ``::`` mean this machine.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"Ollama host must be a string, not {type(value).__name__}")
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    port = OLLAMA_DEFAULT_PORT
    if not sep:
        scheme, rest = "http", text
    elif scheme in ("http", "https"):
        port = 80 if scheme == "http" else 443
    else:
        raise ConfigurationError(f"Ollama host must be http(s) or host:port, got {value!r}")
    hostport, _, path = rest.partition("/")
    try:
        parts = urlsplit("//" + hostport)
        port = parts.port or port
    except ValueError as exc:
        raise ConfigurationError(f"Ollama host has an invalid port: {value!r}") from exc
    host = parts.hostname or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    path = path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


# -- public result types ------------------------------------------------------------------------


class OllamaChatResponse(ChatResponse[P], Generic[P]):
    """A ChatResponse from ``/api/chat``. With ``think`` the model's reasoning is in
    ``reasoning``, as on every backend, and on ``message`` (as ``thinking``) to send back."""

    @property
    def thinking(self) -> str | None:
        """``reasoning`` by Ollama's name for it (the name this field had before 0.2)."""
        return self.reasoning


class OllamaChatChunk(ChatChunk):
    """A ChatChunk plus ``done`` (True on the last line, which carries ``usage``); its piece of
    reasoning with ``think`` is in ``reasoning``."""

    done: bool = False

    @property
    def thinking(self) -> str:
        """``reasoning`` by Ollama's name for it (the name this field had before 0.2)."""
        return self.reasoning


class GenerateResponse(BaseModel):
    """A completion of ``/api/generate``."""

    text: str
    thinking: str | None = None
    done_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    created_at: str | None = None
    request_id: str
    raw: Any = None


class GenerateChunk(BaseModel):
    """One streamed line of ``/api/generate``; the last (``done``) one carries ``usage``."""

    delta: str = ""
    thinking: str = ""
    done: bool = False
    done_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    request_id: str
    raw: Any = None


class PullProgress(OpenModel):
    """A status event of ``/api/pull``: a byte count per layer ``digest`` while downloading."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    @property
    def fraction(self) -> float | None:
        """Share of this layer downloaded (0.0 to 1.0), when the server said how big it is."""
        if not self.total or self.completed is None:
            return None
        return min(1.0, self.completed / self.total)


class ShowResponse(OpenModel):
    """What ``/api/show`` says about a model."""

    parameters: str | None = None
    license: str | None = None
    modified_at: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    model_info: dict[str, Any] = Field(default_factory=dict)


class _ModelEntry(OpenModel):
    """What ``/api/tags`` and ``/api/ps`` both say of a model."""

    name: str
    model: str | None = None
    size: int | None = None
    digest: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RunningModel(_ModelEntry):
    """A model loaded in memory (``/api/ps``)."""

    expires_at: str | None = None
    size_vram: int | None = None
    context_length: int | None = None


# -- wire types ---------------------------------------------------------------------------------


class _WireFunction(BaseModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    index: int | None = None


class _WireToolCall(BaseModel):
    id: str | None = None
    function: _WireFunction


class _WireMessage(BaseModel):
    role: str = "assistant"
    content: str | None = ""
    thinking: str | None = None
    tool_calls: list[_WireToolCall] | None = None
    images: list[str] | None = None


class _WireStats(BaseModel):
    model: str | None = None
    created_at: str | None = None
    done: bool = False
    done_reason: str | None = None
    total_duration: _Nanoseconds | None = None
    load_duration: _Nanoseconds | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: _Nanoseconds | None = None
    eval_count: int | None = None
    eval_duration: _Nanoseconds | None = None

    def usage(self) -> Usage | None:
        extras: dict[str, Any] = {}
        for name in _DURATIONS:
            ns = getattr(self, name)
            if ns is not None:
                extras[name] = ns
                extras[name.replace("_duration", "_seconds")] = ns / 1e9
        prompt, completion = self.prompt_eval_count, self.eval_count
        if prompt is None and completion is None and not extras:
            return None
        total = None if prompt is None and completion is None else (prompt or 0) + (completion or 0)
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, **extras
        )


class _WireChat(_WireStats):
    message: _WireMessage


class _WireGenerate(_WireStats):
    response: str
    thinking: str | None = None


class _WireEmbed(_WireStats):
    embeddings: list[list[float]]


class _WireTag(_ModelEntry):
    modified_at: str | None = None


class _WireTags(BaseModel):
    models: list[_WireTag]


class _WirePs(BaseModel):
    models: list[RunningModel]


class _WireVersion(BaseModel):
    version: str


# -- request pieces -----------------------------------------------------------------------------


def _image(value: Any, where: str) -> str:
    """Base64 text from bytes, base64 text or a ``data:`` URL; Ollama takes images only inline."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: an image must be bytes, base64 text or a data: URL")
    text: str = value
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise ConfigurationError(f"{where}: only base64 data: URLs are supported")
    elif text.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"{where}: Ollama takes images inline, not by URL; send a data: URL"
        )
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{where}: image is not valid base64") from exc
    return text


def _images(values: Any, where: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigurationError(f"{where} must be a list of images")
    return [_image(v, f"{where}[{i}]") for i, v in enumerate(values)]


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """(text, base64 images) from a common-form content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ConfigurationError(f"{where}.content[{j}]: a text part needs a string 'text'")
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            if isinstance(url, Mapping):
                url = url.get("url")
            images.append(_image(url, f"{where}.content[{j}]"))
        else:
            raise ConfigurationError(f"{where}.content[{j}]: Ollama cannot take a {kind!r} part")
    return "".join(texts), images


def wire_messages(messages: Any) -> list[dict[str, Any]]:
    """Common-form messages in Ollama's form: text ``content`` plus ``images``, tool calls with
    object arguments, tool results named by ``tool_name``."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, item in enumerate(normalize_messages(messages, keep=frozenset({"thinking"}))):
        where = f"messages[{i}]"
        role = _ROLES.get(item["role"], item["role"])
        text, images = _content(item.get("content"), where)
        wire: dict[str, Any] = {"role": role, "content": text}
        if item.get("images") is not None:
            images = _images(item["images"], f"{where}.images") + images
        if images:
            wire["images"] = images
        if isinstance(item.get("thinking"), str) and role == "assistant":
            wire["thinking"] = item["thinking"]
        calls = []
        # normalize_messages leaves each call an id, a function name and JSON text arguments.
        for call in item.get("tool_calls") or ():
            name = call["function"]["name"]
            names[call["id"]] = name
            calls.append({"function": {"name": name, "arguments": call_arguments(call, where)}})
        if calls:
            wire["tool_calls"] = calls
        if role == "tool":
            name = (
                item.get("tool_name") or item.get("name") or names.get(item.get("tool_call_id", ""))
            )
            if isinstance(name, str):
                wire["tool_name"] = name
        out.append(wire)
    return out


def format_body(value: Any) -> str | dict[str, Any] | None:
    """``"json"``, a JSON schema dict, or a pydantic model class (its schema)."""
    if value is None or value == "json":
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    raise ConfigurationError("format must be 'json', a JSON schema dict or a pydantic model class")


# -- call parameters ------------------------------------------------------------------------------


class SamplingParams(GenerationParams, total=False):
    """The parameters ``chat`` and ``generate`` (and their streaming twins) share.

    ``model`` defaults to the client's. ``temperature``, ``top_p``, ``top_k``, ``min_p``,
    ``max_tokens`` (sent as ``num_predict``), ``num_ctx``, ``seed`` and ``stop`` go into Ollama's
    ``options``, with any other Modelfile parameter given in ``options`` (``repeat_penalty``,
    ``mirostat``...); a setting given both ways is a ConfigurationError. ``format``: ``"json"``,
    a JSON schema dict or a pydantic model class, sent as it is (``chat``'s ``response_format``
    sends the same and parses the answer into ``parsed``). ``keep_alive``: how long the model
    stays loaded afterwards ("5m", seconds, 0 to unload it now). ``think``: True or False, or a
    level ("high", "medium", "low", "max") for models that take one; the reasoning comes back
    apart (``reasoning`` on chat, ``thinking`` on generate). Anything else the server takes goes
    in ``extra_body``.
    """

    top_k: int | None
    min_p: float | None
    num_ctx: int | None
    options: Mapping[str, Any] | None
    format: Any
    keep_alive: KeepAlive | None
    think: Think | None


class ChatParams(SamplingParams, total=False):
    """``SamplingParams`` plus ``tools``: functions, pydantic models, ``asyncllm.Tool`` or
    OpenAI tool dicts."""

    tools: Sequence[Any] | None


class ChatOptions(ChatParams, BodyOptions, total=False):
    """The keyword arguments of ``chat`` and ``stream_chat``: their parameters and the call
    options."""


class GenerateParams(SamplingParams, total=False):
    """``SamplingParams`` plus ``system`` (in place of the model's system prompt), ``suffix``
    (the text after the completion, for fill-in-the-middle), ``images`` (bytes, base64 text or
    ``data:`` URLs) and ``raw`` (send the prompt as it is, without the model's template)."""

    system: str | None
    suffix: str | None
    images: Sequence[str | bytes] | None
    raw: bool | None


class GenerateOptions(GenerateParams, BodyOptions, total=False):
    """The keyword arguments of ``generate`` and ``stream_generate``."""


class EmbedParams(TypedDict, total=False):
    """``model`` defaults to the client's. ``truncate=False`` makes an input longer than the
    context a BadRequestError instead of cutting it. ``dimensions`` asks for shorter vectors.
    ``keep_alive`` is a duration string ("5m"). ``options``: Modelfile parameters (``num_ctx``...).
    """

    model: str | None
    truncate: bool | None
    dimensions: int | None
    keep_alive: str | None
    options: Mapping[str, Any] | None


class EmbedOptions(EmbedParams, BodyOptions, total=False):
    """The keyword arguments of ``embed``."""


class PullParams(TypedDict, total=False):
    """``insecure``: let the pull use a registry without TLS or with an unverified certificate."""

    insecure: bool | None


class PullOptions(PullParams, BodyOptions, total=False):
    """The keyword arguments of ``pull`` besides ``stream``, streamed or not."""


CHAT_KEYS = keys_of(ChatOptions)
GENERATE_KEYS = keys_of(GenerateOptions)
EMBED_KEYS = keys_of(EmbedOptions)
PULL_KEYS = keys_of(PullOptions)
# The named settings that go into Ollama's ``options``, where ``max_tokens`` is ``num_predict``.
_NAMED_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "num_ctx", "seed", "stop")


def options_body(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Ollama's ``options`` from a call's parameters: the named settings (``max_tokens`` is
    ``num_predict``) plus any other Modelfile parameter in ``params["options"]``. A setting given
    both ways is an error."""
    get = params.get
    check_number("temperature", get("temperature"), 0)
    check_number("top_p", get("top_p"), 0, 1)
    check_number("min_p", get("min_p"), 0, 1)
    check_int("top_k", get("top_k"), 0)
    check_int("max_tokens", get("max_tokens"), 1)
    check_int("num_ctx", get("num_ctx"), 1)
    check_int("seed", get("seed"))
    named = {name: get(name) for name in _NAMED_OPTIONS}
    named["stop"] = check_stop(named["stop"])
    out: dict[str, Any] = {}
    options = get("options")
    if options is not None:
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            raise ConfigurationError("options must be a mapping of parameter names to values")
        _check_typed_options(options)
        out.update(options)
    for name, value in named.items():
        if value is None:
            continue
        key = "num_predict" if name == "max_tokens" else name
        if key in out:
            raise ConfigurationError(f"{name} is given twice (as an argument and in options)")
        out[key] = value
    return out or None


# The parameters Ollama's ModelOptions types. Given in ``options`` they are checked for their
# type only, not for the ranges of the named arguments: Ollama gives some values of its own
# meaning there (``num_predict: -1`` generates until the context is full).
_NUMBER_OPTIONS = ("temperature", "top_p", "min_p")
_INT_OPTIONS = ("top_k", "num_ctx", "num_predict", "seed")


def _check_typed_options(options: Mapping[str, Any]) -> None:
    # The checks below let None through as "not given"; in options it is sent, so refuse it.
    for key in (*_NUMBER_OPTIONS, *_INT_OPTIONS, "stop"):
        if key in options and options[key] is None:
            raise ConfigurationError(f"options[{key!r}] must not be None")
    for key in _NUMBER_OPTIONS:
        check_number(f"options[{key!r}]", options.get(key))
    for key in _INT_OPTIONS:
        check_int(f"options[{key!r}]", options.get(key))
    if "stop" in options:
        check_stop(options["stop"])


def _keep_alive(value: Any) -> KeepAlive | None:
    if isinstance(value, str) and not value.strip():
        raise ConfigurationError("keep_alive must be a duration like '5m' or a number of seconds")
    if not isinstance(value, str):
        check_number("keep_alive", value)  # None passes: not given
    return value  # type: ignore[no-any-return]


def _think(value: Any) -> Think | None:
    if value is None or isinstance(value, bool) or value in _THINK_LEVELS:
        return value  # type: ignore[no-any-return]
    raise ConfigurationError(f"think must be a bool or one of {', '.join(_THINK_LEVELS)}")


def _tool_calls(message: _WireMessage) -> list[ToolCall]:
    calls = []
    for call in message.tool_calls or ():
        args = call.function.arguments
        calls.append(
            ToolCall(
                id=call.id or f"call_{uuid.uuid4().hex[:24]}",
                name=call.function.name,
                arguments=args if isinstance(args, str) else json.dumps(args),
            )
        )
    return calls


def _finish(wire: _WireStats, called: bool) -> str | None:
    """Ollama says "stop" after tool calls too; the common form says "tool_calls"."""
    if called and wire.done_reason in (None, "stop"):
        return "tool_calls"
    return wire.done_reason


def _ollama_tool(tool: Tool) -> dict[str, Any]:
    entry = tool.to_openai()
    entry["function"].pop("strict", None)
    return entry


class Ollama(HttpBackend, ToolRunner):
    """``Ollama(base_url=..., api_key=..., model=...)``: base from ``OLLAMA_HOST`` (read the way
    Ollama reads it: ``host:port`` accepted, default ``http://localhost:11434``). No auth unless
    ``api_key`` (or ``OLLAMA_API_KEY``) is set, for servers behind an authenticating proxy or
    Ollama's cloud. ``model`` is the model of chat, generate and embed calls that name none.
    """

    backend: ClassVar[str] = "ollama"
    default_base_url: ClassVar[str | None] = OLLAMA_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("OLLAMA_HOST",)
    api_key_env: ClassVar[tuple[str, ...]] = ("OLLAMA_API_KEY",)

    def __init__(self, **options: Unpack[ClientOptions]) -> None:
        # OLLAMA_HOST is not always a URL ("0.0.0.0", "host:port"): read it as Ollama does.
        url = options.get("base_url") or os.environ.get("OLLAMA_HOST") or OLLAMA_BASE_URL
        options["base_url"] = ollama_host(url)
        super().__init__(**options)

    # -- chat ------------------------------------------------------------------------------------

    def _sampling_body(
        self, params: Mapping[str, Any], stream: bool, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The body of a chat or generate call: the model, the call's own ``fields``, then what
        ``SamplingParams`` declares; a field or parameter that is None is left out."""
        get = params.get
        options = options_body(params)
        body: dict[str, Any] = {"model": self._model(get("model")), "stream": stream}
        optional = {
            **fields,
            "format": format_body(get("format")),
            "options": options,
            "keep_alive": _keep_alive(get("keep_alive")),
            "think": _think(get("think")),
        }
        body.update((k, v) for k, v in optional.items() if v is not None)
        return body

    def _chat_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        stream: bool,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        coerced = coerce_tools(params.get("tools"))
        for tool in coerced or ():
            if tool.builtin is not None:
                raise ConfigurationError(f"Ollama has no built-in tool {tool.kind!r}")
            if tool.strict:
                raise ConfigurationError(
                    f"Ollama cannot hold tool {tool.name!r} to its schema (strict): drop "
                    "strict=True"
                )
        fields = {
            "messages": wire_messages(messages),
            # strict=False is what Ollama does anyway: not sent (its Tool has no such field).
            "tools": [_ollama_tool(t) for t in coerced] if coerced else None,
        }
        body = self._sampling_body(params, stream, fields)
        if fmt is not None:
            if params.get("format") is not None:
                raise ConfigurationError("give response_format or format, not both")
            # The schema as it is: Ollama's grammar takes open maps, $defs and length limits.
            body["format"] = "json" if fmt.schema is None else fmt.schema
        return body

    def _parse_chat(self, payload: Any, meta: Meta) -> OllamaChatResponse[Any]:
        wire = _WireChat.model_validate(self._no_error(payload, meta))
        calls = _tool_calls(wire.message)
        text = wire.message.content or ""
        thinking = {"thinking": wire.message.thinking} if wire.message.thinking else {}
        # No text beside tool calls is None, as in the common form (and a stream's final()).
        content = text if text or not calls else None
        message = Message(role="assistant", content=content, tool_calls=calls or None, **thinking)
        return OllamaChatResponse(
            text=text,
            message=message,
            tool_calls=calls,
            finish_reason=_finish(wire, bool(calls)),
            usage=wire.usage(),
            model=wire.model,
            request_id=meta.request_id,
            choices=[message],
            reasoning=wire.message.thinking,
            raw=payload,
        )

    @overload
    async def chat(
        self, messages: Messages, *, response_format: type[M], **options: Unpack[ChatOptions]
    ) -> OllamaChatResponse[M]: ...
    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> OllamaChatResponse: ...
    async def chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> OllamaChatResponse[Any]:
        """A chat reply from ``/api/chat`` (parameters: ``ChatParams``). Image parts must be
        ``data:`` URLs, since Ollama cannot fetch images; with ``think`` the reasoning is in
        ``reasoning``.

        ``response_format``: a pydantic model class or a JSON schema dict, sent as Ollama's
        ``format`` (the schema as it is), and the answer parsed into ``parsed``; an answer cut
        at ``max_tokens`` (``done_reason`` "length") raises LengthFinishReasonError."""
        fmt = None if response_format is None else output_format(response_format)
        call = self._request(
            "chat",
            "POST",
            "/api/chat",
            self._parse_chat,
            options,
            body=self._chat_body(messages, options, False, fmt),
            allowed=CHAT_KEYS,
        )
        response: OllamaChatResponse[Any] = await call
        return response if fmt is None else finish(response, fmt, self.name)

    @overload
    def stream_chat(
        self, messages: Messages, *, response_format: type[M], **options: Unpack[ChatOptions]
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
        """``chat`` chunk by chunk (``OllamaChatChunk``) as each line arrives; the last
        (``done``) one carries ``usage``, and ``await stream.final()`` gives the whole answer
        (``parsed`` with ``response_format``, the reasoning kept on its message). An error line
        mid-stream raises APIError (not retried once a chunk was delivered)."""
        fmt = None if response_format is None else output_format(response_format)
        return ChatStream(
            self._stream(
                "stream_chat",
                "POST",
                "/api/chat",
                self._decode_chat,
                options,
                body=self._chat_body(messages, options, True, fmt),
                allowed=CHAT_KEYS,
                sse=False,
            ),
            fmt,
            self.name,
        )

    async def _decode_chat(self, response: Response, meta: Meta) -> AsyncIterator[OllamaChatChunk]:
        # Ollama sends each tool call whole, on a line of its own: number them across the stream.
        index = 0
        called = False
        thoughts: list[str] = []

        def parse(payload: Any, meta: Meta) -> OllamaChatChunk:
            nonlocal index, called
            wire = _WireChat.model_validate(payload)
            deltas = []
            for call in _tool_calls(wire.message):
                deltas.append(
                    ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
                )
                index += 1
            called = called or bool(deltas)
            thinking = wire.message.thinking or ""
            if thinking:
                thoughts.append(thinking)
            # The whole reasoning goes on the final message, which sends it back next turn.
            extra = {"thinking": "".join(thoughts)} if wire.done and thoughts else None
            return OllamaChatChunk(
                delta=wire.message.content or "",
                reasoning=thinking,
                tool_calls=deltas,
                message_extra=extra,
                done=wire.done,
                finish_reason=_finish(wire, called) if wire.done else None,
                usage=wire.usage() if wire.done else None,
                model=wire.model,
                request_id=meta.request_id,
                raw=payload,
            )

        async for chunk in self._until_done(response, meta, parse):
            yield chunk

    # -- generate --------------------------------------------------------------------------------

    def _generate_body(
        self, prompt: Any, params: Mapping[str, Any], stream: bool
    ) -> dict[str, Any]:
        get = params.get
        check_str("prompt", prompt)
        check_str("system", get("system"))
        check_str("suffix", get("suffix"))
        check_bool("raw", get("raw"))
        images = get("images")
        fields = {
            "prompt": prompt,
            "system": get("system"),
            "suffix": get("suffix"),
            "images": None if images is None else _images(images, "images"),
            "raw": get("raw"),
        }
        return self._sampling_body(params, stream, fields)

    def _parse_generate(self, payload: Any, meta: Meta) -> GenerateResponse:
        wire = _WireGenerate.model_validate(self._no_error(payload, meta))
        return GenerateResponse(
            text=wire.response,
            thinking=wire.thinking,
            done_reason=wire.done_reason,
            usage=wire.usage(),
            model=wire.model,
            created_at=wire.created_at,
            request_id=meta.request_id,
            raw=payload,
        )

    @staticmethod
    def _generate_chunk(payload: Any, meta: Meta) -> GenerateChunk:
        wire = _WireGenerate.model_validate(payload)
        return GenerateChunk(
            delta=wire.response,
            thinking=wire.thinking or "",
            done=wire.done,
            done_reason=wire.done_reason,
            usage=wire.usage() if wire.done else None,
            model=wire.model,
            request_id=meta.request_id,
            raw=payload,
        )

    async def generate(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> GenerateResponse:
        """A plain completion of ``prompt`` from ``/api/generate`` (parameters:
        ``GenerateParams``). No prompt just loads the model; add ``keep_alive=0`` to unload it."""
        return await self._request(
            "generate",
            "POST",
            "/api/generate",
            self._parse_generate,
            options,
            body=self._generate_body(prompt, options, stream=False),
            allowed=GENERATE_KEYS,
        )

    def stream_generate(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> Stream[GenerateChunk]:
        """``generate`` line by line as the model writes; the ``done`` chunk carries ``usage``."""

        def decode(response: Response, meta: Meta) -> AsyncIterator[GenerateChunk]:
            return self._until_done(response, meta, self._generate_chunk)

        return self._stream(
            "stream_generate",
            "POST",
            "/api/generate",
            decode,
            options,
            body=self._generate_body(prompt, options, stream=True),
            allowed=GENERATE_KEYS,
            sse=False,
        )

    # -- embeddings ------------------------------------------------------------------------------

    async def embed(
        self, inputs: str | Sequence[str], **options: Unpack[EmbedOptions]
    ) -> EmbeddingResponse:
        """Vectors of ``inputs`` in input order, from ``/api/embed`` (parameters:
        ``EmbedParams``)."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        truncate = options.get("truncate")
        dimensions = options.get("dimensions")
        keep_alive = options.get("keep_alive")
        check_bool("truncate", truncate)
        check_int("dimensions", dimensions, 1)
        if keep_alive is not None and (not isinstance(keep_alive, str) or not keep_alive.strip()):
            raise ConfigurationError("keep_alive for embed must be a duration string like '5m'")
        body: dict[str, Any] = {"model": self._model(options.get("model")), "input": texts}
        optional = {
            "truncate": truncate,
            "dimensions": dimensions,
            "keep_alive": keep_alive,
            "options": options_body({"options": options.get("options")}),
        }
        body.update((k, v) for k, v in optional.items() if v is not None)
        count = len(texts)

        def parse(payload: Any, meta: Meta) -> EmbeddingResponse:
            wire = _WireEmbed.model_validate(self._no_error(payload, meta))
            if len(wire.embeddings) != count:
                raise ValueError(f"expected {count} embeddings, got {len(wire.embeddings)}")
            return EmbeddingResponse(
                vectors=wire.embeddings,
                usage=wire.usage(),
                model=wire.model,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request(
            "embed", "POST", "/api/embed", parse, options, body=body, allowed=EMBED_KEYS
        )

    # -- model management ------------------------------------------------------------------------

    async def models(self, **options: Unpack[HttpOptions]) -> list[ModelInfo]:
        """The models available locally (``/api/tags``), with size, digest and details."""

        def parse(payload: Any, meta: Meta) -> list[ModelInfo]:
            return [
                ModelInfo(
                    id=m.name,
                    size=m.size,
                    digest=m.digest,
                    modified_at=m.modified_at,
                    details=m.details,
                    raw=m.model_dump(),
                )
                for m in _WireTags.model_validate(payload).models
            ]

        return await self._request("models", "GET", "/api/tags", parse, options)

    async def show(
        self, model: str, *, verbose: bool = False, **options: Unpack[BodyOptions]
    ) -> ShowResponse:
        """A model's details, parameters, template and capabilities; NotFoundError if absent.
        ``verbose`` adds the full tokenizer data to ``model_info``."""
        check_bool("verbose", verbose)
        body: dict[str, Any] = {"model": check_model(model)}
        if verbose:
            body["verbose"] = True
        return await self._request(
            "show", "POST", "/api/show", parse_as(ShowResponse), options, body=body
        )

    async def ps(self, **options: Unpack[HttpOptions]) -> list[RunningModel]:
        """The models loaded in memory now, and when each will be unloaded."""
        loaded = await self._request("ps", "GET", "/api/ps", parse_as(_WirePs), options)
        return loaded.models

    async def version(self, **options: Unpack[HttpOptions]) -> str:
        """The server's Ollama version: a cheap liveness check."""
        answer = await self._request(
            "version", "GET", "/api/version", parse_as(_WireVersion), options
        )
        return answer.version

    @overload
    def pull(
        self, model: str, *, stream: Literal[True] = True, **options: Unpack[PullOptions]
    ) -> Stream[PullProgress]: ...

    @overload
    def pull(
        self, model: str, *, stream: Literal[False], **options: Unpack[PullOptions]
    ) -> Awaitable[PullProgress]: ...

    def pull(
        self, model: str, *, stream: bool = True, **options: Unpack[PullOptions]
    ) -> Stream[PullProgress] | Awaitable[PullProgress]:
        """Download a model. By default a stream of progress events to draw a bar from (read it
        to the end: the last one says ``success``); ``await pull(m, stream=False)`` just waits.
        A failed pull is an APIError (mid-stream, as Ollama reports it). Parameters:
        ``PullParams``."""
        check_bool("stream", stream)
        insecure = options.get("insecure")
        check_bool("insecure", insecure)
        streamed = stream is not False  # None is "not given": the default, a stream
        body: dict[str, Any] = {"model": check_model(model), "stream": streamed}
        if insecure:
            body["insecure"] = True
        if not streamed:
            return self._request(
                "pull", "POST", "/api/pull", self._parse_pull, options, body=body, allowed=PULL_KEYS
            )

        async def decode(response: Response, meta: Meta) -> AsyncIterator[PullProgress]:
            status = None
            async for payload in self._objects(response, meta):
                event = self._parse(self._parse_pull, payload, meta)
                status = event.status
                yield event
            if status != "success":
                raise self._cut_short(meta, "its final line")

        return self._stream(
            "pull", "POST", "/api/pull", decode, options, body=body, allowed=PULL_KEYS, sse=False
        )

    def _parse_pull(self, payload: Any, meta: Meta) -> PullProgress:
        return PullProgress.model_validate(self._no_error(payload, meta))

    async def delete(self, model: str, **options: Unpack[BodyOptions]) -> None:
        """Remove a model and its data; NotFoundError if there is no such model."""
        await self._request(
            "delete",
            "DELETE",
            "/api/delete",
            lambda payload, meta: None,
            options,
            body={"model": check_model(model)},
            raw_body=True,
        )

    async def copy(self, source: str, destination: str, **options: Unpack[BodyOptions]) -> None:
        """Make ``destination`` a new name for ``source``; NotFoundError if ``source`` is absent."""
        await self._request(
            "copy",
            "POST",
            "/api/copy",
            lambda payload, meta: None,
            options,
            body={"source": check_model(source), "destination": check_model(destination)},
            raw_body=True,
        )

    # -- NDJSON streams --------------------------------------------------------------------------

    async def _objects(self, response: Response, meta: Meta) -> AsyncIterator[Any]:
        """Each JSON line as it arrives; an ``{"error": ...}`` line becomes an APIError."""
        async for payload in self._ndjson(response):
            yield self._no_error(payload, meta)

    async def _until_done(
        self, response: Response, meta: Meta, parse: Callable[[Any, Meta], T]
    ) -> AsyncIterator[T]:
        """Parsed lines up to the ``done`` one; a stream that stops before it is cut short."""
        async for payload in self._objects(response, meta):
            yield self._parse(parse, payload, meta)
            if isinstance(payload, Mapping) and payload.get("done") is True:
                return
        raise self._cut_short(meta, "its final line")

    def _no_error(self, payload: Any, meta: Meta) -> Any:
        """The payload, unless it is an ``{"error": ...}`` object: Ollama's error once it has
        answered 200 (a line mid-stream, or a whole body), an APIError with no status."""
        if isinstance(payload, Mapping) and "error" in payload:
            raise self._stream_error(payload, meta)
        return payload
