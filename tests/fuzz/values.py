"""Argument values for the input fuzzing: hostile ones (None, bools, huge and negative ints, NaN
and infinities, strings with CR/LF/NUL or lone surrogates, very long strings, bytes, sets, bare
objects, deep or cyclic nesting, and lists and dicts of these), and values of the right shape,
some realistic in shape but wrong in their details (messages, tools, schemas, tensors)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel

import asyncllm
from asyncllm.backends.ovms import _FLOAT_MAX, _INT_RANGES, DATATYPES, Tensor
from tests.chat_contract import get_weather
from tests.fuzz.harness import HOST, URL

# -- hostile ---------------------------------------------------------------------------------------

# Text that breaks things: empty, blank, header splitting, NUL, a lone surrogate, path tricks.
ODD_TEXT = [
    "", " ", " \t\n", "\r\n", "a\rb", "a\nb", "x\x00y", "\ud800", "é…", "../x", "a/b", "?q=1",
    "#f", "%2F", "models/x", "NaN", "x" * 3000, "data:image/png;base64,iVBORw0KGgo=",
]  # fmt: skip
SPECIAL_TEXT = [
    "", " ", "\t \n", "a\rb", "a\nb", "a\r\nX-Injected: 1", "\x00", "nul\x00", "\ud800",
    "a\udfffb", "x" * 100_000, "..", ".", "../x", "a/b", "?q", "#f", "%2F", "%2e%2e", "é€",
    "NaN", "²", "\u0663", "9" * 5000,
]  # fmt: skip
# Numbers at the edges. (In ODD_NUMBERS, no integer too large for a float.)
ODD_NUMBERS = [
    0, -1, 1, 2, 2**31, 2**63, -(2**63) - 1, 2**64, 10**300, 0.5, -0.0, 1e-320, 1e308,
    math.nan, math.inf, -math.inf,
]  # fmt: skip
HUGE_INTS = [2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]


class Thing:
    """An object that JSON cannot carry."""


class Opaque:
    """An object no parameter takes (with a repr, for the falsifying examples)."""

    def __repr__(self) -> str:
        return "Opaque()"


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

hostile_text = st.text(max_size=12) | st.sampled_from(SPECIAL_TEXT)
hostile_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(HUGE_INTS)
    | st.floats(allow_nan=True, allow_infinity=True)
    | hostile_text
    | st.binary(max_size=8)
    | st.frozensets(st.integers(), max_size=3)
    | st.builds(Opaque)
)
# The values most likely to slip through a check, drawn often.
edge_values = st.sampled_from(
    [
        *SPECIAL_TEXT, *HUGE_INTS, 0, -1, True, False, None, math.nan, math.inf, -math.inf,
        -0.0, 1e-300, 1e308, b"", b"\xff", frozenset(), Opaque(),
    ]
)  # fmt: skip
hostile = edge_values | st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(hostile_text | st.integers() | st.none(), inner, max_size=3)
    ),
    max_leaves=8,
)


def poisoned(value: Any) -> st.SearchStrategy[Any]:
    """A hostile value, or (for a list or dict of the right shape) one of its items made hostile,
    so that one bad input among good ones is tried too."""
    if isinstance(value, list) and value:
        return hostile | st.tuples(st.integers(0, len(value) - 1), hostile).map(
            lambda ix: [ix[1] if i == ix[0] else v for i, v in enumerate(value)]
        )
    if isinstance(value, dict) and value:
        return hostile | st.tuples(st.sampled_from(sorted(value, key=repr)), hostile).map(
            lambda kv: {**value, kv[0]: kv[1]}
        )
    return hostile


def deep(depth: int) -> Any:
    value: Any = {"type": "object"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"a": value}}
    return value


def cycle() -> Any:
    value: dict[str, Any] = {"type": "object"}
    value["properties"] = {"self": value}
    return value


def deeply_nested(depth: int = 5000) -> Any:
    value: Any = [1]
    for _ in range(depth):
        value = [value]
    return value


# Values that walk deep: nesting past the recursion limit, and a cycle.
deep_values = st.sampled_from([2000, 5000]).map(deep) | st.builds(cycle)
texts = st.text(max_size=12) | st.sampled_from(ODD_TEXT)
names = st.sampled_from(["m", "fake-chat", "llama3:latest", "claude-x", "gemini-x"]) | texts
bad_ints = st.sampled_from(ODD_NUMBERS) | st.integers(-3, 0) | junk
bad_numbers = st.sampled_from(ODD_NUMBERS) | st.floats() | junk
stops = texts | st.lists(texts, max_size=3) | junk
times = st.sampled_from([0, -1, math.nan, math.inf, -math.inf, 1e308, 1e-300]) | junk
priorities = st.sampled_from([2**63, -(2**63), asyncllm.Priority.HIGH]) | junk
header_text = st.text(max_size=6) | st.sampled_from(ODD_TEXT[:9])
bad_headers = st.dictionaries(header_text, header_text, min_size=1, max_size=2)
bad_extra_body = st.dictionaries(texts, junk, min_size=1, max_size=3) | deep_values
bad_query = st.dictionaries(header_text, header_text | junk, min_size=1, max_size=2) | junk
# Names that must stay one URL path segment (OVMS and LLVM percent-encode them), and some that
# would not if they went into the path as they are.
path_hostile = st.sampled_from(
    [".", "..", "../x", "a/../..", "?q", "#f", "%2e%2e", "\ud800", "a\r\nb", "a\x00", " "]
)
url_hostile = st.sampled_from(
    ["", "ftp://x.test", "http://", "http://[", "http://a b.test", "http://x.test/\r\n", "x.test"]
)
# OLLAMA_HOST values that are no URL of this host: each must be refused. (A false base_url, like
# None, means the default: $OLLAMA_HOST or localhost.)
OLLAMA_HOSTS = [
    f"ftp://{HOST}", f"{HOST}:x", f"{HOST}:99999", "[::1", f"http://{HOST}:-1", "://",
    5, 1.5, True, b"http://mock.invalid", [URL],
]  # fmt: skip

# -- common-form messages, tools and schemas, realistic in shape but wrong in their details -------

ROLES = ["user", "assistant", "system", "developer", "tool", "function", "model", "", "USER"]
IMAGE_URLS = [
    "data:image/png;base64,iVBORw0KGgo=", "data:image/bmp;base64,AAAA", "data:image/png;base64,!!",
    "data:image/png;base64,", "data:,x", "data:image/png,xyz", "http://x.test/y.png",
    "https://x.test/y.png", "ftp://x.test/y.png", "",
]  # fmt: skip
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
USER = [{"role": "user", "content": "hi"}]
GOOD_MESSAGES = [
    USER,
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
    return [*USER, *messages]


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


# A JSON schema dict as every backend's structured output takes it (an object with properties).
ANSWER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

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
# Tools in the common form. Left out: builtins without a signature, a ``description`` that is not
# a string, ``parameters`` that are not a mapping (test_input.py's SHARED cases try those).
tool = (
    st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": names | junk})},
        optional={"description": texts},
    )
    | st.fixed_dictionaries(
        {"name": names | flat_junk},
        optional={"description": texts, "parameters": schema | deep_values},
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
        optional={
            "json_schema": st.fixed_dictionaries({"schema": schema | deep_values | junk}) | junk
        },
    )
    | schema
    | deep_values
    | junk
)

# Any JSON, NaN and infinities included: the OpenAI chat's random input, and damage to answers.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# -- values of the right shape, by parameter name (the keyword-table backends) --------------------

text = st.text(max_size=12)
nonempty = st.text(min_size=1, max_size=12).filter(str.strip)
text_lists = st.lists(text, min_size=1, max_size=5)
json_ok = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
json_object = st.dictionaries(text, json_ok, max_size=3)
visible = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10)
headers_ok = st.dictionaries(st.sampled_from(["X-Trace", "X-Tenant", "Idempotency-Key"]), visible)
model_names = st.sampled_from(["m", "org/model v2", "a?b#c", "%2F", "..x", "ÿ", "m:predict"])
timeouts_ok = st.none() | st.floats(1.0, 100.0) | st.just(math.inf)
priorities_ok = st.sampled_from(list(asyncllm.Priority)) | st.integers(-3, 3)
messages_ok = st.just(USER) | st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": text}),
    min_size=1,
    max_size=3,
)
# Realistic but wrong: messages and tools with the right keys and random values.
content_parts = st.lists(
    st.dictionaries(
        st.sampled_from(["type", "text", "image_url"]),
        hostile | st.sampled_from(["text", "image_url"]),
        max_size=3,
    ),
    max_size=2,
)
messages_shaped = st.lists(
    st.dictionaries(
        st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name"]),
        hostile
        | content_parts
        | st.sampled_from(["user", "assistant", "system", "tool", "developer", "function"]),
        max_size=4,
    ),
    min_size=1,
    max_size=3,
)
tool_spec = st.fixed_dictionaries(
    {"name": text | hostile}, optional={"description": hostile, "parameters": hostile}
)
tools_shaped = st.lists(
    tool_spec | st.fixed_dictionaries({"type": st.just("function"), "function": tool_spec}),
    max_size=2,
)
VALID: dict[str, st.SearchStrategy[Any]] = {
    "messages": messages_ok | messages_shaped,
    "model": model_names,
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 4096),
    "stop": text | st.lists(text, min_size=1, max_size=4),
    "seed": st.integers(0, 2**31 - 1),
    "tools": st.just([get_weather]) | tools_shaped,
    "tool_choice": st.sampled_from(["auto", "none", "required", "get_weather"]),
    "response_format": st.sampled_from([{"type": "json_object"}, Answer]),
    "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high"]),
    "user": text,
    "n": st.integers(1, 3),
    "dimensions": st.integers(1, 4096),
    "inputs": text | text_lists,
    "extra_body": st.dictionaries(st.sampled_from(["x_a", "x_b"]), json_ok, max_size=2),
    "extra_headers": headers_ok,
    "priority": priorities_ok,
    "timeout": timeouts_ok,
    "deadline": timeouts_ok,
    "max_retries": st.integers(0, 3),
    "extra_query": st.dictionaries(st.sampled_from(["api-version", "tenant"]), visible, max_size=2),
    # ModernParams (top_logprobs without logprobs=True, or with max_tokens both limits, is a
    # ConfigurationError unsent: the random calls try those too).
    "max_completion_tokens": st.integers(1, 4096),
    "parallel_tool_calls": st.booleans(),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
    "store": st.booleans(),
    "metadata": st.dictionaries(st.sampled_from(["user_id", "team"]), visible, max_size=2),
    "prompt_cache_key": nonempty,
}

# -- OVMS tensors: nested lists, Tensors of every datatype, numpy arrays ----------------------------

int_tensors = st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=4)
float_rows = st.integers(1, 3).flatmap(
    lambda width: st.lists(
        st.lists(st.floats(-1e6, 1e6), min_size=width, max_size=width), min_size=1, max_size=3
    )
)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def tensor_values(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BOOL":
        return st.booleans()
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return st.integers(low, high)
    if datatype in _FLOAT_MAX:
        width = {"FP16": 16, "FP32": 32, "FP64": 64}[datatype]
        return st.floats(width=width, allow_nan=False, allow_infinity=False)  # type: ignore[arg-type]
    return text | st.binary(max_size=4).filter(_utf8)


@st.composite
def valid_tensors(draw: st.DrawFn) -> Tensor:
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    data = draw(
        st.lists(tensor_values(datatype), min_size=math.prod(shape), max_size=math.prod(shape))
    )
    return Tensor(data, datatype=datatype, shape=shape)


numpy_dtypes = st.sampled_from(
    ["bool", "uint8", "int16", "int32", "uint64", "int64", "float16", "float32", "float64"]
)
numpy_arrays = hnp.arrays(
    numpy_dtypes,
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    elements={"allow_nan": False, "allow_infinity": False},
)
tensorish = int_tensors | float_rows | st.lists(st.booleans(), min_size=1) | valid_tensors()
tensorish |= numpy_arrays.filter(lambda a: a.size > 0)
tensor_names = st.sampled_from(["x", "input", "a/b", "é"])
