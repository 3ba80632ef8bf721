"""A loopback OpenAI-compatible server for the benchmarks, run in its own process.

    python benchmarks/server.py [--kind fake|fast|capacity] [--delay SECONDS] [--capacity JSON]

prints ``PORT <n>`` on stdout once it listens, then serves until stdin closes (so it dies with
its parent) or it is killed.

``fake`` is ``asyncllm.testing.FakeServer("openai")``: the full protocol, streaming included.
``fast`` answers ``POST /v1/chat/completions`` (non-streaming) from a bare asyncio protocol with
the same "echo: <last user text>" reply; it needs a fraction of the CPU per call, so that on a
small machine the client under test, not the server, is what runs out of CPU first. With
``--delay`` it waits that long before each answer, as a real backend would.

``capacity`` is the ``fake`` with a vendor's hidden capacity: ``--capacity`` holds the keyword
arguments of ``asyncllm.testing.Capacity`` as JSON, ``--delay`` is the time it takes to answer an
admitted request, and ``GET /_capacity`` answers what it counted (``CapacityMeter.snapshot``),
unlimited and uncounted; ``GET /_capacity/arrivals`` the wall-clock time at which each request
with an ``x-bench-call`` header that was answered 200 arrived, by that header.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

from asyncllm.testing import Capacity, FakeServer, Faults


def _reply(body: bytes) -> bytes:
    try:
        request = json.loads(body)
        messages = request["messages"]
        user = next(m for m in reversed(messages) if m.get("role") == "user")
        text = f"echo: {user.get('content')}"
        model = request.get("model", "m")
    except (ValueError, KeyError, TypeError, StopIteration):
        payload = b'{"error":{"message":"bad request","type":"invalid_request_error"}}'
        return _http(400, payload)
    words = len(text.split())
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words},
    }
    return _http(200, json.dumps(answer, separators=(",", ":")).encode())


def _http(status: int, payload: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Bad Request"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"x-request-id: srv-1\r\n\r\n" % (status, reason, len(payload))
    ) + payload


class _FastProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length bodies: enough for the clients we measure."""

    def __init__(self, delay: float = 0.0) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.delay = delay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        out: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[:end]).lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                length = int(head[marker + 15 : line_end if line_end >= 0 else None])
            if len(buffer) < end + 4 + length:
                break
            body = bytes(buffer[end + 4 : end + 4 + length])
            del buffer[: end + 4 + length]
            out.append(_reply(body))
        if out and self.transport is not None:
            if self.delay:  # a backend that takes its time: answer later, keep reading
                loop = asyncio.get_running_loop()
                loop.call_later(self.delay, self._write, b"".join(out))
            else:
                self.transport.write(b"".join(out))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def main(kind: str, delay: float, capacity: str) -> None:
    if kind == "fake":
        server: Any = FakeServer("openai", history=1)
        await server.start()
        port = server.port
    elif kind == "capacity":
        server = FakeServer(
            "openai",
            history=1,
            faults=Faults(latency=delay),
            capacity=Capacity(**json.loads(capacity)),
        )

        arrivals: dict[str, float] = {}

        @web.middleware
        async def note_arrival(request: web.Request, handler: Any) -> web.StreamResponse:
            arrived = time.time()
            response: web.StreamResponse = await handler(request)
            call = request.headers.get("x-bench-call")
            if call is not None and response.status == 200:
                arrivals[call] = arrived
            return response

        async def counts(request: web.Request) -> web.Response:
            return web.json_response(server.capacity.snapshot())

        async def arrived(request: web.Request) -> web.Response:
            return web.json_response(arrivals)

        server.app.middlewares.append(note_arrival)
        server.app.router.add_get("/_capacity", counts)
        server.app.router.add_get("/_capacity/arrivals", arrived)
        await server.start()
        port = server.port
    else:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _FastProtocol(delay), "127.0.0.1", 0, backlog=1024
        )
        port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    try:
        await _until_stdin_closes()
    finally:
        if kind in ("fake", "capacity"):
            await server.aclose()
        else:
            server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("fake", "fast", "capacity"), default="fake")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds before each answer (fast, capacity)"
    )
    parser.add_argument("--capacity", default="{}", help="Capacity(**JSON) (capacity)")
    options = parser.parse_args()
    asyncio.run(main(options.kind, options.delay, options.capacity))
