"""The Responses API against its fake: every call, stream events in order, streams that end
early or fail, background responses (poll, cancel, never sent twice), what each backend serves,
and bad arguments refused before sending. Bodies and answers are checked against OpenAI's spec."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel

import asyncllm
from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common
from tests.test_openai import validator

FAST = asyncllm.RetryConfig(initial_delay=0.0, max_delay=0.0)


class Colour(BaseModel):
    name: str
    hex: str


def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("openai") as fake:
        yield fake


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[asyncllm.OpenAI]:
    c = asyncllm.OpenAI(
        api_key="sk-test-secret",
        base_url=server.url("/v1"),
        model="gpt-test",
        retry=FAST,
        dispatcher=asyncllm.Dispatcher(),
    )
    yield c
    await c.aclose()


def sent(server: FakeServer, path: str = "/v1/responses") -> list[Any]:
    return [r.json for r in server.requests if r.path == path]


async def test_create_with_text_input(server: FakeServer, client: asyncllm.OpenAI) -> None:
    r = await client.responses.create(input="hello there", instructions="be brief")
    assert r.output_text == "echo: hello there"
    assert r.status == "completed"
    assert (
        r.usage is not None and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    )
    assert r.request_id == server.request_ids[-1]
    assert r.server_request_id == f"req_{r.id}"
    assert r.instructions == "be brief"  # type: ignore[attr-defined]  # a field kept as sent
    body = sent(server)[-1]
    assert body == {"model": "gpt-test", "input": "hello there", "instructions": "be brief"}
    validator("CreateResponse").validate(body)
    # The fake's answer itself follows the spec (the client parsed it above).
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url("/v1/responses"), json=body) as answer,
    ):
        validator("Response").validate(await answer.json())


async def test_messages_tools_and_results_round_trip(
    server: FakeServer, client: asyncllm.OpenAI
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = await client.responses.create(input=messages, tools=[get_weather])
    [call] = first.tool_calls
    assert call.name == "get_weather" and call.args() == {"city": "test"}
    assert first.output_text == ""
    # The chat-style history: the assistant's tool call and the tool's result.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
        asyncllm.tool_result(call, "sunny"),
    ]
    second = await client.responses.create(input=messages, tools=[get_weather])
    assert second.output_text == "tool get_weather returned: sunny"
    body = sent(server)[-1]
    assert body["input"][1:] == [
        {
            "type": "function_call",
            "call_id": call.id,
            "name": "get_weather",
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.id, "output": "sunny"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            "strict": False,
            "description": "The weather in a city.",
        }
    ]
    validator("CreateResponse").validate(body)
    # A previous response's output items go back as they came.
    third = await client.responses.create(
        input=[
            *first.output,
            {"type": "function_call_output", "call_id": call.id, "output": "rain"},
        ],
        tools=[get_weather],
    )
    assert third.output_text == "tool get_weather returned: rain"


async def test_builtin_tools_pass_through(server: FakeServer, client: asyncllm.OpenAI) -> None:
    tools = [
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
    ]
    r = await client.responses.create(input="look it up", tools=tools, tool_choice="auto")
    assert r.output_text == "echo: look it up"
    body = sent(server)[-1]
    assert body["tools"] == tools
    validator("CreateResponse").validate(body)


async def test_structured_output(server: FakeServer, client: asyncllm.OpenAI) -> None:
    r = await client.responses.create(input="a colour", text_format=Colour)
    assert r.parsed == Colour(name="test", hex="test")
    fmt = sent(server)[-1]["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "Colour" and fmt["strict"] is True
    assert fmt["schema"]["additionalProperties"] is False
    validator("CreateResponse").validate(sent(server)[-1])
    # Responses' own flat format dict, and a stream, give the same.
    flat = {"type": "json_schema", "name": "colour", "schema": Colour.model_json_schema()}
    raw = await client.responses.create(input="a colour", text_format=flat)
    assert raw.parsed == {"name": "test", "hex": "test"}
    async with client.responses.stream(input="a colour", text_format=Colour) as stream:
        final = await stream.final()
    assert final.parsed == Colour(name="test", hex="test")
    # Cut at max_output_tokens: the answer cannot be whole JSON.
    with pytest.raises(asyncllm.LengthFinishReasonError):
        await client.responses.create(input="a colour", text_format=Colour, max_output_tokens=1)


async def test_a_refusal(server: FakeServer, client: asyncllm.OpenAI) -> None:
    from asyncllm.testing.fakes.openai import REFUSAL_PROMPT, REFUSAL_TEXT

    r = await client.responses.create(input=REFUSAL_PROMPT, text_format=Colour)
    assert r.refusal == REFUSAL_TEXT and r.parsed is None and r.output_text == ""
    async with client.responses.stream(input=REFUSAL_PROMPT, text_format=Colour) as stream:
        seen = [event async for event in stream]
        final = await stream.final()
    assert final.refusal == REFUSAL_TEXT and final.parsed is None
    pieces = [e for e in seen if e.type == "response.refusal.delta"]
    assert "".join(e.delta for e in pieces) == REFUSAL_TEXT  # type: ignore[attr-defined]
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url("/v1/responses"), json=sent(server)[-1]) as answer,
    ):
        raw = (await answer.read()).decode()
    check = validator("ResponseStreamEvent")
    for line in raw.splitlines():
        if line.startswith("data: "):
            check.validate(json.loads(line[6:]))


async def test_chaining_store_and_input_items(server: FakeServer, client: asyncllm.OpenAI) -> None:
    first = await client.responses.create(input="one")
    second = await client.responses.create(
        input=[{"role": "user", "content": "two"}], previous_response_id=first.id
    )
    assert second.output_text == "echo: two"
    assert second.previous_response_id == first.id
    # The chain counts: "one", "echo: one" and "two" are all input now.
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens == first.usage.input_tokens + 2 + 1
    counted = await client.responses.input_tokens.count(input="two", previous_response_id=first.id)
    assert counted.input_tokens == second.usage.input_tokens
    validator("TokenCountsBody").validate(sent(server, "/v1/responses/input_tokens")[-1])
    items = await client.responses.input_items.list(second.id)
    assert [i.text for i in items.data] == ["two"] and not items.has_more
    validator("ResponseItemList").validate(items.model_dump(exclude_none=True))
    retrieved = await client.responses.retrieve(first.id)
    assert retrieved.output_text == "echo: one" and retrieved.id == first.id
    # Not stored: nothing to retrieve or chain.
    unstored = await client.responses.create(input="x", store=False)
    assert sent(server)[-1]["store"] is False
    with pytest.raises(asyncllm.NotFoundError):
        await client.responses.retrieve(unstored.id)
    with pytest.raises(asyncllm.NotFoundError) as caught:
        await client.responses.create(input="y", previous_response_id=unstored.id)
    assert caught.value.code == "previous_response_not_found"
    await client.responses.delete(first.id)
    with pytest.raises(asyncllm.NotFoundError):
        await client.responses.retrieve(first.id)


async def test_input_items_pages(server: FakeServer, client: asyncllm.OpenAI) -> None:
    words = ["a", "b", "c", "d", "e"]
    r = await client.responses.create(input=[{"role": "user", "content": w} for w in words])
    page = await client.responses.input_items.list(r.id, limit=2, order="asc")
    assert [i.text for i in page.data] == ["a", "b"] and page.has_more
    rest = await client.responses.input_items.list(r.id, after=page.last_id, order="asc")
    assert [i.text for i in rest.data] == ["c", "d", "e"] and not rest.has_more
    newest = await client.responses.input_items.list(r.id, limit=1)
    assert [i.text for i in newest.data] == ["e"]  # desc by default, as OpenAI's
    assert server.requests[-1].query == {"limit": "1"}


async def test_stream_events_in_order(server: FakeServer, client: asyncllm.OpenAI) -> None:
    seen: list[asyncllm.ResponseEvent] = []
    async with client.responses.stream(input="stream me please") as stream:
        async for event in stream:
            seen.append(event)
        final = await stream.final()
    kinds = [e.type for e in seen]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    deltas = [e.delta for e in seen if isinstance(e, asyncllm.TextDeltaEvent)]
    assert "".join(deltas) == "echo: stream me please" == final.output_text
    assert (
        isinstance(seen[0], asyncllm.ResponseStateEvent)
        and seen[0].response.status == "in_progress"
    )
    assert isinstance(seen[2], asyncllm.OutputItemEvent) and seen[2].item.type == "message"
    assert isinstance(seen[8], asyncllm.TextDoneEvent) and seen[8].text == final.output_text
    assert final.request_id == stream.request_id == server.request_ids[-1]
    assert sent(server)[-1]["stream"] is True
    # The fake's events themselves follow the spec.
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url("/v1/responses"), json=sent(server)[-1]) as answer,
    ):
        raw = (await answer.read()).decode()
    payloads = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert [p["type"] for p in payloads] == kinds
    check = validator("ResponseStreamEvent")
    for payload in payloads:
        check.validate(payload)


async def test_stream_function_call_arguments(client: asyncllm.OpenAI) -> None:
    async with client.responses.stream(input="weather?", tools=[get_weather]) as stream:
        seen = [event async for event in stream]
        final = await stream.final()
    pieces = [e for e in seen if isinstance(e, asyncllm.FunctionCallArgumentsDeltaEvent)]
    [done] = [e for e in seen if isinstance(e, asyncllm.FunctionCallArgumentsDoneEvent)]
    assert len(pieces) == 2
    assert "".join(p.delta for p in pieces) == done.arguments == final.tool_calls[0].arguments
    assert done.name == "get_weather"
    added = [e for e in seen if isinstance(e, asyncllm.OutputItemEvent)]
    assert [e.type for e in added] == ["response.output_item.added", "response.output_item.done"]
    assert added[1].item.call_id == final.tool_calls[0].id


def _events(*payloads: dict[str, Any]) -> list[bytes]:
    return [_common.sse({"sequence_number": i, **p}, p["type"]) for i, p in enumerate(payloads)]


CREATED = {
    "type": "response.created",
    "response": {"id": "resp_1", "status": "in_progress", "output": []},
}
DELTA = {
    "type": "response.output_text.delta",
    "item_id": "m",
    "output_index": 0,
    "content_index": 0,
    "delta": "hi",
}


@pytest.mark.parametrize(
    "tail",
    [[], [b"data: [DONE]\n\n"]],
    ids=["body ends", "[DONE] first"],
)
async def test_stream_that_ends_early_is_an_error(
    server: FakeServer, client: asyncllm.OpenAI, tail: list[bytes]
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        return await _common.stream(request, [*_events(CREATED, DELTA), *tail])

    server.overrides["/v1/responses"] = cut
    seen: list[str] = []
    with pytest.raises(asyncllm.APIConnectionError, match=r"before response\.completed"):
        async with client.responses.stream(input="hi") as stream:
            async for event in stream:
                seen.append(event.type)
    assert seen == ["response.created", "response.output_text.delta"]  # what came, then the error


async def test_error_and_failed_events_raise_typed_errors(
    server: FakeServer, client: asyncllm.OpenAI
) -> None:
    failed = {
        "type": "response.failed",
        "response": {
            "id": "resp_1",
            "status": "failed",
            "error": {"code": "server_error", "message": "the model broke"},
        },
    }
    error = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None}
    for payload, message, code in (
        (failed, "the model broke", "server_error"),
        (error, "slow down", "rate_limit_exceeded"),
    ):

        async def send(
            request: web.Request, payload: dict[str, Any] = payload
        ) -> web.StreamResponse:
            return await _common.stream(request, _events(CREATED, payload))

        server.overrides["/v1/responses"] = send
        before = server.request_count
        with pytest.raises(asyncllm.APIError, match=message) as caught:
            async with client.responses.stream(input="hi") as stream:
                async for _ in stream:
                    pass
        assert caught.value.code == code
        assert server.request_count == before + 1  # after the first event: never retried


async def test_background_poll_and_cancel(server: FakeServer, client: asyncllm.OpenAI) -> None:
    job = await client.responses.create(input="long job", background=True)
    assert job.status == "queued" and job.output_text == "" and job.background
    assert sent(server)[-1]["background"] is True
    assert (await client.responses.retrieve(job.id)).status == "in_progress"
    done = await client.responses.retrieve(job.id)
    assert done.status == "completed" and done.output_text == "echo: long job"
    other = await client.responses.create(input="never mind", background=True)
    cancelled = await client.responses.cancel(other.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.retrieve(other.id)).status == "cancelled"
    with pytest.raises(asyncllm.BadRequestError):
        await client.responses.cancel(job.id)  # it ended already
    with pytest.raises(asyncllm.ConfigurationError, match="must be stored"):
        await client.responses.create(input="x", background=True, store=False)


async def test_stream_a_stored_response(server: FakeServer, client: asyncllm.OpenAI) -> None:
    job = await client.responses.create(input="long job", background=True)
    async with client.responses.stream(response_id=job.id, starting_after=3) as stream:
        seen = [event async for event in stream]
        final = await stream.final()
    assert seen[0].sequence_number == 4 and seen[-1].type == "response.completed"
    assert final.status == "completed" and final.output_text == "echo: long job"
    last = server.requests[-1]
    assert (last.method, last.path) == ("GET", f"/v1/responses/{job.id}")
    assert last.query == {"stream": "true", "starting_after": "3"}
    async with client.responses.stream(response_id=job.id) as again:
        kinds = [event.type async for event in again]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    stopped = await client.responses.create(input="stop", background=True)
    await client.responses.cancel(stopped.id)
    with pytest.raises(asyncllm.BadRequestError, match="cancelled"):
        async with client.responses.stream(response_id=stopped.id) as stream:
            [_ async for _ in stream]
    before = server.request_count
    with pytest.raises(asyncllm.ConfigurationError, match="takes no input"):
        client.responses.stream(response_id=job.id, input="x")
    with pytest.raises(asyncllm.ConfigurationError, match="give response_id"):
        client.responses.stream(input="x", starting_after=2)
    with pytest.raises(asyncllm.ConfigurationError, match="starting_after"):
        client.responses.stream(response_id=job.id, starting_after=-1)
    assert server.request_count == before


async def test_background_create_is_not_sent_twice(
    server: FakeServer, client: asyncllm.OpenAI
) -> None:
    server.hang_next()
    with pytest.raises(asyncllm.APITimeoutError) as timed_out:
        await client.responses.create(input="paid job", background=True, timeout=0.2, max_retries=3)
    assert timed_out.value.attempts == 1 and timed_out.value.may_have_been_applied
    assert len(sent(server)) == 1
    server.fail_next(status=500)
    with pytest.raises(asyncllm.InternalServerError) as failed:
        await client.responses.create(input="paid job", background=True, max_retries=3)
    assert failed.value.attempts == 1 and failed.value.may_have_been_applied
    # Asked to come back later, it is sent again; so is any create that runs in the foreground.
    server.fail_next(status=429, retry_after="0")
    job = await client.responses.create(input="paid job", background=True, max_retries=3)
    assert job.status == "queued"
    server.fail_next(status=500)
    assert (
        await client.responses.create(input="plain", max_retries=3)
    ).output_text == "echo: plain"
    assert len(sent(server)) == 6


async def test_options_and_errors_are_the_shared_ones(
    server: FakeServer, client: asyncllm.OpenAI
) -> None:
    await client.responses.create(
        input="hi",
        extra_headers={"X-Trace": "t-1"},
        extra_query={"q": "1"},
        extra_body={"metadata": {"k": "v"}},
        priority=asyncllm.Priority.HIGH,
    )
    last = server.requests[-1]
    assert last.headers["X-Trace"] == "t-1" and last.query == {"q": "1"}
    assert last.json["metadata"] == {"k": "v"}
    with pytest.raises(TypeError, match="temprature"):
        await client.responses.create(input="hi", temprature=0.5)  # type: ignore[call-arg]
    record = client.dispatcher.tracker.get(server.request_ids[-1])
    assert record is not None and record.operation == "responses.create"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs input"),
        ({"input": 5}, "input must be"),
        ({"input": []}, "input must be"),
        ({"input": [{"content": "no role"}]}, "role"),
        ({"input": "x", "tools": {"type": "web_search"}}, "tools must be a list"),
        ({"input": "x", "metadata": {"k": 1}}, "metadata"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "truncation": "sometimes"}, "truncation"),
        ({"input": "x", "store": "yes"}, "store"),
        ({"input": "x", "previous_response_id": ""}, "previous_response_id"),
        ({"input": "x", "text_format": 5}, "response_format"),
    ],
)
async def test_bad_arguments_are_refused_before_sending(
    server: FakeServer, client: asyncllm.OpenAI, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=match):
        await client.responses.create(**kwargs)
    with pytest.raises(asyncllm.ConfigurationError, match=match):
        client.responses.stream(**kwargs)
    assert server.request_count == 0


async def test_bad_ids_and_pages_are_refused_before_sending(
    server: FakeServer, client: asyncllm.OpenAI
) -> None:
    for call in (client.responses.retrieve, client.responses.cancel, client.responses.delete):
        with pytest.raises(asyncllm.ConfigurationError):
            await call("")
    with pytest.raises(asyncllm.ConfigurationError):
        await client.responses.input_items.list("resp_1", limit=101)
    with pytest.raises(asyncllm.ConfigurationError):
        await client.responses.input_items.list("resp_1", order="up")
    assert server.request_count == 0
    # An ID is one path segment, whatever it holds.
    with pytest.raises(asyncllm.NotFoundError):
        await client.responses.retrieve("../models")
    assert server.requests[-1].path == "/v1/responses/../models"


# -- the other servers -------------------------------------------------------------------------


def _other(kind: str, server: FakeServer) -> Any:
    url = {"vllm": server.url("/v1"), "groq": server.url("/openai/v1"), "ovms": server.url()}[kind]
    cls = {"vllm": asyncllm.VLLM, "groq": asyncllm.Groq, "ovms": asyncllm.OVMS}[kind]
    return cls(api_key="k", base_url=url, model="m", retry=FAST, dispatcher=asyncllm.Dispatcher())


UNSERVED: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "vllm": [("delete", {}), ("input_items", {}), ("input_tokens", {})],
    "groq": [
        ("create", {"previous_response_id": "resp_1"}),
        ("create", {"store": True}),
        ("create", {"background": True}),
        ("retrieve", {}),
        ("resume", {}),
        ("cancel", {}),
        ("delete", {}),
        ("input_items", {}),
        ("input_tokens", {}),
    ],
    "ovms": [
        ("create", {"instructions": "be brief"}),
        ("create", {"text_format": Colour}),
        ("create", {"previous_response_id": "resp_1"}),
        ("create", {"store": True}),
        ("create", {"background": True}),
        ("create", {"tools": [{"type": "web_search"}]}),
        ("retrieve", {}),
        ("cancel", {}),
        ("delete", {}),
        ("input_items", {}),
        ("input_tokens", {}),
    ],
}


@pytest.mark.parametrize(
    ("kind", "call", "kwargs"),
    [(kind, call, kwargs) for kind, rows in UNSERVED.items() for call, kwargs in rows],
)
async def test_what_a_server_lacks_is_refused_before_sending(
    kind: str, call: str, kwargs: dict[str, Any]
) -> None:
    async with FakeServer(kind) as server:
        client = _other(kind, server)
        responses = client.responses
        with pytest.raises(asyncllm.ConfigurationError, match="Responses API has no"):
            if call == "create":
                await responses.create(input="hi", **kwargs)
            elif call == "input_items":
                await responses.input_items.list("resp_1")
            elif call == "input_tokens":
                await responses.input_tokens.count(input="hi")
            elif call == "resume":
                responses.stream(response_id="resp_1")
            else:
                await getattr(responses, call)("resp_1")
        assert server.request_count == 0
        await client.aclose()


async def test_vllm_stores_retrieves_and_cancels() -> None:
    async with FakeServer("vllm") as server:
        client = _other("vllm", server)
        first = await client.responses.create(input="one", store=True)
        second = await client.responses.create(input="two", previous_response_id=first.id)
        assert second.output_text == "echo: two"
        assert (await client.responses.retrieve(first.id)).output_text == "echo: one"
        job = await client.responses.create(input="job", background=True)
        assert (await client.responses.cancel(job.id)).status == "cancelled"
        assert server.requests[0].path == "/v1/responses"
        await client.aclose()


async def test_groq_creates_with_structured_output_and_streams() -> None:
    async with FakeServer("groq") as server:
        client = _other("groq", server)
        r = await client.responses.create(input="a colour", text_format=Colour, store=False)
        assert r.parsed == Colour(name="test", hex="test")
        assert "store" not in sent(server, "/openai/v1/responses")[-1]  # Groq stores nothing anyway
        async with client.responses.stream(input="hi") as stream:
            assert (await stream.final()).output_text == "echo: hi"
        await client.aclose()


async def test_ovms_streams_under_v3_to_done() -> None:
    async with FakeServer("ovms") as server:
        client = _other("ovms", server)
        async with client.responses.stream(input="hi", tools=[get_weather]) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.final()
        assert kinds[-1] == "response.completed"
        assert final.tool_calls[0].name == "get_weather"
        assert server.requests[-1].path == "/v3/responses"
        r = await client.responses.create(
            input=[{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}]
        )
        assert r.output_text == "echo: hi"
        await client.aclose()


def test_events_have_their_classes() -> None:
    event = asyncllm.ResponseEvent.model_validate(
        {"type": "response.reasoning_summary_text.delta", "delta": "x"}
    )
    assert event.delta == "x"  # type: ignore[attr-defined]  # a kind without a class keeps its fields
    assert (
        json.loads(
            asyncllm.ResponseItem(
                type="message", content=[{"type": "output_text", "text": "a"}]
            ).model_dump_json()
        )["content"][0]["text"]
        == "a"
    )


# -- the README's table -------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = README.parent / "examples" / "responses.py"
COLUMNS = (
    "instructions",
    "text_format",
    "builtin_tools",
    "store",
    "previous_response_id",
    "background",
    "retrieve",
    "cancel",
    "delete",
    "input_items",
    "input_tokens",
)


def test_the_readme_table_says_what_each_client_serves() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text[text.index("<!-- responses:") :].splitlines()[3:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].split("`")[1]] = [c.rstrip("*") == "yes" for c in cells[1:]]
    assert set(rows) == {"OpenAI", "VLLM", "OVMS", "Groq"}
    for name, says in rows.items():
        support = getattr(asyncllm, name).responses_support
        assert says == [getattr(support, column) for column in COLUMNS], name


def test_a_refusal_is_read_and_leaves_parsed_empty() -> None:
    from asyncllm._wire.responses import _finish, text_format_of

    refused = asyncllm.ModelResponse.model_validate(
        {
            "id": "resp_1",
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": "No."}],
                }
            ],
        }
    )
    assert refused.refusal == "No." and refused.output_text == ""
    assert _finish(refused, text_format_of(Colour), "openai").parsed is None
    echoed = asyncllm.ResponseItem.model_validate(
        {"type": "message", "role": "user", "content": "hi"}
    )
    assert echoed.text == "hi"


RESPONSE_CALLS: dict[str, Any] = {
    "create": lambda r, **o: r.create(input="hi", **o),
    "stream": lambda r, **o: r.stream(input="hi", **o),
    "retrieve": lambda r, **o: r.retrieve("resp_1", **o),
    "cancel": lambda r, **o: r.cancel("resp_1", **o),
    "delete": lambda r, **o: r.delete("resp_1", **o),
    "input_items.list": lambda r, **o: r.input_items.list("resp_1", **o),
    "input_tokens.count": lambda r, **o: r.input_tokens.count(input="hi", **o),
}


@pytest.mark.parametrize("method", sorted(RESPONSE_CALLS))
async def test_per_call_max_retries_on_every_responses_call(method: str) -> None:
    from asyncllm.testing import MockResponse, MockTransport

    requests = 0

    def handler(request: Any) -> MockResponse:
        nonlocal requests
        requests += 1
        return MockResponse(503, json={"error": {"message": "busy"}})

    client = asyncllm.OpenAI(
        api_key="k",
        model="m",
        base_url="http://mock.invalid/v1",
        transport=MockTransport(handler),
        dispatcher=asyncllm.Dispatcher(),
        retry=asyncllm.RetryConfig(max_retries=5, initial_delay=0, max_delay=0),
    )
    for max_retries in (0, 2):
        requests = 0
        with pytest.raises(asyncllm.InternalServerError):
            result = RESPONSE_CALLS[method](client.responses, max_retries=max_retries)
            if isinstance(result, asyncllm.Stream):
                async with result as stream:
                    [_ async for _ in stream]
            else:
                await result
        assert requests == max_retries + 1
    await client.aclose()


async def test_the_example_runs_against_the_fake(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = importlib.util.spec_from_file_location("responses_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.main()
    out = capsys.readouterr().out
    assert "reply: echo: Name a colour." in out
    assert "chained: echo: And another?" in out
    assert "echo: Count to five." in out
    assert "background job: completed -> echo: Write a haiku." in out
