"""The shared listing helper on each vendor's wire: every page is its own call, the cursor goes
back under the vendor's name for it, and a bad page size is refused before anything is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import asyncllm
from asyncllm.testing import FakeServer

PARAMS = {"model": "fake-chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


async def openai_batches(client: Any, n: int) -> list[str]:
    made = await client.files.create(b"", purpose="batch", filename="empty.jsonl")
    return [(await client.batches.create(input_file_id=made.id)).id for _ in range(n)]


async def claude_batches(client: Any, n: int) -> list[str]:
    requests = [{"custom_id": "a", "params": PARAMS}]
    return [(await client.batches.create(requests)).id for _ in range(n)]


async def gemini_batches(client: Any, n: int) -> list[str]:
    requests = [{"request": {"contents": [{"parts": [{"text": "hi"}]}]}, "metadata": {"key": "a"}}]
    return [(await client.batches.create(requests)).id for _ in range(n)]


VENDORS: list[
    tuple[str, Callable[[str], Any], str, str, Callable[[Any, int], Awaitable[list[str]]]]
] = [
    (
        "openai",
        lambda url: asyncllm.OpenAI(api_key="k", base_url=url + "/v1", model="fake-chat"),
        "limit",
        "after",
        openai_batches,
    ),
    (
        "anthropic",
        lambda url: asyncllm.Claude(api_key="k", base_url=url, model="fake-chat"),
        "limit",
        "after_id",
        claude_batches,
    ),
    (
        "gemini",
        lambda url: asyncllm.Gemini(api_key="k", base_url=url + "/v1beta", model="fake-chat"),
        "page_size",
        "pageToken",
        gemini_batches,
    ),
]


@pytest.fixture(params=VENDORS, ids=[v[0] for v in VENDORS])
async def vendor(request: Any) -> AsyncIterator[tuple[FakeServer, Any, str, str, Any]]:
    protocol, make, size, cursor, create = request.param
    async with FakeServer(protocol) as server, make(server.url()) as client:
        yield server, client, size, cursor, create


async def test_every_page_is_read_newest_first(vendor: Any) -> None:
    server, client, size, cursor, create = vendor
    made = await create(client, 3)
    before = server.request_count
    listed = [b.id async for b in client.batches.list(**{size: 1})]
    assert listed == made[::-1]
    pages = list(server.requests)[before:]
    assert len(pages) == 3  # one call a page
    assert cursor not in pages[0].query
    assert all(p.query.get(cursor) for p in pages[1:])


@pytest.mark.parametrize("bad", [0, -1, True, "2"])
async def test_a_bad_page_size_is_refused_unsent(vendor: Any, bad: Any) -> None:
    server, client, size, _, _ = vendor
    before = server.request_count
    with pytest.raises(asyncllm.ConfigurationError):
        client.batches.list(**{size: bad})
    assert server.request_count == before
