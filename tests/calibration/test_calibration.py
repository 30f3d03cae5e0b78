import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebjr.calibration import (
    HistogramCrossing,
    MaxCost,
    MaxDrop,
    MaxTeacherFraction,
    TeacherAccuracy,
    curve_from_scores,
    select_threshold,
    tradeoff_curve,
)
from ebjr.exceptions import InputError, LogProbabilityInputError, TargetUnreachableError
from ebjr.routing import get_router
from helpers import synthetic


def brute_force(scores, ps, pt, y, thresholds):
    """Evaluate every threshold directly: teacher iff score < t."""
    out = []
    for t in thresholds:
        teacher = scores < t
        joint = np.where(teacher, pt, ps)
        out.append((teacher.mean(), (joint == y).mean(), (joint == pt).mean()))
    return np.array(out)


@st.composite
def routed_data(draw):
    n = draw(st.integers(1, 60))
    levels = draw(st.integers(1, 8))  # few levels = many ties
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    tied = draw(st.booleans())
    scores = rng.integers(0, levels, n).astype(float) if tied else rng.normal(size=n)
    c = 4
    y = rng.integers(0, c, n)
    ps = np.where(rng.random(n) < 0.7, y, rng.integers(0, c, n))
    pt = np.where(rng.random(n) < 0.85, y, rng.integers(0, c, n))
    return scores, ps, pt, y


@given(routed_data(), st.floats(0, 5), st.floats(0.01, 10))
@settings(max_examples=300, deadline=None)
def test_curve_equals_brute_force_sweep(data, cs, ct):
    scores, ps, pt, y = data
    curve = curve_from_scores(scores, ps, pt, y, student_cost=cs, teacher_cost=ct)
    # one point per distinct score plus the all-teacher point: ties are never split
    assert len(curve) == np.unique(scores).size + 1
    ref = brute_force(scores, ps, pt, y, curve.threshold)
    np.testing.assert_allclose(curve.teacher_fraction, ref[:, 0])
    np.testing.assert_allclose(curve.accuracy, ref[:, 1])
    np.testing.assert_allclose(curve.agreement, ref[:, 2])
    np.testing.assert_allclose(curve.cost, cs + ref[:, 0] * ct)
    # ends: nothing routed = the student, everything routed = the teacher
    assert curve.teacher_fraction[0] == 0 and curve.teacher_fraction[-1] == 1
    assert curve.accuracy[0] == pytest.approx(np.mean(ps == y))
    assert curve.accuracy[-1] == pytest.approx(np.mean(pt == y))
    # ordered by fraction; cost strictly increasing with it
    assert np.all(np.diff(curve.teacher_fraction) > 0)
    assert np.all(np.diff(curve.cost) > 0)
    assert np.all(np.diff(curve.threshold) > 0)
    # every threshold between two points realises the lower point
    for i in range(len(curve)):
        assert curve.index_at(curve.threshold[i]) == i


@given(routed_data(), st.floats(0, 0.3))
@settings(max_examples=200, deadline=None)
def test_max_drop_selection_equals_brute_force(data, eps):
    scores, ps, pt, y = data
    curve = curve_from_scores(scores, ps, pt, y)
    sel = select_threshold(curve, MaxDrop(eps))
    ref = brute_force(scores, ps, pt, y, curve.threshold)
    teacher_acc = np.mean(pt == y)
    ok = np.flatnonzero(ref[:, 1] >= teacher_acc - eps - 1e-12)
    assert sel.point.teacher_fraction == pytest.approx(ref[ok, 0].min())


@given(routed_data(), st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_budget_selection_equals_brute_force(data, f):
    scores, ps, pt, y = data
    curve = curve_from_scores(scores, ps, pt, y, student_cost=1.0, teacher_cost=2.0)
    ref = brute_force(scores, ps, pt, y, curve.threshold)
    allowed = ref[:, 0] <= f + 1e-12
    best = ref[allowed, 1].max()
    sel = select_threshold(curve, MaxTeacherFraction(f))
    assert sel.point.teacher_fraction <= f + 1e-12
    assert sel.point.accuracy == pytest.approx(best)
    sel_c = select_threshold(curve, MaxCost(1.0 + 2.0 * f))
    assert sel_c.point.accuracy == pytest.approx(best)


def test_histogram_crossing_maximises_cdf_gap_by_brute_force():
    s, t, y = synthetic(500, seed=3)
    curve = tradeoff_curve(s, t, y, "energy")
    sel = select_threshold(curve, HistogramCrossing())
    score = get_router("energy").score(s)
    wrong = s.argmax(1) != y
    gaps = [np.mean(score[wrong] < th) - np.mean(score[~wrong] < th) for th in curve.threshold]
    assert sel.details["cdf_gap"] == pytest.approx(max(gaps))
    assert sel.threshold == curve.threshold[int(np.argmax(gaps))]


def test_teacher_accuracy_on_real_pair(cifar10_pair):
    s, t, y = cifar10_pair
    curve = tradeoff_curve(s, t, y, "energy", 81.62, 251.5, cost_unit="MFLOPs")
    sel = select_threshold(curve, TeacherAccuracy())
    assert sel.point.accuracy >= curve.teacher_accuracy
    # the point before it falls short
    i = curve.index_at(sel.threshold)
    assert curve.accuracy[:i].max() < curve.teacher_accuracy
    assert curve.student_accuracy == pytest.approx(0.926)
    assert curve.teacher_accuracy == pytest.approx(0.9437)
    assert sel.point.speedup == pytest.approx(251.5 / (81.62 + sel.point.teacher_fraction * 251.5))


def test_teacher_accuracy_has_no_parameters_and_records_what_it_selects(cifar10_pair):
    """It used to inherit MaxDrop's eps: TeacherAccuracy(0.05) selected a 5-point drop while
    the bundle said "teacher_accuracy"."""
    assert dataclasses.fields(TeacherAccuracy) == ()
    with pytest.raises(TypeError):
        TeacherAccuracy(0.05)  # type: ignore[call-arg]
    s, t, y = cifar10_pair
    curve = tradeoff_curve(s, t, y, "energy")
    sel = select_threshold(curve, TeacherAccuracy())
    assert sel.target == {"kind": "teacher_accuracy"}
    assert sel.point.accuracy >= curve.teacher_accuracy
    assert sel.threshold == select_threshold(curve, MaxDrop(0.0)).threshold
    for target in (MaxDrop(0.01), MaxTeacherFraction(0.2), MaxCost(2.0), TeacherAccuracy()):
        d = select_threshold(curve, target).target
        assert (
            d["kind"] == target.kind
            and type(target)(**{k: v for k, v in d.items() if k != "kind"}) == target
        )


def test_torch_inputs_give_the_same_curve():
    torch = pytest.importorskip("torch")
    s, t, y = synthetic(200)
    a = tradeoff_curve(s, t, y, "energy")
    b = tradeoff_curve(torch.tensor(s), torch.tensor(t), torch.tensor(y), "energy")
    np.testing.assert_allclose(a.accuracy, b.accuracy)
    np.testing.assert_allclose(a.threshold, b.threshold)


def test_label_free_curve():
    s, t, _ = synthetic(200)
    curve = tradeoff_curve(s, t, None, "softmax")
    assert np.all(np.isnan(curve.accuracy))
    assert curve.agreement[-1] == 1.0
    with pytest.raises(InputError, match="needs labels"):
        select_threshold(curve, MaxDrop(0.01))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"student_logits": np.zeros((3, 4))}, InputError, "the student has 3 rows, the teacher 5"),
        (
            {"teacher_logits": np.zeros((5, 3))},
            InputError,
            "the student has 4 classes, the teacher 3",
        ),
        ({"labels": np.array([0, 1, 2, 3, 9])}, InputError, r"must lie in \[0, 4\)"),
        ({"labels": np.array([0, 1, 2])}, InputError, "expected 5, got 3"),
        ({"labels": np.array([0.5, 1, 2, 3, 0])}, InputError, "whole class indices"),
        (
            {
                "student_logits": np.zeros((0, 4)),
                "teacher_logits": np.zeros((0, 4)),
                "labels": np.zeros(0, dtype=int),
            },
            InputError,
            "empty",
        ),
        ({"router": "nope"}, KeyError, "registered routers are"),
        ({"teacher_cost": 0.0}, InputError, "teacher_cost must be a finite positive"),
        ({"student_cost": -1.0}, InputError, "student_cost must be a finite non-negative"),
        (
            {"student_logits": np.log(np.full((5, 4), 0.25))},
            LogProbabilityInputError,
            "log-probabilities",
        ),
    ],
)
def test_error_paths(kwargs, exc, match):
    rng = np.random.default_rng(0)
    args = {
        "student_logits": rng.normal(size=(5, 4)),
        "teacher_logits": rng.normal(size=(5, 4)),
        "labels": np.array([0, 1, 2, 3, 0]),
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        tradeoff_curve(**args)


def test_unreachable_targets():
    s, t, y = synthetic(100)
    curve = tradeoff_curve(s, t, y, "energy", 2.0, 5.0)
    with pytest.raises(TargetUnreachableError, match="the student alone costs 2"):
        select_threshold(curve, MaxCost(1.0))
    with pytest.raises(InputError, match=r"fraction must lie in \[0, 1\]"):
        MaxTeacherFraction(1.5)
    with pytest.raises(InputError, match="target must be a Target"):
        select_threshold(curve, 0.5)
    perfect = curve_from_scores(np.arange(5.0), np.arange(5), np.arange(5), np.arange(5))
    with pytest.raises(TargetUnreachableError, match="right and wrong"):
        select_threshold(perfect, HistogramCrossing())
