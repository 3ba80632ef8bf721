"""What every fake does the same way: unknown routes answer in the protocol's own error body, and
a tool declared without a parameters schema is called with an empty object."""

from __future__ import annotations

import importlib
import json
from typing import Any

import aiohttp
import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common

# protocol -> (a path the protocol does not serve, the module whose error body answers it)
UNKNOWN = {
    "anthropic": ("/v1/no/such/route", "anthropic"),
    "gemini": ("/v1beta/no/such/route", "gemini"),
    "groq": ("/openai/v1/no/such/route", "openai"),
    "llvm": ("/no/such/route", "llvm"),
    "ollama": ("/api/no/such/route", "ollama"),
    "opea": ("/v1/no/such/route", "opea"),
    "openai": ("/v1/no/such/route", "openai"),
    "ovms": ("/v2/no/such/route", "ovms"),
    "tei": ("/no/such/route", "tei"),
    "tgi": ("/no/such/route", "tgi"),
    "vllm": ("/v1/no/such/route", "openai"),
}


async def _call(server: FakeServer, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) of one request to the fake."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url(path), **kwargs) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, response.headers, await response.json()


def _without_request_id(body: Any) -> Any:
    return {k: v for k, v in body.items() if k != "request_id"} if isinstance(body, dict) else body


@pytest.mark.parametrize("protocol", sorted(UNKNOWN))
async def test_unknown_route_answers_the_protocols_error_body(protocol: str) -> None:
    path, owner = UNKNOWN[protocol]
    error_body = importlib.import_module(f"asyncllm.testing.fakes.{owner}").error_body
    async with FakeServer(protocol) as server:
        status, _, body = await _call(server, "GET", path)
        assert status == 404
    expected = error_body(404, f"Not found: GET {path}")
    assert _without_request_id(body) == _without_request_id(expected)
    assert server.request_count == 0  # unknown routes are not counted, nor faulted


async def test_unknown_method_is_a_405_in_the_protocols_body() -> None:
    async with FakeServer("openai") as server:
        status, headers, body = await _call(server, "DELETE", "/v1/chat/completions")
    assert status == 405
    assert "POST" in headers["Allow"]
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "Method DELETE is not allowed for /v1/chat/completions"


async def test_tei_unknown_openai_route_answers_in_openai_form() -> None:
    # TEI serves /v1/embeddings in OpenAI's form: a neighbour of it answers in that form too.
    async with FakeServer("tei") as server:
        status, _, body = await _call(server, "GET", "/v1/models")
    assert status == 404
    assert body["message"] == "Not found: GET /v1/models"
    assert body["code"] == 404


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"type": "object"}, {}),
        ({"type": "object", "properties": {}}, {}),
        ({"type": "string"}, {}),  # not an object schema: still called with an object
        ({"type": "object", "properties": {"city": {"type": "string"}}}, {"city": "test"}),
    ],
)
def test_tool_arguments_are_always_an_object(schema: Any, expected: Any) -> None:
    assert _common.tool_arguments(schema) == expected


async def test_openai_fake_calls_a_tool_without_parameters_with_an_object() -> None:
    body = {
        "model": "fake-chat",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "now"}}],
    }
    async with FakeServer("openai") as server:
        _, _, answer = await _call(server, "POST", "/v1/chat/completions", json=body)
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "now"
    assert json.loads(call["function"]["arguments"]) == {}


async def test_anthropic_fake_calls_a_tool_with_an_empty_schema_with_an_object() -> None:
    body = {
        "model": "fake-chat",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "now", "input_schema": {"type": "object"}}],
    }
    headers = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
    async with FakeServer("anthropic") as server:
        _, _, answer = await _call(server, "POST", "/v1/messages", json=body, headers=headers)
    assert answer["content"][0]["input"] == {}
