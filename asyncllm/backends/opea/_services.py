"""The OPEA services, one client each: the megaservice gateway and the six microservices.

Each is an ``HttpBackend`` of its own (its own lane, limits and breaker in the dispatcher); the
ones that answer in OpenAI's shapes (the gateway, the LLM and the embedding service) build on
``OpenAICompatible`` and read answers with its parsers. ``OPEA`` (in ``_facade``) routes to them.

Gateway streams (ChatQnA, DocSum, FaqGen) send each text piece as a Python bytes literal,
``data: b'...'``, and end with ``data: [DONE]``; gateways that pass an LLM stream through (CodeGen)
send OpenAI-style JSON chunks instead. Both are read here without evaluating anything.

How OPEA's orchestrator fails, which the gateway client reads as it is meant: a request it cannot
read and a microservice that fails or cannot be reached both end in an unhandled exception, which
its runtime answers with a bare 500 (``text/plain`` "Internal Server Error"); and an LLM that fails
once a stream has begun leaves a 200 stream holding nothing but ``data: [DONE]``.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict, Unpack

from ..._engine._dispatcher import Lane
from ..._exceptions import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    ResponseValidationError,
)
from ..._http import _json
from ..._http._backend import HttpBackend, Meta
from ..._http._transport import Response
from ..._models import ChatChunk, ChatResponse, normalize_messages
from ..._options import BodyOptions, HttpOptions, keys_of
from ..._structured import OutputFormat
from ..._validate import (
    check_bool,
    check_int,
    check_model,
    check_name,
    check_number,
    check_str,
    check_str_list,
)
from ..._wire.openai import OpenAICompatible
from ...streaming import Stream
from ._forms import FileSpec, check_files, form_builder, form_fields, lazy_form, read_files
from ._literal import parse_bytes_literal

GATEWAY_ROLES = frozenset({"system", "user", "assistant"})
BARE_500 = "Internal Server Error"  # Starlette's answer to an unhandled exception
SUMMARY_TYPES = frozenset({"auto", "stuff", "truncate", "map_reduce", "refine"})

# A gateway question: one string, or messages in the system, user and assistant roles.
Question = str | Sequence[Mapping[str, Any] | BaseModel]

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


# -- errors ---------------------------------------------------------------------------------------


# -- the parameters of each call, declared once ---------------------------------------------------


class GenerationParams(TypedDict, total=False):
    """What every megaservice passes on to its LLM. ``model``: without it, the model the service
    was started with; ``max_tokens`` (>= 1); ``temperature`` (0 to 2); ``top_p`` (0 to 1);
    ``top_k`` (>= 1); ``repetition_penalty`` (>= 0)."""

    model: str | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    repetition_penalty: float | None


class ChatQnAParams(GenerationParams, total=False):
    """ChatQnA's RAG settings: ``k`` documents retrieved (``fetch_k`` fetched first for "mmr"),
    the ``top_n`` best kept after reranking; ``search_type`` ("similarity", "mmr",
    "similarity_score_threshold"...) with ``score_threshold``; ``chat_template`` for the prompt
    (with ``{context}`` and ``{question}``)."""

    k: int | None
    top_n: int | None
    fetch_k: int | None
    search_type: str | None
    score_threshold: float | None
    chat_template: str | None


class ChatQnAOptions(ChatQnAParams, BodyOptions, total=False):
    """The keyword arguments of ``chatqna`` and ``stream_chatqna``."""


class CodeGenParams(GenerationParams, total=False):
    """``index_name``: ground the code in a code base ingested under that index."""

    index_name: str | None


class CodeGenOptions(CodeGenParams, BodyOptions, total=False):
    """The keyword arguments of ``codegen`` and ``stream_codegen``."""


class DocSumParams(GenerationParams, total=False):
    """``files``: text files to summarise as well (paths or ``(name, bytes[, type])``; they make
    the call a multipart form, so ``extra_body`` then does not apply). ``summary_type``: "auto",
    "stuff", "truncate", "map_reduce" or "refine"; ``chunk_size`` and ``chunk_overlap`` split long
    documents; ``language``: of the summary ("auto" by default)."""

    files: Sequence[FileSpec] | None
    summary_type: str | None
    chunk_size: int | None
    chunk_overlap: int | None
    language: str | None


class DocSumOptions(DocSumParams, BodyOptions, total=False):
    """The keyword arguments of ``docsum`` and ``stream_docsum``."""


class FaqGenParams(GenerationParams, total=False):
    """``files``: text files to read as well (paths or ``(name, bytes[, type])``)."""

    files: Sequence[FileSpec] | None


class FaqGenOptions(FaqGenParams, HttpOptions, total=False):
    """The keyword arguments of ``faqgen`` and ``stream_faqgen`` (always a multipart form, so no
    ``extra_body``)."""


class RetrieveParams(TypedDict, total=False):
    """``k`` documents (>= 1); ``search_type`` ("similarity", "mmr"...), ``fetch_k``,
    ``score_threshold``, ``distance_threshold`` and ``lambda_mult`` tune the vector search;
    ``index_name`` picks the index."""

    k: int | None
    search_type: str | None
    fetch_k: int | None
    score_threshold: float | None
    distance_threshold: float | None
    lambda_mult: float | None
    index_name: str | None


class RetrieveOptions(RetrieveParams, BodyOptions, total=False):
    """The keyword arguments of ``retrieve``."""


class RerankOptions(BodyOptions, total=False):
    """``top_n``: how many documents to keep (OPEA's default is 1)."""

    top_n: int | None


class GuardrailsOptions(BodyOptions, total=False):
    """``prompt``: check ``text`` as a model's answer to this prompt, not as an input."""

    prompt: str | None


class IngestParams(TypedDict, total=False):
    """``chunk_size`` and ``chunk_overlap`` split the documents; ``process_table`` (with
    ``table_strategy``) extracts tables; ``index_name`` picks the index."""

    chunk_size: int | None
    chunk_overlap: int | None
    process_table: bool | None
    table_strategy: str | None
    index_name: str | None


class IngestOptions(IngestParams, HttpOptions, total=False):
    """The keyword arguments of ``ingest`` (a multipart form, so no ``extra_body``)."""


CHATQNA_KEYS = keys_of(ChatQnAOptions)
CODEGEN_KEYS = keys_of(CodeGenOptions)
DOCSUM_KEYS = keys_of(DocSumOptions)
FAQGEN_KEYS = keys_of(FaqGenOptions)
RETRIEVE_KEYS = keys_of(RetrieveOptions)
RERANK_KEYS = keys_of(RerankOptions)
GUARDRAILS_KEYS = keys_of(GuardrailsOptions)
INGEST_KEYS = keys_of(IngestOptions)

# -- request building -------------------------------------------------------------------------------


def _given(params: Mapping[str, Any], declared: type) -> dict[str, Any]:
    """The parameters ``declared`` (a TypedDict) names that the call gave, in declaration order."""
    return {key: params[key] for key in declared.__annotations__ if params.get(key) is not None}


def _check_generation(params: Mapping[str, Any]) -> None:
    get = params.get
    if get("model") is not None:
        check_model(get("model"))
    check_int("max_tokens", get("max_tokens"), 1)
    check_number("temperature", get("temperature"), 0, 2)
    check_number("top_p", get("top_p"), 0, 1)
    check_int("top_k", get("top_k"), 1)
    check_number("repetition_penalty", get("repetition_penalty"), 0)


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


def _question_body(
    question: Any, params: Mapping[str, Any], declared: type, stream: bool
) -> dict[str, Any]:
    """ChatQnA's and CodeGen's JSON body: the question as messages, then the parameters given."""
    _check_generation(params)
    return {"messages": _gateway_messages(question), **_given(params, declared), "stream": stream}


def _chatqna_body(question: Any, params: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    get = params.get
    check_int("k", get("k"), 1)
    check_int("top_n", get("top_n"), 1)
    check_int("fetch_k", get("fetch_k"), 1)
    check_number("score_threshold", get("score_threshold"), 0)
    check_str("search_type", get("search_type"))
    check_str("chat_template", get("chat_template"))
    return _question_body(question, params, ChatQnAParams, stream)


def _codegen_body(prompt: Any, params: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    check_name("index_name", params.get("index_name"))
    return _question_body(prompt, params, CodeGenParams, stream)


def _document_fields(
    text: Any, params: Mapping[str, Any], declared: type, stream: bool
) -> dict[str, Any]:
    """DocSum's and FaqGen's fields, sent as JSON or as the text fields of a form."""
    if not isinstance(text, str):
        raise ConfigurationError("text must be a string")
    if not text.strip() and not params.get("files"):
        raise ConfigurationError("give text or files to work on")
    _check_generation(params)
    fields = {"messages": text, **_given(params, declared), "stream": stream}
    fields.pop("files", None)  # sent as files, not as a field
    return fields


def _docsum_fields(text: Any, params: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    summary_type = params.get("summary_type")
    if summary_type is not None and (
        not isinstance(summary_type, str) or summary_type not in SUMMARY_TYPES
    ):
        raise ConfigurationError(f"summary_type must be one of {sorted(SUMMARY_TYPES)}")
    check_int("chunk_size", params.get("chunk_size"), 1)
    check_int("chunk_overlap", params.get("chunk_overlap"), 0)
    check_str("language", params.get("language"))
    # DocSum reads data["type"]: without it, a 500.
    return {"type": "text", **_document_fields(text, params, DocSumParams, stream)}


# -- the services ------------------------------------------------------------------------------


class _Service(HttpBackend):
    """What every OPEA service shares: FastAPI error bodies (``{"detail": ...}``), an optional
    Bearer key (``OPEA_API_KEY``) for deployments behind an authenticating proxy, and
    ``/v1/health_check``."""

    backend: ClassVar[str] = "opea"
    api_key_env: ClassVar[tuple[str, ...]] = ("OPEA_API_KEY",)
    server_request_id_header: ClassVar[str | None] = "x-request-id"

    async def health(self, **options: Unpack[HttpOptions]) -> HealthResult:
        """``GET /v1/health_check``; an unhealthy service raises (a 5xx is retried)."""

        def parse(payload: Any, meta: Meta) -> HealthResult:
            info = dict(payload) if isinstance(payload, Mapping) else {"body": payload}
            return HealthResult(
                service=self.name, status=meta.status, info=info, request_id=meta.request_id
            )

        return await self._request("health", "GET", "/v1/health_check", parse, options)


class _OpenAIShaped(_Service, OpenAICompatible):
    """A service that answers in OpenAI's shapes, read with ``OpenAICompatible``'s parsers.

    OPEA's LLM and embedding services use the model they were started with (LLM_MODEL_ID,
    EMBEDDING_MODEL_ID) when a request names none."""

    model_required: ClassVar[bool] = False


class _LLM(_OpenAIShaped):
    """The LLM microservice: OpenAI chat (``chat``, ``stream_chat``) at ``/v1/chat/completions``.

    Its ChatCompletionRequest has ``max_tokens`` (``max_completion_tokens`` goes out as it),
    ``parallel_tool_calls``, ``logprobs``, ``top_logprobs`` and ``service_tier``, and no
    ``store``, ``metadata`` or ``prompt_cache_key`` (a ConfigurationError). Images go as
    ``image_url`` parts; files are refused."""

    backend: ClassVar[str] = "opea-llm"
    # OPEA's ChatCompletionRequest has no strict on its functions: a strict tool is refused.
    tool_strict: ClassVar[bool] = False
    default_base_url: ClassVar[str | None] = "http://localhost:9000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_LLM_ENDPOINT",)
    chat_path: ClassVar[str] = "/v1/chat/completions"
    max_completion_tokens_field: ClassVar[str] = "max_tokens"
    refused_params: ClassVar[frozenset[str]] = frozenset({"store", "metadata", "prompt_cache_key"})

    def _response_format_body(self, fmt: OutputFormat) -> dict[str, Any]:
        """OPEA's ChatCompletionRequest takes JSON mode only (``response_format`` of type "text"
        or "json_object"; a JSON schema is a 422): any format is sent as JSON mode, and the
        answer is validated against the model on arrival (a mismatch: StructuredOutputError)."""
        return {"response_format": {"type": "json_object"}}


class _Embedding(_OpenAIShaped):
    """The embedding microservice: OpenAI embeddings (``embed``) at ``/v1/embeddings``."""

    backend: ClassVar[str] = "opea-embedding"
    default_base_url: ClassVar[str | None] = "http://localhost:6000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_EMBEDDING_ENDPOINT",)
    embeddings_path: ClassVar[str] = "/v1/embeddings"


class _Gateway(_OpenAIShaped):
    """The megaservice gateway: ChatQnA, CodeGen, DocSum and FaqGen, each as a call and a stream.
    Answers are OpenAI chat responses; streams are read by ``_decode_gateway``."""

    backend: ClassVar[str] = "opea-gateway"
    default_base_url: ClassVar[str | None] = "http://localhost:8888"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_API_ENDPOINT",)

    # Each megaservice answers at /v1/<its name>: "chatqna" at /v1/chatqna, streamed or not.

    async def _status_error(
        self, response: Response, request_id: str, lane: Lane | None = None
    ) -> APIError:
        """A bare 500 is the megaservice's unhandled exception, for a request it could not read
        as for a microservice that failed: its ``InternalServerError`` says so, is retried as a
        500 is, and spares the gateway's breaker (a bad request says nothing of its health)."""
        error = await super()._status_error(response, request_id, lane)
        if error.status_code == 500 and error.body == BARE_500:
            error.message = (
                "HTTP 500 from the OPEA megaservice, with no detail: its orchestrator answers so "
                "when a request cannot be read, and when a microservice behind it fails or "
                "cannot be reached (the megaservice's log says which)"
            )
            error.spares_breaker = True
        return error

    def _answer(
        self,
        service: str,
        options: Mapping[str, Any],
        allowed: frozenset[str],
        *,
        body: dict[str, Any] | None = None,
        data: Callable[[], Any] | None = None,
    ) -> Awaitable[ChatResponse]:
        return self._request(
            service,
            "POST",
            f"/v1/{service}",
            self._parse_chat,
            options,
            body=body,
            data=data,
            allowed=allowed,
        )

    def _answer_stream(
        self,
        service: str,
        options: Mapping[str, Any],
        allowed: frozenset[str],
        *,
        body: dict[str, Any] | None = None,
        data: Callable[[], Any] | None = None,
    ) -> Stream[ChatChunk]:
        return self._stream(
            f"stream_{service}",
            "POST",
            f"/v1/{service}",
            self._decode_gateway,
            options,
            body=body,
            data=data,
            allowed=allowed,
            sse=False,  # a gateway may answer a stream with one JSON answer: one chunk
        )

    async def chatqna(self, question: Question, **options: Unpack[ChatQnAOptions]) -> ChatResponse:
        body = _chatqna_body(question, options, stream=False)
        return await self._answer("chatqna", options, CHATQNA_KEYS, body=body)

    def stream_chatqna(
        self, question: Question, **options: Unpack[ChatQnAOptions]
    ) -> Stream[ChatChunk]:
        body = _chatqna_body(question, options, stream=True)
        return self._answer_stream("chatqna", options, CHATQNA_KEYS, body=body)

    async def codegen(self, prompt: Question, **options: Unpack[CodeGenOptions]) -> ChatResponse:
        body = _codegen_body(prompt, options, stream=False)
        return await self._answer("codegen", options, CODEGEN_KEYS, body=body)

    def stream_codegen(
        self, prompt: Question, **options: Unpack[CodeGenOptions]
    ) -> Stream[ChatChunk]:
        body = _codegen_body(prompt, options, stream=True)
        return self._answer_stream("codegen", options, CODEGEN_KEYS, body=body)

    async def docsum(self, text: str = "", **options: Unpack[DocSumOptions]) -> ChatResponse:
        fields = _docsum_fields(text, options, stream=False)
        files = check_files(options.get("files"))
        if not files:
            return await self._answer("docsum", options, DOCSUM_KEYS, body=fields)
        form = form_builder(form_fields(fields), await read_files(files))
        return await self._answer("docsum", options, DOCSUM_KEYS, data=form)

    def stream_docsum(self, text: str = "", **options: Unpack[DocSumOptions]) -> Stream[ChatChunk]:
        fields = _docsum_fields(text, options, stream=True)
        files = check_files(options.get("files"))
        if not files:
            return self._answer_stream("docsum", options, DOCSUM_KEYS, body=fields)
        form = lazy_form(form_fields(fields), files)
        return self._answer_stream("docsum", options, DOCSUM_KEYS, data=form)

    async def faqgen(self, text: str = "", **options: Unpack[FaqGenOptions]) -> ChatResponse:
        fields = form_fields(_document_fields(text, options, FaqGenParams, stream=False))
        form = form_builder(fields, await read_files(check_files(options.get("files"))))
        return await self._answer("faqgen", options, FAQGEN_KEYS, data=form)

    def stream_faqgen(self, text: str = "", **options: Unpack[FaqGenOptions]) -> Stream[ChatChunk]:
        fields = form_fields(_document_fields(text, options, FaqGenParams, stream=True))
        form = lazy_form(fields, check_files(options.get("files")))
        return self._answer_stream("faqgen", options, FAQGEN_KEYS, data=form)

    async def _decode_gateway(self, response: Response, meta: Meta) -> AsyncIterator[ChatChunk]:
        """Gateway SSE lines, one ``data:`` line per event: bytes literals or JSON chunks, up to
        ``[DONE]`` (or the end of the body after a chunk with a ``finish_reason``; else the
        answer was cut: APIConnectionError). A gateway that answers a stream request with one
        JSON answer gives one chunk; a JSON error body raises its error."""
        if "application/json" in response.headers.get("Content-Type", "").lower():
            raw = await response.read(self.max_response_bytes)
            try:
                payload = _json.loads(raw)
            except ValueError as exc:
                raise self._bad_line(f"answer is not valid JSON: {exc}", raw, meta) from exc
            if isinstance(payload, Mapping) and ("error" in payload or "detail" in payload):
                raise self._not_a_stream(raw, response, meta)
            answer = self._parse(self._parse_chat, payload, meta)
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
        answered = False  # any data line before [DONE], even an empty piece (b'')
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
                if not answered:
                    raise self._no_answer(meta, "held only data: [DONE]")
                tail = decoder.decode(b"", final=True)
                if tail or not finished:
                    yield ChatChunk(
                        delta=tail,
                        finish_reason=None if finished else "stop",
                        request_id=meta.request_id,
                    )
                return
            answered = True
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
                raise self._stream_error(payload, meta)
            if isinstance(payload.get("choices"), list):
                chunk = self._parse(self._chunk, payload, meta)
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
        if not answered:
            raise self._no_answer(meta, "was empty")
        tail = decoder.decode(b"", final=True)
        if tail:
            yield ChatChunk(delta=tail, request_id=meta.request_id)
        if not finished:
            raise self._cut_short(meta, "data: [DONE]")

    def _no_answer(self, meta: Meta, what: str) -> APIConnectionError:
        """A 200 stream without a single piece of an answer: how OPEA's orchestrator reports an
        LLM that failed (an error status, or no connection) after the stream began (ChatQnA's
        stream then holds only ``[DONE]``; CodeGen's is empty). A real answer, even an empty
        one, comes with at least one piece (``b''``). Retried like a connection failure:
        nothing reached the caller."""
        return APIConnectionError(
            f"the OPEA gateway's stream {what}, without a piece of an answer: its orchestrator "
            "answers so when the LLM microservice behind it failed",
            backend=self.name,
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
        )

    def _bad_line(self, problem: str, value: bytes, meta: Meta) -> ResponseValidationError:
        return self._validation_error(
            ValueError(problem), value[:500].decode("utf-8", "replace"), meta.request_id
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


class _Retriever(_Service):
    """The retriever microservice: the stored documents nearest to a vector."""

    backend: ClassVar[str] = "opea-retriever"
    default_base_url: ClassVar[str | None] = "http://localhost:7000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_RETRIEVER_ENDPOINT",)

    async def retrieve(
        self, text: str, embedding: Sequence[float], **options: Unpack[RetrieveOptions]
    ) -> RetrievalResult:
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
        get = options.get
        check_int("k", get("k"), 1)
        check_int("fetch_k", get("fetch_k"), 1)
        check_number("score_threshold", get("score_threshold"), 0)
        check_number("distance_threshold", get("distance_threshold"))
        check_number("lambda_mult", get("lambda_mult"), 0)
        check_name("search_type", get("search_type"))
        check_name("index_name", get("index_name"))
        body = {
            "text": text,
            "embedding": [float(v) for v in embedding],
            **_given(options, RetrieveParams),
        }

        def parse(payload: Any, meta: Meta) -> RetrievalResult:
            wire = _WireRetrieval.model_validate(payload)
            return RetrievalResult(
                docs=[_retrieved(d) for d in wire.retrieved_docs],
                query=wire.initial_query,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request(
            "retrieve", "POST", "/v1/retrieval", parse, options, body=body, allowed=RETRIEVE_KEYS
        )


class _Reranking(_Service):
    """The reranking microservice: documents ordered by relevance to a query."""

    backend: ClassVar[str] = "opea-reranking"
    default_base_url: ClassVar[str | None] = "http://localhost:8000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_RERANKING_ENDPOINT",)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str | RetrievedDoc | Mapping[str, Any]],
        **options: Unpack[RerankOptions],
    ) -> RerankResult:
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
        top_n = options.get("top_n")
        check_int("top_n", top_n, 1)
        body: dict[str, Any] = {"input": query, "retrieved_docs": [{"text": d} for d in docs]}
        if top_n is not None:
            body["top_n"] = top_n

        def parse(payload: Any, meta: Meta) -> RerankResult:
            wire = _WireReranked.model_validate(payload)
            ranked = wire.reranked_docs
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

        return await self._request(
            "rerank", "POST", "/v1/reranking", parse, options, body=body, allowed=RERANK_KEYS
        )


class _Guardrails(_Service):
    """The guardrails microservice: an input or an answer checked against policies."""

    backend: ClassVar[str] = "opea-guardrails"
    default_base_url: ClassVar[str | None] = "http://localhost:9090"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_GUARDRAILS_ENDPOINT",)

    async def guardrails(self, text: str, **options: Unpack[GuardrailsOptions]) -> GuardrailResult:
        if not isinstance(text, str):
            raise ConfigurationError("text must be a string")
        prompt = options.get("prompt")
        check_str("prompt", prompt)
        body: dict[str, Any] = {"text": text}
        if prompt is not None:
            body["prompt"] = prompt

        def parse(payload: Any, meta: Meta) -> GuardrailResult:
            wire = _WireGuarded.model_validate(payload)
            return GuardrailResult(
                text=wire.text if isinstance(wire.text, str) else "\n".join(wire.text),
                blocked=bool(wire.downstream_black_list),
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request(
            "guardrails",
            "POST",
            "/v1/guardrails",
            parse,
            options,
            body=body,
            allowed=GUARDRAILS_KEYS,
        )


class _Dataprep(_Service):
    """The dataprep microservice: files and web pages into the vector store."""

    backend: ClassVar[str] = "opea-dataprep"
    default_base_url: ClassVar[str | None] = "http://localhost:5000"
    base_url_env: ClassVar[tuple[str, ...]] = ("OPEA_DATAPREP_ENDPOINT",)

    async def ingest(
        self,
        files: Sequence[FileSpec] | None = None,
        links: Sequence[str] | None = None,
        **options: Unpack[IngestOptions],
    ) -> IngestResult:
        link_list = [] if links is None else check_str_list("links", links)
        for i, link in enumerate(link_list):
            if not link.startswith(("http://", "https://")):
                raise ConfigurationError(f"links[{i}] must be an http(s) URL")
        get = options.get
        check_int("chunk_size", get("chunk_size"), 1)
        check_int("chunk_overlap", get("chunk_overlap"), 0)
        check_bool("process_table", get("process_table"))
        check_name("table_strategy", get("table_strategy"))
        check_name("index_name", get("index_name"))
        fields = form_fields({"link_list": link_list or None, **_given(options, IngestParams)})
        loaded = await read_files(check_files(files))
        if not loaded and not link_list:
            raise ConfigurationError("give files or links to ingest")

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

        return await self._request(
            "ingest",
            "POST",
            "/v1/dataprep/ingest",
            parse,
            options,
            data=form_builder(fields, loaded),
            allowed=INGEST_KEYS,
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


class _WireReranked(BaseModel):
    """``RerankingResponse`` or ``RerankedDoc``; ``LLMParamsDoc`` carries the docs in ``documents``."""

    reranked_docs: list[RerankedDoc] = Field(default_factory=list)
    initial_query: str | None = None
    query: str | None = None
    documents: list[str | dict[str, Any]] | None = None


class _WireGuarded(BaseModel):
    text: str | list[str]
    downstream_black_list: list[Any] | None = None
