"""asyncllm.LLVM against the fake LLVM server (docs/protocols/llvm.md), micro-batching included."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

import asyncllm
from asyncllm.backends.llvm import LLVM, InferResult
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from asyncllm.testing.fakes.llvm import output_for

NO_WAIT = asyncllm.RetryConfig(max_retries=3, initial_delay=0.0, max_delay=0.0)
BATCH_PATH = "/models/{model}/batch_infer"


PROTOCOLS = ("llvm",)


def make(server: FakeServer, **kwargs: Any) -> LLVM:
    kwargs.setdefault("retry", NO_WAIT)
    return LLVM(base_url=server.url(), **kwargs)


def make_client(server: FakeServer) -> LLVM:
    return make(server)


def batch_requests(server: FakeServer) -> list[Any]:
    return [r.json for r in server.requests if r.path.endswith("/batch_infer")]


# -- configuration -----------------------------------------------------------------------------


def test_env_vars_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLVM_API_URL", raising=False)
    monkeypatch.delenv("LLVM_API_KEY", raising=False)
    plain = LLVM()
    assert plain.base_url == "http://localhost:8090"
    assert "Authorization" not in plain._headers
    assert plain.batch_size == 8 and plain.batch_wait == 0.010 and plain.micro_batching
    monkeypatch.setenv("LLVM_API_URL", "http://llvm.internal:9000/")
    monkeypatch.setenv("LLVM_API_KEY", "s3cret")
    client = LLVM()
    assert client.base_url == "http://llvm.internal:9000"
    assert client._headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(client) and "s3cret" not in repr(client.api_key)
    assert not LLVM(batch_size=1).micro_batching


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5}, {"batch_wait": -1}])
def test_bad_batch_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        LLVM(**kwargs)


async def test_bad_arguments_send_nothing(client: LLVM, server: FakeServer) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.optimize("resnet-50", "fastest")  # type: ignore[arg-type]
    with pytest.raises(asyncllm.ConfigurationError):
        await client.infer("", "x")
    with pytest.raises(asyncllm.ConfigurationError):
        await client.infer("resnet-50", "x", parameters=["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(asyncllm.ConfigurationError):
        await client.infer("resnet-50", {1, 2})
    with pytest.raises(asyncllm.ConfigurationError):
        await client.batch_infer("resnet-50", [])
    with pytest.raises(asyncllm.ConfigurationError):
        await client.infer("resnet-50", "x", deadline=-1)
    assert server.request_count == 0


# -- every route ---------------------------------------------------------------------------------


async def test_models_and_model_info(client: LLVM) -> None:
    models = await client.models()
    assert [m.id for m in models] == ["resnet-50", "bert-base", "org/model v2"]
    assert models[0].max_batch == 32 and models[0].status == "ready"
    info = await client.model_info("org/model v2")
    assert info.id == "org/model v2" and info.optimization == "balanced"
    assert info.raw["version"] == "1"


async def test_model_id_is_path_escaped() -> None:
    seen: list[str] = []

    def handler(request: Any) -> MockResponse:
        seen.append(request.url)
        return MockResponse(200, json={"id": "org/model v2"})

    client = LLVM(base_url="http://llvm.test", transport=MockTransport(handler))
    try:
        await client.model_info("org/model v2")
        await client.model_info("a?b#c")
    finally:
        await client.aclose()
    assert seen == [
        "http://llvm.test/models/org%2Fmodel%20v2",
        "http://llvm.test/models/a%3Fb%23c",
    ]


async def test_infer_unbatched(client: LLVM, server: FakeServer) -> None:
    r = await client.infer("org/model v2", {"x": [1, 2]}, {"threshold": 0.5}, batch=False)
    assert isinstance(r, InferResult)
    assert r.model == "org/model v2"
    assert r.output == output_for("org/model v2", {"x": [1, 2]})
    assert r.metrics.batch_size == 1 and r.metrics.latency_ms == 0.5
    assert r.request_id == server.request_ids[-1]
    sent = server.requests[-1]
    assert sent.path == "/models/org/model v2/infer"
    assert sent.json == {"input": {"x": [1, 2]}, "parameters": {"threshold": 0.5}}


async def test_batch_infer_keeps_input_order(client: LLVM, server: FakeServer) -> None:
    inputs = ["a", 2, [3], {"four": 4}, None]
    results = await client.batch_infer("bert-base", inputs, {"k": 1})
    assert [r.output for r in results] == [output_for("bert-base", i) for i in inputs]
    assert {r.request_id for r in results} == {server.request_ids[-1]}
    assert results[0].metrics.batch_size == 5
    assert server.requests[-1].json == {"inputs": inputs, "parameters": {"k": 1}}


async def test_results_keep_the_server_json_as_raw() -> None:
    item = {"output": [1], "metrics": {"latency_ms": 2.0, "gpu": "a"}, "note": "kept"}

    def handler(request: Any) -> MockResponse:
        if request.url.endswith("/batch_infer"):
            return MockResponse(200, json={"model": "served", "results": [item, {}]})
        return MockResponse(200, json={**item, "model": "m", "request_id": "theirs"})

    client = LLVM(base_url="http://llvm.test", transport=MockTransport(handler))
    try:
        one = await client.infer("m", 1, batch=False)
        first, second = await client.batch_infer("m", [1, 2])
    finally:
        await client.aclose()
    assert one.raw == {**item, "model": "m", "request_id": "theirs"}
    assert one.request_id != "theirs" and one.metrics.model_extra == {"gpu": "a"}
    assert (first.model, first.output, first.raw) == ("served", [1], item)
    assert (second.model, second.output, second.raw) == ("served", None, {})
    assert second.metrics.latency_ms is None and first.request_id == second.request_id


async def test_statistics_count_calls(client: LLVM) -> None:
    await client.infer("resnet-50", "a", batch=False)
    await client.batch_infer("resnet-50", ["b", "c", "d"])
    stats = await client.statistics("resnet-50")
    assert (stats.requests, stats.inferences, stats.batches, stats.errors) == (2, 4, 1, 0)
    assert stats.average_latency_ms == 0.5
    other = await client.statistics("bert-base")
    assert other.requests == 0


async def test_optimize_reload_status(client: LLVM, server: FakeServer) -> None:
    result = await client.optimize("resnet-50", "memory")
    assert (result.model, result.optimization_type, result.status) == (
        "resnet-50",
        "memory",
        "optimized",
    )
    assert server.requests[-1].json == {"optimization_type": "memory"}
    assert (await client.model_info("resnet-50")).optimization == "memory"
    reloaded = await client.reload("resnet-50")
    assert reloaded.status == "reloaded"
    assert (await client.statistics("resnet-50")).model_extra == {
        "optimization": "memory",
        "reloads": 1,
    }
    status = await client.status()
    assert status.status == "ok" and status.models_loaded == 3 and status.version


async def test_infer_many_in_order_and_chunked(server: FakeServer) -> None:
    client = make(server, batch_size=4)
    try:
        inputs = list(range(10))
        results = await client.infer_many("resnet-50", inputs)
        assert await client.infer_many("resnet-50", []) == []
    finally:
        await client.aclose()
    assert [r.output for r in results] == [output_for("resnet-50", i) for i in inputs]
    assert sorted(server.state["llvm"]["batch_sizes"]) == [2, 4, 4]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, asyncllm.BadRequestError),
        (401, asyncllm.AuthenticationError),
        (404, asyncllm.NotFoundError),
        (413, asyncllm.RequestTooLargeError),
        (422, asyncllm.UnprocessableEntityError),
        (429, asyncllm.RateLimitError),
        (500, asyncllm.InternalServerError),
        (503, asyncllm.InternalServerError),
    ],
)
async def test_status_maps_to_class(server: FakeServer, status: int, cls: type[Exception]) -> None:
    client = make(server, max_retries=0, retry=None)
    server.fail_next(1, status=status)
    try:
        with pytest.raises(cls) as info:
            await client.infer("resnet-50", "x", batch=False)
    finally:
        await client.aclose()
    error: Any = info.value
    assert error.status_code == status
    assert error.message == f"injected {status}"  # read from {"error": "..."}
    assert error.request_id == server.request_ids[-1]


async def test_unknown_model_and_max_batch(client: LLVM, server: FakeServer) -> None:
    with pytest.raises(asyncllm.NotFoundError, match="not found"):
        await client.statistics("nope")
    with pytest.raises(asyncllm.NotFoundError):
        await client.infer("nope", 1)
    server.state["llvm"]["models"]["resnet-50"]["max_batch"] = 2
    with pytest.raises(asyncllm.RequestTooLargeError, match="exceeds max_batch 2"):
        await client.batch_infer("resnet-50", [1, 2, 3])
    assert (await client.statistics("resnet-50")).errors == 1


async def test_retry_after_429(client: LLVM, server: FakeServer) -> None:
    server.fail_next(2, status=429, retry_after="0")
    r = await client.infer("resnet-50", "again")
    assert r.output == output_for("resnet-50", "again")
    assert server.request_count == 3


async def test_api_key_required(server: FakeServer) -> None:
    server.state["llvm"]["api_key"] = "k1"
    anonymous = make(server, max_retries=0, retry=None)
    keyed = LLVM(api_key="k1", base_url=server.url(), retry=NO_WAIT)
    try:
        with pytest.raises(asyncllm.AuthenticationError):
            await anonymous.status()
        assert (await keyed.status()).status == "ok"
    finally:
        await anonymous.aclose()
        await keyed.aclose()
    assert server.requests[-1].headers["Authorization"] == "Bearer k1"


async def test_malformed_body_is_validation_error(client: LLVM, server: FakeServer) -> None:
    server.malformed_next()
    with pytest.raises(asyncllm.ResponseValidationError):
        await client.models()


# -- micro-batching ---------------------------------------------------------------------------------


async def test_fifty_concurrent_callers_are_batched(server: FakeServer) -> None:
    client = make(server, batch_size=8, max_concurrent_requests=2)
    try:
        results = await asyncio.gather(*(client.infer("resnet-50", i) for i in range(50)))
    finally:
        await client.aclose()
    assert [r.output for r in results] == [output_for("resnet-50", i) for i in range(50)]
    sizes = server.state["llvm"]["batch_sizes"]
    assert sum(sizes) == 50 and max(sizes) <= 8
    assert server.request_count == len(sizes) < 50
    assert len(sizes) <= 10  # 7 full-ish batches, not one request per caller
    assert server.max_in_flight <= 2
    assert all(r.path.endswith("/batch_infer") for r in server.requests)


async def test_lone_call_does_not_wait_for_a_full_batch(server: FakeServer) -> None:
    client = make(server, batch_size=1000, batch_wait=0.02)
    try:
        started = time.perf_counter()
        r = await client.infer("resnet-50", "alone")
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    assert r.output == output_for("resnet-50", "alone")
    assert server.state["llvm"]["batch_sizes"] == [1]
    assert 0.015 <= elapsed < 0.5


async def test_full_batch_goes_without_waiting(server: FakeServer) -> None:
    client = make(server, batch_size=4, batch_wait=30)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client.infer("resnet-50", i) for i in range(4)))
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    assert elapsed < 0.5
    assert server.state["llvm"]["batch_sizes"] == [4]


async def test_batch_size_one_turns_batching_off(server: FakeServer) -> None:
    client = make(server, batch_size=1)
    try:
        await asyncio.gather(*(client.infer("resnet-50", i) for i in range(3)))
    finally:
        await client.aclose()
    assert [r.path for r in server.requests] == ["/models/resnet-50/infer"] * 3


async def test_only_same_model_and_parameters_share_a_batch(server: FakeServer) -> None:
    client = make(server, batch_size=8)
    try:
        await asyncio.gather(
            client.infer("resnet-50", 1, {"t": 1}),
            client.infer("resnet-50", 2, {"t": 1}),
            client.infer("resnet-50", 3, {"t": 2}),
            client.infer("bert-base", 4, {"t": 1}),
        )
    finally:
        await client.aclose()
    bodies = sorted(
        ((r.path, r.json["inputs"], r.json["parameters"]) for r in server.requests),
        key=repr,
    )
    assert bodies == [
        ("/models/bert-base/batch_infer", [4], {"t": 1}),
        ("/models/resnet-50/batch_infer", [1, 2], {"t": 1}),
        ("/models/resnet-50/batch_infer", [3], {"t": 2}),
    ]


async def test_batch_runs_at_the_best_priority_of_its_callers(server: FakeServer) -> None:
    client = make(server, batch_size=3)
    try:
        results = await asyncio.gather(
            client.infer("resnet-50", 1, priority=asyncllm.Priority.LOW),
            client.infer("resnet-50", 2, priority=asyncllm.Priority.HIGH),
            client.infer("resnet-50", 3),
        )
        record = client.dispatcher.tracker.get(results[0].request_id)
    finally:
        await client.aclose()
    assert len({r.request_id for r in results}) == 1
    assert record is not None
    assert record.priority == asyncllm.Priority.HIGH
    assert record.operation == "batch_infer"


async def test_cancelled_caller_leaves_its_batch(server: FakeServer) -> None:
    client = make(server, batch_size=3, batch_wait=30)
    try:
        leaver = asyncio.ensure_future(client.infer("resnet-50", "leaver"))
        stayer = asyncio.ensure_future(client.infer("resnet-50", "stayer"))
        await asyncio.sleep(0)
        leaver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaver
        late = [asyncio.ensure_future(client.infer("resnet-50", f"late{i}")) for i in range(2)]
        results = await asyncio.wait_for(asyncio.gather(stayer, *late), 2)
    finally:
        await client.aclose()
    assert [r.output for r in results] == [
        output_for("resnet-50", v) for v in ("stayer", "late0", "late1")
    ]
    assert batch_requests(server) == [{"inputs": ["stayer", "late0", "late1"], "parameters": {}}]


async def test_last_cancelled_caller_drops_the_batch(server: FakeServer) -> None:
    client = make(server, batch_size=8, batch_wait=0.01)
    try:
        task = asyncio.ensure_future(client.infer("resnet-50", "gone"))
        await asyncio.sleep(0)
        assert client._open
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not client._open
        await asyncio.sleep(0.03)  # past the batch wait: the cancelled timer sends nothing
    finally:
        await client.aclose()
    assert server.request_count == 0


async def test_batch_failure_fails_each_caller(server: FakeServer) -> None:
    client = make(server, batch_size=4, max_retries=0, retry=None)
    server.fail_next(1, status=400)
    try:
        outcomes = await asyncio.gather(
            *(client.infer("resnet-50", i) for i in range(4)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(e, asyncllm.BadRequestError) for e in outcomes)
    errors: list[Any] = list(outcomes)
    assert len({id(e) for e in errors}) == 4  # each caller its own exception object
    assert {e.request_id for e in errors} == {server.request_ids[-1]}
    assert {e.status_code for e in errors} == {400}
    assert server.request_count == 1


async def test_batch_is_retried_for_all_callers(server: FakeServer) -> None:
    client = make(server, batch_size=4)
    server.fail_next(1, status=503)
    try:
        results = await asyncio.gather(*(client.infer("resnet-50", i) for i in range(4)))
    finally:
        await client.aclose()
    assert [r.output for r in results] == [output_for("resnet-50", i) for i in range(4)]
    assert server.request_count == 2


async def test_wrong_number_of_results_fails_each_caller(server: FakeServer) -> None:
    async def short(request: web.Request) -> web.StreamResponse:
        return web.json_response({"model": "resnet-50", "results": [{"output": "only one"}]})

    server.overrides[BATCH_PATH] = short
    client = make(server, batch_size=3)
    try:
        outcomes = await asyncio.gather(
            *(client.infer("resnet-50", i) for i in range(3)), return_exceptions=True
        )
        with pytest.raises(asyncllm.ResponseValidationError, match="3 inputs but got 1"):
            await client.batch_infer("resnet-50", [1, 2, 3])
    finally:
        await client.aclose()
    assert all(isinstance(e, asyncllm.ResponseValidationError) for e in outcomes)
    assert server.request_count == 2  # not retried


async def test_caller_deadline_while_batch_hangs(server: FakeServer) -> None:
    client = make(server, batch_size=2, batch_wait=0.001, max_retries=0, retry=None)
    server.hang_next()
    try:
        started = time.perf_counter()
        with pytest.raises(asyncllm.APITimeoutError):
            await client.infer("resnet-50", "slow", deadline=0.1)
        assert time.perf_counter() - started < 1
    finally:
        await client.aclose()


async def test_close_fails_callers_waiting_for_a_batch(server: FakeServer) -> None:
    client = make(server, batch_size=8, batch_wait=30)
    task = asyncio.ensure_future(client.infer("resnet-50", "x"))
    await asyncio.sleep(0)
    await client.aclose()
    with pytest.raises(asyncllm.ClientClosedError):
        await task
    with pytest.raises(asyncllm.ClientClosedError):
        await client.infer("resnet-50", "y")
    assert server.request_count == 0


async def test_batch_attempt_timeout_keeps_its_details(server: FakeServer) -> None:
    # The client's timeout: a per-call one other than the client's would send the call alone.
    client = make(server, batch_size=2, batch_wait=0.001, max_retries=0, retry=None, timeout=0.05)
    server.hang_next()
    try:
        with pytest.raises(asyncllm.APITimeoutError) as info:
            await client.infer("resnet-50", "slow")
    finally:
        await client.aclose()
    assert info.value.request_id == server.request_ids[-1]  # the batch's own error, not a new one
    assert server.requests[-1].path.endswith("/batch_infer")


# -- call options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"extra_headers": {"X-Tenant": "t1"}},
        {"extra_query": {"trace": "1"}},
        {"extra_body": {"parameters": {"t": 9}}},
        {"timeout": 5},
        {"max_retries": 0},
    ],
)
async def test_call_with_its_own_http_options_is_sent_alone(
    server: FakeServer, options: dict[str, Any]
) -> None:
    client = make(server, batch_size=3, batch_wait=30)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                client.infer("resnet-50", "alone", **options),
                client.infer("resnet-50", 1),
                client.infer("resnet-50", 2),
                client.infer("resnet-50", 3),
            ),
            2,
        )
    finally:
        await client.aclose()
    assert [r.output for r in results] == [output_for("resnet-50", v) for v in ("alone", 1, 2, 3)]
    alone = [r for r in server.requests if r.path.endswith("/infer")]
    assert len(alone) == 1 and alone[0].json["input"] == "alone"
    assert batch_requests(server) == [{"inputs": [1, 2, 3], "parameters": {}}]
    if "extra_headers" in options:
        assert alone[0].headers["X-Tenant"] == "t1"
    if "extra_query" in options:
        assert alone[0].query == {"trace": "1"}
    if "extra_body" in options:
        assert alone[0].json["parameters"] == {"t": 9}


async def test_client_settings_and_call_options_still_batch(server: FakeServer) -> None:
    client = make(server, batch_size=4, batch_wait=30, timeout=20, max_retries=2)
    urgent = client.with_options(priority=asyncllm.Priority.HIGH, deadline=10)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                client.infer("resnet-50", 1, timeout=20),  # the client's own timeout
                client.infer("resnet-50", 2, max_retries=2),  # and retries
                urgent.infer("resnet-50", 3),  # a with_options client shares the batch
                client.infer("resnet-50", 4, deadline=5, priority=asyncllm.Priority.LOW),
            ),
            2,
        )
        record = client.dispatcher.tracker.get(results[0].request_id)
    finally:
        await urgent.aclose()  # does nothing: the batches are its client's
        await client.aclose()
    assert batch_requests(server) == [{"inputs": [1, 2, 3, 4], "parameters": {}}]
    assert record is not None and record.priority == asyncllm.Priority.HIGH


async def test_with_options_close_leaves_waiting_calls_alone(server: FakeServer) -> None:
    client = make(server, batch_size=2, batch_wait=30)
    try:
        first = asyncio.ensure_future(client.infer("resnet-50", 1))
        await asyncio.sleep(0)
        await client.with_options(timeout=5).aclose()
        second = await client.infer("resnet-50", 2)
        assert (await first).output == output_for("resnet-50", 1)
        assert second.output == output_for("resnet-50", 2)
    finally:
        await client.aclose()


async def test_misspelt_option_is_type_error_before_sending(server: FakeServer) -> None:
    client = make(server)
    try:
        with pytest.raises(TypeError, match="extra_bdy"):
            await client.infer("resnet-50", 1, extra_bdy={})  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="timeuot"):
            await client.infer("resnet-50", 1, batch=False, timeuot=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="priorty"):
            await client.infer_many("resnet-50", [], priorty=0)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="extra_body"):
            await client.models(extra_body={})  # type: ignore[call-arg]
    finally:
        await client.aclose()
    with pytest.raises(TypeError):
        LLVM("http://localhost:8090")  # type: ignore[call-arg, arg-type]
    assert server.request_count == 0


async def test_routes_take_call_options(client: LLVM, server: FakeServer) -> None:
    await client.status(extra_headers={"X-Tenant": "t1"}, extra_query={"verbose": "1"})
    assert server.requests[-1].headers["X-Tenant"] == "t1"
    assert server.requests[-1].query == {"verbose": "1"}
    await client.batch_infer("resnet-50", [1], extra_body={"parameters": {"k": 2}}, timeout=5)
    assert server.requests[-1].json == {"inputs": [1], "parameters": {"k": 2}}


async def test_infer_many_first_error_cancels_the_rest(server: FakeServer) -> None:
    started: list[Any] = []

    async def fail_or_hang(request: web.Request) -> web.StreamResponse:
        inputs = (await request.json())["inputs"]
        started.append(inputs)
        if 0 in inputs:
            await asyncio.sleep(0.05)
            return web.json_response({"error": "bad input"}, status=400)
        await asyncio.sleep(30)
        raise AssertionError("not cancelled")

    server.overrides[BATCH_PATH] = fail_or_hang
    client = make(server, batch_size=2, max_retries=0, retry=None)
    try:
        began = time.perf_counter()
        with pytest.raises(asyncllm.BadRequestError, match="bad input"):
            await client.infer_many("resnet-50", [0, 1, 2, 3, 4, 5])
        assert time.perf_counter() - began < 2
        assert client.dispatcher.stats()[client.name].in_flight == 0
    finally:
        await client.aclose()
    assert len(started) == 3
