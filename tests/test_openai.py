from __future__ import annotations

import asyncio
import base64
import functools
import gc
import logging
import struct
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from pydantic import BaseModel

import asyncllm
from asyncllm.testing import FakeServer, MockResponse
from asyncllm.testing.fakes import _common
from tests.chat_contract import ChatContract
from tests.helpers import client as mock_client
from tests.helpers import ok
from tests.specs import SPECS


class TestOpenAIContract(ChatContract):
    protocol = "openai"

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
