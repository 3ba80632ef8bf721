"""Property tests for Claude, Gemini, Groq, Ollama and OPEA: bad input gets a clear typed error
before anything is sent.

Random arguments to every public method end in one of two ways: a ``ConfigurationError`` raised
before any request reaches the transport, or requests that are sent (strict JSON bodies, with no
NaN or Infinity, that the backend's own schema accepts where the repository checks one; header
values that cannot split a header; the URL path the method means) and then a normal return from
a valid canned reply. Never an untyped exception, never a hang.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

import asyncllm
from asyncllm._http._transport import Request
from asyncllm.testing import MockResponse, MockTransport
from tests.chat_contract import get_weather
from tests.fuzz.harness import NO_WAIT, keywords, opea_or_skip, public_methods, undeclared
from tests.fuzz.test_responses_a import (
    CLAUDE_EVENTS,
    CLAUDE_MESSAGE,
    CLAUDE_MODELS,
    GEMINI_ANSWER,
    GEMINI_EVENTS,
    GEMINI_MODELS,
    OLLAMA_CHAT,
    OLLAMA_CHAT_LINES,
    OLLAMA_GENERATE,
    OLLAMA_GENERATE_LINES,
    OLLAMA_PS,
    OLLAMA_PULL_LINES,
    OLLAMA_SHOW,
    OLLAMA_TAGS,
    OPEA_BYTES_EVENTS,
    OPEA_GUARDED,
    OPEA_HEALTH,
    OPEA_INGESTED,
    OPEA_RERANKED,
    OPEA_RETRIEVAL,
    OPENAI_CHAT,
    OPENAI_EVENTS,
    OPENAI_MODELS,
    Event,
)
from tests.test_claude import LEGACY_SAMPLING
from tests.test_claude import check as claude_check
from tests.test_gemini import check_against_proto
from tests.test_ollama import SPEC as OLLAMA_SPEC
from tests.test_ollama import _validator as ollama_schema_validator

OPEA = opea_or_skip().OPEA
HOST = "mock.invalid"
URL = f"http://{HOST}"
# Far longer than any call here takes; reaching it means the client hung.
HANG = 10.0
# Each method's call options (from its **options TypedDict) are drawn too: 75 examples a method
# keep the file near 20 s. Raise max_examples (and HYPOTHESIS_PROFILE=explore) to hunt.
SETTINGS = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- random arguments ---------------------------------------------------------------------------

# Text that breaks things: empty, blank, header splitting, NUL, a lone surrogate, path tricks.
ODD_TEXT = [
    "", " ", " \t\n", "\r\n", "a\rb", "a\nb", "x\x00y", "\ud800", "é…", "../x", "a/b", "?q=1",
    "#f", "%2F", "models/x", "NaN", "x" * 3000, "data:image/png;base64,iVBORw0KGgo=",
]  # fmt: skip
# Numbers at the edges. Integers too large for a float are left out here: the shared range
# checks raise OverflowError on them (see test_known_shared_bugs below).
ODD_NUMBERS = [
    0, -1, 1, 2, 2**31, 2**63, -(2**63) - 1, 2**64, 10**300, 0.5, -0.0, 1e-320, 1e308,
    math.nan, math.inf, -math.inf,
]  # fmt: skip


class Thing:
    """An object that JSON cannot carry."""


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.sampled_from(ODD_NUMBERS)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(ODD_TEXT)
)
unsendable = (
    st.binary(max_size=3)
    | st.frozensets(st.integers(0, 3), max_size=2)
    | st.builds(Thing)
    | st.just(Thing)
    | st.just(...)
)
# Keys a protocol might read; not "type", so that random dicts rarely pose as native blocks.
KEYS = ["role", "content", "text", "name", "id", "url", "function", "parameters", "model"]
junk = st.recursive(
    scalars | unsendable,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=3)
        | st.tuples(inner, inner)
    ),
    max_leaves=8,
)
flat_junk = scalars | unsendable | st.lists(scalars | unsendable, max_size=3)


def _deep(depth: int) -> Any:
    value: Any = {"type": "object"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"a": value}}
    return value


def _cycle() -> Any:
    value: dict[str, Any] = {"type": "object"}
    value["properties"] = {"self": value}
    return value


# Values that walk deep: nesting past the recursion limit, and a cycle.
deep = st.sampled_from([2000, 5000]).map(_deep) | st.builds(_cycle)
texts = st.text(max_size=12) | st.sampled_from(ODD_TEXT)
names = st.sampled_from(["m", "fake-chat", "llama3:latest", "claude-x", "gemini-x"]) | texts
bad_ints = st.sampled_from(ODD_NUMBERS) | st.integers(-3, 0) | junk
bad_numbers = st.sampled_from(ODD_NUMBERS) | st.floats() | junk
stops = texts | st.lists(texts, max_size=3) | junk
times = st.sampled_from([0, -1, math.nan, math.inf, -math.inf, 1e308, 1e-300]) | junk
priorities = st.sampled_from([2**63, -(2**63), asyncllm.Priority.HIGH]) | junk
header_text = st.text(max_size=6) | st.sampled_from(ODD_TEXT[:9])
bad_headers = st.dictionaries(header_text, header_text, min_size=1, max_size=2)
bad_extra_body = st.dictionaries(texts, junk, min_size=1, max_size=3) | deep

# Common-form messages, realistic in shape but wrong in their details.
ROLES = ["user", "assistant", "system", "developer", "tool", "function", "model", "", "USER"]
IMAGE_URLS = [
    "data:image/png;base64,iVBORw0KGgo=",
    "data:image/bmp;base64,AAAA",
    "data:image/png;base64,!!",
    "data:image/png;base64,",
    "data:,x",
    "data:image/png,xyz",
    "http://x.test/y.png",
    "https://x.test/y.png",
    "ftp://x.test/y.png",
    "",
]
ARGUMENTS = ["{}", '{"a": 1}', "[]", "null", "{bad", '{"a": NaN}', "", "\ud800", '"x"']
PART_TYPES = ["text", "image_url", "input_audio", "file", "refusal"]
urls = st.sampled_from(IMAGE_URLS) | texts | flat_junk
part = st.fixed_dictionaries(
    {"type": st.sampled_from(PART_TYPES) | st.none() | st.integers()},
    optional={
        "text": texts | junk,
        "image_url": st.fixed_dictionaries({"url": urls}) | urls,
        "mime_type": texts | flat_junk,
    },
)
content = texts | st.lists(part | flat_junk, max_size=3) | flat_junk
tool_call = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["call_1", "gcall_0_x", ""]) | flat_junk,
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["f", "get_weather"]) | texts | flat_junk},
            optional={"arguments": st.sampled_from(ARGUMENTS) | junk},
        ),
    }
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES) | flat_junk},
    optional={
        "content": content,
        "tool_calls": st.lists(tool_call | flat_junk, max_size=2) | flat_junk,
        "tool_call_id": st.sampled_from(["call_1", ""]) | flat_junk,
        "name": st.sampled_from(["f", ""]) | flat_junk,
        "images": st.lists(urls | st.binary(max_size=4), max_size=2) | flat_junk,
        "thinking": texts | flat_junk,
        "is_error": flat_junk,
        "tool_name": texts | flat_junk,
    },
)
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
GOOD_MESSAGES = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": [{"type": "text", "text": "look"}]}],
    [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "name": "f", "content": "sunny"},
    ],
]
good_messages = st.sampled_from(GOOD_MESSAGES)
# Nearly right: every field of a sensible kind, in combinations that may not make sense.
near_part = st.fixed_dictionaries(
    {"type": st.just("text"), "text": st.text(max_size=8)}
) | st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries({"url": st.sampled_from(IMAGE_URLS)}),
    }
)
near_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "function"]),
        "content": st.none() | st.text(max_size=8) | st.lists(near_part, max_size=2),
    },
    optional={
        "tool_calls": st.lists(st.just(CALL) | tool_call, max_size=2),
        "tool_call_id": st.sampled_from(["call_1", "call_2", ""]),
        "name": st.sampled_from(["f", "g", ""]),
        "images": st.lists(st.sampled_from(IMAGE_URLS[:3]), max_size=1),
        "thinking": st.text(max_size=4),
        "is_error": st.booleans(),
        "gemini_parts": st.lists(
            st.fixed_dictionaries({"text": st.text(max_size=4)}) | junk, max_size=2
        ),
    },
)


def _after_a_question(messages: list[Any]) -> list[Any]:
    return [*GOOD_MESSAGES[0], *messages]


bad_messages = (
    st.lists(near_message, min_size=1, max_size=3).map(_after_a_question)
    | st.lists(near_message, min_size=1, max_size=3)
    | st.lists(message, min_size=1, max_size=2).map(_after_a_question)
    | flat_junk
)


class Answer(BaseModel):
    """A structured answer."""

    city: str
    degrees: float | None = None


SCHEMA_TYPES = ["object", "string", "array", "integer", "number", "boolean", "null", "bogus"]
schema_leaf = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(SCHEMA_TYPES) | st.lists(st.sampled_from(SCHEMA_TYPES)) | junk,
        "enum": st.lists(scalars, max_size=2) | junk,
        "const": scalars,
        "items": junk,
        "$ref": st.sampled_from(["#/$defs/A", "#/definitions/A", "#/x", "A"]) | junk,
        "description": texts | junk,
    },
)
schema = st.fixed_dictionaries(
    {"type": st.just("object")},
    optional={
        "properties": st.dictionaries(texts, schema_leaf | junk, max_size=2) | junk,
        "required": st.lists(texts, max_size=2) | junk,
        "$defs": st.dictionaries(st.just("A"), schema_leaf | junk, max_size=1) | junk,
        "anyOf": st.lists(schema_leaf, max_size=2) | junk,
        "additionalProperties": junk,
    },
)
GOOD_TOOLS = [
    [get_weather],
    [Answer],
    [{"type": "function", "function": {"name": "f", "parameters": Answer.model_json_schema()}}],
    [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}],
]
# Tools in the common form. Left out, as the shared Tool.coerce does not refuse them cleanly yet
# (see test_known_shared_bugs): builtins without a signature, a ``description`` that is not a
# string, ``parameters`` that are not a mapping.
tool = (
    st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": names | junk})},
        optional={"description": texts},
    )
    | st.fixed_dictionaries(
        {"name": names | flat_junk},
        optional={"description": texts, "parameters": schema | deep},
    )
    | st.sampled_from([get_weather, Answer, lambda x: x])
    | flat_junk
)
bad_tools = st.lists(tool, max_size=3) | flat_junk
bad_tool_choices = (
    st.sampled_from(["any", "f", ""])
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "tool", "auto"]) | junk},
        optional={"function": st.fixed_dictionaries({"name": names | junk}) | junk, "name": junk},
    )
    | junk
)
bad_response_formats = (
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema"]) | junk},
        optional={"json_schema": st.fixed_dictionaries({"schema": schema | deep | junk}) | junk},
    )
    | schema
    | deep
    | junk
)


@dataclass(frozen=True)
class Arg:
    """One parameter: values it takes, values it should refuse (or send correctly anyway).
    ``raw`` says which values the backend passes through as given (by design): a bad one is
    sent as it is, and the body is then checked as strict JSON only, not against the schema."""

    name: str
    good: st.SearchStrategy[Any]
    bad: st.SearchStrategy[Any]
    positional: bool = False
    required: bool = False
    raw: Callable[[Any], bool] | None = None


def pos(name: str, good: Any, bad: st.SearchStrategy[Any]) -> Arg:
    strategy = good if isinstance(good, st.SearchStrategy) else st.just(good)
    return Arg(name, strategy, bad, positional=True)


def req(name: str, good: Any, bad: st.SearchStrategy[Any]) -> Arg:
    strategy = good if isinstance(good, st.SearchStrategy) else st.just(good)
    return Arg(name, strategy, bad, required=True)


def always(value: Any) -> bool:
    return True


def opt(
    name: str,
    good: Any,
    bad: st.SearchStrategy[Any],
    *,
    raw: Callable[[Any], bool] | None = None,
) -> Arg:
    strategy = good if isinstance(good, st.SearchStrategy) else st.sampled_from(good)
    return Arg(name, strategy, bad, raw=raw)


COMMON = [
    opt("priority", [0, 1, 2], priorities),
    opt("timeout", [None, 30, 0.5], times),
    opt("deadline", [None, 60], times),
]
EXTRA = [
    opt("extra_headers", [None, {}, {"x-trace": "1"}], bad_headers),
    opt("extra_body", [None, {}], bad_extra_body, raw=always),
]
# The call options every method takes (by its **options TypedDict): added to each method's
# arguments from that declaration, so that a new option is fuzzed everywhere at once.
bad_query = st.dictionaries(header_text, header_text | junk, min_size=1, max_size=2) | junk
OPTION_ARGS = {
    "priority": COMMON[0],
    "timeout": COMMON[1],
    "deadline": COMMON[2],
    "max_retries": opt("max_retries", [0, 1, 3], bad_ints),
    "extra_headers": EXTRA[0],
    "extra_query": opt("extra_query", [None, {}, {"tenant": "a"}], bad_query),
    "extra_body": EXTRA[1],
}


def declared(cls: type, method: str, params: list[Arg]) -> list[Arg]:
    """``params`` with an Arg for each call option the method's **options TypedDict declares
    that ``params`` leaves out. Every key of that TypedDict must then have an Arg."""
    kw = keywords(cls, method)
    given = {a.name for a in params}
    out = [*params, *(OPTION_ARGS[k] for k in kw.options if k in OPTION_ARGS and k not in given)]
    missing = set(kw.all) - {a.name for a in out}
    assert not missing, f"{cls.__name__}.{method}: no Arg for {sorted(missing)}"
    # And no Arg for a keyword the method does not take (that is a TypeError, tested apart).
    stray = {a.name for a in out} - set(kw.all)
    assert not stray, f"{cls.__name__}.{method} does not take {sorted(stray)}"
    return out


model = req("model", "m", names | junk)
temperature = opt("temperature", st.floats(0, 1), bad_numbers)
top_p = opt("top_p", st.floats(0, 1), bad_numbers)
top_k = opt("top_k", st.integers(1, 50), bad_ints)
max_tokens = opt("max_tokens", st.integers(1, 5000), bad_ints)
seed = opt("seed", st.integers(0, 2**31), bad_ints)
stop = opt("stop", [None, "x", ["a", "b"]], stops)
tools_arg = opt("tools", st.sampled_from([None, *GOOD_TOOLS]), bad_tools)


Call = tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]
_CALLS: dict[int, st.SearchStrategy[Call]] = {}
_GIVEN = st.booleans()


@st.composite
def _calls(draw: st.DrawFn, params: list[Arg], pick: st.SearchStrategy[str | None]) -> Call:
    chosen = {draw(pick), draw(pick)}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    bad: dict[str, Any] = {}
    for a in params:
        if not (a.positional or a.required or a.name in chosen) and not draw(_GIVEN):
            continue
        value = draw(a.bad if a.name in chosen else a.good)
        if a.name in chosen:
            bad[a.name] = value
        if a.positional:
            args.append(value)
        else:
            kwargs[a.name] = value
    return tuple(args), kwargs, bad


def draw_call(data: st.DataObject, params: list[Arg]) -> Call:
    """Arguments for one call: each optional one given or not, and up to two of them bad (most
    often one: a call with several bad ones stops at the first). Returns (args, kwargs, the bad
    values by name). The positional arguments (messages, inputs...) are the richest, so they
    are picked to be bad more often."""
    strategy = _CALLS.get(id(params))
    if strategy is None:  # built once per list: building costs more than drawing
        names = [a.name for a in params for _ in range(4 if a.positional else 1)]
        strategy = _CALLS[id(params)] = _calls(params, st.none() | st.sampled_from(names))
    return data.draw(strategy, label="(args, kwargs, bad ones)")


# -- canned replies -------------------------------------------------------------------------------


def _sse(events: list[Event]) -> bytes:
    out = b""
    for name, payload in events:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        out += (b"" if name is None else f"event: {name}\n".encode()) + b"data: " + data + b"\n\n"
    return out


def _ndjson(events: list[Event]) -> bytes:
    return b"".join(json.dumps(payload).encode() + b"\n" for _, payload in events)


def _no_constant(name: str) -> Any:
    raise AssertionError(f"request body holds {name}, which is not JSON")


def sent_json(request: Request) -> Any:
    """The body of a sent request, which must be strict JSON (no NaN or Infinity)."""
    assert request.content is not None
    return json.loads(request.content, parse_constant=_no_constant)


def check_sent(request: Request, path: re.Pattern[str]) -> None:
    """What every sent request must be: headers that cannot be split (no CR, LF or NUL), the URL
    path the method means (nothing the caller gave could change it), and a strict JSON body."""
    for name, value in request.headers.items():
        assert isinstance(name, str) and isinstance(value, str)
        assert not re.search(r"[\r\n\x00]", name + value), (name, value)
    url = urlsplit(request.url)
    assert (url.scheme, url.hostname, url.fragment) == ("http", HOST, ""), request.url
    # No query but extra_query's, percent-encoded.
    assert not re.search(r"[\s#\x00-\x1f]", url.query), request.url
    assert path.fullmatch(url.path), url.path
    assert request.params is None or all(
        isinstance(k, str) and isinstance(v, str) for k, v in request.params.items()
    )
    if request.content is not None:
        sent_json(request)


def _count_embed_inputs(body: Any) -> int:
    value = body.get("input")
    return 1 if isinstance(value, str) else len(value)


def claude_reply(request: Request) -> MockResponse:
    path = urlsplit(request.url).path
    check_sent(request, re.compile(r"/v1/(messages|messages/count_tokens|models)"))
    if path == "/v1/models":
        return MockResponse(200, json=CLAUDE_MODELS)
    if path.endswith("/count_tokens"):
        return MockResponse(200, json={"input_tokens": 12})
    if request.stream:
        return MockResponse(200, content=_sse(CLAUDE_EVENTS))
    return MockResponse(200, json=CLAUDE_MESSAGE)


GEMINI_PATH = re.compile(
    r"/v1beta/(models|(models|tunedModels)/[A-Za-z0-9][A-Za-z0-9._-]*"
    r":(generateContent|streamGenerateContent|embedContent|batchEmbedContents|countTokens))"
)


def gemini_reply(request: Request) -> MockResponse:
    check_sent(request, GEMINI_PATH)
    path = urlsplit(request.url).path
    if path == "/v1beta/models":
        assert request.params is not None and request.params["pageSize"].isdigit()
        return MockResponse(200, json={k: v for k, v in GEMINI_MODELS.items() if k != "models"})
    method = path.rsplit(":", 1)[1]
    if method == "streamGenerateContent":
        return MockResponse(200, content=_sse(GEMINI_EVENTS))
    if method == "embedContent":
        return MockResponse(200, json={"embedding": {"values": [0.1, 0.2]}})
    if method == "batchEmbedContents":
        count = len(sent_json(request)["requests"])
        return MockResponse(200, json={"embeddings": [{"values": [0.1]}] * count})
    if method == "countTokens":
        return MockResponse(200, json={"totalTokens": 7})
    return MockResponse(200, json=GEMINI_ANSWER)


def _embeddings(count: int) -> dict[str, Any]:
    return {"data": [{"index": i, "embedding": [0.1, 0.2]} for i in range(count)], "model": "m"}


def groq_reply(request: Request) -> MockResponse:
    check_sent(request, re.compile(r"/openai/v1/(chat/completions|embeddings|models)"))
    path = urlsplit(request.url).path
    if path.endswith("/models"):
        return MockResponse(200, json=OPENAI_MODELS)
    if path.endswith("/embeddings"):
        return MockResponse(200, json=_embeddings(_count_embed_inputs(sent_json(request))))
    if request.stream:
        return MockResponse(200, content=_sse(OPENAI_EVENTS))
    return MockResponse(200, json=OPENAI_CHAT)


OLLAMA_JSON: dict[str, Any] = {
    "/api/tags": OLLAMA_TAGS,
    "/api/show": OLLAMA_SHOW,
    "/api/ps": OLLAMA_PS,
    "/api/version": {"version": "0.12.0"},
    "/api/pull": {"status": "success"},
}
OLLAMA_LINES = {
    "/api/chat": OLLAMA_CHAT_LINES,
    "/api/generate": OLLAMA_GENERATE_LINES,
    "/api/pull": OLLAMA_PULL_LINES,
}


def ollama_reply(request: Request) -> MockResponse:
    check_sent(
        request,
        re.compile(r"/api/(chat|generate|embed|tags|show|ps|version|pull|delete|copy)"),
    )
    path = urlsplit(request.url).path
    if request.stream:
        return MockResponse(200, content=_ndjson(OLLAMA_LINES[path]))
    if path == "/api/chat":
        return MockResponse(200, json=OLLAMA_CHAT)
    if path == "/api/generate":
        return MockResponse(200, json=OLLAMA_GENERATE)
    if path == "/api/embed":
        count = _count_embed_inputs(sent_json(request))
        return MockResponse(200, json={"model": "m", "embeddings": [[0.1, 0.2]] * count})
    if path in ("/api/delete", "/api/copy"):
        return MockResponse(200)
    return MockResponse(200, json=OLLAMA_JSON[path])


OPEA_JSON: dict[str, Any] = {
    "/v1/retrieval": OPEA_RETRIEVAL,
    "/v1/reranking": OPEA_RERANKED,
    "/v1/guardrails": OPEA_GUARDED,
    "/v1/dataprep/ingest": OPEA_INGESTED,
    "/v1/health_check": OPEA_HEALTH,
}


def opea_reply(request: Request) -> MockResponse:
    check_sent(
        request,
        re.compile(
            r"/v1/(chatqna|codegen|docsum|faqgen|chat/completions|embeddings|retrieval"
            r"|reranking|guardrails|dataprep/ingest|health_check)"
        ),
    )
    path = urlsplit(request.url).path
    if request.data is not None:
        check_form(request.data)
    if path == "/v1/embeddings":
        return MockResponse(200, json=_embeddings(_count_embed_inputs(sent_json(request))))
    if path in OPEA_JSON:
        return MockResponse(200, json=OPEA_JSON[path])
    if request.stream and path == "/v1/chat/completions":
        return MockResponse(200, content=_sse(OPENAI_EVENTS))
    if request.stream:
        return MockResponse(
            200, content=_sse(OPEA_BYTES_EVENTS), headers={"Content-Type": "text/event-stream"}
        )
    return MockResponse(200, json=OPENAI_CHAT)


def check_form(form: Any) -> None:
    """A multipart form: aiohttp can write it (as it does when it sends it), and its fields are
    text that UTF-8 can carry, with JSON values that hold no NaN."""
    form()
    for options, _headers, value in form._fields:
        name = options["name"]
        assert isinstance(name, str) and not re.search(r"[\r\n\x00]", name), name
        if isinstance(value, str):
            value.encode("utf-8")
            if value[:1] in ("[", "{"):
                json.loads(value, parse_constant=_no_constant)
        else:
            assert isinstance(value, (bytes, bytearray)), type(value)


# -- clients and the outcome -----------------------------------------------------------------------


def _options(t: MockTransport) -> dict[str, Any]:
    return {"transport": t, "retry": NO_WAIT, "dispatcher": asyncllm.Dispatcher()}


def claude(t: MockTransport) -> asyncllm.Claude:
    return asyncllm.Claude(api_key="k", base_url=URL, **_options(t))


def gemini(t: MockTransport) -> asyncllm.Gemini:
    return asyncllm.Gemini(api_key="k", base_url=URL + "/v1beta", **_options(t))


def groq(t: MockTransport) -> asyncllm.Groq:
    return asyncllm.Groq(api_key="k", base_url=URL + "/openai/v1", **_options(t))


def ollama(t: MockTransport) -> asyncllm.Ollama:
    return asyncllm.Ollama(base_url=URL + ":80", **_options(t))


def opea(t: MockTransport) -> OPEA:
    services = ("llm", "embedding", "retriever", "reranking", "guardrails", "dataprep")
    return OPEA(base_url=URL, **{f"{s}_url": URL for s in services}, **_options(t))


def _snapshot(*values: Any) -> str | None:
    """The arguments as text, to see that a call leaves them as they were (None: too deep)."""
    try:
        return repr(values)
    except RecursionError:
        return None


async def finish(result: Any) -> None:
    """Await a call's result, or read its stream to the end."""
    if hasattr(result, "__aiter__"):
        async with result as stream:
            [item async for item in stream]
    else:
        await result


# Checks a sent JSON body against the backend's schema: (method, URL path, body).
Validate = Callable[[str, str, Any], None]


def outcome(
    make: Callable[[MockTransport], Any],
    reply: Callable[[Request], MockResponse],
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    validate: Validate | None = None,
) -> list[Request]:
    """Call ``method``: a ConfigurationError must come before anything was sent; otherwise the
    call must return normally, and ``validate(method, path, body)`` must pass for each JSON body
    sent. Anything else fails the test. Returns the requests sent."""

    async def run() -> list[Request]:
        transport = MockTransport(reply)
        client = None
        try:
            try:
                client = make(transport)
                await finish(getattr(client, method)(*args, **kwargs))
            except asyncllm.ConfigurationError:
                assert not transport.requests, "refused after a request was sent"
                return []
            except asyncllm.APITimeoutError:
                # A tiny but valid timeout or deadline (1e-300 s) may pass before or while a
                # stream is read: a typed timeout, whether or not the request went out.
                limits = [kwargs.get("timeout"), kwargs.get("deadline")]
                assert any(isinstance(t, float) and 0 < t < 1e-3 for t in limits), "timed out"
                return list(transport.requests)
            assert transport.requests, "returned without sending anything"
            return list(transport.requests)
        finally:
            if client is not None:
                await client.aclose()

    async def bounded() -> list[Request]:
        return await asyncio.wait_for(run(), HANG)

    before = _snapshot(args, kwargs)
    sent = asyncio.run(bounded())
    assert _snapshot(args, kwargs) == before, "the call changed the caller's arguments"
    if validate is not None:
        for request in sent:
            if request.content is not None:
                validate(method, urlsplit(request.url).path, sent_json(request))
    return sent


def fuzz(
    data: st.DataObject,
    make: Callable[[MockTransport], Any],
    reply: Callable[[Request], MockResponse],
    method: str,
    params: list[Arg],
    validate: Validate | None = None,
) -> list[Request]:
    args, kwargs, bad = draw_call(data, params)
    raw = any(a.raw is not None and a.name in bad and a.raw(bad[a.name]) for a in params)
    return outcome(make, reply, method, args, kwargs, None if raw else validate)


# -- Claude ---------------------------------------------------------------------------------------


def _claude_native_tools(value: Any) -> bool:
    """Tools in Anthropic's own form (``input_schema``, or a server tool's type) pass through."""
    return isinstance(value, (list, tuple)) and any(
        isinstance(t, Mapping)
        and ("input_schema" in t or t.get("type") not in (None, "function", "custom"))
        for t in value
    )


def _claude_native_choice(value: Any) -> bool:
    """A tool_choice dict in Anthropic's own form passes through."""
    return isinstance(value, Mapping) and value.get("type") != "function"


CLAUDE_BODY = [
    opt("system", [None, "sys", [{"type": "text", "text": "sys"}]], junk | st.lists(part, max_size=2)),
    opt("tools", st.sampled_from([None, *GOOD_TOOLS]), bad_tools, raw=_claude_native_tools),
    opt("tool_choice", [None, "auto", "any", "none", "required"], bad_tool_choices, raw=_claude_native_choice),
    *EXTRA,
    *COMMON,
]  # fmt: skip
CLAUDE_CHAT = [
    pos("messages", good_messages, bad_messages),
    model,
    max_tokens,
    temperature,
    top_p,
    top_k,
    stop,
    opt("metadata", [None, {"user_id": "u"}], junk, raw=always),
    *CLAUDE_BODY,
]
CLAUDE: dict[str, list[Arg]] = {
    "chat": CLAUDE_CHAT,
    "stream_chat": CLAUDE_CHAT,
    "count_tokens": [pos("messages", good_messages, bad_messages), model, *CLAUDE_BODY],
    "models": COMMON,
}
CLAUDE_SCHEMAS = {
    "chat": "MessageCreateParamsNonStreaming",
    "stream_chat": "MessageCreateParamsStreaming",
    "count_tokens": "MessageCountTokensParams",
}


def claude_schema(method: str, path: str, body: Any) -> None:
    # Sampling fields the API takes but the SDK types no longer list (see test_claude.py).
    claude_check(
        CLAUDE_SCHEMAS[method], {k: v for k, v in body.items() if k not in LEGACY_SAMPLING}
    )


@pytest.mark.parametrize("method", sorted(CLAUDE))
@SETTINGS
@given(data=st.data())
def test_claude_input_is_sent_or_refused(method: str, data: st.DataObject) -> None:
    fuzz(
        data,
        claude,
        claude_reply,
        method,
        declared(asyncllm.Claude, method, CLAUDE[method]),
        claude_schema,
    )


# -- Gemini ---------------------------------------------------------------------------------------

SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
safety = st.fixed_dictionaries(
    {"category": texts | flat_junk, "threshold": texts | flat_junk},
    optional={"method": texts},
)
gemini_model = req(
    "model", st.sampled_from(["gemini-x", "models/gemini-x", "tunedModels/t-1"]), names | junk
)


def _strings_only(value: Any) -> bool:
    """Safety settings and task types go out as given (Gemini adds new values over time)."""
    return isinstance(value, (str, list, tuple))


def _gemini_native_parts(messages: Any) -> bool:
    """An assistant message's ``gemini_parts`` (as Gemini answered them) go back unchanged."""
    return isinstance(messages, (list, tuple)) and any(
        isinstance(m, Mapping) and m.get("role") == "assistant" and m.get("gemini_parts")
        for m in messages
    )


gemini_messages = Arg(
    "messages", good_messages, bad_messages, positional=True, raw=_gemini_native_parts
)
GEMINI_GENERATE = [
    gemini_messages,
    gemini_model,
    opt("temperature", st.floats(0, 2), bad_numbers),
    top_p,
    top_k,
    max_tokens,
    stop,
    seed,
    tools_arg,
    opt("tool_choice", [None, "auto", "none", "required", "f"], bad_tool_choices),
    opt("response_format", [None, Answer, {"type": "json_object"}, {"type": "text"}], bad_response_formats),
    opt("safety_settings", [None, SAFETY], st.lists(safety, max_size=2) | junk, raw=_strings_only),
    opt("generation_config", [None, {"responseMimeType": "text/plain"}], junk, raw=always),
    *EXTRA,
    *COMMON,
]  # fmt: skip
GEMINI: dict[str, list[Arg]] = {
    "chat": [*GEMINI_GENERATE, opt("n", st.integers(1, 4), bad_ints)],
    "stream_chat": GEMINI_GENERATE,
    "embed": [
        pos("inputs", st.sampled_from(["x", ["a", "b"], ["a"] * 150]), st.lists(texts | flat_junk, max_size=3) | junk),
        gemini_model,
        opt("task_type", [None, "RETRIEVAL_QUERY"], texts | junk, raw=_strings_only),
        opt("title", [None, "doc"], texts | junk),
        opt("dimensions", st.integers(1, 3000), bad_ints),
        EXTRA[0],
        *COMMON,
    ],
    "count_tokens": [gemini_messages, gemini_model, tools_arg, EXTRA[0], *COMMON],
    "models": [opt("page_size", st.integers(1, 1000), bad_ints), *COMMON],
}  # fmt: skip


def gemini_schema(method: str, path: str, body: Any) -> None:
    kind = {
        "generateContent": "GenerateContentRequest",
        "streamGenerateContent": "GenerateContentRequest",
        "embedContent": "EmbedContentRequest",
        "batchEmbedContents": "BatchEmbedContentsRequest",
        "countTokens": "CountTokensRequest",
    }[path.rsplit(":", 1)[1]]
    assert check_against_proto(body, kind) == []


@pytest.mark.parametrize("method", sorted(GEMINI))
@SETTINGS
@given(data=st.data())
def test_gemini_input_is_sent_or_refused(method: str, data: st.DataObject) -> None:
    fuzz(
        data,
        gemini,
        gemini_reply,
        method,
        declared(asyncllm.Gemini, method, GEMINI[method]),
        gemini_schema,
    )


# -- Groq -----------------------------------------------------------------------------------------
# Groq's bodies are built by the shared OpenAI-compatible code, and the repository checks no
# schema for Groq: they are checked as strict JSON. (Against OpenAI's schema they show gaps in
# that shared code; see test_known_shared_bugs.)

OPENAI_CHAT_ARGS = [
    pos("messages", good_messages, bad_messages),
    req("model", "m", names | junk),
    opt("temperature", st.floats(0, 2), bad_numbers),
    top_p,
    max_tokens,
    stop,
    seed,
    tools_arg,
    opt("tool_choice", [None, "auto", "none", "required", "f"], bad_tool_choices),
    opt("response_format", [None, Answer, {"type": "json_object"}], bad_response_formats),
    opt("user", [None, "u-1"], texts | junk),
    opt("n", st.integers(1, 4), bad_ints),
    *EXTRA,
    *COMMON,
]
embed_inputs = pos(
    "inputs", st.sampled_from(["x", ["a", "b"]]), st.lists(texts | flat_junk, max_size=3) | junk
)
# The shared OpenAI-compatible embed takes inputs it cannot iterate with a TypeError (see
# test_known_shared_bugs), so Groq's are lists, or empty.
groq_embed_inputs = pos(
    "inputs",
    st.sampled_from(["x", ["a", "b"]]),
    st.lists(texts | flat_junk, max_size=3) | st.sampled_from(["", [], ()]),
)
dimensions = opt("dimensions", st.integers(1, 3000), bad_ints)
GROQ: dict[str, list[Arg]] = {
    "chat": OPENAI_CHAT_ARGS,
    "stream_chat": OPENAI_CHAT_ARGS,
    "embed": [
        groq_embed_inputs,
        req("model", "m", names | junk),
        dimensions,
        opt("user", [None, "u-1"], texts | junk),
        *EXTRA,
        *COMMON,
    ],
    "models": COMMON,
}


@pytest.mark.parametrize("method", sorted(GROQ))
@SETTINGS
@given(data=st.data())
def test_groq_input_is_sent_or_refused(method: str, data: st.DataObject) -> None:
    fuzz(data, groq, groq_reply, method, declared(asyncllm.Groq, method, GROQ[method]))


# -- Ollama ---------------------------------------------------------------------------------------

PNG = "iVBORw0KGgo="
ollama_model = req(
    "model", st.sampled_from(["llama3", "llama3:latest", "library/x:1b"]), names | junk
)
OLLAMA_SAMPLING = [
    opt("temperature", st.floats(0, 2), bad_numbers),
    top_p,
    top_k,
    opt("min_p", st.floats(0, 1), bad_numbers),
    max_tokens,
    opt("num_ctx", st.integers(1, 4096), bad_ints),
    seed,
    stop,
    opt(
        "options",
        [None, {}, {"repeat_penalty": 1.1}, {"mirostat": 1}],
        st.dictionaries(st.sampled_from(["temperature", "top_k", "stop", "num_predict"]) | texts, junk, min_size=1, max_size=2) | junk,
    ),
]  # fmt: skip
formats = [None, "json", {"type": "object"}, Answer]
OLLAMA_GENERATION = [
    opt("format", formats, texts | junk),
    opt("keep_alive", [None, "5m", 0, 30, 1.5], times | texts),
    opt("think", [None, True, False, "high", "low"], texts | junk),
    *EXTRA,
    *COMMON,
]
OLLAMA_GENERATE_ARGS = [
    opt("prompt", [None, "p", ""], texts | junk),  # positional in generate; by keyword here
    ollama_model,
    opt("system", [None, "s"], texts | junk),
    opt("suffix", [None, "x"], texts | junk),
    opt("images", [None, [PNG], [b"\x89PNG"], [f"data:image/png;base64,{PNG}"]], st.lists(urls | st.binary(max_size=4), max_size=2) | junk),
    opt("raw", [None, True, False], junk),
    *OLLAMA_SAMPLING,
    *OLLAMA_GENERATION,
]  # fmt: skip
OLLAMA_CHAT_ARGS = [
    pos("messages", good_messages, bad_messages),
    ollama_model,
    tools_arg,
    *OLLAMA_SAMPLING,
    *OLLAMA_GENERATION,
]
ollama_name = st.sampled_from(["llama3", "llama3:latest", "library/x:1b"])
OLLAMA: dict[str, list[Arg]] = {
    "chat": OLLAMA_CHAT_ARGS,
    "stream_chat": OLLAMA_CHAT_ARGS,
    "generate": OLLAMA_GENERATE_ARGS,
    "stream_generate": OLLAMA_GENERATE_ARGS,
    "embed": [
        embed_inputs,
        ollama_model,
        opt("truncate", [None, True, False], junk),
        opt("dimensions", st.integers(1, 3000), bad_ints),
        opt("keep_alive", [None, "5m"], times | texts),
        opt("options", [None, {"num_ctx": 512}], st.dictionaries(texts, junk, min_size=1, max_size=2) | junk),
        *EXTRA,
        *COMMON,
    ],
    "models": COMMON,
    "ps": COMMON,
    "version": COMMON,
    "show": [pos("model", ollama_name, names | junk), opt("verbose", [False, True], junk), *COMMON],
    "pull": [
        pos("model", ollama_name, names | junk),
        opt("stream", [True, False], junk),
        opt("insecure", [False, True], junk),
        *COMMON,
    ],
    "delete": [pos("model", ollama_name, names | junk), *COMMON],
    "copy": [pos("source", ollama_name, names | junk), pos("destination", "copy", names | junk), *COMMON],
}  # fmt: skip
OLLAMA_SCHEMAS = {
    "/api/chat": "ChatRequest",
    "/api/generate": "GenerateRequest",
    "/api/embed": "EmbedRequest",
    "/api/pull": "PullRequest",
    "/api/show": "ShowRequest",
    "/api/copy": "CopyRequest",
    "/api/delete": "DeleteRequest",
}


@functools.cache
def _ollama_spec() -> Any:
    return yaml.safe_load(OLLAMA_SPEC.read_text())


@functools.cache
def ollama_validator(name: str) -> jsonschema.Draft202012Validator:
    return ollama_schema_validator(_ollama_spec(), name)


def ollama_schema(method: str, path: str, body: Any) -> None:
    ollama_validator(OLLAMA_SCHEMAS[path]).validate(body)


@pytest.mark.parametrize("method", sorted(OLLAMA))
@SETTINGS
@given(data=st.data())
def test_ollama_input_is_sent_or_refused(method: str, data: st.DataObject) -> None:
    fuzz(
        data,
        ollama,
        ollama_reply,
        method,
        declared(asyncllm.Ollama, method, OLLAMA[method]),
        ollama_schema,
    )


# -- OPEA (its services publish no schema the repository checks: strict JSON and forms only) ---

FILES = [None, [("a.txt", b"some text")], [("b.md", b"# x", "text/markdown")]]
bad_files = (
    st.lists(
        st.tuples(texts | flat_junk, st.binary(max_size=4) | texts)
        | st.tuples(texts, st.binary(max_size=4), texts | flat_junk)
        | texts
        | st.sampled_from(["/nonexistent/a.txt", "x" * 5000, "", "."])
        | flat_junk,
        min_size=1,
        max_size=2,
    )
    | flat_junk
)
opea_model = opt("model", [None, "m"], names | junk)
OPEA_GENERATION = [
    opea_model,
    max_tokens,
    opt("temperature", st.floats(0, 2), bad_numbers),
    top_p,
    top_k,
    opt("repetition_penalty", st.floats(0, 2), bad_numbers),
    *EXTRA,
    *COMMON,
]
gateway_input = st.sampled_from(["what is OPEA?", *GOOD_MESSAGES[:2]])
OPEA_CHATQNA = [
    pos("question", gateway_input, texts | bad_messages),
    opt("k", st.integers(1, 10), bad_ints),
    opt("top_n", st.integers(1, 10), bad_ints),
    opt("fetch_k", st.integers(1, 10), bad_ints),
    opt("search_type", [None, "similarity", "mmr"], texts | junk),
    opt("score_threshold", st.floats(0, 1), bad_numbers),
    opt("chat_template", [None, "{context} {question}"], texts | junk),
    *OPEA_GENERATION,
]
OPEA_CODEGEN = [
    pos("prompt", gateway_input, texts | bad_messages),
    opt("index_name", [None, "code"], texts | junk),
    *OPEA_GENERATION,
]
OPEA_DOCSUM = [
    pos("text", st.sampled_from(["some text", ""]), texts | junk),
    opt("files", FILES, bad_files),
    opt("summary_type", [None, "auto", "map_reduce"], texts | junk),
    opt("chunk_size", st.integers(1, 2000), bad_ints),
    opt("chunk_overlap", st.integers(0, 100), bad_ints),
    opt("language", [None, "en"], texts | junk),
    *OPEA_GENERATION,
]
# FaqGen always sends a multipart form: it takes the HTTP options, not extra_body.
OPEA_FAQGEN = [
    pos("text", st.sampled_from(["some text", ""]), texts | junk),
    opt("files", FILES, bad_files),
    *(a for a in OPEA_GENERATION if a.name != "extra_body"),
]
OPEA_LLM_CHAT = [a if a.name != "model" else opea_model for a in OPENAI_CHAT_ARGS]
OPEA_METHODS: dict[str, list[Arg]] = {
    "chatqna": OPEA_CHATQNA,
    "stream_chatqna": OPEA_CHATQNA,
    "codegen": OPEA_CODEGEN,
    "stream_codegen": OPEA_CODEGEN,
    "docsum": OPEA_DOCSUM,
    "stream_docsum": OPEA_DOCSUM,
    "faqgen": OPEA_FAQGEN,
    "stream_faqgen": OPEA_FAQGEN,
    "chat": OPEA_LLM_CHAT,
    "stream_chat": OPEA_LLM_CHAT,
    "embed": [embed_inputs, opea_model, dimensions, opt("user", [None, "u-1"], texts | junk), *EXTRA, *COMMON],
    "retrieve": [
        pos("text", "q", texts | junk),
        pos("embedding", st.sampled_from([[0.1, 0.2], (1, 2.5)]), st.lists(scalars | flat_junk, max_size=3) | junk),
        opt("k", st.integers(1, 10), bad_ints),
        opt("search_type", [None, "similarity"], texts | junk),
        opt("fetch_k", st.integers(1, 10), bad_ints),
        opt("score_threshold", st.floats(0, 1), bad_numbers),
        opt("distance_threshold", st.floats(0, 1), bad_numbers),
        opt("lambda_mult", st.floats(0, 1), bad_numbers),
        opt("index_name", [None, "docs"], texts | junk),
        *EXTRA,
        *COMMON,
    ],
    "rerank": [
        pos("query", "q", texts | junk),
        pos("documents", st.sampled_from([["a", "b"], [{"text": "a"}]]), st.lists(texts | flat_junk | st.fixed_dictionaries({"text": texts | flat_junk}), max_size=3) | junk),
        opt("top_n", st.integers(1, 5), bad_ints),
        *EXTRA,
        *COMMON,
    ],
    "guardrails": [
        pos("text", st.sampled_from(["hello", ""]), texts | junk),
        opt("prompt", [None, "p"], texts | junk),
        *EXTRA,
        *COMMON,
    ],
    "ingest": [
        pos("files", st.sampled_from(FILES[1:]), bad_files),
        pos("links", st.sampled_from([None, ["https://x.test/a"]]), st.lists(texts | flat_junk, max_size=2) | junk),
        opt("chunk_size", st.integers(1, 2000), bad_ints),
        opt("chunk_overlap", st.integers(0, 100), bad_ints),
        opt("process_table", [None, True], junk),
        opt("table_strategy", [None, "fast"], texts | junk),
        opt("index_name", [None, "docs"], texts | junk),
        EXTRA[0],
        *COMMON,
    ],
    "health": [pos("service", st.sampled_from(["gateway", "llm", "dataprep"]), texts | junk), *COMMON],
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(OPEA_METHODS))
@SETTINGS
@given(data=st.data())
def test_opea_input_is_sent_or_refused(method: str, data: st.DataObject) -> None:
    fuzz(data, opea, opea_reply, method, declared(OPEA, method, OPEA_METHODS[method]))


# -- settings given when a client is made ----------------------------------------------------------

USER = GOOD_MESSAGES[0]
# Keys as text: a SecretStr, or a key that is no text at all, is not checked by the shared code
# (see test_known_shared_bugs).
api_key = opt("api_key", ["k", "sk-test-0123"], texts)
default_headers = opt("default_headers", [None, {"x-team": "a"}], bad_headers)


# OLLAMA_HOST values that are no URL of this host: each must be refused. (A false base_url, like
# None, means the default: $OLLAMA_HOST or localhost.)
OLLAMA_HOSTS = [
    f"ftp://{HOST}", f"{HOST}:x", f"{HOST}:99999", "[::1", f"http://{HOST}:-1", "://",
    5, 1.5, True, b"http://mock.invalid", [URL],
]  # fmt: skip


def _made(cls: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
    def make(**settings: Any) -> Callable[[MockTransport], Any]:
        return lambda t: cls(**fixed, **settings, **_options(t))

    return make


# (how to make the client, its replies, a call to make with it, the settings to fuzz)
CLIENT_SETTINGS: dict[str, tuple[Callable[..., Any], Any, str, tuple[Any, ...], dict[str, Any], list[Arg]]] = {
    "claude": (
        _made(asyncllm.Claude, base_url=URL), claude_reply, "chat", (USER,), {"model": "m"},
        [
            api_key,
            default_headers,
            opt("betas", [None, "b-1", ["b-1", "b-2"], "b-1, b-2"], texts | junk),
            opt("anthropic_version", ["2023-06-01"], texts | junk),
            opt("max_tokens", st.integers(1, 9000), bad_ints),
        ],
    ),
    "gemini": (
        _made(asyncllm.Gemini, base_url=URL + "/v1beta"), gemini_reply, "count_tokens", (USER,),
        {"model": "gemini-x"}, [api_key, default_headers],
    ),
    "groq": (
        _made(asyncllm.Groq, base_url=URL + "/openai/v1"), groq_reply, "chat", (USER,), {},
        [api_key, default_headers, opt("model", ["m"], names | junk)],
    ),
    "ollama": (
        _made(asyncllm.Ollama), ollama_reply, "version", (), {},
        [
            req("base_url", st.sampled_from([URL, HOST, f"{HOST}:8080", f"{URL}:11434/"]), st.sampled_from(OLLAMA_HOSTS) | st.builds(Thing)),
            api_key,
            default_headers,
        ],
    ),
    "opea": (
        _made(OPEA, base_url=URL, llm_url=URL), opea_reply, "chat", (USER,), {},
        [api_key, default_headers, opt("name", ["opea", "rag"], texts | junk)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("backend", sorted(CLIENT_SETTINGS))
@SETTINGS
@given(data=st.data())
def test_client_settings_are_checked_before_anything_is_sent(
    backend: str, data: st.DataObject
) -> None:
    made, reply, method, args, kwargs, params = CLIENT_SETTINGS[backend]
    _, settings_, _ = draw_call(data, params)
    validate = claude_schema if backend == "claude" else None
    outcome(made(**settings_), reply, method, args, kwargs, validate)


# -- what the fuzzing found, fixed in the backends: the smallest examples ----------------------------

REPLIES: dict[Callable[[MockTransport], Any], Callable[[Request], MockResponse]] = {
    claude: claude_reply,
    gemini: gemini_reply,
    groq: groq_reply,
    ollama: ollama_reply,
    opea: opea_reply,
}


def assert_refused(
    make: Callable[[MockTransport], Any],
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str | None = None,
    reply: Callable[[Request], MockResponse] | None = None,
) -> None:
    """The call raises ConfigurationError (matching ``message``) and sends nothing."""

    async def run() -> None:
        transport = MockTransport(reply or REPLIES[make])
        client = None
        try:
            with pytest.raises(asyncllm.ConfigurationError, match=message):
                client = make(transport)
                await finish(getattr(client, method)(*args, **kwargs))
            assert not transport.requests
        finally:
            if client is not None:
                await client.aclose()

    asyncio.run(asyncio.wait_for(run(), HANG))


def _claude_with(**settings: Any) -> Callable[[MockTransport], Any]:
    return lambda t: asyncllm.Claude(api_key="k", base_url=URL, **settings, **_options(t))


FOUND = [
    # Claude: a system that is no list of blocks was iterated (TypeError, ValueError).
    pytest.param(claude, "chat", (USER,), {"model": "m", "system": 5}, "system must be", id="claude-system-int"),
    pytest.param(claude, "count_tokens", (USER,), {"model": "m", "system": {"a": 1}}, "system must be", id="claude-system-dict"),
    # Claude: images in system messages were sent as image blocks in "system", which takes text.
    pytest.param(claude, "chat", ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}, *USER],), {"model": "m"}, "only text blocks in the system prompt", id="claude-system-image"),
    # Claude: a function tool_choice without a name was sent as {"type": "function"}.
    pytest.param(claude, "chat", (USER,), {"model": "m", "tool_choice": {"type": "function"}}, "needs a function name", id="claude-tool-choice-no-name"),
    pytest.param(claude, "chat", (USER,), {"model": "m", "tool_choice": ""}, "tool_choice must be", id="claude-tool-choice-empty"),
    # Claude: betas that are no list were iterated (TypeError).
    pytest.param(_claude_with(betas=5), "models", (), {}, "betas must be", claude_reply, id="claude-betas-int"),
    # Claude: a default max_tokens of None was sent as "max_tokens": null.
    pytest.param(_claude_with(max_tokens=None), "chat", (USER,), {"model": "m"}, "max_tokens must be", claude_reply, id="claude-default-max-tokens-none"),
    # Ollama: a host that is no string was stripped (AttributeError).
    pytest.param(lambda t: asyncllm.Ollama(base_url=5, **_options(t)), "version", (), {}, "must be a string", ollama_reply, id="ollama-host-int"),
    # Gemini: a page_size of None was sent as "pageSize=None".
    pytest.param(gemini, "models", (), {"page_size": None}, "page_size must be", id="gemini-page-size-none"),
    # Gemini and Ollama: a text part's text that is no string was sent as str() of it ("None").
    pytest.param(gemini, "chat", ([{"role": "user", "content": [{"type": "text", "text": None}]}],), {"model": "g"}, "text part", id="gemini-text-part-none"),
    pytest.param(ollama, "chat", ([{"role": "user", "content": [{"type": "text"}]}],), {"model": "m"}, "text part", id="ollama-text-part-missing"),
    # Gemini: native parts (gemini_parts) that are no dicts were given to dict() (TypeError).
    pytest.param(gemini, "chat", ([*USER, {"role": "assistant", "content": "x", "gemini_parts": [5]}],), {"model": "g"}, "gemini_parts must be", id="gemini-native-parts-int"),
    # Gemini: JSON schemas (response_format, tool parameters) of the wrong shape were walked
    # into (AttributeError, TypeError), and deep or cyclic ones into a RecursionError.
    pytest.param(gemini, "chat", (USER,), {"model": "g", "response_format": {"type": "object", "properties": 5}}, "properties must be", id="gemini-schema-properties-int"),
    pytest.param(gemini, "chat", (USER,), {"model": "g", "response_format": {"type": {}}}, "unknown JSON schema type", id="gemini-schema-type-dict"),
    pytest.param(gemini, "chat", (USER,), {"model": "g", "response_format": {"type": "object", "$defs": 5}}, r"\$defs must be", id="gemini-schema-defs-int"),
    pytest.param(gemini, "chat", (USER,), {"model": "g", "response_format": {"$ref": "#/$defs/A", "$defs": {"A": 5}}}, "must be an object", id="gemini-schema-def-int"),
    pytest.param(gemini, "chat", (USER,), {"model": "g", "response_format": {"type": "object", "required": 5}}, "required must be", id="gemini-schema-required-int"),
    pytest.param(gemini, "stream_chat", (USER,), {"model": "g", "tools": [{"name": "f", "parameters": _deep(2000)}]}, "nested too deeply", id="gemini-schema-deep"),
    pytest.param(gemini, "count_tokens", (USER,), {"model": "g", "tools": [{"name": "f", "parameters": _cycle()}]}, "nested too deeply", id="gemini-schema-cycle"),
    # Ollama: pull's stream flag was sent as given ("stream": []); known options were sent
    # with the wrong type; embed iterated inputs it could not (TypeError).
    pytest.param(ollama, "pull", ("llama3",), {"stream": []}, "stream must be a bool", id="ollama-pull-stream-list"),
    pytest.param(ollama, "chat", (USER,), {"model": "m", "options": {"temperature": "hot"}}, r"options\['temperature'\] must be a number", id="ollama-options-temperature-str"),
    pytest.param(ollama, "embed", (True,), {"model": "m"}, "inputs must be", id="ollama-embed-bool"),
    # OPEA: unhashable service names and summary types (TypeError); form fields that aiohttp
    # cannot write (ValueError, TypeError, UnicodeEncodeError, only when sending) or that held
    # NaN; a path too long for the file system (OSError); inputs and documents that cannot be
    # iterated (TypeError).
    pytest.param(opea, "health", (["gateway"],), {}, "unknown OPEA service", id="opea-health-list"),
    pytest.param(opea, "docsum", ("t",), {"summary_type": ["auto"]}, "summary_type must be", id="opea-summary-type-list"),
    # (Form fields from extra_body, which could not be written or held NaN, are gone with
    # extra_body on form calls: see test_a_form_call_takes_no_extra_body.)
    pytest.param(opea, "faqgen", ("\ud800",), {}, "not valid text", id="opea-form-lone-surrogate"),
    pytest.param(opea, "faqgen", ("t",), {"files": [("a\r\nb.txt", b"x")]}, "control character", id="opea-file-name-crlf"),
    pytest.param(opea, "docsum", (), {"files": ["x" * 5000]}, "not a readable file", id="opea-file-path-too-long"),
    pytest.param(opea, "embed", (True,), {}, "inputs must be", id="opea-embed-bool"),
    pytest.param(opea, "rerank", ("q", True), {}, "documents must be", id="opea-rerank-bool"),
    # OPEA: a None in an embedding passed the number check and met float() (TypeError).
    pytest.param(opea, "retrieve", ("q", [0.1, None]), {}, "embedding values must be numbers", id="opea-retrieve-none"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "method", "args", "kwargs", "message", "reply"), [
    p if len(p.values) == 6 else pytest.param(*p.values, None, id=p.id) for p in FOUND
])  # fmt: skip
def test_found_bad_input_is_refused_before_sending(
    make: Callable[[MockTransport], Any],
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
    reply: Callable[[Request], MockResponse] | None,
) -> None:
    assert_refused(make, method, args, kwargs, message, reply)


# Found: extra_body fields that aiohttp could not write (bytes, NaN, a name with a newline) went
# into OPEA's multipart forms. The form calls now take only the HTTP options: FaqGen (always a
# form) has no extra_body keyword, and DocSum with files refuses one.
FORM_EXTRA_BODY = [
    pytest.param("faqgen", {"extra_body": {"x": b"a"}}, TypeError, "unexpected keyword argument 'extra_body'", id="opea-form-bytes"),
    pytest.param("docsum", {"files": [("a.txt", b"x")], "extra_body": {"x": [math.nan]}}, asyncllm.ConfigurationError, "extra_body must be a mapping, on a call with a JSON body", id="opea-form-nan"),
    pytest.param("stream_faqgen", {"extra_body": {"a\nb": 1}}, TypeError, "unexpected keyword argument 'extra_body'", id="opea-form-name-newline"),
    pytest.param("stream_docsum", {"files": [("a.txt", b"x")], "extra_body": {"a\nb": 1}}, asyncllm.ConfigurationError, "extra_body must be a mapping, on a call with a JSON body", id="opea-stream-form-extra-body"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "kwargs", "error", "message"), FORM_EXTRA_BODY)
def test_a_form_call_takes_no_extra_body(
    method: str, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def run() -> None:
        transport = MockTransport(opea_reply)
        client = opea(transport)
        try:
            with pytest.raises(error, match=message):
                await finish(getattr(client, method)("t", **kwargs))
            assert not transport.requests
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(run(), HANG))


def test_claude_text_parts_keep_only_the_fields_anthropic_has() -> None:
    """Found: a text part's other fields were sent along, and Anthropic refuses unknown ones."""
    part = {"type": "text", "text": "x", "mime_type": "t", "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "user", "content": [part]}]
    (request,) = outcome(claude, claude_reply, "chat", (messages,), {"model": "m"}, claude_schema)
    assert sent_json(request)["messages"][0]["content"] == [
        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    ]


# -- found here, to be fixed in shared code: strict xfails, so a fix shows ---------------------------


# What a call that should have been refused but was sent fails with.
SENT = pytest.fail.Exception


def _shared(reason: str, raises: type[BaseException]) -> pytest.MarkDecorator:
    return pytest.mark.xfail(reason=reason, raises=raises, strict=True)


SHARED_BUGS = [
    pytest.param(claude, "chat", (USER,), {"model": "m", "temperature": 10**400}, id="check_number-int-beyond-float",),
    pytest.param(ollama, "chat", (USER,), {"model": "m", "timeout": 10**400}, id="check_timeout-int-beyond-float",),
    pytest.param(gemini, "models", (), {"deadline": 10**400}, id="deadline-int-beyond-float",),
    pytest.param(groq, "chat", (USER,), {"model": "m", "extra_headers": [("x-a", "b")]}, id="extra_headers-not-a-mapping",),
    pytest.param(claude, "chat", (USER,), {"model": "m", "extra_headers": {"a b": "v"}}, id="header-name-not-a-token",),
    pytest.param(claude, "chat", (USER,), {"model": "m", "extra_headers": {"x-a": "v\x01"}}, id="header-value-control-character",),
    pytest.param(claude, "chat", (USER,), {"model": "m", "tools": [dict]}, id="tool-without-signature",),
    pytest.param(ollama, "chat", (USER,), {"model": "m", "tools": [{"name": "f", "description": 5}]}, id="tool-description-int",),
    pytest.param(gemini, "chat", (USER,), {"model": "g", "tools": [{"name": "f", "parameters": 5}]}, id="tool-parameters-int",),
    pytest.param(groq, "embed", (True,), {"model": "m"}, id="openai-embed-inputs-bool",),
    pytest.param(groq, "embed", (["a"],), {"model": "m", "user": 5}, id="openai-embed-user-int",),
    pytest.param(lambda t: asyncllm.Groq(api_key=SecretStr("k\r\nX-Evil: 1"), base_url=URL + "/openai/v1", **_options(t)),
                 "models", (), {}, id="api_key-secretstr-crlf",),
    pytest.param(lambda t: asyncllm.Ollama(api_key=5, base_url=URL, **_options(t)),
                 "version", (), {}, id="api_key-int",),
    pytest.param(lambda t: asyncllm.Groq(api_key="k", base_url=5, **_options(t)), "models", (), {}, id="base_url-int",),
    pytest.param(lambda t: asyncllm.Claude(api_key="k", base_url="http://[::1", **_options(t)), "models", (), {}, id="base_url-bad-ipv6",),
    pytest.param(lambda t: asyncllm.Gemini(api_key="k", base_url=URL + "/v1beta", default_headers=[("x-a", "b")], **_options(t)),
                 "models", (), {}, id="default_headers-not-a-mapping",),
]  # fmt: skip
_SHARED_REPLIES = {
    "api_key-secretstr-crlf": groq_reply,
    "api_key-int": ollama_reply,
    "base_url-int": groq_reply,
    "base_url-bad-ipv6": claude_reply,
    "default_headers-not-a-mapping": gemini_reply,
}


@pytest.mark.parametrize(("make", "method", "args", "kwargs"), SHARED_BUGS)
def test_known_shared_bugs(
    request: pytest.FixtureRequest,
    make: Callable[[MockTransport], Any],
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Bad input that the shared code (not the backends') lets through untyped or sends."""
    reply = _SHARED_REPLIES.get(request.node.callspec.id)
    assert_refused(make, method, args, kwargs, reply=reply)


# -- a keyword a method does not declare ---------------------------------------------------------

UNDECLARED_CASES = {
    f"{backend}.{method}": (cls, make, reply, method, table[method])
    for backend, cls, make, reply, table in [
        ("claude", asyncllm.Claude, claude, claude_reply, CLAUDE),
        ("gemini", asyncllm.Gemini, gemini, gemini_reply, GEMINI),
        ("groq", asyncllm.Groq, groq, groq_reply, GROQ),
        ("ollama", asyncllm.Ollama, ollama, ollama_reply, OLLAMA),
        ("opea", OPEA, opea, opea_reply, OPEA_METHODS),
    ]
    for method in table
}


@pytest.mark.parametrize("case", sorted(UNDECLARED_CASES))
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_an_undeclared_keyword_is_a_type_error_unsent(case: str, data: st.DataObject) -> None:
    """Good arguments plus one keyword the method declares neither in its signature nor in its
    **options TypedDict: a TypeError, with nothing sent."""
    cls, make, reply, method, params = UNDECLARED_CASES[case]
    params = declared(cls, method, params)
    args, kwargs, _ = data.draw(_calls(params, st.none()), label="(args, kwargs)")
    bad = data.draw(st.sampled_from(undeclared(keywords(cls, method))), label="undeclared")
    kwargs[bad] = data.draw(st.sampled_from([0, None, "x", {}]), label="value")

    async def run() -> None:
        transport = MockTransport(reply)
        client = make(transport)
        try:
            try:
                await finish(getattr(client, method)(*args, **kwargs))
            except TypeError as exc:
                assert "unexpected keyword argument" in str(exc)
            except asyncllm.ConfigurationError:
                # Refused for another argument first: only if that one is refused by itself.
                with pytest.raises(asyncllm.ConfigurationError):
                    rest = {k: v for k, v in kwargs.items() if k != bad}
                    await finish(getattr(client, method)(*args, **rest))
            else:
                raise AssertionError(f"{bad}= was taken")
            assert not transport.requests
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(run(), HANG))


def test_every_public_method_is_fuzzed() -> None:
    for backend, cls in [
        ("claude", asyncllm.Claude),
        ("gemini", asyncllm.Gemini),
        ("groq", asyncllm.Groq),
        ("ollama", asyncllm.Ollama),
        ("opea", OPEA),
    ]:
        covered = {c.split(".", 1)[1] for c in UNDECLARED_CASES if c.startswith(backend + ".")}
        assert covered == set(public_methods(cls)), backend


def test_opea_type_hints_resolve() -> None:
    """Found while reading each method's **options TypedDict: the public annotations of OPEA's
    file-taking calls did not resolve (FileSpec named ``os.PathLike`` as a string)."""
    import typing

    for name in ("ingest", "docsum", "faqgen"):
        hints = typing.get_type_hints(getattr(OPEA, name), include_extras=True)
        typing.get_type_hints(typing.get_args(hints["options"])[0])
