"""Open Inference Protocol v2 (KServe / Triton REST) messages, and tensor decoding.

The schema follows the protocol's REST definition: a request carries
``inputs``, each a tensor ``{"name", "shape", "datatype", "data"}`` whose
``data`` is the row-major flattened contents (nested lists are accepted too);
a response carries ``outputs`` in the same form. Errors are ``{"error": msg}``.

>>> t = InferTensor(name="input", shape=[2, 2], datatype="FP32", data=[1, 2, 3, 4])
>>> decode_tensor(t).tolist()
[[1.0, 2.0], [3.0, 4.0]]
>>> encode_tensor("scores", np.array([0.5, -1.0]))["datatype"]
'FP64'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ebjr.exceptions import InputError

__all__ = [
    "NUMERIC_DATATYPES",
    "ErrorResponse",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "ModelMetadata",
    "PredictRequest",
    "ServerMetadata",
    "ThresholdUpdate",
    "check_finite",
    "check_shape",
    "decode_tensor",
    "encode_tensor",
]

# protocol datatype -> numpy dtype (BYTES and BOOL are not model inputs here)
NUMERIC_DATATYPES: dict[str, Any] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
_DTYPE_NAMES = {np.dtype(v): k for k, v in NUMERIC_DATATYPES.items()}


class InferTensor(BaseModel):
    """One tensor of a request or response."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestedOutput(BaseModel):
    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """``POST /v2/models/{name}/infer``: one input tensor whose first axis is the batch."""

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class PredictRequest(BaseModel):
    """``POST /v2/models/{name}/predict``: the convenience form, one input per instance."""

    model_config = ConfigDict(extra="forbid")

    instances: list[Any] = Field(min_length=1)


class ThresholdUpdate(BaseModel):
    """Set the live threshold directly, or by a target teacher share on the bundle's curve."""

    model_config = ConfigDict(extra="forbid")

    threshold: float | None = None
    teacher_fraction: float | None = Field(default=None, ge=0.0, le=1.0)


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = []
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = None


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str


def decode_tensor(
    t: InferTensor, row_shape: tuple[int, ...] | None = None, max_rows: int | None = None
) -> np.ndarray:
    """The tensor as a float32 array of shape ``t.shape``, checked.

    Raises:
        InputError: unknown or non-numeric datatype, a shape that does not
            match the data or the model's per-row shape, no rows or too many,
            values that are not numbers, NaN or infinity.
    """
    if t.datatype not in NUMERIC_DATATYPES:
        raise InputError(
            f"input {t.name!r}: datatype {t.datatype!r} is not supported; expected one of "
            f"{', '.join(NUMERIC_DATATYPES)}"
        )
    shape = tuple(t.shape)
    check_shape(t.name, shape, row_shape, max_rows)
    expected = math.prod(shape)
    try:
        arr = np.asarray(t.data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"input {t.name!r}: data must be numbers (flat or nested lists), not "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if arr.size != expected:
        raise InputError(
            f"input {t.name!r}: shape {list(shape)} needs {expected} values, got {arr.size}"
        )
    check_finite(t.name, arr)
    if t.datatype.startswith(("INT", "UINT")) and not np.array_equal(arr, np.round(arr)):
        raise InputError(f"input {t.name!r}: datatype {t.datatype} needs whole numbers")
    return arr.reshape(shape).astype(np.float32)


def check_shape(
    name: str, shape: tuple[int, ...], row_shape: tuple[int, ...] | None, max_rows: int | None
) -> None:
    """Refuse a batch shape with no rows, too many rows, or the wrong per-row shape."""
    shape = tuple(shape)
    if len(shape) < 1 or any(d < 0 for d in shape):
        raise InputError(
            f"input {name!r}: shape must be [batch, ...] with non-negative sizes, "
            f"got {list(shape)}"
        )
    if shape[0] == 0:
        raise InputError(f"input {name!r}: the batch is empty (shape {list(shape)})")
    if max_rows is not None and shape[0] > max_rows:
        raise InputError(
            f"input {name!r}: {shape[0]} rows in one request; this server accepts at most "
            f"{max_rows} (split the request)"
        )
    if row_shape is not None and shape[1:] != tuple(row_shape):
        raise InputError(
            f"input {name!r}: expected shape [n, {', '.join(map(str, row_shape))}], "
            f"got {list(shape)}"
        )


def check_finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        raise InputError(f"input {name!r}: data contains NaN or infinity")


def datatype_of(arr: np.ndarray) -> str:
    """The protocol datatype name of a numeric array (``BYTES`` for strings)."""
    if arr.dtype.kind in "US":
        return "BYTES"
    if arr.dtype == np.bool_:
        return "BOOL"
    return _DTYPE_NAMES[np.dtype(arr.dtype)]


def encode_tensor(
    name: str, arr: np.ndarray, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An output tensor (flattened row-major data) for a response."""
    arr = np.asarray(arr)
    out: dict[str, Any] = {
        "name": name,
        "shape": list(arr.shape),
        "datatype": datatype_of(arr),
        "data": arr.reshape(-1).tolist(),
    }
    if parameters:
        out["parameters"] = parameters
    return out
