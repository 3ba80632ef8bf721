"""The fuzzing registry: one ``Backend`` entry per backend, with the argument tables of its
public methods, its replies and request checks, its settings to fuzz, and the calls whose
responses are fuzzed. Adding a backend to the fuzzing is adding its entry to ``BACKENDS``.

Two kinds of argument table: written out (``pos``/``req``/``opt``: good values, and bad ones
chosen per parameter, with the call options added from each method's ``**options`` TypedDict by
``declared``), or read from the signature (``from_signature``: good values by parameter name,
and bad ones that poison a good value)."""

from __future__ import annotations

import asyncio
import copy
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

import asyncllm
from asyncllm._http._transport import Request
from asyncllm.backends import llvm, ovms, tei, tgi, vllm
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
from asyncllm.testing.fakes.gemini import _THINKING_LEVELS as GEMINI_THINKING_LEVELS
from tests import test_ovms, test_tei, test_tgi
from tests.fuzz import answers as a
from tests.fuzz.harness import (
    HOST,
    URL,
    Arg,
    Backend,
    Call,
    Method,
    Probe,
    always,
    expect_typed,
    floats,
    is_a,
    is_none,
    keywords,
    list_of,
    opea_or_skip,
    opt,
    pos,
    req,
    rows_of,
    segments,
)
from tests.fuzz.values import (
    ANSWER_SCHEMA,
    GOOD_MESSAGES,
    GOOD_TOOLS,
    OLLAMA_HOSTS,
    USER,
    VALID,
    Answer,
    Thing,
    bad_extra_body,
    bad_headers,
    bad_ints,
    bad_messages,
    bad_numbers,
    bad_query,
    bad_response_formats,
    bad_tool_choices,
    bad_tools,
    flat_junk,
    float_rows,
    good_messages,
    hostile,
    json_object,
    json_ok,
    junk,
    model_names,
    names,
    nonempty,
    numpy_arrays,
    part,
    path_hostile,
    poisoned,
    priorities,
    scalars,
    stops,
    tensor_names,
    tensorish,
    text,
    text_lists,
    texts,
    times,
    url_hostile,
    urls,
    visible,
)
from tests.test_claude import LEGACY_SAMPLING
from tests.test_claude import check as claude_check
from tests.test_gemini import check_against_proto
from tests.test_ollama import SPEC as OLLAMA_SPEC
from tests.test_ollama import _validator as ollama_schema_validator
from tests.test_openai import validator as openai_validator

_opea = opea_or_skip()
OPEA = _opea.OPEA

# -- the call options, and the parameters many methods share ----------------------------------------

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
OPTION_ARGS = {
    "priority": COMMON[0],
    "timeout": COMMON[1],
    "deadline": COMMON[2],
    "max_retries": opt("max_retries", [0, 1, 3], bad_ints),
    "extra_headers": EXTRA[0],
    "extra_query": opt("extra_query", [None, {}, {"tenant": "a"}], bad_query),
    "extra_body": EXTRA[1],
}


def declared(cls: type, method: str, params: list[Arg], **fields: Any) -> Method:
    """The method, with ``params`` and an Arg for each call option its **options TypedDict
    declares that ``params`` leaves out. Every key of that TypedDict must then have an Arg."""
    kw = keywords(cls, method)
    given = {p.name for p in params}
    out = [*params, *(OPTION_ARGS[k] for k in kw.options if k in OPTION_ARGS and k not in given)]
    missing = set(kw.all) - {p.name for p in out}
    assert not missing, f"{cls.__name__}.{method}: no Arg for {sorted(missing)}"
    # And no Arg for a keyword the method does not take (that is a TypeError, tested apart).
    stray = {p.name for p in out} - set(kw.all)
    assert not stray, f"{cls.__name__}.{method} does not take {sorted(stray)}"
    return Method(method, tuple(out), **fields)


def tables(
    cls: type,
    table: Mapping[str, list[Arg]],
    fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Method, ...]:
    """``declared`` for each method of ``table``, with its ``Method`` fields from ``fields``."""
    return tuple(
        declared(cls, name, params, **(fields or {}).get(name, {}))
        for name, params in table.items()
    )


def from_signature(
    cls: type,
    method: str,
    valid: Mapping[str, st.SearchStrategy[Any]] | None = None,
    client: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Method:
    """Every parameter of the signature and of the **options TypedDict, each given (by keyword)
    with a value of the right shape: from ``valid``, or else ``values.VALID`` by name; bad, a
    hostile value or a good one with one item made hostile."""
    kw = keywords(cls, method)
    table = {**VALID, **(valid or {})}
    args = tuple(Arg(n, table[n], poisoned, required=n in kw.required) for n in kw.all)
    return Method(method, args, client=client or {}, **fields)


model = req("model", "m", names | junk)
temperature = opt("temperature", st.floats(0, 1), bad_numbers)
top_p = opt("top_p", st.floats(0, 1), bad_numbers)
top_k = opt("top_k", st.integers(1, 50), bad_ints)
max_tokens = opt("max_tokens", st.integers(1, 5000), bad_ints)
seed = opt("seed", st.integers(0, 2**31), bad_ints)
stop = opt("stop", [None, "x", ["a", "b"]], stops)
tools_arg = opt("tools", st.sampled_from([None, *GOOD_TOOLS]), bad_tools)
dimensions = opt("dimensions", st.integers(1, 3000), bad_ints)
user = opt("user", [None, "u-1"], texts | junk)
embed_inputs = pos(
    "inputs", st.sampled_from(["x", ["a", "b"]]), st.lists(texts | flat_junk, max_size=3) | junk
)


def _a_string(value: Any) -> bool:
    """A vendor's name for a tier goes out as given (vendors add tiers over time)."""
    return isinstance(value, str)


# The ModernParams, on every chat backend (refused where its API has no counterpart); Claude
# declares its own metadata (user_id only).
MODERN = [
    opt("max_completion_tokens", st.integers(1, 5000), bad_ints),
    opt("parallel_tool_calls", [None, True, False], junk),
    opt("logprobs", [None, True, False], junk),
    opt("top_logprobs", st.integers(0, 20), bad_ints),
    opt("service_tier", [None, "auto"], texts | junk, raw=_a_string),
    opt("store", [None, True, False], junk),
    opt("prompt_cache_key", [None, "k-1"], texts | junk),
]
metadata = opt("metadata", [None, {}, {"user_id": "u-1"}], junk)
# Keys as text: a SecretStr, or a key that is no text at all, is tried in test_input's SHARED.
api_key = opt("api_key", ["k", "sk-test-0123"], texts)
default_headers = opt("default_headers", [None, {"x-team": "a"}], bad_headers)


def regex_path(pattern: str) -> Callable[[str, Mapping[str, Any], Request], None]:
    compiled = re.compile(pattern)

    def check(method: str, kwargs: Mapping[str, Any], request: Request) -> None:
        path = urlsplit(request.url).path
        assert compiled.fullmatch(path), path

    return check


def any_path(method: str, kwargs: Mapping[str, Any], request: Request) -> None:
    segments(request.url)


def by_path(lookup: Callable[[str], Any]) -> Callable[[str, str, Any], None]:
    """A schema check from a validator per URL path (None: no schema for that path)."""

    def check(method: str, path: str, body: Any) -> None:
        validator = lookup(path)
        if validator is not None:
            errors = [e.message for e in validator.iter_errors(body)]
            assert errors == [], errors

    return check


def _strings_only(value: Any) -> bool:
    """Safety settings and task types go out as given (Gemini adds new values over time)."""
    return isinstance(value, (str, list, tuple))


SSE_CHUNKS = tuple((None, e) for e in a.CHAT_CHUNKS)  # a plan stream's events: JSON only
ChatResponse, ChatChunk = asyncllm.ChatResponse, asyncllm.ChatChunk
Embedding, ModelInfo = asyncllm.EmbeddingResponse, asyncllm.ModelInfo
FILE = [("a.txt", b"some text")]
LINK = ["https://example.invalid/a"]


def _embeddings(r: Any) -> bool:
    return isinstance(r, Embedding) and floats(r.vectors)


# -- Claude ----------------------------------------------------------------------------------------


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
    opt("response_format", [None, Answer, {"type": "object", "properties": {}}], bad_response_formats),
    opt("thinking", [None, {"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}, {"type": "adaptive"}], junk),
    opt("effort", [None, "low", "high"], texts | junk),
    *MODERN,
    *CLAUDE_BODY,
]  # fmt: skip
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


CLAUDE = Backend(
    name="claude",
    cls=asyncllm.Claude,
    settings={"api_key": "k", "base_url": URL},
    answer=a.claude_answer,
    streams=a.events("sse", a.CLAUDE_EVENTS),
    path=regex_path(r"/v1/(messages|messages/count_tokens|models)"),
    schema=claude_schema,
    methods=tables(asyncllm.Claude, {
        "chat": CLAUDE_CHAT,
        "stream_chat": CLAUDE_CHAT,
        "count_tokens": [pos("messages", good_messages, bad_messages), model, *CLAUDE_BODY],
        "models": COMMON,
    }),
    probe=Probe(
        (
            api_key,
            default_headers,
            opt("betas", [None, "b-1", ["b-1", "b-2"], "b-1, b-2"], texts | junk),
            opt("anthropic_version", ["2023-06-01"], texts | junk),
            opt("max_tokens", st.integers(1, 9000), bad_ints),
        ),
        "chat", (USER,), {"model": "m"}, fixed={"base_url": URL},
    ),
    calls=(
        Call("chat", lambda c: c.chat(USER, model="m"), is_a(ChatResponse), valid=a.CLAUDE_MESSAGE),
        Call("count_tokens", lambda c: c.count_tokens(USER, model="m"), is_a(int), valid={"input_tokens": 12}),
        Call("models", lambda c: c.models(), list_of(ModelInfo), valid=a.CLAUDE_MODELS),
        Call("stream_chat", lambda c: c.stream_chat(USER, model="m"), is_a(ChatChunk), events=tuple(a.CLAUDE_EVENTS)),
    ),
    error=a.CLAUDE_ERROR,
    damage="tree",
)  # fmt: skip

# -- Gemini ----------------------------------------------------------------------------------------

SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
safety = st.fixed_dictionaries(
    {"category": texts | flat_junk, "threshold": texts | flat_junk},
    optional={"method": texts},
)
gemini_model = req(
    "model", st.sampled_from(["gemini-x", "models/gemini-x", "tunedModels/t-1"]), names | junk
)


def _gemini_native_parts(messages: Any) -> bool:
    """An assistant message's ``gemini_parts`` (as Gemini answered them) go back unchanged."""
    return isinstance(messages, (list, tuple)) and any(
        isinstance(m, Mapping) and m.get("role") == "assistant" and m.get("gemini_parts")
        for m in messages
    )


gemini_messages = pos("messages", good_messages, bad_messages, raw=_gemini_native_parts)
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
    opt("include_thoughts", [None, True, False], junk),
    opt("thinking_level", [None, "low", "high"], texts | junk),
    opt("thinking_budget", [None, -1, 0, 1024], bad_ints),
    opt("safety_settings", [None, SAFETY], st.lists(safety, max_size=2) | junk, raw=_strings_only),
    opt("generation_config", [None, {"responseMimeType": "text/plain"}], junk, raw=always),
    opt("cached_content", [None, "cachedContents/c-1"], texts | junk),
    *MODERN,
    metadata,
    *EXTRA,
    *COMMON,
]  # fmt: skip
GEMINI_PATH = re.compile(
    r"/v1beta/(models|(models|tunedModels)/[A-Za-z0-9][A-Za-z0-9._-]*"
    r":(generateContent|streamGenerateContent|embedContent|batchEmbedContents|countTokens))"
)


def gemini_path(method: str, kwargs: Mapping[str, Any], request: Request) -> None:
    path = urlsplit(request.url).path
    assert GEMINI_PATH.fullmatch(path), path
    if path == "/v1beta/models":
        assert request.params is not None and request.params["pageSize"].isdigit()


def _thinking_level(body: Any) -> Any:
    """Take thinkingConfig.thinkingLevel (Gemini 3) out of ``body``: the vendored proto
    (tests/specs/gemini, googleapis f8291d2) predates it. None when it is not there."""
    config = body.get("generationConfig") if isinstance(body, dict) else None
    thinking = config.get("thinkingConfig") if isinstance(config, dict) else None
    return thinking.pop("thinkingLevel", None) if isinstance(thinking, dict) else None


def gemini_schema(method: str, path: str, body: Any) -> None:
    kind = {
        "generateContent": "GenerateContentRequest",
        "streamGenerateContent": "GenerateContentRequest",
        "embedContent": "EmbedContentRequest",
        "batchEmbedContents": "BatchEmbedContentsRequest",
        "countTokens": "CountTokensRequest",
    }[path.rsplit(":", 1)[1]]
    body = copy.deepcopy(body)
    level = _thinking_level(body)
    # The API's ThinkingLevel values, as the Gemini fake (written from the API) takes them.
    assert level is None or level in GEMINI_THINKING_LEVELS, level
    assert check_against_proto(body, kind) == []


GEMINI = Backend(
    name="gemini",
    cls=asyncllm.Gemini,
    settings={"api_key": "k", "base_url": URL + "/v1beta"},
    answer=a.gemini_answer,
    streams=a.events("sse", a.GEMINI_EVENTS),
    path=gemini_path,
    schema=gemini_schema,
    methods=tables(asyncllm.Gemini, {
        "chat": [*GEMINI_GENERATE, opt("n", st.integers(1, 4), bad_ints)],
        "stream_chat": GEMINI_GENERATE,
        "embed": [
            pos("inputs", st.sampled_from(["x", ["a", "b"], ["a"] * 150]), st.lists(texts | flat_junk, max_size=3) | junk),
            gemini_model,
            opt("task_type", [None, "RETRIEVAL_QUERY"], texts | junk, raw=_strings_only),
            opt("title", [None, "doc"], texts | junk),
            dimensions,
            EXTRA[0],
            *COMMON,
        ],
        "count_tokens": [gemini_messages, gemini_model, tools_arg, EXTRA[0], *COMMON],
        "models": [opt("page_size", st.integers(1, 1000), bad_ints), *COMMON],
    }),
    probe=Probe((api_key, default_headers), "count_tokens", (USER,), {"model": "gemini-x"}, fixed={"base_url": URL + "/v1beta"}),
    calls=(
        Call("chat", lambda c: c.chat(USER, model="g"), is_a(ChatResponse), valid=a.GEMINI_ANSWER),
        Call("embed", lambda c: c.embed("x", model="e"), is_a(Embedding), valid={"embedding": {"values": [0.1, 0.2]}}),
        Call("embed_batch", lambda c: c.embed(["x", "y"], model="e"), is_a(Embedding), valid={"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}),
        Call("count_tokens", lambda c: c.count_tokens(USER, model="g"), is_a(int), valid={"totalTokens": 7}),
        Call("models", lambda c: c.models(), list_of(ModelInfo), valid=a.GEMINI_MODELS),
        Call("stream_chat", lambda c: c.stream_chat(USER, model="g"), is_a(ChatChunk), events=tuple(a.GEMINI_EVENTS)),
    ),
    error=a.GEMINI_ERROR,
    damage="tree",
)  # fmt: skip

# -- Groq: bodies built by the shared OpenAI-compatible code, checked as strict JSON ----------------

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
    opt("reasoning_effort", [None, "low", "high"], texts | junk),
    user,
    opt("n", st.integers(1, 4), bad_ints),
    *MODERN,
    metadata,
    *EXTRA,
    *COMMON,
]
# Groq's embed inputs are lists, or empty (the shared embed's refusal of others is in SHARED).
groq_embed_inputs = pos(
    "inputs",
    st.sampled_from(["x", ["a", "b"]]),
    st.lists(texts | flat_junk, max_size=3) | st.sampled_from(["", [], ()]),
)
GROQ_CHAT_ARGS = [
    *OPENAI_CHAT_ARGS,
    opt("reasoning_format", [None, "parsed", "hidden"], texts | junk),
    opt("include_reasoning", [None, True, False], junk),
]
GROQ = Backend(
    name="groq",
    cls=asyncllm.Groq,
    settings={"api_key": "k", "base_url": URL + "/openai/v1"},
    answer=a.openai_answer,
    streams=a.events("sse", a.OPENAI_EVENTS),
    path=regex_path(r"/openai/v1/(chat/completions|embeddings|models)"),
    methods=tables(asyncllm.Groq, {
        "chat": GROQ_CHAT_ARGS,
        "stream_chat": GROQ_CHAT_ARGS,
        "embed": [groq_embed_inputs, req("model", "m", names | junk), dimensions, user, *EXTRA, *COMMON],
        "models": COMMON,
    }),
    probe=Probe(
        (api_key, default_headers, opt("model", ["m"], names | junk)),
        "chat", (USER,), fixed={"base_url": URL + "/openai/v1"},
    ),
    calls=(
        Call("chat", lambda c: c.chat(USER, model="m"), is_a(GroqChatResponse), valid=a.CHAT, headers=a.GROQ_HEADERS),
        Call("embed", lambda c: c.embed("x", model="m"), is_a(Embedding), valid=a.embeddings(1), headers=a.GROQ_HEADERS),
        Call("models", lambda c: c.models(), list_of(ModelInfo), valid=a.MODELS, headers=a.GROQ_HEADERS),
        Call("stream_chat", lambda c: c.stream_chat(USER, model="m"), is_a(ChatChunk), events=tuple(a.OPENAI_EVENTS), headers=a.GROQ_HEADERS),
    ),
    error=a.OPENAI_ERROR,
    damage="tree",
)  # fmt: skip

# -- Ollama ----------------------------------------------------------------------------------------

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
OLLAMA_GENERATION = [
    opt("format", [None, "json", {"type": "object"}, Answer], texts | junk),
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
# format constrains, response_format also parses: both at once is a ConfigurationError (tried in
# test_input.py), so the random calls give one of them at most.
OLLAMA_FORMATS = ("format", "response_format")
OLLAMA_CHAT_ARGS = [
    pos("messages", good_messages, bad_messages),
    ollama_model,
    tools_arg,
    opt(
        "response_format",
        [None, Answer, ANSWER_SCHEMA, {"type": "json_object"}],
        bad_response_formats,
    ),
    *OLLAMA_SAMPLING,
    *OLLAMA_GENERATION,
    *MODERN,
    metadata,
]
ollama_name = st.sampled_from(["llama3", "llama3:latest", "library/x:1b"])
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
def ollama_validator(name: str) -> jsonschema.Draft202012Validator:
    return ollama_schema_validator(yaml.safe_load(OLLAMA_SPEC.read_text()), name)


def ollama_schema(method: str, path: str, body: Any) -> None:
    ollama_validator(OLLAMA_SCHEMAS[path]).validate(body)


OLLAMA = Backend(
    name="ollama",
    cls=asyncllm.Ollama,
    settings={"base_url": URL + ":80"},
    answer=a.ollama_answer,
    streams=a.ollama_events,
    path=regex_path(r"/api/(chat|generate|embed|tags|show|ps|version|pull|delete|copy)"),
    schema=ollama_schema,
    methods=tables(asyncllm.Ollama, {
        "chat": OLLAMA_CHAT_ARGS,
        "stream_chat": OLLAMA_CHAT_ARGS,
        "generate": OLLAMA_GENERATE_ARGS,
        "stream_generate": OLLAMA_GENERATE_ARGS,
        "embed": [
            embed_inputs,
            ollama_model,
            opt("truncate", [None, True, False], junk),
            dimensions,
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
    }, {m: {"at_most_one": OLLAMA_FORMATS} for m in ("chat", "stream_chat")}),
    probe=Probe(
        (
            req("base_url", st.sampled_from([URL, HOST, f"{HOST}:8080", f"{URL}:11434/"]), st.sampled_from(OLLAMA_HOSTS) | st.builds(Thing)),
            api_key,
            default_headers,
        ),
        "version",
    ),
    calls=(
        Call("chat", lambda c: c.chat(USER, model="llama3"), is_a(OllamaChatResponse), valid=a.OLLAMA_CHAT),
        Call("generate", lambda c: c.generate("hi", model="llama3"), is_a(GenerateResponse), valid=a.OLLAMA_GENERATE),
        Call("embed", lambda c: c.embed("x", model="e"), is_a(Embedding), valid=a.OLLAMA_EMBED),
        Call("models", lambda c: c.models(), list_of(ModelInfo), valid=a.OLLAMA_TAGS),
        Call("show", lambda c: c.show("llama3"), is_a(ShowResponse), valid=a.OLLAMA_SHOW),
        Call("ps", lambda c: c.ps(), list_of(RunningModel), valid=a.OLLAMA_PS),
        Call("version", lambda c: c.version(), is_a(str), valid=a.OLLAMA_VERSION),
        Call("pull", lambda c: c.pull("llama3", stream=False), is_a(PullProgress), valid={"status": "success"}),
        Call("delete", lambda c: c.delete("llama3"), is_none, valid=b""),
        Call("copy", lambda c: c.copy("llama3", "copy"), is_none, valid=b""),
        Call("stream_chat", lambda c: c.stream_chat(USER, model="llama3"), is_a(OllamaChatChunk), events=tuple(a.OLLAMA_CHAT_LINES), framing="ndjson"),
        Call("stream_generate", lambda c: c.stream_generate("hi", model="llama3"), is_a(GenerateChunk), events=tuple(a.OLLAMA_GENERATE_LINES), framing="ndjson"),
        Call("stream_pull", lambda c: c.pull("llama3"), is_a(PullProgress), events=tuple(a.OLLAMA_PULL_LINES), framing="ndjson"),
    ),
    error=a.OLLAMA_ERROR,
    damage="tree",
)  # fmt: skip

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
    *(g for g in OPEA_GENERATION if g.name != "extra_body"),
]
OPEA_LLM_CHAT = [g if g.name != "model" else opea_model for g in OPENAI_CHAT_ARGS]
OPEA_SERVICES = ("llm", "embedding", "retriever", "reranking", "guardrails", "dataprep")
OPEA_ENTRY = Backend(
    name="opea",
    cls=OPEA,
    settings={"base_url": URL, **{f"{s}_url": URL for s in OPEA_SERVICES}},
    answer=a.opea_answer,
    streams=a.opea_events,
    path=regex_path(
        r"/v1/(chatqna|codegen|docsum|faqgen|chat/completions|embeddings|retrieval"
        r"|reranking|guardrails|dataprep/ingest|health_check)"
    ),
    methods=() if hasattr(_opea, "unavailable") else tables(OPEA, {
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
        "embed": [embed_inputs, opea_model, dimensions, user, *EXTRA, *COMMON],
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
    }),
    probe=Probe(
        (api_key, default_headers, opt("name", ["opea", "rag"], texts | junk)),
        "chat", (USER,), fixed={"base_url": URL, "llm_url": URL},
    ),
    calls=(
        Call("chatqna", lambda c: c.chatqna("q"), is_a(ChatResponse), valid=a.CHAT),
        Call("codegen", lambda c: c.codegen("q"), is_a(ChatResponse), valid=a.CHAT),
        Call("docsum", lambda c: c.docsum("text"), is_a(ChatResponse), valid=a.CHAT),
        Call("docsum_files", lambda c: c.docsum(files=FILE), is_a(ChatResponse), valid=a.CHAT),
        Call("faqgen", lambda c: c.faqgen("text"), is_a(ChatResponse), valid=a.CHAT),
        Call("stream_chatqna", lambda c: c.stream_chatqna("q"), is_a(ChatChunk), events=tuple(a.OPEA_BYTES_EVENTS), headers=a.SSE),
        Call("stream_chatqna_json", lambda c: c.stream_chatqna("q"), is_a(ChatChunk), valid=a.CHAT, headers=a.JSON, stream=True),
        Call("stream_codegen", lambda c: c.stream_codegen("q"), is_a(ChatChunk), events=tuple(a.OPEA_CODEGEN_EVENTS), headers=a.SSE),
        Call("stream_docsum", lambda c: c.stream_docsum("text"), is_a(ChatChunk), events=tuple(a.OPEA_BYTES_EVENTS), headers=a.SSE),
        Call("stream_faqgen", lambda c: c.stream_faqgen("text", files=FILE), is_a(ChatChunk), events=tuple(a.OPEA_BYTES_EVENTS), headers=a.SSE),
        Call("chat", lambda c: c.chat(USER), is_a(ChatResponse), valid=a.CHAT),
        Call("stream_chat", lambda c: c.stream_chat(USER), is_a(ChatChunk), events=tuple(a.OPENAI_EVENTS)),
        Call("embed", lambda c: c.embed("x"), is_a(Embedding), valid=a.embeddings(1)),
        Call("retrieve", lambda c: c.retrieve("q", [0.1, 0.2]), is_a(_opea.RetrievalResult), valid=a.OPEA_RETRIEVAL),
        Call("rerank", lambda c: c.rerank("q", ["first", "second"]), is_a(_opea.RerankResult), valid=a.OPEA_RERANKED),
        Call("guardrails", lambda c: c.guardrails("text"), is_a(_opea.GuardrailResult), valid=a.OPEA_GUARDED),
        Call("ingest", lambda c: c.ingest(FILE, LINK), is_a(_opea.IngestResult), valid=a.OPEA_INGESTED),
        Call("health", lambda c: c.health("retriever"), is_a(_opea.HealthResult), valid=a.OPEA_HEALTH),
    ),
    error=a.OPEA_ERROR,
    damage="tree",
)  # fmt: skip

# -- the keyword-table backends: TGI, TEI, vLLM, OVMS, LLVM and OpenAI ------------------------------

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


# TGI's router (router/src/validation.rs) bounds some parameters other than its OpenAPI schema
# does: it takes seed=0, top_n_tokens=0 and a frequency_penalty of -2, which the schema excludes,
# and refuses top_p=1, typical_p=1, truncate=0 and a frequency_penalty above 2, which the schema
# allows. A sent body is checked against the router's bounds.
TGI_ROUTER_BOUNDS: dict[str, dict[str, int]] = {
    "seed": {"minimum": 0},
    "top_n_tokens": {"minimum": 0},
    "frequency_penalty": {"minimum": -2, "maximum": 2},
    "top_p": {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "typical_p": {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "truncate": {"minimum": 1},
}
BOUND_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _router_bounds(validator: Draft202012Validator) -> Draft202012Validator:
    schema = copy.deepcopy(validator.schema)
    properties = schema["components"]["schemas"]["GenerateParameters"]["properties"]
    for name, bounds in TGI_ROUTER_BOUNDS.items():
        node = properties[name]
        node = node["anyOf"][0] if "anyOf" in node else node  # nullable, as test_tgi reads it
        for keyword in BOUND_KEYWORDS:
            node.pop(keyword, None)
        node.update(bounds)
    return Draft202012Validator(schema)


@functools.cache
def tgi_validator(path: str) -> Draft202012Validator | None:
    if path in ("/generate", "/generate_stream"):  # one GenerateRequest, as test_tgi checks
        spec = test_tgi.request_validator(test_tgi.SPEC, "/generate")
        return _with_formats(_router_bounds(spec))
    return None


@functools.cache
def tei_validator(path: str) -> Draft202012Validator | None:
    checked = ("/embed", "/rerank", "/embed_sparse", "/embed_all", "/predict", "/tokenize")
    if path in (*checked, "/v1/embeddings"):
        return _with_formats(test_tei.request_validator(path))
    return None


@functools.cache
def openai_schema_of(path: str) -> Any:
    if path.endswith("/chat/completions"):
        return openai_validator("CreateChatCompletionRequest")
    if path.endswith("/embeddings"):
        return openai_validator("CreateEmbeddingRequest")
    return None


@functools.cache
def ovms_validator(path: str) -> Draft202012Validator | None:
    if path.startswith("/v2/") and path.endswith("/infer"):
        spec = yaml.safe_load(test_ovms.SPEC.read_text())
        return test_ovms._validator(spec, "inference_request")
    return None


OVMS_SERVABLES = {
    "infer": ("v2", ["infer"]),
    "model_metadata": ("v2", []),
    "model_ready": ("v2", ["ready"]),
    "predict": ("v1", [":predict"]),
    "model_status": ("v1", []),
    "tfs_model_metadata": ("v1", ["metadata"]),
}


def ovms_path(method: str, kwargs: Mapping[str, Any], request: Request) -> None:
    """The model name is one segment, the version (when given) its canonical digits."""
    if method not in OVMS_SERVABLES:
        return
    api, suffix = OVMS_SERVABLES[method]
    expected = ["/", api, "models", "m" if kwargs.get("model") is None else kwargs["model"]]
    if kwargs.get("version") is not None:
        expected += ["versions", str(int(kwargs["version"]))]
    if suffix == [":predict"]:
        expected[-1] += ":predict"
    else:
        expected += suffix
    assert segments(request.url) == expected, (
        request.url,
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


def alone(kwargs: Mapping[str, Any]) -> bool:
    """An LLVM infer that skips micro-batching: it has HTTP options of its own, or a timeout or
    max_retries other than the client's (None and 0 here)."""
    return any(
        kwargs.get(k) is not None for k in ("extra_headers", "extra_query", "extra_body")
    ) or ("timeout" in kwargs or kwargs.get("max_retries") not in (None, 0))


def llvm_path(method: str, kwargs: Mapping[str, Any], request: Request) -> None:
    base = ["/", "models", kwargs.get("model_id")]
    if method == "infer":
        batched = kwargs.get("batch", True) and kwargs.get("batch_size", 8) > 1
        if batched and alone(kwargs):  # perhaps sent alone, with options of its own
            assert segments(request.url) in ([*base, "infer"], [*base, "batch_infer"]), request.url
            return
        suffix = ["batch_infer"] if batched else ["infer"]
    elif method in LLVM_SUFFIX:
        suffix = LLVM_SUFFIX[method]
    else:
        return
    assert segments(request.url) == [*base, *suffix], request.url


# Known bugs in shared code: each is reported, not fixed here (the shared modules belong to
# everyone), and has a strict xfail test in test_input.py; inputs that would hit one are left out
# of the random runs so that those keep finding new bugs. When a shared fix lands, its xfail
# passes (and fails, being strict): drop the test's mark and its entry here.


def _has_bad_tool(tools: Any) -> bool:
    """_models.Tool.coerce sends a name the schema refuses ("", spaces...)."""
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


def _int_beyond(value: Any, bound: int) -> bool:
    return isinstance(value, int) and abs(value) > bound


OPENAI_SCHEMA_GAPS: list[Callable[[Mapping[str, Any]], bool]] = [
    # _wire.openai.tool_choice_body passes any mapping through, {} too; _structured.output_format
    # sends an OpenAI-shaped response_format dict as given (a json_schema without its name).
    lambda kw: isinstance(kw.get("tool_choice"), Mapping),
    lambda kw: isinstance(kw.get("response_format"), Mapping),
    # _base.check_stop takes a list of any length; OpenAI's schema takes 1 to 4 stops.
    lambda kw: isinstance(kw.get("stop"), (list, tuple)) and not 1 <= len(kw["stop"]) <= 4,
    # _models.normalize_messages checks only that content parts are mappings ([], [{}] or a
    # part without its type's field are sent) and lets a "function" message go without its
    # name: OpenAI's schema refuses both.
    lambda kw: (
        isinstance(kw.get("messages"), list)
        and any(
            isinstance(m, Mapping)
            and (isinstance(m.get("content"), list) or m.get("role") == "function")
            for m in kw["messages"]
        )
    ),
    # _wire.openai checks n and seed with check_int, unbounded; OpenAI's schema bounds them.
    lambda kw: _int_beyond(kw.get("n"), 128) or _int_beyond(kw.get("seed"), 2**63),
]


def skip_tool_names(method: Method, kwargs: Mapping[str, Any]) -> bool:
    return _has_bad_tool(kwargs.get("tools"))


def skip_openai_gaps(method: Method, kwargs: Mapping[str, Any]) -> bool:
    return _has_bad_tool(kwargs.get("tools")) or any(gap(kwargs) for gap in OPENAI_SCHEMA_GAPS)


# Within the router's bounds (TGI_ROUTER_BOUNDS).
TGI_GENERATE: dict[str, st.SearchStrategy[Any]] = {
    "inputs": nonempty,
    "max_new_tokens": st.integers(0, 1000),
    "temperature": st.floats(0, 2, exclude_min=True),
    "top_p": st.floats(0, 1, exclude_min=True, exclude_max=True),
    "top_k": st.integers(1, 100),
    "typical_p": st.floats(0, 1, exclude_min=True, exclude_max=True),
    "repetition_penalty": st.floats(0, 3, exclude_min=True),
    "frequency_penalty": st.floats(-2, 2),
    "stop": text | st.lists(text, max_size=4),
    "seed": st.integers(0, 2**64 - 1),
    "do_sample": st.booleans(),
    "truncate": st.integers(1, 1000),
    "return_full_text": st.booleans(),
    "details": st.booleans(),
    "decoder_input_details": st.booleans(),
    "top_n_tokens": st.integers(0, 5),
    "watermark": st.booleans(),
    "grammar": st.sampled_from(
        [{"type": "regex", "value": "[a-z]+"}, {"type": "json", "value": ANSWER_SCHEMA}, Answer]
    ),
    "best_of": st.integers(1, 2),
    "adapter_id": text,
    "extra_parameters": st.dictionaries(st.sampled_from(["x_a"]), json_ok, max_size=1),
}
# Chat: top_p below 1, as the router takes it; a response_format TGI's JSON grammar can carry
# (an object with properties: a bare {"type": "json_object"} is refused).
TGI_CHAT: dict[str, st.SearchStrategy[Any]] = {
    "top_p": TGI_GENERATE["top_p"],
    "response_format": st.sampled_from([Answer, ANSWER_SCHEMA]),
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
    "texts": text_lists,
}
VLLM_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "prompt": text | text_lists,
    "echo": st.booleans(),
    # Exactly one constraint (vLLM's StructuredOutputsParams); the guided_* fields it replaced
    # are refused (test_input.py).
    "structured_outputs": st.fixed_dictionaries(
        {"json": st.sampled_from([{"type": "object"}, '{"type": "string"}', Answer, ANSWER_SCHEMA])}
    )
    | st.fixed_dictionaries({"regex": nonempty})
    | st.fixed_dictionaries({"choice": text_lists})
    | st.fixed_dictionaries({"grammar": nonempty}),
    "chat_template_kwargs": st.fixed_dictionaries(
        {}, optional={"enable_thinking": st.booleans(), "x_a": json_ok}
    ),
    "response_format": st.sampled_from([{"type": "json_object"}, Answer, ANSWER_SCHEMA]),
    "top_k": st.integers(-1, 100),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0, 2, exclude_min=True),
    "tokens": st.lists(st.integers(0, 10**6), max_size=5),
    "add_special_tokens": st.booleans(),
    "add_generation_prompt": st.booleans(),
    "return_token_strs": st.booleans(),
    "query": text,
    "documents": text_lists,
    "top_n": st.integers(1, 5),
    "text_1": text | text_lists,
    "text_2": text | text_lists,
}
OVMS_VERSIONS = st.integers(1, 3) | st.sampled_from(
    ["1", "02", "²", "\u0663", "1.0", " 1", "-1", "0", "9" * 5000, 2**63]
)
OVMS_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "model": model_names | path_hostile,
    "version": OVMS_VERSIONS,
    "outputs": st.lists(
        st.sampled_from(["x", "input"]) | st.just({"name": "x", "parameters": {}}), max_size=2
    ),
    "parameters": json_object,
    "id": text,
    "signature_name": nonempty,
    "prompt": text,
    "echo": st.booleans(),
    "query": nonempty,
    "documents": text_lists,
    "top_n": st.integers(1, 5),
    "return_documents": st.booleans(),
    "inputs": st.dictionaries(tensor_names, tensorish, min_size=1, max_size=2),
}
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


def settings_args(base_url: str, **params: st.SearchStrategy[Any]) -> tuple[Arg, ...]:
    """A keyword-table backend's settings: base_url, api_key, model, default_headers and its
    own, each good or (up to two) hostile, path-hostile or URL-hostile."""
    bad = hostile | path_hostile | url_hostile
    table = {
        "api_key": st.none() | visible.filter(str.strip),
        "model": st.none() | model_names,
        "default_headers": st.none() | VALID["extra_headers"],
        **params,
    }
    return (req("base_url", base_url, bad), *(Arg(n, s, bad) for n, s in table.items()))


def _tgi_methods() -> tuple[Method, ...]:
    cls = asyncllm.TGI
    out = [from_signature(cls, n, TGI_GENERATE) for n in ("generate", "stream_generate")]
    out.append(from_signature(cls, "tokenize", {"inputs": nonempty}))
    # TGI's grammar is either tools or response_format: both at once is a ConfigurationError.
    out += [
        from_signature(cls, n, TGI_CHAT, at_most_one=("tools", "response_format"))
        for n in ("chat", "stream_chat")
    ]
    out += [from_signature(cls, n) for n in ("info", "health", "models")]
    return tuple(out)


TGI = Backend(
    name="tgi",
    cls=asyncllm.TGI,
    settings={"base_url": URL},
    answer=a.tgi_answer,
    path=any_path,
    schema=by_path(tgi_validator),
    methods=_tgi_methods(),
    probe=Probe(settings_args(URL), "health", examples=100),
    calls=(
        Call("chat", lambda c: c.chat(USER), is_a(ChatResponse)),
        Call("generate", lambda c: c.generate("hi", details=True), is_a(tgi.TGIGeneration)),
        Call("info", lambda c: c.info(), is_a(tgi.TGIInfo)),
        Call("health", lambda c: c.health(), is_a(bool)),
        Call("tokenize", lambda c: c.tokenize("hi"), list_of(tgi.TGITokenSpan)),
        Call("models", lambda c: c.models(), list_of(ModelInfo)),
        Call("stream_chat", lambda c: c.stream_chat(USER), is_a(ChatChunk), events=SSE_CHUNKS, stream=True),
        Call("stream_generate", lambda c: c.stream_generate("hi", details=True), is_a(tgi.TGIStreamToken), events=tuple((None, e) for e in a.TGI_STREAM), stream=True),
    ),
    error=a.TGI_ERROR,
    skip=skip_tool_names,
    damage="plan",
    examples=30,  # a method: its call options are drawn too
)  # fmt: skip


def _tei_methods() -> tuple[Method, ...]:
    cls = asyncllm.TEI
    predict = {"inputs": predict_item | st.lists(predict_item, min_size=1, max_size=5)}
    out = []
    for name in ("embed", "embed_sparse", "embed_all", "rerank", "predict"):
        params = {**TEI_PARAMS, **(predict if name == "predict" else {})}
        out.append(from_signature(cls, name, params))
        # Without max_client_batch_size the client reads it from /info first.
        out.append(from_signature(cls, name, params, {"max_client_batch_size": None}))
    out += [
        from_signature(cls, n, TEI_PARAMS) for n in ("openai_embed", "tokenize", "info", "health")
    ]
    return tuple(out)


TEI = Backend(
    name="tei",
    cls=asyncllm.TEI,
    settings={"base_url": URL, "max_client_batch_size": 2},
    answer=a.tei_answer,
    path=any_path,
    schema=by_path(tei_validator),
    methods=_tei_methods(),
    probe=Probe(settings_args(URL, max_client_batch_size=st.none() | st.integers(1, 8)), "health", examples=100),
    calls=(
        # One input; three in two chunks after reading max_client_batch_size from /info.
        Call("embed", lambda c: c.embed("a"), _embeddings),
        Call("embed_batched", lambda c: c.embed(["a", "b", "c"]), _embeddings, {"max_client_batch_size": None}),
        Call("embed_sparse", lambda c: c.embed_sparse(["a", "b"]), is_a(tei.TEISparseEmbeddings)),
        Call("embed_all", lambda c: c.embed_all("a"), lambda r: isinstance(r, tei.TEITokenEmbeddings) and floats(r.vectors, 3)),
        Call("openai_embed", lambda c: c.openai_embed("a"), _embeddings),
        Call("rerank", lambda c: c.rerank("q", ["a", "b", "c"]), list_of(tei.TEIRank)),
        Call("predict", lambda c: c.predict(["a", ("b", "c")]), rows_of(tei.TEIPrediction)),
        Call("tokenize", lambda c: c.tokenize(["a", "b"]), rows_of(tei.TEIToken)),
        Call("info", lambda c: c.info(), is_a(tei.TEIInfo)),
        Call("health", lambda c: c.health(), is_a(bool)),
    ),
    error=a.TEI_ERROR,
    skip=skip_tool_names,
    damage="plan",
    examples=30,  # a method: its call options are drawn too
)  # fmt: skip


def _vllm_methods() -> tuple[Method, ...]:
    cls = asyncllm.VLLM
    # response_format is sent as structured_outputs: both at once is a ConfigurationError.
    formats = ("response_format", "structured_outputs")
    out = [
        from_signature(cls, n, VLLM_PARAMS, at_most_one=formats) for n in ("chat", "stream_chat")
    ]
    out.append(from_signature(cls, "completions", VLLM_PARAMS))
    out.append(from_signature(cls, "tokenize", VLLM_PARAMS, one=("prompt", "messages")))
    out += [
        from_signature(cls, n, VLLM_PARAMS)
        for n in ("detokenize", "health", "version", "rerank", "score", "embed", "models")
    ]
    return tuple(out)


VLLM = Backend(
    name="vllm",
    cls=asyncllm.VLLM,
    settings={"base_url": URL + "/v1", "model": "m"},
    answer=a.vllm_answer,
    path=any_path,
    methods=_vllm_methods(),
    probe=Probe(settings_args(URL + "/v1", root_url=st.none() | st.just("http://root.mock.invalid")), "health", examples=100),
    calls=(
        Call("chat", lambda c: c.chat(USER, top_k=2), is_a(ChatResponse)),
        Call("completions", lambda c: c.completions(["a", "b"]), is_a(vllm.CompletionResponse)),
        Call("embed", lambda c: c.embed("a"), _embeddings),
        Call("models", lambda c: c.models(), list_of(ModelInfo)),
        Call("tokenize", lambda c: c.tokenize("ab"), is_a(vllm.TokenizeResponse)),
        Call("detokenize", lambda c: c.detokenize([1, 2]), is_a(str)),
        Call("version", lambda c: c.version(), is_a(str)),
        Call("health", lambda c: c.health(), is_a(bool)),
        Call("rerank", lambda c: c.rerank("q", ["a", "b"]), is_a(vllm.RerankResponse)),
        Call("score", lambda c: c.score("q", ["a", "b"]), is_a(vllm.ScoreResponse)),
        Call("stream_chat", lambda c: c.stream_chat(USER, min_p=0.1), is_a(ChatChunk), events=SSE_CHUNKS, stream=True),
    ),
    error=a.VLLM_ERROR,
    skip=skip_tool_names,
    damage="plan",
    examples=30,  # a method: its call options are drawn too
)  # fmt: skip


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


def _ovms_methods() -> tuple[Method, ...]:
    cls = asyncllm.OVMS
    out = [
        from_signature(cls, "infer", OVMS_PARAMS),
        from_signature(
            cls,
            "predict",
            {**OVMS_PARAMS, "instances": tf_rows, "inputs": tf_columns},
            one=("instances", "inputs"),
        ),
    ]
    out += [
        from_signature(cls, n, OVMS_PARAMS)
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
    return tuple(out)


OVMS_ENTRY = Backend(
    name="ovms",
    cls=asyncllm.OVMS,
    settings={"base_url": URL, "model": "m"},
    answer=a.ovms_answer,
    path=ovms_path,
    schema=by_path(ovms_validator),
    methods=_ovms_methods(),
    probe=Probe(settings_args(URL, version=st.none() | OVMS_VERSIONS), "model_ready", examples=100),
    calls=(
        # KServe, TF-Serving and /v3
        Call("infer_fp32", lambda c: c.infer(inputs={"x": [[0.5, 1.0], [-2, 3.0]]}), _tensors),
        Call("infer_fp16_uint8", lambda c: c.infer(inputs={"h": ovms.Tensor([1.5, -2.0], datatype="FP16"), "u": ovms.Tensor([[0], [255]], datatype="UINT8")}), _tensors),
        Call("infer_int64_with_id", lambda c: c.infer(inputs={"ids": [1, 2, 3]}, id="r1", outputs=["ids"]), _tensors),
        Call("infer_bool_bytes", lambda c: c.infer(inputs={"mask": [[True], [False]], "text": ["hi"]}), _tensors),
        Call("model_metadata", lambda c: c.model_metadata(version=1), is_a(ovms.ModelMetadata)),
        Call("server_metadata", lambda c: c.server_metadata(), is_a(ovms.ServerMetadata)),
        Call("server_live", lambda c: c.server_live(), is_a(bool)),
        Call("server_ready", lambda c: c.server_ready(), is_a(bool)),
        Call("model_ready", lambda c: c.model_ready(), is_a(bool)),
        Call("predict_rows", lambda c: c.predict(instances=[[1.0, 2.0], b"hi"]), is_a(ovms.PredictResponse)),
        Call("predict_columns", lambda c: c.predict(inputs={"x": [[1.0]]}), is_a(ovms.PredictResponse)),
        Call("model_status", lambda c: c.model_status(), list_of(ovms.ModelVersionStatus)),
        Call("tfs_model_metadata", lambda c: c.tfs_model_metadata(), is_a(dict)),
        Call("completions", lambda c: c.completions("a"), is_a(ovms.CompletionResponse)),
        Call("rerank", lambda c: c.rerank("q", ["a", "b"]), is_a(ovms.RerankResponse)),
        Call("chat", lambda c: c.chat(USER), is_a(ChatResponse)),
        Call("embed", lambda c: c.embed("a"), _embeddings),
        Call("models", lambda c: c.models(), list_of(ModelInfo)),
        Call("stream_chat", lambda c: c.stream_chat(USER), is_a(ChatChunk), events=SSE_CHUNKS, stream=True),
    ),
    error=a.OVMS_ERROR,
    skip=skip_tool_names,
    damage="plan",
    examples=30,  # a method: its call options are drawn too
)  # fmt: skip


async def _llvm_concurrent(c: Any) -> bool:
    """Three concurrent infers that travel as one batch (batch_size=3): each caller gets its own
    result or a typed error."""
    calls = [expect_typed(c.infer("m", i), is_a(llvm.InferResult)) for i in range(3)]
    await asyncio.gather(*calls)
    return True


def _llvm_methods() -> tuple[Method, ...]:
    cls = asyncllm.LLVM
    out = [
        from_signature(cls, n, LLVM_PARAMS)
        for n in ("models", "model_info", "statistics", "optimize", "reload", "status")
    ]
    out += [from_signature(cls, n, LLVM_PARAMS) for n in ("batch_infer", "infer")]
    out.append(from_signature(cls, "infer_many", LLVM_PARAMS, empty=True))
    out.append(from_signature(cls, "infer_many", LLVM_PARAMS, {"batch_size": 2}, empty=True))
    out.append(from_signature(cls, "infer", LLVM_PARAMS, {"batch_size": 1}))
    return tuple(out)


LLVM = Backend(
    name="llvm",
    cls=asyncllm.LLVM,
    settings={"base_url": URL, "batch_wait": 0.0},
    answer=a.llvm_answer,
    path=llvm_path,
    methods=_llvm_methods(),
    probe=Probe(settings_args(URL, batch_size=st.integers(1, 8), batch_wait=st.floats(0, 0.001)), "status", examples=100),
    calls=(
        # Direct calls, a micro-batched infer alone, three concurrent ones in one batch.
        Call("models", lambda c: c.models(), list_of(llvm.LLVMModel)),
        Call("model_info", lambda c: c.model_info("m"), is_a(llvm.LLVMModel)),
        Call("statistics", lambda c: c.statistics("m"), is_a(llvm.ModelStatistics)),
        Call("optimize", lambda c: c.optimize("m", "speed"), is_a(llvm.OptimizeResult)),
        Call("reload", lambda c: c.reload("m"), is_a(llvm.ReloadResult)),
        Call("status", lambda c: c.status(), is_a(llvm.ServerStatus)),
        Call("infer", lambda c: c.infer("m", [1], batch=False), is_a(llvm.InferResult)),
        Call("infer_batched", lambda c: c.infer("m", {"x": 1}), is_a(llvm.InferResult)),
        Call("infer_concurrent", _llvm_concurrent, is_a(bool), {"batch_size": 3, "batch_wait": 1.0}),
        Call("batch_infer", lambda c: c.batch_infer("m", [1, 2]), list_of(llvm.InferResult)),
        Call("infer_many", lambda c: c.infer_many("m", [1, 2, 3]), list_of(llvm.InferResult), {"batch_size": 2}),
    ),
    error=a.LLVM_ERROR,
    skip=skip_tool_names,
    damage="plan",
    examples=30,  # a method: its call options are drawn too
)  # fmt: skip

OPENAI = Backend(
    name="openai",
    cls=asyncllm.OpenAI,
    settings={"base_url": URL + "/v1", "api_key": "sk-test", "model": "m"},
    answer=a.openai_answer,
    path=any_path,
    schema=by_path(openai_schema_of),
    methods=tuple(from_signature(asyncllm.OpenAI, n) for n in ("chat", "embed", "models", "stream_chat")),
    probe=Probe(
        settings_args(URL + "/v1", organization=st.none() | visible, project=st.none() | visible),
        "models", examples=100,
    ),
    calls=(
        Call("chat", lambda c: c.chat(USER), is_a(ChatResponse)),
        Call("embed", lambda c: c.embed("a"), _embeddings),
        Call("models", lambda c: c.models(), list_of(ModelInfo)),
        Call("stream_chat", lambda c: c.stream_chat(USER), is_a(ChatChunk), events=SSE_CHUNKS, stream=True),
    ),
    error={"error": {"message": "boom", "type": "server_error", "code": "x", "status": 500}},
    skip=skip_openai_gaps,
    damage="plan",
    examples=30,  # a method: its call options are drawn too
)  # fmt: skip

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (CLAUDE, GEMINI, GROQ, OLLAMA, OPEA_ENTRY, TGI, TEI, VLLM, OVMS_ENTRY, LLVM, OPENAI)
}
