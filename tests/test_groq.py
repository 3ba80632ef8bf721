from __future__ import annotations

import json
from operator import itemgetter
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

import asyncllm
from asyncllm.backends.groq import (
    GROQ_BASE_URL,
    Groq,
    GroqChatResponse,
    GroqRateLimits,
    parse_duration,
)
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from tests.chat_contract import NO_WAIT, ChatContract, wire_table
from tests.helpers import chat_json


class TestGroqContract(ChatContract):
    protocol = "groq"
    streamed_choices = chat_choices = False  # "Only n=1 is supported"
    open_maps_refused = True  # sent as a strict schema
    reasoning_options: ClassVar[dict[str, Any] | None] = {"reasoning_format": "parsed"}
    builtin_tool: ClassVar[dict[str, Any] | None] = {"type": "browser_search"}
    builtin_kinds = frozenset({"browser_search", "code_interpreter"})
    # What Groq documents as not supported is refused; max_tokens is deprecated there.
    wire = wire_table(
        ("logprobs", "top_logprobs", "store", "metadata", "prompt_cache_key"),
        max_tokens=itemgetter("max_completion_tokens"),
    )

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.Groq(api_key="gsk-test", base_url=server.url("/openai/v1"), **kwargs)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("450ms", 0.45),
        ("1h0m0s", 3600.0),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("12", 12.0),
        ("0.5", 0.5),
        ("1.5m", 90.0),
        ("250us", 0.00025),
        (" 3s ", 3.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("5x", None),
        ("3s5", None),
        ("-1s", None),
        ("-4", None),
        ("inf", None),
    ],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


def test_rate_limits_from_headers() -> None:
    limits = GroqRateLimits.from_headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-limit-tokens": "18000",
            "x-ratelimit-remaining-tokens": "not-a-number",
            "x-ratelimit-reset-tokens": "7.66s",
            "retry-after": "2",
        }
    )
    assert limits is not None
    assert limits.limit_requests == 14400
    assert limits.remaining_requests == 14370
    assert limits.reset_requests == pytest.approx(179.56)
    assert limits.limit_tokens == 18000
    assert limits.remaining_tokens is None  # unreadable values are dropped, not fatal
    assert limits.reset_tokens == pytest.approx(7.66)
    assert limits.retry_after == 2.0
    assert GroqRateLimits.from_headers({"content-type": "application/json"}) is None


def test_key_required_for_groq_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.delenv("GROQ_BASE_URL", raising=False)
    with pytest.raises(asyncllm.ConfigurationError, match="GROQ_API_KEY"):
        Groq()
    monkeypatch.setenv("GROQ_API_KEY", "gsk-from-env")
    client = Groq()
    assert client.base_url == GROQ_BASE_URL
    assert "gsk-from-env" not in repr(client)
    # a self-hosted compatible server needs no key
    monkeypatch.delenv("GROQ_API_KEY")
    assert Groq(base_url="http://127.0.0.1:9/openai/v1").api_key is None


async def test_chat_response_carries_rate_limits() -> None:
    async with FakeServer("groq") as server:
        client = Groq(api_key="gsk", base_url=server.url("/openai/v1"), retry=NO_WAIT)
        async with client:
            first = await client.chat([{"role": "user", "content": "hi"}], model="fake-chat")
            second = await client.chat([{"role": "user", "content": "hi"}], model="fake-chat")
    assert isinstance(first, GroqChatResponse)
    assert first.text == "echo: hi"
    assert first.rate_limits is not None
    assert first.rate_limits.limit_requests == 14400
    assert first.rate_limits.reset_requests == pytest.approx(179.56)
    assert first.rate_limits.reset_tokens == pytest.approx(7.66)
    assert isinstance(second, GroqChatResponse)
    assert second.rate_limits is not None
    assert second.rate_limits.remaining_requests == first.rate_limits.remaining_requests - 1
    assert client.last_rate_limits == second.rate_limits


async def test_rate_limits_reach_dispatcher_stats() -> None:
    async with FakeServer("groq") as server:
        server.fail_next(1, status=429, retry_after="0")
        async with Groq(
            api_key="gsk", base_url=server.url("/openai/v1"), retry=NO_WAIT, name="groq-stats"
        ) as client:
            await client.chat([{"role": "user", "content": "x"}], model="fake-chat")
            stats = client.dispatcher.stats()["groq-stats"]
    assert server.request_count == 2
    limits = stats.info["rate_limits"]
    assert isinstance(limits, GroqRateLimits)
    assert limits.remaining_requests == 14400 - 2
    assert limits.retry_after is None  # the success after the 429 has none
    assert stats.retried == 1


async def test_429_reports_retry_after_and_no_tokens() -> None:
    async with FakeServer("groq") as server:
        server.state["groq_rate_limits"]["retry-after"] = "7"
        server.fail_next(1, status=429)
        async with Groq(api_key="gsk", base_url=server.url("/openai/v1"), max_retries=0) as client:
            with pytest.raises(asyncllm.RateLimitError) as info:
                await client.chat([{"role": "user", "content": "x"}], model="fake-chat")
            assert client.last_rate_limits is not None
            assert client.last_rate_limits.retry_after == 7.0
            assert client.last_rate_limits.remaining_tokens == 0
    assert info.value.retry_after == 7.0


async def test_stream_usage_from_x_groq() -> None:
    events = [
        {"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "x_groq": {"id": "req_1", "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        },
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    transport = MockTransport(
        lambda request: MockResponse(
            chunks=[body, b"data: [DONE]\n\n"],
            headers={"content-type": "text/event-stream", "x-ratelimit-limit-tokens": "6000"},
        )
    )
    async with Groq(api_key="gsk", transport=transport, retry=NO_WAIT) as client:
        async with client.stream_chat([{"role": "user", "content": "x"}], model="m") as stream:
            chunks = [c async for c in stream]
        assert client.last_rate_limits == GroqRateLimits(limit_tokens=6000)
    sent = transport.requests[0]
    assert sent.url == GROQ_BASE_URL + "/chat/completions"
    assert sent.headers["Authorization"] == "Bearer gsk"
    assert [c.delta for c in chunks] == ["hi", ""]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 3


# -- structured output and reasoning ---------------------------------------------------------


class Answer(BaseModel):
    city: str
    warm: bool


def groq_on(server: FakeServer, **kwargs: Any) -> Groq:
    return Groq(api_key="gsk", base_url=server.url("/openai/v1"), retry=NO_WAIT, **kwargs)


async def test_reasoning_controls_on_the_wire() -> None:
    transport = MockTransport(lambda request: MockResponse(json=chat_json("ok")))
    ask = [{"role": "user", "content": "x"}]
    async with Groq(api_key="gsk", transport=transport, retry=NO_WAIT) as client:
        await client.chat(ask, model="qwen/qwen3-32b", reasoning_format="parsed")
        await client.chat(ask, model="openai/gpt-oss-20b", include_reasoning=False)
        await client.chat(ask, model="qwen/qwen3-32b", reasoning_effort="none")
        await client.chat(ask, model="m")
        for bad in (
            {"reasoning_format": "parsed", "include_reasoning": True},
            {"reasoning_format": "summary"},
            {"include_reasoning": "yes"},
        ):
            with pytest.raises(asyncllm.ConfigurationError):
                await client.chat(ask, model="m", **bad)
    bodies = [json.loads(r.content or b"") for r in transport.requests]
    assert len(bodies) == 4  # the refused calls sent nothing
    assert bodies[0]["reasoning_format"] == "parsed" and "include_reasoning" not in bodies[0]
    assert bodies[1]["include_reasoning"] is False and "reasoning_format" not in bodies[1]
    assert bodies[2]["reasoning_effort"] == "none"
    assert not {"reasoning_format", "include_reasoning", "reasoning_effort"} & bodies[3].keys()


async def test_parsed_reasoning_and_the_typed_answer() -> None:
    async with FakeServer("groq") as server, groq_on(server) as client:
        r = await client.chat(
            [{"role": "user", "content": "weather?"}],
            model="openai/gpt-oss-20b",
            response_format=Answer,
            include_reasoning=True,
        )
    assert isinstance(r, GroqChatResponse) and r.rate_limits is not None
    assert r.parsed == Answer(city="test", warm=True)
    assert r.reasoning == "thinking about: weather?"
    said = r.raw["choices"][0]["message"]
    assert said["reasoning"] == r.reasoning and "refusal" not in said  # Groq has no refusal


@pytest.mark.parametrize(
    ("options", "text", "reasoning"),
    [
        ({"reasoning_format": "raw"}, "<think>\nthinking about: hm\n</think>\n\necho: hm", None),
        (
            {"reasoning_effort": "default"},
            "<think>\nthinking about: hm\n</think>\n\necho: hm",
            None,
        ),
        ({"reasoning_format": "hidden"}, "echo: hm", None),
        ({"include_reasoning": False, "reasoning_effort": "high"}, "echo: hm", None),
        ({"reasoning_format": "parsed", "reasoning_effort": "none"}, "echo: hm", None),
        ({"reasoning_format": "parsed"}, "echo: hm", "thinking about: hm"),
        ({}, "echo: hm", None),  # the fake model reasons only when asked to
    ],
)
async def test_the_fake_reasons_as_groq_does(
    options: dict[str, Any], text: str, reasoning: str | None
) -> None:
    ask = [{"role": "user", "content": "hm"}]
    async with FakeServer("groq") as server, groq_on(server) as client:
        r = await client.chat(ask, model="qwen/qwen3-32b", **options)
        async with client.stream_chat(ask, model="qwen/qwen3-32b", **options) as stream:
            final = await stream.final()
    assert (r.text, r.reasoning) == (text, reasoning)
    assert (final.text, final.reasoning) == (text, reasoning)


@pytest.mark.parametrize(
    "options",
    [
        {"reasoning_format": "raw", "response_format": {"type": "json_object"}},
        {"reasoning_format": "raw", "response_format": Answer},
        {"reasoning_format": "raw", "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"extra_body": {"reasoning_format": "parsed", "include_reasoning": True}},
        {"extra_body": {"reasoning_format": "summary"}},
    ],
)
async def test_the_fake_refuses_what_groq_refuses(options: dict[str, Any]) -> None:
    async with FakeServer("groq") as server, groq_on(server) as client:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await client.chat([{"role": "user", "content": "x"}], model="m", **options)
    assert json.loads(info.value.body)["error"]["param"] == "reasoning_format"


async def test_json_mode_and_tools_default_to_parsed_reasoning() -> None:
    async with FakeServer("groq") as server, groq_on(server) as client:
        r = await client.chat(
            [{"role": "user", "content": "x"}],
            model="qwen/qwen3-32b",
            reasoning_effort="default",
            response_format={"type": "json_object"},
        )
    assert r.parsed == {"answer": "test"} and r.reasoning == "thinking about: x"


async def test_the_fake_checks_strict_schemas_as_groq_does() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "l", "schema": loose, "strict": True}}
    async with FakeServer("groq") as server, groq_on(server, max_retries=0) as client:
        with pytest.raises(asyncllm.BadRequestError, match="'additionalProperties' is required"):
            await client.chat([{"role": "user", "content": "x"}], model="m", response_format=fmt)
        fmt["json_schema"]["strict"] = False  # type: ignore[index]
        r = await client.chat([{"role": "user", "content": "x"}], model="m", response_format=fmt)
    assert r.parsed == {"a": "test"}
