"""``asyncllm.OVMS``'s KServe v2 calls against a real Open Inference Protocol server: MLServer.

MLServer (pinned in ``tests/interop/envs/mlserver.txt``, verified with 1.7.1) runs in its own
environment and process, ``mlserver start tests/interop/mlserver_model``, on free loopback ports
(HTTP and gRPC; its metrics server is off). It serves two versions of ``fake-model``, a model
written here (``mlserver_model/reflect.py``) that transforms tensors as the OVMS fake's
``fake-model`` does; the same model as ``café model+1``, a name that must be %-quoted in a path;
and ``unready``, whose load reports that it is not ready, so the server is not ready while it is
loaded. Where the client and the real server disagree the server is right; where the fake
answers the same request differently, the fake is fixed (see ``test_same_answer_as_the_fake``).

Measured on the shared 2-core machine: the environment installs in about 5 s from an empty uv
cache (3 s from a warm one); the server answers ready 4 to 11 s after it is started, as the load
on the machine goes; the module runs in 6 to 15 s in all.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

import asyncllm
from asyncllm.backends.ovms import OVMS, Tensor
from asyncllm.testing import FakeServer
from tests.interop import clean_environment, group_python

MODEL_DIR = Path(__file__).resolve().parent / "mlserver_model"
MODEL = "fake-model"
# A model whose name must be %-quoted in a path (mlserver_model/quoted-name).
QUOTED = "café model+1"
# How long the server may take to answer ready once started; it takes 4 to 11 s here.
START_DEADLINE = 60.0
STOP_GRACE = 10.0
# The first test also waits for the environment to be built (a few seconds from the registry):
# room for that and for the start deadline, more than the suite's 60 s per test.
pytestmark = pytest.mark.timeout(150)


def f32(value: float) -> float:
    """``value`` rounded to the nearest FP32, as a server that holds FP32 tensors answers it."""
    rounded: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return rounded


# -- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    url: str
    started_in: float  # seconds from the start to ready


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback now: all held at once, so no two are the same."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _status(port: int, path: str) -> int | None:
    """The status of ``GET path`` on loopback, or None while nothing answers there."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


# Ready means: every model is loaded; all can serve but ``unready``.
_READY_WHEN = {
    f"/v2/models/{MODEL}/versions/1/ready": 200,
    f"/v2/models/{MODEL}/versions/2/ready": 200,
    f"/v2/models/{urllib.parse.quote(QUOTED, safe='')}/ready": 200,
    "/v2/models/unready/ready": 400,
}


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after the grace."""
    if process.poll() is None:
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    process.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``mlserver start`` on free loopback ports, ready, and stopped at the end of the session
    (its whole process group, whatever happened). A port taken between choosing it and binding
    it gets a new start; a server that does not get ready within the deadline fails the test."""
    python = Path(group_python("mlserver"))
    workdir = tmp_path_factory.mktemp("mlserver")  # its cwd: anything it writes goes there
    for attempt in range(3):
        http_port, grpc_port = _free_ports(2)
        env = {k: v for k, v in clean_environment().items() if not k.startswith("MLSERVER")}
        env.update(
            MLSERVER_HTTP_PORT=str(http_port),
            MLSERVER_GRPC_PORT=str(grpc_port),
            PYTHONDONTWRITEBYTECODE="1",
        )
        log = workdir / f"mlserver-{attempt}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(python.parent / "mlserver"), "start", str(MODEL_DIR)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        try:
            pending = dict(_READY_WHEN)
            while pending and process.poll() is None:
                if time.monotonic() - started > START_DEADLINE:
                    pytest.fail(
                        f"MLServer was not ready within {START_DEADLINE:g} s:\n{_tail(log)}",
                        pytrace=False,
                    )
                for path, wanted in list(pending.items()):
                    if _status(http_port, path) == wanted:
                        del pending[path]
                if pending:
                    time.sleep(0.1)
            if process.poll() is None:
                running = Running(f"http://127.0.0.1:{http_port}", time.monotonic() - started)
                print(f"MLServer ready in {running.started_in:.1f} s on {running.url}")
                yield running
                return
            text = _tail(log)
            if not any(m in text.lower() for m in ("address already in use", "failed to bind")):
                pytest.fail(f"MLServer exited with {process.returncode}:\n{text}", pytrace=False)
        finally:
            _stop(process)
    pytest.fail(f"MLServer found no free ports in 3 starts:\n{_tail(log)}", pytrace=False)


@pytest.fixture
async def client(mlserver: Running) -> AsyncIterator[OVMS]:
    client = OVMS(base_url=mlserver.url, model=MODEL, max_retries=0, timeout=20.0)
    try:
        yield client
    finally:
        await client.aclose()


# -- health and metadata -------------------------------------------------------------------------


async def test_server_live(client: OVMS) -> None:
    assert await client.server_live() is True


async def test_model_ready(client: OVMS) -> None:
    assert await client.model_ready() is True
    assert await client.model_ready(version=1) is True
    assert await client.model_ready(MODEL, version="2") is True
    assert await client.model_ready("unready") is False  # 400: loaded, not ready
    assert await client.model_ready("no-such-model") is False  # 404
    assert await client.model_ready(version=3) is False  # 404


async def test_server_ready_follows_its_models(client: OVMS, mlserver: Running) -> None:
    """Not ready while ``unready`` is loaded; ready once it is unloaded (through MLServer's model
    repository API); not ready again when it is loaded back."""
    assert await client.server_ready() is False
    repository = f"{mlserver.url}/v2/repository/models/unready"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{repository}/unload") as response:
            assert response.status == 200
        try:
            assert await client.server_ready() is True
            assert await client.model_ready("unready") is False
        finally:
            async with session.post(f"{repository}/load") as response:
                assert response.status == 200
    assert await client.server_ready() is False
    assert await client.model_ready("unready") is False


async def test_server_metadata(client: OVMS) -> None:
    meta = await client.server_metadata()
    assert meta.name == "mlserver-asyncllm-interop"  # from mlserver_model/settings.json
    assert meta.version == "1.7.1"
    assert meta.extensions == []


@pytest.mark.parametrize("version", [None, 1, "2"])
async def test_model_metadata(client: OVMS, version: int | str | None) -> None:
    meta = await client.model_metadata(version=version)
    assert meta.name == MODEL
    assert meta.versions == ["1", "2"]
    assert meta.platform == "asyncllm-reflect"
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("input", "FP32", [-1, -1])]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [("output", "FP32", [-1, -1])]
    assert meta.model_extra == {"parameters": {}}  # MLServer's own field, kept as an extra
    assert meta.rt_info is None


async def test_model_metadata_of_a_model_that_declares_nothing(client: OVMS) -> None:
    meta = await client.model_metadata("unready")
    assert meta.name == "unready"
    assert meta.versions == [] and meta.inputs == [] and meta.outputs == []


# -- infer, one datatype at a time ---------------------------------------------------------------

CASES: dict[str, tuple[Any, Any]] = {
    "FP32": (
        [[0.5, -1.25, 0.1], [3.4028234663852886e38, -0.0, 7]],
        [[-0.5, 1.25, -f32(0.1)], [-3.4028234663852886e38, 0.0, -7.0]],
    ),
    "FP64": (
        [0.1, -2.5, 1.7976931348623157e308, 5e-324],
        [-0.1, 2.5, -1.7976931348623157e308, -5e-324],
    ),
    "INT32": (
        [-(2**31), -1, 0, 2**31 - 1],
        [-(2**31) + 1, 0, 1, -(2**31)],  # the top of the range wraps around
    ),
    "INT64": (
        [[-(2**63), -1, 0], [2**53 + 1, 12345678901234, 2**63 - 1]],
        [[-(2**63) + 1, 0, 1], [2**53 + 2, 12345678901235, -(2**63)]],
    ),
    "BOOL": ([[True, False], [False, True]], [[False, True], [True, False]]),
    "BYTES": (["abc", "", "héllo", "x y", b"ab\xc3\xa9"], ["cba", "", "olléh", "y x", "éba"]),
    "UINT8": ([0, 7, 255], [1, 8, 0]),
    "UINT16": ([0, 65535], [1, 0]),
    "UINT32": ([2**31, 2**32 - 1], [2**31 + 1, 0]),
    "UINT64": ([2**53 + 1, 2**64 - 1], [2**53 + 2, 0]),
    "INT8": ([-128, 127], [-127, -128]),
    "INT16": ([-32768, 32767], [-32767, -32768]),
    "FP16": ([-65504.0, 0.25, 0.1], [65504.0, -0.25, -0.0999755859375]),
}


@pytest.mark.parametrize("datatype", list(CASES))
async def test_infer_each_datatype(client: OVMS, datatype: str) -> None:
    data, expected = CASES[datatype]
    tensor = Tensor(data, datatype=datatype)
    answer = await client.infer(inputs={"x": tensor})
    assert list(answer) == ["output"]
    out = answer["output"]
    assert (out.name, out.datatype, out.shape) == ("output", datatype, tensor.shape)
    assert out.to_list() == expected
    assert answer.model_name == MODEL
    assert answer.model_version == "2"  # the latest version serves calls that name none


async def test_infer_numpy_arrays(client: OVMS) -> None:
    values = np.array([[1.5, -2.0], [0.1, 8.0]], dtype=np.float32)
    counts = np.array([1, 2, 3], dtype=np.int32)
    answer = await client.infer(inputs={"values": values, "counts": counts})
    assert [(o.datatype, o.shape) for o in answer.values()] == [("FP32", (2, 2)), ("INT32", (3,))]
    negated = answer["output"].to_numpy()
    assert negated.dtype == np.float32
    np.testing.assert_array_equal(negated, -values)  # FP32 in, FP32 out: exact
    np.testing.assert_array_equal(answer["output1"].to_numpy(), counts + 1)


async def test_infer_several_inputs_in_order(client: OVMS) -> None:
    answer = await client.infer(
        inputs={"a": [1.0, 2.0], "b": [[1, 2, 3]], "c": [True], "d": ["xyz"]},
    )
    assert list(answer) == ["output", "output1", "output2", "output3"]
    assert [answer[name].datatype for name in answer] == ["FP32", "INT64", "BOOL", "BYTES"]
    assert answer["output"].data == [-1.0, -2.0]
    assert answer["output1"].to_list() == [[2, 3, 4]]
    assert answer["output2"].data == [False]
    assert answer["output3"].data == ["zyx"]


async def test_infer_scalar_tensor(client: OVMS) -> None:
    answer = await client.infer(inputs={"x": Tensor(41, datatype="INT32")})
    assert answer["output"].shape == ()
    assert answer["output"].to_list() == 42


async def test_large_answer_comes_back_compressed(client: OVMS, mlserver: Running) -> None:
    """MLServer gzips answers (GZipMiddleware) when asked; the client asks and decodes them."""
    values = [float(i) for i in range(20_000)]
    body = {"inputs": [Tensor(values, datatype="FP64", name="x").to_wire()]}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            f"{mlserver.url}/v2/models/{MODEL}/infer",
            json=body,
            headers={"Accept-Encoding": "gzip"},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
    answer = await client.infer(inputs={"x": Tensor(values, datatype="FP64")})
    assert answer["output"].data == [-v for v in values]


async def test_tensor_parameters(client: OVMS) -> None:
    tensor = Tensor([1, 2], datatype="INT32", parameters={"content_type": "np", "note": [1, "n"]})
    answer = await client.infer(inputs={"x": tensor})
    assert answer["output"].parameters == {"content_type": "np", "note": [1, "n"]}
    assert answer["output"].data == [2, 3]


async def test_model_name_that_needs_quoting(client: OVMS) -> None:
    assert await client.model_ready(QUOTED) is True
    meta = await client.model_metadata(QUOTED)
    assert meta.name == QUOTED and meta.versions == []
    answer = await client.infer(QUOTED, {"x": [1.5]})
    assert answer.model_name == QUOTED
    assert answer.model_version is None  # a model with no version: the answer names none
    assert answer["output"].data == [-1.5]


# -- outputs, parameters, id, versions -----------------------------------------------------------


async def test_outputs_filter(client: OVMS) -> None:
    inputs = {"a": [1.0], "b": [True], "c": ["xy"]}
    answer = await client.infer(inputs=inputs, outputs=["output2"])
    assert list(answer) == ["output2"]
    assert answer["output2"].data == ["yx"]
    answer = await client.infer(
        inputs=inputs, outputs=[{"name": "output", "parameters": {"binary_data": False}}, "output1"]
    )
    assert list(answer) == ["output", "output1"]  # in the model's order
    assert answer["output"].data == [-1.0] and answer["output1"].data == [False]


async def test_parameters_and_id(client: OVMS) -> None:
    answer = await client.infer(
        inputs={"x": [1]}, parameters={"priority": 1, "tag": "a b"}, id="req-42"
    )
    assert answer.id == "req-42"
    assert answer.parameters == {"priority": 1, "tag": "a b"}
    assert answer["output"].data == [2]


async def test_server_chooses_an_id_when_none_is_sent(client: OVMS) -> None:
    answer = await client.infer(inputs={"x": [1]})
    assert isinstance(answer.id, str) and len(answer.id) == 36  # MLServer sends a UUID
    assert answer.parameters == {}  # MLServer always answers a parameters object
    again = await client.infer(inputs={"x": [1]})
    assert again.id != answer.id


async def test_version(client: OVMS, mlserver: Running) -> None:
    assert (await client.infer(inputs={"x": [1]}, version=1)).model_version == "1"
    assert (await client.infer(inputs={"x": [1]}, version="2")).model_version == "2"
    pinned = OVMS(base_url=mlserver.url, model=MODEL, version=1, max_retries=0)
    try:
        assert (await pinned.infer(inputs={"x": [1]})).model_version == "1"
        assert await pinned.model_ready() is True
        assert (await pinned.model_metadata()).name == MODEL
    finally:
        await pinned.aclose()
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.infer(inputs={"x": [1]}, version=3)
    assert info.value.status_code == 404
    assert info.value.message == "Model fake-model with version 3 not found"
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.model_metadata(version=3)
    assert info.value.message == "Model fake-model with version 3 not found"


# -- errors --------------------------------------------------------------------------------------


async def test_unknown_model(client: OVMS) -> None:
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.infer("no-such-model", {"x": [1]})
    assert info.value.status_code == 404
    assert info.value.message == "Model no-such-model not found"
    with pytest.raises(asyncllm.NotFoundError) as info:
        await client.model_metadata("no-such-model")
    assert info.value.message == "Model no-such-model not found"
    assert await client.model_ready("no-such-model") is False


async def test_unknown_output_and_unready_model_are_bad_requests(client: OVMS) -> None:
    with pytest.raises(asyncllm.BadRequestError) as info:
        await client.infer(inputs={"x": [1]}, outputs=["nope"])
    assert info.value.status_code == 400
    assert info.value.message == "Unknown output: nope"
    with pytest.raises(asyncllm.BadRequestError) as info:
        await client.infer("unready", {"x": [1]})
    assert info.value.message == "Model unready is not ready yet."


# -- the fake against the real server ------------------------------------------------------------


def _essentials(answer: Any) -> dict[str, Any]:
    return {
        "outputs": [(t.name, t.datatype, t.shape, t.data) for t in answer.values()],
        "model_name": answer.model_name,
        "model_version": answer.model_version,
        "id": answer.id,
        "parameters": answer.parameters,
    }


@pytest.mark.parametrize(
    "call",
    [
        {"inputs": {d.lower(): Tensor(CASES[d][0], datatype=d) for d in CASES}},
        {"inputs": {"a": [0.1, 2.5], "b": ["é!"]}, "outputs": ["output1"]},
        {"inputs": {"a": [[1, 2], [3, 4]]}, "version": 1},
    ],
    ids=["every-datatype", "outputs", "version"],
)
async def test_same_answer_as_the_fake(client: OVMS, call: dict[str, Any]) -> None:
    """The OVMS fake's ``fake-model`` and the model served here do the same thing, so the same
    request must get the same tensors, version, id and parameters from both. (The id and the
    parameters are always sent: without them MLServer makes up an id and answers empty
    parameters, the fake answers neither; the protocol allows both.)"""
    call = {**call, "id": "same-request", "parameters": {"k": [1, "v"]}}
    real = await client.infer(**call)
    async with FakeServer("ovms") as server:
        fake_client = OVMS(base_url=server.url(), model=MODEL, max_retries=0)
        try:
            faked = await fake_client.infer(**call)
        finally:
            await fake_client.aclose()
    assert _essentials(faked) == _essentials(real)
