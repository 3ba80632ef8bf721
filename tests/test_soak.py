"""A short fault soak (benchmarks/soak.py runs the long one): under faults nothing is lost,
nothing is answered twice, limits hold, and nothing is left behind."""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import pytest

import asyncllm
from asyncllm.testing import FakeServer, Faults

CALLS = 20_000
LIMIT = 4
MAX_RETRIES = 3
FAULTS = {
    "rate_limit_rate": 0.10,
    "retry_after": "0",
    "error_rate": 0.12,
    "error_statuses": (500, 503),
    "drop_rate": 0.04,
    "hang_rate": 0.002,
    "malformed_rate": 0.038,
    "hang_seconds": 5.0,
}


async def instant(_: float) -> None:
    await asyncio.sleep(0)


def make_clients(
    servers: list[FakeServer], dispatcher: asyncllm.Dispatcher
) -> list[asyncllm.OpenAI]:
    return [
        asyncllm.OpenAI(
            api_key="k",
            base_url=s.url("/v1"),
            name=f"soak-{i}",
            dispatcher=dispatcher,
            timeout=0.25,
            max_concurrent_requests=LIMIT,
            queue_size=CALLS,
            retry=asyncllm.RetryConfig(max_retries=MAX_RETRIES),
            breaker=asyncllm.BreakerConfig(failure_threshold=8, reset_timeout=0.05),
            close_timeout=1,
        )
        for i, s in enumerate(servers)
    ]


@pytest.mark.timeout(180)
async def test_soak_nothing_lost_nothing_doubled() -> None:
    servers = [
        FakeServer("openai", faults=Faults(**FAULTS), seed=i, history=200_000) for i in range(3)
    ]
    for s in servers:
        await s.start()
    dispatcher = asyncllm.Dispatcher(sleep=instant, tracker_max_records=5_000)
    clients = make_clients(servers, dispatcher)
    rng = random.Random(42)
    outcome: dict[str, Any] = {}

    async def call(i: int) -> None:
        client = clients[i % 3]
        rid = f"soak-{i}"
        with asyncllm.request_context(rid):
            try:
                r = await client.chat(
                    [{"role": "user", "content": f"q{i}"}],
                    model="m",
                    priority=rng.choice((0, 1, 2)),
                )
            except asyncllm.AsyncLLMError as exc:
                assert rid not in outcome, "answered twice"
                outcome[rid] = exc
                return
        assert rid not in outcome, "answered twice"
        assert r.text == f"echo: q{i}", "someone else's answer"
        outcome[rid] = r

    try:
        await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(CALLS))), 150)
        assert len(outcome) == CALLS
        results = sum(isinstance(v, asyncllm.ChatResponse) for v in outcome.values())
        errors = collections.Counter(
            type(v).__name__ for v in outcome.values() if not isinstance(v, asyncllm.ChatResponse)
        )
        assert results + sum(errors.values()) == CALLS
        # An opening breaker fails its backend's queued calls at once (by design, and how many
        # depends on timing); of the calls it did not end, nearly all must succeed.
        assert results > (CALLS - errors["CircuitOpenError"]) * 0.9, errors
        for s in servers:
            assert s.max_in_flight <= LIMIT
            attempts = collections.Counter(s.request_ids)
            assert max(attempts.values()) <= MAX_RETRIES + 1
        stats = dispatcher.stats()
        assert sum(st.succeeded for st in stats.values()) == results
        assert all(st.in_flight == 0 and st.queued == 0 for st in stats.values())
        assert len(dispatcher.tracker) <= 5_000
    finally:
        for c in clients:
            await c.aclose()
        for s in servers:
            await s.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert all(c._transport._session is None for c in clients)  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
async def test_cancellation_storm_returns_every_slot() -> None:
    faults = Faults(rate_limit_rate=0.2, retry_after="0.01", latency=0.005)
    async with FakeServer("openai", faults=faults, seed=5) as server:
        client = asyncllm.OpenAI(
            api_key="k",
            base_url=server.url("/v1"),
            max_concurrent_requests=LIMIT,
            queue_size=10_000,
            retry=asyncllm.RetryConfig(initial_delay=0.01, max_delay=0.02),
            breaker=asyncllm.BreakerConfig(failure_threshold=1000),
        )
        rng = random.Random(9)

        async def streamed(i: int) -> None:
            async with client.stream_chat(
                [{"role": "user", "content": f"s {i} a b c"}], model="m"
            ) as s:
                async for _ in s:
                    await asyncio.sleep(0.001)

        async def plain(i: int) -> None:
            await client.chat([{"role": "user", "content": f"p{i}"}], model="m", priority=i % 3)

        tasks = [asyncio.create_task(streamed(i) if i % 4 == 0 else plain(i)) for i in range(1500)]
        victims = rng.sample(tasks, len(tasks) // 2)

        async def cancel_later(t: asyncio.Task[None]) -> None:
            await asyncio.sleep(rng.uniform(0, 0.3))
            t.cancel()

        await asyncio.gather(*(cancel_later(t) for t in victims))
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        assert all(
            r is None or isinstance(r, (asyncio.CancelledError, asyncllm.AsyncLLMError))
            for r in results
        )
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled > 0
        stats = client.dispatcher.stats()["openai"]
        assert (stats.in_flight, stats.queued) == (0, 0)
        assert stats.cancelled == cancelled
        assert server.max_in_flight <= LIMIT
        # Every slot came back: LIMIT calls now run side by side.
        server.reset()
        server.faults = Faults(latency=0.05)
        await asyncio.gather(*(plain(i) for i in range(LIMIT)))
        assert server.max_in_flight == LIMIT
        await client.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_shutdown_with_calls_in_flight_and_queued() -> None:
    async with FakeServer("openai", faults=Faults(latency=0.05)) as server:
        client = asyncllm.OpenAI(
            api_key="k", base_url=server.url("/v1"), max_concurrent_requests=3, close_timeout=1
        )
        server.hang_next(1)
        tasks = [
            asyncio.create_task(client.chat([{"role": "user", "content": f"{i}"}], model="m"))
            for i in range(30)
        ]
        await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.aclose()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3)
        assert loop.time() - started < 2
    kinds = collections.Counter(type(r).__name__ for r in results)
    assert set(kinds) <= {"ChatResponse", "ClientClosedError"}, kinds
    assert kinds["ClientClosedError"] >= 27  # the queued ones, and the one that hung
    assert asyncio.all_tasks() == {asyncio.current_task()}
