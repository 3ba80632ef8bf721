"""What each backend's server answers when all is well: the valid bodies, events and error bodies
(as the fakes in ``asyncllm.testing.fakes`` send them) that the input fuzzing replies with and the
response fuzzing damages, and one JSON route per backend (``*_answer``) that, with the streams it
sends, answers any request its client makes (``serve``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from yarl import URL

from asyncllm._http._transport import Request
from asyncllm.testing import MockResponse

Event = tuple[str | None, Any]  # (SSE event name, payload: JSON, or bytes sent as they are)
# The valid JSON answer to a request, by its (raw) URL path and JSON body.
Answer = Callable[[str, Any], Any]
Stream = tuple[str, list[Event], Mapping[str, str]]  # framing, events, headers
Reply = Callable[[Request], MockResponse]

SSE = {"Content-Type": "text/event-stream"}
JSON = {"Content-Type": "application/json"}


def encode_body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def frame(framing: str, name: str | None, data: bytes) -> bytes:
    if framing == "ndjson":
        return data + b"\n"
    head = b"" if name is None else f"event: {name}\n".encode()
    return head + b"data: " + data + b"\n\n"


def stream_bytes(framing: str, events: list[Event]) -> bytes:
    return b"".join(frame(framing, name, encode_body(payload)) for name, payload in events)


def plain(payloads: list[Any]) -> list[Event]:
    """Unnamed SSE events, then ``[DONE]``."""
    return [*((None, p) for p in payloads), (None, b"[DONE]")]


# -- OpenAI-compatible -----------------------------------------------------------------------------

USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
# fmt: off
CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{
        "index": 0,
        "message": {
            "role": "assistant", "content": "ok",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
        },
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
# fmt: on
MODELS = {
    "object": "list",
    "data": [{"id": "llama", "object": "model", "created": 1, "owned_by": "Meta"}],
}
OPENAI_ERROR = {
    "error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}
}


def embeddings(count: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.25]} for i in range(count)]
    usage = {"prompt_tokens": 1, "total_tokens": 1}
    return {"object": "list", "data": data, "model": "m", "usage": usage}


def embed_count(body: Any) -> int:
    value = body.get("input")
    return 1 if isinstance(value, str) else len(value)


def _openai_chunk(delta: Any, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [choice],
    }


_TOOL_DELTA = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
# Groq's, with its x_groq usage chunk.
OPENAI_EVENTS: list[Event] = [
    (None, _openai_chunk({"role": "assistant", "content": ""})),
    (None, _openai_chunk({"content": "Hi"})),
    (None, _openai_chunk({"tool_calls": [_TOOL_DELTA]})),
    (None, _openai_chunk({}, "stop")),
    (None, {"id": "chatcmpl-1", "choices": [], "x_groq": {"id": "req_1", "usage": USAGE}}),
    (None, b"[DONE]"),
]
# The other servers', with a usage chunk of their own.
CHAT_CHUNKS = [
    {
        "id": "c",
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "he"}, "finish_reason": None}
        ],
    },
    {"choices": [{"index": 0, "delta": {"tool_calls": [_TOOL_DELTA]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": USAGE},
]
GROQ_HEADERS = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-limit-tokens": "18000",
    "x-ratelimit-remaining-tokens": "17997",
    "x-ratelimit-reset-tokens": "7.66s",
    "x-request-id": "req_srv_1",
}


def openai_answer(path: str, body: Any) -> Any:
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/embeddings"):
        return embeddings(embed_count(body))
    if path.endswith("/models"):
        return MODELS
    raise AssertionError(f"no route {path}")


# -- Claude ----------------------------------------------------------------------------------------

CLAUDE_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Zürich"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7},
}
# fmt: off
CLAUDE_MODELS = {
    "data": [{"id": "claude-x", "type": "model", "display_name": "Claude X", "created_at": "2025-02-19T00:00:00Z"}],
    "has_more": False, "first_id": "claude-x", "last_id": "claude-x",
}
# fmt: on
CLAUDE_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
# fmt: off
CLAUDE_EVENTS: list[Event] = [
    ("message_start", {"type": "message_start", "message": {**CLAUDE_MESSAGE, "content": [], "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 7}}),
    ("message_stop", {"type": "message_stop"}),
]
# fmt: on


def claude_answer(path: str, body: Any) -> Any:
    if path == "/v1/models":
        return CLAUDE_MODELS
    if path.endswith("/count_tokens"):
        return {"input_tokens": 12}
    return CLAUDE_MESSAGE


# -- Gemini ----------------------------------------------------------------------------------------

GEMINI_ANSWER = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "hi"},
                    {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "LOW"}],
        }
    ],
    "promptFeedback": {"safetyRatings": []},
    "usageMetadata": {
        "promptTokenCount": 3,
        "candidatesTokenCount": 2,
        "totalTokenCount": 5,
        "thoughtsTokenCount": 1,
    },
    "modelVersion": "gemini-x",
    "responseId": "resp-1",
}
# fmt: off
GEMINI_MODELS = {
    "models": [{
        "name": "models/gemini-x", "version": "001", "displayName": "Gemini X", "inputTokenLimit": 32768,
        "outputTokenLimit": 8192, "supportedGenerationMethods": ["generateContent", "countTokens"],
    }],
    "nextPageToken": "page-2",
}
# fmt: on
# fmt: off
GEMINI_ERROR = {
    "error": {
        "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
        ],
    }
}
# fmt: on
_GEMINI_BASE = {"modelVersion": "gemini-x", "responseId": "resp-1"}
# fmt: off
GEMINI_EVENTS: list[Event] = [
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}], **_GEMINI_BASE}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "!", "thought": False}]}, "index": 0}], **_GEMINI_BASE}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": [1]}}}]}, "index": 0}], **_GEMINI_BASE}),
    (None, {"candidates": [{"finishReason": "STOP", "index": 0}], "usageMetadata": GEMINI_ANSWER["usageMetadata"], **_GEMINI_BASE}),
]
# fmt: on


def gemini_answer(path: str, body: Any) -> Any:
    if path == "/v1beta/models":  # one page: no nextPageToken
        return {k: v for k, v in GEMINI_MODELS.items() if k != "models"}
    method = path.rsplit(":", 1)[1]
    if method == "embedContent":
        return {"embedding": {"values": [0.1, 0.2]}}
    if method == "batchEmbedContents":
        return {"embeddings": [{"values": [0.1]}] * len(body["requests"])}
    if method == "countTokens":
        return {"totalTokens": 7}
    return GEMINI_ANSWER


# -- Ollama ----------------------------------------------------------------------------------------

# fmt: off
_OLLAMA_STATS = {
    "total_duration": 5_000_000, "load_duration": 1_000_000, "prompt_eval_count": 3,
    "prompt_eval_duration": 300_000, "eval_count": 2, "eval_duration": 400_000,
}
# fmt: on
_OLLAMA_BASE = {"model": "llama3:latest", "created_at": "2025-01-01T00:00:00Z"}
_OLLAMA_CALL = {"function": {"name": "f", "arguments": {"a": 1}}}
OLLAMA_CHAT = {
    **_OLLAMA_BASE,
    "message": {
        "role": "assistant",
        "content": "hi",
        "thinking": "hmm",
        "tool_calls": [_OLLAMA_CALL],
    },
    "done": True,
    "done_reason": "stop",
    **_OLLAMA_STATS,
}
OLLAMA_GENERATE = {
    **_OLLAMA_BASE,
    "response": "hi",
    "thinking": "hmm",
    "done": True,
    "done_reason": "stop",
    **_OLLAMA_STATS,
}
# fmt: off
OLLAMA_EMBED = {
    "model": "all-minilm", "embeddings": [[0.1, 0.2]], "total_duration": 1_000_000, "load_duration": 1_000,
    "prompt_eval_count": 2,
}
# fmt: on
_OLLAMA_DETAILS = {"format": "gguf", "family": "llama", "families": ["llama"]}
# fmt: off
_OLLAMA_ENTRY = {
    "name": "llama3:latest", "model": "llama3:latest", "modified_at": "2025-10-03T23:34:03.409490317-07:00",
    "size": 1_000_000, "digest": "sha256:abc", "details": _OLLAMA_DETAILS,
}
# fmt: on
OLLAMA_TAGS = {"models": [_OLLAMA_ENTRY]}
# fmt: off
OLLAMA_PS = {
    "models": [{**_OLLAMA_ENTRY, "expires_at": "2025-10-04T00:00:00Z", "size_vram": 1_000_000, "context_length": 4096}]
}
# fmt: on
# fmt: off
OLLAMA_SHOW = {
    "parameters": "temperature 0.7\nnum_ctx 4096", "license": "licence", "modified_at": "2025-10-03T23:34:03Z",
    "details": _OLLAMA_DETAILS, "template": "{{ .Prompt }}", "capabilities": ["completion", "tools"],
    "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
}
# fmt: on
OLLAMA_VERSION = {"version": "0.12.0"}
OLLAMA_ERROR = {"error": "model 'x' not found"}
# fmt: off
OLLAMA_CHAT_LINES: list[Event] = [
    (None, {**_OLLAMA_BASE, "message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False}),
    (None, {**_OLLAMA_BASE, "message": {"role": "assistant", "content": "Hi"}, "done": False}),
    (None, {**_OLLAMA_BASE, "message": {"role": "assistant", "content": "", "tool_calls": [_OLLAMA_CALL]}, "done": False}),
    (None, {**_OLLAMA_BASE, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop", **_OLLAMA_STATS}),
]
OLLAMA_GENERATE_LINES: list[Event] = [
    (None, {**_OLLAMA_BASE, "response": "", "thinking": "hm", "done": False}),
    (None, {**_OLLAMA_BASE, "response": "Hi", "done": False}),
    (None, {**_OLLAMA_BASE, "response": "", "done": True, "done_reason": "stop", **_OLLAMA_STATS}),
]
OLLAMA_PULL_LINES: list[Event] = [
    (None, {"status": "pulling manifest"}),
    (None, {"status": "pulling abc", "digest": "sha256:abc", "total": 4000}),
    (None, {"status": "pulling abc", "digest": "sha256:abc", "total": 4000, "completed": 2000}),
    (None, {"status": "verifying sha256 digest"}),
    (None, {"status": "success"}),
]
# fmt: on
OLLAMA_JSON: dict[str, Any] = {
    "/api/chat": OLLAMA_CHAT,
    "/api/generate": OLLAMA_GENERATE,
    "/api/tags": OLLAMA_TAGS,
    "/api/show": OLLAMA_SHOW,
    "/api/ps": OLLAMA_PS,
    "/api/version": OLLAMA_VERSION,
    "/api/pull": {"status": "success"},
}
OLLAMA_LINES = {
    "/api/chat": OLLAMA_CHAT_LINES,
    "/api/generate": OLLAMA_GENERATE_LINES,
    "/api/pull": OLLAMA_PULL_LINES,
}


def ollama_events(path: str) -> Stream:
    return "ndjson", OLLAMA_LINES[path], {}


def ollama_answer(path: str, body: Any) -> Any:
    if path == "/api/embed":
        return {"model": "m", "embeddings": [[0.1, 0.2]] * embed_count(body)}
    return OLLAMA_JSON.get(path)  # delete and copy: an empty body


# -- OPEA ------------------------------------------------------------------------------------------

OPEA_ERROR = {"detail": [{"loc": ["body", "messages"], "msg": "Field required", "type": "missing"}]}
# Gateways write each text piece as a Python bytes literal; a character may span two of them.
OPEA_BYTES_EVENTS: list[Event] = [
    (None, b"b'echo:'"),
    (None, b'b" it\'s"'),
    (None, b"b' caf\\xc3'"),
    (None, b"b'\\xa9 \\n\\t\\\\ \\101'"),
    (None, b"[DONE]"),
]
OPEA_CODEGEN_EVENTS: list[Event] = [
    (None, _openai_chunk({"role": "assistant", "content": ""})),
    (None, _openai_chunk({"content": "def"})),
    (None, {"choices": [{"index": 0, "text": " f():"}]}),
    (None, {"ops": [{"op": "add", "path": "/x", "value": " pass"}]}),
    (None, {"text": "\n"}),
    (None, _openai_chunk({}, "stop")),
    (None, b"[DONE]"),
]
OPEA_RETRIEVAL = {
    "id": "searched-1",
    "retrieved_docs": [
        {"id": "doc-0", "text": "first", "metadata": {"source": "a.txt"}},
        {"id": "doc-1", "text": ["second", "part"], "downstream_black_list": []},
    ],
    "initial_query": "q",
    "top_n": 1,
}
OPEA_RERANKED = {
    "reranked_docs": [{"text": "first", "score": 0.5}],
    "documents": ["first", {"text": "second"}],
    "query": "q",
}
OPEA_GUARDED = {"id": "guard-1", "text": "ok", "downstream_black_list": []}
OPEA_INGESTED = {"status": 200, "message": "Data preparation succeeded"}
OPEA_HEALTH = {"Service Title": "opea_service@fake", "Version": "1.5"}
_OPEA_JSON: dict[str, Any] = {
    "/v1/retrieval": OPEA_RETRIEVAL,
    "/v1/reranking": OPEA_RERANKED,
    "/v1/guardrails": OPEA_GUARDED,
    "/v1/dataprep/ingest": OPEA_INGESTED,
    "/v1/health_check": OPEA_HEALTH,
}


def opea_answer(path: str, body: Any) -> Any:
    if path == "/v1/embeddings":
        return embeddings(embed_count(body))
    return _OPEA_JSON.get(path, CHAT)


def opea_events(path: str) -> Stream:
    """The LLM service streams OpenAI's chunks; the gateways, bytes literals."""
    if path == "/v1/chat/completions":
        return "sse", OPENAI_EVENTS, {}
    return "sse", OPEA_BYTES_EVENTS, SSE


# -- TGI -------------------------------------------------------------------------------------------

TOKEN = {"id": 100, "text": "echo", "logprob": -0.25, "special": False}
EOS = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}
# fmt: off
TGI_GENERATION = {
    "generated_text": "echo",
    "details": {
        "finish_reason": "eos_token", "generated_tokens": 2, "seed": 7,
        "prefill": [{"id": 10, "text": "hi", "logprob": None}],
        "tokens": [TOKEN, EOS], "top_tokens": [[TOKEN], [EOS]],
        "best_of_sequences": [{
            "generated_text": "echo", "finish_reason": "length", "generated_tokens": 1, "seed": 1,
            "prefill": [], "tokens": [TOKEN], "top_tokens": [],
        }],
    },
}
# fmt: on
# fmt: off
TGI_INFO = {
    "model_id": "fake/tgi-model", "model_sha": None, "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 128, "max_best_of": 2, "max_stop_sequences": 4, "max_input_tokens": 1024,
    "max_total_tokens": 2048, "validation_workers": 2, "max_client_batch_size": 4,
    "router": "text-generation-router", "version": "3.3.6", "sha": None, "docker_label": None,
}
# fmt: on
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


def tgi_answer(path: str, body: Any) -> Any:
    routes = {
        "/generate": TGI_GENERATION,
        "/info": TGI_INFO,
        "/health": {},
        "/tokenize": [{"id": 10, "text": "hi", "start": 0, "stop": 2}],
    }
    return routes[path] if path in routes else openai_answer(path, body)


# -- TEI -------------------------------------------------------------------------------------------

# fmt: off
TEI_INFO = {
    "model_id": "fake/tei-model", "model_sha": None, "model_dtype": "float32",
    "served_model_name": "fake/tei-model", "model_type": {"embedding": {"pooling": "cls"}},
    "max_concurrent_requests": 512, "max_input_length": 512, "max_batch_tokens": 16384,
    "max_batch_requests": None, "max_client_batch_size": 2, "auto_truncate": False,
    "tokenization_workers": 4, "version": "1.9.3", "sha": None, "docker_label": None,
}
# fmt: on
TEI_ERROR = {"error": "boom", "error_type": "Overloaded"}
_TEI_ROWS: dict[str, Any] = {
    "/embed": [0.5, -0.25, 0.0],
    "/embed_sparse": [{"index": 1, "value": 0.5}, {"index": 7, "value": 0.25}],
    "/embed_all": [[0.5, -0.25], [0.0, 1.0]],
    "/predict": [{"label": "positive", "score": 0.9}, {"label": "negative", "score": 0.1}],
    "/tokenize": [
        {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None},
        {"id": 1000, "text": "hi", "special": False, "start": 0, "stop": 2},
    ],
}


def tei_answer(path: str, body: Any) -> Any:
    if path == "/info":
        return TEI_INFO
    if path == "/v1/embeddings":
        return embeddings(embed_count(body))
    if path == "/health":
        return {}
    items = body.get("texts") or body.get("inputs")
    if path in _TEI_ROWS:
        return [_TEI_ROWS[path]] * len(items)
    return [{"index": i, "score": 1.0 / (i + 1), "text": t} for i, t in enumerate(items)]


# -- vLLM ------------------------------------------------------------------------------------------

VLLM_ERROR = {"object": "error", "message": "boom", "type": "BadRequestError", "code": 400}
_VLLM_JSON: dict[str, Any] = {
    "/v1/completions": {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "m",
        "choices": [
            {"index": 0, "text": "ok", "finish_reason": "stop", "stop_reason": None},
            {"index": 1, "text": "ok", "finish_reason": "length", "stop_reason": 2},
        ],
        "usage": USAGE,
    },
    "/tokenize": {"count": 2, "max_model_len": 4096, "tokens": [1, 2], "token_strs": ["a", "b"]},
    "/detokenize": {"prompt": "ab"},
    "/version": {"version": "0.9.0"},
    "/health": {},
}


def vllm_answer(path: str, body: Any) -> Any:
    if path in _VLLM_JSON:
        return _VLLM_JSON[path]
    if path == "/rerank":  # the best first: the documents in reverse
        docs = body["documents"]
        results = [
            {"index": i, "document": {"text": str(d)}, "relevance_score": 0.9 if i else 0.1}
            for i, d in reversed(list(enumerate(docs)))
        ]
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return {"id": "rerank-1", "model": "m", "usage": usage, "results": results}
    if path == "/score":
        pairs = len(body["text_2"]) if isinstance(body["text_2"], list) else 1
        data = [{"index": i, "object": "score", "score": 0.5 / (i + 1)} for i in range(pairs)]
        return {"id": "score-1", "object": "list", "model": "m", "data": data, "usage": USAGE}
    return openai_answer(path, body)


# -- OVMS ------------------------------------------------------------------------------------------

OVMS_ERROR = {"error": "boom"}
_OVMS_V1_METADATA = {
    "modelSpec": {"name": "m", "signatureName": "", "version": "1"},
    "metadata": {"signature_def": {"signatureDef": {"serving_default": {}}}},
}
_OVMS_V1_STATUS = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}},
        {"version": 2, "state": "LOADING", "status": {"error_code": 3, "error_message": ""}},
    ]
}
# fmt: off
_OVMS_V2_METADATA = {
    "name": "m", "versions": ["1"], "platform": "OpenVINO",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}],
    "rt_info": {"model_info": {"version": "1"}},
}
# fmt: on
# fmt: off
_OVMS_COMPLETIONS = {
    "choices": [
        {"finish_reason": "stop", "index": 1, "text": "b"},
        {"finish_reason": "length", "index": 0, "text": "a"},
    ],
    "model": "m", "object": "text_completion", "usage": USAGE,
}
# fmt: on


def ovms_answer(path: str, body: Any) -> Any:
    if body is None and path.endswith(":predict"):  # the status of a model named "m:predict"
        path = path.removesuffix(":predict")
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
        return _OVMS_V1_METADATA
    if path.startswith("/v1/models/"):
        return _OVMS_V1_STATUS
    if path.startswith("/v2/models/") and not path.endswith("/ready"):
        return _OVMS_V2_METADATA
    if path == "/v2":
        return {"name": "OpenVINO Model Server", "version": "2026.2.0", "extensions": ["x"]}
    if path == "/v3/completions":
        return _OVMS_COMPLETIONS
    if path == "/v3/rerank":  # the best first, documents as text and as objects
        docs = body["documents"]
        results = [
            {
                "index": i,
                "relevance_score": 0.9 if i else 0.1,
                "document": str(d) if i else {"text": str(d)},
            }
            for i, d in reversed(list(enumerate(docs)))
        ]
        return {"results": results}
    if path.startswith("/v3/"):
        return openai_answer(path, body)
    return {}


# -- LLVM ------------------------------------------------------------------------------------------

LLVM_ERROR = {"error": {"message": "boom", "type": "server_error", "code": 500}}
# fmt: off
LLVM_MODEL = {"id": "m", "name": "m", "version": "1", "status": "loaded", "optimization": "speed", "max_batch": 8}
# fmt: on
LLVM_ALONE = [1, 2]  # the output of an infer sent alone


def llvm_answer(path: str, body: Any) -> Any:
    metrics = {"latency_ms": 1.5, "batch_size": 1, "gpu": "x"}
    if path.endswith("/batch_infer"):
        return {
            "model": "m",
            "results": [{"output": {"echo": v}, "metrics": metrics} for v in body["inputs"]],
        }
    if path.endswith("/infer"):
        return {"model": "m", "output": LLVM_ALONE, "metrics": metrics}
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


def chunks(path: str) -> Stream:
    """TGI's tokens, or OpenAI-compatible chunks."""
    return "sse", plain(TGI_STREAM if path == "/generate_stream" else CHAT_CHUNKS), {}


def events(framing: str, stream: list[Event]) -> Callable[[str], Stream]:
    """One stream for every path."""
    return lambda path: (framing, stream, {})


def serve(answer: Answer, streams: Callable[[str], Stream] = chunks) -> Reply:
    """A backend's reply to any request: the JSON its route answers (None: an empty body), or
    for a stream request the events ``streams`` gives for the path."""

    def reply(request: Request) -> MockResponse:
        path = URL(request.url).raw_path  # a %-quoted '/' or ':' in a name routes nowhere
        if request.stream:
            framing, stream, headers = streams(path)
            return MockResponse(200, content=stream_bytes(framing, stream), headers=headers)
        value = answer(path, request.json())
        headers = {"x-request-id": "srv-1"}
        if value is None:
            return MockResponse(200, headers=headers)
        return MockResponse(200, json=value, headers=headers)

    return reply
