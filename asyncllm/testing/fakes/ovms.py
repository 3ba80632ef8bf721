"""OpenVINO Model Server: KServe v2 under ``/v2``, TF-Serving under ``/v1``, OpenAI under ``/v3``.

One model, ``fake-model``, with versions 1 and 2 (2 is the latest). Its KServe ``infer`` takes
any named inputs of any datatype, checks them as a strict server would (datatype, shape against
the element count, each element's type and range; 400 ``{"error": ...}`` otherwise) and answers
each input, in order, as ``output``, ``output1``, ``output2``... with the same shape and datatype
and the data transformed by ``transform``: BOOL negated, integers plus one (wrapping around at
the top of the range), floats negated (FP16 and FP32 rounded to that precision, as a model that
holds such tensors answers them), BYTES reversed. Inputs come in JSON ``data`` or in KServe's
binary data extension, as ``tritonclient`` sends them: an ``Inference-Header-Content-Length``
header, the JSON, then each binary input's bytes (``binary_data_size`` of them, else as many as its
shape and datatype take). Outputs go in binary when the request lists them with ``binary_data``
(or lists them under ``binary_data_output``); as in OVMS, outputs it does not list come in JSON,
and BYTES that are not UTF-8 are written into the JSON string as they are.

TF-Serving ``predict`` (by ``tfs_transform``) doubles numbers and reverses strings and
``{"b64": ...}`` bytes, in rows (``instances`` -> ``predictions``) or columns (``inputs`` ->
``outputs``). It answers each named input as the output of the same name (one unnamed input as
``output``) and writes them as TF-Serving does: one output is the answer itself, several an object
by name; strings and bytes come back as ``{"b64": ...}`` in an output named ``*_bytes`` and as
text otherwise (bytes that are not UTF-8 as they are). Like OVMS it takes scalars and rectangular
lists of numbers or of text, and no booleans (400 otherwise).

Unknown models or versions get 404 ``{"error": ...}``. Paths are read as OVMS reads them: a
model name is one path segment (%-decoded, so ``a%2Fb`` names ``a/b``); a path OVMS has no route
for answers 400 ``Invalid request URL`` (``/config``, say: OVMS has no model configuration
endpoint), a route asked with the other method 406. Version 0 is the default version wherever
OVMS runs or describes a model by it (KServe infer, TF-Serving predict and metadata; TF-Serving
status then lists every version), and no version in KServe's ready and metadata calls (404).

``server.state`` switches, answered as OVMS answers them: ``"ovms_live"`` (False: 500),
``"ovms_ready"`` (False: 503), ``"ovms_unready"`` (a set of model names whose ready probe answers
404, "not loaded yet").

``/v3`` reuses the OpenAI fake for chat, embeddings and models and adds ``/v3/completions``
(``"echo: <prompt>"``) and ``/v3/rerank`` (score: the share of query words found in a document).
Its chat is served as a servable with a reasoning parser serves it: the model thinks when its chat
template is asked to (``chat_template_kwargs: {"enable_thinking": true}``) and the reasoning comes
in ``reasoning_content``; ``response_format`` schemas are imposed, never checked for strict mode
(OVMS hands them to XGrammar), and nothing is refused.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .. import FakeServer
from . import _common, _responses, openai

MODEL = "fake-model"
VERSIONS = ("1", "2")


def _reasoning(body: dict[str, Any]) -> str | None:
    kwargs = body.get("chat_template_kwargs")
    thinking = isinstance(kwargs, dict) and kwargs.get("enable_thinking") is True
    return "reasoning_content" if thinking else None


# /v3 chat: OpenAI's shape, reasoning from the servable's reasoning parser, no strict checks.
CHAT_RULES = openai.Rules(reasoning=_reasoning)

_INT_RANGES: dict[str, tuple[int, int]] = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
_FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": 1.7976931348623157e308}
_FLOAT_FORMATS = {"FP16": "<e", "FP32": "<f"}  # how struct packs the narrower floats
# KServe's binary data extension: elements little-endian, in these struct formats; a BYTES element
# is its length (4 bytes) and then its bytes.
_STRUCT = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
_HEADER_LENGTH = "Inference-Header-Content-Length"


error_body = _common.error_only_body
_error = _common.error_only


class _BadTensor(Exception):
    pass


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item))
    return out


def _is_text(value: str) -> bool:
    """Whether a string can go on the wire as UTF-8 (a lone surrogate cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(value: Any, datatype: str) -> None:
    if datatype == "BOOL":
        ok = isinstance(value, bool)
    elif datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif datatype in _FLOAT_MAX:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and abs(value) <= _FLOAT_MAX[datatype]
        )
    else:
        ok = isinstance(value, str) and _is_text(value)
    if not ok:
        raise _BadTensor(f"value {value!r} is not valid for datatype {datatype}")


def _reverse(value: str | bytes) -> str | bytes:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")[::-1].encode("utf-8")
        except UnicodeDecodeError:
            return value[::-1]
    return value[::-1]


def transform(value: Any, datatype: str) -> Any:
    """What ``fake-model`` does to one element of a KServe tensor. BYTES elements are reversed
    by character, or by byte when they are not UTF-8 (an element sent in binary is ``bytes``)."""
    if datatype == "BOOL":
        return not value
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return low if value == high else value + 1
    if datatype in _FLOAT_MAX:
        negated = -float(value)
        packing = _FLOAT_FORMATS.get(datatype)
        return struct.unpack(packing, struct.pack(packing, negated))[0] if packing else negated
    return _reverse(value)


def _read_binary(name: str, datatype: str, shape: list[int], raw: bytes) -> list[Any]:
    """An input's elements from its raw bytes, checked as OVMS checks them (its messages)."""
    count = math.prod(shape)
    if datatype != "BYTES":
        code = _STRUCT[datatype]
        expected = count * struct.calcsize(code)
        if len(raw) != expected:
            raise _BadTensor(
                f"Invalid content size of tensor proto - Expected: {expected} bytes; "
                f"Actual: {len(raw)} bytes; input name: {name}"
            )
        return list(struct.unpack(f"<{count}{code}", raw))
    elements: list[Any] = []
    at = 0
    while len(raw) >= at + 4:
        (size,) = struct.unpack_from("<I", raw, at)
        if at + 4 + size > len(raw):
            raise _BadTensor(
                "Invalid content size of tensor proto - Batch length metadata exceeded buffer "
                f"size, buffer size: {len(raw)}, batch length: {size}; input name: {name}"
            )
        elements.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    if at != len(raw):
        raise _BadTensor(
            f"Invalid content size of tensor proto - Processed bytes: {at} do not equal to "
            f"buffer size: {len(raw)}; input name: {name}"
        )
    if len(elements) != count:
        raise _BadTensor(
            f"Invalid number of values in tensor proto container - Expected: {count} values; "
            f"Actual: {len(elements)} values; input name: {name}"
        )
    return elements


def _write_binary(datatype: str, values: list[Any]) -> bytes:
    if datatype != "BYTES":
        return struct.pack(f"<{len(values)}{_STRUCT[datatype]}", *values)
    parts: list[bytes] = []
    for value in values:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        parts += (struct.pack("<I", len(raw)), raw)
    return b"".join(parts)


def _as_json(value: Any) -> Any:
    """Bytes as JSON text: OVMS writes them into the string as they are, so bytes that are not
    UTF-8 reach the wire unchanged (see ``_json_bytes``)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _json_bytes(answer: Any) -> bytes:
    """``answer`` as OVMS writes JSON: UTF-8 as it is, and the bytes of a BYTES element that is
    not UTF-8 as they are (not valid UTF-8 then, which clients refuse to decode)."""
    text = json.dumps(answer, ensure_ascii=False)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a client's own JSON, echoed back
        return json.dumps(answer).encode()


def tfs_transform(value: Any) -> Any:
    """What ``fake-model`` does to a TF-Serving value: numbers doubled, strings and bytes reversed
    (bytes by character when they are UTF-8, as in ``transform``), lists element-wise."""
    if isinstance(value, list):
        return [tfs_transform(v) for v in value]
    if isinstance(value, (str, bytes)):
        return _reverse(value)
    return value * 2


# The routes as OVMS matches them (src/http_rest_api_handler.cpp), on the raw path: a name is one
# segment, %-decoded afterwards, so "BAAI%2Fbge" names BAAI/bge while "fake-model/config" is no
# route at all.
_KSERVE_READY = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?/ready")
_KSERVE_METADATA = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?/?")
_KSERVE_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?/infer")
_TFS_PREDICT = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/[A-Za-z0-9_]+)?:(classify|regress|predict)"
)
_TFS_MODEL = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/[A-Za-z0-9_]+)?(/metadata)?"
)
_INT64_MAX = 2**63 - 1


def _raw_path(request: web.Request) -> str:
    return request.raw_path.split("?", 1)[0]


def _invalid_url() -> web.Response:
    return _error(400, "Invalid request URL")


def _unsupported_method() -> web.Response:
    return _error(406, "Unsupported method")


def _resolve(
    name: str, version: str | None, *, zero_is_default: bool
) -> tuple[str | None, web.Response | None]:
    """The version a request reaches. OVMS takes version 0 as the default version where it looks
    a model up to run it (KServe infer, every TF-Serving call); its KServe ready and metadata
    calls look the number up as it is, and there is no version 0."""
    if name != MODEL:
        return None, _error(404, f"Model with requested name is not found: {name}")
    if version is None:
        return VERSIONS[-1], None
    number = int(version)
    if number > _INT64_MAX:
        return None, _error(400, "invalid model version format in request")
    if number == 0 and zero_is_default:
        return VERSIONS[-1], None
    if str(number) not in VERSIONS:
        return None, _error(404, f"Model with requested version is not found: {version}")
    return str(number), None


def _kserve_metadata(version: str) -> dict[str, Any]:
    return {
        "name": MODEL,
        "versions": list(VERSIONS),
        "platform": "OpenVINO",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, -1]}],
        "rt_info": {"model_info": {"version": version}},
    }


def _split(raw: bytes, header_length: str | None, parsed: Any) -> tuple[Any, bytes]:
    """The JSON header and the binary part of an infer request (KServe's binary data extension:
    ``Inference-Header-Content-Length`` says where the JSON ends)."""
    if header_length is None:
        return parsed, b""
    if not re.fullmatch(r"[0-9]{1,10}", header_length) or int(header_length) >= 2**31:
        raise _BadTensor("Inference-Header-Content-Length header is invalid and couldn't be parsed")
    end = int(header_length)
    if end > len(raw):
        raise _BadTensor("Inference-Header-Content-Length header exceeds actual payload length")
    try:
        return json.loads(raw[:end]), raw[end:]
    except ValueError:
        return None, raw[end:]


def _inputs(body: dict[str, Any], buffer: bytes) -> list[tuple[str, str, list[int], list[Any]]]:
    """Each input's name, datatype, shape and elements, from JSON ``data`` or from the binary
    part, read in order and sized as OVMS sizes them: ``binary_data_size``, else (no data) the
    shape's element count times the datatype's size, or the whole binary part for a lone BYTES
    input of shape [1]."""
    tensors: list[tuple[str, str, list[int], list[Any]]] = []
    in_binary: list[str] = []
    in_json: list[str] = []
    offset = 0
    lone = len(body["inputs"]) == 1
    for tensor in body["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise _BadTensor("each input needs a name")
        name = tensor["name"]
        datatype = tensor.get("datatype")
        if datatype not in (*_INT_RANGES, *_FLOAT_MAX, "BOOL", "BYTES"):
            raise _BadTensor(f"unsupported datatype {datatype!r}")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise _BadTensor(f"input {name} has an invalid shape")
        parameters = tensor.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _BadTensor(f"input {name}: parameters must be an object")
        if "binary_data_size" in parameters:
            if "data" in tensor and _flat(tensor["data"]):
                raise _BadTensor("Request contains values both in binary data and in content value")
            size = parameters["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _BadTensor("binary_data_size parameter is invalid and cannot be parsed")
        elif "data" in tensor:
            data = _flat(tensor["data"])
            if len(data) != math.prod(shape):
                raise _BadTensor(
                    f"input {name}: {len(data)} elements, shape {shape} needs {math.prod(shape)}"
                )
            for v in data:
                _check(v, datatype)
            tensors.append((name, datatype, shape, data))
            in_json.append(name)
            continue
        elif datatype == "BYTES":
            if not (lone and shape == [1]):
                raise _BadTensor(
                    f"Could not parse input content. Not valid ndarray detected (input {name}: "
                    "BYTES in binary need binary_data_size unless alone and of shape [1])"
                )
            size = len(buffer) - offset
        else:
            size = math.prod(shape) * struct.calcsize(_STRUCT[datatype])
        if size > len(buffer) - offset:
            raise _BadTensor(
                "Received buffer size is smaller than binary_data_size parameter indicates"
            )
        raw = buffer[offset : offset + size]
        offset += size
        tensors.append((name, datatype, shape, _read_binary(name, datatype, shape, raw)))
        in_binary.append(name)
    if in_binary and in_json:
        raise _BadTensor(
            "Invalid content size of tensor proto - inputs in binary and in JSON data in one "
            f"request; input name: {in_json[0]}"
        )
    return tensors


def _binary_outputs(body: dict[str, Any]) -> set[str]:
    """The outputs to send in binary: as OVMS decides it, only outputs the request lists, each by
    its ``binary_data`` parameter, else by the request's ``binary_data_output``."""
    parameters = body.get("parameters")
    default = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    requested = body.get("outputs")
    chosen: set[str] = set()
    for output in requested if isinstance(requested, list) else ():
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            continue
        own = output.get("parameters")
        flag = own.get("binary_data") if isinstance(own, dict) else None
        if flag if isinstance(flag, bool) else default:
            chosen.add(output["name"])
    return chosen


def _infer(parsed: Any, raw: bytes, header_length: str | None, model_version: str) -> web.Response:
    try:
        body, buffer = _split(raw, header_length, parsed)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("inputs"), list)
            or not body["inputs"]
        ):
            return _error(400, "Invalid JSON: 'inputs' must be a non-empty array")
        tensors = _inputs(body, buffer)
    except _BadTensor as exc:
        return _error(400, str(exc))
    outputs: list[dict[str, Any]] = [
        {
            "name": "output" if i == 0 else f"output{i}",
            "shape": shape,
            "datatype": datatype,
            "data": [transform(v, datatype) for v in data],
        }
        for i, (_, datatype, shape, data) in enumerate(tensors)
    ]
    requested = body.get("outputs")
    if requested is not None:
        names = [o.get("name") for o in requested if isinstance(o, dict)]
        known = {o["name"] for o in outputs}
        missing = [n for n in names if n not in known]
        if missing:
            return _error(400, f"Unknown output: {missing[0]}")
        outputs = [o for o in outputs if o["name"] in names]
    binary = _binary_outputs(body)
    blobs: list[bytes] = []
    for output in outputs:
        data = output.pop("data")
        if output["name"] not in binary:
            output["data"] = [_as_json(v) for v in data]
            continue
        blob = _write_binary(output["datatype"], data)
        if blob:  # OVMS names no size (and sends no data) for an empty binary output
            output["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    answer: dict[str, Any] = {
        "model_name": MODEL,
        "model_version": model_version,
        "outputs": outputs,
    }
    if "id" in body:
        answer["id"] = body["id"]
    if isinstance(body.get("parameters"), dict):
        answer["parameters"] = body["parameters"]
    header = _json_bytes(answer)
    tail = b"".join(blobs)
    if not tail:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=header + tail,
        content_type="application/json",
        headers={_HEADER_LENGTH: str(len(header))},
    )


def _tfs_status(versions: tuple[str, ...]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ]
    }


def _tfs_metadata(version: str) -> dict[str, Any]:
    def tensor(name: str) -> dict[str, Any]:
        return {
            "name": f"{name}:0",
            "dtype": "DT_FLOAT",
            "tensorShape": {"dim": [{"size": "-1"}, {"size": "-1"}]},
        }

    return {
        "modelSpec": {"name": MODEL, "signatureName": "", "version": version},
        "metadata": {
            "signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signatureDef": {
                    "serving_default": {
                        "inputs": {"input": tensor("input")},
                        "outputs": {"output": tensor("output")},
                        "methodName": "tensorflow/serving/predict",
                    }
                },
            }
        },
    }


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _tfs_tensor(value: Any, error: str) -> Any:
    """A TF-Serving JSON tensor as the model gets it, ``{"b64": ...}`` decoded to bytes. OVMS
    takes a scalar or a rectangular nested list, of numbers or of strings and bytes; it has no
    boolean tensors. Anything else raises ``_BadTensor(error)``."""
    kinds: set[str] = set()

    def walk(item: Any) -> tuple[Any, tuple[int, ...]]:
        if isinstance(item, list):
            parts = [walk(v) for v in item]
            shapes = {shape for _, shape in parts}
            if len(shapes) > 1:
                raise _BadTensor(error)
            return [v for v, _ in parts], (len(parts), *(shapes.pop() if shapes else ()))
        if isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item):
            kinds.add("number")
            return item, ()
        if isinstance(item, str) and _is_text(item):
            kinds.add("text")
            return item, ()
        if _is_b64(item):
            text = item["b64"]
            try:
                decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except ValueError:
                raise _BadTensor(error) from None
            kinds.add("text")
            return decoded, ()
        raise _BadTensor(error)

    tensor, _ = walk(value)
    if len(kinds) > 1:
        raise _BadTensor(error)
    return tensor


def _tfs_output(value: Any, as_b64: bool) -> Any:
    """An output as TF-Serving writes it: text as it is (bytes too, UTF-8 or not), except in an
    output whose name ends in ``_bytes``, where each string is ``{"b64": ...}``."""
    if isinstance(value, list):
        return [_tfs_output(v, as_b64) for v in value]
    if as_b64 and isinstance(value, (str, bytes)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        return {"b64": base64.b64encode(raw).decode("ascii")}
    return _as_json(value)


def _tfs_outputs(columns: dict[str, Any], error: str) -> dict[str, Any]:
    """Each named input answered as the output of the same name."""
    return {
        name: _tfs_output(tfs_transform(_tfs_tensor(value, error)), name.endswith("_bytes"))
        for name, value in columns.items()
    }


def _rows(instances: Any) -> list[Any]:
    """The row form: one unnamed input, or objects naming the inputs, one per instance."""
    if not isinstance(instances, list):
        raise _BadTensor("Invalid JSON structure. Nonamed instance is not an array.")
    if not instances:
        raise _BadTensor("Invalid JSON structure. Missing instances in row format")
    error = "Could not parse instance content. Not valid ndarray detected"
    first = instances[0]
    if isinstance(first, dict) and not _is_b64(first):
        if not all(isinstance(r, dict) and not _is_b64(r) for r in instances):
            raise _BadTensor("Invalid JSON structure. One of named instances is not a JSON object.")
        if not first:
            raise _BadTensor(error)
        if any(set(r) != set(first) for r in instances):
            raise _BadTensor("Invalid JSON structure. Request inputs have different batch sizes")
        outputs = _tfs_outputs({n: [r[n] for r in instances] for n in first}, error)
    elif isinstance(first, bool) or first is None:
        raise _BadTensor("Could not detect neither named or nonamed format")
    else:
        outputs = _tfs_outputs({"output": instances}, error)
    if len(outputs) == 1:
        return list(next(iter(outputs.values())))
    return [{n: column[i] for n, column in outputs.items()} for i in range(len(instances))]


def _columns(inputs: Any) -> Any:
    """The columnar form: one unnamed input, or an object naming the inputs."""
    error = "Could not parse input content. Not valid ndarray detected"
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if not inputs:
            raise _BadTensor("Invalid JSON structure, missing inputs")
        outputs = _tfs_outputs(inputs, error)
    elif isinstance(inputs, list) or (
        isinstance(inputs, (int, float)) and not isinstance(inputs, bool)
    ):
        outputs = _tfs_outputs({"output": inputs}, error)
    else:
        raise _BadTensor("Invalid JSON structure. One of inputs is not a JSON object.")
    return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def _predict(body: Any) -> web.Response:
    """TF-Serving predict, answered as TF-Serving writes it: one output is the answer itself
    (``"predictions": [...]`` or ``"outputs": ...``), several are named."""
    if not isinstance(body, dict):
        return _error(400, "Request body should be JSON object")
    if ("instances" in body) == ("inputs" in body):
        return _error(400, "Invalid JSON structure. Could not detect row or column format")
    signature = body.get("signature_name", "serving_default")
    if signature != "serving_default":
        return _error(400, f'Serving signature name: "{signature}" not found in signature def')
    try:
        if "instances" in body:
            answer = {"predictions": _rows(body["instances"])}
        else:
            answer = {"outputs": _columns(body["inputs"])}
    except _BadTensor as exc:
        return _error(400, str(exc))
    return web.Response(body=_json_bytes(answer), content_type="application/json")


def setup(server: FakeServer) -> None:
    state = server.state

    async def live(request: web.Request) -> web.StreamResponse:
        if state.get("ovms_live", True):
            return web.json_response({})
        return _error(500, "Internal server error")

    async def ready(request: web.Request) -> web.StreamResponse:
        if state.get("ovms_ready", True):
            return web.json_response({})
        return _error(503, "Server is not ready")

    async def server_metadata(request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": "OpenVINO Model Server", "version": "2026.2.0.fake"})

    async def v2_models(request: web.Request) -> web.StreamResponse:
        path = _raw_path(request)
        if request.method == "POST":
            found = _KSERVE_INFER.fullmatch(path)
            if found is None:
                if _KSERVE_READY.fullmatch(path) or _KSERVE_METADATA.fullmatch(path):
                    return _unsupported_method()
                return _invalid_url()
            used, problem = _resolve(unquote(found[1]), found[2], zero_is_default=True)
            if problem is not None or used is None:
                return problem or _invalid_url()
            raw = await request.read()
            return _infer(request["json"], raw, request.headers.get(_HEADER_LENGTH), used)
        found = _KSERVE_METADATA.fullmatch(path) or _KSERVE_READY.fullmatch(path)
        if found is None:
            return _unsupported_method() if _KSERVE_INFER.fullmatch(path) else _invalid_url()
        name = unquote(found[1])
        used, problem = _resolve(name, found[2], zero_is_default=False)
        if problem is not None or used is None:
            return problem or _invalid_url()
        if found.re is _KSERVE_READY:
            if name in state.get("ovms_unready", ()):
                return _error(404, "Model with requested version is not loaded yet")
            return web.json_response({})
        return web.json_response(_kserve_metadata(used))

    async def v1_models(request: web.Request) -> web.StreamResponse:
        path = _raw_path(request)
        if request.method == "POST":
            found = _TFS_PREDICT.fullmatch(path)
            if found is None:
                return _unsupported_method() if _TFS_MODEL.fullmatch(path) else _invalid_url()
            if found[3] != "predict":
                return _error(404, "Requested REST resource not found")
        else:
            found = _TFS_MODEL.fullmatch(path)
            if found is None:
                return _unsupported_method() if _TFS_PREDICT.fullmatch(path) else _invalid_url()
        version = found[2]
        used, problem = _resolve(unquote(found[1]), version, zero_is_default=True)
        if problem is not None or used is None:
            return problem or _invalid_url()
        if request.method == "POST":
            return _predict(request["json"])
        if found[3]:
            return web.json_response(_tfs_metadata(used))
        # No version, or 0: the status of every version.
        every = version is None or int(version) == 0
        return web.json_response(_tfs_status(VERSIONS if every else (used,)))

    async def completions(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "model is missing in request")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return _error(400, "prompt is not a string")
        text = _common.reply_text(prompt)
        n = body.get("n") or 1
        prompt_tokens = _common.count_tokens(prompt)
        done = _common.count_tokens(text)
        return web.json_response(
            {
                "choices": [
                    {"finish_reason": "stop", "index": i, "logprobs": None, "text": text}
                    for i in range(n)
                ],
                "created": int(time.time()),
                "model": body["model"],
                "object": "text_completion",
                "usage": {
                    "completion_tokens": done,
                    "prompt_tokens": prompt_tokens,
                    "total_tokens": prompt_tokens + done,
                },
            }
        )

    async def rerank(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "model is missing in request")
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str):
            return _error(400, "query is not a string")
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            return _error(400, "documents is not a list of strings")
        scores = [_common.relevance(query, d) for d in documents]
        ranked = sorted(range(len(documents)), key=lambda i: -scores[i])
        top_n = body.get("top_n")
        if isinstance(top_n, int):
            ranked = ranked[:top_n]
        results: list[dict[str, Any]] = []
        for i in ranked:
            result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.get("return_documents"):
                result["document"] = documents[i]
            results.append(result)
        return web.json_response({"results": results})

    for method, path, handler in (
        ("GET", "/v2/health/live", live),
        ("GET", "/v2/health/ready", ready),
        ("GET", "/v2", server_metadata),
        ("GET", "/v2/", server_metadata),
        ("GET", "/v2/models/{tail:.+}", v2_models),
        ("POST", "/v2/models/{tail:.+}", v2_models),
        ("GET", "/v1/models/{tail:.+}", v1_models),
        ("POST", "/v1/models/{tail:.+}", v1_models),
        ("POST", "/v3/completions", completions),
        ("POST", "/v3/rerank", rerank),
    ):
        server.add_route(method, path, handler, error_body=error_body)
    openai.setup(server, prefix="/v3", rules=CHAT_RULES, responses=_responses.OVMS)
