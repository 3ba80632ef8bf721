"""Property tests of "bad input gets a clear typed error before anything is sent" for TGI, TEI,
vLLM, OVMS (typed tensors included), LLVM (micro-batched infer included) and the OpenAI client's
embed, models and stream_chat.

Every public method gets random arguments: hostile values (None, bools, huge and negative ints,
NaN and infinities, strings with CR/LF/NUL or lone surrogates, very long strings, bytes, sets,
bare objects, and lists and dicts of these) or values of the right shape. A call must end in one
of two ways: a ConfigurationError with nothing sent, or requests that are sent and a normal return
from a valid canned reply. What is sent must be strict JSON (no NaN or Infinity), follow the
backend's published request schema where the repository checks one, carry no header with CR, LF
or NUL, and keep a model name or version that goes into a URL path one path segment.

Bugs found in the backends are fixed there, with a plain regression test at the end; bugs found in
shared code are reported instead, each with a strict xfail test, and the random runs leave out the
inputs that would hit them (KNOWN_SHARED_BUGS) so that they keep finding new ones.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel
from yarl import URL

import asyncllm
from asyncllm._http import _json
from asyncllm._http._transport import Request
from asyncllm.backends.ovms import _FLOAT_MAX, _INT_RANGES, DATATYPES, Tensor
from asyncllm.testing import MockResponse, MockTransport
from tests import test_ovms, test_tei, test_tgi
from tests.fuzz.harness import NO_WAIT, keywords, public_methods, undeclared
from tests.fuzz.test_responses_b import (
    CHAT,
    CHAT_CHUNKS,
    TGI_STREAM,
    llvm_valid,
    ovms_valid,
    tei_valid,
    tgi_valid,
    vllm_valid,
)
from tests.helpers import USER
from tests.test_openai import validator as openai_validator

# Sized so that the whole file runs in about half a minute; raise max_examples to hunt.
# test_random_arguments_are_sent_or_refused_unsent, which draws each method's call options as well
# (63 methods), takes RANDOM_ARGUMENTS.
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
RANDOM_ARGUMENTS = settings(SETTINGS, max_examples=30)
CALL_TIMEOUT = 10.0  # a call that takes longer than this hangs: no canned reply waits

# -- hostile values --------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    " ",
    "\t \n",
    "a\rb",
    "a\nb",
    "a\r\nX-Injected: 1",
    "\x00",
    "nul\x00",
    "\ud800",
    "a\udfffb",
    "x" * 100_000,
    "..",
    ".",
    "../x",
    "a/b",
    "?q",
    "#f",
    "%2F",
    "%2e%2e",
    "é€",
    "NaN",
    "²",
    "\u0663",
    "9" * 5000,
]
HUGE_INTS = [2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]


class Opaque:
    """An object no parameter takes."""

    def __repr__(self) -> str:
        return "Opaque()"


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
        *SPECIAL_TEXT,
        *HUGE_INTS,
        0,
        -1,
        True,
        False,
        None,
        math.nan,
        math.inf,
        -math.inf,
        -0.0,
        1e-300,
        1e308,
        b"",
        b"\xff",
        frozenset(),
        Opaque(),
    ]
)
hostile = edge_values | st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(hostile_text | st.integers() | st.none(), inner, max_size=3)
    ),
    max_leaves=8,
)

# -- values of the right shape ---------------------------------------------------------------------

text = st.text(max_size=12)
nonempty = st.text(min_size=1, max_size=12).filter(str.strip)
texts = st.lists(text, min_size=1, max_size=5)
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
# Names that must stay one URL path segment (OVMS and LLVM percent-encode them), and some that
# would not if they went into the path as they are.
model_names = st.sampled_from(["m", "org/model v2", "a?b#c", "%2F", "..x", "ÿ", "m:predict"])
path_hostile = st.sampled_from(
    [".", "..", "../x", "a/../..", "?q", "#f", "%2e%2e", "\ud800", "a\r\nb", "a\x00", " "]
)
timeouts_ok = st.none() | st.floats(1.0, 100.0) | st.just(math.inf)
priorities = st.sampled_from(list(asyncllm.Priority)) | st.integers(-3, 3)


class Answer(BaseModel):
    city: str


def get_weather(city: str) -> str:
    """Weather in a city."""
    return city


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

COMMON: dict[str, st.SearchStrategy[Any]] = {
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
    "user": text,
    "n": st.integers(1, 3),
    "dimensions": st.integers(1, 4096),
    "inputs": text | texts,
    "extra_body": st.dictionaries(st.sampled_from(["x_a", "x_b"]), json_ok, max_size=2),
    "extra_headers": headers_ok,
    "priority": priorities,
    "timeout": timeouts_ok,
    "deadline": timeouts_ok,
    "max_retries": st.integers(0, 3),
    "extra_query": st.dictionaries(st.sampled_from(["api-version", "tenant"]), visible, max_size=2),
}
TGI_GENERATE: dict[str, st.SearchStrategy[Any]] = {
    "inputs": nonempty,
    "max_new_tokens": st.integers(0, 1000),
    "temperature": st.floats(0, 2, exclude_min=True),
    "top_p": st.floats(0, 1, exclude_min=True),
    "top_k": st.integers(1, 100),
    "typical_p": st.floats(0, 1, exclude_min=True),
    "repetition_penalty": st.floats(0, 3, exclude_min=True),
    "frequency_penalty": st.floats(-2, 2, exclude_min=True),
    "stop": text | st.lists(text, max_size=4),
    "seed": st.integers(1, 2**64 - 1),
    "do_sample": st.booleans(),
    "truncate": st.integers(0, 1000),
    "return_full_text": st.booleans(),
    "details": st.booleans(),
    "decoder_input_details": st.booleans(),
    "top_n_tokens": st.integers(1, 5),
    "watermark": st.booleans(),
    "grammar": st.sampled_from(
        [{"type": "regex", "value": "[a-z]+"}, {"type": "json", "value": {}}, Answer]
    ),
    "best_of": st.integers(1, 2),
    "adapter_id": text,
    "extra_parameters": st.dictionaries(st.sampled_from(["x_a"]), json_ok, max_size=1),
}
predict_item = text | st.tuples(text, text)
TEI_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "normalize": st.booleans(),
    "truncate": st.booleans(),
    "return_text": st.booleans(),
    "raw_scores": st.booleans(),
    "add_special_tokens": st.booleans(),
    "prompt_name": nonempty,
    "query": nonempty,
    "texts": texts,
}
VLLM_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "prompt": text | texts,
    "echo": st.booleans(),
    "guided_json": st.sampled_from([{"type": "object"}, '{"type": "string"}', Answer]),
    "guided_regex": nonempty,
    "guided_choice": texts,
    "top_k": st.integers(-1, 100),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0, 2, exclude_min=True),
    "tokens": st.lists(st.integers(0, 10**6), max_size=5),
    "add_special_tokens": st.booleans(),
    "add_generation_prompt": st.booleans(),
    "return_token_strs": st.booleans(),
    "query": text,
    "documents": texts,
    "top_n": st.integers(1, 5),
    "text_1": text | texts,
    "text_2": text | texts,
}

# OVMS tensors: nested lists, Tensors of every datatype, numpy arrays.
int_tensors = st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=4)
float_rows = st.integers(1, 3).flatmap(
    lambda width: st.lists(
        st.lists(st.floats(-1e6, 1e6), min_size=width, max_size=width), min_size=1, max_size=3
    )
)


def _values(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BOOL":
        return st.booleans()
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return st.integers(low, high)
    if datatype in _FLOAT_MAX:
        width = {"FP16": 16, "FP32": 32, "FP64": 64}[datatype]
        return st.floats(width=width, allow_nan=False, allow_infinity=False)  # type: ignore[arg-type]
    return text | st.binary(max_size=4).filter(_utf8)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def valid_tensors(draw: st.DrawFn) -> Tensor:
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    data = draw(st.lists(_values(datatype), min_size=math.prod(shape), max_size=math.prod(shape)))
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
OVMS_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "model": model_names | path_hostile,
    "version": st.integers(1, 3)
    | st.sampled_from(["1", "02", "²", "\u0663", "1.0", " 1", "-1", "0", "9" * 5000, 2**63]),
    "outputs": st.lists(
        st.sampled_from(["x", "input"]) | st.just({"name": "x", "parameters": {}}), max_size=2
    ),
    "parameters": json_object,
    "id": text,
    "signature_name": nonempty,
    "prompt": text,
    "echo": st.booleans(),
    "query": nonempty,
    "documents": texts,
    "top_n": st.integers(1, 5),
    "return_documents": st.booleans(),
}
OVMS_INFER_INPUTS = st.dictionaries(tensor_names, tensorish, min_size=1, max_size=2)
tf_rows = st.lists(
    st.lists(st.floats(-10, 10), min_size=2, max_size=2)
    | st.binary(max_size=4)
    | st.fixed_dictionaries({"a": st.integers(0, 9)}),
    min_size=1,
    max_size=3,
)
tf_columns = st.dictionaries(tensor_names, float_rows | numpy_arrays, min_size=1, max_size=2)
LLVM_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "model_id": model_names | path_hostile,
    "optimization_type": st.sampled_from(["speed", "memory", "balanced"]),
    "inputs": st.lists(json_ok, min_size=1, max_size=5),
    "input": json_ok,
    "parameters": json_object,
    "batch": st.booleans(),
}


# -- canned replies ---------------------------------------------------------------------------------


def _embeddings(body: Any) -> Any:
    count = len(body["input"]) if isinstance(body["input"], list) else 1
    data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.25]} for i in range(count)]
    return {"object": "list", "data": data, "model": "m"}


def openai_answer(path: str, body: Any) -> Any:
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/embeddings"):
        return _embeddings(body)
    if path.endswith("/models"):
        return {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "o"}]}
    raise AssertionError(f"no route {path}")


def tgi_answer(path: str, body: Any) -> Any:
    if path.endswith(("/chat/completions", "/embeddings", "/models")):
        return openai_answer(path, body)
    return tgi_valid(path, body)


def tei_answer(path: str, body: Any) -> Any:
    if path == "/v1/embeddings":
        return _embeddings(body)
    return tei_valid(path, body)


def vllm_answer(path: str, body: Any) -> Any:
    if path == "/rerank":
        docs = body["documents"]
        results = [{"index": i, "relevance_score": 1 / (i + 1)} for i in range(len(docs))]
        return {"model": "m", "results": results}
    if path == "/score":
        pairs = len(body["text_2"]) if isinstance(body["text_2"], list) else 1
        return {"model": "m", "data": [{"index": i, "score": 0.5} for i in range(pairs)]}
    if path.endswith(("/chat/completions", "/embeddings", "/models")):
        return openai_answer(path, body)
    return vllm_valid(path, body)


def ovms_answer(path: str, body: Any) -> Any:
    if body is None and path.endswith(":predict"):  # the status of a model named "m:predict"
        path = path.removesuffix(":predict")
    if path == "/v3/rerank":
        docs = body["documents"]
        return {"results": [{"index": i, "relevance_score": 0.5} for i in range(len(docs))]}
    if path.startswith("/v3/") and path.endswith(("/chat/completions", "/embeddings", "/models")):
        return openai_answer(path, body)
    return ovms_valid(path, body)


def _sse(events: list[Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def serve(answer: Callable[[str, Any], Any]) -> Callable[[Request], MockResponse]:
    def reply(request: Request) -> MockResponse:
        path = URL(request.url).raw_path  # a %-quoted '/' or ':' in a name routes nowhere
        if request.stream:
            events = TGI_STREAM if path == "/generate_stream" else CHAT_CHUNKS
            return MockResponse(200, content=_sse(events))
        body = None if request.content is None else json.loads(request.content)
        return MockResponse(200, json=answer(path, body), headers={"x-request-id": "srv-1"})

    return reply


# -- what a sent request must be ---------------------------------------------------------------------


def strict_json(content: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"the body carries {constant}, which is not JSON")

    return json.loads(content.decode("utf-8"), parse_constant=refuse)


def check_headers(request: Request) -> None:
    for name, value in request.headers.items():
        assert isinstance(name, str) and isinstance(value, str), (name, value)
        for bad in ("\r", "\n", "\x00"):
            assert bad not in name and bad not in value, (name, value)


# The integer formats of the TGI and TEI specs, which jsonschema does not check by itself: a
# number beyond them is refused by the server's parser. utoipa writes int32 for Rust's u32 as well
# as i32, so either range passes.
FORMATS = FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**32


@FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**64


def _with_formats(validator: Draft202012Validator) -> Draft202012Validator:
    return Draft202012Validator(validator.schema, format_checker=FORMATS)


@functools.cache
def tgi_schema(path: str) -> Draft202012Validator | None:
    if path in ("/generate", "/generate_stream"):  # one GenerateRequest, as test_tgi checks
        return _with_formats(test_tgi.request_validator(test_tgi.SPEC, "/generate"))
    return None


@functools.cache
def tei_schema(path: str) -> Draft202012Validator | None:
    checked = ("/embed", "/rerank", "/embed_sparse", "/embed_all", "/predict", "/tokenize")
    if path in (*checked, "/v1/embeddings"):
        return _with_formats(test_tei.request_validator(path))
    return None


@functools.cache
def openai_schema(path: str) -> Any:
    if path.endswith("/chat/completions"):
        return openai_validator("CreateChatCompletionRequest")
    if path.endswith("/embeddings"):
        return openai_validator("CreateEmbeddingRequest")
    return None


@functools.cache
def ovms_schema(path: str) -> Draft202012Validator | None:
    if path.startswith("/v2/") and path.endswith("/infer"):
        spec = yaml.safe_load(test_ovms.SPEC.read_text())
        return test_ovms._validator(spec, "inference_request")
    return None


def no_schema(path: str) -> None:
    return None


def _segments(url: str, query: Mapping[str, Any] | None = None) -> list[str]:
    parsed = URL(url)  # as aiohttp sends it: dot segments resolved
    assert not parsed.raw_fragment, url
    if query:  # the query is extra_query's (sent in the URL or as the request's params)
        assert set(parsed.query.items()) <= set(dict(query).items()), url
    else:
        assert not parsed.raw_query_string, url
    return [unquote(part) for part in parsed.raw_parts]


OVMS_SERVABLES = {
    "infer": ("v2", ["infer"]),
    "model_metadata": ("v2", []),
    "model_ready": ("v2", ["ready"]),
    "predict": ("v1", [":predict"]),
    "model_status": ("v1", []),
    "tfs_model_metadata": ("v1", ["metadata"]),
}


def ovms_path(method: Method, kwargs: Mapping[str, Any], url: str) -> None:
    """The model name is one segment, the version (when given) its canonical digits."""
    if method.name not in OVMS_SERVABLES:
        return
    api, suffix = OVMS_SERVABLES[method.name]
    model = "m" if kwargs.get("model") is None else kwargs["model"]
    expected = ["/", api, "models", model]
    if kwargs.get("version") is not None:
        expected += ["versions", str(int(kwargs["version"]))]
    if suffix == [":predict"]:
        expected[-1] += ":predict"
    else:
        expected += suffix
    assert _segments(url, kwargs.get("extra_query")) == expected, (
        url,
        kwargs.get("model"),
        kwargs.get("version"),
    )


LLVM_SUFFIX = {
    "model_info": [],
    "statistics": ["statistics"],
    "optimize": ["optimize"],
    "reload": ["reload"],
    "batch_infer": ["batch_infer"],
    "infer_many": ["batch_infer"],
}


def llvm_path(method: Method, kwargs: Mapping[str, Any], url: str) -> None:
    if method.name == "infer":
        batched = kwargs.get("batch", True) and method.client.get("batch_size", 8) > 1
        suffix = ["batch_infer"] if batched else ["infer"]
        if batched and _alone(kwargs):  # perhaps sent alone, with options of its own
            segments = _segments(url, kwargs.get("extra_query"))
            assert segments in (
                ["/", "models", kwargs["model_id"], "infer"],
                ["/", "models", kwargs["model_id"], "batch_infer"],
            ), url
            return
    elif method.name in LLVM_SUFFIX:
        suffix = LLVM_SUFFIX[method.name]
    else:
        return
    assert _segments(url, kwargs.get("extra_query")) == [
        "/",
        "models",
        kwargs["model_id"],
        *suffix,
    ], url


def _alone(kwargs: Mapping[str, Any]) -> bool:
    """An LLVM infer that skips micro-batching: it has HTTP options of its own, or a timeout or
    max_retries other than the client's (None and 0 here)."""
    return any(
        kwargs.get(k) is not None for k in ("extra_headers", "extra_query", "extra_body")
    ) or ("timeout" in kwargs or kwargs.get("max_retries") not in (None, 0))


def any_path(method: Method, kwargs: Mapping[str, Any], url: str) -> None:
    _segments(url, kwargs.get("extra_query"))


# -- the methods ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    cls: type
    base_url: str
    answer: Callable[[str, Any], Any]
    schema: Callable[[str], Any]
    path: Callable[[Method, Mapping[str, Any], str], None]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, st.SearchStrategy[Any]] = field(default_factory=dict)

    def make(self, transport: MockTransport, **kwargs: Any) -> Any:
        return self.cls(
            base_url=self.base_url,
            transport=transport,
            dispatcher=asyncllm.Dispatcher(),
            retry=NO_WAIT,
            **{**self.fixed, **kwargs},
        )


BACKENDS = {
    "tgi": Backend(asyncllm.TGI, "http://tgi.test", tgi_answer, tgi_schema, any_path),
    "tei": Backend(
        asyncllm.TEI,
        "http://tei.test",
        tei_answer,
        tei_schema,
        any_path,
        {"max_client_batch_size": 2},
        TEI_PARAMS,
    ),
    "vllm": Backend(
        asyncllm.VLLM, "http://vllm.test/v1", vllm_answer, no_schema, any_path, {"model": "m"}
    ),
    "ovms": Backend(
        asyncllm.OVMS,
        "http://ovms.test",
        ovms_answer,
        ovms_schema,
        ovms_path,
        {"model": "m"},
        OVMS_PARAMS,
    ),
    "llvm": Backend(
        asyncllm.LLVM,
        "http://llvm.test",
        llvm_valid,
        no_schema,
        llvm_path,
        {"batch_wait": 0.0},
        LLVM_PARAMS,
    ),
    "openai": Backend(
        asyncllm.OpenAI,
        "http://openai.test/v1",
        openai_answer,
        openai_schema,
        any_path,
        {"api_key": "sk-test", "model": "m"},
    ),
}


@dataclass(frozen=True)
class Method:
    backend: str
    name: str
    params: Mapping[str, st.SearchStrategy[Any]] = field(default_factory=dict)
    client: Mapping[str, Any] = field(default_factory=dict)

    # Groups of parameters that go together: exactly one of each (``one``) or at most one.
    one: tuple[str, ...] = ()
    at_most_one: tuple[str, ...] = ()

    def valid(self, pname: str) -> st.SearchStrategy[Any]:
        if pname in self.params:
            return self.params[pname]
        backend = BACKENDS[self.backend]
        return backend.params[pname] if pname in backend.params else COMMON[pname]


@st.composite
def arguments(draw: st.DrawFn, method: Method, faults: bool = True) -> dict[str, Any]:
    """Arguments of the right shape (those without a default always, the others sometimes), then
    up to two of them (any, given or not) replaced by hostile values: one or two faults at a time,
    so that a fault is not hidden behind another that is refused first."""
    # The signature's parameters and the keys of the **options TypedDict: the backend's own
    # parameters and the call options alike.
    kw = keywords(BACKENDS[method.backend].cls, method.name)
    names = kw.all
    grouped = set(method.one) | set(method.at_most_one)
    required = {n: method.valid(n) for n in kw.required}
    optional = {n: method.valid(n) for n in kw.optional if n not in grouped}
    kwargs = draw(st.fixed_dictionaries(required, optional=optional), label="valid")
    for group, needed in ((method.one, True), (method.at_most_one, False)):
        if group:
            choices = list(group) if needed else [*group, None]
            chosen = draw(st.sampled_from(choices))
            if chosen is not None:
                kwargs[chosen] = draw(method.valid(chosen))
    faulty = st.lists(st.sampled_from(names), max_size=2, unique=True) if faults else st.just([])
    for pname in draw(faulty, label="faults"):
        kwargs[pname] = draw(poisoned(kwargs.get(pname)), label=pname)
    return kwargs


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


def _methods() -> dict[str, Method]:
    methods = [Method("tgi", n, TGI_GENERATE) for n in ("generate", "stream_generate")]
    methods.append(Method("tgi", "tokenize", {"inputs": nonempty}))
    methods += [
        Method("tgi", n) for n in ("chat", "stream_chat", "embed", "info", "health", "models")
    ]
    predict_inputs = {"inputs": predict_item | st.lists(predict_item, min_size=1, max_size=5)}
    for name in ("embed", "embed_sparse", "embed_all", "rerank", "predict"):
        params = predict_inputs if name == "predict" else {}
        methods.append(Method("tei", name, params))
        # Without max_client_batch_size the client reads it from /info first.
        methods.append(Method("tei", name, params, {"max_client_batch_size": None}))
    methods += [Method("tei", n) for n in ("openai_embed", "tokenize", "info", "health")]
    guided = ("guided_json", "guided_regex", "guided_choice")
    methods += [
        Method("vllm", n, VLLM_PARAMS, at_most_one=guided)
        for n in ("chat", "stream_chat", "completions")
    ]
    methods.append(Method("vllm", "tokenize", VLLM_PARAMS, one=("prompt", "messages")))
    methods += [
        Method("vllm", n, VLLM_PARAMS)
        for n in ("detokenize", "health", "version", "rerank", "score", "embed", "models")
    ]
    methods += [
        Method("ovms", "infer", {"inputs": OVMS_INFER_INPUTS}),
        Method(
            "ovms",
            "predict",
            {"instances": tf_rows, "inputs": tf_columns},
            one=("instances", "inputs"),
        ),
    ]
    methods += [
        Method("ovms", n)
        for n in (
            "model_metadata",
            "server_metadata",
            "server_live",
            "server_ready",
            "model_ready",
            "model_status",
            "tfs_model_metadata",
            "completions",
            "rerank",
            "chat",
            "stream_chat",
            "embed",
            "models",
        )
    ]
    for name in ("models", "model_info", "statistics", "optimize", "reload", "status"):
        methods.append(Method("llvm", name))
    methods += [Method("llvm", n) for n in ("batch_infer", "infer", "infer_many")]
    methods.append(Method("llvm", "infer_many", client={"batch_size": 2}))
    methods.append(Method("llvm", "infer", client={"batch_size": 1}))
    methods += [Method("openai", n) for n in ("embed", "models", "stream_chat")]
    table: dict[str, Method] = {}
    for m in methods:
        label = f"{m.backend}.{m.name}" + "".join(f"[{k}={v}]" for k, v in m.client.items())
        table[label] = m
    return table


METHODS = _methods()


# -- known bugs in shared code ----------------------------------------------------------------------
# Each is reported, not fixed here (the shared modules belong to everyone), and has a strict xfail
# regression test below; inputs that would hit one are left out of the random runs so that those
# keep finding new bugs. When a shared fix lands, its xfail passes (and fails, being strict): drop
# the test's mark and its entry here.

KNOWN_SHARED_BUGS: dict[str, Callable[[Method, Mapping[str, Any]], bool]] = {
    # _wire.openai.tool_choice_body passes any mapping through, {} included.
    "tool_choice mapping unchecked": lambda m, kw: (
        m.backend == "openai" and isinstance(kw.get("tool_choice"), Mapping)
    ),
    # _wire.openai.response_format_body passes any mapping through, {} included.
    "response_format mapping unchecked": lambda m, kw: (
        m.backend == "openai" and isinstance(kw.get("response_format"), Mapping)
    ),
    # _models.Tool.coerce takes a tool dict's fields as they are: dict(parameters) raises
    # TypeError or ValueError, a non-str description a pydantic ValidationError, and a name the
    # schema refuses ("", spaces...) is sent.
    "tool dict unchecked": lambda m, kw: _has_bad_tool(kw.get("tools")),
    # _base.check_stop takes a list of any length; OpenAI's schema takes 1 to 4 stops.
    "stop list length": lambda m, kw: (
        m.backend == "openai"
        and isinstance(kw.get("stop"), (list, tuple))
        and not 1 <= len(kw["stop"]) <= 4
    ),
    # _models.normalize_messages checks only that content parts are mappings ([], [{}] or a
    # part without its type's field are sent) and lets a "function" message go without its
    # name: OpenAI's schema refuses both.
    "message shape unchecked": lambda m, kw: (
        m.backend == "openai" and _has_unchecked_message(kw.get("messages"))
    ),
    # _wire.openai checks n and seed with check_int, unbounded; OpenAI's schema bounds them.
    "n or seed beyond the schema": lambda m, kw: (
        m.backend == "openai"
        and (_int_beyond(kw.get("n"), 128) or _int_beyond(kw.get("seed"), 2**63))
    ),
}


def _has_bad_tool(tools: Any) -> bool:
    if not isinstance(tools, (list, tuple)):
        return False
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        spec = tool.get("function", tool) if tool.get("type") == "function" else tool
        if not isinstance(spec, Mapping):
            continue
        name = spec.get("name")
        if not isinstance(name, str):
            continue  # refused, as it should be
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            return True
        if not isinstance(spec.get("description", ""), (str, type(None))):
            return True
        if not isinstance(spec.get("parameters", {}), (Mapping, type(None))):
            return True
    return False


def _has_unchecked_message(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, Mapping)
        and (isinstance(m.get("content"), list) or m.get("role") == "function")
        for m in messages
    )


def _int_beyond(value: Any, bound: int) -> bool:
    return isinstance(value, int) and abs(value) > bound


def _short_limit(kwargs: Mapping[str, Any]) -> bool:
    """A timeout or deadline under a second may run out even against an instant reply."""
    return any(
        isinstance(kwargs.get(k), (int, float)) and kwargs[k] < 1 for k in ("timeout", "deadline")
    )


def _has_extra(kwargs: Mapping[str, Any]) -> bool:
    """extra_body and extra_parameters are the caller's own fields: no schema vouches for them."""
    return any(kwargs.get(k) for k in ("extra_body", "extra_parameters"))


async def invoke(client: Any, name: str, kwargs: dict[str, Any]) -> Any:
    result = getattr(client, name)(**kwargs)
    if isinstance(result, asyncllm.Stream):
        async with result as stream:
            return [item async for item in stream]
    return await result


async def sent_or_refused(method: Method, kwargs: dict[str, Any]) -> None:
    backend = BACKENDS[method.backend]
    transport = MockTransport(serve(backend.answer))
    client = backend.make(transport, **method.client)
    try:
        try:
            result = await asyncio.wait_for(invoke(client, method.name, kwargs), CALL_TIMEOUT)
        except asyncllm.ConfigurationError:
            assert not transport.requests, "refused after a request was sent"
            return
        except asyncllm.APITimeoutError:
            if _short_limit(kwargs):
                return
            raise
        if not transport.requests:  # the one call that may have nothing to send
            assert method.name == "infer_many" and result == [], result
        for request in transport.requests:
            check_headers(request)
            backend.path(method, kwargs, request.url)
            if kwargs.get("extra_query"):  # on every request, TEI's own /info lookup included
                sent = {**URL(request.url).query, **(request.params or {})}
                assert dict(kwargs["extra_query"]).items() <= sent.items(), (request.url, sent)
            if request.content is None:
                continue
            body = strict_json(request.content)
            validator = backend.schema(URL(request.url).raw_path)
            if validator is not None and not _has_extra(kwargs):
                errors = [e.message for e in validator.iter_errors(body)]
                assert errors == [], errors
    finally:
        await client.aclose()


@pytest.mark.parametrize("label", sorted(METHODS))
@RANDOM_ARGUMENTS
@given(data=st.data())
def test_random_arguments_are_sent_or_refused_unsent(label: str, data: st.DataObject) -> None:
    method = METHODS[label]
    kwargs = data.draw(arguments(method), label="kwargs")
    assume(not any(known(method, kwargs) for known in KNOWN_SHARED_BUGS.values()))
    asyncio.run(sent_or_refused(method, kwargs))


def test_every_public_method_is_fuzzed() -> None:
    for name, backend in BACKENDS.items():
        public = set(public_methods(backend.cls))
        covered = {m.name for m in METHODS.values() if m.backend == name}
        if name == "openai":
            public.discard("chat")  # tests/fuzz/test_openai_chat.py covers it
        assert covered == public, name


@pytest.mark.parametrize("label", sorted(METHODS))
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_an_undeclared_keyword_is_a_type_error_unsent(label: str, data: st.DataObject) -> None:
    """A keyword the method declares neither in its signature nor in its **options TypedDict
    is a TypeError, with nothing sent, whatever else the call is given."""
    method = METHODS[label]
    kwargs = data.draw(arguments(method, faults=False), label="kwargs")
    names = undeclared(keywords(BACKENDS[method.backend].cls, method.name))
    assume(not any(known(method, kwargs) for known in KNOWN_SHARED_BUGS.values()))
    bad = data.draw(st.sampled_from(names), label="undeclared")
    kwargs[bad] = data.draw(st.sampled_from([0, None, "x", {}]), label="value")
    backend = BACKENDS[method.backend]

    async def run() -> None:
        transport = MockTransport(serve(backend.answer))
        client = backend.make(transport, **method.client)
        try:
            try:
                await asyncio.wait_for(invoke(client, method.name, kwargs), CALL_TIMEOUT)
            except TypeError as exc:
                assert "unexpected keyword argument" in str(exc)
            except asyncllm.ConfigurationError:
                # Refused for another argument first: only if that one is refused by itself.
                transport.requests.clear()
                with pytest.raises(asyncllm.ConfigurationError):
                    await invoke(client, method.name, {k: kwargs[k] for k in kwargs if k != bad})
            else:
                raise AssertionError(f"{bad}= was taken")
            assert not transport.requests
        finally:
            await client.aclose()

    asyncio.run(run())


# -- batched calls: one input that cannot be sent among many --------------------------------------

unsendable_texts = st.builds(
    lambda head, bad, tail: head + bad + tail, text, st.sampled_from(["\ud800", "\udfff"]), text
)
unsendable_values = unsendable_texts | st.sampled_from(
    [math.nan, math.inf, b"x", frozenset(), Opaque(), {(1, 2): 1}]
)
BATCHED = {
    "tei.embed": ("inputs", text, unsendable_texts),
    "tei.embed_sparse": ("inputs", text, unsendable_texts),
    "tei.embed_all": ("inputs", text, unsendable_texts),
    "tei.predict": ("inputs", predict_item, unsendable_texts),
    "tei.rerank": ("texts", text, unsendable_texts),
    "llvm.infer_many[batch_size=2]": ("inputs", json_ok, unsendable_values),
    "llvm.batch_infer": ("inputs", json_ok, unsendable_values),
}


@pytest.mark.parametrize("label", sorted(BATCHED))
@SETTINGS
@given(data=st.data())
def test_one_unsendable_input_among_many_sends_no_chunk(label: str, data: st.DataObject) -> None:
    """Calls that split their inputs into chunks refuse all of them, before any is sent."""
    method = METHODS[label]
    pname, element, bad = BATCHED[label]
    kwargs = data.draw(arguments(method, faults=False), label="kwargs")
    good = data.draw(st.lists(element, min_size=1, max_size=6), label="good")
    position = data.draw(st.integers(0, len(good)), label="position")
    kwargs[pname] = [*good[:position], data.draw(bad, label="bad"), *good[position:]]
    refused_unsent(method, **kwargs)


# -- OVMS tensors: every datatype, shape and form ----------------------------------------------------


def _fits(value: Any, datatype: str) -> bool:
    """What the KServe v2 datatype table allows, written out apart from the code under test."""
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return type(value) is int and low <= value <= high
    if datatype in _FLOAT_MAX:
        return (
            type(value) in (int, float)
            and math.isfinite(value)
            and abs(value) <= _FLOAT_MAX[datatype]
        )
    return isinstance(value, str)


def _nest(flat: list[Any], dims: list[int]) -> Any:
    if not dims:
        return flat[0]
    if len(dims) == 1:
        return flat
    step = math.prod(dims[1:])
    return [_nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


wrong_elements = (
    st.sampled_from([-1, 256, 2**31, 2**63, 2**64, -(2**63) - 1, 1e39, 70000.0, math.nan])
    | st.sampled_from(DATATYPES).flatmap(_values)
    | hostile_scalars
)


@st.composite
def tensor_cases(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    """Data and Tensor keywords: a datatype's own values, sometimes with wrong ones among them,
    nested or flat, with the shape given or inferred, an element short or over, rows ragged."""
    datatype = draw(st.sampled_from(DATATYPES))
    dims = draw(st.lists(st.integers(0, 3), max_size=4))
    count = math.prod(dims)
    elements = _values(datatype) | wrong_elements if draw(st.booleans()) else _values(datatype)
    flat = draw(st.lists(elements, min_size=count, max_size=count))
    form = draw(st.sampled_from(["nested", "nested+shape", "flat+shape", "numpy"]))
    kwargs: dict[str, Any] = {}
    if form == "numpy":
        data: Any = np.array(flat, dtype=object).reshape(dims)
        if draw(st.booleans()):  # typed, where the values fit the dtype
            try:
                with np.errstate(all="ignore"):
                    data = data.astype(draw(numpy_dtypes))
            except (TypeError, ValueError, OverflowError):
                pass
    else:
        data = _nest(flat, dims) if form.startswith("nested") and count else flat
    if form.endswith("shape"):
        kwargs["shape"] = dims
    change = draw(st.sampled_from(["none", "none", "short", "over", "ragged", "shape", "dtype"]))
    if change == "short" and isinstance(data, list) and data:
        data = data[:-1]
    elif change == "over" and isinstance(data, list):
        data = [*data, data[0] if data else 0]
    elif change == "ragged" and isinstance(data, list) and data and isinstance(data[-1], list):
        data = [*data[:-1], data[-1][:-1]]
    elif change == "shape":
        kwargs["shape"] = draw(hostile | st.lists(st.integers(-1, 4), max_size=4))
    elif change == "dtype":
        kwargs["datatype"] = draw(st.sampled_from(["fp32", "Int8", "INT4", "FP8", ""]) | hostile)
    if "datatype" not in kwargs and draw(st.booleans()):
        kwargs["datatype"] = datatype
    if draw(st.booleans()):
        kwargs["parameters"] = draw(json_object | hostile)
    return data, kwargs


async def _infer_echo(tensor: Tensor) -> tuple[Any, list[Request]]:
    transport = MockTransport(serve(ovms_answer))
    client = BACKENDS["ovms"].make(transport)
    try:
        try:
            answer = await client.infer(inputs={"x": tensor})
        except asyncllm.ConfigurationError:
            answer = None
        return answer, list(transport.requests)
    finally:
        await client.aclose()


def check_tensor(build: Callable[[], Tensor]) -> None:
    """A Tensor that can be built follows the protocol, is sent, and comes back equal; only its
    free-form parameters may keep it from being sent (unsent, as ConfigurationError)."""
    try:
        with np.errstate(all="ignore"):
            tensor = build()
    except asyncllm.ConfigurationError:
        return
    wire = tensor.to_wire("x")
    assert wire["datatype"] in DATATYPES
    assert all(type(d) is int and d >= 0 for d in wire["shape"])
    assert len(wire["data"]) == math.prod(wire["shape"])
    assert all(_fits(v, wire["datatype"]) for v in wire["data"]), wire
    answer, sent = asyncio.run(_infer_echo(tensor))
    if answer is None:
        assert tensor.parameters and not sent
        return
    (request,) = sent
    validator = ovms_schema("/v2/models/m/infer")
    assert validator is not None
    assert list(validator.iter_errors(strict_json(request.content or b""))) == []
    assert answer["x"] == tensor


@SETTINGS
@given(case=tensor_cases())
def test_random_tensors_are_built_and_sent_or_refused(case: tuple[Any, dict[str, Any]]) -> None:
    data, kwargs = case
    check_tensor(lambda: Tensor(data, **kwargs))


odd_numpy_dtypes = numpy_dtypes | st.sampled_from(["complex64", "datetime64[s]", "U3", "S3"])


@SETTINGS
@given(
    array=hnp.arrays(
        odd_numpy_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
    ),
    datatype=st.none() | st.sampled_from(DATATYPES) | hostile,
    shape=st.none() | st.lists(st.integers(0, 4), max_size=3) | hostile,
)
def test_numpy_arrays_are_built_and_sent_or_refused(array: Any, datatype: Any, shape: Any) -> None:
    check_tensor(lambda: Tensor.from_numpy(array, datatype=datatype))
    check_tensor(lambda: Tensor(array, datatype=datatype, shape=shape))


# -- LLVM: concurrent calls that share micro-batches ------------------------------------------------

LLVM_INFER = Method("llvm", "infer")
llvm_calls = st.lists(
    st.fixed_dictionaries(
        {"model_id": st.just("m") | model_names | path_hostile, "input": json_ok | hostile},
        optional={
            "parameters": st.just({}) | json_object | hostile,
            "priority": priorities | hostile,
            "timeout": timeouts_ok | hostile,
            "deadline": timeouts_ok | hostile,
        },
    ),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(calls=llvm_calls)
def test_concurrent_micro_batched_infers_are_each_sent_or_refused(
    calls: list[dict[str, Any]],
) -> None:
    """Each call of a micro-batch gets its own result or its own ConfigurationError; the
    batches sent carry exactly the inputs of the calls that returned, each answered to its own."""

    async def run() -> None:
        transport = MockTransport(serve(llvm_valid))
        client = BACKENDS["llvm"].make(transport, batch_size=3, batch_wait=0.001)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.infer(**kw) for kw in calls), return_exceptions=True),
                CALL_TIMEOUT,
            )
        finally:
            await client.aclose()
        returned = timed_out = 0
        for kw, result in zip(calls, results, strict=True):
            if isinstance(result, asyncllm.APITimeoutError) and _short_limit(kw):
                timed_out += 1
            elif not isinstance(result, asyncllm.ConfigurationError):
                assert not isinstance(result, BaseException), repr(result)
                alone = {"output": [1, 2]}  # llvm_valid's answer to a lone /infer
                batched = {"echo": json.loads(json.dumps(kw["input"]))}
                assert result.output in ((alone["output"], batched) if _alone(kw) else (batched,))
                returned += 1
        sent = 0
        for request in transport.requests:
            check_headers(request)
            if _segments(request.url)[-1] == "infer":  # a call sent alone
                sent += 1
                continue
            assert _segments(request.url)[-1] == "batch_infer"
            sent += len(strict_json(request.content or b"")["inputs"])
        assert returned <= sent <= returned + timed_out

    asyncio.run(run())


# -- constructors ------------------------------------------------------------------------------------

url_hostile = st.sampled_from(
    ["", "ftp://x.test", "http://", "http://[", "http://a b.test", "http://x.test/\r\n", "x.test"]
)
CONSTRUCTOR_PARAMS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "tgi": {},
    "tei": {"max_client_batch_size": st.none() | st.integers(1, 8)},
    "vllm": {"root_url": st.none() | st.just("http://vllm-root.test")},
    "ovms": {"version": st.none() | OVMS_PARAMS["version"]},
    "llvm": {"batch_size": st.integers(1, 8), "batch_wait": st.floats(0, 0.001)},
    "openai": {"organization": st.none() | visible, "project": st.none() | visible},
}
PROBES = {
    "tgi": "health",
    "tei": "health",
    "vllm": "health",
    "ovms": "model_ready",
    "llvm": "status",
    "openai": "models",
}


@st.composite
def constructor_arguments(draw: st.DrawFn, name: str) -> dict[str, Any]:
    base_url = st.just(BACKENDS[name].base_url)
    params = {
        "api_key": st.none() | visible.filter(str.strip),
        "model": st.none() | model_names,
        "default_headers": st.none() | headers_ok,
        **CONSTRUCTOR_PARAMS[name],
    }
    kwargs = draw(st.fixed_dictionaries({"base_url": base_url}, optional=params))
    for pname in draw(st.lists(st.sampled_from(["base_url", *params]), max_size=2, unique=True)):
        kwargs[pname] = draw(hostile | path_hostile | url_hostile, label=pname)
    return kwargs


@pytest.mark.parametrize("name", sorted(BACKENDS))
@SETTINGS
@given(data=st.data())
def test_random_constructor_arguments_are_refused_or_sent_cleanly(
    name: str, data: st.DataObject
) -> None:
    """A client is refused at construction, or its first call sends clean headers to the URL it
    was given (or is refused unsent)."""
    kwargs = data.draw(constructor_arguments(name), label="kwargs")
    backend = BACKENDS[name]

    async def run() -> None:
        transport = MockTransport(serve(backend.answer))
        try:
            client = backend.cls(
                transport=transport, dispatcher=asyncllm.Dispatcher(), retry=NO_WAIT, **kwargs
            )
        except asyncllm.ConfigurationError:
            return
        try:
            await getattr(client, PROBES[name])()
        except asyncllm.ConfigurationError:
            assert not transport.requests
            return
        finally:
            await client.aclose()
        (request,) = transport.requests
        check_headers(request)
        # An empty base_url means the default one (as None does).
        base = kwargs.get("root_url") or kwargs["base_url"] or backend.cls.default_base_url
        assert URL(request.url).host == URL(base).host
        if name == "ovms":
            given = {k: kwargs.get(k) for k in ("model", "version")}
            ovms_path(Method("ovms", "model_ready"), given, request.url)

    asyncio.run(run())


# -- regressions: what these tests found, fixed in the backends ---------------------------------------


def refused_unsent(method: Method, **kwargs: Any) -> None:
    """The call raises ConfigurationError and sends nothing (AssertionError otherwise)."""
    backend = BACKENDS[method.backend]

    async def run() -> bool:
        transport = MockTransport(serve(backend.answer))
        client = backend.make(transport, **method.client)
        try:
            await invoke(client, method.name, kwargs)
        except asyncllm.ConfigurationError:
            return not transport.requests
        finally:
            await client.aclose()
        return False

    assert asyncio.run(run()), f"{method.name}({kwargs!r:.200}) was not refused unsent"


def deeply_nested(depth: int = 5000) -> Any:
    value: Any = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("name", [".", ".."])
def test_ovms_model_name_that_is_a_dot_segment_is_refused(name: str) -> None:
    # Was sent: /v2/models/../ready is /v2/ready once the client resolves the dots.
    refused_unsent(Method("ovms", "model_ready"), model=name)
    refused_unsent(Method("ovms", "infer"), model=name, inputs={"x": [1]})
    refused_unsent(Method("ovms", "predict"), model=name, instances=[1])


def test_ovms_model_name_with_a_lone_surrogate_is_refused() -> None:
    refused_unsent(Method("ovms", "model_status"), model="\ud800")  # was UnicodeEncodeError


@pytest.mark.parametrize(
    "version",
    ["²", "\u0661", "9" * 5000, 10**5000, 2**63, "9223372036854775808"],
    ids=["superscript", "arabic-indic", "5000-digits", "int-5000-digits", "2**63", "str-2**63"],
)
def test_ovms_version_that_is_not_a_positive_int64_is_refused(version: Any) -> None:
    # Were ValueError ("²", and beyond Python's 4300-digit int/str limit) or sent.
    refused_unsent(Method("ovms", "model_ready"), version=version)
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.OVMS(base_url="http://ovms.test", version=version)


def test_ovms_version_digits_are_canonical() -> None:
    assert asyncllm.OVMS(base_url="http://ovms.test", version="007").version == "7"
    biggest = asyncllm.OVMS(base_url="http://ovms.test", version=2**63 - 1)
    assert biggest.version == str(2**63 - 1)


def test_ovms_tensor_shape_that_is_not_a_list_with_numpy_data() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        Tensor(np.array([1, 2]), shape=5)  # type: ignore[arg-type]  # was TypeError


def test_ovms_data_nested_deeper_than_the_stack_is_refused() -> None:
    # Were RecursionError.
    with pytest.raises(asyncllm.ConfigurationError):
        Tensor(deeply_nested())
    refused_unsent(Method("ovms", "infer"), inputs={"x": deeply_nested()})
    refused_unsent(Method("ovms", "predict"), instances=[deeply_nested()])
    refused_unsent(Method("ovms", "predict"), inputs={"x": deeply_nested()})


@pytest.mark.parametrize("model_id", [".", "..", "\ud800"])
def test_llvm_model_id_that_is_not_one_path_segment_is_refused(model_id: str) -> None:
    # "." and ".." were sent to /models/infer and /infer; the surrogate was UnicodeEncodeError.
    refused_unsent(Method("llvm", "model_info"), model_id=model_id)
    refused_unsent(Method("llvm", "infer"), model_id=model_id, input=1, batch=False)
    refused_unsent(Method("llvm", "infer"), model_id=model_id, input=1)


def test_llvm_infer_many_sends_no_chunk_when_one_cannot_be_sent() -> None:
    # The first chunk was sent, then the second raised ConfigurationError.
    method = Method("llvm", "infer_many", client={"batch_size": 2})
    refused_unsent(method, model_id="m", inputs=[None, None, "\ud800"])
    refused_unsent(method, model_id="m", inputs=[1, 2, math.nan])


def test_llvm_infer_many_checks_its_arguments_with_no_inputs() -> None:
    refused_unsent(Method("llvm", "infer_many"), model_id="..", inputs=[])
    refused_unsent(Method("llvm", "infer_many"), model_id="m", inputs=[], parameters=[1])


def test_llvm_parameters_nested_deeper_than_the_stack_are_refused() -> None:
    for method in ("infer", "batch_infer", "infer_many"):
        value = 1 if method == "infer" else [1]
        key = "input" if method == "infer" else "inputs"
        refused_unsent(
            Method("llvm", method), model_id="m", parameters={"p": deeply_nested()}, **{key: value}
        )  # was RecursionError


@pytest.mark.parametrize("setting", ["batch_size", "batch_wait"])
def test_llvm_batch_settings_of_none_are_refused(setting: str) -> None:
    # batch_wait=None was TypeError (float(None)); batch_size=None a TypeError at the first infer.
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.LLVM(base_url="http://llvm.test", **{setting: None})


def test_llvm_infer_batch_must_be_a_bool() -> None:
    refused_unsent(Method("llvm", "infer"), model_id="m", input=1, batch="no")  # was batched


def test_llvm_optimization_type_that_is_not_a_string_is_refused() -> None:
    # A numpy array compared with the choices was ValueError (its truth is ambiguous).
    refused_unsent(Method("llvm", "optimize"), model_id="m", optimization_type=np.array([1, 2]))


@pytest.mark.parametrize("method", ["embed", "embed_sparse", "embed_all", "rerank", "predict"])
def test_tei_batch_checks_headers_and_deadline_before_reading_info(method: str) -> None:
    # /info was read first (without these), then the chunks raised ConfigurationError.
    call = Method("tei", method, client={"max_client_batch_size": None})
    args: dict[str, Any] = {"query": "q", "texts": ["a", "b"]} if method == "rerank" else {}
    args = args or {"inputs": ["a", "b"]}
    refused_unsent(call, **args, extra_headers={"X-Trace": "a\r\nb"})
    refused_unsent(call, **args, deadline=-1)


@pytest.mark.parametrize("method", ["embed", "embed_sparse", "embed_all", "rerank", "predict"])
def test_tei_batch_sends_no_chunk_when_one_cannot_be_sent(method: str) -> None:
    # The first chunk was sent, then the second raised ConfigurationError.
    call = Method("tei", method, client={"max_client_batch_size": 1})
    texts = ["a", "b", "\ud800"]
    if method == "rerank":
        refused_unsent(call, query="q", texts=texts)
    else:
        refused_unsent(call, inputs=texts)


@pytest.mark.parametrize(
    "flag", ["add_special_tokens", "add_generation_prompt", "return_token_strs"]
)
def test_vllm_tokenize_flags_must_be_bools(flag: str) -> None:
    # Were sent as bool(value): "no" became true.
    refused_unsent(Method("vllm", "tokenize"), messages=USER, **{flag: "no"})


def test_vllm_guided_json_string_with_a_lone_surrogate_is_refused() -> None:
    # Was TypeError: pydantic-core's parser takes no str it cannot encode (see _json below).
    refused_unsent(Method("vllm", "completions"), prompt="x", guided_json='"\ud800"')


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seed", 0),  # the spec's exclusiveMinimum
        ("seed", 2**64),
        ("max_new_tokens", 2**32),
        ("top_k", 2**31),
        ("top_n_tokens", 2**32),
        ("truncate", 2**64),
        ("best_of", 2**64),
    ],
)
def test_tgi_generate_integers_beyond_tgi_bounds_are_refused(name: str, value: int) -> None:
    # Were sent; TGI's parser (and its schema) refuse them.
    refused_unsent(Method("tgi", "generate"), inputs="x", **{name: value})
    if name != "best_of":
        refused_unsent(Method("tgi", "stream_generate"), inputs="x", **{name: value})


def test_tgi_generate_integers_at_tgi_bounds_are_sent() -> None:
    edges = {"seed": 2**64 - 1, "max_new_tokens": 2**32 - 1, "top_k": 2**31 - 1, "best_of": 1}
    asyncio.run(sent_or_refused(Method("tgi", "generate"), {"inputs": "x", **edges}))


# -- bugs in shared code: reported, not fixed here -----------------------------------------------------
# Strict: each turns into a failure once its fix lands, to drop the mark and the KNOWN_SHARED entry.


def shared_bug(reason: str, raises: type[BaseException]) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


def test_extra_headers_that_are_not_a_mapping_are_refused() -> None:
    refused_unsent(Method("openai", "embed"), inputs="a", extra_headers=[("X-Trace", "1")])


def test_timeout_beyond_float_range_is_refused() -> None:
    refused_unsent(Method("ovms", "server_live"), timeout=10**400)


def test_number_beyond_float_range_is_refused() -> None:
    refused_unsent(Method("tgi", "generate"), inputs="x", temperature=10**400)


def test_embed_user_that_is_not_a_string_is_refused() -> None:
    refused_unsent(Method("openai", "embed"), inputs="a", user=[])


def test_embed_inputs_that_are_not_a_list_are_refused() -> None:
    refused_unsent(Method("openai", "embed"), inputs=1)


@shared_bug("_wire.openai.tool_choice_body passes any mapping through", AssertionError)
def test_tool_choice_mapping_that_is_not_a_tool_choice_is_refused() -> None:
    refused_unsent(Method("openai", "stream_chat"), messages=USER, tool_choice={})


@shared_bug("_wire.openai.response_format_body passes any mapping through", AssertionError)
def test_response_format_mapping_that_is_not_a_format_is_refused() -> None:
    refused_unsent(Method("openai", "stream_chat"), messages=USER, response_format={})


def test_tool_parameters_that_are_not_a_mapping_are_refused() -> None:
    refused_unsent(
        Method("openai", "stream_chat"), messages=USER, tools=[{"name": "f", "parameters": [1]}]
    )


def test_tool_description_that_is_not_a_string_is_refused() -> None:
    refused_unsent(
        Method("openai", "stream_chat"), messages=USER, tools=[{"name": "f", "description": 1}]
    )


@shared_bug(
    "_models.Tool.coerce sends any name; OpenAI's schema takes [a-zA-Z0-9_-]{1,64}", AssertionError
)
def test_tool_name_the_schema_refuses_is_refused() -> None:
    refused_unsent(Method("openai", "stream_chat"), messages=USER, tools=[{"name": "a b"}])


@shared_bug(
    "_base.check_stop takes any number of stops; OpenAI's schema takes 1 to 4", AssertionError
)
@pytest.mark.parametrize("stop", [[], ["a", "b", "c", "d", "e"]])
def test_stop_lists_the_schema_refuses_are_refused(stop: list[str]) -> None:
    refused_unsent(Method("openai", "stream_chat"), messages=USER, stop=stop)


@shared_bug("_models.normalize_messages does not check content parts", AssertionError)
@pytest.mark.parametrize(
    "content", [[], [{}], [{"type": "text"}]], ids=["none", "empty", "no-text"]
)
def test_content_parts_the_schema_refuses_are_refused(content: list[Any]) -> None:
    messages = [{"role": "user", "content": content}]
    refused_unsent(Method("openai", "stream_chat"), messages=messages)


@shared_bug("_models.normalize_messages lets a function message go without a name", AssertionError)
def test_function_message_without_a_name_is_refused() -> None:
    messages = [{"role": "function", "content": "x"}]
    refused_unsent(Method("openai", "stream_chat"), messages=messages)


@shared_bug(
    "_wire.openai checks n and seed unbounded; the schema takes 1..128, int64", AssertionError
)
@pytest.mark.parametrize("bounds", [{"n": 129}, {"seed": 2**64}], ids=["n", "seed"])
def test_n_and_seed_beyond_the_schema_are_refused(bounds: dict[str, int]) -> None:
    refused_unsent(Method("openai", "stream_chat"), messages=USER, **bounds)


@pytest.mark.parametrize(
    "headers",
    [{"X-A: b": "c"}, {"": "v"}, {"X A": "v"}, {"X-A": "\x01"}, {"X-A": "\x7f"}, {"X-A": "\ud800"}],
    ids=["colon-in-name", "empty-name", "space-in-name", "control", "delete", "lone-surrogate"],
)
def test_header_names_and_values_http_cannot_carry_are_refused(headers: dict[str, str]) -> None:
    # Through aiohttp, the first is sent as header "X-A" with the value "b: c"; the next two are
    # sent and refused by the server (400); the control characters raise ValueError in aiohttp;
    # the surrogate is sent as an empty value.
    refused_unsent(Method("tgi", "generate"), inputs="x", extra_headers=headers)


def test_json_loads_of_a_lone_surrogate_reads_as_the_stdlib_does() -> None:
    # pydantic-core raises TypeError for this text; _json.loads must answer as json.loads does.
    assert _json.loads('"\ud800"') == json.loads('"\ud800"') == "\ud800"


def test_base_url_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.TGI(base_url=2**31)  # type: ignore[arg-type]


def test_base_url_that_urlsplit_refuses_is_refused() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.TGI(base_url="http://[")


def test_default_headers_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.TGI(base_url="http://tgi.test", default_headers="X-A: b")  # type: ignore[arg-type]


def test_api_key_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.TGI(base_url="http://tgi.test", api_key=12345)


def test_batch_wait_beyond_float_range_is_refused() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.LLVM(base_url="http://llvm.test", batch_wait=10**400)


def test_a_bytes_tensor_with_a_lone_surrogate_is_refused_when_built() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        Tensor("\ud800")
