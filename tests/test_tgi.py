from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

import asyncllm
from asyncllm.backends.tgi import TGI
from asyncllm.testing import FakeServer
from tests.chat_contract import NO_WAIT, ChatContract, get_weather
from tests.specs import SPECS

SPEC = SPECS / "tgi.openapi.json"


class TestTGIContract(ChatContract):
    protocol = "tgi"
    streamed_choices = False  # the messages API lists n as unused
    streamed_tool_finish = False  # a streamed tool call ends with no finish reason
    structured = True
    open_maps_refused = False  # the schema is sent as it is; TGI's grammar takes open maps
    refusal_prompt = None  # TGI has no refusals
    reasoning_options = None  # nor a reasoning field
    length_options = {"max_tokens": 3}
    signed_history = False

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.TGI(base_url=server.url(), **kwargs)


PROTOCOLS = ("tgi",)


def make_client(server: FakeServer) -> TGI:
    return asyncllm.TGI(base_url=server.url(), retry=NO_WAIT)


def sent(server: FakeServer, path: str) -> Any:
    return next(r.json for r in reversed(server.requests) if r.path == path)


# -- configuration ------------------------------------------------------------------------------


def test_base_url_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TGI_BASE_URL", raising=False)
    with pytest.raises(asyncllm.ConfigurationError, match="TGI_BASE_URL"):
        asyncllm.TGI()


async def test_env_base_url_and_hf_token(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TGI_BASE_URL", server.url())
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_API_TOKEN", "hf_fallback")
    async with asyncllm.TGI() as client:
        await client.generate("hi")
        assert "hf_fallback" not in repr(client)
    assert server.requests[-1].headers["Authorization"] == "Bearer hf_fallback"
    monkeypatch.setenv("HF_TOKEN", "hf_first")
    async with asyncllm.TGI() as client:
        await client.generate("hi")
    assert server.requests[-1].headers["Authorization"] == "Bearer hf_first"


async def test_no_token_no_auth_header(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_API_TOKEN", raising=False)
    async with asyncllm.TGI(base_url=server.url()) as client:
        assert (await client.generate("hi")).text == "echo: hi"
    assert "Authorization" not in server.requests[-1].headers


# -- /generate -------------------------------------------------------------------------------


async def test_generate_sends_every_parameter(client: TGI, server: FakeServer) -> None:
    r = await client.generate(
        "tell me",
        max_new_tokens=20,
        temperature=0.5,
        top_p=0.9,
        top_k=10,
        typical_p=0.95,
        repetition_penalty=1.03,
        frequency_penalty=0.1,
        stop="never",
        seed=7,
        do_sample=True,
        truncate=100,
        return_full_text=False,
        details=True,
        decoder_input_details=True,
        top_n_tokens=2,
        watermark=False,
        grammar={"type": "regex", "value": ".*"},
        extra_parameters={"adapter_id": "lora-1"},
    )
    assert sent(server, "/generate") == {
        "inputs": "tell me",
        "parameters": {
            "max_new_tokens": 20,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 10,
            "typical_p": 0.95,
            "repetition_penalty": 1.03,
            "frequency_penalty": 0.1,
            "stop": ["never"],
            "seed": 7,
            "do_sample": True,
            "truncate": 100,
            "return_full_text": False,
            "details": True,
            "decoder_input_details": True,
            "top_n_tokens": 2,
            "watermark": False,
            "grammar": {"type": "regex", "value": ".*"},
            "adapter_id": "lora-1",
        },
    }
    assert r.text == "echo: tell me"
    assert r.request_id == server.request_ids[-1]


async def test_generate_without_parameters_sends_only_inputs(
    client: TGI, server: FakeServer
) -> None:
    r = await client.generate("plain")
    assert sent(server, "/generate") == {"inputs": "plain"}
    assert r.text == "echo: plain"
    assert r.details is None and r.finish_reason is None


async def test_generate_details(client: TGI) -> None:
    r = await client.generate("one two", details=True, decoder_input_details=True, top_n_tokens=1)
    assert r.details is not None
    assert r.finish_reason == "eos_token"
    assert [t.text for t in r.details.tokens] == ["echo:", " one", " two", "</s>"]
    assert r.details.tokens[-1].special
    assert r.details.generated_tokens == 4
    assert [t.text for t in r.details.prefill] == ["one", " two"]
    assert len(r.details.top_tokens) == 4


async def test_generate_stops(client: TGI) -> None:
    r = await client.generate("a b c d", max_new_tokens=2, details=True)
    assert (r.text, r.finish_reason) == ("echo: a", "length")
    r = await client.generate("a b c d", stop=[" b"], details=True)
    assert (r.text, r.finish_reason) == ("echo: a b", "stop_sequence")
    r = await client.generate("full", return_full_text=True)
    assert r.text == "fullecho: full"


async def test_pydantic_grammar(client: TGI, server: FakeServer) -> None:
    class City(BaseModel):
        name: str

    await client.generate("x", grammar=City)
    grammar = sent(server, "/generate")["parameters"]["grammar"]
    assert grammar["type"] == "json"
    assert grammar["value"]["properties"] == {"name": {"title": "Name", "type": "string"}}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0},
        {"top_p": 1.5},
        {"top_p": 1},  # the schema allows 1; TGI's router refuses it
        {"top_p": 0},
        {"top_k": 0},
        {"typical_p": 2},
        {"typical_p": 1.0},
        {"repetition_penalty": 0},
        {"frequency_penalty": -2.5},
        {"frequency_penalty": 2.5},
        {"max_new_tokens": -1},
        {"max_new_tokens": 1.5},
        {"seed": -1},
        {"truncate": -3},
        {"truncate": 0},  # the schema allows 0; TGI's router refuses it
        {"top_n_tokens": -1},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [1]},
        {"do_sample": "yes"},
        {"grammar": {"type": "xml", "value": "x"}},
        {"grammar": {"type": "regex", "value": 3}},
        {"grammar": "json"},
    ],
)
async def test_bad_parameters_are_refused_before_sending(
    client: TGI, server: FakeServer, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.generate("x", **kwargs)
    assert server.request_count == 0


async def test_what_the_router_accepts_is_sent(client: TGI, server: FakeServer) -> None:
    """The router's own bounds, not the schema's: these were refused before sending."""
    await client.generate("x", top_n_tokens=0, frequency_penalty=-2, seed=0, details=True)
    assert sent(server, "/generate")["parameters"] == {
        "top_n_tokens": 0,
        "frequency_penalty": -2,
        "seed": 0,
        "details": True,
    }
    await client.generate("x", frequency_penalty=2, truncate=1, top_p=0.999, typical_p=0.001)
    assert sent(server, "/generate")["parameters"]["truncate"] == 1


async def test_empty_inputs_refused(client: TGI, server: FakeServer) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.generate("")
    with pytest.raises(asyncllm.ConfigurationError):
        client.stream_generate("")
    assert server.request_count == 0


# -- /generate_stream --------------------------------------------------------------------------


async def test_stream_generate_tokens(client: TGI, server: FakeServer) -> None:
    events = []
    async with client.stream_generate("hello streaming world", details=True) as stream:
        async for event in stream:
            events.append(event)
    assert "".join(e.delta for e in events) == "echo: hello streaming world"
    assert [e.index for e in events] == list(range(1, len(events) + 1))  # TGI counts from 1
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.token.special and last.delta == ""
    assert last.generated_text == "echo: hello streaming world"
    assert last.details is not None
    assert (last.details.finish_reason, last.details.generated_tokens) == ("eos_token", 5)
    assert last.details.input_length == 3
    assert sent(server, "/generate_stream")["parameters"] == {"details": True}
    assert all(e.request_id == server.request_ids[-1] for e in events)


async def test_stream_generate_length(client: TGI) -> None:
    async with client.stream_generate("a b c", max_new_tokens=2, details=True) as stream:
        events = [e async for e in stream]
    assert [e.delta for e in events] == ["echo:", " a"]
    assert events[-1].details is not None and events[-1].details.finish_reason == "length"


async def test_mid_stream_error_is_typed(client: TGI, server: FakeServer) -> None:
    server.state["tgi_stream_errors"] = [(2, "generation")]
    deltas: list[str] = []
    with pytest.raises(asyncllm.APIStatusError) as info:
        async with client.stream_generate("one two three") as stream:
            async for event in stream:
                deltas.append(event.delta)
    assert deltas == ["echo:", " one"]
    assert info.value.status_code == 424
    assert info.value.error_type == "generation"
    assert info.value.request_id == server.request_ids[-1]
    assert server.request_count == 1  # not retried once tokens reached the caller


async def test_overloaded_first_event_is_retried(client: TGI, server: FakeServer) -> None:
    server.state["tgi_stream_errors"] = [(0, "overloaded")]
    async with client.stream_generate("again") as stream:
        text = "".join([e.delta async for e in stream])
    assert text == "echo: again"
    assert server.request_count == 2


async def test_validation_first_event_is_422_not_retried(client: TGI, server: FakeServer) -> None:
    server.state["tgi_stream_errors"] = [(0, "validation")]
    with pytest.raises(asyncllm.UnprocessableEntityError):
        async with client.stream_generate("bad") as stream:
            async for _ in stream:
                pass
    assert server.request_count == 1


async def test_chat_mid_stream_error_event_is_typed(client: TGI, server: FakeServer) -> None:
    async def broken_chat(request: Any) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": None}]}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        error = {"error": "Request failed during generation", "error_type": "generation"}
        await resp.write(b"data: " + json.dumps(error).encode() + b"\n\n")
        await resp.write_eof()
        return resp

    server.overrides["/v1/chat/completions"] = broken_chat
    with pytest.raises(asyncllm.APIStatusError) as info:
        async with client.stream_chat([{"role": "user", "content": "x"}], model="tgi") as s:
            async for _ in s:
                pass
    assert (info.value.status_code, info.value.error_type) == (424, "generation")


# -- error bodies -------------------------------------------------------------------------------


async def test_error_body_is_read(client: TGI, server: FakeServer) -> None:
    server.fail_next(1, status=422)
    with pytest.raises(asyncllm.UnprocessableEntityError) as info:
        await client.generate("x")
    assert info.value.error_type == "validation"
    assert info.value.message == "injected 422"
    assert server.request_count == 1


async def test_real_validation_error(client: TGI, server: FakeServer) -> None:
    with pytest.raises(asyncllm.UnprocessableEntityError, match="top_k"):
        await client.generate("x", extra_parameters={"top_k": -1})
    assert server.request_count == 1


@pytest.mark.parametrize(
    ("status", "error_type", "cls", "attempts"),
    [
        (400, "validation", asyncllm.UnprocessableEntityError, 1),
        (424, "generation", asyncllm.APIStatusError, 1),
        (424, "overloaded", asyncllm.APIStatusError, 3),
        (429, "overloaded", asyncllm.RateLimitError, 3),
        (500, "incomplete_generation", asyncllm.InternalServerError, 3),
    ],
)
async def test_error_type_decides_class_and_retry(
    server: FakeServer, status: int, error_type: str, cls: type[Exception], attempts: int
) -> None:
    retry = asyncllm.RetryConfig(max_retries=2, initial_delay=0, max_delay=0)
    server.fail_next(3, status=status, body={"error": "boom", "error_type": error_type})
    async with asyncllm.TGI(base_url=server.url(), retry=retry) as client:
        with pytest.raises(cls) as info:
            await client.generate("x")
    error: Any = info.value
    assert type(error) is cls
    assert (error.status_code, error.error_type, error.message) == (status, error_type, "boom")
    assert server.request_count == attempts


# -- info, health, tokenize, chat body ------------------------------------------------------------


async def test_info(client: TGI) -> None:
    info = await client.info()
    assert info.model_id == "fake/tgi-model"
    assert info.max_stop_sequences == 4
    assert info.model_pipeline_tag == "text-generation"


async def test_health(client: TGI, server: FakeServer) -> None:
    assert await client.health() is True
    server.state["tgi_unhealthy"] = True
    assert await client.health() is False
    assert server.request_count == 2  # the 503 was not retried


async def test_health_raises_on_other_errors(client: TGI, server: FakeServer) -> None:
    server.fail_next(1, status=401)
    with pytest.raises(asyncllm.AuthenticationError):
        await client.health()


async def test_tokenize(client: TGI, server: FakeServer) -> None:
    tokens = await client.tokenize("to ken")
    assert [(t.text, t.start, t.stop) for t in tokens] == [("to", 0, 2), (" ken", 2, 6)]
    assert sent(server, "/tokenize") == {"inputs": "to ken"}


class Answer(BaseModel):
    city: str
    population: int = 0


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


class Counts(BaseModel):
    counts: dict[str, int]


async def test_chat_body_follows_tgi(client: TGI, server: FakeServer) -> None:
    r = await client.chat(
        [{"role": "user", "content": "x"}], model="tgi", stop="END", response_format=Answer
    )
    body = sent(server, "/v1/chat/completions")
    assert body["stop"] == ["END"]
    # TGI's GrammarType "json", which every TGI 3 takes, with the schema as it is (not strict:
    # population stays optional).
    assert body["response_format"] == {"type": "json", "value": Answer.model_json_schema()}
    assert r.parsed == Answer(city="test")


async def test_response_format_forms(client: TGI, server: FakeServer) -> None:
    r = await client.chat([{"role": "user", "content": "x"}], response_format=Tree)
    value = sent(server, "/v1/chat/completions")["response_format"]["value"]
    assert value["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert "$ref" not in value and value["$defs"]["Tree"]["required"] == ["value"]
    assert isinstance(r.parsed, Tree)
    r = await client.chat([{"role": "user", "content": "x"}], response_format=Counts)
    assert r.parsed == Counts(counts={})
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = await client.chat([{"role": "user", "content": "x"}], response_format=schema)
    assert r.parsed == {"n": 1}
    sent_before = server.request_count
    for bad in ({"type": "json_object"}, {"type": "array", "items": {"type": "string"}}):
        with pytest.raises(asyncllm.ConfigurationError, match="properties"):
            await client.chat([{"role": "user", "content": "x"}], response_format=bad)
    with pytest.raises(asyncllm.ConfigurationError, match="tools or response_format"):
        await client.chat(
            [{"role": "user", "content": "x"}], response_format=Answer, tools=[get_weather]
        )
    with pytest.raises(asyncllm.ConfigurationError, match="top_p"):
        await client.chat([{"role": "user", "content": "x"}], top_p=1)
    assert server.request_count == sent_before


async def test_streamed_structured_answer_and_its_cut(client: TGI) -> None:
    async with client.stream_chat([{"role": "user", "content": "x"}], response_format=Answer) as s:
        final = await s.final()
    assert final.parsed == Answer(city="test") and final.finish_reason == "stop"
    with pytest.raises(asyncllm.LengthFinishReasonError) as info:
        await client.chat([{"role": "user", "content": "x"}], response_format=Answer, max_tokens=1)
    assert info.value.text == '{"city":'


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


def request_validator(spec: Path, path: str) -> jsonschema.Draft202012Validator:
    document = json.loads(spec.read_text())
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    root = {
        "$ref": ref["$ref"],
        "components": _nullable_to_anyof(copy.deepcopy(document))["components"],
    }
    return jsonschema.Draft202012Validator(root)


def test_schema_validator_can_fail() -> None:
    validator = request_validator(SPEC, "/generate")
    assert list(validator.iter_errors({"parameters": {}}))  # no inputs
    assert list(validator.iter_errors({"inputs": "x", "parameters": {"temperature": 0}}))
    assert list(validator.iter_errors({"inputs": "x", "parameters": {"top_p": 1.5}}))
    assert list(validator.iter_errors({"inputs": "x", "parameters": {"grammar": {"type": "x"}}}))
    assert not list(validator.iter_errors({"inputs": "x", "parameters": {"grammar": None}}))


async def test_generate_bodies_follow_the_openapi_schema(client: TGI, server: FakeServer) -> None:
    validator = request_validator(SPEC, "/generate")
    await client.generate("plain")
    # The schema allows top_p = 1 and truncate = 0; TGI's router refuses both, and so does the
    # client, before sending (test_bad_parameters_are_refused_before_sending).
    await client.generate(
        "all",
        max_new_tokens=5,
        temperature=0.7,
        top_p=0.95,
        top_k=3,
        typical_p=0.5,
        repetition_penalty=1.2,
        frequency_penalty=-1.5,
        stop=["x", "y", "z", "w"],
        seed=1,
        do_sample=False,
        truncate=5,
        return_full_text=True,
        details=False,
        decoder_input_details=False,
        top_n_tokens=3,
        watermark=True,
        grammar={"type": "json_schema", "value": {"name": "n", "schema": {"properties": {}}}},
        best_of=1,
        adapter_id="a",
    )
    grammar = {"type": "json", "value": {"properties": {}}}
    async with client.stream_generate("s", grammar=grammar) as stream:
        async for _ in stream:
            pass
    bodies = [r.json for r in server.requests if r.path in ("/generate", "/generate_stream")]
    assert len(bodies) == 3
    for body in bodies:
        validator.validate(body)


async def test_chat_needs_no_model_name() -> None:
    async with FakeServer("tgi") as server:
        client = asyncllm.TGI(base_url=server.url())
        r = await client.chat([{"role": "user", "content": "no model"}])
        await client.aclose()
    assert r.text == "echo: no model"
    assert server.requests[-1].json["model"] == "tgi"


async def test_misspelt_keyword_is_a_type_error_before_sending(
    client: TGI, server: FakeServer
) -> None:
    with pytest.raises(TypeError, match="temprature"):
        await client.generate("x", temprature=0.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="best_of"):
        client.stream_generate("x", best_of=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="extra_body"):
        await client.info(extra_body={})  # type: ignore[call-arg]
    assert server.request_count == 0


async def test_call_options_reach_the_wire(client: TGI, server: FakeServer) -> None:
    await client.generate(
        "x", max_new_tokens=3, extra_body={"stream": False}, extra_headers={"X-Trace": "t"}
    )
    assert sent(server, "/generate") == {
        "inputs": "x",
        "parameters": {"max_new_tokens": 3},
        "stream": False,
    }
    assert server.requests[-1].headers["X-Trace"] == "t"


# -- the fake answers as TGI's router does ---------------------------------------------------------


async def raw(server: FakeServer, method: str, path: str, body: Any = None) -> tuple[int, str, str]:
    """(status, content type, text) of one request straight to the fake."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url(path), json=body) as response,
    ):
        return response.status, response.content_type, await response.text()


def events(text: str) -> list[Any]:
    """The data of each server-sent event, as TGI's router writes them ("data: <json>")."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_root_generates_a_list_with_the_prompt_in_front(server: FakeServer) -> None:
    status, ctype, text = await raw(server, "POST", "/", {"inputs": "a b"})
    assert (status, ctype) == (200, "application/json")
    assert json.loads(text) == [{"generated_text": "a becho: a b"}]
    _, _, text = await raw(
        server, "POST", "/", {"inputs": "a b", "parameters": {"return_full_text": False}}
    )
    assert json.loads(text) == [{"generated_text": "echo: a b"}]
    # "stream": false is the same as no flag; details come as /generate gives them.
    body = {"inputs": "a", "parameters": {"details": True, "max_new_tokens": 1}, "stream": False}
    _, _, text = await raw(server, "POST", "/", body)
    (answer,) = json.loads(text)
    assert answer["generated_text"] == "aecho:"
    assert answer["details"]["finish_reason"] == "length"
    assert [r.path for r in server.requests] == ["/", "/", "/"]


async def test_root_streams_when_the_body_says_so(server: FakeServer) -> None:
    body = {"inputs": "a b", "parameters": {"details": True}, "stream": True}
    status, ctype, text = await raw(server, "POST", "/", body)
    assert (status, ctype) == (200, "text/event-stream")
    got = events(text)
    assert [e["index"] for e in got] == [1, 2, 3, 4]  # TGI counts from 1
    assert [e["token"]["text"] for e in got] == ["echo:", " a", " b", "</s>"]
    assert got[-1]["generated_text"] == "a becho: a b"
    assert got[-1]["details"]["finish_reason"] == "eos_token"
    assert all(e["generated_text"] is None and e["details"] is None for e in got[:-1])


async def test_root_refusals_are_a_422_or_a_stream_of_one_error(server: FakeServer) -> None:
    status, _, text = await raw(server, "POST", "/", {"inputs": ""})
    assert status == 422
    assert json.loads(text) == {
        "error": "Input validation error: `inputs` cannot be empty",
        "error_type": "validation",
    }
    status, ctype, text = await raw(server, "POST", "/", {"inputs": "", "stream": True})
    assert (status, ctype) == (200, "text/event-stream")
    assert events(text) == [
        {"error": "Input validation error: `inputs` cannot be empty", "error_type": "validation"}
    ]
    status, _, _ = await raw(server, "POST", "/", {"stream": True})
    assert status == 422  # a body TGI cannot read is refused before any stream


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"best_of": 2, "do_sample": True},
            "`best_of` != 1 is not supported when streaming tokens",
        ),
        (
            {"decoder_input_details": True},
            "`decoder_input_details` == true is not supported when streaming tokens",
        ),
        ({"temperature": 0}, "`temperature` must be strictly positive"),
    ],
)
async def test_generate_stream_refuses_in_the_stream(
    server: FakeServer, parameters: dict[str, Any], message: str
) -> None:
    body = {"inputs": "x", "parameters": parameters}
    status, _, text = await raw(server, "POST", "/generate_stream", body)
    assert status == 200
    assert events(text) == [
        {"error": f"Input validation error: {message}", "error_type": "validation"}
    ]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"typical_p": 1}, "`typical_p` must be > 0.0 and < 1.0"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
        ({"truncate": 0}, "`truncate` must be strictly positive and less than 1024. Given: 0"),
        ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
        ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ],
)
async def test_generate_validation_follows_tgi(
    server: FakeServer, parameters: dict[str, Any], message: str
) -> None:
    status, _, text = await raw(
        server, "POST", "/generate", {"inputs": "x", "parameters": parameters}
    )
    assert status == 422
    assert json.loads(text) == {
        "error": f"Input validation error: {message}",
        "error_type": "validation",
    }


async def test_generate_accepts_what_tgi_accepts(server: FakeServer) -> None:
    parameters = {"top_n_tokens": 0, "frequency_penalty": -2, "truncate": 1024, "top_p": 0.99}
    status, _, _ = await raw(server, "POST", "/generate", {"inputs": "x", "parameters": parameters})
    assert status == 200


async def test_seed_is_reported_only_for_sampled_generations(server: FakeServer) -> None:
    async def seed(**parameters: Any) -> Any:
        body = {"inputs": "x", "parameters": {"details": True, **parameters}}
        _, _, text = await raw(server, "POST", "/generate", body)
        return json.loads(text)["details"]["seed"]

    assert await seed(seed=7) is None  # greedy
    assert await seed(seed=7, do_sample=True) == 7
    assert await seed(seed=7, temperature=0.5) == 7
    drawn = await seed(top_k=5)
    assert isinstance(drawn, int) and drawn >= 0


async def test_decoder_input_details_alone_brings_details(server: FakeServer) -> None:
    body = {"inputs": "a b", "parameters": {"decoder_input_details": True}}
    _, _, text = await raw(server, "POST", "/generate", body)
    details = json.loads(text)["details"]
    assert [t["text"] for t in details["prefill"]] == ["a", " b"]
    assert details["prefill"][0]["logprob"] is None


async def test_root_and_ping_are_health(server: FakeServer) -> None:
    for path in ("/", "/ping", "/health"):
        assert (await raw(server, "GET", path))[0] == 200
    server.state["tgi_unhealthy"] = True
    status, _, text = await raw(server, "GET", "/")
    assert status == 503
    assert json.loads(text) == {"error": "unhealthy", "error_type": "healthcheck"}


WEATHER = {"properties": {"unit": {"type": "string"}}, "required": ["unit"]}


@pytest.mark.parametrize(
    ("response_format", "content"),
    [
        ({"type": "json", "value": WEATHER}, '{"unit": "test"}'),
        ({"type": "json_object", "value": WEATHER}, '{"unit": "test"}'),  # an alias of json
        ({"type": "json", "value": json.dumps(WEATHER)}, '{"unit": "test"}'),
        ({"type": "json_schema", "value": {"name": "w", "schema": WEATHER}}, '{"unit": "test"}'),
        ({"type": "regex", "value": "[A-Z]{2}-[0-9]+"}, "AA-0"),
    ],
)
async def test_chat_follows_tgis_grammar_types(
    server: FakeServer, response_format: Any, content: str
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "response_format": response_format}
    status, _, text = await raw(server, "POST", "/v1/chat/completions", body)
    assert status == 200
    assert json.loads(text)["choices"][0]["message"]["content"] == content


@pytest.mark.parametrize(
    ("extra", "status", "error"),
    [
        (
            {"response_format": {"type": "json", "value": {"type": "object"}}},
            422,
            {
                "error": "Input validation error: grammar is not valid: Grammar must have a "
                "'properties' field",
                "error_type": "validation",
            },
        ),
        (
            {"response_format": {"type": "json", "value": WEATHER}, "tools": []},
            422,
            {
                "error": "Tool error: Grammar and tools are mutually exclusive",
                "error_type": "tool_error",
            },
        ),
        (
            {"response_format": {"type": "json_object"}},
            422,
            {"error": "response_format: missing field `value`", "error_type": "validation"},
        ),
        (
            {"top_p": 1},
            422,
            {"error": "Input validation error: `top_p` must be > 0.0 and < 1.0",
             "error_type": "validation"},
        ),
        (
            {"presence_penalty": -2},
            422,
            {"error": "Input validation error: `repetition_penalty` must be strictly positive",
             "error_type": "validation"},
        ),
    ],
)  # fmt: skip
async def test_chat_refuses_as_tgi(
    server: FakeServer, extra: dict[str, Any], status: int, error: Any
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], **extra}
    got, _, text = await raw(server, "POST", "/v1/chat/completions", body)
    assert (got, json.loads(text)) == (status, error)


async def test_chat_accepts_what_tgi_accepts(server: FakeServer) -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0,  # greedy
        "top_p": 0.5,
        "frequency_penalty": -2,
        "presence_penalty": -1.5,
        "seed": 0,
    }
    status, _, _ = await raw(server, "POST", "/v1/chat/completions", body)
    assert status == 200


async def test_generate_grammar_is_checked_and_followed(server: FakeServer) -> None:
    grammar = {"type": "json", "value": {"type": "object"}}
    body = {"inputs": "x", "parameters": {"grammar": grammar}}
    status, _, text = await raw(server, "POST", "/generate", body)
    assert status == 422 and "'properties' field" in json.loads(text)["error"]
    body = {"inputs": "x", "parameters": {"grammar": {"type": "json", "value": WEATHER}}}
    status, _, text = await raw(server, "POST", "/generate", body)
    assert json.loads(text) == {"generated_text": '{"unit": "test"}'}


async def test_chat_answers_in_tgis_shape(server: FakeServer) -> None:
    body = {"model": "tgi", "messages": [{"role": "user", "content": "hi there"}]}
    status, _, text = await raw(server, "POST", "/v1/chat/completions", body)
    assert status == 200
    answer = json.loads(text)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "fake/tgi-model"  # "tgi" (or no model) is the served one
    assert answer["system_fingerprint"] == "3.3.6-dev0-native"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hi there"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    del body["model"]
    _, _, text = await raw(server, "POST", "/v1/chat/completions", {**body, "model": "mine"})
    assert json.loads(text)["model"] == "mine"
    _, _, text = await raw(server, "POST", "/v1/chat/completions", {**body, "max_tokens": 1})
    choice = json.loads(text)["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("echo:", "length")


async def test_chat_stream_is_one_chunk_per_token_with_the_role_in_each(
    server: FakeServer,
) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, ctype, text = await raw(server, "POST", "/v1/chat/completions", body)
    assert (status, ctype) == (200, "text/event-stream")
    got = events(text)
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["system_fingerprint"] == "3.3.6-dev0-native" for c in chunks)
    assert all(c["model"] == "fake/tgi-model" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": "echo:"},
        {"role": "assistant", "content": " hi"},
        {"role": "assistant", "content": ""},  # the end-of-sequence token
    ]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes == [None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


async def test_chat_tool_call_in_tgis_shape(server: FakeServer) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    body = {"messages": [{"role": "user", "content": "weather?"}], "tools": [tool]}
    _, _, text = await raw(server, "POST", "/v1/chat/completions", body)
    choice = json.loads(text)["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "0",
                "type": "function",
                "function": {
                    "description": None,
                    "name": "get_weather",
                    "arguments": '{"city":"test"}',
                },
            }
        ],
    }
    assert choice["finish_reason"] == "stop"

    # A streamed call's id is one more than the largest integer id in the conversation.
    earlier = {
        "role": "assistant",
        "tool_calls": [{**choice["message"]["tool_calls"][0], "id": "4"}],
    }
    stream_body = {**body, "stream": True}
    stream_body["messages"] = [*body["messages"], earlier, {"role": "user", "content": "again"}]
    _, _, text = await raw(server, "POST", "/v1/chat/completions", stream_body)
    chunks = events(text)
    assert chunks[-1] == "[DONE]"
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:-1]]
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks[:-1])
    assert [c["function"]["name"] for c in calls] == ["get_weather", None, None]
    assert {(c["index"], c["id"], c["type"]) for c in calls} == {(0, "5", "function")}
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "test"}
    assert calls[0]["function"]["arguments"] == "{"
    # After a whole call TGI sends nothing for the end-of-sequence token: no finish reason.
    assert {c["choices"][0]["finish_reason"] for c in chunks[:-1]} == {None}
    body["tool_choice"] = "none"
    _, _, text = await raw(server, "POST", "/v1/chat/completions", body)
    assert json.loads(text)["choices"][0]["message"]["content"] == "echo: weather?"


def test_tgi_has_no_embed() -> None:
    # TGI serves no embeddings route: the embed it inherited posted to /embeddings and got 404.
    assert not hasattr(asyncllm.TGI, "embed")
    assert hasattr(asyncllm.TEI, "embed")
