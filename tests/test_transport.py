"""Line, SSE and NDJSON readers, and the aiohttp layer through aioresponses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aioresponses import aioresponses

import asyncllm
from asyncllm._http._transport import iter_lines, iter_ndjson, iter_sse


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def test_lines_split_across_chunks_and_crlf() -> None:
    got = [line async for line in iter_lines(chunks(b"ab", b"c\r\nde", b"f\n", b"\n", b"tail"))]
    assert got == [b"abc", b"def", b"", b"tail"]


async def test_endless_line_is_refused() -> None:
    with pytest.raises(asyncllm.ResponseValidationError):
        async for _ in iter_lines(chunks(*([b"x" * 1000] * 20)), max_line=5000):
            pass
    # A long line that arrives whole, newline included, is refused too.
    with pytest.raises(asyncllm.ResponseValidationError):
        async for _ in iter_lines(chunks(b"ok\n", b"y" * 6000 + b"\n"), max_line=5000):
            pass


async def test_sse_events_follow_the_spec() -> None:
    stream = chunks(
        b": comment\n",
        b'event: message_start\ndata: {"a":1}\n\n',
        b"data: line1\ndata: line2\nid: 7\n\n",
        b"data:nospace\n\n",
        b"event: ping\n\n",  # no data: not dispatched
        b"data: last",
    )
    events = [e async for e in iter_sse(iter_lines(stream))]
    assert [(e.event, e.data) for e in events] == [
        ("message_start", '{"a":1}'),
        ("message", "line1\nline2"),
        ("message", "nospace"),
        ("message", "last"),
    ]
    assert events[1].id == "7"
    assert events[0].json() == {"a": 1}
    with pytest.raises(asyncllm.ResponseValidationError):
        events[1].json()


async def test_ndjson() -> None:
    got = [v async for v in iter_ndjson(iter_lines(chunks(b'{"a":1}\n\n{"b"', b":2}\n")))]
    assert got == [{"a": 1}, {"b": 2}]
    with pytest.raises(asyncllm.ResponseValidationError):
        async for _ in iter_ndjson(iter_lines(chunks(b"{bad\n"))):
            pass


async def test_aiohttp_layer_with_aioresponses() -> None:
    with aioresponses() as mocked:
        mocked.post(
            "http://api.test/v1/chat/completions",
            payload={"choices": [{"index": 0, "message": {"role": "assistant", "content": "hey"}}]},
            headers={"x-request-id": "srv-9"},
        )
        mocked.post(
            "http://api.test/v1/chat/completions",
            status=401,
            payload={
                "error": {
                    "message": "bad key",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
        async with asyncllm.OpenAI(api_key="sk-x", base_url="http://api.test/v1") as client:
            r = await client.chat([{"role": "user", "content": "hi"}], model="m")
            assert (r.text, r.server_request_id) == ("hey", "srv-9")
            with pytest.raises(asyncllm.AuthenticationError) as info:
                await client.chat([{"role": "user", "content": "hi"}], model="m")
        assert info.value.code == "invalid_api_key"
        assert info.value.message == "bad key"
        sent = next(iter(mocked.requests.values()))[0]
        assert sent.kwargs["headers"]["Authorization"] == "Bearer sk-x"


async def test_oversized_body_is_refused() -> None:
    with aioresponses() as mocked:
        mocked.get("http://api.test/v1/models", body=b"x" * 5000)
        async with asyncllm.OpenAI(
            api_key="k", base_url="http://api.test/v1", max_response_bytes=1000
        ) as client:
            with pytest.raises(asyncllm.ResponseValidationError, match="limit"):
                await client.models()


def test_headers_and_request_repr_mask_credentials() -> None:
    from asyncllm._http._transport import Headers, display_url

    secret = "sk-0123456789"
    headers = Headers.masking(
        {
            "Authorization": f"Bearer {secret}",
            "x-api-key": secret,
            "x-goog-api-key": secret,
            "X-Custom-Token": secret,
            "Accept": "application/json",
        }
    )
    assert secret not in repr(headers) and "application/json" in repr(headers)
    assert secret not in repr(headers.copy()) and isinstance(headers.copy(), Headers)
    assert secret not in repr(list(headers.values()))  # the values themselves mask their repr
    assert headers["x-api-key"] == secret and f"{headers['x-api-key']}" == secret
    request = asyncllm.Request("POST", "http://u:pw@h:1/v1/x?key=q", dict(headers), b"{}")
    shown = repr(request)
    assert secret not in shown and "pw" not in shown and "key=q" not in shown
    assert display_url("https://u:pw@h:1/v1/x?key=q#f") == "https://h:1/v1/x"


def test_loopback_targets_never_use_an_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncllm._http._transport import AiohttpTransport

    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:3128")
    t = AiohttpTransport()
    for url in (
        "http://localhost:8000/v1/x",
        "http://127.0.0.1:8000/v1",
        "http://127.8.9.10/v1",
        "http://[::1]:8000/v1",
        "http://app.localhost/v1",
    ):
        assert t.proxy_for(url) == (None, None), url
    assert str(t.proxy_for("http://10.0.0.5:8000/v1")[0]) == "http://127.0.0.1:3128"
    # An explicit proxy= is the caller's decision: it applies to every target.
    explicit = AiohttpTransport(proxy="http://127.0.0.1:3129")
    assert str(explicit.proxy_for("http://localhost:8000/v1")[0]) == "http://127.0.0.1:3129"
    assert AiohttpTransport(trust_env=False).proxy_for("http://10.0.0.5/v1") == (None, None)


def test_transport_interface_is_public() -> None:
    assert asyncllm.Transport.__doc__ and "send" in asyncllm.Transport.__doc__
    assert {"Transport", "Request", "Response"} <= set(asyncllm.__all__)
    from asyncllm.testing import MockTransport

    assert issubclass(MockTransport, asyncllm.Transport)


def test_a_streams_socket_read_limit_does_not_race_its_idle_timer() -> None:
    """A stream's waits are cut by its own timer at ``timeout`` ("stream idle"); aiohttp's read
    limit at the same span raced it and at times named the error "request timed out
    (SocketTimeoutError)" instead. It is a backstop, later; a plain request keeps one limit."""
    from asyncllm._http._transport import AiohttpTransport

    t = AiohttpTransport()
    streamed = t._timeout(0.4, True)
    assert streamed.total is None and streamed.sock_read == 0.8
    assert t._timeout(None, True).sock_read is None
    assert t._timeout(0.4, False).total == 0.4
