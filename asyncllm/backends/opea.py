"""OPEA (Open Platform for Enterprise AI): a megaservice gateway plus microservices on their own ports.

Each configured service is its own backend instance in the dispatcher (its own lane, concurrency
limit and circuit breaker): ``opea-gateway``, ``opea-llm``, ``opea-embedding``, ``opea-retriever``,
``opea-reranking``, ``opea-guardrails`` and ``opea-dataprep``. ``OPEA`` is a facade that makes the
client of a service the first time that service is used and closes them all in ``aclose()``.

Gateway streams (ChatQnA, DocSum, FaqGen) send each text piece as a Python bytes literal,
``data: b'...'``, and end with ``data: [DONE]``; gateways that pass an LLM stream through (CodeGen)
send OpenAI-style JSON chunks instead. Both are read here without evaluating anything.
"""

from __future__ import annotations

import asyncio
import codecs
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .._engine._dispatcher import Dispatcher, Priority, get_dispatcher
from .._exceptions import (
    APIError,
    ClientClosedError,
    ConfigurationError,
    ResponseValidationError,
    status_error,
)
from .._http import _json
from .._http._backend import (
    BaseClient,
    Meta,
    _check_base_url,
    check_int,
    check_number,
    merge_extra,
)
from .._http._transport import Response
from .._models import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    normalize_messages,
)
from .._wire.openai import OpenAICompatible, _message, _WireChat, _WireEmbeddings
from ..streaming import Stream

T = TypeVar("T")

GATEWAY_ROLES = frozenset({"system", "user", "assistant"})
SUMMARY_TYPES = frozenset({"auto", "stuff", "truncate", "map_reduce", "refine"})

# A file to send: a path, or (file name, content) with an optional content type.
FileSpec = Union[str, "os.PathLike[str]", tuple[str, bytes], tuple[str, bytes, str]]

# -- typed results -------------------------------------------------------------------------------


class RetrievedDoc(BaseModel):
    """A document the retriever found; ``metadata`` is whatever the vector store keeps."""

    model_config = ConfigDict(extra="allow")

    text: str
    id: str | None = None
    metadata: dict[str, Any] | None = None


class RetrievalResult(BaseModel):
    docs: list[RetrievedDoc]
    query: str | None = None
    request_id: str
    raw: Any = None


class RerankedDoc(BaseModel):
    text: str
    score: float | None = None


class RerankResult(BaseModel):
    """Documents best first, at most ``top_n`` of them."""

    docs: list[RerankedDoc]
    query: str | None = None
    request_id: str
    raw: Any = None


class GuardrailResult(BaseModel):
    """``blocked`` is set when the guardrail told downstream services not to run (a policy hit);
    ``text`` is then the guardrail's explanation, otherwise the (possibly sanitized) input."""

    text: str
    blocked: bool
    request_id: str
    raw: Any = None


class IngestResult(BaseModel):
    status: int | None = None
    message: str | None = None
    request_id: str
    raw: Any = None


class HealthResult(BaseModel):
    """The answer of ``GET /v1/health_check``; a failing service raises instead."""

    service: str
    status: int
    info: dict[str, Any] = Field(default_factory=dict)
    request_id: str


# -- the bytes-literal stream format --------------------------------------------------------------

_SIMPLE_ESCAPES = {
    ord("\\"): 0x5C,
    ord("'"): 0x27,
    ord('"'): 0x22,
    ord("n"): 0x0A,
    ord("t"): 0x09,
    ord("r"): 0x0D,
    ord("a"): 0x07,
    ord("b"): 0x08,
    ord("f"): 0x0C,
    ord("v"): 0x0B,
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_OCTAL = frozenset(b"01234567")


def parse_bytes_literal(literal: bytes | str) -> bytes:
    """The bytes a Python bytes literal (``b'...'`` / ``b"..."``, as ``repr(bytes)`` writes it)
    stands for. Nothing is evaluated: only the escapes ``\\\\ \\' \\" \\n \\t \\r \\a \\b \\f \\v
    \\xNN`` and octal ``\\NNN`` are read. A malformed literal raises ``ValueError``.

    Lenient where OPEA itself is sloppy: raw non-ASCII bytes and an unescaped quote inside are
    kept as they are (OPEA's orchestrator writes ``"data: b'" + text + "'"`` for guardrail
    answers), and an unknown escape keeps its backslash, as Python does.
    """
    raw = literal.encode("utf-8") if isinstance(literal, str) else bytes(literal)
    raw = raw.strip()
    if len(raw) < 3 or raw[0] not in b"bB" or raw[1] not in b"'\"" or raw[-1] != raw[1]:
        raise ValueError("not a bytes literal")
    body = raw[2:-1]
    out = bytearray()
    i = 0
    n = len(body)
    while True:
        j = body.find(b"\\", i)
        if j < 0:
            out += body[i:]
            return bytes(out)
        out += body[i:j]
        if j + 1 >= n:
            raise ValueError("bytes literal ends inside an escape (unterminated)")
        e = body[j + 1]
        if e == ord("x"):
            digits = body[j + 2 : j + 4]
            if len(digits) != 2 or not all(d in _HEX for d in digits):
                raise ValueError("invalid \\x escape in bytes literal")
            out.append(int(digits, 16))
            i = j + 4
        elif e in _OCTAL:
            k = j + 1
            while k < n and k < j + 4 and body[k] in _OCTAL:
                k += 1
            value = int(body[j + 1 : k], 8)
            if value > 0xFF:
                raise ValueError("octal escape out of range in bytes literal")
            out.append(value)
            i = k
        elif e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i = j + 2
        else:
            out += body[j : j + 2]
            i = j + 2


# -- errors and shared plumbing ------------------------------------------------------------------


def _detail_text(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of ``{"loc", "msg", "type"}`` validation errors."""
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, Mapping):
                where = item.get("loc")
                loc = ".".join(map(str, where)) if isinstance(where, list) else str(where or "")
                msg = str(item.get("msg", ""))
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class _OPEAService(BaseClient):
    """What every OPEA service shares: FastAPI error bodies (``{"detail": ...}``) and an
    optional Bearer key (``OPEA_API_KEY``) for deployments behind an authenticating proxy."""

    backend: ClassVar[str] = "opea"
    api_key_env: ClassVar[tuple[str, ...]] = ("OPEA_API_KEY",)
    server_request_id_header: ClassVar[str | None] = "x-request-id"

    def _error_details(self, payload: Any) -> tuple[str | None, str | None, str | None]:
        if isinstance(payload, Mapping) and "detail" in payload:
            detail = payload["detail"]
            etype = None
            if isinstance(detail, list) and detail and isinstance(detail[0], Mapping):
                etype = str(detail[0].get("type")) if detail[0].get("type") else None
            return _detail_text(detail), etype, None
        return super()._error_details(payload)

    async def health(
        self, *, priority: int, timeout: float | None, deadline: float | None
    ) -> HealthResult:
        def parse(payload: Any, meta: Meta) -> HealthResult:
            info = dict(payload) if isinstance(payload, Mapping) else {"body": payload}
            return HealthResult(
                service=self.name, status=meta.status, info=info, request_id=meta.request_id
            )

        return await self._request(
            "health",
            "GET",
            "/v1/health_check",
            parse,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )


def _chat_response(payload: Any, meta: Meta) -> ChatResponse:
    wire = _WireChat.model_validate(payload)
    choices = [_message(c.message) for c in wire.choices]
    first = choices[0]
    return ChatResponse(
        text=first.content if isinstance(first.content, str) else "",
        message=first,
        tool_calls=first.tool_calls or [],
        finish_reason=wire.choices[0].finish_reason,
        usage=wire.usage,
        model=wire.model,
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        choices=choices,
        raw=payload,
    )


def _json_chunk_text(payload: Mapping[str, Any]) -> str | None:
    """The text of a JSON stream line that is not an OpenAI chunk: a LangChain/TGI ``ops``
    patch (which OPEA's own stream aligners read) or a ``TextDoc``."""
    ops = payload.get("ops")
    if isinstance(ops, list) and ops and isinstance(ops[0], Mapping):
        value = ops[0].get("value")
        return value if isinstance(value, str) else None
    text = payload.get("text")
    return text if isinstance(text, str) else None


class _Gateway(_OPEAService):
    backend: ClassVar[str] = "opea-gateway"
    default_base_url: ClassVar[str | None] = "http://localhost:8888"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_API_ENDPOINT",)

    async def decode_stream(self, response: Response, meta: Meta) -> AsyncIterator[ChatChunk]:
        """Gateway SSE lines, one ``data:`` line per event: bytes literals or JSON chunks.
        A gateway that answers a stream request with one JSON answer gives one chunk."""
        if "application/json" in response.headers.get("Content-Type", "").lower():
            raw = await response.read(self.max_response_bytes)
            try:
                payload = _json.loads(raw)
            except ValueError as exc:
                raise self._bad_line(f"answer is not valid JSON: {exc}", raw, meta) from exc
            answer = self._parse(_chat_response, payload, meta)
            yield ChatChunk(
                delta=answer.text,
                finish_reason=answer.finish_reason or "stop",
                usage=answer.usage,
                model=answer.model,
                request_id=meta.request_id,
                raw=payload,
            )
            return
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        finished = False
        async for line in self._lines(response):
            if not line.startswith(b"data:"):
                continue  # blank separators, comments and other SSE fields
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            value = value.strip()
            if not value:
                continue
            if value == b"[DONE]":
                tail = decoder.decode(b"", final=True)
                if tail or not finished:
                    yield ChatChunk(
                        delta=tail,
                        finish_reason=None if finished else "stop",
                        request_id=meta.request_id,
                    )
                return
            first = value[:1]
            if first in (b"b", b"B") and value[1:2] in (b"'", b'"'):
                try:
                    data = parse_bytes_literal(value)
                except ValueError as exc:
                    raise self._bad_line(f"malformed bytes literal: {exc}", value, meta) from exc
                text = decoder.decode(data)
                if text:
                    yield ChatChunk(
                        delta=text, request_id=meta.request_id, raw=value.decode("utf-8", "replace")
                    )
                continue
            if first not in (b"{", b'"'):
                raise self._bad_line("stream line is neither a bytes literal nor JSON", value, meta)
            try:
                payload = _json.loads(value)
            except ValueError as exc:
                raise self._bad_line(f"stream line is not valid JSON: {exc}", value, meta) from exc
            if isinstance(payload, str):
                if payload:
                    yield ChatChunk(delta=payload, request_id=meta.request_id, raw=payload)
                continue
            if not isinstance(payload, Mapping):
                raise self._bad_line("stream line is not a JSON object", value, meta)
            if "error" in payload or "detail" in payload:
                raise self._in_stream_error(payload, meta)
            if isinstance(payload.get("choices"), list):
                chunk = self._parse(OpenAICompatible._chunk, payload, meta)
                if not chunk.delta and payload["choices"]:
                    choice = payload["choices"][0]
                    legacy = choice.get("text") if isinstance(choice, Mapping) else None
                    if isinstance(legacy, str):  # completions-style chunks
                        chunk.delta = legacy
                finished = finished or chunk.finish_reason is not None
                yield chunk
                continue
            other = _json_chunk_text(payload)
            if other:
                yield ChatChunk(delta=other, request_id=meta.request_id, raw=payload)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield ChatChunk(delta=tail, request_id=meta.request_id)

    def _bad_line(self, message: str, value: bytes, meta: Meta) -> ResponseValidationError:
        return ResponseValidationError(
            message,
            backend=self.name,
            request_id=meta.request_id,
            body=value[:500].decode("utf-8", "replace"),
        )

    def _in_stream_error(self, payload: Mapping[str, Any], meta: Meta) -> APIError:
        message, etype, code = self._error_details(payload)
        error = payload.get("error")
        status = error.get("status") if isinstance(error, Mapping) else None
        kwargs: dict[str, Any] = {
            "backend": self.name,
            "request_id": meta.request_id,
            "body": _json.excerpt(payload),
            "code": code,
            "error_type": etype,
        }
        if isinstance(status, int) and status >= 400:
            return status_error(status, message or "error in stream", **kwargs)
        return APIError(message or "error in stream", **kwargs)


class _LLM(_OPEAService, OpenAICompatible):
    backend: ClassVar[str] = "opea-llm"
    default_base_url: ClassVar[str | None] = "http://localhost:9000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_LLM_ENDPOINT",)
    chat_path: ClassVar[str] = "/v1/chat/completions"

    # OPEA's LLM service fills in its own model (LLM_MODEL_ID) when none is sent.
    _NO_MODEL = "\x00opea-default-model"

    def _chat_body(self, messages: Any, *, model: str | None, **kwargs: Any) -> dict[str, Any]:
        body = super()._chat_body(messages, model=model, **kwargs)
        if body.get("model") is self._NO_MODEL:
            del body["model"]
        return body


class _Embedding(_OPEAService):
    backend: ClassVar[str] = "opea-embedding"
    default_base_url: ClassVar[str | None] = "http://localhost:6000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_EMBEDDING_ENDPOINT",)


class _Retriever(_OPEAService):
    backend: ClassVar[str] = "opea-retriever"
    default_base_url: ClassVar[str | None] = "http://localhost:7000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_RETRIEVER_ENDPOINT",)


class _Reranking(_OPEAService):
    backend: ClassVar[str] = "opea-reranking"
    default_base_url: ClassVar[str | None] = "http://localhost:8000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_RERANKING_ENDPOINT",)


class _Guardrails(_OPEAService):
    backend: ClassVar[str] = "opea-guardrails"
    default_base_url: ClassVar[str | None] = "http://localhost:9090"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_GUARDRAILS_ENDPOINT",)


class _Dataprep(_OPEAService):
    backend: ClassVar[str] = "opea-dataprep"
    default_base_url: ClassVar[str | None] = "http://localhost:5000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_DATAPREP_ENDPOINT",)


SERVICES: dict[str, type[_OPEAService]] = {
    "gateway": _Gateway,
    "llm": _LLM,
    "embedding": _Embedding,
    "retriever": _Retriever,
    "reranking": _Reranking,
    "guardrails": _Guardrails,
    "dataprep": _Dataprep,
}

# -- request building -------------------------------------------------------------------------------


def _gateway_messages(value: Any) -> str | list[dict[str, Any]]:
    """A question string, or messages in the roles OPEA's gateways understand."""
    if isinstance(value, str):
        if not value.strip():
            raise ConfigurationError("the question must not be empty")
        return value
    messages = normalize_messages(value)
    for i, message in enumerate(messages):
        if message["role"] not in GATEWAY_ROLES:
            raise ConfigurationError(
                f"messages[{i}]: OPEA gateways accept only system, user and assistant messages"
            )
    return messages


def _generation(
    *,
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    repetition_penalty: float | None,
) -> dict[str, Any]:
    check_int("max_tokens", max_tokens, 1)
    check_number("temperature", temperature, 0, 2)
    check_number("top_p", top_p, 0, 1)
    check_int("top_k", top_k, 1)
    check_number("repetition_penalty", repetition_penalty, 0)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigurationError("model must be a non-empty string")
    params = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
    }
    return {k: v for k, v in params.items() if v is not None}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _form_text(what: str, text: str, *, header: bool = False) -> str:
    """Text for a multipart form, checked before anything is sent: aiohttp refuses what it
    cannot write only when it writes the form. Names and content types go into part headers."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(f"{what} is not valid text: {exc}") from exc
    if header and _CONTROL.search(text):
        raise ConfigurationError(f"{what} holds a control character (CR, LF, NUL...)")
    return text


def _form_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = _json.dumps(value).decode()
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"form field {name!r} cannot be sent: {exc}") from exc
    return _form_text(f"form field {name!r}", text)


# A checked file: (name, content or the path to read it from, content type).
_CheckedFile = tuple[str, bytes | Path, str]


def _check_files(files: Sequence[FileSpec] | None) -> list[_CheckedFile]:
    """Check the file list before anything is sent; paths must name existing files."""
    if files is None:
        return []
    if isinstance(files, (str, bytes, os.PathLike)) or not isinstance(files, Sequence):
        raise ConfigurationError("files must be a list of paths or (name, bytes) tuples")
    checked: list[_CheckedFile] = []
    for i, item in enumerate(files):
        source: bytes | Path
        if isinstance(item, tuple):
            if len(item) not in (2, 3) or not isinstance(item[0], str) or not item[0]:
                raise ConfigurationError(f"files[{i}] must be (name, bytes) or (name, bytes, type)")
            name, content = item[0], item[1]
            if not isinstance(content, (bytes, bytearray)):
                raise ConfigurationError(f"files[{i}] content must be bytes")
            ctype = item[2] if len(item) == 3 else None
            if ctype is not None and not isinstance(ctype, str):
                raise ConfigurationError(f"files[{i}] content type must be a string")
            source = bytes(content)
        elif isinstance(item, (str, os.PathLike)):
            source = Path(item)
            try:
                found = source.is_file()
            except OSError:  # say, a name too long for the file system
                found = False
            if not found:
                raise ConfigurationError(f"files[{i}] is not a readable file: {str(source)!r}")
            name, ctype = source.name, None
        else:
            raise ConfigurationError(f"files[{i}] must be a path or a (name, bytes) tuple")
        _form_text(f"files[{i}] name", name, header=True)
        if ctype is not None:
            _form_text(f"files[{i}] content type", ctype, header=True)
        checked.append((name, source, ctype or mimetypes.guess_type(name)[0] or "text/plain"))
    return checked


async def _read_files(files: list[_CheckedFile]) -> list[tuple[str, bytes, str]]:
    """The files' contents, paths read off the event loop."""
    loaded: list[tuple[str, bytes, str]] = []
    for name, source, ctype in files:
        if isinstance(source, Path):
            try:
                source = await asyncio.to_thread(source.read_bytes)
            except OSError as exc:
                raise ConfigurationError(f"file {name!r} cannot be read: {exc}") from exc
        loaded.append((name, source, ctype))
    return loaded


def _form_builder(
    fields: Mapping[str, Any], files: list[tuple[str, bytes, str]], file_field: str = "files"
) -> Callable[[], aiohttp.FormData]:
    """A FormData is consumed when sent, so every attempt gets a fresh one."""
    items = []
    for key, value in fields.items():
        if value is None:
            continue
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"form field names must be non-empty strings, not {key!r}")
        _form_text(f"form field name {key!r}", key, header=True)
        items.append((key, _form_value(key, value)))

    def build() -> aiohttp.FormData:
        try:
            form = aiohttp.FormData(default_to_multipart=True)
        except TypeError:  # aiohttp < 3.10: urlencoded without files, which OPEA also reads
            form = aiohttp.FormData()
        for key, value in items:
            form.add_field(key, value)
        for name, data, ctype in files:
            form.add_field(file_field, data, filename=name, content_type=ctype)
        return form

    return build


# -- the facade ------------------------------------------------------------------------------------


class OPEA:
    """``OPEA(base_url=None, *, llm_url=None, embedding_url=None, ...)``: the gateway from
    ``OPEA_API_ENDPOINT`` (default ``http://localhost:8888``) and each microservice from its own
    variable (``OPEA_LLM_ENDPOINT`` :9000, ``OPEA_EMBEDDING_ENDPOINT`` :6000,
    ``OPEA_RETRIEVER_ENDPOINT`` :7000, ``OPEA_RERANKING_ENDPOINT`` :8000,
    ``OPEA_GUARDRAILS_ENDPOINT`` :9090, ``OPEA_DATAPREP_ENDPOINT`` :5000).

    Every other keyword (``timeout``, ``retry``, ``breaker``, ``max_concurrent_requests``,
    ``dispatcher``, ``transport``...) applies to each service's client; each service still gets
    its own lane, so a failing retriever opens only the retriever's breaker.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        llm_url: str | None = None,
        embedding_url: str | None = None,
        retriever_url: str | None = None,
        reranking_url: str | None = None,
        guardrails_url: str | None = None,
        dataprep_url: str | None = None,
        api_key: str | SecretStr | None = None,
        name: str = "opea",
        **client_kwargs: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name must be a non-empty string")
        if "base_url" in client_kwargs or "api_key" in client_kwargs:
            raise ConfigurationError("give base URLs per service (base_url=, llm_url=, ...)")
        given = {
            "gateway": base_url,
            "llm": llm_url,
            "embedding": embedding_url,
            "retriever": retriever_url,
            "reranking": reranking_url,
            "guardrails": guardrails_url,
            "dataprep": dataprep_url,
        }
        self._urls: dict[str, str] = {}
        for service, url in given.items():
            cls = SERVICES[service]
            resolved = url or next(
                (os.environ[e] for e in cls.base_url_env if os.environ.get(e)), None
            )
            self._urls[service] = _check_base_url(resolved or str(cls.default_base_url))
        self.name = name
        self._api_key = api_key
        self._kwargs = client_kwargs
        self._clients: dict[str, _OPEAService] = {}
        self._closed = False
        # Fail on bad settings now, not at the first call.
        SERVICES["gateway"](base_url=self._urls["gateway"], api_key=api_key, **client_kwargs)

    def __repr__(self) -> str:
        return f"OPEA(name={self.name!r}, gateway={self._urls['gateway']!r})"

    @property
    def base_urls(self) -> dict[str, str]:
        """The base URL of every service, configured or default."""
        return dict(self._urls)

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher every service runs on: the one given, or the loop's shared one."""
        given = self._kwargs.get("dispatcher")
        return given if isinstance(given, Dispatcher) else get_dispatcher()

    def _client(self, service: str) -> _OPEAService:
        if self._closed:
            raise ClientClosedError("client is closed", backend=f"{self.name}-{service}")
        client = self._clients.get(service)
        if client is None:
            if service not in SERVICES:
                raise ConfigurationError(
                    f"unknown OPEA service {service!r}; one of {', '.join(SERVICES)}"
                )
            client = self._clients[service] = SERVICES[service](
                base_url=self._urls[service],
                api_key=self._api_key,
                name=f"{self.name}-{service}",
                **self._kwargs,
            )
        return client

    @property
    def _gateway(self) -> _Gateway:
        client = self._client("gateway")
        assert isinstance(client, _Gateway)
        return client

    @property
    def _llm(self) -> _LLM:
        client = self._client("llm")
        assert isinstance(client, _LLM)
        return client

    async def aclose(self) -> None:
        """Close every service client that was created. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        results = await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> OPEA:
        if self._closed:
            raise ClientClosedError("a closed client cannot be reopened", backend=self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- gateway: ChatQnA ------------------------------------------------------------------------

    def _chatqna_body(
        self,
        messages_or_question: Any,
        *,
        stream: bool,
        k: int | None,
        top_n: int | None,
        fetch_k: int | None,
        search_type: str | None,
        score_threshold: float | None,
        chat_template: str | None,
        generation: dict[str, Any],
        extra_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        check_int("k", k, 1)
        check_int("top_n", top_n, 1)
        check_int("fetch_k", fetch_k, 1)
        check_number("score_threshold", score_threshold, 0)
        for label, value in (("search_type", search_type), ("chat_template", chat_template)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{label} must be a string")
        body: dict[str, Any] = {"messages": _gateway_messages(messages_or_question)}
        body.update(generation)
        optional = {
            "k": k,
            "top_n": top_n,
            "fetch_k": fetch_k,
            "search_type": search_type,
            "score_threshold": score_threshold,
            "chat_template": chat_template,
        }
        body.update((key, v) for key, v in optional.items() if v is not None)
        body["stream"] = stream
        return merge_extra(body, extra_body)

    async def chatqna(
        self,
        messages_or_question: str | Sequence[Mapping[str, Any] | BaseModel],
        *,
        k: int | None = None,
        top_n: int | None = None,
        fetch_k: int | None = None,
        search_type: str | None = None,
        score_threshold: float | None = None,
        chat_template: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """A RAG answer from the ChatQnA megaservice (retrieve ``k`` docs, keep the ``top_n`` best
        after reranking, then generate). Asks for the whole answer at once (``stream: false``)."""
        body = self._chatqna_body(
            messages_or_question,
            stream=False,
            k=k,
            top_n=top_n,
            fetch_k=fetch_k,
            search_type=search_type,
            score_threshold=score_threshold,
            chat_template=chat_template,
            generation=_generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            extra_body=extra_body,
        )
        return await self._gateway_json(
            "chatqna", "/v1/chatqna", body, extra_headers, priority, timeout, deadline
        )

    def stream_chatqna(
        self,
        messages_or_question: str | Sequence[Mapping[str, Any] | BaseModel],
        *,
        k: int | None = None,
        top_n: int | None = None,
        fetch_k: int | None = None,
        search_type: str | None = None,
        score_threshold: float | None = None,
        chat_template: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[ChatChunk]:
        """ChatQnA as it is generated (its default mode). Use ``async with`` or read to the end."""
        body = self._chatqna_body(
            messages_or_question,
            stream=True,
            k=k,
            top_n=top_n,
            fetch_k=fetch_k,
            search_type=search_type,
            score_threshold=score_threshold,
            chat_template=chat_template,
            generation=_generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            extra_body=extra_body,
        )
        return self._gateway_stream(
            "stream_chatqna", "/v1/chatqna", body, extra_headers, priority, timeout, deadline
        )

    async def _gateway_json(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        extra_headers: Mapping[str, str] | None,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> ChatResponse:
        return await self._gateway._request(
            operation,
            "POST",
            path,
            _chat_response,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    def _gateway_stream(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        extra_headers: Mapping[str, str] | None,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> Stream[ChatChunk]:
        gateway = self._gateway
        return gateway._stream(
            operation,
            "POST",
            path,
            gateway.decode_stream,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    # -- gateway: CodeGen -------------------------------------------------------------------

    def _codegen_body(
        self,
        messages_or_prompt: Any,
        stream: bool,
        index_name: str | None,
        generation: dict[str, Any],
        extra_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if index_name is not None and (not isinstance(index_name, str) or not index_name):
            raise ConfigurationError("index_name must be a non-empty string")
        body: dict[str, Any] = {"messages": _gateway_messages(messages_or_prompt), **generation}
        if index_name is not None:
            body["index_name"] = index_name
        body["stream"] = stream
        return merge_extra(body, extra_body)

    async def codegen(
        self,
        messages_or_prompt: str | Sequence[Mapping[str, Any] | BaseModel],
        *,
        index_name: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """Code from the CodeGen megaservice; ``index_name`` grounds it in an ingested code base."""
        body = self._codegen_body(
            messages_or_prompt,
            False,
            index_name,
            _generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            extra_body,
        )
        return await self._gateway_json(
            "codegen", "/v1/codegen", body, extra_headers, priority, timeout, deadline
        )

    def stream_codegen(
        self,
        messages_or_prompt: str | Sequence[Mapping[str, Any] | BaseModel],
        *,
        index_name: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[ChatChunk]:
        """CodeGen as it is generated (CodeGen passes the LLM's OpenAI-style chunks through)."""
        body = self._codegen_body(
            messages_or_prompt,
            True,
            index_name,
            _generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            extra_body,
        )
        return self._gateway_stream(
            "stream_codegen", "/v1/codegen", body, extra_headers, priority, timeout, deadline
        )

    # -- gateway: DocSum and FaqGen ---------------------------------------------------------------

    @staticmethod
    def _document_fields(
        text: str,
        files: Sequence[FileSpec] | None,
        generation: dict[str, Any],
        extra: Mapping[str, Any],
        extra_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if not isinstance(text, str):
            raise ConfigurationError("text must be a string")
        if not text.strip() and not files:
            raise ConfigurationError("give text or files to work on")
        body: dict[str, Any] = {"messages": text, **generation}
        body.update((k, v) for k, v in extra.items() if v is not None)
        return merge_extra(body, extra_body)

    @staticmethod
    def _docsum_extra(
        summary_type: str | None,
        chunk_size: int | None,
        chunk_overlap: int | None,
        language: str | None,
    ) -> dict[str, Any]:
        if summary_type is not None and (
            not isinstance(summary_type, str) or summary_type not in SUMMARY_TYPES
        ):
            raise ConfigurationError(f"summary_type must be one of {sorted(SUMMARY_TYPES)}")
        check_int("chunk_size", chunk_size, 1)
        check_int("chunk_overlap", chunk_overlap, 0)
        if language is not None and not isinstance(language, str):
            raise ConfigurationError("language must be a string")
        return {
            "type": "text",
            "summary_type": summary_type,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "language": language,
        }

    async def docsum(
        self,
        text: str = "",
        *,
        files: Sequence[FileSpec] | None = None,
        summary_type: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        language: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """A summary from the DocSum megaservice of ``text`` and/or text ``files`` (sent as a
        multipart form when there are files, as JSON otherwise)."""
        body = self._document_fields(
            text,
            files,
            _generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            self._docsum_extra(summary_type, chunk_size, chunk_overlap, language),
            extra_body,
        )
        body["stream"] = False
        return await self._document_json(
            "docsum", "/v1/docsum", body, files, extra_headers, priority, timeout, deadline
        )

    def stream_docsum(
        self,
        text: str = "",
        *,
        files: Sequence[FileSpec] | None = None,
        summary_type: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        language: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[ChatChunk]:
        """DocSum as it is generated. Use ``async with`` or read to the end."""
        body = self._document_fields(
            text,
            files,
            _generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            self._docsum_extra(summary_type, chunk_size, chunk_overlap, language),
            extra_body,
        )
        body["stream"] = True
        return self._document_stream(
            "stream_docsum",
            "/v1/docsum",
            body,
            files,
            True,
            extra_headers,
            priority,
            timeout,
            deadline,
        )

    async def faqgen(
        self,
        text: str = "",
        *,
        files: Sequence[FileSpec] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """FAQs generated from ``text`` and/or ``files`` by the FaqGen megaservice (which reads
        only multipart forms, so this always sends one)."""
        body = self._document_fields(
            text,
            files,
            _generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            {},
            extra_body,
        )
        body["stream"] = False
        loaded = await _read_files(_check_files(files))
        return await self._gateway._request(
            "faqgen",
            "POST",
            "/v1/faqgen",
            _chat_response,
            data=_form_builder(body, loaded),
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    def stream_faqgen(
        self,
        text: str = "",
        *,
        files: Sequence[FileSpec] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[ChatChunk]:
        """FaqGen as it is generated. Use ``async with`` or read to the end."""
        body = self._document_fields(
            text,
            files,
            _generation(
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
            ),
            {},
            extra_body,
        )
        body["stream"] = True
        return self._document_stream(
            "stream_faqgen",
            "/v1/faqgen",
            body,
            files,
            False,
            extra_headers,
            priority,
            timeout,
            deadline,
        )

    async def _document_json(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        files: Sequence[FileSpec] | None,
        extra_headers: Mapping[str, str] | None,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> ChatResponse:
        loaded = await _read_files(_check_files(files))
        if not loaded:
            return await self._gateway_json(
                operation, path, body, extra_headers, priority, timeout, deadline
            )
        return await self._gateway._request(
            operation,
            "POST",
            path,
            _chat_response,
            data=_form_builder(body, loaded),
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    def _document_stream(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        files: Sequence[FileSpec] | None,
        json_without_files: bool,
        extra_headers: Mapping[str, str] | None,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> Stream[ChatChunk]:
        checked = _check_files(files)
        if json_without_files and not checked:
            return self._gateway_stream(
                operation, path, body, extra_headers, priority, timeout, deadline
            )
        gateway = self._gateway
        built: list[Callable[[], aiohttp.FormData]] = []

        async def form() -> aiohttp.FormData:
            # The files are read once, on the first attempt; the form is new for each attempt.
            if not built:
                built.append(_form_builder(body, await _read_files(checked)))
            return built[0]()

        return gateway._stream(
            operation,
            "POST",
            path,
            gateway.decode_stream,
            data=form,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    # -- LLM microservice --------------------------------------------------------------------

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any] | BaseModel],
        *,
        model: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        user: str | None = None,
        n: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """A chat completion from the LLM microservice (OpenAI format); without ``model`` the
        service uses the model it was started with."""
        return await self._llm.chat(
            messages,
            model=_LLM._NO_MODEL if model is None else model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            user=user,
            n=n,
            extra_body=extra_body,
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any] | BaseModel],
        *,
        model: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        user: str | None = None,
        n: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[ChatChunk]:
        """Chunks from the LLM microservice as they come (OpenAI SSE)."""
        return self._llm.stream_chat(
            messages,
            model=_LLM._NO_MODEL if model is None else model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            user=user,
            n=n,
            extra_body=extra_body,
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    # -- embedding, retrieval, reranking, guardrails ------------------------------------------

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> EmbeddingResponse:
        """Vectors from the embedding microservice (``/v1/embeddings``), in input order."""
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            isinstance(inputs, (bytes, Mapping))
            or not isinstance(inputs, Sequence)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            raise ConfigurationError("inputs must be a non-empty list of strings")
        check_int("dimensions", dimensions, 1)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ConfigurationError("model must be a non-empty string")
        body: dict[str, Any] = {"input": list(inputs), "encoding_format": "float"}
        if model is not None:
            body["model"] = model
        if dimensions is not None:
            body["dimensions"] = dimensions
        merge_extra(body, extra_body)
        count = len(inputs)

        def parse(payload: Any, meta: Meta) -> EmbeddingResponse:
            wire = _WireEmbeddings.model_validate(payload)
            ordered = sorted(wire.data, key=lambda d: d.index)
            if [d.index for d in ordered] != list(range(count)):
                raise ValueError(f"expected {count} embeddings indexed 0..{count - 1}")
            return EmbeddingResponse(
                vectors=[d.embedding for d in ordered],
                usage=wire.usage,
                model=wire.model,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._client("embedding")._request(
            "embed",
            "POST",
            "/v1/embeddings",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    async def retrieve(
        self,
        text: str,
        embedding: Sequence[float],
        *,
        k: int | None = None,
        search_type: str | None = None,
        fetch_k: int | None = None,
        score_threshold: float | None = None,
        distance_threshold: float | None = None,
        lambda_mult: float | None = None,
        index_name: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> RetrievalResult:
        """The ``k`` stored documents nearest to ``embedding`` (the vector of ``text``, say from
        ``embed``), from the retriever microservice (``/v1/retrieval``, an ``EmbedDoc``)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError("text must be a non-empty string")
        if (
            isinstance(embedding, (str, bytes))
            or not isinstance(embedding, Sequence)
            or not embedding
        ):
            raise ConfigurationError("embedding must be a non-empty list of numbers")
        for number in embedding:
            if number is None:  # check_number lets None mean "not given"
                raise ConfigurationError("embedding values must be numbers")
            check_number("embedding values", number)
        check_int("k", k, 1)
        check_int("fetch_k", fetch_k, 1)
        check_number("score_threshold", score_threshold, 0)
        check_number("distance_threshold", distance_threshold)
        check_number("lambda_mult", lambda_mult, 0)
        for label, value in (("search_type", search_type), ("index_name", index_name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{label} must be a non-empty string")
        body: dict[str, Any] = {"text": text, "embedding": [float(v) for v in embedding]}
        optional = {
            "k": k,
            "search_type": search_type,
            "fetch_k": fetch_k,
            "score_threshold": score_threshold,
            "distance_threshold": distance_threshold,
            "lambda_mult": lambda_mult,
            "index_name": index_name,
        }
        body.update((key, v) for key, v in optional.items() if v is not None)
        merge_extra(body, extra_body)

        def parse(payload: Any, meta: Meta) -> RetrievalResult:
            wire = _WireRetrieval.model_validate(payload)
            return RetrievalResult(
                docs=[_retrieved(d) for d in wire.retrieved_docs],
                query=wire.initial_query,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._client("retriever")._request(
            "retrieve",
            "POST",
            "/v1/retrieval",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    async def rerank(
        self,
        query: str,
        documents: Sequence[str | RetrievedDoc | Mapping[str, Any]],
        *,
        top_n: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> RerankResult:
        """``documents`` ordered by relevance to ``query`` (best first, ``top_n`` of them; OPEA's
        default is 1), from the reranking microservice (``/v1/reranking``)."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError("query must be a non-empty string")
        if (
            isinstance(documents, (str, bytes, Mapping))
            or not isinstance(documents, Sequence)
            or not documents
        ):
            raise ConfigurationError("documents must be a non-empty list")
        docs: list[str] = []
        for i, doc in enumerate(documents):
            if isinstance(doc, str):
                docs.append(doc)
            elif isinstance(doc, RetrievedDoc):
                docs.append(doc.text)
            elif isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
                docs.append(doc["text"])
            else:
                raise ConfigurationError(f"documents[{i}] must be a string or have a 'text'")
        check_int("top_n", top_n, 1)
        body: dict[str, Any] = {
            "input": query,
            "retrieved_docs": [{"text": d} for d in docs],
        }
        if top_n is not None:
            body["top_n"] = top_n
        merge_extra(body, extra_body)

        def parse(payload: Any, meta: Meta) -> RerankResult:
            wire = _WireReranked.model_validate(payload)
            ranked = [RerankedDoc(text=d.text, score=d.score) for d in wire.reranked_docs]
            if not ranked and wire.documents is not None:
                ranked = [
                    RerankedDoc(text=d if isinstance(d, str) else str(d.get("text", "")))
                    for d in wire.documents
                ]
            return RerankResult(
                docs=ranked,
                query=wire.initial_query or wire.query,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._client("reranking")._request(
            "rerank",
            "POST",
            "/v1/reranking",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    async def guardrails(
        self,
        text: str,
        *,
        prompt: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> GuardrailResult:
        """Check ``text`` with the guardrails microservice: an input (a ``TextDoc``) or, with
        ``prompt``, a model's answer to that prompt (a ``GeneratedDoc``)."""
        if not isinstance(text, str):
            raise ConfigurationError("text must be a string")
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigurationError("prompt must be a string")
        body: dict[str, Any] = {"text": text}
        if prompt is not None:
            body["prompt"] = prompt
        merge_extra(body, extra_body)

        def parse(payload: Any, meta: Meta) -> GuardrailResult:
            wire = _WireGuarded.model_validate(payload)
            return GuardrailResult(
                text=wire.text if isinstance(wire.text, str) else "\n".join(wire.text),
                blocked=bool(wire.downstream_black_list),
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._client("guardrails")._request(
            "guardrails",
            "POST",
            "/v1/guardrails",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    # -- dataprep and health ------------------------------------------------------------------

    async def ingest(
        self,
        files: Sequence[FileSpec] | None = None,
        links: Sequence[str] | None = None,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        process_table: bool | None = None,
        table_strategy: str | None = None,
        index_name: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> IngestResult:
        """Store ``files`` (paths or ``(name, bytes)``) and/or web ``links`` in the vector store
        through the dataprep microservice (``/v1/dataprep/ingest``, a multipart form)."""
        link_list: list[str] = []
        if links is not None:
            if isinstance(links, (str, bytes)) or not isinstance(links, Sequence):
                raise ConfigurationError("links must be a list of URLs")
            for i, link in enumerate(links):
                if not isinstance(link, str) or not link.startswith(("http://", "https://")):
                    raise ConfigurationError(f"links[{i}] must be an http(s) URL")
                link_list.append(link)
        check_int("chunk_size", chunk_size, 1)
        check_int("chunk_overlap", chunk_overlap, 0)
        if process_table is not None and not isinstance(process_table, bool):
            raise ConfigurationError("process_table must be a bool")
        for label, value in (("table_strategy", table_strategy), ("index_name", index_name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{label} must be a non-empty string")
        loaded = await _read_files(_check_files(files))
        if not loaded and not link_list:
            raise ConfigurationError("give files or links to ingest")
        fields = {
            "link_list": link_list or None,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "process_table": process_table,
            "table_strategy": table_strategy,
            "index_name": index_name,
        }

        def parse(payload: Any, meta: Meta) -> IngestResult:
            if isinstance(payload, Mapping):
                status = payload.get("status")
                message = payload.get("message")
                return IngestResult(
                    status=status if isinstance(status, int) else None,
                    message=None if message is None else str(message),
                    request_id=meta.request_id,
                    raw=payload,
                )
            return IngestResult(
                message=None if payload is None else str(payload),
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._client("dataprep")._request(
            "ingest",
            "POST",
            "/v1/dataprep/ingest",
            parse,
            data=_form_builder(fields, loaded),
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    async def health(
        self,
        service: str = "gateway",
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> HealthResult:
        """``GET /v1/health_check`` of one service (``gateway``, ``llm``, ``embedding``,
        ``retriever``, ``reranking``, ``guardrails`` or ``dataprep``); an unhealthy one raises."""
        if not isinstance(service, str) or service not in SERVICES:
            raise ConfigurationError(
                f"unknown OPEA service {service!r}; one of {', '.join(SERVICES)}"
            )
        return await self._client(service).health(
            priority=priority, timeout=timeout, deadline=deadline
        )


# -- wire shapes of the microservice answers ----------------------------------------------------


class _WireRetrieval(BaseModel):
    """``SearchedDoc`` (for an EmbedDoc) or ``RetrievalResponse`` (for a RetrievalRequest)."""

    retrieved_docs: list[dict[str, Any]]
    initial_query: str | None = None


def _retrieved(doc: dict[str, Any]) -> RetrievedDoc:
    text = doc.get("text")
    if isinstance(text, list):
        doc = {**doc, "text": "\n".join(str(t) for t in text)}
    return RetrievedDoc.model_validate(doc)


class _WireRankedDoc(BaseModel):
    text: str
    score: float | None = None


class _WireReranked(BaseModel):
    """``RerankingResponse`` or ``RerankedDoc``; ``LLMParamsDoc`` carries the docs in ``documents``."""

    reranked_docs: list[_WireRankedDoc] = Field(default_factory=list)
    initial_query: str | None = None
    query: str | None = None
    documents: list[str | dict[str, Any]] | None = None


class _WireGuarded(BaseModel):
    text: str | list[str]
    downstream_black_list: list[Any] | None = None


__all__ = [
    "OPEA",
    "GuardrailResult",
    "HealthResult",
    "IngestResult",
    "RerankResult",
    "RerankedDoc",
    "RetrievalResult",
    "RetrievedDoc",
    "parse_bytes_literal",
]
