"""The ``tgi`` and ``tei`` fakes, driven by Hugging Face's own client (``huggingface_hub``'s
``AsyncInferenceClient`` with ``model=<the fake's URL>``).

Verified with huggingface_hub 2.4.0 (tests/interop/envs/hf.txt), which runs in its own environment:
tests/interop/hf_calls.py makes the calls and checks them, this module serves the fakes and checks
what they were sent and what the script saw. Where the SDK and the fakes disagree, the real servers
(TGI's and TEI's routers) are right.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from asyncllm.testing import FakeServer
from asyncllm.testing.fakes import _common, tei, tgi
from tests.interop import run_in_group

PROMPT = "hello there"
REPLY = "echo: hello there"


@dataclass
class Servers:
    tgi: FakeServer
    tei: FakeServer
    sick: FakeServer  # a TGI that says it is unhealthy

    async def run(self, *cases: str) -> dict[str, Any]:
        """Run ``cases`` in hf_calls.py; the ``RESULT`` line of each, by case."""
        out = await run_in_group(
            "hf",
            "hf_calls.py",
            f"tgi={self.tgi.url()}",
            f"tei={self.tei.url()}",
            f"sick={self.sick.url()}",
            *cases,
        )
        results = {}
        for line in out.splitlines():
            if line.startswith("RESULT "):
                _, case, payload = line.split(" ", 2)
                results[case] = json.loads(payload)
        assert sorted(results) == sorted(cases), out
        return results


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async with (
        FakeServer("tgi") as tgi_server,
        FakeServer("tei") as tei_server,
        FakeServer("tgi") as sick,
    ):
        sick.state["tgi_unhealthy"] = True
        yield Servers(tgi_server, tei_server, sick)


def sent(server: FakeServer) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, r.json) for r in server.requests]


async def test_text_generation(servers: Servers) -> None:
    result = (await servers.run("text_generation"))["text_generation"]
    assert result["full"] == PROMPT + REPLY
    assert result["text"] == result["details_text"] == REPLY
    assert [t["id"] for t in result["tokens"]] == [100, 101, 102, 2]
    assert result["prefill"] == [[10, "hello", None], [11, " there", -1.0]]
    assert (result["short"], result["stopped"]) == ("echo: hello", "echo: hello")
    requests = sent(servers.tgi)
    assert {(method, path) for method, path, _ in requests} == {("POST", "/")}
    # The SDK sends only what it was given: no "stream" flag is no stream.
    assert requests[0][2] == {"inputs": PROMPT, "parameters": {}}
    assert requests[1][2]["parameters"] == {"return_full_text": False}
    assert requests[2][2]["parameters"] == {
        "decoder_input_details": True,
        "details": True,
        "do_sample": True,
        "return_full_text": False,
        "seed": 7,
    }
    auth = servers.tgi.requests[0].headers["Authorization"]
    assert auth == "Bearer hf_interop_fake_token"


async def test_text_generation_stream(servers: Servers) -> None:
    result = (await servers.run("text_generation_stream"))["text_generation_stream"]
    assert result["pieces"] == ["echo:", " hello", " there", "</s>"]
    assert result["indexes"] == [1, 2, 3, 4]
    assert result["tokens"][-1] == {"id": 2, "text": "</s>", "special": True}
    assert result["generated_text"] == PROMPT + REPLY
    assert result["finish_reason"] == "eos_token"
    requests = sent(servers.tgi)
    assert [(m, p) for m, p, _ in requests] == [("POST", "/")] * 3
    assert all(body["stream"] is True for _, _, body in requests)
    assert requests[1][2]["parameters"] == {"details": True, "max_new_tokens": 10}


async def test_text_generation_errors_are_typed_and_not_retried(servers: Servers) -> None:
    servers.tgi.fail_next(1, status=429)
    servers.tgi.state["tgi_stream_errors"] = [(1, "generation")]
    result = (await servers.run("text_generation_errors"))["text_generation_errors"]
    assert result["overloaded"] == "injected 429"
    assert result["generation"] == "injected generation error"
    assert result["streamed"] == ["echo:"]
    assert "`temperature` must be strictly positive" in result["validation"]
    assert "`inputs` cannot be empty" in result["stream_validation"]
    assert servers.tgi.request_count == 4  # one request per call: the SDK retries nothing


async def test_chat_completion(servers: Servers) -> None:
    result = (await servers.run("chat"))["chat"]
    assert result["content"] == result["stream_text"] == REPLY
    assert result["system_fingerprint"]
    requests = sent(servers.tgi)
    assert [(m, p) for m, p, _ in requests] == [("POST", "/v1/chat/completions")] * 2
    # A URL is no model name: the SDK sends a placeholder, which TGI echoes back.
    assert requests[0][2]["model"] == result["model"] == "dummy"
    assert requests[0][2]["messages"] == [{"role": "user", "content": PROMPT}]
    assert requests[1][2]["stream"] is True


async def test_feature_extraction(servers: Servers) -> None:
    result = (await servers.run("feature_extraction"))["feature_extraction"]
    assert result["alpha"] == pytest.approx(_common.vector("alpha"), abs=1e-6)
    assert result["beta"] == pytest.approx(_common.vector("beta"), abs=1e-6)
    assert result["small"] == pytest.approx(_common.vector("alpha", 4), abs=1e-6)
    limit = tei.DEFAULT_MAX_CLIENT_BATCH_SIZE
    assert result["too_many"] == {
        "status": 413,
        "body": {
            "error": f"batch size 5 > maximum allowed batch size {limit}",
            "error_type": "Validation",
        },
    }
    requests = sent(servers.tei)
    assert {(m, p) for m, p, _ in requests} == {("POST", "/")}
    # Feature extraction sends its parameters beside the inputs, as TEI's /embed reads them.
    assert requests[0][2] == {"inputs": "alpha"}
    assert requests[2][2] == {"inputs": "alpha", "normalize": False}
    assert requests[3][2] == {"inputs": "alpha", "dimensions": 4}


async def test_endpoint_info_and_health(servers: Servers) -> None:
    result = (await servers.run("info"))["info"]
    assert result["tgi"]["model_id"] == tgi.MODEL_ID
    assert result["tgi"]["model_pipeline_tag"] == "text-generation"
    assert result["tei"]["model_id"] == tei.MODEL_ID
    assert result["health"] == {"tgi": True, "tei": True, "sick": False}
    assert sent(servers.tgi) == [("GET", "/info", None), ("GET", "/health", None)]
    assert sent(servers.tei) == [("GET", "/info", None), ("GET", "/health", None)]
    assert sent(servers.sick) == [("GET", "/health", None)]
