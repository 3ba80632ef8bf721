"""The text-embeddings-inference protocol: /embed, /embed_sparse, /embed_all, /rerank, /predict,
/tokenize, /info, /health and the OpenAI-compatible /v1/embeddings (and /embeddings).

The served model is an embedding model, so, as in TEI's router, ``POST /`` and ``/invocations``
are /embed (what Hugging Face's clients post to), and ``GET /`` and ``/ping`` are /health.

Vectors come from ``_common.vector`` (unit length; ``normalize=false`` scales them by 2), rerank
scores from the dot product of the query's and the text's vectors, so every answer is
deterministic. ``/info`` says ``max_client_batch_size`` = ``server.state["tei_max_client_batch_size"]``
(default 4) and a request with more inputs gets TEI's 413. Errors use TEI's body
``{"error": ..., "error_type": "Validation" | "Overloaded" | ...}``.

``server.state["tei_latency"]`` (seconds) delays each batch route by a seeded random share of it,
so concurrent chunks finish out of order.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common
from . import openai as openai_fake

MODEL_ID = "fake/tei-model"
DEFAULT_MAX_CLIENT_BATCH_SIZE = 4
LABELS = ("negative", "positive")
# TEI's ErrorType (serialised as the variant name) and the status it maps to.
STATUS_OF = {
    "Unhealthy": 503,
    "Backend": 424,
    "Overloaded": 429,
    "Validation": 413,
    "Tokenizer": 422,
    "Empty": 400,
}
_TYPE_OF = {status: etype for etype, status in STATUS_OF.items()}


def error_body(status: int, message: str) -> Any:
    return {"error": message, "error_type": _TYPE_OF.get(status, "Backend")}


def openai_error_body(status: int, message: str) -> Any:
    return {"message": message, "code": status, "error_type": _TYPE_OF.get(status, "Backend")}


def _error(error_type: str, message: str, *, openai: bool = False) -> web.Response:
    status = STATUS_OF[error_type]
    body = openai_error_body(status, message) if openai else error_body(status, message)
    return web.json_response(body, status=status)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=False))


def rerank_score(query: str, text: str, raw: bool = False) -> float:
    """The fake reranker: the cosine of the two vectors, squashed to (0, 1) unless ``raw``."""
    logit = 4 * _dot(_common.vector(query), _common.vector(text))
    return logit if raw else 1 / (1 + math.exp(-logit))


def sparse_vector(text: str) -> list[dict[str, Any]]:
    weights: dict[int, float] = {}
    for word in text.lower().split():
        index = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little") % 30522
        weights[index] = weights.get(index, 0.0) + abs(_common.vector(word)[0]) + 0.1
    return [{"index": i, "value": v} for i, v in sorted(weights.items())]


def setup(server: FakeServer) -> None:
    def batch_limit() -> int:
        return int(server.state.get("tei_max_client_batch_size", DEFAULT_MAX_CLIENT_BATCH_SIZE))

    def batch_refusal(size: int, *, openai: bool = False) -> web.Response | None:
        """TEI's error for an empty or too large batch, or None."""
        if not size:
            return _error("Empty", "Batch is empty", openai=openai)
        if size > batch_limit():
            message = f"batch size {size} > maximum allowed batch size {batch_limit()}"
            return _error("Validation", message, openai=openai)
        return None

    async def delay() -> None:
        latency = float(server.state.get("tei_latency", 0.0))
        if latency:
            await asyncio.sleep(latency * server.random.random())

    def inputs_of(request: web.Request, *, key: str = "inputs", openai: bool = False) -> Any:
        """The list of input strings, or the error response TEI would give."""
        body = request["json"]
        if not isinstance(body, dict) or key not in body:
            return web.json_response(
                {"error": f"missing field `{key}`"}, status=422
            )  # axum's JSON rejection, not an ErrorResponse
        value = body[key]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return web.json_response({"error": f"invalid type for `{key}`"}, status=422)
        return batch_refusal(len(items), openai=openai) or items

    async def embed(request: web.Request) -> web.StreamResponse:
        items = inputs_of(request)
        if isinstance(items, web.Response):
            return items
        await delay()
        body = request["json"]
        dim = int(body.get("dimensions") or 8)
        scale = 1.0 if body.get("normalize", True) else 2.0
        return web.json_response([[v * scale for v in _common.vector(text, dim)] for text in items])

    async def embed_all(request: web.Request) -> web.StreamResponse:
        items = inputs_of(request)
        if isinstance(items, web.Response):
            return items
        await delay()
        return web.json_response(
            [[_common.vector(piece) for piece in _common.pieces(text)] for text in items]
        )

    async def embed_sparse(request: web.Request) -> web.StreamResponse:
        items = inputs_of(request)
        if isinstance(items, web.Response):
            return items
        await delay()
        return web.json_response([sparse_vector(text) for text in items])

    async def rerank(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return web.json_response({"error": "missing field `query`"}, status=422)
        items = inputs_of(request, key="texts")
        if isinstance(items, web.Response):
            return items
        await delay()
        raw = bool(body.get("raw_scores"))
        ranks = []
        for i, text in enumerate(items):
            rank: dict[str, Any] = {"index": i, "score": rerank_score(body["query"], text, raw)}
            if body.get("return_text"):
                rank["text"] = text
            ranks.append(rank)
        ranks.sort(key=lambda r: -r["score"])
        return web.json_response(ranks)

    async def predict(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        value = body.get("inputs") if isinstance(body, dict) else None
        single = isinstance(value, str) or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
        )
        batch = [[value] if isinstance(value, str) else value] if single else value
        if not isinstance(batch, list) or not all(
            isinstance(item, list) and 1 <= len(item) <= 2 and all(isinstance(s, str) for s in item)
            for item in batch
        ):
            return web.json_response({"error": "invalid type for `inputs`"}, status=422)
        refused = batch_refusal(len(batch))
        if refused is not None:
            return refused
        await delay()
        raw = bool(body.get("raw_scores"))
        results = []
        for item in batch:
            logit = 4 * _common.vector(" | ".join(item))[0]
            logits = (-logit, logit)
            if raw:
                scores = list(logits)
            else:
                exps = [math.exp(x) for x in logits]
                scores = [e / sum(exps) for e in exps]
            preds = sorted(zip(scores, LABELS, strict=True), key=lambda p: -p[0])
            results.append([{"score": score, "label": label} for score, label in preds])
        return web.json_response(results[0] if single else results)

    async def tokenize(request: web.Request) -> web.StreamResponse:
        items = inputs_of(request)
        if isinstance(items, web.Response):
            return items
        special = request["json"].get("add_special_tokens", True)
        out = []
        for text in items:
            tokens: list[dict[str, Any]] = []
            if special:
                tokens.append(
                    {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
                )
            offset = 0
            for i, piece in enumerate(_common.pieces(text)):
                tokens.append(
                    {
                        "id": 1000 + i,
                        "text": piece,
                        "special": False,
                        "start": offset,
                        "stop": offset + len(piece),
                    }
                )
                offset += len(piece)
            if special:
                tokens.append(
                    {"id": 102, "text": "[SEP]", "special": True, "start": None, "stop": None}
                )
            out.append(tokens)
        return web.json_response(out)

    async def openai_embeddings(request: web.Request) -> web.StreamResponse:
        items = inputs_of(request, key="input", openai=True)
        if isinstance(items, web.Response):
            return items
        dim = int(request["json"].get("dimensions") or 8)
        return web.json_response(openai_fake.embedding_list(MODEL_ID, items, dim))

    async def info(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": None,
                "model_dtype": "float32",
                "served_model_name": MODEL_ID,
                "model_type": {"embedding": {"pooling": "cls"}},
                "max_concurrent_requests": 512,
                "max_input_length": 512,
                "max_batch_tokens": 16384,
                "max_batch_requests": None,
                "max_client_batch_size": batch_limit(),
                "auto_truncate": False,
                "tokenization_workers": 4,
                "version": "1.9.3",
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(request: web.Request) -> web.StreamResponse:
        if server.state.get("tei_unhealthy"):
            return _error("Unhealthy", "unhealthy")
        return web.Response(status=200)

    for path, handler in (
        ("/embed", embed),
        ("/embed_all", embed_all),
        ("/embed_sparse", embed_sparse),
        ("/rerank", rerank),
        ("/predict", predict),
        ("/tokenize", tokenize),
    ):
        server.add_route("POST", path, handler, error_body=error_body)
    server.add_route("POST", "/v1/embeddings", openai_embeddings, error_body=openai_error_body)
    server.add_route("POST", "/embeddings", openai_embeddings, error_body=openai_error_body)
    server.add_route("GET", "/info", info, error_body=error_body)
    server.add_route("GET", "/health", health, error_body=error_body)
    # The model is an embedding model, so TEI serves /embed at the root as well (what Hugging
    # Face's clients post to) and at SageMaker's /invocations; GET / and /ping are /health.
    server.add_route("POST", "/", embed, error_body=error_body)
    server.add_route("POST", "/invocations", embed, error_body=error_body)
    server.add_route("GET", "/", health, error_body=error_body)
    server.add_route("GET", "/ping", health, error_body=error_body)
