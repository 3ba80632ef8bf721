"""Interop tests see no vendor settings from the environment: no key, no base URL, no proxy.
Under ``CI=true`` none of them may skip: a skipped interop test fails the run, so that CI can
never pass by leaving out an SDK or a server it could not install or start."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.interop import in_ci, vendor_environment


@pytest.fixture(autouse=True)
def _no_vendor_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in vendor_environment():
        monkeypatch.delenv(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true, but this interop test skipped: {report.longrepr}"
