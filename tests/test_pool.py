"""Pools: the pick (power of two choices, ties at random, blocked and ejected members skipped, a
pool-level wait), retries on another member, ejection (growing, capped, at most a share of the
members, a probe when all are out), ``backend`` on answers, lifecycle and typing. Every clock is
a fake one; every member answers through a MockTransport."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm._engine._ratelimit import block_lane
from asyncllm.testing import FakeClock, MockResponse, MockTransport
from tests.helpers import USER, Gate, client, ok, settle

TYPING = Path(__file__).parent / "typing" / "pool.py"

SSE = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'


def fake() -> tuple[FakeClock, asyncllm.Dispatcher]:
    clock = FakeClock()
    return clock, asyncllm.Dispatcher(clock=clock, sleep=clock.sleep, observer=None)


class Member:
    """A member's handler that counts its requests and answers as told."""

    def __init__(self, answer: Callable[[], MockResponse] = ok) -> None:
        self.answer = answer
        self.requests = 0

    def __call__(self, request: Any) -> MockResponse:
        self.requests += 1
        return self.answer()


def failing() -> MockResponse:
    return MockResponse(500, json={"error": {"message": "down"}})


def member(
    handler: Callable[[Any], Any], dispatcher: asyncllm.Dispatcher, name: str, **kwargs: Any
) -> asyncllm.OpenAI:
    return client(handler, dispatcher, name=name, **kwargs)


def breaker(seconds: float, threshold: int = 1) -> asyncllm.BreakerConfig:
    return asyncllm.BreakerConfig(failure_threshold=threshold, reset_timeout=seconds)


# -- the pick ------------------------------------------------------------------------------------


async def test_the_member_with_more_free_slots_gets_the_call() -> None:
    _, d = fake()
    gate = Gate()
    idle = Member()
    a = member(gate, d, "a", max_concurrent_requests=4)
    b = member(idle, d, "b", max_concurrent_requests=4)
    pool = asyncllm.Pool([a, b], rng=random.Random(0), close_members=False)
    # Two calls on a directly: a has half its slots free, b all of them.
    held = [asyncio.ensure_future(a.chat(USER, model="m")) for _ in range(2)]
    await settle()
    for _ in range(10):
        r = await pool.chat(USER, model="m")
        assert r.backend == "b"
    assert idle.requests == 10
    assert len(gate.arrived) == 2
    gate.release.set()
    await asyncio.gather(*held)
    await pool.aclose()
    await a.aclose()
    await b.aclose()


async def test_ties_are_broken_at_random_by_the_injected_rng() -> None:
    _, d = fake()
    picks: dict[int, list[str]] = {}
    for seed in (7, 7, 8):
        pool = asyncllm.Pool(
            [member(Member(), d, "a"), member(Member(), d, "b")], rng=random.Random(seed)
        )
        async with pool:
            seen = [str((await pool.chat(USER, model="m")).backend) for _ in range(40)]
        if seed in picks:
            assert seen == picks[seed]  # the same seed, the same picks
        picks[seed] = seen
        counts = Counter(seen)
        # Idle members tie on every call: each gets a fair share, not the first one all.
        assert 10 <= counts["a"] <= 30, counts
        assert counts["a"] + counts["b"] == 40
    assert picks[7] != picks[8]


async def test_the_member_with_more_rate_budget_left_gets_the_call() -> None:
    _, d = fake()
    spent, fresh = Member(), Member()
    budget = asyncllm.RateLimits(requests_per_minute=10)
    a = member(spent, d, "a", rate_limits=budget)
    b = member(fresh, d, "b", rate_limits=budget)
    pool = asyncllm.Pool([a, b], rng=random.Random(0), close_members=False)
    for _ in range(8):
        await a.chat(USER, model="m")  # a has 2 of its 10 left, b all 10
    for _ in range(5):
        assert (await pool.chat(USER, model="m")).backend == "b"
    assert fresh.requests == 5
    await pool.aclose()
    await a.aclose()
    await b.aclose()


async def test_a_member_blocked_by_retry_after_is_skipped() -> None:
    clock, d = fake()
    first, second = Member(), Member()
    a = member(first, d, "a")
    pool = asyncllm.Pool([a, member(second, d, "b")], rng=random.Random(1))
    async with pool:
        await pool.chat(USER, model="m")  # both lanes exist
        await block_lane(a._get_lane(), 30.0, d.budgets)
        before = first.requests
        for _ in range(20):
            assert (await pool.chat(USER, model="m")).backend == "b"
        assert first.requests == before
        clock.advance(30.0)
        seen = {(await pool.chat(USER, model="m")).backend for _ in range(20)}
        assert seen == {"a", "b"}


async def test_a_429_with_retry_after_moves_the_call_to_another_member_at_once() -> None:
    clock, d = fake()
    limited = Member(
        lambda: MockResponse(
            429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "20"}
        )
    )
    other = Member()
    pool = asyncllm.Pool([member(limited, d, "a"), member(other, d, "b")], rng=random.Random(3))
    async with pool:
        answers = [await pool.chat(USER, model="m") for _ in range(10)]
    assert {r.backend for r in answers} == {"b"}
    assert limited.requests == 1  # the block holds a for every later call
    assert clock.sleeps == []  # another member was there: no backoff


async def test_a_call_waits_in_the_pool_not_behind_one_member() -> None:
    _, d = fake()
    gates = [Gate(), Gate()]
    members = [
        member(gates[0], d, "a", max_concurrent_requests=1),
        member(gates[1], d, "b", max_concurrent_requests=1),
    ]
    pool = asyncllm.Pool(members, rng=random.Random(2))
    first = [asyncio.ensure_future(pool.chat(USER, model="m")) for _ in range(2)]
    await settle()
    assert len(gates[0].arrived) == len(gates[1].arrived) == 1
    third = asyncio.ensure_future(pool.chat(USER, model="m"))
    await settle()
    # Both members are full: the third call waits in the pool, queued on neither lane.
    assert all(s.queued == 0 for s in pool.stats().values())
    # Whichever member frees first takes it.
    gates[1].release.set()
    await settle()
    assert len(gates[1].arrived) == 2
    assert (await third).backend == "b"
    gates[0].release.set()
    await asyncio.gather(*first)
    await pool.aclose()


async def test_calls_waiting_in_the_pool_go_in_priority_order() -> None:
    _, d = fake()
    order: list[str] = []
    gate = Gate()

    async def handler(request: Any) -> MockResponse:
        order.append(request.json()["messages"][0]["content"])
        if len(order) == 1:
            return await gate(request)
        return ok()

    pool = asyncllm.Pool([member(handler, d, "a", max_concurrent_requests=1)])
    held = asyncio.ensure_future(pool.chat([{"role": "user", "content": "first"}], model="m"))
    await settle()
    waiting = [
        asyncio.ensure_future(
            pool.chat([{"role": "user", "content": text}], model="m", priority=priority)
        )
        for text, priority in (("low", asyncllm.Priority.LOW), ("high", asyncllm.Priority.HIGH))
    ]
    await settle()
    gate.release.set()
    await asyncio.gather(held, *waiting)
    assert order == ["first", "high", "low"]
    await pool.aclose()


async def test_a_deadline_passes_while_waiting_in_the_pool() -> None:
    _, d = fake()
    gate = Gate()
    pool = asyncllm.Pool([member(gate, d, "a", max_concurrent_requests=1)])
    held = asyncio.ensure_future(pool.chat(USER, model="m"))
    await settle()
    with pytest.raises(asyncllm.APITimeoutError, match="queued for a pool member"):
        await pool.chat(USER, model="m", deadline=0.001)
    gate.release.set()
    await held
    await pool.aclose()


# -- retries -------------------------------------------------------------------------------------


async def test_a_retryable_failure_is_retried_on_another_member() -> None:
    clock, d = fake()
    broken = Member(failing)
    good = Member()
    pool = asyncllm.Pool([member(broken, d, "a"), member(good, d, "b")], rng=random.Random(0))
    async with pool:
        answers = [await pool.chat(USER, model="m") for _ in range(10)]
    assert {r.backend for r in answers} == {"b"}
    assert broken.requests >= 1
    assert good.requests == 10
    assert clock.sleeps == []
    # Each request ID stays one across members.
    assert len({r.request_id for r in answers}) == 10


async def test_a_call_queued_on_a_member_that_is_then_ejected_goes_to_another() -> None:
    _, d = fake()
    release_a, release_b = asyncio.Event(), asyncio.Event()
    b_requests: list[int] = []

    async def failing_later(request: Any) -> MockResponse:
        await release_a.wait()
        return failing()

    async def held_first(request: Any) -> MockResponse:
        b_requests.append(1)
        if len(b_requests) == 1:
            await release_b.wait()
        return ok()

    a = member(failing_later, d, "a", max_concurrent_requests=1, breaker=breaker(60.0))
    b = member(held_first, d, "b", max_concurrent_requests=1)
    pool = asyncllm.Pool([a, b], rng=random.Random(1), close_members=False)
    # Both members' one slot is taken by a direct call: the pool, with nothing of its own in
    # flight, queues its call on one of them.
    direct_a = asyncio.ensure_future(a.chat(USER, model="m", max_retries=0))
    direct_b = asyncio.ensure_future(b.chat(USER, model="m"))
    await settle()
    pooled = asyncio.ensure_future(pool.chat(USER, model="m"))
    await settle()
    assert pool.stats()["a"].queued == 1  # seed 1 drew a
    release_a.set()  # the direct call fails, a's breaker opens, the queued call is refused
    with pytest.raises(asyncllm.InternalServerError):
        await direct_a
    await settle()
    release_b.set()
    r = await pooled
    assert r.backend == "b"
    assert pool.stats()["a"].rejected == 1
    await direct_b
    await pool.aclose()
    await a.aclose()
    await b.aclose()


async def test_a_client_error_is_not_retried_on_another_member() -> None:
    _, d = fake()
    bad = Member(lambda: MockResponse(400, json={"error": {"message": "no"}}))
    pool = asyncllm.Pool([member(bad, d, "a"), member(bad, d, "b")])
    async with pool:
        with pytest.raises(asyncllm.BadRequestError):
            await pool.chat(USER, model="m")
    assert bad.requests == 1


async def test_with_one_member_the_retry_backs_off_on_it() -> None:
    clock, d = fake()
    answers = [failing(), ok()]
    flaky = Member(lambda: answers.pop(0))
    pool = asyncllm.Pool(
        [
            member(
                flaky,
                d,
                "a",
                breaker=breaker(10.0, threshold=5),
                retry=asyncllm.RetryConfig(initial_delay=1.0, max_delay=1.0, jitter=0.0),
            )
        ]
    )
    async with pool:
        assert (await pool.chat(USER, model="m")).text == "ok"
    assert flaky.requests == 2
    assert clock.sleeps == [1.0]


async def test_max_retries_bounds_the_attempts_across_members() -> None:
    _, d = fake()
    broken = [Member(failing) for _ in range(3)]
    pool = asyncllm.Pool(
        [member(h, d, n, breaker=breaker(10.0, 9)) for h, n in zip(broken, "abc", strict=True)]
    )
    async with pool:
        with pytest.raises(asyncllm.InternalServerError):
            await pool.chat(USER, model="m", max_retries=1)
    assert sum(h.requests for h in broken) == 2
    assert sorted(h.requests for h in broken) == [0, 1, 1]


async def test_a_stream_is_retried_on_another_member_before_its_first_chunk() -> None:
    _, d = fake()
    broken = Member(failing)
    good = Member(lambda: MockResponse(200, chunks=[SSE]))
    pool = asyncllm.Pool([member(broken, d, "a"), member(good, d, "b")], rng=random.Random(0))
    async with pool:
        for _ in range(5):
            async with pool.stream_chat(USER, model="m") as stream:
                assert [c.delta async for c in stream] == ["hi"]
                final = await stream.final()
            assert final.text == "hi"
            assert final.backend == "b"
            assert stream.http is not None and stream.http.status == 200
    assert good.requests == 5


def test_bad_arguments_to_a_pooled_stream_raise_before_anything_is_sent() -> None:
    async def go() -> None:
        _, d = fake()
        sent = Member()
        pool = asyncllm.Pool([member(sent, d, "a"), member(sent, d, "b")])
        with pytest.raises(TypeError, match="max_retry"):
            pool.stream_chat(USER, model="m", max_retry=1)  # type: ignore[call-arg]
        with pytest.raises(asyncllm.ConfigurationError):
            await pool.chat(USER, model="m", timeout="soon")  # type: ignore[typeddict-item]
        with pytest.raises(asyncllm.ConfigurationError, match="priority"):
            await pool.chat(USER, model="m", priority="high")  # type: ignore[typeddict-item]
        with pytest.raises(asyncllm.ConfigurationError, match="deadline"):
            pool.stream_chat(USER, model="m", deadline=-1)
        assert sent.requests == 0
        await pool.aclose()

    asyncio.run(go())


async def test_a_call_that_returns_an_awaitable_is_pooled_too() -> None:
    _, d = fake()
    seen: list[str] = []

    def handler(name: str, status: int) -> Callable[[Any], MockResponse]:
        def answer(request: Any) -> MockResponse:
            seen.append(name)
            if status != 200:
                return MockResponse(status, json={"error": "down"})
            return MockResponse(200, json={"status": "success"})

        return answer

    pool = asyncllm.Pool(
        [
            asyncllm.Ollama(
                base_url="http://mock.invalid",
                transport=MockTransport(handler(name, status)),
                dispatcher=d,
                name=name,
            )
            for name, status in (("a", 503), ("b", 200))
        ],
        rng=random.Random(1),
    )
    async with pool:
        for _ in range(4):
            progress = await pool.pull("tiny", stream=False)
            assert progress.status == "success"
    assert seen.count("b") == 4
    # A failure on a sent the call to b at once, never to a again.
    assert "a,a" not in ",".join(seen)


# -- ejection ------------------------------------------------------------------------------------


async def test_ejection_time_grows_with_repeated_openings_and_is_capped() -> None:
    clock, d = fake()
    broken = Member(failing)
    pool = asyncllm.Pool([member(broken, d, "a", breaker=breaker(10.0))], max_ejection_time=25.0)
    async with pool:
        opened: list[float] = []
        for _ in range(4):
            with pytest.raises(asyncllm.InternalServerError):
                await pool.chat(USER, model="m", max_retries=0)
            assert pool.stats()["a"].breaker == "open"
            wait = _retry_in(pool)
            opened.append(wait)
            clock.advance(wait)  # half-open: the next call is its probe
        assert opened == [10.0, 20.0, 25.0, 25.0]
        assert pool.stats()["a"].info["ejections"] == 4


def _retry_in(pool: Any) -> float:
    (lane,) = (m.client._get_lane() for m in pool._pool.members)
    return float(lane.breaker.retry_in())


async def test_ejections_are_forgiven_as_the_member_stays_in() -> None:
    clock, d = fake()
    answers: list[Callable[[], MockResponse]] = []
    flaky = Member(lambda: answers.pop(0)())
    pool = asyncllm.Pool([member(flaky, d, "a", breaker=breaker(10.0))])
    async with pool:
        answers += [failing, failing]
        for _ in range(2):
            with pytest.raises(asyncllm.InternalServerError):
                await pool.chat(USER, model="m", max_retries=0)
            clock.advance(_retry_in(pool))
        assert pool.stats()["a"].info["ejections"] == 2
        answers += [ok]
        await pool.chat(USER, model="m", max_retries=0)  # the probe closes it
        clock.advance(15.0)  # one reset_timeout in: one ejection forgiven
        answers += [failing]
        with pytest.raises(asyncllm.InternalServerError):
            await pool.chat(USER, model="m", max_retries=0)
        assert pool.stats()["a"].info["ejections"] == 2
        assert _retry_in(pool) == 20.0


async def test_at_most_max_ejection_percent_of_members_are_ejected() -> None:
    _, d = fake()
    broken = [Member(failing) for _ in range(4)]
    pool = asyncllm.Pool(
        [member(h, d, n, breaker=breaker(60.0)) for h, n in zip(broken, "abcd", strict=True)],
        max_ejection_percent=50,
        rng=random.Random(5),
    )
    async with pool:
        for _ in range(8):
            with pytest.raises(asyncllm.InternalServerError):
                await pool.chat(USER, model="m", max_retries=0)
        stats = pool.stats()
        states = Counter(s.breaker for s in stats.values())
        assert states["open"] == 2, stats
        assert sum(s.info["readmitted"] for s in stats.values()) >= 1


async def test_when_every_member_is_ejected_the_first_ejected_gets_a_probe() -> None:
    clock, d = fake()
    answers = {"a": [failing, ok], "b": [failing]}
    handlers = {n: Member(lambda n=n: answers[n].pop(0)()) for n in "ab"}  # type: ignore[misc]
    pool = asyncllm.Pool(
        [member(handlers[n], d, n, breaker=breaker(60.0)) for n in "ab"],
        max_ejection_percent=100,
        rng=random.Random(0),
    )
    async with pool:
        # a fails first (its call had nowhere else to go once b failed too).
        with pytest.raises(asyncllm.InternalServerError):
            await pool.chat(USER, model="m", max_retries=1)
        assert Counter(s.breaker for s in pool.stats().values()) == {"open": 2}
        first = min(pool.stats(), key=lambda n: _opened_at(pool, n))
        clock.advance(1.0)  # long before either breaker would let a probe through
        r = await pool.chat(USER, model="m")
        assert r.backend == first
        assert pool.stats()[first].breaker == "closed"


def _opened_at(pool: Any, name: str) -> float:
    for m in pool._pool.members:
        if m.name == name:
            return float(m.client._get_lane().breaker.opened_at)
    raise KeyError(name)


async def test_a_pool_of_three_absorbs_a_failing_members_share() -> None:
    _, d = fake()
    broken = Member(lambda: MockResponse(503, json={"error": {"message": "down"}}))
    good = [Member(), Member()]
    pool = asyncllm.Pool(
        [
            member(broken, d, "a", breaker=breaker(30.0, threshold=3)),
            member(good[0], d, "b"),
            member(good[1], d, "c"),
        ],
        rng=random.Random(11),
    )
    async with pool:
        answers = await asyncio.gather(*(pool.chat(USER, model="m") for _ in range(300)))
        stats = pool.stats()
    assert len(answers) == 300  # no caller saw an error
    assert {r.backend for r in answers} == {"b", "c"}
    assert stats["a"].breaker == "open"
    assert broken.requests <= 3  # ejected after its threshold
    assert min(h.requests for h in good) > 100


# -- the rest of the surface ---------------------------------------------------------------------


async def test_a_pool_is_a_client_of_its_members_class() -> None:
    _, d = fake()
    pool = asyncllm.Pool([member(Member(), d, "a"), member(Member(), d, "b")])
    assert isinstance(pool, asyncllm.OpenAI)
    assert isinstance(pool, asyncllm.Pool)
    assert repr(pool) == "Pool(OpenAI: a, b)"
    assert pool.chat.__doc__ == asyncllm.OpenAI.chat.__doc__
    with pytest.raises(asyncllm.ConfigurationError, match="not pooled"):
        pool.files  # noqa: B018
    await pool.aclose()


async def test_members_named_alike_get_suffixes() -> None:
    _, d = fake()
    pool = asyncllm.Pool([client(Member(), d), client(Member(), d), client(Member(), d)])
    async with pool:
        await pool.chat(USER, model="m")
        assert sorted(pool.stats()) == ["openai", "openai#2", "openai#3"]


async def test_with_options_on_a_pool_gives_defaults_to_every_call() -> None:
    _, d = fake()
    broken, good = Member(failing), Member()
    pool = asyncllm.Pool(
        [member(broken, d, "a", breaker=breaker(10.0, 9)), member(good, d, "b")],
        rng=random.Random(0),
    )
    strict = pool.with_options(max_retries=0)
    outcomes = []
    for _ in range(10):
        try:
            outcomes.append((await strict.chat(USER, model="m")).backend)
        except asyncllm.InternalServerError:
            outcomes.append("error")
    assert "error" in outcomes and "b" in outcomes
    await strict.aclose()  # does nothing: the pool owns the members
    assert (await pool.chat(USER, model="m")).text == "ok"
    await pool.aclose()


async def test_aclose_closes_the_members_the_pool_owns() -> None:
    _, d = fake()
    owned = [member(Member(), d, "a"), member(Member(), d, "b")]
    async with asyncllm.Pool(owned) as pool:
        await pool.chat(USER, model="m")
    with pytest.raises(asyncllm.ClientClosedError):
        await owned[0].chat(USER, model="m")
    with pytest.raises(asyncllm.ClientClosedError):
        await pool.chat(USER, model="m")
    shared = [member(Member(), d, "c"), member(Member(), d, "e")]
    async with asyncllm.Pool(shared, close_members=False) as pool:
        await pool.chat(USER, model="m")
    assert (await shared[0].chat(USER, model="m")).text == "ok"
    for c in shared:
        await c.aclose()


def test_a_pool_takes_clients_of_one_class() -> None:
    d = asyncllm.Dispatcher(observer=None)
    with pytest.raises(asyncllm.ConfigurationError, match="non-empty"):
        asyncllm.Pool([])
    other = asyncllm.Ollama(base_url="http://127.0.0.1:11434", dispatcher=d)
    with pytest.raises(asyncllm.ConfigurationError, match="one class"):
        asyncllm.Pool([member(Member(), d, "a"), other])  # type: ignore[list-item]
    a = member(Member(), d, "a")
    with pytest.raises(asyncllm.ConfigurationError, match="twice"):
        asyncllm.Pool([a, a])
    with pytest.raises(asyncllm.ConfigurationError, match="max_ejection_percent"):
        asyncllm.Pool([a], max_ejection_percent=120)


async def test_run_tools_pools_each_of_its_chats() -> None:
    _, d = fake()
    broken, good = Member(failing), Member()
    pool = asyncllm.Pool([member(broken, d, "a"), member(good, d, "b")], rng=random.Random(0))

    def add(x: int, y: int) -> int:
        return x + y

    async with pool:
        run = await pool.run_tools(USER, tools=[add], model="m")
    assert run.response.backend == "b"


def test_a_pool_types_as_its_members_class() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(TYPING)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    flagged = {int(m) for m in re.findall(r"pool\.py:(\d+): error", out.stdout)}
    marked = {
        number
        for number, line in enumerate(TYPING.read_text().splitlines(), 1)
        if line.endswith("# E")
    }
    assert marked
    assert flagged == marked, out.stdout
