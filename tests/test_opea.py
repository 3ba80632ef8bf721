from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

import asyncllm
from asyncllm.backends.opea import OPEA, parse_bytes_literal
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from asyncllm.testing.fakes import _common
from tests.chat_contract import NO_WAIT, ChatContract

SERVICES = ("gateway", "llm", "embedding", "retriever", "reranking", "guardrails", "dataprep")
# Quotes of both kinds, a newline, a tab, a backslash and non-ASCII: every escape repr() writes.
HOSTILE_QUESTION = 'it\'s "quoted"\nnext\tline — café ☕ \\ back\x01'


def opea_on(server: FakeServer, **kwargs: Any) -> OPEA:
    url = server.url()
    return OPEA(
        base_url=url,
        llm_url=url,
        embedding_url=url,
        retriever_url=url,
        reranking_url=url,
        guardrails_url=url,
        dataprep_url=url,
        **kwargs,
    )


PROTOCOLS = ("opea",)


def make_client(server: FakeServer) -> OPEA:
    # A dispatcher of its own, so that its lanes are this client's alone.
    return opea_on(server, retry=NO_WAIT, dispatcher=asyncllm.Dispatcher())


@pytest.fixture
async def dispatcher() -> AsyncIterator[asyncllm.Dispatcher]:
    async with asyncllm.Dispatcher() as dispatcher:
        yield dispatcher


def sent(server: FakeServer, index: int = -1) -> Any:
    """The JSON body as it went over the wire (before any fake handler touched it)."""
    return json.loads(server.requests[index].body)


# -- the LLM microservice keeps the shared chat contract -----------------------------------------


class TestOPEAContract(ChatContract):
    protocol = "opea"
    structured = False  # OPEA's LLM service takes JSON mode only, no schema (see below)
    strict_tools = False  # OPEA's ChatCompletionRequest has no strict on its functions

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return OPEA(llm_url=server.url(), **kwargs)


async def test_llm_chat_without_model_lets_the_service_choose(
    client: OPEA, server: FakeServer
) -> None:
    r = await client.chat([{"role": "user", "content": "no model"}])
    assert r.text == "echo: no model"
    assert "model" not in sent(server)
    assert server.requests[-1].path == "/v1/chat/completions"


class Reply(BaseModel):
    answer: str


class Ticket(BaseModel):
    title: str
    priority: int


async def test_llm_structured_output_is_json_mode_validated_here(
    client: OPEA, server: FakeServer
) -> None:
    """OPEA's ChatCompletionRequest takes response_format "text" or "json_object" only: a model
    goes as JSON mode, and the answer is validated against it when it arrives."""
    ask = [{"role": "user", "content": "answer in JSON"}]
    r = await client.chat(ask, response_format=Reply)
    assert sent(server)["response_format"] == {"type": "json_object"}
    assert r.parsed == Reply(answer="test")
    async with client.stream_chat(ask, response_format=Reply) as stream:
        final = await stream.final()
    assert final.parsed == Reply(answer="test") and final.text == r.text
    assert sent(server)["response_format"] == {"type": "json_object"}
    schema = await client.chat(ask, response_format=Reply.model_json_schema())
    assert schema.parsed == {"answer": "test"}
    # The service does not hold the model to the schema: what does not fit raises, with the text.
    with pytest.raises(asyncllm.StructuredOutputError) as info:
        await client.chat(ask, response_format=Ticket)
    assert info.value.text == r.text
    with pytest.raises(asyncllm.LengthFinishReasonError):
        await client.chat(ask, response_format=Reply, max_tokens=1)


async def test_llm_refuses_a_json_schema_as_opea_does(server: FakeServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}
    async with aiohttp.ClientSession() as session:
        body = {"messages": "hi", "response_format": fmt}
        async with session.post(server.url("/v1/chat/completions"), json=body) as response:
            assert response.status == 422
            detail = (await response.json())["detail"][0]
        body["response_format"] = {"type": "json_object"}
        async with session.post(server.url("/v1/chat/completions"), json=body) as response:
            assert response.status == 200
            answer = await response.json()
    assert detail["loc"] == ["body", "response_format", "type"]
    assert detail["type"] == "literal_error"
    assert json.loads(answer["choices"][0]["message"]["content"]) == {"answer": "test"}


async def test_llm_chat_is_cut_at_max_tokens(client: OPEA) -> None:
    r = await client.chat([{"role": "user", "content": "a b c"}], max_tokens=2)
    assert (r.text, r.finish_reason) == ("echo: a", "length")


# -- gateway: ChatQnA ---------------------------------------------------------------------------


async def test_chatqna_json(client: OPEA, server: FakeServer) -> None:
    r = await client.chatqna(
        "What is OPEA?", k=3, top_n=2, max_tokens=64, temperature=0.2, search_type="mmr"
    )
    assert r.text == "echo: What is OPEA?"
    assert r.model == "chatqna"
    assert r.finish_reason == "stop"
    assert r.request_id == server.request_ids[-1]
    body = sent(server)
    assert server.requests[-1].path == "/v1/chatqna"
    assert body == {
        "messages": "What is OPEA?",
        "max_tokens": 64,
        "temperature": 0.2,
        "k": 3,
        "top_n": 2,
        "search_type": "mmr",
        "stream": False,
    }


async def test_chatqna_takes_messages(client: OPEA, server: FakeServer) -> None:
    r = await client.chatqna(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ]
    )
    assert r.text == "echo: second"
    assert [m["role"] for m in sent(server)["messages"]] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize(
    ("question", "kwargs"),
    [
        ("", {}),
        ("   ", {}),
        ([{"role": "tool", "tool_call_id": "c1", "content": "x"}], {}),
        ("q", {"k": 0}),
        ("q", {"top_n": "2"}),
        ("q", {"temperature": -1}),
        ("q", {"max_tokens": 0}),
        ("q", {"extra_body": ["not", "a", "mapping"]}),
    ],
)
async def test_chatqna_bad_input_sends_nothing(
    client: OPEA, server: FakeServer, question: Any, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.chatqna(question, **kwargs)
    with pytest.raises(asyncllm.ConfigurationError):
        client.stream_chatqna(question, **kwargs)
    assert server.request_count == 0


async def test_stream_chatqna_bytes_literals_with_escapes(client: OPEA, server: FakeServer) -> None:
    chunks = []
    async with client.stream_chatqna(HOSTILE_QUESTION, k=2) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    text = "".join(c.delta for c in chunks)
    assert text == _common.reply_text(HOSTILE_QUESTION)
    assert len([c for c in chunks if c.delta]) == len(_common.pieces(text))
    assert chunks[-1].finish_reason == "stop"
    assert sent(server)["stream"] is True
    assert all(c.request_id == server.request_ids[-1] for c in chunks)


async def test_stream_chatqna_wire_is_bytes_literals(server: FakeServer) -> None:
    """Guard the fake itself: the test above must exercise the b'...' format and its escapes."""
    seen: list[bytes] = []

    async def handler(request: Any) -> MockResponse:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url("/v1/chatqna"), json={"messages": HOSTILE_QUESTION}) as resp,
        ):
            body = await resp.read()
        seen.append(body)
        return MockResponse(200, content=body, headers={"Content-Type": "text/event-stream"})

    client = OPEA(transport=MockTransport(handler), max_retries=0)
    async with client, client.stream_chatqna(HOSTILE_QUESTION) as stream:
        text = "".join([c.delta async for c in stream])
    assert text == _common.reply_text(HOSTILE_QUESTION)
    wire = seen[0]
    assert wire.startswith(b"data: b''\n\n")  # the LLM's first chunk: the role, no text
    assert b"data: b'" in wire and b'data: b"' in wire  # repr picks the quote per piece
    for escape in (rb"\n", rb"\t", rb"\\", rb"\xe2\x80\x94", rb"\x01", rb"\'"):
        assert escape in wire
    assert wire.endswith(b"data: [DONE]\n\n")


# -- gateway: CodeGen, DocSum, FaqGen --------------------------------------------------------------


async def test_codegen_json_and_stream(client: OPEA, server: FakeServer) -> None:
    r = await client.codegen("write a sort", index_name="repo", max_tokens=32)
    assert r.text == "echo: write a sort"
    assert r.model == "codegen"
    assert sent(server)["index_name"] == "repo"
    assert sent(server)["stream"] is False
    chunks = []
    async with client.stream_codegen([{"role": "user", "content": "stream some code"}]) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert "".join(c.delta for c in chunks) == "echo: stream some code"
    assert chunks[-1].finish_reason == "stop"
    assert isinstance(chunks[1].raw, dict)  # OpenAI JSON chunks, not bytes literals
    assert server.requests[-1].path == "/v1/codegen"


async def test_docsum_json(client: OPEA, server: FakeServer) -> None:
    r = await client.docsum("A long document.", summary_type="map_reduce", chunk_size=100)
    assert r.text == "echo: A long document."
    assert r.model == "docsum"
    body = sent(server)
    assert body["type"] == "text"  # DocSum reads data["type"]: without it, a 500
    assert body["summary_type"] == "map_reduce"
    assert body["chunk_size"] == 100
    assert body["stream"] is False
    assert "application/json" in server.requests[-1].headers["Content-Type"]


async def test_docsum_with_files_is_multipart(
    client: OPEA, server: FakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("from a path", encoding="utf-8")
    r = await client.docsum("Intro. ", files=[path, ("b.txt", "ünïcode bytes".encode())])
    assert r.text == "echo: Intro. from a path\nünïcode bytes"
    form = server.state["opea_docsum_form"]
    assert form["fields"]["type"] == "text"
    assert form["fields"]["stream"] == "false"
    assert [(f["filename"], f["data"]) for f in form["files"]] == [
        ("notes.txt", b"from a path"),
        ("b.txt", "ünïcode bytes".encode()),
    ]
    assert form["files"][0]["content_type"] == "text/plain"


async def test_stream_docsum(client: OPEA, server: FakeServer) -> None:
    async with client.stream_docsum('sum it\'s "this"') as stream:
        text = "".join([c.delta async for c in stream])
    assert text == 'echo: sum it\'s "this"'
    async with client.stream_docsum(files=[("f.txt", b"file only")]) as stream:
        text = "".join([c.delta async for c in stream])
    assert text == "echo: file only"
    assert server.state["opea_docsum_form"]["fields"]["stream"] == "true"


async def test_faqgen_always_sends_a_form(client: OPEA, server: FakeServer) -> None:
    r = await client.faqgen("Some facts.", max_tokens=128)
    assert r.text == "echo: Some facts."
    assert r.model == "faqgen"
    assert "multipart/form-data" in server.requests[-1].headers["Content-Type"]
    fields = server.state["opea_faqgen_form"]["fields"]
    assert fields == {"messages": "Some facts.", "max_tokens": "128", "stream": "false"}
    async with client.stream_faqgen("café ☕", files=[("x.txt", b" + file")]) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.delta for c in chunks) == "echo: café ☕ + file"
    assert len([c for c in chunks if c.delta]) >= 2


@pytest.mark.parametrize(
    ("call", "args", "kwargs"),
    [
        ("docsum", ("",), {}),
        ("faqgen", ("   ",), {}),
        ("docsum", ("x",), {"summary_type": "poem"}),
        ("docsum", ("x",), {"chunk_overlap": -1}),
        ("docsum", ("x",), {"files": ["/no/such/file.txt"]}),
        ("faqgen", ("x",), {"files": [("name", "not bytes")]}),
        ("faqgen", ("x",), {"files": "one.txt"}),
        ("faqgen", (42,), {}),
    ],
)
async def test_document_calls_check_their_input(
    client: OPEA, server: FakeServer, call: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await getattr(client, call)(*args, **kwargs)
    with pytest.raises(asyncllm.ConfigurationError):
        getattr(client, f"stream_{call}")(*args, **kwargs)
    assert server.request_count == 0


async def test_json_answer_to_a_stream_request_is_one_chunk() -> None:
    def handler(request: Any) -> MockResponse:
        return MockResponse(
            200,
            json={
                "model": "chatqna",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}}],
            },
            headers={"Content-Type": "application/json"},
        )

    chunks = await read_stream(OPEA(transport=MockTransport(handler), max_retries=0))
    assert [(c.delta, c.finish_reason) for c in chunks] == [("whole", "stop")]


async def test_multipart_body_is_rebuilt_for_a_retry(client: OPEA, server: FakeServer) -> None:
    server.fail_next(2, status=503)
    r = await client.faqgen("retry me", files=[("r.txt", b" with file")])
    assert r.text == "echo: retry me with file"
    assert server.request_count == 3
    assert server.requests[0].body == server.requests[2].body.replace(
        *_boundaries(server.requests[2].body, server.requests[0].body)
    )


def _boundaries(later: bytes, first: bytes) -> tuple[bytes, bytes]:
    return later.split(b"\r\n", 1)[0], first.split(b"\r\n", 1)[0]


async def test_stream_faqgen_retries_before_the_first_chunk(
    client: OPEA, server: FakeServer
) -> None:
    server.fail_next(1, status=429, retry_after="0")
    async with client.stream_faqgen("again", files=[("a.txt", b"!")]) as stream:
        text = "".join([c.delta async for c in stream])
    assert text == "echo: again!"
    assert server.request_count == 2


# -- gateway errors ---------------------------------------------------------------------------


async def test_gateway_error_bodies(client: OPEA, server: FakeServer) -> None:
    server.fail_next(1, status=404)
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.chatqna("q")
    assert info.value.message == "injected 404"  # read from {"detail": ...}
    server.fail_next(
        1,
        status=422,
        body={
            "detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]
        },
    )
    with pytest.raises(asyncllm.UnprocessableEntityError) as info422:
        await client.chatqna("q")
    assert info422.value.message == "body.messages: Field required"
    assert info422.value.error_type == "missing"


async def test_gateway_plain_text_500(server: FakeServer) -> None:
    async with opea_on(server, max_retries=0) as client:
        with pytest.raises(asyncllm.InternalServerError) as info:
            await client._parts.gateway._request(
                "raw", "POST", "/v1/chatqna", lambda p, m: p, {}, body={"no": "messages"}
            )
    assert info.value.body == "Internal Server Error"
    assert "cannot be read" in info.value.message and "microservice" in info.value.message


# What OPEA's gateway cannot read, and answers with a bare 500 (as opea-comps 1.5 does; see
# tests/interop/test_opea_comps.py): ChatCompletionRequest's checks and the prompt's roles.
UNREADABLE_BODIES: list[Any] = [
    {},
    {"messages": 42},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": ["not a message"]},
    {"messages": "q", "k": "many"},
    {"messages": "q", "k": 0},
    {"messages": "q", "k": None},
    {"messages": "q", "top_n": 2.5},
    {"messages": "q", "fetch_k": "1e1"},
    {"messages": "q", "max_tokens": 0},
    {"messages": "q", "seed": 0},
    {"messages": "q", "temperature": -1},
    {"messages": "q", "top_p": "high"},
]
READABLE_BODIES: list[Any] = [
    {"messages": "q", "k": "2", "top_n": 2.0, "temperature": "0.5"},
    {"messages": "q", "k": True, "max_tokens": None, "top_k": None},
]


@pytest.mark.parametrize("route", ["/v1/chatqna", "/v1/codegen"])
async def test_fake_gateway_reads_a_body_as_opea_does(server: FakeServer, route: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for body in UNREADABLE_BODIES + READABLE_BODIES:
            async with session.post(server.url(route), json={**body, "stream": False}) as r:
                answer = await r.text()
                if body in UNREADABLE_BODIES:
                    assert (r.status, answer) == (500, "Internal Server Error"), body
                    assert r.content_type == "text/plain", body
                else:
                    assert r.status == 200, body


async def test_fake_gateway_llm_failures_as_opea_sends_them(server: FakeServer) -> None:
    """``state["opea_llm_failures"]``: the wire of a gateway whose LLM failed (opea-comps 1.5)."""
    import aiohttp

    cases = [
        ("/v1/chatqna", True, 200, b"data: [DONE]\n\n"),
        ("/v1/codegen", True, 200, b""),
        ("/v1/chatqna", False, 500, b"Internal Server Error"),
        ("/v1/codegen", False, 500, b"Internal Server Error"),
    ]
    async with aiohttp.ClientSession() as session:
        for route, stream, status, wire in cases:
            server.state["opea_llm_failures"] = 1
            body = {"messages": "q", "stream": stream}
            async with session.post(server.url(route), json=body) as r:
                assert (r.status, await r.read()) == (status, wire), (route, stream)
            assert server.state["opea_llm_failures"] == 0
            async with session.post(server.url(route), json=body) as r:
                assert r.status == 200 and b"echo:" in await r.read()  # the next one is answered


async def test_a_bare_500_is_retried_but_spares_the_breaker(
    server: FakeServer, dispatcher: asyncllm.Dispatcher
) -> None:
    """OPEA answers a request it cannot read as it answers a failed microservice: a bare 500.
    It says nothing certain of the gateway's health, so its breaker does not hear of it."""
    async with opea_on(
        server,
        retry=NO_WAIT,
        breaker=asyncllm.BreakerConfig(failure_threshold=2, reset_timeout=60),
        dispatcher=dispatcher,
    ) as client:
        for _ in range(3):
            with pytest.raises(asyncllm.InternalServerError) as info:
                await client.chatqna("q", extra_body={"k": "many"})
            assert info.value.attempts == NO_WAIT.max_retries + 1
            assert info.value.circuit_open is None
        assert dispatcher.stats()["opea-gateway"].breaker == "closed"
        assert (await client.chatqna("q")).text == "echo: q"
        # A 5xx with a body is the gateway's own word: it counts.
        server.fail_next(2 * (NO_WAIT.max_retries + 1), status=503)
        for _ in range(2):
            with pytest.raises(asyncllm.InternalServerError):
                await client.chatqna("q")
        assert dispatcher.stats()["opea-gateway"].breaker == "open"


async def test_a_failed_llm_behind_the_gateway(server: FakeServer) -> None:
    """``state["opea_llm_failures"]``: the gateway's LLM fails as OPEA reports it: a bare 500
    for a whole answer, a 200 stream with no answer in it (only [DONE] for ChatQnA, nothing for
    CodeGen), which the client reads as the failure it is and retries."""
    async with opea_on(server, max_retries=0) as client:
        server.state["opea_llm_failures"] = 1
        with pytest.raises(asyncllm.InternalServerError):
            await client.chatqna("q")
        for stream in (client.stream_chatqna, client.stream_codegen):
            server.state["opea_llm_failures"] = 1
            with pytest.raises(asyncllm.APIConnectionError, match="LLM microservice") as info:
                async with stream("q") as chunks:
                    async for _ in chunks:
                        pass
            assert info.value.request_id == server.request_ids[-1]
    assert [r.path for r in server.requests] == ["/v1/chatqna", "/v1/chatqna", "/v1/codegen"]
    async with opea_on(server, retry=NO_WAIT) as client:
        server.state["opea_llm_failures"] = 1
        async with client.stream_chatqna("q") as chunks:
            assert "".join([c.delta async for c in chunks]) == "echo: q"
    assert server.state["opea_llm_failures"] == 0


async def test_malformed_stream_is_a_typed_error(client: OPEA, server: FakeServer) -> None:
    server.malformed_next(1)
    with pytest.raises(asyncllm.ResponseValidationError) as info:
        async with client.stream_chatqna("q") as stream:
            async for _ in stream:
                pass
    assert info.value.request_id == server.request_ids[-1]


# -- the stream parser, against hostile servers ----------------------------------------------------


def stream_client(*lines: bytes, **kwargs: Any) -> OPEA:
    body = b"".join(lines)

    def handler(request: Any) -> MockResponse:
        # Cut the body into small uneven pieces so lines arrive split.
        chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
        return MockResponse(200, chunks=chunks, headers={"Content-Type": "text/event-stream"})

    kwargs.setdefault("max_retries", 0)
    return OPEA(transport=MockTransport(handler), **kwargs)


async def read_stream(client: OPEA) -> list[asyncllm.ChatChunk]:
    async with client, client.stream_chatqna("q") as stream:
        return [c async for c in stream]


@pytest.fixture
def no_evaluation(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail loudly if anything evaluates Python while the parser runs."""
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called")

        return call

    monkeypatch.setattr(builtins, "eval", forbidden("eval"))
    monkeypatch.setattr(builtins, "exec", forbidden("exec"))
    monkeypatch.setattr(ast, "literal_eval", forbidden("ast.literal_eval"))
    return calls


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([rb"data: b'it\'s'"], "it's"),
        ([rb'data: b"say \"hi\""'], 'say "hi"'),
        ([rb"data: b'a\nb\tc\\d\re'"], "a\nb\tc\\d\re"),
        ([rb"data: b'\xe2\x98\x95 \x63af\xc3\xa9'"], "☕ café"),
        ([rb"data: b'\xe2\x98'", rb"data: b'\x95'"], "☕"),  # a character split across events
        ([rb"data: b'\101\102\0'"], "AB\x00"),
        ([rb"data: b'unknown \q escape'"], "unknown \\q escape"),
        # OPEA's guardrail fallback writes "data: b'" + text + "'" with nothing escaped:
        (["data: b'I'm sorry, café'".encode()], "I'm sorry, café"),
        ([b"data:b'no space'"], "no space"),
        ([b'data: {"choices":[{"index":0,"delta":{"content":"json"}}]}'], "json"),
        ([b'data: {"choices":[{"index":0,"text":"legacy"}]}'], "legacy"),
        ([b'data: {"ops":[{"op":"add","path":"/x","value":"ops text"}]}'], "ops text"),
        ([b'data: "a json string"'], "a json string"),
        ([b'data: {"object":"unrelated"}', b"data: b'kept'"], "kept"),
        ([b": a comment", b"event: message", b"id: 3", b"retry: 10", b"data: b'x'"], "x"),
    ],
)
async def test_stream_lines_that_become_text(
    no_evaluation: list[str], lines: list[bytes], expected: str
) -> None:
    body = [line + b"\n\n" for line in lines] + [b"data: [DONE]\n\n"]
    chunks = await read_stream(stream_client(*body))
    assert "".join(c.delta for c in chunks) == expected
    assert chunks[-1].finish_reason == "stop"
    assert no_evaluation == []


@pytest.mark.parametrize(
    "line",
    [
        b"data: __import__('os').system('touch /tmp/asyncllm-opea-pwned')",
        b'data: exec("import os")',
        b"data: (lambda: 1)()",
        b"data: 'a str literal, not bytes'",
        b"data: u'unicode literal'",
        b"data: rb'raw bytes'",
        b"data: f'{__import__(\"os\")}'",
        rb"data: b'unterminated",
        rb"data: b'ends in an escaped quote\'",
        rb"data: b'bad hex \xZZ'",
        rb"data: b'short hex \x4'",
        rb"data: b'octal out of range \777'",
        b"data: b'mismatched quotes\"",
        b"data: 42",
        b"data: [1, 2]",
        b"data: null",
        b'data: {"broken": ',
        b"data: <html>",
    ],
)
async def test_hostile_lines_are_typed_errors(no_evaluation: list[str], line: bytes) -> None:
    with pytest.raises(asyncllm.ResponseValidationError) as info:
        await read_stream(stream_client(b"data: b'before'\n\n", line + b"\n\n"))
    assert info.value.body  # the offending line, for the log
    assert no_evaluation == []
    # os.stat, not asyncio.to_thread: its first use imports the executor module, which needs the
    # exec that no_evaluation has replaced.
    assert not os.path.exists("/tmp/asyncllm-opea-pwned")  # noqa: ASYNC240


async def test_over_long_line_is_refused() -> None:
    line = b"data: b'" + b"x" * 5000 + b"'\n\n"
    with pytest.raises(asyncllm.ResponseValidationError, match="byte limit"):
        await read_stream(stream_client(line, max_line_bytes=1024))


async def test_error_event_in_stream() -> None:
    with pytest.raises(asyncllm.InternalServerError, match="overloaded"):
        await read_stream(
            stream_client(b'data: {"error": {"message": "overloaded", "status": 503}}\n\n')
        )
    with pytest.raises(asyncllm.APIError, match="no retriever"):
        await read_stream(stream_client(b'data: {"detail": "no retriever"}\n\n'))


async def test_stream_without_done_is_cut_short() -> None:
    """A gateway stream ends with [DONE]; one that stops before it lost its tail."""
    with pytest.raises(asyncllm.APIConnectionError, match="stream ended before"):
        await read_stream(stream_client(b"data: b'cut'\n\n"))


@pytest.mark.parametrize("body", [b"data: [DONE]\n\n", b": ping\n\ndata: [DONE]\n\n", b""])
async def test_a_stream_with_no_answer_in_it_is_an_error(body: bytes) -> None:
    """How OPEA reports an LLM that failed after the stream began; not an empty answer."""
    with pytest.raises(asyncllm.APIConnectionError, match="without a piece of an answer"):
        await read_stream(stream_client(body))


async def test_an_empty_answer_is_one_empty_piece() -> None:
    chunks = await read_stream(stream_client(b"data: b''\n\n", b"data: [DONE]\n\n"))
    assert [(c.delta, c.finish_reason) for c in chunks] == [("", "stop")]


@given(st.binary(max_size=200))
def test_bytes_literal_round_trip(data: bytes) -> None:
    assert parse_bytes_literal(repr(data)) == data
    assert parse_bytes_literal(repr(data).encode()) == data


@given(st.text(max_size=100))
def test_text_round_trip(text: str) -> None:
    assert parse_bytes_literal(repr(text.encode("utf-8"))).decode("utf-8") == text


@given(st.binary(max_size=60))
def test_parser_never_raises_anything_but_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_bytes_literal(b"b'" + data + b"'")


# -- microservices ----------------------------------------------------------------------------------


async def test_embed_retrieve_rerank_pipeline(client: OPEA, server: FakeServer) -> None:
    emb = await client.embed(["ChatQnA answers questions from documents.", "other"])
    assert len(emb.vectors) == 2
    assert emb.vectors[0] == _common.vector("ChatQnA answers questions from documents.")
    assert sent(server) == {
        "input": ["ChatQnA answers questions from documents.", "other"],
        "encoding_format": "float",
    }
    found = await client.retrieve("what does chatqna do", emb.vectors[0], k=2)
    assert sent(server)["k"] == 2
    assert len(found.docs) == 2
    assert found.docs[0].text == "ChatQnA answers questions from documents."
    assert found.query == "what does chatqna do"
    ranked = await client.rerank("order documents by relevance", found.docs, top_n=2)
    assert sent(server) == {
        "input": "order documents by relevance",
        "retrieved_docs": [{"text": d.text} for d in found.docs],
        "top_n": 2,
    }
    assert ranked.docs[0].text == "Rerankers order documents by relevance."
    scores = [d.score for d in ranked.docs]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("embed", ([],)),
        ("embed", ([1, 2],)),
        ("retrieve", ("", [0.1])),
        ("retrieve", ("q", [])),
        ("retrieve", ("q", [float("nan")])),
        ("retrieve", ("q", "0.1,0.2")),
        ("rerank", ("q", [])),
        ("rerank", ("q", [{"no": "text"}])),
        ("guardrails", (None,)),
    ],
)
async def test_microservice_bad_input_sends_nothing(
    client: OPEA, server: FakeServer, call: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await getattr(client, call)(*args)
    assert server.request_count == 0


async def test_guardrails(client: OPEA, server: FakeServer) -> None:
    ok = await client.guardrails("a friendly question")
    assert (ok.text, ok.blocked) == ("a friendly question", False)
    blocked = await client.guardrails("something UNSAFE")
    assert blocked.blocked
    assert blocked.text.startswith("Violated policies")
    answer = await client.guardrails("generated text", prompt="the prompt")
    assert sent(server) == {"text": "generated text", "prompt": "the prompt"}
    assert not answer.blocked


async def test_microservice_validation_error(client: OPEA, server: FakeServer) -> None:
    with pytest.raises(asyncllm.UnprocessableEntityError) as info:
        await client._parts.retriever._request(
            "raw", "POST", "/v1/retrieval", lambda p, m: p, {}, body={"embedding": [1.0]}
        )
    assert info.value.message == "body.text: Field required"


# -- dataprep -------------------------------------------------------------------------------------


async def test_ingest_files_and_links(client: OPEA, server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "manual.md"
    path.write_bytes(b"# Manual\nThe pump runs at 3 bar.")
    result = await client.ingest(
        [path, ("raw.txt", b"\x00binary\xffdata", "application/octet-stream")],
        ["https://example.com/page"],
        chunk_size=500,
        chunk_overlap=50,
        process_table=True,
    )
    assert result.status == 200
    assert result.message == "Data preparation succeeded"
    assert server.requests[-1].path == "/v1/dataprep/ingest"
    assert "multipart/form-data" in server.requests[-1].headers["Content-Type"]
    seen = server.state["opea_ingested"][-1]
    assert [(f["filename"], f["data"], f["content_type"]) for f in seen["files"]] == [
        ("manual.md", b"# Manual\nThe pump runs at 3 bar.", "text/markdown"),
        ("raw.txt", b"\x00binary\xffdata", "application/octet-stream"),
    ]
    assert all(f["field"] == "files" for f in seen["files"])
    assert json.loads(seen["fields"]["link_list"]) == ["https://example.com/page"]
    assert seen["fields"]["chunk_size"] == "500"
    assert seen["fields"]["chunk_overlap"] == "50"
    assert seen["fields"]["process_table"] == "true"


async def test_ingested_text_can_be_retrieved(client: OPEA) -> None:
    await client.ingest([("facts.txt", b"The pump runs at 3 bar.")])
    vector = (await client.embed("The pump runs at 3 bar.")).vectors[0]
    found = await client.retrieve("pump pressure", vector, k=1)
    assert [d.text for d in found.docs] == ["The pump runs at 3 bar."]


async def test_ingest_links_only(client: OPEA, server: FakeServer) -> None:
    await client.ingest(links=["http://a.example/x", "https://b.example/y"])
    seen = server.state["opea_ingested"][-1]
    assert seen["files"] == []
    assert seen["links"] == ["http://a.example/x", "https://b.example/y"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"files": []},
        {"links": "https://one.example"},
        {"links": ["ftp://x"]},
        {"files": ["/definitely/not/here.txt"]},
        {"files": [("", b"x")]},
        {"files": [("a.txt", b"x")], "chunk_size": 0},
        {"files": [("a.txt", b"x")], "process_table": "yes"},
    ],
)
async def test_ingest_bad_input_sends_nothing(
    client: OPEA, server: FakeServer, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.ingest(**kwargs)
    assert server.request_count == 0


async def test_ingest_retry_sends_the_files_again(client: OPEA, server: FakeServer) -> None:
    server.fail_next(1, status=500)
    await client.ingest([("again.txt", b"payload")])
    assert server.request_count == 2
    assert server.state["opea_ingested"][-1]["files"][0]["data"] == b"payload"
    assert b"payload" in server.requests[0].body


# -- health ---------------------------------------------------------------------------------------


async def test_health_of_every_service(client: OPEA, server: FakeServer) -> None:
    for service in SERVICES:
        health = await client.health(service)
        assert health.status == 200
        assert health.service == f"opea-{service}"
        assert "Service Title" in health.info
    assert [r.path for r in server.requests] == ["/v1/health_check"] * len(SERVICES)
    assert {r.method for r in server.requests} == {"GET"}


async def test_unhealthy_service_raises(client: OPEA, server: FakeServer) -> None:
    server.fail_next(4, status=503)  # the first try and NO_WAIT's three retries
    with pytest.raises(asyncllm.InternalServerError):
        await client.health("retriever", deadline=5)
    assert server.request_count == 4
    with pytest.raises(asyncllm.ConfigurationError):
        await client.health("vectordb")


# -- one lane per service -----------------------------------------------------------------------


async def test_each_service_is_its_own_lane(client: OPEA, server: FakeServer) -> None:
    dispatcher = client.dispatcher  # make_client's own
    assert dispatcher is not asyncllm.get_dispatcher()
    assert dispatcher.stats() == {}  # nothing made until used
    await client.chatqna("q")
    await client.chat([{"role": "user", "content": "x"}])
    emb = await client.embed("x")
    await client.retrieve("x", emb.vectors[0])
    await client.rerank("x", ["a", "b"])
    stats = dispatcher.stats()
    assert set(stats) == {
        "opea-gateway",
        "opea-llm",
        "opea-embedding",
        "opea-retriever",
        "opea-reranking",
    }
    assert {name: s.succeeded for name, s in stats.items()} == dict.fromkeys(stats, 1)
    await client.aclose()
    assert dispatcher.stats() == {}
    with pytest.raises(asyncllm.ClientClosedError):
        await client.chatqna("q")
    with pytest.raises(asyncllm.ClientClosedError):
        await client.embed("x")


async def test_a_failing_service_opens_only_its_breaker(
    server: FakeServer, dispatcher: asyncllm.Dispatcher
) -> None:
    async with opea_on(
        server,
        max_retries=0,
        breaker=asyncllm.BreakerConfig(failure_threshold=2, reset_timeout=60),
        max_concurrent_requests=3,
        dispatcher=dispatcher,
    ) as client:
        server.fail_next(2, status=503)
        for _ in range(2):
            with pytest.raises(asyncllm.InternalServerError):
                await client.chatqna("q")
        with pytest.raises(asyncllm.CircuitOpenError):
            await client.chatqna("q")
        r = await client.chat([{"role": "user", "content": "still up"}])
        assert r.text == "echo: still up"
        stats = dispatcher.stats()
        assert stats["opea-gateway"].breaker == "open"
        assert stats["opea-llm"].breaker == "closed"
        assert stats["opea-gateway"].max_concurrent == 3
        assert stats["opea-llm"].max_concurrent == 3


async def test_services_have_separate_concurrency(
    server: FakeServer, dispatcher: asyncllm.Dispatcher
) -> None:
    async with opea_on(
        server, max_concurrent_requests=1, dispatcher=dispatcher, retry=NO_WAIT
    ) as client:
        server.faults.latency = 0.05
        await asyncio.gather(
            client.chatqna("a"),
            client.chatqna("b"),
            client.chat([{"role": "user", "content": "c"}]),
            client.chat([{"role": "user", "content": "d"}]),
        )
        assert server.in_flight_by_path == dict.fromkeys(server.in_flight_by_path, 0)
        assert server.max_in_flight == 2  # one per service, never two on one service


async def test_name_prefixes_the_lanes(server: FakeServer, dispatcher: asyncllm.Dispatcher) -> None:
    async with opea_on(server, name="prod", dispatcher=dispatcher) as client:
        await client.health("llm")
        assert set(dispatcher.stats()) == {"prod-llm"}


# -- configuration -------------------------------------------------------------------------------


def test_default_urls_from_spec_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "OPEA_API_ENDPOINT",
        "OPEA_LLM_ENDPOINT",
        "OPEA_EMBEDDING_ENDPOINT",
        "OPEA_RETRIEVER_ENDPOINT",
        "OPEA_RERANKING_ENDPOINT",
        "OPEA_GUARDRAILS_ENDPOINT",
        "OPEA_DATAPREP_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    assert OPEA().base_urls == {
        "gateway": "http://localhost:8888",
        "llm": "http://localhost:9000",
        "embedding": "http://localhost:6000",
        "retriever": "http://localhost:7000",
        "reranking": "http://localhost:8000",
        "guardrails": "http://localhost:9090",
        "dataprep": "http://localhost:5000",
    }


def test_urls_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPEA_API_ENDPOINT", "http://gw.internal:18888/")
    monkeypatch.setenv("OPEA_RERANKING_ENDPOINT", "http://rr.internal:1")
    urls = OPEA(llm_url="http://llm.internal:2").base_urls
    assert urls["gateway"] == "http://gw.internal:18888"
    assert urls["reranking"] == "http://rr.internal:1"
    assert urls["llm"] == "http://llm.internal:2"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "localhost:8888"},
        {"llm_url": "ftp://x"},
        {"retriever_url": "http://bad host\r\n"},
        {"timeout": -1},
        {"name": ""},
        {"api_key": "bad\nkey"},
    ],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        OPEA(**kwargs)


async def test_api_key_is_sent_and_never_shown(server: FakeServer) -> None:
    async with opea_on(server, api_key="opea-secret-key", max_retries=0) as client:
        await client.chatqna("q")
        assert server.requests[-1].headers["Authorization"] == "Bearer opea-secret-key"
        assert "opea-secret-key" not in repr(client)
        assert "opea-secret-key" not in repr(client._parts.gateway.__dict__.get("api_key"))
        server.fail_next(1, status=401)
        with pytest.raises(asyncllm.AuthenticationError) as info:
            await client.embed("x")
        assert "opea-secret-key" not in str(info.value)


async def test_reopen_is_refused(server: FakeServer) -> None:
    client = opea_on(server)
    async with client:
        pass
    with pytest.raises(asyncllm.ClientClosedError):
        async with client:
            pass
    await client.aclose()  # twice is fine


# -- one transport, options checked by name ------------------------------------------------------


async def test_services_share_one_transport_that_the_facade_closes() -> None:
    client = OPEA()
    transports = {id(part._transport) for part in client._parts}
    assert transports == {id(client._transport)}
    assert not any(part._owns_transport for part in client._parts)
    await client.aclose()
    with pytest.raises(asyncllm.ClientClosedError):
        await client._transport.send(None)  # type: ignore[arg-type]


async def test_a_given_transport_is_shared_and_left_open() -> None:
    closed: list[bool] = []
    transport = MockTransport(lambda request: MockResponse(200, json={}))
    transport_close = transport.aclose

    async def aclose() -> None:
        closed.append(True)
        await transport_close()

    transport.aclose = aclose  # type: ignore[method-assign]
    async with OPEA(transport=transport) as client:
        assert {id(part._transport) for part in client._parts} == {id(transport)}
    assert closed == []


def test_the_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        OPEA("http://localhost:8888")  # type: ignore[misc]
    with pytest.raises(TypeError, match="llm_urll"):
        OPEA(llm_urll="http://x")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("call", "args", "kwargs"),
    [
        ("chatqna", ("q",), {"priorty": 1}),
        ("stream_chatqna", ("q",), {"temprature": 0.1}),
        ("codegen", ("q",), {"index": "x"}),
        ("docsum", ("x",), {"sumary_type": "auto"}),
        ("faqgen", ("x",), {"extra_body": {"a": 1}}),  # a form: no JSON body to merge into
        ("stream_faqgen", ("x",), {"extra_body": {"a": 1}}),
        ("chat", ([{"role": "user", "content": "x"}],), {"top_k": 3}),
        ("embed", ("x",), {"dimension": 3}),
        ("retrieve", ("q", [0.1]), {"top_k": 3}),
        ("rerank", ("q", ["a"]), {"k": 3}),
        ("guardrails", ("x",), {"promt": "p"}),
        ("ingest", ([("a.txt", b"x")],), {"chunk_sise": 3}),
        ("health", ("llm",), {"extra_body": {}}),
    ],
)
async def test_a_misspelt_option_is_a_type_error_before_anything_is_sent(
    client: OPEA, server: FakeServer, call: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match=f"{call}\\(\\) got an unexpected keyword argument"):
        result = getattr(client, call)(*args, **kwargs)
        if not isinstance(result, asyncllm.Stream):
            await result
    assert server.request_count == 0


async def test_with_options_reaches_every_service(client: OPEA, server: FakeServer) -> None:
    once = client.with_options(max_retries=0)
    server.fail_next(1, status=503)
    with pytest.raises(asyncllm.InternalServerError):
        await once.chatqna("q")
    server.fail_next(1, status=503)
    with pytest.raises(asyncllm.InternalServerError):
        await once.embed("x")
    assert server.request_count == 2
    server.fail_next(1, status=503)
    assert (await client.embed("x")).vectors  # the client itself still retries
    await once.aclose()  # owns nothing
    assert (await client.chatqna("q")).text == "echo: q"
    await client.aclose()
    with pytest.raises(asyncllm.ClientClosedError):
        await once.chatqna("q")


async def test_transport_settings_build_the_one_shared_transport() -> None:
    c = asyncllm.OPEA(
        base_url="http://127.0.0.1:1",
        proxy="http://127.0.0.1:2",
        max_connections=4,
        trust_env=False,
    )
    assert all(part._transport is c._transport for part in c._parts)
    assert str(c._transport.proxy_for("http://127.0.0.1:1/v1/chatqna")[0]) == "http://127.0.0.1:2"
    await c.aclose()
