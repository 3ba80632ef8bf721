"""``huggingface_hub``'s ``AsyncInferenceClient`` against the TGI and TEI fakes, run in the ``hf``
group's environment (tests/interop/envs/hf.txt) by tests/interop/test_hf_sdk.py.

    python hf_calls.py tgi=URL tei=URL sick=URL CASE [CASE ...]

``tgi`` and ``tei`` are the fakes' base URLs, passed as ``model=`` (an endpoint URL, so the client
talks to it directly: ``POST /`` for text generation and feature extraction,
``/v1/chat/completions`` for chat, ``GET /info`` and ``GET /health``); ``sick`` is a TGI fake that
reports itself unhealthy. Each case makes its calls, checks what came back (content, types, token
details, the order of stream events, and that every field the SDK declares as required is there)
and prints one line ``RESULT <case> <json>`` for the test to assert on. A failed check exits
non-zero with the traceback.

The client retries nothing by itself (one ``httpx`` request per call); the scripted faults in the
tests show that. The vendor's settings are cleared before the SDK is imported: no ``HF_*``
variable, a fresh ``HF_HOME`` (so no saved token), and an explicit fake token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
import tempfile
from typing import Any

PROMPT = "hello there"
REPLY = "echo: hello there"
TOKEN = "hf_interop_fake_token"  # a made-up token: the fakes take any


def clean_environment(home: str) -> None:
    for name in list(os.environ):
        if name.startswith(("HF_", "HUGGINGFACE_", "HUGGING_FACE_")):
            del os.environ[name]
    os.environ.update(
        HF_HOME=home,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        NO_PROXY="127.0.0.1,localhost",
    )


def complete(value: Any, where: str = "result") -> None:
    """Every field the SDK's type declares without a default came back (the SDK itself fills a
    missing field with None rather than failing, so this is where a thin answer shows)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            complete(item, f"{where}[{i}]")
        return
    if not dataclasses.is_dataclass(value):
        return
    for field in dataclasses.fields(value):
        got = getattr(value, field.name)
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        assert not (required and got is None), f"{where}.{field.name} is missing"
        complete(got, f"{where}.{field.name}")


def report(case: str, **result: Any) -> None:
    print(f"RESULT {case} {json.dumps(result)}", flush=True)


def token_dict(token: Any) -> dict[str, Any]:
    assert isinstance(token.id, int) and isinstance(token.text, str)
    assert isinstance(token.special, bool)
    assert isinstance(token.logprob, float) and token.logprob <= 0
    return {"id": token.id, "text": token.text, "special": token.special}


# -- TGI: text generation ----------------------------------------------------------------------


async def text_generation(client: Any, hub: Any) -> None:
    # TGI's POST / answers a model tagged text-generation with the prompt in front of the text,
    # unless the caller says otherwise.
    full = await client.text_generation(PROMPT)
    assert isinstance(full, str), type(full)
    assert full == PROMPT + REPLY, full

    text = await client.text_generation(PROMPT, return_full_text=False)
    assert text == REPLY, text

    out = await client.text_generation(
        PROMPT,
        details=True,
        return_full_text=False,
        decoder_input_details=True,
        do_sample=True,
        seed=7,
    )
    assert isinstance(out, hub.TextGenerationOutput), type(out)
    complete(out.details.tokens, "details.tokens")
    assert out.generated_text == REPLY
    details = out.details
    assert details.finish_reason == "eos_token"
    assert details.seed == 7  # TGI reports the seed of a sampled generation
    tokens = [token_dict(t) for t in details.tokens]
    assert [t["text"] for t in tokens] == ["echo:", " hello", " there", "</s>"], tokens
    assert [t["special"] for t in tokens] == [False, False, False, True]
    assert details.generated_tokens == len(tokens)
    # The first prompt token has no logprob (nothing comes before it); the others do.
    prefill = [(p.id, p.text, p.logprob) for p in details.prefill]
    assert [p[1] for p in prefill] == ["hello", " there"], prefill
    assert prefill[0][2] is None and isinstance(prefill[1][2], float)
    assert details.best_of_sequences is None

    short = await client.text_generation(
        PROMPT, details=True, max_new_tokens=2, return_full_text=False
    )
    assert short.generated_text == "echo: hello"
    assert short.details.finish_reason == "length" and short.details.generated_tokens == 2
    assert short.details.prefill == []
    assert short.details.seed is None  # greedy: no seed

    stopped = await client.text_generation(
        PROMPT, details=True, stop=["hello"], return_full_text=False
    )
    assert stopped.generated_text == "echo: hello"
    assert stopped.details.finish_reason == "stop_sequence"

    top = await client.text_generation(PROMPT, details=True, top_n_tokens=1)
    assert len(top.details.top_tokens) == len(top.details.tokens)
    assert all(len(step) == 1 for step in top.details.top_tokens)

    report(
        "text_generation",
        full=full,
        text=text,
        details_text=out.generated_text,
        tokens=tokens,
        prefill=prefill,
        short=short.generated_text,
        stopped=stopped.generated_text,
    )


async def text_generation_stream(client: Any, hub: Any) -> None:
    pieces = [p async for p in await client.text_generation(PROMPT, stream=True)]
    assert all(isinstance(p, str) for p in pieces), pieces
    assert pieces == ["echo:", " hello", " there", "</s>"], pieces

    events = [
        e
        async for e in await client.text_generation(
            PROMPT, stream=True, details=True, max_new_tokens=10
        )
    ]
    assert all(isinstance(e, hub.TextGenerationStreamOutput) for e in events)
    complete(events, "events")
    indexes = [e.index for e in events]
    assert indexes == list(range(1, len(events) + 1)), indexes  # TGI counts from 1
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.token.special and last.token.text == "</s>"
    assert last.generated_text == PROMPT + REPLY  # POST / defaults to the full text
    assert last.details.finish_reason == "eos_token"
    assert last.details.generated_tokens == len(events)
    assert last.details.input_length == 2
    assert last.details.seed is None

    cut = [
        e
        async for e in await client.text_generation(
            PROMPT, stream=True, details=True, max_new_tokens=2, return_full_text=False
        )
    ]
    assert [e.token.text for e in cut] == ["echo:", " hello"]
    assert cut[-1].generated_text == "echo: hello"
    assert cut[-1].details.finish_reason == "length"

    report(
        "text_generation_stream",
        pieces=pieces,
        indexes=indexes,
        tokens=[token_dict(e.token) for e in events],
        generated_text=last.generated_text,
        finish_reason=last.details.finish_reason,
    )


async def text_generation_errors(client: Any, hub: Any) -> None:
    """Run with the server scripted: first request 429, first stream fails after one token."""
    from huggingface_hub.errors import GenerationError, OverloadedError, ValidationError

    caught: dict[str, Any] = {}
    try:
        await client.text_generation(PROMPT)
    except OverloadedError as exc:
        caught["overloaded"] = str(exc)
    else:
        raise AssertionError("a 429 with error_type overloaded did not raise OverloadedError")

    got: list[str] = []
    try:
        async for piece in await client.text_generation(PROMPT, stream=True):
            got.append(piece)
    except GenerationError as exc:
        caught["generation"] = str(exc)
    else:
        raise AssertionError("an error event mid-stream did not raise GenerationError")
    assert got == ["echo:"], got

    try:
        await client.text_generation(PROMPT, temperature=-1.0)
    except ValidationError as exc:
        caught["validation"] = str(exc)
    else:
        raise AssertionError("a negative temperature did not raise ValidationError")

    try:
        async for _ in await client.text_generation("", stream=True):
            raise AssertionError("an empty prompt streamed a token")
    except ValidationError as exc:
        caught["stream_validation"] = str(exc)
    else:
        raise AssertionError("an empty prompt did not raise ValidationError in the stream")

    report("text_generation_errors", streamed=got, **caught)


# -- TGI: chat ---------------------------------------------------------------------------------


async def chat(client: Any, hub: Any) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    out = await client.chat_completion(messages, max_tokens=20)
    assert isinstance(out, hub.ChatCompletionOutput), type(out)
    complete(out)
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == REPLY
    assert choice.finish_reason == "stop"
    usage = out.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0

    chunks = [
        c
        async for c in await client.chat_completion(
            messages, stream=True, stream_options={"include_usage": True}
        )
    ]
    assert all(isinstance(c, hub.ChatCompletionStreamOutput) for c in chunks)
    complete(chunks, "chunks")
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == REPLY, text
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}, finishes
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    report(
        "chat",
        content=choice.message.content,
        model=out.model,
        system_fingerprint=out.system_fingerprint,
        stream_text=text,
        chunks=len(chunks),
        usage=chunks[-1].usage.total_tokens,
    )


# -- TEI: feature extraction -------------------------------------------------------------------


async def feature_extraction(client: Any, hub: Any) -> None:
    import numpy as np
    from huggingface_hub.errors import HfHubHTTPError

    one = await client.feature_extraction("alpha")
    assert isinstance(one, np.ndarray) and one.dtype == np.float32, type(one)
    assert one.shape == (1, 8), one.shape
    assert math.isclose(float(np.linalg.norm(one[0])), 1.0, rel_tol=1e-5)

    two = await client.feature_extraction(["alpha", "beta"])
    assert two.shape == (2, 8), two.shape
    assert np.allclose(two[0], one[0])
    assert not np.allclose(two[0], two[1])

    raw = await client.feature_extraction("alpha", normalize=False)
    assert math.isclose(float(np.linalg.norm(raw[0])), 2.0, rel_tol=1e-5)

    small = await client.feature_extraction("alpha", dimensions=4)
    assert small.shape == (1, 4), small.shape

    try:
        await client.feature_extraction(["a", "b", "c", "d", "e"])
    except HfHubHTTPError as exc:
        status = exc.response.status_code
        body = exc.response.json()
    else:
        raise AssertionError("a batch over max_client_batch_size did not fail")
    assert status == 413, status

    report(
        "feature_extraction",
        alpha=one[0].tolist(),
        beta=two[1].tolist(),
        small=small[0].tolist(),
        too_many={"status": status, "body": body},
    )


# -- both: endpoint info and health ------------------------------------------------------------


async def info(clients: dict[str, Any], hub: Any) -> None:
    tgi = await clients["tgi"].get_endpoint_info()
    tei = await clients["tei"].get_endpoint_info()
    assert isinstance(tgi, dict) and isinstance(tei, dict)
    health = {name: await client.health_check() for name, client in clients.items()}
    assert health == {"tgi": True, "tei": True, "sick": False}, health
    report(
        "info",
        tgi=tgi,
        tei=tei,
        health=health,
    )


CASES = {
    "text_generation": ("tgi", text_generation),
    "text_generation_stream": ("tgi", text_generation_stream),
    "text_generation_errors": ("tgi", text_generation_errors),
    "chat": ("tgi", chat),
    "feature_extraction": ("tei", feature_extraction),
    "info": (None, info),
}


async def main(urls: dict[str, str], cases: list[str]) -> None:
    import huggingface_hub as hub

    print(f"huggingface_hub {hub.__version__}", flush=True)
    clients = {
        # provider="hf-inference" is what a URL resolves to; endpoint info and health checks
        # refuse any other.
        name: hub.AsyncInferenceClient(model=url, token=TOKEN, provider="hf-inference")
        for name, url in urls.items()
    }
    try:
        for case in cases:
            target, run = CASES[case]
            await run(clients if target is None else clients[target], hub)
    finally:
        for client in clients.values():
            await client.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    urls = dict(a.split("=", 1) for a in args if "=" in a)
    with tempfile.TemporaryDirectory() as home:
        clean_environment(home)
        asyncio.run(main(urls, [a for a in args if "=" not in a]))
