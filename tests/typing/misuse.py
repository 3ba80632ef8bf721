"""A user's file with the mistakes the typed options catch: ``mypy --strict`` must flag each line
marked ``# E`` (tests/test_options.py checks the set of flagged lines)."""

from __future__ import annotations

import asyncllm


async def main() -> None:
    asyncllm.OpenAI(max_concurent_requests=5)  # E
    asyncllm.OpenAI("http://127.0.0.1:8000/v1")  # E
    client = asyncllm.OpenAI(api_key="k", base_url="http://127.0.0.1:8000/v1")
    messages = [{"role": "user", "content": "hi"}]
    await client.chat(messages, model="m", priorty=0)  # E
    await client.chat(messages, model="m", timeout="30")  # E
    client.stream_chat(messages, model="m", max_retry=1)  # E
    await client.models(extra_body={"a": 1})  # E
    await client.with_options(max_concurrent_requests=2).models()  # E
    asyncllm.Ollama("http://127.0.0.1:11434")  # E
    await client.responses.create(input="hi", priorty=0)  # E
    client.responses.stream(input="hi", max_retry=1)  # E
    await client.responses.retrieve("resp_1", extra_body={"a": 1})  # E
    await client.chat(messages, model="m", priority=0, max_retries=2, deadline=5.0)
    chain = asyncllm.Fallback([(client, "m"), asyncllm.Claude(model="c"), asyncllm.Ollama()])
    await chain.chat(messages, priorty=0)  # E
    asyncllm.Fallback([(client, 4)])  # E
    print((await chain.chat(messages, deadline=5.0)).backend, chain.stream_chat(messages).backend)
    await client.with_options(timeout=5, max_retries=0).embed(["a"], model="e")
