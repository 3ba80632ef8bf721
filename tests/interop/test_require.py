"""The interop modules skip a missing SDK locally and fail under CI=true; no vendor setting from
the environment reaches a test."""

from __future__ import annotations

import os

import pytest

from tests.interop import require, vendor_environment

MISSING = "asyncllm_no_such_sdk"


def test_missing_sdk_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require(MISSING)


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_missing_sdk_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require(MISSING)


def test_too_old_sdk_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require("pytest", "999")


def test_present_module_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require("os") is os


def test_vendor_environment_is_cleared() -> None:
    assert vendor_environment() == []
    assert "OPENAI_API_KEY" not in os.environ and "ANTHROPIC_BASE_URL" not in os.environ
