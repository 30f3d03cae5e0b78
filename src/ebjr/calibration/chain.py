"""The accuracy/cost frontier of one chain of models over all its threshold vectors.

A chain of ``k`` stages has ``k - 1`` thresholds. Each stage's candidate
thresholds are the distinct scores its rows take (exact), or, when there are
more than the grid allows, that many quantiles of them (a search whose gap to
the exact frontier the tests measure by brute force). A row's *bucket* at stage
``i`` is how many candidates lie at or below its score, so the stage answers it
at candidate ``j`` (1-based; ``j = G + 1`` is ``+inf``, never answer) iff
``bucket >= j``.

Every threshold vector is then counted at once: with ``H_e`` the histogram of
stage ``e``'s correct answers over the bucket tuples, the rows stage ``e``
answers correctly at ``(j_1, ..., j_{k-1})`` are ``H_e`` summed over
``a_d < j_d`` for ``d < e`` (prefix sums), ``a_e >= j_e`` (a suffix sum) and
every bucket of the later stages: a few cumulative sums over a
``prod(G_i + 1)``-cell array instead of one pass over the rows per vector.
Rows that reach stage ``e`` are counted the same way, which gives the cost.

>>> import numpy as np
>>> s1 = np.array([0.9, 0.2, 0.6]); s2 = np.array([0.1, 0.8, 0.3])
>>> ok = [np.array([1, 0, 0], bool), np.array([0, 1, 0], bool), np.array([1, 1, 1], bool)]
>>> pts = chain_points([s1, s2], ok, costs=(1.0, 2.0, 4.0))
>>> best = pts.frontier()[0]  # the front runs from the most accurate point to the cheapest
>>> int(pts.correct[best]), float(pts.cost[best]), pts.thresholds(best)
(3, 3.6666666666666665, (0.9, 0.8))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ebjr.exceptions import InputError

__all__ = ["ChainPoints", "chain_points", "grid_of", "pareto_order"]

#: default cap on the cells of the threshold grid of one chain (all vectors counted at once)
MAX_CELLS = 1 << 18


def grid_of(scores: np.ndarray, size: int) -> np.ndarray:
    """Candidate thresholds of one stage: its distinct finite scores, or ``size`` quantiles
    of them (always including the smallest and the largest)."""
    finite = np.unique(scores[np.isfinite(scores)])
    if finite.size <= size:
        return finite
    picks = np.unique(np.round(np.linspace(0, finite.size - 1, size)).astype(np.int64))
    return finite[picks]


def _buckets(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How many candidates lie at or below each score (NaN and -inf: 0, never answered)."""
    b = np.searchsorted(grid, scores, side="right")
    b[np.isnan(scores)] = 0
    return b


@dataclass(frozen=True)
class ChainPoints:
    """Every threshold vector of a chain on a grid, counted.

    Attributes:
        grids: candidate thresholds per routed stage.
        correct: rows answered correctly per cell, shape ``prod(G_i + 1)`` (flattened).
        cost: mean cost per row per cell.
        n: rows counted.
        both_right: rows answered correctly that a reference model also gets right, per
            cell (when a reference was given): the reference is then right and the chain
            wrong on ``reference_right - both_right`` rows, and the reverse on
            ``correct - both_right``.
        reference_right: rows the reference gets right.
    """

    grids: tuple[np.ndarray, ...]
    correct: np.ndarray
    cost: np.ndarray
    n: int
    both_right: np.ndarray | None = None
    reference_right: int = 0

    def discordant(self) -> tuple[np.ndarray, np.ndarray]:
        """Per cell, rows only the reference gets right (loss +1) and rows only the chain
        gets right (loss -1)."""
        if self.both_right is None:
            raise InputError("these points were counted without a reference")
        return self.reference_right - self.both_right, self.correct - self.both_right

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(g.size + 1 for g in self.grids)

    def thresholds(self, cell: int) -> tuple[float, ...]:
        """The threshold vector of a flattened cell index (``+inf``: the stage answers none)."""
        if not self.grids:
            return ()
        js = np.unravel_index(int(cell), self.shape)
        return tuple(
            float(g[j]) if j < g.size else math.inf for g, j in zip(self.grids, js, strict=True)
        )

    def frontier(self) -> np.ndarray:
        """Cells on the cost/accuracy Pareto front, from the most expensive to the cheapest."""
        return pareto_order(self.cost, self.correct)


def pareto_order(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal points (no point is cheaper and at least as good, or
    as cheap and better), from the most expensive (best) to the cheapest."""
    order = np.lexsort((-quality, cost))  # by cost, the best first among equal costs
    q = quality[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(q)[:-1]])
    keep = order[q > best_before]
    return keep[::-1]


def chain_points(
    scores: Sequence[np.ndarray],
    correct: Sequence[np.ndarray],
    costs: Sequence[float],
    *,
    grids: Sequence[np.ndarray] | None = None,
    max_cells: int = MAX_CELLS,
    reference_right: np.ndarray | None = None,
) -> ChainPoints:
    """Count every threshold vector of a chain.

    Args:
        scores: the router's score per row for each stage but the last.
        correct: whether each stage's answer is right, per row (one more than ``scores``).
        costs: cost per row of each stage.
        grids: candidate thresholds per routed stage (default: from ``scores``, as many as
            ``max_cells`` allows).
        max_cells: cap on the cells of the grid.
        reference_right: whether a reference model is right on each row; counts
            :attr:`ChainPoints.both_right` for the discordant rows of every cell.
    """
    k = len(correct)
    if len(scores) != k - 1 or len(costs) != k:
        raise InputError(f"a chain of {k} stages needs {k - 1} score vectors and {k} costs, "
                         f"got {len(scores)} and {len(costs)}")
    n = int(correct[0].shape[0])
    ref = None if reference_right is None else np.asarray(reference_right, dtype=bool)
    ref_total = 0 if ref is None else int(ref.sum())
    if k == 1:
        both = None if ref is None else np.array([int(np.sum(correct[0] & ref))])
        return ChainPoints((), np.array([int(correct[0].sum())]), np.array([float(costs[0])]), n,
                           both, ref_total)
    if grids is None:
        per_stage = max(2, int(max_cells ** (1.0 / (k - 1))) - 1)
        grids = [grid_of(np.asarray(s, dtype=np.float64), per_stage) for s in scores]
    grids = tuple(np.asarray(g, dtype=np.float64) for g in grids)
    shape = tuple(g.size + 1 for g in grids)
    if math.prod(shape) > 4 * max_cells:
        raise InputError(f"a grid of {math.prod(shape)} cells is over the cap of {max_cells}")
    flat = np.ravel_multi_index(
        [_buckets(np.asarray(s, dtype=np.float64), g) for s, g in zip(scores, grids, strict=True)],
        shape,
    )
    ones = np.bincount(flat, minlength=math.prod(shape)).reshape(shape).astype(np.float64)
    cells = math.prod(shape)

    def answered(weights: np.ndarray, e: int) -> np.ndarray:
        hist = np.bincount(flat, weights=weights.astype(np.float64), minlength=cells)
        return _count(hist.reshape(shape), e)

    total_correct, total_both, total_cost = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for e in range(k):
        total_correct += answered(correct[e], e)
        if ref is not None:
            total_both += answered(correct[e] & ref, e)
        total_cost += costs[e] * _count(ones, e, reach=True)
    both = None if ref is None else np.rint(total_both).astype(np.int64).ravel()
    return ChainPoints(grids, np.rint(total_correct).astype(np.int64).ravel(),
                       (total_cost / max(n, 1)).ravel(), n, both, ref_total)


def _count(hist: np.ndarray, stage: int, *, reach: bool = False) -> np.ndarray:
    """Per threshold vector, the histogram's mass on rows that stage ``stage`` answers
    (``reach=False``) or that reach it (``reach=True``). Axis ``d`` of the result is the
    threshold index ``j_d - 1`` (``0 .. G_d``)."""
    out = hist
    for d in range(hist.ndim):
        if d < stage:  # passed on by stage d: bucket < j_d, i.e. a prefix ending at j_d - 1
            out = np.cumsum(out, axis=d)
        elif d == stage and not reach:  # answered here: bucket >= j_d
            suffix = np.flip(np.cumsum(np.flip(out, axis=d), axis=d), axis=d)
            out = np.concatenate([np.take(suffix, np.arange(1, suffix.shape[d]), axis=d),
                                  np.zeros_like(np.take(suffix, [0], axis=d))], axis=d)
        else:  # any bucket: a later stage, or the routed stage itself when counting reach
            out = np.broadcast_to(out.sum(axis=d, keepdims=True), out.shape)
    return out
