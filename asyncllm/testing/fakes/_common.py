"""Deterministic replies that every fake protocol shares, so the same test works on each backend.

The conversation rule: if tools are offered and the last message is not a tool result, the model
calls the first tool with arguments made from its schema; after a tool result, it answers
``"tool <name> returned: <result>"``; otherwise it answers ``"echo: <last user text>"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import math
import re
import string
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from .. import Handler

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"


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


def relevance(query: str, document: str) -> float:
    """Share of the query's words that appear in the document (case-insensitive)."""
    words = set(query.lower().split())
    if not words:
        return 0.0
    return len(words & set(document.lower().split())) / len(words)


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


def sample_for(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that satisfies a JSON schema: what the fake model passes to tools and answers
    with structured output. ``$ref`` resolves against the root's ``$defs``; an array gets one
    item (none past a few levels, so a recursive model ends); numbers respect their minimum."""
    if not isinstance(schema, dict):
        return "test"
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return sample_for(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_for(schema[key][0], root, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: sample_for(props.get(name, {}), root, depth + 1) for name in required}
    if kind == "array":
        items = schema.get("items")
        count = max(int(schema.get("minItems") or 0), 1 if depth < 4 else 0)
        return [sample_for(items, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = 1 if low is None else int(low) + (1 if "exclusiveMinimum" in schema else 0)
        return value if kind == "integer" else value + 0.5
    samples: dict[Any, Any] = {"string": "test", "boolean": True, "null": None}
    return samples.get(kind, "test")


# Python's own regular expression parser: what the fake reads a ``regex`` constraint with
# (``re._parser`` since Python 3.11, ``sre_parse`` before).
_sre: Any = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")


class _Unsupported(Exception):
    pass


def _in_class(items: list[tuple[Any, Any]], ch: str) -> bool:
    """Whether ``ch`` is in a parsed character class."""
    negate = False
    hit = False
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            hit = hit or ch == chr(av)
        elif name == "RANGE":
            hit = hit or av[0] <= ord(ch) <= av[1]
        elif name == "CATEGORY":
            category = str(av).removeprefix("CATEGORY_")
            tests = {"DIGIT": r"\d", "WORD": r"\w", "SPACE": r"\s"}
            base = category.removeprefix("NOT_")
            if base not in tests:
                raise _Unsupported(category)
            inside = re.fullmatch(tests[base], ch) is not None
            hit = hit or (inside != category.startswith("NOT_"))
        else:
            raise _Unsupported(name)
    return hit != negate


def _emit(items: Any) -> str:
    """The shortest text a parsed pattern matches, taking the first branch of each choice."""
    out: list[str] = []
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(av))
        elif name in ("NOT_LITERAL", "ANY"):
            out.append("b" if name == "NOT_LITERAL" and av == ord("a") else "a")
        elif name == "IN":
            out.append(next(c for c in string.printable if _in_class(av, c)))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            out.append(_emit(av[2]) * av[0])
        elif name == "SUBPATTERN":
            out.append(_emit(av[-1]))
        elif name == "ATOMIC_GROUP":
            out.append(_emit(av))
        elif name == "BRANCH":
            out.append(_emit(av[1][0]))
        elif name != "AT":
            raise _Unsupported(name)
    return "".join(out)


def matching(pattern: str, preferred: str = "") -> str | None:
    """A text that ``pattern`` matches whole: what the fake model answers a regex constraint
    with. ``preferred`` (the answer it would give unconstrained) when the pattern matches it,
    else the shortest text the fake can build (the first branch of each choice, each repeat at
    its least); None when it cannot build one (backreferences, lookarounds)."""
    try:
        if re.fullmatch(pattern, preferred):
            return preferred
        text = _emit(_sre.parse(pattern))
    except (re.error, _Unsupported, StopIteration, RecursionError):
        return None
    return text if re.fullmatch(pattern, text) else None


def tool_arguments(schema: Any) -> dict[str, Any]:
    """The arguments the fake model calls a tool with: always an object, ``{}`` for a tool
    declared without a parameters schema (or with one that does not describe an object)."""
    args = sample_for(schema) if isinstance(schema, dict) and schema else {}
    return args if isinstance(args, dict) else {}


# -- answering ---------------------------------------------------------------------------------


def error_only_body(status: int, message: str) -> Any:
    """The error body of servers that say nothing but the message."""
    return {"error": message}


def error_only(status: int, message: str) -> web.Response:
    return web.json_response(error_only_body(status, message), status=status)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event whose data is ``data`` as JSON."""
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


async def stream(
    request: web.Request,
    chunks: Iterable[bytes],
    *,
    content_type: str = "text/event-stream",
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send ``chunks``, one write each; event streams say ``Cache-Control: no-cache``."""
    uncached = {"Cache-Control": "no-cache"} if content_type == "text/event-stream" else {}
    resp = web.StreamResponse(headers={**(headers or {}), "Content-Type": content_type, **uncached})
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(chunk)
        await asyncio.sleep(0)  # a client reading as the chunks come sees them one by one
    await resp.write_eof()
    return resp


def guarded(check: Callable[[web.Request], web.Response | None], handler: Handler) -> Handler:
    """``handler``, unless ``check`` (of the request's headers, say) answers the request first."""

    async def answer(request: web.Request) -> web.StreamResponse:
        refused = check(request)
        return refused if refused is not None else await handler(request)

    return answer


def entry(
    table: Mapping[str, T], param: str, missing: Callable[[str], web.Response], prefix: str = ""
) -> Callable[[web.Request], T | web.Response]:
    """A ``find`` for ``finding``: the entry of ``table`` that the path's ``param`` names (its
    key is ``prefix`` and the name), or ``missing(name)``, the vendor's not-found answer."""

    def find(request: web.Request) -> T | web.Response:
        name = request.match_info[param]
        found = table.get(prefix + name)
        return missing(name) if found is None else found

    return find


def finding(
    find: Callable[[web.Request], T | web.Response],
) -> Callable[[Callable[[web.Request, T], Awaitable[web.StreamResponse]]], Handler]:
    """A decorator for a handler of one stored thing (a file, a batch, a job): the handler is
    given what ``find`` finds for the request, or the request gets ``find``'s error answer (the
    vendor's not-found) without it."""

    def wrap(handler: Callable[[web.Request, T], Awaitable[web.StreamResponse]]) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            found = find(request)
            if isinstance(found, web.Response):
                return found
            return await handler(request, found)

        return answer

    return wrap


def token_logprobs(tokens: Iterable[str], top: int | None) -> list[dict[str, Any]]:
    """Log probabilities in OpenAI's shape (which Ollama's and TGI's share) for the answer's
    tokens: each token with a made-up, deterministic log probability and ``top`` alternatives,
    the token itself first."""
    out: list[dict[str, Any]] = []
    for i, token in enumerate(tokens):
        logprob = -0.25 * (i % 4 + 1)
        alternatives = [(token, logprob)]
        alternatives += [(f"alt{k}", logprob - k - 1) for k in range(1, top or 0)]
        out.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())}
                    for t, lp in alternatives[: top or 0]
                ],
            }
        )
    return out


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,(?P<data>.*)", re.DOTALL)


def base64_problem(text: Any) -> str | None:
    """Why ``text`` is not base64 (as servers decode it), or None."""
    if not isinstance(text, str) or len(text) % 4 or not _BASE64.fullmatch(text):
        return "is not valid base64"
    return None


def media_url_problem(url: Any) -> str | None:
    """Why an image URL is neither a base64 data: URL nor an http(s) URL, or None."""
    if not isinstance(url, str) or not url:
        return "needs a url"
    if url.startswith(("http://", "https://")):
        return None
    match = _DATA_URL.fullmatch(url)
    return "is no data: or http(s) URL" if match is None else base64_problem(match["data"])


# The content part types OpenAI's chat takes; most compatible servers take text and images.
OPENAI_PARTS = frozenset({"text", "image_url", "file", "input_audio"})
IMAGE_PARTS = frozenset({"text", "image_url"})


def parts_problem(messages: list[Any], allowed: frozenset[str]) -> str | None:
    """The first content part of ``messages`` a server taking ``allowed`` part types refuses,
    with why; None when it takes them all. Shapes as OpenAI checks them: an ``image_url`` with
    a url, a ``file`` with ``file_data`` (base64, or a data: URL) or ``file_id``."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                return f"{where}: unsupported content part type {kind!r}"
            problem = None
            if kind == "image_url":
                spec = part.get("image_url")
                problem = media_url_problem(spec.get("url") if isinstance(spec, dict) else None)
            elif kind == "file":
                spec = part.get("file")
                spec = spec if isinstance(spec, dict) else {}
                data, file_id = spec.get("file_data"), spec.get("file_id")
                if (data is None) == (file_id is None):
                    problem = "needs file_data or file_id"
                elif data is not None:
                    match = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
                    problem = base64_problem(match["data"] if match else data)
            if problem is not None:
                return f"{where}: {kind} {problem}"
    return None
