"""``asyncllm._models``: the checks of the newer chat parameters (``modern_params``), from a
table; where each backend writes them is the chat contract's part."""

from __future__ import annotations

import re
from typing import Any

import pytest

import asyncllm
from asyncllm._models import MODERN_KEYS, modern_params, token_logprobs


def test_the_keys_are_those_declared() -> None:
    assert frozenset(asyncllm.ModernParams.__optional_keys__) == MODERN_KEYS


def test_given_values_come_back_checked_and_none_means_not_given() -> None:
    params = {
        "max_completion_tokens": 9,
        "parallel_tool_calls": False,
        "logprobs": True,
        "top_logprobs": 0,
        "service_tier": "flex",
        "store": False,
        "metadata": {"a": "b"},
        "prompt_cache_key": "k",
        "prompt_cache_key_typo": 1,  # not a ModernParams key: not this check's business
        "temperature": 0.5,
    }
    out = modern_params({**params, "store": None}, frozenset(), "b")
    assert out == {k: params[k] for k in MODERN_KEYS if k != "store"}
    assert out["metadata"] is not params["metadata"]  # a copy: the caller's is never changed


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"max_completion_tokens": 0}, "max_completion_tokens must be >= 1"),
        ({"max_completion_tokens": True}, "max_completion_tokens must be an int"),
        ({"max_completion_tokens": 5, "max_tokens": 5}, "give max_tokens or max_completion_tokens, not both"),
        ({"parallel_tool_calls": 0}, "parallel_tool_calls must be a bool"),
        ({"logprobs": "yes"}, "logprobs must be a bool"),
        ({"top_logprobs": 2}, "top_logprobs needs logprobs=True"),
        ({"top_logprobs": 2, "logprobs": False}, "top_logprobs needs logprobs=True"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs must be <= 20"),
        ({"top_logprobs": -1, "logprobs": True}, "top_logprobs must be >= 0"),
        ({"service_tier": ""}, "service_tier"),
        ({"store": "true"}, "store must be a bool"),
        ({"metadata": {"a": 1}}, "metadata must be a mapping of strings to strings"),
        ({"metadata": ["a"]}, "metadata must be a mapping of strings to strings"),
        ({"prompt_cache_key": 5}, "prompt_cache_key"),
        ({"store": True, "logprobs": True}, "b cannot take logprobs, store:"),
    ],
)  # fmt: skip
def test_bad_values_and_refused_parameters_raise(params: dict[str, Any], says: str) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=re.escape(says)):
        modern_params(
            params, frozenset({"store", "logprobs"}) if "b cannot" in says else frozenset(), "b"
        )


def test_token_logprobs_are_read_in_openais_shape() -> None:
    tokens = token_logprobs(
        [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": [{"token": "a", "logprob": -0.5}]}]
    )  # fmt: skip
    assert tokens is not None
    assert (tokens[0].token, tokens[0].logprob, tokens[0].bytes) == ("a", -0.5, [97])
    assert tokens[0].top_logprobs == [asyncllm.TopLogprob(token="a", logprob=-0.5)]
    assert token_logprobs(None) is None
    with pytest.raises(ValueError, match="logprob"):
        token_logprobs([{"token": "a"}])
