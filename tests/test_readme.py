"""The README's structured-output and reasoning table, and its tools table, say what the chat
contract tests prove: each row is read and checked against its backend's contract hooks
(tests/chat_contract.py), so the tables cannot drift from what the fakes and clients do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import asyncllm
from tests import (
    test_claude,
    test_gemini,
    test_groq,
    test_ollama,
    test_opea,
    test_openai,
    test_ovms,
    test_tgi,
    test_vllm,
)
from tests.chat_contract import ChatContract

README = Path(__file__).resolve().parents[1] / "README.md"
# The modules, not their classes: a contract class imported here would be collected again.
CONTRACTS: dict[str, type[ChatContract]] = {
    "OpenAI": test_openai.TestOpenAIContract,
    "Groq": test_groq.TestGroqContract,
    "Claude": test_claude.TestClaudeContract,
    "Gemini": test_gemini.TestGeminiContract,
    "Ollama": test_ollama.TestOllamaContract,
    "TGI": test_tgi.TestTGIContract,
    "VLLM": test_vllm.TestVLLMContract,
    "OVMS": test_ovms.TestOVMSContract,
    "OPEA": test_opea.TestOPEAContract,
}


def feature_rows(marker_text: str = "<!-- features:") -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    marker = text.index(marker_text)
    rows: dict[str, list[str]] = {}
    for line in text[marker:].splitlines()[3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.match(r"`(\w+)`", cells[0])
        assert name is not None, line
        rows[name.group(1)] = cells[1:]
    return rows


def test_every_chat_backend_has_a_row() -> None:
    assert list(feature_rows()) == list(CONTRACTS)
    assert list(feature_rows("<!-- tools:")) == list(CONTRACTS)


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_the_tools_row_says_what_the_contract_proves(name: str) -> None:
    strict, builtin = feature_rows("<!-- tools:")[name]
    hooks: Any = CONTRACTS[name]
    assert (strict == "refused") is (not hooks.strict_tools)
    assert (builtin == "none") is (hooks.builtin_tool is None)
    if hooks.builtin_tool is not None:  # the row names the kind of tool the contract offers
        kind = asyncllm.Tool.coerce(hooks.builtin_tool).kind
        assert kind in builtin or f'"{kind}"' in builtin, (kind, builtin)


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_the_row_says_what_the_contract_proves(name: str) -> None:
    sent_as, open_maps, refusals, reasoning, sent_back = feature_rows()[name]
    hooks: Any = CONTRACTS[name]
    assert ("JSON mode" in sent_as) is (not hooks.structured)
    assert open_maps == ("refused" if hooks.open_maps_refused else "sent")
    assert (refusals == "`r.refusal`") is (hooks.refusal_prompt is not None)
    if hooks.reasoning_options is None:
        assert reasoning == "not returned"
    else:
        # The option the contract asks reasoning with is the one the row names.
        options = hooks.reasoning_options.get("extra_body", hooks.reasoning_options)
        assert any(key in reasoning for key in options), (reasoning, options)
    assert (sent_back != "no") is hooks.signed_history
