from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
import sys
from typing import Any, ClassVar

import aiohttp
import numpy as np
import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel
from yarl import URL

import asyncllm
from asyncllm.backends.ovms import DATATYPES, OVMS, Tensor
from asyncllm.testing import FakeServer, MockResponse, MockTransport
from asyncllm.testing.fakes import ovms as fake
from tests.chat_contract import NO_WAIT, ChatContract
from tests.specs import SPECS

SPEC = SPECS / "kserve/open-inference-protocol.open_inference_rest.yaml"


class TestOVMSContract(ChatContract):
    protocol = "ovms"
    open_maps_refused = True  # sent as OpenAI's strict schema
    strict_tools = False  # tool calls are guided only if the servable was started so
    # A servable with a reasoning parser, whose chat template thinks when asked to.
    reasoning_options: ClassVar[dict[str, Any] | None] = {
        "extra_body": {"chat_template_kwargs": {"enable_thinking": True}}
    }

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.OVMS(base_url=server.url(), **kwargs)


PROTOCOLS = ("ovms",)


def make_client(server: FakeServer) -> OVMS:
    return OVMS(base_url=server.url(), model="fake-model", retry=NO_WAIT)


# Values per datatype, the range ends included, so the checks and the wire keep full range.
SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, False, True, True, False],
    "UINT8": [0, 1, 2, 127, 200, 255],
    "UINT16": [0, 1, 300, 1000, 40000, 65535],
    "UINT32": [0, 1, 70000, 2**31, 2**32 - 2, 2**32 - 1],
    "UINT64": [0, 1, 2**32, 2**53 + 1, 2**63, 2**64 - 1],
    "INT8": [-128, -1, 0, 1, 100, 127],
    "INT16": [-32768, -1, 0, 1, 1000, 32767],
    "INT32": [-(2**31), -1, 0, 1, 123456, 2**31 - 1],
    "INT64": [-(2**63), -(2**53) - 1, 0, 1, 2**53 + 1, 2**63 - 1],
    "FP16": [-65504.0, -1.5, 0.0, 0.25, 3.0, 65504.0],
    "FP32": [-3.4028234663852886e38, -1.25, 0.0, 1e-30, 3.5, 3.4028234663852886e38],
    "FP64": [-1.7976931348623157e308, -0.1, 0.0, 5e-324, 2.5, 1.7976931348623157e308],
    "BYTES": ["abc", "", "héllo", "x y", "12", "zz"],
}


def test_samples_cover_every_datatype() -> None:
    assert set(SAMPLES) == set(DATATYPES)
    assert len(DATATYPES) == 13


def nest(flat: list[Any], rows: int) -> list[list[Any]]:
    width = len(flat) // rows
    return [flat[i * width : (i + 1) * width] for i in range(rows)]


# -- configuration -----------------------------------------------------------------------------


async def test_env_base_url_and_key(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    monkeypatch.setenv("OVMS_API_URL", server.url())
    monkeypatch.setenv("OVMS_API_KEY", "gw-secret")
    client = OVMS(model="fake-model")
    try:
        assert client.base_url == server.url()
        assert await client.server_live()
    finally:
        await client.aclose()
    assert server.requests[-1].headers["Authorization"] == "Bearer gw-secret"
    assert "gw-secret" not in repr(client)


def test_default_base_url_and_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVMS_API_URL", raising=False)
    monkeypatch.delenv("OVMS_API_KEY", raising=False)
    client = OVMS()
    assert client.base_url == "http://localhost:9000"
    assert "Authorization" not in client._headers


@pytest.mark.parametrize("version", [0, -1, "v1", "1.5", True, 1.0])
def test_bad_version_is_refused(version: Any) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        OVMS(base_url="http://127.0.0.1:1", version=version)


def test_numpy_is_not_imported_with_the_module() -> None:
    code = (
        "import sys, asyncllm; asyncllm.OVMS; import asyncllm.backends.ovms, asyncllm.testing.fakes.ovms;"
        "assert 'numpy' not in sys.modules, 'numpy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


# -- KServe tensors ------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
async def test_tensor_round_trip_every_datatype(
    client: OVMS, server: FakeServer, datatype: str
) -> None:
    values = SAMPLES[datatype]
    r = await client.infer(inputs={"input": Tensor(nest(values, 2), datatype=datatype)})
    sent = server.requests[-1].json["inputs"][0]
    assert sent == {"name": "input", "shape": [2, 3], "datatype": datatype, "data": values}
    out = r["output"]
    assert out.datatype == datatype
    assert out.shape == (2, 3)
    expected = [fake.transform(v, datatype) for v in values]
    assert out.data == expected
    assert out.to_list() == nest(expected, 2)
    assert r.model_name == "fake-model"
    assert r.request_id == server.request_ids[-1]


@pytest.mark.parametrize(
    ("datatype", "expected"),
    [
        ("FP16", [-0.0999755859375, -0.0, -0.333251953125]),
        ("FP32", [-0.10000000149011612, -1.0000000031710769e-30, -0.3333333432674408]),
        ("FP64", [-0.1, -1e-30, -1 / 3]),
    ],
)
async def test_narrow_floats_come_back_at_their_precision(
    client: OVMS, datatype: str, expected: list[float]
) -> None:
    # As a real server holding FP16 / FP32 tensors answers (MLServer does; tests/interop).
    r = await client.infer(inputs={"x": Tensor([0.1, 1e-30, 1 / 3], datatype=datatype)})
    assert r["output"].data == expected


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        ([[True, False]], "BOOL"),
        ([[1, 2], [3, 4]], "INT64"),
        ([[1.5, 2], [3, 4]], "FP32"),
        ([["a", b"b"]], "BYTES"),
    ],
)
async def test_datatype_is_inferred_from_nested_lists(
    client: OVMS, values: Any, datatype: str
) -> None:
    r = await client.infer(inputs={"x": values})
    assert r["output"].datatype == datatype
    assert r["output"].shape == (len(values), len(values[0]))


NUMPY_DTYPES = [
    ("bool", "BOOL"),
    ("uint8", "UINT8"),
    ("uint16", "UINT16"),
    ("uint32", "UINT32"),
    ("uint64", "UINT64"),
    ("int8", "INT8"),
    ("int16", "INT16"),
    ("int32", "INT32"),
    ("int64", "INT64"),
    ("float16", "FP16"),
    ("float32", "FP32"),
    ("float64", "FP64"),
]


@pytest.mark.parametrize(("dtype", "datatype"), NUMPY_DTYPES)
async def test_numpy_round_trip(client: OVMS, dtype: str, datatype: str) -> None:
    array = np.array(SAMPLES[datatype], dtype=dtype).reshape(3, 2)
    r = await client.infer(inputs={"input": array})
    out = r["output"]
    assert (out.datatype, out.shape) == (datatype, (3, 2))
    back = out.to_numpy()
    assert back.dtype == np.dtype(dtype)
    expected = np.array(
        [fake.transform(v, datatype) for v in array.reshape(-1).tolist()], dtype=dtype
    ).reshape(3, 2)
    np.testing.assert_array_equal(back, expected)


async def test_numpy_strings_are_bytes(client: OVMS) -> None:
    r = await client.infer(inputs={"input": np.array([["ab", "cd"]])})
    assert r["output"].datatype == "BYTES"
    assert r["output"].to_numpy().tolist() == [["ba", "dc"]]


def test_tensor_helpers() -> None:
    flat = Tensor([1, 2, 3, 4, 5, 6], datatype="INT32", shape=[2, 3])
    assert flat.to_list() == [[1, 2, 3], [4, 5, 6]]
    assert flat == Tensor([[1, 2, 3], [4, 5, 6]], datatype="INT32")
    assert Tensor(7, datatype="INT8").shape == ()
    assert Tensor(7, datatype="INT8").to_list() == 7
    empty = Tensor([], datatype="FP32")
    assert empty.shape == (0,) and empty.to_list() == []
    zero_rows = Tensor([], datatype="FP32", shape=[3, 0])
    assert zero_rows.to_list() == [[], [], []]
    assert Tensor([[[1], [2]]]).shape == (1, 2, 1)
    assert Tensor.from_numpy(np.zeros((2, 0), dtype="float32")).shape == (2, 0)
    assert Tensor([b"raw"]).data == ["raw"]
    scalars = Tensor(list(np.array([1, 2], dtype="int16")), datatype="INT16")
    assert scalars.data == [1, 2] and type(scalars.data[0]) is int
    assert Tensor(np.float32(1.5)).to_list() == 1.5


# Each is wrong in one way; all must fail before anything is sent. A lambda so that a Tensor
# built by hand fails inside the test, as it would in a caller's code.
MISMATCHES: list[tuple[str, Any]] = [
    ("ragged rows", lambda: [[1, 2], [3]]),
    ("ragged depth", lambda: [[1, 2], 3]),
    ("too deep", lambda: [[1, [2]], [3, 4]]),
    ("ragged with datatype", lambda: Tensor([[1.0], [2.0, 3.0]], datatype="FP32")),
    ("data length != shape", lambda: Tensor([1, 2, 3], datatype="INT32", shape=[2, 2])),
    ("nested data != shape", lambda: Tensor([[1, 2], [3, 4]], datatype="INT32", shape=[4])),
    ("ragged data with shape", lambda: Tensor([[1, 2], [3]], datatype="INT32", shape=[3])),
    ("UINT8 over range", lambda: Tensor([255, 256], datatype="UINT8")),
    ("UINT64 negative", lambda: Tensor([-1], datatype="UINT64")),
    ("INT8 under range", lambda: Tensor([-129], datatype="INT8")),
    ("INT64 over range", lambda: Tensor([2**63], datatype="INT64")),
    ("FP16 over range", lambda: Tensor([65505.0], datatype="FP16")),
    ("FP32 over range", lambda: Tensor([3.5e38], datatype="FP32")),
    ("NaN", lambda: [[math.nan]]),
    ("infinity", lambda: Tensor([math.inf], datatype="FP64")),
    ("int for BOOL", lambda: Tensor([1, 0], datatype="BOOL")),
    ("str for BOOL", lambda: Tensor(["true"], datatype="BOOL")),
    ("float for INT32", lambda: Tensor([1.0], datatype="INT32")),
    ("bool for INT32", lambda: Tensor([True], datatype="INT32")),
    ("str for FP32", lambda: Tensor(["1.5"], datatype="FP32")),
    ("int for BYTES", lambda: Tensor([1], datatype="BYTES")),
    ("bytes not UTF-8", lambda: [b"\xff\xfe"]),
    ("mixed values", lambda: [1, "a"]),
    ("unknown datatype", lambda: Tensor([1], datatype="BF16")),
    ("negative dim", lambda: Tensor([1], datatype="INT8", shape=[-1])),
    ("empty without datatype", list),
    ("None element", lambda: [None]),
    ("numpy shape mismatch", lambda: Tensor(np.zeros(4), shape=[3])),
    ("numpy complex", lambda: np.zeros(2, dtype="complex64")),
    ("numpy out of range for datatype", lambda: Tensor(np.array([300]), datatype="UINT8")),
]


@pytest.mark.parametrize(("case", "build"), MISMATCHES, ids=[c for c, _ in MISMATCHES])
async def test_mismatch_is_refused_before_sending(
    client: OVMS, server: FakeServer, case: str, build: Any
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.infer(inputs={"input": build()})
    assert server.request_count == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inputs": {}},
        {"inputs": [("input", [1])]},
        {"inputs": {"": [1]}},
        {"inputs": {"x": [1]}, "outputs": "output"},
        {"inputs": {"x": [1]}, "outputs": [{"nom": "output"}]},
        {"inputs": {"x": [1]}, "parameters": ["a"]},
        {"inputs": {"x": [1]}, "id": 42},
        {"inputs": {"x": [1]}, "model": ""},
        {"inputs": {"x": [1]}, "version": "latest"},
    ],
)
async def test_bad_infer_arguments(
    client: OVMS, server: FakeServer, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.infer(**kwargs)
    assert server.request_count == 0


async def test_infer_needs_a_model(server: FakeServer) -> None:
    client = OVMS(base_url=server.url())
    try:
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.infer(inputs={"x": [1]})
        r = await client.infer("fake-model", {"x": [1]})
        assert r["output"].data == [2]
    finally:
        await client.aclose()
    assert server.request_count == 1


async def test_outputs_parameters_and_id(client: OVMS, server: FakeServer) -> None:
    r = await client.infer(
        inputs={"a": [1.0], "b": [True], "c": ["xy"]},
        outputs=["output2", {"name": "output", "parameters": {}}],
        parameters={"priority": 1},
        id="req-42",
    )
    assert sorted(r) == ["output", "output2"]
    assert r["output2"].to_list() == ["yx"]
    assert r.id == "req-42"
    assert r.parameters == {"priority": 1}
    sent = server.requests[-1].json
    assert sent["outputs"] == [{"name": "output2"}, {"name": "output", "parameters": {}}]
    assert sent["parameters"] == {"priority": 1}
    assert sent["id"] == "req-42"


async def test_kserve_error_body(client: OVMS, server: FakeServer) -> None:
    with pytest.raises(asyncllm.BadRequestError) as info:
        await client.infer(inputs={"x": [1]}, outputs=["nope"])
    assert info.value.message == "Unknown output: nope"
    assert info.value.request_id == server.request_ids[-1]
    server.fail_next(1, status=503)
    r = await client.infer(inputs={"x": [1]})  # retried
    assert r["output"].data == [2]
    server.fail_next(1, status=400)
    with pytest.raises(asyncllm.BadRequestError) as info:
        await client.infer(inputs={"x": [1]})
    assert info.value.message == "injected 400"


# -- versions and metadata -----------------------------------------------------------------------


async def test_versioned_routes(client: OVMS, server: FakeServer) -> None:
    latest = await client.infer(inputs={"x": [1]})
    assert latest.model_version == "2"
    assert server.requests[-1].path == "/v2/models/fake-model/infer"
    first = await client.infer(inputs={"x": [1]}, version=1)
    assert first.model_version == "1"
    assert server.requests[-1].path == "/v2/models/fake-model/versions/1/infer"
    meta = await client.model_metadata(version="1")
    assert server.requests[-1].path == "/v2/models/fake-model/versions/1"
    assert meta.name == "fake-model"
    assert meta.versions == ["1", "2"]
    assert meta.inputs[0].name == "input" and meta.inputs[0].shape == [-1, -1]
    assert meta.outputs[0].datatype == "FP32"
    assert meta.rt_info == {"model_info": {"version": "1"}}
    assert await client.model_ready(version=2)
    assert server.requests[-1].path == "/v2/models/fake-model/versions/2/ready"
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.infer(inputs={"x": [1]}, version=3)
    assert info.value.message == "Model with requested version is not found: 3"
    with pytest.raises(asyncllm.NotFoundError, match="requested name"):
        await client.model_metadata("other-model")


async def test_model_metadata_accepts_null_optional_lists() -> None:
    # KServe requires only name and platform; "versions" (and inputs/outputs) may come as null.
    body = {"name": "m", "versions": None, "platform": "OpenVINO", "inputs": None, "outputs": None}
    transport = MockTransport(lambda request: MockResponse(json=body))
    client = OVMS(base_url="http://ovms.test:8000", transport=transport)
    try:
        meta = await client.model_metadata("m")
    finally:
        await client.aclose()
    assert meta.name == "m" and meta.platform == "OpenVINO"
    assert meta.versions == [] and meta.inputs == [] and meta.outputs == []


async def test_fastapi_validation_errors_read_as_text() -> None:
    # MLServer (and every FastAPI server) answers a body it cannot read with a list of errors.
    detail = [
        {"type": "literal_error", "loc": ["body", "inputs", 0, "datatype"], "msg": "Bad type"},
        {"type": "missing", "loc": ["body", "inputs", 0, "shape"], "msg": "Field required"},
    ]
    transport = MockTransport(lambda request: MockResponse(422, json={"detail": detail}))
    client = OVMS(base_url="http://ovms.test:8000", transport=transport, max_retries=0)
    try:
        with pytest.raises(asyncllm.UnprocessableEntityError) as info:
            await client.infer("m", {"x": [1]})
    finally:
        await client.aclose()
    assert info.value.message == (
        "body.inputs.0.datatype: Bad type; body.inputs.0.shape: Field required"
    )
    assert info.value.error_type == "literal_error"


async def test_version_pinned_on_the_client(server: FakeServer) -> None:
    client = OVMS(base_url=server.url(), model="fake-model", version=1)
    try:
        assert (await client.infer(inputs={"x": [1]})).model_version == "1"
        assert (await client.infer(inputs={"x": [1]}, version=2)).model_version == "2"
        statuses = await client.model_status()
    finally:
        await client.aclose()
    assert [s.version for s in statuses] == ["1"]
    assert server.requests[-1].path == "/v1/models/fake-model/versions/1"


async def test_model_name_is_quoted_in_the_path() -> None:
    transport = MockTransport(
        lambda request: MockResponse(json={"model_name": "BAAI/bge", "outputs": []})
    )
    client = OVMS(base_url="http://ovms.test:8000", transport=transport)
    try:
        await client.infer("BAAI/bge", {"x": [1]}, version=3)
    finally:
        await client.aclose()
    assert (
        transport.requests[-1].url == "http://ovms.test:8000/v2/models/BAAI%2Fbge/versions/3/infer"
    )


async def test_server_metadata_and_health(client: OVMS, server: FakeServer) -> None:
    meta = await client.server_metadata()
    assert meta.name == "OpenVINO Model Server"
    assert meta.version.startswith("2026")
    assert server.requests[-1].path == "/v2"
    assert await client.server_live()
    assert await client.server_ready()
    assert await client.model_ready()
    assert await client.model_ready("unknown") is False
    server.state["ovms_live"] = False
    server.state["ovms_ready"] = False
    server.state["ovms_unready"] = {"fake-model"}
    assert await client.server_live() is False
    assert await client.server_ready() is False
    assert await client.model_ready() is False
    assert [r.path for r in list(server.requests)[-3:]] == [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/fake-model/ready",
    ]


async def test_probe_raises_on_auth_errors(client: OVMS, server: FakeServer) -> None:
    server.fail_next(1, status=401)
    with pytest.raises(asyncllm.AuthenticationError):
        await client.server_ready()
    server.fail_next(1, status=500)
    before = server.request_count
    assert not await client.server_ready()  # not ready, and a probe is never retried
    assert server.request_count == before + 1
    assert await client.server_ready()


# -- the fake's routes, as OVMS answers them -----------------------------------------------------


async def call(
    server: FakeServer,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A raw request (the path sent as written, %-escapes and all): status, headers, body."""
    url = URL(server.url(path), encoded=True)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        # OVMS has no model configuration endpoint (tritonclient's get_model_config asks for it).
        ("GET", "/v2/models/fake-model/config", 400, "Invalid request URL"),
        ("GET", "/v2/models/fake-model/versions/latest", 400, "Invalid request URL"),
        ("POST", "/v2/models/fake-model/versions/1/ready/infer", 400, "Invalid request URL"),
        ("GET", "/v1/models/fake-model/config", 400, "Invalid request URL"),
        # A route asked with the other method.
        ("GET", "/v2/models/fake-model/infer", 406, "Unsupported method"),
        ("POST", "/v2/models/fake-model/ready", 406, "Unsupported method"),
        ("POST", "/v2/models/fake-model", 406, "Unsupported method"),
        ("GET", "/v1/models/fake-model:predict", 406, "Unsupported method"),
        ("POST", "/v1/models/fake-model/versions/1/metadata", 406, "Unsupported method"),
        ("POST", "/v1/models/fake-model:classify", 404, "Requested REST resource not found"),
        # A name is one segment, %-decoded: a%2Fb is the (unknown) model a/b.
        ("GET", "/v2/models/a%2Fb/ready", 404, "Model with requested name is not found: a/b"),
        (
            "GET",
            "/v2/models/fake-model/versions/3",
            404,
            "Model with requested version is not found: 3",
        ),
        # KServe's ready and metadata calls look version 0 up as it is: there is none.
        ("GET", "/v2/models/fake-model/versions/0/ready", 404, "requested version is not found: 0"),
        ("GET", "/v2/models/fake-model/versions/0", 404, "requested version is not found: 0"),
        ("GET", f"/v2/models/fake-model/versions/{2**64}", 400, "invalid model version format"),
    ],
)
async def test_routes_answer_as_ovms(
    server: FakeServer, method: str, path: str, status: int, error: str
) -> None:
    got, headers, body = await call(server, method, path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert error in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v2/models/fake%2Dmodel", "2"),  # %2D is "-"
        ("/v2/models/fake-model/", "2"),
        ("/v2/models/fake-model/versions/01", "1"),  # a number, as OVMS parses it
    ],
)
async def test_kserve_metadata_paths(server: FakeServer, path: str, version: str) -> None:
    status, _, body = await call(server, "GET", path)
    assert status == 200
    assert json.loads(body)["rt_info"] == {"model_info": {"version": version}}


async def test_version_zero_is_the_default_where_ovms_runs_a_model(server: FakeServer) -> None:
    infer = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
    status, _, body = await call(
        server, "POST", "/v2/models/fake-model/versions/0/infer", body=infer.encode()
    )
    assert status == 200 and json.loads(body)["model_version"] == "2"
    # TF-Serving: what ovmsclient asks for when no version is given.
    status, _, body = await call(server, "GET", "/v1/models/fake-model/versions/0")
    assert status == 200
    assert [s["version"] for s in json.loads(body)["model_version_status"]] == ["1", "2"]
    status, _, body = await call(server, "GET", "/v1/models/fake-model/versions/0/metadata")
    assert status == 200 and json.loads(body)["modelSpec"]["version"] == "2"
    predict = json.dumps({"inputs": [1, 2]}).encode()
    status, _, body = await call(
        server, "POST", "/v1/models/fake-model/versions/0:predict", body=predict
    )
    assert status == 200 and json.loads(body) == {"outputs": [2, 4]}
    # A label names no version to OVMS: the default one answers.
    status, _, body = await call(server, "GET", "/v1/models/fake-model/labels/stable/metadata")
    assert status == 200 and json.loads(body)["modelSpec"]["version"] == "2"
    status, _, body = await call(server, "GET", "/v1/models/fake-model/versions/1")
    assert [s["version"] for s in json.loads(body)["model_version_status"]] == ["1"]


async def test_probes_answer_as_ovms(server: FakeServer) -> None:
    server.state.update(ovms_live=False, ovms_ready=False, ovms_unready={"fake-model"})
    expected = [
        ("/v2/health/live", 500, "Internal server error"),
        ("/v2/health/ready", 503, "Server is not ready"),
        ("/v2/models/fake-model/ready", 404, "Model with requested version is not loaded yet"),
    ]
    for path, status, error in expected:
        got, _, body = await call(server, "GET", path)
        assert (got, json.loads(body)) == (status, {"error": error})


# -- KServe's binary data extension --------------------------------------------------------------

INFER = "/v2/models/fake-model/infer"


def binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    """An infer request in KServe's binary form: the JSON header, then the tensors' bytes."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(s)) + s for s in items)


def split_answer(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], bytes]:
    size = int(headers["Inference-Header-Content-Length"])
    return json.loads(body[:size]), body[size:]


BINARY_INPUTS = [
    ("f", "FP32", [2], struct.pack("<2f", 1.5, -2.25)),
    ("i", "INT64", [3], struct.pack("<3q", -(2**63), 0, 2**63 - 1)),
    ("b", "BOOL", [1, 2], bytes([1, 0])),
    ("s", "BYTES", [2], strings(b"abc", "h\u00e9".encode())),
]


def binary_inputs() -> list[dict[str, Any]]:
    return [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
        for n, d, s, b in BINARY_INPUTS
    ]


async def test_binary_inputs_and_outputs(server: FakeServer) -> None:
    names = ["output", "output1", "output2", "output3"]
    body, headers = binary_request(
        {
            "id": "r1",
            "inputs": binary_inputs(),
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in names],
        },
        *(b for *_, b in BINARY_INPUTS),
    )
    status, got_headers, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200
    assert got_headers["Content-Type"].startswith("application/json")
    header, tail = split_answer(got_headers, answer)
    assert header["id"] == "r1" and header["model_version"] == "2"
    expected_bytes = [
        struct.pack("<2f", -1.5, 2.25),
        struct.pack("<3q", -(2**63) + 1, 1, -(2**63)),
        bytes([0, 1]),
        strings(b"cba", "\u00e9h".encode()),
    ]
    assert [o["name"] for o in header["outputs"]] == names
    for output, (_, datatype, shape, _), blob in zip(
        header["outputs"], BINARY_INPUTS, expected_bytes, strict=True
    ):
        assert output == {
            "name": output["name"],
            "shape": shape,
            "datatype": datatype,
            "parameters": {"binary_data_size": len(blob)},
        }
    assert tail == b"".join(expected_bytes)


async def test_binary_inputs_json_outputs(server: FakeServer) -> None:
    # OVMS sends in binary only outputs the request lists: binary_data_output alone (what
    # tritonclient asks for when it lists none) still gets JSON.
    body, headers = binary_request(
        {"inputs": binary_inputs(), "parameters": {"binary_data_output": True}},
        *(b for *_, b in BINARY_INPUTS),
    )
    status, got_headers, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200 and "Inference-Header-Content-Length" not in got_headers
    outputs = json.loads(answer)["outputs"]
    assert [o["data"] for o in outputs] == [
        [-1.5, 2.25],
        [-(2**63) + 1, 1, -(2**63)],
        [False, True],
        ["cba", "\u00e9h"],
    ]
    # Listed outputs: each one's binary_data, else the request's binary_data_output.
    body, headers = binary_request(
        {
            "inputs": binary_inputs(),
            "parameters": {"binary_data_output": True},
            "outputs": [
                {"name": "output1"},
                {"name": "output2", "parameters": {"binary_data": False}},
            ],
        },
        *(b for *_, b in BINARY_INPUTS),
    )
    status, got_headers, answer = await call(server, "POST", INFER, body=body, headers=headers)
    header, tail = split_answer(got_headers, answer)
    assert [("data" in o, o.get("parameters")) for o in header["outputs"]] == [
        (False, {"binary_data_size": 24}),
        (True, None),
    ]
    assert header["outputs"][1]["data"] == [False, True]
    assert tail == struct.pack("<3q", -(2**63) + 1, 1, -(2**63))


async def test_binary_sizes_from_the_shape(server: FakeServer) -> None:
    # Without binary_data_size a tensor takes its shape's element count times its datatype's size;
    # a lone BYTES input of shape [1] takes the whole binary part.
    inputs = [
        {"name": "a", "datatype": "INT16", "shape": [2]},
        {"name": "b", "datatype": "FP64", "shape": [1]},
    ]
    body, headers = binary_request(
        {"inputs": inputs}, struct.pack("<2h", -5, 32767), struct.pack("<d", 0.1)
    )
    status, _, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200
    assert [o["data"] for o in json.loads(answer)["outputs"]] == [[-4, -32768], [-0.1]]
    body, headers = binary_request(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1]}]}, strings(b"xyz")
    )
    status, _, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200 and json.loads(answer)["outputs"][0]["data"] == ["zyx"]


async def test_bytes_that_are_not_utf8(server: FakeServer) -> None:
    raw = strings(b"\x00\xff", b"ok")
    request = {
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    body, headers = binary_request(
        {**request, "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}, raw
    )
    status, got_headers, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200 and split_answer(got_headers, answer)[1] == strings(b"\xff\x00", b"ko")
    # In JSON, OVMS writes the bytes into the string as they are: the answer is not UTF-8.
    body, headers = binary_request(request, raw)
    status, _, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200
    assert b'"data": ["\xff\\u0000", "ko"]' in answer
    with pytest.raises(UnicodeDecodeError):
        answer.decode("utf-8")


async def test_empty_binary_output(server: FakeServer) -> None:
    # OVMS gives an empty binary output neither data nor a size, and sends no binary part.
    body, headers = binary_request(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [0]}],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    status, got_headers, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 200 and "Inference-Header-Content-Length" not in got_headers
    assert json.loads(answer)["outputs"] == [{"name": "output", "shape": [0], "datatype": "FP32"}]


def _one(datatype: str, shape: list[int], parameters: Any = None, **extra: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "x", "datatype": datatype, "shape": shape, **extra}
    if parameters is not None:
        tensor["parameters"] = parameters
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("header", "blob", "length", "error"),
    [
        (_one("FP32", [1]), b"\x00" * 4, "x1", "header is invalid and couldn't be parsed"),
        (_one("FP32", [1]), b"\x00" * 4, "-3", "header is invalid and couldn't be parsed"),
        (_one("FP32", [1]), b"", "99999", "exceeds actual payload length"),
        (
            _one("FP32", [2], {"binary_data_size": 8}),
            b"\x00" * 4,
            None,
            "smaller than binary_data_size",
        ),
        (_one("FP32", [3]), b"\x00" * 8, None, "smaller than binary_data_size"),
        (
            _one("FP32", [2], {"binary_data_size": 4}),
            b"\x00" * 4,
            None,
            "Expected: 8 bytes; Actual: 4 bytes; input name: x",
        ),
        (
            _one("FP32", [1], {"binary_data_size": 4}, data=[1.0]),
            b"\x00" * 4,
            None,
            "both in binary data and in content value",
        ),
        (
            _one("FP32", [1], {"binary_data_size": -4}),
            b"\x00" * 4,
            None,
            "binary_data_size parameter is invalid",
        ),
        (
            _one("FP32", [1], {"binary_data_size": "4"}),
            b"\x00" * 4,
            None,
            "binary_data_size parameter is invalid",
        ),
        (
            _one("BYTES", [1], {"binary_data_size": 6}),
            b"\x09\x00\x00\x00ab",
            None,
            "Batch length metadata exceeded buffer size",
        ),
        (
            _one("BYTES", [1], {"binary_data_size": 6}),
            strings(b"a") + b"\x00",
            None,
            "Processed bytes: 5 do not equal to buffer size: 6",
        ),
        (
            _one("BYTES", [3], {"binary_data_size": 5}),
            strings(b"a"),
            None,
            "Expected: 3 values; Actual: 1 values",
        ),
        (_one("BYTES", [2]), strings(b"a", b"b"), None, "Not valid ndarray detected"),
        (
            {
                "inputs": [
                    {"name": "j", "datatype": "INT32", "shape": [1], "data": [1]},
                    {
                        "name": "b",
                        "datatype": "INT32",
                        "shape": [1],
                        "parameters": {"binary_data_size": 4},
                    },
                ]
            },
            b"\x00" * 4,
            None,
            "inputs in binary and in JSON data in one request; input name: j",
        ),
    ],
)
async def test_bad_binary_requests(
    server: FakeServer, header: dict[str, Any], blob: bytes, length: str | None, error: str
) -> None:
    body, headers = binary_request(header, blob)
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    status, _, answer = await call(server, "POST", INFER, body=body, headers=headers)
    assert status == 400
    assert error in json.loads(answer)["error"]


async def test_json_bytes_must_be_utf8_text(server: FakeServer) -> None:
    body = json.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": ["\ud800"]}]}
    ).encode()
    status, _, answer = await call(server, "POST", INFER, body=body)
    assert status == 400 and "not valid for datatype BYTES" in json.loads(answer)["error"]


# -- decoding answers ----------------------------------------------------------------------------


def _answer(outputs: list[dict[str, Any]]) -> MockTransport:
    return MockTransport(lambda request: MockResponse(json={"model_name": "m", "outputs": outputs}))


async def test_nested_and_loose_output_data_is_decoded() -> None:
    transport = _answer(
        [
            {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2.0], [3, 4]]},
            {"name": "b", "shape": [2], "datatype": "BOOL", "data": [1, 0]},
            {"name": "c", "shape": [1], "datatype": "FP64", "data": [3]},
        ]
    )
    client = OVMS(base_url="http://ovms.test", model="m", transport=transport)
    try:
        r = await client.infer(inputs={"x": [1]})
    finally:
        await client.aclose()
    assert r["a"].to_list() == [[1, 2], [3, 4]]
    assert r["b"].data == [True, False]
    assert r["c"].data == [3.0] and isinstance(r["c"].data[0], float)


@pytest.mark.parametrize(
    "output",
    [
        {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3]},
        {"name": "a", "shape": [1], "datatype": "INT8", "data": [300]},
        {"name": "a", "shape": [1], "datatype": "BF16", "data": [1]},
        {"name": "a", "shape": [1], "datatype": "BYTES", "data": [1]},
        {"name": "a", "shape": [1], "datatype": "FP32"},
        {"shape": [1], "datatype": "FP32", "data": [1]},
    ],
)
async def test_bad_output_is_a_validation_error(output: dict[str, Any]) -> None:
    client = OVMS(base_url="http://ovms.test", model="m", transport=_answer([output]))
    try:
        with pytest.raises(asyncllm.ResponseValidationError):
            await client.infer(inputs={"x": [1]})
    finally:
        await client.aclose()


# -- the request against the Open Inference Protocol schema --------------------------------------


@pytest.fixture(scope="module")
def oip() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return spec


def _validator(spec: dict[str, Any], schema_name: str) -> Draft202012Validator:
    # '#/components/schemas/...' refs resolve against the root, so the root carries components.
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    return Draft202012Validator(schema)


async def test_infer_request_follows_the_schema(
    client: OVMS, server: FakeServer, oip: dict[str, Any]
) -> None:
    request_schema = _validator(oip, "inference_request")
    response_schema = _validator(oip, "inference_response")
    for datatype in DATATYPES:
        await client.infer(
            inputs={
                "input": Tensor(nest(SAMPLES[datatype], 3), datatype=datatype),
                "extra": Tensor([1, 2], datatype="INT8", parameters={"note": "x"}),
            },
            outputs=["output"],
            parameters={"sequence_id": 7, "flag": True},
            id="abc",
        )
        sent = json.loads(server.requests[-1].body)
        errors = [e.message for e in request_schema.iter_errors(sent)]
        assert errors == [], (datatype, errors)
        for tensor in sent["inputs"]:
            assert tensor["datatype"] in DATATYPES
            assert len(tensor["data"]) == math.prod(tensor["shape"])
    # The validator does reject a body that breaks the schema (so the check above has teeth).
    broken = {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}
    assert list(request_schema.iter_errors(broken))
    assert not list(
        request_schema.iter_errors({**broken, "inputs": [{**broken["inputs"][0], "shape": [1]}]})
    )
    # And the fake answers in the response schema.
    r = await client.infer(inputs={"x": [1]})
    assert list(response_schema.iter_errors(r.raw)) == []


# -- TF-Serving ----------------------------------------------------------------------------------


async def test_tfs_predict_row_form(client: OVMS, server: FakeServer) -> None:
    r = await client.predict(instances=[[1, 2], [3.5, 4]], signature_name="serving_default")
    assert r.predictions == [[2, 4], [7.0, 8]]
    assert r.outputs is None
    assert server.requests[-1].path == "/v1/models/fake-model:predict"
    assert server.requests[-1].json == {
        "signature_name": "serving_default",
        "instances": [[1, 2], [3.5, 4]],
    }
    named = await client.predict(
        instances=[{"tag": "ab", "x": [1]}, {"tag": "cd", "x": [2]}], version=1
    )
    assert named.predictions == [{"tag": "ba", "x": [2]}, {"tag": "dc", "x": [4]}]
    assert server.requests[-1].path == "/v1/models/fake-model/versions/1:predict"


async def test_tfs_predict_columnar_form(client: OVMS, server: FakeServer) -> None:
    r = await client.predict(
        inputs={"a": np.array([[1, 2], [3, 4]], dtype="int32"), "img_bytes": [b"\x00\xff"]}
    )
    # Bytes come back as {"b64": ...} from an output named *_bytes (the model reverses them).
    assert r.outputs == {"a": [[2, 4], [6, 8]], "img_bytes": [b"\xff\x00"]}
    assert r.predictions is None
    assert server.requests[-1].json["inputs"]["img_bytes"] == [{"b64": "AP8="}]
    single = await client.predict(inputs=[1.5, -2])
    assert single.outputs == [3.0, -4]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"instances": [1], "inputs": [1]},
        {"instances": []},
        {"instances": 3},
        {"instances": [{"a": 1}, {"b": 2}]},
        {"inputs": [math.nan]},
        {"inputs": {1: [1]}},
        {"inputs": [object()]},
        {"inputs": [1], "signature_name": ""},
    ],
)
async def test_tfs_bad_arguments(client: OVMS, server: FakeServer, kwargs: dict[str, Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await client.predict(**kwargs)
    assert server.request_count == 0


async def test_tfs_errors_status_and_metadata(client: OVMS, server: FakeServer) -> None:
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.predict("half", instances=[1.0])
    assert info.value.message == "Model with requested name is not found: half"
    with pytest.raises(asyncllm.BadRequestError, match="not found in signature def"):
        await client.predict(instances=[1], signature_name="other")
    statuses = await client.model_status()
    assert [(s.version, s.state, s.error_code) for s in statuses] == [
        ("1", "AVAILABLE", "OK"),
        ("2", "AVAILABLE", "OK"),
    ]
    meta = await client.tfs_model_metadata(version=2)
    assert server.requests[-1].path == "/v1/models/fake-model/versions/2/metadata"
    assert meta["modelSpec"]["version"] == "2"
    signature = meta["metadata"]["signature_def"]["signatureDef"]["serving_default"]
    assert set(signature["inputs"]) == {"input"}


PREDICT = "/v1/models/fake-model:predict"


def b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


async def predict_raw(server: FakeServer, body: Any) -> tuple[int, bytes]:
    status, _, answer = await call(server, "POST", PREDICT, body=json.dumps(body).encode())
    return status, answer


@pytest.mark.parametrize(
    ("request_body", "answer"),
    [
        # One output is the answer itself, as TF-Serving writes it; several are named.
        ({"inputs": {"x": [[1, 2.5]]}}, {"outputs": [[2, 5.0]]}),
        ({"inputs": {"x": [1], "y": ["ab"]}}, {"outputs": {"x": [2], "y": ["ba"]}}),
        ({"inputs": [1, 2]}, {"outputs": [2, 4]}),
        ({"inputs": 3}, {"outputs": 6}),
        ({"inputs": {"x": 3}}, {"outputs": 6}),
        ({"instances": [{"x": [1]}, {"x": [2]}]}, {"predictions": [[2], [4]]}),
        (
            {"instances": [{"x": 1, "s": "ab"}, {"x": 2, "s": "cd"}]},
            {"predictions": [{"x": 2, "s": "ba"}, {"x": 4, "s": "dc"}]},
        ),
        ({"instances": [[1, 2], [3, 4]]}, {"predictions": [[2, 4], [6, 8]]}),
        ({"inputs": {"x": []}}, {"outputs": []}),
        # b64 is decoded; the bytes come back as text, or as b64 from an output named *_bytes.
        ({"inputs": {"t": [b64("héllo".encode())]}}, {"outputs": ["olléh"]}),
        ({"inputs": {"t_bytes": [b64(b"\x00\x01")]}}, {"outputs": [b64(b"\x01\x00")]}),
        ({"inputs": {"t_bytes": ["ab"]}}, {"outputs": [b64(b"ba")]}),
        ({"inputs": {"t_bytes": [{"b64": "YWJjZA"}]}}, {"outputs": [b64(b"dcba")]}),  # unpadded
        ({"instances": [b64(b"ab"), b64(b"cd")]}, {"predictions": ["ba", "dc"]}),
        ({"instances": [{"i_bytes": b64(b"\xff")}]}, {"predictions": [b64(b"\xff")]}),
    ],
)
async def test_tfs_predict_answers_as_tf_serving(
    server: FakeServer, request_body: dict[str, Any], answer: dict[str, Any]
) -> None:
    status, body = await predict_raw(server, request_body)
    assert status == 200
    assert json.loads(body) == answer


async def test_tfs_bytes_that_are_not_utf8_are_written_as_they_are(server: FakeServer) -> None:
    status, body = await predict_raw(server, {"inputs": {"t": [b64(b"\x00\xfe")]}})
    assert status == 200
    assert body == b'{"outputs": ["\xfe\\u0000"]}'


@pytest.mark.parametrize(
    ("request_body", "error"),
    [
        ([1], "Request body should be JSON object"),
        ({}, "Could not detect row or column format"),
        ({"inputs": [1], "instances": [1]}, "Could not detect row or column format"),
        # OVMS's TF-Serving API has no boolean tensors.
        ({"inputs": [True, False]}, "Could not parse input content. Not valid ndarray detected"),
        ({"inputs": {"x": [[1], [True]]}}, "Could not parse input content"),
        ({"instances": [True]}, "Could not detect neither named or nonamed format"),
        ({"instances": [{"x": [True]}]}, "Could not parse instance content. Not valid ndarray"),
        # Not an ndarray: ragged, mixed, or neither numbers nor text.
        ({"inputs": {"x": [[1, 2], [3]]}}, "Could not parse input content"),
        ({"inputs": {"x": [1, "a"]}}, "Could not parse input content"),
        ({"inputs": {"x": [None]}}, "Could not parse input content"),
        ({"inputs": {"x": [{"b64": "!!"}]}}, "Could not parse input content"),
        ({"inputs": {"x": [{"b64": "YQ==", "more": 1}]}}, "Could not parse input content"),
        ({"instances": [{"x": [1]}, {"x": [1, 2]}]}, "Could not parse instance content"),
        ({"inputs": "text"}, "One of inputs is not a JSON object"),
        ({"inputs": {}}, "missing inputs"),
        ({"instances": 3}, "Nonamed instance is not an array"),
        ({"instances": []}, "Missing instances in row format"),
        ({"instances": [{"x": 1}, [1]]}, "One of named instances is not a JSON object"),
        ({"instances": [{"x": 1}, {"y": 1}]}, "Request inputs have different batch sizes"),
        ({"instances": [{}]}, "Could not parse instance content"),
    ],
)
async def test_tfs_predict_refuses_what_ovms_refuses(
    server: FakeServer, request_body: Any, error: str
) -> None:
    status, body = await predict_raw(server, request_body)
    assert status == 400
    assert error in json.loads(body)["error"]


# -- /v3 -----------------------------------------------------------------------------------------


async def test_v3_completions_embeddings_rerank(client: OVMS, server: FakeServer) -> None:
    c = await client.completions("say hi", model="llm", max_tokens=5, n=2)
    assert c.text == "echo: say hi"
    assert c.choices == ["echo: say hi", "echo: say hi"]
    assert c.usage is not None and c.usage.total_tokens == 5
    assert server.requests[-1].path == "/v3/completions"
    assert server.requests[-1].json == {"model": "llm", "prompt": "say hi", "max_tokens": 5, "n": 2}
    e = await client.embed(["a", "b"], model="emb")
    assert len(e.vectors) == 2
    assert server.requests[-1].path == "/v3/embeddings"
    r = await client.rerank(
        "red apple", ["green pear", "red apple pie", "apple"], model="rr", top_n=2,
        return_documents=True,
    )  # fmt: skip
    assert [x.index for x in r.results] == [1, 2]
    assert r.results[0].relevance_score == 1.0
    assert r.results[0].document == "red apple pie"
    assert server.requests[-1].json == {
        "model": "rr",
        "query": "red apple",
        "documents": ["green pear", "red apple pie", "apple"],
        "top_n": 2,
        "return_documents": True,
    }
    models = await client.models()
    assert server.requests[-1].path == "/v3/models"
    assert models


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("completions", (["a", "b"],), {"model": "m"}),
        ("completions", ("a",), {"model": "m", "echo": "yes"}),
        ("rerank", ("", ["a"]), {"model": "m"}),
        ("rerank", ("q", "a"), {"model": "m"}),
        ("rerank", ("q", []), {"model": "m"}),
        ("rerank", ("q", ["a"]), {"model": "m", "top_n": 0}),
    ],
)
async def test_v3_bad_arguments(
    client: OVMS, server: FakeServer, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        await getattr(client, method)(*args, **kwargs)
    assert server.request_count == 0


async def test_rerank_index_out_of_range_is_a_validation_error() -> None:
    transport = MockTransport(
        lambda request: MockResponse(json={"results": [{"index": 5, "relevance_score": 0.5}]})
    )
    client = OVMS(base_url="http://ovms.test", transport=transport)
    try:
        with pytest.raises(asyncllm.ResponseValidationError):
            await client.rerank("q", ["a"], model="m")
    finally:
        await client.aclose()


async def test_status_and_rerank_read_their_wire_forms() -> None:
    """Numbers where the models hold text, error fields nested in ``status``, and a document
    sent as ``{"text": ...}`` are read into the public models as they are."""
    answers = {
        "/v1/models/m": {
            "model_version_status": [
                {"version": 3, "state": "END", "status": {"error_code": 5, "error_message": "x"}},
                {"version": "4", "state": "AVAILABLE"},
            ]
        },
        "/v3/rerank": {
            "results": [
                {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
                {"index": 0, "relevance_score": 0.1, "document": "a"},
                {"index": 0, "relevance_score": 0.1},
            ]
        },
    }
    transport = MockTransport(
        lambda request: MockResponse(json=answers[request.url.split("test")[1]])
    )
    client = OVMS(base_url="http://ovms.test", model="m", transport=transport)
    try:
        statuses = await client.model_status()
        assert [s.model_dump() for s in statuses] == [
            {"version": "3", "state": "END", "error_code": "5", "error_message": "x"},
            {"version": "4", "state": "AVAILABLE", "error_code": None, "error_message": None},
        ]
        ranked = await client.rerank("q", ["a", "b"])
        assert [(r.index, r.document) for r in ranked.results] == [(1, "b"), (0, "a"), (0, None)]
    finally:
        await client.aclose()


async def test_v3_calls_use_the_pinned_model(client: OVMS, server: FakeServer) -> None:
    r = await client.chat([{"role": "user", "content": "pinned"}])
    assert r.text == "echo: pinned"
    async with client.stream_chat([{"role": "user", "content": "a b"}]) as stream:
        assert "".join([c.delta async for c in stream]) == "echo: a b"
    await client.embed("x")
    await client.completions("p")
    await client.rerank("q", ["a"])
    assert [r.json["model"] for r in server.requests] == ["fake-model"] * 5
    await client.chat([{"role": "user", "content": "other"}], model="llm")
    assert server.requests[-1].json["model"] == "llm"


async def test_v3_calls_need_a_model(server: FakeServer) -> None:
    client = OVMS(base_url=server.url())
    try:
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.chat([{"role": "user", "content": "x"}])
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            client.stream_chat([{"role": "user", "content": "x"}])
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.embed("x")
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.completions("x")
        with pytest.raises(asyncllm.ConfigurationError, match="model"):
            await client.rerank("q", ["a"])
    finally:
        await client.aclose()
    assert server.request_count == 0


class Reading(BaseModel):
    sensor: str
    values: list[float]


async def test_v3_structured_output_and_reasoning(client: OVMS, server: FakeServer) -> None:
    """A model goes as OpenAI's strict JSON schema (OVMS imposes it with XGrammar); a servable
    with a reasoning parser answers ``reasoning_content``, here when its template thinks."""
    thinking = {"chat_template_kwargs": {"enable_thinking": True}}
    ask = [{"role": "user", "content": "read it"}]
    r = await client.chat(ask, response_format=Reading, extra_body=thinking)
    sent = server.requests[-1]
    assert sent.path == "/v3/chat/completions"
    assert sent.json["response_format"]["type"] == "json_schema"
    assert sent.json["response_format"]["json_schema"]["strict"] is True
    assert sent.json["chat_template_kwargs"] == {"enable_thinking": True}
    assert r.parsed == Reading(sensor="test", values=[1.5])
    assert r.reasoning == "thinking about: read it"
    assert r.raw["choices"][0]["message"]["reasoning_content"] == r.reasoning
    async with client.stream_chat(ask, extra_body=thinking) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.reasoning for c in chunks) == r.reasoning
    plain = await client.chat(ask)
    assert (plain.reasoning, plain.text) == (None, "echo: read it")


async def test_v3_chat_is_cut_at_max_tokens(client: OVMS) -> None:
    r = await client.chat([{"role": "user", "content": "a b c"}], max_tokens=2)
    assert (r.text, r.finish_reason) == ("echo: a", "length")
    with pytest.raises(asyncllm.LengthFinishReasonError):
        await client.chat([{"role": "user", "content": "x"}], response_format=Reading, max_tokens=2)


# -- call options --------------------------------------------------------------------------------


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        OVMS("http://ovms.test")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bse_url"):
        OVMS(bse_url="http://ovms.test")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("infer", (), {"inputs": {"x": [1]}, "timout": 1.0}),
        ("predict", (), {"instances": [1], "extra_bdy": {}}),
        ("model_metadata", (), {"extra_body": {"a": 1}}),  # a GET sends no body
        ("server_metadata", (), {"priorty": 0}),
        ("server_live", (), {"extra_body": {"a": 1}}),
        ("model_ready", (), {"dedline": 1.0}),
        ("model_status", (), {"max_retry": 1}),
        ("tfs_model_metadata", (), {"extra_header": {}}),
        ("completions", ("p",), {"max_token": 5}),
        ("completions", ("p",), {"top_k": 5}),
        ("rerank", ("q", ["a"]), {"topn": 1}),
    ],
)
async def test_misspelt_option_is_a_type_error_unsent(
    client: OVMS, server: FakeServer, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        await getattr(client, method)(*args, **kwargs)
    assert server.request_count == 0


async def test_call_options_reach_the_wire(client: OVMS, server: FakeServer) -> None:
    await client.completions(
        "p",
        stop=["\n"],
        echo=True,
        extra_body={"ignore_eos": True},
        extra_headers={"x-tag": "t1"},
        extra_query={"trace": "1"},
        timeout=5.0,
        priority=0,
    )
    sent = server.requests[-1]
    assert sent.json == {
        "model": "fake-model",
        "prompt": "p",
        "stop": ["\n"],
        "echo": True,
        "ignore_eos": True,
    }
    assert sent.headers["x-tag"] == "t1"
    assert sent.query == {"trace": "1"}
    await client.infer(inputs={"x": [1]}, extra_body={"parameters": {"a": 1}}, parameters={"b": 2})
    assert server.requests[-1].json["parameters"] == {"b": 2, "a": 1}
    await client.rerank("q", ["a"], extra_body={"truncate": True})
    assert server.requests[-1].json["truncate"] is True
    assert await client.server_ready(extra_headers={"x-tag": "t2"}, timeout=1.0)
    assert server.requests[-1].headers["x-tag"] == "t2"


async def test_max_retries_per_call(client: OVMS, server: FakeServer) -> None:
    server.fail_next(1, status=503)
    with pytest.raises(asyncllm.APIStatusError):
        await client.model_status(max_retries=0)
    assert server.request_count == 1
    server.fail_next(1, status=503)
    assert await client.model_status()  # the client's retries apply again
    assert server.request_count == 3


async def test_with_options_keeps_the_pinned_version(server: FakeServer) -> None:
    client = OVMS(base_url=server.url(), model="fake-model", version=1, retry=NO_WAIT)
    try:
        fast = client.with_options(timeout=5.0)
        assert (await fast.infer(inputs={"x": [1]})).model_version == "1"
        assert "version='1'" in repr(fast)
    finally:
        await client.aclose()
