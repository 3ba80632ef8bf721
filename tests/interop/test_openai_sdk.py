"""The ``openai`` fake, driven by OpenAI's own Python SDK (``AsyncOpenAI``).

Verified with openai 3.57.0 (the ``dev`` extra takes ``openai>=2,<4``). Where the SDK and the fake
disagree the SDK, and the API reference in tests/specs/openai.openapi.yaml, are right.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common
from asyncllm.testing.fakes.openai import REFUSAL_PROMPT, REFUSAL_TEXT
from tests.chat_contract import Order
from tests.interop import MODEL, USER, WEATHER, require

openai = require("openai", "2")


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


# -- chat ----------------------------------------------------------------------------------------


async def test_chat_completion(client: Any, server: FakeServer) -> None:
    completion = await client.chat.completions.create(model=MODEL, messages=USER)
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    sent = server.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test"


async def test_chat_completion_stream(client: Any) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


async def test_stream_helper(client: Any) -> None:
    async with client.chat.completions.stream(model=MODEL, messages=USER) as stream:
        deltas = [e.delta async for e in stream if e.type == "content.delta"]
        final = await stream.get_final_completion()
    assert "".join(deltas) == "echo: hello there"
    assert final.choices[0].message.content == "echo: hello there"
    assert final.choices[0].finish_reason == "stop"


async def test_tool_call(client: Any) -> None:
    completion = await client.chat.completions.create(model=MODEL, messages=USER, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test", "days": 1}

    # The tool's result goes back; the model answers with it.
    answer = await client.chat.completions.create(
        model=MODEL,
        messages=[
            *USER,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert answer.choices[0].message.content == "tool get_weather returned: sunny"


async def test_tool_without_parameters_is_called_with_an_object(client: Any) -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    completion = await client.chat.completions.create(model=MODEL, messages=USER, tools=[tool])
    call = completion.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {}


async def test_streamed_tool_call(client: Any) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=USER, tools=[WEATHER], stream=True
    )
    chunks = [chunk async for chunk in stream]
    calls = [t for c in chunks for t in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert {t.index for t in calls} == {0}
    args = "".join(t.function.arguments or "" for t in calls)
    assert json.loads(args) == {"city": "test", "days": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_stream_helper_with_tools(client: Any) -> None:
    async with client.chat.completions.stream(
        model=MODEL, messages=USER, tools=[WEATHER]
    ) as stream:
        done = [e async for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = await stream.get_final_completion()
    assert [e.name for e in done] == ["get_weather"]
    assert json.loads(done[0].arguments) == {"city": "test", "days": 1}
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test", "days": 1}


# -- structured outputs --------------------------------------------------------------------------

REFUSE: Any = [{"role": "user", "content": REFUSAL_PROMPT}]


async def test_parse_with_a_model(client: Any, server: FakeServer) -> None:
    """The SDK makes its own strict schema from the model: the fake takes it (no stricter than
    OpenAI) and answers JSON the SDK parses into the model."""
    completion = await client.chat.completions.parse(
        model=MODEL, messages=USER, response_format=Order
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Order) and message.refusal is None
    sent = server.requests[-1].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True


async def test_parse_reports_a_refusal(client: Any) -> None:
    completion = await client.chat.completions.parse(
        model=MODEL, messages=REFUSE, response_format=Order
    )
    message = completion.choices[0].message
    assert message.refusal == REFUSAL_TEXT
    assert message.content is None and message.parsed is None


async def test_parse_of_an_answer_cut_at_the_limit_is_a_length_error(client: Any) -> None:
    with pytest.raises(openai.LengthFinishReasonError):
        await client.chat.completions.parse(
            model=MODEL, messages=USER, response_format=Order, max_completion_tokens=3
        )


async def test_stream_helper_parses_and_streams_a_refusal(client: Any) -> None:
    async with client.chat.completions.stream(
        model=MODEL, messages=USER, response_format=Order
    ) as stream:
        parsed = await stream.get_final_completion()
    assert isinstance(parsed.choices[0].message.parsed, Order)
    async with client.chat.completions.stream(
        model=MODEL, messages=REFUSE, response_format=Order
    ) as stream:
        deltas = [e.delta async for e in stream if e.type == "refusal.delta"]
        refused = await stream.get_final_completion()
    assert "".join(deltas) == REFUSAL_TEXT
    assert refused.choices[0].message.refusal == REFUSAL_TEXT
    assert refused.choices[0].message.parsed is None


async def test_a_strict_schema_strict_mode_refuses_is_a_bad_request(client: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=USER, response_format=fmt)
    assert info.value.param == "response_format"
    assert "'additionalProperties' is required to be supplied and to be false" in str(info.value)


# -- embeddings ----------------------------------------------------------------------------------


async def test_embeddings_float(client: Any, server: FakeServer) -> None:
    result = await client.embeddings.create(
        model="fake-embed", input=["alpha", "beta"], encoding_format="float"
    )
    assert server.requests[-1].json["encoding_format"] == "float"
    by_index = {e.index: e.embedding for e in result.data}
    assert by_index == {0: _common.vector("alpha"), 1: _common.vector("beta")}
    assert result.usage.prompt_tokens == result.usage.total_tokens == 2


async def test_embeddings_base64_comes_back_untouched(client: Any, server: FakeServer) -> None:
    result = await client.embeddings.create(
        model="fake-embed", input="alpha", encoding_format="base64"
    )
    assert server.requests[-1].json["encoding_format"] == "base64"
    raw = result.data[0].embedding
    assert isinstance(raw, str)  # the SDK hands back what the server sent
    decoded = struct.unpack("<8f", base64.b64decode(raw))
    assert decoded == pytest.approx(_common.vector("alpha"), abs=1e-6)


async def test_embeddings_default_format_is_decoded_by_the_sdk(
    client: Any, server: FakeServer
) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it into floats itself.
    result = await client.embeddings.create(model="fake-embed", input=["alpha", "beta"])
    assert server.requests[-1].json["encoding_format"] == "base64"
    by_index = {e.index: e.embedding for e in result.data}
    assert by_index[1] == pytest.approx(_common.vector("beta"), abs=1e-6)
    assert len(by_index[0]) == 8


async def test_embeddings_dimensions(client: Any) -> None:
    result = await client.embeddings.create(
        model="fake-embed", input="alpha", dimensions=4, encoding_format="float"
    )
    assert len(result.data[0].embedding) == 4


# -- models --------------------------------------------------------------------------------------


async def test_models_list(client: Any) -> None:
    page = await client.models.list()
    ids = [m.id async for m in page]
    assert ids == ["fake-chat", "fake-embed"]
    assert all(m.object == "model" for m in page.data)


async def test_models_retrieve(client: Any, server: FakeServer) -> None:
    model = await client.models.retrieve("fake-embed")
    assert server.requests[-1].path == "/v1/models/fake-embed"
    assert model.id == "fake-embed"
    assert model.object == "model"
    assert model.owned_by == "asyncllm"
    assert isinstance(model.created, int)


async def test_models_retrieve_unknown_is_not_found(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("nope")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.type == "invalid_request_error"
    assert info.value.param == "model"
    assert info.value.body["message"] == "The model 'nope' does not exist"


# -- raw responses and errors --------------------------------------------------------------------


async def test_with_raw_response(client: Any) -> None:
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=USER)
    assert raw.status_code == 200
    assert raw.headers["x-request-id"].startswith("srv-chatcmpl-")
    assert raw.request_id == raw.headers["x-request-id"]
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert raw.headers["x-request-id"] == f"srv-{completion.id}"


async def test_with_raw_response_embeddings_and_models(client: Any) -> None:
    raw = await client.embeddings.with_raw_response.create(
        model="fake-embed", input="alpha", encoding_format="float"
    )
    assert raw.status_code == 200
    assert raw.parse().data[0].embedding == _common.vector("alpha")
    models = await client.models.with_raw_response.retrieve("fake-chat")
    assert models.parse().id == "fake-chat"


async def test_rate_limit_error(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model=MODEL, messages=USER)
    error = info.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.type == "rate_limit_exceeded"
    assert error.body["message"] == "injected 429"
    assert server.request_count == 1  # max_retries=0: tried once


async def test_bad_request_error(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=[])
    error = info.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert error.body["message"] == "'messages' must be a non-empty array"
    assert error.body["param"] is None


async def test_bad_request_on_embeddings(client: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="fake-embed", input=[], encoding_format="float")


async def test_error_mid_request_on_stream(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model=MODEL, messages=USER, stream=True)


async def test_unknown_route_is_a_not_found_error(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.get("/no/such/route", cast_to=object)
    assert info.value.status_code == 404
    assert info.value.body["message"] == "Not found: GET /v1/no/such/route"
