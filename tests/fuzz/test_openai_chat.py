"""Property tests: random input gets a typed error before anything is sent, and hostile
responses get typed errors with bounded memory."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncllm
from asyncllm.testing import MockResponse
from tests.helpers import client, ok

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.one_of(
    json_values,
    st.lists(
        st.dictionaries(
            st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name"]),
            json_values | st.sampled_from(["user", "assistant", "system", "tool"]),
            max_size=4,
        ),
        max_size=3,
    ),
)
params = st.fixed_dictionaries(
    {},
    optional={
        "temperature": json_values,
        "top_p": json_values,
        "max_tokens": json_values,
        "stop": json_values,
        "seed": json_values,
        "n": json_values,
        "user": json_values,
        "tool_choice": json_values,
        "model": json_values,
        "extra_headers": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=2),
    },
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(messages=messages, kwargs=params)
def test_random_input_is_sent_or_refused_with_a_typed_error(
    messages: Any, kwargs: dict[str, Any]
) -> None:
    async def run() -> None:
        c = client(lambda r: ok())
        kwargs.setdefault("model", "m")
        try:
            r = await c.chat(messages, **kwargs)
        except asyncllm.ConfigurationError:
            assert len(c._transport.requests) == 0  # type: ignore[attr-defined]
        else:
            assert r.text == "ok"
            assert len(c._transport.requests) == 1  # type: ignore[attr-defined]
        finally:
            await c.aclose()

    asyncio.run(run())


hostile_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    st.just(b'{"choices": [{"message": {"content": 5}}]}'),
    st.just(b'{"choices": [{"message": {"tool_calls": [{"id": 1}]}}]}'),
    st.just(b"x" * 20_000),
    st.integers(min_value=0, max_value=300).map(lambda n: b'{"choices": [' * n),
)


@SETTINGS
@given(body=hostile_bodies, status=st.sampled_from([200, 200, 200, 400, 404, 429, 500]))
def test_hostile_responses_give_typed_errors(body: bytes, status: int) -> None:
    async def run() -> None:
        c = client(
            lambda r: MockResponse(status, content=body),
            max_retries=0,
            max_response_bytes=10_000,
        )
        try:
            r = await c.chat([{"role": "user", "content": "x"}], model="m")
        except asyncllm.APIError as exc:
            assert exc.request_id is not None
            assert exc.body is None or len(exc.body) <= 501
        else:
            assert isinstance(r, asyncllm.ChatResponse)
        finally:
            await c.aclose()

    asyncio.run(run())


hostile_streams = st.lists(
    st.one_of(
        st.binary(max_size=100),
        st.just(b"data: {not json}\n\n"),
        st.just(b'data: {"choices": "nope"}\n\n'),
        st.just(b'data: {"error": {"message": "mid-stream"}}\n\n'),
        st.just(b"data: " + b"y" * 5000),  # an endless line
        st.just(b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'),
    ),
    max_size=6,
)


@SETTINGS
@given(chunks=hostile_streams)
def test_hostile_streams_give_typed_errors_with_bounded_lines(chunks: list[bytes]) -> None:
    async def run() -> None:
        c = client(lambda r: MockResponse(200, chunks=chunks), max_retries=0, max_line_bytes=4096)
        try:
            async for chunk in c.stream_chat([{"role": "user", "content": "x"}], model="m"):
                assert isinstance(chunk, asyncllm.ChatChunk)
        except asyncllm.APIError as exc:
            assert exc.request_id is not None
        finally:
            await c.aclose()

    asyncio.run(run())


def test_a_runaway_error_message_is_cut_short() -> None:
    huge = {"error": {"message": "m" * 30_000, "type": "t" * 5000, "code": "c" * 5000}}

    async def run() -> None:
        c = client(lambda r: MockResponse(400, json=huge), max_retries=0)
        try:
            await c.chat([{"role": "user", "content": "x"}], model="m")
        except asyncllm.BadRequestError as exc:
            assert len(exc.message) <= 1003 and exc.message.startswith("mmm")
            assert len(str(exc)) < 2000  # the message, the body excerpt and the labels
            assert exc.code is not None and len(exc.code) <= 1003
            assert exc.error_type is not None and len(exc.error_type) <= 1003
            assert exc.body is not None and len(exc.body) <= 501
        else:
            raise AssertionError("a 400 must raise")
        finally:
            await c.aclose()

    asyncio.run(run())
