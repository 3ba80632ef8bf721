"""Claude (Anthropic Messages API): the shared chat contract, plus what is particular to it."""

from __future__ import annotations

import asyncio
import base64
import json
from functools import cache
from typing import Any, ClassVar

import aiohttp
import jsonschema
import pytest
from aiohttp import web

import asyncllm
from asyncllm.backends.claude import output_schema, tool_choice_body
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from asyncllm.testing.fakes import anthropic as fake
from tests.chat_contract import NO_WAIT, ChatContract, Colour, Item, Order, Tree, get_weather
from tests.chat_contract import Counts as Open
from tests.specs import SPECS

SCHEMAS = SPECS / "anthropic/anthropic-messages.schemas.json"
MODEL = "fake-chat"
SECRET = "sk-ant-test-SECRET-0123456789"
# Sampling fields that the API still takes under ``anthropic-version: 2023-06-01`` for older
# models, but that the SDK types the schemas come from (anthropic 2.14) no longer list.
LEGACY_SAMPLING = ("temperature", "top_p", "top_k")
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


class TestClaudeContract(ChatContract):
    protocol = "anthropic"
    streamed_choices = False  # the Messages API has no n
    usage_counts = frozenset({"cached_tokens"})
    structured = True
    open_maps_refused = True  # the API takes additionalProperties: false only
    refusal_prompt = "REFUSE THIS"
    # budget_tokens must be below max_tokens (the client's default is 1024, the least budget).
    reasoning_options = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}
    length_options = {"max_tokens": 3}
    signed_history = True
    builtin_tool: ClassVar[dict[str, Any] | None] = {
        "type": "web_search_20250305",
        "name": "web_search",
        "max_uses": 1,
    }
    # Anthropic's tools are versioned types, server tools and client tools alike.
    builtin_kinds = frozenset({"web_search_20250305"})

    def strict_on_wire(self, body: dict[str, Any]) -> bool:
        return any(t.get("strict") is True for t in body.get("tools") or ())

    def builtin_sent_back(self, body: dict[str, Any]) -> bool:
        # The answer's server_tool_use and its web_search_tool_result, in the assistant turn.
        kinds = [b["type"] for b in body["messages"][1]["content"]]
        return kinds[:2] == ["server_tool_use", "web_search_tool_result"] and "tool_use" in kinds

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.Claude(api_key="test", base_url=server.url(), **kwargs)


# -- helpers ---------------------------------------------------------------------------------------


def _strict(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it does not say otherwise, so a
    misspelt or misplaced field fails validation instead of passing as an unknown extra."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def validator(name: str, strict: bool = True) -> jsonschema.Draft202012Validator:
    if not SCHEMAS.exists():
        pytest.skip(f"{SCHEMAS} is not available")
    schema = json.loads(SCHEMAS.read_text())["schemas"][name]
    return jsonschema.Draft202012Validator(_strict(schema) if strict else schema)


def check(name: str, instance: Any, *, strict: bool = True) -> None:
    errors = sorted(validator(name, strict).iter_errors(instance), key=str)
    assert not errors, f"{name}: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5]
    )


def header(recorded: Any, name: str) -> str | None:
    return next((v for k, v in recorded.headers.items() if k.lower() == name.lower()), None)


def sent(server: FakeServer) -> Any:
    return server.requests[-1].json


PROTOCOLS = ("anthropic",)


def make_client(server: FakeServer) -> asyncllm.Claude:
    return asyncllm.Claude(api_key=SECRET, base_url=server.url(), retry=NO_WAIT)


async def collect(stream: Any) -> list[asyncllm.ChatChunk]:
    async with stream:
        return [chunk async for chunk in stream]


# -- configuration ---------------------------------------------------------------------------------


def test_anthropic_is_claude() -> None:
    assert asyncllm.Anthropic is asyncllm.Claude


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    with pytest.raises(asyncllm.ConfigurationError, match="ANTHROPIC_API_KEY"):
        asyncllm.Claude()
    monkeypatch.setenv("CLAUDE_API_KEY", "from-claude")
    assert asyncllm.Claude().api_key.get_secret_value() == "from-claude"  # type: ignore[union-attr]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-anthropic")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")
    c = asyncllm.Claude()
    assert c.api_key is not None and c.api_key.get_secret_value() == "from-anthropic"
    assert c.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"betas": ["ok", ""]}, "betas"),
        ({"betas": "a\r\nb"}, "CR"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"anthropic_version": "x\ny"}, "CR"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=message):
        asyncllm.Claude(api_key="k", **kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("auto", {"type": "auto"}),
        ("any", {"type": "any"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
    ],
)
def test_tool_choice(value: Any, expected: Any) -> None:
    assert tool_choice_body(value) == expected


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        asyncllm.Claude("k")  # type: ignore[misc]
    with pytest.raises(TypeError, match="api_kye"):
        asyncllm.Claude(api_kye="k")  # type: ignore[call-arg]


def test_betas_forms() -> None:
    assert asyncllm.Claude(api_key="k", betas="a, b,").betas == ["a", "b"]
    assert asyncllm.Claude(api_key="k", betas=()).betas == []
    with pytest.raises(asyncllm.ConfigurationError, match="betas must be"):
        asyncllm.Claude(api_key="k", betas=5)  # type: ignore[arg-type]


USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("call", "unknown"),
    [
        (lambda c: c.chat(USER, model=MODEL, temprature=0.5), "temprature"),
        (lambda c: collect(c.stream_chat(USER, model=MODEL, timout=1)), "timout"),
        (lambda c: c.count_tokens(USER, model=MODEL, max_tokens=5), "max_tokens"),
        (lambda c: c.models(extra_body={}), "extra_body"),
    ],
)
async def test_misspelt_option_is_refused_before_sending(
    client: asyncllm.Claude, server: FakeServer, call: Any, unknown: str
) -> None:
    with pytest.raises(TypeError, match=unknown):
        await call(client)
    assert server.request_count == 0


async def test_call_options_reach_every_page(client: asyncllm.Claude, server: FakeServer) -> None:
    server.state["anthropic.page_cap"] = 1
    await client.models(extra_query={"trace": "1"}, extra_headers={"x-trace": "t"}, max_retries=0)
    assert len(server.requests) == 3
    assert all(r.query.get("trace") == "1" for r in server.requests)
    assert all(header(r, "x-trace") == "t" for r in server.requests)


async def test_model_defaults_to_the_clients(server: FakeServer) -> None:
    async with asyncllm.Claude(api_key="k", base_url=server.url(), model=MODEL) as client:
        r = await client.chat([{"role": "user", "content": "hi"}])
        assert r.model == MODEL and sent(server)["model"] == MODEL
        assert await client.count_tokens([{"role": "user", "content": "a b"}]) == 2
    async with asyncllm.Claude(api_key="k", base_url=server.url()) as client:
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.chat([{"role": "user", "content": "hi"}])
    assert server.request_count == 2


# -- what goes on the wire -------------------------------------------------------------------------


async def test_headers_sent(server: FakeServer) -> None:
    async with asyncllm.Claude(
        api_key=SECRET, base_url=server.url(), betas=["beta-one", "beta-two"]
    ) as client:
        await client.chat([{"role": "user", "content": "hi"}], model=MODEL)
    recorded = server.requests[-1]
    assert header(recorded, "x-api-key") == SECRET
    assert header(recorded, "anthropic-version") == "2023-06-01"
    assert header(recorded, "anthropic-beta") == "beta-one,beta-two"
    assert header(recorded, "authorization") is None
    assert recorded.path == "/v1/messages"


async def test_system_goes_top_level(client: asyncllm.Claude, server: FakeServer) -> None:
    r = await client.chat(
        [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": "hi there"},
        ],
        model=MODEL,
    )
    body = sent(server)
    assert body["system"] == [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "and kind"},
    ]
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["max_tokens"] == 1024
    assert r.usage is not None and r.usage.prompt_tokens == 6  # system words counted by the fake
    check("MessageCreateParamsNonStreaming", body)

    await client.chat(
        [{"role": "system", "content": "one"}, {"role": "user", "content": "x"}], model=MODEL
    )
    assert sent(server)["system"] == "one"


async def test_params_mapped(client: asyncllm.Claude, server: FakeServer) -> None:
    r = await client.chat(
        [{"role": "user", "content": "hello big world"}],
        model=MODEL,
        max_tokens=50,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop="world",
        metadata={"user_id": "u-1"},
        extra_body={"service_tier": "auto"},
    )
    body = sent(server)
    assert body["stop_sequences"] == ["world"]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (
        50,
        0.5,
        0.9,
        40,
    )
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["service_tier"] == "auto"
    assert "stop" not in body
    with pytest.raises(AssertionError, match="top_k"):
        check("MessageCreateParamsNonStreaming", body)
    check(
        "MessageCreateParamsNonStreaming",
        {k: v for k, v in body.items() if k not in LEGACY_SAMPLING},
    )
    assert r.finish_reason == "stop"
    assert r.raw["stop_reason"] == "stop_sequence"
    assert r.text == "echo: hello big "

    r = await client.chat([{"role": "user", "content": "a b c d e f"}], model=MODEL, max_tokens=2)
    assert (r.finish_reason, r.text) == ("length", "echo: a")


async def test_tool_round_trip_on_the_wire(client: asyncllm.Claude, server: FakeServer) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather?"}]
    first = await client.chat(messages, model=MODEL, tools=[get_weather], tool_choice="get_weather")
    body = sent(server)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    check("MessageCreateParamsNonStreaming", body)
    assert first.finish_reason == "tool_calls"
    call = first.tool_calls[0]
    assert call.id.startswith("toolu_")
    assert json.loads(call.arguments) == {"city": "test"}

    messages += [first.message, asyncllm.tool_result(call, "sunny")]
    second = await client.chat(messages, model=MODEL, tools=[get_weather])
    body = sent(server)
    check("MessageCreateParamsNonStreaming", body)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "test"}}
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }
    assert second.text == "tool get_weather returned: sunny"


async def test_native_tools_pass_through(client: asyncllm.Claude, server: FakeServer) -> None:
    native = {
        "name": "lookup",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
    r = await client.chat([{"role": "user", "content": "x"}], model=MODEL, tools=[native, search])
    body = sent(server)
    assert body["tools"] == [native, search]
    check("MessageCreateParamsNonStreaming", body)
    assert r.tool_calls[0].args() == {"q": "test"}


async def test_consecutive_tool_results_merge(client: asyncllm.Claude, server: FakeServer) -> None:
    calls = [
        asyncllm.ToolCall(id="toolu_a", name="get_weather", arguments='{"city": "Paris"}'),
        asyncllm.ToolCall(id="toolu_b", name="get_weather", arguments='{"city": "Rome"}'),
    ]
    messages: list[Any] = [
        {"role": "user", "content": "two cities"},
        {"role": "assistant", "content": "Looking both up.", "tool_calls": calls},
        asyncllm.tool_result(calls[0], "rain"),
        {**asyncllm.tool_result(calls[1], "sun"), "is_error": False},
    ]
    r = await client.chat(messages, model=MODEL)
    body = sent(server)
    check("MessageCreateParamsNonStreaming", body)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "Looking both up."}
    assert [b["tool_use_id"] for b in body["messages"][2]["content"]] == ["toolu_a", "toolu_b"]
    assert body["messages"][2]["content"][1]["is_error"] is False
    assert r.text == "tool get_weather returned: sun"


async def test_fake_refuses_unanswered_tool_use(client: asyncllm.Claude) -> None:
    call = asyncllm.ToolCall(id="toolu_x", name="get_weather", arguments="{}")
    with pytest.raises(asyncllm.BadRequestError, match="tool_use ids"):
        await client.chat(
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "user", "content": "never mind"},
            ],
            model=MODEL,
        )


async def test_images(client: asyncllm.Claude, server: FakeServer) -> None:
    await client.chat(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                    },
                ],
            }
        ],
        model=MODEL,
    )
    body = sent(server)
    check("MessageCreateParamsNonStreaming", body)
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }


@pytest.mark.parametrize(
    ("messages", "kwargs", "message"),
    [
        ([{"role": "user", "content": "x"}], {"temperature": 1.5}, "temperature"),
        ([{"role": "user", "content": "x"}], {"max_tokens": 0}, "max_tokens"),
        ([{"role": "user", "content": "x"}], {"stop": 5}, "stop"),
        ([{"role": "user", "content": "x"}], {"metadata": "u"}, "metadata"),
        ([{"role": "system", "content": "only"}], {}, "user message"),
        ([{"role": "function", "name": "f", "content": "x"}], {}, "'function'"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA=="}}
                    ],
                }
            ],
            {},
            "image/bmp",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
                }
            ],
            {},
            "base64",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            {},
            "input_audio",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}],
                },
            ],
            {},
            "not JSON",
        ),
    ],
)
async def test_bad_input_is_refused_before_sending(
    client: asyncllm.Claude, server: FakeServer, messages: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=message):
        await client.chat(messages, model=MODEL, **kwargs)
    assert server.request_count == 0


async def test_streaming_body_follows_schema(client: asyncllm.Claude, server: FakeServer) -> None:
    await collect(
        client.stream_chat(
            [
                {"role": "system", "content": "sys"},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                },
            ],
            model=MODEL,
            tools=[get_weather],
            tool_choice="auto",
        )
    )
    body = sent(server)
    assert body["stream"] is True
    check("MessageCreateParamsStreaming", body)
    with pytest.raises(
        AssertionError
    ):  # the check can fail: a streaming body is not a non-streaming one
        check("MessageCreateParamsNonStreaming", body)
    with pytest.raises(AssertionError):  # and a misnamed field fails it too
        check("MessageCreateParamsStreaming", {**body, "stop": ["x"]})


# -- answers ---------------------------------------------------------------------------------------


async def test_response_fields(client: asyncllm.Claude, server: FakeServer) -> None:
    r = await client.chat([{"role": "user", "content": "hello"}], model=MODEL)
    check("Message", r.raw, strict=False)
    assert r.server_request_id == f"req_srv_{r.raw['id']}"
    assert r.finish_reason == "stop"
    assert r.model == MODEL
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (1, 2, 3)
    assert r.usage.model_extra == {
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cached_tokens": 0,
    }
    assert (r.usage.cached_tokens, r.usage.reasoning_tokens) == (0, None)


async def test_mixed_content_response() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Zürich"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 7,
            "cache_creation_input_tokens": 3,
        },
    }
    check("Message", message, strict=False)
    transport = MockTransport(
        lambda request: MockResponse(json=message, headers={"request-id": "req_server"})
    )
    async with asyncllm.Claude(api_key="k", transport=transport) as client:
        r = await client.chat([{"role": "user", "content": "hi"}], model="claude-x")
    assert r.text == "Let me check."
    assert r.tool_calls == [
        asyncllm.ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Zürich"}')
    ]
    # input_tokens leaves out the cache reads and writes, which prompt_tokens counts
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.total_tokens) == (20, 25)
    assert r.usage.cached_tokens == 7
    assert r.usage.model_extra == {
        "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 3,
        "cached_tokens": 7,
    }
    assert r.server_request_id == "req_server"
    assert transport.requests[-1].url == "https://api.anthropic.com/v1/messages"


async def test_not_a_message_is_a_validation_error() -> None:
    transport = MockTransport(lambda request: MockResponse(json={"choices": []}))
    async with asyncllm.Claude(api_key="k", transport=transport, max_retries=0) as client:
        with pytest.raises(asyncllm.ResponseValidationError):
            await client.chat([{"role": "user", "content": "hi"}], model="m")


# -- streaming -------------------------------------------------------------------------------------


async def test_stream_text_and_usage(client: asyncllm.Claude) -> None:
    chunks = await collect(
        client.stream_chat([{"role": "user", "content": "one two three four"}], model=MODEL)
    )
    assert "".join(c.delta for c in chunks) == "echo: one two three four"
    assert len([c for c in chunks if c.delta]) == 5
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        4,
        5,
        9,
    )
    assert all(c.model == MODEL for c in chunks)
    assert {c.raw["type"] for c in chunks} == {"content_block_delta", "message_delta"}


async def test_stream_tool_call(client: asyncllm.Claude) -> None:
    chunks = await collect(
        client.stream_chat(
            [{"role": "user", "content": "weather?"}], model=MODEL, tools=[get_weather]
        )
    )
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].index == 0 and deltas[0].name == "get_weather"
    assert deltas[0].id is not None and deltas[0].id.startswith("toolu_")
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    assert json.loads("".join(d.arguments for d in deltas)) == {"city": "test"}
    assert chunks[-1].finish_reason == "tool_calls"


async def test_stream_chunks_arrive_as_sent(client: asyncllm.Claude, server: FakeServer) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        await resp.write(fake._sse("message_start", {"type": "message_start", "message": start}))
        await resp.write(b'event: ping\ndata: {"type": "ping"}\n\n')
        await resp.write(
            fake._sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        await resp.write(
            fake._sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "first"},
                },
            )
        )
        await release.wait()
        await resp.write(
            fake._sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": " second"},
                },
            )
        )
        await resp.write(
            fake._sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        )
        await resp.write(
            fake._sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 2},
                },
            )
        )
        await resp.write(fake._sse("message_stop", {"type": "message_stop"}))
        await resp.write_eof()
        return resp

    server.overrides["/v1/messages"] = slow
    async with client.stream_chat([{"role": "user", "content": "x"}], model=MODEL) as stream:
        first = await asyncio.wait_for(stream.__anext__(), 2)
        assert first.delta == "first"  # arrived while the server still holds the rest back
        release.set()
        rest = [c async for c in stream]
    assert [c.delta for c in rest] == [" second", ""]
    assert rest[-1].finish_reason == "stop"


async def test_stream_error_before_first_chunk_is_retried(
    client: asyncllm.Claude, server: FakeServer
) -> None:
    fake.stream_error_next(server, "overloaded_error", after=0)
    chunks = await collect(
        client.stream_chat([{"role": "user", "content": "again please"}], model=MODEL)
    )
    assert "".join(c.delta for c in chunks) == "echo: again please"
    assert server.request_count == 2


async def test_stream_error_after_first_chunk_is_raised(
    client: asyncllm.Claude, server: FakeServer
) -> None:
    fake.stream_error_next(server, "overloaded_error", after=2)
    got: list[str] = []
    with pytest.raises(asyncllm.OverloadedError) as info:
        async with client.stream_chat(
            [{"role": "user", "content": "a b c d"}], model=MODEL
        ) as stream:
            async for chunk in stream:
                got.append(chunk.delta)
    assert got == ["echo:", " a"]
    error = info.value
    assert error.status_code == 529
    assert error.error_type == "overloaded_error"
    assert error.message == "injected overloaded_error"
    assert error.server_request_id is not None and error.server_request_id.startswith("req_srv_")
    assert server.request_count == 1


async def test_stream_error_of_unknown_type(client: asyncllm.Claude, server: FakeServer) -> None:
    fake.stream_error_next(server, "brand_new_error", after=0)
    with pytest.raises(asyncllm.APIError) as info:
        await collect(client.stream_chat([{"role": "user", "content": "x"}], model=MODEL))
    assert info.value.status_code is None
    assert info.value.error_type == "brand_new_error"
    assert server.request_count == 1  # an unknown failure is not retried


async def test_stream_cut_short_is_an_error() -> None:
    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
        b'"model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}\n\n',
    ]
    transport = MockTransport(lambda request: MockResponse(chunks=events))
    async with asyncllm.Claude(api_key="k", transport=transport, max_retries=0) as client:
        got: list[str] = []
        with pytest.raises(asyncllm.APIConnectionError, match="message_stop"):
            async with client.stream_chat([{"role": "user", "content": "x"}], model="m") as stream:
                async for chunk in stream:
                    got.append(chunk.delta)
    assert got == ["Hel"]


async def test_stream_ignores_what_it_does_not_know() -> None:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        },
        {"type": "ping"},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "something_new", "x": 1},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    for event in events:
        if event["type"] not in ("ping", "something_new"):
            check("RawMessageStreamEvent", event, strict=False)
    body = b"".join(fake._sse(str(e["type"]), e) for e in events)
    transport = MockTransport(
        lambda request: MockResponse(chunks=[body[i : i + 7] for i in range(0, len(body), 7)])
    )
    async with asyncllm.Claude(api_key="k", transport=transport) as client:
        chunks = await collect(client.stream_chat([{"role": "user", "content": "x"}], model="m"))
    assert "".join(c.delta for c in chunks) == "Hi"
    assert [(d.index, d.id, d.arguments) for c in chunks for d in c.tool_calls] == [
        (0, "toolu_9", ""),
        (0, None, "{}"),
    ]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 7)


# -- errors ----------------------------------------------------------------------------------------


async def test_error_body_is_read(server: FakeServer) -> None:
    server.fail_next(1, status=529, headers={"request-id": "req_overloaded"})
    async with asyncllm.Claude(api_key=SECRET, base_url=server.url(), max_retries=0) as client:
        with pytest.raises(asyncllm.OverloadedError) as info:
            await client.chat([{"role": "user", "content": "x"}], model=MODEL)
    error = info.value
    assert (error.status_code, error.error_type, error.message) == (
        529,
        "overloaded_error",
        "injected 529",
    )
    assert error.server_request_id == "req_overloaded"


async def test_529_is_retried(client: asyncllm.Claude, server: FakeServer) -> None:
    server.fail_next(2, status=529)
    r = await client.chat([{"role": "user", "content": "x"}], model=MODEL)
    assert r.text == "echo: x"
    assert server.request_count == 3


async def test_api_key_never_shown(server: FakeServer) -> None:
    client = asyncllm.Claude(api_key=SECRET, base_url=server.url(), max_retries=0)
    assert SECRET not in repr(client)
    server.fail_next(1, status=401)
    fake.stream_error_next(server, "authentication_error", after=0)
    try:
        with pytest.raises(asyncllm.AuthenticationError) as info:
            await client.chat([{"role": "user", "content": "x"}], model=MODEL)
        with pytest.raises(asyncllm.AuthenticationError) as streamed:
            await collect(client.stream_chat([{"role": "user", "content": "x"}], model=MODEL))
    finally:
        await client.aclose()
    for error in (info.value, streamed.value):
        shown = " ".join([str(error), repr(error), str(error.body), repr(vars(error))])
        assert SECRET not in shown


async def test_count_tokens(client: asyncllm.Claude, server: FakeServer) -> None:
    n = await client.count_tokens(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}],
        model=MODEL,
        tools=[get_weather],
    )
    assert n == 5
    recorded = server.requests[-1]
    assert recorded.path == "/v1/messages/count_tokens"
    assert "max_tokens" not in recorded.json
    check("MessageCountTokensParams", recorded.json)


async def test_models_follow_pages(client: asyncllm.Claude, server: FakeServer) -> None:
    server.state["anthropic.page_cap"] = 1
    models = await client.models()
    assert [m.id for m in models] == ["fake-chat", "claude-fake-opus", "claude-fake-haiku"]
    assert models[0].created == 1747180800
    assert models[0].model_extra == {"display_name": "Fake Chat"}
    assert [r.query.get("after_id") for r in server.requests] == [
        None,
        "fake-chat",
        "claude-fake-opus",
    ]


async def test_models_that_never_end_are_refused() -> None:
    page = {
        "data": [{"id": "a", "type": "model"}],
        "has_more": True,
        "first_id": "a",
        "last_id": "a",
    }
    transport = MockTransport(lambda request: MockResponse(json=page))
    async with asyncllm.Claude(api_key="k", transport=transport) as client:
        with pytest.raises(asyncllm.ResponseValidationError):
            await client.models()
    assert len(transport.requests) == 2


# -- the fake itself -------------------------------------------------------------------------------


async def test_fake_speaks_anthropic(server: FakeServer) -> None:
    good: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:
        refusals = [
            ({k: v for k, v in good.items() if k != "max_tokens"}, headers, 400),
            (good, {"x-api-key": "k"}, 400),
            (good, {"anthropic-version": "2023-06-01"}, 401),
            (
                {**good, "messages": [{"role": "system", "content": "s"}, *good["messages"]]},
                headers,
                400,
            ),
        ]
        for body, sent_headers, status in refusals:
            async with session.post(
                server.url("/v1/messages"), json=body, headers=sent_headers
            ) as resp:
                assert resp.status == status
                check("ErrorResponse", await resp.json(), strict=False)
        async with session.post(
            server.url("/v1/messages"), json={**good, "stream": True}, headers=headers
        ) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = (await resp.read()).decode()
    events = [block for block in raw.split("\n\n") if block]
    names = [e.split("\n")[0].removeprefix("event: ") for e in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    for block in events:
        name, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name.removeprefix("event: ")
        if payload["type"] != "ping":
            check("RawMessageStreamEvent", payload, strict=False)


async def test_fake_takes_a_bearer_key_as_well_as_x_api_key(server: FakeServer) -> None:
    # The anthropic SDK (2.x) sends Authorization: Bearer; our client sends x-api-key.
    good = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    version = {"anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:
        for headers, status in [
            ({**version, "Authorization": "Bearer k"}, 200),
            ({**version, "x-api-key": "k"}, 200),
            ({**version, "Authorization": "Bearer "}, 401),
            ({**version, "Authorization": "Basic k"}, 401),
            (version, 401),
        ]:
            async with session.post(server.url("/v1/messages"), json=good, headers=headers) as r:
                assert r.status == status, headers
                if status == 401:
                    body = await r.json()
                    check("ErrorResponse", body, strict=False)
                    assert body["error"]["type"] == "authentication_error"


async def test_fake_retrieves_one_model(server: FakeServer) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(server.url("/v1/models/claude-fake-haiku")) as r:
            assert r.status == 200
            assert (await r.json())["id"] == "claude-fake-haiku"
        async with session.get(server.url("/v1/models/nope")) as r:
            assert r.status == 404
            assert r.headers["request-id"] == (await r.json())["request_id"]


# -- structured output -----------------------------------------------------------------------------


THINK: dict[str, Any] = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}


def objects(node: Any) -> list[dict[str, Any]]:
    """Every object schema inside ``node``."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += objects(value)
    elif isinstance(node, list):
        for value in node:
            found += objects(value)
    return found


async def test_structured_output_on_the_wire(client: asyncllm.Claude, server: FakeServer) -> None:
    r = await client.chat(
        [{"role": "user", "content": "an order"}], model=MODEL, response_format=Order
    )
    assert isinstance(r.parsed, Order)
    assert r.parsed == Order(colour=Colour.RED, items=[Item(name="test")])
    assert json.loads(r.text) == r.parsed.model_dump(mode="json", exclude_defaults=True)
    body = sent(server)
    check("MessageCreateParamsNonStreaming", body)
    fmt = body["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    schema = fmt["schema"]
    assert schema == output_schema(Order.model_json_schema())
    assert len(objects(schema)) == 2  # Order and Item, both closed
    assert all(o["additionalProperties"] is False for o in objects(schema))
    assert schema["required"] == ["colour", "items"]  # optional fields stay optional
    count = schema["$defs"]["Item"]["properties"]["count"]
    assert "minimum" not in count and count["description"] == "{minimum: 1}"


async def test_structured_stream_final_matches_chat(client: asyncllm.Claude) -> None:
    messages = [{"role": "user", "content": "an order"}]
    r = await client.chat(messages, model=MODEL, response_format=Order)
    async with client.stream_chat(messages, model=MODEL, response_format=Order) as stream:
        deltas = [chunk.delta async for chunk in stream]
        final = await stream.final()
    assert len([d for d in deltas if d]) > 1
    assert isinstance(final.parsed, Order)
    assert (final.text, final.parsed, final.finish_reason) == (r.text, r.parsed, "stop")


async def test_schema_dicts_are_taken(client: asyncllm.Claude, server: FakeServer) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}}
    r = await client.chat([{"role": "user", "content": "n"}], model=MODEL, response_format=schema)
    assert r.parsed == {"n": 1}
    assert sent(server)["output_config"]["format"]["schema"] == {
        "type": "object",
        "properties": {"n": {"type": "integer", "description": "{maximum: 5}"}},
        "additionalProperties": False,
    }
    openai_shaped = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    r = await client.chat(
        [{"role": "user", "content": "n"}], model=MODEL, response_format=openai_shaped
    )
    assert r.parsed == {"n": 1}


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        (Open, "open map at #/properties/counts"),
        (Tree, "recursive schema"),
        ({"type": "json_object"}, "no JSON mode"),
        ({"type": "object", "properties": {"a": {"$ref": "https://x/s.json"}}}, "local references"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "open map at #"),
    ],
)
async def test_what_claude_cannot_express_is_refused_before_sending(
    client: asyncllm.Claude, server: FakeServer, response_format: Any, message: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=message):
        await client.chat(USER, model=MODEL, response_format=response_format)
    with pytest.raises(asyncllm.ConfigurationError, match=message):
        client.stream_chat(USER, model=MODEL, response_format=response_format)
    assert server.request_count == 0


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"type": "string", "format": "email", "minLength": 2, "description": "who"},
            {"type": "string", "format": "email", "description": "who\n\n{minLength: 2}"},
        ),
        (
            {"type": "string", "format": "ipv4-ish", "pattern": "^a+$"},
            {"type": "string", "pattern": "^a+$", "description": '{format: "ipv4-ish"}'},
        ),
        (
            {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
            {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 1,
                "description": "{maxItems: 3}",
            },
        ),
        (
            {"type": "array", "items": {"type": "integer"}, "minItems": 2, "uniqueItems": True},
            {
                "type": "array",
                "items": {"type": "integer"},
                "description": "{minItems: 2, uniqueItems: true}",
            },
        ),
        (
            {"oneOf": [{"type": "object", "properties": {}}, {"type": "null"}]},
            {
                "anyOf": [
                    {"type": "object", "properties": {}, "additionalProperties": False},
                    {"type": "null"},
                ]
            },
        ),
        (
            {
                "allOf": [{"$ref": "#/$defs/A"}],
                "description": "an A",
                "$defs": {"A": {"type": "integer"}},
            },
            {"$ref": "#/$defs/A", "$defs": {"A": {"type": "integer"}}},
        ),
        (  # a property named like a keyword is a property
            {
                "type": "object",
                "properties": {"minimum": {"type": "number"}},
                "required": ["minimum"],
            },
            {
                "type": "object",
                "properties": {"minimum": {"type": "number"}},
                "required": ["minimum"],
                "additionalProperties": False,
            },
        ),
        (  # a shared definition used twice is no recursion
            {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/P"}, "b": {"$ref": "#/$defs/P"}},
                "$defs": {"P": {"type": "object", "properties": {"x": {"const": 1}}}},
            },
            {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/P"}, "b": {"$ref": "#/$defs/P"}},
                "$defs": {
                    "P": {
                        "type": "object",
                        "properties": {"x": {"const": 1}},
                        "additionalProperties": False,
                    }
                },
                "additionalProperties": False,
            },
        ),
    ],
)
def test_output_schema(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    before = json.dumps(schema)
    assert output_schema(schema) == expected
    assert json.dumps(schema) == before  # the schema given is left as it was


async def test_the_fake_refuses_schemas_the_api_refuses(server: FakeServer) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    good: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "x"}],
    }

    def with_schema(schema: Any) -> dict[str, Any]:
        return {**good, "output_config": {"format": {"type": "json_schema", "schema": schema}}}

    closed = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    cases = [
        ({**closed, "additionalProperties": True}, "'additionalProperties: true' is not supported"),
        ({"type": "object", "properties": {}}, "must be explicitly set to false"),
        (
            {**closed, "properties": {"a": {"type": "integer", "minimum": 1}}},
            "minimum not supported",
        ),
        (
            {
                **closed,
                "properties": {"a": {"$ref": "#/$defs/T"}},
                "$defs": {"T": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}]}},
            },
            "Too many recursive definitions",
        ),
    ]
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(server.url("/v1/messages"), json=with_schema(closed)) as resp:
            assert resp.status == 200
            assert json.loads((await resp.json())["content"][0]["text"]) == {"a": "test"}
        for schema, message in cases:
            async with session.post(server.url("/v1/messages"), json=with_schema(schema)) as resp:
                assert resp.status == 400, schema
                error = await resp.json()
                check("ErrorResponse", error, strict=False)
                assert message in error["error"]["message"]
        bad_effort = {**good, "output_config": {"effort": "extreme"}}
        async with session.post(server.url("/v1/messages"), json=bad_effort) as resp:
            assert resp.status == 400


async def test_refusal(client: asyncllm.Claude) -> None:
    messages = [{"role": "user", "content": "REFUSE THIS, please"}]
    r = await client.chat(messages, model=MODEL, response_format=Order)
    assert r.parsed is None and r.text == ""
    assert r.refusal == "The fake model refuses text that says 'REFUSE THIS'."
    assert (r.finish_reason, r.raw["stop_reason"]) == ("content_filter", "refusal")
    check("Message", r.raw, strict=False)
    async with client.stream_chat(messages, model=MODEL, response_format=Order) as stream:
        chunks = [chunk async for chunk in stream]
        final = await stream.final()
    assert [c.refusal for c in chunks if c.refusal] == [r.refusal]
    assert (final.refusal, final.parsed, final.finish_reason) == (r.refusal, None, "content_filter")


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (None, "refused"),
        ({"type": "refusal", "category": "cyber", "explanation": None}, "refused (cyber)"),
        ({"type": "refusal", "explanation": "Not this."}, "Not this."),
    ],
)
async def test_refusal_without_explanation(details: Any, expected: str) -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": '{"colour": '}],
        "stop_reason": "refusal",
        "stop_details": details,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    transport = MockTransport(lambda request: MockResponse(json=message))
    async with asyncllm.Claude(api_key="k", transport=transport) as client:
        r = await client.chat(USER, model="m", response_format=Order)
    assert (r.refusal, r.parsed, r.text) == (expected, None, '{"colour": ')


async def test_length_cut(client: asyncllm.Claude) -> None:
    messages = [{"role": "user", "content": "an order"}]
    with pytest.raises(asyncllm.LengthFinishReasonError) as info:
        await client.chat(messages, model=MODEL, response_format=Order, max_tokens=3)
    assert info.value.response.raw["stop_reason"] == "max_tokens"
    assert info.value.text == '{"colour": "red", "items":'
    with pytest.raises(asyncllm.LengthFinishReasonError):
        async with client.stream_chat(
            messages, model=MODEL, response_format=Order, max_tokens=3
        ) as stream:
            await stream.final()


async def test_effort_and_format_share_output_config(
    client: asyncllm.Claude, server: FakeServer
) -> None:
    await client.chat(USER, model=MODEL, effort="low")
    assert sent(server)["output_config"] == {"effort": "low"}
    await client.chat(USER, model=MODEL, effort="medium", response_format=Item)
    body = sent(server)
    assert body["output_config"]["effort"] == "medium"
    assert body["output_config"]["format"]["type"] == "json_schema"
    check("MessageCreateParamsNonStreaming", body)
    await client.chat(USER, model=MODEL)
    assert "output_config" not in sent(server) and "thinking" not in sent(server)


# -- extended thinking -----------------------------------------------------------------------------


async def test_thinking_is_kept(client: asyncllm.Claude, server: FakeServer) -> None:
    r = await client.chat([{"role": "user", "content": "why?"}], model=MODEL, **THINK)
    body = sent(server)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    check("MessageCreateParamsNonStreaming", body)
    check("Message", r.raw, strict=False)
    assert r.reasoning == "thinking about: why?"
    assert r.text == "echo: why?"
    blocks = r.message.model_extra["thinking_blocks"]  # type: ignore[index]
    assert blocks == [r.raw["content"][0]] and blocks[0]["signature"]
    assert r.message.to_dict()["thinking_blocks"] == blocks

    async with client.stream_chat(
        [{"role": "user", "content": "why?"}], model=MODEL, **THINK
    ) as stream:
        chunks = [chunk async for chunk in stream]
        final = await stream.final()
    reasoning = [c.reasoning for c in chunks if c.reasoning]
    assert len(reasoning) > 1 and "".join(reasoning) == r.reasoning
    assert not any(c.delta for c in chunks if c.reasoning)
    assert chunks[-1].message_extra == {"thinking_blocks": blocks}
    assert all(c.message_extra is None for c in chunks[:-1])
    assert (final.text, final.reasoning) == (r.text, r.reasoning)
    assert final.message.to_dict() == r.message.to_dict()  # the same signed blocks


async def test_adaptive_thinking_and_effort(client: asyncllm.Claude, server: FakeServer) -> None:
    r = await client.chat(USER, model=MODEL, thinking={"type": "adaptive"}, effort="high")
    assert r.reasoning == "thinking about: x"
    body = sent(server)
    assert (body["thinking"], body["output_config"]) == ({"type": "adaptive"}, {"effort": "high"})
    check("MessageCreateParamsNonStreaming", body)
    r = await client.chat(USER, model=MODEL, thinking={"type": "disabled"})
    assert r.reasoning is None and "thinking_blocks" not in r.message.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "budget_tokens must be >= 1024"),
        ({"thinking": {"type": "enabled"}}, "needs budget_tokens"),
        ({"thinking": "on"}, "thinking must be a dict"),
        ({"thinking": {"budget_tokens": 2048}}, "thinking must be a dict"),
        ({"effort": 3}, "effort must be one of"),
    ],
)
async def test_bad_thinking_is_refused_before_sending(
    client: asyncllm.Claude, server: FakeServer, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=message):
        await client.chat(USER, model=MODEL, **kwargs)
    assert server.request_count == 0


async def test_the_fake_checks_the_thinking_budget(
    client: asyncllm.Claude, server: FakeServer
) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    with pytest.raises(
        asyncllm.BadRequestError, match=r"must be greater than `thinking\.budget_tokens`"
    ):
        await client.chat(USER, model=MODEL, thinking=thinking)
    # Interleaved thinking lets the budget pass max_tokens.
    r = await client.chat(
        USER,
        model=MODEL,
        thinking=thinking,
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert r.reasoning


async def tool_loop(client: asyncllm.Claude, text: str, *, streamed: bool = False) -> list[Any]:
    """A user text, the model's tool call and the tool's result: a tool loop in progress."""
    messages: list[Any] = [{"role": "user", "content": text}]
    if streamed:
        async with client.stream_chat(
            messages, model=MODEL, tools=[get_weather], **THINK
        ) as stream:
            first = await stream.final()
    else:
        first = await client.chat(messages, model=MODEL, tools=[get_weather], **THINK)
    assert first.tool_calls and first.message.model_extra
    return [*messages, first.message, asyncllm.tool_result(first.tool_calls[0], "sunny")]


@pytest.mark.parametrize("streamed", [False, True])
async def test_thinking_goes_back_first_and_unmodified(
    client: asyncllm.Claude, server: FakeServer, streamed: bool
) -> None:
    messages = await tool_loop(client, "weather in Paris?", streamed=streamed)
    blocks = messages[1].model_extra["thinking_blocks"]
    r = await client.chat(messages, model=MODEL, tools=[get_weather], **THINK)
    assert r.text == "tool get_weather returned: sunny"
    body = sent(server)
    check("MessageCreateParamsNonStreaming", body)
    assistant = body["messages"][1]["content"]
    assert (
        assistant[0]
        == blocks[0]
        == {
            "type": "thinking",
            "thinking": "thinking about: weather in Paris?",
            "signature": blocks[0]["signature"],
        }
    )
    assert [b["type"] for b in assistant] == ["thinking", "tool_use"]
    # As plain dicts (say, from a database) the message goes back just the same.
    r = await client.chat(
        [messages[0], messages[1].to_dict(), messages[2]], model=MODEL, tools=[get_weather], **THINK
    )
    assert sent(server)["messages"][1]["content"] == assistant


async def test_the_fake_refuses_a_tool_loop_without_its_thinking(client: asyncllm.Claude) -> None:
    messages = await tool_loop(client, "weather?")
    stripped = {k: v for k, v in messages[1].to_dict().items() if k != "thinking_blocks"}
    with pytest.raises(asyncllm.BadRequestError) as info:
        await client.chat([messages[0], stripped, messages[2]], model=MODEL, **THINK)
    assert info.value.message.startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        "`tool_use`. When `thinking` is enabled, a final `assistant` message must start"
    )
    # Without thinking the same history is fine: the rule holds only while thinking is on.
    r = await client.chat([messages[0], stripped, messages[2]], model=MODEL)
    assert r.text == "tool get_weather returned: sunny"


async def test_the_fake_refuses_a_changed_signature(client: asyncllm.Claude) -> None:
    messages = await tool_loop(client, "weather?")
    block = messages[1].model_extra["thinking_blocks"][0]
    for changed in ({**block, "thinking": block["thinking"] + "!"}, {**block, "signature": "AAAA"}):
        tampered = {**messages[1].to_dict(), "thinking_blocks": [changed]}
        with pytest.raises(
            asyncllm.BadRequestError, match=r"messages.1.content.0: Invalid `signature`"
        ):
            await client.chat([messages[0], tampered, messages[2]], model=MODEL, **THINK)


async def test_another_servers_signature_is_refused(client: asyncllm.Claude) -> None:
    messages = await tool_loop(client, "weather?")
    async with FakeServer("anthropic") as other, make_client(other) as elsewhere:
        with pytest.raises(asyncllm.BadRequestError, match="Invalid `signature`"):
            await elsewhere.chat(messages, model=MODEL, **THINK)


async def test_redacted_thinking_round_trip(client: asyncllm.Claude, server: FakeServer) -> None:
    messages = await tool_loop(client, "REDACT this thought")
    blocks = messages[1].model_extra["thinking_blocks"]
    assert [b["type"] for b in blocks] == ["redacted_thinking"]
    assert base64.b64decode(blocks[0]["data"])  # opaque to us, sent back as it came
    r = await client.chat(messages, model=MODEL, **THINK)
    assert r.text == "tool get_weather returned: sunny"
    assert sent(server)["messages"][1]["content"][0] == blocks[0]
    check("MessageCreateParamsNonStreaming", sent(server))
    sealed = {**blocks[0], "data": base64.b64encode(b"x" * 40).decode()}
    with pytest.raises(asyncllm.BadRequestError, match="Invalid `data` in `redacted_thinking`"):
        await client.chat(
            [messages[0], {**messages[1].to_dict(), "thinking_blocks": [sealed]}, messages[2]],
            model=MODEL,
            **THINK,
        )


async def test_redacted_thinking_streams_whole(client: asyncllm.Claude) -> None:
    async with client.stream_chat(
        [{"role": "user", "content": "REDACT"}], model=MODEL, **THINK
    ) as stream:
        chunks = [chunk async for chunk in stream]
        final = await stream.final()
    assert not any(c.reasoning for c in chunks)
    blocks = final.message.model_extra["thinking_blocks"]  # type: ignore[index]
    assert [b["type"] for b in blocks] == ["redacted_thinking"] and final.reasoning is None


async def test_earlier_turns_may_drop_their_thinking(client: asyncllm.Claude) -> None:
    messages = await tool_loop(client, "weather?")
    done = await client.chat(messages, model=MODEL, tools=[get_weather], **THINK)
    later = [
        messages[0],
        {k: v for k, v in messages[1].to_dict().items() if k != "thinking_blocks"},
        messages[2],
        done.message,
        {"role": "user", "content": "and tomorrow?"},
    ]
    r = await client.chat(later, model=MODEL, **THINK)
    assert r.text == "echo: and tomorrow?" and r.reasoning == "thinking about: and tomorrow?"


async def test_other_vendors_reasoning_is_dropped(
    client: asyncllm.Claude, server: FakeServer
) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "hello",
            "gemini_parts": [{"text": "x", "thought": True}],
            "reasoning_content": "r",
        },
        {"role": "user", "content": "again"},
    ]
    await client.chat(messages, model=MODEL)
    assert sent(server)["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "hello"}],
    }


@pytest.mark.parametrize("blocks", [[{"type": "text", "text": "x"}], "signed", [None]])
async def test_bad_thinking_blocks_are_refused(
    client: asyncllm.Claude, server: FakeServer, blocks: Any
) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "thinking_blocks": blocks},
        {"role": "user", "content": "again"},
    ]
    with pytest.raises(asyncllm.ConfigurationError, match="thinking_blocks"):
        await client.chat(messages, model=MODEL)
    assert server.request_count == 0


async def test_two_thinking_blocks_read_as_one_reasoning() -> None:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        },
    ]
    content: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "first", "signature": "s1"},
        {"type": "thinking", "thinking": "", "signature": "s2"},  # display: omitted
        {"type": "thinking", "thinking": "second", "signature": "s3"},
        {"type": "text", "text": "ok"},
    ]
    for i, block in enumerate(content):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": i, "content_block": block})
            continue
        events.append(
            {
                "type": "content_block_start",
                "index": i,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        )
        for piece in (block["thinking"][:2], block["thinking"][2:]):
            delta = {"type": "thinking_delta", "thinking": piece}
            events.append({"type": "content_block_delta", "index": i, "delta": delta})
        delta = {"type": "signature_delta", "signature": block["signature"]}
        events.append({"type": "content_block_delta", "index": i, "delta": delta})
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    message = {**events[0]["message"], "content": content, "stop_reason": "end_turn"}
    streamed = b"".join(fake._sse(str(e["type"]), e) for e in events)

    def answer(request: Any) -> MockResponse:
        if request.stream:
            return MockResponse(chunks=[streamed])
        return MockResponse(json=message)

    async with asyncllm.Claude(api_key="k", transport=MockTransport(answer)) as client:
        r = await client.chat(USER, model="m")
        async with client.stream_chat(USER, model="m") as stream:
            final = await stream.final()
    assert r.reasoning == final.reasoning == "first\n\nsecond"
    assert final.message.to_dict() == r.message.to_dict()
    assert r.message.model_extra == {"thinking_blocks": content[:3]}


async def test_fake_streams_thinking_as_the_api_does(server: FakeServer) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {
        "model": MODEL,
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "deep thought"}],
        "stream": True,
    }
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(server.url("/v1/messages"), json=body) as resp,
    ):
        raw = (await resp.read()).decode()
    events = [json.loads(b.split("\n")[1].removeprefix("data: ")) for b in raw.split("\n\n") if b]
    for event in events:
        if event["type"] != "ping":
            check("RawMessageStreamEvent", event, strict=False)
    deltas = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == ["thinking_delta"] * 4 + ["signature_delta"] + ["text_delta"] * 3
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]


async def test_strict_and_server_tools_follow_the_schema(
    client: asyncllm.Claude, server: FakeServer
) -> None:
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    tools = [asyncllm.Tool.from_function(get_weather, strict=True), search]
    ask = [{"role": "user", "content": "weather in Paris?"}]
    first = await client.chat(ask, model=MODEL, tools=tools)
    body = sent(server)
    check("MessageCreateParamsNonStreaming", body)
    assert body["tools"][0]["strict"] is True and body["tools"][1] == search
    assert body["tools"][0]["input_schema"]["additionalProperties"] is False
    check("Message", first.raw)  # the fake's answer, its server tool blocks included
    assert first.text == "" and [c.name for c in first.tool_calls] == ["get_weather"]
    result = asyncllm.tool_result(first.tool_calls[0], "sunny")
    await client.chat([*ask, first.message, result], model=MODEL, tools=tools)
    check("MessageCreateParamsNonStreaming", sent(server))
    # Without the server tool's result, the API (and so the fake) refuses the turn.
    blocks = [
        b
        for b in first.message.to_dict()["claude_content"]
        if b["type"] != "web_search_tool_result"
    ]
    broken = {**first.message.to_dict(), "claude_content": blocks}
    with pytest.raises(asyncllm.BadRequestError, match="server_tool_use"):
        await client.chat([*ask, broken, result], model=MODEL, tools=tools)
