"""The Open Inference Protocol's messages (KServe v2, JSON), and the texts and tensors in them.

A request's `text` tensor is checked as /predict and /predict/batch check their texts; the
answer's tensors are the public outputs, typed from the model's MLflow signature.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field, StrictStr

from gateway.api.schemas import text_problem, texts_problem
from gateway.errors import ApiError
from gateway.serving.scoring import Row
from model.signature import SIGNATURE

INPUT = "text"
# The public outputs, as /predict answers them; the signature's other columns stay inside.
OUTPUTS = ("sentiment", "confidence")
BINARY_HEADER = "inference-header-content-length"
BINARY_REFUSED = (
    "The binary tensor extension is not supported: send JSON tensors "
    "(without the Inference-Header-Content-Length header)."
)
# MLflow's column types as the protocol's tensor datatypes.
DATATYPES = {
    "string": "BYTES",
    "binary": "BYTES",
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
}


class ProtocolError(BaseModel):
    error: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class RequestInput(BaseModel):
    name: StrictStr
    shape: list[int]
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="The texts: a flat list, or nested as the shape says.")


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: StrictStr | None = Field(None, description="Echoed in the answer.")
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(description=f"One BYTES tensor named `{INPUT}`.")
    outputs: list[RequestOutput] | None = Field(
        None, description=f"A subset of {list(OUTPUTS)} to answer (default: both)."
    )


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str = Field(
        description='The registry version, as the protocol expects it ("3"); /predict labels '
        'the same version "v3".'
    )
    id: str | None = None
    outputs: list[ResponseOutput]


def tensors(schema: Any, names: tuple[str, ...] | None) -> list[TensorMetadata]:
    specs = [spec for spec in schema.inputs if names is None or spec.name in names]
    if names is not None:
        specs.sort(key=lambda spec: names.index(spec.name))
    return [
        TensorMetadata(name=spec.name, datatype=DATATYPES[spec.type.name], shape=[-1])
        for spec in specs
    ]


def texts_of(request: InferenceRequest) -> list[str]:
    """The `text` tensor's elements, checked as /predict and /predict/batch check theirs."""
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        raise ApiError(
            400, f"Expected one input tensor named '{INPUT}' (BYTES, shape [n]); got {names}."
        )
    (tensor,) = request.inputs
    if tensor.datatype != "BYTES":
        raise ApiError(400, f"Input '{INPUT}' must have datatype BYTES, not {tensor.datatype}.")
    if (tensor.parameters or {}).get("binary_data_size") is not None:
        raise ApiError(400, BINARY_REFUSED)
    if not tensor.shape or any(size < 0 for size in tensor.shape):
        raise ApiError(400, f"Input '{INPUT}' has an invalid shape {tensor.shape}.")
    texts = _flat(tensor.data, len(tensor.shape))
    if math.prod(tensor.shape) != len(texts):
        raise ApiError(
            400,
            f"Input '{INPUT}' has shape {tensor.shape} but {len(texts)} elements in its data.",
        )
    # One text gets /predict's message as is; a batch's says which element.
    single = text_problem(texts[0]) if len(texts) == 1 and isinstance(texts[0], str) else None
    problem = single or texts_problem(texts, INPUT)
    if problem:
        raise ApiError(400, problem)
    return texts


def _flat(data: list[Any], depth: int) -> list[Any]:
    """The elements of ``data``, nested at most ``depth`` lists deep (its shape's rank)."""
    flat: list[Any] = []
    level = [data]
    for _ in range(max(depth, 1)):
        if not any(isinstance(item, list) for item in level):
            break
        items: list[Any] = []
        for item in level:
            items.extend(item if isinstance(item, list) else [item])
        level = items
    else:
        if any(isinstance(item, list) for item in level):
            raise ApiError(
                400, f"Input '{INPUT}' data is nested deeper than its shape's {depth} dimensions."
            )
    flat.extend(level)
    return flat


def selected_outputs(request: InferenceRequest) -> list[str]:
    if request.outputs is None:
        return list(OUTPUTS)
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise ApiError(400, f"Unknown output(s) {unknown}: the model answers {list(OUTPUTS)}.")
    return list(dict.fromkeys(names))


def output_tensor(name: str, rows: list[Row], shape: list[int]) -> ResponseOutput:
    """One value per text, in the input's shape ([n] or [n, 1]), its data flattened."""
    datatype = next(t.datatype for t in tensors(SIGNATURE.outputs, (name,)))
    shape = shape if math.prod(shape) == len(rows) else [len(rows)]
    return ResponseOutput(
        name=name, shape=shape, datatype=datatype, data=[row[name] for row in rows]
    )
