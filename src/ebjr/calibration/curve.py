"""The accuracy-vs-cost trade-off curve and threshold selection by target.

A router sends the rows whose score is below the threshold to the teacher.
Sweeping the threshold over every distinct score value of a labelled
calibration set traces the whole trade-off; :func:`tradeoff_curve` computes
it exactly in ``O(n log n)`` (one sort, cumulative sums) with one point per
distinct score, so tied scores are never split between student and teacher.

Cost follows the paper: every input pays for the student, the routed ones
also pay for the teacher, so ``cost = student_cost + teacher_fraction *
teacher_cost`` per input.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s, t = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
>>> y = rng.integers(0, 5, 200)
>>> curve = tradeoff_curve(s, t, y, router="energy", student_cost=1.0, teacher_cost=4.0)
>>> float(curve.teacher_fraction[0]), float(curve.teacher_fraction[-1])
(0.0, 1.0)
>>> bool(np.all(np.diff(curve.cost) > 0))
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, to_numpy
from ebjr._utils.validation import check_cost, check_int, check_labels, check_pair
from ebjr.exceptions import InputError, NotFittedError
from ebjr.routing import Router, get_router

__all__ = [
    "OperatingPoint",
    "TradeoffCurve",
    "curve_from_loss",
    "curve_from_metric",
    "curve_from_quality",
    "curve_from_scores",
    "tradeoff_curve",
]


@dataclass(frozen=True)
class OperatingPoint:
    """One point of a trade-off curve, measured on the data the curve was built from.

    Attributes:
        threshold: the student answers iff ``score >= threshold``.
        teacher_fraction: share of inputs sent to the teacher.
        accuracy: joint accuracy (NaN when the curve has no labels).
        agreement: share of inputs where the joint prediction equals the teacher's.
        cost: average cost per input, in the curve's cost unit.
        speedup: ``teacher_cost / cost`` (teacher-only cost over joint cost).
    """

    threshold: float
    teacher_fraction: float
    accuracy: float
    agreement: float
    cost: float
    speedup: float

    def as_dict(self) -> dict[str, float]:
        return {
            "threshold": self.threshold,
            "teacher_fraction": self.teacher_fraction,
            "accuracy": self.accuracy,
            "agreement": self.agreement,
            "cost": self.cost,
            "speedup": self.speedup,
        }


@dataclass(frozen=True, eq=False)
class TradeoffCurve:
    """Every operating point of one router on one calibration set.

    The arrays ``threshold``, ``teacher_fraction``, ``accuracy``,
    ``agreement`` and ``cost`` have one entry per point, ordered by
    ``teacher_fraction`` ascending (so ``threshold`` ascends too). Point 0
    sends nothing to the teacher (its threshold is the lowest finite
    calibration score; pass ``-inf`` to never call the teacher on new data)
    except rows scored ``-inf``, which go to the teacher at every threshold
    (a specialized student's ``other``); the last point sends everything
    (threshold ``+inf``).

    The per-sample arrays (``scores`` and the quality/agreement vectors, all
    sorted by score ascending) are kept so that targets that need more than
    the curve (the guaranteed drop) can be computed from the same object.

    ``quality`` names what ``accuracy`` holds: ``"accuracy"`` for classifiers;
    for :func:`curve_from_quality` and :func:`curve_from_metric` any per-sample
    or set-level quality, always **higher is better** (a loss enters negated,
    e.g. ``"negative absolute error"``). ``student_correct`` and
    ``teacher_correct`` then hold the per-sample qualities (NaN for a
    set-level metric), and ``agreement`` is NaN.

    ``router_fit_rows`` counts the rows a data-driven router (``auto``) was
    fitted on; a guarantee refuses a curve where it is not 0.
    """

    router: dict[str, Any]
    threshold: np.ndarray
    teacher_fraction: np.ndarray
    accuracy: np.ndarray
    agreement: np.ndarray
    cost: np.ndarray
    n_teacher: np.ndarray
    student_cost: float
    teacher_cost: float
    cost_unit: str
    scores: np.ndarray = field(repr=False)
    student_correct: np.ndarray | None = field(repr=False)
    teacher_correct: np.ndarray | None = field(repr=False)
    agree: np.ndarray = field(repr=False)
    quality: str = "accuracy"
    router_fit_rows: int = 0

    @property
    def n(self) -> int:
        """Number of calibration inputs."""
        return int(self.scores.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.student_correct is not None

    def correctness(self, what: str = "this") -> tuple[np.ndarray, np.ndarray]:
        """``(student_correct, teacher_correct)``, sorted by score; refuses a label-free curve."""
        if self.student_correct is None or self.teacher_correct is None:
            raise InputError(f"{what} needs labels; the curve was built without them")
        return self.student_correct, self.teacher_correct

    @property
    def student_accuracy(self) -> float:
        return float(self.accuracy[0])

    @property
    def teacher_accuracy(self) -> float:
        return float(self.accuracy[-1])

    @property
    def speedup(self) -> np.ndarray:
        """``teacher_cost / cost`` at every point."""
        return self.teacher_cost / self.cost

    def __len__(self) -> int:
        return int(self.threshold.shape[0])

    def point(self, index: int) -> OperatingPoint:
        """The operating point at ``index`` (negative indices count from the end)."""
        i = int(index)
        return OperatingPoint(
            threshold=float(self.threshold[i]),
            teacher_fraction=float(self.teacher_fraction[i]),
            accuracy=float(self.accuracy[i]),
            agreement=float(self.agreement[i]),
            cost=float(self.cost[i]),
            speedup=float(self.teacher_cost / self.cost[i]) if self.cost[i] > 0 else math.inf,
        )

    def index_at(self, threshold: float) -> int:
        """Index of the point that ``threshold`` realises on the calibration data."""
        t = float(threshold)
        # rows with score < t go to the teacher; that count identifies the point
        k = int(np.searchsorted(self.scores, t, side="left"))
        return int(np.searchsorted(self.n_teacher, k, side="left"))

    def quality_at_share(self, share: float) -> float:
        """The quality (``accuracy``) of the last point that sends at most ``share`` of the
        inputs to the teacher."""
        i = int(np.searchsorted(self.teacher_fraction, share + 1e-12, side="right")) - 1
        return float(self.accuracy[max(i, 0)])

    def at_threshold(self, threshold: float) -> OperatingPoint:
        """The operating point that ``threshold`` gives on the calibration data.

        Unlike :meth:`point`, the returned ``threshold`` is the one asked for.
        """
        p = self.point(self.index_at(threshold))
        return OperatingPoint(
            float(threshold), p.teacher_fraction, p.accuracy, p.agreement, p.cost, p.speedup
        )

    def summary(self, max_points: int = 201) -> dict[str, Any]:
        """At most ``max_points`` points of the curve, evenly spaced in index, as JSON lists.

        Keeps both ends; ``accuracy`` is ``None`` without labels. What a bundle
        stores so a server can draw the curve and look up thresholds.
        """
        if max_points < 2:
            raise InputError(f"max_points must be >= 2, got {max_points!r}")
        idx = np.unique(np.round(np.linspace(0, len(self) - 1, max_points)).astype(np.int64))
        return {
            "threshold": self.threshold[idx].tolist(),
            "teacher_fraction": self.teacher_fraction[idx].tolist(),
            "accuracy": self.accuracy[idx].tolist() if self.has_labels else None,
            "agreement": self.agreement[idx].tolist(),
            "cost": self.cost[idx].tolist(),
            "n": self.n,
        }

    def auc(self) -> float:
        """Area under accuracy vs teacher fraction on ``[0, 1]`` (trapezoids).

        Independent of the costs; higher is better. Between two operating
        points, the straight line is reachable by randomising between their
        thresholds.
        """
        if not self.has_labels:
            raise InputError("the curve has no labels: accuracy AUC needs labels")
        return float(np.trapezoid(self.accuracy, self.teacher_fraction))


def curve_from_scores(
    scores: Any,
    student_pred: Any,
    teacher_pred: Any,
    labels: Any | None = None,
    *,
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
    cost_unit: str = "",
    router: dict[str, Any] | None = None,
) -> TradeoffCurve:
    """Trade-off curve from per-row routing scores and the two models' predictions.

    This is the engine behind :func:`tradeoff_curve`; use it directly when the
    scores come from elsewhere.

    Args:
        scores: routing score per row, shape ``(n,)``; higher = student fit.
            ``-inf`` marks rows that always go to the teacher (then point 0
            already sends those rows to it).
        student_pred: student's predicted class per row, in the teacher's label space.
        teacher_pred: teacher's predicted class per row.
        labels: true class per row, or ``None`` (then ``accuracy`` is NaN and only
            agreement-based targets can be used).
        student_cost, teacher_cost: per-input cost of each model.
        cost_unit: what the costs are measured in (FLOPs, s, J, $), for reports.
        router: the router spec, kept for reports and bundles.
    """
    s = _check_scores(scores)
    n = s.shape[0]
    ps, pt = to_numpy(student_pred).astype(np.int64), to_numpy(teacher_pred).astype(np.int64)
    if ps.shape != (n,) or pt.shape != (n,):
        raise InputError(
            f"predictions must have shape ({n},) like the scores, got student {ps.shape} "
            f"and teacher {pt.shape}"
        )
    cs = check_cost(student_cost, "student_cost")
    ct = check_cost(teacher_cost, "teacher_cost", positive=True)

    order, s_sorted, cut, threshold = _cuts(s)
    ps, pt = ps[order], pt[order]
    agree = ps == pt
    fraction = cut / n

    def _joint_rate(student_ok: np.ndarray, teacher_ok: np.ndarray) -> np.ndarray:
        cum_t = np.concatenate([[0], np.cumsum(teacher_ok, dtype=np.int64)])
        cum_s = np.concatenate([[0], np.cumsum(student_ok, dtype=np.int64)])
        return (cum_t[cut] + (cum_s[n] - cum_s[cut])) / n

    agreement = _joint_rate(agree, np.ones(n, dtype=bool))
    student_correct = teacher_correct = None
    if labels is not None:
        y = to_numpy(labels)
        if y.shape != (n,):
            raise InputError(f"labels must have shape ({n},), got {y.shape}")
        y = y[order]
        student_correct, teacher_correct = ps == y, pt == y
        accuracy = _joint_rate(student_correct, teacher_correct)
    else:
        accuracy = np.full(fraction.shape, np.nan)
    return _curve(threshold, cut, s_sorted, accuracy, agreement, student_correct,
                  teacher_correct, agree, "accuracy", cs, ct, cost_unit, router)


def _check_scores(scores: Any) -> np.ndarray:
    s = to_numpy(scores, np.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise InputError(f"scores must be a non-empty 1-d array, got shape {s.shape}")
    if np.any(np.isnan(s)) or np.any(s == np.inf):
        raise InputError("scores contain NaN or +inf values (-inf means: always the teacher)")
    return s


def _cuts(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, sorted scores, and per point: rows sent to the teacher and the threshold.

    One point per distinct score value; rows scored ``-inf`` go to the teacher
    at every point.
    """
    n = s.shape[0]
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    starts = np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1  # (np.diff(-inf, -inf) is NaN)
    cut = np.concatenate([[0], starts, [n]])
    threshold = np.concatenate([s_sorted[cut[:-1]], [np.inf]])
    if s_sorted[0] == -np.inf:
        cut, threshold = cut[1:], threshold[1:]
    return order, s_sorted, cut, threshold


def _quality_vector(q: Any, n: int, what: str) -> np.ndarray:
    v = to_numpy(q, np.float64)
    if v.shape != (n,):
        raise InputError(f"{what} must have shape ({n},) like the scores, got {v.shape}")
    if not np.isfinite(v).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return v


def curve_from_quality(
    scores: Any,
    student_quality: Any,
    teacher_quality: Any,
    *,
    quality: str = "quality",
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
    cost_unit: str = "",
    router: dict[str, Any] | None = None,
) -> TradeoffCurve:
    """Trade-off curve for a per-sample quality instead of correctness (**higher is better**).

    The joint quality at a point is the mean over rows of the teacher's
    quality on routed rows and the student's on the others; ``accuracy``
    holds it, so every target works on it (``MaxDrop(eps)`` is then a drop
    of at most ``eps`` in quality units). For a loss (absolute or squared
    error), use :func:`curve_from_loss`, which negates it.

    >>> c = curve_from_quality([0.1, 0.9], [1.0, 3.0], [2.0, 2.0], quality="q")
    >>> c.teacher_fraction.tolist(), c.accuracy.tolist()
    ([0.0, 0.5, 1.0], [2.0, 2.5, 2.0])
    """
    s = _check_scores(scores)
    n = s.shape[0]
    qs = _quality_vector(student_quality, n, "student_quality")
    qt = _quality_vector(teacher_quality, n, "teacher_quality")
    cs = check_cost(student_cost, "student_cost")
    ct = check_cost(teacher_cost, "teacher_cost", positive=True)
    order, s_sorted, cut, threshold = _cuts(s)
    qs, qt = qs[order], qt[order]
    cum_t = np.concatenate([[0.0], np.cumsum(qt)])
    cum_s = np.concatenate([[0.0], np.cumsum(qs)])
    mean_q = (cum_t[cut] + (cum_s[n] - cum_s[cut])) / n
    return _non_accuracy_curve(threshold, cut, mean_q, s_sorted, qs, qt, quality, cs, ct,
                               cost_unit, router)


def _non_accuracy_curve(
    threshold: np.ndarray,
    cut: np.ndarray,
    quality_values: np.ndarray,
    s_sorted: np.ndarray,
    qs: np.ndarray,
    qt: np.ndarray,
    quality: str,
    cs: float,
    ct: float,
    cost_unit: str,
    router: dict[str, Any] | None,
) -> TradeoffCurve:
    """A curve whose ``accuracy`` holds another quality (no agreement with the teacher)."""
    return _curve(threshold, cut, s_sorted, np.asarray(quality_values, dtype=np.float64),
                  np.full(cut.shape, np.nan), qs, qt, np.zeros(s_sorted.shape[0], dtype=bool),
                  quality, cs, ct, cost_unit, router)


def _curve(
    threshold: np.ndarray,
    cut: np.ndarray,
    s_sorted: np.ndarray,
    accuracy: np.ndarray,
    agreement: np.ndarray,
    student_correct: np.ndarray | None,
    teacher_correct: np.ndarray | None,
    agree: np.ndarray,
    quality: str,
    cs: float,
    ct: float,
    cost_unit: str,
    router: dict[str, Any] | None,
) -> TradeoffCurve:
    """The one constructor of a curve from its points (``cut`` rows to the teacher each)."""
    fraction = cut / s_sorted.shape[0]
    return TradeoffCurve(
        router=router or {"name": "custom", "params": {}},
        threshold=threshold,
        teacher_fraction=fraction,
        accuracy=accuracy,
        agreement=agreement,
        cost=cs + fraction * ct,
        n_teacher=cut,
        student_cost=cs,
        teacher_cost=ct,
        cost_unit=cost_unit,
        scores=s_sorted,
        student_correct=student_correct,
        teacher_correct=teacher_correct,
        agree=agree,
        quality=quality,
    )


def curve_from_loss(
    scores: Any,
    student_loss: Any,
    teacher_loss: Any,
    *,
    loss: str = "loss",
    **kwargs: Any,
) -> TradeoffCurve:
    """:func:`curve_from_quality` for a per-sample loss (lower is better), e.g. absolute error.

    The curve's ``accuracy`` is the negated mean loss (``quality`` is
    ``"negative <loss>"``), so higher stays better; ``-curve.accuracy`` is the
    mean loss at each point.
    """
    sl = -to_numpy(student_loss, np.float64)
    tl = -to_numpy(teacher_loss, np.float64)
    return curve_from_quality(scores, sl, tl, quality=f"negative {loss}", **kwargs)


def curve_from_metric(
    scores: Any,
    metric: Any,
    *,
    n_points: int = 51,
    quality: str = "metric",
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
    cost_unit: str = "",
    router: dict[str, Any] | None = None,
    progress: bool = False,
) -> TradeoffCurve:
    """Trade-off curve for a set-level quality (e.g. mAP), recomputed at each operating point.

    ``metric(to_teacher)`` gets a boolean mask over the rows (``True``: the
    teacher answers that row) and returns the joint quality of the whole set,
    higher is better. It is called at ``n_points`` operating points whose
    teacher shares are evenly spaced (each one a distinct-score point, so
    every threshold is realisable), always including none and all.
    """
    s = _check_scores(scores)
    n = s.shape[0]
    check_int(n_points, "n_points", 2)
    cs = check_cost(student_cost, "student_cost")
    ct = check_cost(teacher_cost, "teacher_cost", positive=True)
    order, s_sorted, cut, threshold = _cuts(s)
    want = np.linspace(cut[0], n, n_points)
    pick = np.unique(np.searchsorted(cut, want, side="left").clip(0, len(cut) - 1))
    cut, threshold = cut[pick], threshold[pick]
    values = []
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    it = range(len(cut))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"{quality} per operating point")
    for i in it:
        values.append(float(metric(rank < cut[i])))
    nan = np.full(n, np.nan)
    return _non_accuracy_curve(threshold, cut, np.asarray(values), s_sorted, nan, nan, quality,
                               cs, ct, cost_unit, router)


def tradeoff_curve(
    student_logits: Array,
    teacher_logits: Array,
    labels: Any | None,
    router: str | Router = "energy",
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
    *,
    cost_unit: str = "",
    class_map: Any = None,
) -> TradeoffCurve:
    """The full trade-off curve of ``router`` on a labelled calibration set.

    Args:
        student_logits: student outputs, shape ``(n, C)``.
        teacher_logits: teacher outputs on the same inputs, shape ``(n, C)``.
        labels: true classes, shape ``(n,)``, or ``None`` for a label-free curve
            (agreement with the teacher only).
        router: a registered router name or a :class:`~ebjr.routing.Router`.
        student_cost, teacher_cost: per-input costs (FLOPs, seconds, ...).
        cost_unit: the unit of the costs, for reports.
        class_map: for a student over a subset of the teacher's classes (a specialized
            student), the teacher class of each student class (``-1`` for ``other``);
            labels are then in the teacher's classes.

    Returns:
        A :class:`TradeoffCurve` with one point per distinct score value.

    Raises:
        InputError: mismatched shapes, NaN/inf, labels out of range, bad costs.
        LogProbabilityInputError: an energy router on log-probabilities.
        NotFittedError: an ``auto`` router that was not fitted.
    """
    s, t = check_pair(student_logits, teacher_logits, class_map)
    y = None if labels is None else check_labels(labels, s.shape[0], t.shape[1])
    r = get_router(router)
    if getattr(r, "requires_fit", False) and not getattr(r, "is_fitted", False):
        raise NotFittedError(
            "the 'auto' router must be fitted before it can score: call "
            "AutoRouter(...).fit(student_logits, teacher_logits, labels) first"
        )
    r.check_raw_logits(s)  # s is checked by check_pair: only this is left
    score = to_numpy(r.score(s, validate=False), np.float64)
    ps = to_numpy(s).argmax(axis=1)
    if class_map is not None:  # into the teacher's classes; "other" (-1) is never right
        ps = np.asarray(class_map, dtype=np.int64)[ps]
    pt = to_numpy(t).argmax(axis=1)
    curve = curve_from_scores(
        score,
        ps,
        pt,
        y,
        student_cost=student_cost,
        teacher_cost=teacher_cost,
        cost_unit=cost_unit,
        router=r.to_spec(),
    )
    fitted = r.rows_fitted_on(s)
    return dataclasses.replace(curve, router_fit_rows=fitted) if fitted else curve
