import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ebjr.exceptions import InputError
from ebjr.serve.protocol import InferTensor, decode_tensor, encode_tensor


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
