"""The engine half of every client: its name, its lane in the dispatcher, its per-call defaults
and its lifecycle. It knows nothing of HTTP: S3 builds on it directly, the HTTP clients through
``HttpBackend``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar

from typing_extensions import Self, Unpack

from .._config import BreakerConfig, LimitsConfig, RateLimits, RetryConfig, check_timeout
from .._constants import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
)
from .._exceptions import ClientClosedError, ConfigurationError
from .._options import (
    CALL_KEYS,
    ENGINE_CLIENT_KEYS,
    CallOptions,
    EngineClientOptions,
    check_keys,
)
from .._validate import check_int, check_model
from ..streaming import Stream
from ._context import _request_id, new_request_id
from ._dispatcher import Attempt, BackendStats, Dispatcher, Lane, Priority, get_dispatcher
from ._ratelimit import RateDialect

T = TypeVar("T")

_tuple_new = tuple.__new__


def timeout_value(name: str, value: Any) -> float | None:
    """A timeout or deadline in seconds: ``None`` or ``math.inf`` for none."""
    if value is not None and value == math.inf:
        return None
    return check_timeout(name, value)


class Call(NamedTuple):
    """A call's engine settings, resolved once: the client's defaults under the call's options."""

    lane: Lane
    request_id: str
    priority: int
    timeout: float | None
    deadline: float | None
    max_retries: int | None
    model: str | None


class Backend:
    """The shared part of every client. Create once, use from many tasks, ``await aclose()``.

    Every call takes the ``CallOptions``: ``priority`` (lower first), ``timeout`` (seconds per
    attempt, for a stream per wait for its next chunk; ``math.inf`` for none), ``deadline``
    (seconds for the whole call, retries, queueing and reading a stream included) and
    ``max_retries``.
    """

    backend: ClassVar[str] = "base"
    # The constructor options this class takes (HttpBackend adds the HTTP ones).
    client_keys: ClassVar[frozenset[str]] = ENGINE_CLIENT_KEYS
    # How the backend reports its rate budgets (headers), if it does: see ``_ratelimit``.
    rate_dialect: ClassVar[RateDialect | None] = None

    def __init__(self, **options: Unpack[EngineClientOptions]) -> None:
        check_keys(options, self.client_keys, type(self).__name__)
        self._init_engine(options)

    def _init_engine(self, options: Mapping[str, Any]) -> None:
        self.name: str = options.get("name") or self.backend
        model = options.get("model")
        self.model: str | None = None if model is None else check_model(model)
        self.timeout = timeout_value("timeout", options.get("timeout", DEFAULT_TIMEOUT))
        retry = options.get("retry") or RetryConfig()
        max_retries = options.get("max_retries")
        if max_retries is not None:
            retry = dataclasses.replace(retry, max_retries=max_retries)
        self.retry: RetryConfig = retry
        self.breaker: BreakerConfig = options.get("breaker") or BreakerConfig()
        self.limits = LimitsConfig(
            options.get("max_concurrent_requests", DEFAULT_MAX_CONCURRENT_REQUESTS),
            options.get("queue_size", DEFAULT_QUEUE_SIZE),
            options.get("queue_timeout"),
        )
        self._rate_config: RateLimits | None = options.get("rate_limits")
        self.close_timeout: float = options.get("close_timeout", DEFAULT_CLOSE_TIMEOUT)
        self._dispatcher: Dispatcher | None = options.get("dispatcher")
        self._lane: Lane | None = None
        self._closed = False
        # A client from with_options() points at the client that owns the lane and connections.
        self._root: Backend = self
        self._defaults: CallOptions = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def _model(self, model: str | None) -> str:
        """The call's model, or the one the client was made with."""
        if model is None:
            if self.model is None:
                raise ConfigurationError(
                    f"give model=, or make the client with {type(self).__name__}(model=...)"
                )
            return self.model
        return check_model(model)

    # -- per-call defaults ------------------------------------------------------------------------

    def with_options(self, **options: Unpack[CallOptions]) -> Self:
        """A light client with other per-call defaults (``timeout``, ``deadline``, ``priority``,
        ``max_retries``); calls still run on this client's lane and connections.

        It owns nothing: its ``aclose()`` does nothing, and closing this client ends it too.
        Limits, breaker, base URL and key belong to the lane and cannot change here: make another
        client for those.
        """
        check_keys(options, CALL_KEYS, "with_options")
        _check_call_values(options)
        clone = copy.copy(self)
        clone._defaults = {**self._defaults, **options}
        clone._root = self._root
        return clone

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher this client runs on: the one given, or the running loop's shared one."""
        return self._dispatcher if self._dispatcher is not None else get_dispatcher()

    def _get_lane(self) -> Lane:
        root = self._root
        if root._closed:
            raise ClientClosedError("client is closed", backend=self.name)
        dispatcher = root.dispatcher
        lane = root._lane
        if lane is None or lane.dispatcher is not dispatcher or lane.closed:
            lane = root._lane = dispatcher.lane(
                root.name,
                limits=root.limits,
                retry=root.retry,
                breaker=root.breaker,
                host=root._host(),
                kind=root.backend,
                rate_limits=root._rate_config,
                rate_dialect=root.rate_dialect,
            )
        return lane

    def stats(self) -> dict[str, BackendStats]:
        """This client's counters (as ``Dispatcher.stats`` gives them), keyed by its lane's name:
        none before its first call; a pool gives one entry per member."""
        lane = self._root._lane
        if lane is None or lane.closed:
            return {}
        return {lane.name: lane.stats()}

    def _host(self) -> str | None:
        """The backend's host (and port), for errors that name it; None where there is none."""
        return None

    def _call(
        self,
        options: Mapping[str, Any],
        allowed: frozenset[str],
        operation: str,
        model: str | None = None,
    ) -> Call:
        """Check the call's option names, then resolve its engine settings: once per call.
        ``model``, the model the call asks for where known, goes to the tracker and telemetry."""
        if not options.keys() <= allowed:
            check_keys(options, allowed, operation)  # raises, naming the unknown keyword
        if self._defaults:
            options = {**self._defaults, **options}
        timeout = options.get("timeout")
        max_retries = options.get("max_retries")
        if max_retries is not None:
            check_int("max_retries", max_retries, 0)
        deadline = options.get("deadline")
        # tuple.__new__ builds the NamedTuple without its generated Python-level __new__: this
        # runs on every call.
        return _tuple_new(
            Call,
            (
                self._get_lane(),
                _request_id.get() or new_request_id(),
                options.get("priority", Priority.NORMAL),
                self.timeout if timeout is None else timeout_value("timeout", timeout),
                None if deadline is None else timeout_value("deadline", deadline),
                max_retries,
                model,
            ),
        )

    def _run(
        self,
        call: Call,
        operation: str,
        attempt: Callable[[Attempt], Awaitable[T]],
        creates: bool = False,
        payload: Any = None,
    ) -> Coroutine[Any, Any, T]:
        """One call through the dispatcher: ``attempt`` runs once per try, in the caller's task.
        ``creates``: the call creates something, so it is retried only while it cannot have been
        applied (``may_resend``). ``payload``: its JSON body, for rate budgets to estimate by.
        (A plain function returning the dispatcher's coroutine: no frame of its own per call.)"""
        return call.lane.dispatcher.run(
            call.lane,
            operation,
            attempt,
            priority=call.priority,
            timeout=call.timeout,
            deadline=call.deadline,
            request_id=call.request_id,
            max_retries=call.max_retries,
            model=call.model,
            creates=creates,
            payload=payload,
        )

    def _run_stream(
        self,
        call: Call,
        operation: str,
        open_stream: Callable[[Attempt], AsyncIterator[T]],
        creates: bool = False,
        payload: Any = None,
    ) -> Stream[T]:
        """A stream through the dispatcher, retried only until its first item is read (and one
        that ``creates`` something only as ``_run`` says)."""
        return call.lane.dispatcher.stream(
            call.lane,
            operation,
            open_stream,
            priority=call.priority,
            timeout=call.timeout,
            deadline=call.deadline,
            request_id=call.request_id,
            max_retries=call.max_retries,
            model=call.model,
            creates=creates,
            payload=payload,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def _close_resources(self) -> None:
        """What a client owns besides its lane (say, its connections); closed last."""

    async def aclose(self) -> None:
        """Refuse new calls, fail queued ones with ClientClosedError, let running ones finish
        (up to ``close_timeout``), then close the connections. Safe to call twice; does nothing
        on a client from ``with_options``."""
        if self._closed or self._root is not self:
            return
        self._closed = True
        lane, self._lane = self._lane, None
        try:
            if lane is not None:
                await lane.aclose(self.close_timeout)
        finally:
            await self._close_resources()

    async def __aenter__(self) -> Self:
        if self._root._closed:
            raise ClientClosedError("a closed client cannot be reopened", backend=self.name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _check_call_values(options: Mapping[str, Any]) -> None:
    """The values of call options given ahead of the call (``with_options``)."""
    priority = options.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError("priority must be an int or a Priority")
    if "timeout" in options:
        timeout_value("timeout", options["timeout"])
    if "deadline" in options:
        timeout_value("deadline", options["deadline"])
    max_retries = options.get("max_retries")
    if max_retries is not None:
        check_int("max_retries", max_retries, 0)
