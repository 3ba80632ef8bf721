"""The ``ollama`` fake, driven by Ollama's own Python SDK (``ollama.AsyncClient``).

Verified with ollama 0.6.3 (the ``dev`` extra takes ``ollama>=0.6,<0.7``). Where the SDK and the
fake disagree the SDK is right. The SDK has no ``version()`` call: ``/api/version`` is asked for
through the SDK's own transport (``_request_raw``), as its other calls are. The SDK retries nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common
from tests.interop import MODEL, USER, WEATHER, require

ollama = require("ollama")  # it has no __version__ to check a minimum against


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("ollama") as server:
        yield server


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[Any]:
    assert server.url("").startswith("http://127.0.0.1:")
    client = ollama.AsyncClient(host=server.url(""))
    try:
        yield client
    finally:
        await client.close()


# -- chat ----------------------------------------------------------------------------------------


async def test_chat(client: Any, server: FakeServer) -> None:
    response = await client.chat(model=MODEL, messages=USER)
    assert response.model == MODEL
    assert response.done is True and response.done_reason == "stop"
    assert response.message.role == "assistant"
    assert response.message.content == "echo: hello there"
    assert response.prompt_eval_count == 2 and response.eval_count == 3
    assert response.total_duration > 0
    assert response.created_at
    sent = server.requests[-1]
    assert sent.path == "/api/chat"
    assert sent.json["stream"] is False
    assert "authorization" not in {k.lower() for k in sent.headers}


async def test_chat_stream(client: Any) -> None:
    stream = await client.chat(model=MODEL, messages=USER, stream=True)
    parts = [part async for part in stream]
    assert "".join(p.message.content or "" for p in parts) == "echo: hello there"
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 3


async def test_chat_tools(client: Any, server: FakeServer) -> None:
    response = await client.chat(model=MODEL, messages=USER, tools=[WEATHER])
    (call,) = response.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "test", "days": 1}

    answer = await client.chat(
        model=MODEL,
        messages=[
            *USER,
            response.message,
            {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert answer.message.content == "tool get_weather returned: sunny"
    assert server.requests[-1].json["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "test",
        "days": 1,
    }


async def test_chat_tools_from_a_python_function(client: Any) -> None:
    def add_two_numbers(a: int, b: int) -> int:
        """Add two numbers.

        Args:
          a: The first number
          b: The second number
        """
        return a + b

    response = await client.chat(model=MODEL, messages=USER, tools=[add_two_numbers])
    (call,) = response.message.tool_calls
    assert call.function.name == "add_two_numbers"
    assert add_two_numbers(**call.function.arguments) == 2


async def test_chat_tools_stream(client: Any) -> None:
    stream = await client.chat(model=MODEL, messages=USER, tools=[WEATHER], stream=True)
    parts = [part async for part in stream]
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert calls[0].function.arguments == {"city": "test", "days": 1}
    assert parts[-1].done is True


async def test_chat_think(client: Any, server: FakeServer) -> None:
    response = await client.chat(model=MODEL, messages=USER, think=True)
    assert server.requests[-1].json["think"] is True
    assert response.message.content == "echo: hello there"
    assert response.message.thinking == "thinking about: echo: hello there"
    stream = await client.chat(model=MODEL, messages=USER, think=True, stream=True)
    parts = [part async for part in stream]
    assert "".join(p.message.thinking or "" for p in parts) == "thinking about: echo: hello there"
    assert "".join(p.message.content or "" for p in parts) == "echo: hello there"


async def test_chat_think_level(client: Any, server: FakeServer) -> None:
    response = await client.chat(model=MODEL, messages=USER, think="low")
    assert server.requests[-1].json["think"] == "low"
    assert response.message.thinking


async def test_chat_format_schema(client: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    response = await client.chat(model=MODEL, messages=USER, format=schema)
    assert json.loads(response.message.content) == {"name": "test", "age": 1}


async def test_chat_format_json(client: Any) -> None:
    response = await client.chat(model=MODEL, messages=USER, format="json")
    assert isinstance(json.loads(response.message.content), dict)


async def test_chat_options_and_keep_alive(client: Any, server: FakeServer) -> None:
    response = await client.chat(
        model=MODEL, messages=USER, options={"temperature": 0, "seed": 1}, keep_alive="1m"
    )
    assert response.message.content == "echo: hello there"
    assert server.requests[-1].json["options"] == {"temperature": 0, "seed": 1}


async def test_chat_unknown_model(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="nope", messages=USER)
    assert info.value.status_code == 404
    assert info.value.error == "model 'nope' not found"


async def test_chat_stream_error_midway(client: Any) -> None:
    stream = await client.chat(
        model=MODEL, messages=[{"role": "user", "content": "FAILMID now"}], stream=True
    )
    seen = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in stream:
            seen.append(part.message.content)
    assert seen == ["echo:"]
    assert "FAILMID" in info.value.error


# -- generate ------------------------------------------------------------------------------------


async def test_generate(client: Any, server: FakeServer) -> None:
    response = await client.generate(model=MODEL, prompt="hello there")
    assert response.response == "echo: hello there"
    assert response.done is True and response.done_reason == "stop"
    assert server.requests[-1].path == "/api/generate"


async def test_generate_stream(client: Any) -> None:
    stream = await client.generate(model=MODEL, prompt="hello there", stream=True)
    parts = [part async for part in stream]
    assert "".join(p.response for p in parts) == "echo: hello there"
    assert parts[-1].done is True


async def test_generate_think_and_format(client: Any) -> None:
    response = await client.generate(model=MODEL, prompt="hi", think=True)
    assert response.thinking == "thinking about: echo: hi"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    response = await client.generate(model=MODEL, prompt="hi", format=schema)
    assert json.loads(response.response) == {"ok": True}


# -- embeddings ----------------------------------------------------------------------------------


async def test_embed(client: Any, server: FakeServer) -> None:
    response = await client.embed(model="fake-embed", input=["alpha", "beta"])
    assert response.model == "fake-embed"
    assert response.embeddings == [_common.vector("alpha"), _common.vector("beta")]
    assert response.prompt_eval_count == 2
    assert server.requests[-1].path == "/api/embed"


async def test_embed_one_string_and_dimensions(client: Any) -> None:
    response = await client.embed(model="fake-embed", input="alpha", dimensions=4)
    assert response.embeddings == [_common.vector("alpha", 4)]


async def test_legacy_embeddings(client: Any, server: FakeServer) -> None:
    response = await client.embeddings(model="fake-embed", prompt="alpha")
    assert server.requests[-1].path == "/api/embeddings"
    assert response.embedding == _common.vector("alpha")


async def test_legacy_embeddings_unknown_model(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client.embeddings(model="nope", prompt="alpha")
    assert info.value.status_code == 404


# -- models --------------------------------------------------------------------------------------


async def test_list(client: Any) -> None:
    response = await client.list()
    assert [m.model for m in response.models] == ["fake-chat:latest", "fake-embed:latest"]
    first = response.models[0]
    assert first.modified_at is not None and first.size > 0 and first.digest
    assert first.details.family == "llama"
    assert response.models[1].details.family == "bert"


async def test_show(client: Any) -> None:
    response = await client.show(MODEL)
    assert response.details.family == "llama"
    assert response.modelinfo["general.architecture"] == "llama"
    assert "completion" in response.capabilities
    assert response.modified_at is not None
    assert response.template and response.parameters


async def test_show_unknown_model(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client.show("nope")
    assert info.value.status_code == 404


async def test_ps(client: Any) -> None:
    assert (await client.ps()).models == []
    await client.chat(model=MODEL, messages=USER)
    (running,) = (await client.ps()).models
    assert running.model == "fake-chat:latest" and running.name == "fake-chat:latest"
    assert running.expires_at is not None and running.size_vram > 0
    assert running.context_length == 4096


async def test_pull_stream(client: Any) -> None:
    stream = await client.pull("tiny", stream=True)
    parts = [part async for part in stream]
    assert parts[0].status == "pulling manifest"
    assert parts[-1].status == "success"
    progress = [p for p in parts if p.completed is not None]
    assert progress and all(p.digest and p.total for p in progress)
    assert "tiny:latest" in [m.model for m in (await client.list()).models]


async def test_pull(client: Any) -> None:
    response = await client.pull("tiny")
    assert response.status == "success"


async def test_pull_missing_fails_midway(client: Any) -> None:
    stream = await client.pull("missing-model", stream=True)
    with pytest.raises(ollama.ResponseError):
        async for _ in stream:
            pass


async def test_copy_and_delete(client: Any) -> None:
    assert (await client.copy(MODEL, "my-chat")).status == "success"
    assert "my-chat:latest" in [m.model for m in (await client.list()).models]
    assert (await client.delete("my-chat")).status == "success"
    assert "my-chat:latest" not in [m.model for m in (await client.list()).models]
    with pytest.raises(ollama.ResponseError) as info:
        await client.delete("my-chat")
    assert info.value.status_code == 404


async def test_version(client: Any) -> None:
    response = await client._request_raw("GET", "/api/version")
    assert response.json() == {"version": "0.12.6"}


async def test_injected_failure(client: Any, server: FakeServer) -> None:
    server.fail_next(1, status=503)
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model=MODEL, messages=USER)
    assert info.value.status_code == 503
    assert server.request_count == 1


async def test_legacy_embeddings_of_nothing_is_empty(client: Any) -> None:
    response = await client.embeddings(model="fake-embed")
    assert response.embedding == []


async def test_chat_and_generate_with_images(client: Any, server: FakeServer) -> None:
    png = b"\x89PNG\r\n\x1a\n fake"
    user = [{"role": "user", "content": "what is this", "images": [png]}]
    response = await client.chat(model=MODEL, messages=user)
    assert response.message.content == "echo: what is this"
    (image,) = server.requests[-1].json["messages"][0]["images"]
    assert base64.b64decode(image) == png
    response = await client.generate(model=MODEL, prompt="what is this", images=[png])
    assert response.response == "echo: what is this"
    assert base64.b64decode(server.requests[-1].json["images"][0]) == png


async def test_think_off_gives_no_thinking(client: Any) -> None:
    response = await client.chat(model=MODEL, messages=USER, think=False)
    assert response.message.thinking is None
