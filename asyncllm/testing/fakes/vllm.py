"""vLLM's server: the OpenAI protocol under ``/v1`` plus ``/v1/completions`` and vLLM's own root
routes (``/tokenize``, ``/detokenize``, ``/health``, ``/version``, ``/rerank``, ``/v1/rerank``,
``/score``, ``/v1/score``).

Completions answer ``"echo: <prompt>"`` (the shared rule). Tokens are the word pieces of
``_common.pieces``, numbered in order of first sight, so detokenize inverts tokenize. Rerank and
score rate a pair by the share of the query's words found in the document.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, openai

VERSION = "0.0.0-fake"
MAX_MODEL_LEN = 4096
FIRST_TOKEN_ID = 1000

_ids = itertools.count(1)


def error_body(status: int, message: str) -> Any:
    """vLLM's ErrorResponse: ``{"error": {"message", "type", "param", "code"}}``."""
    kinds = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
    }


def _bad_request(message: str) -> web.Response:
    return web.json_response(error_body(400, message), status=400)


def _strings(value: Any, *, single: bool = True) -> list[str] | None:
    if single and isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def setup(server: FakeServer) -> None:
    openai.setup(server, prefix="/v1")
    vocab: dict[str, int] = {}
    pieces_by_id: dict[int, str] = {}
    server.state["vllm"] = {"vocab": vocab}

    def encode(text: str) -> list[int]:
        if not text:
            return []
        ids = []
        for piece in _common.pieces(text):
            if piece not in vocab:
                vocab[piece] = FIRST_TOKEN_ID + len(vocab)
                pieces_by_id[vocab[piece]] = piece
            ids.append(vocab[piece])
        return ids

    async def completions(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is required")
        prompts = _strings(body.get("prompt"))
        if prompts is None:
            return _bad_request("'prompt' must be a string or a non-empty array of strings")
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            return _bad_request("'n' must be a positive integer")
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for prompt in prompts:
            text = _common.reply_text(prompt)
            if body.get("echo"):
                text = prompt + text
            prompt_tokens += _common.count_tokens(prompt)
            for _ in range(n):
                completion_tokens += _common.count_tokens(text)
                choices.append(
                    {
                        "index": len(choices),
                        "text": text,
                        "logprobs": None,
                        "finish_reason": "stop",
                        "stop_reason": None,
                    }
                )
        cid = f"cmpl-{next(_ids)}"
        return web.json_response(
            {
                "id": cid,
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": choices,
                "usage": openai.usage(prompt_tokens, completion_tokens),
            },
            headers={"x-request-id": f"srv-{cid}"},
        )

    async def tokenize(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _bad_request("body must be an object")
        if isinstance(body.get("prompt"), str):
            text = body["prompt"]
        elif isinstance(body.get("messages"), list) and body["messages"]:
            text = " ".join(
                openai._text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
            )
        else:
            return _bad_request("'prompt' (a string) or 'messages' is required")
        tokens = encode(text)
        out: dict[str, Any] = {
            "count": len(tokens),
            "max_model_len": MAX_MODEL_LEN,
            "tokens": tokens,
            "token_strs": [pieces_by_id[t] for t in tokens]
            if body.get("return_token_strs")
            else None,
        }
        return web.json_response(out)

    async def detokenize(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            return _bad_request("'tokens' must be an array of integers")
        unknown = [t for t in tokens if t not in pieces_by_id]
        if unknown:
            return _bad_request(f"token ids out of vocabulary: {unknown[:5]}")
        return web.json_response({"prompt": "".join(pieces_by_id[t] for t in tokens)})

    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def version(request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": VERSION})

    def model_of(body: dict[str, Any]) -> str:
        model = body.get("model")
        return model if isinstance(model, str) else "fake-rerank"

    async def rerank(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _bad_request("'query' must be a string")
        documents = _strings(body.get("documents"), single=False)
        if documents is None:
            return _bad_request("'documents' must be a non-empty array of strings")
        top_n = body.get("top_n") or 0
        if not isinstance(top_n, int) or top_n < 0:
            return _bad_request("'top_n' must be a non-negative integer")
        query = body["query"]
        ranked = sorted(
            enumerate(documents), key=lambda item: (-_common.relevance(query, item[1]), item[0])
        )
        results = [
            {"index": i, "document": {"text": d}, "relevance_score": _common.relevance(query, d)}
            for i, d in ranked
        ]
        if top_n:
            results = results[:top_n]
        tokens = sum(_common.count_tokens(query) + _common.count_tokens(d) for d in documents)
        return web.json_response(
            {
                "id": f"rerank-{next(_ids)}",
                "model": model_of(body),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": results,
            }
        )

    async def score(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _bad_request("body must be an object")
        first = _strings(body.get("text_1"))
        second = _strings(body.get("text_2"))
        if first is None or second is None:
            return _bad_request("'text_1' and 'text_2' must be strings or arrays of strings")
        if len(first) > 1 and len(first) != len(second):
            return _bad_request("text_1 and text_2 must have the same length")
        if len(first) == 1:
            first = first * len(second)
        data = [
            {"index": i, "object": "score", "score": _common.relevance(a, b)}
            for i, (a, b) in enumerate(zip(first, second, strict=True))
        ]
        tokens = sum(
            _common.count_tokens(a) + _common.count_tokens(b)
            for a, b in zip(first, second, strict=True)
        )
        return web.json_response(
            {
                "id": f"score-{next(_ids)}",
                "object": "list",
                "created": int(time.time()),
                "model": model_of(body),
                "data": data,
                "usage": openai.usage(tokens),
            }
        )

    routes = [
        ("POST", "/v1/completions", completions),
        ("POST", "/tokenize", tokenize),
        ("POST", "/detokenize", detokenize),
        ("GET", "/health", health),
        ("GET", "/version", version),
        ("POST", "/rerank", rerank),
        ("POST", "/v1/rerank", rerank),
        ("POST", "/score", score),
        ("POST", "/v1/score", score),
    ]
    for method, path, handler in routes:
        server.add_route(method, path, handler, error_body=error_body)
