from __future__ import annotations

import asyncio
import base64
import functools
import gc
import json
import logging
import struct
from operator import itemgetter
from typing import Any, ClassVar

import aiohttp
import jsonschema
import pytest
import yaml
from pydantic import BaseModel

import asyncllm
from asyncllm.testing import FakeServer, MockResponse
from asyncllm.testing.fakes import _common
from tests.chat_contract import MEDIA, ChatContract, wire_table
from tests.helpers import chat_json, ok
from tests.helpers import client as mock_client
from tests.specs import SPECS


class TestOpenAIContract(ChatContract):
    protocol = "openai"
    usage_counts = frozenset({"cached_tokens", "reasoning_tokens"})
    open_maps_refused = True  # strict mode takes no dict[str, int]
    refusal_prompt = "REFUSE THIS"  # message.refusal, content null
    # reasoning_options stays None: chat completions return no reasoning text
    # Web search goes in web_search_options (chat completions have no tool entry for it).
    builtin_tool: ClassVar[dict[str, Any] | None] = {
        "type": "web_search",
        "search_context_size": "low",
    }
    builtin_kinds = frozenset({"custom", "web_search"})

    def builtin_on_wire(self, body: dict[str, Any]) -> bool:
        return body.get("web_search_options") == {"search_context_size": "low"} and [
            t["type"] for t in body["tools"]
        ] == ["function"]

    # max_tokens goes out as max_completion_tokens, which reasoning models need.
    wire = wire_table(max_tokens=itemgetter("max_completion_tokens"))
    media: ClassVar[dict[str, Any]] = {**MEDIA, "file_url": None}  # files inline or by id

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.OpenAI(api_key="sk-test", base_url=server.url("/v1"), **kwargs)


# -- OpenAI specifics ------------------------------------------------------------------------


SPEC = SPECS / "openai.openapi.yaml"
SECRET = "sk-test-secret"


def _fix_nullable(node: Any) -> Any:
    """OpenAPI 3.0-style ``nullable`` without ``type`` -> anyOf with null (see specs/SOURCES.md)."""
    if isinstance(node, dict):
        node = {k: _fix_nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "type" in node and isinstance(node["type"], str):
                node["type"] = [node["type"], "null"]
            else:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} not present")
    with SPEC.open() as f:
        return _fix_nullable(yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def validator(name: str) -> jsonschema.protocols.Validator:
    spec = _spec()
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


class Answer(BaseModel):
    city: str
    temperature: float


async def test_chat_body_validates_against_the_openapi_spec() -> None:
    sent: list[Any] = []

    def handler(request: Any) -> MockResponse:
        sent.append(request.json())
        if request.stream:
            done = [b"data: [DONE]\n\n"]
            return MockResponse(200, chunks=done, headers={"Content-Type": "text/event-stream"})
        return ok('{"city": "Oslo", "temperature": 4.5}')

    c = mock_client(handler)
    r = await c.chat(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        model="gpt-4o-mini",
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=["\n\n"],
        seed=1,
        tools=[get_weather_tool],
        tool_choice="get_weather",
        response_format=Answer,
        user="u-1",
        n=2,
    )
    assert r.parsed == Answer(city="Oslo", temperature=4.5)
    custom_call = {"id": "c2", "type": "custom", "custom": {"name": "shell", "input": "ls"}}
    await c.chat(  # strict and custom tools, web search, a custom tool's call and result
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [custom_call]},
            {"role": "tool", "tool_call_id": "c2", "content": "a b"},
        ],
        model="gpt-4o-mini",
        tools=[
            asyncllm.Tool.from_function(get_weather_tool, strict=True),
            {"type": "custom", "custom": {"name": "shell", "format": {"type": "text"}}},
            {"type": "web_search", "search_context_size": "low"},
        ],
    )
    assert sent[-1]["tools"][0]["function"]["strict"] is True
    assert sent[-1]["web_search_options"] == {"search_context_size": "low"}
    async for _ in c.stream_chat([{"role": "user", "content": "x"}], model="gpt-4o-mini"):
        pass
    await c.aclose()
    v = validator("CreateChatCompletionRequest")
    for body in sent:
        v.validate(body)
    # The validator does check: a body without messages, or with a bad temperature, fails.
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"model": "m"})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({**sent[0], "temperature": "hot"})


async def test_embedding_body_validates_against_the_openapi_spec() -> None:
    sent: list[Any] = []

    def handler(request: Any) -> MockResponse:
        sent.append(request.json())
        return MockResponse(
            200,
            json={"data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}]},
        )

    c = mock_client(handler)
    e = await c.embed(["a", "b"], model="text-embedding-3-small", dimensions=1, user="u")
    await c.aclose()
    assert e.vectors == [[0.1], [0.2]]  # input order, from the index
    validator("CreateEmbeddingRequest").validate(sent[0])
    with pytest.raises(jsonschema.ValidationError):
        validator("CreateEmbeddingRequest").validate({"model": "m"})


def get_weather_tool(city: str) -> str:
    """Weather in a city."""
    return city


@pytest.mark.parametrize(
    ("messages", "kwargs"),
    [
        ([], {}),
        ("hello", {}),
        ([{"role": "wizard", "content": "x"}], {}),
        ([{"content": "x"}], {}),
        ([{"role": "user", "content": 5}], {}),
        ([{"role": "tool", "content": "x"}], {}),
        ([42], {}),
        ([{"role": "user", "content": "x"}], {"temperature": 3}),
        ([{"role": "user", "content": "x"}], {"max_tokens": 0}),
        ([{"role": "user", "content": "x"}], {"n": "2"}),
        ([{"role": "user", "content": "x"}], {"stop": 5}),
        ([{"role": "user", "content": "x"}], {"model": ""}),
        ([{"role": "user", "content": "x"}], {"extra_headers": {"X-Evil": "a\r\nInjected: 1"}}),
        ([{"role": "user", "content": "x"}], {"extra_body": {"bad": object()}}),
        ([{"role": "user", "content": "x"}], {"tools": [42]}),
        ([{"role": "user", "content": "x"}], {"timeout": -1}),
        ([{"role": "user", "content": "x"}], {"deadline": 0}),
    ],
)
async def test_bad_input_fails_before_anything_is_sent(
    messages: Any, kwargs: dict[str, Any]
) -> None:
    c = mock_client(lambda r: ok())
    kwargs.setdefault("model", "m")
    with pytest.raises(asyncllm.ConfigurationError):
        await c.chat(messages, **kwargs)
    assert len(c._transport.requests) == 0  # type: ignore[attr-defined]
    await c.aclose()


def test_bad_configuration_is_refused(monkeypatch: Any) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(asyncllm.ConfigurationError, match="OPENAI_API_KEY"):
        asyncllm.OpenAI()
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.OpenAI(api_key="k\nx")
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.OpenAI(api_key="k", base_url="ftp://x")
    with pytest.raises(asyncllm.ConfigurationError, match="http"):
        asyncllm.OpenAI(api_key="k", base_url="")  # not a way to ask for api.openai.com
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.OpenAI(api_key="k", default_headers={"X-A": "b\r\n"})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    c = asyncllm.OpenAI(organization="org-1", project="proj-1")
    assert c.base_url == "http://127.0.0.1:9/v1"
    assert c._headers["Authorization"] == "Bearer sk-env"
    assert c._headers["OpenAI-Organization"] == "org-1"
    assert c._headers["OpenAI-Project"] == "proj-1"


def test_constructing_needs_no_running_loop() -> None:
    c = asyncllm.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")

    async def use() -> None:
        async with FakeServer("openai") as server:
            c.base_url = server.url("/v1")
            r = await c.chat([{"role": "user", "content": "from a module-level client"}], model="m")
            assert r.text == "echo: from a module-level client"
            await c.aclose()

    asyncio.run(use())


async def test_malformed_json_is_a_typed_error() -> None:
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"))
        server.malformed_next(1)
        with pytest.raises(asyncllm.ResponseValidationError) as info:
            await c.chat([{"role": "user", "content": "x"}], model="m")
        assert info.value.request_id == server.request_ids[-1]
        assert info.value.body and '"choices"' in info.value.body
        server.malformed_next(1)
        with pytest.raises(asyncllm.ResponseValidationError):
            async for _ in c.stream_chat([{"role": "user", "content": "x"}], model="m"):
                pass
        await c.aclose()
    c2 = mock_client(lambda r: MockResponse(200, json={"choices": []}))
    with pytest.raises(asyncllm.ResponseValidationError):
        await c2.chat([{"role": "user", "content": "x"}], model="m")
    assert len(c2._transport.requests) == 1  # type: ignore[attr-defined]
    await c2.aclose()


async def test_api_key_never_leaks(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(
            api_key=SECRET,
            base_url=server.url("/v1"),
            retry=asyncllm.RetryConfig(max_retries=1, initial_delay=0),
        )
        errors: list[BaseException] = []
        server.fail_next(2, status=500)
        server.fail_next(1, status=401)
        for _ in range(2):
            try:
                await c.chat([{"role": "user", "content": "x"}], model="m")
            except asyncllm.APIError as exc:
                errors.append(exc)
        await c.chat([{"role": "user", "content": "ok"}], model="m")
        assert server.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
        dumped = [
            repr(c),
            str(c.__dict__.get("api_key")),
            repr(c.api_key),
            *(f"{e!r} {e} {e.body} {e.__dict__}" for e in errors),
            repr(c.dispatcher.stats()),
            repr([c.dispatcher.tracker.all(rid) for rid in server.request_ids]),
            caplog.text,
        ]
        await c.aclose()
    assert len(errors) == 2
    for text in dumped:
        assert SECRET not in text


async def test_aclose_leaves_no_task_session_or_socket() -> None:
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"))
        await asyncio.gather(
            *(c.chat([{"role": "user", "content": "x"}], model="m") for _ in range(10))
        )
        async for _ in c.stream_chat([{"role": "user", "content": "x"}], model="m"):
            break  # leave a stream unfinished on purpose
        transport: Any = c._transport
        session = transport._session
        connector = session.connector
        await c.aclose()
        await c.aclose()  # twice is fine
        assert session.closed and connector.closed
        assert transport._session is None
        with pytest.raises(asyncllm.ClientClosedError):
            await c.chat([{"role": "user", "content": "x"}], model="m")
        with pytest.raises(asyncllm.ClientClosedError):
            async with c:
                pass
    gc.collect()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_aclose_ends_queued_and_running_calls() -> None:
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(
            api_key="k", base_url=server.url("/v1"), max_concurrent_requests=2, close_timeout=0.2
        )
        server.hang_next(2)
        calls = [
            asyncio.create_task(c.chat([{"role": "user", "content": f"{i}"}], model="m"))
            for i in range(6)
        ]
        while server.in_flight < 2:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(c.aclose(), 2)
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, asyncllm.ClientClosedError) for r in results), results
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_embed_and_models_against_the_server(asyncllm_server: FakeServer) -> None:
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        e = await c.embed(["alpha", "beta", "gamma"], model="fake-embed")
        models = await c.models()
    from asyncllm.testing.fakes._common import vector

    assert e.vectors == [vector("alpha"), vector("beta"), vector("gamma")]
    assert [m.id for m in models] == ["fake-chat", "fake-embed"]


async def test_stream_carries_tool_call_deltas_and_usage(asyncllm_server: FakeServer) -> None:
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        chunks = [
            ch
            async for ch in c.stream_chat(
                [{"role": "user", "content": "x"}], model="m", tools=[get_weather_tool]
            )
        ]
    deltas = [d for ch in chunks for d in ch.tool_calls]
    assert deltas[0].name == "get_weather_tool" and deltas[0].id
    assert "".join(d.arguments for d in deltas) == '{"city": "test"}'
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens
    assert any(ch.finish_reason == "tool_calls" for ch in chunks)


async def test_default_model_on_the_client() -> None:
    sent: list[Any] = []

    def handler(request: Any) -> MockResponse:
        sent.append(request.json()["model"])
        return ok()

    c = mock_client(handler, model="gpt-default")
    await c.chat([{"role": "user", "content": "x"}])
    await c.chat([{"role": "user", "content": "x"}], model="gpt-other")
    assert sent == ["gpt-default", "gpt-other"]
    await c.aclose()
    bare = mock_client(handler)
    with pytest.raises(asyncllm.ConfigurationError, match="model"):
        await bare.chat([{"role": "user", "content": "x"}])
    await bare.aclose()


def test_a_client_belongs_to_one_event_loop() -> None:
    async def serve_and_call(c: asyncllm.OpenAI) -> str:
        async with FakeServer("openai") as server:
            c.base_url = server.url("/v1")
            return (await c.chat([{"role": "user", "content": "loop"}], model="m")).text

    c = asyncllm.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(serve_and_call(c)) == "echo: loop"
        with pytest.raises(asyncllm.ConfigurationError, match="event loop"):
            asyncio.run(serve_and_call(c))
        loop.run_until_complete(c.aclose())
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("cls", "env"),
    [
        (asyncllm.OpenAI, "OPENAI_API_KEY"),
        (asyncllm.Groq, "GROQ_API_KEY"),
        (asyncllm.Claude, "ANTHROPIC_API_KEY"),
        (asyncllm.Gemini, "GEMINI_API_KEY"),
    ],
)
def test_hosted_apis_need_a_key_only_at_their_own_url(
    monkeypatch: pytest.MonkeyPatch, cls: Any, env: str
) -> None:
    for name in (*cls.api_key_env, *cls.base_url_env):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(asyncllm.ConfigurationError) as caught:
        cls()
    assert str(caught.value) == f"no API key: pass api_key= or set {env}"
    assert cls(base_url="http://127.0.0.1:9").api_key is None


async def test_fake_models_retrieve_and_base64_embeddings(asyncllm_server: FakeServer) -> None:
    url = asyncllm_server.url
    async with aiohttp.ClientSession() as session:
        async with session.get(url("/v1/models/fake-embed")) as r:
            assert r.status == 200
            model = await r.json()
        validator("Model").validate(model)
        assert model["id"] == "fake-embed"
        async with session.get(url("/v1/models/nope")) as r:
            assert r.status == 404
            error = await r.json()
        validator("ErrorResponse").validate(error)
        assert error["error"]["code"] == "model_not_found"
        body = {"model": "fake-embed", "input": ["a", "b"], "encoding_format": "base64"}
        async with session.post(url("/v1/embeddings"), json=body) as r:
            data = (await r.json())["data"]
        async with session.post(url("/v1/embeddings"), json={**body, "encoding_format": "x"}) as r:
            assert r.status == 400
    for item in data:
        assert isinstance(item["embedding"], str)
        floats = struct.unpack("<8f", base64.b64decode(item["embedding"]))
        assert floats == pytest.approx(_common.vector(["a", "b"][item["index"]]), abs=1e-6)


# -- structured output and reasoning on the wire ----------------------------------------------


class Node(BaseModel):
    value: int
    children: list[Node] = []


async def test_a_model_is_sent_as_a_strict_json_schema_and_reasoning_effort_as_given() -> None:
    sent: list[Any] = []

    def handler(request: Any) -> MockResponse:
        sent.append(request.json())
        return ok('{"city": "Oslo", "temperature": -3.5}')

    c = mock_client(handler)
    r = await c.chat(
        [{"role": "user", "content": "x"}],
        model="o4",
        response_format=Answer,
        reasoning_effort="low",
    )
    await c.aclose()
    assert r.parsed == Answer(city="Oslo", temperature=-3.5)
    assert sent[0]["reasoning_effort"] == "low"
    assert sent[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "Answer",
            "schema": {
                "properties": {
                    "city": {"title": "City", "type": "string"},
                    "temperature": {"title": "Temperature", "type": "number"},
                },
                "required": ["city", "temperature"],
                "title": "Answer",
                "type": "object",
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    validator("CreateChatCompletionRequest").validate(sent[0])


async def test_openai_dicts_are_sent_as_given() -> None:
    sent: list[Any] = []

    def handler(request: Any) -> MockResponse:
        sent.append(request.json()["response_format"])
        return ok('{"a": 1}')

    c = mock_client(handler)
    loose = {"type": "json_schema", "json_schema": {"name": "loose", "schema": {"type": "object"}}}
    for fmt in ({"type": "json_object"}, loose):
        r = await c.chat([{"role": "user", "content": "x"}], model="m", response_format=fmt)
        assert r.parsed == {"a": 1}
    await c.aclose()
    assert sent == [{"type": "json_object"}, loose]


async def test_what_our_strict_schemas_hold_the_fake_takes(asyncllm_server: FakeServer) -> None:
    """The fake checks strict schemas as OpenAI does; the ones we make from models pass, a
    recursive model's (a $ref at the root, made an object) included."""
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        r = await c.chat([{"role": "user", "content": "x"}], model="m", response_format=Node)
    assert r.parsed == Node(value=1, children=[Node(value=1)])
    assert asyncllm_server.requests[-1].json["response_format"]["json_schema"]["strict"] is True


def strict_format(schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": strict}}


OPEN = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
PARTLY_REQUIRED = {
    "type": "object",
    "properties": {
        "inner": {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "required": ["a"],
            "additionalProperties": False,
        }
    },
    "required": ["inner"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            OPEN,
            "Invalid schema for response_format 's': In context=(), 'additionalProperties' is "
            "required to be supplied and to be false.",
        ),
        (
            PARTLY_REQUIRED,
            "Invalid schema for response_format 's': In context=('properties', 'inner'), "
            "'required' is required to be supplied and to be an array including every key in "
            "properties. Missing 'b'.",
        ),
        (
            {"type": "array", "items": {"type": "string"}},
            "Invalid schema for response_format 's': schema must be a JSON Schema of "
            "'type: \"object\"', got 'type: \"array\"'.",
        ),
    ],
)
async def test_the_fake_refuses_a_strict_schema_as_openai_does(
    asyncllm_server: FakeServer, schema: dict[str, Any], message: str
) -> None:
    async with asyncllm.OpenAI(
        api_key="k", base_url=asyncllm_server.url("/v1"), max_retries=0
    ) as c:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await c.chat(
                [{"role": "user", "content": "x"}], model="m", response_format=strict_format(schema)
            )
        # Not strict, the same schema is answered: the fake is no stricter than OpenAI.
        r = await c.chat(
            [{"role": "user", "content": "x"}],
            model="m",
            response_format=strict_format(schema, strict=False),
        )
    assert info.value.message == message
    body = json.loads(info.value.body)["error"]
    assert body["param"] == "response_format" and body["type"] == "invalid_request_error"
    assert r.parsed is not None


async def test_the_fake_wants_the_word_json_in_json_mode(asyncllm_server: FakeServer) -> None:
    fmt = {"type": "json_object"}
    async with asyncllm.OpenAI(
        api_key="k", base_url=asyncllm_server.url("/v1"), max_retries=0
    ) as c:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await c.chat([{"role": "user", "content": "x"}], model="m", response_format=fmt)
        r = await c.chat(
            [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "x"}],
            model="m",
            response_format=fmt,
        )
    assert info.value.message == (
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
        "'json_object'."
    )
    assert json.loads(info.value.body)["error"]["param"] == "messages"
    assert r.parsed == {"answer": "test"}


async def test_the_fake_cuts_the_answer_at_max_tokens(asyncllm_server: FakeServer) -> None:
    ask = [{"role": "user", "content": "one two three four"}]
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        cut = await c.chat(ask, model="m", max_tokens=3)
        newer = await c.chat(ask, model="m", extra_body={"max_completion_tokens": 2})
        whole = await c.chat(ask, model="m", max_tokens=5)
        chunks = [ch async for ch in c.stream_chat(ask, model="m", max_tokens=3)]
    assert (cut.text, cut.finish_reason) == ("echo: one two", "length")
    assert cut.usage is not None and cut.usage.completion_tokens == 3
    assert (newer.text, newer.finish_reason) == ("echo: one", "length")
    assert (whole.text, whole.finish_reason) == ("echo: one two three four", "stop")
    assert "".join(ch.delta for ch in chunks) == "echo: one two"
    assert chunks[-2].finish_reason == "length"


async def test_the_fake_refuses_a_bad_token_limit(asyncllm_server: FakeServer) -> None:
    async with asyncllm.OpenAI(
        api_key="k", base_url=asyncllm_server.url("/v1"), max_retries=0
    ) as c:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await c.chat(
                [{"role": "user", "content": "x"}],
                model="m",
                extra_body={"max_completion_tokens": 0},
            )
    assert info.value.message == (
        "Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, "
        "but got 0 instead."
    )
    error = json.loads(info.value.body)["error"]
    assert (error["param"], error["code"]) == ("max_completion_tokens", "integer_below_min_value")


async def test_a_refusal_on_the_wire(asyncllm_server: FakeServer) -> None:
    ask = [{"role": "user", "content": "REFUSE THIS"}]
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        structured = await c.chat(ask, model="m", response_format=Answer)
        plain = await c.chat(ask, model="m")
        answered = await c.chat([{"role": "user", "content": "x"}], model="m")
    said = structured.raw["choices"][0]["message"]
    assert said["content"] is None and said["refusal"] == structured.refusal
    assert structured.refusal == "I'm sorry, I can't assist with that request."
    assert (structured.text, structured.parsed) == ("", None)
    # Without a schema the model refuses in its text, as a model that is not bound to JSON does.
    assert (plain.text, plain.refusal) == (structured.refusal, None)
    assert answered.raw["choices"][0]["message"]["refusal"] is None


async def test_openai_returns_no_reasoning_text(asyncllm_server: FakeServer) -> None:
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        r = await c.chat([{"role": "user", "content": "x"}], model="o4", reasoning_effort="high")
    assert r.reasoning is None and r.text == "echo: x"
    assert asyncllm_server.requests[-1].json["reasoning_effort"] == "high"


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_reasoning_is_read_from_either_field(field: str) -> None:
    """vLLM (before 0.10: reasoning_content; since: reasoning), DeepSeek and Groq name it
    differently; both are read, in whole answers and in deltas."""
    answer = chat_json_with({field: "because"})
    chunks = [
        {"choices": [{"index": 0, "delta": {field: "be"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {field: "cause"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
    ]

    def handler(request: Any) -> MockResponse:
        if request.stream:
            lines = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
            sse = {"Content-Type": "text/event-stream"}
            return MockResponse(200, chunks=[*lines, b"data: [DONE]\n\n"], headers=sse)
        return MockResponse(200, json=answer)

    c = mock_client(handler)
    r = await c.chat([{"role": "user", "content": "x"}], model="m")
    async with c.stream_chat([{"role": "user", "content": "x"}], model="m") as stream:
        streamed = [ch.reasoning async for ch in stream]
        final = await stream.final()
    await c.aclose()
    assert r.reasoning == "because" and r.text == "ok"
    assert streamed == ["be", "cause", ""]
    assert (final.reasoning, final.text) == ("because", "ok")


def chat_json_with(extra: dict[str, Any]) -> dict[str, Any]:
    answer = chat_json("ok")
    answer["choices"][0]["message"].update(extra)
    return answer


# -- tools ------------------------------------------------------------------------------------


async def test_a_custom_tool_stays_custom_through_a_round_trip(asyncllm_server: FakeServer) -> None:
    shell = {"type": "custom", "custom": {"name": "shell", "description": "Runs a command."}}
    ask = [{"role": "user", "content": "list files"}]
    async with asyncllm.OpenAI(api_key="k", base_url=asyncllm_server.url("/v1")) as c:
        first = await c.chat(ask, model="m", tools=[shell])
        assert asyncllm_server.requests[-1].json["tools"] == [shell]
        call = first.tool_calls[0]
        assert (call.type, call.name, call.arguments) == ("custom", "shell", "test")
        async with c.stream_chat(ask, model="m", tools=[shell]) as stream:
            final = await stream.final()
        assert [(t.type, t.name, t.arguments) for t in final.tool_calls] == [
            ("custom", "shell", "test")
        ]
        answer = await c.chat([*ask, first.message, asyncllm.tool_result(call, "a b")], model="m")
        assert answer.text == "tool shell returned: a b"
        sent = asyncllm_server.requests[-1].json["messages"][1]["tool_calls"]
        assert sent == [
            {"id": call.id, "type": "custom", "custom": {"name": "shell", "input": "test"}}
        ]
        run = await c.run_tools(ask, model="m", tools=[(shell, lambda text: f"ran {text}")])
    assert run.response.text == "tool shell returned: ran test"


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "strict": True,
                    "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
                },
            },
            "Invalid schema for function 'f': In context=(), 'additionalProperties' is required "
            "to be supplied and to be false.",
        ),
        (
            {"type": "web_search_preview"},
            "Invalid value: 'web_search_preview'. Supported values are: 'function' and 'custom'.",
        ),
    ],
)
async def test_the_fake_refuses_tools_as_openai_does(
    asyncllm_server: FakeServer, tool: dict[str, Any], message: str
) -> None:
    async with asyncllm.OpenAI(
        api_key="k", base_url=asyncllm_server.url("/v1"), max_retries=0
    ) as c:
        with pytest.raises(asyncllm.BadRequestError) as info:  # sent as given, past the client
            await c.chat(
                [{"role": "user", "content": "x"}], model="m", extra_body={"tools": [tool]}
            )
    assert info.value.message == message


# -- choices, usage counts and the HTTP response -------------------------------------------------


def _event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _delta(index: int, content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"index": index, "delta": delta, "finish_reason": finish}


async def test_an_event_with_several_choices_gives_a_chunk_each() -> None:
    """Some servers put every choice's piece in one event: each becomes its own chunk."""
    events = [
        {"model": "m", "choices": [_delta(0, "a"), _delta(1, "x")]},
        {"model": "m", "choices": [_delta(1, "y"), _delta(0, "b")]},
        {"model": "m", "choices": [_delta(0, None, "stop"), _delta(1, None, "length")]},
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 4}},
    ]
    body = [_event(e) for e in events] + [b"data: [DONE]\n\n"]
    headers = {"content-type": "text/event-stream", "x-ratelimit-remaining-requests": "7"}
    c = mock_client(lambda r: MockResponse(chunks=body, headers=headers), model="m")
    async with c, c.stream_chat([{"role": "user", "content": "hi"}], n=2) as stream:
        chunks = [chunk async for chunk in stream]
        final = await stream.final()
    assert [(ch.index, ch.delta) for ch in chunks if ch.delta] == [
        (0, "a"),
        (1, "x"),
        (1, "y"),
        (0, "b"),
    ]
    assert [m.content for m in final.choices] == ["ab", "xy"]
    assert (final.text, final.finish_reason) == ("ab", "stop")
    assert final.usage is not None and final.usage.completion_tokens == 4
    assert stream.http is not None and stream.http.headers["X-RateLimit-Remaining-Requests"] == "7"
    assert final.http == stream.http


async def test_choices_come_in_index_order() -> None:
    payload = chat_json()
    payload["choices"] = [
        {"index": 1, "message": {"role": "assistant", "content": "second"}},
        {"index": 0, "message": {"role": "assistant", "content": "first"}},
    ]
    c = mock_client(lambda r: MockResponse(json=payload), model="m")
    async with c:
        r = await c.chat([{"role": "user", "content": "hi"}], n=2)
    assert r.text == "first"
    assert [m.content for m in r.choices] == ["first", "second"]


async def test_a_reply_message_is_read_as_it_was_and_checked() -> None:
    """The reply's message is validated straight into ``Message`` (one pydantic-core pass): what
    the wire has beside role, content and tool calls stays off the message (refusal and reasoning
    go to the response; a ``name`` or ``tool_call_id`` in a reply is not read), tool calls arrive
    as ``ToolCall``s in index order of the choices, and a message the wire model refused (list
    content, a tool call with neither a function nor a custom tool) is still refused."""
    payload = chat_json()
    payload["choices"] = [
        {
            "index": 1,
            "message": {
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
            },
        },
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "first",
                "refusal": "no",
                "reasoning": "why",
                "name": "bot",
                "tool_call_id": "t",
            },
            "finish_reason": "stop",
        },
    ]
    bad_content = chat_json()
    bad_content["choices"][0]["message"]["content"] = [{"type": "text", "text": "x"}]
    bad_call = chat_json()
    bad_call["choices"][0]["message"]["tool_calls"] = [{"id": "c2", "type": "function"}]
    replies = iter([payload, bad_content, bad_call])
    c = mock_client(lambda r: MockResponse(json=next(replies)), model="m")
    async with c:
        r = await c.chat([{"role": "user", "content": "hi"}], n=2)
        for _ in range(2):
            with pytest.raises(asyncllm.ResponseValidationError):
                await c.chat([{"role": "user", "content": "hi"}])
    assert r.message == asyncllm.Message(role="assistant", content="first")
    assert r.message.model_dump() == {
        "role": "assistant",
        "content": "first",
        "tool_calls": None,
        "tool_call_id": None,
        "name": None,
    }
    assert (r.refusal, r.reasoning, r.finish_reason) == ("no", "why", "stop")
    second = r.choices[1]
    assert type(second) is asyncllm.Message and second.role == "assistant"
    assert second.tool_calls == [asyncllm.ToolCall(id="c1", name="f", arguments="{}")]


async def test_usage_counts_come_from_the_details() -> None:
    payload = chat_json()
    payload["usage"] = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0},
    }
    c = mock_client(lambda r: MockResponse(json=payload), model="m")
    async with c:
        r = await c.chat([{"role": "user", "content": "hi"}])
    assert r.usage is not None
    assert (r.usage.cached_tokens, r.usage.reasoning_tokens) == (1920, 256)
    assert "cached_tokens" not in r.usage.model_dump()  # read on access, the wire kept as sent
    assert asyncllm.Usage(prompt_tokens=1).cached_tokens is None
    assert asyncllm.Usage(prompt_tokens_details={"cached_tokens": True}).cached_tokens is None


async def test_every_json_call_has_its_http_response() -> None:
    embeddings = {
        "data": [{"index": 0, "embedding": [0.5]}],
        "model": "e",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }

    def handler(request: Any) -> MockResponse:
        body = chat_json() if request.url.endswith("/chat/completions") else embeddings
        return MockResponse(201, json=body, headers={"X-Served-By": "unit"})

    c = mock_client(handler, model="m")
    async with c:
        r = await c.chat([{"role": "user", "content": "hi"}])
        e = await c.embed("a")
    for answer in (r, e):
        assert answer.http is not None
        assert (answer.http.status, answer.http.headers["x-served-by"]) == (201, "unit")
    assert asyncllm.ChatResponse(text="", message=r.message, request_id="x").http is None


# -- the plain chunk, read without the wire models ------------------------------------------------

_CHUNK_TOP = {"id": "c", "object": "chat.completion.chunk", "model": "m"}


def _one_choice(choice: Any, **top: Any) -> dict[str, Any]:
    return {**_CHUNK_TOP, "choices": [choice], **top}


@pytest.mark.parametrize(
    ("payload", "plain"),
    [
        (_one_choice({"index": 0, "delta": {"content": "hi"}, "finish_reason": None}), True),
        (_one_choice({"index": 0, "delta": {"role": "assistant", "content": ""}}), True),
        (_one_choice({"index": 0, "delta": {}, "finish_reason": "stop"}), True),
        (_one_choice({"delta": {"content": None}, "logprobs": None}), True),
        (_one_choice({"index": 0, "delta": {"content": "x"}}, model=None), True),
        (
            _one_choice(
                {"index": 0, "delta": {"content": "x"}, "extra": 1}, system_fingerprint="f"
            ),
            True,
        ),
        # Everything else goes through the wire models, as before.
        (_one_choice({"index": 1, "delta": {"content": "x"}}), False),
        (_one_choice({"index": True, "delta": {"content": "x"}}), False),
        (_one_choice({"index": 0, "delta": {"content": "x", "refusal": "no"}}), False),
        (_one_choice({"index": 0, "delta": {"reasoning_content": "hmm"}}), False),
        (_one_choice({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t"}]}}), False),
        (_one_choice({"index": 0, "delta": {"content": "x"}, "logprobs": {"content": []}}), False),
        (
            _one_choice({"index": 0, "delta": {"content": "x"}}, usage=chat_json("x")["usage"]),
            False,
        ),
        ({**_CHUNK_TOP, "choices": []}, False),
        (
            {**_CHUNK_TOP, "choices": [{"delta": {"content": "a"}}, {"index": 1, "delta": {}}]},
            False,
        ),
        (_one_choice({"index": 0, "delta": {"content": 5}}), False),
        (_one_choice({"index": 0, "delta": {"content": "x"}, "finish_reason": 3}), False),
        (_one_choice({"index": 0, "delta": {"content": "x"}}, model=7), False),
        (_one_choice({"index": 0, "delta": None}), False),
        (_one_choice("not a choice"), False),
    ],
)
def test_a_plain_chunk_is_the_chunk_the_wire_models_make(payload: Any, plain: bool) -> None:
    from asyncllm._http._backend import Meta
    from asyncllm._wire import openai as wire

    meta = Meta("rid", None, {}, 200)
    fast = wire._plain_chunk(payload, meta)
    assert (fast is not None) == plain
    try:
        checked = wire._WireChunk.model_validate(payload)
    except ValueError:
        assert fast is None  # what the wire models refuse, the plain reading leaves to them
        return
    if not checked.choices:
        assert fast is None
        return
    slow = wire._choice_chunk(checked.choices[0], checked.usage, checked.model, meta, payload)
    if fast is not None:
        assert fast == slow
    assert wire.OpenAIChat._chunk(payload, meta) == slow
