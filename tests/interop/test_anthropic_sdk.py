"""The ``anthropic`` fake, driven by Anthropic's own Python SDK (``AsyncAnthropic``).

Verified with anthropic 2.14.0 (the ``dev`` extra takes ``anthropic>=2,<3``). Since 2.0 the SDK
sends its key as ``Authorization: Bearer``, where our own ``Claude`` client sends ``x-api-key``:
the fake takes both. Where the SDK and the fake disagree the SDK, and the schemas in
tests/specs/anthropic/, are right.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import anthropic as fake
from tests.interop import MODEL, USER, WEATHER_PARAMETERS, require

anthropic = require("anthropic", "2")

WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": WEATHER_PARAMETERS,
}


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("anthropic") as server:
        yield server


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[Any]:
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.url(), max_retries=0)
    try:
        yield client
    finally:
        await client.close()


def header(server: FakeServer, name: str) -> str | None:
    recorded = server.requests[-1].headers
    return next((v for k, v in recorded.items() if k.lower() == name.lower()), None)


# -- messages ------------------------------------------------------------------------------------


async def test_create(client: Any, server: FakeServer) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=USER)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 2 and message.usage.output_tokens == 3
    assert message.id.startswith("msg_")
    # The SDK authenticates with a Bearer token, not x-api-key.
    assert header(server, "Authorization") == "Bearer sk-ant-test"
    assert header(server, "x-api-key") is None
    assert header(server, "anthropic-version")


async def test_create_with_auth_token(server: FakeServer) -> None:
    client = anthropic.AsyncAnthropic(auth_token="tok", base_url=server.url(), max_retries=0)
    try:
        message = await client.messages.create(model=MODEL, max_tokens=50, messages=USER)
    finally:
        await client.close()
    assert message.content[0].text == "echo: hello there"
    assert header(server, "Authorization") == "Bearer tok"


async def test_no_key_is_an_authentication_error(client: Any) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=USER,
            extra_headers={"Authorization": anthropic.Omit()},
        )
    assert info.value.status_code == 401
    assert info.value.body["error"]["type"] == "authentication_error"


async def test_create_stream(client: Any) -> None:
    stream = await client.messages.create(model=MODEL, max_tokens=50, messages=USER, stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in kinds  # the SDK drops pings
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "echo: hello there"
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 3


async def test_stream_helper(client: Any, server: FakeServer) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=USER) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "echo: hello there"
    assert final.content[0].text == "echo: hello there"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    assert server.requests[-1].json["stream"] is True


async def test_stop_sequences_and_max_tokens(client: Any) -> None:
    stopped = await client.messages.create(
        model=MODEL, max_tokens=50, messages=USER, stop_sequences=[" there"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == " there"
    assert stopped.content[0].text == "echo: hello"
    cut = await client.messages.create(model=MODEL, max_tokens=1, messages=USER)
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "echo:"


# -- tools ---------------------------------------------------------------------------------------


async def test_tool_use_and_result(client: Any) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=50, messages=USER, tools=[WEATHER]
    )
    assert message.stop_reason == "tool_use"
    (use,) = message.content
    assert use.type == "tool_use" and use.id.startswith("toolu_")
    assert use.name == "get_weather"
    assert use.input == {"city": "test", "days": 1}

    answer = await client.messages.create(
        model=MODEL,
        max_tokens=50,
        tools=[WEATHER],
        messages=[
            *USER,
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert answer.content[0].text == "tool get_weather returned: sunny"


async def test_tool_with_an_empty_schema_gets_an_object(client: Any) -> None:
    tool = {"name": "now", "input_schema": {"type": "object"}}
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=USER, tools=[tool])
    assert message.content[0].input == {}


async def test_streamed_tool_use(client: Any) -> None:
    async with client.messages.stream(
        model=MODEL, max_tokens=50, messages=USER, tools=[WEATHER]
    ) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_message()
    partial = "".join(e.partial_json for e in events if e.type == "input_json")
    assert partial == '{"city": "test", "days": 1}'
    use = final.content[0]
    assert use.type == "tool_use" and use.input == {"city": "test", "days": 1}
    assert final.stop_reason == "tool_use"


# -- structured output, thinking, refusals -------------------------------------------------------


class Item(BaseModel):
    name: str
    count: int = Field(default=1, ge=1)


class Order(BaseModel):
    colour: Literal["red", "blue"]
    items: list[Item]
    note: str | None = None


THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


async def test_parse_with_an_output_format(client: Any, server: FakeServer) -> None:
    # The SDK's own schema transform (closed objects, bounds moved into descriptions) passes
    # the fake's checks, and the fake's answer parses into the model.
    message = await client.messages.parse(
        model=MODEL, max_tokens=200, messages=USER, output_format=Order
    )
    assert message.parsed_output == Order(colour="red", items=[Item(name="test")])
    sent = server.requests[-1].json["output_config"]["format"]
    assert sent["type"] == "json_schema"
    assert sent["schema"]["additionalProperties"] is False


async def test_output_config_schema_the_api_refuses(client: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=USER,
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
    assert "'additionalProperties' must be explicitly set to false" in str(info.value)


async def test_thinking_round_trip(client: Any) -> None:
    ask: Any = {"model": MODEL, "max_tokens": 2048, "thinking": THINKING, "tools": [WEATHER]}
    message = await client.messages.create(messages=USER, **ask)
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    thought, use = message.content
    assert thought.thinking == "thinking about: hello there" and thought.signature
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
    }
    history = [*USER, {"role": "assistant", "content": message.content}, result]
    answer = await client.messages.create(messages=history, **ask)
    assert answer.content[-1].text == "tool get_weather returned: sunny"
    stripped = [*USER, {"role": "assistant", "content": [use]}, result]
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(messages=stripped, **ask)
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in str(info.value)


async def test_thinking_stream_helper(client: Any) -> None:
    ask: Any = {"model": MODEL, "max_tokens": 2048, "thinking": THINKING, "messages": USER}
    whole = await client.messages.create(**ask)
    async with client.messages.stream(**ask) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_message()
    thinking = "".join(e.thinking for e in events if e.type == "thinking")
    assert thinking == "thinking about: hello there"
    assert [e.signature for e in events if e.type == "signature"] == [whole.content[0].signature]
    assert final.content[0].model_dump() == whole.content[0].model_dump()


async def test_redacted_thinking(client: Any) -> None:
    messages = [{"role": "user", "content": "REDACT it"}]
    message = await client.messages.create(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=messages
    )
    assert message.content[0].type == "redacted_thinking" and message.content[0].data


async def test_refusal(client: Any) -> None:
    messages = [{"role": "user", "content": "REFUSE THIS"}]
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=messages)
    assert message.stop_reason == "refusal" and message.content == []
    assert message.stop_details.type == "refusal" and message.stop_details.explanation
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=messages) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "refusal"


# -- count_tokens and models ---------------------------------------------------------------------


async def test_count_tokens(client: Any, server: FakeServer) -> None:
    counted = await client.messages.count_tokens(
        model=MODEL, messages=USER, system="be brief today"
    )
    assert counted.input_tokens == 5
    assert server.requests[-1].path == "/v1/messages/count_tokens"


async def test_models_list_follows_pages(client: Any, server: FakeServer) -> None:
    server.state["anthropic.page_cap"] = 1
    page = await client.models.list()
    ids = [m.id async for m in page]
    assert ids == [m["id"] for m in fake.MODELS]
    assert [r.query.get("after_id") for r in server.requests] == [None, *ids[:-1]]
    first = (await client.models.list(limit=1)).data[0]
    assert first.type == "model" and first.display_name == "Fake Chat"
    assert first.created_at.year == 2025
    assert first.lifecycle == "active"


async def test_models_retrieve(client: Any, server: FakeServer) -> None:
    model = await client.models.retrieve("claude-fake-opus")
    assert server.requests[-1].path == "/v1/models/claude-fake-opus"
    assert model.id == "claude-fake-opus" and model.display_name == "Claude Fake Opus"
    with pytest.raises(anthropic.NotFoundError) as info:
        await client.models.retrieve("nope")
    assert info.value.body["error"]["type"] == "not_found_error"


# -- errors --------------------------------------------------------------------------------------


async def test_error_event_mid_stream(client: Any, server: FakeServer) -> None:
    fake.stream_error_next(server, "overloaded_error", after=1)
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=USER) as stream:
            async for text in stream.text_stream:
                seen.append(text)
    assert seen == ["echo:"]
    assert info.value.body["type"] == "error"
    assert info.value.body["error"] == {
        "type": "overloaded_error",
        "message": "injected overloaded_error",
    }


async def test_error_event_mid_raw_stream(client: Any, server: FakeServer) -> None:
    fake.stream_error_next(server, "api_error", after=0)
    stream = await client.messages.create(model=MODEL, max_tokens=50, messages=USER, stream=True)
    with pytest.raises(anthropic.APIStatusError) as info:
        async for _ in stream:
            pass
    assert info.value.body["error"]["type"] == "api_error"


async def test_overloaded_529(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=529)
    with pytest.raises(anthropic.OverloadedError) as info:
        await client.messages.create(model=MODEL, max_tokens=50, messages=USER)
    assert info.value.status_code == 529
    assert info.value.body["error"] == {"type": "overloaded_error", "message": "injected 529"}
    assert info.value.request_id == info.value.body["request_id"]
    assert server.request_count == 1  # max_retries=0: tried once


async def test_rate_limit_and_bad_request(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=429, retry_after="3")
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model=MODEL, max_tokens=50, messages=USER)
    assert limited.value.response.headers["retry-after"] == "3"
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "system", "content": "no"}, *USER],
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"


async def test_unknown_route_is_a_not_found_error(client: Any) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        await client.get("/v1/no/such/route", cast_to=object)
    assert info.value.body["error"] == {
        "type": "not_found_error",
        "message": "Not found: GET /v1/no/such/route",
    }
