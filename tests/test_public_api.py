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


def test_chat_client_leaves_platform_and_responses_unloaded() -> None:
    # The platform APIs and the Responses API load on first use, not with the client.
    code = (
        "import sys, asyncllm; c = asyncllm.OpenAI(api_key='x'); "
        "heavy = ('asyncllm._platform.openai', 'asyncllm._platform._files', "
        "'asyncllm._platform._batch', 'asyncllm._wire.responses'); "
        "print([m for m in heavy if m in sys.modules]); "
        "print(type(c.files).__name__, type(c.batches).__name__, type(c.responses).__name__, "
        "asyncllm.FileObject.__name__, asyncllm.ModelResponse.__name__); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "Files Batches Responses FileObject ModelResponse"
    assert lines[2] == (
        "['asyncllm._platform._batch', 'asyncllm._platform._files', "
        "'asyncllm._platform.openai', 'asyncllm._wire.responses']"
    )


def test_lazy_names_are_listed_and_typed() -> None:
    assert {"FileObject", "BatchJob", "run_batch_job", "ResponseStream"} <= set(dir(asyncllm))
    from asyncllm._platform._batch import run_batch_job
    from asyncllm._wire.responses import ResponseStream

    assert asyncllm.run_batch_job is run_batch_job
    assert asyncllm.ResponseStream is ResponseStream
