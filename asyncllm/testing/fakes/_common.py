"""Deterministic replies that every fake protocol shares, so the same test works on each backend.

The conversation rule: if tools are offered and the last message is not a tool result, the model
calls the first tool with arguments made from its schema; after a tool result, it answers
``"tool <name> returned: <result>"``; otherwise it answers ``"echo: <last user text>"``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any


def reply_text(last_user_text: str) -> str:
    return f"echo: {last_user_text}"


def tool_result_text(name: str, result: str) -> str:
    return f"tool {name} returned: {result}"


def count_tokens(text: str) -> int:
    return max(1, len(text.split())) if text else 0


def pieces(text: str) -> list[str]:
    """How a reply is cut into stream chunks: word by word, spaces kept."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def vector(text: str, dim: int = 8) -> list[float]:
    """A unit vector that depends only on ``text``."""
    raw = b""
    counter = 0
    while len(raw) < dim * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(v / 0xFFFFFFFF) * 2 - 1 for v in struct.unpack(f"<{dim}I", raw[: dim * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def sample_for(schema: Any) -> Any:
    """A value that satisfies a (simple) JSON schema: what the fake model passes to tools."""
    if not isinstance(schema, dict):
        return "test"
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample_for(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: sample_for(props.get(name, {})) for name in required}
    samples: dict[Any, Any] = {
        "string": "test",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "null": None,
    }
    return samples.get(kind, "test")
