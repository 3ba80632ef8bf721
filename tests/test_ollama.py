from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp import web
from pydantic import BaseModel

import asyncllm
from asyncllm.backends.ollama import (
    GenerateChunk,
    Ollama,
    PullProgress,
    ollama_host,
)
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from tests.chat_contract import NO_WAIT, ChatContract, get_weather
from tests.specs import SPECS

SPEC = SPECS / "ollama.openapi.yaml"
PNG = b"\x89PNG\r\n\x1a\nfake image bytes"
PNG_B64 = base64.b64encode(PNG).decode()
USER = [{"role": "user", "content": "hello world"}]


class TestOllamaContract(ChatContract):
    protocol = "ollama"
    streamed_choices = False  # Ollama has no n
    structured = True
    open_maps_refused = False  # format takes the schema as it is, open maps too
    refusal_prompt = None  # Ollama has no refusals
    reasoning_options = {"think": True}
    length_options = {"max_tokens": 3}
    signed_history = False  # thinking is sent back as it came, unsigned
    strict_tools = False  # Ollama does not hold tool calls to their schemas

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.Ollama(base_url=server.url(), **kwargs)


@pytest.fixture(autouse=True)
def _no_ollama_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)


PROTOCOLS = ("ollama",)


def make_client(server: FakeServer) -> Ollama:
    return Ollama(base_url=server.url(), retry=NO_WAIT)


def sent(server: FakeServer, path: str) -> Any:
    return next(r.json for r in reversed(server.requests) if r.path == path)


# -- base URL and auth ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("localhost:11434", "http://localhost:11434"),
        ("example.com", "http://example.com:11434"),
        ("example.com:8080", "http://example.com:8080"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("  127.0.0.1  ", "http://127.0.0.1:11434"),
    ],
)
def test_ollama_host_is_read_like_ollama(value: str, url: str) -> None:
    assert ollama_host(value) == url


@pytest.mark.parametrize("value", ["ftp://example.com", "example.com:notaport", "host:99999"])
def test_bad_ollama_host_is_a_configuration_error(value: str) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        ollama_host(value)


async def test_base_url_from_env_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    default = Ollama()
    assert default.base_url == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:1234")
    from_env = Ollama()
    assert from_env.base_url == "http://10.0.0.5:1234"
    assert Ollama(base_url="other:1").base_url == "http://other:1"
    for c in (default, from_env):
        await c.aclose()


async def test_no_auth_by_default_and_bearer_when_given(server: FakeServer) -> None:
    async with Ollama(base_url=server.url()) as anonymous:
        await anonymous.version()
    assert "Authorization" not in server.requests[-1].headers
    async with Ollama(base_url=server.url(), api_key="proxy-secret") as keyed:
        assert "proxy-secret" not in repr(keyed)
        await keyed.version()
    assert server.requests[-1].headers["Authorization"] == "Bearer proxy-secret"


# -- chat wire format -----------------------------------------------------------------------------


async def test_options_mapping(client: Ollama, server: FakeServer) -> None:
    await client.chat(
        USER,
        model="fake-chat",
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        max_tokens=64,
        num_ctx=4096,
        seed=7,
        stop=["\n\n"],
        options={"repeat_penalty": 1.1},
        keep_alive="10m",
        think="low",
    )
    body = sent(server, "/api/chat")
    assert body["stream"] is False  # Ollama streams unless told not to
    assert body["options"] == {
        "repeat_penalty": 1.1,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "num_predict": 64,
        "num_ctx": 4096,
        "seed": 7,
        "stop": ["\n\n"],
    }
    assert body["keep_alive"] == "10m"
    assert body["think"] == "low"
    assert "max_tokens" not in body and "temperature" not in body


async def test_no_options_sends_none(client: Ollama, server: FakeServer) -> None:
    await client.chat(USER, model="fake-chat")
    assert set(sent(server, "/api/chat")) == {"model", "messages", "stream"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 5, "options": {"num_predict": 9}},
        {"seed": 1, "options": {"seed": 2}},
        {"temperature": -1},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"think": "extreme"},
        {"keep_alive": ""},
        {"format": "yaml"},
        {"options": ["temperature"]},
        {"model": ""},
    ],
)
async def test_bad_arguments_are_refused_before_sending(
    client: Ollama, server: FakeServer, kwargs: dict[str, Any]
) -> None:
    kwargs = {"model": "fake-chat", **kwargs}
    with pytest.raises(asyncllm.ConfigurationError):
        await client.chat(USER, **kwargs)
    assert server.request_count == 0


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("chat", (USER,), {"model": "fake-chat", "temprature": 0.5}),
        ("generate", ("p",), {"model": "fake-chat", "tools": []}),
        ("embed", ("x",), {"model": "fake-embed", "think": True}),
        ("show", ("fake-chat",), {"extra_bodies": {}}),
        ("version", (), {"extra_body": {"a": 1}}),  # a GET sends no body to merge into
        ("pull", ("tiny",), {"stream": False, "insecur": True}),
    ],
)
async def test_misspelt_keyword_is_a_type_error_before_sending(
    client: Ollama, server: FakeServer, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        await getattr(client, method)(*args, **kwargs)
    assert server.request_count == 0


async def test_misspelt_keyword_on_a_stream_is_a_type_error_at_the_call(
    client: Ollama, server: FakeServer
) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        client.stream_chat(USER, model="fake-chat", num_predict=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        client.stream_generate("p", model="fake-chat", tools=[])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        client.pull("tiny", insecur=True)  # type: ignore[call-overload]
    assert server.request_count == 0


async def test_model_from_the_client(server: FakeServer) -> None:
    async with Ollama(base_url=server.url(), model="fake-chat") as client:
        r = await client.chat(USER)
        assert r.text == "echo: hello world"
        await client.generate("p")
        assert sent(server, "/api/generate")["model"] == "fake-chat"
    async with Ollama(base_url=server.url()) as client:
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.chat(USER)
    assert server.request_count == 2


async def test_call_options_reach_the_wire(client: Ollama, server: FakeServer) -> None:
    await client.chat(
        USER,
        model="fake-chat",
        temperature=0.5,
        extra_body={"options": {"mirostat": 1}, "logprobs": True},
        extra_headers={"x-trace": "t1"},
        extra_query={"q": "1"},
        max_retries=0,
        priority=asyncllm.Priority.HIGH,
    )
    body = sent(server, "/api/chat")
    assert body["options"] == {"temperature": 0.5, "mirostat": 1}  # merged, not replaced
    assert body["logprobs"] is True
    request = server.requests[-1]
    assert request.headers["x-trace"] == "t1"
    assert request.query == {"q": "1"}
    async with client.with_options(timeout=30).stream_generate(
        "a", model="fake-chat", extra_body={"raw": True}
    ) as stream:
        assert [c async for c in stream][-1].done
    assert sent(server, "/api/generate")["raw"] is True


class Country(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", "json"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, None),
        (Country, Country.model_json_schema()),
    ],
)
async def test_format(client: Ollama, server: FakeServer, fmt: Any, expected: Any) -> None:
    r = await client.chat(USER, model="fake-chat", format=fmt)
    body = sent(server, "/api/chat")
    assert body["format"] == (fmt if expected is None else expected)
    parsed = json.loads(r.text)
    if fmt is Country:
        assert Country.model_validate(parsed) == Country(name="test", population=1)


async def test_images_from_data_urls(client: Ollama, server: FakeServer) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is "},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "text", "text": "this?"},
            ],
        }
    ]
    r = await client.chat(messages, model="fake-chat")
    wire = sent(server, "/api/chat")["messages"][0]
    assert wire == {"role": "user", "content": "what is this?", "images": [PNG_B64]}
    assert r.text == "echo: what is this?"


async def test_native_images_field_takes_bytes(client: Ollama, server: FakeServer) -> None:
    await client.chat([{"role": "user", "content": "see", "images": [PNG]}], model="fake-chat")
    assert sent(server, "/api/chat")["messages"][0]["images"] == [PNG_B64]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,rawtext"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@notbase64@@"}},
        {"type": "input_audio", "input_audio": {"data": "x"}},
    ],
)
async def test_images_that_ollama_cannot_take(
    client: Ollama, server: FakeServer, part: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.chat([{"role": "user", "content": [part]}], model="fake-chat")
    assert server.request_count == 0


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
async def test_tool_call_arguments_must_be_a_json_object(
    client: Ollama, server: FakeServer, arguments: str
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    with pytest.raises(asyncllm.ConfigurationError, match=r"messages\[1\]"):
        await client.chat(messages, model="fake-chat")
    assert server.request_count == 0


async def test_tool_calls_and_results_in_ollama_form(client: Ollama, server: FakeServer) -> None:
    first = await client.chat(
        [{"role": "developer", "content": "use tools"}, *USER],
        model="fake-chat",
        tools=[get_weather],
    )
    assert first.finish_reason == "tool_calls"
    call = first.tool_calls[0]
    assert call.id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "test"}
    tools = sent(server, "/api/chat")["tools"]
    assert tools[0]["type"] == "function"
    assert tools[0]["function"]["name"] == "get_weather"
    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}  # no name: looked up
    second = await client.chat(
        [*USER, first.message, result], model="fake-chat", tools=[get_weather]
    )
    wire = sent(server, "/api/chat")["messages"]
    assert wire[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "test"}}}],
    }
    assert wire[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    assert second.text == "tool get_weather returned: sunny"
    assert second.finish_reason == "stop"


async def test_thinking(client: Ollama) -> None:
    r = await client.chat(USER, model="fake-chat", think=True)
    assert r.text == "echo: hello world"
    assert r.reasoning == "thinking about: echo: hello world"
    assert r.thinking == r.reasoning  # the name it had before
    assert r.message.model_dump()["thinking"] == r.reasoning
    chunks = [c async for c in client.stream_chat(USER, model="fake-chat", think=True)]
    assert len([c for c in chunks if c.reasoning]) > 1  # a piece a line, as Ollama streams it
    assert "".join(c.reasoning for c in chunks) == r.reasoning
    assert "".join(c.thinking for c in chunks) == r.reasoning
    assert "".join(c.delta for c in chunks) == r.text


async def test_streamed_reasoning_is_kept_for_the_next_turn(
    client: Ollama, server: FakeServer
) -> None:
    async with client.stream_chat(USER, model="fake-chat", think=True) as stream:
        final = await stream.final()
    assert final.reasoning == "thinking about: echo: hello world"
    assert final.message.model_dump()["thinking"] == final.reasoning
    await client.chat(
        [*USER, final.message, {"role": "user", "content": "and?"}], model="fake-chat"
    )
    assert sent(server, "/api/chat")["messages"][1] == {
        "role": "assistant",
        "content": "echo: hello world",
        "thinking": "thinking about: echo: hello world",
    }


class Order(BaseModel):
    country: Country
    tags: list[str]
    counts: dict[str, int]


async def test_response_format_is_sent_as_format_and_parsed(
    client: Ollama, server: FakeServer
) -> None:
    r = await client.chat(USER, model="fake-chat", response_format=Order)
    assert sent(server, "/api/chat")["format"] == Order.model_json_schema()  # as it is
    assert r.parsed == Order(country=Country(name="test", population=1), tags=["test"], counts={})
    async with client.stream_chat(USER, model="fake-chat", response_format=Order) as stream:
        final = await stream.final()
    assert final.parsed == r.parsed and final.text == r.text
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert (await client.chat(USER, model="fake-chat", response_format=schema)).parsed == {"a": 1}
    r = await client.chat(USER, model="fake-chat", response_format={"type": "json_object"})
    assert sent(server, "/api/chat")["format"] == "json" and r.parsed == {}
    r = await client.chat(USER, model="fake-chat", format=Country)
    assert r.parsed is None  # format alone constrains without parsing
    count = server.request_count
    with pytest.raises(asyncllm.ConfigurationError, match="not both"):
        await client.chat(USER, model="fake-chat", response_format=Country, format="json")
    assert server.request_count == count


async def test_answer_cut_at_max_tokens(client: Ollama, server: FakeServer) -> None:
    r = await client.chat(USER, model="fake-chat", max_tokens=1)
    assert (r.text, r.finish_reason) == ("echo:", "length")
    assert sent(server, "/api/chat")["options"] == {"num_predict": 1}
    with pytest.raises(asyncllm.LengthFinishReasonError) as info:
        await client.chat(USER, model="fake-chat", response_format=Country, max_tokens=2)
    assert info.value.text == '{"name": "test",'
    stream = client.stream_chat(USER, model="fake-chat", response_format=Country, max_tokens=2)
    with pytest.raises(asyncllm.LengthFinishReasonError):
        await stream.final()
    r = await client.chat(USER, model="fake-chat", think=True, max_tokens=3)
    assert (r.reasoning, r.text, r.finish_reason) == ("thinking about: echo:", "", "length")


async def test_usage_durations(client: Ollama) -> None:
    r = await client.chat(USER, model="fake-chat")
    assert r.usage is not None
    usage = r.usage.model_dump()
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (2, 3, 5)
    assert usage["total_duration"] == 1_000_000 + 2 * 100_000 + 3 * 200_000
    assert usage["load_duration"] == 1_000_000
    assert usage["prompt_eval_duration"] == 200_000
    assert usage["eval_duration"] == 600_000
    assert usage["total_seconds"] == pytest.approx(0.0018)
    assert usage["eval_seconds"] == pytest.approx(0.0006)


async def test_not_found_model_is_typed(client: Ollama) -> None:
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.chat(USER, model="no-such-model")
    assert info.value.message == "model 'no-such-model' not found"
    assert info.value.status_code == 404


async def test_error_body_message_is_read(server: FakeServer) -> None:
    server.fail_next(1, status=400, body={"error": "invalid options: temperature"})
    async with Ollama(base_url=server.url(), max_retries=0) as client:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await client.chat(USER, model="fake-chat")
    assert info.value.message == "invalid options: temperature"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"error": "unexpected server failure"}, asyncllm.APIError),
        ({"model": "m", "done": True}, asyncllm.ResponseValidationError),
        ([1, 2], asyncllm.ResponseValidationError),
    ],
)
async def test_bad_200_bodies_are_typed(payload: Any, error: type[Exception]) -> None:
    transport = MockTransport(lambda request: MockResponse(200, json=payload))
    async with Ollama(transport=transport) as client:
        with pytest.raises(error) as info:
            await client.chat(USER, model="m")
        with pytest.raises(error):
            await client.generate("p", model="m")
    assert not isinstance(info.value, asyncllm.APIStatusError)
    assert info.value.request_id is not None  # type: ignore[attr-defined]


# -- NDJSON streams -------------------------------------------------------------------------------


async def test_stream_is_ndjson_chunk_by_chunk(client: Ollama, server: FakeServer) -> None:
    async with client.stream_chat(
        [{"role": "user", "content": "one two three"}], model="fake-chat"
    ) as stream:
        chunks = [c async for c in stream]
    assert sent(server, "/api/chat")["stream"] is True
    assert [c.delta for c in chunks] == ["echo:", " one", " two", " three", ""]
    assert [c.done for c in chunks] == [False] * 4 + [True]
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == 4
    assert last.usage.model_dump()["eval_duration"] == 4 * 200_000


async def test_stream_yields_each_line_as_it_arrives(client: Ollama, server: FakeServer) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        line = {"model": "m", "message": {"role": "assistant", "content": "first"}, "done": False}
        await resp.write(json.dumps(line).encode() + b"\n")
        await asyncio.wait_for(release.wait(), 5)
        done = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True}
        await resp.write(json.dumps(done).encode() + b"\n")
        return resp

    server.overrides["/api/chat"] = slow
    async with client.stream_chat(USER, model="fake-chat") as stream:
        first = await asyncio.wait_for(stream.__anext__(), 5)
        assert first.delta == "first"  # arrived while the server still holds the rest
        release.set()
        rest = [c async for c in stream]
    assert [c.done for c in rest] == [True]


async def test_stream_tool_call(client: Ollama) -> None:
    chunks = [c async for c in client.stream_chat(USER, model="fake-chat", tools=[get_weather])]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert len(deltas) == 1
    assert deltas[0].index == 0 and deltas[0].name == "get_weather"
    assert deltas[0].id is not None
    assert json.loads(deltas[0].arguments) == {"city": "test"}
    assert chunks[-1].finish_reason == "tool_calls"


async def test_error_line_mid_stream_is_typed(client: Ollama, server: FakeServer) -> None:
    received = []
    with pytest.raises(asyncllm.APIError) as info:
        async with client.stream_chat(
            [{"role": "user", "content": "please FAILMID now"}], model="fake-chat"
        ) as stream:
            async for chunk in stream:
                received.append(chunk.delta)
    assert received == ["echo:"]
    error = info.value
    assert not isinstance(error, asyncllm.APIStatusError)
    assert "FAILMID" in error.message
    assert error.backend == "ollama" and error.request_id == stream.request_id
    assert server.request_count == 1  # not retried once a chunk was delivered


async def test_error_line_mid_generate_stream(client: Ollama) -> None:
    with pytest.raises(asyncllm.APIError, match="FAILMID"):
        async for _ in client.stream_generate("FAILMID", model="fake-chat"):
            pass


async def test_over_long_line_is_a_typed_error(server: FakeServer) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"message": {"role": "assistant", "content": "')
        for _ in range(10):
            await resp.write(b"x" * 100)
            await asyncio.sleep(0.005)
        return resp

    server.overrides["/api/chat"] = endless
    async with Ollama(base_url=server.url(), max_line_bytes=256, max_retries=0) as client:
        with pytest.raises(asyncllm.ResponseValidationError, match="256-byte") as info:
            async for _ in client.stream_chat(USER, model="fake-chat"):
                pass
    assert info.value.request_id is not None
    assert info.value.backend == "ollama"


async def test_over_long_line_without_newline_through_mock_transport() -> None:
    endless = [b'{"message": {"content": "' + b"a" * 100 for _ in range(20)]
    transport = MockTransport(lambda request: MockResponse(200, chunks=endless))
    async with Ollama(transport=transport, max_line_bytes=1000, max_retries=0) as client:
        with pytest.raises(asyncllm.ResponseValidationError, match="1000-byte"):
            async for _ in client.stream_chat(USER, model="m"):
                pass


async def test_stream_cut_before_done_is_a_connection_error() -> None:
    line = b'{"message": {"role": "assistant", "content": "partial"}, "done": false}\n'
    transport = MockTransport(lambda request: MockResponse(200, chunks=[line]))
    async with Ollama(transport=transport, max_retries=0) as client:
        with pytest.raises(asyncllm.APIConnectionError, match="final line"):
            async for _ in client.stream_chat(USER, model="m"):
                pass


async def test_malformed_stream_is_a_validation_error(client: Ollama, server: FakeServer) -> None:
    server.malformed_next(1)
    with pytest.raises(asyncllm.ResponseValidationError):
        async for _ in client.stream_chat(USER, model="fake-chat"):
            pass


# -- generate -------------------------------------------------------------------------------------


async def test_generate(client: Ollama, server: FakeServer) -> None:
    r = await client.generate(
        "why is the sky blue?",
        model="fake-chat",
        system="be brief",
        suffix="END",
        images=[PNG],
        raw=True,
        keep_alive=0,
        max_tokens=10,
        format="json",
        think=False,
    )
    body = sent(server, "/api/generate")
    assert body == {
        "model": "fake-chat",
        "stream": False,
        "prompt": "why is the sky blue?",
        "system": "be brief",
        "suffix": "END",
        "images": [PNG_B64],
        "format": "json",
        "options": {"num_predict": 10},
        "raw": True,
        "keep_alive": 0,
        "think": False,
    }
    assert r.text == "{}"
    assert r.done_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 7
    assert r.request_id.startswith("req_")


async def test_generate_without_prompt_loads_the_model(client: Ollama) -> None:
    loaded = await client.generate(model="fake-chat")
    assert (loaded.text, loaded.done_reason) == ("", "load")
    assert [m.name for m in await client.ps()] == ["fake-chat:latest"]
    unloaded = await client.generate(model="fake-chat", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert await client.ps() == []


async def test_stream_generate(client: Ollama, server: FakeServer) -> None:
    chunks = [c async for c in client.stream_generate("a b", model="fake-chat")]
    assert all(isinstance(c, GenerateChunk) for c in chunks)
    assert "".join(c.delta for c in chunks) == "echo: a b"
    assert len(chunks) == 4 and chunks[-1].done and chunks[-1].usage is not None
    assert sent(server, "/api/generate")["stream"] is True


# -- embed ----------------------------------------------------------------------------------------


async def test_embed_batch(client: Ollama, server: FakeServer) -> None:
    r = await client.embed(
        ["first text", "second"], model="fake-embed", dimensions=4, truncate=True, keep_alive="1m"
    )
    assert sent(server, "/api/embed") == {
        "model": "fake-embed",
        "input": ["first text", "second"],
        "truncate": True,
        "dimensions": 4,
        "keep_alive": "1m",
    }
    assert len(r.vectors) == 2 and all(len(v) == 4 for v in r.vectors)
    assert r.vectors[0] != r.vectors[1]
    assert r.usage is not None and r.usage.prompt_tokens == 3
    assert r.usage.model_dump()["load_duration"] == 1_000_000


async def test_embed_truncate_false_rejects_long_input(client: Ollama) -> None:
    with pytest.raises(asyncllm.BadRequestError, match="context length"):
        await client.embed(["word " * 600], model="fake-embed", truncate=False)
    r = await client.embed(["word " * 600], model="fake-embed")
    assert len(r.vectors) == 1


async def test_embed_count_mismatch_is_a_validation_error() -> None:
    transport = MockTransport(lambda request: MockResponse(200, json={"embeddings": [[0.1]]}))
    async with Ollama(transport=transport) as client:
        with pytest.raises(asyncllm.ResponseValidationError, match="expected 2"):
            await client.embed(["a", "b"], model="m")


@pytest.mark.parametrize(
    "kwargs", [{"inputs": []}, {"inputs": [1]}, {"truncate": "no"}, {"keep_alive": 5}]
)
async def test_embed_bad_arguments(client: Ollama, kwargs: dict[str, Any]) -> None:
    kwargs = {"inputs": ["a"], "model": "fake-embed", **kwargs}
    with pytest.raises(asyncllm.ConfigurationError):
        await client.embed(**kwargs)


# -- model management -----------------------------------------------------------------------------


async def test_pull_streams_progress(client: Ollama, server: FakeServer) -> None:
    events: list[PullProgress] = []
    async with client.pull("llama3.2") as stream:
        async for event in stream:
            events.append(event)
    assert sent(server, "/api/pull") == {"model": "llama3.2", "stream": True}
    assert events[0].status == "pulling manifest"
    assert events[-1].status == "success"
    layers: dict[str, list[float]] = {}
    for e in events:
        if e.digest is not None and e.fraction is not None:
            layers.setdefault(e.digest, []).append(e.fraction)
    assert len(layers) == 2
    for fractions in layers.values():
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "llama3.2:latest" in [m.id for m in await client.models()]


async def test_pull_without_stream(client: Ollama, server: FakeServer) -> None:
    result = await client.pull("tiny", stream=False)
    assert result.status == "success"
    assert sent(server, "/api/pull") == {"model": "tiny", "stream": False}


async def test_pull_failure_mid_stream(client: Ollama) -> None:
    statuses = []
    with pytest.raises(asyncllm.APIError, match="file does not exist"):
        async for event in client.pull("missing-model"):
            statuses.append(event.status)
    assert statuses == ["pulling manifest"]
    with pytest.raises(asyncllm.InternalServerError, match="file does not exist"):
        await client.pull("missing-model", stream=False)


async def test_model_management(client: Ollama, server: FakeServer) -> None:
    assert await client.version() == "0.12.6"
    listed = await client.models()
    assert [m.id for m in listed] == ["fake-chat:latest", "fake-embed:latest"]
    info = listed[0].model_dump()
    assert info["size"] and info["digest"] and info["details"]["format"] == "gguf"
    shown = await client.show("fake-chat", verbose=True)
    assert sent(server, "/api/show") == {"model": "fake-chat", "verbose": True}
    assert "completion" in shown.capabilities and shown.details["family"] == "llama"
    await client.copy("fake-chat", "backup")
    assert sent(server, "/api/copy") == {"source": "fake-chat", "destination": "backup"}
    assert "backup:latest" in [m.id for m in await client.models()]
    await client.delete("backup")
    assert server.requests[-1].method == "DELETE"
    assert sent(server, "/api/delete") == {"model": "backup"}
    with pytest.raises(asyncllm.NotFoundError):
        await client.show("backup")
    with pytest.raises(asyncllm.NotFoundError):
        await client.delete("backup")
    with pytest.raises(asyncllm.NotFoundError):
        await client.copy("backup", "again")


async def test_ps_lists_loaded_models(client: Ollama) -> None:
    assert await client.ps() == []
    await client.embed("x", model="fake-embed")
    running = await client.ps()
    assert [m.name for m in running] == ["fake-embed:latest"]
    assert running[0].expires_at and running[0].size_vram


# -- the JSON we send follows Ollama's published schemas -----------------------------------------


def _validator(spec: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def spec() -> Any:
    return yaml.safe_load(SPEC.read_text())


async def test_requests_follow_the_openapi_schemas(
    client: Ollama, server: FakeServer, spec: Any
) -> None:
    validators = {
        "/api/chat": _validator(spec, "ChatRequest"),
        "/api/generate": _validator(spec, "GenerateRequest"),
        "/api/embed": _validator(spec, "EmbedRequest"),
        "/api/pull": _validator(spec, "PullRequest"),
        "/api/show": _validator(spec, "ShowRequest"),
        "/api/copy": _validator(spec, "CopyRequest"),
        "/api/delete": _validator(spec, "DeleteRequest"),
    }
    # The check can fail: a chat request without messages, or with a number for content, is refused.
    with pytest.raises(jsonschema.ValidationError):
        validators["/api/chat"].validate({"model": "m"})
    with pytest.raises(jsonschema.ValidationError):
        validators["/api/chat"].validate({"model": "m", "messages": [{"role": "user"}]})

    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    rich: list[Any] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
    ]
    sampling: dict[str, Any] = {
        "temperature": 0.1,
        "top_p": 0.5,
        "top_k": 5,
        "max_tokens": 9,
        "num_ctx": 2048,
    }
    sampling |= {"seed": 1, "stop": "x"}
    first = await client.chat(
        rich, model="fake-chat", tools=[get_weather], format=Country, keep_alive=30, think="high"
    )
    call = first.tool_calls[0]
    history = [*rich, first.message, asyncllm.tool_result(call, "ok")]
    await client.chat(history, model="fake-chat", tools=[get_weather], format="json", **sampling)
    async for _ in client.stream_chat(history, model="fake-chat", think=True, **sampling):
        pass
    await client.generate("p", model="fake-chat", system="s", suffix="x", images=[PNG], **sampling)
    await client.generate(model="fake-chat", keep_alive="5m", raw=True, format={"type": "object"})
    async for _ in client.stream_generate("p", model="fake-chat", think="low"):
        pass
    await client.embed("one", model="fake-embed")
    await client.embed(
        ["a", "b"], model="fake-embed", truncate=False, dimensions=3, keep_alive="1m"
    )
    await client.pull("p1", stream=False)
    async for _ in client.pull("p2", insecure=True):
        pass
    await client.show("fake-chat", verbose=True)
    await client.copy("fake-chat", "c")
    await client.delete("c")

    checked = 0
    for request in server.requests:
        validator = validators.get(request.path)
        if validator is not None:
            validator.validate(request.json)
            checked += 1
    assert checked == len(server.requests) == 13
