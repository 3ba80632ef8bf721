"""Chat, stream and call a tool with Claude.

Runs against the embedded fake server; set ANTHROPIC_API_KEY to talk to the real API
(model from CLAUDE_MODEL, default claude-haiku-4-5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import asyncllm
from asyncllm.testing import FakeServer


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


async def main() -> None:
    async with contextlib.AsyncExitStack() as stack:
        if os.environ.get("ANTHROPIC_API_KEY"):
            # The model every call uses unless it names another.
            client = asyncllm.Claude(model=os.environ.get("CLAUDE_MODEL", "claude-haiku-4-5"))
        else:
            server = await stack.enter_async_context(FakeServer("anthropic"))
            client = asyncllm.Claude(api_key="fake", base_url=server.url(), model="fake-chat")
        await stack.enter_async_context(client)

        reply = await client.chat(
            [
                {"role": "system", "content": "Answer in one line."},
                {"role": "user", "content": "Hi!"},
            ],
            max_tokens=200,
            timeout=30,  # a call option: seconds per attempt
        )
        print(reply.text, f"({reply.usage}, request {reply.server_request_id})")

        async with client.stream_chat([{"role": "user", "content": "Count to five."}]) as stream:
            async for chunk in stream:
                print(chunk.delta, end="", flush=True)
        print()

        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        first = await client.chat(messages, tools=[get_weather])
        if first.tool_calls:
            messages.append(first.message)
            for call in first.tool_calls:
                messages.append(asyncllm.tool_result(call, get_weather(**call.args())))
            final = await client.chat(messages, tools=[get_weather])
            print(final.text)


if __name__ == "__main__":
    asyncio.run(main())
