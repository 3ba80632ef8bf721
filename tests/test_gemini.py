from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

import asyncllm
from asyncllm.backends.gemini import (
    GEMINI_BASE_URL,
    ContentBlockedError,
    Gemini,
    gemini_json_schema,
    model_resource,
    to_gemini_contents,
)
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from asyncllm.testing.fakes import _common
from asyncllm.testing.fakes.gemini import CORRUPTED_SIGNATURE, Signer
from tests.chat_contract import (
    NO_WAIT,
    ChatContract,
    Colour,
    Counts,
    Item,
    Order,
    Tree,
    get_weather,
)
from tests.specs import SPECS

PROTO_DIR = SPECS / "gemini/v1beta"
MODEL = "fake-chat"


class TestGeminiContract(ChatContract):
    protocol = "gemini"
    streamed_choices = False  # candidateCount (n) on chat only
    usage_counts = frozenset({"reasoning_tokens"})  # cachedContentTokenCount only with a cache
    # A Gemini 3 model: the fake then signs its answers and refuses a function call of the
    # current turn sent back without its signature, as Gemini 3 does.
    model = "gemini-3-flash-preview"
    structured = True
    open_maps_refused = False  # responseJsonSchema takes additionalProperties
    refusal_prompt = None  # Gemini has no refusal field (a safety block is ContentBlockedError)
    reasoning_options: ClassVar[dict[str, Any] | None] = {"include_thoughts": True}
    length_options: ClassVar[dict[str, Any]] = {"max_tokens": 3}
    signed_history = True
    builtin_tool: ClassVar[dict[str, Any] | None] = {"codeExecution": {}}
    builtin_kinds = frozenset({"googleSearch", "codeExecution"})

    def strict_on_wire(self, body: dict[str, Any]) -> bool:
        return bool(body.get("toolConfig") == {"functionCallingConfig": {"mode": "VALIDATED"}})

    def builtin_on_wire(self, body: dict[str, Any]) -> bool:
        return bool(
            body["tools"][1:] == [{"codeExecution": {}}]
            and body["tools"][0]["functionDeclarations"]
        )

    def builtin_sent_back(self, body: dict[str, Any]) -> bool:
        # The code the model ran and its result, in the model's turn.
        parts = body["contents"][1]["parts"]
        return {"executableCode", "codeExecutionResult"} <= {k for p in parts for k in p}

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.Gemini(api_key="g-test", base_url=server.url("/v1beta"), **kwargs)


PROTOCOLS = ("gemini",)


def make_client(server: FakeServer) -> Gemini:
    return Gemini(api_key="g-test", base_url=server.url("/v1beta"), retry=NO_WAIT)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- the protos: every key we send must be a field of the message it is in ---------------------

_SCALARS = {
    "string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "float", "double",
    "sint32", "sint64", "fixed32", "fixed64",
}  # fmt: skip
_FREE_FORM = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
_FIELD = re.compile(
    r"^(?:(?:optional|repeated)\s+)?(map<\s*\w+\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*\d+"
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def parse_protos(
    folder: Path,
) -> tuple[dict[str, dict[str, tuple[str, bool]]], dict[str, set[str]]]:
    """{message: {jsonName: (type, is_map)}}, {enum: {value names}}, names qualified by nesting."""
    messages: dict[str, dict[str, tuple[str, bool]]] = {}
    enums: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.proto")):
        text = re.sub(r"//[^\n]*", "", path.read_text())
        text = re.sub(r"\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]", "", text)  # field options
        text = re.sub(r"option\s*\([^;]*?\)\s*=\s*\{.*?\};", "", text, flags=re.DOTALL)
        stack: list[tuple[str, str]] = []  # (kind, qualified name)
        for raw in re.split(r"(?<=[{};])", text):
            statement = " ".join(raw.split())
            opened = re.match(r"^(message|enum|oneof|service|rpc.*?)\s*(\w*)\s*\{$", statement)
            if opened or statement.endswith("{"):
                kind = opened.group(1) if opened else "other"
                name = opened.group(2) if opened else ""
                outer = next((q for k, q in reversed(stack) if k in ("message", "enum")), "")
                if kind in ("message", "enum"):
                    qualified = f"{outer}.{name}" if outer else name
                    if kind == "message":
                        messages.setdefault(qualified, {})
                    else:
                        enums.setdefault(qualified, set())
                    stack.append((kind, qualified))
                else:
                    stack.append((kind, outer))
                continue
            if statement == "}":
                if stack:
                    stack.pop()
                continue
            if not stack:
                continue
            kind, owner = stack[-1]
            if kind == "oneof":
                kind = "message"
            if kind == "message":
                match = _FIELD.match(statement)
                if match:
                    is_map = match.group(1).startswith("map<")
                    ftype = match.group(2) if is_map else match.group(1)
                    messages[owner][_camel(match.group(3))] = (ftype, is_map)
            elif kind == "enum":
                match = re.match(r"^(\w+)\s*=\s*\d+", statement)
                if match:
                    enums[owner].add(match.group(1))
    return messages, enums


MESSAGES, ENUMS = parse_protos(PROTO_DIR)


def _resolve(type_name: str, scope: str) -> str:
    if type_name in _SCALARS or type_name in _FREE_FORM or type_name.startswith("google."):
        return type_name
    parts = scope.split(".")
    while True:
        candidate = ".".join([*parts, type_name]) if parts and parts[0] else type_name
        if candidate in MESSAGES or candidate in ENUMS:
            return candidate
        if not parts or not parts[0]:
            raise AssertionError(f"unknown proto type {type_name} (from {scope})")
        parts = parts[:-1]


def check_against_proto(value: Any, message: str, where: str = "") -> list[str]:
    """Everything in ``value`` (a request body) that the proto message does not define."""
    problems: list[str] = []
    if not isinstance(value, dict):
        return [f"{where or message}: expected an object for {message}"]
    fields = MESSAGES[message]
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            problems.append(f"{path}: {message} has no field {key!r}")
            continue
        ftype, is_map = fields[key]
        resolved = _resolve(ftype, message)
        values = list(item.values()) if is_map else item if isinstance(item, list) else [item]
        for i, v in enumerate(values):
            at = f"{path}[{i}]" if len(values) > 1 or isinstance(item, list) else path
            if resolved in MESSAGES:
                problems += check_against_proto(v, resolved, at)
            elif resolved in ENUMS and v not in ENUMS[resolved]:
                problems.append(f"{at}: {v!r} is not a {resolved} value")
    return problems


def test_proto_parser_sees_the_messages() -> None:
    # the parser itself must work, or the check below proves nothing
    assert "systemInstruction" in MESSAGES["GenerateContentRequest"]
    assert MESSAGES["Part"]["functionCall"] == ("FunctionCall", False)
    assert MESSAGES["Schema"]["properties"] == ("Schema", True)
    assert "candidatesTokenCount" in MESSAGES["GenerateContentResponse.UsageMetadata"]
    assert "ANY" in ENUMS["FunctionCallingConfig.Mode"]
    assert check_against_proto(
        {"contents": [{"role": "user", "partz": []}]}, "GenerateContentRequest"
    )
    assert check_against_proto({"toolConfig": {"functionCallingConfig": {"mode": "ALWAYS"}}}, "GenerateContentRequest")  # fmt: skip


class Answer(BaseModel):
    """A structured answer."""

    city: str
    degrees: float | None = None
    tags: list[str] = []


async def test_every_key_we_send_is_in_the_protos(client: Gemini, server: FakeServer) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    r = await client.chat(
        [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and exact"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}, "mime_type": "image/png"},
                ],
            },
        ],
        model=MODEL,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        max_tokens=100,
        stop=["END"],
        seed=7,
        n=2,
        response_format=Answer,
        safety_settings=[
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
        include_thoughts=True,
        thinking_budget=1024,
    )  # fmt: skip
    assert r.parsed == Answer(city="test")  # the fake fills what the schema requires
    assert r.reasoning == "thinking about: what is this"
    messages: list[Any] = [user("weather in Paris?")]
    first = await client.chat(messages, model=MODEL, tools=[get_weather], tool_choice="get_weather")
    messages += [first.message, asyncllm.tool_result(first.tool_calls[0], {"temp": 21})]
    await client.chat(messages, model=MODEL, tools=[get_weather, Answer], tool_choice="auto")
    async with client.stream_chat([user("hi")], model=MODEL, tools=[get_weather]) as stream:
        [c async for c in stream]
    await client.embed("one", model="fake-embed", task_type="RETRIEVAL_QUERY", dimensions=4)
    await client.embed(["a", "b"], model="fake-embed", title="doc", task_type="RETRIEVAL_DOCUMENT")
    await client.count_tokens([user("count me")], model=MODEL)
    await client.count_tokens([{"role": "system", "content": "s"}, user("x")], model=MODEL, tools=[get_weather])  # fmt: skip

    kinds = {
        "generateContent": "GenerateContentRequest",
        "streamGenerateContent": "GenerateContentRequest",
        "embedContent": "EmbedContentRequest",
        "batchEmbedContents": "BatchEmbedContentsRequest",
        "countTokens": "CountTokensRequest",
    }
    seen = set()
    problems = []
    for request in server.requests:
        method = request.path.rsplit(":", 1)[-1]
        seen.add(method)
        problems += check_against_proto(request.json, kinds[method], method)
    assert seen == set(kinds)
    assert problems == []
    config = server.requests[0].json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Answer.model_json_schema()  # as it is, not converted
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}


# -- message translation ----------------------------------------------------------------------


def test_roles_system_and_parts() -> None:
    contents, system = to_gemini_contents(
        [
            {"role": "system", "content": "one"},
            user("hello"),
            {"role": "assistant", "content": "hi"},
            {"role": "developer", "content": "two"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
        ]
    )  # fmt: skip
    assert system == {"parts": [{"text": "one"}, {"text": "two"}]}
    assert contents == [
        {"role": "user", "parts": [{"text": "hello"}]},
        {"role": "model", "parts": [{"text": "hi"}]},
        {"role": "user", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}]},
    ]


def test_tool_results_become_one_user_turn_named_by_call() -> None:
    calls = [
        {
            "id": "gcall_0_aa",
            "type": "function",
            "function": {"name": "a", "arguments": '{"x": 1}'},
        },
        {"id": "srv-id-7", "type": "function", "function": {"name": "b", "arguments": "{}"}},
    ]
    contents, _ = to_gemini_contents(
        [
            user("go"),
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "gcall_0_aa", "content": "plain text"},
            {"role": "tool", "tool_call_id": "srv-id-7", "content": '{"ok": true}'},
        ]
    )
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}},  # our synthetic id is not sent
            {"functionCall": {"name": "b", "args": {}, "id": "srv-id-7"}},
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "a", "response": {"output": "plain text"}}},
            {"functionResponse": {"name": "b", "response": {"ok": True}, "id": "srv-id-7"}},
        ],
    }


@pytest.mark.parametrize(
    "messages",
    [
        [user("x"), {"role": "tool", "tool_call_id": "nobody", "content": "r"}],
        [{"role": "system", "content": "only a system message"}],
        [{"role": "user", "content": [{"type": "audio", "data": "x"}]}],
        [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}],
    ],
)  # fmt: skip
def test_bad_messages_are_refused(messages: list[Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        to_gemini_contents(messages)


@pytest.mark.parametrize(
    ("model", "resource"),
    [
        ("gemini-2.0-flash", "models/gemini-2.0-flash"),
        ("models/gemini-1.5-pro-002", "models/gemini-1.5-pro-002"),
        ("tunedModels/my-model-1", "tunedModels/my-model-1"),
    ],
)
def test_model_resource(model: str, resource: str) -> None:
    assert model_resource(model) == resource


@pytest.mark.parametrize("model", ["", "../x", "models/a/b", "models/a:b", "files/x", "a?b=1"])
async def test_bad_model_refused_before_sending(
    client: Gemini, server: FakeServer, model: str
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.chat([user("x")], model=model)
    assert server.request_count == 0


# -- calls against the fake -------------------------------------------------------------------


async def test_wire_request_shape(client: Gemini, server: FakeServer) -> None:
    await client.chat(
        [{"role": "system", "content": "sys"}, user("hi")],
        model="models/fake-chat",
        max_tokens=5,
        stop="END",
        tool_choice="none",
        tools=[get_weather],
    )
    sent = server.requests[-1]
    assert sent.path == "/v1beta/models/fake-chat:generateContent"
    assert sent.headers["x-goog-api-key"] == "g-test"
    assert "Authorization" not in sent.headers
    assert sent.json["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert sent.json["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert sent.json["generationConfig"] == {"maxOutputTokens": 5, "stopSequences": ["END"]}
    assert sent.json["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    declaration = sent.json["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["description"] == "Current weather in a city."
    assert declaration["parametersJsonSchema"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    }
    assert "parameters" not in declaration


async def test_stream_uses_sse_and_tool_ids_match_chat(client: Gemini, server: FakeServer) -> None:
    chat = await client.chat([user("x")], model=MODEL, tools=[get_weather])
    async with client.stream_chat([user("x")], model=MODEL, tools=[get_weather]) as stream:
        chunks = [c async for c in stream]
    sent = server.requests[-1]
    assert sent.path == "/v1beta/models/fake-chat:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    calls = [d for c in chunks for d in c.tool_calls]
    assert len(calls) == 1
    assert calls[0].id == chat.tool_calls[0].id  # synthetic, and stable
    assert calls[0].id.startswith("gcall_")
    assert json.loads(calls[0].arguments) == {"city": "test"}
    assert chunks[-1].finish_reason == "tool_calls"
    assert chat.finish_reason == "tool_calls"


async def test_candidate_count_gives_choices(client: Gemini) -> None:
    r = await client.chat([user("many")], model=MODEL, n=3)
    assert [m.content for m in r.choices] == ["echo: many"] * 3


async def test_prompt_block_is_a_typed_error(server: FakeServer) -> None:
    client = Gemini(
        api_key="k",
        base_url=server.url("/v1beta"),
        retry=NO_WAIT,
        breaker=asyncllm.BreakerConfig(failure_threshold=1, reset_timeout=60),
    )
    async with client:
        with pytest.raises(ContentBlockedError) as info:
            await client.chat([user("please BLOCKME now")], model=MODEL)
        assert (await client.chat([user("fine")], model=MODEL)).text == "echo: fine"
    error = info.value
    assert error.block_reason == "SAFETY"
    assert error.safety_ratings[0]["category"] == "HARM_CATEGORY_DANGEROUS_CONTENT"
    assert error.request_id == server.request_ids[0]
    assert server.request_count == 2  # not retried, and the breaker did not open


async def test_safety_finish_without_content_is_a_typed_error(client: Gemini) -> None:
    with pytest.raises(ContentBlockedError) as info:
        await client.chat([user("UNSAFEREPLY")], model=MODEL)
    assert info.value.finish_reason == "SAFETY"
    assert info.value.block_reason is None


async def test_block_in_stream_raises(client: Gemini) -> None:
    with pytest.raises(ContentBlockedError):
        async with client.stream_chat([user("BLOCKME")], model=MODEL) as stream:
            [c async for c in stream]


async def test_embed_one_and_batch_in_order(client: Gemini, server: FakeServer) -> None:
    one = await client.embed("alpha", model="fake-embed")
    assert one.vectors == [pytest.approx(_common.vector("alpha"))]
    assert server.requests[-1].path == "/v1beta/models/fake-embed:embedContent"
    texts = ["alpha", "beta", "gamma"]
    batch = await client.embed(texts, model="fake-embed", dimensions=4)
    sent = server.requests[-1]
    assert sent.path == "/v1beta/models/fake-embed:batchEmbedContents"
    assert [r["model"] for r in sent.json["requests"]] == ["models/fake-embed"] * 3
    assert batch.vectors == [pytest.approx(_common.vector(t, 4)) for t in texts]


async def test_embed_splits_long_lists_under_one_request_id(
    client: Gemini, server: FakeServer
) -> None:
    texts = [f"text {i}" for i in range(230)]
    result = await client.embed(texts, model="fake-embed")
    assert server.request_count == 3
    assert sorted(len(r.json["requests"]) for r in server.requests) == [30, 100, 100]
    assert len(set(server.request_ids)) == 1
    assert result.request_id == server.request_ids[0]
    assert result.vectors[150] == pytest.approx(_common.vector("text 150"))


async def test_count_tokens(client: Gemini, server: FakeServer) -> None:
    assert await client.count_tokens([user("one two three")], model=MODEL) == 3
    assert server.requests[-1].json == {
        "contents": [{"role": "user", "parts": [{"text": "one two three"}]}]
    }
    total = await client.count_tokens(
        [{"role": "system", "content": "be nice"}, user("one")], model=MODEL
    )
    assert total == 3
    inner = server.requests[-1].json["generateContentRequest"]
    assert inner["model"] == "models/fake-chat"
    assert inner["systemInstruction"] == {"parts": [{"text": "be nice"}]}


async def test_models_follow_page_tokens(client: Gemini, server: FakeServer) -> None:
    models = await client.models()
    assert [m.id for m in models] == [
        "fake-chat",
        "fake-chat-lite",
        "fake-embed",
        "fake-chat-pro",
        "fake-vision",
    ]
    assert server.request_count == 3
    assert "pageToken" not in server.requests[0].query
    assert server.requests[1].query["pageToken"]
    assert models[2].supported_generation_methods == ["embedContent", "batchEmbedContents"]  # type: ignore[attr-defined]


async def test_rpc_error_body_is_read(server: FakeServer) -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Quota exceeded for metric generate_content_free_tier_requests",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7.5s"},
            ],
        }
    }
    server.fail_next(1, status=429, body=body)
    server.fail_next(1, status=400)
    async with Gemini(api_key="k", base_url=server.url("/v1beta"), max_retries=0) as client:
        with pytest.raises(asyncllm.RateLimitError) as limited:
            await client.chat([user("x")], model=MODEL)
        with pytest.raises(asyncllm.BadRequestError) as bad:
            await client.chat([user("x")], model=MODEL)
    assert limited.value.message.startswith("Quota exceeded")
    assert limited.value.error_type == "RESOURCE_EXHAUSTED"
    assert limited.value.retry_after == 7.5  # from RetryInfo, as no header said
    assert bad.value.error_type == "INVALID_ARGUMENT"
    assert bad.value.code == "INVALID_ARGUMENT"
    assert bad.value.retry_after is None


async def test_retry_info_drives_the_retry(server: FakeServer) -> None:
    server.fail_next(2, status=429)  # the fake's 429 body says retryDelay "0s"
    async with Gemini(api_key="k", base_url=server.url("/v1beta"), max_retries=2) as client:
        r = await client.chat([user("again")], model=MODEL)
    assert r.text == "echo: again"
    assert server.request_count == 3


async def test_malformed_and_dropped_answers(client: Gemini, server: FakeServer) -> None:
    server.malformed_next(1)
    with pytest.raises(asyncllm.ResponseValidationError) as info:
        await client.chat([user("x")], model=MODEL)
    assert info.value.request_id == server.request_ids[-1]
    server.malformed_next(1)
    with pytest.raises(asyncllm.ResponseValidationError):
        async with client.stream_chat([user("x")], model=MODEL) as stream:
            [c async for c in stream]
    server.drop_next(1)
    r = await client.chat([user("after a drop")], model=MODEL)
    assert r.text == "echo: after a drop"


async def test_missing_key_is_refused_by_the_fake(server: FakeServer) -> None:
    async with Gemini(base_url=server.url("/v1beta"), max_retries=0) as client:
        with pytest.raises(asyncllm.PermissionDeniedError) as info:
            await client.chat([user("x")], model=MODEL)
    assert info.value.error_type == "PERMISSION_DENIED"


def test_key_from_env_and_required_for_google(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(asyncllm.ConfigurationError, match="GEMINI_API_KEY"):
        Gemini()
    monkeypatch.setenv("GOOGLE_API_KEY", "from-google-env")
    client = Gemini()
    assert client.base_url == GEMINI_BASE_URL
    assert client._headers["x-goog-api-key"] == "from-google-env"
    assert "from-google-env" not in repr(client)
    monkeypatch.setenv("GEMINI_API_KEY", "from-gemini-env")
    assert Gemini()._headers["x-goog-api-key"] == "from-gemini-env"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 3},
        {"top_k": 0},
        {"n": 0},
        {"tool_choice": "unknown_tool"},
        {"response_format": "json"},
        {"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT"}]},
        {"generation_config": ["not", "a", "mapping"]},
        {"include_thoughts": 1},
        {"thinking_budget": -2},
        {"thinking_level": "max"},
        {"thinking_level": "low", "thinking_budget": 128},  # the API takes one or the other
    ],
)
async def test_bad_arguments_are_refused(
    client: Gemini, server: FakeServer, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.chat([user("x")], model=MODEL, **kwargs)
    assert server.request_count == 0


# -- answers Gemini may give that the fake does not -----------------------------------------------


def mock_client(*responses: MockResponse) -> tuple[Gemini, MockTransport]:
    queue = list(responses)
    transport = MockTransport(lambda request: queue.pop(0))
    return Gemini(api_key="k", transport=transport, retry=NO_WAIT), transport


async def test_server_ids_and_thought_signatures_round_trip() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {
                            "functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Oslo"}},
                            "thoughtSignature": "c2lnbmF0dXJl",
                        },
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 20, "thoughtsTokenCount": 13},
        "responseId": "r-1",
        "modelVersion": "gemini-2.5-flash",
    }  # fmt: skip
    final = {"candidates": [{"content": {"role": "model", "parts": [{"text": "cold"}]}, "finishReason": "STOP"}]}  # fmt: skip
    client, transport = mock_client(MockResponse(json=answer), MockResponse(json=final))
    async with client:
        first = await client.chat([user("weather?")], model="gemini-2.5-flash", tools=[get_weather])
        assert first.text == ""  # the thought is not the answer
        assert first.tool_calls[0].id == "fc-1"
        assert first.server_request_id == "r-1"
        assert first.usage is not None
        assert first.usage.thoughts_token_count == 13  # type: ignore[attr-defined]
        messages: list[Any] = [
            user("weather?"),
            first.message,
            asyncllm.tool_result(first.tool_calls[0], "cold"),
        ]
        second = await client.chat(messages, model="gemini-2.5-flash", tools=[get_weather])
    assert second.text == "cold"
    sent = transport.requests[1].json()
    assert sent["contents"][1]["parts"][1]["thoughtSignature"] == "c2lnbmF0dXJl"
    assert sent["contents"][2]["parts"][0]["functionResponse"]["id"] == "fc-1"
    assert check_against_proto(sent, "GenerateContentRequest") == []


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"candidates": []}, asyncllm.ResponseValidationError),
        ({"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}, asyncllm.ResponseValidationError),
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, ContentBlockedError),
        ({"candidates": [{"finishReason": "RECITATION", "content": {"parts": []}}]}, ContentBlockedError),
    ],
)  # fmt: skip
async def test_bad_or_blocked_answers(payload: Any, error: type[Exception]) -> None:
    client, _ = mock_client(MockResponse(json=payload))
    async with client:
        with pytest.raises(error):
            await client.chat([user("x")], model=MODEL)


async def test_max_tokens_finish_with_text_is_an_answer() -> None:
    payload = {"candidates": [{"content": {"parts": [{"text": "partial"}]}, "finishReason": "MAX_TOKENS"}]}  # fmt: skip
    client, _ = mock_client(MockResponse(json=payload))
    async with client:
        r = await client.chat([user("x")], model=MODEL)
    assert (r.text, r.finish_reason) == ("partial", "length")


async def test_error_event_inside_a_stream() -> None:
    events = [
        {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]},
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    client, transport = mock_client(
        MockResponse(chunks=[body], headers={"content-type": "text/event-stream"})
    )
    got = []
    async with client:
        with pytest.raises(asyncllm.InternalServerError) as info:
            async with client.stream_chat([user("x")], model=MODEL) as stream:
                async for chunk in stream:
                    got.append(chunk.delta)
    assert got == ["Hel"]
    assert info.value.error_type == "UNAVAILABLE"
    assert transport.requests[0].params == {"alt": "sse"}


async def test_error_event_in_a_stream_carries_retry_info_and_untyped_codes_stay_plain() -> None:
    limited = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
            ],
        }
    }  # fmt: skip
    no_code = {"error": {"message": "something broke", "status": "UNKNOWN"}}
    responses = [
        MockResponse(chunks=[b"data: " + json.dumps(e).encode() + b"\n\n"], headers={"content-type": "text/event-stream"})
        for e in (limited, no_code)
    ]  # fmt: skip
    client, _ = mock_client(*responses)
    async with client:
        with pytest.raises(asyncllm.RateLimitError) as info:
            async with client.stream_chat([user("x")], model=MODEL, max_retries=0) as stream:
                [c async for c in stream]
        with pytest.raises(asyncllm.APIError) as plain:
            async with client.stream_chat([user("x")], model=MODEL, max_retries=0) as stream:
                [c async for c in stream]
    assert info.value.retry_after == 1.5
    assert info.value.code == "RATE_LIMIT_EXCEEDED"
    assert info.value.error_type == "RESOURCE_EXHAUSTED"
    assert type(plain.value) is asyncllm.APIError
    assert plain.value.message == "something broke"


# -- options: declared once, checked before anything is sent ------------------------------------


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("chat", ([user("x")],), {"model": MODEL, "temprature": 0.5}),
        ("chat", ([user("x")],), {"model": MODEL, "extra_bdy": {}}),
        ("stream_chat", ([user("x")],), {"model": MODEL, "temprature": 0.5}),
        ("embed", (["a", "b"],), {"model": "fake-embed", "task": "RETRIEVAL_QUERY"}),
        ("count_tokens", ([user("x")],), {"model": MODEL, "priorty": 1}),
        ("models", (), {"extra_body": {"a": 1}}),  # a GET has no body to merge into
    ],
)
async def test_misspelt_options_are_a_type_error_before_sending(
    client: Gemini, server: FakeServer, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        result = getattr(client, method)(*args, **kwargs)
        if method == "stream_chat":
            async with result as stream:
                [c async for c in stream]
        else:
            await result
    assert server.request_count == 0


async def test_client_model_and_extra_options_reach_the_wire(server: FakeServer) -> None:
    async with Gemini(api_key="k", base_url=server.url("/v1beta"), model=MODEL) as client:
        r = await client.chat(
            [user("hi")],
            max_tokens=5,
            extra_body={"generationConfig": {"responseLogprobs": True}},
            extra_query={"trace": "1"},
            extra_headers={"x-trace": "t-1"},
        )
        assert r.text == "echo: hi"
        sent = server.requests[-1]
        assert sent.path == "/v1beta/models/fake-chat:generateContent"
        # extra_body merges into the generationConfig the SDK built
        assert sent.json["generationConfig"] == {"maxOutputTokens": 5, "responseLogprobs": True}
        assert sent.query == {"trace": "1"}
        assert sent.headers["x-trace"] == "t-1"
        async with client.stream_chat([user("hi")], extra_query={"trace": "2"}) as stream:
            [c async for c in stream]
        assert server.requests[-1].query == {"alt": "sse", "trace": "2"}
        assert await client.count_tokens([user("one two")]) == 2
        await client.embed("a", model="fake-embed", extra_body={"taskType": "CLUSTERING"})
        assert server.requests[-1].json["taskType"] == "CLUSTERING"


async def test_embed_batch_error_is_raised_as_itself_without_partial_results(
    server: FakeServer,
) -> None:
    server.fail_next(1, status=400)
    async with Gemini(api_key="k", base_url=server.url("/v1beta"), max_retries=0) as client:
        with pytest.raises(asyncllm.BadRequestError) as info:
            await client.embed([f"text {i}" for i in range(230)], model="fake-embed")
        assert info.value.request_id == server.request_ids[0]
        assert len(set(server.request_ids)) == 1  # every sub-call sent under one request ID
        ok = await client.embed(["a", "b"], model="fake-embed")
    assert len(ok.vectors) == 2


# -- structured output, reasoning and thought signatures ----------------------------------------

GEMINI_3 = "gemini-3-flash-preview"


class Sized(BaseModel):
    """Int enums and minimums, which the OpenAPI-subset ``responseSchema`` lost."""

    size: Literal[2, 3]
    count: int = Field(ge=5)


class Described(BaseModel):
    item: Item = Field(title="The item", description="what was bought")


@pytest.mark.parametrize(
    ("model", "parsed"),
    [
        (Order, Order(colour=Colour.RED, items=[Item(name="test")])),
        (Sized, Sized(size=2, count=5)),  # the int enum and the minimum reached the fake
        (Tree, Tree(value=1)),  # recursive: refused before
        (Counts, Counts(counts={})),  # an open map: sent as an empty object before
        (Described, Described(item=Item(name="test"))),  # $ref with a title beside it
    ],
)
async def test_response_format_is_a_json_schema_and_parsed(
    client: Gemini, server: FakeServer, model: type[BaseModel], parsed: BaseModel
) -> None:
    r = await client.chat([user("extract")], model=MODEL, response_format=model)
    assert r.parsed == parsed and type(r.parsed) is model
    config = server.requests[-1].json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == gemini_json_schema(model.model_json_schema())
    assert "responseSchema" not in config
    async with client.stream_chat([user("extract")], model=MODEL, response_format=model) as stream:
        final = await stream.final()
    assert final.parsed == parsed
    assert server.requests[-1].json["generationConfig"] == config


async def test_open_maps_and_recursion_reach_the_wire_as_json_schema(
    client: Gemini, server: FakeServer
) -> None:
    await client.chat([user("x")], model=MODEL, response_format=Counts)
    schema = server.requests[-1].json["generationConfig"]["responseJsonSchema"]
    assert schema["properties"]["counts"]["additionalProperties"] == {"type": "integer"}
    await client.chat([user("x")], model=MODEL, response_format=Tree)
    schema = server.requests[-1].json["generationConfig"]["responseJsonSchema"]
    assert schema["$ref"] == "#/$defs/Tree"
    assert schema["$defs"]["Tree"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}


def test_gemini_json_schema_wraps_a_ref_with_keys_beside_it() -> None:
    schema = Described.model_json_schema()
    fixed = gemini_json_schema(schema)
    assert fixed["properties"]["item"] == {
        "title": "The item",
        "description": "what was bought",
        "anyOf": [{"$ref": "#/$defs/Item"}],
    }
    assert fixed["$defs"] == schema["$defs"]
    assert schema["properties"]["item"]["$ref"] == "#/$defs/Item"  # the input is not changed
    # What Gemini takes already is sent as it is, not copied.
    plain = {"$ref": "#/$defs/A", "description": "d", "default": None, "$defs": {"A": {}}}
    assert gemini_json_schema(plain) is plain
    tree = Tree.model_json_schema()
    assert gemini_json_schema(tree) is tree


async def test_the_fake_refuses_a_ref_with_keys_beside_it(
    client: Gemini, server: FakeServer
) -> None:
    schema = {
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item", "title": "T"}},
        "$defs": {"Item": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    with pytest.raises(asyncllm.BadRequestError, match=r"\$ref 'Item' was set alongside"):
        await client.chat(
            [user("x")],
            model=MODEL,
            generation_config={
                "responseMimeType": "application/json",
                "responseJsonSchema": schema,
            },
        )
    with pytest.raises(asyncllm.BadRequestError, match="response_mime_type"):
        await client.chat([user("x")], model=MODEL, generation_config={"responseJsonSchema": {}})


@pytest.mark.parametrize(
    ("response_format", "parsed", "config"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"a": 1},
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]}}},
            {"b": True},
            {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ),
        ({"type": "json_object"}, {"answer": "test"}, None),
    ],
)  # fmt: skip
async def test_schema_dicts_and_openai_dicts(
    client: Gemini, server: FakeServer, response_format: Any, parsed: Any, config: Any
) -> None:
    r = await client.chat([user("x")], model=MODEL, response_format=response_format)
    assert r.parsed == parsed
    sent = server.requests[-1].json["generationConfig"]
    assert sent["responseMimeType"] == "application/json"
    assert sent.get("responseJsonSchema") == config


async def test_text_response_format_sends_nothing(client: Gemini, server: FakeServer) -> None:
    r = await client.chat([user("x")], model=MODEL, response_format={"type": "text"})
    assert r.text == "echo: x" and r.parsed is None
    assert "generationConfig" not in server.requests[-1].json


async def test_an_answer_cut_at_max_tokens(client: Gemini) -> None:
    r = await client.chat([user("one two three four")], model=MODEL, max_tokens=3)
    assert (r.text, r.finish_reason) == ("echo: one two", "length")
    with pytest.raises(asyncllm.LengthFinishReasonError) as info:
        await client.chat([user("x")], model=MODEL, response_format=Order, max_tokens=3)
    assert info.value.text == '{"colour": "red", "items":'
    with pytest.raises(asyncllm.LengthFinishReasonError):
        async with client.stream_chat(
            [user("x")], model=MODEL, response_format=Order, max_tokens=3
        ) as stream:
            await stream.final()


async def test_an_answer_that_does_not_validate() -> None:
    payload = {"candidates": [{"content": {"parts": [{"text": '{"colour": "green"}'}]}, "finishReason": "STOP"}]}  # fmt: skip
    client, _ = mock_client(MockResponse(json=payload))
    async with client:
        with pytest.raises(asyncllm.StructuredOutputError) as info:
            await client.chat([user("x")], model=MODEL, response_format=Order)
    assert info.value.text == '{"colour": "green"}'


async def test_thinking_options_on_the_wire(client: Gemini, server: FakeServer) -> None:
    await client.chat([user("x")], model=GEMINI_3, thinking_level="low")
    assert server.requests[-1].json["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "LOW"}}  # fmt: skip
    await client.chat([user("x")], model="gemini-2.5-flash", thinking_budget=0)
    assert server.requests[-1].json["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0}}  # fmt: skip
    r = await client.chat([user("x")], model="gemini-2.5-flash", thinking_budget=0)
    assert r.message.model_extra == {}  # thinking off: nothing signed, nothing kept


async def test_thoughts_are_reasoning_not_text(client: Gemini) -> None:
    r = await client.chat([user("hello there")], model=MODEL, include_thoughts=True)
    assert r.text == "echo: hello there" and r.message.content == "echo: hello there"
    assert r.reasoning == "thinking about: hello there"
    assert r.usage is not None and r.usage.thoughts_token_count == 4  # type: ignore[attr-defined]
    chunks = []
    async with client.stream_chat(
        [user("hello there")], model=MODEL, include_thoughts=True
    ) as stream:
        async for chunk in stream:
            chunks.append(chunk)
        final = await stream.final()
    assert len([c for c in chunks if c.reasoning]) >= 2  # thoughts stream piece by piece
    assert "".join(c.reasoning for c in chunks) == r.reasoning
    assert "".join(c.delta for c in chunks) == r.text
    assert (final.text, final.reasoning) == (r.text, r.reasoning)
    plain = await client.chat([user("hello there")], model=MODEL)
    assert plain.reasoning is None


async def test_a_gemini_3_tool_loop_keeps_its_signatures(client: Gemini) -> None:
    messages: list[Any] = [user("weather in Paris?")]
    first = await client.chat(messages, model=GEMINI_3, tools=[get_weather])
    parts = first.message.model_extra["gemini_parts"]  # type: ignore[index]
    assert "thoughtSignature" in parts[0] and "functionCall" in parts[0]
    messages += [first.message, asyncllm.tool_result(first.tool_calls[0], "sunny")]
    second = await client.chat(messages, model=GEMINI_3, tools=[get_weather])
    assert second.text == "tool get_weather returned: sunny"
    # The same history without the signature is refused, as Gemini 3 refuses it.
    stripped = [user("weather in Paris?"), first.message.to_dict(), messages[2]]
    del stripped[1]["gemini_parts"]
    with pytest.raises(asyncllm.BadRequestError) as info:
        await client.chat(stripped, model=GEMINI_3, tools=[get_weather])
    assert info.value.message is not None
    assert info.value.message.startswith("Function call is missing a thought_signature")
    assert "`default_api:get_weather` , position 2" in info.value.message
    assert info.value.error_type == "INVALID_ARGUMENT"
    # Gemini 2.5 signs too, but does not refuse.
    ok = await client.chat(stripped, model="gemini-2.5-flash", tools=[get_weather])
    assert ok.text == "tool get_weather returned: sunny"


async def test_a_streamed_tool_loop_keeps_its_signatures(client: Gemini) -> None:
    messages: list[Any] = [user("weather in Paris?")]
    async with client.stream_chat(messages, model=GEMINI_3, tools=[get_weather]) as stream:
        first = await stream.final()
    assert first.message.model_extra is not None
    assert "thoughtSignature" in first.message.model_extra["gemini_parts"][0]
    messages += [first.message, asyncllm.tool_result(first.tool_calls[0], "sunny")]
    async with client.stream_chat(messages, model=GEMINI_3, tools=[get_weather]) as stream:
        second = await stream.final()
    assert second.text == "tool get_weather returned: sunny"


async def test_a_streamed_signature_on_an_empty_text_part_is_kept(
    client: Gemini, server: FakeServer
) -> None:
    async with client.stream_chat(
        [user("hello there")], model=GEMINI_3, include_thoughts=True
    ) as stream:
        chunks = [c async for c in stream]
        final = await stream.final()
    events = server.requests[-1]
    assert events.path.endswith(":streamGenerateContent")
    last = chunks[-1].raw["candidates"][0]["content"]["parts"]
    assert last[0]["text"] == "" and "thoughtSignature" in last[0]  # as Gemini sends it
    assert [c.message_extra for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    parts = final.message.model_extra["gemini_parts"]  # type: ignore[index]
    assert parts == [
        {"text": "thinking about: hello there", "thought": True},
        {"text": "echo: hello there", "thoughtSignature": last[0]["thoughtSignature"]},
    ]
    # The answer goes back with its signature and is taken; a signature Gemini did not give is
    # refused.
    messages: list[Any] = [user("hello there"), final.message, user("and again")]
    again = await client.chat(messages, model=GEMINI_3)
    assert again.text == "echo: and again"
    forged = final.message.to_dict()
    forged["gemini_parts"][1]["thoughtSignature"] = "c2lnbmF0dXJl"
    with pytest.raises(asyncllm.BadRequestError, match=CORRUPTED_SIGNATURE):
        await client.chat([user("hello there"), forged, user("and again")], model=GEMINI_3)


def call_part(name: str, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": {}}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def history(*steps: list[dict[str, Any]], fresh_turn: bool = False) -> list[Any]:
    """A user turn, then a model step (``gemini_parts``) and its function results per step."""
    messages: list[Any] = [user("go")]
    for i, parts in enumerate(steps):
        calls = [
            {"id": f"c{i}_{j}", "type": "function", "function": {"name": p["functionCall"]["name"], "arguments": "{}"}}
            for j, p in enumerate(parts)
        ]  # fmt: skip
        messages.append({"role": "assistant", "content": None, "tool_calls": calls, "gemini_parts": parts})  # fmt: skip
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls]
    if fresh_turn:
        messages.append(user("next question"))
    return messages


async def test_the_fake_checks_the_first_call_of_every_step_of_the_current_turn(
    client: Gemini,
) -> None:
    first = await client.chat([user("go")], model=GEMINI_3, tools=[get_weather])
    signed = first.message.model_extra["gemini_parts"][0]  # type: ignore[index]
    sig = signed["thoughtSignature"]
    other = Signer().sign(call_part("get_weather"))  # another server's secret
    cases: list[tuple[list[Any], str | None]] = [
        (history([call_part("get_weather", sig)]), None),
        # parallel calls: only the first part of a step carries the signature
        (history([call_part("get_weather", sig), call_part("get_time")]), None),
        (history([call_part("get_time"), call_part("get_weather", sig)]), "get_time` , position 2"),
        # every step of the current turn is checked, not only the last
        (history([call_part("get_weather")], [call_part("get_weather", sig)]), "position 2"),
        (history([call_part("get_weather", sig)], [call_part("get_weather")]), "position 4"),
        # an earlier turn is not checked
        (history([call_part("get_weather")], fresh_turn=True), None),
        (history([call_part("get_weather", "skip_thought_signature_validator")]), None),
        (history([call_part("get_weather", "context_engineering_is_the_way_to_go")]), None),
        (history([call_part("get_weather", other)]), CORRUPTED_SIGNATURE),
        (history([call_part("get_time", sig)]), CORRUPTED_SIGNATURE),  # signed another call
    ]
    for messages, refused in cases:
        if refused is None:
            r = await client.chat(messages, model=GEMINI_3)
            assert r.text
        else:
            with pytest.raises(asyncllm.BadRequestError) as info:
                await client.chat(messages, model=GEMINI_3)
            assert refused in str(info.value.message), messages


async def test_streamed_parts_are_put_back_together() -> None:
    events = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "I ", "thought": True}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "think", "thought": True, "thoughtSignature": "dGhvdWdodA=="}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}, {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Y2FsbA=="}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "", "thoughtSignature": "ZW5k"}]}, "finishReason": "STOP"}]},
    ]  # fmt: skip
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    client, _ = mock_client(
        MockResponse(chunks=[body], headers={"content-type": "text/event-stream"})
    )
    async with client, client.stream_chat([user("x")], model=MODEL) as stream:
        chunks = [c async for c in stream]
        final = await stream.final()
    assert [c.reasoning for c in chunks] == ["I ", "think", "", "", ""]
    assert final.text == "Hello" and final.reasoning == "I think"
    assert final.tool_calls[0].name == "f"
    assert final.message.model_extra == {
        "gemini_parts": [
            {"text": "I think", "thought": True, "thoughtSignature": "dGhvdWdodA=="},
            {"text": "Hello"},
            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Y2FsbA=="},
            {"text": "", "thoughtSignature": "ZW5k"},
        ]
    }
    assert chunks[-1].message_extra == final.message.model_extra


async def test_a_part_with_nothing_in_it_then_text() -> None:
    # Found by the fuzz tests: an empty part was taken for an open text part.
    events = [
        {"candidates": [{"content": {"parts": [{}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "a", "thought": False}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "b", "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}]},
    ]  # fmt: skip
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    client, _ = mock_client(MockResponse(chunks=[body], headers={"content-type": "text/event-stream"}))  # fmt: skip
    async with client, client.stream_chat([user("x")], model=MODEL) as stream:
        final = await stream.final()
    assert final.message.model_extra == {
        "gemini_parts": [{}, {"text": "ab", "thoughtSignature": "c2ln"}]
    }


@pytest.mark.parametrize(
    "schema",
    [{"type": "object", "properties": 5}, {"type": "object", "required": 5, "properties": {}}],
)
async def test_a_schema_that_is_no_schema_is_a_400_from_the_fake(
    client: Gemini, schema: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.BadRequestError, match="not a valid schema"):
        await client.chat([user("x")], model=MODEL, response_format=schema)


async def test_tool_parameters_are_sent_as_json_schema(client: Gemini, server: FakeServer) -> None:
    # int enums, open maps and recursion: what the OpenAPI-subset ``parameters`` lost or refused
    first = await client.chat([user("x")], model=MODEL, tools=[Sized, Counts, Tree, Described])
    declarations = server.requests[-1].json["tools"][0]["functionDeclarations"]
    sent = {d["name"]: d["parametersJsonSchema"] for d in declarations}
    assert sent["Sized"]["properties"]["size"]["enum"] == [2, 3]
    assert sent["Counts"]["properties"]["counts"]["additionalProperties"] == {"type": "integer"}
    tree = sent["Tree"]
    assert tree["$ref"] == "#/$defs/Tree"
    assert tree["$defs"]["Tree"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert sent["Described"]["properties"]["item"]["anyOf"] == [{"$ref": "#/$defs/Item"}]
    assert first.tool_calls[0].args() == {"size": 2, "count": 5}  # the fake read the schema
    await client.chat([user("x")], model=MODEL, tools=[{"name": "ping"}])
    assert server.requests[-1].json["tools"] == [{"functionDeclarations": [{"name": "ping"}]}]
