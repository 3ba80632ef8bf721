"""The contract every chat backend keeps, run against the embedded server.

A backend joins by subclassing ``ChatContract`` in its own test file (pytest collects the
subclass, named ``Test...``) and saying which fake protocol to start and how to build a client::

    class TestClaudeContract(ChatContract):
        protocol = "anthropic"

        def make_client(self, server, **kwargs):
            return asyncllm.Claude(api_key="test", base_url=server.url(), **kwargs)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

import asyncllm
from asyncllm.testing import FakeServer

NO_WAIT = asyncllm.RetryConfig(max_retries=3, initial_delay=0.0, max_delay=0.0)

STATUS_CLASSES = [
    (400, asyncllm.BadRequestError),
    (401, asyncllm.AuthenticationError),
    (403, asyncllm.PermissionDeniedError),
    (404, asyncllm.NotFoundError),
    (422, asyncllm.UnprocessableEntityError),
    (429, asyncllm.RateLimitError),
    (500, asyncllm.InternalServerError),
    (503, asyncllm.InternalServerError),
]


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


class ChatContract:
    protocol: ClassVar[str]
    model: ClassVar[str] = "fake-chat"
    # Protocols that answer 429 with a vendor body still map to RateLimitError, etc.

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        raise NotImplementedError

    @pytest.fixture
    async def server(self) -> AsyncIterator[FakeServer]:
        async with FakeServer(self.protocol) as server:
            yield server

    @pytest.fixture
    async def client(self, server: FakeServer) -> AsyncIterator[Any]:
        client = self.make_client(server, retry=NO_WAIT)
        try:
            yield client
        finally:
            await client.aclose()

    async def test_chat(self, client: Any) -> None:
        r = await client.chat([{"role": "user", "content": "hello world"}], model=self.model)
        assert r.text == "echo: hello world"
        assert r.message.role == "assistant"
        assert r.tool_calls == []
        assert r.request_id.startswith("req_")
        assert r.usage is not None and r.usage.prompt_tokens
        assert r.finish_reason is not None

    async def test_system_message_is_accepted(self, client: Any) -> None:
        r = await client.chat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ok then"}],
            model=self.model,
        )
        assert r.text == "echo: ok then"

    async def test_stream_chat(self, client: Any) -> None:
        deltas = []
        async with client.stream_chat(
            [{"role": "user", "content": "hello streaming world"}], model=self.model
        ) as stream:
            async for chunk in stream:
                deltas.append(chunk.delta)
        assert "".join(deltas) == "echo: hello streaming world"
        assert len([d for d in deltas if d]) >= 2  # chunk by chunk, not one buffered piece

    async def test_tool_round_trip(self, client: Any) -> None:
        messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
        first = await client.chat(messages, model=self.model, tools=[get_weather])
        assert len(first.tool_calls) == 1
        call = first.tool_calls[0]
        assert call.name == "get_weather"
        assert call.args() == {"city": "test"}
        result = get_weather(**call.args())
        messages += [first.message, asyncllm.tool_result(call, result)]
        second = await client.chat(messages, model=self.model, tools=[get_weather])
        assert second.text == "tool get_weather returned: sunny in test"
        assert second.tool_calls == []

    @pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
    async def test_status_maps_to_class(
        self, server: FakeServer, status: int, cls: type[Exception]
    ) -> None:
        client = self.make_client(server, max_retries=0)
        server.fail_next(1, status=status)
        try:
            with pytest.raises(cls) as info:
                await client.chat([{"role": "user", "content": "x"}], model=self.model)
        finally:
            await client.aclose()
        error: Any = info.value
        assert error.status_code == status
        assert error.request_id == server.request_ids[-1]
        assert error.body
        assert server.request_count == 1

    async def test_429_with_retry_after_is_retried(self, client: Any, server: FakeServer) -> None:
        server.fail_next(2, status=429, retry_after="0")
        r = await client.chat([{"role": "user", "content": "after limits"}], model=self.model)
        assert r.text == "echo: after limits"
        assert server.request_count == 3

    async def test_breaker_opens(self, server: FakeServer) -> None:
        client = self.make_client(
            server,
            max_retries=0,
            breaker=asyncllm.BreakerConfig(failure_threshold=2, reset_timeout=60),
        )
        server.fail_next(2, status=503)
        try:
            for _ in range(2):
                with pytest.raises(asyncllm.InternalServerError):
                    await client.chat([{"role": "user", "content": "x"}], model=self.model)
            with pytest.raises(asyncllm.CircuitOpenError):
                await client.chat([{"role": "user", "content": "x"}], model=self.model)
        finally:
            await client.aclose()
        assert server.request_count == 2

    async def test_request_id_on_the_wire(self, client: Any, server: FakeServer) -> None:
        with asyncllm.request_context("contract-id-1"):
            r = await client.chat([{"role": "user", "content": "id?"}], model=self.model)
        assert r.request_id == "contract-id-1"
        assert list(server.request_ids) == ["contract-id-1"]
        assert client.dispatcher.tracker.get("contract-id-1").status.value == "succeeded"
