"""OPEA (Open Platform for Enterprise AI): a megaservice gateway plus microservices on their own
ports, behind one client, ``OPEA``.

Each service is its own backend in the dispatcher (its own lane, concurrency limit and circuit
breaker): ``opea-gateway``, ``opea-llm``, ``opea-embedding``, ``opea-retriever``,
``opea-reranking``, ``opea-guardrails`` and ``opea-dataprep``; they share one connection pool.

- ``_services``: one client per service, with its calls, parameters (``...Params`` TypedDicts)
  and answers.
- ``_facade``: ``OPEA``, which makes the services, routes each call and closes them all.
- ``_literal``: the ``b'...'`` pieces of gateway streams, read without evaluating anything.
- ``_forms``: the multipart forms of the routes that take files.
"""

from ._facade import OPEA, SERVICES
from ._forms import FileSpec
from ._literal import parse_bytes_literal
from ._services import (
    ChatQnAOptions,
    ChatQnAParams,
    CodeGenOptions,
    CodeGenParams,
    DocSumOptions,
    DocSumParams,
    FaqGenOptions,
    FaqGenParams,
    GenerationParams,
    GuardrailResult,
    GuardrailsOptions,
    HealthResult,
    IngestOptions,
    IngestParams,
    IngestResult,
    RerankedDoc,
    RerankOptions,
    RerankResult,
    RetrievalResult,
    RetrievedDoc,
    RetrieveOptions,
    RetrieveParams,
)

__all__ = [
    "OPEA",
    "SERVICES",
    "ChatQnAOptions",
    "ChatQnAParams",
    "CodeGenOptions",
    "CodeGenParams",
    "DocSumOptions",
    "DocSumParams",
    "FaqGenOptions",
    "FaqGenParams",
    "FileSpec",
    "GenerationParams",
    "GuardrailResult",
    "GuardrailsOptions",
    "HealthResult",
    "IngestOptions",
    "IngestParams",
    "IngestResult",
    "RerankOptions",
    "RerankResult",
    "RerankedDoc",
    "RetrievalResult",
    "RetrieveOptions",
    "RetrieveParams",
    "RetrievedDoc",
    "parse_bytes_literal",
]
