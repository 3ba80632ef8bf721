"""The tool loop every chat client shares: ``await client.run_tools(messages, tools=[...])``.

Written once against the common form (``chat``, ``ChatResponse.tool_calls``, ``tool_result``),
so it behaves the same on every backend: each backend's ``chat`` translates the transcript to
its wire form, as it does for a loop written by hand.

The decisions, in one place:

- A turn is one model answer. The tools an answer calls run concurrently (an anyio task
  group); their results go back in the order of the calls. Async functions run on the loop,
  sync ones in a worker thread (``anyio.to_thread``), so a slow tool never blocks other tasks.
- A failed call (the tool raised, the model named a tool that is not offered, its arguments are
  no JSON object or do not fit the function) goes back to the model as that call's result,
  ``"error: ..."``, so it can correct itself (``on_error="return"``, the default); with
  ``on_error="raise"`` it is a ``ToolCallError`` carrying the transcript. Only ``Exception``s
  are caught: cancellation goes through.
- An answer with tool calls after ``max_turns`` answers is a ``MaxTurnsExceededError``
  carrying the transcript; its calls are not run.
- Vendor tools (Claude's web search, Gemini's code execution...) may be offered beside the
  Python ones: the server runs them, so they take no function.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol, cast

from pydantic import BaseModel

from ._exceptions import ConfigurationError, MaxTurnsExceededError, ToolCallError
from ._models import ChatResponse, Messages, Tool, ToolCall, tool_result
from ._validate import check_int

DEFAULT_MAX_TURNS = 10

OnError = Literal["return", "raise"]

# What ``tools=`` of run_tools takes: a function (its signature and docstring are the tool), a
# (tool, function) pair (any form ``Tool.coerce`` takes, with the function that runs it), or a
# vendor's built-in tool (a dict or ``Tool`` the server runs).
ToolSpec = Callable[..., Any] | tuple[Any, Callable[..., Any]] | Mapping[str, Any] | Tool


class ToolRun(NamedTuple):
    """What ``run_tools`` returns: the final answer (one without tool calls) and the whole
    transcript, the caller's messages followed by each answer's message and each tool result
    (send it on to continue the conversation)."""

    response: ChatResponse[Any]
    messages: list[Mapping[str, Any] | BaseModel]


class _Chats(Protocol):
    """What the loop needs of a client."""

    def chat(self, messages: Messages, **options: Any) -> Awaitable[ChatResponse[Any]]: ...


class _Failed(Exception):
    """A call that could not run; its message is what the model is told."""


def _offered(tools: Sequence[ToolSpec]) -> tuple[list[Tool], dict[str, Callable[..., Any]]]:
    """The tools to offer the model, and the function of each by name; checked before any call."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigurationError("tools must be a list")
    offered: list[Tool] = []
    functions: dict[str, Callable[..., Any]] = {}
    for i, item in enumerate(tools):
        fn: Callable[..., Any] | None = None
        if isinstance(item, tuple):
            if len(item) != 2 or not callable(item[1]):
                raise ConfigurationError(f"tools[{i}]: a pair must be (tool, function)")
            tool, fn = Tool.coerce(item[0]), item[1]
        elif isinstance(item, (Tool, Mapping)):
            tool = Tool.coerce(item)
        elif isinstance(item, type) or not callable(item):
            raise ConfigurationError(
                f"tools[{i}]: give a function, a (tool, function) pair or a built-in tool, "
                f"not {type(item).__name__}"
            )
        else:
            tool, fn = Tool.from_function(item), item
        if fn is None and tool.builtin is None:
            raise ConfigurationError(
                f"tools[{i}]: tool {tool.name!r} has no function to run it: give (tool, function)"
            )
        if tool.name in functions or any(t.name == tool.name for t in offered):
            raise ConfigurationError(f"tools[{i}]: two tools are named {tool.name!r}")
        offered.append(tool)
        if fn is not None:
            functions[tool.name] = fn
    return offered, functions


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


def _text(value: Any) -> str:
    """A tool's return value as the text the model reads: a string as it is, a pydantic model
    as its JSON, anything else as JSON (``str()`` for what JSON cannot hold)."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=str)


async def _call(call: ToolCall, functions: Mapping[str, Callable[..., Any]]) -> str:
    fn = functions.get(call.name)
    if fn is None:
        offered = ", ".join(sorted(functions)) or "none"
        raise _Failed(f"no tool named {call.name!r} (the tools are: {offered})")
    if call.type == "custom":  # a custom tool's input is free text, passed as it is
        args: tuple[Any, ...] = (call.arguments,)
        kwargs: dict[str, Any] = {}
    else:
        try:
            value = json.loads(call.arguments or "{}")
        except ValueError as exc:
            raise _Failed(f"the arguments of {call.name!r} are not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise _Failed(f"the arguments of {call.name!r} are not a JSON object")
        args, kwargs = (), value
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise _Failed(f"the arguments do not fit {call.name!r}: {exc}") from None
    except ValueError:  # a callable without a signature: its own call says
        pass
    if _is_async(fn):
        result = await fn(*args, **kwargs)
    else:
        import anyio.to_thread  # on first use: a chat that runs no tools never loads anyio

        result = await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        if inspect.isawaitable(result):  # a sync function that returns an awaitable
            result = await result
    return _text(result)


async def _run_all(
    calls: list[ToolCall], functions: Mapping[str, Callable[..., Any]]
) -> list[tuple[str | _Failed, Exception | None]]:
    """One turn's calls run concurrently; each one's text, or its failure and the tool's own
    exception (if it raised), in the order of the calls."""
    results: list[tuple[str | _Failed, Exception | None]] = [("", None) for _ in calls]

    async def run(i: int, call: ToolCall) -> None:
        try:
            results[i] = (await _call(call, functions), None)
        except _Failed as failed:
            results[i] = (failed, None)
        except Exception as exc:
            results[i] = (_Failed(f"{call.name!r} raised {type(exc).__name__}: {exc}"), exc)

    import anyio  # on first use: a chat that runs no tools never loads anyio

    async with anyio.create_task_group() as group:
        for i, call in enumerate(calls):
            group.start_soon(run, i, call)
    return results


async def run_tools(
    client: Any,
    messages: Messages,
    *,
    tools: Sequence[ToolSpec],
    max_turns: int = DEFAULT_MAX_TURNS,
    on_error: OnError = "return",
    options: Mapping[str, Any],
) -> ToolRun:
    """The loop behind every client's ``run_tools`` (see ``ToolRunner.run_tools``)."""
    check_int("max_turns", max_turns, 1)
    if on_error not in ("return", "raise"):
        raise ConfigurationError(f"on_error must be 'return' or 'raise', not {on_error!r}")
    if "tools" in options:
        raise ConfigurationError("run_tools takes its tools once, as tools=")
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ConfigurationError("messages must be a list of messages")
    offered, functions = _offered(tools)
    chats = cast(_Chats, client)
    transcript: list[Mapping[str, Any] | BaseModel] = list(messages)
    for turn in range(1, max_turns + 1):
        response = await chats.chat(transcript, tools=offered, **options)
        transcript.append(response.message)
        calls = response.tool_calls
        if not calls:
            return ToolRun(response, transcript)
        if turn == max_turns:
            raise MaxTurnsExceededError(
                f"the model still called tools after {max_turns} answers "
                f"({', '.join(c.name for c in calls)})",
                messages=transcript,
                response=response,
                request_id=response.request_id,
            )
        results = await _run_all(calls, functions)
        for call, (result, cause) in zip(calls, results, strict=True):
            if isinstance(result, _Failed):
                if on_error == "raise":
                    raise ToolCallError(
                        str(result),
                        call=call,
                        messages=transcript,
                        response=response,
                        request_id=response.request_id,
                    ) from cause
                result = f"error: {result}"
            transcript.append(tool_result(call, result))
    raise AssertionError("unreachable: the last turn returns or raises")  # pragma: no cover


class ToolRunner:
    """The tool loop, on every chat client (its ``chat`` does the talking)."""

    async def run_tools(
        self,
        messages: Messages,
        *,
        tools: Sequence[ToolSpec],
        max_turns: int = DEFAULT_MAX_TURNS,
        on_error: OnError = "return",
        **options: Any,
    ) -> ToolRun:
        """Chat until the model answers without calling a tool, running the tools it calls.

        ``tools``: Python functions (sync ones run in a worker thread), ``(tool, function)``
        pairs (the tool in any form ``tools=`` of ``chat`` takes) and the backend's built-in
        tools, which its server runs. ``options`` go to every ``chat`` call (``model``,
        ``tool_choice``, ``response_format``, the call options...). Returns the final answer
        and the transcript (``ToolRun``). A call that fails (the tool raised, an unknown tool,
        arguments that are no JSON object or do not fit) goes back to the model as
        ``"error: ..."``; ``on_error="raise"`` raises ``ToolCallError`` instead. An answer that
        still calls tools after ``max_turns`` answers raises ``MaxTurnsExceededError``; both
        carry the transcript. Errors of the calls themselves (``APIError``...) propagate."""
        return await run_tools(
            self, messages, tools=tools, max_turns=max_turns, on_error=on_error, options=options
        )
