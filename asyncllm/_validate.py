"""Every argument check, written once. Each raises ``ConfigurationError`` before anything is sent,
naming the argument and never showing its value (it may be a key or a user's text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ._config import finite_number
from ._exceptions import ConfigurationError


def check_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("model must be a non-empty string")
    return model


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> None:
    if value is None:
        return
    if not finite_number(value):
        raise ConfigurationError(f"{name} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigurationError(f"{name} must be between {low} and {high}")


def check_positive(name: str, value: Any, high: float | None = None) -> None:
    """``value`` is None (not given) or a finite number above zero (and at most ``high``)."""
    check_number(name, value, None, high)
    if value is not None and value <= 0:
        raise ConfigurationError(f"{name} must be > 0")


def check_int(name: str, value: Any, low: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int")
    if low is not None and value < low:
        raise ConfigurationError(f"{name} must be >= {low}")


def check_bool(name: str, value: Any) -> None:
    """``value`` is None (not given) or a real bool: 0, 1 and "false" are refused, since a JSON
    server reads them otherwise than Python does."""
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a bool")


def check_str(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string")


def check_name(name: str, value: Any) -> None:
    """``value`` is None (not given) or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{name} must be a non-empty string")


def check_str_list(name: str, value: Any, *, allow_str: bool = False) -> list[str]:
    """A non-empty list of strings (a tuple too), as a new list; with ``allow_str`` one string
    is a list of one. A bare str, bytes or a mapping is never taken for a sequence of items."""
    if allow_str and isinstance(value, str):
        return [value]
    if (
        isinstance(value, (str, bytes, bytearray, Mapping))
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(item, str) for item in value)
    ):
        what = (
            "a string or a non-empty list of strings"
            if allow_str
            else "a non-empty list of strings"
        )
        raise ConfigurationError(f"{name} must be {what}")
    return list(value)


def check_stop(stop: Any) -> list[str] | str | None:
    if stop is None or isinstance(stop, str):
        return stop
    if isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise ConfigurationError("stop must be a string or a list of strings")


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None, in the order given: a body sends only what the caller gave."""
    return {name: value for name, value in fields.items() if value is not None}


def path_segment(name: str, value: str) -> str:
    """``value`` as one URL path segment: %-quoted, and never '.' or '..', which a client resolves
    against the path before sending (so ``/models/../infer`` would go to ``/infer``)."""
    if value in (".", ".."):
        raise ConfigurationError(f"{name} {value!r} cannot be a URL path segment")
    try:
        return quote(value, safe="")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise ConfigurationError(f"{name} is not valid Unicode text") from exc


def check_metadata(value: Any) -> dict[str, str]:
    """OpenAI's ``metadata`` (chat completions and the Responses API alike): string keys and
    values, copied so that a caller's later change does not reach a queued call."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigurationError("metadata must be a mapping of strings to strings")
    return dict(value)
