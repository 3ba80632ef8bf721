"""A vendor's hidden capacity for the fake server: the budgets it enforces and the headers it
reports, so that rate limiting can be tested (and benchmarked) against the same rules a real
vendor applies, not against scripted 429s.

    clock = FakeClock()
    capacity = Capacity(requests_per_minute=60, tokens_per_minute=10_000, clock=clock)
    async with FakeServer("openai", capacity=capacity) as server:
        ...
        assert server.capacity.rate_limited == 0

Every budget is a bucket that refills continuously: a limit L per minute holds at most L and
gains L/60 each second, and the reset a vendor reports is the time until the bucket is full
again. That is the algorithm the headers advertise, so a client that learns from them can keep
to the budget exactly; the fake is an oracle written apart from the client's own budgets.

A request is admitted when every bucket holds its cost, and pays for it on arrival. Its cost
is one request and its tokens as the vendors estimate them before answering: the prompt's
tokens (the fake's word count of every message's text, ``system`` and an embedding's ``input``)
plus ``max_tokens`` (``max_completion_tokens``; ``Capacity.default_max_tokens`` when absent).
One over a budget is answered 429 with ``Retry-After`` (the time until it would fit); one past
``max_concurrent`` requests in flight is answered ``busy_status`` (429 or 503).

The dialects (``Capacity.dialect``), each on every answer, refusals included:

* ``"openai"``: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset a Go
  duration (``6m0s``, ``12ms``); requests and tokens per minute.
* ``"groq"``: the same headers, but the requests ones report the per-day budget (as Groq's do);
  ``requests_per_minute`` is enforced without being reported.
* ``"anthropic"``: ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,
  remaining,reset}``, the reset an RFC 3339 time (rounded up to the second); input and output
  tokens per minute are separate budgets (the prompt pays the first, ``max_tokens`` the second),
  and ``tokens`` reports whichever of them has the least left.
* ``"azure"``: ``x-ratelimit-remaining-{requests,tokens}`` only; the per-minute budgets are
  also enforced over sub-windows, as Azure OpenAI does (a 600 RPM deployment takes 10 requests a
  second: requests over 1 s, tokens over 10 s), and a 429 says ``retry-after-ms`` and
  ``x-ms-retry-after-ms`` besides ``Retry-After``.

``Retry-After`` is in whole seconds, rounded up, as the vendors send it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Capacity", "CapacityMeter", "go_duration", "rfc3339"]

DIALECTS = ("openai", "groq", "anthropic", "azure")
_MINUTE = 60.0
_DAY = 86_400.0
# Azure's sub-windows: requests over 1 s, tokens over 10 s.
_AZURE_REQUEST_WINDOW = 1.0
_AZURE_TOKEN_WINDOW = 10.0
# What a bucket's level may fall short by and still hold an amount: float refill (a third of a
# request a second, times an injected clock's steps) must not turn "exactly enough" into a 429.
_SLACK = 1e-9


@dataclass(frozen=True)
class Capacity:
    """What a fake vendor lets through, and how it says so (see the module docstring).

    ``clock`` returns seconds; Anthropic's reset times are read from it as epoch seconds, so a
    ``FakeClock`` gives them in 1970, which a test parses with the same clock. A limit left None
    is not enforced (nor reported). ``charge_refused``: a request refused at a budget still pays
    for it, as OpenAI documents of its own ("unsuccessful requests contribute to your per-minute
    limit"), so a client that resends at once digs the hole deeper (a budget may go below zero;
    its reset then outlasts the window)."""

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    busy_status: int = 429
    busy_retry_after: float | None = None
    charge_refused: bool = False
    dialect: str = "openai"
    default_max_tokens: int = 16
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}")
        if self.busy_status not in (429, 503):
            raise ValueError("busy_status must be 429 or 503")
        for name in (
            "requests_per_minute",
            "requests_per_day",
            "tokens_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "max_concurrent",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be None or >= 1")
        if self.default_max_tokens < 0:
            raise ValueError("default_max_tokens must be >= 0")
        if self.busy_retry_after is not None and self.busy_retry_after < 0:
            raise ValueError("busy_retry_after must be None or >= 0")


class _Bucket:
    """``limit`` per ``period`` seconds, refilled continuously, full at the start."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, limit: float, period: float, now: float) -> None:
        self.capacity = float(limit)
        self.rate = limit / period
        self.level = float(limit)
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` fits (after ``refill``); inf when it never will."""
        if amount <= self.level + _SLACK:
            return 0.0
        if amount > self.capacity:
            return math.inf
        return (amount - self.level) / self.rate

    def reset_in(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.rate

    def remaining(self) -> int:
        return max(0, math.floor(self.level + _SLACK))


def go_duration(seconds: float) -> str:
    """A duration as Go prints it, which OpenAI's and Groq's resets are: ``6m0s``, ``7.66s``,
    ``12ms`` (to the millisecond)."""
    millis = math.ceil(seconds * 1000 - 1e-6)
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339(epoch: float) -> str:
    """An RFC 3339 time in UTC to the second, as Anthropic's resets are (rounded up, so that a
    client waiting until then finds the budget there)."""
    at = datetime.fromtimestamp(math.ceil(epoch - 1e-6), tz=timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return _text(value.get("text", value.get("content", "")))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def request_tokens(body: Any, default_max_tokens: int) -> tuple[int, int]:
    """The input and output tokens a vendor reserves for a request before answering it: the
    prompt's words, and ``max_tokens`` (or the default). An embedding asks no output."""
    if not isinstance(body, dict):
        return 0, 0
    prompt = _words(_text(body.get("messages"))) + _words(_text(body.get("system")))
    if "input" in body and "messages" not in body:
        prompt += _words(_text(body.get("input")))
        return prompt, 0
    wanted = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
        wanted = default_max_tokens
    return prompt, wanted


class CapacityMeter:
    """The live side of a ``Capacity``: its buckets and what it counted. ``FakeServer`` asks it
    about every request (``admit``, then ``release``); tests read the counts.

    ``sent``: requests seen; ``admitted``: let through; ``rate_limited``: answered 429 for a
    budget; ``busy``: answered ``busy_status`` at the concurrency cap; ``in_flight`` and
    ``max_in_flight``: admitted requests being answered; ``tokens_admitted``: the admitted
    requests' input and output tokens."""

    def __init__(self, config: Capacity) -> None:
        self.config = config
        self.started = now = config.clock()
        self.buckets: dict[str, _Bucket] = {}
        c = config
        azure = c.dialect == "azure"
        for name, limit, period in (
            ("requests", c.requests_per_minute, _MINUTE),
            ("requests-per-day", c.requests_per_day, _DAY),
            ("tokens", c.tokens_per_minute, _MINUTE),
            ("input-tokens", c.input_tokens_per_minute, _MINUTE),
            ("output-tokens", c.output_tokens_per_minute, _MINUTE),
        ):
            if limit is not None:
                self.buckets[name] = _Bucket(limit, period, now)
        if azure and c.requests_per_minute is not None:
            window = c.requests_per_minute * _AZURE_REQUEST_WINDOW / _MINUTE
            self.buckets["requests-window"] = _Bucket(window, _AZURE_REQUEST_WINDOW, now)
        if azure and c.tokens_per_minute is not None:
            window = c.tokens_per_minute * _AZURE_TOKEN_WINDOW / _MINUTE
            self.buckets["tokens-window"] = _Bucket(window, _AZURE_TOKEN_WINDOW, now)
        self.sent = 0
        self.admitted = 0
        self.rate_limited = 0
        self.busy = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.tokens_admitted = 0

    def _cost(self, name: str, prompt: int, output: int) -> int:
        if name.startswith("requests"):
            return 1
        if name == "input-tokens":
            return prompt
        if name == "output-tokens":
            return output
        return prompt + output  # "tokens", "tokens-window"

    def admit(self, body: Any) -> tuple[int | None, str, dict[str, str]]:
        """Decide on a request whose JSON body is ``body``: the status to refuse it with (None
        to admit it, which then holds a slot until ``release``), a message, and the headers
        to answer with."""
        config = self.config
        now = config.clock()
        self.sent += 1
        prompt, output = request_tokens(body, config.default_max_tokens)
        for bucket in self.buckets.values():
            bucket.refill(now)
        if config.max_concurrent is not None and self.in_flight >= config.max_concurrent:
            self.busy += 1
            headers = self.headers(now)
            if config.busy_retry_after is not None:
                headers.update(self._retry_after(config.busy_retry_after))
            status = config.busy_status
            what = "Too many concurrent requests" if status == 429 else "Overloaded"
            return status, what, headers
        wait = 0.0
        short = ""
        for name, bucket in self.buckets.items():
            need = bucket.wait(self._cost(name, prompt, output))
            if need > wait:
                wait, short = need, name
        if wait > 0:
            self.rate_limited += 1
            if config.charge_refused:
                for name, bucket in self.buckets.items():
                    bucket.level -= self._cost(name, prompt, output)
            headers = self.headers(now)
            if not math.isinf(wait):
                headers.update(self._retry_after(wait))
            what = f"Rate limit reached for {short.removesuffix('-window')}"
            if math.isinf(wait):
                what += ": the request is larger than the whole limit"
            return 429, what, headers
        for name, bucket in self.buckets.items():
            bucket.level -= self._cost(name, prompt, output)
        self.admitted += 1
        self.tokens_admitted += prompt + output
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return None, "", self.headers(now)

    def release(self) -> None:
        """An admitted request was answered (or abandoned): its concurrency slot is free."""
        self.in_flight -= 1

    def _retry_after(self, seconds: float) -> dict[str, str]:
        headers = {"retry-after": str(max(0, math.ceil(seconds - 1e-9)))}
        if self.config.dialect == "azure":
            millis = str(max(0, math.ceil(seconds * 1000 - 1e-6)))
            headers["retry-after-ms"] = headers["x-ms-retry-after-ms"] = millis
        return headers

    def headers(self, now: float | None = None) -> dict[str, str]:
        """The rate-limit headers of an answer given at ``now`` (the clock's time by default),
        in the configured dialect."""
        if now is None:
            now = self.config.clock()
            for each in self.buckets.values():
                each.refill(now)
        dialect = self.config.dialect
        buckets = self.buckets
        out: dict[str, str] = {}
        bucket: _Bucket | None
        if dialect in ("openai", "groq"):
            requests = "requests-per-day" if dialect == "groq" else "requests"
            for kind, name in (("requests", requests), ("tokens", "tokens")):
                bucket = buckets.get(name)
                if bucket is not None:
                    out[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
                    out[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
                    out[f"x-ratelimit-reset-{kind}"] = go_duration(bucket.reset_in())
        elif dialect == "anthropic":
            tokens = [buckets[n] for n in ("input-tokens", "output-tokens") if n in buckets]
            if "tokens" in buckets:
                tokens.append(buckets["tokens"])
            least = min(tokens, key=lambda b: b.level, default=None)
            for kind, bucket in (
                ("requests", buckets.get("requests")),
                ("input-tokens", buckets.get("input-tokens")),
                ("output-tokens", buckets.get("output-tokens")),
                ("tokens", least),
            ):
                if bucket is not None:
                    prefix = f"anthropic-ratelimit-{kind}"
                    out[f"{prefix}-limit"] = str(int(bucket.capacity))
                    out[f"{prefix}-remaining"] = str(bucket.remaining())
                    out[f"{prefix}-reset"] = rfc3339(now + bucket.reset_in())
        else:  # azure
            for kind in ("requests", "tokens"):
                bucket = buckets.get(kind)
                if bucket is not None:
                    out[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
        return out

    def allowance(self, seconds: float) -> float:
        """How many requests the budgets let through in ``seconds`` from the start (full
        buckets, then their refill): the capacity a client could have used. Infinite with no
        request budget."""
        allowed = [
            b.capacity + b.rate * seconds for n, b in self.buckets.items() if n.startswith("req")
        ]
        return min(allowed, default=math.inf)

    def snapshot(self) -> dict[str, Any]:
        """The counts, as JSON-ready values (for a fake running in another process)."""
        return {
            "sent": self.sent,
            "admitted": self.admitted,
            "rate_limited": self.rate_limited,
            "busy": self.busy,
            "max_in_flight": self.max_in_flight,
            "tokens_admitted": self.tokens_admitted,
            "elapsed": self.config.clock() - self.started,
        }
