from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import asyncllm
from asyncllm.backends.tei import TEI
from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common
from asyncllm.testing.fakes.tei import rerank_score, sparse_vector
from tests.specs import SPECS

SPEC = SPECS / "tei.openapi.json"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "local_rag.py"
NO_WAIT = asyncllm.RetryConfig(max_retries=3, initial_delay=0.0, max_delay=0.0)


PROTOCOLS = ("tei",)


def make_client(server: FakeServer) -> TEI:
    return asyncllm.TEI(base_url=server.url(), retry=NO_WAIT)


def bodies(server: FakeServer, path: str) -> list[Any]:
    return [r.json for r in server.requests if r.path == path]


def count(server: FakeServer, path: str) -> int:
    return sum(1 for r in server.requests if r.path == path)


# -- configuration ------------------------------------------------------------------------------


def test_base_url_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEI_BASE_URL", raising=False)
    with pytest.raises(asyncllm.ConfigurationError, match="TEI_BASE_URL"):
        asyncllm.TEI()


def test_batch_size_override_is_checked() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.TEI(base_url="http://127.0.0.1:1", max_client_batch_size=0)


async def test_env_and_token(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEI_BASE_URL", server.url())
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    async with asyncllm.TEI() as client:
        await client.embed("x")
        assert "hf_secret" not in repr(client)
    assert server.requests[-1].headers["Authorization"] == "Bearer hf_secret"


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("embed", ([],), {}),
        ("embed", ([1, 2],), {}),
        ("embed", ("x",), {"normalize": "yes"}),
        ("embed", ("x",), {"dimensions": 0}),
        ("embed", ("x",), {"prompt_name": ""}),
        ("rerank", ("", ["a"]), {}),
        ("rerank", ("q", "a"), {}),
        ("rerank", ("q", []), {}),
        ("predict", (["a", ("b",)],), {}),
        ("predict", ([],), {}),
        ("tokenize", (None,), {}),
    ],
)
async def test_bad_arguments_are_refused_before_sending(
    client: TEI, server: FakeServer, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await getattr(client, method)(*args, **kwargs)
    assert server.request_count == 0


# -- /embed -----------------------------------------------------------------------------------


async def test_embed(client: TEI, server: FakeServer) -> None:
    r = await client.embed(["alpha", "beta"], prompt_name="query")
    assert r.vectors == [_common.vector("alpha"), _common.vector("beta")]
    assert bodies(server, "/embed") == [
        {"inputs": ["alpha", "beta"], "normalize": True, "truncate": False, "prompt_name": "query"}
    ]
    assert r.request_id == server.request_ids[-1]


async def test_embed_one_string_and_options(client: TEI, server: FakeServer) -> None:
    r = await client.embed("solo", normalize=False, truncate=True, dimensions=4)
    assert r.vectors == [[2 * v for v in _common.vector("solo", 4)]]
    assert bodies(server, "/embed") == [
        {"inputs": ["solo"], "normalize": False, "truncate": True, "dimensions": 4}
    ]
    assert count(server, "/info") == 0  # one input never needs the batch size


async def test_embed_batches_in_order_under_the_concurrency_limit(server: FakeServer) -> None:
    server.state["tei_latency"] = 0.02  # chunks finish out of order
    texts = [f"text number {i}" for i in range(22)]
    async with asyncllm.TEI(
        base_url=server.url(), retry=NO_WAIT, max_concurrent_requests=2
    ) as client:
        r = await client.embed(texts, priority=asyncllm.Priority.LOW)
        stats = client.dispatcher.stats()[client.name]
        records = client.dispatcher.tracker.all(r.request_id)
    assert r.vectors == [_common.vector(t) for t in texts]
    sent = bodies(server, "/embed")
    assert [len(b["inputs"]) for b in sent] == [4, 4, 4, 4, 4, 2]
    assert sorted(t for b in sent for t in b["inputs"]) == sorted(texts)
    assert count(server, "/info") == 1
    assert server.max_in_flight == 2  # concurrent, and never more than the limit
    assert stats.succeeded == 7  # /info + 6 chunks, each its own dispatcher job
    # Every chunk carries the call's request ID and priority.
    assert set(list(server.request_ids)[1:]) == {r.request_id}
    embeds = [rec for rec in records if rec.operation == "embed"]
    assert len(embeds) == 6
    assert {rec.priority for rec in embeds} == {int(asyncllm.Priority.LOW)}


async def test_batch_size_is_read_once(client: TEI, server: FakeServer) -> None:
    texts = [str(i) for i in range(9)]
    results = await asyncio.gather(*(client.embed(texts) for _ in range(3)))
    await client.embed(texts)
    assert all(r.vectors == [_common.vector(t) for t in texts] for r in results)
    assert count(server, "/info") == 1
    assert client.max_client_batch_size == 4


async def test_batch_size_from_constructor(server: FakeServer) -> None:
    async with asyncllm.TEI(base_url=server.url(), max_client_batch_size=3) as client:
        r = await client.embed([str(i) for i in range(7)])
    assert len(r.vectors) == 7
    assert [len(b["inputs"]) for b in bodies(server, "/embed")] == [3, 3, 1]
    assert count(server, "/info") == 0


async def test_failing_chunk_fails_the_call_and_cancels_the_rest(server: FakeServer) -> None:
    async with asyncllm.TEI(
        base_url=server.url(), retry=NO_WAIT, max_concurrent_requests=1, max_client_batch_size=2
    ) as client:
        server.fail_next(1, status=424)
        with pytest.raises(asyncllm.APIStatusError) as info:
            await client.embed(["a", "b", "c", "d", "e", "f"])
        stats = client.dispatcher.stats()[client.name]
    assert info.value.status_code == 424
    assert info.value.error_type == "Backend"
    assert "chunk 1 of 3 (inputs 0..1)" in str(info.value)
    assert count(server, "/embed") == 1  # the queued chunks never went out
    assert stats.cancelled == 2


async def test_later_chunk_failure_names_that_chunk(server: FakeServer) -> None:
    async def flaky(request: Any) -> Any:
        from aiohttp import web

        inputs = request["json"]["inputs"]
        if "c" in inputs:
            return web.json_response(
                {"error": "Inference failed", "error_type": "Backend"}, status=424
            )
        return web.json_response([_common.vector(t) for t in inputs])

    server.overrides["/embed"] = flaky
    async with asyncllm.TEI(base_url=server.url(), retry=NO_WAIT, max_client_batch_size=2) as c:
        with pytest.raises(asyncllm.APIStatusError, match=r"chunk 2 of 3 \(inputs 2..3\)"):
            await c.embed(["a", "b", "c", "d", "e"])


async def test_too_many_inputs_is_413_not_retried(server: FakeServer) -> None:
    async with asyncllm.TEI(base_url=server.url(), retry=NO_WAIT, max_client_batch_size=10) as c:
        with pytest.raises(asyncllm.RequestTooLargeError) as info:
            await c.embed([str(i) for i in range(6)])
    assert info.value.status_code == 413
    assert info.value.error_type == "Validation"
    assert "maximum allowed batch size 4" in info.value.message
    assert server.request_count == 1


async def test_overloaded_429_is_retried(client: TEI, server: FakeServer) -> None:
    server.fail_next(2, status=429)
    r = await client.embed("busy")
    assert r.vectors == [_common.vector("busy")]
    assert server.request_count == 3
    assert server.requests[0].path == "/embed"


async def test_overloaded_at_another_status_is_retried(client: TEI, server: FakeServer) -> None:
    server.fail_next(1, status=424, body={"error": "queue full", "error_type": "Overloaded"})
    await client.embed("busy")
    assert server.request_count == 2


async def test_empty_and_tokenizer_errors_are_not_retried(client: TEI, server: FakeServer) -> None:
    server.fail_next(1, status=422)
    with pytest.raises(asyncllm.UnprocessableEntityError) as info:
        await client.embed("x")
    assert info.value.error_type == "Tokenizer"
    assert server.request_count == 1


async def test_malformed_answer_is_typed(client: TEI, server: FakeServer) -> None:
    async def short(request: Any) -> Any:
        from aiohttp import web

        return web.json_response([[0.1]])

    server.overrides["/embed"] = short
    with pytest.raises(asyncllm.ResponseValidationError):
        await client.embed(["a", "b"])


# -- other routes ------------------------------------------------------------------------------


async def test_embed_sparse(client: TEI, server: FakeServer) -> None:
    r = await client.embed_sparse(["hello world", "x"], prompt_name="doc")
    assert [[v.model_dump() for v in row] for row in r.vectors] == [
        sparse_vector("hello world"),
        sparse_vector("x"),
    ]
    assert bodies(server, "/embed_sparse") == [
        {"inputs": ["hello world", "x"], "truncate": False, "prompt_name": "doc"}
    ]


async def test_embed_all(client: TEI) -> None:
    r = await client.embed_all([f"w{i} v" for i in range(6)])
    assert len(r.vectors) == 6
    assert r.vectors[5] == [_common.vector("w5"), _common.vector(" v")]


async def test_rerank_is_sorted_and_indexes_the_texts(client: TEI, server: FakeServer) -> None:
    texts = [f"document {i}" for i in range(7)]
    ranks = await client.rerank("query", texts, return_text=True)
    assert len(bodies(server, "/rerank")) == 2  # 7 texts, 4 per request
    assert sorted(r.index for r in ranks) == list(range(7))
    assert [r.score for r in ranks] == sorted((r.score for r in ranks), reverse=True)
    for r in ranks:
        assert r.text == texts[r.index]
        assert r.score == pytest.approx(rerank_score("query", texts[r.index]))
    body = bodies(server, "/rerank")[0]
    assert body == {
        "query": "query",
        "texts": texts[:4],
        "return_text": True,
        "raw_scores": False,
        "truncate": False,
    }


async def test_rerank_raw_scores(client: TEI) -> None:
    ranks = await client.rerank("q", ["a", "b"], raw_scores=True)
    assert ranks[0].text is None
    assert {r.index: r.score for r in ranks} == pytest.approx(
        {0: rerank_score("q", "a", raw=True), 1: rerank_score("q", "b", raw=True)}
    )


async def test_predict(client: TEI, server: FakeServer) -> None:
    one = await client.predict("I love it")
    assert len(one) == 1 and {p.label for p in one[0]} == {"negative", "positive"}
    assert one[0][0].score >= one[0][1].score
    assert sum(p.score for p in one[0]) == pytest.approx(1.0)
    many = await client.predict(["a", ("premise", "hypothesis"), "c", "d", "e"])
    assert len(many) == 5
    assert many[0] == one[0] or many[0] != one[0]  # shape only; values checked below
    assert bodies(server, "/predict")[0] == {
        "inputs": [["I love it"]],
        "raw_scores": False,
        "truncate": False,
    }
    assert bodies(server, "/predict")[1]["inputs"][1] == ["premise", "hypothesis"]
    alone = await client.predict(("premise", "hypothesis"))
    assert alone[0] == many[1]


async def test_tokenize(client: TEI, server: FakeServer) -> None:
    tokens = await client.tokenize(["to ken", "x"])
    assert [t.text for t in tokens[0]] == ["[CLS]", "to", " ken", "[SEP]"]
    assert tokens[0][0].special and tokens[0][0].start is None
    assert (tokens[0][2].start, tokens[0][2].stop) == (2, 6)
    plain = await client.tokenize("x", add_special_tokens=False)
    assert [t.text for t in plain[0]] == ["x"]
    assert bodies(server, "/tokenize")[-1] == {"inputs": ["x"], "add_special_tokens": False}


async def test_info_and_health(client: TEI, server: FakeServer) -> None:
    info = await client.info()
    assert (info.model_id, info.max_client_batch_size) == ("fake/tei-model", 4)
    assert info.model_type == {"embedding": {"pooling": "cls"}}
    assert await client.health() is True
    server.state["tei_unhealthy"] = True
    assert await client.health() is False
    assert server.request_count == 3  # the 503 was not retried


async def test_openai_embeddings(client: TEI, server: FakeServer) -> None:
    r = await client.openai_embed(["a", "b"], model="m", dimensions=4)
    assert r.vectors == [_common.vector("a", 4), _common.vector("b", 4)]
    assert r.usage is not None and r.usage.total_tokens == 2
    assert bodies(server, "/v1/embeddings") == [
        {"input": ["a", "b"], "encoding_format": "float", "model": "m", "dimensions": 4}
    ]


async def test_openai_embeddings_error_body(client: TEI, server: FakeServer) -> None:
    with pytest.raises(asyncllm.RequestTooLargeError) as info:
        await client.openai_embed([str(i) for i in range(5)])
    assert info.value.error_type == "Validation"
    assert "batch size 5" in info.value.message


# -- the fake's root routes, as TEI's router serves an embedding model ----------------------------


async def raw(server: FakeServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON answer or None) of one request straight to the fake."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url(path), json=body) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text else None


@pytest.mark.parametrize("path", ["/", "/invocations"])
async def test_root_and_invocations_embed(server: FakeServer, path: str) -> None:
    body = {"inputs": ["alpha", "beta"], "normalize": False, "dimensions": 4}
    assert await raw(server, "POST", path, body) == await raw(server, "POST", "/embed", body)
    status, vectors = await raw(server, "POST", path, {"inputs": "alpha"})
    assert (status, vectors) == (200, [_common.vector("alpha")])
    status, error = await raw(server, "POST", path, {"inputs": [str(i) for i in range(5)]})
    assert status == 413
    assert error == {
        "error": "batch size 5 > maximum allowed batch size 4",
        "error_type": "Validation",
    }


async def test_embeddings_without_v1_is_openai_embeddings(server: FakeServer) -> None:
    body = {"input": ["a", "b"], "model": "m"}
    status, answer = await raw(server, "POST", "/embeddings", body)
    assert status == 200
    assert answer == (await raw(server, "POST", "/v1/embeddings", body))[1]
    assert [d["embedding"] for d in answer["data"]] == [_common.vector("a"), _common.vector("b")]


async def test_root_and_ping_are_health(server: FakeServer) -> None:
    for path in ("/", "/ping", "/health"):
        assert await raw(server, "GET", path) == (200, None)
    server.state["tei_unhealthy"] = True
    assert await raw(server, "GET", "/ping") == (
        503,
        {"error": "unhealthy", "error_type": "Unhealthy"},
    )


# -- what we send follows the published schema ---------------------------------------------------


def _nullable_to_anyof(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` in JSON Schema terms (SOURCES.md: some nodes have no type)."""
    if isinstance(node, list):
        return [_nullable_to_anyof(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_to_anyof(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def request_validator(path: str) -> jsonschema.Draft202012Validator:
    document = json.loads(SPEC.read_text())
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = _nullable_to_anyof(copy.deepcopy(document["components"]))
    return jsonschema.Draft202012Validator({"$ref": ref["$ref"], "components": components})


def test_schema_validators_can_fail() -> None:
    assert list(request_validator("/embed").iter_errors({"normalize": True}))
    assert list(request_validator("/embed").iter_errors({"inputs": [{"x": 1}]}))
    assert list(request_validator("/rerank").iter_errors({"query": "q"}))
    assert list(request_validator("/rerank").iter_errors({"query": "q", "texts": "a"}))
    assert list(request_validator("/predict").iter_errors({"inputs": [["a", "b", "c"]]}))


async def test_bodies_follow_the_openapi_schema(client: TEI, server: FakeServer) -> None:
    await client.embed("one")
    await client.embed(["a", "b", "c", "d", "e"], normalize=False, truncate=True, prompt_name="q")
    await client.embed(["x"], dimensions=3)
    await client.rerank("q", ["a", "b", "c", "d", "e"], return_text=True, raw_scores=True)
    await client.embed_sparse(["s"], prompt_name="p")
    await client.embed_all("t")
    await client.predict(["a", ("b", "c")])
    await client.tokenize("z", prompt_name="p")
    await client.openai_embed("o", model="m")
    checked = 0
    for path in (
        "/embed",
        "/rerank",
        "/embed_sparse",
        "/embed_all",
        "/predict",
        "/tokenize",
        "/v1/embeddings",
    ):
        validator = request_validator(path)
        for body in bodies(server, path):
            validator.validate(body)
            checked += 1
    assert checked == 11


async def test_cancelling_a_running_and_a_queued_call_together_frees_the_lane() -> None:
    """Regression for Lane.fill granting a slot to a queued call whose future was cancelled
    (what cancelling the sibling chunks of a failed batch does)."""
    from asyncllm.testing import MockResponse, MockTransport

    gate = asyncio.Event()

    async def handler(request: Any) -> MockResponse:
        await gate.wait()
        return MockResponse(json=[[0.0]])

    client = asyncllm.TEI(
        base_url="http://127.0.0.1:9", transport=MockTransport(handler), max_concurrent_requests=1
    )
    running = asyncio.ensure_future(client.embed("a"))
    queued = asyncio.ensure_future(client.embed("b"))
    await asyncio.sleep(0.01)
    running.cancel()
    queued.cancel()
    results = await asyncio.gather(running, queued, return_exceptions=True)
    stats = client.dispatcher.stats()[client.name]
    await client.aclose()
    assert [type(r) for r in results] == [asyncio.CancelledError, asyncio.CancelledError]
    assert (stats.in_flight, stats.queued) == (0, 0)


async def test_local_rag_example_runs_on_embedded_servers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    for name in ("TEI_BASE_URL", "TEI_RERANK_BASE_URL", "TGI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("local_rag_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.main()
    out = capsys.readouterr().out
    assert "after reranking:" in out
    assert "answer (TGI):\necho: Context:" in out


async def test_misspelt_keyword_is_a_type_error_before_info(server: FakeServer) -> None:
    async with asyncllm.TEI(base_url=server.url()) as client:
        with pytest.raises(TypeError, match="dedline"):
            await client.embed(["a", "b", "c"], dedline=1.0)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="extra_body"):
            await client.health(extra_body={})  # type: ignore[call-arg]
    assert server.request_count == 0


async def test_with_options_clients_share_the_batch_size(server: FakeServer) -> None:
    async with asyncllm.TEI(base_url=server.url(), retry=NO_WAIT) as client:
        await client.with_options(timeout=5).embed([str(i) for i in range(5)])
        await client.embed([str(i) for i in range(5)])
        assert client.max_client_batch_size == 4
    assert count(server, "/info") == 1


async def test_the_info_lookup_carries_the_call_s_extra_headers_and_query() -> None:
    from asyncllm.testing import MockResponse, MockTransport

    seen: list[Any] = []

    def handler(request: Any) -> MockResponse:
        seen.append(request)
        if request.url.endswith("/info"):
            info = {"model_id": "m", "model_dtype": "float16", "model_type": {"embedding": {}}}
            info |= {"max_concurrent_requests": 4, "max_input_length": 512, "version": "1"}
            info |= {"max_batch_tokens": 16384, "max_client_batch_size": 1}
            info |= {"auto_truncate": False, "tokenization_workers": 1}
            return MockResponse(200, json=info)
        return MockResponse(200, json=[[0.5]])

    client = TEI(base_url="http://tei.invalid", transport=MockTransport(handler))
    await client.embed(["a", "b"], extra_query={"k": "v"}, extra_headers={"X-Gw": "1"})
    assert [r.url.rsplit("/", 1)[1] for r in seen] == ["info", "embed", "embed"]
    assert all(r.params == {"k": "v"} and r.headers["X-Gw"] == "1" for r in seen)
    await client.aclose()
