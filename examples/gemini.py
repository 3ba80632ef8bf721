"""Gemini: chat, a tool call, streaming, embeddings and a refused prompt.

Runs against the embedded fake server unless GEMINI_API_KEY (or GOOGLE_API_KEY) is set:

    python examples/gemini.py
    GEMINI_API_KEY=... python examples/gemini.py
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncllm
from asyncllm.testing import FakeServer


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


async def demo(client: asyncllm.Gemini, embed_model: str, blocked: str) -> None:
    # The client was made with model=, so chat calls name none; every call also takes the call
    # options (timeout, deadline, priority, max_retries, extra_headers, extra_query, extra_body).
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = await client.chat(messages, tools=[get_weather], timeout=30)
    for call in first.tool_calls:
        print("tool call:", call.name, call.args())
        messages += [first.message, asyncllm.tool_result(call, get_weather(**call.args()))]
        answer = await client.chat(messages, tools=[get_weather])
        print("answer:", answer.text)

    async with client.stream_chat([{"role": "user", "content": "Name three rivers."}]) as stream:
        async for chunk in stream:
            print(chunk.delta, end="", flush=True)
    print()

    vectors = await client.embed(["first text", "second text"], model=embed_model)
    print("embeddings:", len(vectors.vectors), "of", len(vectors.vectors[0]), "dimensions")
    print("tokens:", await client.count_tokens(messages[:1]))

    try:
        await client.chat([{"role": "user", "content": blocked}])
    except asyncllm.ContentBlockedError as exc:
        print("blocked:", exc.block_reason or exc.finish_reason)


async def main() -> None:
    if os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"):
        model = os.environ.get("GEMINI_MODEL", "gemini-2.0-flash")
        async with asyncllm.Gemini(model=model) as client:
            await demo(client, "text-embedding-004", "Tell me a joke.")
        return
    async with (
        FakeServer("gemini") as server,
        asyncllm.Gemini(
            api_key="test", base_url=server.url("/v1beta"), model="fake-chat"
        ) as client,
    ):
        await demo(client, "fake-embed", "BLOCKME please")


if __name__ == "__main__":
    asyncio.run(main())
