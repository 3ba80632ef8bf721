"""Groq: OpenAI-compatible under ``/openai/v1``, plus rate-limit headers on every answer.

Groq reports its limits on each response (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
and ``retry-after`` on a 429). They are read into ``GroqRateLimits``: on each chat response
(``GroqChatResponse.rate_limits``), on the client (``Groq.rate_limits``, the latest seen) and in the
dispatcher stats (``stats()[name].info["rate_limits"]``). Streams end with usage in ``x_groq.usage``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from typing_extensions import Unpack

from .._engine._backoff import parse_retry_after
from .._engine._dispatcher import Lane
from .._http._backend import Meta
from .._models import ChatChunk, ChatResponse, Usage
from .._options import ClientOptions
from .._wire.openai import OpenAICompatible

__all__ = ["GROQ_BASE_URL", "Groq", "GroqChatResponse", "GroqRateLimits", "parse_duration"]

GROQ_BASE_URL = "https://api.groq.com/openai/v1"

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds from a Go-style duration as Groq sends it ("2m59.56s", "7.66s", "450ms", "1h0m0s");
    a bare number counts as seconds. None when absent or unreadable (never raises)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos = 0
        seconds = 0.0
        while pos < len(text):
            match = _PART.match(text, pos)
            if match is None:
                return None
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class GroqRateLimits(BaseModel):
    """Groq's limits as of one response. ``reset_*`` and ``retry_after`` are seconds from then.

    Groq's request limit is per day (RPD) and its token limit per minute (TPM).
    """

    model_config = ConfigDict(frozen=True)

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> GroqRateLimits | None:
        """The limits in ``headers``; None when the response carries none of them."""
        limits = cls(
            limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
            remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
            reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
            limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
            remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
            reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
            retry_after=parse_retry_after(headers),
        )
        return None if limits == cls() else limits


class GroqChatResponse(ChatResponse):
    """A chat response with the rate limits Groq reported alongside it."""

    rate_limits: GroqRateLimits | None = None


class Groq(OpenAICompatible):
    """``Groq(api_key=..., base_url=...)``: key from ``GROQ_API_KEY`` (required for Groq's own
    URL), base from ``GROQ_BASE_URL`` (default ``https://api.groq.com/openai/v1``).

    ``chat`` returns a ``GroqChatResponse``; ``rate_limits`` holds the latest limits seen.
    """

    backend: ClassVar[str] = "groq"
    default_base_url: ClassVar[str | None] = GROQ_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("GROQ_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("GROQ_API_KEY",)
    api_key_required: ClassVar[bool] = True

    def __init__(self, **options: Unpack[ClientOptions]) -> None:
        self._rate_limits: GroqRateLimits | None = None
        super().__init__(**options)

    @property
    def rate_limits(self) -> GroqRateLimits | None:
        """The latest limits seen by this client (or by the client it came from through
        ``with_options``)."""
        root = self._root
        assert isinstance(root, Groq)
        return root._rate_limits

    def _observe(self, status: int, headers: Mapping[str, str], lane: Lane) -> None:
        limits = GroqRateLimits.from_headers(headers)
        if limits is not None:
            root = self._root
            assert isinstance(root, Groq)
            root._rate_limits = limits
            lane.info["rate_limits"] = limits
            lane.info["rate_limits_at"] = lane.dispatcher.clock()

    def _parse_chat(self, payload: Any, meta: Meta) -> GroqChatResponse:
        base = dict(super()._parse_chat(payload, meta))  # its fields, not copied
        return GroqChatResponse(**base, rate_limits=GroqRateLimits.from_headers(meta.headers))

    @staticmethod
    def _chunk(payload: Any, meta: Meta) -> ChatChunk:
        chunk = OpenAICompatible._chunk(payload, meta)
        if chunk.usage is None and isinstance(payload, Mapping):
            extra = payload.get("x_groq")
            if isinstance(extra, Mapping) and isinstance(extra.get("usage"), Mapping):
                chunk.usage = Usage.model_validate(extra["usage"])
        return chunk
