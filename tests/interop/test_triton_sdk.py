"""The ``ovms`` fake's KServe v2 API, driven by Triton's own client (``tritonclient.http.aio``).

Verified with tritonclient[http] 2.73.0 (pinned in tests/interop/envs/triton.txt). The SDK runs in
its own environment as a subprocess (tests/interop/triton_calls.py), talking to a fake served by
this test's loop. Where the SDK and the fake disagree, real OVMS (its REST handler and KServe
frontend) and the binary tensor extension of the KServe v2 protocol are right. tritonclient
retries nothing; it reads no settings from the environment.
"""

from __future__ import annotations

import json

from asyncllm.testing import FakeServer
from tests.interop import run_in_group

CALLS = [
    "health: live, ready, model ready",
    "metadata: server, model, version 1, errors, no config endpoint",
    "infer: FP32, INT64, BOOL, BYTES in binary, outputs in JSON",
    "infer: FP32, INT64, BOOL, BYTES in binary, outputs in binary",
    "infer: BYTES that are not UTF-8, in binary (and refused by the SDK in JSON)",
    "infer: inputs and outputs in JSON, outputs filtered",
    "infer: binary and JSON outputs in one answer",
    "infer: UINT8..UINT64, INT8..INT32, FP64 in binary, outputs both ways",
    "infer: versions 1 and 0, unknown model and version, bad binary size, unknown output",
    "all tritonclient calls passed",
]


async def test_every_tritonclient_call() -> None:
    async with FakeServer("ovms") as server:
        host = server.url().removeprefix("http://")
        out = await run_in_group("triton", "triton_calls.py", host)
    assert out.splitlines() == CALLS

    # The SDK used the binary tensor extension: a JSON header of the length it announced,
    # followed by the tensors' raw bytes.
    infers = [r for r in server.requests if r.path.endswith("/infer")]
    binary = [r for r in infers if "Inference-Header-Content-Length" in r.headers]
    assert binary and len(binary) < len(infers)  # and JSON-only requests too
    for r in binary:
        size = int(r.headers["Inference-Header-Content-Length"])
        header = json.loads(r.body[:size])
        sizes = [t["parameters"]["binary_data_size"] for t in header["inputs"]]
        assert len(r.body) == size + sum(sizes)
        assert all("data" not in t for t in header["inputs"])
    # The probes and metadata went where OVMS serves them.
    paths = {r.path for r in server.requests if r.method == "GET"}
    assert {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/fake-model",
        "/v2/models/fake-model/ready",
        "/v2/models/fake-model/versions/1/ready",
        "/v2/models/fake-model/versions/1",
        "/v2/models/fake-model/config",
    } <= paths
