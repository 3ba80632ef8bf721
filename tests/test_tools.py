"""The tool loop (asyncllm/_tools.py) and the tool forms, without a server: a scripted client
answers with the tool calls a test needs (calls no fake makes: unknown tools, bad JSON, several
at once). Every backend runs the loop against its fake in tests/chat_contract.py."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import asyncllm
from asyncllm import ChatResponse, Message, Tool, ToolCall
from asyncllm._models import normalize_messages
from asyncllm._tools import ToolRunner

ASK = [{"role": "user", "content": "go"}]


def answer(*calls: ToolCall, text: str = "") -> ChatResponse[Any]:
    message = Message(role="assistant", content=text or None, tool_calls=list(calls) or None)
    return ChatResponse(
        text=text, message=message, tool_calls=list(calls), request_id="req_scripted"
    )


def call(name: str, arguments: str = "{}", cid: str = "c1", **kwargs: Any) -> ToolCall:
    return ToolCall(id=cid, name=name, arguments=arguments, **kwargs)


class Scripted(ToolRunner):
    """A chat client whose answers are given in advance; it records what each call was sent."""

    def __init__(self, *answers: ChatResponse[Any]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[list[Any], dict[str, Any]]] = []

    async def chat(self, messages: Any, **options: Any) -> ChatResponse[Any]:
        self.sent.append((list(messages), options))
        return self.answers.pop(0)


def results(run_or_error: Any) -> list[str]:
    return [
        m["content"] for m in run_or_error.messages if isinstance(m, dict) and m["role"] == "tool"
    ]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_the_result_goes_back_as_json_and_options_reach_every_call() -> None:
    client = Scripted(answer(call("add", '{"a": 1, "b": 2}')), answer(text="3"))
    run = await client.run_tools(ASK, tools=[add], model="m", temperature=0.5)
    assert run.response.text == "3"
    assert results(run) == ["3"]
    assert run.messages[2] == {"role": "tool", "tool_call_id": "c1", "name": "add", "content": "3"}
    for _, options in client.sent:
        assert options["model"] == "m" and options["temperature"] == 0.5
        assert [t.name for t in options["tools"]] == ["add"]
    assert client.sent[1][0] == run.messages[:3]


@pytest.mark.parametrize(
    ("made", "told"),
    [
        (call("nope"), "error: no tool named 'nope' (the tools are: add)"),
        (call("add", "{not json"), "error: the arguments of 'add' are not JSON"),
        (call("add", "[1, 2]"), "error: the arguments of 'add' are not a JSON object"),
        (call("add", '{"a": 1}'), "error: the arguments do not fit 'add'"),
        (call("add", '{"a": 1, "b": 2, "c": 3}'), "error: the arguments do not fit 'add'"),
    ],
    ids=["unknown", "bad-json", "not-object", "missing", "extra"],
)
async def test_a_call_that_cannot_run_is_told_or_raised(made: ToolCall, told: str) -> None:
    run = await Scripted(answer(made), answer(text="sorry")).run_tools(ASK, tools=[add])
    assert results(run)[0].startswith(told), results(run)
    assert run.response.text == "sorry"
    with pytest.raises(asyncllm.ToolCallError) as info:
        await Scripted(answer(made)).run_tools(ASK, tools=[add], on_error="raise")
    assert info.value.call == made
    assert info.value.__cause__ is None  # no tool ran: nothing of its own to chain
    assert told.removeprefix("error: ") in str(info.value)


async def test_the_calls_of_one_answer_run_concurrently_and_report_in_order() -> None:
    started: list[str] = []
    both = anyio.Event()

    async def slow(tag: str) -> str:
        started.append(tag)
        if len(started) == 2:
            both.set()
        for _ in range(100):  # each waits for the other; in turn, the first would see no other
            if both.is_set():
                break
            await anyio.lowlevel.checkpoint()
        return f"{tag}: {both.is_set()}"

    calls = [call("slow", '{"tag": "a"}', "c1"), call("slow", '{"tag": "b"}', "c2")]
    run = await Scripted(answer(*calls), answer(text="done")).run_tools(ASK, tools=[slow])
    assert results(run) == ["a: True", "b: True"]
    assert [m["tool_call_id"] for m in run.messages[2:4]] == ["c1", "c2"]


async def test_a_tool_that_raises_is_chained_under_raise() -> None:
    def fails(x: int) -> int:
        raise ZeroDivisionError("x/0")

    calls = [call("fails", '{"x": 1}', "c1"), call("add", '{"a": 1, "b": 1}', "c2")]
    run = await Scripted(answer(*calls), answer(text="ok")).run_tools(ASK, tools=[fails, add])
    assert results(run) == ["error: 'fails' raised ZeroDivisionError: x/0", "2"]
    with pytest.raises(asyncllm.ToolCallError) as info:
        await Scripted(answer(*calls)).run_tools(ASK, tools=[fails, add], on_error="raise")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert len(info.value.messages) == 2  # the caller's message and the answer; no results


async def test_cancelling_the_loop_cancels_its_tools_and_tells_the_model_nothing() -> None:
    left: list[str] = []

    async def forever() -> str:
        scope.cancel()  # the caller gives up while the tool runs
        try:
            await anyio.sleep_forever()
        finally:
            left.append("cancelled")
        return "never"

    client = Scripted(answer(call("forever")), answer(text="unreached"))
    with anyio.CancelScope() as scope:
        await client.run_tools(ASK, tools=[forever])
    assert scope.cancelled_caught
    assert left == ["cancelled"] and len(client.sent) == 1


async def test_max_turns_counts_answers() -> None:
    client = Scripted(*(answer(call("add", '{"a": 1, "b": 1}', f"c{i}")) for i in range(3)))
    with pytest.raises(asyncllm.MaxTurnsExceededError) as info:
        await client.run_tools(ASK, tools=[add], max_turns=3)
    assert len(client.sent) == 3
    roles = [m["role"] if isinstance(m, dict) else m.role for m in info.value.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert info.value.request_id == "req_scripted"


class Forecast(BaseModel):
    sky: str


class Callable_:
    async def __call__(self, city: str) -> Forecast:
        return Forecast(sky=f"clear over {city}")


@pytest.mark.parametrize(
    ("fn", "text"),
    [
        (Callable_(), '{"sky":"clear over Oslo"}'),
        (lambda city: {"city": city, "temp": 3.5}, '{"city": "Oslo", "temp": 3.5}'),
        (lambda city: None, "null"),
    ],
    ids=["async-object-model", "sync-dict", "none"],
)
async def test_what_a_tool_returns_is_the_text_the_model_reads(fn: Any, text: str) -> None:
    tool = Tool(name="weather", parameters={"type": "object", "properties": {"city": {}}})
    made = call("weather", '{"city": "Oslo"}')
    run = await Scripted(answer(made), answer(text="ok")).run_tools(ASK, tools=[(tool, fn)])
    assert results(run) == [text]


async def test_a_custom_tool_gets_the_free_text_and_a_builtin_needs_no_function() -> None:
    shell = {"type": "custom", "custom": {"name": "shell"}}
    made = call("shell", "ls -la", type="custom")
    client = Scripted(answer(made), answer(text="listed"))
    run = await client.run_tools(
        ASK, tools=[(shell, lambda text: f"ran {text}"), {"googleSearch": {}}]
    )
    assert results(run) == ["ran ls -la"]
    assert [t.kind for t in client.sent[0][1]["tools"]] == ["custom", "googleSearch"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tools": [add], "max_turns": 0}, "max_turns"),
        ({"tools": [add], "on_error": "ignore"}, "on_error"),
        ({"tools": add}, "tools must be a list"),
        ({"tools": [add, add]}, "two tools are named 'add'"),
        ({"tools": [(add,)]}, "pair"),
        ({"tools": [Forecast]}, "not ModelMetaclass"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "no function"),
        ({"tools": [add], "tool_choice": "auto", "extra": 1, "tools_": 1}, None),
    ],
)
async def test_bad_arguments_fail_before_any_call(
    kwargs: dict[str, Any], match: str | None
) -> None:
    client = Scripted(answer(text="fine"))
    if match is None:  # the control: options the loop does not read go to chat as they are
        run = await client.run_tools(ASK, **kwargs)
        assert run.response.text == "fine" and client.sent[0][1]["extra"] == 1
        return
    with pytest.raises(asyncllm.ConfigurationError, match=match):
        await client.run_tools(ASK, **kwargs)
    assert client.sent == []


# -- the tool forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "name", "strict"),
    [
        ({"type": "function", "function": {"name": "f", "strict": True}}, "function", "f", True),
        (
            {"name": "f", "input_schema": {"type": "object"}, "strict": False},
            "function",
            "f",
            False,
        ),
        (
            {"type": "custom", "name": "f", "input_schema": {"type": "object"}},
            "function",
            "f",
            None,
        ),
        ({"type": "custom", "custom": {"name": "shell"}}, "custom", "shell", None),
        (
            {"type": "web_search_20250305", "name": "web_search"},
            "web_search_20250305",
            "web_search",
            None,
        ),
        ({"type": "web_search"}, "web_search", "web_search", None),
        ({"googleSearch": {}}, "googleSearch", "googleSearch", None),
        ({"function": {"name": "f", "strict": True}}, "function", "f", True),
    ],
)
def test_tool_dicts_keep_what_they_are(
    value: dict[str, Any], kind: str, name: str, strict: bool | None
) -> None:
    tool = Tool.coerce(value)
    assert (tool.kind, tool.name, tool.strict) == (kind, name, strict)
    assert (tool.builtin is None) is (kind == "function")


@pytest.mark.parametrize(
    "value",
    [
        {"type": "function", "function": {"name": "f", "strict": "yes"}},
        {"type": 3},
        {"googleSearch": True},
    ],
)
def test_bad_tool_dicts_are_refused(value: dict[str, Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        Tool.coerce(value)


def test_a_strict_function_is_made_to_strict_mode_on_openai_shaped_wires() -> None:
    def weather(city: str, unit: str = "c") -> str:
        return city

    sent = Tool.from_function(weather, strict=True).to_openai()["function"]
    assert sent["strict"] is True
    assert sent["parameters"]["additionalProperties"] is False
    assert sent["parameters"]["required"] == ["city", "unit"]
    assert "strict" not in Tool.from_function(weather).to_openai()["function"]
    with pytest.raises(asyncllm.ConfigurationError, match=r"tool 'counts'.*open map"):
        Tool(
            name="counts", parameters={"type": "object", "additionalProperties": {}}, strict=True
        ).to_openai()


def test_a_custom_call_goes_only_where_custom_tools_are() -> None:
    message = Message(role="assistant", tool_calls=[call("shell", "ls", type="custom")])
    sent = normalize_messages([message], custom_calls=True)
    assert sent[0]["tool_calls"] == [
        {"id": "c1", "type": "custom", "custom": {"name": "shell", "input": "ls"}}
    ]
    with pytest.raises(asyncllm.ConfigurationError, match="only OpenAI"):
        normalize_messages([message])
