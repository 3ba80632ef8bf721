"""The dispatcher through real clients on a MockTransport: ordering, limits, cancellation."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest

import asyncllm
from asyncllm.testing import FakeClock, FakeServer, MockResponse
from tests.helpers import Gate, client, ok, settle


def msg(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_priority_order_under_saturation() -> None:
    gate = Gate()
    c = client(gate, max_concurrent_requests=1)
    first = asyncio.create_task(c.chat(msg("first"), model="m"))
    await settle()
    order = [
        ("low-1", asyncllm.Priority.LOW),
        ("normal-1", asyncllm.Priority.NORMAL),
        ("low-2", asyncllm.Priority.LOW),
        ("high-1", asyncllm.Priority.HIGH),
        ("normal-2", asyncllm.Priority.NORMAL),
        ("high-2", asyncllm.Priority.HIGH),
        ("urgent", -5),
    ]
    tasks = [asyncio.create_task(c.chat(msg(t), model="m", priority=p)) for t, p in order]
    await settle()
    assert c.dispatcher.stats()["openai"].queued == len(order)
    gate.release.set()
    await asyncio.gather(first, *tasks)
    assert gate.arrived == [
        "first", "urgent", "high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2",
    ]  # fmt: skip
    await c.aclose()


async def test_in_flight_never_above_limit_at_the_server() -> None:
    async with FakeServer("openai") as server:
        server.faults.latency = 0.01
        c = asyncllm.OpenAI(
            api_key="k", base_url=server.url("/v1"), max_concurrent_requests=3, queue_size=1000
        )
        results = await asyncio.gather(*(c.chat(msg(f"m{i}"), model="m") for i in range(40)))
        await c.aclose()
    assert len(results) == 40
    assert server.max_in_flight == 3
    assert server.request_count == 40


async def test_no_head_of_line_blocking_across_backends() -> None:
    dispatcher = asyncllm.Dispatcher()
    stuck = Gate()
    slow = client(stuck, dispatcher, name="slow", max_concurrent_requests=1)
    fast = client(lambda r: ok("fast"), dispatcher, name="fast", max_concurrent_requests=1)
    blocked = [asyncio.create_task(slow.chat(msg(f"s{i}"), model="m")) for i in range(20)]
    await settle()
    assert dispatcher.stats()["slow"].queued == 19
    answers = await asyncio.wait_for(
        asyncio.gather(*(fast.chat(msg("f"), model="m", priority=2) for _ in range(10))), 2
    )
    assert [a.text for a in answers] == ["fast"] * 10
    stuck.release.set()
    await asyncio.gather(*blocked)
    await dispatcher.aclose()


async def test_higher_priority_waiting_job_starts_before_lower_within_a_backend() -> None:
    gate = Gate()
    c = client(gate, max_concurrent_requests=2)
    running = [asyncio.create_task(c.chat(msg(f"r{i}"), model="m")) for i in range(2)]
    await settle()
    low = asyncio.create_task(c.chat(msg("low"), model="m", priority=2))
    await settle()
    high = asyncio.create_task(c.chat(msg("high"), model="m", priority=0))
    await settle()
    gate.release.set()
    await asyncio.gather(*running, low, high)
    assert gate.arrived[2:] == ["high", "low"]
    await c.aclose()


async def test_backoff_delays_within_bounds_with_full_jitter() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, rng=random.Random(7))
    calls = 0

    def handler(request: Any) -> MockResponse:
        nonlocal calls
        calls += 1
        return MockResponse(500, json={"error": {"message": "boom"}}) if calls <= 5 else ok()

    c = client(
        handler,
        dispatcher,
        retry=asyncllm.RetryConfig(),
        breaker=asyncllm.BreakerConfig(failure_threshold=100),
    )
    r = await c.chat(msg("x"), model="m")
    assert r.text == "ok"
    ceilings = [1, 2, 4, 8, 16]
    assert len(clock.sleeps) == 5
    for delay, ceiling in zip(clock.sleeps, ceilings, strict=True):
        assert 0 <= delay <= ceiling
    # Full jitter draws from the whole range: with this seed not every delay sits at its ceiling.
    assert any(d < c * 0.9 for d, c in zip(clock.sleeps, ceilings, strict=True))
    assert dispatcher.stats()["openai"].retried == 5
    await dispatcher.aclose()


async def test_retries_stop_at_max_retries_and_carry_attempts() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    c = client(
        lambda r: MockResponse(503, json={"error": {"message": "down"}}),
        dispatcher,
        retry=asyncllm.RetryConfig(max_retries=3),
        breaker=asyncllm.BreakerConfig(failure_threshold=100),
    )
    with pytest.raises(asyncllm.InternalServerError) as info:
        await c.chat(msg("x"), model="m")
    assert info.value.attempts == 4
    assert len(c._transport.requests) == 4  # type: ignore[attr-defined]
    await dispatcher.aclose()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
    ],
)
async def test_retry_after_is_honoured(
    monkeypatch: Any, headers: dict[str, str], expected: float
) -> None:
    import time

    monkeypatch.setattr(time, "time", lambda: 1445412480.0)  # 07:28:00 on that day
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    responses = [MockResponse(429, json={"error": {"message": "slow down"}}, headers=headers), ok()]
    c = client(lambda r: responses.pop(0), dispatcher, retry=asyncllm.RetryConfig())
    assert (await c.chat(msg("x"), model="m")).text == "ok"
    assert clock.sleeps == [pytest.approx(expected)]
    await dispatcher.aclose()


async def test_retry_after_over_the_cap_raises_at_once() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    c = client(
        lambda r: MockResponse(
            429, json={"error": {"message": "later"}}, headers={"Retry-After": "600"}
        ),
        dispatcher,
        retry=asyncllm.RetryConfig(max_retry_after=120),
    )
    with pytest.raises(asyncllm.RateLimitError) as info:
        await c.chat(msg("x"), model="m")
    assert info.value.retry_after == 600
    assert info.value.attempts == 1
    assert clock.sleeps == []
    await dispatcher.aclose()


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
async def test_client_errors_are_not_retried(status: int, cls: type[Exception]) -> None:
    c = client(lambda r: MockResponse(status, json={"error": {"message": "no"}}))
    with pytest.raises(cls):
        await c.chat(msg("x"), model="m")
    assert len(c._transport.requests) == 1  # type: ignore[attr-defined]
    assert c.dispatcher.stats()["openai"].breaker == "closed"
    await c.aclose()


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
async def test_transient_statuses_are_retried(status: int) -> None:
    responses = [MockResponse(status, json={"error": {"message": "again"}}), ok()]
    c = client(lambda r: responses.pop(0))
    assert (await c.chat(msg("x"), model="m")).text == "ok"
    await c.aclose()


async def test_x_should_retry_header_overrides() -> None:
    c = client(
        lambda r: MockResponse(
            500, json={"error": {"message": "x"}}, headers={"x-should-retry": "false"}
        )
    )
    with pytest.raises(asyncllm.InternalServerError):
        await c.chat(msg("x"), model="m")
    assert len(c._transport.requests) == 1  # type: ignore[attr-defined]
    await c.aclose()


async def test_breaker_transitions_through_the_dispatcher() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    healthy = False

    def handler(request: Any) -> MockResponse:
        return ok() if healthy else MockResponse(503, json={"error": {"message": "down"}})

    c = client(
        handler,
        dispatcher,
        max_retries=0,
        breaker=asyncllm.BreakerConfig(failure_threshold=3, reset_timeout=30),
    )
    for _ in range(3):
        with pytest.raises(asyncllm.InternalServerError):
            await c.chat(msg("x"), model="m")
    assert dispatcher.stats()["openai"].breaker == "open"
    with pytest.raises(asyncllm.CircuitOpenError) as info:
        await c.chat(msg("x"), model="m")
    assert info.value.retry_in == pytest.approx(30)
    assert len(c._transport.requests) == 3  # type: ignore[attr-defined]
    clock.advance(30)
    assert dispatcher.stats()["openai"].breaker == "half_open"
    with pytest.raises(asyncllm.InternalServerError):  # the probe fails: open again
        await c.chat(msg("x"), model="m")
    assert dispatcher.stats()["openai"].breaker == "open"
    clock.advance(30)
    healthy = True
    assert (await c.chat(msg("x"), model="m")).text == "ok"  # the probe succeeds
    stats = dispatcher.stats()["openai"]
    assert stats.breaker == "closed"
    assert stats.breaker_transitions == {
        "closed->open": 1,
        "open->half_open": 2,
        "half_open->open": 1,
        "half_open->closed": 1,
    }
    await dispatcher.aclose()


async def test_half_open_lets_one_probe_through_and_queues_the_rest() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    gate = Gate()
    failing = True

    async def handler(request: Any) -> MockResponse:
        if failing:
            return MockResponse(500, json={"error": {"message": "x"}})
        return await gate(request)

    c = client(
        handler,
        dispatcher,
        max_retries=0,
        max_concurrent_requests=5,
        breaker=asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=10),
    )
    with pytest.raises(asyncllm.InternalServerError):
        await c.chat(msg("x"), model="m")
    clock.advance(10)
    failing = False
    tasks = [asyncio.create_task(c.chat(msg(f"p{i}"), model="m")) for i in range(3)]
    await settle()
    assert gate.arrived == ["p0"]  # only the probe is out
    gate.release.set()
    await asyncio.gather(*tasks)
    assert sorted(gate.arrived) == ["p0", "p1", "p2"]
    assert dispatcher.stats()["openai"].breaker == "closed"
    await dispatcher.aclose()


async def test_request_id_everywhere_across_gather_and_tasks() -> None:
    seen: list[str] = []

    def handler(request: Any) -> MockResponse:
        seen.append(request.headers["X-Request-ID"])
        if request.json()["messages"][0]["content"] == "fail":
            return MockResponse(400, json={"error": {"message": "bad"}})
        return ok()

    c = client(handler)
    with asyncllm.request_context("trace-42") as rid:
        assert asyncllm.current_request_id() == rid == "trace-42"
        a, b = await asyncio.gather(c.chat(msg("a"), model="m"), c.chat(msg("b"), model="m"))
        task = asyncio.create_task(c.chat(msg("c"), model="m"))
        with pytest.raises(asyncllm.BadRequestError) as info:
            await c.chat(msg("fail"), model="m")
        cr = await task
    assert asyncllm.current_request_id() is None
    assert seen == ["trace-42"] * 4
    assert a.request_id == b.request_id == cr.request_id == info.value.request_id == "trace-42"
    records = c.dispatcher.tracker.all("trace-42")
    assert len(records) == 4
    assert {r.status for r in records} == {
        asyncllm.RequestStatus.SUCCEEDED,
        asyncllm.RequestStatus.FAILED,
    }
    # Outside a context every call gets its own fresh ID.
    x, y = await asyncio.gather(c.chat(msg("x"), model="m"), c.chat(msg("y"), model="m"))
    assert x.request_id != y.request_id
    assert seen[-2:] == [x.request_id, y.request_id] or seen[-2:] == [y.request_id, x.request_id]
    record = c.dispatcher.tracker.get(x.request_id)
    assert record is not None
    assert record.backend == "openai" and record.operation == "chat" and record.attempts == 1
    assert record.started_at is not None and record.finished_at is not None
    await c.aclose()


async def test_request_id_is_on_log_records(caplog: Any) -> None:
    responses = [MockResponse(500, json={"error": {"message": "x"}}), ok()]
    c = client(lambda r: responses.pop(0))
    with caplog.at_level("INFO", logger="asyncllm"), asyncllm.request_context("log-id"):
        await c.chat(msg("x"), model="m")
    retry_records = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retry_records and all(r.request_id == "log-id" for r in retry_records)
    await c.aclose()


def test_request_ids_do_not_follow_the_global_random_seed() -> None:
    from asyncllm._engine._context import new_request_id

    random.seed(7)
    first = new_request_id()
    random.seed(7)
    assert new_request_id() != first
    assert first.startswith("req_") and len(first) == 28


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_other_request_ids_than_its_parent() -> None:
    from asyncllm._engine._context import new_request_id

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ID and leave at once
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_id.startswith("req_") and child_id != new_request_id()


async def test_cancel_while_queued_frees_the_entry() -> None:
    gate = Gate()
    c = client(gate, max_concurrent_requests=1, queue_size=1, queue_timeout=0)
    running = asyncio.create_task(c.chat(msg("running"), model="m"))
    await settle()
    queued = asyncio.create_task(c.chat(msg("queued"), model="m"))
    await settle()
    assert c.dispatcher.stats()["openai"].queued == 1
    queued.cancel()
    await settle()
    assert c.dispatcher.stats()["openai"].queued == 0
    # The freed place takes a new call at once (queue_timeout=0 would raise otherwise).
    replacement = asyncio.create_task(c.chat(msg("replacement"), model="m"))
    await settle()
    gate.release.set()
    await asyncio.gather(running, replacement)
    assert gate.arrived == ["running", "replacement"]
    assert queued.cancelled()
    stats = c.dispatcher.stats()["openai"]
    assert (stats.cancelled, stats.in_flight, stats.queued) == (1, 0, 0)
    await c.aclose()


async def test_cancel_while_running_frees_the_slot() -> None:
    gate = Gate()
    c = client(gate, max_concurrent_requests=1)
    running = asyncio.create_task(c.chat(msg("running"), model="m"))
    await settle()
    waiting = asyncio.create_task(c.chat(msg("waiting"), model="m"))
    await settle()
    assert gate.arrived == ["running"]
    running.cancel()
    await settle()
    assert gate.arrived == ["running", "waiting"]
    gate.release.set()
    await waiting
    stats = c.dispatcher.stats()["openai"]
    assert (stats.in_flight, stats.cancelled, stats.succeeded) == (0, 1, 1)
    await c.aclose()


async def test_queue_full_raises_or_waits() -> None:
    gate = Gate()
    c = client(gate, max_concurrent_requests=1, queue_size=2, queue_timeout=0)
    tasks = [asyncio.create_task(c.chat(msg(f"t{i}"), model="m")) for i in range(3)]
    await settle()
    with pytest.raises(asyncllm.QueueFullError) as info:
        await c.chat(msg("overflow"), model="m")
    assert info.value.backend == "openai"
    gate.release.set()
    await asyncio.gather(*tasks)
    await c.aclose()

    gate = Gate()
    c = client(gate, max_concurrent_requests=1, queue_size=1, queue_timeout=0.05)
    tasks = [asyncio.create_task(c.chat(msg(f"t{i}"), model="m")) for i in range(2)]
    await settle()
    with pytest.raises(asyncllm.QueueFullError):
        await c.chat(msg("overflow"), model="m")
    # Without a timeout the caller waits for room (backpressure) and then runs.
    gate2 = Gate()
    c2 = client(gate2, max_concurrent_requests=1, queue_size=1)
    first = [asyncio.create_task(c2.chat(msg(f"t{i}"), model="m")) for i in range(2)]
    await settle()
    third = asyncio.create_task(c2.chat(msg("waits"), model="m"))
    await settle()
    assert not third.done()
    gate2.release.set()
    gate.release.set()
    await asyncio.gather(*tasks, *first, third)
    assert gate2.arrived == ["t0", "t1", "waits"]
    await c.aclose()
    await c2.aclose()


async def test_deadline_bounds_the_whole_call() -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep)
    c = client(
        lambda r: MockResponse(503, json={"error": {"message": "down"}}),
        dispatcher,
        retry=asyncllm.RetryConfig(jitter=False, initial_delay=1, max_retries=10),
        breaker=asyncllm.BreakerConfig(failure_threshold=100),
    )
    with pytest.raises(asyncllm.InternalServerError):
        await c.chat(msg("x"), model="m", deadline=5)
    assert sum(clock.sleeps) < 5
    assert clock.sleeps == [1, 2]  # the next wait (4) would pass the deadline
    await dispatcher.aclose()


async def test_stream_holds_its_slot_until_closed() -> None:
    sse = b"".join(
        b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % w
        for w in (b"a", b"b", b"c")
    )
    c = client(
        lambda r: MockResponse(200, chunks=[sse, b"data: [DONE]\n\n"]), max_concurrent_requests=1
    )
    stream = c.stream_chat(msg("x"), model="m")
    first = await stream.__anext__()
    assert first.delta == "a"
    assert c.dispatcher.stats()["openai"].in_flight == 1
    await stream.aclose()
    assert c.dispatcher.stats()["openai"].in_flight == 0
    async with c.stream_chat(msg("x"), model="m") as s:
        assert [ch.delta async for ch in s] == ["a", "b", "c"]
    assert c.dispatcher.stats()["openai"].in_flight == 0
    await c.aclose()


async def test_stream_is_retried_only_before_its_first_chunk() -> None:
    good = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    responses = [
        MockResponse(503, json={"error": {"message": "x"}}),
        MockResponse(200, chunks=[good, b"data: [DONE]\n\n"]),
    ]
    c = client(lambda r: responses.pop(0))
    assert [ch.delta async for ch in c.stream_chat(msg("x"), model="m")] == ["hi"]

    class Broken(MockResponse):
        async def iter_bytes(self) -> Any:
            yield good
            raise asyncllm.APIConnectionError("dropped mid-stream")

    calls = 0

    def broken(request: Any) -> MockResponse:
        nonlocal calls
        calls += 1
        return Broken(200)

    c2 = client(broken)
    got = []
    with pytest.raises(asyncllm.APIConnectionError):
        async for ch in c2.stream_chat(msg("x"), model="m"):
            got.append(ch.delta)
    assert got == ["hi"]
    assert calls == 1
    await c.aclose()
    await c2.aclose()


async def test_priority_must_be_an_int() -> None:
    c = client(lambda r: ok())
    with pytest.raises(asyncllm.ConfigurationError):
        await c.chat(msg("x"), model="m", priority="high")  # type: ignore[arg-type]
    await c.aclose()


async def test_a_call_in_backoff_holds_no_slot() -> None:
    backoff_started = asyncio.Event()
    backoff_release = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        backoff_started.set()
        await backoff_release.wait()

    dispatcher = asyncllm.Dispatcher(sleep=slow_sleep)
    first_attempt = [True]

    def handler(request: Any) -> MockResponse:
        text = request.json()["messages"][0]["content"]
        if text == "flaky" and first_attempt[0]:
            first_attempt[0] = False
            return MockResponse(503, json={"error": {"message": "x"}})
        return ok(text)

    c = client(
        handler,
        dispatcher,
        max_concurrent_requests=1,
        retry=asyncllm.RetryConfig(initial_delay=1),
    )
    flaky = asyncio.create_task(c.chat(msg("flaky"), model="m"))
    await backoff_started.wait()
    assert dispatcher.stats()["openai"].in_flight == 0
    other = await asyncio.wait_for(c.chat(msg("other"), model="m"), 1)
    assert other.text == "other"
    assert dispatcher.tracker.get(flaky_id(dispatcher)).status.value == "retrying"  # type: ignore[union-attr]
    backoff_release.set()
    assert (await flaky).text == "flaky"
    await dispatcher.aclose()


def flaky_id(dispatcher: asyncllm.Dispatcher) -> str:
    tracker = dispatcher.tracker
    records = [r for request_id in list(tracker._by_id) for r in tracker.all(request_id)]
    return next(r.request_id for r in records if r.attempts == 1 and r.status.value == "retrying")


async def test_cancelling_a_running_and_a_queued_call_in_one_turn() -> None:
    gate = Gate()
    c = client(gate, max_concurrent_requests=1, close_timeout=0.1)
    running = asyncio.create_task(c.chat(msg("running"), model="m"))
    await settle()
    queued = asyncio.create_task(c.chat(msg("queued"), model="m"))
    await settle()
    running.cancel()
    queued.cancel()  # its future is cancelled now; its task only notices on its next step
    await asyncio.gather(running, queued, return_exceptions=True)
    stats = c.dispatcher.stats()["openai"]
    assert (stats.in_flight, stats.queued, stats.cancelled) == (0, 0, 2)
    gate.release.set()
    assert (await c.chat(msg("after"), model="m")).text == "ok"
    assert gate.arrived == ["running", "after"]
    await c.aclose()


# -- the dispatcher-wide limit and its PriorityQueue -------------------------------------------------


async def test_global_limit_orders_jobs_across_backends_by_priority() -> None:
    dispatcher = asyncllm.Dispatcher(max_in_flight=1)
    gate = Gate()
    a = client(gate, dispatcher, name="a", max_concurrent_requests=5)
    b = client(gate, dispatcher, name="b", max_concurrent_requests=5)
    first = asyncio.create_task(a.chat(msg("first"), model="m"))
    await settle()
    order = [
        (a, "low-a", asyncllm.Priority.LOW),
        (b, "low-b", asyncllm.Priority.LOW),
        (a, "normal-a", asyncllm.Priority.NORMAL),
        (b, "high-b", asyncllm.Priority.HIGH),
        (a, "high-a", asyncllm.Priority.HIGH),
        (b, "urgent-b", -5),
    ]
    tasks = [asyncio.create_task(c.chat(msg(t), model="m", priority=p)) for c, t, p in order]
    await settle()
    assert dispatcher.in_flight == 1
    assert dispatcher.stats()["a"].queued == 3 and dispatcher.stats()["b"].queued == 3
    gate.release.set()
    await asyncio.gather(first, *tasks)
    assert gate.arrived == ["first", "urgent-b", "high-b", "high-a", "normal-a", "low-a", "low-b"]
    assert gate.max_running == 1
    assert dispatcher.in_flight == 0
    await dispatcher.aclose()


async def test_global_limit_a_saturated_backend_does_not_delay_another() -> None:
    dispatcher = asyncllm.Dispatcher(max_in_flight=4)
    stuck = Gate()
    slow = client(stuck, dispatcher, name="slow", max_concurrent_requests=2)
    fast = client(lambda r: ok("fast"), dispatcher, name="fast", max_concurrent_requests=2)
    blocked = [
        asyncio.create_task(slow.chat(msg(f"s{i}"), model="m", priority=asyncllm.Priority.HIGH))
        for i in range(10)
    ]
    await settle()
    assert dispatcher.stats()["slow"].queued == 8 and dispatcher.in_flight == 2
    # slow's waiting HIGH calls are held by its own full lane, not by the global limit: the free
    # global slots go to fast's LOW calls at once.
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(fast.chat(msg("f"), model="m", priority=asyncllm.Priority.LOW) for _ in range(10))
        ),
        2,
    )
    assert [x.text for x in answers] == ["fast"] * 10
    stuck.release.set()
    await asyncio.gather(*blocked)
    assert stuck.max_running == 2
    await dispatcher.aclose()


async def test_global_limit_counts_a_stream_for_its_whole_life() -> None:
    dispatcher = asyncllm.Dispatcher(max_in_flight=1)
    chunks = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )

    def handler(request: Any) -> MockResponse:
        if request.json().get("stream"):
            return MockResponse(200, content=chunks, headers={"content-type": "text/event-stream"})
        return ok("other")

    streamer = client(handler, dispatcher, name="streamer")
    other = client(handler, dispatcher, name="other")
    stream = streamer.stream_chat(msg("s"), model="m")
    first = await stream.__anext__()
    assert first.delta == "a"
    waiting = asyncio.create_task(other.chat(msg("o"), model="m"))
    await settle()
    assert not waiting.done() and dispatcher.stats()["other"].queued == 1
    await stream.aclose()
    assert (await asyncio.wait_for(waiting, 2)).text == "other"
    assert dispatcher.in_flight == 0
    await dispatcher.aclose()


async def test_global_limit_slot_comes_back_when_a_caller_is_cancelled() -> None:
    dispatcher = asyncllm.Dispatcher(max_in_flight=1)
    gate = Gate()
    a = client(gate, dispatcher, name="a")
    b = client(lambda r: ok("b"), dispatcher, name="b")
    running = asyncio.create_task(a.chat(msg("r"), model="m"))
    queued = asyncio.create_task(a.chat(msg("q"), model="m"))
    await settle()
    waiting = asyncio.create_task(b.chat(msg("w"), model="m"))
    await settle()
    queued.cancel()
    running.cancel()
    assert (await asyncio.wait_for(waiting, 2)).text == "b"
    assert dispatcher.in_flight == 0
    assert dispatcher.stats()["a"].queued == 0
    await dispatcher.aclose()


@pytest.mark.parametrize(("aging", "expected"), [(None, ["first", "high", "low"]), (1.0, ["first", "low", "high"])])  # fmt: skip
async def test_aging_lets_a_long_waiting_low_call_go_first(
    aging: float | None, expected: list[str]
) -> None:
    clock = FakeClock()
    dispatcher = asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, aging=aging)
    gate = Gate()
    c = client(gate, dispatcher, max_concurrent_requests=1)
    first = asyncio.create_task(c.chat(msg("first"), model="m"))
    await settle()
    low = asyncio.create_task(c.chat(msg("low"), model="m", priority=asyncllm.Priority.LOW))
    await settle()
    # LOW (2) queued at t orders as t + 2s with aging=1; a HIGH call queued 3s later as t + 3s.
    clock.advance(3.0)
    high = asyncio.create_task(c.chat(msg("high"), model="m", priority=asyncllm.Priority.HIGH))
    await settle()
    gate.release.set()
    await asyncio.gather(first, low, high)
    assert gate.arrived == expected
    await dispatcher.aclose()


@pytest.mark.parametrize("kwargs", [{"max_in_flight": 0}, {"max_in_flight": True}, {"aging": 0}, {"aging": float("nan")}])  # fmt: skip
def test_dispatcher_limits_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.Dispatcher(**kwargs)


async def test_abandoned_queued_calls_are_dropped_from_the_lane() -> None:
    # A cancelled queued call leaves its lane's count at once; the heap is compacted once most
    # of it is abandoned, and the calls still queued run in order.
    d = asyncllm.Dispatcher()
    lane = d.lane("x", limits=asyncllm.LimitsConfig(max_concurrent_requests=1, queue_size=200))
    release = asyncio.Event()
    ran: list[int] = []

    async def attempt(n: int) -> int:
        await release.wait()
        ran.append(n)
        return n

    tasks = [
        asyncio.create_task(d.run(lane, "op", lambda a, n=n: attempt(n), max_retries=0))
        for n in range(100)
    ]
    await settle()
    assert lane.queued == 99
    for task in tasks[1:91]:
        task.cancel()
    await settle()
    assert lane.queued == 9
    lane.fill()
    assert len(lane._heap) == 9
    release.set()
    await asyncio.gather(tasks[0], *tasks[91:])
    assert ran == [0, *range(91, 100)]
    await d.aclose()
