"""Interop tests see no vendor settings from the environment: no key, no base URL, no proxy."""

from __future__ import annotations

import pytest

from tests.interop import vendor_environment


@pytest.fixture(autouse=True)
def _no_vendor_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in vendor_environment():
        monkeypatch.delenv(name)
