"""``text-generation`` (Hugging Face's TGI client, ``text_generation.AsyncClient``) against the TGI
fake, run in the ``tgi`` group's environment (tests/interop/envs/tgi.txt) by
tests/interop/test_tgi_sdk.py.

    python tgi_calls.py URL CASE [CASE ...]

The client posts every generation to the base URL itself (``POST /``): a JSON list holding one
answer when ``stream`` is false, server-sent events when it is true. Each case makes its calls,
checks what came back (content, types, token details, the order of stream events) and prints one
line ``RESULT <case> <json>`` for the test to assert on; a failed check exits non-zero with the
traceback. The client retries nothing (one aiohttp request per call) and reads no environment
variables; it always asks for details, and sends every parameter, unset ones as null.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

PROMPT = "hello there"
REPLY = "echo: hello there"


def report(case: str, **result: Any) -> None:
    print(f"RESULT {case} {json.dumps(result)}", flush=True)


def token_dict(token: Any) -> dict[str, Any]:
    assert isinstance(token.id, int) and isinstance(token.text, str)
    assert isinstance(token.special, bool)
    assert isinstance(token.logprob, float) and token.logprob <= 0, token
    return {"id": token.id, "text": token.text, "special": token.special}


async def generate(client: Any, tg: Any) -> None:
    from text_generation.types import FinishReason, Response

    out = await client.generate(PROMPT)
    assert isinstance(out, Response), type(out)
    assert out.generated_text == REPLY, out.generated_text  # the client asks for no prompt
    details = out.details
    assert details.finish_reason == FinishReason.EndOfSequenceToken
    tokens = [token_dict(t) for t in details.tokens]
    assert [t["text"] for t in tokens] == ["echo:", " hello", " there", "</s>"], tokens
    assert tokens[-1]["special"] and not any(t["special"] for t in tokens[:-1])
    assert details.generated_tokens == len(tokens)
    assert details.prefill == [] and details.seed is None
    assert details.top_tokens is None and details.best_of_sequences is None

    prefill = await client.generate(
        PROMPT, max_new_tokens=2, decoder_input_details=True, top_n_tokens=1, do_sample=True, seed=3
    )
    assert prefill.generated_text == "echo: hello"
    assert prefill.details.finish_reason == FinishReason.Length
    assert prefill.details.seed == 3  # TGI reports the seed of a sampled generation
    inputs = [(t.id, t.text, t.logprob) for t in prefill.details.prefill]
    assert [t[1] for t in inputs] == ["hello", " there"], inputs
    assert inputs[0][2] is None and isinstance(inputs[1][2], float)
    top = prefill.details.top_tokens
    assert top is not None and [len(step) for step in top] == [1, 1]

    stopped = await client.generate(PROMPT, stop_sequences=["hello"])
    assert stopped.generated_text == "echo: hello"
    assert stopped.details.finish_reason == FinishReason.StopSequence

    full = await client.generate(PROMPT, return_full_text=True)
    assert full.generated_text == PROMPT + REPLY

    report(
        "generate",
        text=out.generated_text,
        tokens=tokens,
        prefill=inputs,
        stopped=stopped.generated_text,
        full=full.generated_text,
    )


async def generate_stream(client: Any, tg: Any) -> None:
    from text_generation.types import FinishReason, StreamResponse

    events = [e async for e in client.generate_stream(PROMPT)]
    assert all(isinstance(e, StreamResponse) for e in events)
    tokens = [token_dict(e.token) for e in events]
    assert [t["text"] for t in tokens] == ["echo:", " hello", " there", "</s>"], tokens
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == REPLY
    assert last.details.finish_reason == FinishReason.EndOfSequenceToken
    assert last.details.generated_tokens == len(events)
    assert all(e.top_tokens is None for e in events)  # none asked for, none sent

    top = [e async for e in client.generate_stream(PROMPT, max_new_tokens=2, top_n_tokens=1)]
    assert [e.token.text for e in top] == ["echo:", " hello"]
    assert all(len(e.top_tokens) == 1 for e in top)
    assert top[-1].details.finish_reason == FinishReason.Length
    assert top[-1].generated_text == "echo: hello"

    full = [e async for e in client.generate_stream(PROMPT, return_full_text=True)]
    assert full[-1].generated_text == PROMPT + REPLY

    report(
        "generate_stream",
        tokens=tokens,
        generated_text=last.generated_text,
        finish_reason=last.details.finish_reason.value,
        full=full[-1].generated_text,
    )


async def errors(client: Any, tg: Any) -> None:
    """Run with the server scripted: first request 429, first stream fails after one token."""
    from text_generation.errors import GenerationError, OverloadedError, ValidationError

    caught: dict[str, Any] = {}
    try:
        await client.generate(PROMPT)
    except OverloadedError as exc:
        caught["overloaded"] = str(exc)
    else:
        raise AssertionError("a 429 with error_type overloaded did not raise OverloadedError")

    got: list[str] = []
    try:
        async for event in client.generate_stream(PROMPT):
            got.append(event.token.text)
    except GenerationError as exc:
        caught["generation"] = str(exc)
    else:
        raise AssertionError("an error event mid-stream did not raise GenerationError")
    assert got == ["echo:"], got

    try:  # the client checks few parameters itself; TGI checks the number of stop sequences
        await client.generate(PROMPT, stop_sequences=["a", "b", "c", "d", "e"])
    except ValidationError as exc:
        caught["validation"] = str(exc)
    else:
        raise AssertionError("five stop sequences did not raise ValidationError")

    try:  # TGI streams its validation errors as an event
        async for _ in client.generate_stream(PROMPT, stop_sequences=["a", "b", "c", "d", "e"]):
            raise AssertionError("a refused request streamed a token")
    except ValidationError as exc:
        caught["stream_validation"] = str(exc)
    else:
        raise AssertionError("five stop sequences did not raise ValidationError in the stream")

    report("errors", streamed=got, **caught)


CASES = {"generate": generate, "generate_stream": generate_stream, "errors": errors}


async def main(url: str, cases: list[str]) -> None:
    from importlib.metadata import version

    import text_generation as tg

    print(f"text-generation {version('text-generation')}", flush=True)
    client = tg.AsyncClient(url, timeout=30)
    for case in cases:
        await CASES[case](client, tg)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
