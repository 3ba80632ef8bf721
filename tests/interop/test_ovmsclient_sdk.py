"""The ``ovms`` fake's TF-Serving API, driven by OpenVINO Model Server's own client (``ovmsclient``).

Verified with ovmsclient 2023.1 (pinned in tests/interop/envs/ovmsclient.txt), its HTTP client
(``make_http_client``). The client runs in its own environment as a subprocess
(tests/interop/ovmsclient_calls.py), talking to a fake served by this test's loop. Where the client
and the fake disagree, real OVMS (up to 2026.2, the last release with the TF-Serving API) and
TF-Serving's JSON format are right. ovmsclient retries nothing.
"""

from __future__ import annotations

from asyncllm.testing import FakeServer
from tests.interop import run_in_group

CALLS = [
    "get_model_status: all versions, one version, unknown model and version",
    "get_model_metadata: default version, version 1, unknown model and version",
    "predict: one output (the value itself), floats and ints, version 1, a scalar",
    "predict: several outputs, by name",
    "predict: b64 bytes in, b64 out for *_bytes outputs, text otherwise",
    "predict: unknown model and version, booleans refused",
    "all ovmsclient calls passed",
]


async def test_every_ovmsclient_call() -> None:
    async with FakeServer("ovms") as server:
        host = server.url().removeprefix("http://")
        out = await run_in_group("ovmsclient", "ovmsclient_calls.py", host)
    assert out.splitlines() == CALLS

    # Every call named a version, 0 (the default) when the caller gave none.
    paths = [r.path for r in server.requests]
    assert all("/versions/" in p for p in paths), paths
    assert "/v1/models/fake-model/versions/0" in paths
    assert "/v1/models/fake-model/versions/0/metadata" in paths
    assert "/v1/models/fake-model/versions/0:predict" in paths
    # Predict went in the columnar form, bytes as b64.
    predicts = [r.json for r in server.requests if r.path.endswith(":predict")]
    assert all(set(body) == {"inputs"} for body in predicts)
    assert {"image_bytes": [{"b64": "AAH/"}, {"b64": "cG5nIQ=="}]} in [
        b["inputs"] for b in predicts
    ]
