from __future__ import annotations

import subprocess
import sys

import asyncllm


def test_all_is_sorted_and_every_name_resolves() -> None:
    # ruff's isort-style order: CONSTANT-like names, then Classes, then functions.
    assert asyncllm.__all__ == sorted(
        asyncllm.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    for name in asyncllm.__all__:
        assert getattr(asyncllm, name) is not None, name
        assert not name.startswith("_")


def test_anthropic_is_claude() -> None:
    assert asyncllm.Anthropic is asyncllm.Claude


def test_import_is_lazy() -> None:
    code = (
        "import sys, asyncllm; "
        "loaded = [m for m in sys.modules if m.startswith('asyncllm.backends.')]; "
        "print(','.join(sorted(loaded))); "
        "print('aiobotocore' in sys.modules, 'numpy' in sys.modules, 'yaml' in sys.modules); "
        "print([m for m in ('opentelemetry', 'starlette', 'fastapi') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == ""
    assert lines[1] == "False False False"
    assert lines[2] == "[]"  # the integrations load only when used


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError):
        asyncllm.NoSuchBackend  # noqa: B018
