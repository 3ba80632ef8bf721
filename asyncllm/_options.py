"""The options every call and every client take, declared once.

Per-call options come in three layers, each a ``TypedDict`` that public methods take as
``**options: Unpack[...]``, so that a misspelt option fails ``mypy --strict`` in the caller's code:

- ``CallOptions`` on every call, streams included: ``priority``, ``timeout``, ``deadline``,
  ``max_retries``. The engine reads them; they mean the same on S3 as on a chat backend.
- ``HttpOptions`` on every HTTP call: ``extra_headers`` and ``extra_query`` as well.
- ``BodyOptions`` on every call that sends a JSON body: ``extra_body`` as well.

At run time the engine checks the keys once per call against a frozen set (``check_keys``), so a
misspelt option is a ``TypeError`` before anything is sent, at the cost of one set comparison.
A method with parameters of its own declares them in a ``TypedDict`` that extends one of these;
a call and its streaming twin share that one declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from typing_extensions import TypedDict

from ._config import BreakerConfig, RateLimits, RetryConfig
from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    import os
    import ssl

    import aiohttp

    from ._engine._dispatcher import Dispatcher
    from ._http._transport import Transport


class CallOptions(TypedDict, total=False):
    """What every call takes. ``priority``: lower runs first (``Priority.HIGH`` = 0).
    ``timeout``: seconds per attempt (``math.inf`` for none). ``deadline``: seconds for the whole
    call, queueing and retries included. ``max_retries``: this call's retry count, in place of
    the client's."""

    priority: int
    timeout: float | None
    deadline: float | None
    max_retries: int


class HttpOptions(CallOptions, total=False):
    """``CallOptions`` plus ``extra_headers`` (sent on this call, after the client's) and
    ``extra_query`` (query parameters added to the URL)."""

    extra_headers: Mapping[str, str]
    extra_query: Mapping[str, str]


class BodyOptions(HttpOptions, total=False):
    """``HttpOptions`` plus ``extra_body``: merged into the JSON body last, dict into dict (a
    nested mapping merges into the one the SDK built; lists and scalars replace)."""

    extra_body: Mapping[str, Any]


class EngineClientOptions(TypedDict, total=False):
    """What every client's constructor takes, HTTP or not.

    ``name``: the backend's name in the dispatcher's stats (a taken name gets a suffix).
    ``model``: the model of calls that name none. ``timeout``, ``max_retries``: the per-call
    defaults. ``retry``, ``breaker``: the backoff and breaker settings. ``max_concurrent_requests``,
    ``queue_size``, ``queue_timeout``: the backend's slots and its queue. ``rate_limits``: the
    request and token budgets calls wait for instead of collecting 429s. ``dispatcher``: run on
    this dispatcher instead of the running loop's shared one. ``close_timeout``: how long
    ``aclose()`` lets running calls finish.
    """

    name: str | None
    model: str | None
    timeout: float | None
    max_retries: int | None
    retry: RetryConfig | None
    breaker: BreakerConfig | None
    max_concurrent_requests: int
    queue_size: int
    queue_timeout: float | None
    rate_limits: RateLimits | None
    dispatcher: Dispatcher | None
    close_timeout: float


class ClientOptions(EngineClientOptions, total=False):
    """``EngineClientOptions`` plus what an HTTP client takes: ``api_key`` and ``base_url`` (each
    backend names the environment variables it falls back to; ``user:password@`` in the URL
    becomes Basic auth and is never shown), ``connect_timeout``, ``default_headers`` (sent on
    every call; they may replace ``User-Agent``), ``transport`` (say,
    ``asyncllm.testing.MockTransport``; the client then does not close it),
    ``max_response_bytes`` and ``max_line_bytes`` (limits on what a server may send).

    Settings of the built-in aiohttp transport (refused together with ``transport``):
    ``ssl`` (an ``ssl.SSLContext``, a CA bundle path, or ``False`` for no verification, logged
    as a warning), ``proxy`` (a proxy URL for every request), ``trust_env`` (default True: without
    ``proxy``, use ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY``; loopback targets
    never go through them; ``~/.netrc`` is never read), ``max_connections`` and
    ``max_connections_per_host`` (pool limits; default none), ``session`` (an
    ``aiohttp.ClientSession`` to send through, not closed by the client) or ``connector`` (an
    ``aiohttp.BaseConnector`` for the client's session, not closed by the client)."""

    api_key: str | SecretStr | None
    base_url: str | None
    connect_timeout: float
    default_headers: Mapping[str, str] | None
    transport: Transport | None
    max_response_bytes: int
    max_line_bytes: int
    ssl: ssl.SSLContext | str | os.PathLike[str] | bool | None
    proxy: str | None
    trust_env: bool
    max_connections: int | None
    max_connections_per_host: int | None
    session: aiohttp.ClientSession | None
    connector: aiohttp.BaseConnector | None


# The ClientOptions keys that configure the built-in transport.
TRANSPORT_KEYS = frozenset(
    {
        "connect_timeout",
        "ssl",
        "proxy",
        "trust_env",
        "max_connections",
        "max_connections_per_host",
        "session",
        "connector",
    }
)


def keys_of(*declarations: type) -> frozenset[str]:
    """Every key the given ``TypedDict`` classes declare."""
    keys: set[str] = set()
    for declaration in declarations:
        keys |= declaration.__required_keys__ | declaration.__optional_keys__  # type: ignore[attr-defined]
    return frozenset(keys)


CALL_KEYS = keys_of(CallOptions)
HTTP_KEYS = keys_of(HttpOptions)
BODY_KEYS = keys_of(BodyOptions)
ENGINE_CLIENT_KEYS = keys_of(EngineClientOptions)
CLIENT_KEYS = keys_of(ClientOptions)


def check_keys(options: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Raise the ``TypeError`` Python raises for an unknown keyword argument; ``n`` where a call
    cannot give several choices (Claude, Ollama, a Gemini stream) is a ``ConfigurationError``
    that says so, since the same call takes it on other backends."""
    if not options.keys() <= allowed:
        unknown = sorted(options.keys() - allowed)
        if "n" in unknown:
            raise ConfigurationError(f"{where}() gives one choice here: it takes no n")
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")


def merge_body(body: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` merged into ``body``: a mapping into the mapping under the same key (copied, so a
    caller's object is never changed), anything else replacing what is there."""
    for key, value in extra.items():
        current = body.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            body[key] = merge_body(dict(current), value)
        else:
            body[key] = value
    return body
