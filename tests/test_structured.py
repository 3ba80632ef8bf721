"""Structured output written once: reading ``response_format``, OpenAI's strict schema, parsing the
answer back (``finish``), the foreign reasoning a backend drops, and ``ChatStream.final``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import asyncllm
from asyncllm._models import ChatChunk, ChatResponse, Message, ToolCallDelta, normalize_messages
from asyncllm._structured import OutputFormat, finish, output_format, strict_schema
from asyncllm.streaming import ChatStream, Stream
from tests.chat_contract import Colour, Item, Order, Tree
from tests.chat_contract import Counts as Open


def response(text: str, **fields: Any) -> ChatResponse[Any]:
    message = Message(role="assistant", content=text)
    return ChatResponse(text=text, message=message, request_id="req_1", **fields)


def test_model_becomes_a_strict_json_schema() -> None:
    fmt = output_format(Order)
    assert fmt is not None and fmt.model is Order and fmt.name == "Order"
    sent = fmt.openai()
    assert sent["type"] == "json_schema"
    spec = sent["json_schema"]
    assert spec["name"] == "Order" and spec["strict"] is True
    schema = spec["schema"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["colour", "items", "note"]  # every property, defaults too
    item = schema["$defs"]["Item"]
    assert item["additionalProperties"] is False and item["required"] == ["name", "count", "size"]
    assert "default" not in item["properties"]["count"]  # strict mode refuses default
    assert item["properties"]["count"]["minimum"] == 1  # supported constraints stay
    assert schema["$defs"]["Colour"]["enum"] == ["red", "blue"]
    assert item["properties"]["size"]["enum"] == [1, 2, 3]
    assert fmt.strict_schema() is fmt.strict_schema()  # made once
    assert Order.model_json_schema()["properties"]["note"].get("default", "x") is None  # untouched


def test_recursive_model_keeps_its_ref() -> None:
    fmt = output_format(Tree)
    assert fmt is not None
    schema = fmt.strict_schema()  # the root is the model, not a reference to it
    assert schema["type"] == "object" and schema["required"] == ["value", "children"]
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert schema["$defs"]["Tree"]["additionalProperties"] is False
    r = finish(response('{"value": 1, "children": [{"value": 2, "children": []}]}'), fmt)
    assert r.parsed == Tree(value=1, children=[Tree(value=2)])


def test_what_strict_mode_cannot_express_is_refused_before_sending() -> None:
    fmt = output_format(Open)
    assert fmt is not None
    with pytest.raises(asyncllm.ConfigurationError, match="open map at #/properties/counts"):
        fmt.openai()
    with pytest.raises(asyncllm.ConfigurationError, match="object at the root"):
        strict_schema({"type": "array", "items": {"type": "string"}})


@pytest.mark.parametrize(
    ("value", "name", "raw"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, "response", False),
        ({"title": "My thing!", "type": "object", "properties": {}}, "My_thing_", False),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "x",
            True,
        ),
        ({"type": "json_object"}, "json_object", True),
    ],
)
def test_dict_forms(value: dict[str, Any], name: str, raw: bool) -> None:
    fmt = output_format(value)
    assert fmt is not None and fmt.name == name and fmt.model is None
    assert (fmt.openai() == value) is raw


@pytest.mark.parametrize(
    "value",
    [42, "json", Item(name="x"), {"type": "xml"}, {"type": "json_schema", "json_schema": {}}],
)
def test_bad_response_format(value: Any) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        output_format(value)


def test_text_and_none_mean_no_format() -> None:
    assert output_format(None) is None
    assert output_format({"type": "text"}) is None


def test_finish_parses_into_the_model() -> None:
    fmt = output_format(Order)
    r = finish(response('{"colour": "red", "items": [{"name": "a", "count": 2, "size": 3}]}'), fmt)
    assert isinstance(r.parsed, Order)
    assert r.parsed.colour is Colour.RED and r.parsed.items[0].size == 3
    as_dict = finish(response('{"a": [1]}'), output_format({"type": "object"}))
    assert as_dict.parsed == {"a": [1]}


def test_finish_without_a_format_or_with_a_refusal_or_tool_calls_parses_nothing() -> None:
    assert finish(response("not json"), None).parsed is None
    refused = finish(response("", refusal="I can't help with that."), output_format(Order))
    assert refused.parsed is None and refused.refusal == "I can't help with that."
    call = asyncllm.ToolCall(id="c", name="f")
    assert finish(response("", tool_calls=[call]), output_format(Order)).parsed is None


def test_an_answer_that_does_not_fit_is_a_typed_error_with_its_text() -> None:
    fmt = output_format(Order)
    with pytest.raises(asyncllm.StructuredOutputError, match="not JSON") as bad_json:
        finish(response('{"colour": '), fmt, "openai")
    assert bad_json.value.text == '{"colour": '
    assert bad_json.value.backend == "openai" and bad_json.value.request_id == "req_1"
    assert not isinstance(bad_json.value, asyncllm.LengthFinishReasonError)
    with pytest.raises(asyncllm.StructuredOutputError, match="does not validate as Order") as bad:
        finish(response('{"colour": "green", "items": []}'), fmt)
    assert bad.value.response is not None and bad.value.response.parsed is None


@pytest.mark.parametrize("reason", ["length", "max_tokens", "MAX_TOKENS"])
def test_a_cut_answer_says_so(reason: str) -> None:
    with pytest.raises(asyncllm.LengthFinishReasonError, match="token limit") as info:
        finish(response('{"colour": "re', finish_reason=reason), output_format(Order))
    assert isinstance(info.value, asyncllm.StructuredOutputError)
    assert info.value.text == '{"colour": "re'


def test_foreign_reasoning_is_dropped_own_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo", "thinking_blocks": [{"type": "thinking"}]},
        {"role": "assistant", "content": "ok", "gemini_parts": [{"text": "ok"}]},
    ]
    with caplog.at_level(logging.DEBUG, logger="asyncllm"):
        plain = normalize_messages(history)
    assert plain[1] == {"role": "assistant", "content": "yo"}
    assert plain[2] == {"role": "assistant", "content": "ok"}
    assert "thinking_blocks" in caplog.text and "gemini_parts" in caplog.text
    assert "thinking_blocks" in history[1]  # the caller's message is not changed
    own = normalize_messages(history, keep=frozenset({"gemini_parts"}))
    assert own[2]["gemini_parts"] == [{"text": "ok"}] and "thinking_blocks" not in own[1]


def chat_stream(*chunks: ChatChunk, fmt: OutputFormat | None = None) -> ChatStream[Any]:
    async def source() -> AsyncIterator[ChatChunk]:
        for chunk in chunks:
            yield chunk

    return ChatStream(Stream(source(), "req_9"), fmt, "fake")


async def test_final_assembles_the_answer() -> None:
    stream = chat_stream(
        ChatChunk(reasoning="think ", request_id="req_9", model="m"),
        ChatChunk(reasoning="more", delta="Hel", request_id="req_9"),
        ChatChunk(delta="lo", request_id="req_9"),
        ChatChunk(
            tool_calls=[ToolCallDelta(index=0, id="c1", name="f", arguments='{"a"')],
            request_id="req_9",
        ),
        ChatChunk(tool_calls=[ToolCallDelta(index=1, id="c2", name="g")], request_id="req_9"),
        ChatChunk(tool_calls=[ToolCallDelta(index=0, arguments=": 1}")], request_id="req_9"),
        ChatChunk(
            finish_reason="tool_calls",
            usage=asyncllm.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
            message_extra={"thinking_blocks": [{"type": "thinking", "signature": "s"}]},
            request_id="req_9",
        ),
    )
    first = await stream.__anext__()  # read some, then the rest by final()
    assert first.reasoning == "think "
    r = await stream.final()
    assert r.text == "Hello" and r.reasoning == "think more" and r.model == "m"
    assert [(c.id, c.name, c.arguments) for c in r.tool_calls] == [
        ("c1", "f", '{"a": 1}'),
        ("c2", "g", "{}"),
    ]
    assert r.tool_calls[0].args() == {"a": 1}
    assert r.finish_reason == "tool_calls" and r.usage is not None and r.usage.total_tokens == 7
    assert r.request_id == "req_9" and r.refusal is None
    assert r.message.model_extra == {"thinking_blocks": [{"type": "thinking", "signature": "s"}]}
    assert await stream.final() is r


async def test_final_parses_and_reports_refusals() -> None:
    fmt = output_format(Item)
    parsed = await chat_stream(
        ChatChunk(delta='{"name": "x", ', request_id="req_9"),
        ChatChunk(delta='"count": 2, "size": 2}', finish_reason="stop", request_id="req_9"),
        fmt=fmt,
    ).final()
    assert parsed.parsed == Item(name="x", count=2, size=2)
    refused = await chat_stream(
        ChatChunk(refusal="No.", finish_reason="stop", request_id="req_9"), fmt=fmt
    ).final()
    assert refused.parsed is None and refused.refusal == "No." and refused.text == ""
    with pytest.raises(asyncllm.LengthFinishReasonError):
        await chat_stream(
            ChatChunk(delta='{"name": ', finish_reason="length", request_id="req_9"), fmt=fmt
        ).final()


def test_a_circular_or_absurdly_deep_schema_is_refused_not_a_recursion_error() -> None:
    cyclic: dict[str, Any] = {"type": "object", "properties": {}}
    cyclic["properties"]["self"] = cyclic
    deep: dict[str, Any] = {"type": "object"}
    node = deep
    for _ in range(5000):
        node["properties"] = {"x": {"type": "object"}}
        node = node["properties"]["x"]
    for schema in (cyclic, deep):
        with pytest.raises(asyncllm.ConfigurationError, match="nested too deeply or circular"):
            output_format(schema)
        with pytest.raises(asyncllm.ConfigurationError, match="nested too deeply or circular"):
            strict_schema(schema)
    assert output_format({"type": "object", "properties": {"a": {"type": "string"}}}) is not None


def test_an_openai_json_schema_dict_needs_its_name() -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=r"json_schema\.name"):
        output_format({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}})
