"""Property tests for Claude, Gemini, Groq, Ollama and OPEA: a hostile server gets the caller a
typed APIError (with its request ID) or the documented result, never an untyped exception and
never a hang, and streams keep their lines bounded.

The hostile answers are made from valid ones (as the fakes in ``asyncllm.testing.fakes`` send them):
every single subtree deleted or given the wrong type, in turn; then, at random, several such
changes at once, deep nesting, huge strings and numbers, truncated or non-UTF-8 bytes; for
streams, single events mutated, dropped or repeated and garbage lines put in between.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncllm
from asyncllm._constants import BODY_EXCERPT_CHARS
from asyncllm.backends.groq import GroqChatResponse
from asyncllm.backends.ollama import (
    GenerateChunk,
    GenerateResponse,
    OllamaChatChunk,
    OllamaChatResponse,
    PullProgress,
    RunningModel,
    ShowResponse,
)
from asyncllm.testing import MockResponse, MockTransport
from tests.fuzz.harness import opea_or_skip

_opea = opea_or_skip()
OPEA = _opea.OPEA
GuardrailResult, HealthResult = _opea.GuardrailResult, _opea.HealthResult
IngestResult, RerankResult = _opea.IngestResult, _opea.RerankResult
RetrievalResult = _opea.RetrievalResult

URL = "http://mock.invalid"
USER = [{"role": "user", "content": "hi"}]
MAX_LINE = 4096
MAX_RESPONSE = 64 * 1024
# Far longer than any call here takes; reaching it means the client hung on a hostile answer.
HANG = 10.0

Event = tuple[str | None, Any]  # (SSE event name, payload: JSON, or bytes sent as they are)

# -- valid answers, as the fakes send them -----------------------------------------------------

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
CLAUDE_MODELS = {
    "data": [
        {
            "id": "claude-x",
            "type": "model",
            "display_name": "Claude X",
            "created_at": "2025-02-19T00:00:00Z",
        }
    ],
    "has_more": False,
    "first_id": "claude-x",
    "last_id": "claude-x",
}
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
GEMINI_MODELS = {
    "models": [
        {
            "name": "models/gemini-x",
            "version": "001",
            "displayName": "Gemini X",
            "inputTokenLimit": 32768,
            "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
    ],
    "nextPageToken": "page-2",
}
GEMINI_ERROR = {
    "error": {
        "code": 429,
        "message": "Resource has been exhausted",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
        ],
    }
}
_GEMINI_BASE = {"modelVersion": "gemini-x", "responseId": "resp-1"}
# fmt: off
GEMINI_EVENTS: list[Event] = [
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}], **_GEMINI_BASE}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "!", "thought": False}]}, "index": 0}], **_GEMINI_BASE}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": [1]}}}]}, "index": 0}], **_GEMINI_BASE}),
    (None, {"candidates": [{"finishReason": "STOP", "index": 0}], "usageMetadata": GEMINI_ANSWER["usageMetadata"], **_GEMINI_BASE}),
]
# fmt: on

OPENAI_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
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
                        "function": {"name": "f", "arguments": '{"a": 1}'},
                    }
                ],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
OPENAI_EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
    "model": "m",
    "usage": {"prompt_tokens": 1, "total_tokens": 1},
}
OPENAI_MODELS = {
    "object": "list",
    "data": [{"id": "llama", "object": "model", "created": 1, "owned_by": "Meta"}],
}
OPENAI_ERROR = {
    "error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}
}


def _openai_chunk(delta: Any, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [choice],
    }


_TOOL_DELTA = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
_USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
OPENAI_EVENTS: list[Event] = [
    (None, _openai_chunk({"role": "assistant", "content": ""})),
    (None, _openai_chunk({"content": "Hi"})),
    (None, _openai_chunk({"tool_calls": [_TOOL_DELTA]})),
    (None, _openai_chunk({}, "stop")),
    (None, {"id": "chatcmpl-1", "choices": [], "x_groq": {"id": "req_1", "usage": _USAGE}}),
    (None, b"[DONE]"),
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

_OLLAMA_STATS = {
    "total_duration": 5_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_count": 3,
    "prompt_eval_duration": 300_000,
    "eval_count": 2,
    "eval_duration": 400_000,
}
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
OLLAMA_EMBED = {
    "model": "all-minilm",
    "embeddings": [[0.1, 0.2]],
    "total_duration": 1_000_000,
    "load_duration": 1_000,
    "prompt_eval_count": 2,
}
_OLLAMA_DETAILS = {"format": "gguf", "family": "llama", "families": ["llama"]}
_OLLAMA_ENTRY = {
    "name": "llama3:latest",
    "model": "llama3:latest",
    "modified_at": "2025-10-03T23:34:03.409490317-07:00",
    "size": 1_000_000,
    "digest": "sha256:abc",
    "details": _OLLAMA_DETAILS,
}
OLLAMA_TAGS = {"models": [_OLLAMA_ENTRY]}
OLLAMA_PS = {
    "models": [
        {
            **_OLLAMA_ENTRY,
            "expires_at": "2025-10-04T00:00:00Z",
            "size_vram": 1_000_000,
            "context_length": 4096,
        }
    ]
}
OLLAMA_SHOW = {
    "parameters": "temperature 0.7\nnum_ctx 4096",
    "license": "licence",
    "modified_at": "2025-10-03T23:34:03Z",
    "details": _OLLAMA_DETAILS,
    "template": "{{ .Prompt }}",
    "capabilities": ["completion", "tools"],
    "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
}
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

# -- the calls under test ----------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Call:
    """One public call that reads a response: how to make the client and call it, what a valid
    answer looks like, and what the call returns (``many``: a list of those)."""

    name: str
    make: Callable[[MockTransport], Any]
    invoke: Callable[[Any], Any]
    returns: type | None
    valid: Any = None  # the whole valid body: JSON, or bytes sent as they are
    events: tuple[Event, ...] = ()  # a valid stream, event by event
    framing: str = "sse"  # of the events: "sse" or "ndjson"
    error: Any = None  # a valid error body of the backend
    headers: Mapping[str, str] = field(default_factory=dict)
    many: bool = False
    stream: bool = False  # a stream call, even when answered with one JSON body

    def __repr__(self) -> str:
        return f"<{self.name}>"

    @property
    def streams(self) -> bool:
        return self.stream or bool(self.events)

    def check(self, result: Any) -> None:
        if self.returns is None:
            assert result is None
        elif self.many:
            assert isinstance(result, list)
            assert all(isinstance(r, self.returns) for r in result)
        else:
            assert isinstance(result, self.returns), type(result)


def _options() -> dict[str, Any]:
    return {
        "max_retries": 0,
        "max_response_bytes": MAX_RESPONSE,
        "max_line_bytes": MAX_LINE,
        "dispatcher": asyncllm.Dispatcher(),
    }


def claude(t: MockTransport) -> asyncllm.Claude:
    return asyncllm.Claude(api_key="k", base_url=URL, transport=t, **_options())


def gemini(t: MockTransport) -> asyncllm.Gemini:
    return asyncllm.Gemini(api_key="k", base_url=URL + "/v1beta", transport=t, **_options())


def groq(t: MockTransport) -> asyncllm.Groq:
    return asyncllm.Groq(api_key="k", base_url=URL + "/openai/v1", transport=t, **_options())


def ollama(t: MockTransport) -> asyncllm.Ollama:
    return asyncllm.Ollama(base_url=URL + ":11434", transport=t, **_options())


def opea(t: MockTransport) -> OPEA:
    services = ("llm", "embedding", "retriever", "reranking", "guardrails", "dataprep")
    return OPEA(base_url=URL, **{f"{s}_url": URL for s in services}, transport=t, **_options())


SSE = {"Content-Type": "text/event-stream"}
JSON = {"Content-Type": "application/json"}
FILE = [("a.txt", b"some text")]
LINK = ["https://example.invalid/a"]
ChatResponse, ChatChunk = asyncllm.ChatResponse, asyncllm.ChatChunk
Embedding, ModelInfo = asyncllm.EmbeddingResponse, asyncllm.ModelInfo

# fmt: off
CALLS = [
    Call("claude.chat", claude, lambda c: c.chat(USER, model="m"), ChatResponse, CLAUDE_MESSAGE, error=CLAUDE_ERROR),
    Call("claude.count_tokens", claude, lambda c: c.count_tokens(USER, model="m"), int, {"input_tokens": 12}, error=CLAUDE_ERROR),
    Call("claude.models", claude, lambda c: c.models(), ModelInfo, CLAUDE_MODELS, error=CLAUDE_ERROR, many=True),
    Call("claude.stream_chat", claude, lambda c: c.stream_chat(USER, model="m"), ChatChunk, events=tuple(CLAUDE_EVENTS), error=CLAUDE_ERROR),

    Call("gemini.chat", gemini, lambda c: c.chat(USER, model="g"), ChatResponse, GEMINI_ANSWER, error=GEMINI_ERROR),
    Call("gemini.embed", gemini, lambda c: c.embed("x", model="e"), Embedding, {"embedding": {"values": [0.1, 0.2]}}, error=GEMINI_ERROR),
    Call("gemini.embed_batch", gemini, lambda c: c.embed(["x", "y"], model="e"), Embedding, {"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}, error=GEMINI_ERROR),
    Call("gemini.count_tokens", gemini, lambda c: c.count_tokens(USER, model="g"), int, {"totalTokens": 7}, error=GEMINI_ERROR),
    Call("gemini.models", gemini, lambda c: c.models(), ModelInfo, GEMINI_MODELS, error=GEMINI_ERROR, many=True),
    Call("gemini.stream_chat", gemini, lambda c: c.stream_chat(USER, model="g"), ChatChunk, events=tuple(GEMINI_EVENTS), error=GEMINI_ERROR),

    Call("groq.chat", groq, lambda c: c.chat(USER, model="m"), GroqChatResponse, OPENAI_CHAT, error=OPENAI_ERROR, headers=GROQ_HEADERS),
    Call("groq.embed", groq, lambda c: c.embed("x", model="m"), Embedding, OPENAI_EMBEDDINGS, error=OPENAI_ERROR, headers=GROQ_HEADERS),
    Call("groq.models", groq, lambda c: c.models(), ModelInfo, OPENAI_MODELS, error=OPENAI_ERROR, headers=GROQ_HEADERS, many=True),
    Call("groq.stream_chat", groq, lambda c: c.stream_chat(USER, model="m"), ChatChunk, events=tuple(OPENAI_EVENTS), error=OPENAI_ERROR, headers=GROQ_HEADERS),

    Call("ollama.chat", ollama, lambda c: c.chat(USER, model="llama3"), OllamaChatResponse, OLLAMA_CHAT, error=OLLAMA_ERROR),
    Call("ollama.generate", ollama, lambda c: c.generate("hi", model="llama3"), GenerateResponse, OLLAMA_GENERATE, error=OLLAMA_ERROR),
    Call("ollama.embed", ollama, lambda c: c.embed("x", model="e"), Embedding, OLLAMA_EMBED, error=OLLAMA_ERROR),
    Call("ollama.models", ollama, lambda c: c.models(), ModelInfo, OLLAMA_TAGS, error=OLLAMA_ERROR, many=True),
    Call("ollama.show", ollama, lambda c: c.show("llama3"), ShowResponse, OLLAMA_SHOW, error=OLLAMA_ERROR),
    Call("ollama.ps", ollama, lambda c: c.ps(), RunningModel, OLLAMA_PS, error=OLLAMA_ERROR, many=True),
    Call("ollama.version", ollama, lambda c: c.version(), str, {"version": "0.12.0"}, error=OLLAMA_ERROR),
    Call("ollama.pull", ollama, lambda c: c.pull("llama3", stream=False), PullProgress, {"status": "success"}, error=OLLAMA_ERROR),
    Call("ollama.delete", ollama, lambda c: c.delete("llama3"), None, b"", error=OLLAMA_ERROR),
    Call("ollama.copy", ollama, lambda c: c.copy("llama3", "copy"), None, b"", error=OLLAMA_ERROR),
    Call("ollama.stream_chat", ollama, lambda c: c.stream_chat(USER, model="llama3"), OllamaChatChunk, events=tuple(OLLAMA_CHAT_LINES), framing="ndjson", error=OLLAMA_ERROR),
    Call("ollama.stream_generate", ollama, lambda c: c.stream_generate("hi", model="llama3"), GenerateChunk, events=tuple(OLLAMA_GENERATE_LINES), framing="ndjson", error=OLLAMA_ERROR),
    Call("ollama.stream_pull", ollama, lambda c: c.pull("llama3"), PullProgress, events=tuple(OLLAMA_PULL_LINES), framing="ndjson", error=OLLAMA_ERROR),

    Call("opea.chatqna", opea, lambda c: c.chatqna("q"), ChatResponse, OPENAI_CHAT, error=OPEA_ERROR),
    Call("opea.codegen", opea, lambda c: c.codegen("q"), ChatResponse, OPENAI_CHAT, error=OPEA_ERROR),
    Call("opea.docsum", opea, lambda c: c.docsum("text"), ChatResponse, OPENAI_CHAT, error=OPEA_ERROR),
    Call("opea.docsum_files", opea, lambda c: c.docsum(files=FILE), ChatResponse, OPENAI_CHAT, error=OPEA_ERROR),
    Call("opea.faqgen", opea, lambda c: c.faqgen("text"), ChatResponse, OPENAI_CHAT, error=OPEA_ERROR),
    Call("opea.stream_chatqna", opea, lambda c: c.stream_chatqna("q"), ChatChunk, events=tuple(OPEA_BYTES_EVENTS), error=OPEA_ERROR, headers=SSE),
    Call("opea.stream_chatqna_json", opea, lambda c: c.stream_chatqna("q"), ChatChunk, OPENAI_CHAT, error=OPEA_ERROR, headers=JSON, stream=True),
    Call("opea.stream_codegen", opea, lambda c: c.stream_codegen("q"), ChatChunk, events=tuple(OPEA_CODEGEN_EVENTS), error=OPEA_ERROR, headers=SSE),
    Call("opea.stream_docsum", opea, lambda c: c.stream_docsum("text"), ChatChunk, events=tuple(OPEA_BYTES_EVENTS), error=OPEA_ERROR, headers=SSE),
    Call("opea.stream_faqgen", opea, lambda c: c.stream_faqgen("text", files=FILE), ChatChunk, events=tuple(OPEA_BYTES_EVENTS), error=OPEA_ERROR, headers=SSE),
    Call("opea.chat", opea, lambda c: c.chat(USER), ChatResponse, OPENAI_CHAT, error=OPEA_ERROR),
    Call("opea.stream_chat", opea, lambda c: c.stream_chat(USER), ChatChunk, events=tuple(OPENAI_EVENTS), error=OPEA_ERROR),
    Call("opea.embed", opea, lambda c: c.embed("x"), Embedding, OPENAI_EMBEDDINGS, error=OPEA_ERROR),
    Call("opea.retrieve", opea, lambda c: c.retrieve("q", [0.1, 0.2]), RetrievalResult, OPEA_RETRIEVAL, error=OPEA_ERROR),
    Call("opea.rerank", opea, lambda c: c.rerank("q", ["first", "second"]), RerankResult, OPEA_RERANKED, error=OPEA_ERROR),
    Call("opea.guardrails", opea, lambda c: c.guardrails("text"), GuardrailResult, OPEA_GUARDED, error=OPEA_ERROR),
    Call("opea.ingest", opea, lambda c: c.ingest(FILE, LINK), IngestResult, OPEA_INGESTED, error=OPEA_ERROR),
    Call("opea.health", opea, lambda c: c.health("retriever"), HealthResult, OPEA_HEALTH, error=OPEA_ERROR),
]
# fmt: on
JSON_CALLS = [c for c in CALLS if not c.events]
STREAM_CALLS = [c for c in CALLS if c.events]


def _ids(calls: list[Call]) -> list[str]:
    return [c.name for c in calls]


# -- editing JSON ------------------------------------------------------------------------------

Path = tuple[Any, ...]


def _paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
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


def _frame(framing: str, name: str | None, data: bytes) -> bytes:
    if framing == "ndjson":
        return data + b"\n"
    head = b"" if name is None else f"event: {name}\n".encode()
    return head + b"data: " + data + b"\n\n"


def _stream(call: Call, events: list[Event]) -> bytes:
    return b"".join(_frame(call.framing, name, _body(payload)) for name, payload in events)


# -- every single fault, in turn -----------------------------------------------------------------

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


def _fault_cases(call: Call) -> Iterator[tuple[int, list[bytes]]]:
    """(status, body chunks) for every single fault of the call's valid answer, of its stream's
    events one at a time, and of the backend's error body (as a status error, and mid-stream)."""
    statuses = [400, 401, 404, 429, 500, 503]
    for i, body in enumerate(single_faults(call.error)):
        yield statuses[i % len(statuses)], [_dumps(body)]
    if call.events:
        events = list(call.events)
        for i, (name, payload) in enumerate(events):
            if isinstance(payload, bytes):
                continue
            for fault in single_faults(payload):
                yield 200, [_stream(call, [*events[:i], (name, fault), *events[i + 1 :]])]
        for fault in single_faults(call.error):
            yield 200, [_stream(call, [events[0], ("error", fault), *events[1:]])]
    elif not isinstance(call.valid, bytes):
        for fault in single_faults(call.valid):
            yield 200, [_dumps(fault)]


# -- at random: several faults, nesting, huge values, broken bytes -------------------------------

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
        return st.binary(max_size=100) | mutated(OLLAMA_ERROR)
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
        _frame(call.framing, name, draw(_event_data(payload, i in mutate)))
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
RATE_HEADERS = [h for h in GROQ_HEADERS if h.startswith("x-ratelimit")]
HEADERS = st.dictionaries(
    st.sampled_from(["retry-after", "retry-after-ms", "x-should-retry", *RATE_HEADERS]),
    HEADER_VALUES,
    max_size=3,
)

# -- running a call against one answer -----------------------------------------------------------


async def _call(call: Call, status: int, chunks: list[bytes], headers: Mapping[str, str]) -> Any:
    """The call's result, or the APIError it raised; anything else fails the test. An error
    status must come back as the APIStatusError of that status."""

    def answer(request: Any) -> MockResponse:
        return MockResponse(status, chunks=chunks, headers=headers)

    client = call.make(MockTransport(answer))

    async def go() -> Any:
        if not call.streams:
            result = await call.invoke(client)
            call.check(result)
            return result
        async with call.invoke(client) as stream:
            items = [item async for item in stream]
        assert all(isinstance(item, call.returns) for item in items)  # type: ignore[arg-type]
        return items

    try:
        result = await asyncio.wait_for(go(), HANG)
    except asyncllm.APIError as exc:
        assert exc.request_id is not None, f"{type(exc).__name__} has no request_id: {exc}"
        assert exc.body is None or len(exc.body) <= BODY_EXCERPT_CHARS + 1
        result = exc
    finally:
        await client.aclose()
    if status >= 400:
        assert isinstance(result, asyncllm.APIStatusError), result
        assert result.status_code == status
    return result


def run(call: Call, status: int, chunks: list[bytes], headers: Mapping[str, str] | None) -> Any:
    return asyncio.run(_call(call, status, chunks, call.headers if headers is None else headers))


# 30 examples a call: with the exhaustive single-fault sweep, the file runs in about 30 s.
FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("call", CALLS, ids=_ids(CALLS))
def test_valid_answers_give_the_documented_result(call: Call) -> None:
    """The baseline the faults start from: unchanged, every answer is read without error."""
    chunks = [_stream(call, list(call.events)) if call.events else _body(call.valid)]
    result = run(call, 200, chunks, None)
    assert not isinstance(result, Exception), result
    if call.streams:
        assert result


@pytest.mark.parametrize("call", CALLS, ids=_ids(CALLS))
def test_every_single_fault_gives_a_typed_error(call: Call) -> None:
    async def sweep() -> int:
        count = 0
        for status, chunks in _fault_cases(call):
            try:
                await _call(call, status, chunks, call.headers)
            except Exception as exc:
                raise AssertionError(f"{status}: {b''.join(chunks)[:1000]!r}") from exc
            count += 1
        return count

    assert asyncio.run(sweep()) > len(WRONG)


@pytest.mark.parametrize("call", JSON_CALLS, ids=_ids(JSON_CALLS))
@FUZZ
@given(data=st.data())
def test_mutated_answers_give_typed_errors(call: Call, data: st.DataObject) -> None:
    run(call, 200, [data.draw(bodies(call.valid), label="body")], None)


@pytest.mark.parametrize("call", CALLS, ids=_ids(CALLS))
@FUZZ
@given(data=st.data(), status=st.sampled_from([200, 400, 401, 404, 429, 500, 503]))
def test_mutated_error_answers_give_typed_status_errors(
    call: Call, data: st.DataObject, status: int
) -> None:
    source = call.error if status >= 400 else call.valid
    body = data.draw(st.binary(max_size=50) if source is None else bodies(source), label="body")
    headers = {**call.headers, **data.draw(HEADERS, label="headers")}
    run(call, status, [body[:7], body[7:]], headers)


@pytest.mark.parametrize("call", STREAM_CALLS, ids=_ids(STREAM_CALLS))
@FUZZ
@given(data=st.data())
def test_mutated_streams_give_typed_errors_with_bounded_lines(
    call: Call, data: st.DataObject
) -> None:
    run(call, 200, data.draw(streams(call), label="chunks"), None)


@pytest.mark.parametrize("call", STREAM_CALLS, ids=_ids(STREAM_CALLS))
def test_an_endless_line_is_refused(call: Call) -> None:
    endless = [b"data: " if call.framing == "sse" else b"{", *[b"y" * 1024] * 64]
    result = run(call, 200, endless, None)
    assert isinstance(result, asyncllm.ResponseValidationError), result
    assert "limit" in result.message


# -- the faults these tests found, as they were found ---------------------------------------------


def _one(call_name: str) -> Call:
    return next(c for c in CALLS if c.name == call_name)


def test_opea_validation_error_whose_loc_is_not_a_list() -> None:
    # _detail_text iterated ``loc``: TypeError: 'bool' object is not iterable.
    body = b'{"detail": [{"loc": true}]}'
    error = run(_one("opea.docsum"), 400, [body], None)
    assert isinstance(error, asyncllm.BadRequestError)
    assert error.message == "True: "
    error = run(_one("opea.stream_chatqna"), 200, [b"data: " + body + b"\n\n"], None)
    assert isinstance(error, asyncllm.APIError)


def test_gemini_error_whose_details_are_not_a_list() -> None:
    # _rpc_details iterated ``details``: TypeError: 'int' object is not iterable.
    body = b'{"error": {"code": 400, "details": 5}}'
    error = run(_one("gemini.chat"), 400, [body], None)
    assert isinstance(error, asyncllm.BadRequestError)
    error = run(_one("gemini.stream_chat"), 200, [b"data: " + body + b"\n\n"], None)
    assert isinstance(error, asyncllm.BadRequestError)


def test_ollama_duration_beyond_int64() -> None:
    # Usage turned nanoseconds into seconds: OverflowError: int too large to convert to float.
    body = b'{"response": "", "total_duration": 1' + b"0" * 309 + b"}"
    error = run(_one("ollama.generate"), 200, [body], None)
    assert isinstance(error, asyncllm.ResponseValidationError)
    error = run(_one("ollama.stream_generate"), 200, [body[:-1] + b', "done": true}\n'], None)
    assert isinstance(error, asyncllm.ResponseValidationError)


def test_claude_stream_block_index_that_is_not_an_int() -> None:
    # int(event["index"]) outside JSON's ints: OverflowError: cannot convert float infinity.
    event = b'{"type": "content_block_start", "index": Infinity, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}'
    error = run(_one("claude.stream_chat"), 200, [b"data: " + event + b"\n\n"], None)
    assert isinstance(error, asyncllm.ResponseValidationError)


def test_gemini_streamed_call_whose_name_is_a_lone_surrogate() -> None:
    # The synthetic call id hashed the name as UTF-8: UnicodeEncodeError, outside any parse.
    event = b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "\\ud800"}}]}, "finishReason": "STOP"}]}'
    chunks = run(_one("gemini.stream_chat"), 200, [b"data: " + event + b"\n\n"], None)
    assert [c.name for chunk in chunks for c in chunk.tool_calls] == ["\ud800"]
    assert chunks[0].tool_calls[0].id.startswith("gcall_0_")


def test_claude_models_that_never_end_name_the_request() -> None:
    # The refusal was raised outside the dispatcher, so it carried no request_id.
    body = b'{"data": [{"id": "a"}], "has_more": true, "last_id": "a"}'
    error = run(_one("claude.models"), 200, [body], None)
    assert isinstance(error, asyncllm.ResponseValidationError)
    assert "has_more" in error.message


def test_retry_after_date_beyond_year_9999() -> None:
    headers = {"retry-after": "Mon, 01 Jan 99999 00:00:00 GMT"}
    run(_one("groq.chat"), 200, [_dumps(OPENAI_CHAT)], headers)
