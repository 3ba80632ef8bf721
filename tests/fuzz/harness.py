"""Shared fuzzing machinery: what a public method takes, read from its signature and from the
``**options`` TypedDict it unpacks, and the check that a keyword it does not declare is a
``TypeError`` before anything is sent."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncllm
from asyncllm._options import CallOptions, HttpOptions

# The clients' retry settings: no retry unless a call asks for one (the input fuzzing draws
# max_retries), and then no backoff sleep, so that a retried call never waits for real.
NO_WAIT = asyncllm.RetryConfig(max_retries=0, initial_delay=0.0, max_delay=0.0)


@dataclass(frozen=True)
class Keywords:
    """A public method's parameters: those of its signature (``required``: without a default)
    and the keys of its ``**options`` TypedDict, with their types."""

    named: tuple[inspect.Parameter, ...]
    options: dict[str, Any]

    @property
    def required(self) -> list[str]:
        return [p.name for p in self.named if p.default is p.empty]

    @property
    def optional(self) -> list[str]:
        return [p.name for p in self.named if p.default is not p.empty] + list(self.options)

    @property
    def all(self) -> list[str]:
        return [p.name for p in self.named] + list(self.options)


def _hints(obj: Any, **extra: Any) -> dict[str, Any]:
    """``obj``'s type hints, or (where one cannot be evaluated, as OPEA's ``FileSpec`` names
    ``"os.PathLike[str]"`` in a module that has no ``os``) its annotations as written: only the
    names are needed here, and the ``options`` one is evaluated on its own."""
    try:
        return typing.get_type_hints(obj, include_extras=True, **extra)
    except NameError:
        if isinstance(obj, type):
            merged: dict[str, Any] = {}
            for klass in reversed(obj.__mro__):
                merged.update(getattr(klass, "__annotations__", {}))
            return merged
        return dict(obj.__annotations__)


def options_of(fn: Callable[..., Any]) -> type | None:
    """The TypedDict of ``fn``'s ``**options: Unpack[X]``, or None when it takes none."""
    unpacked = _hints(fn).get("options")
    if unpacked is None:
        return None
    if isinstance(unpacked, str):  # left unevaluated by _hints
        unpacked = eval(unpacked, fn.__globals__)  # the package's own annotation
    (declaration,) = typing.get_args(unpacked)
    return declaration  # type: ignore[no-any-return]


def keywords(cls: type, name: str) -> Keywords:
    fn = getattr(cls, name)
    params = list(inspect.signature(fn).parameters.values())[1:]
    named = tuple(p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    declaration = options_of(fn)
    options: dict[str, Any] = {}
    if declaration is not None:
        keys = declaration.__required_keys__ | declaration.__optional_keys__  # type: ignore[attr-defined]
        types = _hints(declaration)
        options = {k: types[k] for k in sorted(keys)}
    return Keywords(named, options)


CALL_OPTIONS = frozenset(CallOptions.__optional_keys__)  # type: ignore[attr-defined]
HTTP_OPTIONS = frozenset(HttpOptions.__optional_keys__)  # type: ignore[attr-defined]


def public_methods(cls: type) -> list[str]:
    return sorted(
        n
        for n, v in inspect.getmembers(cls)
        if not n.startswith("_") and inspect.isfunction(v) and n not in ("aclose", "with_options")
    )


# Misspellings of the call options and of common parameters, and names no method takes.
UNDECLARED = [
    "priorty", "timout", "dead_line", "max_retry", "extra_header", "extra_querys", "extrabody",
    "temprature", "max_token", "modle", "stream_options_", "x", "_private", "options",
]  # fmt: skip


def undeclared(kw: Keywords) -> list[str]:
    declared = set(kw.all)
    return [n for n in UNDECLARED if n not in declared]


def opea_or_skip() -> Any:
    """``asyncllm.backends.opea``, or (while it does not import: its conversion to the new API is
    on another branch) a stand-in whose every use skips the test that makes it."""
    try:
        from asyncllm.backends import opea
    except ImportError as exc:
        reason = f"asyncllm.backends.opea does not import on this tree: {exc}"

        class Unavailable:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                import pytest

                pytest.skip(reason)

        import types

        stand_in = types.SimpleNamespace(unavailable=reason)
        for name in (
            "OPEA",
            "GuardrailResult",
            "HealthResult",
            "IngestResult",
            "RerankResult",
            "RetrievalResult",
        ):
            setattr(stand_in, name, type(name, (Unavailable,), {}))
        return stand_in
    return opea
