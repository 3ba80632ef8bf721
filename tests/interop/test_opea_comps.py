"""``OPEA`` against OPEA's own runtime: ChatQnA- and CodeGen-shaped megaservices built on
``opea-comps`` (its ``ServiceOrchestrator`` and ``MicroService``), wired in
``opea_megaservice.py`` and run in the ``opea`` interop environment (``envs/opea.txt``).

The microservices behind it are our fakes: TEI (``/embed``, ``/rerank``), vLLM (the ChatQnA LLM)
and OPEA's (retriever, guardrails, and the LLM service CodeGen calls). They run on a loop of their
own in a thread, because the megaservice process calls them while a test's loop waits on the
gateway. Where the real orchestrator and our client disagree, the orchestrator is right.

What OPEA itself does, which these tests pin: ChatQnA streams ``repr()`` of each piece's UTF-8
bytes (``data: b''`` first, ``b"..."`` for a piece holding a quote, ``\\xNN`` for non-ASCII); a
request it cannot read and a microservice that is down both come back as a bare 500; an LLM that
fails once ChatQnA has started streaming leaves a 200 holding only ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest

import asyncllm
from asyncllm.backends.opea import OPEA
from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import opea as opea_fake
from asyncllm.testing.fakes import tei as tei_fake
from tests.chat_contract import NO_WAIT
from tests.interop import HERE, clean_environment, group_python

T = TypeVar("T")

STARTUP_SECONDS = 60.0  # the megaservice imports FastAPI, docarray, langchain...
# Quotes of both kinds, a tab, a backslash and non-ASCII: what repr() escapes.
QUESTION = 'What\'s OPEA? It is "open" — café ☕ a\tb \\ end'
REFUSAL = "Violated policies: toxicity, please check your input."


class Fakes:
    """The microservices' fakes, served from a loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tei = self.run(FakeServer("tei").start())
        self.vllm = self.run(FakeServer("vllm").start())
        self.opea = self.run(FakeServer("opea").start())
        # A loopback port bound but never listening: connections to it are refused, and
        # nothing else can take it while the tests run.
        self.down = socket.socket()
        self.down.bind(("127.0.0.1", 0))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the fakes' loop (their state belongs to it)."""

        async def inside() -> T:
            return fn()

        return self.run(inside())

    def urls(self) -> dict[str, str]:
        return {
            "tei": self.tei.base_url,
            "vllm": self.vllm.base_url,
            "opea": self.opea.base_url,
            "down": f"http://127.0.0.1:{self.down.getsockname()[1]}",
        }

    def reset(self) -> None:
        self.call(lambda: [s.reset() for s in (self.tei, self.vllm, self.opea)])

    def paths(self, server: FakeServer) -> list[str]:
        return self.call(lambda: [r.path for r in server.requests])

    def bodies(self, server: FakeServer, path: str) -> list[Any]:
        """The JSON bodies sent to ``path``, as they went over the wire."""
        return self.call(lambda: [json.loads(r.body) for r in server.requests if r.path == path])

    def close(self) -> None:
        for server in (self.tei, self.vllm, self.opea):
            self.run(server.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.down.close()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    fakes = Fakes()
    try:
        yield fakes
    finally:
        fakes.close()


def _start(python: str, urls: dict[str, str], log: Any) -> tuple[subprocess.Popen[bytes], int]:
    """Start the megaservice and wait, within ``STARTUP_SECONDS``, for the port it prints."""
    proc = subprocess.Popen(
        [python, os.path.join(HERE, "opea_megaservice.py"), json.dumps(urls)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_environment(LOGFLAG="", TELEMETRY_ENDPOINT=""),
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        log.seek(0)
        for line in log.read().decode(errors="replace").splitlines():
            if line.startswith('{"port":'):
                return proc, int(json.loads(line)["port"])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
    pytest.fail(f"the OPEA megaservice did not start within {STARTUP_SECONDS} s:\n{tail}")


@pytest.fixture(scope="module")
def gateway(fakes: Fakes) -> Iterator[str]:
    """The megaservice's base URL; it is killed when the module's tests are done."""
    python = group_python("opea")
    with tempfile.TemporaryFile() as log:
        proc, port = _start(python, fakes.urls(), log)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(autouse=True)
def _fresh_fakes(fakes: Fakes) -> None:
    fakes.reset()


def client_for(url: str, fakes: Fakes, **options: Any) -> OPEA:
    """A client on its own dispatcher (so its breakers are its own), retries without waiting."""
    options.setdefault("retry", NO_WAIT)
    return OPEA(
        base_url=url,
        guardrails_url=fakes.opea.base_url,
        dispatcher=asyncllm.Dispatcher(),
        **options,
    )


async def raw_post(url: str, body: Any) -> tuple[int, str, bytes]:
    """What the gateway sends, byte for byte."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def read(stream: Any) -> list[asyncllm.ChatChunk]:
    async with stream:
        return [chunk async for chunk in stream]


# -- ChatQnA --------------------------------------------------------------------------------------


async def test_chatqna_runs_the_whole_pipeline(gateway: str, fakes: Fakes) -> None:
    async with client_for(gateway, fakes) as client:
        r = await client.chatqna("What is OPEA?", k=2, top_n=1, max_tokens=64, temperature=0.2)
    assert r.model == "chatqna"
    assert r.finish_reason == "stop"
    # TEI embedded the question, OPEA's retriever found k documents, TEI ranked them, and the
    # best one reached vLLM in the prompt, which the fake echoes.
    assert fakes.bodies(fakes.tei, "/embed") == [{"inputs": "What is OPEA?"}]
    [retrieval] = fakes.bodies(fakes.opea, "/v1/retrieval")
    assert retrieval["text"] == "What is OPEA?" and retrieval["k"] == 2
    [rerank] = fakes.bodies(fakes.tei, "/rerank")
    assert rerank["query"] == "What is OPEA?" and len(rerank["texts"]) == 2
    best = max(rerank["texts"], key=lambda t: tei_fake.rerank_score("What is OPEA?", t))
    [llm] = fakes.bodies(fakes.vllm, "/v1/chat/completions")
    assert llm["max_tokens"] == 64 and llm["temperature"] == 0.2 and llm["stream"] is False
    prompt = f"Context: {best}\nQuestion: What is OPEA?"
    assert llm["messages"] == [{"role": "user", "content": prompt}]
    assert r.text == f"echo: {prompt}"


async def test_chatqna_takes_messages_and_a_template(gateway: str, fakes: Fakes) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    async with client_for(gateway, fakes) as client:
        r = await client.chatqna(messages, chat_template="Q={question}")
    # OPEA folds the conversation into one prompt: the system text, then "role: text" lines.
    assert r.text == "echo: Q=Be brief.\nuser: first\nassistant: ok\nuser: second\n"


async def test_stream_chatqna_reads_what_opea_writes(gateway: str, fakes: Fakes) -> None:
    status, ctype, wire = await raw_post(f"{gateway}/v1/chatqna", {"messages": QUESTION})
    assert status == 200 and ctype.startswith("text/event-stream")
    lines = [line for line in wire.split(b"\n\n") if line]
    assert lines[0] == b"data: b''"  # vLLM's first chunk: the role, with empty content
    assert lines[-1] == b"data: [DONE]"
    assert b'data: b"' in wire  # a piece holding a single quote
    assert b"\\xe2\\x80\\x94" in wire and b"\\xe2\\x98\\x95" in wire  # "—" and "☕"
    assert b"\\t" in wire and b"\\\\" in wire

    async with client_for(gateway, fakes) as client:
        whole = await client.chatqna(QUESTION)
        chunks = await read(client.stream_chatqna(QUESTION))
    text = "".join(c.delta for c in chunks)
    assert text == whole.text
    assert text.endswith(f"Question: {QUESTION}")
    assert chunks[-1].finish_reason == "stop"
    assert all(c.finish_reason is None for c in chunks[:-1])


# -- CodeGen --------------------------------------------------------------------------------------


async def test_codegen(gateway: str, fakes: Fakes) -> None:
    async with client_for(gateway, fakes) as client:
        r = await client.codegen("def add(a, b):", max_tokens=32)
        chunks = await read(client.stream_codegen("def add(a, b):"))
    assert r.text == "echo: def add(a, b):"
    assert r.model == "codegen"
    assert "".join(c.delta for c in chunks) == r.text
    assert chunks[-1].finish_reason == "stop"
    assert all(isinstance(c.raw, dict) for c in chunks)  # the LLM service's chunks, passed on
    llm = fakes.bodies(fakes.opea, "/v1/chat/completions")
    assert [b["stream"] for b in llm] == [False, True]
    assert llm[0]["max_tokens"] == 32


async def test_codegen_grounded_in_an_index(gateway: str, fakes: Fakes) -> None:
    async with client_for(gateway, fakes) as client:
        r = await client.codegen("sort a list", index_name="repo")
    [retrieval] = fakes.bodies(fakes.opea, "/v1/retrieval")
    assert retrieval["index_name"] == "repo" and retrieval["text"] == "sort a list"
    assert fakes.bodies(fakes.opea, "/v1/embeddings") == [{"input": "sort a list"}]
    assert r.text.startswith("echo: Context: ") and r.text.endswith("Question: sort a list")
    for doc in opea_fake.DEFAULT_DOCS:
        assert doc in r.text


# -- guardrails -----------------------------------------------------------------------------------


async def test_guardrails_let_a_question_through(gateway: str, fakes: Fakes) -> None:
    async with client_for(f"{gateway}/guarded", fakes) as client:
        check = await client.guardrails("What is OPEA?")
        r = await client.chatqna("What is OPEA?")
    assert not check.blocked
    assert r.text.startswith("echo: Context: ") and r.text.endswith("Question: What is OPEA?")
    assert fakes.bodies(fakes.opea, "/v1/guardrails")[-1]["text"] == "What is OPEA?"


async def test_guardrails_block_a_question(gateway: str, fakes: Fakes) -> None:
    question = "something unsafe"
    status, _, wire = await raw_post(f"{gateway}/guarded/v1/chatqna", {"messages": question})
    # The guardrail's text, as OPEA writes it: pasted between b'...', not repr()'d.
    assert status == 200 and wire == f"data: b'{REFUSAL}'\n\ndata: [DONE]\n\n".encode()
    async with client_for(f"{gateway}/guarded", fakes) as client:
        check = await client.guardrails(question)
        whole = await client.chatqna(question)
        chunks = await read(client.stream_chatqna(question))
    assert check.blocked and check.text == REFUSAL
    assert whole.text == REFUSAL
    assert "".join(c.delta for c in chunks) == REFUSAL
    assert chunks[-1].finish_reason == "stop"
    # Nothing past the guardrail ran.
    assert fakes.paths(fakes.tei) == [] and fakes.paths(fakes.vllm) == []


# -- failures -------------------------------------------------------------------------------------

BREAKER = asyncllm.BreakerConfig(failure_threshold=2, reset_timeout=60)


async def test_a_microservice_that_is_down(gateway: str, fakes: Fakes) -> None:
    """OPEA answers a bare 500 when a microservice cannot be reached: a typed error that says
    what OPEA's 500 can mean, retried, and not held against the gateway's breaker (the same 500
    answers a request OPEA cannot read)."""
    dispatcher = asyncllm.Dispatcher()
    async with OPEA(
        base_url=f"{gateway}/retriever-down", breaker=BREAKER, retry=NO_WAIT, dispatcher=dispatcher
    ) as client:
        for _ in range(3):
            with pytest.raises(asyncllm.InternalServerError) as info:
                await client.chatqna("What is OPEA?")
            error = info.value
            assert error.status_code == 500 and error.attempts == NO_WAIT.max_retries + 1
            assert "microservice" in error.message and error.circuit_open is None
        assert dispatcher.stats()["opea-gateway"].breaker == "closed"
    # The retriever is down, so nothing after it ran; the embedding before it did.
    assert fakes.paths(fakes.vllm) == []
    assert fakes.paths(fakes.tei) == ["/embed"] * (3 * (NO_WAIT.max_retries + 1))
    await dispatcher.aclose()


async def test_the_llm_down_before_a_stream(gateway: str, fakes: Fakes) -> None:
    async with client_for(f"{gateway}/llm-down", fakes, max_retries=0) as client:
        with pytest.raises(asyncllm.InternalServerError):
            await read(client.stream_chatqna("What is OPEA?"))
        with pytest.raises(asyncllm.InternalServerError):
            await client.chatqna("What is OPEA?")


async def test_a_request_opea_cannot_read_is_a_500_that_spares_the_breaker(
    gateway: str, fakes: Fakes
) -> None:
    status, ctype, body = await raw_post(f"{gateway}/v1/chatqna", {"messages": "q", "k": "many"})
    assert (status, body) == (500, b"Internal Server Error") and ctype.startswith("text/plain")
    dispatcher = asyncllm.Dispatcher()
    async with OPEA(
        base_url=gateway, breaker=BREAKER, max_retries=0, dispatcher=dispatcher
    ) as client:
        for _ in range(3):
            with pytest.raises(asyncllm.InternalServerError):
                await client.chatqna("q", extra_body={"k": "many"})
        assert dispatcher.stats()["opea-gateway"].breaker == "closed"
        r = await client.chatqna("What is OPEA?")
    assert r.text.endswith("Question: What is OPEA?")
    await dispatcher.aclose()


async def test_an_llm_failure_once_streaming_is_an_error(gateway: str, fakes: Fakes) -> None:
    fakes.call(lambda: fakes.vllm.fail_next(1, status=500))
    status, _, wire = await raw_post(f"{gateway}/v1/chatqna", {"messages": "q"})
    assert (status, wire) == (200, b"data: [DONE]\n\n")  # what OPEA makes of it

    async with client_for(gateway, fakes, max_retries=0) as client:
        fakes.call(lambda: fakes.vllm.fail_next(1, status=503))
        with pytest.raises(asyncllm.APIConnectionError, match="LLM"):
            await read(client.stream_chatqna("What is OPEA?"))
    # Nothing reached the caller, so a retry is safe, and it gets the whole answer.
    async with client_for(gateway, fakes) as client:
        fakes.call(lambda: fakes.vllm.fail_next(1, status=500))
        chunks = await read(client.stream_chatqna("What is OPEA?"))
    assert "".join(c.delta for c in chunks).endswith("Question: What is OPEA?")


async def test_a_codegen_llm_failure_once_streaming_is_an_error(gateway: str, fakes: Fakes) -> None:
    """CodeGen passes its LLM's stream on as it is: a failed LLM leaves a 200 with no body."""
    fakes.call(lambda: fakes.opea.fail_next(1, status=500))
    assert await raw_post(f"{gateway}/v1/codegen", {"messages": "q"}) == (
        200,
        "text/event-stream; charset=utf-8",
        b"",
    )
    async with client_for(gateway, fakes, max_retries=0) as client:
        fakes.call(lambda: fakes.opea.fail_next(1, status=500))
        with pytest.raises(asyncllm.APIConnectionError):
            await read(client.stream_codegen("def add(a, b):"))


# -- our fake, answering as OPEA does -------------------------------------------------------------

UNREADABLE: list[Any] = [
    {},
    {"messages": 42},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": "q", "k": "many"},
    {"messages": "q", "k": 0},
    {"messages": "q", "k": None},
    {"messages": "q", "top_n": 2.5},
    {"messages": "q", "max_tokens": 0},
    {"messages": "q", "temperature": -1},
    {"messages": "q", "seed": 0},
]
READABLE: list[Any] = [
    {"messages": "q", "k": "2"},
    {"messages": "q", "temperature": True, "top_k": None},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
]


@pytest.mark.parametrize("route", ["/v1/chatqna", "/v1/codegen"])
@pytest.mark.parametrize("body", UNREADABLE + READABLE)
async def test_the_fake_reads_requests_as_opea_does(
    gateway: str, fakes: Fakes, route: str, body: Any
) -> None:
    expected = 500 if body in UNREADABLE else 200
    if isinstance(body, dict) and body:
        body = {**body, "stream": False}
    real = await raw_post(gateway + route, body)
    fake = await raw_post(fakes.opea.url(route), body)
    assert real[0] == fake[0] == expected
    if real[0] == 500:
        assert real[1:] == fake[1:]  # a bare text/plain "Internal Server Error"


async def test_the_fake_streams_and_fails_as_opea_does(gateway: str, fakes: Fakes) -> None:
    def first_line(wire: bytes) -> bytes:
        return wire.split(b"\n\n", 1)[0]

    real = await raw_post(f"{gateway}/v1/chatqna", {"messages": "q"})
    fake = await raw_post(fakes.opea.url("/v1/chatqna"), {"messages": "q"})
    assert first_line(real[2]) == first_line(fake[2]) == b"data: b''"

    for route, body in [
        ("/v1/chatqna", {"messages": "q"}),
        ("/v1/chatqna", {"messages": "q", "stream": False}),
        ("/v1/codegen", {"messages": "q"}),
        ("/v1/codegen", {"messages": "q", "stream": False}),
    ]:
        llm = fakes.vllm if route == "/v1/chatqna" else fakes.opea
        fakes.call(functools.partial(llm.fail_next, 1, status=500))
        real = await raw_post(gateway + route, body)
        fakes.call(lambda: fakes.opea.state.update(opea_llm_failures=1))
        fake = await raw_post(fakes.opea.url(route), body)
        assert real == fake, (route, body)
