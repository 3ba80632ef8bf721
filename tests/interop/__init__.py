"""Our fakes, tested with SDKs we did not write (the vendors' own Python SDKs).

The SDKs are in the ``dev`` extra. Locally a missing SDK skips its module; under ``CI=true`` it
fails the run, so CI can never pass by silently skipping the interop tests.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

# Every variable by which an SDK would pick up a key, a base URL or retry settings from the
# environment: cleared for each interop test, so only what a test passes is used.
VENDOR_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_WEBHOOK_SECRET",
    "OPENAI_LOG",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(module: str, minversion: str | None = None) -> ModuleType:
    """``pytest.importorskip(module)``, except that under ``CI=true`` a missing (or too old)
    module fails instead of skipping."""
    if not in_ci():
        return pytest.importorskip(module, minversion=minversion)
    try:
        return pytest.importorskip(module, minversion=minversion)
    except pytest.skip.Exception as exc:
        pytest.fail(f"CI=true, but {exc} (pip install -e '.[dev]')", pytrace=False)
