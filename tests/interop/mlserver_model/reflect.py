"""The model that ``tests/interop/test_mlserver.py`` serves with MLServer (it runs in MLServer's
own environment, ``tests/interop/envs/mlserver.txt``, never in ours).

It does to a KServe v2 request what the OVMS fake's ``fake-model`` does, so the same request can be
sent to both: each input, in order, comes back as ``output``, ``output1``, ``output2``... with its
shape and datatype, and its data transformed: BOOL negated, integers plus one (wrapping around at
the top of the range), floats negated, BYTES reversed. The inputs are decoded with MLServer's own
numpy codec, so FP32 and FP16 values come back rounded to that precision. A request's ``outputs``
picks which outputs come back (an unknown name is a 400); its ``parameters`` come back as the
answer's, less the ``headers`` that MLServer puts there, and each input's as its output's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import (
    Datatype,
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
)


def _transform(request_input: RequestInput) -> list[Any]:
    datatype = Datatype(request_input.datatype).value  # MLServer keeps the str (use_enum_values)
    array = NumpyCodec.decode_input(request_input).reshape(-1)
    if datatype == "BYTES":
        # Strings (as JSON carries them) decode to a str array; answered as UTF-8 bytes, which
        # MLServer's JSON encoder turns back into text.
        return [str(value)[::-1].encode("utf-8") for value in array.tolist()]
    if datatype == "BOOL":
        result = np.logical_not(array)
    elif datatype.startswith(("INT", "UINT")):
        result = array + np.array(1, dtype=array.dtype)  # wraps around, as the fake does
    else:
        result = np.negative(array)
    values: list[Any] = result.tolist()
    return values


class ReflectModel(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [
            ResponseOutput(
                name="output" if i == 0 else f"output{i}",
                shape=request_input.shape,
                datatype=request_input.datatype,
                data=_transform(request_input),
                parameters=request_input.parameters,
            )
            for i, request_input in enumerate(payload.inputs)
        ]
        if payload.outputs is not None:
            known = {output.name for output in outputs}
            wanted = [requested.name for requested in payload.outputs]
            for name in wanted:
                if name not in known:
                    raise InferenceError(f"Unknown output: {name}")
            outputs = [output for output in outputs if output.name in wanted]
        parameters = None
        if payload.parameters is not None:
            echoed = payload.parameters.model_dump(exclude_none=True, exclude={"headers"})
            parameters = Parameters(**echoed) if echoed else None
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            parameters=parameters,
            outputs=outputs,
        )


class UnreadyModel(ReflectModel):
    """A model that never becomes ready (its ``load`` says so), so the server is not ready
    either while it is loaded."""

    async def load(self) -> bool:
        return False
