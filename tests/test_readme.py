"""The README's feature tables say what the chat contract tests prove: each row is read and
checked against its backend's contract hooks (tests/chat_contract.py), so the tables cannot
drift from what the fakes and clients do."""

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


def feature_rows(table: str = "features") -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    marker = text.index(f"<!-- {table}:")
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
    assert list(feature_rows("tools")) == list(CONTRACTS)


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_the_tools_row_says_what_the_contract_proves(name: str) -> None:
    strict, builtin = feature_rows("tools")[name]
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


class _Path(dict[str, Any]):
    """A body that records the keys a wire reader looks up: where it reads the value from."""

    def __init__(self, path: list[str]) -> None:
        super().__init__()
        self.path = path

    def __getitem__(self, key: str) -> Any:
        self.path.append(key)
        return self


def _where(read: Any) -> str:
    path: list[str] = []
    read(_Path(path))
    return ".".join(path)


def test_every_chat_backend_has_a_parameter_row() -> None:
    assert list(feature_rows("parameters")) == list(CONTRACTS)


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_the_parameter_row_says_what_the_contract_proves(name: str) -> None:
    max_tokens, max_completion, refused, logprobs, images, documents = feature_rows("parameters")[
        name
    ]
    hooks: Any = CONTRACTS[name]
    wire, media = hooks.wire, hooks.media
    assert max_tokens == f"`{_where(wire['max_tokens'])}`"
    assert max_completion == f"`{_where(wire['max_completion_tokens'])}`"
    named = re.findall(r"`(\w+)`", refused) if refused != "none" else []
    assert sorted(named) == sorted(k for k, read in wire.items() if read is None)
    if wire["logprobs"] is None:
        assert logprobs == "no"
    else:
        assert logprobs == ("calls and streams" if hooks.stream_logprobs else "calls only")
    assert media["image_data"] is not None
    assert images == ("data: URLs only" if media["image_url"] is None else "data: and http(s) URLs")
    kinds = {"file_data": "inline", "file_id": "file id", "file_url": "URL"}
    taken = [word for kind, word in kinds.items() if media[kind] is not None]
    assert documents == (", ".join(taken) or "no")


def test_every_chat_backend_has_a_streams_row() -> None:
    assert list(feature_rows("streams")) == list(CONTRACTS)


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_the_streams_row_says_what_the_contract_proves(name: str) -> None:
    final, streamed, chat, cached, reasoning, http = feature_rows("streams")[name]
    hooks: Any = CONTRACTS[name]
    assert final == ("yes" if hooks.streamed_tool_finish else "yes (tool calls: no finish reason)")
    assert (streamed == "yes") is hooks.streamed_choices
    assert (streamed == "`ConfigurationError`") is (not hooks.streamed_choices)
    assert chat.startswith("yes") is hooks.chat_choices
    assert (chat == "`ConfigurationError`") is (not hooks.chat_choices)
    # "yes" where the contract's fake reports the count; "where reported" / "no" otherwise.
    assert cached.startswith("yes") is ("cached_tokens" in hooks.usage_counts)
    assert reasoning.startswith("yes") is ("reasoning_tokens" in hooks.usage_counts)
    assert http == "yes"
