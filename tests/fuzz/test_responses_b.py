"""Property tests for TGI, TEI, vLLM, OVMS and LLVM: whatever a server answers to a call that reads
a response, the caller gets the documented type or a typed APIError carrying the request ID, never
a builtin exception or a hang, and streams refuse endless lines.

The hostile answers are structure-aware: each starts from a valid body for the call (the shapes
the fakes in ``asyncllm.testing.fakes`` serve) and is damaged by a few drawn operations (a subtree
replaced by a hostile value, a key deleted, a list's items repeated or dropped, a subtree buried
in deep nesting) and sometimes at the byte level (truncated, not UTF-8, replaced by garbage).
Streams get damaged events and garbage lines between them, cut into chunks at drawn places. An
operation picks its node by an index into the body's list of nodes, so one drawn plan damages
bodies of any shape (the answers to each request of a batched call, say).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncllm
from asyncllm.backends import llvm, ovms, tei, tgi, vllm
from asyncllm.testing import MockResponse, MockTransport
from tests.helpers import USER

# Sized so that the whole file runs in about half a minute; raise max_examples to hunt.
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STREAM_SETTINGS = settings(SETTINGS, max_examples=150)
MAX_RESPONSE_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096
CALL_TIMEOUT = 10.0  # a call that takes longer than this hangs: no mock answer waits

# -- hostile values --------------------------------------------------------------------------------

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


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path, root first, in a fixed order."""
    out = [path]
    if isinstance(value, dict):
        for key in value:
            out += _nodes(value[key], (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _nodes(item, (*path, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _delete(value: Any, path: tuple[Any, ...]) -> Any:
    head, rest = path[0], path[1:]
    if rest:
        inner = value[head]
        return _replace(value, (head,), _delete(inner, rest))
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != head}
    return value[:head] + value[head + 1 :]


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


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
        paths = _nodes(value)
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
class Answer:
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


headers = st.dictionaries(
    st.sampled_from(["x-request-id", "retry-after", "retry-after-ms", "x-should-retry"]),
    st.text(max_size=12) | st.sampled_from(["true", "false", "0", "-1", "1e9", "nan"]),
    max_size=2,
)
# Mostly 200s, where the body is parsed; error statuses read the backend's (damaged) error body.
statuses = st.just(200) | st.sampled_from([204, 400, 404, 422, 424, 429, 500, 503])
answers = st.builds(
    Answer,
    status=st.one_of(st.just(200), statuses),
    plan=ops,
    bytes_damage=st.one_of(
        st.just(("none", 0, b"")),
        st.just(("none", 0, b"")),
        st.just(("none", 0, b"")),
        st.tuples(st.sampled_from(["truncate", "not utf-8"]), st.integers(0, 10**6), st.just(b"")),
        st.tuples(st.just("garbage"), st.just(0), st.binary(max_size=100)),
    ),
    headers=headers,
)
# Calls that send several requests (batches, TEI's /info first) take the answers in turn.
answer_plans = st.lists(answers, min_size=1, max_size=3)

Valid = Callable[[str, Any], Any]


def serve(plan: list[Answer], valid: Valid, error: Any) -> Callable[[Any], MockResponse]:
    """A handler that answers request n with ``plan[n % len(plan)]``, damaging the valid body for
    the request's path and body (or, for an error status, the backend's error body)."""
    count = 0

    def handler(request: Any) -> MockResponse:
        nonlocal count
        answer = plan[count % len(plan)]
        count += 1
        path = urlsplit(request.url).path
        base = error if answer.status >= 400 else valid(path, request.json())
        return MockResponse(answer.status, content=answer.body(base), headers=answer.headers)

    return handler


async def expect_typed(call: Awaitable[Any], check: Callable[[Any], bool]) -> None:
    """``call`` returns what ``check`` accepts, or raises a typed APIError with a request ID;
    anything else (a builtin exception, a timeout of ours) escapes and fails the test."""
    try:
        result = await asyncio.wait_for(call, CALL_TIMEOUT)
    except asyncllm.APIError as exc:
        assert exc.request_id is not None, repr(exc)
        assert exc.body is None or len(exc.body) <= 501
    else:
        assert check(result), repr(result)[:300]


def all_of(kind: type, items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(i, kind) for i in items)


def floats(rows: Any, depth: int = 2) -> bool:
    if depth == 0:
        return isinstance(rows, float)
    return isinstance(rows, list) and all(floats(r, depth - 1) for r in rows)


# -- valid answers, per backend --------------------------------------------------------------------

USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}
CHAT_CHUNKS = [
    {
        "id": "c",
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "he"}, "finish_reason": None}
        ],
    },
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
                    ]
                },
                "finish_reason": None,
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": USAGE},
]
EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
    "model": "m",
    "usage": {"prompt_tokens": 1, "total_tokens": 1},
}
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "o"}]}
OPENAI_ERROR = {"error": {"message": "boom", "type": "server_error", "code": "x", "status": 500}}


def openai_valid(path: str, body: Any) -> Any:
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/embeddings"):
        return EMBEDDINGS
    return MODELS


TOKEN = {"id": 100, "text": "echo", "logprob": -0.25, "special": False}
EOS = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}
TGI_GENERATION = {
    "generated_text": "echo",
    "details": {
        "finish_reason": "eos_token",
        "generated_tokens": 2,
        "seed": 7,
        "prefill": [{"id": 10, "text": "hi", "logprob": None}],
        "tokens": [TOKEN, EOS],
        "top_tokens": [[TOKEN], [EOS]],
        "best_of_sequences": [
            {
                "generated_text": "echo",
                "finish_reason": "length",
                "generated_tokens": 1,
                "seed": 1,
                "prefill": [],
                "tokens": [TOKEN],
                "top_tokens": [],
            }
        ],
    },
}
TGI_INFO = {
    "model_id": "fake/tgi-model",
    "model_sha": None,
    "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 1024,
    "max_total_tokens": 2048,
    "validation_workers": 2,
    "max_client_batch_size": 4,
    "router": "text-generation-router",
    "version": "3.3.6",
    "sha": None,
    "docker_label": None,
}
TGI_STREAM = [
    {"index": 0, "token": TOKEN, "top_tokens": [TOKEN], "generated_text": None, "details": None},
    {
        "index": 1,
        "token": EOS,
        "generated_text": "echo",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 2,
            "input_length": 1,
            "seed": None,
        },
    },
]
TGI_ERROR = {"error": "boom", "error_type": "validation"}


def tgi_valid(path: str, body: Any) -> Any:
    return {
        "/generate": TGI_GENERATION,
        "/info": TGI_INFO,
        "/health": {},
        "/tokenize": [{"id": 10, "text": "hi", "start": 0, "stop": 2}],
    }.get(path) or openai_valid(path, body)


TEI_INFO = {
    "model_id": "fake/tei-model",
    "model_sha": None,
    "model_dtype": "float32",
    "served_model_name": "fake/tei-model",
    "model_type": {"embedding": {"pooling": "cls"}},
    "max_concurrent_requests": 512,
    "max_input_length": 512,
    "max_batch_tokens": 16384,
    "max_batch_requests": None,
    "max_client_batch_size": 2,
    "auto_truncate": False,
    "tokenization_workers": 4,
    "version": "1.9.3",
    "sha": None,
    "docker_label": None,
}
TEI_ERROR = {"error": "boom", "error_type": "Overloaded"}


def tei_valid(path: str, body: Any) -> Any:
    if path == "/info":
        return TEI_INFO
    if path == "/v1/embeddings":
        return EMBEDDINGS
    if path == "/health":
        return {}
    items = body.get("texts") or body.get("inputs")
    n = len(items)
    row: Any = {
        "/embed": [0.5, -0.25, 0.0],
        "/embed_sparse": [{"index": 1, "value": 0.5}, {"index": 7, "value": 0.25}],
        "/embed_all": [[0.5, -0.25], [0.0, 1.0]],
        "/predict": [{"label": "positive", "score": 0.9}, {"label": "negative", "score": 0.1}],
        "/tokenize": [
            {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None},
            {"id": 1000, "text": "hi", "special": False, "start": 0, "stop": 2},
        ],
    }.get(path)
    if row is not None:
        return [row] * n
    return [{"index": i, "score": 1.0 / (i + 1), "text": t} for i, t in enumerate(items)]


VLLM_ERROR = {"object": "error", "message": "boom", "type": "BadRequestError", "code": 400}


def vllm_valid(path: str, body: Any) -> Any:
    if path == "/v1/completions":
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": "m",
            "choices": [
                {"index": 0, "text": "ok", "finish_reason": "stop", "stop_reason": None},
                {"index": 1, "text": "ok", "finish_reason": "length", "stop_reason": 2},
            ],
            "usage": USAGE,
        }
    if path == "/tokenize":
        return {"count": 2, "max_model_len": 4096, "tokens": [1, 2], "token_strs": ["a", "b"]}
    if path == "/detokenize":
        return {"prompt": "ab"}
    if path == "/version":
        return {"version": "0.9.0"}
    if path == "/health":
        return {}
    if path == "/rerank":
        return {
            "id": "rerank-1",
            "model": "m",
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
            "results": [
                {"index": 1, "document": {"text": "b"}, "relevance_score": 0.9},
                {"index": 0, "document": {"text": "a"}, "relevance_score": 0.1},
            ],
        }
    if path == "/score":
        return {
            "id": "score-1",
            "object": "list",
            "model": "m",
            "data": [
                {"index": 0, "object": "score", "score": 0.5},
                {"index": 1, "object": "score", "score": 0.25},
            ],
            "usage": USAGE,
        }
    return openai_valid(path, body)


OVMS_ERROR = {"error": "boom"}


def ovms_valid(path: str, body: Any) -> Any:
    if path.endswith("/infer"):
        # Each input comes back as an output of the same name, datatype, shape and data.
        outputs = [{k: t[k] for k in ("name", "shape", "datatype", "data")} for t in body["inputs"]]
        answer = {"model_name": "m", "model_version": "1", "outputs": outputs}
        return {**answer, "id": body["id"], "parameters": {"p": 1}} if "id" in body else answer
    if path.startswith("/v1/") and path.endswith(":predict"):
        if "instances" in body:
            return {"predictions": [[0.5, 1.0], {"b64": "aGk="}, {"a": [1, 2]}]}
        return {"outputs": {"scores": [[0.5]], "blob": {"b64": "aGk="}}}
    if path.endswith("/metadata"):
        return {
            "modelSpec": {"name": "m", "signatureName": "", "version": "1"},
            "metadata": {"signature_def": {"signatureDef": {"serving_default": {}}}},
        }
    if path.startswith("/v1/models/"):
        return {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}},
                {
                    "version": 2,
                    "state": "LOADING",
                    "status": {"error_code": 3, "error_message": ""},
                },
            ]
        }
    if path.startswith("/v2/models/") and not path.endswith("/ready"):
        return {
            "name": "m",
            "versions": ["1"],
            "platform": "OpenVINO",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}],
            "rt_info": {"model_info": {"version": "1"}},
        }
    if path == "/v2":
        return {"name": "OpenVINO Model Server", "version": "2026.2.0", "extensions": ["x"]}
    if path == "/v3/completions":
        return {
            "choices": [
                {"finish_reason": "stop", "index": 1, "text": "b"},
                {"finish_reason": "length", "index": 0, "text": "a"},
            ],
            "model": "m",
            "object": "text_completion",
            "usage": USAGE,
        }
    if path == "/v3/rerank":
        return {
            "results": [
                {"index": 1, "relevance_score": 0.9, "document": "b"},
                {"index": 0, "relevance_score": 0.1, "document": {"text": "a"}},
            ]
        }
    if path.startswith("/v3/"):
        return openai_valid(path, body)
    return {}


LLVM_ERROR = {"error": {"message": "boom", "type": "server_error", "code": 500}}
LLVM_MODEL = {
    "id": "m",
    "name": "m",
    "version": "1",
    "status": "loaded",
    "optimization": "speed",
    "max_batch": 8,
}


def llvm_valid(path: str, body: Any) -> Any:
    metrics = {"latency_ms": 1.5, "batch_size": 1, "gpu": "x"}
    if path.endswith("/batch_infer"):
        return {
            "model": "m",
            "results": [{"output": {"echo": v}, "metrics": metrics} for v in body["inputs"]],
        }
    if path.endswith("/infer"):
        return {"model": "m", "output": [1, 2], "metrics": metrics}
    if path.endswith("/statistics"):
        return {"model": "m", "requests": 3, "inferences": 3, "batches": 1, "errors": 0}
    if path.endswith("/optimize"):
        return {"model": "m", "optimization_type": "speed", "status": "optimized"}
    if path.endswith("/reload"):
        return {"model": "m", "status": "reloaded"}
    if path == "/status":
        return {"status": "ok", "version": "1", "uptime_seconds": 1.0, "models_loaded": 1}
    if path == "/models":
        return {"models": [LLVM_MODEL, {**LLVM_MODEL, "id": "n", "name": "n"}]}
    return LLVM_MODEL


# -- the calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    make: Callable[..., Any]
    valid: Valid
    error: Any


def _client(cls: Any, base_url: str, **fixed: Any) -> Callable[..., Any]:
    def make(transport: MockTransport, **kwargs: Any) -> Any:
        return cls(
            base_url=base_url,
            transport=transport,
            dispatcher=asyncllm.Dispatcher(),
            max_retries=0,
            max_response_bytes=MAX_RESPONSE_BYTES,
            max_line_bytes=MAX_LINE_BYTES,
            **{**fixed, **kwargs},
        )

    return make


TGI = Backend(_client(asyncllm.TGI, "http://tgi.test"), tgi_valid, TGI_ERROR)
TEI = Backend(
    _client(asyncllm.TEI, "http://tei.test", max_client_batch_size=2), tei_valid, TEI_ERROR
)
VLLM = Backend(_client(asyncllm.VLLM, "http://vllm.test/v1", model="m"), vllm_valid, VLLM_ERROR)
OVMS = Backend(_client(asyncllm.OVMS, "http://ovms.test", model="m"), ovms_valid, OVMS_ERROR)
LLVM = Backend(_client(asyncllm.LLVM, "http://llvm.test", batch_wait=0.0), llvm_valid, LLVM_ERROR)


@dataclass(frozen=True)
class Call:
    backend: Backend
    run: Callable[[Any], Awaitable[Any]]
    check: Callable[[Any], bool]
    client_kwargs: tuple[tuple[str, Any], ...] = ()


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda r: isinstance(r, kind)


def _list_of(kind: type) -> Callable[[Any], bool]:
    return lambda r: all_of(kind, r)


def _rows_of(kind: type) -> Callable[[Any], bool]:
    return lambda r: isinstance(r, list) and all(all_of(kind, row) for row in r)


def _embeddings(r: Any) -> bool:
    return isinstance(r, asyncllm.EmbeddingResponse) and floats(r.vectors)


def _tensors(r: Any) -> bool:
    """An InferResponse whose fields hold what they are declared to (it is not a pydantic model,
    so nothing else checks them)."""
    return (
        isinstance(r, ovms.InferResponse)
        and all(isinstance(t, ovms.Tensor) for t in r.values())
        and isinstance(r.model_name, str)
        and all(v is None or isinstance(v, str) for v in (r.model_version, r.id))
        and (r.parameters is None or isinstance(r.parameters, dict))
    )


async def _llvm_concurrent(c: Any) -> bool:
    """Three concurrent infers that travel as one batch (batch_size=3): each caller gets its own
    result or a typed error."""
    calls = [expect_typed(c.infer("m", i), _is(llvm.InferResult)) for i in range(3)]
    await asyncio.gather(*calls)
    return True


CALLS: dict[str, Call] = {
    # TGI
    "tgi.chat": Call(TGI, lambda c: c.chat(USER), _is(asyncllm.ChatResponse)),
    "tgi.generate": Call(TGI, lambda c: c.generate("hi", details=True), _is(tgi.TGIGeneration)),
    "tgi.info": Call(TGI, lambda c: c.info(), _is(tgi.TGIInfo)),
    "tgi.health": Call(TGI, lambda c: c.health(), _is(bool)),
    "tgi.tokenize": Call(TGI, lambda c: c.tokenize("hi"), _list_of(tgi.TGITokenSpan)),
    "tgi.models": Call(TGI, lambda c: c.models(), _list_of(asyncllm.ModelInfo)),
    # TEI: one input, and three in two chunks after reading max_client_batch_size from /info
    "tei.embed": Call(TEI, lambda c: c.embed("a"), _embeddings),
    "tei.embed_batched": Call(
        TEI, lambda c: c.embed(["a", "b", "c"]), _embeddings, (("max_client_batch_size", None),)
    ),
    "tei.embed_sparse": Call(
        TEI, lambda c: c.embed_sparse(["a", "b"]), _is(tei.TEISparseEmbeddings)
    ),
    "tei.embed_all": Call(
        TEI,
        lambda c: c.embed_all("a"),
        lambda r: isinstance(r, tei.TEITokenEmbeddings) and floats(r.vectors, 3),
    ),
    "tei.openai_embed": Call(TEI, lambda c: c.openai_embed("a"), _embeddings),
    "tei.rerank": Call(TEI, lambda c: c.rerank("q", ["a", "b", "c"]), _list_of(tei.TEIRank)),
    "tei.predict": Call(TEI, lambda c: c.predict(["a", ("b", "c")]), _rows_of(tei.TEIPrediction)),
    "tei.tokenize": Call(TEI, lambda c: c.tokenize(["a", "b"]), _rows_of(tei.TEIToken)),
    "tei.info": Call(TEI, lambda c: c.info(), _is(tei.TEIInfo)),
    "tei.health": Call(TEI, lambda c: c.health(), _is(bool)),
    # vLLM
    "vllm.chat": Call(VLLM, lambda c: c.chat(USER, top_k=2), _is(asyncllm.ChatResponse)),
    "vllm.completions": Call(
        VLLM, lambda c: c.completions(["a", "b"]), _is(vllm.CompletionResponse)
    ),
    "vllm.embed": Call(VLLM, lambda c: c.embed("a"), _embeddings),
    "vllm.models": Call(VLLM, lambda c: c.models(), _list_of(asyncllm.ModelInfo)),
    "vllm.tokenize": Call(VLLM, lambda c: c.tokenize("ab"), _is(vllm.TokenizeResponse)),
    "vllm.detokenize": Call(VLLM, lambda c: c.detokenize([1, 2]), _is(str)),
    "vllm.version": Call(VLLM, lambda c: c.version(), _is(str)),
    "vllm.health": Call(VLLM, lambda c: c.health(), _is(bool)),
    "vllm.rerank": Call(VLLM, lambda c: c.rerank("q", ["a", "b"]), _is(vllm.RerankResponse)),
    "vllm.score": Call(VLLM, lambda c: c.score("q", ["a", "b"]), _is(vllm.ScoreResponse)),
    # OVMS: KServe, TF-Serving and /v3
    "ovms.infer_fp32": Call(
        OVMS, lambda c: c.infer(inputs={"x": [[0.5, 1.0], [-2, 3.0]]}), _tensors
    ),
    "ovms.infer_fp16_uint8": Call(
        OVMS,
        lambda c: c.infer(
            inputs={
                "h": ovms.Tensor([1.5, -2.0], datatype="FP16"),
                "u": ovms.Tensor([[0], [255]], datatype="UINT8"),
            }
        ),
        _tensors,
    ),
    "ovms.infer_int64_with_id": Call(
        OVMS, lambda c: c.infer(inputs={"ids": [1, 2, 3]}, id="r1", outputs=["ids"]), _tensors
    ),
    "ovms.infer_bool_bytes": Call(
        OVMS, lambda c: c.infer(inputs={"mask": [[True], [False]], "text": ["hi"]}), _tensors
    ),
    "ovms.model_metadata": Call(
        OVMS, lambda c: c.model_metadata(version=1), _is(ovms.ModelMetadata)
    ),
    "ovms.server_metadata": Call(OVMS, lambda c: c.server_metadata(), _is(ovms.ServerMetadata)),
    "ovms.server_live": Call(OVMS, lambda c: c.server_live(), _is(bool)),
    "ovms.server_ready": Call(OVMS, lambda c: c.server_ready(), _is(bool)),
    "ovms.model_ready": Call(OVMS, lambda c: c.model_ready(), _is(bool)),
    "ovms.predict_rows": Call(
        OVMS, lambda c: c.predict(instances=[[1.0, 2.0], b"hi"]), _is(ovms.PredictResponse)
    ),
    "ovms.predict_columns": Call(
        OVMS, lambda c: c.predict(inputs={"x": [[1.0]]}), _is(ovms.PredictResponse)
    ),
    "ovms.model_status": Call(OVMS, lambda c: c.model_status(), _list_of(ovms.ModelVersionStatus)),
    "ovms.tfs_model_metadata": Call(OVMS, lambda c: c.tfs_model_metadata(), _is(dict)),
    "ovms.completions": Call(OVMS, lambda c: c.completions("a"), _is(ovms.CompletionResponse)),
    "ovms.rerank": Call(OVMS, lambda c: c.rerank("q", ["a", "b"]), _is(ovms.RerankResponse)),
    "ovms.chat": Call(OVMS, lambda c: c.chat(USER), _is(asyncllm.ChatResponse)),
    "ovms.embed": Call(OVMS, lambda c: c.embed("a"), _embeddings),
    "ovms.models": Call(OVMS, lambda c: c.models(), _list_of(asyncllm.ModelInfo)),
    # LLVM: direct calls, a micro-batched infer alone, three concurrent ones in one batch
    "llvm.models": Call(LLVM, lambda c: c.models(), _list_of(llvm.LLVMModel)),
    "llvm.model_info": Call(LLVM, lambda c: c.model_info("m"), _is(llvm.LLVMModel)),
    "llvm.statistics": Call(LLVM, lambda c: c.statistics("m"), _is(llvm.ModelStatistics)),
    "llvm.optimize": Call(LLVM, lambda c: c.optimize("m", "speed"), _is(llvm.OptimizeResult)),
    "llvm.reload": Call(LLVM, lambda c: c.reload("m"), _is(llvm.ReloadResult)),
    "llvm.status": Call(LLVM, lambda c: c.status(), _is(llvm.ServerStatus)),
    "llvm.infer": Call(LLVM, lambda c: c.infer("m", [1], batch=False), _is(llvm.InferResult)),
    "llvm.infer_batched": Call(LLVM, lambda c: c.infer("m", {"x": 1}), _is(llvm.InferResult)),
    "llvm.infer_concurrent": Call(
        LLVM, _llvm_concurrent, _is(bool), (("batch_size", 3), ("batch_wait", 1.0))
    ),
    "llvm.batch_infer": Call(
        LLVM, lambda c: c.batch_infer("m", [1, 2]), _list_of(llvm.InferResult)
    ),
    "llvm.infer_many": Call(
        LLVM,
        lambda c: c.infer_many("m", [1, 2, 3]),
        _list_of(llvm.InferResult),
        (("batch_size", 2),),
    ),
}


async def run_call(call: Call, plan: list[Answer]) -> None:
    transport = MockTransport(serve(plan, call.backend.valid, call.backend.error))
    client = call.backend.make(transport, **dict(call.client_kwargs))
    try:
        await expect_typed(call.run(client), call.check)
    finally:
        await client.aclose()


@pytest.mark.parametrize("name", sorted(CALLS))
@SETTINGS
@given(plan=answer_plans)
def test_hostile_answers_give_typed_errors(name: str, plan: list[Answer]) -> None:
    asyncio.run(run_call(CALLS[name], plan))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_valid_answers_pass(name: str) -> None:
    """The valid bodies the damage starts from are valid: each call returns its type."""
    clean = Answer(200, [], ("none", 0, b""), {})

    async def run() -> None:
        call = CALLS[name]
        client = call.backend.make(
            MockTransport(serve([clean], call.backend.valid, None)), **dict(call.client_kwargs)
        )
        try:
            assert call.check(await call.run(client))
        finally:
            await client.aclose()

    asyncio.run(run())


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


@pytest.mark.parametrize("name", sorted(set(CALLS) - {"llvm.infer_concurrent"}))
def test_endless_bodies_stop_at_max_response_bytes(name: str) -> None:
    """A body that never ends is refused once it passes max_response_bytes."""

    async def run() -> None:
        call = CALLS[name]
        responses: list[Endless] = []

        def handler(request: Any) -> Endless:
            responses.append(Endless(b"", b"[" * 1000))
            return responses[-1]

        client = call.backend.make(MockTransport(handler), **dict(call.client_kwargs))
        try:
            with pytest.raises(asyncllm.ResponseValidationError) as caught:
                await asyncio.wait_for(call.run(client), CALL_TIMEOUT)
            assert caught.value.request_id is not None
            assert max(r.sent for r in responses) <= MAX_RESPONSE_BYTES + 1000
        finally:
            await client.aclose()

    asyncio.run(run())


# -- streams ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamCall:
    backend: Backend
    open: Callable[[Any], asyncllm.Stream[Any]]
    events: list[Any]
    item: type


STREAMS: dict[str, StreamCall] = {
    "tgi.stream_chat": StreamCall(
        TGI, lambda c: c.stream_chat(USER), CHAT_CHUNKS, asyncllm.ChatChunk
    ),
    "tgi.stream_generate": StreamCall(
        TGI, lambda c: c.stream_generate("hi", details=True), TGI_STREAM, tgi.TGIStreamToken
    ),
    "vllm.stream_chat": StreamCall(
        VLLM, lambda c: c.stream_chat(USER, min_p=0.1), CHAT_CHUNKS, asyncllm.ChatChunk
    ),
    "ovms.stream_chat": StreamCall(
        OVMS, lambda c: c.stream_chat(USER), CHAT_CHUNKS, asyncllm.ChatChunk
    ),
}

STREAM_ERRORS = [TGI_ERROR, OPENAI_ERROR, {"error": {"message": "boom", "status": 429}}]
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
            b"data: " + b"y" * (MAX_LINE_BYTES + 100),  # over the line limit
        ]
    ),
    st.builds(
        lambda base, plan: b"data: " + encode(damage(base, plan)),
        st.sampled_from(STREAM_ERRORS),
        ops,
    ),
)


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
    headers=headers,
)


@pytest.mark.parametrize("name", sorted(STREAMS))
@STREAM_SETTINGS
@given(answer=stream_answers)
def test_hostile_streams_give_typed_errors(name: str, answer: StreamAnswer) -> None:
    call = STREAMS[name]

    async def consume(client: Any) -> bool:
        async with call.open(client) as stream:
            async for item in stream:
                assert isinstance(item, call.item), repr(item)
        return True

    async def run() -> None:
        chunks = answer.chunks(call.events, call.backend.error)
        client = call.backend.make(
            MockTransport(
                lambda r: MockResponse(answer.status, chunks=chunks, headers=answer.headers)
            )
        )
        try:
            await expect_typed(consume(client), _is(bool))
        finally:
            await client.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_valid_streams_pass(name: str) -> None:
    call = STREAMS[name]
    clean = StreamAnswer(200, [], [], True, b"\n\n", [], None, {})

    async def run() -> None:
        chunks = clean.chunks(call.events, None)
        client = call.backend.make(MockTransport(lambda r: MockResponse(200, chunks=chunks)))
        try:
            items = [item async for item in call.open(client)]
            assert len(items) == len(call.events)
            assert all(isinstance(item, call.item) for item in items)
        finally:
            await client.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("name", sorted(STREAMS))
@settings(SETTINGS, max_examples=10)
@given(chunk=st.integers(1, 3000), newline_first=st.booleans())
def test_endless_stream_lines_are_refused(name: str, chunk: int, newline_first: bool) -> None:
    """A line that never ends is refused once it passes max_line_bytes, having read no more than
    the limit and a chunk: memory stays bounded and the call does not hang."""
    call = STREAMS[name]

    async def run() -> None:
        head = b"data: " + encode(call.events[0]) + b"\n\n" + (b"\n" if newline_first else b"")
        response = Endless(head + b"data: ", b"y" * chunk)
        client = call.backend.make(MockTransport(lambda r: response))
        items: list[Any] = []
        try:
            with pytest.raises(asyncllm.ResponseValidationError) as caught:
                async with call.open(client) as stream:
                    async for item in stream:
                        items.append(item)
            assert caught.value.request_id is not None
            assert len(items) == 1
            assert response.sent <= len(head) + 6 + MAX_LINE_BYTES + 2 * chunk
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(run(), CALL_TIMEOUT))


# -- regressions: the minimal bodies the properties found ------------------------------------------

HUGE = b"1" + b"0" * 400  # an int JSON carries and Python parses, beyond any float


async def answer_once(backend: Backend, body: bytes, run: Callable[[Any], Awaitable[Any]]) -> None:
    """``run`` on a client whose server answers 200 with ``body``: a ResponseValidationError."""
    client = backend.make(MockTransport(lambda r: MockResponse(200, content=body)))
    try:
        with pytest.raises(asyncllm.ResponseValidationError) as caught:
            await run(client)
        assert caught.value.request_id is not None
    finally:
        await client.aclose()


async def test_ovms_infer_float_output_beyond_float_range() -> None:
    # Was OverflowError: int too large to convert to float (in _from_json, then _check_value).
    body = b'{"outputs": [{"name": "o", "datatype": "FP32", "shape": [1], "data": [%s]}]}' % HUGE
    await answer_once(OVMS, body, lambda c: c.infer(inputs={"x": [1.0]}))


def test_ovms_tensor_int_beyond_float_range_is_a_configuration_error() -> None:
    # The same check refuses such a tensor before sending (was OverflowError too).
    with pytest.raises(asyncllm.ConfigurationError, match="out of range"):
        ovms.Tensor([10**400], datatype="FP64")


async def test_ovms_predict_nested_deeper_than_the_stack() -> None:
    # Was RecursionError from _from_b64: JSON accepts this depth, a recursive walk does not.
    body = b'{"predictions": ' + b"[" * 600 + b"]" * 600 + b"}"
    await answer_once(OVMS, body, lambda c: c.predict(instances=[1]))


async def test_ovms_infer_parameters_not_an_object() -> None:
    # Was returned as is: an InferResponse whose ``parameters`` (a dict or None) was a list.
    body = b'{"outputs": [], "parameters": [1]}'
    await answer_once(OVMS, body, lambda c: c.infer(inputs={"x": [1.0]}))


async def test_tei_embed_value_beyond_float_range() -> None:
    # Was OverflowError from float(x) on each element.
    await answer_once(TEI, b"[[%s]]" % HUGE, lambda c: c.embed("a"))


async def test_tei_embed_all_value_beyond_float_range() -> None:
    await answer_once(TEI, b"[[[%s]]]" % HUGE, lambda c: c.embed_all("a"))
