"""Retrieval-augmented answering on local servers: embed documents with TEI, shortlist them by
cosine similarity, rerank the shortlist with TEI, and answer with TGI (or Ollama).

By default everything runs against two embedded fake servers (TEI and TGI both have /info,
/health and /tokenize, so they cannot share one), with no network and no models:

    python examples/local_rag.py

Real servers are used when their URLs are set:

    TEI_BASE_URL=http://localhost:8080        embeddings (an embedding model)
    TEI_RERANK_BASE_URL=http://localhost:8081 reranking (a reranker model; default TEI_BASE_URL)
    TGI_BASE_URL=http://localhost:3000        the answer
    OLLAMA_HOST=http://localhost:11434        answer with Ollama instead (OLLAMA_MODEL, default
                                              llama3.2)
    HF_TOKEN=hf_...                           for Inference Endpoints
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from typing import Any

import asyncllm
from asyncllm.testing import FakeServer

DOCUMENTS = [
    "TGI streams tokens over server-sent events from its /generate_stream route.",
    "TEI computes sentence embeddings and reranks passages with cross-encoders.",
    "The Eiffel Tower is 330 metres tall and stands in Paris.",
    "asyncio runs coroutines on one thread, switching at every await.",
    "A circuit breaker stops calling a backend that keeps failing, then probes it again.",
    "Reranking orders retrieved passages by how well each answers the query.",
]
QUESTION = "How do I order retrieved passages by relevance?"
SHORTLIST = 4
CONTEXT = 2


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def url_or_fake(stack: contextlib.AsyncExitStack, env: str, protocol: str) -> str:
    url = os.environ.get(env)
    if url:
        return url
    server = await stack.enter_async_context(FakeServer(protocol))
    print(f"{env} not set: using an embedded {protocol.upper()} server at {server.url()}")
    return server.url()


def ollama_class() -> Any:
    if not os.environ.get("OLLAMA_HOST"):
        return None
    try:
        return asyncllm.Ollama
    except (ImportError, AttributeError):
        return None


async def main() -> None:
    async with contextlib.AsyncExitStack() as stack:
        tei_url = await url_or_fake(stack, "TEI_BASE_URL", "tei")
        rerank_url = os.environ.get("TEI_RERANK_BASE_URL") or tei_url
        tei = await stack.enter_async_context(asyncllm.TEI(base_url=tei_url))
        reranker = tei
        if rerank_url != tei_url:
            reranker = await stack.enter_async_context(
                asyncllm.TEI(base_url=rerank_url, name="tei-rerank")
            )

        ollama = ollama_class()
        llm: Any
        if ollama is not None:
            llm = await stack.enter_async_context(ollama())
            model = os.environ.get("OLLAMA_MODEL", "llama3.2")
        else:
            tgi_url = await url_or_fake(stack, "TGI_BASE_URL", "tgi")
            llm = await stack.enter_async_context(asyncllm.TGI(base_url=tgi_url))
            model = "tgi"  # TGI serves one model and ignores the name

        # 1. Embed the documents (split into TEI-sized batches, sent concurrently) and the query.
        docs, query = await asyncio.gather(
            tei.embed(DOCUMENTS),
            tei.embed(QUESTION, priority=asyncllm.Priority.HIGH),
        )
        scored = sorted(
            ((cosine(query.vectors[0], v), i) for i, v in enumerate(docs.vectors)), reverse=True
        )
        shortlist = [DOCUMENTS[i] for _, i in scored[:SHORTLIST]]
        print(f"\nshortlist by cosine ({len(DOCUMENTS)} documents embedded):")
        for score, i in scored[:SHORTLIST]:
            print(f"  {score:+.3f}  {DOCUMENTS[i]}")

        # 2. Rerank the shortlist with a cross-encoder; keep the best few as context.
        ranks = await reranker.rerank(QUESTION, shortlist)
        print("\nafter reranking:")
        for rank in ranks:
            print(f"  {rank.score:.3f}  {shortlist[rank.index]}")
        context = "\n".join(f"- {shortlist[r.index]}" for r in ranks[:CONTEXT])

        # 3. Answer from the context, streaming the reply.
        messages = [
            {"role": "system", "content": "Answer from the context only, in one sentence."},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {QUESTION}"},
        ]
        print(f"\nanswer ({type(llm).__name__}):")
        async with llm.stream_chat(messages, model=model, max_tokens=200) as stream:
            async for chunk in stream:
                print(chunk.delta, end="", flush=True)
        print("\n")
        print(llm.dispatcher.stats_table())


if __name__ == "__main__":
    asyncio.run(main())
