"""JSON in and out, with the stdlib's rules but less of its per-call cost.

Parsing goes through pydantic-core (already here for pydantic), three times faster than
``json.loads`` on a chat reply; a text it rejects (say, a lone surrogate escape, which some servers
emit when a token splits a character) is given to ``json.loads`` before being called invalid.

Encoding keeps the stdlib's C encoder and its strictness (NaN, sets or bytes are refused, not
quietly converted), but builds it once: ``JSONEncoder.encode`` builds a new one on every call,
which is half of its cost for a small body.
"""

from __future__ import annotations

import json
import json.encoder
import reprlib
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json

_STRICT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any, int], Any] | None:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    # The arguments JSONEncoder.iterencode passes for the settings of _STRICT, without the
    # circular-reference markers: a cycle ends in RecursionError instead, turned into ValueError.
    try:
        encoder: Callable[[Any, int], Any] = make(
            None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )
    except TypeError:  # a Python whose C encoder takes other arguments: use the slow path
        return None
    return encoder


_encoder = _make_encoder()


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; raises ValueError or TypeError for what JSON cannot carry."""
    if _encoder is None:
        return _STRICT.encode(value).encode()
    try:
        return "".join(_encoder(value, 0)).encode()
    except RecursionError as exc:
        raise ValueError("circular reference or too deeply nested") from exc


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError for anything that is not JSON, nesting too deep included."""
    try:
        return from_json(data)
    except (ValueError, TypeError):  # a str with a lone surrogate is a TypeError there
        pass
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def excerpt(value: Any, limit: int = 2000) -> str:
    """A bounded text of a parsed body for an error, whatever it holds."""
    try:
        return json.dumps(value)[:limit]
    except (TypeError, ValueError, RecursionError):
        return reprlib.repr(value)[:limit]
