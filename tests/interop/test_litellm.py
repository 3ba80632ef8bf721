"""Our ``OpenAI`` and ``Claude`` clients against a real OpenAI- and Anthropic-compatible server:
the LiteLLM proxy (the pinned version in tests/interop/envs/litellm.txt, run from that group's own
environment, configured by tests/interop/litellm_config.yaml).

Two kinds of model sit behind it: ``mock`` models LiteLLM answers itself (``mock_response``), and
``relay-*`` models it relays to our OpenAI fake, served on loopback from a thread of its own (the
proxy calls it while the tests' event loops come and go). The relayed ones make tool calls,
embeddings and LiteLLM's Anthropic endpoint real: ``/v1/messages`` is translated by LiteLLM into a
chat completion for the fake, and the answer back into Anthropic's JSON and event stream.

Where our clients and LiteLLM disagree, LiteLLM is right. Two things of LiteLLM's own are left
alone here: a ``mock_response`` model answers a *streamed* ``/v1/messages`` request with a JSON
message (so the Claude streams go to the relayed model), and ``/v1/messages/count_tokens`` for an
``openai/`` model asks the Responses API, which neither the fake nor a mock serves.

The proxy takes 15 to 30 s to start (more on a loaded machine); the whole module about 40 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import asyncllm
from asyncllm.testing import Capacity, FakeServer
from asyncllm.testing.fakes import _common
from tests.interop import USER, WEATHER, clean_environment, group_python

CONFIG = Path(__file__).with_name("litellm_config.yaml")
# Seconds the proxy may take to answer /health/liveliness; it usually needs 15 to 30.
STARTUP_DEADLINE = 150.0
# The first test waits for the environment (built on first use) and the proxy's start.
pytestmark = pytest.mark.timeout(STARTUP_DEADLINE + 60)

UPSTREAM_KEY = "sk-upstream-fake"  # what the proxy sends the fake: not the key our clients use
MOCK_TEXT = "Hi from the mock."
ECHO = "echo: hello there"
ARGUMENTS = {"city": "test", "days": 1}  # what the fake model calls get_weather with
CHAT_PATH = "/v1/chat/completions"
# The models litellm_config.yaml lists, in its order, as the proxy's /v1/models answers them.
MODELS = ["mock", "mock-rate-limited", "relay-capacity", "relay-chat", "relay-embed"]


# -- the fake, on a loop of its own ---------------------------------------------------------------


class ThreadedFake:
    """A FakeServer served by an event loop in a background thread, for a session: the proxy,
    another process, calls it at any time, not only while a test's loop runs."""

    def __init__(self, *protocols: str, capacity: Capacity | None = None) -> None:
        self.protocols = protocols
        self.capacity = capacity
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake", daemon=True)
        self._server: FakeServer | None = None

    @property
    def server(self) -> FakeServer:
        assert self._server is not None, "not started"
        return self._server

    def __enter__(self) -> ThreadedFake:
        self.thread.start()

        async def start() -> FakeServer:
            return await FakeServer(*self.protocols, capacity=self.capacity).start()

        self._server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._server.aclose(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeServer]:
    with ThreadedFake("openai") as threaded:
        yield threaded.server


# The hidden request budget of the fake behind ``relay-capacity``: small, so that a few calls
# spend it, and slow to refill (one request every 20 s), so that the tests' own pace does not.
RELAY_RPM = 3


@pytest.fixture(scope="session")
def capacity_fake() -> Iterator[FakeServer]:
    """An OpenAI fake with a hidden capacity that speaks OpenAI's rate headers, for the
    ``relay-capacity`` model. Its budget is spent by the one test that uses it."""
    with ThreadedFake("openai", capacity=Capacity(requests_per_minute=RELAY_RPM)) as threaded:
        yield threaded.server


# -- the proxy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    url: str
    key: str  # the master key, our clients' key
    startup_seconds: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health/liveliness", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="session")
def proxy(
    fake: FakeServer,
    capacity_fake: FakeServer,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[Proxy]:
    """``litellm --config tests/interop/litellm_config.yaml`` on a free loopback port, with no
    database and nothing fetched from the network, up until the session ends. How long it took
    to start is written to the terminal."""
    python = group_python("litellm")
    litellm = Path(python).with_name("litellm")
    key = f"sk-master-{secrets.token_hex(8)}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_environment(
        ASYNCLLM_FAKE_OPENAI_URL=fake.url("/v1"),
        ASYNCLLM_FAKE_CAPACITY_URL=capacity_fake.url("/v1"),
        ASYNCLLM_FAKE_OPENAI_KEY=UPSTREAM_KEY,
        ASYNCLLM_LITELLM_MASTER_KEY=key,
        # Everything LiteLLM would otherwise download comes from its own package.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS="True",
        LITELLM_LOCAL_BLOG_POSTS="True",
        LITELLM_LOCAL_POLICY_TEMPLATES="True",
        LITELLM_LOCAL_AUTOROUTER_PRESETS="True",
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
    )
    for name in ("DATABASE_URL", "DIRECT_URL", "REDIS_URL", "REDIS_HOST", "LITELLM_MASTER_KEY"):
        env.pop(name, None)
    # LiteLLM is some 2,900 modules: compiled once into its environment, it starts in half the
    # time on later runs.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    log = tmp_path_factory.mktemp("litellm") / "proxy.log"
    command = [str(litellm), "--config", str(CONFIG), "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,  # its own process group, ended as a whole below
        )
    try:
        while not _alive(url):
            if process.poll() is not None:
                pytest.fail(
                    f"the LiteLLM proxy exited with {process.returncode}:\n{_tail(log)}",
                    pytrace=False,
                )
            if time.monotonic() - started > STARTUP_DEADLINE:
                pytest.fail(
                    f"the LiteLLM proxy did not come up within {STARTUP_DEADLINE:.0f} s:\n"
                    f"{_tail(log)}",
                    pytrace=False,
                )
            time.sleep(0.25)
        seconds = time.monotonic() - started
        _report(pytestconfig, f"LiteLLM proxy up in {seconds:.1f} s")
        yield Proxy(url, key, seconds)
    finally:
        _stop(process)


def _report(config: pytest.Config, line: str) -> None:
    """``line`` on the terminal, past output capturing (as ``capsys.disabled()`` does)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)


@pytest.fixture
async def openai(proxy: Proxy) -> AsyncIterator[asyncllm.OpenAI]:
    async with asyncllm.OpenAI(
        api_key=proxy.key, base_url=proxy.url + "/v1", max_retries=0, timeout=30
    ) as client:
        yield client


@pytest.fixture
async def claude(proxy: Proxy) -> AsyncIterator[asyncllm.Claude]:
    async with asyncllm.Claude(
        api_key=proxy.key, base_url=proxy.url, max_retries=0, timeout=30
    ) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeServer) -> Iterator[None]:
    """Each test sees only the requests it caused, and no handler another test put in."""
    fake.reset()
    yield
    fake.overrides.clear()


def sent(fake: FakeServer, path: str = CHAT_PATH) -> list[Any]:
    """The JSON bodies the proxy sent the fake at ``path`` in this test."""
    return [r.json for r in fake.requests if r.path == path]


# -- OpenAI --------------------------------------------------------------------------------------


async def test_openai_chat_mock(openai: asyncllm.OpenAI, fake: FakeServer) -> None:
    reply = await openai.chat(USER, model="mock")
    assert reply.text == MOCK_TEXT
    assert reply.message.role == "assistant" and reply.message.content == MOCK_TEXT
    assert reply.tool_calls == [] and reply.finish_reason == "stop"
    assert reply.model == "mock"
    assert reply.usage is not None and reply.usage.total_tokens == (
        (reply.usage.prompt_tokens or 0) + (reply.usage.completion_tokens or 0)
    )
    assert fake.request_count == 0  # LiteLLM answered itself


async def test_openai_chat_relayed(openai: asyncllm.OpenAI, fake: FakeServer) -> None:
    reply = await openai.chat(USER, model="relay-chat", temperature=0.5, max_tokens=20)
    assert reply.text == ECHO and reply.finish_reason == "stop"
    assert reply.model == "relay-chat"  # the name asked for; the fake saw "fake-chat"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 3)
    assert reply.usage.total_tokens == 5
    (request,) = fake.requests
    assert request.path == CHAT_PATH
    assert request.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert request.json["model"] == "fake-chat"
    assert request.json["messages"] == USER
    # asyncllm sends OpenAI's max_completion_tokens (max_tokens is deprecated there); LiteLLM relays it
    assert (request.json["temperature"], request.json["max_completion_tokens"]) == (0.5, 20)


async def test_openai_stream_mock(openai: asyncllm.OpenAI) -> None:
    chunks = [chunk async for chunk in openai.stream_chat(USER, model="mock")]
    assert "".join(c.delta for c in chunks) == MOCK_TEXT
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert all(c.tool_calls == [] for c in chunks)
    usage = chunks[-1].usage  # include_usage: the last chunk counts the tokens
    assert usage is not None and usage.completion_tokens
    assert usage.total_tokens == (usage.prompt_tokens or 0) + usage.completion_tokens


async def test_openai_stream_relayed(openai: asyncllm.OpenAI, fake: FakeServer) -> None:
    chunks = [chunk async for chunk in openai.stream_chat(USER, model="relay-chat")]
    assert [c.delta for c in chunks if c.delta] == _common.pieces(ECHO)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert {c.model for c in chunks} == {"relay-chat"}
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 3, 5)
    (body,) = sent(fake)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_openai_tools_round_trip(openai: asyncllm.OpenAI, fake: FakeServer) -> None:
    first = await openai.chat(USER, model="relay-chat", tools=[WEATHER])
    assert first.finish_reason == "tool_calls" and first.text == ""
    (call,) = first.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert call.args() == ARGUMENTS

    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    answer = await openai.chat([*USER, first.message, result], model="relay-chat", tools=[WEATHER])
    assert answer.text == "tool get_weather returned: sunny"
    assert answer.finish_reason == "stop" and answer.tool_calls == []

    asked, answered = sent(fake)
    assert asked["tools"] == [WEATHER]
    assistant, tool = answered["messages"][1:]
    assert assistant["role"] == "assistant"
    (relayed,) = assistant["tool_calls"]
    assert (relayed["id"], relayed["function"]["name"]) == (call.id, "get_weather")
    assert json.loads(relayed["function"]["arguments"]) == ARGUMENTS
    assert tool == result


async def test_openai_stream_tool_call(openai: asyncllm.OpenAI) -> None:
    chunks = [c async for c in openai.stream_chat(USER, model="relay-chat", tools=[WEATHER])]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert {d.index for d in deltas} == {0}
    assert [d.name for d in deltas if d.name] == ["get_weather"]
    (call_id,) = [d.id for d in deltas if d.id]
    assert call_id.startswith("call_")
    assert len(deltas) == 2  # the fake sends the arguments in two halves; LiteLLM keeps them so
    assert json.loads("".join(d.arguments for d in deltas)) == ARGUMENTS
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]


async def test_openai_embed(openai: asyncllm.OpenAI, fake: FakeServer) -> None:
    result = await openai.embed(["alpha", "beta"], model="relay-embed")
    # The fake lists the vectors last to first; the index says whose each one is.
    assert result.vectors == [_common.vector("alpha"), _common.vector("beta")]
    assert result.model == "relay-embed"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (2, 2)
    (body,) = sent(fake, "/v1/embeddings")
    assert body["input"] == ["alpha", "beta"] and body["model"] == "fake-embed"


async def test_openai_embed_one_string(openai: asyncllm.OpenAI) -> None:
    result = await openai.embed("alpha", model="relay-embed")
    assert result.vectors == [_common.vector("alpha")]


async def test_openai_models(openai: asyncllm.OpenAI) -> None:
    models = await openai.models()
    assert [m.id for m in models] == MODELS
    assert all(isinstance(m.created, int) and m.owned_by for m in models)


async def test_openai_rate_limited(openai: asyncllm.OpenAI) -> None:
    with pytest.raises(asyncllm.RateLimitError) as info:
        await openai.chat(USER, model="mock-rate-limited")
    assert info.value.status_code == 429
    assert "mock rate limit error" in info.value.message
    assert info.value.attempts == 1


async def test_openai_unknown_model(openai: asyncllm.OpenAI) -> None:
    with pytest.raises(asyncllm.BadRequestError) as info:
        await openai.chat(USER, model="no-such-model")
    assert info.value.status_code == 400
    assert "no-such-model" in info.value.message


async def test_openai_key_the_proxy_does_not_know(proxy: Proxy) -> None:
    """Without a database to look a key up in, LiteLLM answers any key but its master key with
    400 "No connected db." (not 401); the key is nowhere in the error."""
    async with asyncllm.OpenAI(
        api_key="sk-unknown-key", base_url=proxy.url + "/v1", max_retries=0
    ) as client:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await client.chat(USER, model="mock")
    assert info.value.status_code == 400
    assert "No connected db" in info.value.message
    assert "sk-unknown-key" not in f"{info.value} {info.value!r} {info.value.body}"


# -- learned rate limits through the proxy -------------------------------------------------------


async def test_learned_rate_limits_through_the_proxy(
    proxy: Proxy, capacity_fake: FakeServer
) -> None:
    """Our client keeps to the budget it learns from the vendor's headers relayed by the proxy.
    LiteLLM relays ``x-ratelimit-{limit,remaining}-*`` as the vendor sent them, but neither
    ``x-ratelimit-reset-*`` nor a 429's ``Retry-After``: those it sends only under an
    ``llm_provider-`` prefix, which our client does not read. Without a reset, our client lets
    a learned budget refill over its whole minute (the slowest a vendor refills); without
    ``Retry-After``, a relayed 429 still teaches the budget through the headers it carries. (A
    learned budget is kept per client name in a process, so the second client has its own.)"""
    meter = capacity_fake.capacity
    assert meter is not None
    spent_before = meter.admitted  # what the proxy itself may have asked of the fake
    per_request = 60 / RELAY_RPM  # seconds in which the vendor's bucket refills one request

    def client(name: str) -> asyncllm.OpenAI:
        return asyncllm.OpenAI(
            name=name,
            api_key=proxy.key,
            base_url=proxy.url + "/v1",
            max_retries=0,
            timeout=30,
            rate_limits=asyncllm.RateLimits(max_wait=0.5),  # a longer wait fails before sending
        )

    # 1. A client spends the budget: answered while it lasts, then refused before sending.
    answered = 0
    async with client("first") as first:
        for _ in range(RELAY_RPM + 1):
            try:
                reply = await first.chat(USER, model="relay-capacity", max_tokens=5)
            except asyncllm.RateLimitError as exc:
                refused = exc
                break
            answered += 1
            assert reply.http is not None
            headers = reply.http.headers
            assert headers["x-ratelimit-limit-requests"] == str(RELAY_RPM)
            assert "x-ratelimit-remaining-requests" in headers
            # What the premise of this test rests on (revisit it when the pinned LiteLLM moves):
            assert "x-ratelimit-reset-requests" not in headers
            assert "llm_provider-x-ratelimit-reset-requests" in headers
        else:
            pytest.fail("the client never kept to the budget it was told of")
    assert answered == RELAY_RPM - spent_before >= 1
    assert refused.status_code is None  # never sent: no HTTP answer
    assert refused.retry_after is not None and 0.5 < refused.retry_after <= per_request
    assert (meter.sent, meter.rate_limited) == (RELAY_RPM, 0)

    # 2. A client that knows nothing collects one 429 and learns from the headers it carries.
    async with client("second") as second:
        with pytest.raises(asyncllm.RateLimitError) as relayed:
            await second.chat(USER, model="relay-capacity", max_tokens=5)
        assert relayed.value.status_code == 429
        assert relayed.value.retry_after is None  # the vendor sent one; the proxy did not relay it
        with pytest.raises(asyncllm.RateLimitError) as held:
            await second.chat(USER, model="relay-capacity", max_tokens=5)
        assert held.value.status_code is None
        assert held.value.retry_after is not None and 0.5 < held.value.retry_after <= per_request
    assert (meter.sent, meter.rate_limited) == (RELAY_RPM + 1, 1)


# -- Claude --------------------------------------------------------------------------------------


async def test_claude_chat_mock(claude: asyncllm.Claude, fake: FakeServer) -> None:
    reply = await claude.chat(USER, model="mock")
    assert reply.text == MOCK_TEXT and reply.finish_reason == "stop"
    assert reply.tool_calls == [] and reply.message.content == MOCK_TEXT
    assert reply.raw["stop_reason"] == "end_turn" and reply.raw["type"] == "message"
    assert reply.usage is not None and reply.usage.total_tokens == (
        (reply.usage.prompt_tokens or 0) + (reply.usage.completion_tokens or 0)
    )
    assert fake.request_count == 0


async def test_claude_chat_relayed_with_system(claude: asyncllm.Claude, fake: FakeServer) -> None:
    reply = await claude.chat(USER, model="relay-chat", system="Be brief.", max_tokens=50)
    assert reply.text == ECHO and reply.finish_reason == "stop"
    assert reply.raw["stop_reason"] == "end_turn"
    assert reply.model == "relay-chat"  # the name asked for; the fake saw "fake-chat"
    assert reply.usage is not None
    # The fake counts the words of every message: "Be brief." and "hello there" in, 3 out.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 3)
    (body,) = sent(fake)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, *USER]
    assert body["max_tokens"] == 50
    assert fake.requests[0].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_claude_system_message_in_the_conversation(
    claude: asyncllm.Claude, fake: FakeServer
) -> None:
    """A system message among the messages goes out as Anthropic's top-level ``system``."""
    reply = await claude.chat(
        [{"role": "system", "content": "Answer in French."}, *USER], model="relay-chat"
    )
    assert reply.text == ECHO
    (body,) = sent(fake)
    assert body["messages"] == [{"role": "system", "content": "Answer in French."}, *USER]


async def test_claude_tools_round_trip(claude: asyncllm.Claude, fake: FakeServer) -> None:
    first = await claude.chat(USER, model="relay-chat", tools=[WEATHER])
    assert first.finish_reason == "tool_calls" and first.text == ""
    assert first.raw["stop_reason"] == "tool_use"
    (call,) = first.tool_calls
    assert call.name == "get_weather" and call.args() == ARGUMENTS
    (block,) = first.raw["content"]
    assert block["type"] == "tool_use" and block["id"] == call.id

    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    answer = await claude.chat([*USER, first.message, result], model="relay-chat", tools=[WEATHER])
    assert answer.text == "tool get_weather returned: sunny"
    assert answer.finish_reason == "stop" and answer.tool_calls == []

    asked, answered = sent(fake)
    (tool,) = asked["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"] == WEATHER["function"]["parameters"]
    assistant, returned = answered["messages"][1:]
    (relayed,) = assistant["tool_calls"]
    assert (relayed["id"], relayed["function"]["name"]) == (call.id, "get_weather")
    assert json.loads(relayed["function"]["arguments"]) == ARGUMENTS
    assert returned == result


async def test_claude_stream(claude: asyncllm.Claude, fake: FakeServer) -> None:
    chunks = [c async for c in claude.stream_chat(USER, model="relay-chat")]
    assert "".join(c.delta for c in chunks) == ECHO
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert {c.model for c in chunks} == {"relay-chat"}
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 3)
    (body,) = sent(fake)
    assert body["stream"] is True


async def test_claude_stream_tool_call_deltas(claude: asyncllm.Claude) -> None:
    chunks = [c async for c in claude.stream_chat(USER, model="relay-chat", tools=[WEATHER])]
    events = [c.raw for c in chunks]
    kinds = [(e["type"], (e.get("delta") or {}).get("type")) for e in events]
    assert kinds == [
        ("content_block_start", None),
        ("content_block_delta", "input_json_delta"),
        ("content_block_delta", "input_json_delta"),
        ("message_delta", None),
    ]
    start, *pieces = [d for c in chunks for d in c.tool_calls]
    assert (start.index, start.name, start.arguments) == (0, "get_weather", "")
    assert start.id is not None and start.id.startswith("call_")
    assert [(p.index, p.id, p.name) for p in pieces] == [(0, None, None)] * 2
    assert json.loads("".join(p.arguments for p in pieces)) == ARGUMENTS
    assert chunks[-1].finish_reason == "tool_calls"
    assert events[-1]["delta"]["stop_reason"] == "tool_use"


async def test_claude_models(claude: asyncllm.Claude) -> None:
    models = await claude.models()
    assert [m.id for m in models] == MODELS
    assert all(m.display_name == m.id for m in models)


async def test_claude_rate_limited(claude: asyncllm.Claude) -> None:
    with pytest.raises(asyncllm.RateLimitError) as info:
        await claude.chat(USER, model="mock-rate-limited")
    assert info.value.status_code == 429
    assert info.value.error_type == "rate_limit_error"
    assert "mock rate limit error" in info.value.message
    assert info.value.attempts == 1


# -- a relayed stream that breaks after its first chunk -------------------------------------------


async def _first_chunk_then_cut(request: web.Request) -> web.StreamResponse:
    """The fake's chat stream, cut short: one chunk, then the connection drops."""
    body = request["json"]
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    delta = {"role": "assistant", "content": "echo:"}
    chunk = {
        "id": "chatcmpl-cut",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": body["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    await answer.write(_common.sse(chunk))
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError  # nothing more is sent


async def _read(stream: asyncllm.Stream[Any]) -> tuple[list[Any], BaseException | None]:
    got: list[Any] = []
    try:
        async for chunk in stream:
            got.append(chunk)
    except asyncllm.APIError as exc:
        return got, exc
    return got, None


async def test_openai_stream_cut_upstream(openai: asyncllm.OpenAI, fake: FakeServer) -> None:
    """LiteLLM reports an upstream that broke mid-stream as an error event after the chunks it
    relayed; the client raises it, typed by the status LiteLLM gives it."""
    fake.overrides[CHAT_PATH] = _first_chunk_then_cut
    got, error = await _read(openai.stream_chat(USER, model="relay-chat"))
    assert "".join(c.delta for c in got) == "echo:"
    assert isinstance(error, asyncllm.InternalServerError), error
    assert error.status_code == 500
    assert "Connection error" in error.message


async def test_claude_stream_cut_upstream(claude: asyncllm.Claude, fake: FakeServer) -> None:
    """On /v1/messages the same break is an ``error`` event of type ``api_error``."""
    fake.overrides[CHAT_PATH] = _first_chunk_then_cut
    got, error = await _read(claude.stream_chat(USER, model="relay-chat"))
    assert "".join(c.delta for c in got) == "echo:"
    assert isinstance(error, asyncllm.InternalServerError), error
    assert error.status_code == 500 and error.error_type == "api_error"
