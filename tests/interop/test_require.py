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


class _Report:
    def __init__(self, skipped: bool, **extra: object) -> None:
        self.skipped = skipped
        self.outcome = "skipped" if skipped else "passed"
        self.longrepr: object = ("f.py", 1, "Skipped: no SDK")
        self.__dict__.update(extra)


class _Outcome:
    def __init__(self, report: _Report) -> None:
        self.report = report

    def get_result(self) -> _Report:
        return self.report


def _through_hook(report: _Report) -> _Report:
    from tests.interop.conftest import pytest_runtest_makereport

    gen = pytest_runtest_makereport(None, None)  # type: ignore[arg-type]
    next(gen)
    with pytest.raises(StopIteration):
        gen.send(_Outcome(report))
    return report


def test_a_skipped_interop_test_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    report = _through_hook(_Report(True))
    assert report.outcome == "failed" and "CI=true" in str(report.longrepr)
    assert _through_hook(_Report(True, wasxfail="known")).outcome == "skipped"  # a strict xfail
    assert _through_hook(_Report(False)).outcome == "passed"
    monkeypatch.delenv("CI")
    assert _through_hook(_Report(True)).outcome == "skipped"  # locally it skips
