"""Failures that tell the truth, stream half: a stream that ends before its protocol's end is an
error (never a short "complete" answer), a JSON body where an event stream was asked for is read
as the error (or the wrong answer) it is, and a 3xx is an error that is never followed.

Every server here is a hostile one on loopback, started by the test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

import asyncllm
from asyncllm.backends.opea import OPEA
from asyncllm.testing import FakeServer

MESSAGES = [{"role": "user", "content": "hi"}]
NO_WAIT = asyncllm.RetryConfig(max_retries=3, initial_delay=0.0, max_delay=0.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hostile:
    """A local server answering every path with ``handler``; counts what it was sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests.append((request.method, request.path, dict(request.headers)))
        return await self.handler(request)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Hostile:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def send_events(
    request: web.Request, chunks: list[bytes], content_type: str = "text/event-stream"
) -> web.StreamResponse:
    """``chunks`` one write each, then a proper chunked end: the server says "that was all"."""
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(chunk)
        await asyncio.sleep(0)
    await resp.write_eof()
    return resp


def sse(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def openai_chunk(text: str | None, finish: str | None = None, index: int = 0) -> bytes:
    delta = {} if text is None else {"content": text}
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    return sse({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]})


DONE = b"data: [DONE]\n\n"


async def read(stream: asyncllm.Stream[Any]) -> tuple[list[Any], BaseException | None]:
    """The chunks a caller got, and the error that ended the stream (None: it completed)."""
    got: list[Any] = []
    try:
        async with stream:
            async for chunk in stream:
                got.append(chunk)
    except asyncllm.AsyncLLMError as exc:
        return got, exc
    return got, None


def texts(chunks: list[Any]) -> str:
    return "".join(getattr(c, "delta", "") or "" for c in chunks)


# The OpenAI-shaped clients, each with its chat stream at whatever path it uses.
OPENAI_SHAPED: dict[str, Callable[[str], Any]] = {
    "openai": lambda url: asyncllm.OpenAI(
        api_key="sk-test", base_url=url, model="m", retry=NO_WAIT
    ),
    "groq": lambda url: asyncllm.Groq(api_key="gsk-test", base_url=url, model="m", retry=NO_WAIT),
    "vllm": lambda url: asyncllm.VLLM(base_url=url, model="m", retry=NO_WAIT),
    "tgi": lambda url: asyncllm.TGI(base_url=url, retry=NO_WAIT),
    "ovms": lambda url: asyncllm.OVMS(base_url=url, model="m", retry=NO_WAIT),
    "opea": lambda url: OPEA(llm_url=url, retry=NO_WAIT),
}


def last_record(client: Any, stream: asyncllm.Stream[Any]) -> asyncllm.RequestRecord:
    record = client.dispatcher.tracker.get(stream.request_id)
    assert record is not None
    return record  # type: ignore[no-any-return]


# -- 1. a stream that ends before its protocol's end ---------------------------------------------


@pytest.mark.parametrize("name", sorted(OPENAI_SHAPED))
async def test_openai_shaped_stream_cut_before_done_is_an_error(name: str) -> None:
    """Two chunks, then the server ends the body (a clean chunked end) with no [DONE] and no
    finish_reason: the caller gets both chunks, then APIConnectionError, and the tracker says
    FAILED. It used to end quietly as a complete answer ("Hello" cut to "Hel lo")."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, [openai_chunk("Hel"), openai_chunk("lo")])

    async with Hostile(handler) as server:
        client = OPENAI_SHAPED[name](server.url("/v1"))
        try:
            stream = client.stream_chat(MESSAGES)
            got, error = await read(stream)
            assert texts(got) == "Hello"
            assert isinstance(error, asyncllm.APIConnectionError), error
            assert "stream ended before" in error.message
            assert error.request_id == stream.request_id
            assert len(server.requests) == 1  # chunks reached the caller: never retried
            assert last_record(client, stream).status is asyncllm.RequestStatus.FAILED
        finally:
            await client.aclose()


async def test_openai_stream_cut_by_a_closed_connection_is_an_error() -> None:
    """An HTTP/1.1 answer with neither length nor chunking ends when the server closes the
    connection: indistinguishable from the end for the HTTP layer, a truncation for SSE."""
    body = openai_chunk("partial")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = asyncllm.OpenAI(
        api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0
    )
    try:
        got, error = await read(client.stream_chat(MESSAGES))
        assert texts(got) == "partial"
        assert isinstance(error, asyncllm.APIConnectionError), error
        assert "stream ended before" in error.message
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_openai_stream_ends_on_finish_reason_of_every_choice_without_done() -> None:
    """Some compatible servers never send [DONE]: a finish_reason on every choice seen ends the
    stream as well. One choice left unfinished is a truncation."""
    finished = [openai_chunk("a", index=0), openai_chunk("b", index=1)]
    finished += [openai_chunk(None, "stop", index=0), openai_chunk(None, "length", index=1)]
    one_open = [openai_chunk("a", index=0), openai_chunk("b", index=1)]
    one_open += [openai_chunk(None, "stop", index=0)]
    answers = [finished, one_open]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, answers.pop(0))

    async with Hostile(handler) as server:
        client = OPENAI_SHAPED["openai"](server.url("/v1"))
        try:
            got, error = await read(client.stream_chat(MESSAGES, n=2))
            assert error is None and [c.finish_reason for c in got][-1] == "length"
            got, error = await read(client.stream_chat(MESSAGES, n=2))
            assert isinstance(error, asyncllm.APIConnectionError), error
        finally:
            await client.aclose()


async def test_a_stream_cut_before_its_first_chunk_is_retried() -> None:
    """Nothing reached the caller, so the truncation is retried like any connection failure."""
    answers = [[b": keep-alive\n\n"], [openai_chunk("whole"), openai_chunk(None, "stop"), DONE]]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, answers.pop(0))

    async with Hostile(handler) as server:
        client = OPENAI_SHAPED["openai"](server.url("/v1"))
        try:
            got, error = await read(client.stream_chat(MESSAGES))
            assert error is None and texts(got) == "whole"
            assert len(server.requests) == 2
        finally:
            await client.aclose()


def gemini_event(text: str, finish: str | None = None) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    candidate["index"] = 0
    if finish is not None:
        candidate["finishReason"] = finish
    return sse({"candidates": [candidate], "modelVersion": "gemini-x"})


async def test_gemini_stream_without_a_finish_reason_is_an_error() -> None:
    answers = [
        [gemini_event("Hel"), gemini_event("lo")],
        [gemini_event("Hel"), gemini_event("lo", "STOP")],
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, answers.pop(0))

    async with Hostile(handler) as server:
        client = asyncllm.Gemini(api_key="g-test", base_url=server.url(), retry=NO_WAIT)
        try:
            got, error = await read(client.stream_chat(MESSAGES, model="gemini-x"))
            assert texts(got) == "Hello"
            assert isinstance(error, asyncllm.APIConnectionError), error
            assert "stream ended before" in error.message
            got, error = await read(client.stream_chat(MESSAGES, model="gemini-x"))
            assert error is None and got[-1].finish_reason == "stop"
        finally:
            await client.aclose()


def tgi_token(i: int, text: str, final: str | None = None) -> bytes:
    event = {
        "index": i,
        "token": {"id": i, "text": text, "logprob": -0.1, "special": False},
        "generated_text": final,
        "details": None,
    }
    return b"data:" + json.dumps(event).encode() + b"\n\n"


async def test_tgi_generate_stream_without_its_final_token_is_an_error() -> None:
    """TGI's native stream ends with a token carrying ``generated_text`` (and ``details`` when
    asked for); without it the generation was cut."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, [tgi_token(0, "Hel"), tgi_token(1, "lo")])

    async with Hostile(handler) as server:
        client = asyncllm.TGI(base_url=server.url(), retry=NO_WAIT)
        try:
            got, error = await read(client.stream_generate("Say hello"))
            assert [t.token.text for t in got] == ["Hel", "lo"]
            assert isinstance(error, asyncllm.APIConnectionError), error
            assert "stream ended before" in error.message
        finally:
            await client.aclose()


@pytest.mark.parametrize("details", [False, True])
async def test_tgi_generate_stream_of_the_fake_still_completes(details: bool) -> None:
    async with FakeServer("tgi") as server:
        client = asyncllm.TGI(base_url=server.url(), retry=NO_WAIT)
        try:
            got, error = await read(client.stream_generate("one two three", details=details))
            assert error is None and got[-1].generated_text
        finally:
            await client.aclose()


async def test_opea_gateway_stream_without_done_is_an_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, [b"data: b'Hel'\n\n", b"data: b'lo'\n\n"])

    async with Hostile(handler) as server:
        client = OPEA(base_url=server.url(), retry=NO_WAIT)
        try:
            got, error = await read(client.stream_chatqna("hi"))
            assert texts(got) == "Hello"
            assert isinstance(error, asyncllm.APIConnectionError), error
            assert "stream ended before" in error.message
        finally:
            await client.aclose()


async def test_claude_and_ollama_streams_cut_short_still_raise() -> None:
    claude_events = [
        sse({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {}}}),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            }
        ),
    ]
    ollama_lines = [b'{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}\n']

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            return await send_events(request, ollama_lines, "application/x-ndjson")
        return await send_events(request, claude_events)

    async with Hostile(handler) as server:
        claude = asyncllm.Claude(api_key="sk-ant", base_url=server.url(), model="c", retry=NO_WAIT)
        ollama = asyncllm.Ollama(base_url=server.url(), model="m", retry=NO_WAIT)
        try:
            for stream in (claude.stream_chat(MESSAGES), ollama.stream_chat(MESSAGES)):
                got, error = await read(stream)
                assert texts(got) == "Hel"
                assert isinstance(error, asyncllm.APIConnectionError), error
        finally:
            await claude.aclose()
            await ollama.aclose()


# -- 2. a JSON body where an event stream was asked for ------------------------------------------


def json_answer(payload: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handler


ERROR_BODIES: list[tuple[str, Any, type[asyncllm.APIStatusError], int]] = [
    ("openai", {"error": {"message": "no such model", "type": "invalid", "code": "404"}}, asyncllm.NotFoundError, 404),
    ("vllm", {"object": "error", "message": "bad temperature", "type": "BadRequestError", "code": 400}, asyncllm.BadRequestError, 400),
    ("claude", {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}, asyncllm.BadRequestError, 400),
    ("gemini", {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}, asyncllm.PermissionDeniedError, 403),
]  # fmt: skip


def stream_of(name: str, url: str) -> tuple[Any, asyncllm.Stream[Any]]:
    if name == "claude":
        client: Any = asyncllm.Claude(api_key="sk-ant", base_url=url, model="c", retry=NO_WAIT)
        return client, client.stream_chat(MESSAGES)
    if name == "gemini":
        client = asyncllm.Gemini(api_key="g-test", base_url=url, retry=NO_WAIT)
        return client, client.stream_chat(MESSAGES, model="gemini-x")
    client = OPENAI_SHAPED[name](url)
    return client, client.stream_chat(MESSAGES)


@pytest.mark.parametrize(("name", "body", "cls", "status"), ERROR_BODIES, ids=lambda v: str(v)[:8])
async def test_json_error_body_instead_of_a_stream_is_its_status_error(
    name: str, body: Any, cls: type[asyncllm.APIStatusError], status: int
) -> None:
    """A 200 ``application/json`` error body (as some proxies answer a stream request) is the
    error it says, not an empty success (OpenAI) nor a retried "connection error" (Claude)."""
    async with Hostile(json_answer(body)) as server:
        client, stream = stream_of(name, server.url("/v1"))
        try:
            got, error = await read(stream)
            assert got == []
            assert isinstance(error, cls), error
            assert error.status_code == status
            assert error.url is not None and error.url.startswith(server.url())
            assert len(server.requests) == 1
        finally:
            await client.aclose()


@pytest.mark.parametrize("code", ["\u00b2", "700", "busy"])
async def test_json_error_body_naming_no_status_is_an_api_error(code: str) -> None:
    """A ``code`` that is no error status ("²" is a digit to ``str.isdigit``, not to ``int``)
    gives a plain APIError, not retried: no status to go by."""
    body = {"error": {"message": "odd", "code": code}}
    async with Hostile(json_answer(body)) as server:
        client, stream = stream_of("openai", server.url("/v1"))
        try:
            got, error = await read(stream)
            assert got == []
            assert type(error) is asyncllm.APIError, error
            assert error.status_code is None and error.code == code
            assert len(server.requests) == 1
        finally:
            await client.aclose()


@pytest.mark.parametrize("name", ["openai", "claude"])
async def test_json_answer_instead_of_a_stream_is_a_validation_error(name: str) -> None:
    """A whole answer where a stream was asked for is not what the protocol says: a
    ResponseValidationError, not retried (it would only come again)."""
    answer = {
        "openai": {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]},
        "claude": {"id": "m", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi"}]},
    }[name]  # fmt: skip
    async with Hostile(json_answer(answer)) as server:
        client, stream = stream_of(name, server.url("/v1"))
        try:
            got, error = await read(stream)
            assert got == []
            assert isinstance(error, asyncllm.ResponseValidationError), error
            assert "JSON" in error.message
            assert len(server.requests) == 1
        finally:
            await client.aclose()


async def test_ndjson_streams_served_as_application_json_still_work() -> None:
    """Ollama's NDJSON is JSON by nature; some servers label it application/json."""
    lines = [
        b'{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}\n',
        b'{"model":"m","message":{"role":"assistant","content":"lo"},"done":true}\n',
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, lines, "application/json; charset=utf-8")

    async with Hostile(handler) as server:
        client = asyncllm.Ollama(base_url=server.url(), model="m", retry=NO_WAIT)
        try:
            got, error = await read(client.stream_chat(MESSAGES))
            assert error is None and texts(got) == "Hello"
        finally:
            await client.aclose()


async def test_opea_gateway_json_answer_to_a_stream_is_still_one_chunk() -> None:
    answer = {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}}],
    }
    async with Hostile(json_answer(answer)) as server:
        client = OPEA(base_url=server.url(), retry=NO_WAIT)
        try:
            got, error = await read(client.stream_chatqna("hi"))
            assert error is None and texts(got) == "whole"
        finally:
            await client.aclose()


# -- 3. redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", ["chat", "stream_chat", "claude_stream", "models"])
async def test_a_redirect_is_a_status_error_carrying_location_and_is_never_followed(
    status: int, call: str
) -> None:
    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return web.json_response({"stolen": True})

    async with Hostile(elsewhere) as other:
        target = other.url("/login?next=%2Fv1")

        async def redirect(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": target}, text="<html>")

        async with Hostile(redirect) as server:
            if call == "claude_stream":
                client: Any = asyncllm.Claude(
                    api_key="sk-ant-secret", base_url=server.url(), model="c", retry=NO_WAIT
                )
            else:
                client = OPENAI_SHAPED["openai"](server.url("/v1"))
            try:
                error: BaseException | None = None
                if call == "chat":
                    with pytest.raises(asyncllm.APIStatusError) as info:
                        await client.chat(MESSAGES)
                    error = info.value
                elif call == "models":
                    with pytest.raises(asyncllm.APIStatusError) as info:
                        await client.models()
                    error = info.value
                else:
                    got, error = await read(client.stream_chat(MESSAGES))
                    assert got == []
                assert type(error) is asyncllm.APIStatusError, error
                assert error.status_code == status
                assert error.location == target
                assert "/login" in str(error) and "next" not in str(error)
                assert len(server.requests) == 1  # not retried
                assert other.requests == []  # not followed: the key stays home
            finally:
                await client.aclose()


async def test_a_relative_location_is_resolved_against_the_request() -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/sso/login"})

    async with Hostile(redirect) as server:
        client = OPENAI_SHAPED["openai"](server.url("/v1"))
        try:
            with pytest.raises(asyncllm.APIStatusError) as info:
                await client.chat(MESSAGES)
            assert info.value.location == server.url("/sso/login")
        finally:
            await client.aclose()


@pytest.mark.parametrize("backend", ["tgi", "tei"])
async def test_health_is_false_for_a_redirect_to_a_login_page(backend: str) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "https://sso.example/login"})

    async with Hostile(redirect) as server:
        cls = asyncllm.TGI if backend == "tgi" else asyncllm.TEI
        client = cls(base_url=server.url())
        try:
            assert await client.health() is False
            assert len(server.requests) == 1
        finally:
            await client.aclose()


async def test_redirects_stay_unfollowed_through_a_given_session() -> None:
    """``session=`` brings its own settings, but never redirect-following: allow_redirects is
    off on every request the transport makes."""
    import aiohttp

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return web.json_response({"stolen": True})

    async with Hostile(elsewhere) as other:

        async def redirect(request: web.Request) -> web.StreamResponse:
            return web.Response(status=307, headers={"Location": other.url("/v1/chat/completions")})

        async with Hostile(redirect) as server, aiohttp.ClientSession() as session:
            client = asyncllm.OpenAI(
                api_key="sk-secret", base_url=server.url("/v1"), model="m", session=session
            )
            with pytest.raises(asyncllm.APIStatusError) as info:
                await client.chat(MESSAGES)
            assert info.value.status_code == 307
            assert other.requests == []
            await client.aclose()


# -- 4. an error event inside a stream ------------------------------------------------------------

# (the event's error body, the error the caller gets, its status)
STREAM_ERRORS: list[tuple[Any, type[asyncllm.APIError], int | None]] = [
    # LiteLLM, when the model it relays to breaks mid-stream: the status is a string code.
    ({"error": {"message": "upstream broke", "type": None, "param": None, "code": "500"}}, asyncllm.InternalServerError, 500),
    ({"error": {"message": "slow down", "type": "throttling_error", "code": "429"}}, asyncllm.RateLimitError, 429),
    # vLLM: an int code.
    ({"error": {"message": "bad", "type": "BadRequestError", "code": 400}}, asyncllm.BadRequestError, 400),
    # OpenAI's own codes are words; a number that is no error status, or no ASCII number, says nothing.
    ({"error": {"message": "busy", "type": "server_error", "code": "rate_limit_exceeded"}}, asyncllm.APIError, None),
    ({"error": {"message": "odd", "code": "700"}}, asyncllm.APIError, None),
    ({"error": {"message": "odd", "code": "\u00b2"}}, asyncllm.APIError, None),
]  # fmt: skip


@pytest.mark.parametrize(("body", "cls", "status"), STREAM_ERRORS, ids=lambda v: str(v)[:40])
async def test_error_event_after_a_chunk_is_typed_by_the_status_it_names(
    body: Any, cls: type[asyncllm.APIError], status: int | None
) -> None:
    """An error event after the first chunk ends the stream with the error it names (the
    chunks before it reached the caller, so it is not retried); a ``code`` that is an error
    status types it, as a JSON error body answering a stream request is typed."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, [openai_chunk("Hel"), sse(body)])

    async with Hostile(handler) as server:
        client = OPENAI_SHAPED["openai"](server.url("/v1"))
        try:
            got, error = await read(client.stream_chat(MESSAGES))
            assert texts(got) == "Hel"
            assert type(error) is cls, error
            assert error.status_code == status
            assert error.message == body["error"]["message"]
            assert len(server.requests) == 1
        finally:
            await client.aclose()


async def test_error_event_with_a_5xx_code_before_any_chunk_is_retried() -> None:
    """Nothing reached the caller: a 5xx named in the event is retried like a 5xx status."""
    failed = sse({"error": {"message": "upstream broke", "type": None, "code": "503"}})
    answers = [[failed], [openai_chunk("whole"), openai_chunk(None, "stop"), DONE]]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_events(request, answers.pop(0))

    async with Hostile(handler) as server:
        client = OPENAI_SHAPED["openai"](server.url("/v1"))
        try:
            got, error = await read(client.stream_chat(MESSAGES))
            assert error is None and texts(got) == "whole"
            assert len(server.requests) == 2
        finally:
            await client.aclose()
