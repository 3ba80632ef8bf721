"""The Responses API (``/responses``), written once for every server that serves it.

OpenAI serves all of it. vLLM, OVMS (under ``/v3``) and Groq serve a part, which each client
declares in its ``ResponsesSupport``: what a server lacks is a ``ConfigurationError`` before
anything is sent, rather than a 404 or, worse, a parameter the server silently drops (vLLM
ignores ``store`` unless started with ``VLLM_ENABLE_RESPONSES_API_STORE=1``; Groq keeps no state).

Every call goes through the client's dispatcher like any other, with the same call options,
errors and request IDs. A background create is a call that *creates* something (a paid job that
runs on the server): it is retried only while it cannot have been applied (see
``asyncllm._engine._backoff.may_resend``), never after a timeout or a 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Generic, overload

from pydantic import BaseModel, Field
from typing_extensions import TypedDict, Unpack

from .._exceptions import ConfigurationError
from .._http._backend import Meta
from .._http._transport import Response
from .._models import M, OpenModel, P, Tool, ToolCall, message_text
from .._options import BodyOptions, HttpOptions, keys_of
from .._structured import OutputFormat, output_format, plain_schema, structured_value
from .._validate import (
    check_bool,
    check_int,
    check_metadata,
    check_name,
    check_str,
    check_str_list,
    path_segment,
)
from ..streaming import Stream
from .openai import sampling_body
from .responses_support import ResponsesSupport, ServesResponses

# -- what comes back ----------------------------------------------------------------------------


class ResponseUsage(OpenModel):
    """Token counts of a response (``input_tokens_details.cached_tokens``,
    ``output_tokens_details.reasoning_tokens`` where the server says)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: dict[str, Any] | None = None
    output_tokens_details: dict[str, Any] | None = None


class ResponseItem(OpenModel):
    """One item of a response's ``output`` (or of its input): a ``message``, a
    ``function_call``, ``reasoning``, or a built-in tool's call (``web_search_call``...), whose
    other fields stay readable as attributes."""

    type: str
    id: str | None = None
    status: str | None = None
    role: str | None = None
    content: list[dict[str, Any]] | str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None

    @property
    def text(self) -> str:
        """The text of a message's ``output_text`` (or ``input_text``) parts; "" for others."""
        if isinstance(self.content, str):  # an input message as some servers echo it
            return self.content
        return "".join(
            str(part.get("text", ""))
            for part in self.content or ()
            if part.get("type") in ("output_text", "input_text")
        )


class ModelResponse(OpenModel, Generic[P]):
    """What the Responses API calls a Response (``asyncllm.Response`` is the transport's).

    ``output_text`` joins the text of every message in ``output``; ``tool_calls`` are its
    function calls as ``asyncllm.ToolCall`` (their ``id`` is the ``call_id`` a function result
    answers); ``refusal`` the model's refusal, if it refused. With ``text_format``, ``parsed`` is
    the answer validated into the model. Fields the server sends beyond these (``tools``,
    ``text``, ``instructions``, ``metadata``...) are kept as attributes. ``request_id`` is
    ours, ``server_request_id`` the server's.
    """

    id: str
    object: str = "response"
    created_at: float | None = None
    status: str | None = None
    model: str | None = None
    output: list[ResponseItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    store: bool | None = None
    request_id: str | None = None
    server_request_id: str | None = None
    parsed: P | None = None

    @property
    def output_text(self) -> str:
        return "".join(item.text for item in self.output if item.type == "message")

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(
                id=item.call_id or item.id or "",
                name=item.name or "",
                arguments=item.arguments or "{}",
            )
            for item in self.output
            if item.type == "function_call"
        ]

    @property
    def refusal(self) -> str | None:
        said = [
            str(part.get("refusal", ""))
            for item in self.output
            if item.type == "message" and isinstance(item.content, list)
            for part in item.content
            if part.get("type") == "refusal"
        ]
        return "".join(said) or None

    @property
    def finish_reason(self) -> str | None:
        """``"max_tokens"`` when the response stopped at ``max_output_tokens``, else its
        ``incomplete_details.reason`` (None for a complete one)."""
        reason = (self.incomplete_details or {}).get("reason")
        return "max_tokens" if reason == "max_output_tokens" else reason


class ResponseItemList(OpenModel):
    """A page of a response's input items: ``data``, and ``has_more`` with ``last_id`` to pass
    as ``after`` for the next page."""

    data: list[ResponseItem] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class InputTokenCount(OpenModel):
    """What a create with the same arguments would take as input, in tokens."""

    input_tokens: int


# -- stream events ------------------------------------------------------------------------------


class ResponseEvent(OpenModel):
    """An event of a streamed response; kinds without a class of their own (content parts,
    reasoning summaries, built-in tools' progress) are this class, their fields attributes."""

    type: str
    sequence_number: int | None = None


class ResponseStateEvent(ResponseEvent):
    """``response.created``, ``.queued``, ``.in_progress``, ``.completed`` and
    ``.incomplete``: the response as it stands (whole, with usage, in the last two)."""

    response: ModelResponse


class OutputItemEvent(ResponseEvent):
    """``response.output_item.added`` and ``.done``: an output item begun, or finished whole."""

    output_index: int = 0
    item: ResponseItem


class TextDeltaEvent(ResponseEvent):
    """``response.output_text.delta``: the next piece of a message's text."""

    item_id: str | None = None
    output_index: int = 0
    content_index: int = 0
    delta: str


class TextDoneEvent(ResponseEvent):
    """``response.output_text.done``: a message part's whole text."""

    item_id: str | None = None
    output_index: int = 0
    content_index: int = 0
    text: str


class FunctionCallArgumentsDeltaEvent(ResponseEvent):
    """``response.function_call_arguments.delta``: the next piece of a call's arguments."""

    item_id: str | None = None
    output_index: int = 0
    delta: str


class FunctionCallArgumentsDoneEvent(ResponseEvent):
    """``response.function_call_arguments.done``: a call's whole arguments."""

    item_id: str | None = None
    output_index: int = 0
    arguments: str
    name: str | None = None


_EVENTS: dict[str, type[ResponseEvent]] = {
    "response.created": ResponseStateEvent,
    "response.queued": ResponseStateEvent,
    "response.in_progress": ResponseStateEvent,
    "response.completed": ResponseStateEvent,
    "response.incomplete": ResponseStateEvent,
    "response.output_item.added": OutputItemEvent,
    "response.output_item.done": OutputItemEvent,
    "response.output_text.delta": TextDeltaEvent,
    "response.output_text.done": TextDoneEvent,
    "response.function_call_arguments.delta": FunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": FunctionCallArgumentsDoneEvent,
}
# The events a whole stream ends with; one that ends before any of them was cut.
_ENDS = frozenset({"response.completed", "response.incomplete"})


def _event(payload: Any, meta: Meta) -> ResponseEvent:
    kind = payload.get("type") if isinstance(payload, Mapping) else None
    event = _EVENTS.get(kind, ResponseEvent) if isinstance(kind, str) else ResponseEvent
    return event.model_validate(payload)


class ResponseStream(Stream[ResponseEvent], Generic[P]):
    """The events of a streamed response, in the server's order. A stream that ends before
    ``response.completed`` (or ``.incomplete``) raises ``APIConnectionError``; an ``error`` or
    ``response.failed`` event raises the typed error it stands for.

    ``await stream.final()`` reads the rest and returns the whole ``ModelResponse`` (``parsed``
    with ``text_format``)."""

    def __init__(
        self, inner: Stream[ResponseEvent], fmt: OutputFormat | None, backend: str
    ) -> None:
        super().__init__(inner, inner.request_id)
        self._fmt = fmt
        self._backend = backend
        self._last: ModelResponse[P] | None = None
        self._final: ModelResponse[P] | None = None

    async def __anext__(self) -> ResponseEvent:
        event = await self._source.__anext__()
        if event.type in _ENDS and isinstance(event, ResponseStateEvent):
            self._last = event.response
        return event

    async def final(self) -> ModelResponse[P]:
        """The whole response, once the stream is read to its end (reading the rest here)."""
        if self._final is None:
            async for _ in self:
                pass
            response = self._last
            assert response is not None  # the decoder raises on a stream without its end
            response.request_id = self.request_id
            self._final = _finish(response, self._fmt, self._backend)
        return self._final


def _finish(response: ModelResponse[P], fmt: OutputFormat | None, backend: str) -> ModelResponse[P]:
    """``parsed`` set from the answer's text, as chat's ``response_format`` is (refusals,
    function calls and responses that are not done yet leave it None)."""
    if fmt is None or response.refusal or response.tool_calls:
        return response
    if response.status not in (None, "completed", "incomplete"):
        return response  # a background response still queued or running: nothing to parse
    response.parsed = structured_value(
        response.output_text,
        fmt,
        response.finish_reason,
        response,
        response.request_id,
        backend,
    )
    return response


# -- what goes out ----------------------------------------------------------------------------


class ResponseInputParams(TypedDict, total=False):
    """What create, stream and ``input_tokens.count`` share.

    ``input``: a string, or a list of messages in the common form (an assistant message's
    ``tool_calls`` become ``function_call`` items and a ``tool`` message a
    ``function_call_output``) or of Responses items (say, a previous response's ``output``),
    passed as they are. ``tools``: functions, pydantic models, ``asyncllm.Tool`` or tool dicts,
    sent as function tools (``strict`` only where a dict asks for it); a dict of another
    ``type`` (``{"type": "web_search"}``, ``file_search``, ``code_interpreter``) is a built-in
    tool, passed through. ``tool_choice``: ``"auto"``, ``"none"``, ``"required"``, a function
    name or a dict. (``text_format``, a parameter of its own so that type checkers know
    ``parsed``: structured output, as chat's ``response_format`` takes it, a pydantic model
    class, a JSON schema, or a ``json_schema``/``json_object`` format dict, Responses' flat form
    too; sent as ``text.format``.)
    """

    model: str | None
    input: str | Sequence[Mapping[str, Any] | BaseModel]
    instructions: str | None
    tools: Sequence[Any] | None
    tool_choice: str | Mapping[str, Any] | None
    previous_response_id: str | None
    reasoning: Mapping[str, Any] | None
    parallel_tool_calls: bool | None
    truncation: str | None


class ResponseParams(ResponseInputParams, total=False):
    """Create's and stream's parameters besides the shared ones: ``store`` (keep the response
    for retrieve and ``previous_response_id``), ``background`` (run it on the server and return
    at once, queued: poll with ``retrieve``; it must be stored; never retried once it may have
    been sent), ``max_output_tokens``, ``temperature``, ``top_p``, ``metadata`` and
    ``include``."""

    store: bool | None
    background: bool | None
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    metadata: Mapping[str, str] | None
    include: Sequence[str] | None


class ResponseOptions(ResponseParams, BodyOptions, total=False):
    """Create's and stream's keyword arguments: ``ResponseParams`` and the call options."""


class InputTokenOptions(ResponseInputParams, BodyOptions, total=False):
    """``input_tokens.count``'s keyword arguments."""


class InputItemsOptions(HttpOptions, total=False):
    """``input_items.list``'s keyword arguments: ``after`` (an item ID), ``limit`` (1 to 100)
    and ``order`` (``"asc"`` or ``"desc"``), and the call options."""

    after: str | None
    limit: int | None
    order: str | None


RESPONSE_KEYS = keys_of(ResponseOptions)
# What only a create takes: refused when a stream reads a stored response.
_CREATE_ONLY = keys_of(ResponseParams)
INPUT_TOKEN_KEYS = keys_of(InputTokenOptions)
INPUT_ITEMS_KEYS = keys_of(InputItemsOptions)


def response_input(value: Any) -> str | list[dict[str, Any]]:
    """``input`` as the Responses API takes it (see ``ResponseInputParams``), copied."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, (bytes, bytearray, Mapping))
        or not isinstance(value, Sequence)
        or not value
    ):
        raise ConfigurationError("input must be a string or a non-empty list of messages or items")
    items: list[dict[str, Any]] = []
    for entry in value:
        if isinstance(entry, BaseModel):
            entry = entry.model_dump(exclude_none=True)
        if not isinstance(entry, Mapping):
            raise ConfigurationError(
                f"each input item must be a dict or a pydantic model, not {type(entry).__name__}"
            )
        role, kind = entry.get("role"), entry.get("type")
        if role == "tool":
            call_id = entry.get("tool_call_id")
            check_name("a tool message's tool_call_id", call_id)
            content = entry.get("content")
            output = content if isinstance(content, str) else message_text(content)
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        elif role == "assistant" and entry.get("tool_calls"):
            text = message_text(entry.get("content"))
            if text:
                items.append({"role": "assistant", "content": text})
            items.extend(_function_call(call) for call in entry["tool_calls"])
        elif role is None and kind is None:
            raise ConfigurationError("each input item needs a role (a message) or a type")
        else:
            items.append(plain_schema(entry, "an input item"))
    return items


def _function_call(call: Any) -> dict[str, Any]:
    """A common-form tool call (``{"id", "function": {"name", "arguments"}}``, or a
    ``ToolCall``) as a ``function_call`` item."""
    if isinstance(call, BaseModel):
        call = call.model_dump()
    if not isinstance(call, Mapping):
        raise ConfigurationError("a tool call must be a dict or an asyncllm.ToolCall")
    function = call.get("function") or call
    call_id, name = call.get("id"), function.get("name")
    check_name("a tool call's id", call_id)
    check_name("a tool call's name", name)
    arguments = function.get("arguments") or "{}"
    if not isinstance(arguments, str):
        raise ConfigurationError("a tool call's arguments must be JSON text")
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def response_tools(tools: Any, support: ResponsesSupport) -> list[dict[str, Any]]:
    """``tools`` as Responses tools (see ``ResponseInputParams``)."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigurationError("tools must be a list")
    out: list[dict[str, Any]] = []
    for value in tools:
        if isinstance(value, Mapping) and value.get("type") not in (None, "function"):
            support.require("builtin_tools", f"built-in tools ({value.get('type')!r})")
            out.append(plain_schema(value, "a built-in tool"))
            continue
        strict = value.get("strict") if isinstance(value, Mapping) else None
        if (
            strict is None
            and isinstance(value, Mapping)
            and isinstance(value.get("function"), Mapping)
        ):
            strict = value["function"].get("strict")
        tool = Tool.coerce(value)
        if tool.builtin is not None:  # a Gemini-style {"googleSearch": {}}: not a Responses tool
            raise ConfigurationError(f"Responses have no built-in tool {tool.kind!r}")
        if strict is None:  # a Tool(strict=True), Tool.from_function(fn, strict=True)
            strict = tool.strict
        entry: dict[str, Any] = {
            "type": "function",
            "name": tool.name,
            "parameters": plain_schema(tool.parameters, f"tool {tool.name!r} parameters"),
            # Responses makes function tools strict unless told otherwise, and a schema made from
            # a function or a model is seldom strict-ready: strict only where asked for.
            "strict": bool(strict),
        }
        if tool.description:
            entry["description"] = tool.description
        out.append(entry)
    return out


def _tool_choice(value: Any) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, Mapping):
        return plain_schema(value, "tool_choice")
    if isinstance(value, str) and value:
        return {"type": "function", "name": value}
    raise ConfigurationError(
        "tool_choice must be 'auto', 'none', 'required', a tool name or a dict"
    )


def text_format_of(value: Any) -> OutputFormat | None:
    """``text_format`` read as chat's ``response_format`` is (``output_format``); Responses' flat
    ``{"type": "json_schema", "name", "schema"}`` is taken too."""
    if (
        isinstance(value, Mapping)
        and value.get("type") == "json_schema"
        and "json_schema" not in value
    ):
        spec = {k: v for k, v in value.items() if k != "type"}
        value = {"type": "json_schema", "json_schema": spec}
    return output_format(value)


def _format_body(fmt: OutputFormat) -> dict[str, Any]:
    """``text.format``: chat's ``response_format`` with its ``json_schema`` laid flat."""
    chat = fmt.openai()
    if chat.get("type") == "json_schema":
        return {"type": "json_schema", **chat["json_schema"]}
    return dict(chat)


def _response_id(value: Any) -> str:
    check_name("response_id", value)
    return path_segment("response_id", value)


# -- the calls --------------------------------------------------------------------------------


class Responses:
    """``client.responses``, shaped as openai-python's: every argument by keyword, each call
    through the client's dispatcher with the same call options (``timeout``, ``deadline``,
    ``max_retries``, ``priority``, ``extra_*``). What the server does not serve is a
    ``ConfigurationError`` before sending (see the README's table)."""

    __slots__ = ("_client",)

    def __init__(self, client: ServesResponses) -> None:
        self._client = client

    @property
    def _support(self) -> ResponsesSupport:
        return self._client.responses_support

    @property
    def _path(self) -> str:
        return self._client.responses_path

    @property
    def input_items(self) -> InputItems:
        return InputItems(self)

    @property
    def input_tokens(self) -> InputTokens:
        return InputTokens(self)

    # -- bodies --

    def _body(
        self, params: Mapping[str, Any], wanted: Any, operation: str
    ) -> tuple[dict[str, Any], OutputFormat | None]:
        """The JSON body of a create (or count) and its structured-output format; every
        argument checked, and every feature the server lacks refused, before sending."""
        support = self._support
        get = params.get
        body: dict[str, Any] = {"model": self._client._model(get("model"))}
        if "input" not in params:
            if operation != "input_tokens.count" or get("previous_response_id") is None:
                raise ConfigurationError(f"{operation}() needs input=")
        else:
            body["input"] = response_input(params["input"])
        if (instructions := get("instructions")) is not None:
            check_str("instructions", instructions)
            support.require("instructions", "instructions")
            body["instructions"] = instructions
        if (previous := get("previous_response_id")) is not None:
            check_name("previous_response_id", previous)
            support.require("previous_response_id", "previous_response_id")
            body["previous_response_id"] = previous
        if (tools := get("tools")) is not None:
            body["tools"] = response_tools(tools, support)
        if (choice := get("tool_choice")) is not None:
            body["tool_choice"] = _tool_choice(choice)
        fmt = None
        if wanted is not None:
            fmt = text_format_of(wanted)
            if fmt is not None:
                support.require("text_format", "structured output (text.format)")
                body["text"] = {"format": _format_body(fmt)}
        if (reasoning := get("reasoning")) is not None:
            if not isinstance(reasoning, Mapping):
                raise ConfigurationError("reasoning must be a dict, say {'effort': 'low'}")
            body["reasoning"] = plain_schema(reasoning, "reasoning")
        if (parallel := get("parallel_tool_calls")) is not None:
            check_bool("parallel_tool_calls", parallel)
            body["parallel_tool_calls"] = parallel
        if (truncation := get("truncation")) is not None:
            if truncation not in ("auto", "disabled"):
                raise ConfigurationError("truncation must be 'auto' or 'disabled'")
            body["truncation"] = truncation
        if operation == "input_tokens.count":
            return body, fmt
        store, background = get("store"), get("background")
        if store is not None:
            check_bool("store", store)
            if store:
                support.require("store", "stored responses (store=True)")
                body["store"] = True
            elif support.store:
                body["store"] = False  # a server that stores nothing needs no telling
        if background is not None:
            check_bool("background", background)
            if background:
                support.require("background", "background responses")
                if store is False:
                    raise ConfigurationError(
                        "a background response must be stored: drop store=False"
                    )
                body["background"] = True
        if (max_output := get("max_output_tokens")) is not None:
            check_int("max_output_tokens", max_output, 1)
            body["max_output_tokens"] = max_output
        body.update(sampling_body(params))  # temperature and top_p, as chat checks them
        if (metadata := get("metadata")) is not None:
            body["metadata"] = check_metadata(metadata)
        if (include := get("include")) is not None:
            body["include"] = check_str_list("include", include)
        return body, fmt

    def _parse(self, payload: Any, meta: Meta) -> ModelResponse[Any]:
        response: ModelResponse[Any] = ModelResponse.model_validate(payload)
        response.request_id = meta.request_id
        response.server_request_id = meta.server_request_id
        return response

    # -- create and stream --

    @overload
    async def create(
        self, *, text_format: type[M], **options: Unpack[ResponseOptions]
    ) -> ModelResponse[M]: ...
    @overload
    async def create(
        self, *, text_format: Any = None, **options: Unpack[ResponseOptions]
    ) -> ModelResponse: ...
    async def create(
        self, *, text_format: Any = None, **options: Unpack[ResponseOptions]
    ) -> ModelResponse[Any]:
        """Create a response. With ``background=True`` it returns at once, ``queued``: poll
        with ``retrieve`` (or ``cancel`` it); such a create is never retried once it may have
        been sent (its error's ``may_have_been_applied`` says so). Raises a typed APIError."""
        body, fmt = self._body(options, text_format, "create")
        response: ModelResponse[Any] = await self._client._request(
            "responses.create",
            "POST",
            self._path,
            self._parse,
            options,
            body=body,
            allowed=RESPONSE_KEYS,
            creates=bool(body.get("background")),
        )
        return _finish(response, fmt, self._client.name)

    @overload
    def stream(
        self,
        *,
        text_format: type[M],
        response_id: str | None = None,
        starting_after: int | None = None,
        **options: Unpack[ResponseOptions],
    ) -> ResponseStream[M]: ...
    @overload
    def stream(
        self,
        *,
        text_format: Any = None,
        response_id: str | None = None,
        starting_after: int | None = None,
        **options: Unpack[ResponseOptions],
    ) -> ResponseStream: ...
    def stream(
        self,
        *,
        text_format: Any = None,
        response_id: str | None = None,
        starting_after: int | None = None,
        **options: Unpack[ResponseOptions],
    ) -> ResponseStream[Any]:
        """A response streamed as typed events (see ``ResponseStream``); retried only until its
        first event arrives (a background one, only while it cannot have been sent).

        With ``response_id`` (and no create parameters) it streams a stored response instead,
        as openai-python's ``stream(response_id=...)`` does: a background response followed to
        its end, or read again; ``starting_after`` skips the events up to that
        ``sequence_number``, to pick up a stream that broke off. Never creates anything."""
        client = self._client
        if response_id is not None:
            return self._resume(response_id, starting_after, text_format, options)
        if starting_after is not None:
            raise ConfigurationError("starting_after resumes a stored response: give response_id")
        body, fmt = self._body(options, text_format, "stream")
        body["stream"] = True
        return ResponseStream(
            client._stream(
                "responses.stream",
                "POST",
                self._path,
                self._events,
                options,
                body=body,
                allowed=RESPONSE_KEYS,
                creates=bool(body.get("background")),
            ),
            fmt,
            client.name,
        )

    def _resume(
        self,
        response_id: str,
        starting_after: int | None,
        text_format: Any,
        options: Mapping[str, Any],
    ) -> ResponseStream[Any]:
        """``GET /responses/{id}?stream=true``: a stored response's events."""
        given = sorted(options.keys() & _CREATE_ONLY)
        if given:
            raise ConfigurationError(
                f"stream(response_id=...) reads a stored response: it takes no {given[0]}"
            )
        self._support.require("retrieve", "retrieve (streaming a stored response)")
        params = {"stream": "true"}
        if starting_after is not None:
            check_int("starting_after", starting_after, 0)
            params["starting_after"] = str(starting_after)
        fmt = None if text_format is None else text_format_of(text_format)
        client = self._client
        return ResponseStream(
            client._stream(
                "responses.stream",
                "GET",
                f"{self._path}/{_response_id(response_id)}",
                self._events,
                options,
                params=params,
            ),
            fmt,
            client.name,
        )

    async def _events(self, response: Response, meta: Meta) -> AsyncIterator[ResponseEvent]:
        """The events up to the stream's end (``[DONE]``, which OVMS sends, or the body's end);
        an ``error`` or ``response.failed`` event raises, and a stream that ends before
        ``response.completed`` or ``.incomplete`` was cut: APIConnectionError."""
        client = self._client
        ended = False
        async for sse in client._sse(response):
            if sse.data.strip() == "[DONE]":
                break
            payload = sse.json()
            kind = payload.get("type") if isinstance(payload, Mapping) else None
            if kind == "error" or (
                kind is None and isinstance(payload, Mapping) and "error" in payload
            ):
                raise client._stream_error(payload, meta)
            if kind == "response.failed":
                failed = payload.get("response")
                error = failed.get("error") if isinstance(failed, Mapping) else None
                raise client._stream_error(
                    {
                        "error": error
                        if isinstance(error, Mapping)
                        else {"message": "the response failed"}
                    },
                    meta,
                )
            event = client._parse(_event, payload, meta)
            ended = ended or kind in _ENDS
            yield event
        if not ended:
            raise client._cut_short(meta, "response.completed")

    # -- the stored response --

    async def retrieve(self, response_id: str, **options: Unpack[HttpOptions]) -> ModelResponse:
        """A stored response, as it stands now (a background one: ``queued``, ``in_progress``,
        then ``completed``, ``failed``, ``incomplete`` or ``cancelled``)."""
        self._support.require("retrieve", "retrieve")
        path = f"{self._path}/{_response_id(response_id)}"
        return await self._client._request("responses.retrieve", "GET", path, self._parse, options)

    async def cancel(self, response_id: str, **options: Unpack[HttpOptions]) -> ModelResponse:
        """Cancel a background response; returns it, ``cancelled`` (cancelling one that already
        ended is an error from the server, which OpenAI answers 400)."""
        self._support.require("cancel", "cancel")
        path = f"{self._path}/{_response_id(response_id)}/cancel"
        return await self._client._request("responses.cancel", "POST", path, self._parse, options)

    async def delete(self, response_id: str, **options: Unpack[HttpOptions]) -> None:
        """Delete a stored response (NotFoundError if there is none by that ID)."""
        self._support.require("delete", "delete")
        path = f"{self._path}/{_response_id(response_id)}"
        await self._client._request(
            "responses.delete", "DELETE", path, lambda payload, meta: None, options
        )


class InputItems:
    """``client.responses.input_items``."""

    __slots__ = ("_responses",)

    def __init__(self, responses: Responses) -> None:
        self._responses = responses

    async def list(
        self, response_id: str, **options: Unpack[InputItemsOptions]
    ) -> ResponseItemList:
        """One page of the items a stored response was given as input, newest first unless
        ``order="asc"``; pass ``after=page.last_id`` for the next page while ``has_more``."""
        responses = self._responses
        responses._support.require("input_items", "input items")
        params: dict[str, str] = {}
        if (after := options.get("after")) is not None:
            check_name("after", after)
            params["after"] = after
        if (limit := options.get("limit")) is not None:
            check_int("limit", limit, 1)
            if limit > 100:
                raise ConfigurationError("limit must be at most 100")
            params["limit"] = str(limit)
        if (order := options.get("order")) is not None:
            if order not in ("asc", "desc"):
                raise ConfigurationError("order must be 'asc' or 'desc'")
            params["order"] = order
        path = f"{responses._path}/{_response_id(response_id)}/input_items"

        def parse(payload: Any, meta: Meta) -> ResponseItemList:
            return ResponseItemList.model_validate(payload)

        return await responses._client._request(
            "responses.input_items.list",
            "GET",
            path,
            parse,
            options,
            params=params or None,
            allowed=INPUT_ITEMS_KEYS,
        )


class InputTokens:
    """``client.responses.input_tokens``."""

    __slots__ = ("_responses",)

    def __init__(self, responses: Responses) -> None:
        self._responses = responses

    async def count(
        self, *, text_format: Any = None, **options: Unpack[InputTokenOptions]
    ) -> InputTokenCount:
        """How many input tokens a create with these arguments would take, without running it."""
        responses = self._responses
        responses._support.require("input_tokens", "input token counting")
        body, _ = responses._body(options, text_format, "input_tokens.count")

        def parse(payload: Any, meta: Meta) -> InputTokenCount:
            return InputTokenCount.model_validate(payload)

        return await responses._client._request(
            "responses.input_tokens.count",
            "POST",
            f"{responses._path}/input_tokens",
            parse,
            options,
            body=body,
            allowed=INPUT_TOKEN_KEYS,
        )
