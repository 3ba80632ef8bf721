"""Shared test setup: a guard that fails any test reaching beyond loopback."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import settings

# The property tests draw the same examples on every run, so a CI run cannot fail on a case no
# earlier run saw. To hunt for new cases: HYPOTHESIS_PROFILE=explore pytest tests/fuzz
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# A real redis-server per session, for the shared budgets' tests (see tests/redis_fixtures.py).
pytest_plugins = ["tests.redis_fixtures"]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            raise RuntimeError(f"test tried to reach a non-loopback address: {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


def _aioresponses_compat() -> None:
    """aioresponses 0.7.9 builds ClientResponse without the ``stream_writer`` that aiohttp 3.14
    requires; give it a response class that supplies an empty one."""
    import inspect
    import types

    import aioresponses.core
    from aiohttp import ClientResponse

    if "stream_writer" not in inspect.signature(ClientResponse.__init__).parameters:
        return

    class CompatResponse(ClientResponse):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
            super().__init__(*args, **kwargs)

    aioresponses.core.ClientResponse = CompatResponse  # type: ignore[misc]


_aioresponses_compat()


# -- the server and client of a backend's test module ------------------------------------------
# A module that uses them names its fake protocols (``PROTOCOLS = ("ollama",)``) and how to make
# its client on that server (``def make_client(server): ...``); the client is closed afterwards.


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    from asyncllm.testing import FakeServer

    async with FakeServer(*request.module.PROTOCOLS) as server:
        yield server


@pytest.fixture
async def client(request: pytest.FixtureRequest, server: Any) -> AsyncIterator[Any]:
    client = request.module.make_client(server)
    try:
        yield client
    finally:
        await client.aclose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The interop tests (``tests/interop/``: vendors' SDKs and real servers, in their own
    environments and processes) run after the unit tests, so a unit failure shows first."""
    interop = os.sep + "interop" + os.sep
    items.sort(key=lambda item: interop in str(item.path))
