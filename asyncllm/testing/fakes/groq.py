"""The Groq protocol: OpenAI's routes under ``/openai/v1``, with Groq's rate-limit headers.

Every answer under the prefix (injected faults included) carries ``x-ratelimit-*`` headers taken
from ``server.state["groq_rate_limits"]`` (tests may change them); ``remaining-requests`` counts
down with each request. A 429 reports no tokens left and carries ``retry-after`` (``"0"`` unless
the fault or the state says otherwise).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import FakeServer
from . import openai

PREFIX = "/openai/v1"


def default_rate_limits() -> dict[str, Any]:
    return {
        "x-ratelimit-limit-requests": 14400,
        "x-ratelimit-remaining-requests": 14400,
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-limit-tokens": 18000,
        "x-ratelimit-remaining-tokens": 17997,
        "x-ratelimit-reset-tokens": "7.66s",
        "retry-after": "0",
    }


def setup(server: FakeServer, prefix: str = PREFIX) -> None:
    openai.setup(server, prefix=prefix)
    limits = server.state.setdefault("groq_rate_limits", default_rate_limits())

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith(prefix + "/"):
            return
        remaining = max(0, int(limits["x-ratelimit-remaining-requests"]) - 1)
        limits["x-ratelimit-remaining-requests"] = remaining
        for name, value in limits.items():
            if name != "retry-after":
                response.headers[name] = str(value)
        response.headers.setdefault("x-request-id", f"req_groq_{remaining}")
        if response.status == 429:
            response.headers["x-ratelimit-remaining-tokens"] = "0"
            response.headers.setdefault("retry-after", str(limits["retry-after"]))

    server.app.on_response_prepare.append(add_headers)
