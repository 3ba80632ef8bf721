"""Every KServe v2 call of ``tritonclient.http.aio`` against the OVMS fake, checked strictly.

Run by tests/interop/test_triton_sdk.py in the ``triton`` group's environment
(tests/interop/envs/triton.txt): ``python triton_calls.py 127.0.0.1:<port>``. Prints one line per
call that passed; any mismatch raises and exits non-zero.

The fake's ``fake-model`` (asyncllm/testing/fakes/ovms.py) answers each input, in order, as
``output``, ``output1``...: floats negated, integers plus one (the top of the range wraps to the
bottom), BOOL negated, BYTES reversed. Real OVMS sends binary outputs only for outputs the request
lists with ``binary_data`` (or under ``binary_data_output``), so an infer that lists none gets
JSON ``data`` even though tritonclient then asks for ``binary_data_output``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import numpy as np
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

MODEL = "fake-model"


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def same(got: Any, want: np.ndarray, what: str) -> None:
    expect(isinstance(got, np.ndarray), f"{what}: not an array: {got!r}")
    expect(got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}")
    if want.dtype == np.object_:
        expect(got.dtype == np.object_, f"{what}: dtype {got.dtype}")
        expect(got.tolist() == want.tolist(), f"{what}: {got.tolist()!r} != {want.tolist()!r}")
    else:
        expect(got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}")
        expect(np.array_equal(got, want), f"{what}: {got!r} != {want!r}")


async def refused(call: Any, status: str, message: str) -> None:
    try:
        await call
    except InferenceServerException as exc:
        expect(exc.status() == status, f"status {exc.status()} != {status} ({exc.message()})")
        expect(message in exc.message(), f"{message!r} not in {exc.message()!r}")
    else:
        raise AssertionError(f"expected an InferenceServerException {status}")


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> InferInput:
    t = InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array, binary_data=binary)
    return t


FP32 = np.array([[1.5, -2.25, 0.0], [3.0e38, -1.0e-30, 7.0]], dtype=np.float32)
INT64 = np.array([[-(2**63), -1, 0], [1, 2**53 + 1, 2**63 - 1]], dtype=np.int64)
BOOL = np.array([[True, False, True]], dtype=np.bool_)
BYTES = np.array([b"abc", b"", b"h\xc3\xa9llo", b"x y"], dtype=np.object_)
TEXT = np.array(["abc", "", "héllo", "x y"], dtype=np.object_)


def inputs(binary: bool) -> list[InferInput]:
    return [
        tensor("f", FP32, "FP32", binary),
        tensor("i", INT64, "INT64", binary),
        tensor("b", BOOL, "BOOL", binary),
        tensor("s", BYTES if binary else TEXT, "BYTES", binary),
    ]


WANT = {
    "output": -FP32,
    "output1": np.array([[-(2**63) + 1, 0, 1], [2, 2**53 + 2, -(2**63)]], dtype=np.int64),
    "output2": ~BOOL,
}
WANT_BYTES = np.array([b"cba", b"", "olléh".encode(), b"y x"], dtype=np.object_)
WANT_TEXT = np.array(["cba", "", "olléh", "y x"], dtype=np.object_)


async def health(client: InferenceServerClient) -> None:
    expect(await client.is_server_live() is True, "server live")
    expect(await client.is_server_ready() is True, "server ready")
    expect(await client.is_model_ready(MODEL) is True, "model ready")
    expect(await client.is_model_ready(MODEL, "1") is True, "version 1 ready")
    expect(await client.is_model_ready(MODEL, "3") is False, "version 3 is not there")
    # OVMS's ready probe looks a given version up as it is: 0 is no version.
    expect(await client.is_model_ready(MODEL, "0") is False, "version 0 is not there")
    expect(await client.is_model_ready("no-such-model") is False, "unknown model")
    print("health: live, ready, model ready")


async def metadata(client: InferenceServerClient) -> None:
    server = await client.get_server_metadata()
    expect(server["name"] == "OpenVINO Model Server", f"server name {server!r}")
    expect(isinstance(server["version"], str) and server["version"], f"version {server!r}")
    meta = await client.get_model_metadata(MODEL)
    expect(meta["name"] == MODEL and meta["platform"] == "OpenVINO", f"{meta!r}")
    expect(meta["versions"] == ["1", "2"], f"versions {meta['versions']!r}")
    expect(meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, -1]}], "inputs")
    expect(meta["outputs"][0]["name"] == "output", "outputs")
    expect(meta["rt_info"] == {"model_info": {"version": "2"}}, "default version is the latest")
    first = await client.get_model_metadata(MODEL, "1")
    expect(first["rt_info"] == {"model_info": {"version": "1"}}, f"version 1: {first!r}")
    await refused(client.get_model_metadata("no-such-model"), "404", "requested name")
    await refused(client.get_model_metadata(MODEL, "7"), "404", "requested version")
    # OVMS has no model configuration endpoint: the URL is not one it serves.
    await refused(client.get_model_config(MODEL), "400", "Invalid request URL")
    print("metadata: server, model, version 1, errors, no config endpoint")


async def infer_binary_in_json_out(client: InferenceServerClient) -> None:
    result = await client.infer(MODEL, inputs(binary=True), request_id="rq-1")
    response = result.get_response()
    expect(response["model_name"] == MODEL and response["model_version"] == "2", f"{response!r}")
    expect(response["id"] == "rq-1", "request id echoed")
    for name, want in WANT.items():
        same(result.as_numpy(name), want, name)
        expect("data" in result.get_output(name), f"{name} came as JSON")
    same(result.as_numpy("output3"), WANT_TEXT, "output3")
    print("infer: FP32, INT64, BOOL, BYTES in binary, outputs in JSON")


async def infer_binary_both_ways(client: InferenceServerClient) -> None:
    wanted = [
        InferRequestedOutput(n, binary_data=True)
        for n in ("output", "output1", "output2", "output3")
    ]
    result = await client.infer(MODEL, inputs(binary=True), outputs=wanted)
    for name, want in WANT.items():
        same(result.as_numpy(name), want, name)
        output = result.get_output(name)
        expect("data" not in output, f"{name} came in binary")
        expect(output["parameters"]["binary_data_size"] == want.nbytes, f"{name} size")
    same(result.as_numpy("output3"), WANT_BYTES, "output3")
    size = sum(4 + len(s) for s in WANT_BYTES)
    expect(result.get_output("output3")["parameters"]["binary_data_size"] == size, "BYTES size")
    print("infer: FP32, INT64, BOOL, BYTES in binary, outputs in binary")


async def infer_bytes_that_are_not_text(client: InferenceServerClient) -> None:
    raw = np.array([b"\x00\xff", b"\xfe"], dtype=np.object_)
    want = np.array([b"\xff\x00", b"\xfe"], dtype=np.object_)
    binary = [InferRequestedOutput("output", binary_data=True)]
    result = await client.infer(MODEL, [tensor("s", raw, "BYTES", True)], outputs=binary)
    same(result.as_numpy("output"), want, "BYTES that are not UTF-8, in binary")
    # In JSON, OVMS writes such bytes into the string as they are, which is not UTF-8, and the
    # SDK says so (its advice: binary_data=True).
    try:
        await client.infer(MODEL, [tensor("s", raw, "BYTES", True)])
    except InferenceServerException as exc:
        expect("UTF-8" in exc.message(), exc.message())
    else:
        raise AssertionError("bytes that are not UTF-8 decoded as JSON text")
    print("infer: BYTES that are not UTF-8, in binary (and refused by the SDK in JSON)")


async def infer_json_both_ways(client: InferenceServerClient) -> None:
    wanted = [
        InferRequestedOutput("output3", binary_data=False),
        InferRequestedOutput("output", binary_data=False),
    ]
    result = await client.infer(MODEL, inputs(binary=False), outputs=wanted)
    names = [o["name"] for o in result.get_response()["outputs"]]
    expect(sorted(names) == ["output", "output3"], f"only the outputs asked for: {names}")
    same(result.as_numpy("output"), WANT["output"], "output")
    same(result.as_numpy("output3"), WANT_TEXT, "output3")
    expect(result.as_numpy("output1") is None, "output1 was not asked for")
    print("infer: inputs and outputs in JSON, outputs filtered")


async def infer_mixed_outputs(client: InferenceServerClient) -> None:
    # Some outputs in binary, some in JSON: each output's own binary_data wins.
    wanted = [
        InferRequestedOutput("output1", binary_data=True),
        InferRequestedOutput("output2", binary_data=False),
    ]
    result = await client.infer(MODEL, inputs(binary=True), outputs=wanted)
    expect("data" not in result.get_output("output1"), "output1 in binary")
    expect("data" in result.get_output("output2"), "output2 in JSON")
    same(result.as_numpy("output1"), WANT["output1"], "output1")
    same(result.as_numpy("output2"), WANT["output2"], "output2")
    print("infer: binary and JSON outputs in one answer")


async def infer_every_numeric_datatype(client: InferenceServerClient) -> None:
    samples = {
        "UINT8": np.array([0, 1, 255], dtype=np.uint8),
        "UINT16": np.array([0, 300, 65535], dtype=np.uint16),
        "UINT32": np.array([0, 70000, 2**32 - 1], dtype=np.uint32),
        "UINT64": np.array([0, 2**53 + 1, 2**64 - 1], dtype=np.uint64),
        "INT8": np.array([-128, 0, 127], dtype=np.int8),
        "INT16": np.array([-32768, 0, 32767], dtype=np.int16),
        "INT32": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
        "FP64": np.array([-1.7976931348623157e308, 5e-324, 2.5], dtype=np.float64),
    }
    ins = [tensor(f"in{i}", a, dt, True) for i, (dt, a) in enumerate(samples.items())]
    names = ["output"] + [f"output{i}" for i in range(1, len(samples))]
    for binary in (True, False):
        wanted = [InferRequestedOutput(n, binary_data=binary) for n in names]
        result = await client.infer(MODEL, ins, outputs=wanted)
        for name, (datatype, a) in zip(names, samples.items(), strict=True):
            if datatype.startswith("FP"):
                want = -a
            else:
                info = np.iinfo(a.dtype)
                want = np.where(a == info.max, info.min, a + np.array(1, dtype=a.dtype))
                want = want.astype(a.dtype)
            same(result.as_numpy(name), want, f"{datatype} ({'binary' if binary else 'JSON'})")
    print("infer: UINT8..UINT64, INT8..INT32, FP64 in binary, outputs both ways")


async def infer_versions_and_errors(client: InferenceServerClient) -> None:
    one = [tensor("x", np.array([1.0], dtype=np.float32), "FP32", True)]
    first = await client.infer(MODEL, one, model_version="1")
    expect(first.get_response()["model_version"] == "1", "version 1")
    # For infer, OVMS takes version 0 as the default version.
    default = await client.infer(MODEL, one, model_version="0")
    expect(default.get_response()["model_version"] == "2", "version 0 is the default")
    await refused(client.infer("no-such-model", one), "404", "requested name")
    await refused(client.infer(MODEL, one, model_version="9"), "404", "requested version")
    # A binary tensor whose size does not fit its shape.
    bad = InferInput("x", [3], "FP32")
    bad.set_data_from_numpy(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    bad.set_shape([2])
    await refused(client.infer(MODEL, [bad]), "400", "Expected: 8 bytes; Actual: 12 bytes")
    # Asking for an output the model does not have.
    await refused(client.infer(MODEL, one, outputs=[InferRequestedOutput("nope")]), "400", "nope")
    print("infer: versions 1 and 0, unknown model and version, bad binary size, unknown output")


async def main(url: str) -> None:
    async with InferenceServerClient(url=url, conn_timeout=30.0) as client:
        await health(client)
        await metadata(client)
        await infer_binary_in_json_out(client)
        await infer_binary_both_ways(client)
        await infer_bytes_that_are_not_text(client)
        await infer_json_both_ways(client)
        await infer_mixed_outputs(client)
        await infer_every_numeric_datatype(client)
        await infer_versions_and_errors(client)
    print("all tritonclient calls passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
