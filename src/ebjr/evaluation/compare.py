"""Routers side by side, the oracle bound, random baselines, and McNemar's test.

>>> import numpy as np
>>> r = mcnemar(np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0]), labels=np.array([1, 1, 1, 0]))
>>> (r.only_a, r.only_b, r.method)
(2, 0, 'exact')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ebjr._utils.arrays import Array, to_numpy
from ebjr._utils.validation import check_labels, check_pair
from ebjr.calibration import (
    OperatingPoint,
    TeacherAccuracy,
    TradeoffCurve,
    curve_from_scores,
    select_threshold,
)
from ebjr.calibration.auto import router_label
from ebjr.exceptions import InputError, LogProbabilityInputError
from ebjr.routing import RandomRouter, Router, get_router, teacher_mask

__all__ = [
    "DEFAULT_ROUTERS",
    "Evaluation",
    "McNemarResult",
    "OraclePoint",
    "OracleResult",
    "RandomSummary",
    "evaluate",
    "mcnemar",
    "oracle",
]

#: Routers compared by default (``paper_code`` is what the paper's released code routed on).
DEFAULT_ROUTERS = ("energy", "softmax", "entropy", "maxlogit", "margin", "paper_code")


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test between two paired prediction vectors.

    Attributes:
        only_a: inputs A gets right and B gets wrong.
        only_b: inputs B gets right and A gets wrong.
        statistic: chi-square statistic (continuity-corrected), or the smaller
            discordant count for the exact test.
        p_value: two-sided p-value.
        odds_ratio: ``only_a / only_b`` (``inf`` when ``only_b`` is 0 and
            ``only_a`` is not; ``nan`` when both are 0).
        method: ``"exact"`` (binomial, used when ``only_a + only_b <
            exact_below``) or ``"chi2"`` (with continuity correction).
    """

    only_a: int
    only_b: int
    statistic: float
    p_value: float
    odds_ratio: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def mcnemar(pred_a: Any, pred_b: Any, labels: Any, *, exact_below: int = 25) -> McNemarResult:
    """McNemar's test of whether models A and B have the same accuracy on paired inputs.

    Args:
        pred_a, pred_b: predicted classes, shape ``(n,)``.
        labels: true classes, shape ``(n,)``.
        exact_below: use the exact binomial test when the number of discordant
            inputs is below this, else chi-square with continuity correction.
    """
    a, b, y = (np.asarray(to_numpy(v)).ravel() for v in (pred_a, pred_b, labels))
    if not (a.shape == b.shape == y.shape) or a.size == 0:
        raise InputError(
            f"pred_a, pred_b and labels must be non-empty and of equal length, got "
            f"{a.size}, {b.size} and {y.size}"
        )
    ca, cb = a == y, b == y
    n01, n10 = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    d = n01 + n10
    if d == 0:
        return McNemarResult(0, 0, 0.0, 1.0, math.nan, "exact")
    odds = n01 / n10 if n10 else math.inf
    if d < exact_below:
        p = float(stats.binomtest(min(n01, n10), d, 0.5).pvalue)
        return McNemarResult(n01, n10, float(min(n01, n10)), min(1.0, p), odds, "exact")
    chi2 = (abs(n01 - n10) - 1) ** 2 / d
    return McNemarResult(n01, n10, float(chi2), float(stats.chi2.sf(chi2, 1)), odds, "chi2")


@dataclass(frozen=True)
class OraclePoint:
    """One operating point of the oracle router."""

    teacher_fraction: float
    accuracy: float
    cost: float
    speedup: float

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass(frozen=True)
class OracleResult:
    """The oracle router: it knows which model is right on every input.

    It sends first the inputs where the student is wrong and the teacher
    right (each one gains a point), then those where both agree in
    correctness (no change), and last those where only the student is right
    (each one loses a point). Its curve is the upper bound of every router's
    and needs labels, so it is for evaluation only.

    Attributes:
        at_teacher_accuracy: the smallest teacher share that reaches the
            teacher's accuracy, the same target as every router's column.
        best: the most accurate point (every input where only the teacher is
            right goes to it), the oracle's best accuracy at the least cost.
        fractions, accuracies: the corners of the oracle's accuracy-vs-teacher
            share curve (straight lines in between).
    """

    at_teacher_accuracy: OraclePoint
    best: OraclePoint
    fractions: tuple[float, ...]
    accuracies: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """Both points; the flat keys repeat ``best`` (the ``--json`` contract before 0.2)."""
        return {
            "at_teacher_accuracy": self.at_teacher_accuracy.as_dict(),
            "best": self.best.as_dict(),
            **self.best.as_dict(),
        }


def oracle(
    student_correct: np.ndarray,
    teacher_correct: np.ndarray,
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
) -> OracleResult:
    """The oracle's points and curve from per-input correctness of each model.

    >>> o = oracle(np.array([1, 0, 0, 1, 1]), np.array([1, 1, 1, 0, 1]))
    >>> o.at_teacher_accuracy.teacher_fraction, o.best.teacher_fraction
    (0.2, 0.4)
    """
    sc, tc = np.asarray(student_correct, bool), np.asarray(teacher_correct, bool)
    n = sc.size
    if n == 0 or tc.shape != sc.shape:
        raise InputError(
            f"student_correct and teacher_correct must be non-empty and of equal shape, got "
            f"{sc.shape} and {tc.shape}"
        )
    gain, loss = int(np.sum(~sc & tc)), int(np.sum(sc & ~tc))
    acc_s = float(np.mean(sc))

    def point(k: int) -> OraclePoint:
        fraction = k / n
        accuracy = acc_s + min(k, gain) / n - max(0, k - (n - loss)) / n
        cost = student_cost + fraction * teacher_cost
        return OraclePoint(fraction, accuracy, cost, teacher_cost / cost if cost else math.inf)

    corners = (0, gain, n - loss, n)
    return OracleResult(
        at_teacher_accuracy=point(max(0, gain - loss)),
        best=point(gain),
        fractions=tuple(k / n for k in corners),
        accuracies=tuple(point(k).accuracy for k in corners),
    )


@dataclass(frozen=True)
class RandomSummary:
    """The random router over several seeds: mean and spread, not the best run."""

    seeds: int
    teacher_fraction_mean: float
    teacher_fraction_std: float
    auc_mean: float
    auc_std: float

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Every router's curve on one labelled set, with the references.

    ``curves`` maps a router label (``energy``, ``softmax``, ...) to its
    :class:`~ebjr.calibration.TradeoffCurve`; ``skipped`` maps labels of
    routers that could not run (energy on log-probabilities) to the reason.
    """

    n: int
    student_accuracy: float
    teacher_accuracy: float
    student_cost: float
    teacher_cost: float
    cost_unit: str
    curves: dict[str, TradeoffCurve]
    at_teacher_accuracy: dict[str, OperatingPoint]
    oracle: OracleResult
    random: RandomSummary | None
    skipped: dict[str, str] = field(default_factory=dict)
    student_pred: np.ndarray | None = field(default=None, repr=False)
    teacher_pred: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def joint_predictions(self, label: str, threshold: float) -> np.ndarray:
        """Joint predictions (original row order) of router ``label`` at ``threshold``."""
        if label not in self.scores or self.student_pred is None or self.teacher_pred is None:
            raise InputError(f"no scores kept for router {label!r}; known: {list(self.scores)}")
        return joint_predictions(
            self.scores[label], threshold, self.student_pred, self.teacher_pred
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The ``evaluate --json`` object (a contract: keys are only ever added)."""
        routers = {}
        for label, curve in self.curves.items():
            point = self.at_teacher_accuracy.get(label)
            routers[label] = {
                "router": curve.router,
                "at_teacher_accuracy": None if point is None else _json_point(point),
                "auc": curve.auc(),
            }
        return {
            "n": self.n,
            "student": {"accuracy": self.student_accuracy, "cost": self.student_cost},
            "teacher": {"accuracy": self.teacher_accuracy, "cost": self.teacher_cost},
            "cost_unit": self.cost_unit,
            "routers": routers,
            "oracle": self.oracle.as_dict(),
            "random": None if self.random is None else self.random.as_dict(),
            "skipped": dict(self.skipped),
        }


def _json_point(p: OperatingPoint) -> dict[str, float]:
    return {
        "threshold": p.threshold,
        "teacher_fraction": p.teacher_fraction,
        "accuracy": p.accuracy,
        "cost": p.cost,
        "speedup": p.speedup,
    }


def evaluate(
    student_logits: Array,
    teacher_logits: Array,
    labels: Any,
    routers: tuple[str | Router, ...] | list[str | Router] = DEFAULT_ROUTERS,
    *,
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
    cost_unit: str = "",
    random_seeds: int = 10,
    class_map: Any = None,
) -> Evaluation:
    """Compare routers on one labelled set: curves, teacher-accuracy points, AUC, oracle.

    Args:
        student_logits, teacher_logits: outputs on the same inputs, ``(n, C)``.
        labels: true classes, ``(n,)``.
        routers: names or :class:`Router` instances; ``energy`` is skipped with
            a reason (in ``skipped``) when the student's rows are
            log-probabilities.
        student_cost, teacher_cost: per-input costs; ``cost_unit`` names them.
        random_seeds: how many seeds of the random router to summarise (0: none).
        class_map: a specialized student's classes in the teacher's (``-1``: ``other``);
            labels are then the teacher's.
    """
    s, t = check_pair(student_logits, teacher_logits, class_map)
    y = check_labels(labels, s.shape[0], t.shape[1])
    ps, pt = to_numpy(s).argmax(axis=1), to_numpy(t).argmax(axis=1)
    if class_map is not None:  # into the teacher's classes; "other" (-1) is never right
        ps = np.asarray(class_map, dtype=np.int64)[ps]
    kwargs: dict[str, Any] = {
        "student_cost": student_cost, "teacher_cost": teacher_cost, "cost_unit": cost_unit
    }
    curves: dict[str, TradeoffCurve] = {}
    points: dict[str, OperatingPoint] = {}
    skipped: dict[str, str] = {}
    kept_scores: dict[str, np.ndarray] = {}
    for r in routers:
        router = get_router(r)
        label = router_label(router.to_spec())
        try:
            router.check_raw_logits(s)  # s is checked by check_pair: only this is left
            score = to_numpy(router.score(s, validate=False), np.float64)
        except LogProbabilityInputError as exc:
            skipped[label] = str(exc)
            continue
        curve = curve_from_scores(score, ps, pt, y, router=router.to_spec(), **kwargs)
        curves[label] = curve
        kept_scores[label] = score
        points[label] = select_threshold(curve, TeacherAccuracy()).point
    any_curve = next(iter(curves.values()), None)
    if any_curve is None:
        any_curve = curve_from_scores(np.zeros(len(y)), ps, pt, y, **kwargs)
    orc = oracle(ps == y, pt == y, any_curve.student_cost, any_curve.teacher_cost)
    rnd = None
    if random_seeds:
        fr, auc = [], []
        for seed in range(random_seeds):
            score = to_numpy(RandomRouter(seed).score(s, validate=False), np.float64)
            curve = curve_from_scores(score, ps, pt, y, **kwargs)
            fr.append(select_threshold(curve, TeacherAccuracy()).point.teacher_fraction)
            auc.append(curve.auc())
        rnd = RandomSummary(
            random_seeds,
            float(np.mean(fr)),
            float(np.std(fr)),
            float(np.mean(auc)),
            float(np.std(auc)),
        )
    return Evaluation(
        n=len(y),
        student_accuracy=float(np.mean(ps == y)),
        teacher_accuracy=float(np.mean(pt == y)),
        student_cost=any_curve.student_cost,
        teacher_cost=any_curve.teacher_cost,
        cost_unit=cost_unit,
        curves=curves,
        at_teacher_accuracy=points,
        oracle=orc,
        random=rnd,
        skipped=skipped,
        student_pred=ps,
        teacher_pred=pt,
        labels=y,
        scores=kept_scores,
    )


def joint_predictions(
    curve_or_scores: Any, threshold: float, student_pred: Any, teacher_pred: Any
) -> np.ndarray:
    """Joint predictions for ``threshold`` from scores and the two models' predictions."""
    score = to_numpy(curve_or_scores, np.float64)
    teacher = teacher_mask(score, float(threshold))
    return np.where(teacher, to_numpy(teacher_pred), to_numpy(student_pred))
