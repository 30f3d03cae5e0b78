"""Curves whose quality is a per-sample loss or a set-level metric, against brute force."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebjr.calibration import (
    HistogramCrossing,
    MaxDrop,
    MaxTeacherFraction,
    TeacherAccuracy,
    curve_from_loss,
    curve_from_metric,
    curve_from_quality,
    select_threshold,
)
from ebjr.calibration.guarantee import GuaranteedDrop
from ebjr.exceptions import InputError

rows = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0]), min_size=n, max_size=n),
        st.lists(st.floats(0, 10), min_size=n, max_size=n),
        st.lists(st.floats(0, 10), min_size=n, max_size=n),
    )
)


@given(rows)
def test_loss_curve_equals_a_brute_force_sweep(data):
    scores, ls, lt = (np.asarray(v, dtype=np.float64) for v in data)
    curve = curve_from_loss(scores, ls, lt, loss="absolute error")
    assert curve.quality == "negative absolute error"
    # one point per distinct finite threshold (plus +inf), each equal to a direct evaluation
    expected = [*sorted(set(scores[np.isfinite(scores)].tolist())), np.inf]
    assert curve.threshold.tolist() == expected
    for t, frac, q in zip(curve.threshold, curve.teacher_fraction, curve.accuracy, strict=True):
        to_teacher = (scores < t) | (scores == -np.inf)
        assert frac == pytest.approx(to_teacher.mean())
        assert -q == pytest.approx(np.where(to_teacher, lt, ls).mean(), abs=1e-9)
    assert -curve.teacher_accuracy == pytest.approx(lt.mean())


def test_targets_work_in_quality_units_and_correctness_targets_refuse():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=500)
    ls = np.abs(rng.normal(size=500)) * (1 + (scores < 0))  # the student is worse where unsure
    lt = np.abs(rng.normal(size=500)) * 0.5
    curve = curve_from_loss(scores, ls, lt)
    sel = select_threshold(curve, MaxDrop(0.05))  # mean loss at most 0.05 above the teacher's
    p = sel.point
    assert -p.accuracy <= lt.mean() + 0.05 + 1e-12
    assert select_threshold(curve, TeacherAccuracy()).point.accuracy >= curve.teacher_accuracy
    assert select_threshold(curve, MaxTeacherFraction(0.2)).point.teacher_fraction <= 0.2
    with pytest.raises(InputError, match="needs the range each row's loss lies in"):
        select_threshold(curve, GuaranteedDrop(0.01))  # a loss guarantee states its range
    for target in (HistogramCrossing(),):
        with pytest.raises(InputError, match="per-sample correctness"):
            select_threshold(curve, target)


def test_quality_inputs_are_checked():
    with pytest.raises(InputError, match="shape"):
        curve_from_quality([0.0, 1.0], [1.0], [1.0, 2.0])
    with pytest.raises(InputError, match="NaN"):
        curve_from_quality([0.0, 1.0], [1.0, np.nan], [1.0, 2.0])


def test_metric_curve_calls_the_metric_at_realisable_points():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    qs, qt = rng.random(300), rng.random(300) + 0.2
    calls = []

    def metric(to_teacher):
        calls.append(to_teacher.copy())
        return float(np.where(to_teacher, qt, qs).mean())

    curve = curve_from_metric(scores, metric, n_points=11, quality="mean q")
    full = curve_from_quality(scores, qs, qt)
    assert curve.teacher_fraction[0] == 0 and curve.teacher_fraction[-1] == 1
    for t, q in zip(curve.threshold, curve.accuracy, strict=True):
        i = int(np.flatnonzero(full.threshold == t)[0])  # a point of the exact curve
        assert q == pytest.approx(full.accuracy[i])
    # every mask routes exactly the rows below its threshold
    for mask, t in zip(calls, curve.threshold, strict=True):
        assert (mask == (scores < t)).all()
    assert 2 <= len(curve) <= 11


def test_quality_at_share_is_the_last_point_within_the_share():
    from ebjr.calibration import curve_from_quality

    rng = np.random.default_rng(0)
    c = curve_from_quality(rng.normal(size=50), rng.uniform(size=50), rng.uniform(size=50))
    for share in (0.0, 0.1, 0.33, 0.5, 1.0):
        within = [i for i, f in enumerate(c.teacher_fraction) if f <= share + 1e-12]
        assert c.quality_at_share(share) == c.accuracy[within[-1]]
