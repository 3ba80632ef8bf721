"""asyncllm._http._json must behave exactly as the stdlib json module does, only faster."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncllm._http import _json

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)


def stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@given(values)
def test_dumps_writes_what_the_stdlib_writes_and_refuses_what_it_refuses(value: Any) -> None:
    try:
        expected = stdlib_dumps(value)
    except ValueError:
        with pytest.raises(ValueError):
            _json.dumps(value)
        return
    assert _json.dumps(value) == expected


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", {"a": object()}, {"nan": math.nan}, [math.inf], {(1, 2): 3}],
)
def test_dumps_refuses_what_json_cannot_carry(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        _json.dumps(value)


def test_dumps_refuses_a_cycle_with_a_value_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError):
        _json.dumps(looped)


def test_dumps_without_the_c_encoder_is_the_stdlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_json, "_encoder", None)
    assert _json.dumps({"é": [1.5, None, "NaN"]}) == '{"é":[1.5,null,"NaN"]}'.encode()
    with pytest.raises(ValueError):
        _json.dumps([math.nan])


@given(values)
def test_loads_reads_what_the_stdlib_reads(value: Any) -> None:
    text = json.dumps(value)  # NaN and Infinity literals included, as json.loads accepts them
    expected = json.loads(text)
    got = _json.loads(text.encode())
    assert json.dumps(got) == json.dumps(expected)


def test_loads_takes_a_lone_surrogate_as_the_stdlib_does() -> None:
    assert _json.loads(b'{"t": "\\ud83d"}') == {"t": "\ud83d"}


@pytest.mark.parametrize("text", [b"", b"{", b"[1] x", b"\xff", b"{'a': 1}"])
def test_loads_raises_value_error_for_what_is_not_json(text: bytes) -> None:
    with pytest.raises(ValueError):
        _json.loads(text)


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_loads_turns_nesting_too_deep_into_a_value_error() -> None:
    with pytest.raises(ValueError):
        _json.loads(DEEP)


def test_excerpt_is_bounded_whatever_it_is_given() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert len(_json.excerpt(deep)) <= 2000
    assert _json.excerpt({"a": "x" * 5000}, 100) == '{"a": "' + "x" * 93


async def test_a_reply_nested_too_deeply_is_a_typed_error() -> None:
    import asyncllm
    from asyncllm.testing import MockResponse
    from tests.helpers import client

    replies = [MockResponse(200, content=DEEP), MockResponse(500, content=DEEP)]
    c = client(lambda r: replies.pop(0), max_retries=0)
    with pytest.raises(asyncllm.ResponseValidationError):
        await c.chat([{"role": "user", "content": "x"}], model="m")
    with pytest.raises(asyncllm.InternalServerError) as caught:
        await c.chat([{"role": "user", "content": "x"}], model="m")
    assert caught.value.status_code == 500
    await c.aclose()
