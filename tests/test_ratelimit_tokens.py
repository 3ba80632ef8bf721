"""Token budgets, the cost of each kind of call, budgets learned from every reply (OpenAI, Groq,
Anthropic headers; Gemini's quota details) and Azure's sub-windows. Every clock here is a fake
one."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

import asyncllm
from asyncllm._engine._ratelimit import (
    ANTHROPIC_HEADERS,
    GROQ_HEADERS,
    OPENAI_HEADERS,
    Cost,
    Lease,
    MemoryBudgetStore,
    RateGate,
    RateHeaders,
    TokenBucket,
    Window,
    estimate_tokens,
    quota_windows,
    read_windows,
    used_tokens,
)
from asyncllm.testing import FakeClock, MockResponse, MockTransport
from tests.helpers import USER, chat_json, client, settle
from tests.test_ratelimit import ManualClock

NO_WAIT = asyncllm.RetryConfig(initial_delay=0.0, max_delay=0.0)


def reply(
    prompt: int = 1, completion: int = 1, headers: dict[str, str] | None = None, **usage: Any
) -> MockResponse:
    body = chat_json()
    body["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        **usage,
    }
    return MockResponse(200, json=body, headers=headers)


def budgeted(handler: Any, dispatcher: asyncllm.Dispatcher, **limits: Any) -> asyncllm.OpenAI:
    return client(handler, dispatcher, rate_limits=asyncllm.RateLimits(**limits))


async def tokens_left(dispatcher: asyncllm.Dispatcher, kind: str = "tokens") -> int | None:
    return (await dispatcher.budgets.current("openai", dispatcher.clock()))[kind].remaining


def fixed(n: int) -> Any:
    return lambda body: n


# -- the store: split budgets and settlement ------------------------------------------------------


async def test_split_budgets_reserve_input_and_output_apart() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, input_tokens_per_minute=600, output_tokens_per_minute=120)
    lease = await store.lease("a", Cost(1, 150, 50), 0.0)
    assert lease == Lease("a", 1, 150, 50)
    assert isinstance(lease, Lease)
    current = await store.current("a", 0.0)
    assert current["input-tokens"].remaining == 500
    assert current["output-tokens"].remaining == 70
    # 100 output tokens more than 70 left: 30 to refill at 2 a second.
    assert await store.lease("a", Cost(1, 110, 100), 0.0) == pytest.approx(15.0)
    # Used less input and more output than reserved.
    await store.settle_usage(lease, 40, 80, 0.0)
    current = await store.current("a", 0.0)
    assert current["input-tokens"].remaining == 560
    assert current["output-tokens"].remaining == 40


async def test_settle_without_a_split_takes_the_leases_own() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, tokens_per_minute=1000, output_tokens_per_minute=1000)
    lease = await store.lease("a", Cost(1, 300, 200), 0.0)
    assert isinstance(lease, Lease)
    await store.settle(lease, 250, 0.0)  # 200 output (the reservation's), 50 input
    current = await store.current("a", 0.0)
    assert current["tokens"].remaining == 750
    assert current["output-tokens"].remaining == 800


async def test_a_sub_window_spreads_a_minutes_requests() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, requests_per_minute=600, sub_window=1.0)
    for _ in range(10):
        assert isinstance(await store.lease("a", Cost(), 0.0), Lease)
    assert await store.lease("a", Cost(), 0.0) == pytest.approx(0.1)
    # Over ten seconds: a hundred at most at once.
    store.configure("b", 0.0, requests_per_minute=600, sub_window=10.0)
    for _ in range(100):
        assert isinstance(await store.lease("b", Cost(), 0.0), Lease)
    assert await store.lease("b", Cost(), 0.0) == pytest.approx(0.1)
    # A slow budget still lets one through.
    store.configure("c", 0.0, requests_per_minute=6, sub_window=1.0)
    assert isinstance(await store.lease("c", Cost(), 0.0), Lease)
    assert await store.lease("c", Cost(), 0.0) == pytest.approx(10.0)


# -- what a call costs --------------------------------------------------------------------------


def test_the_default_estimate_counts_text_not_media_or_names() -> None:
    text = "x" * 400
    assert estimate_tokens({"model": "m" * 1000, "messages": [{"role": "user", "content": text}]})
    assert estimate_tokens({"messages": [{"role": "user", "content": text}]}) == 100
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10**6}}
    with_image = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}, image]}]
    }
    assert estimate_tokens(with_image) == 100
    assert estimate_tokens({"input": ["abcd", "efgh", "i"]}) == 3  # 9 characters, rounded up
    assert estimate_tokens({}) == 0


def gate(**limits: Any) -> RateGate:
    dispatcher = asyncllm.Dispatcher(clock=FakeClock())
    lane = dispatcher.lane("x", rate_limits=asyncllm.RateLimits(**limits))
    assert lane.gate is not None
    return lane.gate


MESSAGES = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}


@pytest.mark.parametrize(
    ("operation", "body", "cost"),
    [
        # chat: the prompt plus max_tokens, or the default output when it names none
        ("chat", {**MESSAGES, "max_tokens": 50}, Cost(1, 60, 50)),
        ("chat", {**MESSAGES, "max_completion_tokens": 7}, Cost(1, 17, 7)),
        ("stream_chat", MESSAGES, Cost(1, 10 + 1024, 1024)),
        ("responses.create", {"input": "x" * 40, "max_output_tokens": 5}, Cost(1, 15, 5)),
        # Gemini's, Ollama's and TGI's places for the output maximum
        (
            "chat",
            {"contents": "x" * 40, "generationConfig": {"maxOutputTokens": 3}},
            Cost(1, 13, 3),
        ),
        ("generate", {"prompt": "x" * 40, "options": {"num_predict": 2}}, Cost(1, 12, 2)),
        ("generate", {"inputs": "x" * 40, "parameters": {"max_new_tokens": 4}}, Cost(1, 14, 4)),
        # embeddings: input only
        ("embed", {"model": "e", "input": ["x" * 40, "y" * 40]}, Cost(1, 20, 0)),
        # file, batch and fine-tuning management: nothing, not even a request
        ("files.create", None, Cost(0, 0)),
        ("files.retrieve", None, Cost(0, 0)),
        ("batches.create", {"input_file_id": "f", "endpoint": "/v1/chat/completions"}, Cost(0, 0)),
        ("fine_tuning.create", {"training_file": "f"}, Cost(0, 0)),
        # anything else with no JSON body: a request
        ("models", None, Cost(1, 0)),
    ],
)
def test_each_kind_of_call_has_its_cost(operation: str, body: Any, cost: Cost) -> None:
    assert gate(tokens_per_minute=10_000).cost(operation, body) == cost


def test_the_estimator_and_default_output_are_configurable() -> None:
    g = gate(tokens_per_minute=10_000, estimator=fixed(7), default_output_tokens=3)
    assert g.cost("chat", MESSAGES) == Cost(1, 10, 3)
    assert g.cost("embed", {"input": "x"}) == Cost(1, 7, 0)
    bad = gate(tokens_per_minute=10_000, estimator=lambda body: -1)
    with pytest.raises(asyncllm.ConfigurationError):
        bad.cost("chat", MESSAGES)


def test_usage_as_the_budgets_count_it() -> None:
    usage = asyncllm.Usage.model_validate(
        {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 60},
        }
    )

    class Answer:
        pass

    answer = Answer()
    answer.usage = usage  # type: ignore[attr-defined]
    assert used_tokens(answer, counts_cached=True) == (100, 5)
    assert used_tokens(answer, counts_cached=False) == (40, 5)
    assert used_tokens(None, counts_cached=True) is None


def test_token_limits_are_checked_when_made() -> None:
    for bad in (
        {"tokens_per_minute": 0},
        {"input_tokens_per_minute": 1.5},
        {"output_tokens_per_minute": -3},
        {"default_output_tokens": -1},
        {"sub_window": 1.0},  # without requests_per_minute
        {"requests_per_minute": 600, "sub_window": 0},
        {"requests_per_minute": 600, "sub_window": 60},
        {"requests_per_minute": 600, "sub_window": math.nan},
        {"estimator": 4},
    ):
        with pytest.raises(asyncllm.ConfigurationError):
            asyncllm.RateLimits(**bad)


# -- reservation and settlement through a client --------------------------------------------------


async def test_a_call_reserves_its_estimate_and_settles_with_its_usage() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    usages = [(100, 20), (100, 500)]
    c = budgeted(
        lambda r: reply(*usages.pop(0)), dispatcher, tokens_per_minute=600, estimator=fixed(100)
    )
    # Reserved 100 + 200; used 120: 180 come back.
    await c.chat(USER, model="m", max_tokens=200)
    assert await tokens_left(dispatcher) == 480
    # Used 600, 300 more than reserved: the debt makes the next call wait.
    await c.chat(USER, model="m", max_tokens=200)
    assert await tokens_left(dispatcher) == -120
    assert clock.sleeps == []
    await dispatcher.aclose()


async def test_a_call_waits_for_tokens_and_is_refused_past_its_deadline() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []

    def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        return reply(300, 300)

    c = budgeted(handler, dispatcher, tokens_per_minute=600, estimator=fixed(300))
    await c.chat(USER, model="m", max_tokens=300)  # the whole minute's budget
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(USER, model="m", max_tokens=300, deadline=30)
    assert info.value.retry_after == pytest.approx(60.0)
    assert info.value.status_code is None
    assert "deadline" in info.value.message
    await c.chat(USER, model="m", max_tokens=300)
    assert arrivals == [1000.0, pytest.approx(1060.0)]
    await dispatcher.aclose()


async def test_a_call_larger_than_a_whole_budget_fails_before_it_is_sent() -> None:
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    def handler(request: Any) -> MockResponse:
        sent.append(clock())
        return reply(100, 100)

    c = budgeted(handler, dispatcher, tokens_per_minute=300, estimator=fixed(100))
    with pytest.raises(asyncllm.BudgetExceededError) as info:
        await c.chat(USER, model="m", max_tokens=250)
    assert isinstance(info.value, asyncllm.RateLimitError)
    assert info.value.retry_after is None
    assert info.value.status_code is None
    assert "350 tokens" in info.value.message
    assert sent == []
    # Also while other calls wait for the budget: at once, not after them.
    await c.chat(USER, model="m", max_tokens=200)
    waiting = asyncio.create_task(c.chat(USER, model="m", max_tokens=200))
    await settle()
    with pytest.raises(asyncllm.BudgetExceededError):
        await c.chat(USER, model="m", max_tokens=250)
    await clock.advance(60)
    await waiting
    assert sent == [1000.0, 1060.0]
    assert dispatcher.stats()["openai"].rejected == 2
    await dispatcher.aclose()


async def test_calls_waiting_for_tokens_go_in_priority_order() -> None:
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrived: list[str] = []

    def handler(request: Any) -> MockResponse:
        arrived.append(request.json()["messages"][0]["content"])
        return reply(500, 100)

    c = budgeted(handler, dispatcher, tokens_per_minute=600, estimator=fixed(500), max_wait=600)

    def say(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    await c.chat(say("first"), model="m", max_tokens=100)
    order = [
        ("low", asyncllm.Priority.LOW),
        ("normal", asyncllm.Priority.NORMAL),
        ("high", asyncllm.Priority.HIGH),
    ]
    tasks = [
        asyncio.create_task(c.chat(say(t), model="m", max_tokens=100, priority=p)) for t, p in order
    ]
    await settle()
    assert arrived == ["first"]
    for _ in range(3):
        await clock.advance(60)
    await asyncio.gather(*tasks)
    assert arrived == ["first", "high", "normal", "low"]
    await dispatcher.aclose()


async def test_an_attempt_answered_with_an_error_gives_its_tokens_back() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    responses = [MockResponse(500, json={"error": {"message": "boom"}}), reply(100, 10)]
    c = budgeted(
        lambda r: responses.pop(0), dispatcher, tokens_per_minute=1000, estimator=fixed(100)
    )
    await c.chat(USER, model="m", max_tokens=100)
    # Two attempts, each reserving 200; the 500's came back, the success used 110.
    assert await tokens_left(dispatcher) == 890
    await dispatcher.aclose()


async def test_an_attempt_that_timed_out_keeps_its_reservation() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    refused = asyncllm.APIConnectionError("connection refused")
    refused.unsent = True
    answers: list[Any] = [refused, asyncllm.APITimeoutError("slow"), reply(100, 10)]

    def handler(request: Any) -> MockResponse:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    c = budgeted(handler, dispatcher, tokens_per_minute=1000, estimator=fixed(100))
    await c.chat(USER, model="m", max_tokens=100)
    # The refused attempt never left: its 200 come back. The server may have done the timed-out
    # attempt's work: its 200 stay spent.
    assert await tokens_left(dispatcher) == 690
    await dispatcher.aclose()


def sse(*events: Any) -> MockResponse:
    chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    return MockResponse(200, chunks=chunks, headers={"Content-Type": "text/event-stream"})


def chunk(text: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": choices,
        "usage": usage,
    }


async def test_a_stream_settles_with_its_final_usage() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    final = {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130}
    c = budgeted(
        lambda r: sse(chunk("o"), chunk("k"), chunk(usage=final)),
        dispatcher,
        tokens_per_minute=1000,
        estimator=fixed(100),
    )
    pieces = []
    async with c.stream_chat(USER, model="m", max_tokens=400) as stream:
        async for piece in stream:
            if not pieces:
                assert await tokens_left(dispatcher) == 500  # reserved while it runs
            pieces.append(piece)
    assert len(pieces) == 3
    assert await tokens_left(dispatcher) == 870
    # A stream that reports no usage leaves its reservation standing.
    c2 = budgeted(
        lambda r: sse(chunk("ok")), dispatcher, tokens_per_minute=1000, estimator=fixed(100)
    )
    async with c2.stream_chat(USER, model="m", max_tokens=400) as stream:
        async for _ in stream:
            pass
    assert (await dispatcher.budgets.current("openai#2", clock()))["tokens"].remaining == 500
    await dispatcher.aclose()


async def test_embeddings_reserve_input_only() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    body = {
        "object": "list",
        "model": "e",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    seen: list[int | None] = []

    async def handler(request: Any) -> MockResponse:
        seen.append(await tokens_left(dispatcher))
        return MockResponse(200, json=body)

    c = budgeted(handler, dispatcher, tokens_per_minute=1000)
    await c.embed(["x" * 40], model="e")
    assert seen == [990]  # 10 input tokens reserved, no output
    assert await tokens_left(dispatcher) == 997  # settled with the 3 used
    await dispatcher.aclose()


# -- learned from every reply -----------------------------------------------------------------


async def test_a_lane_learns_openais_headers_and_waits_instead_of_collecting_429s() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []
    left = [1, 0]

    def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        remaining = left.pop(0) if left else 0
        return reply(
            headers={
                "x-ratelimit-limit-requests": "2",
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": "60s",
                "x-ratelimit-limit-tokens": "-1",  # "no such limit": no token budget
                "x-ratelimit-remaining-tokens": "-1",
            }
        )

    c = client(handler, dispatcher)
    await c.chat(USER, model="m")
    lane = dispatcher._lanes["openai"]
    assert lane.gate is not None and lane.gate.budgeted
    await c.chat(USER, model="m")  # the one request left
    await c.chat(USER, model="m")  # waits for the budget: 2 a minute, one back in 30 s
    assert arrivals == [1000.0, 1000.0, pytest.approx(1030.0)]
    assert clock.sleeps == [pytest.approx(30.0)]
    current = await dispatcher.budgets.current("openai", clock())
    assert set(current) == {"requests"}
    await dispatcher.aclose()


async def test_calls_queued_before_the_budgets_were_learned_keep_to_them() -> None:
    # A backlog made before the first reply passes no gate (none is known yet) and queues for a
    # slot: the budgets that reply names hold those calls too, when they leave the queue.
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []
    left = [1, 0, 0]

    async def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        await asyncio.sleep(0)  # the other calls queue for the slot meanwhile
        return reply(
            headers={
                "x-ratelimit-limit-requests": "2",
                "x-ratelimit-remaining-requests": str(left.pop(0)),
                "x-ratelimit-reset-requests": "60s",
            }
        )

    c = client(handler, dispatcher, max_concurrent_requests=1)
    await asyncio.gather(*(c.chat(USER, model="m") for _ in range(3)))
    # The first reply: 2 a minute, 1 left. The second call takes it; the third waits 30 s.
    assert arrivals == [1000.0, 1000.0, pytest.approx(1030.0)]
    await dispatcher.aclose()


async def test_a_backend_without_a_dialect_reads_no_headers() -> None:
    dispatcher = asyncllm.Dispatcher(clock=FakeClock())
    headers = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}
    c = asyncllm.VLLM(
        base_url="http://mock.invalid/v1",
        transport=MockTransport(lambda r: reply(headers=headers)),
        dispatcher=dispatcher,
    )
    for _ in range(3):
        await c.chat(USER, model="m")
    assert dispatcher._lanes["vllm"].gate is None
    # An OpenAI lane whose server sends no budgets gets no gate either.
    o = client(lambda r: reply(), dispatcher)
    await o.chat(USER, model="m")
    assert dispatcher._lanes["openai"].gate is None
    await dispatcher.aclose()


async def test_groq_requests_are_a_days_and_cached_tokens_do_not_count() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    headers = {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14399",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "10s",
    }
    usage = {"prompt_tokens_details": {"cached_tokens": 60}}
    c = asyncllm.Groq(
        api_key="gsk-test",
        base_url="http://mock.invalid/openai/v1",
        transport=MockTransport(lambda r: reply(100, 10, headers, **usage)),
        dispatcher=dispatcher,
        retry=NO_WAIT,
    )
    await c.chat(USER, model="m")
    current = await dispatcher.budgets.current("groq", clock())
    assert current["requests-per-day"].limit == 14400
    assert "requests" not in current
    assert current["tokens"] == Window(6000, 5000, pytest.approx(10.0))
    # The second call reserves its estimate and settles 40 input (100 less 60 cached) + 10.
    await c.chat(USER, model="m", max_tokens=100)
    left = (await dispatcher.budgets.current("groq", clock()))["tokens"].remaining
    assert left == 5000 - 50
    await dispatcher.aclose()


def claude_reply(headers: dict[str, str]) -> MockResponse:
    return MockResponse(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 30, "cache_read_input_tokens": 70, "output_tokens": 10},
        },
        headers=headers,
    )


async def test_anthropic_split_budgets_are_learned_and_cache_reads_do_not_count() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-input-tokens-limit": "1000",
        "anthropic-ratelimit-input-tokens-remaining": "1000",
        "anthropic-ratelimit-output-tokens-limit": "500",
        "anthropic-ratelimit-output-tokens-remaining": "500",
        "anthropic-ratelimit-input-tokens-reset": "garbage",  # malformed: as if absent
    }
    c = asyncllm.Claude(
        api_key="sk-ant-test",
        base_url="http://mock.invalid",
        transport=MockTransport(lambda r: claude_reply(headers)),
        dispatcher=dispatcher,
        retry=NO_WAIT,
        rate_limits=asyncllm.RateLimits(estimator=fixed(100)),
    )
    await c.chat(USER, model="claude-x", max_tokens=50)
    current = await dispatcher.budgets.current("claude", clock())
    assert current["requests"] == Window(50, 49, pytest.approx(1.2))
    assert current["input-tokens"].remaining == 1000
    # The second call reserves 100 in and 50 out; 30 in (70 read from the cache) and 10 out used.
    await c.chat(USER, model="claude-x", max_tokens=50)
    current = await dispatcher.budgets.current("claude", clock())
    assert current["input-tokens"].remaining == 970
    assert current["output-tokens"].remaining == 490
    await dispatcher.aclose()


async def test_azure_sub_windows_hold_a_600_rpm_deployment_to_ten_a_second() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []

    def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        return reply()

    azure = budgeted(handler, dispatcher, requests_per_minute=600, sub_window=1.0)
    for _ in range(12):
        await azure.chat(USER, model="m")
    assert arrivals[:10] == [1000.0] * 10
    assert arrivals[10:] == [pytest.approx(1000.1), pytest.approx(1000.2)]
    # Switched off, the minute's 600 go at once.
    arrivals.clear()
    plain = budgeted(handler, dispatcher, requests_per_minute=600)
    start = clock()
    for _ in range(12):
        await plain.chat(USER, model="m")
    assert arrivals == [start] * 12
    await dispatcher.aclose()


# -- Gemini: RetryInfo and QuotaFailure -----------------------------------------------------------


def gemini_429(delay: str, quota_id: str, value: str) -> MockResponse:
    return MockResponse(
        429,
        json={
            "error": {
                "code": 429,
                "message": "You exceeded your current quota",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/"
                                "generate_content_free_tier_requests",
                                "quotaId": quota_id,
                                "quotaDimensions": {"location": "global", "model": "g"},
                                "quotaValue": value,
                            }
                        ],
                    },
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
                ],
            }
        },
    )


def gemini_ok() -> MockResponse:
    return MockResponse(
        200,
        json={
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
        },
    )


async def test_gemini_429_blocks_for_its_retry_delay_and_learns_the_quota() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []
    answers = [gemini_429("17s", "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "15")]

    def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        return answers.pop(0) if answers else gemini_ok()

    g = asyncllm.Gemini(
        api_key="g-test",
        base_url="http://mock.invalid/v1beta",
        transport=MockTransport(handler),
        dispatcher=dispatcher,
        max_retries=0,
    )
    with pytest.raises(asyncllm.RateLimitError) as info:
        await g.chat(USER, model="g")
    assert info.value.retry_after == pytest.approx(17.0)
    current = await dispatcher.budgets.current("gemini", clock())
    assert current["requests"].limit == 15
    assert current["blocked"].reset_in == pytest.approx(17.0)
    assert (await g.chat(USER, model="g")).text == "ok"
    assert arrivals == [1000.0, pytest.approx(1017.0)]
    # From now on the learned 15 a minute (one every 4 s) are kept to: 17 s refilled 4.25.
    for _ in range(5):
        await g.chat(USER, model="g")
    assert arrivals[2:] == [1017.0, 1017.0, 1017.0, pytest.approx(1020.0), pytest.approx(1024.0)]
    await dispatcher.aclose()


@pytest.mark.parametrize(
    ("violations", "windows"),
    [
        (
            [
                {
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    "quotaValue": "15",
                }
            ],
            {"requests": Window(15, 0, None)},
        ),
        (
            [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "200"}],
            {"requests-per-day": Window(200, 0, None)},
        ),
        (
            [
                {
                    "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                    "quotaValue": "250000",
                }
            ],
            {"input-tokens": Window(250000, 0, None)},
        ),
        ([{"quotaId": "SomethingElse", "quotaValue": "5"}], {}),
        ([{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": "-1"}], {}),
        ([{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": "lots"}], {}),
        ([{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}], {}),
        ([{"quotaId": 5, "quotaValue": "5"}, "junk"], {}),
        ("junk", {}),
        (None, {}),
    ],
)
def test_quota_windows(violations: Any, windows: dict[str, Window]) -> None:
    assert quota_windows(violations) == windows


def test_read_windows_reads_the_backends_own_dialect_only() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "-1",  # "no such limit"
        "x-ratelimit-reset-requests": "soon",  # malformed: as if absent
        "x-ratelimit-limit-tokens": "-1",
        "x-ratelimit-remaining-tokens": "-1",
        "anthropic-ratelimit-requests-limit": "5",
        "anthropic-ratelimit-requests-remaining": "4",
        "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:12Z",
    }
    assert read_windows(headers, OPENAI_HEADERS) == {"requests": Window(60, None, None)}
    assert read_windows(headers, GROQ_HEADERS) == {"requests": Window(60, None, None)}
    assert read_windows(headers, ANTHROPIC_HEADERS, lambda: 1714564800.0) == {
        "requests": Window(5, 4, 12.0)
    }
    assert read_windows({}, OPENAI_HEADERS) == {}
    assert read_windows({"x-ratelimit-remaining-tokens": "12"}, OPENAI_HEADERS) == {
        "tokens": Window(None, 12, None)  # Azure: a count with no limit
    }


async def test_a_configured_limit_is_a_ceiling_the_vendors_never_raise() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, requests_per_minute=10)
    await learn_report(store, {"requests": Window(1000, 1000, None)})
    assert (await store.current("a", 0.0))["requests"].limit == 10
    await learn_report(store, {"requests": Window(4, 1, None), "tokens": Window(100, 90, None)})
    current = await store.current("a", 0.0)
    assert current["requests"] == Window(4, 1, pytest.approx(45.0))  # 3 missing at 4 a minute
    assert current["tokens"].limit == 100  # a budget the configuration left out


async def learn_report(store: MemoryBudgetStore, windows: dict[str, Window]) -> None:
    await store.report("a", RateHeaders(windows), 0.0)


async def test_a_full_budget_report_keeps_the_learned_rate() -> None:
    store = MemoryBudgetStore()
    # 50 a second: 25 missing, whole again in half a second.
    await learn_report(store, {"requests": Window(50, 25, 0.5)})
    assert (await store.current("a", 0.0))["requests"].reset_in == pytest.approx(0.5)
    # A reply that finds it whole (it does not know of our 25 in flight) says nothing of the
    # rate: 50 a second it stays, and the level stays ours.
    await learn_report(store, {"requests": Window(50, 50, 0.0)})
    for _ in range(25):
        assert isinstance(await store.lease("a", Cost(), 0.0), Lease)
    assert await store.lease("a", Cost(), 0.0) == pytest.approx(0.02)
    assert (await store.current("a", 0.0))["requests"].reset_in == pytest.approx(1.0)


async def test_calls_that_passed_a_gate_with_no_budget_yet_keep_to_the_learned_one() -> None:
    # RateLimits that name no budget of their own give the lane a gate from the start, so the
    # backlog takes (empty) leases before any reply names a limit: once one does, those calls
    # wait for it before they are sent, instead of going out uncounted.
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrivals: list[float] = []
    left = [1, 0, 0]

    async def handler(request: Any) -> MockResponse:
        arrivals.append(clock())
        await asyncio.sleep(0)  # the other calls queue for the slot meanwhile
        return reply(
            headers={
                "x-ratelimit-limit-requests": "2",
                "x-ratelimit-remaining-requests": str(left.pop(0)),
                "x-ratelimit-reset-requests": "60s",
            }
        )

    c = client(
        handler,
        dispatcher,
        max_concurrent_requests=1,
        rate_limits=asyncllm.RateLimits(max_wait=3600.0),
    )
    await asyncio.gather(*(c.chat(USER, model="m") for _ in range(3)))
    # The first reply: 2 a minute, 1 left. One more call takes it; the last waits for the
    # refill (30 s; here 60, as the fake clock's sleep moves time before the second reply, whose
    # remaining of 0 then lowers the refilled level).
    assert arrivals[:2] == [1000.0, 1000.0]
    assert arrivals[2] >= 1030.0
    await dispatcher.aclose()


def foreign_use(vendor: list[int]) -> tuple[Any, dict[int, asyncio.Event]]:
    """A vendor whose ``vendor[0]`` requests are left (another program on the same key spends
    some): each request takes one and is answered, when its event is set, with what was left."""
    released: dict[int, asyncio.Event] = {}

    async def handler(request: Any) -> MockResponse:
        vendor[0] -= 1
        left = vendor[0]
        number = len(released)
        gate = released[number] = asyncio.Event()
        await gate.wait()
        return reply(
            headers={
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": str(left),
            }
        )

    return handler, released


async def test_a_reply_is_reconciled_with_what_was_left_when_its_call_was_sent() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    vendor = [10 - 3]
    handler, released = foreign_use(vendor)
    c = budgeted(handler, dispatcher, requests_per_minute=10)
    first = asyncio.ensure_future(c.chat(USER, model="m"))
    second = asyncio.ensure_future(c.chat(USER, model="m"))
    await settle()
    assert vendor == [5] and await tokens_left(dispatcher, "requests") == 8
    released[0].set()
    await first
    # The first reply left 6 where 9 were expected: 3 spent elsewhere, so of the 8 this lane
    # still counted, 5 are there (the second call's arrival already took one of the 6). The
    # reply's 6 alone would have left 6.
    assert await tokens_left(dispatcher, "requests") == 5
    released[1].set()
    await second
    # The second call was sent before that correction: its reply (5 left, 8 expected) is the
    # same 3, not taken off again.
    assert await tokens_left(dispatcher, "requests") == 5
    await dispatcher.aclose()


async def test_reconciling_lowers_once_and_raises_only_for_an_uncounted_refusal() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0, requests_per_minute=10)
    leases = []
    for _ in range(4):
        lease = await store.lease("a", Cost(1), 0.0)
        assert isinstance(lease, Lease)
        store.sending(lease)
        leases.append(lease)

    async def answer(lease: Lease, left: int, refused: bool = False) -> int | None:
        window = Window(10, left, None)
        await store.report("a", RateHeaders({"requests": window}), 0.0, lease, refused)
        return (await store.current("a", 0.0))["requests"].remaining

    # 3 spent elsewhere before the first arrived: 10 - 3 - 1 = 6 left, 9 expected.
    assert await answer(leases[0], 6) == 6 - 3  # the three sent since are counted here
    assert await answer(leases[1], 5) == 3  # the same 3: not taken off twice
    assert await answer(leases[3], 3) == 3
    # A reply that left more than expected raises nothing (it may predate calls sent before it).
    assert await answer(leases[2], 9) == 3
    refused = await store.lease("a", Cost(1), 0.0)
    assert isinstance(refused, Lease)
    store.sending(refused)
    assert (await store.current("a", 0.0))["requests"].remaining == 2
    # A refusal that left its request uncounted gives it back: that one, and no more.
    assert await answer(refused, 8, refused=True) == 3


async def test_a_lease_taken_before_the_budget_existed_is_extended_not_reconciled() -> None:
    store = MemoryBudgetStore()
    store.configure("a", 0.0)  # RateLimits with no budget: a gate, no buckets
    early = await store.lease("a", Cost(1, 5, 2), 0.0)
    assert isinstance(early, Lease) and not store.uncounted(early)
    await store.report("a", RateHeaders({"requests": Window(2, 2, 60.0)}), 0.0)
    assert store.uncounted(early)
    assert await store.extend(early, 0.0) == 0.0
    assert not store.uncounted(early)
    again = await store.lease("a", Cost(1, 5, 2), 0.0)
    assert isinstance(again, Lease)
    late = await store.lease("a", Cost(1, 5, 2), 0.0)
    assert late == pytest.approx(30.0)  # both requests are spent: one back in 30 s
    assert await store.extend(early, 0.0) == 0.0  # charged once only


async def test_a_mark_leaves_out_what_calls_not_yet_sent_hold() -> None:
    # Two calls lease; the later one is sent first (the earlier waits for a slot): the vendor
    # has seen only that one, and its reply is reconciled with that, not with both leases.
    store = MemoryBudgetStore()
    store.configure("a", 0.0, requests_per_minute=10)
    waiting = await store.lease("a", Cost(1), 0.0)
    sent = await store.lease("a", Cost(1), 0.0)
    assert isinstance(waiting, Lease) and isinstance(sent, Lease)
    store.sending(sent)
    # 3 spent elsewhere, then this one: 10 - 3 - 1 = 6 left.
    await store.report("a", RateHeaders({"requests": Window(10, 6, None)}), 0.0, sent)
    assert (await store.current("a", 0.0))["requests"].remaining == 10 - 3 - 2


async def test_a_call_waiting_for_a_learned_budget_waits_without_its_slot() -> None:
    # One slot. The backlog call passed a gate that had no budget yet; once the first reply says
    # none is left, it waits for the budget without holding the slot, so the HIGH call that
    # arrives meanwhile, first in line for the budget, is not held behind it.
    rate_limits = asyncllm.RateLimits(max_wait=3600.0)
    clock = ManualClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    arrived: list[tuple[str, float]] = []
    hold = asyncio.Event()

    async def handler(request: Any) -> MockResponse:
        text = request.json()["messages"][0]["content"]
        arrived.append((text, clock()))
        if text == "first":
            await hold.wait()
        return reply(
            headers={
                "x-ratelimit-limit-requests": "2",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "60s",
            }
        )

    c = client(handler, dispatcher, max_concurrent_requests=1, rate_limits=rate_limits)

    def say(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    first = asyncio.create_task(c.chat(say("first"), model="m"))
    await settle()
    backlog = asyncio.create_task(c.chat(say("backlog"), model="m"))
    await settle()
    hold.set()
    await first
    await settle()  # the backlog call has its slot, finds no budget and gives the slot back
    lane = dispatcher._lanes["openai"]
    assert lane.in_flight == 0
    urgent = asyncio.create_task(c.chat(say("urgent"), model="m", priority=asyncllm.Priority.HIGH))
    await settle()
    for _ in range(2):
        await clock.advance(30)  # 2 a minute: one request back every 30 s
    await asyncio.gather(backlog, urgent)
    assert arrived == [("first", 1000.0), ("urgent", 1030.0), ("backlog", 1060.0)]
    await dispatcher.aclose()


async def test_tokens_a_vendor_keeps_after_a_shorter_reply_are_reconciled() -> None:
    # OpenAI counts a call's max_tokens when it arrives; a reply that used fewer settles the
    # client's reservation down, but if the vendor keeps them, the next reply says so.
    store = MemoryBudgetStore()
    store.configure("a", 0.0, tokens_per_minute=1000)

    async def send() -> Lease:
        lease = await store.lease("a", Cost(1, 17, 16), 0.0)
        assert isinstance(lease, Lease)
        store.sending(lease)
        return lease

    first = await send()
    await store.settle_usage(first, 1, 4, 0.0)  # 12 of the 17 come back here
    second = await send()
    await send()  # sent before the second's reply is read
    # The vendor kept all 17 of each: 1000 - 2 * 17 when the second arrived.
    await store.report("a", RateHeaders({"tokens": Window(1000, 966, None)}), 0.0, second)
    assert await tokens_left_in(store) == 1000 - 3 * 17


async def tokens_left_in(store: MemoryBudgetStore) -> int | None:
    return (await store.current("a", 0.0))["tokens"].remaining


def test_a_refusal_left_uncounted_gives_its_whole_request_back() -> None:
    # The vendor's remaining is whole and the mark need not be: 59 left where 58.5 were expected
    # after this request is still the whole request uncounted.
    bucket = TokenBucket(60.0, 1.0, 58.5, 0.0)
    bucket.reconcile(59, 58.5, refused=1)
    assert bucket.level == 59.5
    counted = TokenBucket(60.0, 1.0, 58.5, 0.0)
    counted.reconcile(58, 58.5, refused=1)  # it was counted: nothing comes back
    assert counted.level == 58.0  # (and the level is the vendor's whole 58)
