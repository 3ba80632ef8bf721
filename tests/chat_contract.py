"""The contract every chat backend keeps, run against the embedded server.

A backend joins by subclassing ``ChatContract`` in its own test file (pytest collects the
subclass, named ``Test...``) and saying which fake protocol to start and how to build a client::

    class TestClaudeContract(ChatContract):
        protocol = "anthropic"

        def make_client(self, server, **kwargs):
            return asyncllm.Claude(api_key="test", base_url=server.url(), **kwargs)

Structured output and reasoning are tested by what the backend's API has, which its subclass
says in class attributes (a test skips only by them, saying which):

- ``structured``: ``response_format`` takes a model and a JSON schema, imposed by the server
  (False skips the structured tests).
- ``open_maps_refused``: the vendor's schema cannot express ``dict[str, int]``, so it is a
  ``ConfigurationError`` before anything is sent (False: it is sent and parsed).
- ``refusal_prompt``: a user text the fake refuses in the API's own refusal shape ("REFUSE THIS"
  everywhere); None where the API has no refusal.
- ``reasoning_options``: call options that make the fake reason, where the API returns reasoning
  text; None where it returns none.
- ``length_options``: call options that make the fake cut a structured answer at its token
  limit, with the API's own finish reason.
- ``signed_history``: the API needs the reasoning of a tool-calling turn sent back (Claude's
  signed thinking, Gemini's thought signatures), and its fake refuses a history without it.
- ``streamed_choices``: ``stream_chat(n=2)`` streams two choices; False where the API gives
  one choice a stream (``n`` > 1 is then a ``ConfigurationError``, nothing sent).
- ``streamed_tool_finish``: a streamed tool call ends with a finish reason; False where the
  API sends none (TGI), so that ``final().finish_reason`` is None there.
- ``usage_counts``: which of ``cached_tokens`` and ``reasoning_tokens`` the API reports (given
  ``reasoning_options`` for the latter); the others are None.

Tools, likewise:

- ``strict_tools``: the server holds a ``strict`` tool's arguments to its schema, and the
  request shows it (``strict_on_wire``); False: a strict tool is a ``ConfigurationError``.
- ``builtin_tool``: one of the vendor's built-in tools, offered beside a function
  (``builtin_on_wire`` finds it in the request; ``builtin_sent_back`` finds, in the next
  request, what the answer holds of it); None where the backend has none. ``builtin_kinds``:
  every kind of built-in tool it takes (any other is a ``ConfigurationError`` naming it).
"""

from __future__ import annotations

import enum
import json
import threading
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

import asyncllm
from asyncllm._models import REASONING_KEYS
from asyncllm._structured import LENGTH_REASONS
from asyncllm.testing import FakeServer

NO_WAIT = asyncllm.RetryConfig(max_retries=3, initial_delay=0.0, max_delay=0.0)

STATUS_CLASSES = [
    (400, asyncllm.BadRequestError),
    (401, asyncllm.AuthenticationError),
    (403, asyncllm.PermissionDeniedError),
    (404, asyncllm.NotFoundError),
    (422, asyncllm.UnprocessableEntityError),
    (429, asyncllm.RateLimitError),
    (500, asyncllm.InternalServerError),
    (503, asyncllm.InternalServerError),
]


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


# A structured answer with an enum, a Literal, a default with a bound and a list of sub-models.
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(BaseModel):
    name: str
    count: int = Field(default=1, ge=1)
    size: Literal[1, 2, 3] = 1


class Order(BaseModel):
    colour: Colour
    items: list[Item]
    note: str | None = None


class Counts(BaseModel):
    """An open map: what OpenAI-style strict schemas cannot express."""

    counts: dict[str, int]


class Tree(BaseModel):
    """A recursive model: its schema is a reference at the root."""

    value: int
    children: list[Tree] = []


ASK_ORDER = [{"role": "user", "content": "the order as JSON"}]
ASK_WEATHER = [{"role": "user", "content": "weather in Paris?"}]
# A built-in tool of each vendor that has them: a backend takes its own, and refuses the others.
FOREIGN_TOOLS: list[dict[str, Any]] = [
    {"googleSearch": {}},
    {"type": "web_search_20250305", "name": "web_search"},
    {"type": "custom", "custom": {"name": "shell"}},
    {"type": "web_search"},
]
ASK_THOUGHT = [{"role": "user", "content": "think it over"}]


async def read_all(stream: Any) -> tuple[list[Any], Any]:
    """Every chunk of a chat stream, and its ``final()`` response."""
    async with stream:
        chunks = [chunk async for chunk in stream]
        return chunks, await stream.final()


class ChatContract:
    protocol: ClassVar[str]
    model: ClassVar[str] = "fake-chat"
    # Protocols that answer 429 with a vendor body still map to RateLimitError, etc.

    # What the API has for structured output and reasoning (see the module docstring).
    structured: ClassVar[bool] = True
    open_maps_refused: ClassVar[bool] = False
    refusal_prompt: ClassVar[str | None] = None
    reasoning_options: ClassVar[dict[str, Any] | None] = None
    length_options: ClassVar[dict[str, Any]] = {"max_tokens": 3}
    signed_history: ClassVar[bool] = False
    streamed_choices: ClassVar[bool] = True
    streamed_tool_finish: ClassVar[bool] = True
    usage_counts: ClassVar[frozenset[str]] = frozenset()

    # What the API has for tools (see the module docstring).
    strict_tools: ClassVar[bool] = True
    builtin_tool: ClassVar[dict[str, Any] | None] = None
    builtin_kinds: ClassVar[frozenset[str]] = frozenset()

    def strict_on_wire(self, body: dict[str, Any]) -> bool:
        """Whether a request body asks for strict tool calls (OpenAI's shape by default)."""
        return any(t.get("function", {}).get("strict") is True for t in body.get("tools") or ())

    def builtin_on_wire(self, body: dict[str, Any]) -> bool:
        """Whether a request body offers ``builtin_tool`` beside a function."""
        tools = body.get("tools") or ()
        return self.builtin_tool in tools and len(tools) >= 2

    def builtin_sent_back(self, body: dict[str, Any]) -> bool:
        """Whether a request body sends back what an answer held of the built-in tool's work
        (nothing to send by default)."""
        return True

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        raise NotImplementedError

    @pytest.fixture
    async def server(self) -> AsyncIterator[FakeServer]:
        async with FakeServer(self.protocol) as server:
            yield server

    @pytest.fixture
    async def client(self, server: FakeServer) -> AsyncIterator[Any]:
        client = self.make_client(server, retry=NO_WAIT)
        try:
            yield client
        finally:
            await client.aclose()

    async def test_chat(self, client: Any) -> None:
        r = await client.chat([{"role": "user", "content": "hello world"}], model=self.model)
        assert r.text == "echo: hello world"
        assert r.message.role == "assistant"
        assert r.tool_calls == []
        assert r.request_id.startswith("req_")
        assert r.usage is not None and r.usage.prompt_tokens
        assert r.finish_reason is not None

    async def test_system_message_is_accepted(self, client: Any) -> None:
        r = await client.chat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ok then"}],
            model=self.model,
        )
        assert r.text == "echo: ok then"

    async def test_stream_chat(self, client: Any) -> None:
        deltas = []
        async with client.stream_chat(
            [{"role": "user", "content": "hello streaming world"}], model=self.model
        ) as stream:
            async for chunk in stream:
                deltas.append(chunk.delta)
        assert "".join(deltas) == "echo: hello streaming world"
        assert len([d for d in deltas if d]) >= 2  # chunk by chunk, not one buffered piece

    async def test_tool_round_trip(self, client: Any) -> None:
        messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
        first = await client.chat(messages, model=self.model, tools=[get_weather])
        assert len(first.tool_calls) == 1
        call = first.tool_calls[0]
        assert call.name == "get_weather"
        assert call.args() == {"city": "test"}
        result = get_weather(**call.args())
        messages += [first.message, asyncllm.tool_result(call, result)]
        second = await client.chat(messages, model=self.model, tools=[get_weather])
        assert second.text == "tool get_weather returned: sunny in test"
        assert second.tool_calls == []

    @pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
    async def test_status_maps_to_class(
        self, server: FakeServer, status: int, cls: type[Exception]
    ) -> None:
        client = self.make_client(server, max_retries=0)
        server.fail_next(1, status=status)
        try:
            with pytest.raises(cls) as info:
                await client.chat([{"role": "user", "content": "x"}], model=self.model)
        finally:
            await client.aclose()
        error: Any = info.value
        assert error.status_code == status
        assert error.request_id == server.request_ids[-1]
        assert error.body
        assert server.request_count == 1

    async def test_429_with_retry_after_is_retried(self, client: Any, server: FakeServer) -> None:
        server.fail_next(2, status=429, retry_after="0")
        r = await client.chat([{"role": "user", "content": "after limits"}], model=self.model)
        assert r.text == "echo: after limits"
        assert server.request_count == 3

    async def test_breaker_opens(self, server: FakeServer) -> None:
        client = self.make_client(
            server,
            max_retries=0,
            breaker=asyncllm.BreakerConfig(failure_threshold=2, reset_timeout=60),
        )
        server.fail_next(2, status=503)
        try:
            for _ in range(2):
                with pytest.raises(asyncllm.InternalServerError):
                    await client.chat([{"role": "user", "content": "x"}], model=self.model)
            with pytest.raises(asyncllm.CircuitOpenError):
                await client.chat([{"role": "user", "content": "x"}], model=self.model)
        finally:
            await client.aclose()
        assert server.request_count == 2

    async def test_request_id_on_the_wire(self, client: Any, server: FakeServer) -> None:
        with asyncllm.request_context("contract-id-1"):
            r = await client.chat([{"role": "user", "content": "id?"}], model=self.model)
        assert r.request_id == "contract-id-1"
        assert list(server.request_ids) == ["contract-id-1"]
        assert client.dispatcher.tracker.get("contract-id-1").status.value == "succeeded"

    # -- structured output and reasoning ----------------------------------------------------------

    def needs_structured(self) -> None:
        if not self.structured:
            pytest.skip("structured = False: this API imposes no schema on the answer")

    async def test_structured_output_is_parsed_into_the_model(self, client: Any) -> None:
        self.needs_structured()
        r = await client.chat(ASK_ORDER, model=self.model, response_format=Order)
        assert isinstance(r.parsed, Order), r.text
        assert r.parsed.items and isinstance(r.parsed.items[0], Item)
        assert r.parsed == Order.model_validate_json(r.text)
        assert r.refusal is None
        chunks, final = await read_all(
            client.stream_chat(ASK_ORDER, model=self.model, response_format=Order)
        )
        assert isinstance(final.parsed, Order)
        assert (final.text, final.parsed) == (r.text, r.parsed)
        assert "".join(c.delta for c in chunks) == r.text

    async def test_a_schema_dict_is_parsed_into_json(self, client: Any) -> None:
        self.needs_structured()
        r = await client.chat(
            ASK_ORDER, model=self.model, response_format=Order.model_json_schema()
        )
        assert isinstance(r.parsed, dict), r.text
        assert Order.model_validate(r.parsed) == Order.model_validate_json(r.text)

    async def test_open_maps_are_refused_unsent_or_parsed(
        self, client: Any, server: FakeServer
    ) -> None:
        self.needs_structured()
        if not self.open_maps_refused:
            r = await client.chat(ASK_ORDER, model=self.model, response_format=Counts)
            assert isinstance(r.parsed, Counts), r.text
            return
        with pytest.raises(asyncllm.ConfigurationError):
            await client.chat(ASK_ORDER, model=self.model, response_format=Counts)
        with pytest.raises(asyncllm.ConfigurationError):
            await read_all(client.stream_chat(ASK_ORDER, model=self.model, response_format=Counts))
        assert server.request_count == 0

    async def test_a_structured_answer_cut_at_the_token_limit_raises(self, client: Any) -> None:
        self.needs_structured()
        whole = await client.chat(ASK_ORDER, model=self.model, response_format=Order)
        with pytest.raises(asyncllm.LengthFinishReasonError) as info:
            await client.chat(
                ASK_ORDER, model=self.model, response_format=Order, **self.length_options
            )
        error = info.value
        assert error.response.finish_reason in LENGTH_REASONS
        assert error.text and whole.text.startswith(error.text) and error.text != whole.text
        assert error.request_id == error.response.request_id
        with pytest.raises(asyncllm.LengthFinishReasonError) as streamed:
            await read_all(
                client.stream_chat(
                    ASK_ORDER, model=self.model, response_format=Order, **self.length_options
                )
            )
        assert streamed.value.text == error.text

    async def test_a_refusal_is_reported_not_parsed(self, client: Any) -> None:
        if self.refusal_prompt is None:
            pytest.skip("refusal_prompt = None: this API has no refusal field")
        self.needs_structured()
        ask = [{"role": "user", "content": self.refusal_prompt}]
        r = await client.chat(ask, model=self.model, response_format=Order)
        assert r.refusal and r.parsed is None
        chunks, final = await read_all(
            client.stream_chat(ask, model=self.model, response_format=Order)
        )
        assert "".join(c.refusal for c in chunks) == r.refusal
        assert (final.refusal, final.parsed, final.text) == (r.refusal, None, r.text)

    @pytest.mark.parametrize("structured_answer", [False, True], ids=["text", "structured"])
    async def test_reasoning_comes_apart_from_the_answer(
        self, client: Any, structured_answer: bool
    ) -> None:
        if self.reasoning_options is None:
            pytest.skip("reasoning_options = None: this API returns no reasoning text")
        options = dict(self.reasoning_options)
        if structured_answer:
            self.needs_structured()
            options["response_format"] = Order
        r = await client.chat(ASK_THOUGHT, model=self.model, **options)
        assert r.reasoning and r.text
        assert r.reasoning not in r.text
        chunks, final = await read_all(client.stream_chat(ASK_THOUGHT, model=self.model, **options))
        assert "".join(c.reasoning for c in chunks) == r.reasoning
        assert "".join(c.delta for c in chunks) == r.text
        assert (final.text, final.reasoning, final.parsed) == (r.text, r.reasoning, r.parsed)
        if structured_answer:
            assert isinstance(r.parsed, Order)

    async def test_reasoning_goes_back_with_the_tool_loop(self, client: Any) -> None:
        if not self.signed_history:
            pytest.skip("signed_history = False: this API needs no reasoning sent back")
        assert self.reasoning_options is not None, "signed_history needs reasoning_options"
        options = {**self.reasoning_options, "tools": [get_weather]}
        ask = [{"role": "user", "content": "weather in Paris?"}]
        called = await client.chat(ask, model=self.model, **options)
        _, streamed = await read_all(client.stream_chat(ask, model=self.model, **options))
        for turn in (called, streamed):  # the message of a call, and the one a stream assembles
            assert len(turn.tool_calls) == 1
            call = turn.tool_calls[0]
            result = asyncllm.tool_result(call, get_weather(**call.args()))
            answer = await client.chat([*ask, turn.message, result], model=self.model, **options)
            assert "sunny in test" in answer.text
            sent = turn.message.to_dict()
            stripped = {k: v for k, v in sent.items() if k not in REASONING_KEYS}
            assert stripped != sent, "the assistant message carries no reasoning to send back"
            with pytest.raises(asyncllm.BadRequestError):
                await client.chat([*ask, stripped, result], model=self.model, **options)

    # -- tools --------------------------------------------------------------------------------------

    async def test_strict_tools_are_sent_or_refused(self, client: Any, server: FakeServer) -> None:
        strict = asyncllm.Tool.from_function(get_weather, strict=True)
        as_dict = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": strict.parameters,
                "strict": True,
            },
        }
        for tool in (strict, as_dict):
            if not self.strict_tools:
                with pytest.raises(asyncllm.ConfigurationError, match="strict"):
                    await client.chat(ASK_WEATHER, model=self.model, tools=[tool])
                with pytest.raises(asyncllm.ConfigurationError, match="strict"):
                    await read_all(client.stream_chat(ASK_WEATHER, model=self.model, tools=[tool]))
                continue
            r = await client.chat(ASK_WEATHER, model=self.model, tools=[tool])
            assert [c.name for c in r.tool_calls] == ["get_weather"]
            assert self.strict_on_wire(server.requests[-1].json)
        if not self.strict_tools:
            assert server.request_count == 0
        plain = await client.chat(ASK_WEATHER, model=self.model, tools=[get_weather])
        assert plain.tool_calls and not self.strict_on_wire(server.requests[-1].json)

    async def test_foreign_builtin_tools_are_refused_unsent(
        self, client: Any, server: FakeServer
    ) -> None:
        foreign = [
            t for t in FOREIGN_TOOLS if asyncllm.Tool.coerce(t).kind not in self.builtin_kinds
        ]
        assert foreign
        for tool in foreign:
            kind = asyncllm.Tool.coerce(tool).kind
            with pytest.raises(asyncllm.ConfigurationError, match=kind):
                await client.chat(ASK_WEATHER, model=self.model, tools=[get_weather, tool])
        assert server.request_count == 0

    async def test_builtin_tools_go_beside_functions(self, client: Any, server: FakeServer) -> None:
        if self.builtin_tool is None:
            pytest.skip("builtin_tool = None: this API has no built-in tools")
        tools = [get_weather, self.builtin_tool]
        first = await client.chat(ASK_WEATHER, model=self.model, tools=tools)
        assert self.builtin_on_wire(server.requests[-1].json)
        _, streamed = await read_all(client.stream_chat(ASK_WEATHER, model=self.model, tools=tools))
        # The streamed answer keeps what the non-streamed one keeps of the tool's work.
        kept = REASONING_KEYS | {"tool_calls"}
        assert set(streamed.message.to_dict()) & kept == set(first.message.to_dict()) & kept
        for turn in (first, streamed):
            assert [c.name for c in turn.tool_calls] == ["get_weather"]
            call = turn.tool_calls[0]
            result = asyncllm.tool_result(call, get_weather(**call.args()))
            answer = await client.chat(
                [*ASK_WEATHER, turn.message, result], model=self.model, tools=tools
            )
            assert answer.text == "tool get_weather returned: sunny in test"
            assert self.builtin_sent_back(server.requests[-1].json)

    async def test_run_tools_runs_sync_and_async_functions(self, client: Any) -> None:
        threads: list[int] = []

        def get_weather(city: str, unit: str = "celsius") -> str:
            threads.append(threading.get_ident())
            return f"sunny in {city}"

        run = await client.run_tools(ASK_WEATHER, tools=[get_weather], model=self.model)
        assert run.response.text == "tool get_weather returned: sunny in test"
        assert run.response.tool_calls == []
        roles = [m["role"] if isinstance(m, dict) else m.role for m in run.messages]
        assert roles == ["user", "assistant", "tool", "assistant"]
        assert run.messages[-1] is run.response.message
        assert threads and threads[0] != threading.get_ident()  # a sync tool runs in a thread

        async def weather(city: str, unit: str = "celsius") -> dict[str, str]:
            return {"sky": "clear", "city": city}

        pair = (asyncllm.Tool.from_function(get_weather), weather)
        run = await client.run_tools(ASK_WEATHER, tools=[pair], model=self.model)
        assert "clear" in run.response.text and run.response.text.startswith("tool get_weather")
        # The transcript goes on as any conversation does.
        more = await client.chat(
            [*run.messages, {"role": "user", "content": "and then"}], model=self.model
        )
        assert more.text == "echo: and then"

    async def test_run_tools_stops_after_max_turns(self, client: Any, server: FakeServer) -> None:
        with pytest.raises(asyncllm.MaxTurnsExceededError) as info:
            await client.run_tools(ASK_WEATHER, tools=[get_weather], model=self.model, max_turns=1)
        error = info.value
        assert server.request_count == 1
        assert len(error.messages) == 2 and error.response.tool_calls
        assert error.messages[-1] is error.response.message

    async def test_a_failing_tool_is_told_or_raised(self, client: Any, server: FakeServer) -> None:
        def get_weather(city: str) -> str:
            raise RuntimeError(f"no sky over {city}")

        run = await client.run_tools(ASK_WEATHER, tools=[get_weather], model=self.model)
        assert "error: 'get_weather' raised RuntimeError: no sky over test" in run.response.text
        with pytest.raises(asyncllm.ToolCallError) as info:
            await client.run_tools(
                ASK_WEATHER, tools=[get_weather], model=self.model, on_error="raise"
            )
        error = info.value
        assert isinstance(error.__cause__, RuntimeError)
        assert error.call.name == "get_weather" and len(error.messages) == 2
        assert server.request_count == 3

    # -- the streamed answer, choices, usage and the HTTP response ----------------------------

    def final_cases(self) -> list[dict[str, Any]]:
        """Call options whose streamed ``final()`` must equal the non-streamed answer: plain
        text, a tool call, and reasoning and structured output where the API has them."""
        cases: list[dict[str, Any]] = [{}, {"tools": [get_weather]}]
        if self.reasoning_options is not None:
            cases.append(dict(self.reasoning_options))
        if self.structured:
            cases.append({"response_format": Order})
        return cases

    async def test_final_is_the_answer_a_call_gives(self, client: Any) -> None:
        ask = [{"role": "user", "content": "weather in Paris?"}]
        for options in self.final_cases():
            r = await client.chat(ask, model=self.model, **options)
            chunks, final = await read_all(client.stream_chat(ask, model=self.model, **options))
            expected = answer_of(r)
            if final.tool_calls and not self.streamed_tool_finish:
                assert final.finish_reason is None
                expected["finish_reason"] = None
            assert answer_of(final) == expected, options
            assert "".join(c.delta for c in chunks) == r.text
            assert all(c.index == 0 for c in chunks)
            assert final.request_id == chunks[0].request_id

    async def test_two_choices_stream_apart(self, client: Any, server: FakeServer) -> None:
        ask = [{"role": "user", "content": "two of them"}]
        if not self.streamed_choices:
            with pytest.raises(asyncllm.ConfigurationError):
                await read_all(client.stream_chat(ask, model=self.model, n=2))
            assert server.request_count == 0
            return
        one = await client.chat(ask, model=self.model)
        chunks, final = await read_all(client.stream_chat(ask, model=self.model, n=2))
        assert {c.index for c in chunks if c.delta} == {0, 1}
        for index in (0, 1):
            said = "".join(c.delta for c in chunks if c.index == index)
            assert said == one.text == final.choices[index].content
        assert len(final.choices) == 2
        assert (final.text, final.message, final.finish_reason) == (
            one.text,
            final.choices[0],
            one.finish_reason,
        )

    async def test_usage_has_one_meaning(self, client: Any) -> None:
        options = dict(self.reasoning_options or {})
        r = await client.chat(ASK_THOUGHT, model=self.model, **options)
        _, final = await read_all(client.stream_chat(ASK_THOUGHT, model=self.model, **options))
        for usage in (r.usage, final.usage):
            assert usage is not None
            assert usage.prompt_tokens and usage.completion_tokens
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            for name in ("cached_tokens", "reasoning_tokens"):
                count = getattr(usage, name)
                if name in self.usage_counts:
                    assert isinstance(count, int), name
                else:
                    assert count is None, name
            assert (usage.cached_tokens or 0) <= usage.prompt_tokens
            assert (usage.reasoning_tokens or 0) < usage.completion_tokens
        assert final.usage == r.usage

    async def test_the_http_response_is_within_reach(self, client: Any) -> None:
        ask = [{"role": "user", "content": "headers please"}]
        r = await client.chat(ask, model=self.model)
        assert r.http is not None and r.http.status == 200
        assert "json" in r.http.headers["content-type"]  # the response's own, any case
        assert r.http.headers["Content-Type"] == r.http.headers["content-type"]
        assert "http" not in r.model_dump()
        async with client.stream_chat(ask, model=self.model) as stream:
            assert stream.http is None  # nothing has arrived yet
            first = await stream.__anext__()
            assert first.request_id == stream.request_id
            assert stream.http is not None and stream.http.status == 200
            kind = stream.http.headers["content-type"]
            assert "event-stream" in kind or "ndjson" in kind, kind
            final = await stream.final()
        assert final.http == stream.http


def answer_of(r: Any) -> dict[str, Any]:
    """What a streamed and a non-streamed answer must share: the fields of a ``ChatResponse``
    but the request's own (ids, raw body, headers). What the server makes anew for every call
    is left out: tool call ids, reasoning signatures (Claude's, Gemini's); tool arguments are
    compared as JSON (TGI sends an object, or text as the model wrote it)."""
    fields = set(asyncllm.ChatResponse.model_fields) - {"request_id", "server_request_id", "raw"}
    dump = r.model_dump(include=fields)
    for message in [dump["message"], *dump["choices"]]:
        for call in message.get("tool_calls") or ():
            call["id"], call["arguments"] = "id", json.loads(call["arguments"])
        for key in ("thinking_blocks", "gemini_parts"):
            for block in message.get(key) or ():
                for name in ("signature", "thoughtSignature"):
                    if name in block:
                        block[name] = "signed"
    for call in dump["tool_calls"]:
        call["id"], call["arguments"] = "id", json.loads(call["arguments"])
    return dump
