"""Pools: several clients of one backend (keys, deployments, base URLs) behind one client.

``Pool([OpenAI(api_key=k1), OpenAI(api_key=k2, base_url=...)])`` is an ``OpenAI``, at run time
(an instance of a class made once per member class, ``Pool`` first in its order, each call method
of the member class forwarded) and to the type checker (the return type of ``Pool.__new__``), so
``mypy --strict`` checks a pooled call against the member class's own signature. mypy has no
intersection types: a pool variable is annotated with its members' class, and the pool's own
method, ``stats``, is on every client. Each member keeps its own lane, breaker, limits and rate
budgets; the pool adds only the choice of member and one health model.

The life of a pooled call:

* The member is picked when the call is dispatched: a member blocked by ``Retry-After`` or
  ejected (its breaker open) is skipped, and of the rest two are drawn at random and the one
  with more headroom wins (power of two choices), ties at random. Headroom is the scarcer of
  its free slots (``max_concurrent_requests`` less in flight and queued) and its rate budget
  left, each as a share. When every usable member is full and the pool has calls of its own in
  flight, the call waits in the pool's queue (priority, then arrival) for one of them to end,
  and then picks: it never waits behind one member while another frees up.
* Each attempt is one call on the member with its retries off (``max_retries=0``), so the
  member's breaker hears of every failed attempt. A retryable failure is retried on a member
  not yet tried when there is one, at once; otherwise on the best member after the backoff of
  the member's ``RetryConfig``. The call's ``max_retries`` (or the member's) bounds the
  attempts, its ``deadline`` all of them.
* Ejection is the member's breaker opening. The pool makes repeated openings last longer: the
  n-th lasts n times the breaker's ``reset_timeout``, up to ``max_ejection_time`` (300 s, as
  Envoy's outlier detection caps it), n going down by one for every ``reset_timeout`` the member
  stayed in between. At most ``max_ejection_percent`` of the members are ejected at once (at
  least one may be): a member whose opening would pass the cap is kept in rotation (its breaker
  closed again). When every member is ejected, the one ejected first gets a probe (its breaker
  half-open) rather than the pool failing outright.

Calls that are made of other calls (``run_tools``) run on the pool itself, so each of their
chats is pooled. Sub-APIs that hold state per key (``files``, ``batches``, ``responses``...) are
not pooled: use them on a member.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import inspect
import itertools
import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast

from ._engine._backend import Backend, _check_call_values
from ._engine._backoff import BackoffSchedule, is_retryable
from ._engine._breaker import BreakerState
from ._engine._context import _request_id, new_request_id
from ._engine._dispatcher import BackendStats, Lane, Priority
from ._exceptions import (
    APIError,
    APITimeoutError,
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
)
from ._models import HasHttp, keep_backend
from ._validate import check_positive
from .streaming import ChatStream, Stream

__all__ = ["DEFAULT_MAX_EJECTION_PERCENT", "DEFAULT_MAX_EJECTION_TIME", "Pool"]

C = TypeVar("C", bound=Backend)
T = TypeVar("T")

# Envoy's outlier detection caps an ejection at 300 s.
DEFAULT_MAX_EJECTION_TIME = 300.0
# The share of members that may be ejected at once (at least one always may).
DEFAULT_MAX_EJECTION_PERCENT = 50.0

# Calls built from other calls of the same client: inherited, so that their calls are pooled.
_COMPOSED = frozenset({"run_tools"})


class _Member:
    """The pool's view of one member: the member, its twin with retries off (the pool retries
    across members), and its ejection history."""

    __slots__ = ("caller", "client", "ejected_until", "ejections", "openings_seen", "readmitted")

    def __init__(self, client: Backend) -> None:
        self.client = client
        self.caller = client.with_options(max_retries=0)
        self.ejections = 0
        self.ejected_until = -math.inf
        # How many openings of the breaker the pool has seen, so that each is counted once.
        self.openings_seen = 0
        self.readmitted = 0

    @property
    def name(self) -> str:
        return self.client.name

    def lane(self) -> Lane | None:
        """The member's lane; None when the member is closed."""
        try:
            return self.client._get_lane()
        except ClientClosedError:
            return None


class _Waiter:
    __slots__ = ("future", "key")

    def __init__(self, key: tuple[int, int], future: asyncio.Future[None]) -> None:
        self.key = key
        self.future = future

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class _Shared:
    """What a pool and its ``with_options`` twins share."""

    def __init__(
        self,
        members: list[_Member],
        rng: random.Random,
        max_ejection_percent: float,
        max_ejection_time: float,
        close_members: bool,
    ) -> None:
        self.members = members
        self.rng = rng
        self.max_ejection_percent = max_ejection_percent
        self.max_ejection_time = max_ejection_time
        self.close_members = close_members
        # The pool's calls now on a member (from the pick to the call's end).
        self.running = 0
        self.waiters: list[_Waiter] = []
        # Waiters woken whose task has not resumed yet.
        self.woken = 0
        self.seq = itertools.count()


class Pool(Backend, Generic[C]):
    """Several clients of one backend class behind one client of that class.

    ``members``: two or more (one works too) clients of the same class, say ``OpenAI`` with
    other keys or base URLs. Members named alike get ``#2``, ``#3``... as lanes do, so that
    ``stats()`` and ``answer.backend`` tell them apart. ``rng`` draws the two candidates and
    breaks ties (inject a seeded one in tests). ``max_ejection_percent`` and
    ``max_ejection_time``: see the module's docstring. ``close_members``: the pool owns its
    members (``aclose()`` closes them), the common case of members made for it; pass False to
    share them and close them yourself.

    Every call of the member class is a call of the pool, same signature and result; answers
    that carry HTTP metadata (``ChatResponse``, ``EmbeddingResponse``...) say which member
    answered in ``backend``, as does a chat stream's ``final()``.
    """

    _pool_classes: ClassVar[dict[type[Backend], type[Backend]]] = {}

    # The static type of a pool is its members' class: a Pool[OpenAI] is an OpenAI to the type
    # checker (mypy and pyright read the return type of __new__), and is one at run time too.
    def __new__(  # type: ignore[misc]
        cls,
        members: Sequence[C],
        *,
        name: str = "pool",
        rng: random.Random | None = None,
        max_ejection_percent: float = DEFAULT_MAX_EJECTION_PERCENT,
        max_ejection_time: float = DEFAULT_MAX_EJECTION_TIME,
        close_members: bool = True,
    ) -> C:
        if isinstance(members, (str, bytes)) or not isinstance(members, Sequence) or not members:
            raise ConfigurationError("Pool takes a non-empty list of clients")
        kind = type(members[0])
        for member in members:
            if not isinstance(member, Backend) or isinstance(member, Pool):
                raise ConfigurationError(f"a pool member must be a client, not {member!r}")
            if type(member) is not kind:
                raise ConfigurationError(
                    "the members of a pool are clients of one class (got "
                    f"{kind.__name__} and {type(member).__name__}): for a chain across "
                    "backends, use a fallback"
                )
        pool = cast("Pool[C]", object.__new__(_pool_class(kind)))
        pool._setup(members, name, rng, max_ejection_percent, max_ejection_time, close_members)
        return cast("C", pool)

    # No __init__ here: mypy would read the constructor's type from it instead of from __new__.
    # The made classes have one that does nothing (``_pool_class``).
    def _setup(
        self,
        members: Sequence[C],
        name: str,
        rng: random.Random | None,
        max_ejection_percent: float,
        max_ejection_time: float,
        close_members: bool,
    ) -> None:
        if not 0 <= max_ejection_percent <= 100:
            raise ConfigurationError("max_ejection_percent must be between 0 and 100")
        check_positive("max_ejection_time", max_ejection_time)
        if len({id(m) for m in members}) != len(members):
            raise ConfigurationError("a client is in the pool twice")
        taken: set[str] = set()
        for member in members:
            if member._root is not member:
                raise ConfigurationError("a pool member cannot be a client from with_options()")
            unique, n = member.name, 2
            while unique in taken:
                unique = f"{member.name}#{n}"
                n += 1
            member.name = unique
            taken.add(unique)
        first = members[0]
        models = {m.model for m in members}
        self._init_engine(
            {
                "name": name,
                "model": first.model if len(models) == 1 else None,
                "dispatcher": first._dispatcher,
                "close_timeout": max(m.close_timeout for m in members),
            }
        )
        self._pool = _Shared(
            [_Member(m) for m in members],
            rng or random.Random(),
            max_ejection_percent,
            max_ejection_time,
            close_members,
        )

    def __copy__(self) -> Pool[C]:
        """A shallow copy (``with_options``) without going through ``__new__``."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __repr__(self) -> str:
        names = ", ".join(m.name for m in self._pool.members)
        return f"Pool({type(self._pool.members[0].client).__name__}: {names})"

    def _get_lane(self) -> Lane:
        raise ConfigurationError("a pool has no lane of its own: its members have theirs")

    def stats(self) -> dict[str, BackendStats]:
        """Each member's counters, keyed by its name, with its ejections in ``info``
        (``ejections``: the count its ejection time grows with; ``readmitted``: openings the
        ejection cap kept in rotation)."""
        out: dict[str, BackendStats] = {}
        for member in self._pool.members:
            lane = member.lane()
            if lane is None:
                continue
            stats = lane.stats()
            stats.info["ejections"] = member.ejections
            stats.info["readmitted"] = member.readmitted
            out[member.name] = stats
        return out

    async def aclose(self) -> None:
        """Refuse new calls; with ``close_members`` (the default), close every member as its
        own ``aclose`` does. Safe to call twice; does nothing on a pool from ``with_options``."""
        if self._closed or self._root is not self:
            return
        self._closed = True
        shared = self._pool
        for waiter in shared.waiters:
            if not waiter.future.done():
                waiter.future.set_exception(ClientClosedError("pool closed", backend=self.name))
        if shared.close_members:
            await asyncio.gather(*(m.client.aclose() for m in shared.members))

    # -- health ---------------------------------------------------------------------------------

    def _check(self, member: _Member, lane: Lane) -> None:
        """Count a new opening of the member's breaker as an ejection: lengthen it, or keep the
        member in rotation when the cap on ejected members would be passed."""
        breaker = lane.breaker
        if breaker._state is BreakerState.CLOSED:
            return
        openings = breaker.transitions.get("closed->open", 0) + breaker.transitions.get(
            "half_open->open", 0
        )
        if openings == member.openings_seen:
            return
        member.openings_seen = openings
        if breaker.state is not BreakerState.OPEN:
            return  # half-open already: this opening's time is spent
        shared = self._pool
        opened = breaker.opened_at
        base = breaker._config.reset_timeout
        ejected = sum(
            1
            for m in shared.members
            if m is not member
            and (other := m.lane()) is not None
            and other.breaker.state is BreakerState.OPEN
        )
        cap = max(1, math.floor(len(shared.members) * shared.max_ejection_percent / 100))
        if ejected + 1 > cap:
            member.readmitted += 1
            breaker.readmit()
            return
        if member.ejections and base > 0:
            healthy = max(0.0, opened - member.ejected_until)
            member.ejections = max(0, member.ejections - int(healthy // base))
        member.ejections += 1
        seconds = min(base * member.ejections, shared.max_ejection_time)
        breaker.open_for(seconds)
        member.ejected_until = opened + seconds

    # -- picking a member -----------------------------------------------------------------------

    def _usable(
        self, avoid: set[int]
    ) -> tuple[list[tuple[_Member, Lane]], list[tuple[_Member, Lane]]]:
        """The members a call may go to now (not blocked, not ejected, a probe place free if
        half-open): those not in ``avoid`` (by index), and all of them."""
        now = self.dispatcher.clock()
        usable: list[tuple[_Member, Lane]] = []
        fresh: list[tuple[_Member, Lane]] = []
        for i, member in enumerate(self._pool.members):
            lane = member.lane()
            if lane is None:
                continue
            self._check(member, lane)
            if not lane.breaker.allows():
                continue
            gate = lane.gate
            if gate is not None and gate.blocked_until > now:
                continue
            usable.append((member, lane))
            if i not in avoid:
                fresh.append((member, lane))
        return fresh, usable

    def _fallback(self) -> tuple[_Member, Lane]:
        """No member is usable now: the blocked one free soonest (its gate holds the call or
        refuses it per its deadline), else the ejected one that opened first, probed now."""
        blocked: list[tuple[float, int, _Member, Lane]] = []
        ejected: list[tuple[float, int, _Member, Lane]] = []
        for i, member in enumerate(self._pool.members):
            lane = member.lane()
            if lane is None:
                continue
            breaker = lane.breaker
            if breaker.state is BreakerState.OPEN:
                ejected.append((breaker.opened_at, i, member, lane))
            elif lane.gate is not None and breaker.allows():
                blocked.append((lane.gate.blocked_until, i, member, lane))
        if blocked:
            _, _, member, lane = min(blocked)
            return member, lane
        if ejected:
            _, _, member, lane = min(ejected)
            lane.breaker.probe_now()
            return member, lane
        # Half-open members whose probes are all out: the first one queues behind its probe.
        for member in self._pool.members:
            lane = member.lane()
            if lane is not None:
                return member, lane
        raise ClientClosedError("every member of the pool is closed", backend=self.name)

    @staticmethod
    def _slots(lane: Lane) -> float:
        limit = lane.limits.max_concurrent_requests
        return (limit - lane.in_flight - lane.queued) / limit

    @staticmethod
    async def _budget_left(lane: Lane, share: float) -> float:
        """The lesser of ``share`` and the member's rate budget left, as a share; asked of the
        budget store only for a member that has budgets (a shared store answers remotely)."""
        gate = lane.gate
        if gate is not None and gate.budgeted:
            windows = await gate.store.current(lane.name, lane.dispatcher.clock())
            for window in windows.values():
                if window.limit and window.remaining is not None:
                    share = min(share, window.remaining / window.limit)
        return share

    def _two(self, usable: list[tuple[_Member, Lane]]) -> list[tuple[_Member, Lane]]:
        """Two members drawn at random, in random order (or the only one)."""
        n = len(usable)
        if n == 1:
            return usable
        randrange = self._pool.rng.randrange
        i = randrange(n)
        j = randrange(n - 1)
        return [usable[i], usable[j + 1 if j >= i else j]]

    async def _pick(
        self, priority: int, deadline_at: float | None, avoid: set[int]
    ) -> tuple[_Member, Lane]:
        """The member for the call's next attempt (see the module docstring)."""
        shared = self._pool
        queued = False
        while True:
            if self._root._closed:
                raise ClientClosedError("pool is closed", backend=self.name)
            fresh, usable = self._usable(avoid)
            usable = fresh or usable
            if not usable:
                return self._fallback()
            full = all(self._slots(lane) <= 0 for _, lane in usable)
            # A call that comes while others wait (or one of them has been woken and not yet
            # picked) waits behind them, rather than take the slot that was freed for them.
            waiting = shared.waiters or shared.woken
            if shared.running and (full or (waiting and not queued)):
                await self._wait_turn(priority, deadline_at)
                queued = True
                continue
            pair = self._two(usable)
            if len(pair) == 1:
                return pair[0]
            (first, lane_a), (second, lane_b) = pair
            # Headroom: the scarcer of free slots and rate budget left, each as a share.
            a = self._slots(lane_a)
            if lane_a.gate is not None:
                a = await self._budget_left(lane_a, a)
            b = self._slots(lane_b)
            if lane_b.gate is not None:
                b = await self._budget_left(lane_b, b)
            # pair is in random order: on a tie the first wins, which is a coin toss.
            return (first, lane_a) if a >= b else (second, lane_b)

    async def _wait_turn(self, priority: int, deadline_at: float | None) -> None:
        shared = self._pool
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter((priority, next(shared.seq)), future)
        heapq.heappush(shared.waiters, waiter)
        try:
            if deadline_at is None:
                await future
                shared.woken -= 1
            else:
                remaining = max(0.0, deadline_at - self.dispatcher.clock())
                try:
                    await asyncio.wait_for(future, remaining)
                    shared.woken -= 1
                except asyncio.TimeoutError:
                    raise APITimeoutError(
                        "deadline passed while queued for a pool member", backend=self.name
                    ) from None
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                shared.woken -= 1
                self._wake_next()  # woken, then cancelled: the turn goes to the next call
            raise
        finally:
            if waiter in shared.waiters:
                shared.waiters.remove(waiter)
                heapq.heapify(shared.waiters)

    def _ended(self) -> None:
        """A pooled call left its member: the best waiting call may pick now."""
        self._pool.running -= 1
        self._wake_next()

    def _wake_next(self) -> None:
        shared = self._pool
        while shared.waiters:
            waiter = heapq.heappop(shared.waiters)
            if not waiter.future.done():
                waiter.future.set_result(None)
                shared.woken += 1
                return

    # -- calls ----------------------------------------------------------------------------------

    def _retry_wait(
        self,
        error: APIError,
        member: _Member,
        attempts: int,
        max_retries: int | None,
        deadline_at: float | None,
        schedule: BackoffSchedule | None,
        tried: set[int],
    ) -> tuple[float, BackoffSchedule | None]:
        """The wait before the next attempt (0 when an untried member is there), or raise
        ``error`` when the call must not go again."""
        retry = member.client.retry
        limit = retry.max_retries if max_retries is None else max_retries
        if not is_retryable(error) or attempts > limit:
            raise error
        if self._usable(tried)[0]:
            return 0.0, schedule
        if error.retry_after is not None and error.retry_after > retry.max_retry_after:
            raise error
        if schedule is None:
            schedule = BackoffSchedule(retry, self.dispatcher.rng)
        delay = schedule.next_delay(error.retry_after)
        if deadline_at is not None and self.dispatcher.clock() + delay >= deadline_at:
            raise error
        return delay, schedule

    def _options(
        self, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], int | None, int, float | None]:
        """The call's options under the pool's defaults, checked (the pool reads priority and
        deadline before any member does); ``max_retries`` taken out, since the pool retries."""
        options = {**self._defaults, **kwargs} if self._defaults else dict(kwargs)
        _check_call_values(options)
        max_retries = options.pop("max_retries", None)
        priority = options.get("priority", Priority.NORMAL)
        deadline = options.get("deadline")
        deadline_at = None
        if deadline is not None and deadline != math.inf:
            deadline_at = self.dispatcher.clock() + float(deadline)
        return options, max_retries, priority, deadline_at

    def _remaining(self, options: dict[str, Any], deadline_at: float | None) -> None:
        if deadline_at is not None:
            options["deadline"] = max(0.001, deadline_at - self.dispatcher.clock())

    async def _pooled(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call of ``method``, attempt by attempt on the members (see the module
        docstring)."""
        options, max_retries, priority, deadline_at = self._options(kwargs)
        rid = _request_id.get() or new_request_id()
        token = _request_id.set(rid)
        members = self._pool.members
        tried: set[int] = set()
        schedule: BackoffSchedule | None = None
        attempts = 0
        try:
            while True:
                member, lane = await self._pick(priority, deadline_at, tried)
                self._remaining(options, deadline_at)
                self._pool.running += 1
                try:
                    result = await getattr(member.caller, method)(*args, **options)
                except CircuitOpenError:
                    # Ejected between the pick and the call: not sent, so no attempt spent.
                    tried.add(members.index(member))
                    if not self._usable(tried)[0]:
                        raise
                    delay = 0.0
                except APIError as error:
                    attempts += 1
                    tried.add(members.index(member))
                    self._check(member, lane)
                    delay, schedule = self._retry_wait(
                        error, member, attempts, max_retries, deadline_at, schedule, tried
                    )
                else:
                    if isinstance(result, HasHttp):
                        keep_backend(result, member.name)
                    return result
                finally:
                    self._ended()
                if delay > 0:
                    await self.dispatcher.sleep(delay)
        finally:
            _request_id.reset(token)

    def _pooled_stream(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call that returns at once: made on a member now, so that bad arguments raise here.
        A ``Stream`` is then read from the member picked when it is first read, and retried on
        another until its first item arrives; a coroutine (``pull(stream=False)``) is pooled as
        an async call is. Anything else runs on the member with the most free slots, as is."""
        options, max_retries, priority, deadline_at = self._options(kwargs)
        rid = _request_id.get() or new_request_id()
        usable = self._usable(set())[1]
        if usable:
            first = max(usable, key=lambda pair: self._slots(pair[1]))[0]
        else:
            first = self._fallback()[0]
        token = _request_id.set(rid)
        try:
            made = getattr(first.caller, method)(*args, **options)
        finally:
            _request_id.reset(token)
        if inspect.iscoroutine(made):
            made.close()  # never started: it sent nothing
            return self._pooled(method, args, kwargs)
        if not isinstance(made, Stream):
            return getattr(first.client, method)(*args, **{**self._defaults, **kwargs})
        holder: list[Stream[Any]] = []
        source = self._stream_items(
            method, args, options, max_retries, priority, deadline_at, rid, made, holder
        )
        if isinstance(made, ChatStream):
            stream: Stream[Any] = _PoolChatStream(Stream(source, rid), made._fmt, made._backend)
        else:
            stream = Stream(source, rid)
        holder.append(stream)
        return stream

    async def _stream_items(
        self,
        method: str,
        args: tuple[Any, ...],
        options: dict[str, Any],
        max_retries: int | None,
        priority: int,
        deadline_at: float | None,
        rid: str,
        unused: Stream[Any],
        holder: list[Stream[Any]],
    ) -> AsyncIterator[Any]:
        await unused.aclose()  # made to check the arguments; never read
        members = self._pool.members
        tried: set[int] = set()
        schedule: BackoffSchedule | None = None
        attempts = 0
        while True:
            member, lane = await self._pick(priority, deadline_at, tried)
            self._remaining(options, deadline_at)
            token = _request_id.set(rid)
            try:
                inner: Stream[Any] = getattr(member.caller, method)(*args, **options)
            finally:
                _request_id.reset(token)
            self._pool.running += 1
            try:
                try:
                    first = await inner.__anext__()
                except StopAsyncIteration:
                    return
                except CircuitOpenError:
                    tried.add(members.index(member))
                    if not self._usable(tried)[0]:
                        raise
                    delay = 0.0
                except APIError as error:
                    attempts += 1
                    tried.add(members.index(member))
                    await inner.aclose()
                    self._check(member, lane)
                    delay, schedule = self._retry_wait(
                        error, member, attempts, max_retries, deadline_at, schedule, tried
                    )
                else:
                    outer = holder[0]
                    outer.http_source = inner.http
                    if isinstance(outer, _PoolChatStream):
                        outer.member = member.name
                    yield first
                    async for item in inner:
                        yield item
                    return
            finally:
                await inner.aclose()
                self._ended()
                self._check(member, lane)
            if delay > 0:
                await self.dispatcher.sleep(delay)


class _PoolChatStream(ChatStream[Any]):
    """A pooled chat stream: its ``final()`` says which member answered."""

    member: str | None = None

    async def final(self) -> Any:
        response = await super().final()
        if self.member is not None:
            keep_backend(response, self.member)
        return response


def _not_pooled(name: str) -> property:
    def refuse(self: Any) -> Any:
        raise ConfigurationError(
            f"{name} is not pooled (what it manages belongs to one key): use it on a member"
        )

    return property(refuse, doc=f"Not pooled: use ``{name}`` on a member.")


def _forward(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The pool's version of a member class's call method ``name``."""

    async def pooled_call(self: Pool[Any], *args: Any, **kwargs: Any) -> Any:
        return await self._pooled(name, args, kwargs)

    def pooled_stream(self: Pool[Any], *args: Any, **kwargs: Any) -> Any:
        return self._pooled_stream(name, args, kwargs)

    if inspect.iscoroutinefunction(func):
        return functools.wraps(func)(pooled_call)
    return functools.wraps(func)(pooled_stream)


def _set_up_by_new(self: Any, *args: Any, **kwargs: Any) -> None:
    """``Pool.__new__`` has set the pool up: the member class's ``__init__`` must not run."""


def _pool_class(kind: type[Backend]) -> type[Backend]:
    """The pool class for members of ``kind``, made once: ``Pool`` first, then ``kind``, each
    public call method of ``kind`` forwarded."""
    made = Pool._pool_classes.get(kind)
    if made is not None:
        return made
    namespace: dict[str, Any] = {
        "__doc__": Pool.__doc__,
        "__module__": Pool.__module__,
        "__init__": _set_up_by_new,
    }
    own = set(dir(Pool))
    for name in dir(kind):
        if name.startswith("_") or name in _COMPOSED or name in own:
            continue
        value = inspect.getattr_static(kind, name)
        if isinstance(value, property):
            namespace[name] = _not_pooled(name)
        elif inspect.isfunction(value):
            namespace[name] = _forward(name, value)
    made = type(f"{kind.__name__}Pool", (Pool, kind), namespace)
    Pool._pool_classes[kind] = made
    return made
