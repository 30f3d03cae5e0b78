"""The one scalar validator (``check_int``) and the one registry helper (``Registry``),
against their definitions, and where the library uses them."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ebjr
from ebjr._utils.registry import Registry
from ebjr._utils.validation import check_int
from ebjr.calibration.curve import curve_from_metric
from ebjr.calibration.targets import target_from_spec
from ebjr.exceptions import InputError, UnknownNameError, UnknownRouterError

bounds = st.one_of(st.none(), st.integers(-50, 50))


@given(st.one_of(st.integers(-100, 100), st.booleans(), st.floats(allow_nan=True),
                 st.text(max_size=3), st.none()), bounds, bounds)
def test_check_int_accepts_exactly_the_integers_within_the_bounds(value, low, high):
    ok = (type(value) is int and (low is None or value >= low)
          and (high is None or value <= high))
    if ok:
        assert check_int(value, "n", low, high) == value
        assert check_int(np.int32(value), "n", low, high) == value  # numpy's too
    else:
        with pytest.raises(InputError, match=r"^n must be (a|an) .*, got "):
            check_int(value, "n", low, high)


@pytest.mark.parametrize("call", [
    lambda: ebjr.JointModel(lambda x: x, lambda x: x, max_teacher_batch=True),
    lambda: curve_from_metric(np.zeros(4), lambda m: 0.0, n_points=True),
    lambda: ebjr.get_router("random", seed=True),
], ids=["max_teacher_batch", "n_points", "seed"])
def test_booleans_are_no_sizes_anywhere(call):
    with pytest.raises(InputError, match="got True"):
        call()


def test_a_registry_names_its_entries_refuses_duplicates_and_loads_lazily():
    r = Registry("colour")
    assert r.add("red", 1) == 1
    r.add("red", 1)  # the same entry again is no duplicate
    with pytest.raises(InputError, match="a colour named 'red' is already registered"):
        r.add("red", 2)
    r.add_lazy("e", "math:e", tag="number")
    assert "e" in r and r.names() == ["e", "red"] and r.names(tag="number") == ["e"]
    assert r.get("e") == pytest.approx(2.718281828)
    with pytest.raises(UnknownNameError, match="unknown colour 'blue'; the registered "
                       "colours are: e, red"):
        r.get("blue")


def test_a_lazy_entry_may_be_replaced_by_the_object_it_names():
    import json

    r = Registry("codec")
    r.add_lazy("json", "json:dumps")
    assert r.add("json", json.dumps) is json.dumps
    with pytest.raises(InputError):
        r.add("json", json.loads)


def test_routers_targets_and_model_kinds_share_one_unknown_name_error():
    with pytest.raises(UnknownRouterError) as router:
        ebjr.get_router("nope")
    with pytest.raises(UnknownNameError) as target:
        target_from_spec({"kind": "nope"})
    from ebjr.adapters.base import adapter_for_reference

    with pytest.raises(UnknownNameError) as kind:
        adapter_for_reference("pickle")
    for err, what in ((router, "router"), (target, "target kind"), (kind, "model kind")):
        assert isinstance(err.value, InputError) and isinstance(err.value, KeyError)
        assert str(err.value).startswith(f"unknown {what} 'nope'" if what != "model kind"
                                         else "unknown model kind 'pickle'")
