"""The LLVM-optimised model server (protocol: ``docs/protocols/llvm.md``), with client-side
micro-batching of concurrent ``infer`` calls into ``batch_infer`` requests."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, Field
from typing_extensions import Unpack

from .._engine._context import new_request_id, request_context
from .._engine._fanout import fan_out
from .._exceptions import APITimeoutError, AsyncLLMError, ClientClosedError, ConfigurationError
from .._http._backend import HttpBackend, Meta
from .._models import ModelInfo, OpenModel, from_json, parse_as
from .._options import BODY_KEYS, BodyOptions, ClientOptions, HttpOptions, check_keys
from .._validate import check_int, check_model, check_number, path_segment

DEFAULT_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT = 0.010
OptimizationType = Literal["speed", "memory", "balanced"]
OPTIMIZATION_TYPES: tuple[str, ...] = get_args(OptimizationType)
# Per-call HTTP options a batch cannot carry for one of its callers: such a call is sent alone.
UNBATCHABLE = ("extra_headers", "extra_query", "extra_body")


class InferMetrics(OpenModel):
    """What the server measured; servers may add keys, which are kept."""

    latency_ms: float | None = None
    batch_size: int | None = None


class InferResult(BaseModel):
    """One input's output. ``request_id`` is that of the request that carried it (for a
    micro-batched call, the shared batch request)."""

    model: str
    output: Any = None
    metrics: InferMetrics = Field(default_factory=InferMetrics)
    request_id: str
    raw: Any = None


class LLVMModel(ModelInfo):
    name: str | None = None
    version: str | None = None
    status: str | None = None
    optimization: str | None = None
    max_batch: int | None = None


class ModelStatistics(OpenModel):
    model: str
    requests: int = 0
    inferences: int = 0
    batches: int = 0
    errors: int = 0
    average_latency_ms: float | None = None


class OptimizeResult(OpenModel):
    model: str
    optimization_type: str
    status: str


class ReloadResult(OpenModel):
    model: str
    status: str


class ServerStatus(OpenModel):
    status: str
    version: str | None = None
    uptime_seconds: float | None = None
    models_loaded: int | None = None


class _WireModels(BaseModel):
    models: list[dict[str, Any]]


class _WireBatch(BaseModel):
    model: str | None = None
    results: list[dict[str, Any]]


def _infer_result(item: Any, meta: Meta, **fields: Any) -> InferResult:
    return from_json(InferResult, item, request_id=meta.request_id, **fields)


def _parameters(parameters: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The parameters as a dict, and a canonical text that says which calls may share a batch."""
    if parameters is None:
        return {}, "{}"
    if not isinstance(parameters, Mapping):
        raise ConfigurationError("parameters must be a mapping")
    params = dict(parameters)
    try:
        key = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(f"parameters cannot be sent as JSON: {exc}") from exc
    return params, key


def _copy_error(exc: BaseException) -> BaseException:
    """A caller's own copy of a batch's error, so tracebacks of callers do not pile up on one."""
    try:
        clone = copy.copy(exc)
    except Exception:  # an exotic exception that cannot be copied: share it
        return exc
    clone.__cause__ = exc.__cause__
    return clone


def _fail(waiters: list[_Waiter], exc: BaseException) -> None:
    """Every caller still waiting gets its own copy of ``exc``."""
    for w in waiters:
        if not w.future.done():
            w.future.set_exception(_copy_error(exc))


# Compared by identity (eq=False): a caller leaving its batch removes its own waiter.
@dataclass(slots=True, eq=False)
class _Waiter:
    future: asyncio.Future[InferResult]
    input: Any
    priority: int
    deadline: float | None


@dataclass(slots=True, eq=False)
class _Batch:
    key: tuple[str, str]
    model_id: str
    parameters: dict[str, Any]
    waiters: list[_Waiter] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    sent: bool = False


class LLVM(HttpBackend):
    """``LLVM(base_url=..., api_key=..., batch_size=8, batch_wait=0.010)``: base from
    ``LLVM_API_URL`` (default ``http://localhost:8090``), optional Bearer key from ``LLVM_API_KEY``.

    Micro-batching: concurrent ``infer`` calls for one model with equal ``parameters`` are sent
    together as one ``batch_infer`` request once ``batch_size`` of them are waiting, or
    ``batch_wait`` seconds after the first, whichever is sooner. It is on when ``batch_size > 1``
    (``batch_size=1`` turns it off; ``infer(..., batch=False)`` skips it for one call). The batch
    runs at the best priority of its callers, with the client's timeout and retries; each caller
    gets its own result, or the batch's error. A call with per-call HTTP options the batch
    cannot share is sent alone (see ``infer``). Keep ``batch_size`` at or below the server's
    ``max_batch``. Clients from ``with_options`` share their client's batches.
    """

    backend: ClassVar[str] = "llvm"
    default_base_url: ClassVar[str | None] = "http://localhost:8090"
    base_url_env: ClassVar[tuple[str, ...]] = ("LLVM_API_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("LLVM_API_KEY",)
    server_request_id_header: ClassVar[str | None] = "x-request-id"

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait: float = DEFAULT_BATCH_WAIT,
        **options: Unpack[ClientOptions],
    ) -> None:
        if batch_size is None or batch_wait is None:  # the checks below let None through
            raise ConfigurationError("batch_size and batch_wait must be numbers, not None")
        check_int("batch_size", batch_size, 1)
        check_number("batch_wait", batch_wait, 0)
        super().__init__(**options)
        self.batch_size = batch_size
        self.batch_wait = float(batch_wait)
        self._open: dict[tuple[str, str], _Batch] = {}
        self._batch_tasks: set[asyncio.Task[None]] = set()

    @property
    def micro_batching(self) -> bool:
        """Whether ``infer`` calls may be grouped (``batch_size > 1``)."""
        return self.batch_size > 1

    @property
    def _owner(self) -> LLVM:
        """The client that owns the lane and the open batches (self, unless from with_options)."""
        root = self._root
        assert isinstance(root, LLVM)
        return root

    @staticmethod
    def _path(model_id: str, suffix: str = "") -> str:
        return "/models/" + path_segment("model_id", check_model(model_id)) + suffix

    # -- model management ----------------------------------------------------------------------

    async def models(self, **options: Unpack[HttpOptions]) -> list[LLVMModel]:
        """The models the server has loaded."""

        def parse(payload: Any, meta: Meta) -> list[LLVMModel]:
            return [from_json(LLVMModel, m) for m in _WireModels.model_validate(payload).models]

        return await self._request("models", "GET", "/models", parse, options)

    async def model_info(self, model_id: str, **options: Unpack[HttpOptions]) -> LLVMModel:
        """One model's description (status, optimisation, ``max_batch``); NotFoundError if absent."""
        return await self._request(
            "model_info",
            "GET",
            self._path(model_id),
            lambda payload, meta: from_json(LLVMModel, payload),
            options,
        )

    async def statistics(self, model_id: str, **options: Unpack[HttpOptions]) -> ModelStatistics:
        """The server's counters for one model (calls, inferences, batches, errors, latency)."""
        path = self._path(model_id, "/statistics")
        return await self._request("statistics", "GET", path, parse_as(ModelStatistics), options)

    async def optimize(
        self,
        model_id: str,
        optimization_type: OptimizationType,
        **options: Unpack[BodyOptions],
    ) -> OptimizeResult:
        """Re-optimise a model for ``"speed"``, ``"memory"`` or ``"balanced"`` (checked before
        sending: anything else is a ConfigurationError)."""
        if not isinstance(optimization_type, str) or optimization_type not in OPTIMIZATION_TYPES:
            raise ConfigurationError(
                f"optimization_type must be one of {', '.join(OPTIMIZATION_TYPES)}"
            )
        path = self._path(model_id, "/optimize")
        body = {"optimization_type": optimization_type}
        return await self._request(
            "optimize", "POST", path, parse_as(OptimizeResult), options, body=body
        )

    async def reload(self, model_id: str, **options: Unpack[BodyOptions]) -> ReloadResult:
        """Reload a model from storage (say, after its files changed)."""
        path = self._path(model_id, "/reload")
        return await self._request("reload", "POST", path, parse_as(ReloadResult), options, body={})

    async def status(self, **options: Unpack[HttpOptions]) -> ServerStatus:
        """The server's own health: ``status`` is ``"ok"`` or ``"degraded"``."""
        return await self._request("status", "GET", "/status", parse_as(ServerStatus), options)

    # -- inference ------------------------------------------------------------------------------

    async def batch_infer(
        self,
        model_id: str,
        inputs: Sequence[Any],
        parameters: Mapping[str, Any] | None = None,
        **options: Unpack[BodyOptions],
    ) -> list[InferResult]:
        """One ``batch_infer`` request: results in input order. A result list of the wrong length
        is a ResponseValidationError; the server's ``max_batch`` limit is a RequestTooLargeError."""
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence) or not inputs:
            raise ConfigurationError("inputs must be a non-empty list")
        params, _ = _parameters(parameters)
        count = len(inputs)
        path = self._path(model_id, "/batch_infer")

        def parse(payload: Any, meta: Meta) -> list[InferResult]:
            wire = _WireBatch.model_validate(payload)
            if len(wire.results) != count:
                raise ValueError(
                    f"batch_infer sent {count} inputs but got {len(wire.results)} results"
                )
            name = wire.model or model_id
            return [_infer_result(item, meta, model=name) for item in wire.results]

        return await self._request(
            "batch_infer",
            "POST",
            path,
            parse,
            options,
            body={"inputs": list(inputs), "parameters": params},
        )

    async def infer(
        self,
        model_id: str,
        input: Any,
        parameters: Mapping[str, Any] | None = None,
        *,
        batch: bool = True,
        **options: Unpack[BodyOptions],
    ) -> InferResult:
        """One inference. With micro-batching on (``batch_size > 1``) and ``batch=True`` it may
        travel in a ``batch_infer`` request with concurrent calls; it never waits more than
        ``batch_wait`` for company. Cancelling the call takes it out of its batch.

        A batch is one HTTP request for several callers, so it carries no caller's own HTTP
        options: a call given ``extra_headers``, ``extra_query`` or ``extra_body``, or a
        ``timeout`` or ``max_retries`` other than the client's (its own, or from
        ``with_options``), skips batching and is sent alone as an ``infer`` request with them.
        ``priority`` and ``deadline`` do not: the batch runs at its callers' best priority, and
        each caller waits no longer than its own deadline.
        """
        if not isinstance(batch, bool):
            raise ConfigurationError("batch must be a bool")
        params, key = _parameters(parameters)
        path = self._path(model_id, "/infer")
        body = {"input": input, "parameters": params}
        self._encode(body)  # refuse what cannot be sent as JSON before queueing
        if batch and self.micro_batching:
            call = self._call(options, BODY_KEYS, "infer")  # checks options; refuses if closed
            owner = self._owner
            alone = any(options.get(name) is not None for name in UNBATCHABLE) or (
                call.timeout != owner.timeout
                or (call.max_retries is not None and call.max_retries != owner.retry.max_retries)
            )
            if not alone:
                check_int("priority", call.priority)
                return await owner._join_batch(
                    model_id, input, params, key, call.priority, call.deadline
                )

        return await self._request("infer", "POST", path, _infer_result, options, body=body)

    async def infer_many(
        self,
        model_id: str,
        inputs: Sequence[Any],
        parameters: Mapping[str, Any] | None = None,
        **options: Unpack[BodyOptions],
    ) -> list[InferResult]:
        """Many inputs, results in input order: sent as ``batch_infer`` requests of at most
        ``batch_size`` inputs, concurrently within the backend's limits and under one request
        ID. The first failure cancels the rest and is raised; there are no partial results."""
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise ConfigurationError("inputs must be a list")
        items = list(inputs)
        # Refuse what one chunk could not send before any chunk is sent.
        check_keys(options, BODY_KEYS, "infer_many")
        self._path(model_id)
        params, _ = _parameters(parameters)
        self._encode({"inputs": items, "parameters": params})
        if not items:
            return []
        size = self.batch_size
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        parts = await fan_out(
            [functools.partial(self.batch_infer, model_id, c, params, **options) for c in chunks]
        )
        return [result for part in parts for result in part]

    # -- micro-batching (on the owning client) ------------------------------------------------------

    async def _join_batch(
        self,
        model_id: str,
        value: Any,
        params: dict[str, Any],
        params_key: str,
        priority: int,
        deadline: float | None,
    ) -> InferResult:
        loop = asyncio.get_running_loop()
        key = (model_id, params_key)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(key, model_id, params)
            batch.timer = loop.call_later(self.batch_wait, self._flush, batch)
        waiter = _Waiter(loop.create_future(), value, priority, deadline)
        batch.waiters.append(waiter)
        if len(batch.waiters) >= self.batch_size:
            self._flush(batch)
        try:
            if deadline is None:
                return await waiter.future
            return await asyncio.wait_for(waiter.future, deadline)
        except BaseException as exc:
            self._leave(batch, waiter)
            if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, AsyncLLMError):
                # Our own deadline ran out (not the batch's typed error, which passes as is).
                raise APITimeoutError(
                    "deadline passed while waiting for a micro-batch", backend=self.name
                ) from None
            raise

    def _leave(self, batch: _Batch, waiter: _Waiter) -> None:
        """A caller gave up: take it out of its batch, or drop the batch nobody waits for."""
        if not waiter.future.done():
            waiter.future.cancel()
        if not batch.sent:
            if waiter in batch.waiters:
                batch.waiters.remove(waiter)
            if not batch.waiters:
                self._seal(batch)
        elif batch.task is not None and all(w.future.done() for w in batch.waiters):
            batch.task.cancel()

    def _seal(self, batch: _Batch) -> None:
        """Take ``batch`` out of the open ones (nobody joins it any more) and stop its timer."""
        batch.sent = True
        if batch.timer is not None:
            batch.timer.cancel()
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    def _flush(self, batch: _Batch) -> None:
        if batch.sent:
            return
        self._seal(batch)
        batch.waiters = [w for w in batch.waiters if not w.future.done()]
        if not batch.waiters:
            return
        task = asyncio.ensure_future(self._run_batch(batch))
        batch.task = task
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_batch(self, batch: _Batch) -> None:
        waiters = batch.waiters
        deadlines = [w.deadline for w in waiters if w.deadline is not None]
        # The batch may run as long as its most patient caller; each caller keeps its own limit.
        options: BodyOptions = {"priority": min(w.priority for w in waiters)}
        if len(deadlines) == len(waiters):
            options["deadline"] = max(deadlines)
        try:
            with request_context(new_request_id()):
                results = await self.batch_infer(
                    batch.model_id, [w.input for w in waiters], batch.parameters, **options
                )
        except asyncio.CancelledError:
            for w in waiters:
                w.future.cancel()
            raise
        except BaseException as exc:
            _fail(waiters, exc)
            return
        for w, result in zip(waiters, results, strict=True):
            if not w.future.done():
                w.future.set_result(result)

    async def aclose(self) -> None:
        """Fail calls still waiting for a micro-batch with ClientClosedError, let sent batches
        finish (up to ``close_timeout``), then close as every client does. Does nothing on a
        client from ``with_options``."""
        if self._root is self and not self._closed:
            closed = ClientClosedError(
                "client closed while the call waited for a batch", backend=self.name
            )
            for batch in list(self._open.values()):
                self._seal(batch)
                _fail(batch.waiters, closed)
        await super().aclose()
