"""Open Inference Protocol v2 (KServe / Triton REST) messages, and tensor decoding.

The schema follows the protocol's REST definition: a request carries
``inputs``, each a tensor ``{"name", "shape", "datatype", "data"}`` whose
``data`` is the row-major flattened contents (nested lists are accepted too);
a response carries ``outputs`` in the same form. Errors are ``{"error": msg}``.

The **binary tensor data extension** (the default of Triton's and KServe's
clients) is supported both ways: a body may be a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw little-endian
tensor bytes, each binary input saying its size in
``parameters.binary_data_size``; a response puts an output in binary form
when the request asks (``parameters.binary_data_output`` for all outputs, or
an output's ``parameters.binary_data``). ``BYTES`` elements are each a
4-byte little-endian length and the bytes.

>>> t = InferTensor(name="input", shape=[2, 2], datatype="FP32", data=[1, 2, 3, 4])
>>> decode_tensor(t).tolist()
[[1.0, 2.0], [3.0, 4.0]]
>>> encode_tensor("scores", np.array([0.5, -1.0]))["datatype"]
'FP64'
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Union

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from typing_extensions import TypeAliasType

from ebjr.exceptions import InputError

__all__ = [
    "NUMERIC_DATATYPES",
    "ErrorResponse",
    "InferRequest",
    "InferResponse",
    "InferTensor",
    "ModelConfig",
    "ModelMetadata",
    "PredictRequest",
    "RepositoryIndexRequest",
    "ServerMetadata",
    "ThresholdUpdate",
    "binary_inputs",
    "check_finite",
    "check_shape",
    "decode_tensor",
    "encode_response",
    "encode_tensor",
    "infer_request_fast",
    "split_body",
    "tensor_bytes",
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

#: tensor data in JSON: numbers, flat or in equally nested lists; ``true`` is no number
Numbers = TypeAliasType(
    "Numbers",
    list[Union[StrictFloat, StrictInt, "Numbers"]],  # pyright: ignore[reportInvalidTypeForm]
)


class InferTensor(BaseModel):
    """One tensor of a request or response."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    # None: the bytes follow the JSON (binary extension); strings: BYTES data (refused later,
    # by datatype, with that reason)
    data: Numbers | list[StrictStr] | None = None
    # the data as numbers already, when :func:`infer_request_fast` read the request
    _values: np.ndarray | None = PrivateAttr(default=None)


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def infer_request_fast(raw: bytes) -> InferRequest | None:
    """The common request, a JSON body with one tensor of numbers, read in a fraction of
    the time the full validation takes; None for any other body, which the full
    validation then reads (and words the errors of).

    The tensor's data becomes numbers at once (``orjson`` and one ``numpy`` conversion),
    and only the rest of the request, the small part, goes through the schema. It accepts
    only what the schema accepts: a body with ``true`` or ``false`` anywhere goes the full
    way (numpy would take a boolean for 1), as does data that numpy does not read as
    numbers (strings, nulls, ragged nesting), and float data with a run of 19 digits
    anywhere (it may hold an integer past 64 bits, which ``orjson`` reads as a float).
    """
    if b"true" in raw or b"false" in raw:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)):
        return None
    data = inputs[0].get("data")
    if not isinstance(data, list):
        return None
    try:
        values = np.asarray(data)
    except (TypeError, ValueError, OverflowError):
        return None
    if values.dtype.kind not in "iuf":
        return None
    if values.dtype.kind == "f" and _LONG_DIGITS.search(raw):
        return None  # orjson reads an integer past 64 bits as a float; the schema refuses it
    inputs[0]["data"] = []
    try:
        body = InferRequest.model_validate_json(orjson.dumps(doc))
    except ValidationError:
        return None
    body.inputs[0]._values = values
    return body


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
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class PredictRequest(BaseModel):
    """``POST /v2/models/{name}/predict``: the convenience form, one input per instance."""

    model_config = ConfigDict(extra="forbid")

    instances: Annotated[Numbers, Field(min_length=1)]


class FeedbackRequest(BaseModel):
    """``POST /v2/models/{name}/feedback``: the true labels of an answered request's rows,
    in order (``id``: the request's ``id``, or its ``X-Request-ID``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    labels: Annotated[list[StrictInt], Field(min_length=1, max_length=1 << 20)]


class ThresholdUpdate(BaseModel):
    """Set the live threshold directly, or by a target teacher share on the bundle's curve;
    for a cascade, ``thresholds``: one per stage but the last."""

    model_config = ConfigDict(extra="forbid")

    threshold: float | None = None
    teacher_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    thresholds: Annotated[list[float], Field(min_length=1, max_length=64)] | None = None


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


class ModelConfig(BaseModel):
    """Triton's model configuration extension (``GET /v2/models/{name}/config``), in part."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]
    dynamic_batching: dict[str, Any] | None = None
    version_policy: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None


class RepositoryIndexRequest(BaseModel):
    """``POST /v2/repository/index``: optionally only the models that are ready."""

    model_config = ConfigDict(extra="forbid")

    ready: bool | None = None


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str
    request_id: str | None = None  # also in the X-Request-ID header; the server log has it


#: the range of values each datatype holds (floats: the largest finite magnitude)
_LIMITS: dict[str, tuple[float, float]] = {
    k: (float(np.iinfo(v).min), float(np.iinfo(v).max))
    if np.issubdtype(v, np.integer)
    else (-float(np.finfo(v).max), float(np.finfo(v).max))
    for k, v in NUMERIC_DATATYPES.items()
}


_FP32_MAX = float(np.finfo(np.float32).max)


def decode_tensor(
    t: InferTensor,
    row_shape: tuple[int, ...] | None = None,
    max_rows: int | None = None,
    raw: bytes | None = None,
) -> np.ndarray:
    """The tensor as a float32 array of shape ``t.shape``, checked.

    Args:
        t: the tensor as it arrived; its values are ``t.data`` (JSON), or
            ``raw`` (the binary extension's little-endian bytes).
        row_shape: the model's per-row shape, if known.
        max_rows: the most rows a request may carry.

    Raises:
        InputError: unknown or non-numeric datatype, a shape that does not
            match the data or the model's per-row shape, no rows or too many,
            values that are not numbers, outside the datatype's range, NaN or
            infinity, binary data of the wrong length.
    """
    if t.datatype not in NUMERIC_DATATYPES:
        raise InputError(
            f"input {t.name!r}: datatype {t.datatype!r} is not supported; expected one of "
            f"{', '.join(NUMERIC_DATATYPES)}"
        )
    shape = tuple(t.shape)
    check_shape(t.name, shape, row_shape, max_rows)
    expected = math.prod(shape)
    if raw is not None:
        dtype = np.dtype(NUMERIC_DATATYPES[t.datatype]).newbyteorder("<")
        if len(raw) != expected * dtype.itemsize:
            raise InputError(
                f"input {t.name!r}: shape {list(shape)} of {t.datatype} needs "
                f"{expected * dtype.itemsize} bytes of binary data, got {len(raw)}"
            )
        arr = np.frombuffer(raw, dtype=dtype).astype(np.float64)
    else:
        if t.data is None:
            raise InputError(
                f"input {t.name!r} has neither 'data' nor 'parameters.binary_data_size'"
            )
        arr = (_numbers(t.name, t.data) if t._values is None
               else t._values.astype(np.float64).reshape(-1))
        if arr.size != expected:
            raise InputError(
                f"input {t.name!r}: shape {list(shape)} needs {expected} values, got {arr.size}"
            )
    check_finite(t.name, arr)
    lo, hi = _LIMITS[t.datatype]
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise InputError(
            f"input {t.name!r}: values must lie in [{lo:g}, {hi:g}] for datatype "
            f"{t.datatype}, got [{arr.min():g}, {arr.max():g}]"
        )
    if t.datatype.startswith(("INT", "UINT")) and not np.array_equal(arr, np.round(arr)):
        raise InputError(f"input {t.name!r}: datatype {t.datatype} needs whole numbers")
    if t.datatype == "FP64" and arr.size and np.abs(arr).max() > _FP32_MAX:
        raise InputError(
            f"input {t.name!r}: the model reads float32, whose values lie in "
            f"[{-_FP32_MAX:g}, {_FP32_MAX:g}]; got [{arr.min():g}, {arr.max():g}]"
        )
    return arr.reshape(shape).astype(np.float32)


def _numbers(name: str, data: list[Any]) -> np.ndarray:
    """JSON data as float64, refusing strings, booleans, nulls and ragged nesting."""
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"input {name!r}: data must be numbers (flat or equally nested lists): {exc}"
        ) from None
    if arr.dtype.kind not in "iuf":
        what = {"U": "strings", "S": "strings", "b": "booleans"}.get(
            arr.dtype.kind, "values that are not all numbers"
        )
        raise InputError(f"input {name!r}: data must be numbers, got {what}")
    return arr.astype(np.float64).reshape(-1)


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


def tensor_bytes(arr: np.ndarray) -> bytes:
    """The binary extension's bytes of an output: little-endian, row-major.

    ``BYTES`` elements are each a 4-byte little-endian length and the UTF-8 bytes.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind in "US":
        parts = []
        for v in arr.reshape(-1):
            b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """``(JSON header, binary rest)`` of a request body (the binary extension's framing)."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise InputError(
            f"Inference-Header-Content-Length must be a whole number of bytes in "
            f"[0, {len(body)}] (the body's length), got {header_length!r}"
        )
    return body[:n], body[n:]


def binary_inputs(request: InferRequest, rest: bytes) -> list[bytes | None]:
    """Each input's binary bytes (``None`` for JSON data), checked against the body's length."""
    out: list[bytes | None] = []
    offset = 0
    for t in request.inputs:
        size = (t.parameters or {}).get("binary_data_size")
        if size is None:
            out.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InputError(
                f"input {t.name!r}: parameters.binary_data_size must be a whole number of "
                f"bytes, got {size!r}"
            )
        if t.data is not None:
            raise InputError(f"input {t.name!r} has both 'data' and binary_data_size")
        if offset + size > len(rest):
            raise InputError(
                f"input {t.name!r}: binary_data_size {size} runs past the end of the body "
                f"({len(rest) - offset} bytes left after the JSON header)"
            )
        out.append(rest[offset : offset + size])
        offset += size
    if offset != len(rest):
        raise InputError(
            f"the body has {len(rest) - offset} bytes after the JSON header that no input's "
            f"binary_data_size accounts for (check Inference-Header-Content-Length)"
        )
    return out


def _wanted_outputs(request: InferRequest, names: list[str]) -> dict[str, bool]:
    """The outputs ``request`` asks for, in its order (all of ``names`` if it names none),
    each with whether it goes in binary form."""
    binary_all = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return {n: binary_all for n in names}
    unknown = sorted({o.name for o in request.outputs} - set(names))
    if unknown:
        raise InputError(f"unknown outputs {unknown}; this model has {names}")
    wanted = {}
    for o in request.outputs:
        p = o.parameters or {}
        if p.get("classification") or p.get("class_count"):
            raise InputError(
                f"output {o.name!r}: the classification extension is not supported; "
                "read 'predictions' and 'probabilities' instead"
            )
        wanted[o.name] = bool(p.get("binary_data", binary_all))
    return wanted


def encode_response(
    model_name: str,
    version: str,
    request: InferRequest,
    tensors: list[tuple[str, np.ndarray]],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body of the answer to ``request`` and its headers: the outputs it asks for
    among ``tensors`` (JSON, or binary where asked, after the JSON header whose length
    ``Inference-Header-Content-Length`` gives), encoded once.

    Raises:
        InputError: an unknown output, or the classification extension asked for.
    """
    wanted = _wanted_outputs(request, [n for n, _ in tensors])
    by_name = dict(tensors)
    outputs, blobs = [], []
    for n, binary in wanted.items():
        arr = by_name[n]
        if binary:
            data = tensor_bytes(arr)
            outputs.append({"name": n, "shape": list(arr.shape), "datatype": datatype_of(arr),
                            "parameters": {"binary_data_size": len(data)}})
            blobs.append(data)
        else:
            outputs.append(encode_tensor(n, arr))
    payload: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request.id is not None:
        payload["id"] = request.id
    if parameters:
        payload["parameters"] = parameters
    payload["outputs"] = outputs
    head = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream",
                                    "inference-header-content-length": str(len(head))}
