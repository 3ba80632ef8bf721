"""asyncllm: asyncio-native clients for AI model and storage APIs, sharing one dispatcher.

Backends, the platform APIs and the Responses API load lazily by name, so ``import asyncllm``
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# First, so that modules loaded below (or by them) may read it while this one is half done.
__version__ = "0.1.0"

from ._config import BreakerConfig, LimitsConfig, RateLimits, RetryConfig
from ._engine._backoff import parse_retry_after
from ._engine._breaker import BreakerState
from ._engine._context import RequestIdFilter, current_request_id, request_context
from ._engine._dispatcher import BackendStats, Dispatcher, Priority, TokenUsage, get_dispatcher
from ._engine._tracking import RequestRecord, RequestStatus, RequestTracker
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncLLMError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CertificateVerificationError,
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    ContentBlockedError,
    FileNotDownloadableError,
    InternalServerError,
    LengthFinishReasonError,
    MaxTurnsExceededError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    RequestTooLargeError,
    ResponseValidationError,
    StructuredOutputError,
    ToolCallError,
    ToolLoopError,
    UnprocessableEntityError,
)
from ._http._transport import Request, Response, Transport
from ._models import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    HttpInfo,
    Message,
    ModelInfo,
    ModernParams,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
    tool_result,
)
from ._options import BodyOptions, CallOptions, ClientOptions, EngineClientOptions, HttpOptions
from ._pool import Pool
from ._tools import ToolRun
from .streaming import ChatStream, Stream

if TYPE_CHECKING:
    from ._platform._batch import (
        BatchCounts,
        BatchJob,
        BatchJobResult,
        BatchRequest,
        run_batch_job,
    )
    from ._platform._files import Deleted, FileObject
    from ._wire.responses import (
        FunctionCallArgumentsDeltaEvent,
        FunctionCallArgumentsDoneEvent,
        InputTokenCount,
        ModelResponse,
        OutputItemEvent,
        ResponseEvent,
        ResponseItem,
        ResponseItemList,
        ResponseStateEvent,
        ResponseStream,
        ResponseUsage,
        TextDeltaEvent,
        TextDoneEvent,
    )
    from .backends.claude import Anthropic, Claude
    from .backends.gemini import Gemini
    from .backends.groq import Groq
    from .backends.llvm import LLVM
    from .backends.ollama import Ollama
    from .backends.opea import OPEA
    from .backends.openai import OpenAI
    from .backends.ovms import OVMS
    from .backends.s3 import S3
    from .backends.tei import TEI
    from .backends.tgi import TGI
    from .backends.vllm import VLLM

__all__ = [
    "LLVM",
    "OPEA",
    "OVMS",
    "S3",
    "TEI",
    "TGI",
    "VLLM",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Anthropic",
    "AsyncLLMError",
    "AuthenticationError",
    "BackendStats",
    "BadRequestError",
    "BatchCounts",
    "BatchJob",
    "BatchJobResult",
    "BatchRequest",
    "BodyOptions",
    "BreakerConfig",
    "BreakerState",
    "BudgetExceededError",
    "CallOptions",
    "CertificateVerificationError",
    "ChatChunk",
    "ChatResponse",
    "ChatStream",
    "CircuitOpenError",
    "Claude",
    "ClientClosedError",
    "ClientOptions",
    "ConfigurationError",
    "ConflictError",
    "ContentBlockedError",
    "Deleted",
    "Dispatcher",
    "EmbeddingResponse",
    "EngineClientOptions",
    "FileNotDownloadableError",
    "FileObject",
    "FunctionCallArgumentsDeltaEvent",
    "FunctionCallArgumentsDoneEvent",
    "Gemini",
    "Groq",
    "HttpInfo",
    "HttpOptions",
    "InputTokenCount",
    "InternalServerError",
    "LengthFinishReasonError",
    "LimitsConfig",
    "MaxTurnsExceededError",
    "Message",
    "ModelInfo",
    "ModelResponse",
    "ModernParams",
    "NotFoundError",
    "Ollama",
    "OpenAI",
    "OutputItemEvent",
    "OverloadedError",
    "PermissionDeniedError",
    "Pool",
    "Priority",
    "QueueFullError",
    "RateLimitError",
    "RateLimits",
    "Request",
    "RequestIdFilter",
    "RequestRecord",
    "RequestStatus",
    "RequestTooLargeError",
    "RequestTracker",
    "Response",
    "ResponseEvent",
    "ResponseItem",
    "ResponseItemList",
    "ResponseStateEvent",
    "ResponseStream",
    "ResponseUsage",
    "ResponseValidationError",
    "RetryConfig",
    "Stream",
    "StructuredOutputError",
    "TextDeltaEvent",
    "TextDoneEvent",
    "TokenLogprob",
    "TokenUsage",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallError",
    "ToolLoopError",
    "ToolRun",
    "TopLogprob",
    "Transport",
    "UnprocessableEntityError",
    "Usage",
    "current_request_id",
    "get_dispatcher",
    "parse_retry_after",
    "request_context",
    "run_batch_job",
    "tool_result",
]


# The public names that load on first use, by module: the platform APIs (files, batches) and
# the Responses API build pydantic models that a chat-only program never needs, and each client
# is a module of its own. ``import asyncllm`` and a first ``OpenAI(...)`` stay cheap that way.
_LAZY_MODULES = {
    "asyncllm._platform._batch": (
        "BatchCounts",
        "BatchJob",
        "BatchJobResult",
        "BatchRequest",
        "run_batch_job",
    ),
    "asyncllm._platform._files": ("Deleted", "FileObject"),
    "asyncllm._wire.responses": (
        "FunctionCallArgumentsDeltaEvent",
        "FunctionCallArgumentsDoneEvent",
        "InputTokenCount",
        "ModelResponse",
        "OutputItemEvent",
        "ResponseEvent",
        "ResponseItem",
        "ResponseItemList",
        "ResponseStateEvent",
        "ResponseStream",
        "ResponseUsage",
        "TextDeltaEvent",
        "TextDoneEvent",
    ),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Load a lazy public name on first use: those in ``_LAZY`` from their module, and the rest
    of the names not imported above, the clients (those under TYPE_CHECKING), each from
    ``asyncllm.backends.<its name, lowercased>``, but for Anthropic, Claude's other name."""
    if name not in __all__:
        raise AttributeError(f"module 'asyncllm' has no attribute {name!r}")
    module = _LAZY.get(name)
    if module is None:
        module = "asyncllm.backends." + ("claude" if name == "Anthropic" else name.lower())
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
