"""Call options declared once: typed for mypy, checked by key at run time, the same on every call."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm._options import merge_body
from asyncllm.testing import MockResponse
from tests.helpers import USER, chat_json, client, ok

MISUSE = Path(__file__).parent / "typing" / "misuse.py"


def test_mypy_strict_flags_every_misspelt_or_misplaced_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(MISUSE)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    flagged = {int(m) for m in re.findall(r"misuse\.py:(\d+): error", out.stdout)}
    marked = {
        number
        for number, line in enumerate(MISUSE.read_text().splitlines(), 1)
        if line.endswith("# E")
    }
    assert flagged == marked, out.stdout


def test_positional_arguments_to_a_constructor_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        asyncllm.OpenAI("http://127.0.0.1:8000/v1")  # type: ignore[misc]
    with pytest.raises(TypeError, match="max_concurent_requests"):
        asyncllm.OpenAI(api_key="k", max_concurent_requests=5)  # type: ignore[call-arg]


async def test_a_misspelt_option_is_a_type_error_before_anything_is_sent() -> None:
    sent: list[Any] = []
    c = client(lambda r: sent.append(r) or ok())
    with pytest.raises(TypeError, match="chat\\(\\) got an unexpected keyword argument 'priorty'"):
        await c.chat(USER, model="m", priorty=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'max_retry'"):
        c.stream_chat(USER, model="m", max_retry=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'extra_body'"):
        await c.models(extra_body={"a": 1})  # type: ignore[call-arg]
    assert sent == []
    await c.aclose()


async def test_extra_body_query_and_headers_reach_the_wire() -> None:
    seen: list[Any] = []

    def handler(request: Any) -> MockResponse:
        seen.append(request)
        return ok()

    c = client(handler)
    await c.chat(
        USER,
        model="m",
        response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": False}},
        extra_body={"response_format": {"json_schema": {"strict": True}}, "top_k": 3, "model": "n"},
        extra_query={"api-version": "2024"},
        extra_headers={"X-Trace": "t1"},
    )
    body = seen[0].json()
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "a", "strict": True},
    }
    assert body["top_k"] == 3 and body["model"] == "n"
    assert seen[0].params == {"api-version": "2024"}
    assert seen[0].headers["X-Trace"] == "t1"
    await c.aclose()


def test_merge_body_merges_mappings_and_replaces_the_rest() -> None:
    inner = {"b": 1, "c": [1]}
    body = {"a": inner, "l": [1, 2], "s": "x"}
    merged = merge_body(body, {"a": {"c": [2], "d": {"e": 1}}, "l": [3], "s": {"k": 1}})
    assert merged == {"a": {"b": 1, "c": [2], "d": {"e": 1}}, "l": [3], "s": {"k": 1}}
    assert inner == {"b": 1, "c": [1]}  # the caller's nested object is never changed


async def test_with_options_changes_per_call_defaults_and_owns_nothing() -> None:
    attempts = 0

    def handler(request: Any) -> MockResponse:
        nonlocal attempts
        attempts += 1
        return MockResponse(503, json={"error": {"message": "busy"}})

    c = client(handler, max_retries=3)
    light = c.with_options(max_retries=0, priority=asyncllm.Priority.HIGH)
    with pytest.raises(asyncllm.InternalServerError):
        await light.chat(USER, model="m")
    assert attempts == 1
    with asyncllm.request_context("rid-light"), pytest.raises(asyncllm.InternalServerError):
        await light.chat(USER, model="m", max_retries=1)  # the call's own option wins
    assert attempts == 3
    record = c.dispatcher.tracker.get("rid-light")
    assert record is not None and record.priority == asyncllm.Priority.HIGH
    await light.aclose()  # does nothing: the lane and the connections are c's
    c2 = light.with_options(timeout=5)
    assert c2.dispatcher is c.dispatcher
    with pytest.raises(TypeError):
        c.with_options(max_concurrent_requests=2)  # type: ignore[call-arg]
    with pytest.raises(asyncllm.ConfigurationError):
        c.with_options(max_retries=-1)
    await c.aclose()
    with pytest.raises(asyncllm.ClientClosedError):
        await light.chat(USER, model="m")


async def test_per_call_max_retries_on_a_stream() -> None:
    attempts = 0

    def handler(request: Any) -> MockResponse:
        nonlocal attempts
        attempts += 1
        return MockResponse(503, json={"error": {"message": "busy"}})

    c = client(handler, max_retries=5)
    with pytest.raises(asyncllm.InternalServerError):
        async with c.stream_chat(USER, model="m", max_retries=1) as stream:
            async for _ in stream:
                pass
    assert attempts == 2
    await c.aclose()


def test_chat_json_helper_is_a_valid_reply() -> None:
    assert chat_json("x")["choices"][0]["message"]["content"] == "x"
