"""A user's file with a pool: a ``Pool`` of ``OpenAI`` clients is typed as an ``OpenAI``, so
``mypy --strict`` checks its calls as it checks a client's and must flag each line marked
``# E`` (tests/test_pool.py checks the set of flagged lines)."""

from __future__ import annotations

import asyncllm


async def main() -> None:
    pool = asyncllm.Pool(
        [
            asyncllm.OpenAI(api_key="k1", base_url="http://127.0.0.1:8000/v1"),
            asyncllm.OpenAI(api_key="k2", base_url="http://127.0.0.1:8001/v1"),
        ]
    )
    messages = [{"role": "user", "content": "hi"}]
    await pool.chat(messages, model="m", priorty=0)  # E
    await pool.chat(messages, model="m", timeout="30")  # E
    pool.stream_chat(messages, model="m", max_retry=1)  # E
    await pool.embed(["a"], model="e", extra_body=[1])  # E
    await pool.generate("hi")  # E
    text: int = (await pool.chat(messages, model="m")).text  # E
    answer = await pool.chat(messages, model="m", priority=0, max_retries=2, deadline=5.0)
    member: str | None = answer.backend
    async with pool.stream_chat(messages, model="m") as stream:
        async for chunk in stream:
            delta: str = chunk.delta
            del delta
    vectors: list[list[float]] = (await pool.embed(["a"], model="e")).vectors
    client: asyncllm.OpenAI = pool
    stats: dict[str, asyncllm.BackendStats] = pool.stats()
    async with asyncllm.Pool([asyncllm.Ollama(base_url="http://127.0.0.1:11434")]) as ollama:
        await ollama.generate("hi", model="m")
        await ollama.chat(messages, model="m", priorty=0)  # E
    asyncllm.Pool(asyncllm.OpenAI(api_key="k"))  # E
    del text, member, vectors, client, stats
