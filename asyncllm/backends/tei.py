"""Hugging Face text-embeddings-inference (TEI): embeddings, sparse embeddings, reranking and
classification from a self-hosted server or an Inference Endpoint.

TEI refuses a request with more inputs than its ``max_client_batch_size`` (413). Batch calls
here split their inputs into chunks of at most that size (read once from ``/info``, or given to
the constructor), send the chunks concurrently as separate dispatcher jobs at the call's
priority (so ``max_concurrent_requests`` bounds them), and put the results back in input order.
TEI's error body is ``{"error": "...", "error_type": "Validation" | "Overloaded" | ...}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

from .._engine._context import current_request_id, new_request_id, request_context
from .._engine._dispatcher import Priority
from .._exceptions import (
    APIStatusError,
    AsyncLLMError,
    ConfigurationError,
    ResponseValidationError,
)
from .._http._backend import BaseClient, Meta, _timeout_value, check_int
from .._http._transport import Response
from .._models import EmbeddingResponse, Usage

__all__ = [
    "TEI",
    "TEIInfo",
    "TEIPrediction",
    "TEIRank",
    "TEISparseEmbeddings",
    "TEISparseValue",
    "TEIToken",
    "TEITokenEmbeddings",
]

T = TypeVar("T")
# Set while health() runs (attempts run in the caller's task): its failures are not retried.
PredictInput = str | tuple[str, str]


class TEIRank(BaseModel):
    """One reranked text: its position in ``texts``, its relevance score, and (if asked) the text."""

    index: int
    score: float
    text: str | None = None


class TEIPrediction(BaseModel):
    label: str
    score: float


class TEISparseValue(BaseModel):
    """One non-zero weight of a sparse (SPLADE-style) embedding: a vocabulary index and its value."""

    index: int
    value: float


class TEIToken(BaseModel):
    id: int
    text: str
    special: bool = False
    start: int | None = None
    stop: int | None = None


class TEISparseEmbeddings(BaseModel):
    """Sparse vectors in the order of the inputs."""

    vectors: list[list[TEISparseValue]]
    request_id: str


class TEITokenEmbeddings(BaseModel):
    """Per-token vectors (no pooling) for each input, in input order."""

    vectors: list[list[list[float]]]
    request_id: str


class TEIInfo(BaseModel):
    """``GET /info``: the served model and the router's limits."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str
    model_dtype: str
    served_model_name: str | None = None
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    model_sha: str | None = None
    max_batch_requests: int | None = None
    sha: str | None = None
    docker_label: str | None = None


# A row of /embed and of /embed_all: numbers that fit a float (a huge int is refused, not cast).
_VECTOR = TypeAdapter(list[float])
_TOKEN_VECTORS = TypeAdapter(list[list[float]])


class _WireOpenAIEmbedding(BaseModel):
    index: int
    embedding: list[float]


class _WireOpenAIEmbeddings(BaseModel):
    data: list[_WireOpenAIEmbedding]
    model: str | None = None
    usage: Usage | None = None


def _texts(name: str, inputs: Any) -> list[str]:
    if isinstance(inputs, str):
        return [inputs]
    if (
        not isinstance(inputs, Sequence)
        or not inputs
        or not all(isinstance(i, str) for i in inputs)
    ):
        raise ConfigurationError(f"{name} must be a string or a non-empty list of strings")
    return list(inputs)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a bool")
    return value


def _prompt_name(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError("prompt_name must be a non-empty string")
    return value


def _predict_item(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigurationError("a predict input is a string or a (str, str) pair")


def _list_of(count: int, payload: Any) -> list[Any]:
    if not isinstance(payload, list) or len(payload) != count:
        raise ResponseValidationError(
            f"expected a list of {count} results, got "
            + (f"{len(payload)}" if isinstance(payload, list) else type(payload).__name__)
        )
    return payload


class TEI(BaseClient):
    """``TEI(base_url=None, api_key=None, max_client_batch_size=None)``: base from
    ``TEI_BASE_URL`` (required), Bearer token from ``HF_TOKEN`` or ``HF_API_TOKEN`` when set.

    ``max_client_batch_size`` overrides what the server's ``/info`` says (which is otherwise read
    on the first batch call and cached).
    """

    backend: ClassVar[str] = "tei"
    base_url_env: ClassVar[tuple[str, ...]] = ("TEI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("HF_TOKEN", "HF_API_TOKEN")
    server_request_id_header: ClassVar[str | None] = "x-request-id"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: Any = None,
        *,
        max_client_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        check_int("max_client_batch_size", max_client_batch_size, 1)
        super().__init__(api_key=api_key, base_url=base_url, **kwargs)
        self.max_client_batch_size = max_client_batch_size
        self._batch_lock: asyncio.Lock | None = None

    # -- errors ----------------------------------------------------------------------------------

    async def _status_error(self, response: Response, request_id: str) -> APIStatusError:
        error = await super()._status_error(response, request_id)
        if error.should_retry is None and (error.error_type or "").lower() == "overloaded":
            error.should_retry = True
        return error

    # -- batching --------------------------------------------------------------------------------

    def _check_batch(
        self, body: Any, extra_headers: Mapping[str, str] | None, deadline: float | None
    ) -> None:
        """Refuse what would fail only as a chunk is sent, before ``/info`` or any chunk goes
        out: a body that is not JSON (say, one input with a lone surrogate), a bad header or a
        bad deadline (neither of which ``/info`` is given)."""
        self._encode(body)
        self._headers_for("", extra_headers)
        _timeout_value("deadline", deadline)

    async def _batch_size(self, priority: int, timeout: float | None) -> int:
        if self.max_client_batch_size is None:
            if self._batch_lock is None:
                self._batch_lock = asyncio.Lock()
            async with self._batch_lock:
                if self.max_client_batch_size is None:
                    info = await self.info(priority=priority, timeout=timeout)
                    self.max_client_batch_size = max(1, info.max_client_batch_size)
        return self.max_client_batch_size

    async def _rows(
        self,
        operation: str,
        texts: Sequence[str],
        options: Mapping[str, Any],
        row: Callable[[Any], T],
        *,
        extra_headers: Mapping[str, str] | None,
        priority: int,
        timeout: float | None,
        deadline: float | None,
    ) -> tuple[list[T], str]:
        """``POST /{operation}`` of ``texts`` in batches; one ``row(answer)`` per input, in order."""
        self._check_batch({"inputs": texts, **options}, extra_headers, deadline)

        async def run(chunk: Sequence[str], offset: int) -> list[T]:
            def parse(payload: Any, meta: Meta) -> list[T]:
                return [row(r) for r in _list_of(len(chunk), payload)]

            return await self._request(
                operation,
                "POST",
                f"/{operation}",
                parse,
                body={"inputs": list(chunk), **options},
                priority=priority,
                timeout=timeout,
                deadline=deadline,
                extra_headers=extra_headers,
            )

        return await self._batched(texts, run, priority=priority, timeout=timeout)

    async def _batched(
        self,
        items: Sequence[Any],
        run_chunk: Callable[[Sequence[Any], int], Awaitable[list[T]]],
        *,
        priority: int,
        timeout: float | None,
    ) -> tuple[list[T], str]:
        """Results of ``run_chunk(chunk, offset)`` for every chunk, joined in input order, and
        the request ID the chunks shared. The first failing chunk fails the call (its error is
        re-raised, naming the chunk) and the other chunks are cancelled."""
        size = await self._batch_size(priority, timeout) if len(items) > 1 else 1
        rid = current_request_id() or new_request_id()
        spans = [(start, items[start : start + size]) for start in range(0, len(items), size)]

        tasks: list[asyncio.Future[list[T]]] = []

        async def one(start: int, chunk: Sequence[Any]) -> list[T]:
            try:
                results = await run_chunk(chunk, start)
            except AsyncLLMError:
                # Cancel the siblings now, in this step, before one of them takes the slot
                # this chunk just gave back and sends a request that can no longer matter.
                for task in tasks:
                    if task is not asyncio.current_task():
                        task.cancel()
                raise
            if len(results) != len(chunk):
                raise ResponseValidationError(
                    f"expected {len(chunk)} results, got {len(results)}",
                    backend=self.name,
                    request_id=rid,
                )
            return results

        with request_context(rid):  # tasks copy the context: every chunk carries this ID
            if len(spans) == 1:
                return await one(*spans[0]), rid
            tasks.extend(asyncio.ensure_future(one(start, chunk)) for start, chunk in spans)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            pending = [t for t in tasks if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for number, task in enumerate(tasks):
            exc = None if task.cancelled() else task.exception()
            if exc is None:
                continue
            if isinstance(exc, AsyncLLMError):
                start, chunk = spans[number]
                exc.message = (
                    f"chunk {number + 1} of {len(spans)} (inputs {start}..{start + len(chunk) - 1})"
                    f" failed: {exc.message}"
                )
                exc.args = (exc.message,)
            raise exc
        joined: list[T] = []
        for task in tasks:
            joined.extend(task.result())
        return joined, rid

    # -- embeddings ------------------------------------------------------------------------------

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        normalize: bool = True,
        truncate: bool = False,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> EmbeddingResponse:
        """Pooled embeddings of ``inputs`` in input order, however many there are (see batching).

        ``truncate=False`` makes an input longer than the model's limit an error instead of
        silently cut; ``prompt_name`` picks a sentence-transformers prompt (say "query")."""
        texts = _texts("inputs", inputs)
        options: dict[str, Any] = {
            "normalize": _bool("normalize", normalize),
            "truncate": _bool("truncate", truncate),
        }
        if _prompt_name(prompt_name) is not None:
            options["prompt_name"] = prompt_name
        check_int("dimensions", dimensions, 1)
        if dimensions is not None:
            options["dimensions"] = dimensions

        vectors, rid = await self._rows(
            "embed",
            texts,
            options,
            _VECTOR.validate_python,
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )
        return EmbeddingResponse(vectors=vectors, request_id=rid)

    async def embed_sparse(
        self,
        inputs: str | Sequence[str],
        *,
        truncate: bool = False,
        prompt_name: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> TEISparseEmbeddings:
        """Sparse (SPLADE) embeddings, for lexical-style retrieval; needs a model with a
        sparse head."""
        texts = _texts("inputs", inputs)
        options: dict[str, Any] = {"truncate": _bool("truncate", truncate)}
        if _prompt_name(prompt_name) is not None:
            options["prompt_name"] = prompt_name

        vectors, rid = await self._rows(
            "embed_sparse",
            texts,
            options,
            lambda row: [TEISparseValue.model_validate(v) for v in row],
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )
        return TEISparseEmbeddings(vectors=vectors, request_id=rid)

    async def embed_all(
        self,
        inputs: str | Sequence[str],
        *,
        truncate: bool = False,
        prompt_name: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> TEITokenEmbeddings:
        """Unpooled per-token vectors (for late-interaction retrieval or your own pooling);
        TEI serves them only when the model was started with ``--pooling none``."""
        texts = _texts("inputs", inputs)
        options: dict[str, Any] = {"truncate": _bool("truncate", truncate)}
        if _prompt_name(prompt_name) is not None:
            options["prompt_name"] = prompt_name

        vectors, rid = await self._rows(
            "embed_all",
            texts,
            options,
            _TOKEN_VECTORS.validate_python,
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )
        return TEITokenEmbeddings(vectors=vectors, request_id=rid)

    async def openai_embed(
        self,
        inputs: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
        user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> EmbeddingResponse:
        """The same embeddings through TEI's OpenAI-compatible ``/v1/embeddings`` (one request,
        not split: use ``embed`` for large batches)."""
        texts = _texts("inputs", inputs)
        check_int("dimensions", dimensions, 1)
        body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
        for key, value in (("model", model), ("user", user)):
            if value is not None:
                if not isinstance(value, str):
                    raise ConfigurationError(f"{key} must be a string")
                body[key] = value
        if dimensions is not None:
            body["dimensions"] = dimensions
        count = len(texts)

        def parse(payload: Any, meta: Meta) -> EmbeddingResponse:
            wire = _WireOpenAIEmbeddings.model_validate(payload)
            ordered = sorted(wire.data, key=lambda d: d.index)
            if [d.index for d in ordered] != list(range(count)):
                raise ResponseValidationError(f"expected {count} embeddings indexed 0..{count - 1}")
            return EmbeddingResponse(
                vectors=[d.embedding for d in ordered],
                usage=wire.usage,
                model=wire.model,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request(
            "openai_embed",
            "POST",
            "/v1/embeddings",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    # -- rerank and classify ---------------------------------------------------------------------

    async def rerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        return_text: bool = False,
        raw_scores: bool = False,
        truncate: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> list[TEIRank]:
        """``texts`` ranked by relevance to ``query`` (needs a reranker model), best first;
        ``index`` points into ``texts``. Long lists are split like ``embed``'s inputs."""
        if not isinstance(query, str) or not query:
            raise ConfigurationError("query must be a non-empty string")
        if isinstance(texts, str):
            raise ConfigurationError("texts must be a list of strings, not one string")
        items = _texts("texts", texts)
        options = {
            "return_text": _bool("return_text", return_text),
            "raw_scores": _bool("raw_scores", raw_scores),
            "truncate": _bool("truncate", truncate),
        }
        self._check_batch({"query": query, "texts": items, **options}, extra_headers, deadline)

        async def run(chunk: Sequence[str], offset: int) -> list[TEIRank]:
            def parse(payload: Any, meta: Meta) -> list[TEIRank]:
                ranks = [TEIRank.model_validate(r) for r in _list_of(len(chunk), payload)]
                if sorted(r.index for r in ranks) != list(range(len(chunk))):
                    raise ResponseValidationError("rerank indexes do not cover the texts sent")
                for r in ranks:
                    r.index += offset
                return ranks

            return await self._request(
                "rerank",
                "POST",
                "/rerank",
                parse,
                body={"query": query, "texts": list(chunk), **options},
                priority=priority,
                timeout=timeout,
                deadline=deadline,
                extra_headers=extra_headers,
            )

        ranks, _ = await self._batched(items, run, priority=priority, timeout=timeout)
        return sorted(ranks, key=lambda r: (-r.score, r.index))

    async def predict(
        self,
        inputs: PredictInput | Sequence[PredictInput],
        *,
        raw_scores: bool = False,
        truncate: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> list[list[TEIPrediction]]:
        """Classify texts (a str) or text pairs (a ``(str, str)`` tuple) with a classifier model.
        One list of labelled scores per input, in input order, best label first."""
        if isinstance(inputs, (str, tuple)):
            batch = [_predict_item(inputs)]
        elif isinstance(inputs, Sequence) and inputs:
            batch = [_predict_item(i) for i in inputs]
        else:
            raise ConfigurationError("inputs must be a string, a pair, or a non-empty list")
        options = {
            "raw_scores": _bool("raw_scores", raw_scores),
            "truncate": _bool("truncate", truncate),
        }
        self._check_batch({"inputs": batch, **options}, extra_headers, deadline)

        async def run(chunk: Sequence[list[str]], offset: int) -> list[list[TEIPrediction]]:
            def parse(payload: Any, meta: Meta) -> list[list[TEIPrediction]]:
                rows = _list_of(len(chunk), payload)
                return [
                    sorted(
                        (TEIPrediction.model_validate(p) for p in row),
                        key=lambda p: -p.score,
                    )
                    for row in rows
                ]

            return await self._request(
                "predict",
                "POST",
                "/predict",
                parse,
                body={"inputs": list(chunk), **options},
                priority=priority,
                timeout=timeout,
                deadline=deadline,
                extra_headers=extra_headers,
            )

        results, _ = await self._batched(batch, run, priority=priority, timeout=timeout)
        return results

    # -- service -------------------------------------------------------------------------------

    async def tokenize(
        self,
        inputs: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        prompt_name: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> list[list[TEIToken]]:
        """How the model's tokenizer splits each input (to count tokens against
        ``max_input_length`` before embedding)."""
        texts = _texts("inputs", inputs)
        body: dict[str, Any] = {
            "inputs": texts,
            "add_special_tokens": _bool("add_special_tokens", add_special_tokens),
        }
        if _prompt_name(prompt_name) is not None:
            body["prompt_name"] = prompt_name

        def parse(payload: Any, meta: Meta) -> list[list[TEIToken]]:
            rows = _list_of(len(texts), payload)
            return [[TEIToken.model_validate(t) for t in row] for row in rows]

        return await self._request(
            "tokenize",
            "POST",
            "/tokenize",
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def info(
        self,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> TEIInfo:
        """The served model (and its type: embedding, classifier or reranker) and the limits."""
        return await self._request(
            "info",
            "GET",
            "/info",
            lambda payload, meta: TEIInfo.model_validate(payload),
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def health(
        self,
        *,
        priority: int = Priority.HIGH,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bool:
        """True when the model can serve, False when the server says it cannot (503); never
        retried. Connection and auth failures still raise."""
        return await self._probe(
            "health", "/health", priority=priority, timeout=timeout, deadline=deadline
        )
