"""The Responses fake, driven by OpenAI's own Python SDK (``AsyncOpenAI().responses``): create,
the ``stream`` helper and its accumulated final response, raw streamed events, retrieve, cancel,
delete, input items and input token counting, with the SDK's retries off and no vendor
environment (see ``conftest``). Where the SDK and the fake disagree, the SDK is right."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from asyncllm.testing import FakeServer
from tests.interop import MODEL, WEATHER_PARAMETERS, require

openai = require("openai", "2")

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": WEATHER_PARAMETERS,
    "strict": False,
}


class Colour(BaseModel):
    name: str
    hex: str


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("openai") as server:
        yield server


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=server.url("/v1"), max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def test_create(client: Any, server: FakeServer) -> None:
    response = await client.responses.create(
        model=MODEL, input="hello there", instructions="be brief"
    )
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert server.requests[-1].path == "/v1/responses"
    chained = await client.responses.create(
        model=MODEL, input="and again", previous_response_id=response.id
    )
    assert chained.output_text == "echo: and again"
    assert chained.previous_response_id == response.id


async def test_stream_helper(client: Any) -> None:
    async with client.responses.stream(model=MODEL, input="stream me") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "echo: stream me" == final.output_text
    assert final.status == "completed"


async def test_stream_helper_parses_structured_output(client: Any) -> None:
    async with client.responses.stream(model=MODEL, input="a colour", text_format=Colour) as stream:
        final = await stream.get_final_response()
    assert final.output_parsed == Colour(name="test", hex="test")


async def test_raw_stream_with_a_function_call(client: Any) -> None:
    stream = await client.responses.create(
        model=MODEL, input="weather?", tools=[WEATHER_TOOL], stream=True
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert "".join(pieces) == done.arguments
    [call] = events[-1].response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == done.arguments


async def test_background_retrieve_cancel_delete(client: Any) -> None:
    job = await client.responses.create(model=MODEL, input="long job", background=True)
    assert job.status == "queued"
    assert (await client.responses.retrieve(job.id)).status == "in_progress"
    done = await client.responses.retrieve(job.id)
    assert done.status == "completed" and done.output_text == "echo: long job"
    events = await client.responses.retrieve(job.id, stream=True, starting_after=2)
    seen = [event async for event in events]
    assert seen[0].sequence_number == 3 and seen[-1].type == "response.completed"
    assert seen[-1].response.output_text == "echo: long job"
    other = await client.responses.create(model=MODEL, input="stop", background=True)
    assert (await client.responses.cancel(other.id)).status == "cancelled"
    await client.responses.delete(job.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(job.id)


async def test_input_items_and_token_count(client: Any) -> None:
    response = await client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    )
    page = await client.responses.input_items.list(response.id, order="asc")
    assert [item.content[0].text for item in page.data] == ["one", "two"]
    count = await client.responses.input_tokens.count(model=MODEL, input="a b c")
    assert count.input_tokens == 3
