"""Property tests: bad input gets a clear typed error before anything is sent, for every backend
in the registry (``tests/fuzz/registry.py``).

Random arguments to every public method end in one of two ways: a ``ConfigurationError`` raised
before any request reaches the transport, or requests that are sent (strict JSON bodies, with no
NaN or Infinity, that the backend's own schema accepts where the repository checks one; header
values that cannot split a header; the URL the method means) and then a normal return from a
valid canned reply. Never an untyped exception, never a hang, and the caller's arguments are left
as they were.

Bugs found in the backends are fixed there, with a plain regression test below; bugs found in
shared code are reported, each with a strict xfail test, and the random runs leave out the inputs
that would hit them (each entry's ``skip``) so that they keep finding new ones.
"""

from __future__ import annotations

import asyncio
import json
import math
import typing
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import SecretStr

import asyncllm
from asyncllm._http import _json
from asyncllm._http._transport import Request
from asyncllm.backends.ovms import _FLOAT_MAX, _INT_RANGES, DATATYPES, Tensor
from asyncllm.testing import MockTransport
from tests.fuzz import answers
from tests.fuzz.harness import (
    FUZZ_SETTINGS,
    HANG,
    URL,
    Method,
    calls,
    check_headers,
    finish,
    keywords,
    outcome,
    public_methods,
    refused,
    run_examples,
    segments,
    strict_json,
    undeclared,
)
from tests.fuzz.registry import (
    BACKENDS,
    CLAUDE,
    GEMINI,
    GROQ,
    LLVM,
    OLLAMA,
    OPEA_ENTRY,
    OPENAI,
    OVMS_ENTRY,
    TEI,
    TGI,
    VLLM,
    alone,
    ovms_validator,
)
from tests.fuzz.values import (
    USER,
    Answer,
    Opaque,
    cycle,
    deep,
    deeply_nested,
    hostile,
    hostile_scalars,
    json_object,
    json_ok,
    json_values,
    model_names,
    numpy_dtypes,
    path_hostile,
    priorities_ok,
    tensor_values,
    text,
    timeouts_ok,
)
from tests.helpers import client as openai_client
from tests.helpers import ok

SETTINGS = settings(FUZZ_SETTINGS, max_examples=100)
CASES = {b.label(m): (b, m) for b in BACKENDS.values() for m in b.methods}

# -- every method, every backend -------------------------------------------------------------------


def _skipped(backend: Any, method: Method, kwargs: dict[str, Any]) -> bool:
    return backend.skip is not None and backend.skip(method, kwargs)


@pytest.mark.parametrize("label", sorted(CASES))
def test_input_is_sent_or_refused(label: str) -> None:
    """Each optional argument given or not, up to two of them bad; each entry's own number of
    examples a method (its call options are drawn too)."""
    backend, method = CASES[label]

    def one(data: st.DataObject) -> None:
        args, kwargs, bad = data.draw(calls(method), label="(args, kwargs, bad ones)")
        assume(not _skipped(backend, method, kwargs))
        # Bad values passed through by design, and the caller's own fields: no schema vouches.
        raw = any(a.raw is not None and a.name in bad and a.raw(bad[a.name]) for a in method.args)
        extra = any(kwargs.get(k) for k in ("extra_body", "extra_parameters"))
        outcome(
            backend, method.name, args, kwargs,
            client=method.client, validate=not (raw or extra), empty=method.empty,
        )  # fmt: skip

    run_examples(backend.examples, label, one)


@pytest.mark.parametrize("label", sorted(CASES))
@settings(FUZZ_SETTINGS, max_examples=10)
@given(data=st.data())
def test_an_undeclared_keyword_is_a_type_error_unsent(label: str, data: st.DataObject) -> None:
    """Good arguments plus one keyword the method declares neither in its signature nor in its
    **options TypedDict: a TypeError, with nothing sent, whatever else the call is given."""
    backend, method = CASES[label]
    args, kwargs, _ = data.draw(calls(method, faults=False), label="(args, kwargs)")
    assume(not _skipped(backend, method, kwargs))
    bad = data.draw(st.sampled_from(undeclared(keywords(backend.cls, method.name))), label="bad")
    kwargs[bad] = data.draw(st.sampled_from([0, None, "x", {}]), label="value")

    async def run() -> None:
        transport = MockTransport(backend.reply)
        client = backend.make(transport, **method.client)
        try:
            try:
                await finish(getattr(client, method.name)(*args, **kwargs))
            except TypeError as exc:
                assert "unexpected keyword argument" in str(exc)
            except asyncllm.ConfigurationError:
                # Refused for another argument first: only if that one is refused by itself.
                with pytest.raises(asyncllm.ConfigurationError):
                    rest = {k: v for k, v in kwargs.items() if k != bad}
                    await finish(getattr(client, method.name)(*args, **rest))
            else:
                raise AssertionError(f"{bad}= was taken")
            assert not transport.requests
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(run(), HANG))


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_public_method_is_fuzzed(name: str) -> None:
    backend = BACKENDS[name]
    if not backend.methods:
        pytest.skip(f"{backend.cls.__name__} does not import on this tree")
    assert {m.name for m in backend.methods} == set(public_methods(backend.cls))


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_client_settings_are_checked_before_anything_is_sent(name: str) -> None:
    """A client is refused at construction, or its first call sends one clean request to the
    host it was given (or is refused unsent)."""
    backend = BACKENDS[name]
    probe = backend.probe
    method = Method("__init__", probe.args)

    def one(data: st.DataObject) -> None:
        _, given_settings, _ = data.draw(calls(method), label="(_, settings, bad ones)")
        own = {**probe.fixed, **given_settings}
        sent = outcome(backend, probe.method, probe.call_args, dict(probe.call_kwargs), own=own)
        assert len(sent) <= 1, sent

    run_examples(probe.examples, f"settings-{name}", one)


# -- calls that split their inputs into chunks: one input that cannot be sent among many ----------

unsendable_texts = st.builds(
    lambda head, bad, tail: head + bad + tail, text, st.sampled_from(["\ud800", "\udfff"]), text
)
unsendable_values = unsendable_texts | st.sampled_from(
    [math.nan, math.inf, b"x", frozenset(), Opaque(), {(1, 2): 1}]
)
predict_item = text | st.tuples(text, text)
BATCHED = {
    "tei.embed": ("inputs", text, unsendable_texts),
    "tei.embed_sparse": ("inputs", text, unsendable_texts),
    "tei.embed_all": ("inputs", text, unsendable_texts),
    "tei.predict": ("inputs", predict_item, unsendable_texts),
    "tei.rerank": ("texts", text, unsendable_texts),
    "llvm.infer_many[batch_size=2]": ("inputs", json_ok, unsendable_values),
    "llvm.batch_infer": ("inputs", json_ok, unsendable_values),
}


@pytest.mark.parametrize("label", sorted(BATCHED))
@SETTINGS
@given(data=st.data())
def test_one_unsendable_input_among_many_sends_no_chunk(label: str, data: st.DataObject) -> None:
    """Calls that split their inputs into chunks refuse all of them, before any is sent."""
    backend, method = CASES[label]
    pname, element, bad = BATCHED[label]
    args, kwargs, _ = data.draw(calls(method, faults=False), label="kwargs")
    good = data.draw(st.lists(element, min_size=1, max_size=6), label="good")
    position = data.draw(st.integers(0, len(good)), label="position")
    kwargs[pname] = [*good[:position], data.draw(bad, label="bad"), *good[position:]]
    refused(backend, method.name, *args, client=method.client, **kwargs)


# -- OVMS tensors: every datatype, shape and form ----------------------------------------------------


def _fits(value: Any, datatype: str) -> bool:
    """What the KServe v2 datatype table allows, written out apart from the code under test."""
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return type(value) is int and low <= value <= high
    if datatype in _FLOAT_MAX:
        return (
            type(value) in (int, float)
            and math.isfinite(value)
            and abs(value) <= _FLOAT_MAX[datatype]
        )
    return isinstance(value, str)


def _nest(flat: list[Any], dims: list[int]) -> Any:
    if not dims:
        return flat[0]
    if len(dims) == 1:
        return flat
    step = math.prod(dims[1:])
    return [_nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


wrong_elements = (
    st.sampled_from([-1, 256, 2**31, 2**63, 2**64, -(2**63) - 1, 1e39, 70000.0, math.nan])
    | st.sampled_from(DATATYPES).flatmap(tensor_values)
    | hostile_scalars
)


@st.composite
def tensor_cases(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    """Data and Tensor keywords: a datatype's own values, sometimes with wrong ones among them,
    nested or flat, with the shape given or inferred, an element short or over, rows ragged."""
    datatype = draw(st.sampled_from(DATATYPES))
    dims = draw(st.lists(st.integers(0, 3), max_size=4))
    count = math.prod(dims)
    values = tensor_values(datatype)
    elements = values | wrong_elements if draw(st.booleans()) else values
    flat = draw(st.lists(elements, min_size=count, max_size=count))
    form = draw(st.sampled_from(["nested", "nested+shape", "flat+shape", "numpy"]))
    kwargs: dict[str, Any] = {}
    if form == "numpy":
        data: Any = np.array(flat, dtype=object).reshape(dims)
        if draw(st.booleans()):  # typed, where the values fit the dtype
            try:
                with np.errstate(all="ignore"):
                    data = data.astype(draw(numpy_dtypes))
            except (TypeError, ValueError, OverflowError):
                pass
    else:
        data = _nest(flat, dims) if form.startswith("nested") and count else flat
    if form.endswith("shape"):
        kwargs["shape"] = dims
    change = draw(st.sampled_from(["none", "none", "short", "over", "ragged", "shape", "dtype"]))
    if change == "short" and isinstance(data, list) and data:
        data = data[:-1]
    elif change == "over" and isinstance(data, list):
        data = [*data, data[0] if data else 0]
    elif change == "ragged" and isinstance(data, list) and data and isinstance(data[-1], list):
        data = [*data[:-1], data[-1][:-1]]
    elif change == "shape":
        kwargs["shape"] = draw(hostile | st.lists(st.integers(-1, 4), max_size=4))
    elif change == "dtype":
        kwargs["datatype"] = draw(st.sampled_from(["fp32", "Int8", "INT4", "FP8", ""]) | hostile)
    if "datatype" not in kwargs and draw(st.booleans()):
        kwargs["datatype"] = datatype
    if draw(st.booleans()):
        kwargs["parameters"] = draw(json_object | hostile)
    return data, kwargs


async def _infer_echo(tensor: Tensor) -> tuple[Any, list[Request]]:
    transport = MockTransport(OVMS_ENTRY.reply)
    client = OVMS_ENTRY.make(transport)
    try:
        try:
            answer = await client.infer(inputs={"x": tensor})
        except asyncllm.ConfigurationError:
            answer = None
        return answer, list(transport.requests)
    finally:
        await client.aclose()


def check_tensor(build: Any) -> None:
    """A Tensor that can be built follows the protocol, is sent, and comes back equal; only its
    free-form parameters may keep it from being sent (unsent, as ConfigurationError)."""
    try:
        with np.errstate(all="ignore"):
            tensor = build()
    except asyncllm.ConfigurationError:
        return
    wire = tensor.to_wire("x")
    assert wire["datatype"] in DATATYPES
    assert all(type(d) is int and d >= 0 for d in wire["shape"])
    assert len(wire["data"]) == math.prod(wire["shape"])
    assert all(_fits(v, wire["datatype"]) for v in wire["data"]), wire
    answer, sent = asyncio.run(_infer_echo(tensor))
    if answer is None:
        assert tensor.parameters and not sent
        return
    (request,) = sent
    validator = ovms_validator("/v2/models/m/infer")
    assert validator is not None
    assert list(validator.iter_errors(strict_json(request.content or b""))) == []
    assert answer["x"] == tensor


@SETTINGS
@given(case=tensor_cases())
def test_random_tensors_are_built_and_sent_or_refused(case: tuple[Any, dict[str, Any]]) -> None:
    data, kwargs = case
    check_tensor(lambda: Tensor(data, **kwargs))


odd_numpy_dtypes = numpy_dtypes | st.sampled_from(["complex64", "datetime64[s]", "U3", "S3"])


@SETTINGS
@given(
    array=hnp.arrays(
        odd_numpy_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
    ),
    datatype=st.none() | st.sampled_from(DATATYPES) | hostile,
    shape=st.none() | st.lists(st.integers(0, 4), max_size=3) | hostile,
)
def test_numpy_arrays_are_built_and_sent_or_refused(array: Any, datatype: Any, shape: Any) -> None:
    check_tensor(lambda: Tensor.from_numpy(array, datatype=datatype))
    check_tensor(lambda: Tensor(array, datatype=datatype, shape=shape))


# -- LLVM: concurrent calls that share micro-batches ------------------------------------------------

llvm_calls = st.lists(
    st.fixed_dictionaries(
        {"model_id": st.just("m") | model_names | path_hostile, "input": json_ok | hostile},
        optional={
            "parameters": st.just({}) | json_object | hostile,
            "priority": priorities_ok | hostile,
            "timeout": timeouts_ok | hostile,
            "deadline": timeouts_ok | hostile,
        },
    ),
    min_size=1,
    max_size=6,
)


def _short_limit(kwargs: dict[str, Any]) -> bool:
    """A timeout or deadline under a second may run out even against an instant reply."""
    return any(
        isinstance(kwargs.get(k), (int, float)) and kwargs[k] < 1 for k in ("timeout", "deadline")
    )


@SETTINGS
@given(calls_=llvm_calls)
def test_concurrent_micro_batched_infers_are_each_sent_or_refused(
    calls_: list[dict[str, Any]],
) -> None:
    """Each call of a micro-batch gets its own result or its own ConfigurationError; the
    batches sent carry exactly the inputs of the calls that returned, each answered to its own."""

    async def run() -> None:
        transport = MockTransport(LLVM.reply)
        client = LLVM.make(transport, batch_size=3, batch_wait=0.001)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.infer(**kw) for kw in calls_), return_exceptions=True),
                HANG,
            )
        finally:
            await client.aclose()
        returned = timed_out = 0
        for kw, result in zip(calls_, results, strict=True):
            if isinstance(result, asyncllm.APITimeoutError) and _short_limit(kw):
                timed_out += 1
            elif not isinstance(result, asyncllm.ConfigurationError):
                assert not isinstance(result, BaseException), repr(result)
                batched = {"echo": json.loads(json.dumps(kw["input"]))}
                outputs = (answers.LLVM_ALONE, batched) if alone(kw) else (batched,)
                assert result.output in outputs
                returned += 1
        sent = 0
        for request in transport.requests:
            check_headers(request)
            if segments(request.url)[-1] == "infer":  # a call sent alone
                sent += 1
                continue
            assert segments(request.url)[-1] == "batch_infer"
            sent += len(strict_json(request.content or b"")["inputs"])
        assert returned <= sent <= returned + timed_out

    asyncio.run(run())


# -- what the fuzzing found, fixed in the backends: the smallest examples ----------------------------


# (backend, method, args, kwargs, message, client settings)
FOUND = [
    # Claude: a system that is no list of blocks was iterated (TypeError, ValueError).
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "system": 5}, "system must be", {}, id="claude-system-int"),
    pytest.param(CLAUDE, "count_tokens", (USER,), {"model": "m", "system": {"a": 1}}, "system must be", {}, id="claude-system-dict"),
    # Claude: images in system messages were sent as image blocks in "system", which takes text.
    pytest.param(CLAUDE, "chat", ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}, *USER],), {"model": "m"}, "only text blocks in the system prompt", {}, id="claude-system-image"),
    # Claude: a function tool_choice without a name was sent as {"type": "function"}.
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "tool_choice": {"type": "function"}}, "needs a function name", {}, id="claude-tool-choice-no-name"),
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "tool_choice": ""}, "tool_choice must be", {}, id="claude-tool-choice-empty"),
    # Claude: betas that are no list were iterated (TypeError).
    pytest.param(CLAUDE, "models", (), {}, "betas must be", {"betas": 5}, id="claude-betas-int"),
    # Claude: a default max_tokens of None was sent as "max_tokens": null.
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m"}, "max_tokens must be", {"max_tokens": None}, id="claude-default-max-tokens-none"),
    # Ollama: a host that is no string was stripped (AttributeError).
    pytest.param(OLLAMA, "version", (), {}, "must be a string", {"base_url": 5}, id="ollama-host-int"),
    # Gemini: a page_size of None was sent as "pageSize=None".
    pytest.param(GEMINI, "models", (), {"page_size": None}, "page_size must be", {}, id="gemini-page-size-none"),
    # Gemini and Ollama: a text part's text that is no string was sent as str() of it ("None").
    pytest.param(GEMINI, "chat", ([{"role": "user", "content": [{"type": "text", "text": None}]}],), {"model": "g"}, "text part", {}, id="gemini-text-part-none"),
    pytest.param(OLLAMA, "chat", ([{"role": "user", "content": [{"type": "text"}]}],), {"model": "m"}, "text part", {}, id="ollama-text-part-missing"),
    # Gemini: native parts (gemini_parts) that are no dicts were given to dict() (TypeError).
    pytest.param(GEMINI, "chat", ([*USER, {"role": "assistant", "content": "x", "gemini_parts": [5]}],), {"model": "g"}, "gemini_parts must be", {}, id="gemini-native-parts-int"),
    # Gemini: JSON schemas (response_format, tool parameters) of the wrong shape were walked
    # into (AttributeError, TypeError), and deep or cyclic ones into a RecursionError. Since #14
    # (tools sent as parametersJsonSchema) gemini_json_schema walks them into one again.
    pytest.param(GEMINI, "stream_chat", (USER,), {"model": "g", "tools": [{"name": "f", "parameters": deep(2000)}]}, "nested too deeply", {}, id="gemini-schema-deep"),
    pytest.param(GEMINI, "count_tokens", (USER,), {"model": "g", "tools": [{"name": "f", "parameters": cycle()}]}, "nested too deeply", {}, id="gemini-schema-cycle"),
    # Ollama: pull's stream flag was sent as given ("stream": []); known options were sent
    # with the wrong type; embed iterated inputs it could not (TypeError).
    pytest.param(OLLAMA, "pull", ("llama3",), {"stream": []}, "stream must be a bool", {}, id="ollama-pull-stream-list"),
    pytest.param(OLLAMA, "chat", (USER,), {"model": "m", "options": {"temperature": "hot"}}, r"options\['temperature'\] must be a number", {}, id="ollama-options-temperature-str"),
    pytest.param(OLLAMA, "embed", (True,), {"model": "m"}, "inputs must be", {}, id="ollama-embed-bool"),
    # OPEA: unhashable service names and summary types (TypeError); form fields that aiohttp
    # cannot write (UnicodeEncodeError, only when sending); a path too long for the file system
    # (OSError); inputs and documents that cannot be iterated (TypeError). (Form fields from
    # extra_body are gone with extra_body on form calls: see test_a_form_call_takes_no_extra_body.)
    pytest.param(OPEA_ENTRY, "health", (["gateway"],), {}, "unknown OPEA service", {}, id="opea-health-list"),
    pytest.param(OPEA_ENTRY, "docsum", ("t",), {"summary_type": ["auto"]}, "summary_type must be", {}, id="opea-summary-type-list"),
    pytest.param(OPEA_ENTRY, "faqgen", ("\ud800",), {}, "not valid text", {}, id="opea-form-lone-surrogate"),
    pytest.param(OPEA_ENTRY, "faqgen", ("t",), {"files": [("a\r\nb.txt", b"x")]}, "control character", {}, id="opea-file-name-crlf"),
    pytest.param(OPEA_ENTRY, "docsum", (), {"files": ["x" * 5000]}, "not a readable file", {}, id="opea-file-path-too-long"),
    pytest.param(OPEA_ENTRY, "embed", (True,), {}, "inputs must be", {}, id="opea-embed-bool"),
    pytest.param(OPEA_ENTRY, "rerank", ("q", True), {}, "documents must be", {}, id="opea-rerank-bool"),
    # OPEA: a None in an embedding passed the number check and met float() (TypeError).
    pytest.param(OPEA_ENTRY, "retrieve", ("q", [0.1, None]), {}, "embedding values must be numbers", {}, id="opea-retrieve-none"),
]  # fmt: skip


@pytest.mark.parametrize(("backend", "method", "args", "kwargs", "message", "client"), FOUND)
def test_found_bad_input_is_refused_before_sending(
    backend: Any,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
    client: dict[str, Any],
) -> None:
    refused(backend, method, *args, client=client, match=message, **kwargs)


# Found: extra_body fields that aiohttp could not write (bytes, NaN, a name with a newline) went
# into OPEA's multipart forms. The form calls now take only the HTTP options: FaqGen (always a
# form) has no extra_body keyword, and DocSum with files refuses one.
FORM_EXTRA_BODY = [
    pytest.param("faqgen", {"extra_body": {"x": b"a"}}, TypeError, "unexpected keyword argument 'extra_body'", id="opea-form-bytes"),
    pytest.param("docsum", {"files": [("a.txt", b"x")], "extra_body": {"x": [math.nan]}}, asyncllm.ConfigurationError, "extra_body must be a mapping, on a call with a JSON body", id="opea-form-nan"),
    pytest.param("stream_faqgen", {"extra_body": {"a\nb": 1}}, TypeError, "unexpected keyword argument 'extra_body'", id="opea-form-name-newline"),
    pytest.param("stream_docsum", {"files": [("a.txt", b"x")], "extra_body": {"a\nb": 1}}, asyncllm.ConfigurationError, "extra_body must be a mapping, on a call with a JSON body", id="opea-stream-form-extra-body"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "kwargs", "error", "message"), FORM_EXTRA_BODY)
def test_a_form_call_takes_no_extra_body(
    method: str, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def run() -> None:
        transport = MockTransport(OPEA_ENTRY.reply)
        client = OPEA_ENTRY.make(transport)
        try:
            with pytest.raises(error, match=message):
                await finish(getattr(client, method)("t", **kwargs))
            assert not transport.requests
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(run(), HANG))


def test_claude_text_parts_keep_only_the_fields_anthropic_has() -> None:
    """Found: a text part's other fields were sent along, and Anthropic refuses unknown ones."""
    part = {"type": "text", "text": "x", "mime_type": "t", "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "user", "content": [part]}]
    (request,) = outcome(CLAUDE, "chat", (messages,), {"model": "m"})
    assert strict_json(request.content or b"")["messages"][0]["content"] == [
        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    ]


def test_opea_type_hints_resolve() -> None:
    """Found while reading each method's **options TypedDict: the public annotations of OPEA's
    file-taking calls did not resolve (FileSpec named ``os.PathLike`` as a string)."""
    for name in ("ingest", "docsum", "faqgen"):
        hints = typing.get_type_hints(getattr(OPEA_ENTRY.cls, name), include_extras=True)
        typing.get_type_hints(typing.get_args(hints["options"])[0])


@pytest.mark.parametrize("name", [".", ".."])
def test_ovms_model_name_that_is_a_dot_segment_is_refused(name: str) -> None:
    # Was sent: /v2/models/../ready is /v2/ready once the client resolves the dots.
    refused(OVMS_ENTRY, "model_ready", model=name)
    refused(OVMS_ENTRY, "infer", model=name, inputs={"x": [1]})
    refused(OVMS_ENTRY, "predict", model=name, instances=[1])


def test_ovms_model_name_with_a_lone_surrogate_is_refused() -> None:
    refused(OVMS_ENTRY, "model_status", model="\ud800")  # was UnicodeEncodeError


@pytest.mark.parametrize(
    "version",
    ["²", "\u0661", "9" * 5000, 10**5000, 2**63, "9223372036854775808"],
    ids=["superscript", "arabic-indic", "5000-digits", "int-5000-digits", "2**63", "str-2**63"],
)
def test_ovms_version_that_is_not_a_positive_int64_is_refused(version: Any) -> None:
    # Were ValueError ("²", and beyond Python's 4300-digit int/str limit) or sent.
    refused(OVMS_ENTRY, "model_ready", version=version)
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.OVMS(base_url=URL, version=version)


def test_ovms_version_digits_are_canonical() -> None:
    assert asyncllm.OVMS(base_url=URL, version="007").version == "7"
    assert asyncllm.OVMS(base_url=URL, version=2**63 - 1).version == str(2**63 - 1)


def test_ovms_tensor_shape_that_is_not_a_list_with_numpy_data() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        Tensor(np.array([1, 2]), shape=5)  # type: ignore[arg-type]  # was TypeError


def test_ovms_data_nested_deeper_than_the_stack_is_refused() -> None:
    # Were RecursionError.
    with pytest.raises(asyncllm.ConfigurationError):
        Tensor(deeply_nested())
    refused(OVMS_ENTRY, "infer", inputs={"x": deeply_nested()})
    refused(OVMS_ENTRY, "predict", instances=[deeply_nested()])
    refused(OVMS_ENTRY, "predict", inputs={"x": deeply_nested()})


@pytest.mark.parametrize("model_id", [".", "..", "\ud800"])
def test_llvm_model_id_that_is_not_one_path_segment_is_refused(model_id: str) -> None:
    # "." and ".." were sent to /models/infer and /infer; the surrogate was UnicodeEncodeError.
    refused(LLVM, "model_info", model_id=model_id)
    refused(LLVM, "infer", model_id=model_id, input=1, batch=False)
    refused(LLVM, "infer", model_id=model_id, input=1)


def test_llvm_infer_many_sends_no_chunk_when_one_cannot_be_sent() -> None:
    # The first chunk was sent, then the second raised ConfigurationError.
    two = {"batch_size": 2}
    refused(LLVM, "infer_many", client=two, model_id="m", inputs=[None, None, "\ud800"])
    refused(LLVM, "infer_many", client=two, model_id="m", inputs=[1, 2, math.nan])


def test_llvm_infer_many_checks_its_arguments_with_no_inputs() -> None:
    refused(LLVM, "infer_many", model_id="..", inputs=[])
    refused(LLVM, "infer_many", model_id="m", inputs=[], parameters=[1])


def test_llvm_parameters_nested_deeper_than_the_stack_are_refused() -> None:
    for method in ("infer", "batch_infer", "infer_many"):
        value = 1 if method == "infer" else [1]
        key = "input" if method == "infer" else "inputs"
        parameters = {"p": deeply_nested()}
        refused(
            LLVM, method, model_id="m", parameters=parameters, **{key: value}
        )  # was RecursionError


@pytest.mark.parametrize("setting", ["batch_size", "batch_wait"])
def test_llvm_batch_settings_of_none_are_refused(setting: str) -> None:
    # batch_wait=None was TypeError (float(None)); batch_size=None a TypeError at the first infer.
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.LLVM(base_url=URL, **{setting: None})


def test_llvm_infer_batch_must_be_a_bool() -> None:
    refused(LLVM, "infer", model_id="m", input=1, batch="no")  # was batched


def test_llvm_optimization_type_that_is_not_a_string_is_refused() -> None:
    # A numpy array compared with the choices was ValueError (its truth is ambiguous).
    refused(LLVM, "optimize", model_id="m", optimization_type=np.array([1, 2]))


@pytest.mark.parametrize("method", ["embed", "embed_sparse", "embed_all", "rerank", "predict"])
def test_tei_batch_checks_headers_and_deadline_before_reading_info(method: str) -> None:
    # /info was read first (without these), then the chunks raised ConfigurationError.
    info = {"max_client_batch_size": None}
    args: dict[str, Any] = {"query": "q", "texts": ["a", "b"]} if method == "rerank" else {}
    args = args or {"inputs": ["a", "b"]}
    refused(TEI, method, client=info, **args, extra_headers={"X-Trace": "a\r\nb"})
    refused(TEI, method, client=info, **args, deadline=-1)


@pytest.mark.parametrize("method", ["embed", "embed_sparse", "embed_all", "rerank", "predict"])
def test_tei_batch_sends_no_chunk_when_one_cannot_be_sent(method: str) -> None:
    # The first chunk was sent, then the second raised ConfigurationError.
    one = {"max_client_batch_size": 1}
    texts = ["a", "b", "\ud800"]
    if method == "rerank":
        refused(TEI, method, client=one, query="q", texts=texts)
    else:
        refused(TEI, method, client=one, inputs=texts)


@pytest.mark.parametrize(
    "flag", ["add_special_tokens", "add_generation_prompt", "return_token_strs"]
)
def test_vllm_tokenize_flags_must_be_bools(flag: str) -> None:
    # Were sent as bool(value): "no" became true.
    refused(VLLM, "tokenize", messages=USER, **{flag: "no"})


def test_vllm_structured_outputs_json_string_with_a_lone_surrogate_is_refused() -> None:
    # Was TypeError (as guided_json): pydantic-core's parser takes no str it cannot encode (see
    # _json below).
    refused(VLLM, "completions", prompt="x", structured_outputs={"json": '"\ud800"'})


@pytest.mark.parametrize("method", ["chat", "stream_chat", "completions"])
@pytest.mark.parametrize(
    "field", ["guided_json", "guided_regex", "guided_choice", "guided_grammar"]
)
@pytest.mark.parametrize("where", ["argument", "extra_body"])
def test_vllm_removed_guided_fields_are_refused_naming_their_replacement(
    method: str, field: str, where: str
) -> None:
    # vLLM 0.12 ignores them: sent, the output would come back unconstrained.
    value = {"type": "object"} if field == "guided_json" else "x"
    given = {field: value} if where == "argument" else {"extra_body": {field: value}}
    first: dict[str, Any] = {"prompt": "x"} if method == "completions" else {"messages": USER}
    replacement = rf"structured_outputs=\{{'{field.removeprefix('guided_')}': \.\.\.\}}"
    refused(VLLM, method, match=replacement, **first, **given)


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
def test_ollama_format_and_response_format_together_are_refused(method: str) -> None:
    refused(OLLAMA, method, USER, model="m", format="json", response_format=Answer)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seed", 2**64),
        ("max_new_tokens", 2**32),
        ("top_k", 2**31),
        ("top_n_tokens", 2**32),
        ("truncate", 0),  # the spec's minimum; the router wants it > 0
        ("truncate", 2**64),
        ("best_of", 2**64),
    ],
)
def test_tgi_generate_integers_beyond_tgi_bounds_are_refused(name: str, value: int) -> None:
    # Were sent; TGI's parser (and its schema) refuse them.
    refused(TGI, "generate", inputs="x", **{name: value})
    if name != "best_of":
        refused(TGI, "stream_generate", inputs="x", **{name: value})


@pytest.mark.parametrize("schema", [{}, {"type": "object"}], ids=["empty", "no-properties"])
def test_tgi_json_grammar_without_properties_is_refused(schema: dict[str, Any]) -> None:
    # TGI's router answers a JSON grammar without root properties with a 422.
    refused_unsent(TGI, "generate", inputs="x", grammar={"type": "json", "value": schema})


def test_tgi_generate_integers_at_tgi_bounds_are_sent() -> None:
    edges = {"seed": 2**64 - 1, "max_new_tokens": 2**32 - 1, "top_k": 2**31 - 1, "best_of": 1}
    assert outcome(TGI, "generate", (), {"inputs": "x", **edges})
    # The router's lower bounds (the spec excludes seed=0 and top_n_tokens=0; it takes them).
    lows = {"seed": 0, "top_n_tokens": 0, "truncate": 1, "max_new_tokens": 0}
    assert outcome(TGI, "generate", (), {"inputs": "x", **lows})


# -- found here in shared code: fixed, and kept as regressions ---------------------------------------

SHARED = [
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "temperature": 10**400}, {}, id="check_number-int-beyond-float"),
    pytest.param(OLLAMA, "chat", (USER,), {"model": "m", "timeout": 10**400}, {}, id="check_timeout-int-beyond-float"),
    pytest.param(GEMINI, "models", (), {"deadline": 10**400}, {}, id="deadline-int-beyond-float"),
    pytest.param(OVMS_ENTRY, "server_live", (), {"timeout": 10**400}, {}, id="timeout-int-beyond-float"),
    pytest.param(TGI, "generate", (), {"inputs": "x", "temperature": 10**400}, {}, id="number-int-beyond-float"),
    pytest.param(GROQ, "chat", (USER,), {"model": "m", "extra_headers": [("x-a", "b")]}, {}, id="extra_headers-not-a-mapping"),
    pytest.param(OPENAI, "embed", ("a",), {"extra_headers": [("X-Trace", "1")]}, {}, id="openai-extra_headers-not-a-mapping"),
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "extra_headers": {"a b": "v"}}, {}, id="header-name-not-a-token"),
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "extra_headers": {"x-a": "v\x01"}}, {}, id="header-value-control-character"),
    pytest.param(CLAUDE, "chat", (USER,), {"model": "m", "tools": [dict]}, {}, id="tool-without-signature"),
    pytest.param(OLLAMA, "chat", (USER,), {"model": "m", "tools": [{"name": "f", "description": 5}]}, {}, id="tool-description-int"),
    pytest.param(OPENAI, "stream_chat", (USER,), {"tools": [{"name": "f", "description": 1}]}, {}, id="openai-tool-description-int"),
    pytest.param(GEMINI, "chat", (USER,), {"model": "g", "tools": [{"name": "f", "parameters": 5}]}, {}, id="tool-parameters-int"),
    pytest.param(OPENAI, "stream_chat", (USER,), {"tools": [{"name": "f", "parameters": [1]}]}, {}, id="openai-tool-parameters-list"),
    pytest.param(GROQ, "embed", (True,), {"model": "m"}, {}, id="openai-embed-inputs-bool"),
    pytest.param(OPENAI, "embed", (1,), {}, {}, id="openai-embed-inputs-int"),
    pytest.param(GROQ, "embed", (["a"],), {"model": "m", "user": 5}, {}, id="openai-embed-user-int"),
    pytest.param(OPENAI, "embed", ("a",), {"user": []}, {}, id="openai-embed-user-list"),
    pytest.param(GROQ, "models", (), {}, {"api_key": SecretStr("k\r\nX-Evil: 1")}, id="api_key-secretstr-crlf"),
    pytest.param(OLLAMA, "version", (), {}, {"api_key": 5}, id="api_key-int"),
    pytest.param(GROQ, "models", (), {}, {"base_url": 5}, id="base_url-int"),
    pytest.param(CLAUDE, "models", (), {}, {"base_url": "http://[::1"}, id="base_url-bad-ipv6"),
    pytest.param(GEMINI, "models", (), {}, {"default_headers": [("x-a", "b")]}, id="default_headers-not-a-mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("backend", "method", "args", "kwargs", "client"), SHARED)
def test_found_bad_input_in_shared_code_is_refused(
    backend: Any,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    client: dict[str, Any],
) -> None:
    """Bad input that the shared code (not the backends') let through untyped or sent."""
    refused(backend, method, *args, client=client, **kwargs)


@pytest.mark.parametrize(
    "headers",
    [{"X-A: b": "c"}, {"": "v"}, {"X A": "v"}, {"X-A": "\x01"}, {"X-A": "\x7f"}, {"X-A": "\ud800"}],
    ids=["colon-in-name", "empty-name", "space-in-name", "control", "delete", "lone-surrogate"],
)
def test_header_names_and_values_http_cannot_carry_are_refused(headers: dict[str, str]) -> None:
    # Through aiohttp, the first is sent as header "X-A" with the value "b: c"; the next two are
    # sent and refused by the server (400); the control characters raise ValueError in aiohttp;
    # the surrogate is sent as an empty value.
    refused(TGI, "generate", inputs="x", extra_headers=headers)


def test_json_loads_of_a_lone_surrogate_reads_as_the_stdlib_does() -> None:
    # pydantic-core raises TypeError for this text; _json.loads must answer as json.loads does.
    assert _json.loads('"\ud800"') == json.loads('"\ud800"') == "\ud800"


@pytest.mark.parametrize(
    "settings_",
    [
        {"base_url": 2**31},
        {"base_url": "http://["},
        {"base_url": URL, "default_headers": "X-A: b"},
        {"base_url": URL, "api_key": 12345},
    ],
    ids=["base_url-int", "base_url-urlsplit-refuses", "default_headers-str", "api_key-int"],
)
def test_settings_that_are_not_of_their_type_are_refused(settings_: dict[str, Any]) -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.TGI(**settings_)


def test_batch_wait_beyond_float_range_is_refused() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        asyncllm.LLVM(base_url=URL, batch_wait=10**400)


def test_a_bytes_tensor_with_a_lone_surrogate_is_refused_when_built() -> None:
    with pytest.raises(asyncllm.ConfigurationError):
        Tensor("\ud800")


# Every chat backend that sends a response_format's schema (OPEA sends JSON mode and keeps the
# schema to validate the answer: it sends no schema to refuse).
DEEP_RESPONSE_FORMAT = [
    pytest.param(CLAUDE, {"model": "m"}, id="claude"),
    pytest.param(GEMINI, {"model": "g"}, id="gemini"),
    pytest.param(GROQ, {"model": "m"}, id="groq"),
    pytest.param(OPENAI, {}, id="openai"),
    pytest.param(OVMS_ENTRY, {}, id="ovms"),
    pytest.param(OLLAMA, {"model": "m"}, id="ollama"),
    pytest.param(TGI, {}, id="tgi"),
    pytest.param(VLLM, {}, id="vllm"),
]
DEEP_SCHEMAS = {"deep-2000": lambda: deep(2000), "deep-5000": lambda: deep(5000), "cycle": cycle}


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
@pytest.mark.parametrize("shape", sorted(DEEP_SCHEMAS))
@pytest.mark.parametrize(("backend", "kwargs"), DEEP_RESPONSE_FORMAT)
def test_a_response_format_nested_deeper_than_the_stack_is_refused(
    backend: Any, kwargs: dict[str, Any], shape: str, method: str
) -> None:
    refused(backend, method, USER, response_format=DEEP_SCHEMAS[shape](), **kwargs)


# -- bugs in shared code: reported, not fixed here ---------------------------------------------------
# Strict: each turns into a failure once its fix lands, to drop the mark and the entry's skip.


def shared_bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


def refused_unsent(backend: Any, method: str, **kwargs: Any) -> None:
    """As ``refused``, but a call that was sent fails with AssertionError (the xfails' error)."""
    try:
        refused(backend, method, **kwargs)
    except pytest.fail.Exception as exc:
        raise AssertionError(f"{method}({kwargs!r:.200}) was not refused unsent") from exc


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
@pytest.mark.parametrize("level", [[], {}, ["low"]], ids=["list", "dict", "list-of-a-level"])
def test_gemini_thinking_level_that_is_no_string_is_refused(level: Any, method: str) -> None:
    refused(GEMINI, method, USER, model="g", thinking_level=level)


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
@pytest.mark.parametrize("effort", ["", "LOW", "extreme"])
def test_claude_effort_that_is_no_level_is_refused(effort: str, method: str) -> None:
    refused_unsent(CLAUDE, method, messages=USER, model="m", effort=effort)


@shared_bug("_wire.openai.tool_choice_body passes any mapping through")
def test_tool_choice_mapping_that_is_not_a_tool_choice_is_refused() -> None:
    refused_unsent(OPENAI, "stream_chat", messages=USER, tool_choice={})


def test_response_format_mapping_that_is_not_a_format_is_refused() -> None:
    # Was sent as given; since #14 a mapping that is no OpenAI format is read as a JSON schema,
    # and {} (no object at its root) is refused by _structured.strict_schema.
    refused(OPENAI, "stream_chat", messages=USER, response_format={})


def test_json_schema_response_format_without_a_name_is_refused() -> None:
    # OpenAI's schema requires json_schema.name; the strict schema made from a model has one.
    unnamed = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    refused_unsent(OPENAI, "stream_chat", messages=USER, response_format=unnamed)


@shared_bug("_models.Tool.coerce sends any name; OpenAI's schema takes [a-zA-Z0-9_-]{1,64}")
def test_tool_name_the_schema_refuses_is_refused() -> None:
    refused_unsent(OPENAI, "stream_chat", messages=USER, tools=[{"name": "a b"}])


@shared_bug("_base.check_stop takes any number of stops; OpenAI's schema takes 1 to 4")
@pytest.mark.parametrize("stop", [[], ["a", "b", "c", "d", "e"]])
def test_stop_lists_the_schema_refuses_are_refused(stop: list[str]) -> None:
    refused_unsent(OPENAI, "stream_chat", messages=USER, stop=stop)


@shared_bug("_models.normalize_messages does not check content parts")
@pytest.mark.parametrize(
    "content", [[], [{}], [{"type": "text"}]], ids=["none", "empty", "no-text"]
)
def test_content_parts_the_schema_refuses_are_refused(content: list[Any]) -> None:
    refused_unsent(OPENAI, "stream_chat", messages=[{"role": "user", "content": content}])


@shared_bug("_models.normalize_messages lets a function message go without a name")
def test_function_message_without_a_name_is_refused() -> None:
    refused_unsent(OPENAI, "stream_chat", messages=[{"role": "function", "content": "x"}])


@shared_bug("_wire.openai checks n and seed unbounded; the schema takes 1..128, int64")
@pytest.mark.parametrize("bounds", [{"n": 129}, {"seed": 2**64}], ids=["n", "seed"])
def test_n_and_seed_beyond_the_schema_are_refused(bounds: dict[str, int]) -> None:
    refused_unsent(OPENAI, "stream_chat", messages=USER, **bounds)


# -- OpenAI chat through the shared test client ----------------------------------------------------

chat_messages = st.one_of(
    json_values,
    st.lists(
        st.dictionaries(
            st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name"]),
            json_values | st.sampled_from(["user", "assistant", "system", "tool"]),
            max_size=4,
        ),
        max_size=3,
    ),
)
chat_params = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(("temperature", "top_p", "max_tokens", "stop", "seed", "n"), json_values),
        **dict.fromkeys(("user", "tool_choice", "model"), json_values),
        "extra_headers": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=2),
    },
)


@settings(FUZZ_SETTINGS, max_examples=150)
@given(messages=chat_messages, kwargs=chat_params)
def test_random_openai_chat_input_is_sent_or_refused_with_a_typed_error(
    messages: Any, kwargs: dict[str, Any]
) -> None:
    async def run() -> None:
        c = openai_client(lambda r: ok())
        kwargs.setdefault("model", "m")
        try:
            r = await c.chat(messages, **kwargs)
        except asyncllm.ConfigurationError:
            assert len(c._transport.requests) == 0  # type: ignore[attr-defined]
        else:
            assert r.text == "ok"
            assert len(c._transport.requests) == 1  # type: ignore[attr-defined]
        finally:
            await c.aclose()

    asyncio.run(run())
