"""The README's table of platform APIs (files, batches, fine-tuning, audio, moderation) says
what each client has: each row is read and checked against the client's sub-clients, so the
table cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import asyncllm

README = Path(__file__).resolve().parents[1] / "README.md"
COLUMNS = ("files", "batches", "fine_tuning", "audio", "moderations")


def rows() -> dict[str, list[str]]:
    text = README.read_text()
    table = text.split("<!-- platform: checked against the clients by tests/test_platform.py -->")[
        1
    ]
    found: dict[str, list[str]] = {}
    for line in table.strip().splitlines()[2:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        found[re.sub(r"`", "", cells[0])] = cells[1:]
    return found


@pytest.mark.parametrize("name", ["OpenAI", "Claude", "Gemini", "Groq", "VLLM"])
def test_the_row_says_what_the_client_has(name: str) -> None:
    cells = rows()[name]
    client = getattr(asyncllm, name)(api_key="k", base_url="http://127.0.0.1:9/v1")
    for column, cell in zip(COLUMNS, cells, strict=True):
        assert hasattr(client, column) == (cell != "no"), (name, column, cell)
    if cells[3] != "no":
        assert hasattr(client.audio, "speech") == ("speech" in cells[3])
