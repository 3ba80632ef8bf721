"""A small FastAPI service on asyncllm: clients made in the lifespan, ``/chat``, a streamed
``/stream`` (server-sent events), ``/embed``, the caller's ``X-Request-ID`` carried through to the
model server and back, and asyncllm's errors answered with HTTP statuses.

    python examples/fastapi_service.py

runs it under uvicorn on a loopback port against the embedded OpenAI-protocol server (with
injected faults, which the dispatcher retries), sends it a few requests and prints the answers.
Serve it for real with ``create_app()`` (key and base URL from OPENAI_API_KEY / OPENAI_BASE_URL):

    uvicorn --factory examples.fastapi_service:create_app
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel

import asyncllm
from asyncllm.integrations.fastapi import StreamingAnswer, install, lifespan, sse_response
from asyncllm.testing import FakeServer, Faults


class Ask(BaseModel):
    prompt: str
    model: str = "fake-chat"
    deadline: float | None = None  # the caller's time budget, seconds


class Texts(BaseModel):
    texts: list[str]
    model: str = "fake-embed"


def create_app(**client_options: Any) -> FastAPI:
    """The service; ``client_options`` go to ``asyncllm.OpenAI``."""
    app = FastAPI(lifespan=lifespan(llm=lambda: asyncllm.OpenAI(**client_options)))
    install(app)

    @app.post("/chat")
    async def chat(ask: Ask, request: Request) -> dict[str, Any]:
        llm: asyncllm.OpenAI = request.state.llm
        messages = [{"role": "user", "content": ask.prompt}]
        r = await llm.chat(messages, model=ask.model, deadline=ask.deadline)
        usage = None if r.usage is None else r.usage.model_dump(exclude_none=True)
        return {"text": r.text, "request_id": r.request_id, "usage": usage}

    @app.post("/stream")
    async def stream(ask: Ask, request: Request) -> StreamingAnswer:
        llm: asyncllm.OpenAI = request.state.llm
        messages = [{"role": "user", "content": ask.prompt}]
        return await sse_response(llm.stream_chat(messages, model=ask.model, deadline=ask.deadline))

    @app.post("/embed")
    async def embed(texts: Texts, request: Request) -> dict[str, Any]:
        llm: asyncllm.OpenAI = request.state.llm
        e = await llm.embed(texts.texts, model=texts.model)
        return {"vectors": e.vectors, "request_id": e.request_id}

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        llm: asyncllm.OpenAI = request.state.llm
        return {name: dataclasses.asdict(s) for name, s in llm.dispatcher.stats().items()}

    return app


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free loopback port, in this event loop; yields its URL.
    Leaving the block shuts it down (the lifespan closes the clients)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def main() -> None:
    faults = Faults(rate_limit_rate=0.1, error_rate=0.1, latency=0.01)
    async with FakeServer("openai", faults=faults, seed=5) as upstream:
        app = create_app(
            api_key="not-needed-locally",
            base_url=upstream.url("/v1"),
            retry=asyncllm.RetryConfig(initial_delay=0.01, max_delay=0.1),
        )
        async with serve(app) as url, aiohttp.ClientSession() as http:

            async def ask(i: int) -> str:
                headers = {"X-Request-ID": f"caller-{i}"}
                body = {"prompt": f"question {i}"}
                async with http.post(f"{url}/chat", json=body, headers=headers) as r:
                    answer = await r.json()
                    return f"{r.headers['X-Request-ID']}  {r.status}  {answer}"

            for line in await asyncio.gather(*(ask(i) for i in range(5))):
                print(line)
            upstream.fail_next(1, status=401)
            async with http.post(f"{url}/chat", json={"prompt": "x"}) as r:
                print(f"upstream 401 -> {r.status} {await r.json()}")
            async with http.post(f"{url}/stream", json={"prompt": "stream three words"}) as r:
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        print("event:", json.loads(line[6:])["delta"])
            async with http.get(f"{url}/stats") as r:
                print("upstream calls:", (await r.json())["openai"]["succeeded"])


if __name__ == "__main__":
    asyncio.run(main())
