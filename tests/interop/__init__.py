"""Our fakes, tested with SDKs we did not write (the vendors' own Python SDKs).

The SDKs are in the ``dev`` extra. Locally a missing SDK skips its module; under ``CI=true`` it
fails the run, so CI can never pass by silently skipping the interop tests.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import pytest

# What an SDK would read from the environment (a key, a base URL, custom headers, a profile,
# retries, proxies): every variable with these prefixes, and these names, is cleared for each
# interop test, so that only what a test passes is used.
VENDOR_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "AZURE_OPENAI_", "OLLAMA_", "GOOGLE_", "GEMINI_")
VENDOR_ENV = (
    "CLOUDSDK_CORE_PROJECT",
    "GCLOUD_PROJECT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def vendor_environment() -> list[str]:
    """The names of the variables to clear that are set now."""
    return [
        name for name in os.environ if name.startswith(VENDOR_ENV_PREFIXES) or name in VENDOR_ENV
    ]


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


# What the chat SDK tests send: a fake model, a user turn, and a tool in OpenAI's form.
MODEL = "fake-chat"
USER: Any = [{"role": "user", "content": "hello there"}]
WEATHER_PARAMETERS: Any = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}
