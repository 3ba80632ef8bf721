"""Property tests: whatever a server answers to a call that reads a response, the caller gets the
documented result or a typed ``APIError`` carrying the request ID (and, for an error status, the
``APIStatusError`` of that status), never a builtin exception or a hang; bodies and stream lines
stay within their limits. For every call of every backend in the registry.

The hostile answers start from valid ones (``tests/fuzz/answers.py``) and are damaged in two
ways:

- "plan", for every call that reads JSON: a few drawn operations (a subtree replaced by a
  hostile value, a key deleted, a list's items repeated or dropped, a subtree buried in deep
  nesting) picked by an index into the body's list of nodes, so that one plan damages the
  answer to each request of a call whatever its shape (the chunks of a batched call, TEI's
  /info first), and sometimes its bytes. The streams of the entries whose ``damage`` is "plan"
  are re-framed with other separators, garbage lines and cuts at drawn places.
- "tree", for the calls of the entries whose ``damage`` is "tree": every single subtree of the
  call's valid answer deleted or given the wrong type, in turn; then, at random, several such
  changes at once, deep nesting, huge strings and numbers, truncated or non-UTF-8 bytes, odd
  retry and rate-limit headers; for streams, single events mutated, dropped or repeated and
  garbage lines put in between, in SSE or NDJSON framing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncllm
from asyncllm.backends import ovms
from asyncllm.testing import MockResponse, MockTransport
from tests.fuzz import answers as a
from tests.fuzz.harness import (
    FUZZ_SETTINGS,
    HANG,
    MAX_LINE,
    MAX_RESPONSE,
    Backend,
    Call,
    read,
    read_async,
)
from tests.fuzz.registry import BACKENDS
from tests.fuzz.values import json_values
from tests.helpers import client as openai_client

CALLS = {f"{b.name}.{c.name}": (b, c) for b in BACKENDS.values() for c in b.calls}


def _streams(call: Call) -> bool:
    return call.stream or bool(call.events)


def _labels(damage: str, kind: Callable[[Call], bool] = lambda c: True) -> list[str]:
    return sorted(n for n, (b, c) in CALLS.items() if b.damage == damage and kind(c))


TREE = _labels("tree")
TREE_JSON = _labels("tree", lambda c: not c.events)
TREE_STREAMS = _labels("tree", lambda c: bool(c.events))
JSON_CALLS = sorted(n for n, (b, c) in CALLS.items() if not _streams(c))
PLAN_STREAMS = _labels("plan", _streams)

# -- editing JSON ------------------------------------------------------------------------------

Path = tuple[Any, ...]


def _paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every node's path, root first, in a fixed order."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _get(value: Any, path: Path) -> Any:
    for step in path:
        value = value[step]
    return value


def _replace(value: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


def _delete(value: Any, path: Path) -> Any:
    parent = _get(value, path[:-1])
    copy: Any = dict(parent) if isinstance(parent, dict) else list(parent)
    del copy[path[-1]]
    return _replace(value, path[:-1], copy)


class _Raw:
    """Bytes to put into a serialized body as they are (deep nesting, which json.dumps refuses)."""

    count = 0

    def __init__(self, data: bytes) -> None:
        _Raw.count += 1
        self.token = f"\x01raw{_Raw.count}\x01"
        self.data = data


def _dumps(value: Any) -> bytes:
    """JSON as a careless server writes it: NaN and Infinity allowed, ``_Raw`` pieces spliced in."""
    raws: list[_Raw] = []

    def splice(obj: Any) -> Any:
        if isinstance(obj, _Raw):
            raws.append(obj)
            return obj.token
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, default=splice).encode()
    for raw in raws:
        text = text.replace(json.dumps(raw.token).encode(), raw.data)
    return text


def _body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else _dumps(value)


def _stream(call: Call, events: list[a.Event]) -> bytes:
    return b"".join(a.frame(call.framing, name, _body(payload)) for name, payload in events)


# -- running a call against one answer -----------------------------------------------------------


async def run_async(
    backend: Backend,
    call: Call,
    status: int,
    chunks: list[bytes],
    headers: Mapping[str, str] | None = None,
) -> Any:
    """The call's result, or the APIError it raised, when every request is answered with
    ``status``, ``chunks`` and ``headers`` (the call's own by default); anything else fails the
    test. An error status must come back as the APIStatusError of that status."""

    def answer(request: Any) -> MockResponse:
        return MockResponse(
            status, chunks=chunks, headers=call.headers if headers is None else headers
        )

    result = await read_async(backend, call, answer)
    if status >= 400:
        assert isinstance(result, asyncllm.APIStatusError), result
        assert result.status_code == status
    return result


def run(
    backend: Backend,
    call: Call,
    status: int,
    chunks: list[bytes],
    headers: Mapping[str, str] | None = None,
) -> Any:
    return asyncio.run(run_async(backend, call, status, chunks, headers))


def _valid_handler(backend: Backend, call: Call) -> Callable[[Any], MockResponse]:
    if backend.damage == "tree":
        body = _stream(call, list(call.events)) if call.events else _body(call.valid)
        return lambda r: MockResponse(200, content=body, headers=call.headers)
    if call.events:
        return lambda r: MockResponse(200, content=a.stream_bytes("sse", a.plain(_payloads(call))))
    return serve([CLEAN], backend)


@pytest.mark.parametrize("label", sorted(CALLS))
def test_valid_answers_give_the_documented_result(label: str) -> None:
    """The baseline the faults start from: unchanged, every answer is read without error."""
    backend, call = CALLS[label]
    result = read(backend, call, _valid_handler(backend, call))
    assert not isinstance(result, Exception), result
    if _streams(call):
        assert result
        if backend.damage == "plan":  # one item an event
            assert len(result) == len(call.events)


# -- tree: every single fault, in turn -------------------------------------------------------------

# What a subtree becomes when a server gets its type wrong: each JSON type, the edges of numbers
# (beyond int64 and float), a lone surrogate, dates at the edges of datetime.
WRONG: list[Any] = [
    None, True, 0, -1, 1.5, 2**63, 10**309, float("inf"), float("nan"),
    "", "x", "\ud800", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    [], [None], {}, {"": None},
]  # fmt: skip


def single_faults(value: Any) -> Iterator[Any]:
    """``value`` with one subtree deleted or swapped for a value of another type, each in turn."""
    for path in _paths(value):
        if path:
            yield _delete(value, path)
        for wrong in WRONG:
            yield _replace(value, path, wrong)


def _fault_cases(backend: Backend, call: Call) -> Iterator[tuple[int, list[bytes]]]:
    """(status, body chunks) for every single fault of the call's valid answer, of its stream's
    events one at a time, and of the backend's error body (as a status error, and mid-stream)."""
    statuses = [400, 401, 404, 429, 500, 503]
    for i, body in enumerate(single_faults(backend.error)):
        yield statuses[i % len(statuses)], [_dumps(body)]
    if call.events:
        events = list(call.events)
        for i, (name, payload) in enumerate(events):
            if isinstance(payload, bytes):
                continue
            for fault in single_faults(payload):
                yield 200, [_stream(call, [*events[:i], (name, fault), *events[i + 1 :]])]
        for fault in single_faults(backend.error):
            yield 200, [_stream(call, [events[0], ("error", fault), *events[1:]])]
    elif not isinstance(call.valid, bytes):
        for fault in single_faults(call.valid):
            yield 200, [_dumps(fault)]


@pytest.mark.parametrize("label", TREE)
def test_every_single_fault_gives_a_typed_error(label: str) -> None:
    backend, call = CALLS[label]

    async def sweep() -> int:
        count = 0
        for status, chunks in _fault_cases(backend, call):
            try:
                await run_async(backend, call, status, chunks)
            except Exception as exc:
                raise AssertionError(f"{status}: {b''.join(chunks)[:1000]!r}") from exc
            count += 1
        return count

    assert asyncio.run(sweep()) > len(WRONG)


# -- tree: at random, several faults, nesting, huge values, broken bytes ----------------------------

HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 10**309, -(10**309), 10**4000])
ODD_STRINGS = st.sampled_from(
    ["", " ", "\x00", "\ud800", "null", "1e999", "[DONE]", "Infinity", "0001-01-01", "99999-01-01"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | ODD_STRINGS
)


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


_LIKE: dict[int, st.SearchStrategy[Any]] = {}


def values_like(valid: Any) -> st.SearchStrategy[Any]:
    """Random JSON whose keys are often the protocol's own, so that it looks almost right.
    (Built once per valid answer: building a recursive strategy costs more than drawing from it.)"""
    strategy = _LIKE.get(id(valid))
    if strategy is None:
        known = sorted(set(_keys(valid))) or ["x"]
        keys = st.sampled_from(known) | st.text(max_size=6)
        strategy = _LIKE[id(valid)] = st.recursive(
            scalars | st.sampled_from(known),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
            max_leaves=8,
        )
    return strategy


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> bytes:
    """``valid`` with one to three changes to its tree, then perhaps one to its bytes."""
    value = valid
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(value))))
        op = draw(st.sampled_from(["replace", "retype", "delete", "nest", "huge"]))
        if op == "replace":
            value = _replace(value, path, draw(values_like(valid)))
        elif op == "retype":
            value = _replace(value, path, draw(st.sampled_from(WRONG) | st.floats()))
        elif op == "delete" and path:
            value = _delete(value, path)
        elif op == "nest":
            # Around the interpreter's recursion limit: parsed, but perhaps not walked or printed.
            depth = draw(st.sampled_from([2, 300, 1100, 5000]) | st.integers(850, 1000))
            opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
            inner = _dumps(_get(value, path))
            value = _replace(value, path, _Raw(opener * depth + inner + closer * depth))
        elif op == "huge":
            size = draw(st.sampled_from([5_000, 20_000, 100_000]))
            value = _replace(value, path, draw(st.sampled_from(["x" * size, _Raw(b"9" * size)])))
    data = _dumps(value)
    cut = draw(st.sampled_from(["none", "none", "none", "truncate", "bad-utf8", "garbage"]))
    at = draw(st.integers(0, len(data)))
    if cut == "truncate":
        data = data[:at]
    elif cut == "bad-utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
        data = data[:at] + bad + data[at:]
    elif cut == "garbage":
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


def bodies(valid: Any) -> st.SearchStrategy[bytes]:
    """Bodies for a call whose valid answer is ``valid``: mostly mutations of it."""
    if isinstance(valid, bytes):
        return st.binary(max_size=100) | mutated(a.OLLAMA_ERROR)
    return st.one_of(
        mutated(valid),
        mutated(valid),
        mutated(valid),
        st.just(_dumps(valid)),
        st.binary(max_size=100),
        values_like(valid).map(_dumps),
    )


SSE_GARBAGE = [
    b"data: {not json}\n\n",
    b"data: \xff\xfe\n\n",
    b": a comment\n",
    b"event: error\ndata: {}\n\n",
    b'data: {"error": {"message": "mid-stream", "code": 500}}\n\n',
    b'data: {"type": "error", "error": "flat"}\n\n',
    b"data: [DONE]\n\n",
    b"data: null\n\n",
    b"data: []\n\n",
    b'data: "text"\n\n',
    b"data: b'unterminated\n\n",
    b"data: b'\\x4'\n\n",
    b"retry: soon\nid: 7\n",
    b"data: " + b"y" * (MAX_LINE + 100),  # an endless line
]
NDJSON_GARBAGE = [
    b"{not json}\n",
    b"\xff\xfe\n",
    b'{"error": 5}\n',
    b'{"error": {"message": "nested"}}\n',
    b'{"done": true}\n',
    b"null\n",
    b"[]\n",
    b'"text"\n',
    b"\n\n",
    b"y" * (MAX_LINE + 100),  # an endless line
]


@st.composite
def _event_data(draw: st.DrawFn, payload: Any, mutate: bool) -> bytes:
    if not mutate:
        return _body(payload)
    if isinstance(payload, bytes):
        return draw(
            st.sampled_from([payload[: len(payload) // 2], payload + b"'", b"b'\\"])
            | st.binary(max_size=12).map(lambda b: repr(b).encode())
            | st.binary(max_size=12).map(lambda b: b"b'" + b + b"'")
        )
    return draw(mutated(payload))


@st.composite
def streams(draw: st.DrawFn, call: Call) -> list[bytes]:
    """A valid stream of ``call`` with a few events mutated, dropped, repeated or garbage put in
    between, its bytes cut into chunks at random places (and perhaps cut short)."""
    events = list(call.events)
    mutate = set(draw(st.lists(st.integers(0, len(events) - 1), max_size=2)))
    parts = [
        a.frame(call.framing, name, draw(_event_data(payload, i in mutate)))
        for i, (name, payload) in enumerate(events)
    ]
    garbage = NDJSON_GARBAGE if call.framing == "ndjson" else SSE_GARBAGE
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["insert", "drop", "repeat"]))
        at = draw(st.integers(0, len(parts) - 1)) if parts else 0
        if op == "insert":
            parts.insert(at, draw(st.sampled_from(garbage) | st.binary(max_size=40)))
        elif parts and op == "drop":
            del parts[at]
        elif parts:
            parts.insert(at, parts[at])
    body = b"".join(parts)
    if draw(st.integers(0, 5)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    chunks, start = [], 0
    for size in draw(st.lists(st.integers(1, 64), max_size=8)):
        chunks.append(body[start : start + size])
        start += size
    chunks.append(body[start:])
    return chunks


HEADER_VALUES = st.sampled_from(
    ["0", "-1", "1e999", "nan", "inf", "2m59.56s", "7.66s", "1h", "", "true", "١٢"]
) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
RATE_HEADERS = [h for h in a.GROQ_HEADERS if h.startswith("x-ratelimit")]
HEADERS = st.dictionaries(
    st.sampled_from(["retry-after", "retry-after-ms", "x-should-retry", *RATE_HEADERS]),
    HEADER_VALUES,
    max_size=3,
)
# 30 examples a call: with the exhaustive single-fault sweep, about 30 s for the tree calls.
TREE_SETTINGS = settings(FUZZ_SETTINGS, max_examples=30)


@pytest.mark.parametrize("label", TREE_JSON)
@TREE_SETTINGS
@given(data=st.data())
def test_mutated_answers_give_typed_errors(label: str, data: st.DataObject) -> None:
    backend, call = CALLS[label]
    run(backend, call, 200, [data.draw(bodies(call.valid), label="body")])


@pytest.mark.parametrize("label", TREE)
@TREE_SETTINGS
@given(data=st.data(), status=st.sampled_from([200, 400, 401, 404, 429, 500, 503]))
def test_mutated_error_answers_give_typed_status_errors(
    label: str, data: st.DataObject, status: int
) -> None:
    backend, call = CALLS[label]
    source = backend.error if status >= 400 else call.valid
    body = data.draw(st.binary(max_size=50) if source is None else bodies(source), label="body")
    headers = {**call.headers, **data.draw(HEADERS, label="headers")}
    run(backend, call, status, [body[:7], body[7:]], headers)


@pytest.mark.parametrize("label", TREE_STREAMS)
@TREE_SETTINGS
@given(data=st.data())
def test_mutated_streams_give_typed_errors_with_bounded_lines(
    label: str, data: st.DataObject
) -> None:
    backend, call = CALLS[label]
    run(backend, call, 200, data.draw(streams(call), label="chunks"))


@pytest.mark.parametrize("label", TREE_STREAMS)
def test_an_endless_line_is_refused(label: str) -> None:
    backend, call = CALLS[label]
    endless = [b"data: " if call.framing == "sse" else b"{", *[b"y" * 1024] * 64]
    result = run(backend, call, 200, endless)
    assert isinstance(result, asyncllm.ResponseValidationError), result
    assert "limit" in result.message


# -- plan: drawn damage to the answer of each request ------------------------------------------------

number_edges = st.sampled_from(
    [10**400, -(10**400), 2**64, -(2**63) - 1, -1, 0, -0.0, 1e308, float("nan"), float("inf")]
)  # 10**400 is an int JSON carries and Python parses, beyond any float
other_edges = st.sampled_from(
    [
        "",
        "\ud800",  # a lone surrogate, sent as an escape
        "x" * 3000,
        "x" * 100_000,  # beyond max_response_bytes
        True,
        [],
        {},
        [[]],
        {"b64": "not base64!"},
        {"b64": "aGk="},
    ]
)
# KServe tensor parts in the wrong place: datatypes, shapes and element lists.
tensor_parts = st.one_of(
    st.sampled_from([*ovms.DATATYPES, "FP8", "fp32", "", "STRING"]),
    st.lists(st.integers(-2, 5) | st.sampled_from([10**20, True, 1.5, "2"]), max_size=4),
    st.lists(
        st.integers(-300, 300) | st.floats() | st.booleans() | st.text(max_size=3) | number_edges,
        max_size=7,
    ),
)
hostile_values = st.one_of(number_edges, other_edges, json_values, tensor_parts)


@dataclass(frozen=True)
class Nest:
    """``inner`` inside ``depth`` lists; encoded as text, so no encoder recurses that deep."""

    depth: int
    inner: Any


Op = tuple[str, int, Any]

replace = st.tuples(st.just("replace"), st.integers(0, 1000), hostile_values)
ops = st.lists(
    st.one_of(
        replace,
        replace,
        st.tuples(st.just("delete"), st.integers(0, 1000), st.none()),
        st.tuples(st.just("nest"), st.integers(0, 1000), st.integers(1, 1500)),
        st.tuples(st.just("repeat"), st.integers(0, 1000), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=3,
)


def damage(value: Any, plan: list[Op]) -> Any:
    """``value`` with each operation applied to the node its index picks."""
    for kind, index, arg in plan:
        paths = list(_paths(value))
        path = paths[index % len(paths)]
        if kind == "replace":
            value = _replace(value, path, arg)
        elif kind == "delete" and path:
            value = _delete(value, path)
        elif kind == "nest":
            value = _replace(value, path, Nest(arg, _get(value, path)))
        elif kind == "repeat" and isinstance(_get(value, path), list) and _get(value, path):
            # Another copy of an item (too many results, a duplicate index) or none at all.
            items = _get(value, path)
            value = _replace(value, path, items * arg if arg != 1 else [*items, items[-1]])
    return value


def encode(value: Any) -> bytes:
    """JSON text of ``value`` (NaN and Infinity as Python writes them), Nest as text."""
    if isinstance(value, Nest):
        return b"[" * value.depth + encode(value.inner) + b"]" * value.depth
    if isinstance(value, dict):
        items = (json.dumps(str(k)).encode() + b":" + encode(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Drawn:
    """One drawn response: a status, damage to the valid body, byte damage and headers."""

    status: int
    plan: list[Op]
    bytes_damage: tuple[str, int, bytes]
    headers: dict[str, str]

    def body(self, valid: Any) -> bytes:
        raw = encode(damage(valid, self.plan))
        kind, at, garbage = self.bytes_damage
        if kind == "truncate":
            return raw[: at % (len(raw) + 1)]
        if kind == "not utf-8":
            quotes = [i for i, b in enumerate(raw) if b == ord('"')] or [0]
            cut = quotes[at % len(quotes)] + 1
            return raw[:cut] + b"\xff\xc3(" + raw[cut:]
        if kind == "garbage":
            return garbage
        return raw


CLEAN = Drawn(200, [], ("none", 0, b""), {})
plan_headers = st.dictionaries(
    st.sampled_from(["x-request-id", "retry-after", "retry-after-ms", "x-should-retry"]),
    st.text(max_size=12) | st.sampled_from(["true", "false", "0", "-1", "1e9", "nan"]),
    max_size=2,
)
# Mostly 200s, where the body is parsed; error statuses read the backend's (damaged) error body.
statuses = st.just(200) | st.sampled_from([204, 400, 404, 422, 424, 429, 500, 503])
drawn = st.builds(
    Drawn,
    status=st.one_of(st.just(200), statuses),
    plan=ops,
    bytes_damage=st.one_of(
        st.just(("none", 0, b"")),
        st.just(("none", 0, b"")),
        st.just(("none", 0, b"")),
        st.tuples(st.sampled_from(["truncate", "not utf-8"]), st.integers(0, 10**6), st.just(b"")),
        st.tuples(st.just("garbage"), st.just(0), st.binary(max_size=100)),
    ),
    headers=plan_headers,
)
# Calls that send several requests (batches, TEI's /info first) take the answers in turn.
plans = st.lists(drawn, min_size=1, max_size=3)


def serve(plan: list[Drawn], backend: Backend) -> Callable[[Any], MockResponse]:
    """A handler that answers request n with ``plan[n % len(plan)]``, damaging the valid body for
    the request's path and body (or, for an error status, the backend's error body)."""
    count = 0

    def handler(request: Any) -> MockResponse:
        nonlocal count
        drawn = plan[count % len(plan)]
        count += 1
        path = urlsplit(request.url).path
        base = backend.error if drawn.status >= 400 else backend.answer(path, request.json())
        return MockResponse(drawn.status, content=drawn.body(base), headers=drawn.headers)

    return handler


# Sized so that the plan tests run in about half a minute; raise max_examples to hunt.
PLAN_SETTINGS = settings(FUZZ_SETTINGS, max_examples=50)


@pytest.mark.parametrize("label", JSON_CALLS)
@PLAN_SETTINGS
@given(plan=plans)
def test_hostile_answers_give_typed_errors(label: str, plan: list[Drawn]) -> None:
    backend, call = CALLS[label]
    read(backend, call, serve(plan, backend))


class Endless(MockResponse):
    """A body that never ends: ``head``, then ``filler`` forever. ``sent`` counts the bytes read."""

    def __init__(self, head: bytes, filler: bytes) -> None:
        super().__init__(200)
        self.head = head
        self.filler = filler
        self.sent = 0

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        self.sent += len(self.head)
        yield self.head
        while True:
            self.sent += len(self.filler)
            yield self.filler


@pytest.mark.parametrize("label", [n for n in JSON_CALLS if n != "llvm.infer_concurrent"])
def test_endless_bodies_stop_at_max_response_bytes(label: str) -> None:
    """A body that never ends is refused once it passes max_response_bytes."""
    backend, call = CALLS[label]

    async def go() -> None:
        responses: list[Endless] = []

        def handler(request: Any) -> Endless:
            responses.append(Endless(b"", b"[" * 1000))
            return responses[-1]

        client = backend.make(MockTransport(handler), responses=True, **call.client)
        try:
            with pytest.raises(asyncllm.ResponseValidationError) as caught:
                await asyncio.wait_for(call.invoke(client), HANG)
            assert caught.value.request_id is not None
            assert max(r.sent for r in responses) <= MAX_RESPONSE + 1000
        finally:
            await client.aclose()

    asyncio.run(go())


# -- plan: streams ---------------------------------------------------------------------------------

STREAM_ERRORS = [
    a.TGI_ERROR,
    {"error": {"message": "boom", "type": "server_error", "code": "x", "status": 500}},
    {"error": {"message": "boom", "status": 429}},
]
garbage_lines = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"data: {not json}",
            b"data: [DONE]",
            b"data:",
            b": keep-alive",
            b"event: error",
            b"id: 7",
            b"retry: x",
            b"\r",
            b"data: " + b"y" * (MAX_LINE + 100),  # over the line limit
        ]
    ),
    st.builds(
        lambda base, plan: b"data: " + encode(damage(base, plan)),
        st.sampled_from(STREAM_ERRORS),
        ops,
    ),
)


def _payloads(call: Call) -> list[Any]:
    return [payload for _, payload in call.events]


@dataclass(frozen=True)
class StreamAnswer:
    status: int
    event_plans: list[tuple[int, list[Op]]]
    inserts: list[tuple[int, bytes]]
    done: bool
    separator: bytes
    cuts: list[int]
    truncate: int | None
    headers: dict[str, str]

    def chunks(self, events: list[Any], error: Any) -> list[bytes]:
        if self.status >= 400:
            return [encode(damage(error, self.event_plans[0][1] if self.event_plans else []))]
        events = list(events)
        for index, plan in self.event_plans:
            events[index % len(events)] = damage(events[index % len(events)], plan)
        lines = [b"data: " + encode(e) for e in events]
        if self.done:
            lines.append(b"data: [DONE]")
        for index, line in self.inserts:
            lines.insert(index % (len(lines) + 1), line)
        raw = self.separator.join(lines) + self.separator
        if self.truncate is not None:
            raw = raw[: self.truncate % (len(raw) + 1)]
        cuts = sorted({c % (len(raw) + 1) for c in self.cuts})
        return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


stream_answers = st.builds(
    StreamAnswer,
    status=st.one_of(st.just(200), st.just(200), statuses),
    event_plans=st.lists(st.tuples(st.integers(0, 100), ops), max_size=3),
    inserts=st.lists(st.tuples(st.integers(0, 100), garbage_lines), max_size=3),
    done=st.booleans(),
    separator=st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n", b"\r\n"]),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
    truncate=st.none() | st.none() | st.integers(0, 10**6),
    headers=plan_headers,
)


@pytest.mark.parametrize("label", PLAN_STREAMS)
@settings(PLAN_SETTINGS, max_examples=150)
@given(answer=stream_answers)
def test_hostile_streams_give_typed_errors(label: str, answer: StreamAnswer) -> None:
    backend, call = CALLS[label]
    chunks = answer.chunks(_payloads(call), backend.error)
    read(
        backend, call, lambda r: MockResponse(answer.status, chunks=chunks, headers=answer.headers)
    )


@pytest.mark.parametrize("label", PLAN_STREAMS)
@settings(PLAN_SETTINGS, max_examples=10)
@given(chunk=st.integers(1, 3000), newline_first=st.booleans())
def test_endless_stream_lines_are_refused(label: str, chunk: int, newline_first: bool) -> None:
    """A line that never ends is refused once it passes max_line_bytes, having read no more than
    the limit and a chunk: memory stays bounded and the call does not hang."""
    backend, call = CALLS[label]

    async def go() -> None:
        head = b"data: " + encode(_payloads(call)[0]) + b"\n\n" + (b"\n" if newline_first else b"")
        response = Endless(head + b"data: ", b"y" * chunk)
        client = backend.make(MockTransport(lambda r: response), responses=True)
        items: list[Any] = []
        try:
            with pytest.raises(asyncllm.ResponseValidationError) as caught:
                async with call.invoke(client) as stream:
                    async for item in stream:
                        items.append(item)
            assert caught.value.request_id is not None
            assert len(items) == 1
            assert response.sent <= len(head) + 6 + MAX_LINE + 2 * chunk
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(go(), HANG))


# -- the faults these tests found, as they were found ---------------------------------------------


def found(label: str, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Any:
    backend, call = CALLS[label]
    return run(backend, call, status, [body], headers)


def test_opea_validation_error_whose_loc_is_not_a_list() -> None:
    # _detail_text iterated ``loc``: TypeError: 'bool' object is not iterable.
    body = b'{"detail": [{"loc": true}]}'
    error = found("opea.docsum", 400, body)
    assert isinstance(error, asyncllm.BadRequestError)
    assert error.message == "True: "
    error = found("opea.stream_chatqna", 200, b"data: " + body + b"\n\n")
    assert isinstance(error, asyncllm.APIError)


def test_gemini_error_whose_details_are_not_a_list() -> None:
    # _rpc_details iterated ``details``: TypeError: 'int' object is not iterable.
    body = b'{"error": {"code": 400, "details": 5}}'
    assert isinstance(found("gemini.chat", 400, body), asyncllm.BadRequestError)
    error = found("gemini.stream_chat", 200, b"data: " + body + b"\n\n")
    assert isinstance(error, asyncllm.BadRequestError)


def test_ollama_duration_beyond_int64() -> None:
    # Usage turned nanoseconds into seconds: OverflowError: int too large to convert to float.
    body = b'{"response": "", "total_duration": 1' + b"0" * 309 + b"}"
    assert isinstance(found("ollama.generate", 200, body), asyncllm.ResponseValidationError)
    error = found("ollama.stream_generate", 200, body[:-1] + b', "done": true}\n')
    assert isinstance(error, asyncllm.ResponseValidationError)


def test_claude_stream_block_index_that_is_not_an_int() -> None:
    # int(event["index"]) outside JSON's ints: OverflowError: cannot convert float infinity.
    event = b'{"type": "content_block_start", "index": Infinity, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}'
    error = found("claude.stream_chat", 200, b"data: " + event + b"\n\n")
    assert isinstance(error, asyncllm.ResponseValidationError)


def test_gemini_streamed_call_whose_name_is_a_lone_surrogate() -> None:
    # The synthetic call id hashed the name as UTF-8: UnicodeEncodeError, outside any parse.
    event = b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "\\ud800"}}]}, "finishReason": "STOP"}]}'
    chunks = found("gemini.stream_chat", 200, b"data: " + event + b"\n\n")
    assert [c.name for chunk in chunks for c in chunk.tool_calls] == ["\ud800"]
    assert chunks[0].tool_calls[0].id.startswith("gcall_0_")


def test_claude_models_that_never_end_name_the_request() -> None:
    # The refusal was raised outside the dispatcher, so it carried no request_id.
    body = b'{"data": [{"id": "a"}], "has_more": true, "last_id": "a"}'
    error = found("claude.models", 200, body)
    assert isinstance(error, asyncllm.ResponseValidationError)
    assert "has_more" in error.message


def test_retry_after_date_beyond_year_9999() -> None:
    headers = {"retry-after": "Mon, 01 Jan 99999 00:00:00 GMT"}
    found("groq.chat", 200, _dumps(a.CHAT), headers)


HUGE = b"1" + b"0" * 400  # an int JSON carries and Python parses, beyond any float


async def answer_once(backend: str, body: bytes, call: Callable[[Any], Awaitable[Any]]) -> None:
    """``call`` on a client whose server answers 200 with ``body``: a ResponseValidationError."""
    transport = MockTransport(lambda r: MockResponse(200, content=body))
    client = BACKENDS[backend].make(transport, responses=True)
    try:
        with pytest.raises(asyncllm.ResponseValidationError) as caught:
            await call(client)
        assert caught.value.request_id is not None
    finally:
        await client.aclose()


async def test_ovms_infer_float_output_beyond_float_range() -> None:
    # Was OverflowError: int too large to convert to float (in _from_json, then _check_value).
    body = b'{"outputs": [{"name": "o", "datatype": "FP32", "shape": [1], "data": [%s]}]}' % HUGE
    await answer_once("ovms", body, lambda c: c.infer(inputs={"x": [1.0]}))


def test_ovms_tensor_int_beyond_float_range_is_a_configuration_error() -> None:
    # The same check refuses such a tensor before sending (was OverflowError too).
    with pytest.raises(asyncllm.ConfigurationError, match="out of range"):
        ovms.Tensor([10**400], datatype="FP64")


async def test_ovms_predict_nested_deeper_than_the_stack() -> None:
    # Was RecursionError from _from_b64: JSON accepts this depth, a recursive walk does not.
    body = b'{"predictions": ' + b"[" * 600 + b"]" * 600 + b"}"
    await answer_once("ovms", body, lambda c: c.predict(instances=[1]))


async def test_ovms_infer_parameters_not_an_object() -> None:
    # Was returned as is: an InferResponse whose ``parameters`` (a dict or None) was a list.
    body = b'{"outputs": [], "parameters": [1]}'
    await answer_once("ovms", body, lambda c: c.infer(inputs={"x": [1.0]}))


async def test_tei_embed_value_beyond_float_range() -> None:
    # Was OverflowError from float(x) on each element.
    await answer_once("tei", b"[[%s]]" % HUGE, lambda c: c.embed("a"))


async def test_tei_embed_all_value_beyond_float_range() -> None:
    await answer_once("tei", b"[[[%s]]]" % HUGE, lambda c: c.embed_all("a"))


# -- OpenAI chat through the shared test client ----------------------------------------------------

CHAT_SETTINGS = settings(FUZZ_SETTINGS, max_examples=150)
hostile_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b'{"choices": [{"message": {"content": 5}}]}'),
    st.just(b'{"choices": [{"message": {"tool_calls": [{"id": 1}]}}]}'),
    st.just(b"x" * 20_000),
    st.integers(min_value=0, max_value=300).map(lambda n: b'{"choices": [' * n),
)


@CHAT_SETTINGS
@given(body=hostile_bodies, status=st.sampled_from([200, 200, 200, 400, 404, 429, 500]))
def test_openai_chat_hostile_responses_give_typed_errors(body: bytes, status: int) -> None:
    async def go() -> None:
        c = openai_client(
            lambda r: MockResponse(status, content=body), max_retries=0, max_response_bytes=10_000
        )
        try:
            r = await c.chat([{"role": "user", "content": "x"}], model="m")
        except asyncllm.APIError as exc:
            assert exc.request_id is not None
            assert exc.body is None or len(exc.body) <= 501
        else:
            assert isinstance(r, asyncllm.ChatResponse)
        finally:
            await c.aclose()

    asyncio.run(go())


hostile_chunks = st.lists(
    st.one_of(
        st.binary(max_size=100),
        st.just(b"data: {not json}\n\n"),
        st.just(b'data: {"choices": "nope"}\n\n'),
        st.just(b'data: {"error": {"message": "mid-stream"}}\n\n'),
        st.just(b"data: " + b"y" * 5000),  # an endless line
        st.just(b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'),
    ),
    max_size=6,
)


@CHAT_SETTINGS
@given(chunks=hostile_chunks)
def test_openai_chat_hostile_streams_give_typed_errors_with_bounded_lines(
    chunks: list[bytes],
) -> None:
    async def go() -> None:
        c = openai_client(
            lambda r: MockResponse(200, chunks=chunks), max_retries=0, max_line_bytes=4096
        )
        try:
            async for chunk in c.stream_chat([{"role": "user", "content": "x"}], model="m"):
                assert isinstance(chunk, asyncllm.ChatChunk)
        except asyncllm.APIError as exc:
            assert exc.request_id is not None
        finally:
            await c.aclose()

    asyncio.run(go())


def test_a_runaway_error_message_is_cut_short() -> None:
    huge = {"error": {"message": "m" * 30_000, "type": "t" * 5000, "code": "c" * 5000}}

    async def go() -> None:
        c = openai_client(lambda r: MockResponse(400, json=huge), max_retries=0)
        try:
            await c.chat([{"role": "user", "content": "x"}], model="m")
        except asyncllm.BadRequestError as exc:
            assert len(exc.message) <= 1003 and exc.message.startswith("mmm")
            assert len(str(exc)) < 2000  # the message, the body excerpt and the labels
            assert exc.code is not None and len(exc.code) <= 1003
            assert exc.error_type is not None and len(exc.error_type) <= 1003
            assert exc.body is not None and len(exc.body) <= 501
        else:
            raise AssertionError("a 400 must raise")
        finally:
            await c.aclose()

    asyncio.run(go())
