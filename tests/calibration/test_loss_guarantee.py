"""The guaranteed drop for a bounded loss (regression): the increase of the mean loss vs the
teacher <= eps with probability >= 1 - delta, checked by simulation."""

import numpy as np
import pytest
from scipy import stats

from ebjr import InputError
from ebjr.calibration import curve_from_loss, curve_from_metric, select_threshold
from ebjr.calibration.guarantee import GuaranteedDrop, loss_matrix
from simulation import loss_guarantee_run, loss_population, run_all


def test_the_signed_loss_of_a_loss_curve_is_the_clipped_increase_by_brute_force():
    score, student, teacher = loss_population(300)
    student[0] = 50.0  # clipped to the stated range
    curve = curve_from_loss(score, student, teacher)
    idx = np.arange(len(curve))
    m = loss_matrix(curve, "signed", idx, (0.0, 10.0))
    order = np.argsort(score, kind="stable")
    d = np.clip(student, 0, 10)[order] - np.clip(teacher, 0, 10)[order]
    for k in idx:
        answered = np.arange(300) >= curve.n_teacher[k]
        np.testing.assert_allclose(m[:, k], np.where(answered, d, 0.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_range": (0, 10)}, "no exact test"),
        ({"loss_range": (5, 1), "p_value": "wsr"}, "low < high"),
        ({"loss_range": "wide", "p_value": "wsr"}, "loss_range must be"),
    ],
)
def test_bad_loss_ranges_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        GuaranteedDrop(0.1, 0.1, **kwargs)


def test_a_loss_curve_needs_a_range_and_a_set_level_metric_is_refused():
    score, student, teacher = loss_population(200)
    with pytest.raises(InputError, match="needs the range each row's loss lies in"):
        select_threshold(curve_from_loss(score, student, teacher), GuaranteedDrop(0.1, 0.1))
    curve = curve_from_metric(score, lambda mask: float(np.mean(mask)), n_points=5)
    with pytest.raises(InputError, match="set-level metric"):
        select_threshold(curve, GuaranteedDrop(0.1, 0.1, p_value="wsr", loss_range=(0, 1)))


@pytest.mark.integration
@pytest.mark.parametrize("p_value", ["wsr"])
def test_the_loss_guarantee_holds_by_simulation(p_value):
    """200 draws of 2,000 calibration rows from a known population: the population's loss
    increase exceeds eps in at most delta of the draws (binomial slack), the threshold does
    route, and the in-sample pick violates far more often."""
    runs, eps, delta = 200, 0.05, 0.1
    out = run_all(loss_guarantee_run, [(s, 2000, eps, delta, True) for s in range(runs)])
    bad = sum(d > eps for d, _ in out)
    assert bad <= stats.binom.ppf(0.99, runs, delta), (bad, runs)
    assert np.mean([f for _, f in out]) < 0.9  # not the trivial all-teacher answer
    in_sample = run_all(loss_guarantee_run, [(s, 2000, eps, delta, False) for s in range(60)])
    assert sum(d > eps for d, _ in in_sample) / 60 > 2 * delta
