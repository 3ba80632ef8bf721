"""Hugging Face text-embeddings-inference (TEI): embeddings, sparse embeddings, reranking and
classification from a self-hosted server or an Inference Endpoint.

TEI refuses a request with more inputs than its ``max_client_batch_size`` (413). Batch calls
here split their inputs into chunks of at most that size (read once from ``/info``, or given to
the constructor), send the chunks concurrently (``fan_out``) as separate dispatcher jobs under the
call's request ID and options (so ``max_concurrent_requests`` bounds them), and put the results
back in input order. The first failing chunk fails the call and cancels the others.
TEI's error body is ``{"error": "...", "error_type": "Validation" | "Overloaded" | ...}``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter
from typing_extensions import Unpack

from .._engine._context import current_request_id, new_request_id, request_context
from .._engine._dispatcher import Priority
from .._engine._fanout import fan_out
from .._exceptions import AsyncLLMError, ConfigurationError
from .._http._backend import ErrorInfo, HttpBackend, Meta
from .._models import EmbeddingResponse, parse_as
from .._options import BodyOptions, ClientOptions, HttpOptions
from .._validate import check_int, check_name, check_str, check_str_list, given
from .._wire.openai import EMBED_KEYS, EmbedOptions, embeddings_body, embeddings_parser

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
_SPARSE_VECTOR = TypeAdapter(list[TEISparseValue])


def _flag(name: str, value: Any) -> bool:
    """A flag TEI's schema types as a plain bool: None is refused too, since TEI would refuse the
    null it is sent as."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a bool")
    return value


def _predict_item(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigurationError("a predict input is a string or a (str, str) pair")


def _list_of(count: int, payload: Any) -> list[Any]:
    if not isinstance(payload, list) or len(payload) != count:
        raise ValueError(
            f"expected a list of {count} results, got "
            + (f"{len(payload)}" if isinstance(payload, list) else type(payload).__name__)
        )
    return payload


def _with_prompt_name(params: dict[str, Any], prompt_name: Any) -> dict[str, Any]:
    check_name("prompt_name", prompt_name)
    return {**params, **given(prompt_name=prompt_name)}


class TEI(HttpBackend):
    """``TEI(base_url=..., api_key=..., max_client_batch_size=None)``: base from ``TEI_BASE_URL``
    (required), Bearer token from ``HF_TOKEN`` or ``HF_API_TOKEN`` when set.

    ``max_client_batch_size`` overrides what the server's ``/info`` says (which is otherwise read
    on the first batch call that has more than one input, and cached).
    """

    backend: ClassVar[str] = "tei"
    base_url_env: ClassVar[tuple[str, ...]] = ("TEI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("HF_TOKEN", "HF_API_TOKEN")
    server_request_id_header: ClassVar[str | None] = "x-request-id"

    def __init__(
        self, *, max_client_batch_size: int | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        check_int("max_client_batch_size", max_client_batch_size, 1)
        super().__init__(**options)
        self.max_client_batch_size = max_client_batch_size
        self._batch_lock: asyncio.Lock | None = None

    # -- errors ----------------------------------------------------------------------------------

    def _error_info(self, payload: Any) -> ErrorInfo:
        """TEI's ``{"error", "error_type"}``: an ``Overloaded`` error is retried whatever its
        status, unless the server says otherwise."""
        info = super()._error_info(payload)
        if info.should_retry is None and (info.type or "").lower() == "overloaded":
            return info._replace(should_retry=True)
        return info

    # -- batching --------------------------------------------------------------------------------

    async def _batch_size(self, options: Mapping[str, Any]) -> int:
        """The server's ``max_client_batch_size``, read from ``/info`` once per client (clients
        from ``with_options`` share the root's) at the call's priority and timeout, and with its
        extra headers and query (a gateway in front may need them on every request)."""
        root = self._root
        assert isinstance(root, TEI)
        if root.max_client_batch_size is None:
            if root._batch_lock is None:
                root._batch_lock = asyncio.Lock()
            async with root._batch_lock:
                if root.max_client_batch_size is None:
                    keys = ("priority", "timeout", "extra_headers", "extra_query")
                    info_options: HttpOptions = {k: options[k] for k in keys if k in options}  # type: ignore[assignment]
                    info = await self.info(**info_options)
                    root.max_client_batch_size = max(1, info.max_client_batch_size)
        return root.max_client_batch_size

    async def _batched(
        self,
        operation: str,
        items: Sequence[Any],
        body: Callable[[Sequence[Any]], dict[str, Any]],
        parse: Callable[[Any, Sequence[Any], int], list[T]],
        options: Mapping[str, Any],
    ) -> tuple[list[T], str]:
        """``POST /{operation}`` of ``body(chunk)`` for every chunk of ``items``; the results of
        ``parse(payload, chunk, offset)`` joined in input order, and the request ID the chunks
        shared.

        The body of all ``items`` is prepared first, as if sent in one request: that refuses what
        would fail only as a chunk is sent (an option, header or deadline, a body that is not
        JSON such as an input with a lone surrogate) before ``/info`` or any chunk goes out. The
        first failing chunk fails the call (its error names the chunk) and the others are
        cancelled.
        """
        self._prepare(operation, options, None, body(items), None)
        with request_context(current_request_id() or new_request_id()) as rid:
            size = await self._batch_size(options) if len(items) > 1 else 1
            spans = [(start, items[start : start + size]) for start in range(0, len(items), size)]

            async def run(number: int, start: int, part: Sequence[Any]) -> list[T]:
                try:
                    return await self._request(
                        operation,
                        "POST",
                        f"/{operation}",
                        lambda payload, meta: parse(payload, part, start),
                        options,
                        body=body(part),
                    )
                except AsyncLLMError as exc:
                    if len(spans) > 1:
                        exc.message = (
                            f"chunk {number + 1} of {len(spans)} "
                            f"(inputs {start}..{start + len(part) - 1}) failed: {exc.message}"
                        )
                        exc.args = (exc.message,)
                    raise

            calls = [functools.partial(run, n, s, p) for n, (s, p) in enumerate(spans)]
            results = await fan_out(calls)
        return [item for rows in results for item in rows], rid

    async def _rows(
        self,
        operation: str,
        inputs: Sequence[Any],
        params: Mapping[str, Any],
        row: Callable[[Any], T],
        options: Mapping[str, Any],
    ) -> tuple[list[T], str]:
        """``POST /{operation}`` of ``inputs`` in batches; one ``row(answer)`` per input, in order."""
        return await self._batched(
            operation,
            inputs,
            lambda chunk: {"inputs": list(chunk), **params},
            lambda payload, chunk, offset: [row(r) for r in _list_of(len(chunk), payload)],
            options,
        )

    # -- embeddings ------------------------------------------------------------------------------

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        normalize: bool = True,
        truncate: bool = False,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        **options: Unpack[BodyOptions],
    ) -> EmbeddingResponse:
        """Pooled embeddings of ``inputs`` in input order, however many there are (see batching).

        ``normalize``: unit-length vectors. ``truncate=False`` makes an input longer than the
        model's limit an error instead of silently cut. ``prompt_name`` picks a
        sentence-transformers prompt (say "query"). ``dimensions`` asks for shorter vectors
        (Matryoshka models)."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        params = _with_prompt_name(
            {"normalize": _flag("normalize", normalize), "truncate": _flag("truncate", truncate)},
            prompt_name,
        )
        check_int("dimensions", dimensions, 1)
        params.update(given(dimensions=dimensions))
        vectors, rid = await self._rows("embed", texts, params, _VECTOR.validate_python, options)
        return EmbeddingResponse(vectors=vectors, request_id=rid)

    async def embed_sparse(
        self,
        inputs: str | Sequence[str],
        *,
        truncate: bool = False,
        prompt_name: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> TEISparseEmbeddings:
        """Sparse (SPLADE) embeddings, for lexical-style retrieval; needs a model with a
        sparse head. ``truncate`` and ``prompt_name`` as for ``embed``."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        params = _with_prompt_name({"truncate": _flag("truncate", truncate)}, prompt_name)
        row = _SPARSE_VECTOR.validate_python
        vectors, rid = await self._rows("embed_sparse", texts, params, row, options)
        return TEISparseEmbeddings(vectors=vectors, request_id=rid)

    async def embed_all(
        self,
        inputs: str | Sequence[str],
        *,
        truncate: bool = False,
        prompt_name: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> TEITokenEmbeddings:
        """Unpooled per-token vectors (for late-interaction retrieval or your own pooling);
        TEI serves them only when the model was started with ``--pooling none``. ``truncate``
        and ``prompt_name`` as for ``embed``."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        params = _with_prompt_name({"truncate": _flag("truncate", truncate)}, prompt_name)
        row = _TOKEN_VECTORS.validate_python
        vectors, rid = await self._rows("embed_all", texts, params, row, options)
        return TEITokenEmbeddings(vectors=vectors, request_id=rid)

    async def openai_embed(
        self, inputs: str | Sequence[str], **options: Unpack[EmbedOptions]
    ) -> EmbeddingResponse:
        """The same embeddings through TEI's OpenAI-compatible ``/v1/embeddings`` (one request,
        not split: use ``embed`` for large batches). ``model`` (the client's, if it was made
        with one) and ``user`` are sent only when given; TEI serves one model whatever the name."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        model = options.get("model", self.model)
        check_str("model", model)
        body = {**embeddings_body(texts, options), **given(model=model)}
        return await self._request(
            "openai_embed",
            "POST",
            "/v1/embeddings",
            embeddings_parser(len(texts)),
            options,
            body=body,
            allowed=EMBED_KEYS,
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
        **options: Unpack[BodyOptions],
    ) -> list[TEIRank]:
        """``texts`` ranked by relevance to ``query`` (needs a reranker model), best first;
        ``index`` points into ``texts``. Long lists are split like ``embed``'s inputs.
        ``return_text`` echoes each text, ``raw_scores`` skips the sigmoid."""
        if not isinstance(query, str) or not query:
            raise ConfigurationError("query must be a non-empty string")
        items = check_str_list("texts", texts)
        params = {
            "return_text": _flag("return_text", return_text),
            "raw_scores": _flag("raw_scores", raw_scores),
            "truncate": _flag("truncate", truncate),
        }

        def parse(payload: Any, chunk: Sequence[str], offset: int) -> list[TEIRank]:
            ranks = [TEIRank.model_validate(r) for r in _list_of(len(chunk), payload)]
            if sorted(r.index for r in ranks) != list(range(len(chunk))):
                raise ValueError("rerank indexes do not cover the texts sent")
            for r in ranks:
                r.index += offset
            return ranks

        ranks, _ = await self._batched(
            "rerank",
            items,
            lambda chunk: {"query": query, "texts": list(chunk), **params},
            parse,
            options,
        )
        return sorted(ranks, key=lambda r: (-r.score, r.index))

    async def predict(
        self,
        inputs: PredictInput | Sequence[PredictInput],
        *,
        raw_scores: bool = False,
        truncate: bool = False,
        **options: Unpack[BodyOptions],
    ) -> list[list[TEIPrediction]]:
        """Classify texts (a str) or text pairs (a ``(str, str)`` tuple) with a classifier model.
        One list of labelled scores per input, in input order, best label first. Long lists are
        split like ``embed``'s inputs."""
        if isinstance(inputs, (str, tuple)):
            batch = [_predict_item(inputs)]
        elif isinstance(inputs, Sequence) and inputs:
            batch = [_predict_item(i) for i in inputs]
        else:
            raise ConfigurationError("inputs must be a string, a pair, or a non-empty list")
        params = {
            "raw_scores": _flag("raw_scores", raw_scores),
            "truncate": _flag("truncate", truncate),
        }

        def row(labels: Any) -> list[TEIPrediction]:
            return sorted((TEIPrediction.model_validate(p) for p in labels), key=lambda p: -p.score)

        results, _ = await self._rows("predict", batch, params, row, options)
        return results

    # -- service -------------------------------------------------------------------------------

    async def tokenize(
        self,
        inputs: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        prompt_name: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> list[list[TEIToken]]:
        """How the model's tokenizer splits each input (to count tokens against
        ``max_input_length`` before embedding); one request, not split."""
        texts = check_str_list("inputs", inputs, allow_str=True)
        body = _with_prompt_name(
            {
                "inputs": texts,
                "add_special_tokens": _flag("add_special_tokens", add_special_tokens),
            },
            prompt_name,
        )

        def parse(payload: Any, meta: Meta) -> list[list[TEIToken]]:
            rows = _list_of(len(texts), payload)
            return [[TEIToken.model_validate(t) for t in row] for row in rows]

        return await self._request("tokenize", "POST", "/tokenize", parse, options, body=body)

    async def info(self, **options: Unpack[HttpOptions]) -> TEIInfo:
        """The served model (and its type: embedding, classifier or reranker) and the limits."""
        return await self._request("info", "GET", "/info", parse_as(TEIInfo), options)

    async def health(self, **options: Unpack[HttpOptions]) -> bool:
        """True when the model can serve, False when the server says it cannot (503); never
        retried. Connection and auth failures still raise. Runs at ``Priority.HIGH`` unless
        given another ``priority``."""
        return await self._probe("health", "/health", {"priority": Priority.HIGH, **options})
