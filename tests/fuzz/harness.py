"""The fuzzing harness: the registry-entry type (``Backend``, one per backend in
``tests/fuzz/registry.py``), what a public method takes (read from its signature and from the
``**options`` TypedDict it unpacks), how one call's arguments are drawn, and what a call must do
with them: refuse them with a ``ConfigurationError`` before anything is sent, or send requests
that are clean (headers that cannot be split, the URL the method means, strict JSON that the
backend's schema accepts) and return normally from a valid reply; and, with a hostile server,
return the documented result or raise a typed ``APIError`` that names the request.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL as YURL

import asyncllm
from asyncllm._constants import BODY_EXCERPT_CHARS
from asyncllm._http._transport import Request
from asyncllm._options import CallOptions, HttpOptions
from asyncllm.testing import MockResponse, MockTransport
from tests.fuzz.answers import Event, Reply, Stream, chunks, serve

HOST = "mock.invalid"
URL = f"http://{HOST}"
# Far longer than any call here takes; reaching it means the client hung.
HANG = 10.0
# The limits of the clients that read hostile responses.
MAX_LINE = 4096
MAX_RESPONSE = 64 * 1024
FUZZ_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# The clients' retry settings: no retry unless a call asks for one (the input fuzzing draws
# max_retries), and then no backoff sleep, so that a retried call never waits for real.
NO_WAIT = asyncllm.RetryConfig(max_retries=0, initial_delay=0.0, max_delay=0.0)


@dataclass(frozen=True)
class Keywords:
    """A public method's parameters: those of its signature (``required``: without a default)
    and the keys of its ``**options`` TypedDict, with their types."""

    named: tuple[inspect.Parameter, ...]
    options: dict[str, Any]

    @property
    def required(self) -> list[str]:
        return [p.name for p in self.named if p.default is p.empty]

    @property
    def optional(self) -> list[str]:
        return [p.name for p in self.named if p.default is not p.empty] + list(self.options)

    @property
    def all(self) -> list[str]:
        return [p.name for p in self.named] + list(self.options)


def _hints(obj: Any, **extra: Any) -> dict[str, Any]:
    """``obj``'s type hints, or (where one cannot be evaluated, as OPEA's ``FileSpec`` names
    ``"os.PathLike[str]"`` in a module that has no ``os``) its annotations as written: only the
    names are needed here, and the ``options`` one is evaluated on its own."""
    try:
        return typing.get_type_hints(obj, include_extras=True, **extra)
    except NameError:
        if isinstance(obj, type):
            merged: dict[str, Any] = {}
            for klass in reversed(obj.__mro__):
                merged.update(getattr(klass, "__annotations__", {}))
            return merged
        return dict(obj.__annotations__)


def options_of(fn: Callable[..., Any]) -> type | None:
    """The TypedDict of ``fn``'s ``**options: Unpack[X]``, or None when it takes none."""
    unpacked = _hints(fn).get("options")
    if unpacked is None:
        return None
    if isinstance(unpacked, str):  # left unevaluated by _hints
        unpacked = eval(unpacked, fn.__globals__)  # the package's own annotation
    (declaration,) = typing.get_args(unpacked)
    return declaration  # type: ignore[no-any-return]


def keywords(cls: type, name: str) -> Keywords:
    fn = getattr(cls, name)
    params = list(inspect.signature(fn).parameters.values())[1:]
    named = tuple(p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    declaration = options_of(fn)
    options: dict[str, Any] = {}
    if declaration is not None:
        keys = declaration.__required_keys__ | declaration.__optional_keys__  # type: ignore[attr-defined]
        types = _hints(declaration)
        options = {k: types[k] for k in sorted(keys)}
    # A client whose chat takes more than the inherited signature shows (Groq re-declares chat
    # for type checkers only, so that a call costs no extra frame) says so in chat_keys.
    extra = getattr(cls, "chat_keys", frozenset()) - options.keys() if "chat" in name else ()
    options.update((k, Any) for k in sorted(extra))
    return Keywords(named, options)


CALL_OPTIONS = frozenset(CallOptions.__optional_keys__)  # type: ignore[attr-defined]
HTTP_OPTIONS = frozenset(HttpOptions.__optional_keys__)  # type: ignore[attr-defined]


# Methods written once for every client, whose arguments are not the backend's: run_tools is the
# shared tool loop over chat (its own arguments are tested once, in tests/test_tools.py, and the
# chat options it passes on are fuzzed on each backend's chat); stats takes none.
SHARED_METHODS = frozenset({"aclose", "with_options", "run_tools", "stats"})


def public_methods(cls: type) -> list[str]:
    return sorted(
        n
        for n, v in inspect.getmembers(cls)
        if not n.startswith("_") and inspect.isfunction(v) and n not in SHARED_METHODS
    )


# Misspellings of the call options and of common parameters, and names no method takes.
UNDECLARED = [
    "priorty", "timout", "dead_line", "max_retry", "extra_header", "extra_querys", "extrabody",
    "temprature", "max_token", "modle", "stream_options_", "x", "_private", "options",
]  # fmt: skip


def undeclared(kw: Keywords) -> list[str]:
    declared = set(kw.all)
    return [n for n in UNDECLARED if n not in declared]


def opea_or_skip() -> Any:
    """``asyncllm.backends.opea``, or (while it does not import: its conversion to the new API is
    on another branch) a stand-in whose every use skips the test that makes it."""
    try:
        from asyncllm.backends import opea
    except ImportError as exc:
        reason = f"asyncllm.backends.opea does not import on this tree: {exc}"

        class Unavailable:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                import pytest

                pytest.skip(reason)

        import types

        stand_in = types.SimpleNamespace(unavailable=reason)
        for name in (
            "OPEA",
            "GuardrailResult",
            "HealthResult",
            "IngestResult",
            "RerankResult",
            "RetrievalResult",
        ):
            setattr(stand_in, name, type(name, (Unavailable,), {}))
        return stand_in
    return opea


# -- arguments -------------------------------------------------------------------------------------

Bad = st.SearchStrategy[Any] | Callable[[Any], st.SearchStrategy[Any]]


@dataclass(frozen=True)
class Arg:
    """One parameter: values it takes (``good``), values it should refuse or send correctly anyway
    (``bad``: a strategy, or a function of the good value drawn, None when none was, that
    spoils it). ``raw`` says which bad values the backend passes through as given (by design):
    those are sent as they are, and the body is then checked as strict JSON only, not against
    the schema."""

    name: str
    good: st.SearchStrategy[Any]
    bad: Bad
    positional: bool = False
    required: bool = False
    raw: Callable[[Any], bool] | None = None


def _strategy(value: Any, many: bool) -> st.SearchStrategy[Any]:
    if isinstance(value, st.SearchStrategy):
        return value
    return st.sampled_from(value) if many else st.just(value)


def pos(name: str, good: Any, bad: Bad, *, raw: Callable[[Any], bool] | None = None) -> Arg:
    return Arg(name, _strategy(good, False), bad, positional=True, raw=raw)


def req(name: str, good: Any, bad: Bad) -> Arg:
    return Arg(name, _strategy(good, False), bad, required=True)


def opt(name: str, good: Any, bad: Bad, *, raw: Callable[[Any], bool] | None = None) -> Arg:
    return Arg(name, _strategy(good, True), bad, raw=raw)


def always(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Method:
    """A public method to fuzz, with the client settings to call it on (``client``, which tell
    apart two entries of one method). ``one``: parameters of which exactly one is given;
    ``at_most_one``: at most one. ``empty``: returns [] without sending when given no inputs."""

    name: str
    args: tuple[Arg, ...]
    client: Mapping[str, Any] = field(default_factory=dict)
    one: tuple[str, ...] = ()
    at_most_one: tuple[str, ...] = ()
    empty: bool = False


Drawn = tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]
_GIVEN = st.booleans()


@st.composite
def calls(draw: st.DrawFn, method: Method, faults: bool = True) -> Drawn:
    """Arguments for one call: each optional one given or not, and up to two of them bad (most
    often one: a call with several bad ones stops at the first). Returns (args, kwargs, the bad
    values by name). The positional arguments (messages, inputs...) are the richest, so they are
    picked to be bad more often."""
    names = [a.name for a in method.args for _ in range(4 if a.positional else 1)]
    pick = st.none() | st.sampled_from(names) if faults and names else st.none()
    chosen = {draw(pick), draw(pick)} - {None}
    grouped = {*method.one, *method.at_most_one}
    selected: set[str] = set()
    for group, choices in (
        (method.one, method.one),
        (method.at_most_one, (*method.at_most_one, None)),
    ):
        if group and (choice := draw(st.sampled_from(choices))) is not None:
            selected.add(choice)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    bad: dict[str, Any] = {}
    for a in method.args:
        if a.name in grouped:
            given = a.name in selected
        else:
            given = a.positional or a.required or draw(_GIVEN)
        if a.name in chosen:
            if isinstance(a.bad, st.SearchStrategy):
                value = bad[a.name] = draw(a.bad)
            else:
                value = bad[a.name] = draw(a.bad(draw(a.good) if given else None))
        elif given:
            value = draw(a.good)
        else:
            continue
        if a.positional:
            args.append(value)
        else:
            kwargs[a.name] = value
    return tuple(args), kwargs, bad


# -- registry entries --------------------------------------------------------------------------------

# Checks a sent request's URL (and query parameters) for a method, given the call's arguments
# merged over the client's settings.
PathCheck = Callable[[str, Mapping[str, Any], Request], None]
# Checks a sent JSON body against the backend's published schema: (method, URL path, body).
Schema = Callable[[str, str, Any], None]


@dataclass(frozen=True)
class Probe:
    """The client settings to fuzz (``args``) over ``fixed`` ones, and the call that tries them."""

    args: tuple[Arg, ...]
    method: str
    call_args: tuple[Any, ...] = ()
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    examples: int = 75


@dataclass(frozen=True, repr=False)
class Call:
    """One public call that reads a response: how to call it (``invoke``, on a client with the
    ``client`` settings), what it returns (``check``: of the result, or of each streamed item),
    and for the tree damage what a valid answer looks like (``valid``: the whole body, JSON or
    bytes sent as they are; ``events``: a valid stream, event by event, in ``framing``)."""

    name: str
    invoke: Callable[[Any], Any]
    check: Callable[[Any], bool]
    client: Mapping[str, Any] = field(default_factory=dict)
    valid: Any = None
    events: tuple[Event, ...] = ()
    framing: str = "sse"
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False  # a stream call (also one answered with one JSON body)

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass(frozen=True)
class Backend:
    """One registry entry: everything the fuzzing needs to know of a backend.

    ``make`` builds its client on a transport. ``answer`` (the JSON for a request's path and
    body) and ``streams`` (the events for a stream request's path) make ``reply``, which answers
    any request the client sends as the server would. ``path`` and ``schema`` check what it
    sent. ``methods`` are the argument tables of its public methods, drawn ``examples`` times
    each; ``probe`` fuzzes its settings; ``skip`` leaves out inputs that hit known bugs in
    shared code (reported, each with a strict xfail). For the response fuzzing: ``calls``, the
    valid ``error`` body, and ``damage``. Every entry's JSON answers get drawn damage plans,
    request by request; "tree" adds every single fault of each call's own valid answer in turn,
    then mutated bodies, events and headers; "plan" re-frames its streams at random."""

    name: str
    cls: type
    settings: Mapping[str, Any]
    answer: Callable[[str, Any], Any]
    path: PathCheck
    methods: tuple[Method, ...]
    probe: Probe
    calls: tuple[Call, ...]
    error: Any
    damage: str
    schema: Schema | None = None
    streams: Callable[[str], Stream] = chunks
    examples: int = 75
    skip: Callable[[Method, Mapping[str, Any]], bool] | None = None

    @property
    def reply(self) -> Reply:
        return serve(self.answer, self.streams)

    def make(
        self,
        transport: MockTransport,
        *,
        responses: bool = False,
        own: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> Any:
        """The client, on ``transport``, with ``settings`` over the entry's (or over ``own``):
        for the input fuzzing without retry waits; for the response fuzzing without retries,
        with small response and line limits."""
        if responses:
            limits: dict[str, Any] = {
                "max_retries": 0,
                "max_response_bytes": MAX_RESPONSE,
                "max_line_bytes": MAX_LINE,
            }
        else:
            limits = {"retry": NO_WAIT}
        return self.cls(
            transport=transport,
            dispatcher=asyncllm.Dispatcher(),
            **limits,
            **{**(self.settings if own is None else own), **settings},
        )

    def label(self, method: Method) -> str:
        return f"{self.name}.{method.name}" + "".join(
            f"[{k}={v}]" for k, v in method.client.items()
        )


# -- what a sent request must be ---------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise AssertionError(f"the body holds {name}, which is not JSON")


def strict_json(content: bytes) -> Any:
    """A sent body, which must be strict JSON (no NaN or Infinity)."""
    return json.loads(content.decode("utf-8"), parse_constant=_no_constant)


def check_headers(request: Request) -> None:
    for name, value in request.headers.items():
        assert isinstance(name, str) and isinstance(value, str), (name, value)
        assert not re.search(r"[\r\n\x00]", name + value), (name, value)


def check_form(form: Any) -> None:
    """A multipart form: aiohttp can write it (as it does when it sends it), and its fields are
    text that UTF-8 can carry, with JSON values that hold no NaN."""
    form()
    for options, _headers, value in form._fields:
        name = options["name"]
        assert isinstance(name, str) and not re.search(r"[\r\n\x00]", name), name
        if isinstance(value, str):
            value.encode("utf-8")
            if value[:1] in ("[", "{"):
                json.loads(value, parse_constant=_no_constant)
        else:
            assert isinstance(value, (bytes, bytearray)), type(value)


def segments(url: str) -> list[str]:
    """The URL's path segments, as aiohttp sends it (dot segments resolved), decoded."""
    return [unquote(part) for part in YURL(url).raw_parts]


def check_request(
    backend: Backend, method: str, merged: Mapping[str, Any], request: Request, host: str
) -> None:
    """What every sent request must be: headers that cannot be split (no CR, LF or NUL), the host
    it was given and the path the method means (nothing the caller gave could change them), no
    query but extra_query's (percent-encoded) and all of that, and a strict JSON body or a form
    that can be written."""
    check_headers(request)
    url = urlsplit(request.url)
    assert (url.scheme, url.hostname, url.fragment) == ("http", host, ""), request.url
    assert not re.search(r"[\s#\x00-\x1f]", url.query), request.url
    query = merged.get("extra_query")
    parsed = YURL(request.url)
    if query:
        assert set(parsed.query.items()) <= set(dict(query).items()), request.url
        sent = {**parsed.query, **(request.params or {})}
        assert dict(query).items() <= sent.items(), (request.url, sent)
    else:
        assert not parsed.raw_query_string, request.url
    assert request.params is None or all(
        isinstance(k, str) and isinstance(v, str) for k, v in request.params.items()
    )
    backend.path(method, merged, request)
    if request.content is not None:
        strict_json(request.content)
    if request.data is not None:
        check_form(request.data)


def host_of(base: Any) -> str | None:
    """The host a base URL names (None: no URL, as a bad one the client must have refused)."""
    if not isinstance(base, str):
        return None
    try:
        return urlsplit(base if "://" in base else f"http://{base}").hostname
    except ValueError:
        return None


def _snapshot(*values: Any) -> str | None:
    """The arguments as text, to see that a call leaves them as they were (None: too deep)."""
    try:
        return repr(values)
    except RecursionError:
        return None


async def finish(result: Any) -> Any:
    """Await a call's result, or read its stream to the end (its items)."""
    if hasattr(result, "__aiter__"):
        async with result as stream:
            return [item async for item in stream]
    return await result


def _ran_out(kwargs: Mapping[str, Any], elapsed: float) -> bool:
    """A timeout or deadline that was a positive number of seconds and has passed."""
    limits = [kwargs.get("timeout"), kwargs.get("deadline")]
    return any(
        isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= elapsed for t in limits
    )


def outcome(
    backend: Backend,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    client: Mapping[str, Any] | None = None,
    own: Mapping[str, Any] | None = None,
    validate: bool = True,
    empty: bool = False,
) -> list[Request]:
    """Make the client (``client`` settings over the entry's, or over ``own``) and call
    ``method``: a
    ConfigurationError must come before anything was sent; a typed timeout only once a limit
    the call was given has passed; otherwise the call must return normally, having sent requests
    that pass ``check_request`` (``empty``: or none, returning []) and, where ``validate``, the
    backend's schema; and the caller's arguments must be as they were. Returns the requests."""
    settings = {**(backend.settings if own is None else own), **(client or {})}
    target = settings.get("root_url") or settings.get("base_url") or backend.cls.default_base_url

    async def run() -> list[Request]:
        transport = MockTransport(backend.reply)
        made = None
        start = time.monotonic()
        try:
            try:
                made = backend.make(transport, own=own, **(client or {}))
                result = await finish(getattr(made, method)(*args, **kwargs))
            except asyncllm.ConfigurationError:
                assert not transport.requests, "refused after a request was sent"
                return []
            except asyncllm.APITimeoutError:
                assert _ran_out(kwargs, time.monotonic() - start), "timed out"
                return list(transport.requests)
            except asyncllm.StructuredOutputError:
                # The entry's fixed answer does not follow the schema asked: the typed outcome
                # of a call that was sent and answered.
                assert kwargs.get("response_format") is not None, "not asked for a format"
                assert transport.requests, "a format error without a request"
                return list(transport.requests)
            assert transport.requests or (empty and result == []), "returned unsent"
            return list(transport.requests)
        finally:
            if made is not None:
                await made.aclose()

    before = _snapshot(args, kwargs)
    sent = asyncio.run(asyncio.wait_for(run(), HANG))
    assert _snapshot(args, kwargs) == before, "the call changed the caller's arguments"
    merged = {**settings, **kwargs}
    for request in sent:
        host = host_of(target)
        assert host is not None, target
        check_request(backend, method, merged, request, host)
        if validate and backend.schema is not None and request.content is not None:
            backend.schema(method, urlsplit(request.url).path, strict_json(request.content))
    return sent


def refused(
    backend: Backend,
    method: str,
    *args: Any,
    client: Mapping[str, Any] | None = None,
    match: str | None = None,
    **kwargs: Any,
) -> None:
    """The call (or making its client) raises ConfigurationError (matching ``match``) and sends
    nothing."""

    async def run() -> None:
        transport = MockTransport(backend.reply)
        made = None
        try:
            with pytest.raises(asyncllm.ConfigurationError, match=match):
                made = backend.make(transport, **(client or {}))
                await finish(getattr(made, method)(*args, **kwargs))
            assert not transport.requests
        finally:
            if made is not None:
                await made.aclose()

    asyncio.run(asyncio.wait_for(run(), HANG))


# -- what a hostile answer must give ---------------------------------------------------------------


async def expect_typed(call: Any, check: Callable[[Any], bool]) -> Any:
    """``call`` returns what ``check`` accepts, or raises a typed APIError with a request ID and
    a bounded body excerpt (returned); anything else (a builtin exception, a hang) escapes and
    fails the test."""
    try:
        result = await asyncio.wait_for(call, HANG)
    except asyncllm.APIError as exc:
        assert exc.request_id is not None, f"{type(exc).__name__} has no request_id: {exc}"
        assert exc.body is None or len(exc.body) <= BODY_EXCERPT_CHARS + 1
        return exc
    assert check(result), repr(result)[:300]
    return result


async def consume(call: Call, client: Any) -> Any:
    """The call's result (for a stream: its items, each checked)."""
    if not call.stream and not call.events:
        return await call.invoke(client)
    async with call.invoke(client) as stream:
        items = [item async for item in stream]
    assert all(call.check(item) for item in items), items
    return items


async def read_async(
    backend: Backend, call: Call, handler: Callable[[Request], MockResponse]
) -> Any:
    """``call`` on a client whose server answers with ``handler``: its result or its APIError."""
    made = backend.make(MockTransport(handler), responses=True, **call.client)
    try:
        streams = call.stream or bool(call.events)
        return await expect_typed(consume(call, made), (lambda r: True) if streams else call.check)
    finally:
        await made.aclose()


def read(backend: Backend, call: Call, handler: Callable[[Request], MockResponse]) -> Any:
    return asyncio.run(read_async(backend, call, handler))


def is_a(kind: type) -> Callable[[Any], bool]:
    return lambda r: isinstance(r, kind)


def list_of(kind: type) -> Callable[[Any], bool]:
    return lambda r: isinstance(r, list) and all(isinstance(i, kind) for i in r)


def rows_of(kind: type) -> Callable[[Any], bool]:
    return lambda r: isinstance(r, list) and all(list_of(kind)(row) for row in r)


def floats(rows: Any, depth: int = 2) -> bool:
    if depth == 0:
        return isinstance(rows, float)
    return isinstance(rows, list) and all(floats(r, depth - 1) for r in rows)


def is_none(result: Any) -> bool:
    return result is None


def run_examples(count: int, key: str, test: Callable[[st.DataObject], None]) -> None:
    """``test`` on ``count`` Hypothesis examples: for one parametrized test whose cases keep
    example counts of their own (each registry entry's). ``key`` gives each case its own
    entry in the example database, as the pytest plugin does for a parametrized @given test."""

    @settings(FUZZ_SETTINGS, max_examples=count)
    @given(data=st.data())
    def examples(data: st.DataObject) -> None:
        test(data)

    examples.hypothesis.inner_test._hypothesis_internal_add_digest = key.encode()  # type: ignore[attr-defined]
    examples()
