"""Structured output, written once for every chat backend: what ``response_format`` may be, the
JSON schema each vendor is sent, and the answer parsed back into the model.

A backend turns ``OutputFormat`` into its own request field (OpenAI's ``response_format``,
Claude's ``output_config.format``, Gemini's ``responseJsonSchema``, Ollama's ``format``, TGI's
``grammar``, vLLM's ``structured_outputs``) and hands its ``ChatResponse`` to ``finish``. Parsing
happens after the dispatcher has returned, never inside an attempt: a model that wrote bad JSON
says nothing about the server's health, so it is neither retried nor counted by the breaker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ._exceptions import ConfigurationError, LengthFinishReasonError, StructuredOutputError
from ._http import _json

# finish_reason values that mean "cut at the token limit", as each backend reports them.
LENGTH_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS", "model_length"})

# Keywords OpenAI's strict mode refuses (its structured-outputs guide): dropped from what is sent.
# The model class still validates the answer against them (a violation is StructuredOutputError).
_STRICT_UNSUPPORTED = frozenset(
    {
        "default",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "unevaluatedProperties",
        "propertyNames",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "examples",
    }
)


@dataclass(frozen=True)
class OutputFormat:
    """A ``response_format`` read once per call.

    ``schema`` is the JSON schema as given (a model's ``model_json_schema()``), or None for "any
    JSON object" (OpenAI's ``{"type": "json_object"}``); ``model`` validates the answer (None:
    the decoded JSON is ``parsed``). ``raw`` is an OpenAI-shaped dict given as it is, sent as it
    is by OpenAI-shaped backends.
    """

    name: str
    schema: dict[str, Any] | None
    model: type[BaseModel] | None = None
    raw: dict[str, Any] | None = None
    _strict: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)

    def strict_schema(self) -> dict[str, Any]:
        """``schema`` as OpenAI's strict mode takes it (see ``strict_schema``); made once."""
        if self.schema is None:
            raise ConfigurationError("a JSON object response_format has no schema")
        if not self._strict:
            self._strict.append(strict_schema(self.schema))
        return self._strict[0]

    def openai(self) -> dict[str, Any]:
        """OpenAI's ``response_format``: the dict given, or a strict ``json_schema``."""
        if self.raw is not None:
            return self.raw
        if self.schema is None:
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.strict_schema(), "strict": True},
        }


# How deep a JSON schema may nest: far beyond any real model's, well within the stack.
MAX_SCHEMA_DEPTH = 64


def check_schema(value: Any, what: str) -> None:
    """Refuse a JSON schema nested deeper than ``MAX_SCHEMA_DEPTH`` (a circular one is, without
    end) before the walks over it meet a RecursionError; walked without recursion itself."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ConfigurationError(
                f"{what} is nested too deeply or circular (over {MAX_SCHEMA_DEPTH} levels)"
            )
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        stack.extend((c, depth + 1) for c in children if isinstance(c, (Mapping, list, tuple)))


def plain_schema(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A checked copy of a JSON schema in plain JSON types (a JSON round trip), so that what is
    sent cannot change under the caller."""
    check_schema(value, what)
    try:
        return _json.loads(_json.dumps(value))  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what} holds what JSON cannot carry: {exc}") from None


def output_format(value: Any) -> OutputFormat | None:
    """Read ``response_format``: a pydantic model class, a JSON schema dict, or an OpenAI-shaped
    ``{"type": "json_schema", "json_schema": {...}}`` / ``{"type": "json_object"}`` dict."""
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseModel):
        return OutputFormat(_name(value.__name__), value.model_json_schema(), value)
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            "response_format must be a pydantic model class, a JSON schema dict or an OpenAI "
            f"response_format dict, not {type(value).__name__}"
        )
    kind = value.get("type")
    if kind == "json_object":
        return OutputFormat("json_object", None, raw=dict(value))
    if kind == "text":
        return None
    if kind == "json_schema" and isinstance(value.get("json_schema"), Mapping):
        spec = value["json_schema"]
        schema = spec.get("schema")
        if not isinstance(schema, Mapping):
            raise ConfigurationError("a json_schema response_format needs json_schema.schema")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                "a json_schema response_format needs json_schema.name (OpenAI refuses one "
                "without it)"
            )
        raw = plain_schema(value, "response_format")
        return OutputFormat(_name(name), raw["json_schema"]["schema"], raw=raw)
    if isinstance(kind, str) and kind not in _SCHEMA_TYPES:
        raise ConfigurationError(f"response_format of type {kind!r} is not supported")
    schema = plain_schema(value, "response_format")
    return OutputFormat(_name(str(schema.get("title") or "response")), schema)


_SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def _name(text: str) -> str:
    """A schema name as OpenAI takes it: letters, digits, ``_`` and ``-``, at most 64."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in text)
    return cleaned[:64] or "response"


def rooted_schema(schema: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A checked copy of ``schema`` (``plain_schema``) whose root is a schema, not a reference:
    a recursive model's schema is a ``$ref`` at the root, and servers that want an object there
    (OpenAI's strict mode, TGI's grammar) get its target, which the references inside still
    point at."""
    out = plain_schema(schema, what)
    ref, defs = out.get("$ref"), out.get("$defs")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and isinstance(defs, dict):
        target = defs.get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            out = {**target, "$defs": defs}
    return out


def strict_schema(schema: Mapping[str, Any], what: str = "response_format") -> dict[str, Any]:
    """A copy of ``schema`` that OpenAI's strict mode accepts: every object closed
    (``additionalProperties: false``) with every property required, keywords strict mode refuses
    removed. What it cannot express raises ``ConfigurationError`` naming where: an open map
    (``dict[str, int]``, ``additionalProperties`` a schema or true) and a root that is no object.
    """
    out = rooted_schema(schema, what)
    if out.get("type") != "object":
        raise ConfigurationError(
            f"{what}: strict mode needs an object at the root of the schema "
            f"(got {out.get('type') or 'no type'}): wrap the value in a model with one field"
        )
    _close(out, "#", what)
    return out


def _close(node: Any, where: str, what: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _close(item, f"{where}/{i}", what)
        return
    if not isinstance(node, dict):
        return
    for key in _STRICT_UNSUPPORTED & node.keys():
        del node[key]
    if node.get("type") == "object" or "properties" in node:
        extra = node.get("additionalProperties", False)
        if extra is not False:
            raise ConfigurationError(
                f"{what}: strict mode cannot express an open map at {where} "
                "(additionalProperties): use a model with named fields, or a list of pairs"
            )
        properties = node.setdefault("properties", {})
        node["additionalProperties"] = False
        node["required"] = list(properties)
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                _close(sub, f"{where}/{key}/{name}", what)
        elif key in ("items", "anyOf", "allOf", "oneOf", "prefixItems", "not"):
            _close(value, f"{where}/{key}", what)


def finish(response: Any, fmt: OutputFormat | None, backend: str | None = None) -> Any:
    """Set ``response.parsed`` from its text: the validated model (or the decoded JSON without
    one). A refusal leaves ``parsed`` None (see ``response.refusal``), as does an answer that
    calls tools (its text, if any, is what the model said before calling them: "Let me
    check."). Errors as ``structured_value`` raises them."""
    if fmt is None or response.refusal or response.tool_calls:
        return response
    response.parsed = structured_value(
        response.text, fmt, response.finish_reason, response, response.request_id, backend
    )
    return response


def structured_value(
    text: str,
    fmt: OutputFormat,
    finish_reason: str | None,
    response: Any,
    request_id: str | None,
    backend: str | None = None,
) -> Any:
    """The answer ``text`` parsed for ``fmt``: the validated model, or the decoded JSON without
    one. An answer cut at the token limit (``finish_reason`` in ``LENGTH_REASONS``) raises
    ``LengthFinishReasonError``; one that does not parse or validate raises
    ``StructuredOutputError``; both carry the text and ``response``."""
    where = {
        "backend": backend,
        "request_id": request_id,
        "body": text,
        "response": response,
    }
    if finish_reason in LENGTH_REASONS:
        raise LengthFinishReasonError(
            f"the structured answer was cut at the token limit after {len(text)} characters "
            f"(finish_reason {finish_reason!r}): raise max_tokens",
            text=text,
            **where,
        )
    try:
        value = _json.loads(text)
    except ValueError as exc:
        raise StructuredOutputError(
            f"the answer is not JSON for response_format {fmt.name!r}: {exc}", text=text, **where
        ) from exc
    if fmt.model is not None:
        try:
            value = fmt.model.model_validate(value)
        except ValidationError as exc:
            raise StructuredOutputError(
                f"the answer does not validate as {fmt.model.__name__}: "
                f"{exc.error_count()} errors, first: {exc.errors()[0]['msg']}",
                text=text,
                **where,
            ) from exc
    return value
