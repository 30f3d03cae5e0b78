"""Shadowing more near the threshold: the band holds the share of traffic it says (counted
by brute force), the monitor stays valid under the plan's probabilities (its false-alarm
level at the boundary, by simulation) and its weighted estimate stays unbiased, and the
plan lowers the estimate's variance (closed form) where disagreements gather near the
threshold, for the same teacher work."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

import ebjr
from ebjr.calibration.shadow_plan import ShadowPlan
from ebjr.exceptions import InputError


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=300),
       st.floats(-60, 60), st.floats(0.01, 1.0))
def test_the_band_holds_near_share_of_the_calibration_rows(scores, threshold, share):
    s = np.asarray(scores)
    plan = ShadowPlan.from_scores(0.05, s, near_rate=0.5, near_share=share)
    top = plan.band_top(threshold)
    assert top >= threshold or top == pytest.approx(threshold) or np.all(s >= threshold)
    # brute force: the band [threshold, top) holds at least `share` of the rows, unless it
    # runs to the end; one stored score lower would hold less than `share`
    below = np.mean(s < threshold)
    if math.isinf(top):
        assert np.mean(s < np.max(s)) - below < share + 1e-9
    else:
        assert np.mean(s < top) - np.mean(s < threshold) >= share - 1.0 / s.size - 1e-9
        lower = s[s < top]
        if lower.size and lower.max() > threshold:
            assert np.mean(s < lower.max()) - below < share + 1e-9


def test_probabilities_near_and_away_from_the_threshold():
    plan = ShadowPlan.from_scores(0.02, np.arange(100) / 100, near_rate=0.3, near_share=0.2)
    p = plan.probabilities(np.array([0.39, 0.40, 0.59, 0.60, 0.95]), 0.4)
    assert p.tolist() == [0.3, 0.3, 0.3, 0.02, 0.02]  # band [0.4, 0.6)
    assert plan.min_prob == 0.02 and plan.band_top(math.inf) == math.inf
    uniform = ShadowPlan(0.1)
    assert uniform.probabilities(np.array([0.1, 0.9]), 0.5).tolist() == [0.1, 0.1]
    assert uniform.band_top(0.5) == 0.5 and uniform.min_prob == 0.1
    assert ebjr.ShadowPlan is ShadowPlan


def test_from_curve_reads_a_bundles_stored_curve():
    curve = {"threshold": [0.1, 0.2, 0.3, 0.4, math.inf],
             "teacher_fraction": [0.0, 0.25, 0.5, 0.75, 1.0]}
    plan = ShadowPlan.from_curve(0.05, curve, near_rate=0.5, near_share=0.25)
    assert plan.band_top(0.2) == 0.3 and plan.band_top(0.25) == 0.4
    assert plan.band_top(0.4) == math.inf  # nothing stored above: the band runs to the top
    assert ShadowPlan.from_curve(0.05, None).near_rate is None


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0.0}, "rate must lie in"),
    ({"rate": 0.1, "near_rate": 1.5, "thresholds": [0.0], "teacher_fraction": [0.0]},
     "near_rate must lie in"),
    ({"rate": 0.1, "near_rate": 0.5}, "needs the score distribution"),
    ({"rate": 0.1, "near_share": 0.0}, "near_share must lie in"),
    ({"rate": 0.1, "thresholds": [0.0, 1.0], "teacher_fraction": [0.0]}, "same length"),
])
def test_bad_plans_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        ShadowPlan(**kwargs)
    with pytest.raises(InputError, match="has none"):
        ShadowPlan.from_curve(0.1, {"threshold": []}, near_rate=0.5)


def population(rng, n=200_000):
    """Scores in [0, 1], the student answering from 0.3 up; its disagreement with the
    teacher falls with the score (most of it just above the threshold)."""
    score = rng.random(n)
    disagree = rng.random(n) < 0.25 * np.exp(-(score - 0.3) / 0.08)
    return score, disagree


def test_the_plan_is_unbiased_and_lowers_the_variance_for_the_same_teacher_work():
    rng = np.random.default_rng(0)
    score, disagree = population(rng)
    thr = 0.3
    student = score >= thr
    rate = float(np.mean(student & disagree))
    # 71 % of the disagreements lie in the band, which holds 10 % of the traffic
    plan = ShadowPlan.from_scores(0.04, score, near_rate=0.15, near_share=0.1)
    p = plan.probabilities(score, thr)
    work_plan = float(np.mean(np.where(student, p, 0.0)))
    flat = work_plan / np.mean(student)  # a uniform rate with the same teacher work
    # closed form: E[X] = rate for both; Var[X] = E[d / p] - rate^2 on the student's rows
    var_plan = np.mean(np.where(student & disagree, 1 / p, 0.0)) - rate ** 2
    var_flat = np.mean(np.where(student & disagree, 1 / flat, 0.0)) - rate ** 2
    assert var_plan < 0.75 * var_flat
    # unbiased by simulation: the weighted mean over 40 draws of the shadows
    est = [np.mean(np.where(student & (rng.random(score.size) < p) & disagree, 1 / p, 0.0))
           for _ in range(40)]
    se = math.sqrt(var_plan / score.size / 40)
    assert abs(np.mean(est) - rate) < 4 * se


def test_the_monitor_keeps_its_level_under_the_plan():
    """At the boundary (the population's disagreement = eps): 300 runs of 60,000 rows with
    the plan's per-row probabilities alarm in at most delta of the runs."""
    rng = np.random.default_rng(5)
    score, disagree = population(rng, 100_000)
    thr = 0.3
    eps = float(np.mean((score >= thr) & disagree))
    plan = ShadowPlan.from_scores(0.02, score, near_rate=0.3, near_share=0.1)
    delta, runs, alarms = 0.1, 300, 0
    for _ in range(runs):
        mon = ebjr.GuaranteeMonitor(eps, delta, min_shadow_prob=plan.min_prob)
        for _ in range(30):
            idx = rng.integers(0, score.size, 2000)
            s, d = score[idx] >= thr, disagree[idx]
            p = plan.probabilities(score[idx], thr)
            mon.update(s, s & (rng.random(idx.size) < p), d, p)
        alarms += mon.alarm
    assert binom.sf(alarms - 1, runs, delta) > 1e-3, alarms
