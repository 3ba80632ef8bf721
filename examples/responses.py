"""The Responses API: a reply, a chained turn, a stream of typed events and a background job.

Runs against the embedded fake server unless OPENAI_API_KEY is set, then against api.openai.com:

    python examples/responses.py
    OPENAI_API_KEY=sk-... python examples/responses.py
"""

from __future__ import annotations

import asyncio
import os

import asyncllm
from asyncllm.testing import FakeServer


async def demo(client: asyncllm.OpenAI, model: str, poll_every: float) -> None:
    first = await client.responses.create(
        model=model, input="Name a colour.", instructions="Answer in one word."
    )
    print("reply:", first.output_text)
    second = await client.responses.create(
        model=model, input="And another?", previous_response_id=first.id
    )
    print("chained:", second.output_text)
    async with client.responses.stream(model=model, input="Count to five.") as stream:
        async for event in stream:
            if isinstance(event, asyncllm.TextDeltaEvent):
                print(event.delta, end="", flush=True)
        final = await stream.final()
    print(f"\nstreamed: {final.usage}")
    job = await client.responses.create(model=model, input="Write a haiku.", background=True)
    while job.status in ("queued", "in_progress"):
        print("background job:", job.status)
        await asyncio.sleep(poll_every)
        job = await client.responses.retrieve(job.id)
    print("background job:", job.status, "->", job.output_text)


async def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        async with asyncllm.OpenAI() as client:
            await demo(client, os.environ.get("OPENAI_MODEL", "gpt-5-mini"), 2.0)
        return
    async with (
        FakeServer("openai") as server,
        asyncllm.OpenAI(api_key="test", base_url=server.url("/v1")) as client,
    ):
        await demo(client, "fake-chat", 0.0)


if __name__ == "__main__":
    asyncio.run(main())
