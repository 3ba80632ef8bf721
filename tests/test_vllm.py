"""asyncllm.VLLM: the shared chat contract, vLLM's root routes and its sampling extras."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel

import asyncllm
from asyncllm.backends.vllm import VLLM
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from tests.chat_contract import ChatContract, wire_table

NO_WAIT = asyncllm.RetryConfig(max_retries=3, initial_delay=0.0, max_delay=0.0)
USER = [{"role": "user", "content": "hello there"}]


class TestVLLMContract(ChatContract):
    protocol = "vllm"
    structured = True
    open_maps_refused = False  # structured_outputs takes the schema as it is, open maps too
    refusal_prompt = None  # vLLM has no refusals
    reasoning_options = {"chat_template_kwargs": {"enable_thinking": True}}
    length_options = {"max_tokens": 3}
    signed_history = False
    wire = wire_table(("service_tier", "store", "metadata", "prompt_cache_key"))

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.VLLM(base_url=server.url("/v1"), **kwargs)


PROTOCOLS = ("vllm",)


def make_client(server: FakeServer) -> VLLM:
    return VLLM(base_url=server.url("/v1"), retry=NO_WAIT)


class Answer(BaseModel):
    city: str
    sunny: bool


# -- configuration -------------------------------------------------------------------------------


def test_env_vars_and_root_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_BASE_URL", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    plain = VLLM()
    assert (plain.base_url, plain.root_url) == ("http://localhost:8000/v1", "http://localhost:8000")
    assert "Authorization" not in plain._headers
    monkeypatch.setenv("VLLM_BASE_URL", "http://gpu-box:9000/v1/")
    monkeypatch.setenv("VLLM_API_KEY", "token-abc")
    client = VLLM()
    assert (client.base_url, client.root_url) == ("http://gpu-box:9000/v1", "http://gpu-box:9000")
    assert client._headers["Authorization"] == "Bearer token-abc"
    assert "token-abc" not in repr(client)
    assert VLLM(base_url="http://proxy/vllm").root_url == "http://proxy/vllm"
    assert VLLM(base_url="http://a/v1", root_url="http://b:1/").root_url == "http://b:1"


async def test_root_routes_do_not_go_under_v1() -> None:
    urls: list[str] = []

    def handler(request: Any) -> MockResponse:
        urls.append(request.url)
        return MockResponse(200, json={"version": "0.9.0"})

    client = VLLM(base_url="http://vllm.test/v1", transport=MockTransport(handler))
    try:
        assert await client.version() == "0.9.0"
    finally:
        await client.aclose()
    assert urls == ["http://vllm.test/version"]


# -- completions -------------------------------------------------------------------------------


async def test_completions(client: VLLM, server: FakeServer) -> None:
    r = await client.completions("once upon a time", model="fake-chat", max_tokens=16, seed=3)
    assert r.text == "echo: once upon a time"
    assert r.finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 4
    assert r.model == "fake-chat"
    assert r.request_id == server.request_ids[-1]
    assert r.server_request_id and r.server_request_id.startswith("srv-cmpl-")
    sent = server.requests[-1]
    assert sent.path == "/v1/completions"
    assert sent.json == {
        "model": "fake-chat",
        "prompt": "once upon a time",
        "max_tokens": 16,
        "seed": 3,
    }


async def test_completions_many_prompts_and_n(client: VLLM) -> None:
    r = await client.completions(["a b", "c"], model="fake-chat", n=2)
    assert [c.text for c in r.choices] == ["echo: a b", "echo: a b", "echo: c", "echo: c"]
    assert [c.index for c in r.choices] == [0, 1, 2, 3]


async def test_completions_bad_arguments(client: VLLM, server: FakeServer) -> None:
    cases: list[dict[str, Any]] = [
        {"prompt": 5},
        {"prompt": []},
        {"prompt": "x", "temperature": 3},
        {"prompt": "x", "top_k": -2},
        {"prompt": "x", "min_p": 1.5},
        {"prompt": "x", "repetition_penalty": 0},
        {"prompt": "x", "structured_outputs": {"regex": "a+", "choice": ["a"]}},
        {"prompt": "x", "structured_outputs": {"json": "{not json"}},
        {"prompt": "x", "structured_outputs": {"choice": []}},
        {"prompt": "x", "structured_outputs": {}},
        {"prompt": "x", "structured_outputs": {"jsn": {}}},
        {"prompt": "x", "structured_outputs": {"regex": ""}},
        {"prompt": "x", "structured_outputs": "a+"},
    ]
    for kwargs in cases:
        with pytest.raises(asyncllm.ConfigurationError):
            await client.completions(model="fake-chat", **kwargs)
    assert server.request_count == 0


# -- sampling extras reach the wire -------------------------------------------------------------


async def test_chat_sampling_extras_are_top_level_fields(client: VLLM, server: FakeServer) -> None:
    r = await client.chat(
        USER,
        model="fake-chat",
        structured_outputs={"json": Answer},
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        chat_template_kwargs={"enable_thinking": False},
    )
    assert Answer.model_validate_json(r.text) == Answer(city="test", sunny=True)
    assert r.parsed is None  # structured_outputs constrains; response_format parses
    body = server.requests[-1].json
    assert body["structured_outputs"] == {"json": Answer.model_json_schema()}
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (40, 0.05, 1.1)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "extra_body" not in body and "response_format" not in body
    assert server.state["vllm"]["ignored"] == []  # every field sent is one vLLM reads


async def test_plain_chat_sends_no_extras(client: VLLM, server: FakeServer) -> None:
    await client.chat(USER, model="fake-chat")
    assert server.requests[-1].json == {"model": "fake-chat", "messages": USER}


async def test_stream_chat_sampling_extras(client: VLLM, server: FakeServer) -> None:
    async with client.stream_chat(
        USER, model="fake-chat", structured_outputs={"choice": ["yes", "no"]}, top_k=5
    ) as stream:
        text = "".join([chunk.delta async for chunk in stream])
    assert text == "yes"  # the fake answers the first choice
    body = server.requests[-1].json
    assert body["stream"] is True
    assert body["structured_outputs"] == {"choice": ["yes", "no"]} and body["top_k"] == 5


async def test_completions_sampling_extras(client: VLLM, server: FakeServer) -> None:
    await client.completions(
        "x",
        model="fake-chat",
        structured_outputs={"regex": r"\d+"},
        min_p=0.1,
        extra_body={"min_p": 0.2, "ignore_eos": True},
    )
    body = server.requests[-1].json
    assert body["structured_outputs"] == {"regex": r"\d+"}
    assert body["min_p"] == 0.2 and body["ignore_eos"] is True  # extra_body has the last word


async def test_structured_outputs_forms(client: VLLM, server: FakeServer) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    r = await client.chat(USER, model="fake-chat", structured_outputs={"json": schema})
    assert server.requests[-1].json["structured_outputs"] == {"json": schema}
    assert r.text == '{"a": 1}'
    r = await client.chat(
        USER, model="fake-chat", structured_outputs={"json": '{"type": "string"}'}
    )
    assert server.requests[-1].json["structured_outputs"] == {"json": '{"type": "string"}'}
    assert r.text == '"test"'
    r = await client.chat(USER, model="fake-chat", structured_outputs={"regex": r"[A-Z]{2}-\d+"})
    assert re.fullmatch(r"[A-Z]{2}-\d+", r.text)
    grammar = 'root ::= "yes" | "no"'
    await client.chat(USER, model="fake-chat", structured_outputs={"grammar": grammar})
    assert server.requests[-1].json["structured_outputs"] == {"grammar": grammar}
    sent = server.request_count
    with pytest.raises(asyncllm.ConfigurationError, match="exactly one"):
        client.stream_chat(
            USER, model="fake-chat", structured_outputs={"json": schema, "regex": "a"}
        )
    with pytest.raises(asyncllm.ConfigurationError):
        await client.chat(USER, model="fake-chat", structured_outputs={"json": 42})
    with pytest.raises(asyncllm.ConfigurationError, match="response_format or structured_outputs"):
        await client.chat(
            USER, model="fake-chat", response_format=Answer, structured_outputs={"regex": "a"}
        )
    assert server.request_count == sent


@pytest.mark.parametrize(
    "field", ["guided_json", "guided_regex", "guided_choice", "guided_grammar"]
)
async def test_removed_guided_fields_are_refused(
    client: VLLM, server: FakeServer, field: str
) -> None:
    """vLLM 0.12 removed guided_*: it ignores them, so the output would not be constrained."""
    value: Any = ["a"] if field == "guided_choice" else "a+"
    with pytest.raises(asyncllm.ConfigurationError, match="structured_outputs") as info:
        await client.chat(USER, model="fake-chat", **{field: value})
    assert field in str(info.value) and "0.12" in str(info.value)
    with pytest.raises(asyncllm.ConfigurationError, match="structured_outputs"):
        client.stream_chat(USER, model="fake-chat", **{field: value})
    with pytest.raises(asyncllm.ConfigurationError, match="structured_outputs"):
        await client.completions("x", model="fake-chat", **{field: value})
    with pytest.raises(asyncllm.ConfigurationError, match="structured_outputs"):
        await client.chat(USER, model="fake-chat", extra_body={field: value})
    assert server.request_count == 0


async def test_the_fake_ignores_guided_fields_as_vllm_does(server: FakeServer) -> None:
    """What the client protects against: the server answers unconstrained, and only logs."""
    body = {"model": "fake-chat", "messages": USER, "guided_choice": ["yes", "no"]}
    url = server.url("/v1/chat/completions")
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["choices"][0]["message"]["content"] == "echo: hello there"
    assert server.state["vllm"]["ignored"] == [["guided_choice"]]


async def test_response_format_is_sent_as_structured_outputs(
    client: VLLM, server: FakeServer
) -> None:
    r = await client.chat(USER, model="fake-chat", response_format=Answer)
    assert r.parsed == Answer(city="test", sunny=True)
    body = server.requests[-1].json
    assert body["structured_outputs"] == {"json": Answer.model_json_schema()}
    assert "response_format" not in body
    async with client.stream_chat(USER, model="fake-chat", response_format=Answer) as stream:
        final = await stream.final()
    assert final.parsed == r.parsed and final.text == r.text
    await client.chat(USER, model="fake-chat", response_format={"type": "json_object"})
    assert server.requests[-1].json["structured_outputs"] == {"json_object": True}


async def test_reasoning_text_and_deltas(client: VLLM, server: FakeServer) -> None:
    kwargs = {"chat_template_kwargs": {"enable_thinking": True}}
    r = await client.chat(USER, model="fake-chat", **kwargs)
    assert r.reasoning == "thinking about: hello there" and r.text == "echo: hello there"
    assert server.requests[-1].json["chat_template_kwargs"] == {"enable_thinking": True}
    async with client.stream_chat(USER, model="fake-chat", **kwargs) as stream:
        pieces = [chunk.reasoning async for chunk in stream if chunk.reasoning]
        final = await stream.final()
    assert len(pieces) > 1 and "".join(pieces) == r.reasoning
    assert (final.reasoning, final.text) == (r.reasoning, r.text)
    plain = await client.chat(USER, model="fake-chat")
    assert plain.reasoning is None


async def test_answer_cut_at_max_tokens(client: VLLM) -> None:
    r = await client.chat(USER, model="fake-chat", max_tokens=2)
    assert (r.text, r.finish_reason) == ("echo: hello", "length")
    with pytest.raises(asyncllm.LengthFinishReasonError) as info:
        await client.chat(USER, model="fake-chat", response_format=Answer, max_tokens=2)
    assert info.value.text == '{"city": "test",'
    thinking = {"chat_template_kwargs": {"enable_thinking": True}}
    r = await client.chat(USER, model="fake-chat", max_tokens=2, **thinking)
    assert (r.reasoning, r.text, r.finish_reason) == ("thinking about:", "", "length")


# -- vLLM's own routes ------------------------------------------------------------------------------


async def test_tokenize_and_detokenize_round_trip(client: VLLM, server: FakeServer) -> None:
    t = await client.tokenize("the cat sat on the mat", model="fake-chat", return_token_strs=True)
    assert t.count == 6 == len(t.tokens)
    assert t.max_model_len == 4096
    assert t.token_strs == ["the", " cat", " sat", " on", " the", " mat"]
    assert server.requests[-1].path == "/tokenize"
    assert server.requests[-1].json == {
        "model": "fake-chat",
        "prompt": "the cat sat on the mat",
        "return_token_strs": True,
    }
    assert await client.detokenize(t.tokens) == "the cat sat on the mat"
    assert server.requests[-1].path == "/detokenize"
    assert server.requests[-1].json == {"tokens": t.tokens}


async def test_tokenize_messages(client: VLLM, server: FakeServer) -> None:
    t = await client.tokenize(messages=USER, add_generation_prompt=True, add_special_tokens=False)
    assert t.count == 2
    body = server.requests[-1].json
    assert body["messages"] == USER
    assert body["add_generation_prompt"] is True and body["add_special_tokens"] is False
    with pytest.raises(asyncllm.ConfigurationError):
        await client.tokenize()
    with pytest.raises(asyncllm.ConfigurationError):
        await client.tokenize("x", messages=USER)
    with pytest.raises(asyncllm.ConfigurationError):
        await client.detokenize([1, -2])


async def test_detokenize_unknown_id_is_bad_request(client: VLLM) -> None:
    with pytest.raises(asyncllm.BadRequestError, match="out of vocabulary"):
        await client.detokenize([999_999])


async def test_health_and_version(client: VLLM, server: FakeServer) -> None:
    assert await client.health() is True
    assert await client.version() == "0.0.0-fake"
    assert [r.path for r in server.requests] == ["/health", "/version"]


async def test_unhealthy_server_is_false_and_not_retried(server: FakeServer) -> None:
    client = VLLM(base_url=server.url("/v1"))
    server.fail_next(1, status=503)
    try:
        assert await client.health() is False
        assert server.request_count == 1
        assert await client.health() is True
        server.fail_next(1, status=401)
        with pytest.raises(asyncllm.AuthenticationError):
            await client.health()
        server.fail_next(1, status=400)
        with pytest.raises(asyncllm.BadRequestError) as info:
            await client.version()
    finally:
        await client.aclose()
    assert info.value.message == "injected 400"  # vLLM's {"error": {"message": ...}} body


async def test_rerank(client: VLLM, server: FakeServer) -> None:
    docs = ["paris is in france", "the cat sat", "capital of france is paris"]
    r = await client.rerank("capital of france", docs, model="fake-rerank", top_n=2)
    assert [x.index for x in r.results] == [2, 0]
    assert r.results[0].relevance_score == 1.0
    assert r.results[0].document is not None and r.results[0].document.text == docs[2]
    assert r.usage is not None and r.usage.total_tokens
    sent = server.requests[-1]
    assert sent.path == "/rerank"
    assert sent.json == {
        "query": "capital of france",
        "documents": docs,
        "model": "fake-rerank",
        "top_n": 2,
    }
    with pytest.raises(asyncllm.ConfigurationError):
        await client.rerank("q", [])


async def test_rerank_also_served_under_v1(server: FakeServer) -> None:
    client = VLLM(base_url=server.url("/v1"), root_url=server.url("/v1"))
    try:
        r = await client.rerank("a", ["b", "a"])
    finally:
        await client.aclose()
    assert server.requests[-1].path == "/v1/rerank"
    assert [x.index for x in r.results] == [1, 0]


async def test_rerank_index_out_of_range_is_validation_error(server: FakeServer) -> None:
    async def bad(request: web.Request) -> web.StreamResponse:
        return web.json_response({"results": [{"index": 7, "relevance_score": 0.5}]})

    server.overrides["/rerank"] = bad
    client = VLLM(base_url=server.url("/v1"))
    try:
        with pytest.raises(asyncllm.ResponseValidationError):
            await client.rerank("q", ["a"])
    finally:
        await client.aclose()


async def test_score(client: VLLM, server: FakeServer) -> None:
    one_to_many = await client.score("red apple", ["a red apple", "a green pear", "apple"])
    assert one_to_many.scores == [1.0, 0.0, 0.5]
    assert [d.index for d in one_to_many.data] == [0, 1, 2]
    assert server.requests[-1].path == "/score"
    assert server.requests[-1].json == {
        "text_1": "red apple",
        "text_2": ["a red apple", "a green pear", "apple"],
    }
    pairwise = await client.score(["x y", "z"], ["x", "z"], model="fake-score")
    assert pairwise.scores == [0.5, 1.0] and pairwise.model == "fake-score"
    single = await client.score("same", "same")
    assert single.scores == [1.0]
    with pytest.raises(asyncllm.ConfigurationError):
        await client.score(["a", "b"], ["c", "d", "e"])
    with pytest.raises(asyncllm.ConfigurationError):
        await client.score("a", [])


async def test_score_count_mismatch_is_validation_error(server: FakeServer) -> None:
    async def short(request: web.Request) -> web.StreamResponse:
        return web.json_response({"model": "m", "data": [{"index": 0, "score": 0.1}]})

    server.overrides["/score"] = short
    client = VLLM(base_url=server.url("/v1"))
    try:
        with pytest.raises(asyncllm.ResponseValidationError, match="expected 2 scores"):
            await client.score("q", ["a", "b"])
    finally:
        await client.aclose()


async def test_rerank_and_score_read_the_server_json(server: FakeServer) -> None:
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    reranked = {
        "id": "r1",
        "model": "m",
        "usage": usage,
        "request_id": "theirs",
        "results": [
            {"index": 0, "relevance_score": 0.1, "document": {"text": "a"}},
            {"index": 1, "relevance_score": 0.9},
        ],
    }
    scored = {"data": [{"index": 1, "score": 0.2}, {"index": 0, "score": 0.7}], "usage": usage}

    async def rerank(request: web.Request) -> web.StreamResponse:
        return web.json_response(reranked)

    async def score(request: web.Request) -> web.StreamResponse:
        return web.json_response({**scored, "scores": "not on the wire"})

    server.overrides["/rerank"] = rerank
    server.overrides["/score"] = score
    client = VLLM(base_url=server.url("/v1"))
    try:
        r = await client.rerank("q", ["a", "b"])
        s = await client.score("q", ["a", "b"])
    finally:
        await client.aclose()
    assert (r.id, r.model, r.raw) == ("r1", "m", reranked)
    assert r.request_id == server.request_ids[-2] and r.usage is not None
    assert [x.index for x in r.results] == [1, 0] and r.results[1].document is not None
    assert s.scores == [0.7, 0.2] and [d.index for d in s.data] == [0, 1]
    assert s.model is None and s.usage == asyncllm.Usage(**usage)
    assert s.request_id == server.request_ids[-1] and s.raw["data"] == scored["data"]


async def test_embeddings_and_models_still_openai(client: VLLM) -> None:
    e = await client.embed(["a", "b"], model="fake-embed")
    assert len(e.vectors) == 2
    assert [m.id for m in await client.models()] == ["fake-chat", "fake-embed"]


# -- call options -----------------------------------------------------------------------------------


async def test_misspelt_option_is_type_error_before_sending(
    client: VLLM, server: FakeServer
) -> None:
    with pytest.raises(TypeError, match="top_kk"):
        await client.chat(USER, model="fake-chat", top_kk=4)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="structured_output"):
        client.stream_chat(USER, model="fake-chat", structured_output={})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="echoo"):
        await client.completions("x", model="fake-chat", echoo=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="extra_bdy"):
        await client.tokenize("x", extra_bdy={})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        VLLM("http://localhost:8000/v1")  # type: ignore[call-arg]
    assert server.request_count == 0


async def test_root_routes_take_call_options(client: VLLM, server: FakeServer) -> None:
    await client.tokenize(
        "a b",
        extra_headers={"X-Tenant": "t1"},
        extra_query={"trace": "1"},
        extra_body={"add_special_tokens": False},
        timeout=5,
        max_retries=0,
    )
    sent = server.requests[-1]
    assert sent.headers["X-Tenant"] == "t1" and sent.query == {"trace": "1"}
    assert sent.json == {"prompt": "a b", "add_special_tokens": False}
    await client.score("a", ["a"], extra_body={"truncate_prompt_tokens": 8})
    assert server.requests[-1].json["truncate_prompt_tokens"] == 8
    assert await client.health(extra_headers={"X-Probe": "1"}) is True
    assert server.requests[-1].headers["X-Probe"] == "1"
    assert await client.version(extra_query={"v": "2"}) == "0.0.0-fake"
    assert server.requests[-1].query == {"v": "2"}


async def test_with_options_client_reaches_the_root_routes(
    client: VLLM, server: FakeServer
) -> None:
    fast = client.with_options(timeout=5, priority=asyncllm.Priority.HIGH)
    tokens = (await fast.tokenize("the cat")).tokens
    assert await fast.detokenize(tokens) == "the cat"
    assert server.requests[-1].path == "/detokenize"
    r = await fast.chat(USER, model="fake-chat", structured_outputs={"regex": "a+"})
    assert r.text == "a" and server.requests[-1].json["structured_outputs"] == {"regex": "a+"}
