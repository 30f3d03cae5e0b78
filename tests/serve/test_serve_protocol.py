import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from ebjr.exceptions import InputError
from ebjr.serve.protocol import (
    InferRequest,
    InferTensor,
    decode_tensor,
    encode_tensor,
    infer_request_fast,
)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
                  elements=st.floats(-1e6, 1e6, width=32)))
def test_encode_decode_round_trip(x):
    t = InferTensor(**encode_tensor("input", x))
    assert t.datatype == "FP32" and t.shape == list(x.shape)
    np.testing.assert_array_equal(decode_tensor(t), x)


def test_nested_data_is_accepted():
    t = InferTensor(name="x", shape=[2, 2], datatype="FP64", data=[[1, 2], [3, 4]])
    np.testing.assert_array_equal(decode_tensor(t), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("tensor", "row_shape", "max_rows", "message"),
    [
        (dict(shape=[2, 2], datatype="BYTES", data=["a"] * 4), None, None, "datatype 'BYTES'"),
        (dict(shape=[2, 3], datatype="FP32", data=[0.0] * 4), None, None, "needs 6 values"),
        (dict(shape=[2, 2], datatype="FP32", data=[0.0] * 4), (3,), None, "expected shape [n, 3]"),
        (dict(shape=[0, 2], datatype="FP32", data=[]), None, None, "empty"),
        (dict(shape=[5, 1], datatype="FP32", data=[0.0] * 5), None, 4, "at most 4"),
        (dict(shape=[1, 2], datatype="FP32", data=[math.nan, 1.0]), None, None, "NaN"),
        (dict(shape=[1, 2], datatype="FP32", data=[math.inf, 1.0]), None, None, "infinity"),
        (dict(shape=[1, 2], datatype="FP32", data=["a", "b"]), None, None, "must be numbers"),
        (dict(shape=[1, 2], datatype="FP32", data=[[1.0], [1.0, 2.0]]), None, None, "numbers"),
        (dict(shape=[1, 2], datatype="INT32", data=[1.5, 1.0]), None, None, "whole numbers"),
        (dict(shape=[-1, 2], datatype="FP32", data=[1.0, 1.0]), None, None, "non-negative"),
        (dict(shape=[], datatype="FP32", data=[1.0]), None, None, "[batch, ...]"),
        # the model reads float32: an FP64 value past its range would become infinity
        (dict(shape=[1, 2], datatype="FP64", data=[1e300, 1.0]), None, None, "reads float32"),
    ],
)
def test_bad_tensors_are_refused_with_a_message(tensor, row_shape, max_rows, message):
    with pytest.raises(InputError, match=None) as info:
        decode_tensor(InferTensor(name="input", **tensor), row_shape, max_rows)
    assert message in str(info.value)


@pytest.mark.parametrize("data", [[1.0, True], [True, False], ["a", 1.0], [[1.0], ["2"]],
                                  [None, 1.0], [{"x": 1}]])
def test_only_numbers_or_strings_are_tensor_data(data):
    """``true`` is not 1.0 (JSON's booleans and numbers are different things): refused by the
    schema, before any array is built."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        InferTensor(name="input", shape=[1, 2], datatype="FP32", data=data)


def test_encode_names_datatypes():
    assert encode_tensor("a", np.array([1, 2], dtype=np.int64))["datatype"] == "INT64"
    assert encode_tensor("b", np.array(["x"]))["datatype"] == "BYTES"
    assert encode_tensor("c", np.zeros((2, 3), np.float32))["shape"] == [2, 3]


# ------------------------------------------------- the fast reader of the common request
_NUMBER = st.one_of(
    st.integers(-300, 300), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 1e308]))
_ODD = st.sampled_from([True, False, None, "7", [], [1, 2], {"a": 1}])


@st.composite
def _requests(draw):
    """JSON request bodies: mostly well-formed ones with numbers, and every kind of flaw
    the schema refuses (booleans, nulls, strings, ragged or deep nesting, odd fields)."""
    rows = draw(st.integers(0, 3))
    width = draw(st.integers(1, 4))
    flat = draw(st.lists(_NUMBER, min_size=rows * width, max_size=rows * width))
    data = draw(st.sampled_from(["flat", "nested", "odd", "ragged"]))
    if data == "nested" and rows:
        flat = [flat[i * width:(i + 1) * width] for i in range(rows)]
    elif data == "odd" and flat:
        flat[draw(st.integers(0, len(flat) - 1))] = draw(_ODD)
    elif data == "ragged" and rows > 1:
        flat = [flat[:width], flat[width:width + 1]]
    tensor = {"name": draw(st.sampled_from(["input", "x", 7])),
              "shape": draw(st.sampled_from([[rows, width], [rows * width], ["2"], [-1, 2]])),
              "datatype": draw(st.sampled_from(["FP32", "FP64", "INT8", "UINT8", "INT64",
                                                "BYTES", "BOOL", 3])),
              "data": flat}
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.sampled_from([{}, {"binary_data_size": 4}, []]))
    if draw(st.integers(0, 9)) == 0:
        tensor["extra"] = 1
    body = {"inputs": draw(st.sampled_from([[tensor], [tensor, tensor], tensor, []]))
            if draw(st.integers(0, 5)) == 0 else [tensor]}
    if draw(st.booleans()):
        body["id"] = draw(st.sampled_from(["r1", "true", "", 5, None]))
    if draw(st.booleans()):
        body["outputs"] = draw(st.sampled_from([[{"name": "scores"}], [{}], "all"]))
    return json.dumps(body).encode()


def _outcome(make):
    try:
        return make()
    except (InputError, ValidationError) as exc:
        return ("refused", type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None)
@given(_requests())
def test_the_fast_reader_accepts_only_what_the_schema_does_and_decodes_alike(raw):
    """``infer_request_fast`` (orjson + one numpy conversion) against the full pydantic
    validation: it may pass a body on to the full reader, but whatever it reads must be
    what the full reader reads, tensor values and refusals included."""
    fast = infer_request_fast(raw)
    full = _outcome(lambda: InferRequest.model_validate_json(raw))
    if fast is None:
        return
    assert isinstance(full, InferRequest), f"the fast reader took what the schema refuses: {full}"
    assert fast.model_dump(exclude={"inputs"}) == full.model_dump(exclude={"inputs"})
    ft, gt = fast.inputs[0], full.inputs[0]
    assert ft.model_dump(exclude={"data"}) == gt.model_dump(exclude={"data"})
    for shape in (None, (2,), (4,)):
        a = _outcome(lambda ft=ft, shape=shape: decode_tensor(ft, shape, 8))
        b = _outcome(lambda gt=gt, shape=shape: decode_tensor(gt, shape, 8))
        assert type(a) is type(b), (a, b)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        else:
            assert a == b


def test_the_fast_reader_reads_the_common_request_and_passes_the_rest_on():
    x = np.arange(12, dtype=np.uint8).reshape(2, 6)
    raw = json.dumps({"id": "a", "inputs": [{"name": "input", "shape": [2, 6],
                                             "datatype": "UINT8",
                                             "data": x.reshape(-1).tolist()}]}).encode()
    got = infer_request_fast(raw)
    assert got is not None and got.id == "a"
    np.testing.assert_array_equal(decode_tensor(got.inputs[0]), x.astype(np.float32))
    # booleans anywhere, binary data, several inputs, no JSON: the full reader's
    for other in (raw.replace(b'"a"', b"true"), b'{"inputs": []}', b"not json",
                  b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}]}',
                  b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", '
                  b'"data": [null]}]}'):
        assert infer_request_fast(other) is None
