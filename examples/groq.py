"""Chat with Groq and read its rate limits.

Runs against the embedded fake server unless GROQ_API_KEY is set, then against api.groq.com:

    python examples/groq.py
    GROQ_API_KEY=gsk_... python examples/groq.py
"""

from __future__ import annotations

import asyncio
import os

import asyncllm
from asyncllm.backends.groq import GroqChatResponse
from asyncllm.testing import FakeServer


async def demo(client: asyncllm.Groq, model: str) -> None:
    reply = await client.chat(
        [{"role": "user", "content": "Say hello in five words."}], model=model
    )
    print("reply:", reply.text)
    if isinstance(reply, GroqChatResponse) and reply.rate_limits is not None:
        limits = reply.rate_limits
        print(f"requests left: {limits.remaining_requests}, resets in {limits.reset_requests}s")
    async with client.stream_chat(
        [{"role": "user", "content": "Count to five."}], model=model
    ) as s:
        async for chunk in s:
            print(chunk.delta, end="", flush=True)
    print()
    print("stats info:", client.dispatcher.stats()[client.name].info)


async def main() -> None:
    if os.environ.get("GROQ_API_KEY"):
        async with asyncllm.Groq() as client:
            await demo(client, os.environ.get("GROQ_MODEL", "llama-3.1-8b-instant"))
        return
    async with (
        FakeServer("groq") as server,
        asyncllm.Groq(api_key="test", base_url=server.url("/openai/v1")) as client,
    ):
        await demo(client, "fake-chat")


if __name__ == "__main__":
    asyncio.run(main())
