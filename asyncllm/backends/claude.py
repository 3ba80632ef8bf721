"""Anthropic's Messages API: ``x-api-key`` and ``anthropic-version`` headers, a top-level
``system``, content blocks, and a stream of typed server-sent events.

Messages arrive in the common (OpenAI-style) form and are translated here: system and developer
messages become ``system``; assistant ``tool_calls`` become ``tool_use`` blocks; consecutive
``role: tool`` results become one user message of ``tool_result`` blocks; ``image_url`` parts
become ``image`` blocks and ``file`` parts ``document`` blocks (base64, url or Files API
sources; a part's ``cache_control`` comes along, as it does on text parts and system blocks; a
``file_id`` needs the Files API beta, ``betas=["files-api-2025-04-14"]``).
Blocks already in Anthropic's own form pass through unchanged.

Extended thinking: an answer's ``thinking`` and ``redacted_thinking`` blocks are kept verbatim
(signatures included) on ``r.message`` as ``thinking_blocks`` and sent back first in that
assistant turn, as the API requires while a tool loop is in progress; ``r.reasoning`` is their
text. ``response_format`` goes out as ``output_config.format`` with the schema made to Claude's
rules (``output_schema``).
"""

from __future__ import annotations

import base64
import json
import re
import typing
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

from pydantic import BaseModel
from typing_extensions import NotRequired, TypedDict, Unpack

from .._engine._context import check_header_value
from .._engine._dispatcher import Lane
from .._engine._ratelimit import ANTHROPIC_HEADERS, RateDialect
from .._exceptions import ConfigurationError
from .._http._backend import ErrorInfo, HttpBackend, Meta
from .._http._transport import Response
from .._models import (
    MODERN_KEYS,
    ChatChunk,
    ChatResponse,
    M,
    Message,
    Messages,
    ModelInfo,
    ModernParams,
    OpenModel,
    ToolCall,
    ToolCallDelta,
    Usage,
    call_arguments,
    coerce_tools,
    modern_params,
    normalize_messages,
    parse_as,
)
from .._options import BodyOptions, ClientOptions, HttpOptions, keys_of
from .._structured import OutputFormat, finish, output_format
from .._tools import ToolRunner
from .._validate import check_int, check_number, check_stop, check_str_list
from .._wire.parts import MEDIA_PARTS, read_media
from ..streaming import ChatStream

if TYPE_CHECKING:
    from .._platform.anthropic import Batches, Files

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
MODELS_PAGE_LIMIT = 1000
MIN_THINKING_BUDGET = 1024  # the API's least budget_tokens

# Anthropic's error ``type`` -> the HTTP status it stands for (from the API's error reference).
# A stream that already answered 200 reports failures as an ``error`` event with one of these.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TEXT_BLOCK_FIELDS = frozenset({"type", "text", "cache_control", "citations"})
# OpenAI content parts that have no Anthropic counterpart here.
_UNSUPPORTED_PARTS = frozenset({"input_audio", "audio", "refusal"})
# What a document block takes inline: PDFs as base64, plain text as its text.
DOCUMENT_MEDIA_TYPES = frozenset({"application/pdf", "text/plain"})
_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
# The message key that carries signed thinking blocks into the next turn (see REASONING_KEYS).
_KEEP = frozenset({"thinking_blocks", "claude_content"})
# The blocks of an answer read into the common message (text, tool calls, reasoning); an answer
# with any other (a server tool's use and results, say) keeps all its blocks, in order, as
# ``claude_content``, which the next turn sends back in place of its content and tool calls.
_COMMON_BLOCKS = frozenset({"text", "tool_use", *_THINKING_TYPES})


# Anthropic's stop reasons in the common (OpenAI) words; ``raw`` keeps the original.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else _FINISH.get(stop_reason, stop_reason)


class _WireMessage(OpenModel):
    id: str | None = None
    type: str = "message"
    role: str = "assistant"
    model: str | None = None
    content: list[dict[str, Any]]
    stop_reason: str | None = None
    # Read as the stream's usage is (``_usage``), so that both count alike.
    usage: dict[str, Any] | None = None


class _WireModel(OpenModel):
    id: str
    created_at: str | None = None
    display_name: str | None = None


class _WireModels(BaseModel):
    data: list[_WireModel]
    has_more: bool = False
    last_id: str | None = None


class _WireTokensCount(BaseModel):
    input_tokens: int


# -- common form -> Anthropic ----------------------------------------------------------------------


def _media_block(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An ``image_url`` or ``file`` part as an ``image`` or ``document`` block, with a base64,
    url or file (Files API) source; the part's ``cache_control`` comes along."""
    media = read_media(part, where)
    if media.data is not None:
        allowed = IMAGE_MEDIA_TYPES if media.kind == "image" else DOCUMENT_MEDIA_TYPES
        if media.media_type not in allowed:
            raise ConfigurationError(
                f"{where}: Claude takes {media.kind}s of type {', '.join(sorted(allowed))}, "
                f"not {media.media_type!r}"
            )
        if media.media_type == "text/plain":  # a plain-text document is sent as its text
            try:
                text = base64.b64decode(media.data).decode()
            except UnicodeDecodeError as exc:
                raise ConfigurationError(f"{where}: a text/plain file must be UTF-8") from exc
            source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": text}
        else:
            source = {"type": "base64", "media_type": media.media_type, "data": media.data}
    elif media.url is not None:
        source = {"type": "url", "url": media.url}
    else:
        source = {"type": "file", "file_id": media.file_id}
    block: dict[str, Any] = {"type": media.kind, "source": source}
    if media.kind == "document" and media.filename:
        block["title"] = media.filename
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Common content (a string or OpenAI parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        here = f"{where}.content[{i}]"
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ConfigurationError(f"{here}: a text part needs a string 'text'")
            if part["text"]:
                # Like image parts, rebuilt: the fields Anthropic's text block has, no others.
                blocks.append({k: v for k, v in part.items() if k in _TEXT_BLOCK_FIELDS})
        elif kind in MEDIA_PARTS:
            blocks.append(_media_block(part, here))
        elif not isinstance(kind, str) or kind in _UNSUPPORTED_PARTS:
            raise ConfigurationError(f"{here}: Claude does not take {kind!r} content parts")
        else:  # already an Anthropic block (image, document, thinking, ...)
            blocks.append(dict(part))
    return blocks


def _tool_use_block(call: Mapping[str, Any], where: str) -> dict[str, Any]:
    # normalize_messages has checked that the id and the name are strings.
    return {
        "type": "tool_use",
        "id": call["id"],
        "name": call["function"]["name"],
        "input": call_arguments(call, where),
    }


def to_wire(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) in Anthropic's form; bad input raises ConfigurationError."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(normalize_messages(messages, keep=_KEEP)):
        role = item["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_blocks(item.get("content"), where))
        elif role == "user":
            blocks = _blocks(item.get("content"), where)
            if not blocks:
                raise ConfigurationError(f"{where}: a user message needs content")
            content = item["content"]
            out.append({"role": "user", "content": content if isinstance(content, str) else blocks})
        elif role == "assistant":
            kept = item.get("claude_content")
            if kept is not None:
                if not isinstance(kept, list) or not all(isinstance(b, Mapping) for b in kept):
                    raise ConfigurationError(f"{where}.claude_content must be a list of blocks")
                blocks = [dict(b) for b in kept]
            else:
                blocks = _blocks(item.get("content"), where)
                blocks += [_tool_use_block(c, where) for c in item.get("tool_calls") or ()]
            if item.get("thinking_blocks") is not None:  # first, as the answer had them
                blocks[:0] = _thinking_blocks(item["thinking_blocks"], where)
            if not blocks:
                raise ConfigurationError(f"{where}: an assistant message needs content or tools")
            out.append({"role": "assistant", "content": blocks})
        elif role == "tool":
            content = item.get("content")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": item["tool_call_id"]}
            if isinstance(content, str):
                result["content"] = content
            elif content:
                result["content"] = _blocks(content, where)
            if isinstance(item.get("is_error"), bool):
                result["is_error"] = item["is_error"]
            last = out[-1] if out else None
            if last is not None and last.get("_tool_results"):
                last["content"].append(result)
            else:
                out.append({"role": "user", "content": [result], "_tool_results": True})
        else:
            raise ConfigurationError(f"{where}: Claude takes no {role!r} messages; use 'tool'")
    if not out:
        raise ConfigurationError("messages must hold at least one user message")
    for message in out:
        message.pop("_tool_results", None)
    return system, out


def _system_body(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if any(b.get("type") != "text" for b in blocks):
        raise ConfigurationError("Claude takes only text blocks in the system prompt")
    if len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
        return str(blocks[0]["text"])
    return blocks


def tool_choice_body(value: Any) -> Any:
    """``auto``/``any``/``none`` (``required`` means ``any``), a tool's name, or a dict."""
    if value is None:
        return None
    if value in ("auto", "any", "none"):
        return {"type": value}
    if value == "required":
        return {"type": "any"}
    if isinstance(value, str) and value:
        return {"type": "tool", "name": value}
    if isinstance(value, Mapping):
        if value.get("type") == "function":  # the common (OpenAI) form: translated, so checked
            function = value.get("function")
            name = function.get("name") if isinstance(function, Mapping) else None
            if not isinstance(name, str) or not name:
                raise ConfigurationError("a function tool_choice needs a function name")
            return {"type": "tool", "name": name}
        return dict(value)
    raise ConfigurationError("tool_choice must be 'auto', 'any', 'none', a tool name or a dict")


# The type of every tool of Anthropic's, server-run or client-run: a name and a version date.
_VERSIONED_TOOL = re.compile(r"[a-z_]+_[0-9]{8}")


def _tools_body(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Common tools as ``{name, description, input_schema}`` (``strict`` when given, a strict
    tool's schema made to Claude's structured-output rules). Dicts already in Anthropic's form
    (with ``input_schema``) and its server and client tools (a ``type`` of their own:
    ``web_search_20250305``, ``code_execution_20250825``, ``bash_20250124``...) pass through
    unchanged; OpenAI's ``custom`` tools (free text, no schema) Claude has not."""
    coerced = coerce_tools(tools)  # the checks every backend applies
    if tools is None or coerced is None:
        return None
    out: list[dict[str, Any]] = []
    for value, tool in zip(tools, coerced, strict=True):
        if tool.builtin is not None and not _VERSIONED_TOOL.fullmatch(tool.kind):
            raise ConfigurationError(
                f"Claude has no built-in tool {tool.kind!r} (Anthropic's tools have versioned "
                "types, such as web_search_20250305)"
            )
        if tool.builtin is not None or (isinstance(value, Mapping) and "input_schema" in value):
            out.append(dict(value))
            continue
        schema = dict(tool.parameters)
        schema.setdefault("type", "object")
        if tool.strict:
            schema = output_schema(schema)
        spec: dict[str, Any] = {"name": tool.name, "input_schema": schema}
        if tool.description:
            spec["description"] = tool.description
        if tool.strict is not None:
            spec["strict"] = tool.strict
        out.append(spec)
    return out or None


# -- structured output and thinking ----------------------------------------------------------------

# What Claude's structured outputs take of JSON Schema (the structured-outputs guide, "JSON Schema
# limitations"). Other keywords (numeric and length bounds, ``maxItems``, ``uniqueItems``...) the
# API refuses with 400: they are left out of what is sent and written into the description, so
# the model may still follow them, and the model class validates the answer against them.
_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "default",
        "description",
        "title",
        "pattern",
    }
)
_STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_REF_PREFIXES = ("#/$defs/", "#/definitions/")


def output_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as Claude's structured outputs take it, as a new dict: every object closed
    (``additionalProperties: false``, as the API requires), ``required`` as given (Claude, unlike
    OpenAI, takes optional properties), ``oneOf`` read as ``anyOf``, a one-item ``allOf`` taken
    as its item, keywords the API refuses moved into the description. What Claude cannot
    express raises ``ConfigurationError`` before anything is sent: an open map (``dict[str,
    int]``: ``additionalProperties`` a schema or true), a recursive schema, an external ``$ref``.
    """
    _check_references(schema)
    return _schema_node(schema, "#")


def _sub_schema(node: Any, where: str) -> Any:
    return _schema_node(node, where) if isinstance(node, Mapping) else node


def _schema_node(node: Mapping[str, Any], where: str) -> dict[str, Any]:
    every = node.get("allOf")
    if isinstance(every, list) and len(every) == 1 and isinstance(every[0], Mapping):
        node = {**{k: v for k, v in node.items() if k != "allOf"}, **every[0]}
    if "$ref" in node:  # siblings of a reference are dropped, as Anthropic's SDK sends it
        node = {k: v for k, v in node.items() if k in ("$ref", "$defs", "definitions")}
    out: dict[str, Any] = {}
    notes: dict[str, Any] = {}
    for key, value in node.items():
        here = f"{where}/{key}"
        if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
            out[key] = {name: _sub_schema(sub, f"{here}/{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _sub_schema(value, here)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out["allOf" if key == "allOf" else "anyOf"] = [
                _sub_schema(sub, f"{here}/{i}") for i, sub in enumerate(value)
            ]
        elif _kept(key, value):
            out[key] = value
        elif key != "additionalProperties":
            notes[key] = value
    kind = node.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node:
        if node.get("additionalProperties", False) is not False:
            raise ConfigurationError(
                f"Claude's structured output cannot express an open map at {where} "
                "(additionalProperties): use a model with named fields, or a list of pairs"
            )
        out["additionalProperties"] = False
    if notes:
        said = ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in notes.items())
        description = out.get("description")
        out["description"] = f"{description}\n\n{{{said}}}" if description else f"{{{said}}}"
    return out


def _kept(key: str, value: Any) -> bool:
    """Whether a keyword goes out as it is (``additionalProperties`` is set apart)."""
    if key == "format":
        return value in _STRING_FORMATS
    if key == "minItems":
        return value in (0, 1) and not isinstance(value, bool)
    return key in _SCHEMA_KEYWORDS and key != "additionalProperties"


def _check_references(schema: Mapping[str, Any]) -> None:
    """Refuse references Claude cannot follow: external ones, and any cycle (a recursive model)."""
    definitions: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), Mapping):
            definitions.update({f"#/{key}/{name}": sub for name, sub in schema[key].items()})
    edges: dict[str, set[str]] = {"#": set()}

    def collect(node: Any, source: str) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item, source)
        elif isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref != "#" and not ref.startswith(_REF_PREFIXES):
                    raise ConfigurationError(
                        f"Claude's structured output takes only local references ($ref {ref!r})"
                    )
                edges[source].add(ref)
            for key, value in node.items():
                if key not in ("$defs", "definitions", "enum", "const", "default"):
                    collect(value, source)

    collect(schema, "#")
    for name, sub in definitions.items():
        edges[name] = set()
        collect(sub, name)
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(name: str) -> None:
        state[name] = 1
        for target in edges.get(name, ()):
            if state.get(target) == 1:
                raise ConfigurationError(
                    f"Claude's structured output cannot take a recursive schema ({target} "
                    "refers back to itself): flatten the model, or ask for JSON text"
                )
            if target not in state:
                walk(target)
        state[name] = 2

    walk("#")


def _format_body(fmt: OutputFormat) -> dict[str, Any]:
    if fmt.schema is None:
        raise ConfigurationError(
            "Claude has no JSON mode without a schema: give response_format a pydantic model "
            "or a JSON schema"
        )
    return {"type": "json_schema", "schema": output_schema(fmt.schema)}


def _thinking_body(value: Any) -> dict[str, Any]:
    """``thinking`` checked: ``{"type": "enabled", "budget_tokens": N}`` (N at least 1024),
    ``{"type": "adaptive"}`` or ``{"type": "disabled"}``; other fields (``display``) pass."""
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise ConfigurationError(
            "thinking must be a dict such as {'type': 'enabled', 'budget_tokens': 2048}, "
            "{'type': 'adaptive'} or {'type': 'disabled'}"
        )
    if value["type"] == "enabled":
        if "budget_tokens" not in value:
            raise ConfigurationError("thinking of type 'enabled' needs budget_tokens")
        check_int("thinking.budget_tokens", value["budget_tokens"], MIN_THINKING_BUDGET)
    return dict(value)


def _thinking_blocks(value: Any, where: str) -> list[dict[str, Any]]:
    """A message's ``thinking_blocks`` (as a response put them there), to be sent unmodified."""
    if not isinstance(value, list) or not all(
        isinstance(b, Mapping) and b.get("type") in _THINKING_TYPES for b in value
    ):
        raise ConfigurationError(
            f"{where}.thinking_blocks must be a list of thinking or redacted_thinking blocks"
        )
    return [dict(b) for b in value]


# -- Anthropic -> common form ----------------------------------------------------------------------


def _usage(fields: Mapping[str, Any]) -> Usage | None:
    """Usage in the common meaning: the API's ``input_tokens`` leaves out the prompt tokens read
    from the cache and those written to it, which ``prompt_tokens`` counts (both stay as
    extras, and the reads are ``cached_tokens``)."""
    if not fields:
        return None
    prompt = fields.get("input_tokens")
    completion = fields.get("output_tokens")
    extras = {
        k: v
        for k, v in fields.items()
        if k not in ("input_tokens", "output_tokens") and v is not None
    }
    read = extras.get("cache_read_input_tokens")
    written = extras.get("cache_creation_input_tokens")
    if isinstance(read, int):
        extras["cached_tokens"] = read
    if prompt is not None:
        prompt += (read if isinstance(read, int) else 0) + (
            written if isinstance(written, int) else 0
        )
    total = (prompt or 0) + (completion or 0) if prompt is not None or completion else None
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, **extras)


def _tool_call(block: Mapping[str, Any]) -> ToolCall:
    value = block.get("input")
    if not isinstance(value, Mapping):
        raise ValueError("tool_use block has no input object")
    return ToolCall(
        id=block["id"], name=block["name"], arguments=json.dumps(value, ensure_ascii=False)
    )


def _block_index(event: Mapping[str, Any]) -> int:
    """The content block an event is about; ``int()`` would take 1.5 and overflow on Infinity."""
    index = event["index"]
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"content block index must be an int, got {index!r}")
    return index


def _created(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def refusal(stop_reason: str | None, details: Any) -> str | None:
    """``r.refusal`` for an answer Claude refused (``stop_reason`` "refusal"): the explanation in
    ``stop_details`` where the API gives one, else "refused" (and the category, if any)."""
    if stop_reason != "refusal":
        return None
    details = details if isinstance(details, Mapping) else {}
    explanation = details.get("explanation")
    if isinstance(explanation, str) and explanation:
        return explanation
    category = details.get("category")
    return f"refused ({category})" if isinstance(category, str) and category else "refused"


# Between the texts of two thinking blocks of one answer, streamed or not.
REASONING_SEPARATOR = "\n\n"


class _StreamState:
    """One stream's events read in order, keeping what later chunks need from earlier events:
    model, usage, tool ordinals, and the thinking blocks rebuilt from their deltas (the last
    chunk carries them as ``message_extra``, so that ``stream.final().message`` sends them back).
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index -> tool call ordinal
        self.thinking: dict[int, dict[str, Any]] = {}  # content block index -> block so far
        self.reasoned = False  # some reasoning text was given: the next block's is separated
        self.stopped = False
        # Every block but thinking, rebuilt (text and input JSON as pieces), for an answer with a
        # block outside _COMMON_BLOCKS (a server tool's): its last chunk carries them all, in
        # order, as claude_content, as a non-streamed answer keeps them.
        self.blocks: dict[int, dict[str, Any]] = {}
        self.pieces: dict[int, list[str]] = {}
        self.others = False

    def _content(self) -> list[dict[str, Any]]:
        out = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            joined = "".join(self.pieces.get(index, ()))
            if block.get("type") == "text":
                block["text"] = joined
            elif joined:  # a tool's input, streamed as JSON text
                block["input"] = json.loads(joined)
            out.append(block)
        return out

    def _reasoning(self, index: int, text: str, base: dict[str, Any]) -> ChatChunk | None:
        block = self.thinking.get(index)
        if block is None or block["type"] != "thinking":
            raise ValueError("thinking_delta for a block that is not a thinking block")
        block["thinking"] += text
        if not text:
            return None
        if self.reasoned and block["thinking"] == text:  # the first text of a later block
            text = REASONING_SEPARATOR + text
        self.reasoned = True
        return ChatChunk(reasoning=text, **base)

    def chunk(self, event: Mapping[str, Any], meta: Meta) -> ChatChunk | None:
        """The chunk one event carries, or None for events that carry nothing for the caller."""
        kind = event.get("type")
        if kind == "message_start":
            message = event["message"]
            self.model = message.get("model")
            self.usage.update(message.get("usage") or {})
            return None
        # What every chunk carries; the model is the one message_start named.
        base: dict[str, Any] = {"model": self.model, "request_id": meta.request_id, "raw": event}
        if kind == "content_block_start":
            block = event["content_block"]
            btype = block.get("type")
            if btype not in _THINKING_TYPES:
                index = _block_index(event)
                self.blocks[index] = dict(block)
                self.pieces[index] = [str(block.get("text") or "")] if btype == "text" else []
                self.others = self.others or btype not in _COMMON_BLOCKS
            if btype == "tool_use":
                ordinal = self.tools[_block_index(event)] = len(self.tools)
                value = block.get("input")
                start = ToolCallDelta(
                    index=ordinal,
                    id=block["id"],
                    name=block["name"],
                    arguments=json.dumps(value, ensure_ascii=False) if value else "",
                )
                return ChatChunk(tool_calls=[start], **base)
            if block.get("type") == "text" and block.get("text"):
                return ChatChunk(delta=str(block["text"]), **base)
            if block.get("type") in _THINKING_TYPES:
                index = _block_index(event)
                self.thinking[index] = {**block}
                if block["type"] == "thinking":
                    self.thinking[index].update(thinking="", signature=block.get("signature", ""))
                    return self._reasoning(index, str(block.get("thinking") or ""), base)
            return None
        if kind == "content_block_delta":
            delta = event["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = str(delta["text"])
                self.pieces[_block_index(event)].append(text)
                return ChatChunk(delta=text, **base)
            if dtype == "input_json_delta":
                index = _block_index(event)
                if index not in self.pieces:
                    raise ValueError("input_json_delta for a block that is not a tool's")
                self.pieces[index].append(str(delta["partial_json"]))
                tool = self.tools.get(index)
                if tool is None:  # a server tool's input: kept, no tool call of the caller's
                    return None
                call = ToolCallDelta(index=tool, arguments=str(delta["partial_json"]))
                return ChatChunk(tool_calls=[call], **base)
            if dtype == "thinking_delta":
                return self._reasoning(_block_index(event), str(delta["thinking"]), base)
            if dtype == "signature_delta":
                block = self.thinking.get(_block_index(event))
                if block is None or block["type"] != "thinking":
                    raise ValueError("signature_delta for a block that is not a thinking block")
                block["signature"] += str(delta["signature"])
                return None
            if dtype == "citations_delta":
                block = self.blocks.get(_block_index(event))
                if block is not None:
                    block["citations"] = [*(block.get("citations") or ()), delta.get("citation")]
                return ChatChunk(**base)
            return None
        if kind == "message_delta":
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            said = event.get("delta") or {}
            stop_reason = said.get("stop_reason")
            extra: dict[str, Any] = {}
            if self.thinking:
                extra["thinking_blocks"] = [self.thinking[i] for i in sorted(self.thinking)]
            if self.others:
                extra["claude_content"] = self._content()
            if extra:
                base["message_extra"] = extra
            if stop_reason == "refusal":
                base["refusal"] = refusal(stop_reason, said.get("stop_details"))
            return ChatChunk(
                finish_reason=finish_reason(stop_reason), usage=_usage(self.usage), **base
            )
        if kind == "message_stop":
            self.stopped = True
        # ping, content_block_stop, and event types added after this was written
        return None


# -- the parameters of a call ---------------------------------------------------------------------


class MessagesParams(TypedDict, total=False):
    """What every call about a conversation takes (``chat``, ``stream_chat``, ``count_tokens``).

    ``model`` defaults to the client's (``Claude(model=...)``). ``system``: a string or text
    blocks, put before the system and developer messages. ``tools``: functions, pydantic models,
    ``asyncllm.Tool``, OpenAI tool dicts, or Anthropic's own tool dicts (with ``input_schema``, or
    a server tool's ``type``), which pass through. ``tool_choice``: "auto", "any", "none"
    ("required" means "any"), a tool's name, or a dict.
    """

    model: str | None
    system: str | Sequence[Mapping[str, Any]] | None
    tools: Sequence[Any] | None
    tool_choice: Any


class ThinkingEnabled(TypedDict):
    """Extended thinking with a budget: at least 1024 tokens, below ``max_tokens`` (unless
    interleaved thinking is on)."""

    type: Literal["enabled"]
    budget_tokens: int
    display: NotRequired[Literal["summarized", "omitted"]]


class ThinkingAdaptive(TypedDict):
    """The model decides how much to think (with ``effort``), on the models that take it."""

    type: Literal["adaptive"]
    display: NotRequired[Literal["summarized", "omitted"]]


class ThinkingDisabled(TypedDict):
    type: Literal["disabled"]


Thinking = ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled
Effort = Literal["low", "medium", "high", "xhigh", "max"]


class ChatParams(MessagesParams, ModernParams, total=False):
    """The parameters of ``chat`` and ``stream_chat``, shared by both.

    ``max_tokens`` defaults to the client's (the API requires one). ``temperature`` (0 to 1),
    ``top_p`` and ``top_k`` are sent only when given: recent models refuse non-default sampling
    values (400), and the current SDK types no longer list them. ``stop`` goes out as
    ``stop_sequences``. ``metadata``: ``{"user_id": ...}`` (the one key the API takes).
    ``max_completion_tokens`` is ``max_tokens``; ``parallel_tool_calls=False`` goes out as
    ``tool_choice.disable_parallel_tool_use``; ``service_tier`` ("auto", "standard_only") as
    it is; ``logprobs``, ``top_logprobs``, ``store`` and ``prompt_cache_key`` have no
    counterpart (ConfigurationError; caching is asked for with ``cache_control`` on blocks,
    parts and Anthropic-form tools). ``thinking``:
    ``{"type": "enabled", "budget_tokens": 2048}``, ``{"type": "adaptive"}`` or
    ``{"type": "disabled"}``; ``effort`` ("low", "medium", "high"...) goes out as
    ``output_config.effort``. Anything else the API takes goes in ``extra_body``.
    (``response_format`` is a parameter of its own, so that ``parsed`` is typed by the model it
    names.)
    """

    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    stop: str | Sequence[str] | None
    thinking: Thinking | None
    effort: Effort | None


class ChatOptions(ChatParams, BodyOptions, total=False):
    """A chat call's keyword arguments: its parameters and the call options."""


class CountTokensOptions(MessagesParams, BodyOptions, total=False):
    """A ``count_tokens`` call's keyword arguments: its parameters and the call options."""


CHAT_KEYS = keys_of(ChatOptions)
# The ModernParams the Messages API has no counterpart for.
CLAUDE_REFUSED = frozenset({"logprobs", "top_logprobs", "store", "prompt_cache_key"})
COUNT_TOKENS_KEYS = keys_of(CountTokensOptions)


def _betas(value: Any) -> list[str]:
    """Beta feature names, from a comma-separated string or a list of names."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return []  # an empty list is as good as none
    if isinstance(value, str):
        names = [b.strip() for b in value.split(",") if b.strip()]
    else:
        names = check_str_list("betas", value)
        if not all(names):
            raise ConfigurationError("betas must be non-empty strings")
    return [check_header_value("betas", b) for b in names]


class Claude(HttpBackend, ToolRunner):
    """``Claude(api_key=..., base_url=..., betas=None, max_tokens=1024)`` (also
    ``asyncllm.Anthropic``): key from ``ANTHROPIC_API_KEY`` (or ``CLAUDE_API_KEY``; required for
    Anthropic's own URL), base from ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``).

    ``betas`` turns on beta features (the ``anthropic-beta`` header); ``anthropic_version`` is the
    API version header; ``max_tokens`` is the default for calls that do not give one (the API
    requires it). The ``anthropic-ratelimit-*`` headers of the latest response are kept in the
    dispatcher stats (``stats()[name].info``).
    """

    backend: ClassVar[str] = "claude"
    default_base_url: ClassVar[str | None] = ANTHROPIC_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY")
    api_key_required: ClassVar[bool] = True
    server_request_id_header: ClassVar[str | None] = "request-id"
    rate_dialect: ClassVar[RateDialect | None] = ANTHROPIC_HEADERS
    messages_path: ClassVar[str] = "/v1/messages"
    count_tokens_path: ClassVar[str] = "/v1/messages/count_tokens"
    models_path: ClassVar[str] = "/v1/models"

    def __init__(
        self,
        *,
        betas: str | Sequence[str] | None = None,
        anthropic_version: str = ANTHROPIC_VERSION,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.betas: list[str] = _betas(betas)
        self.anthropic_version = check_header_value("anthropic_version", anthropic_version)
        if max_tokens is None:  # the API requires one: there is no "not given" here
            raise ConfigurationError("max_tokens must be an int")
        check_int("max_tokens", max_tokens, 1)
        self.default_max_tokens = max_tokens
        super().__init__(**options)

    # -- hooks ------------------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.anthropic_version}
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key.get_secret_value()
        if self.betas:
            headers["anthropic-beta"] = ",".join(self.betas)
        return headers

    def _observe(self, status: int, headers: Mapping[str, str], lane: Lane) -> None:
        for name, value in headers.items():
            if name.lower().startswith("anthropic-ratelimit-"):
                lane.info[name.lower()] = value

    def _error_info(self, payload: Any) -> ErrorInfo:
        """Anthropic's error body, ``{"type": "error", "error": {"type", "message"}}``. Its
        ``type`` names a status (``ERROR_STATUS``), which types an ``error`` event inside a stream
        that already answered 200 (``overloaded_error`` -> ``OverloadedError``)."""
        info = super()._error_info(payload)
        return info._replace(status=ERROR_STATUS.get(info.type or ""))

    # -- bodies -----------------------------------------------------------------------------------

    def _request_body(self, messages: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """What chat and count_tokens send alike: model, messages, system and tools."""
        system_blocks, wire = to_wire(messages)
        system = params.get("system")
        if isinstance(system, str):
            system_blocks.insert(0, {"type": "text", "text": system})
        elif system is not None:
            if (
                isinstance(system, (bytes, Mapping))
                or not isinstance(system, Sequence)
                or not all(isinstance(b, Mapping) for b in system)
            ):
                raise ConfigurationError("system must be a string or a list of content blocks")
            system_blocks[:0] = _blocks(system, "system")
        body: dict[str, Any] = {"model": self._model(params.get("model")), "messages": wire}
        optional = {
            "system": _system_body(system_blocks),
            "tools": _tools_body(params.get("tools")),
            "tool_choice": tool_choice_body(params.get("tool_choice")),
        }
        body.update((k, v) for k, v in optional.items() if v is not None)
        return body

    def _chat_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        stream: bool,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        """The Messages body: the shared part, then the sampling parameters, each checked and sent
        only when given; ``thinking``, and ``output_config`` for ``effort`` and ``fmt``."""
        max_tokens = params.get("max_tokens")
        temperature = params.get("temperature")
        top_p = params.get("top_p")
        top_k = params.get("top_k")
        check_int("max_tokens", max_tokens, 1)
        check_number("temperature", temperature, 0, 1)
        check_number("top_p", top_p, 0, 1)
        check_int("top_k", top_k, 0)
        modern = {} if MODERN_KEYS.isdisjoint(params) else self._modern(params)
        stops = check_stop(params.get("stop"))
        body = self._request_body(messages, params)
        if max_tokens is None:
            max_tokens = modern.get("max_completion_tokens", self.default_max_tokens)
        body["max_tokens"] = max_tokens
        optional = {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "stop_sequences": [stops] if isinstance(stops, str) else stops,
            "metadata": modern.get("metadata"),
            "service_tier": modern.get("service_tier"),
        }
        body.update((k, v) for k, v in optional.items() if v is not None)
        if modern.get("parallel_tool_calls") is not None and "tools" in body:
            choice = dict(body.get("tool_choice") or {"type": "auto"})
            if choice.get("type") != "none":
                choice["disable_parallel_tool_use"] = not modern["parallel_tool_calls"]
                body["tool_choice"] = choice
        if (thinking := params.get("thinking")) is not None:
            body["thinking"] = _thinking_body(thinking)
        effort = params.get("effort")
        if effort is not None or fmt is not None:
            if effort is not None and effort not in typing.get_args(Effort):
                raise ConfigurationError(
                    f"effort must be one of {', '.join(typing.get_args(Effort))}, not {effort!r}"
                )
            config: dict[str, Any] = {} if effort is None else {"effort": effort}
            if fmt is not None:
                config["format"] = _format_body(fmt)
            body["output_config"] = config
        if stream:
            body["stream"] = True
        return body

    def _modern(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ``ModernParams`` given, checked; ``metadata`` holds only ``user_id`` here."""
        modern = modern_params(params, CLAUDE_REFUSED, self.backend)
        metadata = modern.get("metadata")
        if metadata is not None and not metadata.keys() <= {"user_id"}:
            raise ConfigurationError("Claude's metadata takes only user_id")
        return modern

    # -- answers ----------------------------------------------------------------------------------

    def _parse_chat(self, payload: Any, meta: Meta) -> ChatResponse:
        wire = _WireMessage.model_validate(payload)
        if wire.type != "message":
            raise ValueError(f"expected a message, got type {wire.type!r}")
        texts: list[str] = []
        calls: list[ToolCall] = []
        thought: list[dict[str, Any]] = []
        others = False
        for block in wire.content:
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block["text"]))
            elif kind == "tool_use":
                calls.append(_tool_call(block))
            elif kind in _THINKING_TYPES:
                thought.append(block)
            else:
                others = True
        text = "".join(texts)
        # Only what an answer has: the plain answer pays for no reasoning or refusal fields.
        extra: dict[str, Any] = {}
        said: dict[str, Any] = {}
        if others:
            extra["claude_content"] = [
                b for b in wire.content if b.get("type") not in _THINKING_TYPES
            ]
        if thought:
            extra["thinking_blocks"] = thought
            thinking = [b.get("thinking") for b in thought if b["type"] == "thinking"]
            said["reasoning"] = REASONING_SEPARATOR.join(str(t) for t in thinking if t) or None
        if wire.stop_reason == "refusal":
            said["refusal"] = refusal(wire.stop_reason, payload.get("stop_details"))
        message = Message(role="assistant", content=text or None, tool_calls=calls or None, **extra)
        return ChatResponse(
            text=text,
            message=message,
            tool_calls=calls,
            finish_reason=finish_reason(wire.stop_reason),
            usage=_usage(wire.usage or {}),
            model=wire.model,
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
            choices=[message],
            **said,
            raw=payload,
        )

    async def _decode_stream(self, response: Response, meta: Meta) -> AsyncIterator[ChatChunk]:
        state = _StreamState()
        async for event in self._sse(response):
            payload = event.json()
            if not isinstance(payload, Mapping):
                raise self._validation_error(
                    ValueError("stream event is not a JSON object"), event.data, meta.request_id
                )
            if payload.get("type") == "error" or event.event == "error":
                raise self._stream_error(payload, meta)
            chunk = self._parse(state.chunk, payload, meta)
            if chunk is not None:
                yield chunk
            if state.stopped:
                return
        raise self._cut_short(meta, "message_stop")

    # -- public calls -----------------------------------------------------------------------------

    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: type[M],
        **options: Unpack[ChatOptions],
    ) -> ChatResponse[M]: ...
    @overload
    async def chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatResponse: ...
    async def chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> ChatResponse[Any]:
        """A reply from ``POST /v1/messages`` (parameters: ``ChatParams``). ``finish_reason`` is
        Anthropic's ``stop_reason`` in the common words (``stop``, ``tool_calls``, ``length``...);
        ``raw`` keeps the original. 429, 5xx and 529 (overloaded) are retried; other failures
        raise their typed APIError at once.

        ``response_format``: a pydantic model class or a JSON schema dict (or OpenAI's
        ``json_schema`` dict), sent as ``output_config.format`` (see ``output_schema``); the
        answer comes back validated in ``parsed``. A refusal (``stop_reason`` "refusal") sets
        ``refusal`` and leaves ``parsed`` None; an answer cut at ``max_tokens`` raises
        LengthFinishReasonError. With ``thinking``, ``reasoning`` is the thinking text and
        ``message`` keeps the signed blocks, to be sent back as they are."""
        fmt = None if response_format is None else output_format(response_format)
        call = self._request(
            "chat",
            "POST",
            self.messages_path,
            self._parse_chat,
            options,
            body=self._chat_body(messages, options, False, fmt),
            allowed=CHAT_KEYS,
        )
        response: ChatResponse[Any] = await call
        return response if fmt is None else finish(response, fmt, self.name)

    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: type[M],
        **options: Unpack[ChatOptions],
    ) -> ChatStream[M]: ...
    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatStream: ...
    def stream_chat(
        self, messages: Messages, *, response_format: Any = None, **options: Unpack[ChatOptions]
    ) -> ChatStream[Any]:
        """Chunks as the events arrive (parameters: ``ChatParams``); thinking comes as
        ``chunk.reasoning``, and the last chunk carries the signed thinking blocks
        (``message_extra``). An ``error`` event raises its typed error (overloaded ->
        OverloadedError); like any failure it is retried only before the first chunk. A stream
        that ends before ``message_stop`` raises APIConnectionError. Use ``async with`` or read
        to the end; ``await stream.final()`` gives the whole answer (``parsed`` with
        ``response_format``, and a ``message`` to send back)."""
        fmt = None if response_format is None else output_format(response_format)
        return ChatStream(
            self._stream(
                "stream_chat",
                "POST",
                self.messages_path,
                self._decode_stream,
                options,
                body=self._chat_body(messages, options, True, fmt),
                allowed=CHAT_KEYS,
            ),
            fmt,
            self.name,
        )

    async def count_tokens(self, messages: Messages, **options: Unpack[CountTokensOptions]) -> int:
        """Input tokens the messages (with system and tools) would cost, before sending them:
        ``POST /v1/messages/count_tokens`` (parameters: ``MessagesParams``)."""
        counted = await self._request(
            "count_tokens",
            "POST",
            self.count_tokens_path,
            parse_as(_WireTokensCount),
            options,
            body=self._request_body(messages, options),
            allowed=COUNT_TOKENS_KEYS,
        )
        return counted.input_tokens

    async def models(self, **options: Unpack[HttpOptions]) -> list[ModelInfo]:
        """Every model the key may use, newest first, following pages while ``has_more``. The
        call options apply to each page (``timeout`` and ``deadline`` too)."""

        found: list[ModelInfo] = []
        seen: set[str] = set()
        after: str | None = None

        def parse(payload: Any, meta: Meta) -> _WireModels:
            page = _WireModels.model_validate(payload)
            if page.has_more:
                last = page.last_id or (page.data[-1].id if page.data else None)
                if last is None or last in seen:
                    raise ValueError("models list says has_more but gives no new last_id")
            return page

        while True:
            params = {"limit": str(MODELS_PAGE_LIMIT)}
            if after is not None:
                params["after_id"] = after
            page = await self._request(
                "models", "GET", self.models_path, parse, options, params=params
            )
            for m in page.data:
                found.append(
                    ModelInfo(
                        id=m.id,
                        owned_by="anthropic",
                        created=_created(m.created_at),
                        display_name=m.display_name,
                        raw=m.model_dump(),
                    )
                )
            if not page.has_more:
                return found
            after = page.last_id or page.data[-1].id  # parse made sure it is a new one
            seen.add(after)

    @property
    def files(self) -> Files:
        """Anthropic's Files API (beta): upload, list, retrieve, delete, download."""
        # loaded on first use: a program that only chats never needs it
        from .._platform.anthropic import Files

        return Files(self)

    @property
    def batches(self) -> Batches:
        """Message Batches; ``asyncllm.run_batch_job`` runs one end to end."""
        # loaded on first use: a program that only chats never needs it
        from .._platform.anthropic import Batches

        return Batches(self)


Anthropic = Claude
