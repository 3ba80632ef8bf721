"""Fifty concurrent chat calls at mixed priorities through one dispatcher, against the embedded
OpenAI-protocol server with injected 429s and 500s. No key and no network needed.

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import random

import asyncllm
from asyncllm.testing import FakeServer, Faults


async def main() -> None:
    faults = Faults(rate_limit_rate=0.15, retry_after="0.05", error_rate=0.1, latency=0.02)
    async with FakeServer("openai", faults=faults, seed=3) as server:
        client = asyncllm.OpenAI(
            api_key="not-needed-locally",
            base_url=server.url("/v1"),
            max_concurrent_requests=5,
            retry=asyncllm.RetryConfig(initial_delay=0.05, max_delay=0.5),
        )
        priorities = [asyncllm.Priority.HIGH, asyncllm.Priority.NORMAL, asyncllm.Priority.LOW]
        rng = random.Random(1)

        async def ask(i: int) -> str:
            priority = rng.choice(priorities)
            with asyncllm.request_context(f"quickstart-{i:02d}"):
                try:
                    r = await client.chat(
                        [{"role": "user", "content": f"question {i}"}],
                        model="fake-chat",
                        priority=priority,
                    )
                except asyncllm.APIError as exc:
                    return f"{exc.request_id}  {priority.name:<6}  error: {type(exc).__name__}"
                return f"{r.request_id}  {priority.name:<6}  {r.text}"

        async with client:
            for line in await asyncio.gather(*(ask(i) for i in range(50))):
                print(line)
            print()
            print(client.dispatcher.stats_table())
        print(
            f"\nserver saw {server.request_count} requests, "
            f"at most {server.max_in_flight} at once (limit 5)"
        )


if __name__ == "__main__":
    asyncio.run(main())
