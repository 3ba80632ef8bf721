"""Call options declared once: typed for mypy, checked by key at run time, the same on every call."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from asyncllm._options import merge_body
from asyncllm.testing import MockResponse
from tests.helpers import USER, chat_json, client, ok

MISUSE = Path(__file__).parent / "typing" / "misuse.py"


def test_mypy_strict_flags_every_misspelt_or_misplaced_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(MISUSE)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    flagged = {int(m) for m in re.findall(r"misuse\.py:(\d+): error", out.stdout)}
    marked = {
        number
        for number, line in enumerate(MISUSE.read_text().splitlines(), 1)
        if line.endswith("# E")
    }
    assert flagged == marked, out.stdout


def test_positional_arguments_to_a_constructor_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        asyncllm.OpenAI("http://127.0.0.1:8000/v1")  # type: ignore[misc]
    with pytest.raises(TypeError, match="max_concurent_requests"):
        asyncllm.OpenAI(api_key="k", max_concurent_requests=5)  # type: ignore[call-arg]


async def test_a_misspelt_option_is_a_type_error_before_anything_is_sent() -> None:
    sent: list[Any] = []
    c = client(lambda r: sent.append(r) or ok())
    with pytest.raises(TypeError, match="chat\\(\\) got an unexpected keyword argument 'priorty'"):
        await c.chat(USER, model="m", priorty=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'max_retry'"):
        c.stream_chat(USER, model="m", max_retry=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'extra_body'"):
        await c.models(extra_body={"a": 1})  # type: ignore[call-arg]
    assert sent == []
    await c.aclose()


async def test_extra_body_query_and_headers_reach_the_wire() -> None:
    seen: list[Any] = []

    def handler(request: Any) -> MockResponse:
        seen.append(request)
        return ok()

    c = client(handler)
    await c.chat(
        USER,
        model="m",
        tool_choice={"type": "function", "function": {"name": "a", "x": 1}},
        extra_body={"tool_choice": {"function": {"name": "b"}}, "top_k": 3, "model": "n"},
        extra_query={"api-version": "2024"},
        extra_headers={"X-Trace": "t1"},
    )
    body = seen[0].json()
    assert body["tool_choice"] == {"type": "function", "function": {"name": "b", "x": 1}}
    assert body["top_k"] == 3 and body["model"] == "n"
    assert seen[0].params == {"api-version": "2024"}
    assert seen[0].headers["X-Trace"] == "t1"
    await c.aclose()


def test_merge_body_merges_mappings_and_replaces_the_rest() -> None:
    inner = {"b": 1, "c": [1]}
    body = {"a": inner, "l": [1, 2], "s": "x"}
    merged = merge_body(body, {"a": {"c": [2], "d": {"e": 1}}, "l": [3], "s": {"k": 1}})
    assert merged == {"a": {"b": 1, "c": [2], "d": {"e": 1}}, "l": [3], "s": {"k": 1}}
    assert inner == {"b": 1, "c": [1]}  # the caller's nested object is never changed


async def test_with_options_changes_per_call_defaults_and_owns_nothing() -> None:
    attempts = 0

    def handler(request: Any) -> MockResponse:
        nonlocal attempts
        attempts += 1
        return MockResponse(503, json={"error": {"message": "busy"}})

    c = client(handler, max_retries=3)
    light = c.with_options(max_retries=0, priority=asyncllm.Priority.HIGH)
    with pytest.raises(asyncllm.InternalServerError):
        await light.chat(USER, model="m")
    assert attempts == 1
    with asyncllm.request_context("rid-light"), pytest.raises(asyncllm.InternalServerError):
        await light.chat(USER, model="m", max_retries=1)  # the call's own option wins
    assert attempts == 3
    record = c.dispatcher.tracker.get("rid-light")
    assert record is not None and record.priority == asyncllm.Priority.HIGH
    await light.aclose()  # does nothing: the lane and the connections are c's
    c2 = light.with_options(timeout=5)
    assert c2.dispatcher is c.dispatcher
    with pytest.raises(TypeError):
        c.with_options(max_concurrent_requests=2)  # type: ignore[call-arg]
    with pytest.raises(asyncllm.ConfigurationError):
        c.with_options(max_retries=-1)
    await c.aclose()
    with pytest.raises(asyncllm.ClientClosedError):
        await light.chat(USER, model="m")


async def test_per_call_max_retries_on_a_stream() -> None:
    attempts = 0

    def handler(request: Any) -> MockResponse:
        nonlocal attempts
        attempts += 1
        return MockResponse(503, json={"error": {"message": "busy"}})

    c = client(handler, max_retries=5)
    with pytest.raises(asyncllm.InternalServerError):
        async with c.stream_chat(USER, model="m", max_retries=1) as stream:
            async for _ in stream:
                pass
    assert attempts == 2
    await c.aclose()


def test_chat_json_helper_is_a_valid_reply() -> None:
    assert chat_json("x")["choices"][0]["message"]["content"] == "x"


# -- per-call max_retries on every public call and stream method of every HTTP client ------------

M = [{"role": "user", "content": "hi"}]

# For each client: its constructor arguments, and one sample call per public method. A public
# method without an entry fails test_the_registry_covers_every_public_method.
CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "OpenAI": (
        {"api_key": "k"},
        {
            "chat": lambda c, **o: c.chat(M, model="m", **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, model="m", **o),
            "embed": lambda c, **o: c.embed(["a"], model="m", **o),
            "models": lambda c, **o: c.models(**o),
        },
    ),
    "Groq": (
        {"api_key": "k"},
        {
            "chat": lambda c, **o: c.chat(M, model="m", **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, model="m", **o),
            "embed": lambda c, **o: c.embed(["a"], model="m", **o),
            "models": lambda c, **o: c.models(**o),
        },
    ),
    "Claude": (
        {"api_key": "k"},
        {
            "chat": lambda c, **o: c.chat(M, model="m", **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, model="m", **o),
            "count_tokens": lambda c, **o: c.count_tokens(M, model="m", **o),
            "models": lambda c, **o: c.models(**o),
        },
    ),
    "Gemini": (
        {"api_key": "k"},
        {
            "chat": lambda c, **o: c.chat(M, model="m", **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, model="m", **o),
            "count_tokens": lambda c, **o: c.count_tokens(M, model="m", **o),
            "embed": lambda c, **o: c.embed(["a"], model="m", **o),
            "models": lambda c, **o: c.models(**o),
        },
    ),
    "Ollama": (
        {},
        {
            "chat": lambda c, **o: c.chat(M, model="m", **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, model="m", **o),
            "generate": lambda c, **o: c.generate("p", model="m", **o),
            "stream_generate": lambda c, **o: c.stream_generate("p", model="m", **o),
            "embed": lambda c, **o: c.embed(["a"], model="m", **o),
            "pull": lambda c, **o: c.pull("m", **o),
            "show": lambda c, **o: c.show("m", **o),
            "copy": lambda c, **o: c.copy("a", "b", **o),
            "delete": lambda c, **o: c.delete("m", **o),
            "models": lambda c, **o: c.models(**o),
            "ps": lambda c, **o: c.ps(**o),
            "version": lambda c, **o: c.version(**o),
        },
    ),
    "TGI": (
        {},
        {
            "chat": lambda c, **o: c.chat(M, **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, **o),
            "generate": lambda c, **o: c.generate("p", **o),
            "stream_generate": lambda c, **o: c.stream_generate("p", **o),
            "tokenize": lambda c, **o: c.tokenize("p", **o),
            "info": lambda c, **o: c.info(**o),
            "models": lambda c, **o: c.models(**o),
            "health": lambda c, **o: c.health(**o),
        },
    ),
    "TEI": (
        {},
        {
            "embed": lambda c, **o: c.embed(["a"], **o),
            "embed_all": lambda c, **o: c.embed_all(["a"], **o),
            "embed_sparse": lambda c, **o: c.embed_sparse(["a"], **o),
            "openai_embed": lambda c, **o: c.openai_embed(["a"], **o),
            "predict": lambda c, **o: c.predict("a", **o),
            "rerank": lambda c, **o: c.rerank("q", ["a"], **o),
            "tokenize": lambda c, **o: c.tokenize("a", **o),
            "info": lambda c, **o: c.info(**o),
            "health": lambda c, **o: c.health(**o),
        },
    ),
    "VLLM": (
        {},
        {
            "chat": lambda c, **o: c.chat(M, model="m", **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, model="m", **o),
            "completions": lambda c, **o: c.completions("p", model="m", **o),
            "embed": lambda c, **o: c.embed(["a"], model="m", **o),
            "tokenize": lambda c, **o: c.tokenize("p", model="m", **o),
            "detokenize": lambda c, **o: c.detokenize([1], model="m", **o),
            "rerank": lambda c, **o: c.rerank("q", ["a"], model="m", **o),
            "score": lambda c, **o: c.score("a", "b", model="m", **o),
            "models": lambda c, **o: c.models(**o),
            "version": lambda c, **o: c.version(**o),
            "health": lambda c, **o: c.health(**o),
        },
    ),
    "LLVM": (
        {},
        {
            "infer": lambda c, **o: c.infer("m", [1.0], **o),
            "batch_infer": lambda c, **o: c.batch_infer("m", [[1.0]], **o),
            "infer_many": lambda c, **o: c.infer_many("m", [[1.0]], **o),
            "model_info": lambda c, **o: c.model_info("m", **o),
            "models": lambda c, **o: c.models(**o),
            "optimize": lambda c, **o: c.optimize("m", "speed", **o),
            "reload": lambda c, **o: c.reload("m", **o),
            "statistics": lambda c, **o: c.statistics("m", **o),
            "status": lambda c, **o: c.status(**o),
        },
    ),
    "OVMS": (
        {"model": "m"},
        {
            "chat": lambda c, **o: c.chat(M, **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, **o),
            "completions": lambda c, **o: c.completions("p", **o),
            "embed": lambda c, **o: c.embed(["a"], **o),
            "rerank": lambda c, **o: c.rerank("q", ["a"], **o),
            "infer": lambda c, **o: c.infer(inputs={"x": [1.0]}, **o),
            "predict": lambda c, **o: c.predict(instances=[[1.0]], **o),
            "model_metadata": lambda c, **o: c.model_metadata(**o),
            "model_status": lambda c, **o: c.model_status(**o),
            "tfs_model_metadata": lambda c, **o: c.tfs_model_metadata(**o),
            "server_metadata": lambda c, **o: c.server_metadata(**o),
            "models": lambda c, **o: c.models(**o),
            "model_ready": lambda c, **o: c.model_ready(**o),
            "server_live": lambda c, **o: c.server_live(**o),
            "server_ready": lambda c, **o: c.server_ready(**o),
        },
    ),
    "OPEA": (
        {},
        {
            "chat": lambda c, **o: c.chat(M, **o),
            "stream_chat": lambda c, **o: c.stream_chat(M, **o),
            "chatqna": lambda c, **o: c.chatqna("q", **o),
            "stream_chatqna": lambda c, **o: c.stream_chatqna("q", **o),
            "codegen": lambda c, **o: c.codegen("q", **o),
            "stream_codegen": lambda c, **o: c.stream_codegen("q", **o),
            "docsum": lambda c, **o: c.docsum("t", **o),
            "stream_docsum": lambda c, **o: c.stream_docsum("t", **o),
            "faqgen": lambda c, **o: c.faqgen("t", **o),
            "stream_faqgen": lambda c, **o: c.stream_faqgen("t", **o),
            "embed": lambda c, **o: c.embed(["a"], **o),
            "guardrails": lambda c, **o: c.guardrails("t", **o),
            "ingest": lambda c, **o: c.ingest(links=["http://example.invalid/a"], **o),
            "rerank": lambda c, **o: c.rerank("q", ["a"], **o),
            "retrieve": lambda c, **o: c.retrieve("t", [0.1], **o),
            # OPEA's health check raises on an unhealthy service (and is retried): not a probe.
            "health": lambda c, **o: c.health(**o),
        },
    ),
}


def _noop_tool(x: int) -> int:
    """A tool the 503s never let the model call."""
    return x


def _run_tools_like(chat: Any) -> Any:
    """``run_tools`` called as the backend's ``chat`` entry calls chat (same messages, model and
    options), with a tool: the loop passes the call options on to every chat it makes."""

    def call(client: Any, **options: Any) -> Any:
        looping = types.SimpleNamespace(
            chat=lambda messages, **kw: client.run_tools(messages, tools=[_noop_tool], **kw)
        )
        return chat(looping, **options)

    return call


for _, _calls in CALLS.values():
    if "chat" in _calls:
        _calls["run_tools"] = _run_tools_like(_calls["chat"])

# Health and readiness probes report the state now: never retried, False on a 5xx.
PROBES = {
    (name, method)
    for name, (_, calls) in CALLS.items()
    for method in calls
    if method in ("health", "model_ready", "server_live", "server_ready") and name != "OPEA"
}


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if not name.startswith("_")
        and callable(getattr(cls, name))
        and name not in ("aclose", "with_options", "stats")
    }


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_registry_covers_every_public_method(name: str) -> None:
    assert _public_methods(getattr(asyncllm, name)) == set(CALLS[name][1])


async def _outcome(result: Any) -> Any:
    if isinstance(result, asyncllm.Stream):
        async with result as stream:
            return [item async for item in stream]
    return await result


@pytest.mark.parametrize(
    ("name", "method"), [(n, m) for n in sorted(CALLS) for m in sorted(CALLS[n][1])]
)
async def test_per_call_max_retries_on_every_call(name: str, method: str) -> None:
    from asyncllm.testing import MockTransport

    requests = 0

    def handler(request: Any) -> MockResponse:
        nonlocal requests
        requests += 1
        return MockResponse(503, json={"error": {"message": "busy"}})

    kwargs, calls = CALLS[name]
    client = getattr(asyncllm, name)(
        base_url="http://mock.invalid",
        transport=MockTransport(handler),
        dispatcher=asyncllm.Dispatcher(),
        retry=asyncllm.RetryConfig(max_retries=5, initial_delay=0, max_delay=0),
        **kwargs,
    )
    call = calls[method]
    for max_retries in (0, 2):
        requests = 0
        if (name, method) in PROBES:
            assert await _outcome(call(client, max_retries=max_retries)) is False
            assert requests == 1
        else:
            with pytest.raises(asyncllm.APIStatusError) as info:
                await _outcome(call(client, max_retries=max_retries))
            assert info.value.status_code == 503
            assert requests == max_retries + 1, (name, method, max_retries)
    await client.aclose()


def test_check_positive_takes_none_or_a_finite_number_above_zero() -> None:
    from asyncllm._validate import check_positive

    for value in (None, 0.5, 1, 1e300):
        check_positive("penalty", value)
    for value, message in (
        (0, "penalty must be > 0"),
        (-1.5, "penalty must be > 0"),
        (float("inf"), "penalty must be a number"),
        (float("nan"), "penalty must be a number"),
        (True, "penalty must be a number"),
        ("1", "penalty must be a number"),
    ):
        with pytest.raises(asyncllm.ConfigurationError, match=f"^{re.escape(message)}$"):
            check_positive("penalty", value)


def test_check_name_takes_none_or_a_non_empty_string() -> None:
    from asyncllm._validate import check_name

    for value in (None, "x", " padded "):
        check_name("index_name", value)
    for value in ("", 1, b"x", ["x"]):
        with pytest.raises(
            asyncllm.ConfigurationError, match=r"^index_name must be a non-empty string$"
        ):
            check_name("index_name", value)


async def test_a_misspelt_keyword_is_named_before_any_argument_is_checked() -> None:
    c = client(lambda r: ok())
    bad_tools = [{"type": "function", "function": {"name": "f", "description": 5}}]
    with pytest.raises(TypeError, match="'priorty'"):
        c.stream_chat(USER, model="m", tools=bad_tools, priorty=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'priorty'"):
        await c.chat(USER, model="m", temperature=9, priorty=0)  # type: ignore[call-arg]
    await c.aclose()
