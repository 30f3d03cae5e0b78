"""Zoo search: which models to chain, and where to cut, for a target.

:func:`search_cascade` takes every model's outputs on the same calibration
rows and a cost per model, and returns the cheapest :class:`~ebjr.joint.cascade.Cascade`
that meets a target relative to a *reference* model (default: the most
accurate one):

- ``TeacherAccuracy()``: reach the reference's accuracy;
- ``MaxDrop(eps)``: lose at most ``eps`` vs the reference;
- ``MaxCost(c)``: the most accurate cascade whose mean cost per row is ``<= c``;
- ``GuaranteedDrop(eps, delta)``: lose at most ``eps`` on new rows from the same
  distribution, with probability ``>= 1 - delta`` over the calibration draw,
  for the chain *and* its thresholds together.

The first three are measured in-sample on the calibration rows (as FrugalGPT
and hand-tuned cascades are); only the last is a guarantee.

**Candidates.** Models are pruned to the cost/accuracy Pareto set: a model
dearer and no more accurate than another is not tried (it could still add to
a committee, but the pruning keeps a 19-model zoo to a few hundred chains).
Then every chain of 1 to ``max_stages`` of them in order of cost is tried,
under each ``combine`` rule. For each chain, every threshold
vector on a grid is counted at once (:mod:`ebjr.calibration.chain`).

**The guarantee.** The calibration rows are split at random (seeded) into a
*selection* part (``selection_fraction``, default half) and a *certification*
part. Everything that is chosen is chosen on the selection rows alone: the
Pareto set, the chains, each chain's threshold grid and its *path*, the
ordered list of threshold vectors to test (the chain's cost/accuracy frontier,
thinned to steps of at least 5 % in cost, ordered by the test's own statistic
on the selection rows, the strongest evidence of a small drop first). To
rank the chains honestly, the selection rows are split again: each path is
built on one half and tested on the other, and the chains whose tested paths
reach the lowest cost become the finalists (the best :data:`FINALISTS` ``- 1``
and the best chain that ends in the reference and answers with it, whose
costly points are the reference's own answers). On the certification rows
each finalist's path (now built on all selection rows) is tested at level
``delta / FINALISTS``, hypothesis "the drop vs the reference at this point is
> eps", with the exact test of the signed loss (:mod:`ebjr.calibration.exact`),
stopping at the first one not rejected (fixed-sequence testing, as for a
pair). Given the selection rows the paths are fixed, so each path's
family-wise error is at most ``delta / FINALISTS``: every hypothesis rejected
before the first failure holds together. By the union bound, the probability
that the returned cascade (the cheapest certified point of any finalist)
loses more than ``eps`` is at most ``delta``, whatever was tried during
selection. If nothing can be certified the reference alone is
returned (its drop is 0). What the guarantee costs: the selection rows do not
certify, and a point is certified only once the certification rows show it
*better* than the reference by about the test's margin; with models that
disagree with the reference on many rows the margin is wide.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr._utils.validation import check_cost, check_int, check_labels, check_probability
from ebjr.calibration.chain import ChainPoints, chain_points, pareto_order
from ebjr.calibration.exact import critical_value, exact_pvalue, tango_statistic
from ebjr.calibration.targets import MaxCost, MaxDrop, Target, TeacherAccuracy
from ebjr.exceptions import InputError, TargetUnreachableError
from ebjr.joint.cascade import COMBINES, Cascade, answer_logits, check_combine
from ebjr.routing import Router, get_router

__all__ = ["Zoo", "search_cascade"]

#: cells of one chain's threshold grid during a search (127 thresholds per stage of a
#: 3-stage chain: the frontier's gap to the exact one is measured in the tests)
SEARCH_CELLS = 1 << 14
#: chains certified (each at ``delta / FINALISTS``) after selection
FINALISTS = 3
#: the fixed-sequence path keeps points at least this much (relative) cheaper than the last
PATH_STEP = 0.05


@dataclass(frozen=True)
class Zoo:
    """Checked inputs of a zoo search: every model's logits on the same labelled rows."""

    outputs: dict[str, np.ndarray]
    labels: np.ndarray
    costs: dict[str, float]

    @classmethod
    def check(cls, outputs: Mapping[str, Any], labels: Any, costs: Mapping[str, Any]) -> Zoo:
        """Validate; every error names the model at fault."""
        if not isinstance(outputs, Mapping) or not outputs:
            raise InputError("outputs must map model names to logits, got nothing")
        logits: dict[str, np.ndarray] = {}
        first: tuple[str, tuple[int, ...]] | None = None
        for name, z in outputs.items():
            arr = np.asarray(z)
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise InputError(f"model {name!r}: logits must be a 2-d float array (n x C), "
                                 f"got shape {arr.shape} and dtype {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise InputError(f"model {name!r}: logits hold NaN or infinite values")
            if first is None:
                first = (str(name), arr.shape)
            elif arr.shape[0] != first[1][0]:
                raise InputError(f"model {name!r} has {arr.shape[0]} rows but {first[0]!r} has "
                                 f"{first[1][0]}: every model must score the same rows")
            elif arr.shape[1] != first[1][1]:
                raise InputError(f"model {name!r} has {arr.shape[1]} classes but {first[0]!r} "
                                 f"has {first[1][1]}: every model must share one label set")
            logits[str(name)] = arr
        assert first is not None
        n, c = first[1]
        y = check_labels(labels, n, c, "labels")
        if not isinstance(costs, Mapping):
            raise InputError(f"costs must map model names to a cost, got {type(costs).__name__}")
        unknown = sorted(set(map(str, costs)) - set(logits))
        if unknown:
            raise InputError(f"costs name model(s) {unknown} with no outputs; models: "
                             f"{sorted(logits)}")
        cost: dict[str, float] = {}
        for name in logits:
            if name not in costs:
                raise InputError(f"model {name!r} has no cost: give every model one")
            cost[name] = check_cost(costs[name], f"cost of model {name!r}", positive=True)
        return cls(logits, y, cost)

    @property
    def names(self) -> list[str]:
        return list(self.outputs)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def right(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Whether model ``name`` is right on each row (of ``rows``, if given)."""
        ok = np.argmax(self.outputs[name], axis=1) == self.labels
        return ok if rows is None else ok[rows]

    def accuracy(self, name: str, rows: np.ndarray | None = None) -> float:
        return float(np.mean(self.right(name, rows)))


class _Stages:
    """Per-chain stage answers (correctness and scores), cached by chain prefix."""

    def __init__(self, zoo: Zoo, router: Router) -> None:
        self.zoo, self.router = zoo, router
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def stage(self, combine: str, prefix: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(correct per row, score per row) of the last stage of ``prefix``."""
        key = (combine if len(prefix) > 1 else "last", prefix)
        if key not in self._cache:
            logits = [self.zoo.outputs[m] for m in prefix]
            answer = answer_logits(logits if combine == "mean" else logits[-1:], combine)[-1]
            correct = np.argmax(answer, axis=1) == self.zoo.labels
            score = np.asarray(self.router.score(answer, validate=False), dtype=np.float64)
            self._cache[key] = (correct, score)
        return self._cache[key]

    def chain(self, chain: tuple[str, ...], combine: str, rows: np.ndarray):
        parts = [self.stage(combine, chain[: i + 1]) for i in range(len(chain))]
        return [p[1][rows] for p in parts[:-1]], [p[0][rows] for p in parts]


def _chains(models: list[str], max_stages: int, combines: Sequence[str]):
    """Chains of 1..max_stages models in the given (cost) order, with each combine rule."""
    for k in range(1, max_stages + 1):
        for chain in itertools.combinations(models, k):
            for combine in combines if k > 1 else ("last",):
                yield chain, combine


def _pareto_models(zoo: Zoo, rows: np.ndarray) -> list[str]:
    names = zoo.names
    cost = np.array([zoo.costs[m] for m in names])
    acc = np.array([zoo.accuracy(m, rows) for m in names])
    keep = pareto_order(cost, acc)[::-1]  # cheapest first
    return [names[i] for i in keep]


@dataclass(frozen=True)
class _Candidate:
    chain: tuple[str, ...]
    combine: str
    points: ChainPoints
    cell: int
    score: float  # lower is better (cost), or -accuracy for a budget


def search_cascade(
    outputs: Mapping[str, Any],
    labels: Any,
    costs: Mapping[str, Any],
    target: Target,
    *,
    max_stages: int = 3,
    combine: str | Sequence[str] = ("last", "mean"),
    router: str | Router = "softmax",
    reference: str | None = None,
    selection_fraction: float = 0.5,
    max_cells: int = SEARCH_CELLS,
    seed: int = 0,
    progress: bool | None = None,
) -> Cascade:
    """The cheapest cascade of models from a zoo that meets ``target``.

    Args:
        outputs: model name -> logits ``(n, C)`` on the calibration rows (rows aligned).
        labels: true class per row.
        costs: model name -> cost per row (any one unit, e.g. MAdds).
        target: ``TeacherAccuracy()``, ``MaxDrop(eps)``, ``MaxCost(c)`` or
            ``GuaranteedDrop(eps, delta)``, relative to ``reference``.
        max_stages: longest chain tried.
        combine: ``"last"``, ``"mean"`` or both (each chain is tried with each).
        router: the score every routed stage uses (default ``softmax``: on every public
            pair measured it routes better than the free energy, and it is the only
            one of the two that can score a ``mean`` committee).
        reference: the model targets are measured against (default: the most accurate).
        selection_fraction: with ``GuaranteedDrop``, the share of rows used to choose.
        max_cells: cap on the threshold grid of one chain (exact below it).
        seed: seed of the selection/certification split.
        progress: show a progress bar over the chains (default: when on a terminal).

    Returns:
        A :class:`~ebjr.joint.cascade.Cascade` whose ``details`` hold the evidence:
        the calibration accuracy and cost and the reference's (for a guarantee, on the
        certification rows), and for a guarantee the rows used to select and to
        certify, the finalists, whether a cheaper cascade was certified, the p-value
        and the hypotheses tested.
    """
    zoo = Zoo.check(outputs, labels, costs)
    check_int(max_stages, "max_stages", 1)
    r = get_router(router)
    combines = (combine,) if isinstance(combine, str) else tuple(combine)
    if not combines:
        raise InputError(f"combine must name at least one of {', '.join(COMBINES)}")
    for c in combines:
        check_combine(c, r)
    if reference is None:
        reference = max(zoo.names, key=lambda m: (zoo.accuracy(m), -zoo.costs[m]))
    elif reference not in zoo.outputs:
        raise InputError(f"reference {reference!r} is not one of the models {zoo.names}")
    stages = _Stages(zoo, r)
    from ebjr.calibration.guarantee import GuaranteedDrop

    if isinstance(target, GuaranteedDrop):
        if target.loss != "signed" or target.p_value != "exact":
            raise InputError("a cascade's guarantee tests the signed loss with the exact test: "
                             "use GuaranteedDrop(eps, delta) with loss='signed', p_value='exact'")
        check_probability(selection_fraction, "selection_fraction", open_low=True)
        return _guaranteed(zoo, stages, target, reference, combines, max_stages,
                           selection_fraction, max_cells, seed, progress)
    if not isinstance(target, TeacherAccuracy | MaxDrop | MaxCost):
        raise InputError(f"search_cascade takes TeacherAccuracy, MaxDrop, MaxCost or "
                         f"GuaranteedDrop targets, got {type(target).__name__}")
    rows = np.arange(zoo.n)
    best = _best(zoo, stages, target, reference, combines, max_stages, rows, max_cells, progress)
    return _cascade(zoo, stages, best, reference, target, rows, {"in_sample": True})


def _meets(target: Target, points: ChainPoints, ref_correct: int) -> np.ndarray:
    """Per cell: does it meet the (in-sample) target?"""
    if isinstance(target, MaxCost):
        return points.cost <= target.cost * (1 + 1e-12)
    eps = 0.0 if isinstance(target, TeacherAccuracy) else float(target.eps)  # type: ignore[attr-defined]
    return points.correct >= ref_correct - eps * points.n - 1e-9


def _best(zoo, stages, target, reference, combines, max_stages, rows, max_cells, progress):
    """The best candidate on ``rows`` for an in-sample target."""
    ref_correct = int(np.sum(zoo.right(reference, rows)))
    best: _Candidate | None = None
    for chain, comb in _bar(list(_chains(_pareto_models(zoo, rows), max_stages, combines)),
                            progress):
        scores, correct = stages.chain(chain, comb, rows)
        pts = chain_points(scores, correct, [zoo.costs[m] for m in chain], max_cells=max_cells)
        ok = np.flatnonzero(_meets(target, pts, ref_correct))
        if not ok.size:
            continue
        if isinstance(target, MaxCost):  # most accurate, then cheapest
            cell = int(ok[np.lexsort((pts.cost[ok], -pts.correct[ok]))[0]])
            key = -pts.correct[cell] + pts.cost[cell] * 1e-12
        else:
            cell = int(ok[np.argmin(pts.cost[ok])])
            key = pts.cost[cell]
        if best is None or key < best.score:
            best = _Candidate(chain, comb, pts, cell, float(key))
    if best is None:
        cheapest = min(zoo.names, key=lambda m: zoo.costs[m])
        raise TargetUnreachableError(
            f"no cascade of up to {max_stages} models meets {target!r}"
            + (f": the cheapest model, {cheapest!r}, alone costs {zoo.costs[cheapest]:g}"
               if isinstance(target, MaxCost) else "")
        )
    return best


def _bar(items: list, progress: bool | None):
    from tqdm.auto import tqdm

    return tqdm(items, desc="chains", unit="chain", disable=None if progress is None
                else not progress, leave=False)


def _cascade(zoo, stages, cand: _Candidate, reference, target, rows, details) -> Cascade:
    """The candidate as a Cascade; its figures are the counts of ``cand.points``, which were
    made on ``rows``."""
    pts = cand.points
    return Cascade(
        cand.chain,
        pts.thresholds(cand.cell),
        tuple(zoo.costs[m] for m in cand.chain),
        stages.router,
        cand.combine,
        reference,
        {
            "target": target.to_dict(),
            "calibration_accuracy": float(pts.correct[cand.cell] / pts.n),
            "calibration_cost": float(pts.cost[cand.cell]),
            "reference_accuracy": zoo.accuracy(reference, rows),
            "reference_cost": zoo.costs[reference],
            "models": zoo.names,
            **details,
        },
    )


def _certify(points: ChainPoints, path: np.ndarray, eps: float, delta: float) -> tuple[int, int]:
    """Fixed-sequence exact tests along ``path`` (cells, in testing order) with the counts of
    ``points``: (position of the last rejected hypothesis or -1, hypotheses tested)."""
    if eps >= 1:
        return len(path) - 1, len(path)  # a drop is never above 1
    plus, minus = points.discordant()
    cal = critical_value(points.n, float(eps), float(delta))
    reject = tango_statistic(plus[path], minus[path], points.n, float(eps)) <= -cal.z
    fails = np.flatnonzero(~reject)
    if fails.size:
        return int(fails[0]) - 1, int(fails[0]) + 1
    return len(path) - 1, len(path)


def _split(rows: np.ndarray, fraction: float, rng: np.random.Generator):
    perm = rng.permutation(rows)
    k = round(fraction * rows.size)
    return np.sort(perm[:k]), np.sort(perm[k:])


def _thin(points: ChainPoints, path: np.ndarray, step: float) -> np.ndarray:
    """The path without points less than ``step`` (relative) cheaper than the last kept one:
    fewer, better-separated hypotheses for the fixed sequence to stop on."""
    if step <= 0 or path.size == 0:
        return path
    keep, last = [0], points.cost[path[0]]
    for i in range(1, path.size):
        c = points.cost[path[i]]
        if c <= last * (1 - step):
            keep.append(i)
            last = c
    return path[np.array(keep)]


def _tested_path(stages, chain, comb, zoo, fit_rows, test_rows, ref_right, eps, delta,
                 max_cells, step):
    """A chain's path chosen on ``fit_rows`` and tested on ``test_rows``: (points on the test
    rows, the cheapest certified cell or -1, hypotheses tested).

    The path is the chain's frontier on ``fit_rows`` (thinned), ordered by the test's own
    statistic on those rows, the strongest evidence of a drop <= eps first: the fixed
    sequence starts where it is likeliest to go on. Every hypothesis rejected before the
    first failure is certified, so the cheapest of them is returned."""
    costs = [zoo.costs[m] for m in chain]
    scores, correct = stages.chain(chain, comb, fit_rows)
    fit = chain_points(scores, correct, costs, max_cells=max_cells,
                       reference_right=ref_right[fit_rows])
    path = _thin(fit, fit.frontier(), step)
    if eps < 1:
        plus, minus = fit.discordant()
        evidence = tango_statistic(plus[path], minus[path], fit.n, eps)
        path = path[np.argsort(evidence, kind="stable")]
    scores, correct = stages.chain(chain, comb, test_rows)
    test = chain_points(scores, correct, costs, grids=fit.grids,
                        reference_right=ref_right[test_rows])
    last, tested = _certify(test, path, eps, delta)
    if last < 0:
        return test, -1, tested
    certified = path[: last + 1]
    return test, int(certified[np.argmin(test.cost[certified])]), tested


def _guaranteed(zoo, stages, target, reference, combines, max_stages, fraction, max_cells,
                seed, progress) -> Cascade:
    step, finalists = PATH_STEP, FINALISTS
    rng = np.random.default_rng(seed)
    sel, cert = _split(np.arange(zoo.n), fraction, rng)
    if sel.size < 4 or cert.size < 2:
        raise InputError(f"{zoo.n} calibration rows cannot be split for a guarantee "
                         f"(selection_fraction={fraction})")
    fit, check = _split(sel, 0.5, rng)  # inside the selection rows: an honest estimate
    ref_right = zoo.right(reference)
    eps, delta = float(target.eps), float(target.delta)
    ref_cost = zoo.costs[reference]
    candidates = list(_chains(_pareto_models(zoo, sel), max_stages, combines))
    estimates = []  # (estimated certified cost, chain, combine)
    for chain, comb in _bar(candidates, progress):
        pts, cell, _ = _tested_path(stages, chain, comb, zoo, fit, check, ref_right, eps,
                                    delta, max_cells, step)
        if cell >= 0 and pts.cost[cell] < ref_cost:
            estimates.append((float(pts.cost[cell]), chain, comb))
    ranked = sorted(estimates, key=lambda e: e[0])
    chosen = ranked[: finalists - 1]
    # and the best chain that ends in the reference and answers with it: its costly points
    # are the reference's own answers on most rows, so its path starts where the drop is
    # near 0 whatever the sample
    safe = next((e for e in ranked if e[1][-1] == reference and e[2] == "last"
                 and e not in chosen), None)
    finalists = chosen + ([safe] if safe else ranked[finalists - 1 : finalists])
    details: dict[str, Any] = {
        "selection_rows": int(sel.size), "certification_rows": int(cert.size),
        "chains_tried": len(candidates),
        "chains_certified_each_at": delta / max(len(finalists), 1),
        "finalists": [{"stages": list(c), "combine": m, "selection_cost_estimate": e}
                      for e, c, m in finalists],
        "seed": seed, "certified": False,
        "assumption": "calibration rows and traffic are i.i.d. from the same distribution",
    }
    best = None  # the cheapest certified point over the finalists' paths
    for _, chain, comb in finalists:
        pts, cell, tested = _tested_path(stages, chain, comb, zoo, sel, cert, ref_right,
                                         eps, delta / len(finalists), max_cells, step)
        cheaper = cell >= 0 and pts.cost[cell] < ref_cost  # else the reference alone wins
        if cheaper and (best is None or pts.cost[cell] < best[0].cost[best[1]]):
            best = (pts, cell, chain, comb, tested)
    if best is not None:
        pts, cell, chain, comb, tested = best
        plus, minus = pts.discordant()
        details.update({
            "certified": True, "hypotheses_tested": tested,
            "p_value_at_threshold": float(exact_pvalue(int(plus[cell]), int(minus[cell]),
                                                       pts.n, eps)) if eps < 1 else 0.0,
        })
        return _cascade(zoo, stages, _Candidate(chain, comb, pts, cell, 0.0), reference,
                        target, cert, details)
    # nothing certified: the reference alone, whose drop is 0
    ref = chain_points([], [ref_right[cert]], [zoo.costs[reference]])
    return _cascade(zoo, stages, _Candidate((reference,), "last", ref, 0, 0.0), reference,
                    target, cert, details)
