"""The ``tgi`` fake, driven by Hugging Face's TGI client (``text-generation``'s ``AsyncClient``).

Verified with text-generation 0.7.0 (tests/interop/envs/tgi.txt; it needs huggingface_hub<1, so it
has an environment of its own): tests/interop/tgi_calls.py makes the calls and checks them, this
module serves the fake and checks what it was sent and what the script saw. The client posts to
the base URL itself, ``POST /``, which real TGI answers as ``/generate`` wrapped in a list, or as
``/generate_stream`` when the body says ``"stream": true``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from tests.interop import run_in_group

PROMPT = "hello there"
REPLY = "echo: hello there"


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer("tgi") as server:
        yield server


async def run(server: FakeServer, *cases: str) -> dict[str, Any]:
    """Run ``cases`` in tgi_calls.py; the ``RESULT`` line of each, by case."""
    out = await run_in_group("tgi", "tgi_calls.py", server.url(), *cases)
    results = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, case, payload = line.split(" ", 2)
            results[case] = json.loads(payload)
    assert sorted(results) == sorted(cases), out
    return results


async def test_generate(server: FakeServer) -> None:
    result = (await run(server, "generate"))["generate"]
    assert result["text"] == REPLY
    assert [t["id"] for t in result["tokens"]] == [100, 101, 102, 2]
    assert result["prefill"] == [[10, "hello", None], [11, " there", -1.0]]
    assert result["stopped"] == "echo: hello"
    assert result["full"] == PROMPT + REPLY
    assert {(r.method, r.path) for r in server.requests} == {("POST", "/")}
    body = server.requests[0].json
    assert (body["inputs"], body["stream"]) == (PROMPT, False)
    # The client always asks for details and says what it wants of the prompt.
    params = body["parameters"]
    assert (params["details"], params["return_full_text"], params["max_new_tokens"]) == (
        True,
        False,
        20,
    )
    assert params["temperature"] is None and params["stop"] == []


async def test_generate_stream(server: FakeServer) -> None:
    result = (await run(server, "generate_stream"))["generate_stream"]
    assert [t["text"] for t in result["tokens"]] == ["echo:", " hello", " there", "</s>"]
    assert result["tokens"][-1] == {"id": 2, "text": "</s>", "special": True}
    assert result["generated_text"] == REPLY
    assert result["finish_reason"] == "eos_token"
    assert result["full"] == PROMPT + REPLY
    assert [(r.method, r.path) for r in server.requests] == [("POST", "/")] * 3
    assert all(r.json["stream"] is True for r in server.requests)


async def test_errors_are_typed_and_not_retried(server: FakeServer) -> None:
    server.fail_next(1, status=429)
    server.state["tgi_stream_errors"] = [(1, "generation")]
    result = (await run(server, "errors"))["errors"]
    assert result["overloaded"] == "injected 429"
    assert result["generation"] == "injected generation error"
    assert result["streamed"] == ["echo:"]
    assert result["validation"] == (
        "Input validation error: `stop` supports up to 4 stop sequences. Given: 5"
    )
    assert result["stream_validation"] == result["validation"]
    assert server.request_count == 4  # one request per call: the client retries nothing
