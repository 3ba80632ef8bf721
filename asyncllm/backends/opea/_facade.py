"""``OPEA``: one client for a deployment of OPEA services, routing each call to its service.

It owns nothing but the parts (one client per service, see ``_services``) and the one transport
they share; every call is the part's own, so options, retries, errors and parsing are the parts'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, overload

from typing_extensions import Self, Unpack

from ..._engine._backend import Backend
from ..._exceptions import ConfigurationError
from ..._http._transport import AiohttpTransport, Transport
from ..._models import ChatChunk, ChatResponse, EmbeddingResponse, M, Messages
from ..._options import (
    CLIENT_KEYS,
    TRANSPORT_KEYS,
    CallOptions,
    ClientOptions,
    HttpOptions,
    check_keys,
)
from ..._tools import ToolRunner
from ..._validate import check_name
from ..._wire.openai import ChatOptions, EmbedOptions
from ...streaming import ChatStream, Stream
from ._forms import FileSpec
from ._services import (
    _LLM,
    ChatQnAOptions,
    CodeGenOptions,
    DocSumOptions,
    FaqGenOptions,
    GuardrailResult,
    GuardrailsOptions,
    HealthResult,
    IngestOptions,
    IngestResult,
    Question,
    RerankOptions,
    RerankResult,
    RetrievalResult,
    RetrievedDoc,
    RetrieveOptions,
    _Dataprep,
    _Embedding,
    _Gateway,
    _Guardrails,
    _Reranking,
    _Retriever,
    _Service,
)


class _Parts(NamedTuple):
    """One client per service, in the order ``health`` names them."""

    gateway: _Gateway
    llm: _LLM
    embedding: _Embedding
    retriever: _Retriever
    reranking: _Reranking
    guardrails: _Guardrails
    dataprep: _Dataprep


SERVICES = _Parts._fields


class OPEA(Backend, ToolRunner):
    """``OPEA(base_url=..., llm_url=..., embedding_url=..., ...)``: the gateway at ``base_url``
    (else ``$OPEA_API_ENDPOINT``, else ``http://localhost:8888``) and each microservice at its own
    URL (``$OPEA_LLM_ENDPOINT`` :9000, ``$OPEA_EMBEDDING_ENDPOINT`` :6000,
    ``$OPEA_RETRIEVER_ENDPOINT`` :7000, ``$OPEA_RERANKING_ENDPOINT`` :8000,
    ``$OPEA_GUARDRAILS_ENDPOINT`` :9090, ``$OPEA_DATAPREP_ENDPOINT`` :5000). The key, if any,
    comes from ``api_key`` or ``$OPEA_API_KEY``.

    Every other option (``timeout``, ``retry``, ``breaker``, ``max_concurrent_requests``,
    ``dispatcher``...) applies to each service, and each service is its own lane, named
    ``<name>-<service>`` (``opea-gateway``, ``opea-llm``...): a failing retriever opens only the
    retriever's breaker. The services share one connection pool, closed by ``aclose()``.
    """

    backend: ClassVar[str] = "opea"

    def __init__(
        self,
        *,
        llm_url: str | None = None,
        embedding_url: str | None = None,
        retriever_url: str | None = None,
        reranking_url: str | None = None,
        guardrails_url: str | None = None,
        dataprep_url: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        check_keys(options, CLIENT_KEYS, "OPEA")
        check_name("name", options.get("name"))
        self._init_engine(options)
        transport = options.get("transport")
        self._owns_transport = transport is None
        self._transport: Transport = transport or AiohttpTransport.from_options(options)
        # The parts get the one transport; its settings (TLS, proxy, pool) were spent on it.
        shared: ClientOptions = {
            **{k: v for k, v in options.items() if k not in TRANSPORT_KEYS},  # type: ignore[typeddict-item]
            "transport": self._transport,
        }

        def part(service: str, url: str | None) -> ClientOptions:
            return {**shared, "base_url": url, "name": f"{self.name}-{service}"}

        self._parts = _Parts(
            _Gateway(**part("gateway", options.get("base_url"))),
            _LLM(**part("llm", llm_url)),
            _Embedding(**part("embedding", embedding_url)),
            _Retriever(**part("retriever", retriever_url)),
            _Reranking(**part("reranking", reranking_url)),
            _Guardrails(**part("guardrails", guardrails_url)),
            _Dataprep(**part("dataprep", dataprep_url)),
        )

    def __repr__(self) -> str:
        return f"OPEA(name={self.name!r}, gateway={self._parts.gateway.base_url!r})"

    @property
    def base_urls(self) -> dict[str, str]:
        """The base URL of every service, given, from the environment or the default."""
        return {service: part.base_url for service, part in self._parts._asdict().items()}

    def with_options(self, **options: Unpack[CallOptions]) -> Self:
        """A light client with other per-call defaults for every service (see
        ``Backend.with_options``)."""
        clone = super().with_options(**options)
        clone._parts = _Parts._make(part.with_options(**options) for part in self._parts)
        return clone

    async def _close_resources(self) -> None:
        """The services close together (each lets its running calls finish, all within one
        ``close_timeout``), then the transport they share."""
        try:
            results = await asyncio.gather(
                *(part.aclose() for part in self._parts), return_exceptions=True
            )
        finally:
            if self._owns_transport:
                await self._transport.aclose()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- gateway (megaservices) ------------------------------------------------------------------

    async def chatqna(self, question: Question, **options: Unpack[ChatQnAOptions]) -> ChatResponse:
        """A RAG answer from the ChatQnA megaservice (retrieve ``k`` docs, keep the ``top_n`` best
        after reranking, then generate), asked for whole (``stream: false``). ``question``: a
        string, or system/user/assistant messages. Parameters: ``ChatQnAParams``."""
        return await self._parts.gateway.chatqna(question, **options)

    def stream_chatqna(
        self, question: Question, **options: Unpack[ChatQnAOptions]
    ) -> Stream[ChatChunk]:
        """ChatQnA as it is generated (its default mode). Use ``async with`` or read to the end."""
        return self._parts.gateway.stream_chatqna(question, **options)

    async def codegen(self, prompt: Question, **options: Unpack[CodeGenOptions]) -> ChatResponse:
        """Code from the CodeGen megaservice. Parameters: ``CodeGenParams``."""
        return await self._parts.gateway.codegen(prompt, **options)

    def stream_codegen(
        self, prompt: Question, **options: Unpack[CodeGenOptions]
    ) -> Stream[ChatChunk]:
        """CodeGen as it is generated (CodeGen passes the LLM's OpenAI-style chunks through)."""
        return self._parts.gateway.stream_codegen(prompt, **options)

    async def docsum(self, text: str = "", **options: Unpack[DocSumOptions]) -> ChatResponse:
        """A summary of ``text`` and/or text ``files`` from the DocSum megaservice (a multipart
        form when there are files, JSON otherwise). Parameters: ``DocSumParams``."""
        return await self._parts.gateway.docsum(text, **options)

    def stream_docsum(self, text: str = "", **options: Unpack[DocSumOptions]) -> Stream[ChatChunk]:
        """DocSum as it is generated. Use ``async with`` or read to the end."""
        return self._parts.gateway.stream_docsum(text, **options)

    async def faqgen(self, text: str = "", **options: Unpack[FaqGenOptions]) -> ChatResponse:
        """FAQs from ``text`` and/or ``files`` by the FaqGen megaservice (which reads only
        multipart forms, so this always sends one). Parameters: ``FaqGenParams``."""
        return await self._parts.gateway.faqgen(text, **options)

    def stream_faqgen(self, text: str = "", **options: Unpack[FaqGenOptions]) -> Stream[ChatChunk]:
        """FaqGen as it is generated. Use ``async with`` or read to the end."""
        return self._parts.gateway.stream_faqgen(text, **options)

    # -- microservices ---------------------------------------------------------------------------

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
        """A chat completion from the LLM microservice (OpenAI's format and parameters,
        ``ChatParams``); without ``model`` the service uses the model it was started with.

        ``response_format`` (a pydantic model class, a JSON schema or OpenAI's dicts) is sent as
        JSON mode, the only structured output OPEA's service takes: the model is asked for a
        JSON object, and the answer comes back in ``parsed``, validated against the model
        (``StructuredOutputError`` when it does not fit). Describe the fields in the prompt."""
        return await self._parts.llm.chat(messages, response_format=response_format, **options)

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
        """Chunks from the LLM microservice as they come (OpenAI SSE); ``await
        stream.final()`` gives the whole answer (``parsed`` with ``response_format``, as
        ``chat``)."""
        return self._parts.llm.stream_chat(messages, response_format=response_format, **options)

    async def embed(
        self, inputs: str | Sequence[str], **options: Unpack[EmbedOptions]
    ) -> EmbeddingResponse:
        """Vectors from the embedding microservice, in input order; without ``model`` the service
        uses the model it was started with."""
        return await self._parts.embedding.embed(inputs, **options)

    async def retrieve(
        self, text: str, embedding: Sequence[float], **options: Unpack[RetrieveOptions]
    ) -> RetrievalResult:
        """The stored documents nearest to ``embedding`` (the vector of ``text``, say from
        ``embed``), from the retriever microservice. Parameters: ``RetrieveParams``."""
        return await self._parts.retriever.retrieve(text, embedding, **options)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str | RetrievedDoc | Mapping[str, Any]],
        **options: Unpack[RerankOptions],
    ) -> RerankResult:
        """``documents`` ordered by relevance to ``query``, best first, ``top_n`` of them (OPEA's
        default is 1), from the reranking microservice."""
        return await self._parts.reranking.rerank(query, documents, **options)

    async def guardrails(self, text: str, **options: Unpack[GuardrailsOptions]) -> GuardrailResult:
        """Check ``text`` with the guardrails microservice: an input or, with ``prompt``, a
        model's answer to that prompt. ``blocked`` tells whether a policy was hit."""
        return await self._parts.guardrails.guardrails(text, **options)

    async def ingest(
        self,
        files: Sequence[FileSpec] | None = None,
        links: Sequence[str] | None = None,
        **options: Unpack[IngestOptions],
    ) -> IngestResult:
        """Store ``files`` (paths or ``(name, bytes[, content type])``) and/or web ``links`` in
        the vector store through the dataprep microservice (a multipart form). Parameters:
        ``IngestParams``."""
        return await self._parts.dataprep.ingest(files, links, **options)

    async def health(
        self, service: str = "gateway", **options: Unpack[HttpOptions]
    ) -> HealthResult:
        """``GET /v1/health_check`` of one service (``gateway``, ``llm``, ``embedding``,
        ``retriever``, ``reranking``, ``guardrails`` or ``dataprep``); an unhealthy one raises."""
        if not isinstance(service, str) or service not in SERVICES:
            raise ConfigurationError(
                f"unknown OPEA service {service!r}; one of {', '.join(SERVICES)}"
            )
        part: _Service = getattr(self._parts, service)
        return await part.health(**options)
