"""Fallbacks: one chat call along an ordered chain of clients of different backends.

The chain moves on for failures of a backend (no answer, 5xx, 408/409/429, open breaker, a rate
limit that outlasts the call) and never for the request's own faults; the deadline covers the
whole chain; the error raised carries every member's; a stream moves on only before its first
chunk; the chain owns its members.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sys
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

import asyncllm
from asyncllm._exceptions import CertificateVerificationError, status_error
from asyncllm._fallback import moves_on
from asyncllm.testing import FakeClock, FakeServer, MockResponse, MockTransport
from tests.chat_contract import ASK_WEATHER

USER = [{"role": "user", "content": "hi"}]
NO_RETRY = asyncllm.RetryConfig(max_retries=0)
FAST_RETRY = asyncllm.RetryConfig(max_retries=2, initial_delay=0.0, max_delay=0.0)
GPT, HAIKU, QWEN = "gpt-4o-mini", "claude-3-5-haiku-latest", "qwen"


def noted(error: BaseException, text: str) -> bool:
    """Whether a note on ``error`` says ``text`` (notes exist from Python 3.11)."""
    if sys.version_info < (3, 11):
        return True
    return any(text in note for note in getattr(error, "__notes__", ()))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeServer, FakeServer, FakeServer]]:
    async with (
        FakeServer("openai") as a,
        FakeServer("anthropic") as b,
        FakeServer("vllm") as c,
    ):
        yield a, b, c


def make_chain(
    servers: tuple[FakeServer, FakeServer, FakeServer],
    retry: asyncllm.RetryConfig = NO_RETRY,
    **first: Any,
) -> asyncllm.Fallback:
    """OpenAI (``first``: its extra options), then Claude, then vLLM, each with its model."""
    a, b, c = servers
    first.setdefault("base_url", a.url("/v1"))
    return asyncllm.Fallback(
        [
            (asyncllm.OpenAI(api_key="sk-first-secret", retry=retry, **first), GPT),
            (asyncllm.Claude(api_key="sk-second-secret", base_url=b.url(), retry=retry), HAIKU),
            asyncllm.VLLM(base_url=c.url("/v1"), model=QWEN, retry=retry),
        ]
    )


def counts(servers: tuple[FakeServer, ...]) -> list[int]:
    return [s.request_count for s in servers]


# -- which member answers ---------------------------------------------------------------------------


async def test_the_first_healthy_member_answers_with_its_own_model(servers: Any) -> None:
    async with make_chain(servers) as chain:
        r = await chain.chat(USER)
        assert r.backend == "openai" and r.text
        assert counts(servers) == [1, 0, 0]
        assert servers[0].requests[0].json["model"] == GPT

        servers[0].fail_next(1, status=503)
        servers[1].fail_next(1, status=500)
        r = await chain.chat(USER)
        assert r.backend == "vllm" and r.text
        assert counts(servers) == [2, 1, 1]
        assert servers[1].requests[0].json["model"] == HAIKU
        assert servers[2].requests[0].json["model"] == QWEN
        # Every member's attempt ran under the call's one request ID.
        ids = {servers[0].request_ids[-1], servers[1].request_ids[-1], servers[2].request_ids[-1]}
        assert ids == {r.request_id}


async def test_a_call_model_goes_to_members_without_their_own(servers: Any) -> None:
    a, _, c = servers
    chain = asyncllm.Fallback(
        [
            asyncllm.OpenAI(api_key="sk-x", base_url=a.url("/v1"), retry=NO_RETRY),
            (asyncllm.VLLM(base_url=c.url("/v1")), QWEN),
        ]
    )
    async with chain:
        a.fail_next(1, status=502)
        r = await chain.chat(USER, model="gpt-4.1")
        assert r.backend == "vllm"
        assert a.requests[0].json["model"] == "gpt-4.1"
        assert c.requests[0].json["model"] == QWEN


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529, 408, 409, 429])
async def test_moves_on_for_server_errors_and_transient_4xx(servers: Any, status: int) -> None:
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=status, retry_after="0" if status == 429 else None)
        r = await chain.chat(USER)
        assert r.backend == "claude"
        assert counts(servers) == [1, 1, 0]


async def test_each_move_on_is_logged_under_the_calls_request_id(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asyncllm.fallback")
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=503)
        r = await chain.chat(USER)
    (record,) = [r for r in caplog.records if r.name == "asyncllm.fallback"]
    message = record.getMessage()
    assert message.startswith("fallback: openai failed (InternalServerError: ")
    assert message.endswith("; trying claude") and "status=503" in message
    assert record.request_id == r.request_id  # type: ignore[attr-defined]
    assert "secret" not in message


async def test_a_member_retries_as_its_client_says_before_the_chain_moves_on(
    servers: Any,
) -> None:
    async with make_chain(servers, retry=FAST_RETRY) as chain:
        servers[0].fail_next(3, status=503)
        r = await chain.chat(USER)
        assert r.backend == "claude"
        assert counts(servers) == [3, 1, 0]


async def test_moves_on_when_the_connection_is_refused(servers: Any) -> None:
    async with make_chain(servers, base_url=f"http://127.0.0.1:{closed_port()}/v1") as chain:
        r = await chain.chat(USER)
        assert r.backend == "claude"


async def test_moves_on_after_a_timeout(servers: Any) -> None:
    async with make_chain(servers) as chain:
        servers[0].hang_next(1)
        r = await chain.chat(USER, timeout=0.1)
        assert r.backend == "claude"
        assert counts(servers) == [1, 1, 0]


async def test_moves_on_past_an_open_breaker_without_sending(servers: Any) -> None:
    breaker = asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=60)
    async with make_chain(servers, breaker=breaker) as chain:
        servers[0].fail_next(1, status=500)
        assert (await chain.chat(USER)).backend == "claude"  # this failure opens the breaker
        r = await chain.chat(USER)
        assert r.backend == "claude"
        assert counts(servers) == [1, 2, 0]  # the open breaker sent nothing


async def test_moves_on_past_a_rate_limit_that_outlasts_the_deadline(servers: Any) -> None:
    limits = asyncllm.RateLimits(requests_per_minute=1)
    async with make_chain(servers, rate_limits=limits) as chain:
        assert (await chain.chat(USER, deadline=5)).backend == "openai"
        # The next request of the minute's budget comes in 60 s, past the deadline: the first
        # member raises RateLimitError before sending, and the chain moves on at once.
        r = await chain.chat(USER, deadline=5)
        assert r.backend == "claude"
        assert counts(servers) == [1, 1, 0]


# -- where it stops -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, asyncllm.BadRequestError),
        (401, asyncllm.AuthenticationError),
        (403, asyncllm.PermissionDeniedError),
        (404, asyncllm.NotFoundError),
        (413, asyncllm.RequestTooLargeError),
        (422, asyncllm.UnprocessableEntityError),
    ],
)
async def test_a_client_error_is_raised_without_moving_on(
    servers: Any, status: int, cls: type[Exception]
) -> None:
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=status)
        with pytest.raises(cls) as info:
            await chain.chat(USER)
        assert info.value.status_code == status  # type: ignore[attr-defined]
        assert info.value.fallback_errors == (info.value,)  # type: ignore[attr-defined]
        assert counts(servers) == [1, 0, 0]


async def test_bad_arguments_are_raised_before_anything_is_sent(servers: Any) -> None:
    async with make_chain(servers) as chain:
        with pytest.raises(asyncllm.ConfigurationError):
            await chain.chat(USER, temperature=9)
        with pytest.raises(TypeError):
            await chain.chat(USER, temprature=0.5)  # type: ignore[call-arg]
        with pytest.raises(asyncllm.ConfigurationError):
            await chain.chat(USER, deadline=-1)
        assert counts(servers) == [0, 0, 0]


async def test_a_configuration_error_of_a_later_member_stops_the_chain(servers: Any) -> None:
    # OpenAI takes logprobs; Claude's API has none: a ConfigurationError, never a move on.
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=503)
        with pytest.raises(asyncllm.ConfigurationError) as info:
            await chain.chat(USER, logprobs=True)
        error = info.value
        assert [type(e) for e in error.fallback_errors] == [
            asyncllm.InternalServerError,
            asyncllm.ConfigurationError,
        ]
        assert noted(error, "fallback: openai failed before: InternalServerError")
        assert counts(servers) == [1, 0, 0]


async def test_an_exhausted_chain_raises_the_last_error_with_every_members(
    servers: Any,
) -> None:
    a, b, _ = servers
    port = closed_port()
    chain = asyncllm.Fallback(
        [
            (
                asyncllm.OpenAI(api_key="sk-first-secret", base_url=a.url("/v1"), retry=NO_RETRY),
                GPT,
            ),
            (asyncllm.Claude(api_key="sk-second-secret", base_url=b.url(), retry=NO_RETRY), HAIKU),
            asyncllm.VLLM(base_url=f"http://127.0.0.1:{port}/v1", model=QWEN, retry=NO_RETRY),
        ]
    )
    async with chain:
        a.fail_next(1, status=500)
        b.fail_next(1, status=429, retry_after="0")
        with pytest.raises(asyncllm.APIConnectionError) as info:
            await chain.chat(USER)
    error = info.value
    assert error.backend == "vllm"
    errors = error.fallback_errors
    assert [type(e) for e in errors] == [
        asyncllm.InternalServerError,
        asyncllm.RateLimitError,
        asyncllm.APIConnectionError,
    ]
    assert errors[-1] is error
    assert [getattr(e, "status_code", None) for e in errors] == [500, 429, None]
    # Each tells the truth about where it came from: its backend and the URL it was sent to.
    assert [e.backend for e in errors] == ["openai", "claude", "vllm"]
    assert [getattr(e, "url", "") for e in errors] == [
        a.url("/v1/chat/completions"),
        b.url("/v1/messages"),
        f"http://127.0.0.1:{port}/v1/chat/completions",
    ]
    assert noted(error, "fallback: openai failed before: InternalServerError: ")
    assert noted(error, "status=429")
    assert noted(error, "all 3 members failed")
    assert {e.request_id for e in errors} == {error.request_id}
    # No key in the error, its notes or its members'.
    text = "".join([str(error), *getattr(error, "__notes__", [])])
    assert "secret" not in text


# -- the deadline ---------------------------------------------------------------------------------


class Spy:
    """A chat client that records each call's options and answers, or raises ``fail``."""

    def __init__(
        self,
        name: str,
        fail: Exception | None = None,
        clock: FakeClock | None = None,
        takes: float = 0.0,
    ) -> None:
        self.name = name
        self.fail = fail
        self.calls: list[dict[str, Any]] = []
        self.closed = False
        if clock is not None:  # as a client's dispatcher has it
            self.dispatcher = SimpleNamespace(clock=clock)
        self.takes = takes  # seconds each call takes on the clock

    async def chat(self, messages: Any, **options: Any) -> asyncllm.ChatResponse:
        self.calls.append(options)
        if self.takes:
            self.dispatcher.clock.advance(self.takes)
        if self.fail is not None:
            raise self.fail
        message = asyncllm.Message(role="assistant", content=self.name)
        return asyncllm.ChatResponse(text=self.name, message=message, request_id="r")

    def stream_chat(self, messages: Any, **options: Any) -> asyncllm.ChatStream:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


def down(name: str) -> asyncllm.APIError:
    return status_error(503, "down", backend=name)


async def test_each_member_gets_what_is_left_of_the_deadline() -> None:
    clock = FakeClock()
    first = Spy("first", fail=down("first"), clock=clock, takes=7.0)
    second = Spy("second", fail=down("second"), clock=clock, takes=2.5)
    third = Spy("third")
    chain = asyncllm.Fallback([first, second, third])
    r = await chain.chat(USER, deadline=10, timeout=4)
    assert r.backend == "third"
    assert [s.calls[0]["deadline"] for s in (first, second, third)] == pytest.approx([10, 3, 0.5])
    assert [s.calls[0]["timeout"] for s in (first, second, third)] == [4, 4, 4]  # per attempt


async def test_with_options_gives_every_call_its_defaults_and_owns_nothing() -> None:
    clock = FakeClock()
    first = Spy("first", fail=down("first"), clock=clock, takes=4.0)
    second = Spy("second")
    chain = asyncllm.Fallback([first, second])
    fast = chain.with_options(deadline=10, max_retries=0, priority=asyncllm.Priority.HIGH)
    assert (await fast.chat(USER, priority=asyncllm.Priority.LOW)).backend == "second"
    assert second.calls[0]["deadline"] == pytest.approx(6)  # the default deadline is shared too
    assert second.calls[0]["max_retries"] == 0
    assert second.calls[0]["priority"] == asyncllm.Priority.LOW  # the call's own wins
    await fast.aclose()
    assert not second.closed
    with pytest.raises(TypeError):
        chain.with_options(deadlne=3)  # type: ignore[call-arg]
    with pytest.raises(asyncllm.ConfigurationError):
        chain.with_options(deadline=-3)
    await chain.aclose()
    assert second.closed
    with pytest.raises(asyncllm.ClientClosedError):
        await fast.chat(USER)


async def test_a_member_reached_after_the_deadline_is_not_tried() -> None:
    clock = FakeClock()
    first = Spy("first", fail=down("first"), clock=clock, takes=10.5)
    second = Spy("second")
    chain = asyncllm.Fallback([first, second])
    with pytest.raises(asyncllm.InternalServerError) as info:
        await chain.chat(USER, deadline=10)
    assert second.calls == []
    assert noted(info.value, "not tried, the call's deadline (10s) had passed: second")


async def test_the_deadline_runs_on_the_dispatchers_clock_through_real_clients() -> None:
    """The first member's dispatcher clock measures the chain's deadline: a first member that
    takes 20 of 50 s leaves the second 30 s, too little to wait out its rate limit's 40 s."""
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, rng=random.Random(1))

    def slow_failure(request: Any) -> MockResponse:
        clock.advance(20)
        return MockResponse(503, json={"error": {"message": "down"}})

    def answer(request: Any) -> MockResponse:
        return MockResponse(
            200,
            json={
                "id": "c",
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "late"},
                        "finish_reason": "stop",
                    }
                ],
            },
        )

    def client(name: str, handler: Any, **kwargs: Any) -> asyncllm.OpenAI:
        return asyncllm.OpenAI(
            name=name,
            api_key="sk-x",
            base_url="http://mock.invalid/v1",
            transport=MockTransport(handler),
            dispatcher=dispatcher,
            retry=NO_RETRY,
            model="m",
            **kwargs,
        )

    limited = client("limited", answer, rate_limits=asyncllm.RateLimits(requests_per_minute=1))
    async with asyncllm.Fallback([client("slow", slow_failure), limited]) as chain:
        assert (await limited.chat(USER)).text == "late"  # spends the budget: next one in 60 s
        with pytest.raises(asyncllm.RateLimitError) as info:
            await chain.chat(USER, deadline=50)
        assert info.value.status_code is None  # not sent: the wait passes the 30 s left
        assert [type(e) for e in info.value.fallback_errors] == [
            asyncllm.InternalServerError,
            asyncllm.RateLimitError,
        ]
        # With the whole deadline for itself, the same member waits out its budget.
        assert (await limited.chat(USER, deadline=50)).text == "late"
        assert clock.now == pytest.approx(1060)


# -- streams -------------------------------------------------------------------------------------


async def test_a_stream_moves_on_before_its_first_chunk(servers: Any) -> None:
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=503)
        async with chain.stream_chat(USER) as stream:
            assert stream.backend is None
            text = "".join([chunk.delta async for chunk in stream])
            assert stream.backend == "claude"
            assert stream.http is not None and stream.http.status == 200
        final = await stream.final()
        assert final.text == text and final.backend == "claude"
        assert counts(servers) == [1, 1, 0]
        assert servers[1].requests[0].json["model"] == HAIKU


async def test_stream_start_chooses_and_final_reads_the_rest(servers: Any) -> None:
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=500)
        servers[1].fail_next(1, status=529)
        stream = await chain.stream_chat(USER).start()
        assert stream.backend == "vllm"
        final = await stream.final()
        assert final.backend == "vllm" and final.text
        await stream.aclose()


def sse(*events: str) -> MockResponse:
    return MockResponse(
        200,
        chunks=[f"data: {e}\n\n".encode() for e in events],
        headers={"Content-Type": "text/event-stream"},
    )


FIRST_CHUNK = (
    '{"id":"c","object":"chat.completion.chunk","model":"m",'
    '"choices":[{"index":0,"delta":{"content":"he"},"finish_reason":null}]}'
)


async def test_after_the_first_chunk_a_stream_error_is_the_callers(servers: Any) -> None:
    first = asyncllm.OpenAI(
        api_key="sk-x",
        base_url="http://mock.invalid/v1",
        transport=MockTransport(lambda request: sse(FIRST_CHUNK)),  # cut before [DONE]
        retry=NO_RETRY,
    )
    chain = asyncllm.Fallback([(first, GPT), (asyncllm.VLLM(base_url=servers[2].url("/v1")), QWEN)])
    async with chain, chain.stream_chat(USER) as stream:
        chunks = []
        with pytest.raises(asyncllm.APIConnectionError, match="stream ended before"):
            async for chunk in stream:
                chunks.append(chunk.delta)
        assert chunks == ["he"] and stream.backend == "openai"
    assert servers[2].request_count == 0


async def test_an_exhausted_stream_raises_at_start_with_every_error(servers: Any) -> None:
    async with make_chain(servers) as chain:
        for server in servers:
            server.fail_next(1, status=503)
        stream = chain.stream_chat(USER)
        with pytest.raises(asyncllm.InternalServerError) as info:
            await stream.start()
        assert [e.backend for e in info.value.fallback_errors] == ["openai", "claude", "vllm"]
        await stream.aclose()


async def test_streams_of_every_protocol_go_along_the_chain() -> None:
    """SSE (OpenAI), Gemini's SSE, Ollama's NDJSON: the chain reads each member's own stream."""
    async with (
        FakeServer("openai") as a,
        FakeServer("gemini") as g,
        FakeServer("ollama") as o,
    ):
        chain = asyncllm.Fallback(
            [
                (asyncllm.OpenAI(api_key="sk-x", base_url=a.url("/v1"), retry=NO_RETRY), GPT),
                (
                    asyncllm.Gemini(api_key="g-x", base_url=g.url("/v1beta"), retry=NO_RETRY),
                    "fake-chat",
                ),
                (asyncllm.Ollama(base_url=o.url(), retry=NO_RETRY), "fake-chat"),
            ]
        )
        async with chain:
            for failing, expected in (([], "openai"), ([a], "gemini"), ([a, g], "ollama")):
                for server in failing:
                    server.fail_next(1, status=503)
                async with chain.stream_chat(USER) as stream:
                    text = "".join([chunk.delta async for chunk in stream])
                    final = await stream.final()
                assert text and final.text == text
                assert stream.backend == final.backend == expected


async def test_a_stream_stops_at_a_client_error(servers: Any) -> None:
    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=401)
        with pytest.raises(asyncllm.AuthenticationError):
            async with chain.stream_chat(USER) as stream:
                async for _ in stream:
                    pass
        assert counts(servers) == [1, 0, 0]


class City(BaseModel):
    name: str


async def test_structured_output_is_asked_of_and_parsed_by_the_member_that_answers(
    servers: Any,
) -> None:
    async with make_chain(servers) as chain:
        servers[0].fail_next(2, status=503)
        r = await chain.chat(USER, response_format=City)
        assert r.backend == "claude" and isinstance(r.parsed, City)
        assert servers[1].requests[-1].json["output_config"]["format"]["type"] == "json_schema"
        async with chain.stream_chat(USER, response_format=City) as stream:
            final = await stream.final()
        assert final.backend == "claude" and final.parsed == r.parsed


async def test_a_chain_may_be_a_member_and_the_innermost_member_is_named(servers: Any) -> None:
    a, b, c = servers
    inner = asyncllm.Fallback(
        [
            (asyncllm.OpenAI(api_key="sk-x", base_url=a.url("/v1"), retry=NO_RETRY), GPT),
            (asyncllm.Claude(api_key="sk-y", base_url=b.url(), retry=NO_RETRY), HAIKU),
        ]
    )
    async with asyncllm.Fallback([inner, (asyncllm.VLLM(base_url=c.url("/v1")), QWEN)]) as chain:
        a.fail_next(1, status=503)
        assert (await chain.chat(USER)).backend == "claude"
        a.fail_next(1, status=503)
        b.fail_next(1, status=503)
        assert (await chain.chat(USER)).backend == "vllm"
        a.fail_next(1, status=503)
        async with chain.stream_chat(USER) as stream:
            assert (await stream.final()).backend == "claude"
            assert stream.backend == "claude"
    with pytest.raises(asyncllm.ClientClosedError):
        await inner.chat(USER)  # closed with the chain that owned it


async def test_a_stream_closed_or_orphaned_before_it_started_sends_nothing(servers: Any) -> None:
    async with make_chain(servers) as chain:
        stream = chain.stream_chat(USER)
        assert stream.http is None and stream.backend is None
        await stream.aclose()
        assert [chunk async for chunk in stream] == []
        with pytest.raises(asyncllm.ClientClosedError):
            await stream.final()
        orphan = chain.stream_chat(USER)
    with pytest.raises(asyncllm.ClientClosedError):
        await orphan.start()  # its chain was closed before its first read
    assert counts(servers) == [0, 0, 0]


# -- cancellation and lifecycle ------------------------------------------------------------------


async def wait_for(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def lane(chain: asyncllm.Fallback, i: int) -> asyncllm.BackendStats:
    client = chain.members[i].client
    return client.dispatcher.stats()[client.name]  # type: ignore[attr-defined,no-any-return]


async def test_cancelling_a_call_frees_everything_and_moves_nowhere(servers: Any) -> None:
    async with make_chain(servers) as chain:
        servers[0].hang_next(1)
        task = asyncio.create_task(chain.chat(USER))
        await wait_for(lambda: servers[0].in_flight == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lane(chain, 0).in_flight == 0 and lane(chain, 0).queued == 0
        await wait_for(lambda: servers[0].in_flight == 0)
        assert counts(servers) == [1, 0, 0]
        assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancelling_a_stream_before_its_first_chunk_closes_it(servers: Any) -> None:
    async with make_chain(servers) as chain:
        servers[0].hang_next(1)
        stream = chain.stream_chat(USER)
        task = asyncio.create_task(stream.start())
        await wait_for(lambda: servers[0].in_flight == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lane(chain, 0).in_flight == 0
        await wait_for(lambda: servers[0].in_flight == 0)
        assert counts(servers) == [1, 0, 0]
        assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_the_chain_closes_its_members_but_not_a_with_options_view(servers: Any) -> None:
    a, b, _ = servers
    shared = asyncllm.OpenAI(api_key="sk-x", base_url=a.url("/v1"), model=GPT)
    owned = asyncllm.Claude(api_key="sk-y", base_url=b.url(), model=HAIKU)
    async with asyncllm.Fallback([shared.with_options(), owned]) as chain:
        assert (await chain.chat(USER)).backend == "openai"
    with pytest.raises(asyncllm.ClientClosedError):
        await chain.chat(USER)
    with pytest.raises(asyncllm.ClientClosedError):
        chain.stream_chat(USER)
    with pytest.raises(asyncllm.ClientClosedError):
        async with chain:
            pass
    with pytest.raises(asyncllm.ClientClosedError):
        await owned.chat(USER)
    assert (await shared.chat(USER)).text  # still open: the chain had a view of it
    await shared.aclose()
    await chain.aclose()  # twice is fine


async def test_close_members_false_leaves_the_members_open(servers: Any) -> None:
    a, b, _ = servers
    first = asyncllm.OpenAI(api_key="sk-x", base_url=a.url("/v1"), model=GPT)
    second = asyncllm.Claude(api_key="sk-y", base_url=b.url(), model=HAIKU)
    async with asyncllm.Fallback([first, second], close_members=False) as chain:
        assert (await chain.chat(USER)).backend == "openai"
    with pytest.raises(asyncllm.ClientClosedError):
        await chain.chat(USER)  # the chain is closed...
    assert (await first.chat(USER)).text  # ...its members are not
    assert (await second.chat(USER)).text
    await first.aclose()
    await second.aclose()


async def test_a_member_that_fails_to_close_does_not_keep_the_others_open() -> None:
    class Broken(Spy):
        async def aclose(self) -> None:
            raise OSError("socket already gone")

    broken, spy = Broken("broken"), Spy("spy")
    chain = asyncllm.Fallback([broken, spy, spy])
    with pytest.raises(OSError, match="already gone"):
        await chain.aclose()
    assert spy.closed


async def test_run_tools_goes_along_the_chain_each_turn(servers: Any) -> None:
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    async with make_chain(servers) as chain:
        servers[0].fail_next(1, status=503)
        run = await chain.run_tools(ASK_WEATHER, tools=[get_weather])
        # Claude answered the first turn with a tool call; OpenAI, healthy again, the second,
        # reading Claude's call and its result from the common form.
        assert run.response.backend == "openai"
        assert run.response.tool_calls == []
        assert "sunny in" in run.response.text
        assert counts(servers) == [2, 1, 0]


# -- the rules, as a table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status_error(500, "x"), True),
        (status_error(503, "x"), True),
        (status_error(529, "x"), True),
        (status_error(501, "x"), True),
        (status_error(408, "x"), True),
        (status_error(409, "x"), True),
        (status_error(429, "x"), True),
        (asyncllm.RateLimitError("not sent: the wait passes the deadline"), True),
        (asyncllm.BudgetExceededError("larger than this member's whole budget"), True),
        (asyncllm.APIConnectionError("refused"), True),
        (asyncllm.APITimeoutError("timed out"), True),
        (CertificateVerificationError("untrusted"), True),
        (asyncllm.CircuitOpenError("open"), True),
        (asyncllm.QueueFullError("full"), True),
        (status_error(400, "x"), False),
        (status_error(401, "x"), False),
        (status_error(403, "x"), False),
        (status_error(404, "x"), False),
        (status_error(413, "x"), False),
        (status_error(422, "x"), False),
        (status_error(302, "x"), False),
        (asyncllm.ConfigurationError("bad"), False),
        (asyncllm.ClientClosedError("closed"), False),
        (asyncllm.ResponseValidationError("garbled"), False),
        (asyncllm.StructuredOutputError("no fit"), False),
        (asyncllm.ContentBlockedError("refused"), False),
        (TypeError("unknown option"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_moves_on(error: BaseException, expected: bool) -> None:
    assert moves_on(error) is expected


@pytest.mark.parametrize(
    "members",
    [[], "openai", {"a": 1}, [object()], [("not a client", GPT)], [(SimpleNamespace(), GPT)]],
)
def test_members_are_checked(members: Any) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.Fallback(members)


def test_a_pair_needs_a_model_name() -> None:
    spy = Spy("s")
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.Fallback([(spy, 3)])  # type: ignore[list-item]
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.Fallback([(spy, GPT, "extra")])  # type: ignore[list-item]
    chain = asyncllm.Fallback([spy, (spy, GPT)])
    assert chain.name == "fallback(s, s)"
    assert repr(chain) == "Fallback(['s', ('s', 'gpt-4o-mini')])"
