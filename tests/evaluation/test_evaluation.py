import itertools
import math

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from ebjr.calibration import TeacherAccuracy, select_threshold, tradeoff_curve
from ebjr.evaluation import evaluate, mcnemar, oracle
from ebjr.exceptions import InputError
from helpers import load_pair, synthetic


def _preds(n01, n10, n11=50, n00=20):
    """Predictions with n01 inputs only A gets right, n10 only B gets right."""
    y = np.zeros(n01 + n10 + n11 + n00, dtype=int)
    a = np.concatenate([np.zeros(n01), np.ones(n10), np.zeros(n11), np.ones(n00)]).astype(int)
    b = np.concatenate([np.ones(n01), np.zeros(n10), np.zeros(n11), np.ones(n00)]).astype(int)
    return a, b, y


@pytest.mark.parametrize(("n01", "n10"), [(0, 0), (3, 0), (5, 9), (12, 12), (30, 12), (100, 140)])
def test_mcnemar_matches_statsmodels(n01, n10):
    a, b, y = _preds(n01, n10)
    r = mcnemar(a, b, y)
    assert (r.only_a, r.only_b) == (n01, n10)
    table = [[50, n01], [n10, 20]]
    exact = n01 + n10 < 25
    ref = sm_mcnemar(table, exact=exact, correction=True)
    assert r.method == ("exact" if exact else "chi2")
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    if n10:
        assert r.odds_ratio == pytest.approx(n01 / n10)
    elif n01:
        assert r.odds_ratio == math.inf


def test_mcnemar_errors():
    with pytest.raises(InputError, match="non-empty and of equal length"):
        mcnemar([1, 2], [1], [1, 2])


@pytest.mark.parametrize("seed", range(6))
def test_oracle_by_brute_force_over_every_routing(seed):
    """Every subset of 11 rows sent to the teacher: the oracle's points and corners are the
    best accuracy any routing reaches with that many rows."""
    rng = np.random.default_rng(seed)
    n = 11
    sc, tc = rng.random(n) < 0.6, rng.random(n) < 0.75
    best_at = np.full(n + 1, -1.0)
    for mask in itertools.product([False, True], repeat=n):
        m = np.array(mask)
        acc = np.mean(np.where(m, tc, sc))
        best_at[m.sum()] = max(best_at[m.sum()], acc)
    o = oracle(sc, tc, 1.0, 5.0)
    k_teacher = int(np.flatnonzero(best_at >= np.mean(tc) - 1e-12)[0])
    k_best = int(np.flatnonzero(best_at >= best_at.max() - 1e-12)[0])
    assert o.at_teacher_accuracy.teacher_fraction == pytest.approx(k_teacher / n)
    assert o.best.teacher_fraction == pytest.approx(k_best / n)
    assert o.best.accuracy == pytest.approx(best_at.max())
    assert o.best.accuracy == pytest.approx(np.mean(sc | tc))
    np.testing.assert_allclose(
        np.interp(np.arange(n + 1) / n, o.fractions, o.accuracies), best_at, atol=1e-12
    )
    for p in (o.best, o.at_teacher_accuracy):
        assert p.cost == pytest.approx(1 + 5 * p.teacher_fraction)
        assert p.speedup == pytest.approx(5 / p.cost)


def test_oracle_at_the_teacher_accuracy_on_a_public_pair():
    """CIFAR-10 ResNet-20 -> ResNet-56: the oracle reaches the teacher's accuracy by routing
    the accuracy gap (1.77 %), not every row only the teacher gets right (3.8 %)."""
    s, t, y = load_pair("cifar10_resnet20.npz", "cifar10_resnet56.npz")
    ev = evaluate(s, t, y, ["energy"], student_cost=81.62, teacher_cost=251.5, random_seeds=0)
    o = ev.to_json_dict()["oracle"]
    assert o["at_teacher_accuracy"]["teacher_fraction"] == pytest.approx(0.0177)
    assert o["at_teacher_accuracy"]["speedup"] == pytest.approx(2.92, abs=0.005)
    assert o["at_teacher_accuracy"]["accuracy"] == pytest.approx(0.9437)
    assert o["best"]["teacher_fraction"] == pytest.approx(0.038, abs=5e-4)
    assert o["teacher_fraction"] == o["best"]["teacher_fraction"]  # flat keys: the old contract


def test_evaluate_json_contract_and_values():
    s, t, y = synthetic(600, seed=1)
    ev = evaluate(s, t, y, student_cost=2.0, teacher_cost=10.0, cost_unit="ms", random_seeds=5)
    d = ev.to_json_dict()
    assert d["n"] == 600
    assert d["student"]["accuracy"] == pytest.approx(np.mean(s.argmax(1) == y))
    assert d["teacher"]["accuracy"] == pytest.approx(np.mean(t.argmax(1) == y))
    for name in ["energy", "softmax", "entropy", "maxlogit", "margin"]:
        entry = d["routers"][name]
        point = entry["at_teacher_accuracy"]
        assert set(point) >= {"threshold", "teacher_fraction", "accuracy", "cost", "speedup"}
        ref = select_threshold(tradeoff_curve(s, t, y, name, 2.0, 10.0), TeacherAccuracy()).point
        assert point["teacher_fraction"] == pytest.approx(ref.teacher_fraction)
        assert point["accuracy"] >= d["teacher"]["accuracy"]
        assert point["speedup"] == pytest.approx(10.0 / point["cost"])
        assert 0 < entry["auc"] <= 1
    assert set(d["oracle"]) >= {"at_teacher_accuracy", "best", "teacher_fraction", "cost"}
    assert d["random"]["seeds"] == 5
    # the oracle is the bound: no router reaches the teacher's accuracy more cheaply
    for entry in d["routers"].values():
        assert (
            entry["at_teacher_accuracy"]["cost"]
            >= d["oracle"]["at_teacher_accuracy"]["cost"] - 1e-9
        )


def test_evaluate_skips_energy_on_log_probabilities():
    s, t, y = synthetic(300)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    ev = evaluate(logp, t, y, random_seeds=0)
    assert "energy" in ev.skipped and "log-probabilities" in ev.skipped["energy"]
    assert "softmax" in ev.curves and ev.random is None


def test_joint_predictions_follow_the_rule():
    s, t, y = synthetic(200)
    ev = evaluate(s, t, y, ["energy"], random_seeds=0)
    thr = ev.at_teacher_accuracy["energy"].threshold
    joint = ev.joint_predictions("energy", thr)
    score = np.log(np.exp(s).sum(1))
    np.testing.assert_array_equal(joint, np.where(score < thr, t.argmax(1), s.argmax(1)))
    assert np.mean(joint == y) == pytest.approx(ev.at_teacher_accuracy["energy"].accuracy)
