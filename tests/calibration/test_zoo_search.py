"""Zoo search: the chain frontier against brute force, the search against an exhaustive one,
clear errors, and the whole cascade's guarantee by simulation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebjr import InputError, TargetUnreachableError
from ebjr.calibration import MaxCost, MaxDrop, TeacherAccuracy
from ebjr.calibration.chain import chain_points, pareto_order
from ebjr.calibration.guarantee import GuaranteedDrop
from ebjr.calibration.zoo import Zoo, search_cascade
from ebjr.joint.cascade import exit_stages
from helpers import synthetic_zoo
from simulation import run_all, zoo_search_run


def _brute(scores, correct, costs, ref_right, grids):
    """Every threshold vector of a chain, evaluated row by row through exit_stages."""
    n = correct[0].shape[0]
    table = np.stack(correct)
    cands = [[*g, np.inf] for g in grids]
    out = {}
    for ts in itertools.product(*cands):
        e = exit_stages(scores, ts, n)
        right = table[e, np.arange(n)]
        out[ts] = (int(right.sum()), float(np.cumsum(costs)[e].mean()),
                   int(np.sum(ref_right & ~right)), int(np.sum(~ref_right & right)))
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25), k=st.integers(1, 3),
       ties=st.booleans())
def test_chain_counts_equal_brute_force(seed, n, k, ties):
    rng = np.random.default_rng(seed)
    scores = [rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)
              for _ in range(k)]
    if n > 2:
        scores[0][0] = np.nan  # never answered: goes on
    correct = [rng.random(n) < 0.6 for _ in range(k + 1)]
    ref = rng.random(n) < 0.7
    costs = list(np.cumsum(rng.uniform(0.5, 2, size=k + 1)))
    pts = chain_points(scores, correct, costs, reference_right=ref)
    brute = _brute(scores, correct, costs, ref, pts.grids)
    assert len(brute) == pts.correct.size
    plus, minus = pts.discordant()
    for cell in range(pts.correct.size):
        want = brute[pts.thresholds(cell)]
        assert (int(pts.correct[cell]), int(plus[cell]), int(minus[cell])) == (
            want[0], want[2], want[3])
        assert pts.cost[cell] == pytest.approx(want[1])


def test_the_frontier_is_the_pareto_set_of_brute_force():
    rng = np.random.default_rng(3)
    scores = [rng.normal(size=40) for _ in range(2)]
    correct = [rng.random(40) < p for p in (0.5, 0.7, 0.9)]
    pts = chain_points(scores, correct, [1.0, 3.0, 9.0])
    brute = _brute(scores, correct, [1.0, 3.0, 9.0], np.ones(40, bool), pts.grids)
    acc = np.array([v[0] for v in brute.values()])
    cost = np.array([v[1] for v in brute.values()])
    want = sorted((round(cost[i], 9), acc[i]) for i in pareto_order(cost, acc))
    got = sorted((round(pts.cost[i], 9), pts.correct[i]) for i in pts.frontier())
    assert got == want
    front = pts.frontier()
    assert np.all(np.diff(pts.cost[front]) < 0) and np.all(np.diff(pts.correct[front]) < 0)


@pytest.mark.parametrize("cells", [16, 64, 256])
def test_a_coarse_grid_is_never_better_than_the_exact_frontier_and_its_gap_is_small(cells):
    outputs, y, costs = synthetic_zoo(600, seed=5)
    exact = search_cascade(outputs, y, costs, TeacherAccuracy(), max_cells=10**7,
                           combine="last", progress=False)
    coarse = search_cascade(outputs, y, costs, TeacherAccuracy(), max_cells=cells,
                            combine="last", progress=False)
    e, c = exact.details["calibration_cost"], coarse.details["calibration_cost"]
    assert e <= c + 1e-9
    # the measured gap (also printed by benchmarks/zoo_cascades.py on the real zoos)
    assert c <= e * {16: 1.6, 64: 1.25, 256: 1.1}[cells]


def _exhaustive(outputs, y, costs, models, meets, max_stages):
    """The cheapest (chain, thresholds) over every chain of the given models in cost order and
    every threshold vector of distinct scores, evaluated row by row."""
    from ebjr.routing import get_router

    r = get_router("softmax")
    best = (np.inf, None)
    for k in range(1, max_stages + 1):
        for chain in itertools.combinations(models, k):
            scores = [np.asarray(r.score(outputs[m])) for m in chain[:-1]]
            cands = [[*sorted(set(s.tolist())), np.inf] for s in scores]
            correct = np.stack([np.argmax(outputs[m], 1) == y for m in chain])
            for ts in itertools.product(*cands):
                e = exit_stages(scores, ts, y.size)
                acc = correct[e, np.arange(y.size)].mean()
                cost = np.cumsum([costs[m] for m in chain])[e].mean()
                if meets(acc, cost) and cost < best[0] - 1e-12:
                    best = (cost, chain)
    return best


def test_search_finds_the_cheapest_cascade_an_exhaustive_search_finds():
    outputs, y, costs = synthetic_zoo(30, seed=11)
    ref_acc = max(np.mean(np.argmax(z, 1) == y) for z in outputs.values())
    got = search_cascade(outputs, y, costs, MaxDrop(0.05), max_cells=10**6, combine="last",
                         progress=False)
    zoo = Zoo.check(outputs, y, costs)
    from ebjr.calibration.zoo import _pareto_models

    want_cost, _ = _exhaustive(outputs, y, costs, _pareto_models(zoo, np.arange(30)),
                                        lambda a, _c: a >= ref_acc - 0.05 - 1e-12, 3)
    assert got.details["calibration_cost"] == pytest.approx(want_cost)
    r = got.apply(outputs)
    assert np.mean(r.predictions == y) >= ref_acc - 0.05 - 1e-12
    assert r.cost.mean() == pytest.approx(want_cost)


def test_targets_are_met_in_sample_and_recorded():
    outputs, y, costs = synthetic_zoo(2000, seed=2)
    ref = max(outputs, key=lambda m: np.mean(np.argmax(outputs[m], 1) == y))
    ref_acc = np.mean(np.argmax(outputs[ref], 1) == y)
    for target in (TeacherAccuracy(), MaxDrop(0.02)):
        c = search_cascade(outputs, y, costs, target, progress=False)
        r = c.apply(outputs)
        assert np.mean(r.predictions == y) >= ref_acc - target.drop_bound() - 1e-12
        assert r.cost.mean() <= costs[ref]
        assert c.reference == ref and c.details["in_sample"]
        assert c.details["calibration_accuracy"] == pytest.approx(np.mean(r.predictions == y))
    assert c.apply(outputs).cost.mean() < costs[ref]  # a 2-point drop buys a cheaper cascade
    budget = search_cascade(outputs, y, costs, MaxCost(3.0), progress=False)
    assert budget.apply(outputs).cost.mean() <= 3.0 + 1e-9


def test_mean_committees_can_beat_every_member():
    outputs, y, costs = synthetic_zoo(3000, seed=4, skills=(1.0, 1.05, 1.1, 1.15))
    c = search_cascade(outputs, y, costs, MaxCost(sum(costs.values())), combine="mean",
                       progress=False)
    best_single = max(np.mean(np.argmax(z, 1) == y) for z in outputs.values())
    assert c.combine == "mean" and c.details["calibration_accuracy"] > best_single + 0.01


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o, y, c: ({**o, "m1": o["m1"][:-1]}, y, c), "model 'm1' has 99 rows"),
        (lambda o, y, c: ({**o, "m2": o["m2"][:, :-1]}, y, c), "model 'm2' has 9 classes"),
        (lambda o, y, c: (o, y, {k: v for k, v in c.items() if k != "m3"}), "'m3' has no cost"),
        (lambda o, y, c: (o, y, {**c, "m9": 1.0}), r"costs name model\(s\) \['m9'\]"),
        (lambda o, y, c: (o, y, {**c, "m0": -1.0}), "cost of model 'm0'"),
        (lambda o, y, c: ({**o, "m0": np.full_like(o["m0"], np.nan)}, y, c), "'m0'.*NaN"),
        (lambda o, y, c: (o, y[:-1], c), "labels"),
        (lambda o, y, c: ({}, y, c), "got nothing"),
    ],
)
def test_bad_zoos_get_one_clear_error_naming_the_model(change, message):
    outputs, y, costs = change(*synthetic_zoo(100, seed=0))
    with pytest.raises(InputError, match=message):
        search_cascade(outputs, y, costs, TeacherAccuracy(), progress=False)


def test_unreachable_targets_and_bad_options_are_refused():
    outputs, y, costs = synthetic_zoo(100, seed=0)
    with pytest.raises(TargetUnreachableError, match="cheapest model, 'm0', alone costs 1"):
        search_cascade(outputs, y, costs, MaxCost(0.5), progress=False)
    with pytest.raises(InputError, match="reference 'nope'"):
        search_cascade(outputs, y, costs, TeacherAccuracy(), reference="nope", progress=False)
    with pytest.raises(InputError, match="same for every row"):
        search_cascade(outputs, y, costs, TeacherAccuracy(), router="energy", progress=False)
    with pytest.raises(InputError, match="signed loss with the exact test"):
        search_cascade(outputs, y, costs, GuaranteedDrop(0.01, 0.1, p_value="wsr"),
                       progress=False)


def _violations(runs: int, n_cal: int, eps: float, delta: float, guaranteed: bool):
    results = run_all(zoo_search_run, [(run, n_cal, eps, delta, guaranteed)
                                       for run in range(runs)])
    return sum(d > eps for d, _ in results), float(np.mean([r for _, r in results]))


@pytest.mark.integration
def test_the_whole_cascades_guarantee_holds_by_simulation():
    """200 calibration draws from a known population: the certified cascade loses more than
    eps on the population at most delta of the time (within binomial noise), while the same
    search without a guarantee (in-sample, as FrugalGPT) violates far more often."""
    from scipy import stats

    runs, eps, delta = 200, 0.01, 0.1
    bad, ratio = _violations(runs, 1500, eps, delta, guaranteed=True)
    assert bad <= stats.binom.ppf(0.99, runs, delta), (bad, runs)
    assert ratio > 1.2  # it does save cost, not only fall back to the reference
    bad_in_sample, _ = _violations(60, 1500, eps, delta, guaranteed=False)
    assert bad_in_sample / 60 > 2 * delta  # the test can fail: the in-sample pick violates


def test_the_guarantee_without_a_cheaper_certified_point_returns_the_reference():
    outputs, y, costs = synthetic_zoo(300, seed=1)
    c = search_cascade(outputs, y, costs, GuaranteedDrop(0.0001, 0.01), reference="m3",
                       progress=False)
    assert c.stages == ("m3",) and c.details["certified"] is False
    assert c.apply(outputs).exit_stage.tolist() == [0] * 300

