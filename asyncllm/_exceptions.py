"""The exception tree, grouped by what the caller can do about it::

    AsyncLLMError
    ├── ConfigurationError      bad arguments or settings; raised before anything is sent (ValueError)
    │   └── FileNotDownloadableError  the vendor serves no content for this file (an upload)
    ├── ClientClosedError       the client or dispatcher was closed before the call could finish
    ├── QueueFullError          the backend's queue stayed full for longer than ``queue_timeout``
    ├── CircuitOpenError        the backend failed repeatedly; calls fail fast until ``retry_at``
    ├── ToolLoopError           ``run_tools`` stopped; ``messages`` holds the transcript so far
    │   ├── MaxTurnsExceededError  the model still called tools after ``max_turns`` answers
    │   └── ToolCallError       a tool failed with ``on_error="raise"`` (its exception: __cause__)
    └── APIError                something went wrong talking to the backend
        ├── APIConnectionError  the request never got an answer (retried)
        │   ├── APITimeoutError the attempt or the deadline ran out (retried; also a TimeoutError)
        │   └── CertificateVerificationError  the server's TLS certificate failed (not retried)
        ├── ResponseValidationError  the answer is not what the protocol says (not retried)
        │   └── StructuredOutputError   the answer does not fit the asked ``response_format``
        │       └── LengthFinishReasonError  ... because it was cut at the token limit
        ├── ContentBlockedError the backend refused the prompt or the answer for safety (not retried)
        └── APIStatusError      the backend answered with an error status
            ├── BadRequestError           400
            ├── AuthenticationError       401
            ├── PermissionDeniedError     403
            ├── NotFoundError             404
            ├── ConflictError             409 (retried)
            ├── RequestTooLargeError      413
            ├── UnprocessableEntityError  422
            ├── RateLimitError            429 (retried, honouring Retry-After)
            │   └── BudgetExceededError   larger than a whole rate budget; not sent, never fits
            ├── InternalServerError       5xx (500, 502, 503, 504 retried)
            └── OverloadedError           529 (retried)

Every ``APIError`` carries ``backend``, ``request_id``, ``status_code`` (or None), a short ``body``
excerpt, the server's own ``server_request_id``, once retries ran out ``attempts``, and where the
request is known its ``method`` and ``url`` (without userinfo or query). A call that reached the
backend always raises its own error, never ``CircuitOpenError``: if the breaker opened while it
ran (or because it failed), its error says so in ``circuit_open`` and a note.

A call that creates something (a background response, a batch, a fine-tuning job, an upload) is
retried only while it cannot have been applied: when the request never left (``unsent``), or on
429 or 503 with ``Retry-After``; never after a timeout, a dropped connection or another 5xx,
which could create it twice (unless it carries an idempotency key its vendor honours). Its
error's ``may_have_been_applied`` says whether to look before sending it again.
"""

from __future__ import annotations

from typing import Any

from ._constants import BODY_EXCERPT_CHARS, MESSAGE_CHARS

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncLLMError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CertificateVerificationError",
    "CircuitOpenError",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "ContentBlockedError",
    "InternalServerError",
    "LengthFinishReasonError",
    "MaxTurnsExceededError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "RequestTooLargeError",
    "ResponseValidationError",
    "StructuredOutputError",
    "ToolCallError",
    "ToolLoopError",
    "UnprocessableEntityError",
    "status_error",
]


def excerpt(body: Any, limit: int = BODY_EXCERPT_CHARS) -> str | None:
    """A short, printable piece of a response body for error messages."""
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body[: limit * 4]).decode("utf-8", "replace")
    text = str(body)
    return text if len(text) <= limit else text[:limit] + "…"


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


class AsyncLLMError(Exception):
    """Base of every error asyncllm raises on purpose."""

    def __init__(
        self, message: str, *, backend: str | None = None, request_id: str | None = None
    ) -> None:
        message = _cut(message)
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.request_id = request_id

    def __str__(self) -> str:
        return " | ".join([self.message, *self._details()])

    def _details(self) -> list[str]:
        """What ``str()`` shows after the message."""
        parts = []
        if self.backend:
            parts.append(f"backend={self.backend}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return parts


class ConfigurationError(AsyncLLMError, ValueError):
    """Invalid arguments or settings; nothing was sent."""


class FileNotDownloadableError(ConfigurationError):
    """The vendor does not serve this file's content: Anthropic and Gemini serve only files their
    own tools or models produced, not uploads. Raised before the download is sent."""


class ClientClosedError(AsyncLLMError):
    """The client (or its dispatcher) was closed; the call was not, or not fully, carried out."""


class QueueFullError(AsyncLLMError):
    """The backend's queue had no room within ``queue_timeout``; the call was not queued."""


class CircuitOpenError(AsyncLLMError):
    """The backend's breaker is open and this call was not sent; retry after ``retry_at``
    (dispatcher clock) / ``retry_in`` s.

    ``last_error`` (also the ``__cause__``) is the failure that opened the breaker; ``host`` the
    backend's host, where its client told the dispatcher.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_in: float = 0.0,
        retry_at: float = 0.0,
        host: str | None = None,
        last_error: APIError | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_in = retry_in
        self.retry_at = retry_at
        self.host = host
        self.last_error = last_error
        if last_error is not None:
            self.__cause__ = last_error


class ToolLoopError(AsyncLLMError):
    """``run_tools`` stopped before the model gave a final answer. ``messages`` is the whole
    transcript so far (the caller's messages, each answer, each tool result), to read or to go
    on from; ``response`` the last answer."""

    def __init__(self, message: str, *, messages: list[Any], response: Any, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.messages = messages
        self.response = response


class MaxTurnsExceededError(ToolLoopError):
    """The model still asked for tools in its ``max_turns``-th answer; those calls were not run
    (the last message of ``messages`` is that answer)."""


class ToolCallError(ToolLoopError):
    """A tool raised, or the model called a tool that is not offered or gave arguments that are
    no JSON object, and ``run_tools`` was asked to raise (``on_error="raise"``). ``call`` is the
    model's call; the tool's own exception, if any, is the ``__cause__``. The results of the
    turn's other calls are not in ``messages``."""

    def __init__(self, message: str, *, call: Any, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.call = call


class APIError(AsyncLLMError):
    """A failure talking to a backend."""

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        body: Any = None,
        server_request_id: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, backend=backend, request_id=request_id)
        self.status_code = status_code
        self.body = excerpt(body)
        self.server_request_id = server_request_id
        self.code = None if code is None else _cut(code)
        self.error_type = None if error_type is None else _cut(error_type)
        self.retry_after = retry_after
        self.attempts = 1
        # Set by the transport/dispatcher: whether the server asked us (not) to retry.
        self.should_retry: bool | None = None
        # Set by the transport when the request provably never left: the connection was refused,
        # the name did not resolve, the connect timed out. Nothing can have been applied then.
        self.unsent = False
        # Set by a backend whose error says nothing certain of its health (OPEA's bare 500 also
        # answers a request it cannot read): the circuit breaker then gets no verdict from it.
        self.spares_breaker = False
        # The request that failed, where known: its method and its URL without userinfo or query.
        self.method: str | None = None
        self.url: str | None = None
        # Set by the dispatcher when the backend's circuit breaker opened while this call ran (or
        # because of it): what the next call to that backend would be refused with.
        self.circuit_open: CircuitOpenError | None = None

    @property
    def status(self) -> int | None:
        return self.status_code

    @property
    def may_have_been_applied(self) -> bool:
        """Whether the server may have carried out the request (created the job, stored the
        file) although the call failed: True after a timeout, a dropped connection, a 5xx, or an
        answer that broke its protocol; False when the request never left (``unsent``), or the
        server refused it (3xx, 4xx, or 503 with ``Retry-After``, which asks for the request again
        later). Before sending a creating call again after True, look whether it took effect."""
        if self.unsent:
            return False
        status = self.status_code
        if status is None:
            return True
        return status >= 500 and not (status == 503 and self.retry_after is not None)

    def _details(self) -> list[str]:
        parts = []
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.url is not None:
            parts.append(f"{self.method} {self.url}" if self.method else self.url)
        parts += super()._details()
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        if self.body:
            parts.append(f"body={self.body!r}")
        return parts


class APIConnectionError(APIError):
    """No answer: the connection failed, was dropped, or the server vanished mid-response."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """An attempt exceeded ``timeout``, or the call exceeded its ``deadline``."""


class CertificateVerificationError(APIConnectionError):
    """The server's TLS certificate did not verify (untrusted, expired, wrong host name).

    Not transient: never retried, and no verdict for the circuit breaker. The message names the
    host and the verification error.
    """

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.should_retry = False


class ResponseValidationError(APIError):
    """The backend answered 2xx, but the body does not follow its protocol."""


class StructuredOutputError(ResponseValidationError):
    """The model's answer is not valid JSON for the ``response_format`` asked, or does not
    validate against its model. ``text`` is the answer as the model wrote it; ``response`` the
    ``ChatResponse`` (everything but ``parsed``). The server worked: neither retried nor counted
    by the breaker."""

    def __init__(self, message: str, *, text: str = "", response: Any = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.text = text
        self.response = response


class LengthFinishReasonError(StructuredOutputError):
    """The structured answer was cut at the token limit (``finish_reason`` "length", Claude's
    "max_tokens", Gemini's "MAX_TOKENS"), so it cannot be whole JSON: raise ``max_tokens``."""


class ContentBlockedError(APIError):
    """The backend refused the prompt, or stopped its answer for safety before saying anything.

    Not retried: the same prompt is refused again. ``block_reason`` is the prompt's block
    reason (``SAFETY``, ``PROHIBITED_CONTENT``...) or None; ``finish_reason`` the answer's.
    """

    def __init__(
        self,
        message: str,
        *,
        block_reason: str | None = None,
        finish_reason: str | None = None,
        safety_ratings: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.block_reason = block_reason
        self.finish_reason = finish_reason
        self.safety_ratings = safety_ratings or []


class APIStatusError(APIError):
    """The backend answered with a non-success status. For a redirect (3xx), which is never
    followed (the key must not travel to another host), ``location`` is where it pointed."""

    location: str | None = None


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class RequestTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class BudgetExceededError(RateLimitError):
    """The call alone needs more than a whole rate budget of its backend (say, 50 000 tokens
    against 40 000 a minute), so no wait would let it through: raised before it is sent, never
    retried, ``retry_after`` None. Shorten the prompt or ``max_tokens``, or raise the budget."""


class InternalServerError(APIStatusError):
    pass


class OverloadedError(APIStatusError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    529: OverloadedError,
}


def status_error(
    status: int, message: str, *, kind: int | None = None, **kwargs: Any
) -> APIStatusError:
    """The one place a status code becomes an exception class. ``kind``: the status whose class
    to use where the body names a truer one than the response's (``status_code`` stays as sent)."""
    key = status if kind is None else kind
    cls = _BY_STATUS.get(key)
    if cls is None:
        cls = InternalServerError if key >= 500 else APIStatusError
    return cls(message, status_code=status, **kwargs)
