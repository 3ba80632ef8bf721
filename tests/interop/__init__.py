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
VENDOR_ENV_PREFIXES = (
    "OPENAI_",
    "ANTHROPIC_",
    "AZURE_OPENAI_",
    "OLLAMA_",
    "GOOGLE_",
    "GEMINI_",
    "HF_",
    "HUGGINGFACE_",
    "HUGGING_FACE_",
)
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


HERE = os.path.dirname(os.path.abspath(__file__))


def group_python(group: str) -> str:
    """The interpreter of an interop group's pinned environment (``tests/interop/envs.py``),
    built on first use. A failed build skips locally and fails under ``CI=true``."""
    from tests.interop.envs import EnvError, python_for

    try:
        return str(python_for(group))
    except EnvError as exc:
        if in_ci():
            pytest.fail(f"CI=true, but {exc}", pytrace=False)
        pytest.skip(str(exc))


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment for a process of another group: this one's, without vendor settings,
    with ``NO_PROXY`` covering loopback, and with ``extra`` on top."""
    vendor = set(vendor_environment())
    env = {k: v for k, v in os.environ.items() if k not in vendor}
    env.pop("PYTHONPATH", None)
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}, **extra)
    return env


async def run_in_group(
    group: str, script: str, *args: str, timeout: float = 120.0, **env: str
) -> str:
    """Run ``tests/interop/<script>`` with ``group``'s interpreter and return its standard output.

    It runs as a subprocess while this event loop keeps serving (the fakes it talks to live on
    this loop). A non-zero exit fails the test with the script's output."""
    import asyncio

    python = await asyncio.to_thread(group_python, group)  # a first build takes a while
    path = os.path.join(HERE, script)
    proc = await asyncio.create_subprocess_exec(
        python,
        path,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_environment(**env),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"{script} ({group}) did not finish within {timeout} s", pytrace=False)
    text = out.decode(errors="replace")
    if proc.returncode:
        pytest.fail(f"{script} ({group}) exited with {proc.returncode}:\n{text}", pytrace=False)
    return text
