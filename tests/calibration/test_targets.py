"""Conformance of every registered target, and the target registry."""

import dataclasses

import numpy as np
import pytest

from ebjr.calibration import (
    Target,
    TeacherAccuracy,
    list_targets,
    select_threshold,
    target_from_spec,
    tradeoff_curve,
)
from ebjr.exceptions import InputError
from helpers import synthetic

#: one instance of each registered kind, with parameters a 600-row curve can meet
EXAMPLES = {
    "max_drop": {"eps": 0.02},
    "teacher_accuracy": {},
    "max_teacher_fraction": {"fraction": 0.4},
    "max_cost": {"cost": 3.0},
    "histogram_crossing": {},
    "guaranteed_drop": {"eps": 0.05, "delta": 0.1},
}


def test_every_registered_kind_has_an_example():
    assert sorted(EXAMPLES) == list_targets()


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_conformance(kind):
    target = target_from_spec({"kind": kind, **EXAMPLES[kind]})
    assert isinstance(target, Target) and target.kind == kind
    # the recorded spec describes the target, and rebuilds an equal one
    spec = target.to_dict()
    assert spec["kind"] == kind and target_from_spec(spec) == target
    assert set(spec) - {"kind"} == {f.name for f in dataclasses.fields(target)}
    s, t, y = synthetic(600, seed=3)
    curve = tradeoff_curve(s, t, y, "softmax", 1.0, 4.0)
    sel = select_threshold(curve, target)
    i = curve.index_at(sel.threshold)
    assert 0 <= i < len(curve) and sel.point.threshold == curve.threshold[i]
    assert sel.target == spec
    bound = target.drop_bound()
    if bound is not None:  # a drop target never selects a point that breaks it in-sample
        assert curve.teacher_accuracy - sel.point.accuracy <= bound + 1e-12


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "nope"}, "unknown target kind 'nope'; the registered target kinds are"),
        ({"kind": "teacher_accuracy", "eps": 0.05}, "takes no parameters, got \\['eps'\\]"),
        ({"kind": "max_drop", "epsilon": 0.1}, "takes \\['eps'\\], got \\['epsilon'\\]"),
        ({"eps": 0.1}, "a target spec is a dict with a 'kind' string"),
        ({"kind": "max_drop", "eps": -1}, "eps must lie in"),
    ],
)
def test_bad_specs_are_refused_clearly(spec, match):
    with pytest.raises(InputError, match=match):
        target_from_spec(spec)


def test_teacher_accuracy_in_a_bundle_spec_reads_back():
    target = target_from_spec({"kind": "teacher_accuracy"})
    assert target == TeacherAccuracy()
    curve = tradeoff_curve(*synthetic(200), "energy")
    point = select_threshold(curve, target).point
    assert point.accuracy >= curve.teacher_accuracy
    assert np.all(curve.accuracy[: curve.index_at(point.threshold)] < curve.teacher_accuracy)
