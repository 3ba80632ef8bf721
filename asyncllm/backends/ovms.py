"""OpenVINO Model Server: KServe v2 under ``/v2``, TF-Serving under ``/v1``, OpenAI under ``/v3``.

One client speaks all three REST APIs of one server. KServe v2 (the Open Inference Protocol)
carries typed tensors: ``{"name", "shape", "datatype", "data"}`` with ``data`` flattened in
row-major order. Tensors are checked here (ragged lists, element count against the shape, value
ranges per datatype) so a bad tensor is a ConfigurationError before anything is sent. Errors of
the ``/v1`` and ``/v2`` routes are ``{"error": "<message>"}``. The TF-Serving frontend was
removed from OVMS after release 2026.2; on later servers those routes answer 404.

numpy is optional: arrays are accepted and produced when it is installed, and it is never
imported unless a caller asks for an array.
"""

from __future__ import annotations

import base64
import math
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import AliasPath, BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from typing_extensions import Unpack

from .._exceptions import ConfigurationError
from .._http._backend import Meta
from .._models import Usage
from .._options import BodyOptions, ClientOptions, HttpOptions
from .._validate import (
    check_bool,
    check_int,
    check_str_list,
    path_segment,
)
from .._wire.openai import CompletionOptions, CompletionParams, OpenAICompletions
from .._wire.responses_support import OVMS_RESPONSES, ResponsesSupport, ServesResponses

__all__ = [
    "DATATYPES",
    "OVMS",
    "CompletionOptions",
    "CompletionParams",
    "CompletionResponse",
    "InferResponse",
    "ModelMetadata",
    "ModelVersionStatus",
    "PredictResponse",
    "RerankResponse",
    "RerankResult",
    "ServerMetadata",
    "Tensor",
    "TensorSpec",
]

OVMS_BASE_URL = "http://localhost:9000"

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
_FLOAT_MAX: dict[str, float] = {
    "FP16": 65504.0,
    "FP32": struct.unpack("<f", b"\xff\xff\x7f\x7f")[0],
    "FP64": sys.float_info.max,
}
# Every datatype the KServe v2 REST protocol defines, in the order of its table.
DATATYPES: tuple[str, ...] = ("BOOL", *_INT_RANGES, *_FLOAT_MAX, "BYTES")

_NUMPY_TO_DATATYPE: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
_DATATYPE_TO_NUMPY: dict[str, str] = {v: k for k, v in _NUMPY_TO_DATATYPE.items()}


# -- tensors -------------------------------------------------------------------------------------


def _is_numpy_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")  # only set if the caller has imported numpy already
    return numpy is not None and isinstance(value, numpy.ndarray)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _infer_shape(data: Any) -> list[int]:
    shape: list[int] = []
    node = data
    while _is_sequence(node):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    return shape


def _flatten(data: Any, shape: Sequence[int], where: str) -> list[Any]:
    """Row-major elements of a nested list that must have exactly ``shape`` (no ragged rows)."""
    out: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if depth == len(shape):
            if _is_sequence(node):
                raise ConfigurationError(f"{where}: ragged nested list (too deep at depth {depth})")
            out.append(node)
            return
        if not _is_sequence(node):
            raise ConfigurationError(
                f"{where}: ragged nested list (a scalar where depth {depth} needs a list)"
            )
        if len(node) != shape[depth]:
            raise ConfigurationError(
                f"{where}: ragged nested list (length {len(node)} at depth {depth}, "
                f"expected {shape[depth]})"
            )
        for item in node:
            walk(item, depth + 1)

    try:
        walk(data, 0)
    except RecursionError as exc:
        raise ConfigurationError(f"{where}: nested list too deep") from exc
    return out


def _flatten_any(data: Any) -> list[Any]:
    """All leaves of a nested list in order, whatever its nesting (KServe allows either form)."""
    if not _is_sequence(data):
        return [data]
    out: list[Any] = []
    stack: list[Iterator[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if _is_sequence(item):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _plain(value: Any) -> Any:
    """A numpy scalar (as ``list(array)`` gives) as the Python value it holds."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _guess_datatype(flat: Sequence[Any], where: str) -> str:
    if not flat:
        raise ConfigurationError(f"{where}: give datatype= for an empty tensor")
    if all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "FP32"
    if all(isinstance(v, (str, bytes)) for v in flat):
        return "BYTES"
    raise ConfigurationError(
        f"{where}: cannot tell the datatype of mixed or unsupported values; give datatype="
    )


def _check_value(value: Any, datatype: str, where: str) -> Any:
    """The JSON form of one element, or ConfigurationError if it does not fit ``datatype``."""
    if datatype == "BOOL":
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: BOOL elements must be bool, got {value!r}")
        return value
    if datatype in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{where}: {datatype} elements must be int, got {value!r}")
        low, high = _INT_RANGES[datatype]
        if not low <= value <= high:
            raise ConfigurationError(f"{where}: {value} is out of range for {datatype}")
        return value
    if datatype in _FLOAT_MAX:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: {datatype} elements must be numbers, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{where}: JSON cannot carry {value!r}")
        if abs(value) > _FLOAT_MAX[datatype]:
            raise ConfigurationError(f"{where}: {value} is out of range for {datatype}")
        return value
    # BYTES: JSON carries text; bytes must be UTF-8 (arbitrary binary needs the binary extension).
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")  # a lone surrogate has no UTF-8 form to send
            except UnicodeEncodeError as exc:
                raise ConfigurationError(f"{where}: BYTES elements must be valid text") from exc
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"{where}: BYTES elements sent as JSON must be UTF-8 text"
            ) from exc
    raise ConfigurationError(f"{where}: BYTES elements must be str or bytes, got {value!r}")


def _check_datatype(datatype: Any, where: str) -> str:
    if not isinstance(datatype, str) or datatype.upper() not in DATATYPES:
        raise ConfigurationError(f"{where}: datatype must be one of {', '.join(DATATYPES)}")
    return datatype.upper()


def _check_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not _is_sequence(shape) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ConfigurationError(f"{where}: shape must be a list of non-negative ints")
    return tuple(shape)


class Tensor:
    """A typed tensor: ``shape``, ``datatype`` and ``data`` flattened in row-major order.

    Build one from a nested list (shape inferred, ragged rows refused, datatype inferred as
    BOOL / INT64 / FP32 / BYTES unless given), from flat data plus ``shape``, or with
    ``Tensor.from_numpy``. Every element is checked against the datatype (type and range), so a
    Tensor that exists can be sent. ``to_list()`` / ``to_numpy()`` turn it back.
    """

    __slots__ = ("data", "datatype", "name", "parameters", "shape")

    name: str | None
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]
    parameters: dict[str, Any] | None

    def __init__(
        self,
        data: Any,
        *,
        datatype: str | None = None,
        shape: Sequence[int] | None = None,
        name: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        where = f"tensor {name!r}" if name else "tensor"
        if _is_numpy_array(data):
            array = Tensor.from_numpy(data, datatype=datatype, name=name)
            if shape is not None and _check_shape(shape, where) != array.shape:
                raise ConfigurationError(f"{where}: shape {list(shape)} != array shape")
            datatype, shape, data = array.datatype, array.shape, array.data
        if not _is_sequence(data):
            data = [data]
            shape = () if shape is None else shape
        if shape is None:
            dims = _infer_shape(data)
            flat = _flatten(data, dims, where)
        else:
            dims = list(_check_shape(shape, where))
            nested = any(_is_sequence(item) for item in data)
            # Nested data must have exactly the shape; flat data just enough elements.
            flat = _flatten(data, dims, where) if nested else list(data)
            if len(flat) != math.prod(dims):
                raise ConfigurationError(
                    f"{where}: {len(flat)} elements do not fill shape {dims} "
                    f"({math.prod(dims)} elements)"
                )
        flat = [_plain(v) for v in flat]
        dtype = _check_datatype(datatype, where) if datatype else _guess_datatype(flat, where)
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ConfigurationError(f"{where}: parameters must be a mapping")
        self.name = name
        self.datatype = dtype
        self.shape = tuple(dims)
        self.data = [_check_value(v, dtype, where) for v in flat]
        self.parameters = None if parameters is None else dict(parameters)

    @classmethod
    def from_numpy(
        cls, array: Any, *, datatype: str | None = None, name: str | None = None
    ) -> Tensor:
        """A tensor from a numpy array; its dtype gives the datatype (str/bytes/object: BYTES)."""
        where = f"tensor {name!r}" if name else "tensor"
        if not _is_numpy_array(array):
            raise ConfigurationError(f"{where}: from_numpy needs a numpy.ndarray")
        kind = array.dtype.kind
        if datatype is None:
            if kind in ("U", "S", "O"):
                datatype = "BYTES"
            else:
                datatype = _NUMPY_TO_DATATYPE.get(array.dtype.name)
                if datatype is None:
                    raise ConfigurationError(f"{where}: numpy dtype {array.dtype} has no datatype")
        shape = [int(d) for d in array.shape]
        return cls(array.reshape(-1).tolist(), datatype=datatype, shape=shape, name=name)

    def to_list(self) -> Any:
        """The data nested to ``shape`` (a scalar for shape ``[]``)."""
        shape, data = self.shape, self.data
        if not shape:
            return data[0]

        def build(start: int, depth: int) -> list[Any]:
            if depth == len(shape) - 1:
                return data[start : start + shape[depth]]
            step = math.prod(shape[depth + 1 :])
            return [build(start + i * step, depth + 1) for i in range(shape[depth])]

        return build(0, 0)

    def to_numpy(self) -> Any:
        """A numpy array of the matching dtype (BYTES gives an object array). Needs numpy."""
        try:
            import numpy  # optional: loaded on first use
        except ImportError as exc:  # pragma: no cover - numpy is installed in the test env
            raise ConfigurationError("to_numpy() needs numpy installed") from exc
        dtype = _DATATYPE_TO_NUMPY.get(self.datatype, "object")
        return numpy.array(self.data, dtype=dtype).reshape(self.shape)

    def to_wire(self, name: str | None = None) -> dict[str, Any]:
        """The KServe v2 ``$request_input`` object."""
        wire: dict[str, Any] = {
            "name": name or self.name,
            "shape": list(self.shape),
            "datatype": self.datatype,
            "data": list(self.data),
        }
        if self.parameters:
            wire["parameters"] = dict(self.parameters)
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> Tensor:
        """A ``$response_output`` object; anything that does not follow the protocol is an error
        (ValueError, turned into ResponseValidationError by the caller)."""
        if not isinstance(wire, Mapping):
            raise TypeError("tensor must be an object")
        name = wire["name"]
        datatype = wire["datatype"]
        if not isinstance(name, str) or not isinstance(datatype, str) or datatype not in DATATYPES:
            raise ValueError(f"output {name!r} has bad name or datatype {datatype!r}")
        if "data" not in wire:
            raise ValueError(f"output {name!r} has no JSON data (binary outputs are not supported)")
        flat = [_from_json(v, datatype) for v in _flatten_any(wire["data"])]
        try:
            return cls(
                flat,
                datatype=datatype,
                shape=wire["shape"],
                name=name,
                parameters=wire.get("parameters"),
            )
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return NotImplemented
        return (self.datatype, self.shape, self.data) == (other.datatype, other.shape, other.data)

    __hash__ = None  # type: ignore[assignment]  # mutable data: not hashable

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 8 else [*self.data[:8], "..."]
        return (
            f"Tensor(name={self.name!r}, datatype={self.datatype!r}, "
            f"shape={list(self.shape)}, data={shown!r})"
        )


def _from_json(value: Any, datatype: str) -> Any:
    """Servers may send 1.0 for an int or 0/1 for a bool; accept exact equivalents only."""
    if datatype == "BOOL" and isinstance(value, int) and not isinstance(value, bool):
        if value in (0, 1):
            return bool(value)
    elif datatype in _INT_RANGES and isinstance(value, float) and value.is_integer():
        return int(value)
    elif datatype in _FLOAT_MAX and isinstance(value, int) and not isinstance(value, bool):
        # An int beyond the datatype's range stays an int, for _check_value to refuse.
        return float(value) if abs(value) <= _FLOAT_MAX[datatype] else value
    return value


def _as_tensor(name: Any, value: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise ConfigurationError("input tensor names must be non-empty strings")
    tensor = value if isinstance(value, Tensor) else Tensor(value, name=name)
    return tensor.to_wire(name)


# -- response types ------------------------------------------------------------------------------


class InferResponse(Mapping[str, Tensor]):
    """The output tensors by name, plus what the server said about the run."""

    def __init__(
        self,
        outputs: dict[str, Tensor],
        *,
        model_name: str,
        model_version: str | None,
        id: str | None,  # the protocol's field name
        parameters: dict[str, Any] | None,
        request_id: str,
        raw: Any = None,
    ) -> None:
        self.outputs = outputs
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.parameters = parameters
        self.request_id = request_id
        self.raw = raw

    def __getitem__(self, name: str) -> Tensor:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def __repr__(self) -> str:
        return (
            f"InferResponse(model_name={self.model_name!r}, "
            f"model_version={self.model_version!r}, outputs={list(self.outputs)})"
        )


class TensorSpec(BaseModel):
    """A model input or output as metadata describes it; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str | None = None
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    rt_info: dict[str, Any] | None = None
    request_id: str | None = None

    @field_validator("versions", "inputs", "outputs", mode="before")
    @classmethod
    def _null_as_empty(cls, value: Any) -> Any:
        # Only name and platform are required by KServe; servers may send the rest as null.
        return [] if value is None else value


class ServerMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)
    request_id: str | None = None


_STR_OR_INT: TypeAdapter[str | int] = TypeAdapter(str | int)  # how TF-Serving JSON sends a version


class ModelVersionStatus(BaseModel):
    """One version of a model as TF-Serving's status API reports it (state ``AVAILABLE``...),
    read straight from a ``model_version_status`` item: the wire nests the error fields in
    ``status`` and may send the version and the error code as numbers."""

    model_config = ConfigDict(validate_by_name=True)

    version: str
    state: str
    error_code: str | None = Field(None, validation_alias=AliasPath("status", "error_code"))
    error_message: str | None = Field(None, validation_alias=AliasPath("status", "error_message"))

    @field_validator("version", "error_code", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return value if value is None else str(_STR_OR_INT.validate_python(value))


_STATUSES = TypeAdapter(list[ModelVersionStatus])


class PredictResponse(BaseModel):
    """``predictions`` answers the row form (``instances``), ``outputs`` the columnar form."""

    predictions: Any = None
    outputs: Any = None
    request_id: str
    raw: Any = None


class CompletionResponse(BaseModel):
    """A text completion; ``text`` is the first choice's, ``choices`` the texts in index order."""

    text: str
    choices: list[str]
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    request_id: str
    raw: Any = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = None

    @field_validator("document", mode="before")
    @classmethod
    def _document_text(cls, value: Any) -> Any:
        """The server may send a document as ``{"text": ...}``."""
        if isinstance(value, dict):
            text = value.get("text")
            return None if text is None else str(text)
        return value


class RerankResponse(BaseModel):
    """Results as the server ranks them (most relevant first)."""

    results: list[RerankResult]
    request_id: str
    raw: Any = None


def _to_json_value(value: Any, where: str) -> Any:
    """TF-Serving JSON: numpy arrays become lists, bytes become ``{"b64": ...}``."""
    if _is_numpy_array(value):
        if value.dtype.kind == "S":
            value = value.astype(object)
        return _to_json_value(value.tolist(), where)
    value = _plain(value)
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigurationError(f"{where}: tensor names must be strings")
        return {k: _to_json_value(v, where) for k, v in value.items()}
    if _is_sequence(value):
        return [_to_json_value(v, where) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{where}: JSON cannot carry {value!r}")
        return value
    raise ConfigurationError(f"{where}: cannot send {type(value).__name__} as JSON")


def _to_json(value: Any, where: str) -> Any:
    try:
        return _to_json_value(value, where)
    except RecursionError as exc:
        raise ConfigurationError(f"{where}: nested too deeply to send") from exc


def _from_b64(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("b64"), str):
            return base64.b64decode(value["b64"])
        return {k: _from_b64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_b64(v) for v in value]
    return value


# -- the client ----------------------------------------------------------------------------------


class OVMS(ServesResponses, OpenAICompletions):
    """``OVMS(base_url=..., model=..., version=...)``: base from ``OVMS_API_URL`` (default
    ``http://localhost:9000``), optional Bearer key from ``OVMS_API_KEY`` for a gateway in front.

    ``model`` / ``version`` pin the servable; each call may name another. The version applies to
    the KServe (``/v2``) and TF-Serving (``/v1``) calls; the OpenAI-style calls (``chat``,
    ``stream_chat``, ``completions``, ``embed``, ``rerank``, ``models``) go to ``/v3``, where a
    servable has no version. Every call takes the call options (``priority``, ``timeout``,
    ``deadline``, ``max_retries``, ``extra_headers``, ``extra_query``, and ``extra_body`` on calls
    that send a JSON body).

    ``chat(response_format=Model)`` sends OpenAI's strict JSON schema, which OVMS imposes with
    XGrammar, and parses the answer into ``parsed``. A servable deployed with a reasoning parser
    returns its reasoning in ``r.reasoning`` (``chunk.reasoning`` in a stream); for Qwen3-style
    templates, ``extra_body={"chat_template_kwargs": {"enable_thinking": ...}}`` turns it on or off.

    ``responses`` (``/v3/responses``): create and stream with function tools; OVMS takes no
    instructions, ``text.format``, ``previous_response_id``, ``store`` or ``background`` and
    serves no other Responses route, so those are refused before sending.

    Of the ``ModernParams``, OVMS takes ``max_completion_tokens`` and ``logprobs`` (in ``chat``
    only: its streams carry none); the others are a ConfigurationError. Images go as
    ``image_url`` parts (VLM servables); files are refused.
    """

    backend: ClassVar[str] = "ovms"
    default_base_url: ClassVar[str | None] = OVMS_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("OVMS_API_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("OVMS_API_KEY",)
    chat_path: ClassVar[str] = "/v3/chat/completions"
    # OVMS guides tool calls only when the servable is started so (enable_tool_guided_generation),
    # not per request: a strict tool is refused rather than sent unenforced.
    tool_strict: ClassVar[bool] = False
    embeddings_path: ClassVar[str] = "/v3/embeddings"
    models_path: ClassVar[str] = "/v3/models"
    completions_path: ClassVar[str] = "/v3/completions"
    rerank_path: ClassVar[str] = "/v3/rerank"
    responses_path: ClassVar[str] = "/v3/responses"
    responses_support: ClassVar[ResponsesSupport] = OVMS_RESPONSES
    # What the chat API reference lists as unsupported, or does not list at all.
    refused_params: ClassVar[frozenset[str]] = frozenset(
        {"top_logprobs", "parallel_tool_calls", "service_tier", "store", "metadata"}
        | {"prompt_cache_key"}
    )
    stream_logprobs: ClassVar[bool] = False

    def __init__(
        self, *, version: int | str | None = None, **options: Unpack[ClientOptions]
    ) -> None:
        """``version`` pins the model version of the ``/v1`` and ``/v2`` calls (a positive int,
        or a string of digits); the rest are the ``ClientOptions``."""
        self.version = None if version is None else self._check_version(version)
        super().__init__(**options)

    def __repr__(self) -> str:
        return (
            f"OVMS(name={self.name!r}, base_url={self.base_url!r}, "
            f"model={self.model!r}, version={self.version!r})"
        )

    # -- paths -------------------------------------------------------------------------------

    @staticmethod
    def _check_version(version: Any) -> str:
        """A version is a positive int64, given as an int or a string of ASCII digits."""
        if isinstance(version, str) and version.isascii() and version.isdigit():
            version = int(version) if len(version.lstrip("0")) <= 19 else 0
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
            raise ConfigurationError("version must be a positive int below 2**63")
        return str(version)

    def _servable(self, model: str | None, version: int | str | None, api: str) -> str:
        """``/{api}/models/{name}[/versions/{v}]``; the name is %-quoted (OVMS names hold '/')."""
        name = path_segment("model", self._model(model))
        chosen = self.version if version is None else self._check_version(version)
        path = f"/{api}/models/{name}"
        return path if chosen is None else f"{path}/versions/{chosen}"

    # -- KServe v2 ---------------------------------------------------------------------------

    async def infer(
        self,
        model: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        *,
        version: int | str | None = None,
        outputs: Sequence[str | Mapping[str, Any]] | None = None,
        parameters: Mapping[str, Any] | None = None,
        id: str | None = None,  # the protocol's field name
        **options: Unpack[BodyOptions],
    ) -> InferResponse:
        """Run a model on named tensors (nested lists, numpy arrays or ``Tensor``s) and get its
        output tensors by name. ``outputs`` limits which outputs come back (names, or
        ``{"name", "parameters"}`` objects); ``parameters`` and ``id`` are the request's own
        (the answer must carry the same ``id``). Bad tensors raise ConfigurationError unsent."""
        if isinstance(model, Mapping):
            raise ConfigurationError("pass inputs= by keyword when the model is pinned")
        path = self._servable(model, version, "v2") + "/infer"
        if not isinstance(inputs, Mapping) or not inputs:
            raise ConfigurationError("inputs must be a non-empty mapping of name to tensor")
        body: dict[str, Any] = {"inputs": [_as_tensor(n, v) for n, v in inputs.items()]}
        if id is not None:
            if not isinstance(id, str):
                raise ConfigurationError("id must be a string")
            body["id"] = id
        if parameters is not None:
            if not isinstance(parameters, Mapping):
                raise ConfigurationError("parameters must be a mapping")
            body["parameters"] = dict(parameters)
        if outputs is not None:
            if isinstance(outputs, str) or not _is_sequence(outputs):
                raise ConfigurationError("outputs must be a list of output names")
            body["outputs"] = [self._requested_output(o) for o in outputs]
        sent_id = id

        def parse(payload: Any, meta: Meta) -> InferResponse:
            if not isinstance(payload, Mapping) or not isinstance(payload.get("outputs"), list):
                raise ValueError("inference response has no 'outputs' list")
            tensors = [Tensor.from_wire(o) for o in payload["outputs"]]
            version_used = payload.get("model_version")
            answered_id = payload.get("id")
            if sent_id is not None and answered_id != sent_id:
                raise ValueError(f"response id {answered_id!r} != request id {sent_id!r}")
            parameters = payload.get("parameters")
            if parameters is not None and not isinstance(parameters, Mapping):
                raise ValueError("inference response 'parameters' is not an object")
            return InferResponse(
                {t.name or "": t for t in tensors},
                model_name=str(payload.get("model_name", "")),
                model_version=None if version_used is None else str(version_used),
                id=None if answered_id is None else str(answered_id),
                parameters=None if parameters is None else dict(parameters),
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request("infer", "POST", path, parse, options, body=body)

    @staticmethod
    def _requested_output(output: Any) -> dict[str, Any]:
        if isinstance(output, str) and output:
            return {"name": output}
        if (
            isinstance(output, Mapping)
            and isinstance(output.get("name"), str)
            and isinstance(output.get("parameters", {}), Mapping)
        ):
            return dict(output)
        raise ConfigurationError("each output must be a name or {'name': ..., 'parameters': {}}")

    async def model_metadata(
        self,
        model: str | None = None,
        *,
        version: int | str | None = None,
        **options: Unpack[HttpOptions],
    ) -> ModelMetadata:
        """A model's inputs and outputs (names, datatypes, shapes), to build ``infer`` inputs."""

        def parse(payload: Any, meta: Meta) -> ModelMetadata:
            return ModelMetadata.model_validate({**payload, "request_id": meta.request_id})

        path = self._servable(model, version, "v2")
        return await self._request("model_metadata", "GET", path, parse, options)

    async def server_metadata(self, **options: Unpack[HttpOptions]) -> ServerMetadata:
        """The server's name and version (``GET /v2``)."""

        def parse(payload: Any, meta: Meta) -> ServerMetadata:
            return ServerMetadata.model_validate({**payload, "request_id": meta.request_id})

        return await self._request("server_metadata", "GET", "/v2", parse, options)

    async def server_live(self, **options: Unpack[HttpOptions]) -> bool:
        """True when the server answers 200 on ``/v2/health/live``, False when it answers that
        it is not (never retried). Auth errors, 429 and connection failures raise."""
        return await self._probe("server_live", "/v2/health/live", options)

    async def server_ready(self, **options: Unpack[HttpOptions]) -> bool:
        """True when every model is loaded (``/v2/health/ready`` answers 200); see server_live."""
        return await self._probe("server_ready", "/v2/health/ready", options)

    async def model_ready(
        self,
        model: str | None = None,
        *,
        version: int | str | None = None,
        **options: Unpack[HttpOptions],
    ) -> bool:
        """True when the model (version) can serve; False otherwise, unknown models included.
        Raises as ``server_live`` does."""
        path = self._servable(model, version, "v2") + "/ready"
        return await self._probe("model_ready", path, options)

    # -- TF-Serving --------------------------------------------------------------------------

    async def predict(
        self,
        model: str | None = None,
        *,
        instances: Any = None,
        inputs: Any = None,
        version: int | str | None = None,
        signature_name: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> PredictResponse:
        """TF-Serving predict. ``instances`` is the row form (a list, one item per example, or
        objects of named inputs that share the batch size) and gets ``predictions``; ``inputs``
        is the columnar form (a tensor or an object of named tensors) and gets ``outputs``.
        numpy arrays become lists and bytes become ``{"b64": ...}`` (and back in the answer).
        Served by OVMS up to 2026.2 only."""
        path = self._servable(model, version, "v1") + ":predict"
        if (instances is None) == (inputs is None):
            raise ConfigurationError("give exactly one of instances= (rows) or inputs= (columns)")
        body: dict[str, Any] = {}
        if signature_name is not None:
            if not isinstance(signature_name, str) or not signature_name:
                raise ConfigurationError("signature_name must be a non-empty string")
            body["signature_name"] = signature_name
        if instances is not None:
            rows = _to_json(instances, "instances")
            if not isinstance(rows, list) or not rows:
                raise ConfigurationError("instances must be a non-empty list (one item per row)")
            if any(isinstance(r, dict) and "b64" not in r for r in rows):
                keys = [set(r) if isinstance(r, dict) else None for r in rows]
                if any(k != keys[0] for k in keys):
                    raise ConfigurationError(
                        "every instance must name the same inputs (use inputs= otherwise)"
                    )
            body["instances"] = rows
            key = "predictions"
        else:
            body["inputs"] = _to_json(inputs, "inputs")
            key = "outputs"

        def parse(payload: Any, meta: Meta) -> PredictResponse:
            if not isinstance(payload, Mapping) or key not in payload:
                raise ValueError(f"predict response has no {key!r}")
            try:
                value = _from_b64(payload[key])
            except RecursionError as exc:
                raise ValueError(f"predict response {key!r} is nested too deeply") from exc
            return PredictResponse(**{key: value}, request_id=meta.request_id, raw=payload)

        return await self._request("predict", "POST", path, parse, options, body=body)

    async def model_status(
        self,
        model: str | None = None,
        *,
        version: int | str | None = None,
        **options: Unpack[HttpOptions],
    ) -> list[ModelVersionStatus]:
        """The state of each version of a model (all versions unless one is pinned or given)."""

        def parse(payload: Any, meta: Meta) -> list[ModelVersionStatus]:
            return _STATUSES.validate_python(payload["model_version_status"])

        path = self._servable(model, version, "v1")
        return await self._request("model_status", "GET", path, parse, options)

    async def tfs_model_metadata(
        self,
        model: str | None = None,
        *,
        version: int | str | None = None,
        **options: Unpack[HttpOptions],
    ) -> dict[str, Any]:
        """TF-Serving's GetModelMetadataResponse as JSON (``modelSpec``, ``metadata`` with the
        ``signature_def`` map), for tools that already read that format."""

        def parse(payload: Any, meta: Meta) -> dict[str, Any]:
            if not isinstance(payload, dict) or not isinstance(payload.get("metadata"), dict):
                raise ValueError("model metadata response has no 'metadata' object")
            return payload

        path = self._servable(model, version, "v1") + "/metadata"
        return await self._request("tfs_model_metadata", "GET", path, parse, options)

    # -- OpenAI-style extras under /v3 (chat, embed and models come from OpenAICompatible) ------

    async def completions(
        self, prompt: str, **options: Unpack[CompletionOptions]
    ) -> CompletionResponse:
        """A plain text completion (no chat template) of one string prompt; the parameters are
        ``CompletionParams``."""
        if not isinstance(prompt, str):
            raise ConfigurationError("prompt must be a string (OVMS takes one prompt per call)")
        answer = await self._complete(prompt, options)
        return CompletionResponse(
            text=answer.text,
            choices=[c.text for c in answer.choices],
            finish_reason=answer.finish_reason,
            usage=answer.usage,
            model=answer.model,
            request_id=answer.request_id,
            raw=answer.raw,
        )

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        return_documents: bool | None = None,
        **options: Unpack[BodyOptions],
    ) -> RerankResponse:
        """Score ``documents`` against ``query`` (Cohere-style ``/v3/rerank``); the most relevant
        come first, each with its index in ``documents``. ``top_n`` keeps that many results;
        ``return_documents`` has each result carry its document's text."""
        if not isinstance(query, str) or not query:
            raise ConfigurationError("query must be a non-empty string")
        texts = check_str_list("documents", documents)
        check_int("top_n", top_n, 1)
        check_bool("return_documents", return_documents)
        body: dict[str, Any] = {"model": self._model(model), "query": query, "documents": texts}
        if top_n is not None:
            body["top_n"] = top_n
        if return_documents is not None:
            body["return_documents"] = return_documents
        count = len(texts)

        def parse(payload: Any, meta: Meta) -> RerankResponse:
            answer = RerankResponse.model_validate(
                {**payload, "request_id": meta.request_id, "raw": payload}
            )
            for r in answer.results:
                if not 0 <= r.index < count:
                    raise ValueError(f"rerank result index {r.index} is not in 0..{count - 1}")
            return answer

        return await self._request("rerank", "POST", self.rerank_path, parse, options, body=body)
