"""A pytest plugin (loaded through the ``pytest11`` entry point): the ``asyncllm_server`` fixture,
an embedded OpenAI-protocol server on a free loopback port, started and stopped per test."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def asyncllm_server() -> AsyncIterator[object]:
        from . import FakeServer

        async with FakeServer("openai") as server:
            yield server
