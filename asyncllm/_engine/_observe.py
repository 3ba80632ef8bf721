"""The one interface through which telemetry watches calls, so the dispatcher carries no
tracing or metrics code of its own: it tells an ``Observer`` when a call starts, when each
attempt starts and ends, and when the call ends, and sends the headers an attempt is given.

An observer that has nothing to do for a call (no tracing or metrics configured) returns None
from ``start_call``, and the call then costs nothing more. The default observer is OpenTelemetry's
(``asyncllm.integrations.otel``), made only when ``opentelemetry`` is installed: without it,
nothing is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher, Lane
    from ._tracking import RequestRecord


class CallObserver:
    """Watches one call. Attempts run one after another, never two at once."""

    __slots__ = ()

    def attempt_started(self, number: int, backoff: float) -> Mapping[str, str] | None:
        """Attempt ``number`` (1-based) starts, after waiting ``backoff`` seconds since the
        previous one failed; returns headers for it to send (say, ``traceparent``), or None."""
        return None

    def attempt_ended(self, error: BaseException | None) -> None:
        """The attempt ended: with ``error``, or None (for a stream: read to its end)."""

    def call_ended(
        self, record: RequestRecord, response_model: str | None, error: BaseException | None
    ) -> None:
        """The call ended, with ``error`` or not; ``record`` holds its outcome, times, attempts
        and token usage."""


class Observer:
    """Gives each call its ``CallObserver``; see the module docstring."""

    def attach(self, dispatcher: Dispatcher) -> None:
        """A dispatcher that reports to this observer was made (for gauges read on demand)."""

    def start_call(self, record: RequestRecord, lane: Lane) -> CallObserver | None:
        """A call was queued; None when there is nothing to observe."""
        return None


class _Auto:
    """The default of ``Dispatcher(observer=...)``: OpenTelemetry's observer where installed."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()
_default: list[Observer | None] = []


def default_observer() -> Observer | None:
    """One OpenTelemetry observer per process, or None where ``opentelemetry-api`` is not
    installed (then nothing of it is imported)."""
    if not _default:
        try:
            found = (
                importlib.util.find_spec("opentelemetry") is not None
                and importlib.util.find_spec("opentelemetry.trace") is not None
            )
        except (ImportError, ValueError):  # a broken or blocked install counts as none
            found = False
        if found:
            from ..integrations.otel import OTelObserver

            _default.append(OTelObserver())
        else:
            _default.append(None)
    return _default[0]
