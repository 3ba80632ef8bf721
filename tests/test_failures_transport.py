"""Failures that tell the truth, transport half: secrets never shown, headers the HTTP layer
owns refused, TLS/proxy/pool/session settings, a client that outlives its first event loop,
and errors that name the request. Every server here is on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import re
import socket
import ssl
import sys
import traceback
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import asyncllm
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from tests.helpers import self_signed_cert

KEY = "sk-very-secret-key-1234"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_BODY = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "via proxy"}}],
}
PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "REQUEST_METHOD",
)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- secrets ---------------------------------------------------------------------------------------


async def test_base_url_password_is_never_shown_and_becomes_basic_auth() -> None:
    async with FakeServer("openai") as server:
        url = server.url("/v1").replace("http://", "http://alice:pa%3Ass@")
        c = asyncllm.OpenAI(base_url=url, max_retries=0)
        assert "pa%3Ass" not in repr(c) and "alice" not in repr(c)
        assert c.base_url == server.url("/v1")
        await c.chat(MESSAGES, model="m")
        sent = server.requests[-1].headers["Authorization"]
        assert sent == "Basic " + base64.b64encode(b"alice:pa:ss").decode()
        c.base_url = server.url()  # a wrong path: a 404 whose error names the URL
        with pytest.raises(asyncllm.NotFoundError) as info:
            await c.chat(MESSAGES, model="m")
        assert "pa%3Ass" not in str(info.value) and "alice" not in str(info.value)
        await c.aclose()
    # A key and URL credentials would both be Authorization: refused, not sent half.
    with pytest.raises(asyncllm.ConfigurationError, match="credentials"):
        asyncllm.OpenAI(api_key=KEY, base_url="http://u:p@127.0.0.1:9/v1")


def _formatted_with_locals(exc: BaseException) -> str:
    te = traceback.TracebackException.from_exception(exc, capture_locals=True)
    return "".join(te.format())


@pytest.mark.parametrize("backend", ["OpenAI", "Claude", "Gemini"])
async def test_a_traceback_with_locals_never_shows_the_key(backend: str) -> None:
    cls = getattr(asyncllm, backend)
    # Nothing listening: the traceback runs through aiohttp's frames as well as ours.
    c = cls(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    with pytest.raises(asyncllm.APIConnectionError) as info:
        await c.chat(MESSAGES, model="m")
    text = _formatted_with_locals(info.value)
    assert "headers" in text  # the locals were captured...
    assert KEY not in text  # ...and the key is in none of them
    await c.aclose()
    # A status error, and the recorded request of a mock transport.
    mock = MockTransport(lambda r: MockResponse(401, json={"error": {"message": "no"}}))
    c = cls(api_key=KEY, base_url="http://127.0.0.1:9/v1", transport=mock, max_retries=0)
    with pytest.raises(asyncllm.APIStatusError) as status_info:
        await c.chat(MESSAGES, model="m")
    assert KEY not in _formatted_with_locals(status_info.value)
    assert KEY not in repr(mock.requests[-1]) and KEY not in repr(mock.requests[-1].headers)
    assert any(KEY in v for v in mock.requests[-1].headers.values())  # sent as itself
    await c.aclose()


async def test_the_key_is_still_sent_as_itself() -> None:
    async with FakeServer("openai", "anthropic") as server:
        c = asyncllm.OpenAI(api_key=KEY, base_url=server.url("/v1"))
        await c.chat(MESSAGES, model="m")
        assert server.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
        await c.aclose()


@pytest.mark.parametrize(
    "name",
    ["Content-Length", "transfer-encoding", "Host", "Connection", "Keep-Alive", "TE", "Upgrade"],
)
async def test_framing_headers_are_refused(name: str) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match="framing"):
        asyncllm.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", default_headers={name: "1"})
    sent: list[Any] = []
    c = asyncllm.OpenAI(
        api_key="k",
        base_url="http://127.0.0.1:9/v1",
        transport=MockTransport(lambda r: sent.append(r) or MockResponse(json=CHAT_BODY)),
    )
    with pytest.raises(asyncllm.ConfigurationError, match="framing"):
        await c.chat(MESSAGES, model="m", extra_headers={name: "5"})
    assert sent == []  # refused before anything was sent
    await c.aclose()


async def test_the_request_id_header_is_refused_with_the_way_to_set_it() -> None:
    with pytest.raises(asyncllm.ConfigurationError, match="request_context"):
        asyncllm.OpenAI(
            api_key="k", base_url="http://127.0.0.1:9/v1", default_headers={"x-request-id": "a"}
        )
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"))
        with pytest.raises(asyncllm.ConfigurationError, match="request_context"):
            await c.chat(MESSAGES, model="m", extra_headers={"X-Request-ID": "mine"})
        # The way that works: the wire, the response and the tracker agree.
        with asyncllm.request_context("mine"):
            r = await c.chat(MESSAGES, model="m")
        assert r.request_id == "mine" and server.request_ids[-1] == "mine"
        await c.aclose()


async def test_a_user_agent_is_sent_and_default_headers_may_replace_it() -> None:
    async with FakeServer("openai") as server:
        c = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"))
        await c.chat(MESSAGES, model="m")
        ua = server.requests[-1].headers["User-Agent"]
        v = sys.version_info
        assert ua == (
            f"asyncllm/{asyncllm.__version__} python/{v.major}.{v.minor} "
            f"aiohttp/{aiohttp.__version__}"
        )
        await c.aclose()
        c = asyncllm.OpenAI(
            api_key="k", base_url=server.url("/v1"), default_headers={"User-Agent": "mine/1"}
        )
        await c.chat(MESSAGES, model="m")
        assert server.requests[-1].headers["User-Agent"] == "mine/1"
        await c.aclose()


# -- proxies and netrc -----------------------------------------------------------------------------


class Proxy:
    """A forward HTTP proxy that answers itself: it records each request (an http:// target
    arrives in absolute form) and replies with a chat completion."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            {
                "target": request.raw_path,
                "host": request.headers.get("Host"),
                "proxy_authorization": request.headers.get("Proxy-Authorization"),
                "authorization": request.headers.get("Authorization"),
            }
        )
        return web.json_response(CHAT_BODY)

    async def __aenter__(self) -> Proxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def test_http_proxy_from_the_environment_is_used_and_loopback_bypasses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Proxy() as proxy, FakeServer("openai") as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://pu:pp@"))
        remote = asyncllm.OpenAI(api_key="k", base_url="http://api.example.test/v1")
        assert (await remote.chat(MESSAGES, model="m")).text == "via proxy"
        [seen] = proxy.seen
        assert seen["target"] == "http://api.example.test/v1/chat/completions"
        assert seen["host"] == "api.example.test"
        assert seen["proxy_authorization"] == "Basic " + base64.b64encode(b"pu:pp").decode()
        assert seen["authorization"] == "Bearer k"
        # A loopback backend never goes through an environment proxy.
        local = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"))
        assert (await local.chat(MESSAGES, model="m")).text.startswith("echo")
        assert len(proxy.seen) == 1 and server.request_count == 1
        await remote.aclose()
        await local.aclose()


async def test_explicit_proxy_and_trust_env_off(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Proxy() as proxy:
        c = asyncllm.OpenAI(api_key="k", base_url="http://api.example.test/v1", proxy=proxy.url)
        assert (await c.chat(MESSAGES, model="m")).text == "via proxy"
        assert proxy.seen[-1]["target"] == "http://api.example.test/v1/chat/completions"
        await c.aclose()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test,.corp.test")
    env = asyncllm.OpenAI(api_key="k", base_url="https://api.example.test/v1")
    off = asyncllm.OpenAI(api_key="k", base_url="https://api.example.test/v1", trust_env=False)
    env_t: Any = env._transport
    off_t: Any = off._transport
    assert str(env_t.proxy_for("https://api.example.test/v1/x")[0]) == "http://127.0.0.1:3128"
    assert env_t.proxy_for("https://internal.test/v1/x")[0] is None  # NO_PROXY
    assert env_t.proxy_for("https://a.corp.test:8443/x")[0] is None  # NO_PROXY suffix
    assert env_t.proxy_for("http://api.example.test/x")[0] is None  # no HTTP_PROXY
    assert off_t.proxy_for("https://api.example.test/v1/x")[0] is None


async def test_netrc_never_replaces_or_adds_to_our_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine 127.0.0.1 login nl password np\nmachine localhost login nl password np\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    async with FakeServer("openai", "anthropic") as server:
        openai = asyncllm.OpenAI(api_key=KEY, base_url=server.url("/v1"))
        await openai.chat(MESSAGES, model="m")
        assert server.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
        claude = asyncllm.Claude(api_key=KEY, base_url=server.url())
        await claude.chat(MESSAGES, model="m")
        assert "Authorization" not in server.requests[-1].headers
        assert server.requests[-1].headers["x-api-key"] == KEY
        await openai.aclose()
        await claude.aclose()


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed_cert(tmp_path)


@pytest.fixture
async def tls_server(tls_files: tuple[Path, Path]) -> AsyncIterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(CHAT_BODY)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


async def test_tls_with_a_ca_bundle_a_context_or_no_verification(
    tls_server: str, tls_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert = tls_files[0]
    # Default verification refuses the self-signed certificate.
    c = asyncllm.OpenAI(api_key="k", base_url=tls_server, max_retries=0)
    with pytest.raises(asyncllm.APIConnectionError):
        await c.chat(MESSAGES, model="m")
    await c.aclose()
    # A CA bundle path, or a context, trusts it.
    for setting in (str(cert), cert, ssl.create_default_context(cafile=str(cert))):
        c = asyncllm.OpenAI(api_key="k", base_url=tls_server, ssl=setting)
        assert (await c.chat(MESSAGES, model="m")).text == "via proxy"
        await c.aclose()
    # Verification off: works, with a warning logged once, at construction.
    with caplog.at_level(logging.WARNING, logger="asyncllm"):
        c = asyncllm.OpenAI(api_key="k", base_url=tls_server, ssl=False)
        await c.chat(MESSAGES, model="m")
        await c.chat(MESSAGES, model="m")
    warned = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warned) == 1
    await c.aclose()
    with pytest.raises(asyncllm.ConfigurationError, match="CA bundle"):
        asyncllm.OpenAI(api_key="k", base_url=tls_server, ssl="/no/such/bundle.pem")
    with pytest.raises(asyncllm.ConfigurationError, match="ssl must be"):
        asyncllm.OpenAI(api_key="k", base_url=tls_server, ssl=3)  # type: ignore[typeddict-item]


# -- pool, session, connector ---------------------------------------------------------------------


async def test_pool_limits_bound_open_connections() -> None:
    async with FakeServer("openai", faults=asyncllm.testing.Faults(latency=0.1)) as server:
        c = asyncllm.OpenAI(
            api_key="k",
            base_url=server.url("/v1"),
            max_concurrent_requests=8,
            max_connections=2,
        )
        await asyncio.gather(*(c.chat(MESSAGES, model="m") for _ in range(6)))
        assert server.max_in_flight == 2
        await c.aclose()
    with pytest.raises(asyncllm.ConfigurationError, match="max_connections"):
        asyncllm.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", max_connections=0)


async def test_a_connection_that_answered_a_5xx_is_not_reused() -> None:
    """A server may close its end right after a 5xx without saying so (uvicorn does, after an
    unhandled exception); a pooled connection would make the next call a spurious connection
    error. After a 2xx or a 4xx the connection is kept."""
    peers: list[int] = []
    statuses = iter([200, 200, 400, 400, 500, 200])

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        status = next(statuses)
        body = CHAT_BODY if status == 200 else {"error": {"message": "no"}}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with asyncllm.OpenAI(
            api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        ) as c:
            for _ in range(6):
                with contextlib.suppress(asyncllm.APIStatusError):
                    await c.chat(MESSAGES, model="m")
    finally:
        await runner.cleanup()
    assert len(set(peers[:5])) == 1  # 200, 200, 400, 400 and the 500 on one connection
    assert peers[5] != peers[4]  # a new one after the 500


async def test_an_injected_session_or_connector_is_used_and_left_open() -> None:
    async with FakeServer("openai") as server:
        session = aiohttp.ClientSession()
        c = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), session=session)
        await c.chat(MESSAGES, model="m")
        assert server.requests[-1].headers["Authorization"] == "Bearer k"
        await c.aclose()
        assert not session.closed
        await session.close()

        connector = aiohttp.TCPConnector(limit=1)
        c = asyncllm.OpenAI(api_key="k", base_url=server.url("/v1"), connector=connector)
        await asyncio.gather(*(c.chat(MESSAGES, model="m") for _ in range(3)))
        await c.aclose()
        assert not connector.closed
        await connector.close()

    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncllm.ConfigurationError, match="session"):
            asyncllm.OpenAI(
                api_key="k", base_url="http://127.0.0.1:9/v1", session=session, max_connections=3
            )
    with pytest.raises(asyncllm.ConfigurationError, match="transport"):
        asyncllm.OpenAI(
            api_key="k",
            base_url="http://127.0.0.1:9/v1",
            transport=MockTransport(lambda r: MockResponse(json=CHAT_BODY)),
            proxy="http://127.0.0.1:3128",
        )


# -- successive event loops ------------------------------------------------------------------------


def test_a_client_made_at_import_time_survives_successive_asyncio_runs() -> None:
    client = asyncllm.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")

    async def call() -> str:
        async with FakeServer("openai") as server:
            client.base_url = server.url("/v1")
            texts = await asyncio.gather(*(client.chat(MESSAGES, model="m") for _ in range(3)))
            return texts[0].text

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(asyncio.wait_for(call(), 10)) == "echo: hi"
        assert asyncio.run(asyncio.wait_for(call(), 10)) == "echo: hi"
        # A loop closed without asyncio.run's clean-up (no shutdown_asyncgens): the old
        # connections are closed by hand, and the next loop still works.
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(call()) == "echo: hi"
        loop.close()
        assert asyncio.run(asyncio.wait_for(call(), 10)) == "echo: hi"

        async def close() -> None:
            await client.aclose()

        asyncio.run(close())
        gc.collect()
    assert [str(w.message) for w in caught] == []


# -- errors name the request ----------------------------------------------------------------------


async def test_status_and_connection_errors_name_method_and_url() -> None:
    async with FakeServer("openai") as server:
        # The common first-hour mistake: a base URL without /v1.
        c = asyncllm.OpenAI(api_key="k", base_url=server.url(), max_retries=0)
        with pytest.raises(asyncllm.NotFoundError) as info:
            await c.chat(MESSAGES, model="m", extra_query={"token": "q-secret"})
        error = info.value
        assert (error.method, error.url) == ("POST", server.url("/chat/completions"))
        assert f"POST {server.url('/chat/completions')}" in str(error)
        assert "q-secret" not in str(error)
        await c.aclose()
    port = closed_port()
    c = asyncllm.OpenAI(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(asyncllm.APIConnectionError) as conn_info:
        await c.models()
    text = str(conn_info.value)
    assert f"GET http://127.0.0.1:{port}/v1/models" in text
    assert re.search("connection refused", text, re.IGNORECASE)
    await c.aclose()
