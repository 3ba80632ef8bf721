"""Every HTTP call of ``ovmsclient`` (OpenVINO Model Server's own client) against the OVMS fake.

Run by tests/interop/test_ovmsclient_sdk.py in the ``ovmsclient`` group's environment
(tests/interop/envs/ovmsclient.txt): ``python ovmsclient_calls.py 127.0.0.1:<port>``. Prints one
line per call that passed; any mismatch raises and exits non-zero.

ovmsclient speaks TF-Serving's REST API under ``/v1``: it always names a version, 0 when none is
given (OVMS's default version), and sends ``predict`` in the columnar form (``{"inputs": {...}}``),
bytes as ``{"b64": ...}``. The fake's ``fake-model`` answers each named input as an output of the
same name: numbers doubled, strings and bytes reversed. One output comes back as the value itself
(``"outputs": [...]``), several as an object by name, as TF-Serving writes them; bytes come back
as ``{"b64": ...}`` only for outputs whose name ends in ``_bytes``.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import numpy as np
from ovmsclient import make_http_client
from ovmsclient.tfs_compat.base.errors import InvalidInputError, ModelNotFoundError

MODEL = "fake-model"
AVAILABLE = {"state": "AVAILABLE", "error_code": 0, "error_message": ""}


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def same(got: Any, want: Any, what: str) -> None:
    expect(isinstance(got, np.ndarray), f"{what}: not an array: {got!r}")
    want = np.asarray(want)
    expect(got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}")
    expect(got.tolist() == want.tolist(), f"{what}: {got.tolist()!r} != {want.tolist()!r}")


def refused(call: Any, error: type[Exception], message: str, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except error as exc:
        expect(message in str(exc), f"{message!r} not in {exc}")
    else:
        raise AssertionError(f"expected {error.__name__}")


def status(client: Any) -> None:
    expect(client.get_model_status(MODEL) == {1: AVAILABLE, 2: AVAILABLE}, "all versions")
    expect(client.get_model_status(MODEL, model_version=1) == {1: AVAILABLE}, "version 1")
    expect(client.get_model_status(MODEL, model_version=2) == {2: AVAILABLE}, "version 2")
    refused(client.get_model_status, ModelNotFoundError, "name", "no-such-model")
    refused(client.get_model_status, ModelNotFoundError, "version", MODEL, model_version=5)
    print("get_model_status: all versions, one version, unknown model and version")


def metadata(client: Any) -> None:
    meta = client.get_model_metadata(MODEL)
    expect(meta["model_version"] == 2, f"the default version is the latest: {meta!r}")
    expect(meta["inputs"] == {"input": {"dtype": "DT_FLOAT", "shape": [-1, -1]}}, "inputs")
    expect(meta["outputs"] == {"output": {"dtype": "DT_FLOAT", "shape": [-1, -1]}}, "outputs")
    first = client.get_model_metadata(MODEL, model_version=1)
    expect(first["model_version"] == 1, f"version 1: {first!r}")
    refused(client.get_model_metadata, ModelNotFoundError, "name", "no-such-model")
    refused(client.get_model_metadata, ModelNotFoundError, "version", MODEL, model_version=9)
    print("get_model_metadata: default version, version 1, unknown model and version")


def predict_one_output(client: Any) -> None:
    x = np.array([[1.5, -2.0, 0.0], [4.0, 8.25, -0.5]], dtype=np.float32)
    out = client.predict({"input": x}, MODEL)
    # One output: the value itself, not an object keyed by a name.
    same(out, x * 2, "one float output")
    expect(out.dtype == np.float64, f"dtype {out.dtype}")
    ints = client.predict({"input": [[1, 2], [3, 4]]}, MODEL, model_version=1)
    same(ints, [[2, 4], [6, 8]], "one int output, version 1")
    expect(ints.dtype == np.int64, f"dtype {ints.dtype}")
    scalar = client.predict({"input": 21}, MODEL)  # a scalar is sent as a list of one
    same(scalar, [42], "a scalar")
    print("predict: one output (the value itself), floats and ints, version 1, a scalar")


def predict_many_outputs(client: Any) -> None:
    out = client.predict(
        {
            "a": np.array([1, 2, 3], dtype=np.int32),
            "b": np.array([[0.5], [1.25]], dtype=np.float64),
            "c": ["ab", "xyz"],
        },
        MODEL,
    )
    expect(isinstance(out, dict) and set(out) == {"a", "b", "c"}, f"outputs by name: {out!r}")
    same(out["a"], [2, 4, 6], "a")
    same(out["b"], [[1.0], [2.5]], "b")
    same(out["c"], ["ba", "zyx"], "c")
    print("predict: several outputs, by name")


def predict_bytes(client: Any) -> None:
    raw = [b"\x00\x01\xff", b"png!"]
    # Bytes go out as {"b64": ...}; the model reverses them; an output named *_bytes comes back
    # as {"b64": ...} too.
    out = client.predict({"image_bytes": raw}, MODEL)
    expect(out.shape == (2,), f"shape {out.shape}")
    got = [base64.b64decode(item["b64"]) for item in out.tolist()]
    expect(got == [b"\xff\x01\x00", b"!gnp"], f"decoded {got!r}")
    # The same bytes under any other name come back as text: TF-Serving writes the bytes as
    # they are (these are UTF-8).
    text = client.predict({"words": [b"hello", "wörld".encode()]}, MODEL)
    same(text, ["olleh", "dlröw"], "b64 in, text out")
    # A single bytes value is a list of one.
    one = client.predict({"blob_bytes": b"abc"}, MODEL)
    expect([base64.b64decode(i["b64"]) for i in one.tolist()] == [b"cba"], f"{one!r}")
    # Bytes in more than one dimension are sent as UTF-8 text, not b64.
    grid = client.predict({"g": np.array([[b"ab", b"cd"]])}, MODEL)
    same(grid, [["ba", "dc"]], "2-D bytes")
    print("predict: b64 bytes in, b64 out for *_bytes outputs, text otherwise")


def predict_errors(client: Any) -> None:
    x = {"input": [1.0]}
    refused(client.predict, ModelNotFoundError, "name", x, "no-such-model")
    refused(client.predict, ModelNotFoundError, "version", x, MODEL, model_version=3)
    # OVMS's TF-Serving API has no boolean tensors.
    refused(client.predict, InvalidInputError, "Not valid ndarray", {"flags": [True, False]}, MODEL)
    print("predict: unknown model and version, booleans refused")


def main(url: str) -> None:
    client = make_http_client(url)
    status(client)
    metadata(client)
    predict_one_output(client)
    predict_many_outputs(client)
    predict_bytes(client)
    predict_errors(client)
    print("all ovmsclient calls passed")


if __name__ == "__main__":
    main(sys.argv[1])
