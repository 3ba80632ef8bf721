"""Gemini (Google AI, REST ``v1beta``): generateContent, SSE streaming, embeddings, token counts.

Field names follow ``google/ai/generativelanguage/v1beta/*.proto`` in their REST JSON form
(lowerCamelCase). Messages arrive in the common form and are translated: ``assistant`` becomes
the ``model`` role, ``system``/``developer`` become ``systemInstruction``, tool results become
``functionResponse`` parts of a user turn. Gemini may leave function calls without ids, so those
get stable synthetic ids (``gcall_...``); results find their call again by name.

``response_format`` is sent as ``responseJsonSchema`` (JSON schema as it is, with
``responseMimeType: application/json``) and the answer parsed into ``parsed``. Thought parts
(``thought: true``, asked for with ``include_thoughts``) are the answer's ``reasoning``, never its
text. Thought signatures stay on the parts they came with, in the message's ``gemini_parts``
(streamed too, where a signature may arrive on an empty text part), and go back unchanged: Gemini 3
refuses a function call of the current turn sent back without its signature.

A prompt Gemini refuses (``promptFeedback.blockReason``), or an answer stopped for safety with
nothing in it, raises ``ContentBlockedError`` rather than returning an empty answer. Gemini has no
refusal field, so ``refusal`` is always None.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args, overload

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from typing_extensions import Unpack

from .._engine._fanout import fan_out
from .._engine._ratelimit import quota_windows
from .._exceptions import ConfigurationError, ContentBlockedError
from .._http import _json
from .._http._backend import ErrorInfo, HttpBackend, Meta, default_error_info
from .._http._transport import Response
from .._models import (
    MODERN_KEYS,
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    GenerationParams,
    M,
    Message,
    Messages,
    ModelInfo,
    ModernParams,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    call_arguments,
    coerce_tools,
    message_text,
    modern_params,
    normalize_messages,
    parse_as,
)
from .._options import BodyOptions, HttpOptions, keys_of
from .._structured import OutputFormat, check_schema, finish, output_format
from .._tools import ToolRunner
from .._validate import (
    check_bool,
    check_int,
    check_model,
    check_name,
    check_number,
    check_stop,
    check_str,
    check_str_list,
    given,
)
from .._wire.parts import MEDIA_PARTS, read_media
from ..streaming import ChatStream

if TYPE_CHECKING:
    from .._platform.gemini import Batches, Files

__all__ = ["GEMINI_BASE_URL", "ContentBlockedError", "Gemini", "ThinkingLevel"]

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

# batchEmbedContents takes at most this many requests; longer lists are sent in several calls.
MAX_BATCH_EMBED = 100
MAX_MODEL_PAGES = 100
SYNTHETIC_ID_PREFIX = "gcall_"

_MODEL_NAME = re.compile(r"(models|tunedModels)/[A-Za-z0-9][A-Za-z0-9._-]*")
_BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}

# ``thinkingConfig.thinkingLevel``, for Gemini 3 (2.5 takes ``thinkingBudget`` instead).
ThinkingLevel = Literal["minimal", "low", "medium", "high", "xhigh"]
_THINKING_LEVELS = frozenset(get_args(ThinkingLevel))

# -- the keyword arguments of the calls -----------------------------------------------------------


class ChatParams(GenerationParams, ModernParams, total=False):
    """The parameters ``chat`` and ``stream_chat`` share, sent as a ``GenerateContentRequest``.

    ``model``: ``gemini-2.0-flash``, ``models/...`` or ``tunedModels/...``; the client's by
    default. ``temperature`` (0 to 2), ``top_p`` (0 to 1), ``top_k`` (at least 1), ``max_tokens``
    (``maxOutputTokens``), ``stop`` (``stopSequences``) and ``seed`` go in ``generationConfig``.
    ``tools``: functions, pydantic models, ``asyncllm.Tool`` or OpenAI tool dicts, sent as
    ``functionDeclarations`` with their JSON schema as ``parametersJsonSchema`` (a ``strict``
    one makes the calling mode ``VALIDATED``), and built-in tools as their own entries beside
    them (``{"googleSearch": {}}``, ``codeExecution``, ``urlContext``...: ``BUILTIN_TOOLS``).
    ``tool_choice``: "auto", "none", "required" or the name of an offered tool.
    ``safety_settings``: a list of ``{"category", "threshold"}``.
    ``include_thoughts``, ``thinking_level`` (Gemini 3: "minimal" to "xhigh", as the model takes) and
    ``thinking_budget`` (Gemini 2.5: tokens, 0 off, -1 dynamic) go in ``thinkingConfig``; the API
    takes a level or a budget, not both. ``generation_config``: raw ``generationConfig`` fields,
    applied last (for fields this SDK does not name). ``cached_content``: the name of a context
    cache (``cachedContents/...``) the request reads its prefix from. Of the ``ModernParams``:
    ``max_completion_tokens`` is ``maxOutputTokens`` (thoughts included); ``logprobs`` and
    ``top_logprobs`` go out as ``responseLogprobs`` and ``logprobs`` and come back parsed
    (``r.logprobs``); ``parallel_tool_calls``, ``service_tier``, ``store``, ``metadata`` and
    ``prompt_cache_key`` have no counterpart (ConfigurationError). (``response_format`` is a
    parameter of its own, so that ``parsed`` is typed by the model it names.)
    """

    top_k: int | None
    tools: Sequence[Any] | None
    tool_choice: Any
    safety_settings: Sequence[Mapping[str, str]] | None
    include_thoughts: bool | None
    thinking_level: ThinkingLevel | None
    thinking_budget: int | None
    generation_config: Mapping[str, Any] | None
    cached_content: str | None


class StreamChatOptions(ChatParams, BodyOptions, total=False):
    """``stream_chat``'s keyword arguments: the chat parameters and the call options."""


class ChatOptions(StreamChatOptions, total=False):
    """``chat``'s keyword arguments: ``stream_chat``'s, plus ``n`` (``candidateCount``: that many
    answers, in ``ChatResponse.choices``). A stream carries one candidate, so it takes no ``n``."""

    n: int | None


CHAT_KEYS = keys_of(ChatOptions)
# The ModernParams the Gemini API has no counterpart for.
GEMINI_REFUSED = frozenset(
    {"parallel_tool_calls", "service_tier", "store", "metadata", "prompt_cache_key"}
)
STREAM_CHAT_KEYS = keys_of(StreamChatOptions)


# -- wire types (the parts of GenerateContentResponse etc. that we read) ------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class _FunctionCall(_Wire):
    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class _Part(_Wire):
    text: str | None = None
    function_call: _FunctionCall | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class _Content(_Wire):
    role: str | None = None
    parts: list[_Part] = Field(default_factory=list)


class _Candidate(_Wire):
    content: _Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None
    index: int | None = None
    safety_ratings: list[dict[str, Any]] | None = None
    logprobs_result: Any = None


class _LogprobCandidate(_Wire):
    token: str = ""
    log_probability: float = 0.0


class _TopCandidates(_Wire):
    candidates: list[_LogprobCandidate] = Field(default_factory=list)


class _LogprobsResult(_Wire):
    top_candidates: list[_TopCandidates] = Field(default_factory=list)
    chosen_candidates: list[_LogprobCandidate] = Field(default_factory=list)


class _PromptFeedback(_Wire):
    block_reason: str | None = None
    safety_ratings: list[dict[str, Any]] | None = None


class _UsageMetadata(_Wire):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    total_token_count: int | None = None
    cached_content_token_count: int | None = None
    thoughts_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None


class _GenerateContentResponse(_Wire):
    candidates: list[_Candidate] = Field(default_factory=list)
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None


class _ContentEmbedding(_Wire):
    values: list[float]


class _EmbedContentResponse(_Wire):
    embedding: _ContentEmbedding


class _BatchEmbedContentsResponse(_Wire):
    embeddings: list[_ContentEmbedding]


class _CountTokensResponse(_Wire):
    total_tokens: int = 0


class _Model(_Wire):
    name: str
    display_name: str | None = None
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    supported_generation_methods: list[str] = Field(default_factory=list)


class _ListModelsResponse(_Wire):
    models: list[_Model] = Field(default_factory=list)
    next_page_token: str | None = None


# -- building requests ----------------------------------------------------------------------------


def model_resource(model: str) -> str:
    """``gemini-2.0-flash`` -> ``models/gemini-2.0-flash``; ``models/...`` and ``tunedModels/...``
    are kept. Anything that could escape the path is refused."""
    name = check_model(model).strip()
    if "/" not in name:
        name = "models/" + name
    if not _MODEL_NAME.fullmatch(name):
        raise ConfigurationError(f"invalid Gemini model name {model!r}")
    return name


def _media_part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An image or file part: inline data as ``inlineData``; a URL or an uploaded file's id
    (``files/...``, or its URI) as ``fileData``, with the MIME type where it is known (a
    ``mime_type`` key on the part names it for a URL that does not)."""
    media = read_media(part, where)
    if media.data is not None:
        if media.media_type is None:
            raise ConfigurationError(
                f"{where}: Gemini needs the file's media type: send a data: URL, or a filename "
                "with a known extension"
            )
        return {"inlineData": {"mimeType": media.media_type, "data": media.data}}
    file_data: dict[str, Any] = {"fileUri": media.url or media.file_id}
    mime = media.media_type or part.get("mime_type")
    if isinstance(mime, str):
        file_data["mimeType"] = mime
    return {"fileData": file_data}


def _parts(content: Any, index: int) -> list[dict[str, Any]]:
    """Common-form content as Gemini parts: text, inline images and files as ``inlineData``,
    those by URL or file id as ``fileData``; parts already in Gemini's form pass through."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    out: list[dict[str, Any]] = []
    for position, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ConfigurationError(f"messages[{index}] has a text part without string text")
            out.append({"text": part["text"]})
        elif kind in MEDIA_PARTS:
            out.append(_media_part(part, f"messages[{index}].content[{position}]"))
        elif kind is None and len(part) >= 1 and set(part) <= _NATIVE_PART_KEYS:
            out.append(dict(part))
        else:
            raise ConfigurationError(f"messages[{index}] has a content part Gemini cannot take")
    return out


_NATIVE_PART_KEYS = frozenset(
    {"text", "inlineData", "fileData", "functionCall", "functionResponse", "thought"}
    | {"thoughtSignature", "executableCode", "codeExecutionResult", "videoMetadata"}
)


def _tool_response(content: Any) -> dict[str, Any]:
    text = message_text(content)
    try:
        value = _json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


def _sent_id(call_id: Any) -> bool:
    """Whether a call's id goes back to Gemini: the ids it gave, not the ones made up here."""
    return (
        isinstance(call_id, str) and bool(call_id) and not call_id.startswith(SYNTHETIC_ID_PREFIX)
    )


def to_gemini_contents(
    messages: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(contents, systemInstruction) for common-form ``messages``."""
    items = normalize_messages(messages, keep=frozenset({"gemini_parts"}))
    names: dict[str, str] = {}
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        role = item["role"]
        if role in ("system", "developer"):
            system.extend(_parts(item.get("content"), i))
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(item.get("content"), i)})
        elif role == "assistant":
            native = item.get("gemini_parts")
            calls = item.get("tool_calls") or []
            for call in calls:
                names[call["id"]] = call["function"]["name"]
            if isinstance(native, list) and native:
                if not all(isinstance(p, Mapping) for p in native):
                    raise ConfigurationError(f"messages[{i}].gemini_parts must be a list of dicts")
                contents.append({"role": "model", "parts": [dict(p) for p in native]})
                continue
            parts = _parts(item.get("content"), i)
            for call in calls:
                fc: dict[str, Any] = {
                    "name": call["function"]["name"],
                    "args": call_arguments(call, f"messages[{i}]"),
                }
                if _sent_id(call["id"]):
                    fc["id"] = call["id"]
                parts.append({"functionCall": fc})
            contents.append({"role": "model", "parts": parts})
        else:  # tool / function results
            cid = item.get("tool_call_id")
            name = item.get("name") or names.get(str(cid))
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"messages[{i}] is a tool result whose call (and so its name) is unknown"
                )
            response: dict[str, Any] = {"name": name, "response": _tool_response(item["content"])}
            if _sent_id(cid):
                response["id"] = cid
            part = {"functionResponse": response}
            last = contents[-1] if contents else None
            if (
                last is not None
                and last["role"] == "user"
                and last["parts"]
                and all("functionResponse" in p for p in last["parts"])
            ):
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
    if not contents:
        raise ConfigurationError("messages need at least one user or assistant message")
    return contents, ({"parts": system} if system else None)


# Gemini's built-in tools: the Tool fields beside functionDeclarations, by their JSON names
# (camelCase; the API also reads the proto's snake_case names, sent as given).
BUILTIN_TOOLS = {
    "googleSearch": "google_search",
    "googleSearchRetrieval": "google_search_retrieval",
    "codeExecution": "code_execution",
    "urlContext": "url_context",
    "computerUse": "computer_use",
    "fileSearch": "file_search",
    "googleMaps": "google_maps",
}
_BUILTIN_NAMES = frozenset(BUILTIN_TOOLS) | frozenset(BUILTIN_TOOLS.values())


def _builtin_tool(tool: Tool) -> dict[str, Any]:
    """A built-in tool's entry (``{"googleSearch": {}}``), its own ``tools`` item beside the
    function declarations; a tool Gemini has not is a ConfigurationError naming it."""
    if tool.builtin is None or "type" in tool.builtin or tool.kind not in _BUILTIN_NAMES:
        raise ConfigurationError(
            f"Gemini has no built-in tool {tool.kind!r} (it has {', '.join(BUILTIN_TOOLS)})"
        )
    return dict(tool.builtin)


def _tool_config(
    tool_choice: Any, tool_names: list[str], strict: bool = False
) -> dict[str, Any] | None:
    """``toolConfig`` for ``tool_choice``; a strict tool makes the automatic mode VALIDATED
    (calls held to their schemas; ANY holds them already)."""
    if tool_choice in (None, "auto") and strict:
        return {"functionCallingConfig": {"mode": "VALIDATED"}}
    if tool_choice is None:
        return None
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(tool_choice, str) and tool_choice in modes:
        return {"functionCallingConfig": {"mode": modes[tool_choice]}}
    name = tool_choice
    if isinstance(tool_choice, Mapping):
        spec = tool_choice.get("function", tool_choice)
        name = spec.get("name") if isinstance(spec, Mapping) else None
    if not isinstance(name, str) or name not in tool_names:
        raise ConfigurationError(
            "tool_choice must be 'auto', 'none', 'required' or the name of an offered tool"
        )
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def _response_format(fmt: OutputFormat) -> dict[str, Any]:
    """The ``generationConfig`` fields that ask for ``fmt``: JSON, following its schema
    (``responseJsonSchema``, JSON schema as given: no lossy conversion to the OpenAPI subset)."""
    if fmt.schema is None:
        return {"responseMimeType": "application/json"}
    return {
        "responseMimeType": "application/json",
        "responseJsonSchema": gemini_json_schema(fmt.schema),
    }


# What Gemini lets stand beside a ``$ref`` (besides keys starting with ``$``).
_BESIDE_REF = frozenset({"description", "default"})


def gemini_json_schema(schema: Mapping[str, Any]) -> Any:
    """``schema`` as ``responseJsonSchema`` and ``parametersJsonSchema`` take it. Gemini refuses
    a ``$ref`` with keys beside it other than ``description``, ``default`` and ``$``-keys (pydantic
    writes ``title`` or ``examples`` there from ``Field``): such a node becomes
    ``{"anyOf": [{"$ref": ...}], ...}``, which says the same. A schema that needs no change is
    returned as it is (not copied)."""
    check_schema(schema, "a JSON schema")
    return _fix_refs(schema)


def _fix_refs(node: Any) -> Any:
    if isinstance(node, list):
        items = [_fix_refs(item) for item in node]
        return node if all(a is b for a, b in zip(items, node, strict=True)) else items
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] | None = None
    for key, value in node.items():
        fixed = _fix_refs(value) if isinstance(value, (Mapping, list)) else value
        if fixed is not value:
            out = dict(node) if out is None else out
            out[key] = fixed
    current = node if out is None else out
    if (
        "$ref" in current
        and "anyOf" not in current
        and any(k not in _BESIDE_REF and not k.startswith("$") for k in current)
    ):
        rest = {k: v for k, v in current.items() if k != "$ref"}
        return {**rest, "anyOf": [{"$ref": current["$ref"]}]}
    return current


def _thinking_config(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``thinkingConfig`` from ``include_thoughts``, ``thinking_level`` and ``thinking_budget``;
    a level and a budget together are refused here, as the API would refuse them."""
    include, level, budget = (
        params.get("include_thoughts"),
        params.get("thinking_level"),
        params.get("thinking_budget"),
    )
    if include is None and level is None and budget is None:
        return None
    check_bool("include_thoughts", include)
    check_int("thinking_budget", budget, -1)
    if level is not None and (not isinstance(level, str) or level not in _THINKING_LEVELS):
        raise ConfigurationError(f"thinking_level must be one of {sorted(_THINKING_LEVELS)}")
    if level is not None and budget is not None:
        raise ConfigurationError(
            "thinking_level (Gemini 3) and thinking_budget (Gemini 2.5) cannot be used together"
        )
    config: dict[str, Any] = {}
    if include is not None:
        config["includeThoughts"] = include
    if level is not None:
        config["thinkingLevel"] = level.upper()
    if budget is not None:
        config["thinkingBudget"] = budget
    return config


def _safety_settings(value: Any) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        raise ConfigurationError("safety_settings must be a list of {category, threshold}")
    out = []
    for s in value:
        if not (
            isinstance(s, Mapping)
            and isinstance(s.get("category"), str)
            and isinstance(s.get("threshold"), str)
        ):
            raise ConfigurationError("each safety setting needs a category and a threshold")
        out.append({"category": s["category"], "threshold": s["threshold"]})
    return out


# -- reading responses ----------------------------------------------------------------------------


def _call_id(call: _FunctionCall, position: int) -> str:
    if call.id:
        return call.id
    # A name may hold a lone surrogate (JSON's \ud800 escape), which strict UTF-8 refuses.
    text = f"{call.name}:{json.dumps(call.args or {}, sort_keys=True)}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{SYNTHETIC_ID_PREFIX}{position}_{digest}"


def _finish(reason: str | None, has_calls: bool) -> str | None:
    if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if reason == "STOP" and has_calls:
        return "tool_calls"
    if reason in _BLOCKED_FINISH:
        return "content_filter"
    return _FINISH.get(reason, reason.lower())


_USAGE_EXTRAS = {
    "cached_content_token_count",
    "thoughts_token_count",
    "tool_use_prompt_token_count",
}


def _usage(meta: _UsageMetadata | None) -> Usage | None:
    if meta is None:
        return None
    extras = meta.model_dump(include=_USAGE_EXTRAS, exclude_none=True)
    completion = meta.candidates_token_count
    thoughts = meta.thoughts_token_count
    if thoughts is not None:  # the common meaning: completion tokens include reasoning
        extras["reasoning_tokens"] = thoughts
        completion = (completion or 0) + thoughts
    if meta.cached_content_token_count is not None:  # already within promptTokenCount
        extras["cached_tokens"] = meta.cached_content_token_count
    return Usage(
        prompt_tokens=meta.prompt_token_count,
        completion_tokens=completion,
        total_tokens=meta.total_token_count,
        **extras,
    )


def _read_parts(
    candidate: _Candidate, first_call: int = 0
) -> tuple[list[str], list[str], list[ToolCall]]:
    """A candidate's texts, thoughts (``thought: true`` parts: the reasoning, not the answer)
    and function calls, the calls numbered from ``first_call`` (a stream numbers them across its
    chunks)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in candidate.content.parts if candidate.content is not None else ():
        fc = part.function_call
        if fc is not None:
            call_id = _call_id(fc, first_call + len(calls))
            calls.append(ToolCall(id=call_id, name=fc.name, arguments=json.dumps(fc.args or {})))
        elif part.text is not None:
            (thoughts if part.thought else texts).append(part.text)
    return texts, thoughts, calls


def _logprobs(candidate: _Candidate) -> list[TokenLogprob] | None:
    """A candidate's ``logprobsResult`` as token logprobs: each chosen token, with the top
    candidates at its position (``topCandidates``, one entry per chosen token)."""
    result = candidate.logprobs_result
    if result is None:
        return None
    wire = _LogprobsResult.model_validate(result)
    tops = wire.top_candidates
    return [
        TokenLogprob(
            token=chosen.token,
            logprob=chosen.log_probability,
            top_logprobs=[
                {"token": c.token, "logprob": c.log_probability} for c in tops[i].candidates
            ]
            if i < len(tops)
            else [],
        )
        for i, chosen in enumerate(wire.chosen_candidates)
    ]


def _candidate_message(candidate: _Candidate) -> tuple[Message, str | None]:
    """The candidate as a common-form message, and its reasoning (the thoughts' text)."""
    texts, thoughts, calls = _read_parts(candidate)
    text = "".join(texts)
    fields: dict[str, Any] = {
        "role": "assistant",
        # No text beside tool calls is None, as in the common form (and a stream's final()).
        "content": text if text or not calls else None,
        "tool_calls": calls or None,
    }
    parts = candidate.content.parts if candidate.content is not None else []
    if any(_kept(part) for part in parts):
        # Thought signatures must go back as they came (Gemini 3 refuses a function call of the
        # current turn without its own), and so must the code a built-in tool ran and its
        # result: the message keeps the raw parts; to_gemini_contents sends them unchanged.
        fields["gemini_parts"] = [p.model_dump(by_alias=True, exclude_none=True) for p in parts]
    return Message.model_validate(fields), "".join(thoughts) if thoughts else None


def _kept(part: _Part) -> bool:
    """Whether the answer's parts go back whole: a signed part, or one the common message has no
    field for (``executableCode``, ``codeExecutionResult`` of the code execution tool)."""
    return part.thought_signature is not None or bool(part.__pydantic_extra__)


def _joined_parts(received: list[_Part]) -> list[dict[str, Any]]:
    """A streamed candidate's parts put back together as the message must send them: the pieces
    of one text (or one thought) joined into one part, which keeps the signature that closed it
    (Gemini may send that on a last piece with empty text); other parts kept whole."""
    out: list[dict[str, Any]] = []
    pieces: list[str] | None = None  # the text part still open
    thought = False

    def close(signature: str | None = None) -> None:
        part: dict[str, Any] = {"text": "".join(pieces or ())}
        if thought:
            part["thought"] = True
        if signature is not None:
            part["thoughtSignature"] = signature
        out.append(part)

    for part in received:
        text = part.text
        if text is not None and part.function_call is None and not part.__pydantic_extra__:
            if pieces is not None and thought != (part.thought is True):
                close()
                pieces = None
            if pieces is None:
                pieces, thought = [], part.thought is True
            pieces.append(text)
            if part.thought_signature is not None:
                close(part.thought_signature)
                pieces = None
            continue
        if pieces is not None:
            close()
            pieces = None
        out.append(part.model_dump(by_alias=True, exclude_none=True))
    if pieces is not None:
        close()
    return out


def _duration(value: Any) -> float | None:
    if isinstance(value, str) and value.endswith("s"):
        try:
            seconds = float(value[:-1])
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def _rpc_error(payload: Any) -> Mapping[str, Any] | None:
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), Mapping):
        error: Mapping[str, Any] = payload["error"]
        return error
    return None


def _rpc_details(error: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith(kind):
            return detail
    return None


class Gemini(HttpBackend, ToolRunner):
    """``Gemini(api_key=..., base_url=...)``: key from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``
    (sent as ``x-goog-api-key``; required for Google's own URL), base from ``GEMINI_BASE_URL``
    (default ``https://generativelanguage.googleapis.com/v1beta``). ``model=`` sets the model of
    calls that name none.
    """

    backend: ClassVar[str] = "gemini"
    default_base_url: ClassVar[str | None] = GEMINI_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("GEMINI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    api_key_required: ClassVar[bool] = True

    # -- hooks ------------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return {} if self.api_key is None else {"x-goog-api-key": self.api_key.get_secret_value()}

    def _error_info(self, payload: Any) -> ErrorInfo:
        """google.rpc.Status: ``{"error": {"code", "message", "status", "details"}}``, for status
        errors and error events in a stream alike. ``type`` is the status name
        (``RESOURCE_EXHAUSTED``); ``code`` is the ErrorInfo detail's ``reason`` (say
        ``API_KEY_INVALID``) when there is one, else the status name; ``status`` is the int
        ``code``, which types an error inside a 200 stream; ``retry_after`` is the RetryInfo
        detail's ``retryDelay``, used when no header gives a delay (the dispatcher blocks the whole
        client for it, as for ``Retry-After``); ``quotas``, the QuotaFailure detail's spent
        quotas (``quotaId``, ``quotaValue``), which the client then waits for."""
        error = _rpc_error(payload)
        if error is None:
            return default_error_info(payload)
        retry = _rpc_details(error, "google.rpc.RetryInfo")
        detail = _rpc_details(error, "google.rpc.ErrorInfo")
        delay = None if retry is None else _duration(retry.get("retryDelay"))
        quota = _rpc_details(error, "google.rpc.QuotaFailure")
        message = error.get("message")
        name = error.get("status")
        reason = detail.get("reason") if detail is not None else None
        code = error.get("code")
        return ErrorInfo(
            message=None if message is None else str(message),
            type=None if name is None else str(name),
            code=str(reason) if reason is not None else None if name is None else str(name),
            retry_after=delay,
            status=code if isinstance(code, int) and not isinstance(code, bool) else None,
            quotas=None if quota is None else quota_windows(quota.get("violations")),
        )

    def _method_path(self, model: str | None, method: str) -> str:
        """The path of a model's method: ``/models/gemini-2.0-flash:generateContent``."""
        return f"/{model_resource(self._model(model))}:{method}"

    # -- chat -------------------------------------------------------------------------------

    def _generate_body(
        self,
        messages: Any,
        params: Mapping[str, Any],
        n: int | None = None,
        fmt: OutputFormat | None = None,
    ) -> dict[str, Any]:
        """A GenerateContentRequest (without its model, which goes in the path) from the
        ``ChatParams`` in ``params`` and the ``response_format`` read as ``fmt``; every value is
        checked here, before anything is sent."""
        get = params.get
        temperature, top_p, top_k = get("temperature"), get("top_p"), get("top_k")
        max_tokens, seed = get("max_tokens"), get("seed")
        check_number("temperature", temperature, 0, 2)
        check_number("top_p", top_p, 0, 1)
        check_int("top_k", top_k, 1)
        check_int("max_tokens", max_tokens, 1)
        check_int("seed", seed)
        check_int("n", n, 1)
        contents, system = to_gemini_contents(messages)
        body: dict[str, Any] = {"contents": contents}
        if system is not None:
            body["systemInstruction"] = system
        coerced = coerce_tools(get("tools"))
        strict = False
        if coerced:
            declarations = []
            entries: list[dict[str, Any]] = []
            for tool in coerced:
                if tool.builtin is not None:
                    entries.append(_builtin_tool(tool))
                    continue
                strict = strict or bool(tool.strict)
                declaration: dict[str, Any] = {"name": tool.name}
                if tool.description:
                    declaration["description"] = tool.description
                schema = tool.parameters
                if schema.get("properties") or "$ref" in schema:  # a recursive model is a $ref
                    declaration["parametersJsonSchema"] = gemini_json_schema(schema)
                declarations.append(declaration)
            if declarations:
                entries.insert(0, {"functionDeclarations": declarations})
            body["tools"] = entries
        functions = [t.name for t in coerced or () if t.builtin is None]
        tool_config = _tool_config(get("tool_choice"), functions, strict)
        if tool_config is not None:
            body["toolConfig"] = tool_config
        settings = _safety_settings(get("safety_settings"))
        if settings is not None:
            body["safetySettings"] = settings
        if (cached := get("cached_content")) is not None:
            check_name("cached_content", cached)
            body["cachedContent"] = cached
        if not MODERN_KEYS.isdisjoint(params):
            modern = modern_params(params, GEMINI_REFUSED, self.backend)
            max_tokens = modern.get("max_completion_tokens", max_tokens)
            logprobs, top = modern.get("logprobs"), modern.get("top_logprobs")
        else:
            logprobs = top = None
        stops = check_stop(get("stop"))
        config = given(
            temperature=temperature,
            topP=top_p,
            topK=top_k,
            maxOutputTokens=max_tokens,
            stopSequences=[stops] if isinstance(stops, str) else stops,
            seed=seed,
            candidateCount=n,
            responseLogprobs=logprobs,
            logprobs=top,
        )
        if fmt is not None:
            config.update(_response_format(fmt))
        thinking = _thinking_config(params)
        if thinking is not None:
            config["thinkingConfig"] = thinking
        generation_config = get("generation_config")
        if generation_config is not None:
            if not isinstance(generation_config, Mapping):
                raise ConfigurationError("generation_config must be a mapping")
            config.update(generation_config)
        if config:
            body["generationConfig"] = config
        return body

    def _check_blocked(self, wire: _GenerateContentResponse, meta: Meta, emitted: bool) -> None:
        """Raise ContentBlockedError for a refused prompt, or for an answer stopped for safety
        before anything of it was ``emitted``."""
        where: dict[str, Any] = {
            "backend": self.name,
            "request_id": meta.request_id,
            "server_request_id": wire.response_id,
        }
        feedback = wire.prompt_feedback
        if feedback is not None and feedback.block_reason:
            raise ContentBlockedError(
                f"Gemini blocked the prompt ({feedback.block_reason})",
                block_reason=feedback.block_reason,
                safety_ratings=feedback.safety_ratings,
                error_type="prompt_blocked",
                code=feedback.block_reason,
                **where,
            )
        if wire.candidates and not emitted:
            first = wire.candidates[0]
            empty = first.content is None or not first.content.parts
            if empty and first.finish_reason in _BLOCKED_FINISH:
                raise ContentBlockedError(
                    f"Gemini stopped the answer ({first.finish_reason})"
                    + (f": {first.finish_message}" if first.finish_message else ""),
                    finish_reason=first.finish_reason,
                    safety_ratings=first.safety_ratings,
                    error_type="response_blocked",
                    code=first.finish_reason,
                    **where,
                )

    def _parse_generate(self, payload: Any, meta: Meta) -> ChatResponse:
        wire = _GenerateContentResponse.model_validate(payload)
        self._check_blocked(wire, meta, emitted=False)
        if not wire.candidates:
            raise ValueError("no candidates and no block reason")
        candidates = sorted(wire.candidates, key=lambda c: c.index or 0)
        read = [_candidate_message(c) for c in candidates]
        choices = [message for message, _ in read]
        first = choices[0]
        return ChatResponse(
            text=message_text(first.content),
            message=first,
            tool_calls=first.tool_calls or [],
            finish_reason=_finish(candidates[0].finish_reason, bool(first.tool_calls)),
            usage=_usage(wire.usage_metadata),
            model=wire.model_version,
            request_id=meta.request_id,
            server_request_id=wire.response_id,
            choices=choices,
            reasoning=read[0][1],
            logprobs=_logprobs(candidates[0]),
            raw=payload,
        )

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
        """One answer (``n`` > 1: ``candidateCount`` answers in ``choices``); see ``ChatParams``.
        A refused prompt, or an answer stopped for safety with nothing in it, raises
        ContentBlockedError.

        ``response_format``: a pydantic model class or a JSON schema dict (sent as
        ``responseJsonSchema``; the answer comes back in ``parsed``, validated by the model), or
        one of OpenAI's dicts (``json_schema``, ``json_object``: any JSON). An answer cut at
        ``max_tokens`` raises LengthFinishReasonError, one that does not validate
        StructuredOutputError."""
        fmt = None if response_format is None else output_format(response_format)
        call = self._request(
            "chat",
            "POST",
            self._method_path(options.get("model"), "generateContent"),
            self._parse_generate,
            options,
            body=self._generate_body(messages, options, options.get("n"), fmt),
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
        **options: Unpack[StreamChatOptions],
    ) -> ChatStream[M]: ...
    @overload
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: Mapping[str, Any] | None = None,
        **options: Unpack[StreamChatOptions],
    ) -> ChatStream: ...
    def stream_chat(
        self,
        messages: Messages,
        *,
        response_format: Any = None,
        **options: Unpack[StreamChatOptions],
    ) -> ChatStream[Any]:
        """Chunks as Gemini sends them (``streamGenerateContent?alt=sse``); see ``ChatParams``
        and ``chat`` (``await stream.final()`` gives the whole answer, ``parsed`` included).
        Thoughts arrive as ``chunk.reasoning``; function calls arrive whole, one ToolCallDelta
        each. The last chunk's ``message_extra`` holds the answer's ``gemini_parts`` when it
        carries thought signatures, so that ``final().message`` can be sent back. A block
        raises ContentBlockedError from the stream, an error event the typed error its ``code``
        names."""
        fmt = None if response_format is None else output_format(response_format)
        return ChatStream(
            self._stream(
                "stream_chat",
                "POST",
                self._method_path(options.get("model"), "streamGenerateContent"),
                self._decode_stream,
                options,
                body=self._generate_body(messages, options, None, fmt),
                params={"alt": "sse"},
                allowed=STREAM_CHAT_KEYS,
            ),
            fmt,
            self.name,
        )

    async def _decode_stream(self, response: Response, meta: Meta) -> AsyncIterator[ChatChunk]:
        """Events up to the end of the body, which must come after a ``finishReason`` for every
        candidate seen (else the answer was cut: APIConnectionError)."""
        calls = 0
        emitted = False
        seen: set[int] = set()
        finished: set[int] = set()
        received: list[_Part] = []  # the first candidate's parts, kept for message_extra
        signed = done = False
        async for event in self._sse(response):
            if not event.data.strip():
                continue
            payload = event.json()
            if _rpc_error(payload) is not None:
                raise self._stream_error(payload, meta)
            wire = self._parse(parse_as(_GenerateContentResponse), payload, meta)
            self._check_blocked(wire, meta, emitted)
            texts: list[str] = []
            thoughts: list[str] = []
            deltas: list[ToolCallDelta] = []
            finish = None
            for position, each in enumerate(wire.candidates):
                index = position if each.index is None else each.index
                seen.add(index)
                if each.finish_reason and each.finish_reason != "FINISH_REASON_UNSPECIFIED":
                    finished.add(index)
            if wire.candidates:
                candidate = wire.candidates[0]
                texts, thoughts, found = _read_parts(candidate, calls)
                deltas = [
                    ToolCallDelta(index=calls + i, id=c.id, name=c.name, arguments=c.arguments)
                    for i, c in enumerate(found)
                ]
                calls += len(found)
                finish = _finish(candidate.finish_reason, calls > 0)
                if candidate.content is not None:
                    received += candidate.content.parts
                    for part in candidate.content.parts if not signed else ():
                        signed = _kept(part)
                        if signed:
                            break
                done = done or finish is not None
            emitted = emitted or bool(texts or thoughts or deltas)
            yield ChatChunk(
                delta="".join(texts),
                reasoning="".join(thoughts),
                tool_calls=deltas,
                message_extra={"gemini_parts": _joined_parts(received)}
                if done and signed
                else None,
                finish_reason=finish,
                usage=_usage(wire.usage_metadata),
                model=wire.model_version,
                logprobs=_logprobs(wire.candidates[0]) if wire.candidates else None,
                request_id=meta.request_id,
                raw=payload,
            )
        if not seen or not seen <= finished:
            raise self._cut_short(meta, "a candidate's finishReason")

    # -- embeddings, tokens, models ---------------------------------------------------------

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        model: str | None = None,
        task_type: str | None = None,
        title: str | None = None,
        dimensions: int | None = None,
        **options: Unpack[BodyOptions],
    ) -> EmbeddingResponse:
        """Vectors in input order. One string goes to ``embedContent``, a list to
        ``batchEmbedContents``: in calls of up to 100, sent in parallel under one request ID; the
        first that fails cancels the rest and is raised (never a partial result).
        ``model``: the client's by default. ``task_type`` is Gemini's TaskType
        (``RETRIEVAL_QUERY``, ``SEMANTIC_SIMILARITY``...); ``title`` names the document (with
        ``RETRIEVAL_DOCUMENT``); ``dimensions`` asks for shorter vectors
        (``outputDimensionality``). ``extra_body`` is merged into each body sent (for a list,
        each ``batchEmbedContents`` body, at its top level)."""
        model = self._model(model)
        name = model_resource(model)
        texts = check_str_list("inputs", inputs, allow_str=True)
        check_int("dimensions", dimensions, 1)
        check_str("task_type", task_type)
        check_str("title", title)
        fields = given(taskType=task_type, title=title, outputDimensionality=dimensions)

        if isinstance(inputs, str):

            def parse_one(payload: Any, meta: Meta) -> EmbeddingResponse:
                wire = _EmbedContentResponse.model_validate(payload)
                return EmbeddingResponse(
                    vectors=[wire.embedding.values],
                    model=model,
                    request_id=meta.request_id,
                    raw=payload,
                )

            return await self._request(
                "embed",
                "POST",
                f"/{name}:embedContent",
                parse_one,
                options,
                body={"content": {"parts": [{"text": texts[0]}]}, **fields},
            )

        def batch_call(batch: list[str]) -> Any:
            def parse(payload: Any, meta: Meta) -> tuple[list[list[float]], str]:
                wire = _BatchEmbedContentsResponse.model_validate(payload)
                if len(wire.embeddings) != len(batch):
                    raise ValueError(
                        f"expected {len(batch)} embeddings, got {len(wire.embeddings)}"
                    )
                return [e.values for e in wire.embeddings], meta.request_id

            requests = [
                {"model": name, "content": {"parts": [{"text": t}]}, **fields} for t in batch
            ]
            return lambda: self._request(
                "embed",
                "POST",
                f"/{name}:batchEmbedContents",
                parse,
                options,
                body={"requests": requests},
            )

        results = await fan_out(
            [
                batch_call(texts[i : i + MAX_BATCH_EMBED])
                for i in range(0, len(texts), MAX_BATCH_EMBED)
            ]
        )
        vectors = [v for batch_vectors, _ in results for v in batch_vectors]
        return EmbeddingResponse(vectors=vectors, model=model, request_id=results[0][1])

    async def count_tokens(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        tools: Sequence[Any] | None = None,
        **options: Unpack[BodyOptions],
    ) -> int:
        """How many tokens ``messages`` (with their system instruction and ``tools``) take, to
        check a prompt fits before sending it. ``model``: the client's by default."""
        name = model_resource(self._model(model))
        request = self._generate_body(messages, {"tools": tools})
        if set(request) == {"contents"}:
            body: dict[str, Any] = request
        else:
            body = {"generateContentRequest": {"model": name, **request}}

        def parse(payload: Any, meta: Meta) -> int:
            return _CountTokensResponse.model_validate(payload).total_tokens

        return await self._request(
            "count_tokens", "POST", f"/{name}:countTokens", parse, options, body=body
        )

    async def models(
        self, *, page_size: int = 1000, **options: Unpack[HttpOptions]
    ) -> list[ModelInfo]:
        """Every model the key may use, all pages followed (``page_size`` per page). ``id`` is
        what ``model=`` takes."""
        if page_size is None:  # check_int lets None mean "not given"; it would be sent as "None"
            raise ConfigurationError("page_size must be an int")
        check_int("page_size", page_size, 1)
        out: list[ModelInfo] = []
        token: str | None = None
        seen: set[str] = set()

        parse = parse_as(_ListModelsResponse)
        for _ in range(MAX_MODEL_PAGES):
            params = {"pageSize": str(page_size)}
            if token:
                params["pageToken"] = token
            page = await self._request("models", "GET", "/models", parse, options, params=params)
            for m in page.models:
                out.append(
                    ModelInfo(
                        id=m.name.removeprefix("models/"),
                        owned_by="google",
                        display_name=m.display_name,
                        input_token_limit=m.input_token_limit,
                        output_token_limit=m.output_token_limit,
                        supported_generation_methods=m.supported_generation_methods,
                        raw=m.model_dump(by_alias=True, exclude_none=True),
                    )
                )
            token = page.next_page_token
            if not token or token in seen:
                return out
            seen.add(token)
        return out

    @property
    def files(self) -> Files:
        """Gemini's Files API: resumable uploads, list, retrieve, delete, download."""
        # loaded on first use: a program that only chats never needs it
        from .._platform.gemini import Files

        return Files(self)

    @property
    def batches(self) -> Batches:
        """Batch generation; ``asyncllm.run_batch_job`` runs one end to end."""
        # loaded on first use: a program that only chats never needs it
        from .._platform.gemini import Batches

        return Batches(self)
