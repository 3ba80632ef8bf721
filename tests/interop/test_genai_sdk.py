"""The ``gemini`` fake, driven by Google's own Python SDK (``google-genai``, ``client.aio``).

Verified with google-genai 3.6.1 and 3.0.0 (the ``dev`` extra takes ``google-genai>=3,<4``);
the structured-output, thinking and thought-signature tests with 3.6.1.
Where the SDK and the fake disagree the SDK is right.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common
from tests.interop import MODEL, require

genai = require("google.genai", "3")
types = require("google.genai.types")
errors = require("google.genai.errors")

# The SDK subclasses aiohttp.ClientSession, which aiohttp warns about (the SDK's business).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession from ClientSession:DeprecationWarning"
)


# What the SDK reads from the environment: keys, Vertex AI switches, projects, credentials.


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("gemini") as server:
        yield server


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[Any]:
    options = types.HttpOptions(
        base_url=server.url(""), retry_options=types.HttpRetryOptions(attempts=1)
    )
    client = genai.Client(api_key="k", http_options=options)
    try:
        yield client.aio
    finally:
        await client.aio.aclose()
        client.close()


def get_weather(city: str, days: int) -> str:
    """The weather in a city.

    Args:
        city: the city.
        days: how many days ahead.
    """
    return f"sunny in {city} for {days} day(s)"


# -- generate ------------------------------------------------------------------------------------


async def test_generate_content(client: Any, server: FakeServer) -> None:
    response = await client.models.generate_content(model=MODEL, contents="hello there")
    assert response.text == "echo: hello there"
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content.role == "model"
    usage = response.usage_metadata
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.model_version == MODEL
    assert response.response_id
    sent = server.requests[-1]
    assert sent.path == f"/v1/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == "k"


async def test_generate_content_with_config(client: Any) -> None:
    config = types.GenerateContentConfig(
        system_instruction="be brief", temperature=0.5, max_output_tokens=64, candidate_count=2
    )
    response = await client.models.generate_content(
        model=MODEL, contents="hello there", config=config
    )
    assert [c.content.parts[0].text for c in response.candidates] == ["echo: hello there"] * 2


async def test_generate_content_stream(client: Any) -> None:
    stream = await client.models.generate_content_stream(model=MODEL, contents="hello there")
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks) == "echo: hello there"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count > 0


async def test_blocked_prompt(client: Any) -> None:
    response = await client.models.generate_content(model=MODEL, contents="BLOCKME please")
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert response.text is None


# -- function calling ----------------------------------------------------------------------------


async def test_function_declaration_call(client: Any) -> None:
    declaration = types.FunctionDeclaration(
        name="get_weather",
        description="The weather in a city.",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={
                "city": types.Schema(type=types.Type.STRING),
                "days": types.Schema(type=types.Type.INTEGER),
            },
            required=["city", "days"],
        ),
    )
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[declaration])])
    response = await client.models.generate_content(model=MODEL, contents="weather?", config=config)
    (call,) = response.function_calls
    assert call.name == "get_weather"
    assert call.args == {"city": "test", "days": 1}


async def test_function_declaration_with_json_schema(client: Any, server: FakeServer) -> None:
    declaration = types.FunctionDeclaration(
        name="get_weather",
        parameters_json_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    )
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[declaration])])
    response = await client.models.generate_content(model=MODEL, contents="weather?", config=config)
    sent = server.requests[-1].json["tools"][0]["functionDeclarations"][0]
    assert sent["parameters_json_schema"]["required"] == ["city", "days"]
    assert response.function_calls[0].args == {"city": "test", "days": 1}


async def test_automatic_function_calling(client: Any, server: FakeServer) -> None:
    config = types.GenerateContentConfig(tools=[get_weather])
    response = await client.models.generate_content(model=MODEL, contents="weather?", config=config)
    # The SDK called get_weather(city="test", days=1) and sent its result back.
    assert response.text == "tool get_weather returned: sunny in test for 1 day(s)"
    history = response.automatic_function_calling_history
    assert [c.role for c in history] == ["user", "model", "user"]
    assert history[1].parts[0].function_call.args == {"city": "test", "days": 1}
    assert len(server.requests) == 2


async def test_automatic_function_calling_in_a_stream(client: Any) -> None:
    config = types.GenerateContentConfig(tools=[get_weather])
    stream = await client.models.generate_content_stream(
        model=MODEL, contents="weather?", config=config
    )
    text = "".join([c.text or "" async for c in stream])
    assert text == "tool get_weather returned: sunny in test for 1 day(s)"


# -- chats ---------------------------------------------------------------------------------------


async def test_chat_session(client: Any, server: FakeServer) -> None:
    chat = client.chats.create(model=MODEL)
    first = await chat.send_message("hello there")
    assert first.text == "echo: hello there"
    second = await chat.send_message("and again")
    assert second.text == "echo: and again"
    contents = server.requests[-1].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    history = chat.get_history()
    assert [c.role for c in history] == ["user", "model", "user", "model"]


async def test_chat_session_stream(client: Any) -> None:
    chat = client.chats.create(model=MODEL)
    stream = await chat.send_message_stream("hello there")
    assert "".join([c.text or "" async for c in stream]) == "echo: hello there"
    second = await chat.send_message("and again")
    assert second.text == "echo: and again"
    # The SDK keeps each streamed chunk as a model turn of its own, and sends them all back.
    history = chat.get_history()
    assert [c.role for c in history] == ["user", "model", "model", "model", "user", "model"]
    assert "".join(c.parts[0].text for c in history[1:4]) == "echo: hello there"


async def test_chat_with_automatic_function_calling(client: Any) -> None:
    chat = client.chats.create(model=MODEL, config=types.GenerateContentConfig(tools=[get_weather]))
    response = await chat.send_message("weather?")
    assert response.text == "tool get_weather returned: sunny in test for 1 day(s)"


# -- embeddings and tokens -----------------------------------------------------------------------


async def test_embed_content(client: Any) -> None:
    result = await client.models.embed_content(model="fake-embed", contents="alpha")
    assert result.embeddings[0].values == pytest.approx(_common.vector("alpha"))


async def test_embed_content_batch(client: Any, server: FakeServer) -> None:
    result = await client.models.embed_content(
        model="fake-embed",
        contents=["alpha", "beta"],
        config=types.EmbedContentConfig(output_dimensionality=4),
    )
    assert [e.values for e in result.embeddings] == [
        pytest.approx(_common.vector("alpha", 4)),
        pytest.approx(_common.vector("beta", 4)),
    ]


async def test_count_tokens(client: Any) -> None:
    result = await client.models.count_tokens(model=MODEL, contents="one two three")
    assert result.total_tokens == 3


# -- models --------------------------------------------------------------------------------------


async def test_models_list(client: Any) -> None:
    pager = await client.models.list()
    names = [m.name async for m in pager]
    assert names == [
        "models/fake-chat",
        "models/fake-chat-lite",
        "models/fake-embed",
        "models/fake-chat-pro",
        "models/fake-vision",
    ]


async def test_models_list_page_size(client: Any) -> None:
    pager = await client.models.list(config={"page_size": 1})
    assert [m.name for m in pager.page] == ["models/fake-chat"]


async def test_models_get(client: Any, server: FakeServer) -> None:
    model = await client.models.get(model="fake-embed")
    assert server.requests[-1].path == "/v1/models/fake-embed"
    assert model.name == "models/fake-embed"
    assert model.input_token_limit == 32768
    assert "embedContent" in model.supported_actions


async def test_models_get_unknown_is_not_found(client: Any) -> None:
    with pytest.raises(errors.ClientError) as info:
        await client.models.get(model="nope")
    assert info.value.code == 404
    assert info.value.status == "NOT_FOUND"


# -- errors --------------------------------------------------------------------------------------


async def test_rate_limit_error(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=429)
    with pytest.raises(errors.ClientError) as info:
        await client.models.generate_content(model=MODEL, contents="hello")
    assert info.value.code == 429
    assert info.value.status == "RESOURCE_EXHAUSTED"
    assert server.request_count == 1


async def test_server_error(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=500)
    with pytest.raises(errors.ServerError) as info:
        await client.models.generate_content(model=MODEL, contents="hello")
    assert info.value.code == 500


# -- structured output, thinking and thought signatures ------------------------------------------

GEMINI_3 = "gemini-3-flash-preview"


async def test_response_json_schema(client: Any, server: FakeServer) -> None:
    schema = {
        "type": "object",
        "properties": {"size": {"enum": [2, 3]}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["size", "tags"],
    }  # fmt: skip
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=schema
    )
    response = await client.models.generate_content(model=MODEL, contents="x", config=config)
    assert response.parsed == {"size": 2, "tags": ["test"]}
    assert server.requests[-1].json["generationConfig"]["responseJsonSchema"] == schema


async def test_thoughts_and_thinking_level(client: Any, server: FakeServer) -> None:
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_level="LOW")
    )
    response = await client.models.generate_content(model=GEMINI_3, contents="hi", config=config)
    thought, answer = response.candidates[0].content.parts
    assert (thought.thought, thought.text) == (True, "thinking about: hi")
    assert answer.text == "echo: hi" and answer.thought_signature
    assert response.usage_metadata.thoughts_token_count == 3
    sent = server.requests[-1].json["generationConfig"]["thinkingConfig"]
    assert sent == {"include_thoughts": True, "thinking_level": "LOW"}  # proto names, read too


async def test_gemini_3_function_calling_round_trips_its_signatures(client: Any) -> None:
    # The SDK sends the model's parts back as they came: the fake must take that history.
    config = types.GenerateContentConfig(tools=[get_weather])
    response = await client.models.generate_content(
        model=GEMINI_3, contents="weather?", config=config
    )
    assert response.text == "tool get_weather returned: sunny in test for 1 day(s)"
    call = response.automatic_function_calling_history[1].parts[0]
    assert call.function_call.name == "get_weather" and call.thought_signature
    stream = await client.models.generate_content_stream(
        model=GEMINI_3, contents="weather?", config=config
    )
    text = "".join([c.text or "" async for c in stream])
    assert text == "tool get_weather returned: sunny in test for 1 day(s)"


async def test_gemini_3_chat_session_stream_then_again(client: Any) -> None:
    # The SDK keeps each streamed chunk as a turn, the signed empty-text piece too.
    chat = client.chats.create(model=GEMINI_3)
    stream = await chat.send_message_stream("hello there")
    assert "".join([c.text or "" async for c in stream]) == "echo: hello there"
    assert (await chat.send_message("and again")).text == "echo: and again"


async def test_gemini_3_refuses_a_function_call_without_its_signature(client: Any) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text="weather?")]),
        types.Content(
            role="model",
            parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={}))],
        ),
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"r": 1})],
        ),
    ]
    with pytest.raises(errors.ClientError) as info:
        await client.models.generate_content(model=GEMINI_3, contents=contents)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert "missing a thought_signature" in info.value.message
