"""Targets: the rules that pick one point of a trade-off curve, and their registry.

A :class:`Target` picks the index of a :class:`~ebjr.calibration.curve.TradeoffCurve`
point; :func:`select_threshold` turns it into a :class:`Selection`. Every
target registers under its ``kind`` (:func:`register_target`), and
:func:`target_from_spec` rebuilds one from ``Target.to_dict()`` (a bundle's
``target`` record) or from the command line's words.

>>> target_from_spec({"kind": "max_drop", "eps": 0.01})
MaxDrop(eps=0.01)
>>> target_from_spec({"kind": "teacher_accuracy"})
TeacherAccuracy()
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ebjr._utils.registry import Registry
from ebjr._utils.validation import check_cost, check_probability
from ebjr.calibration.curve import OperatingPoint, TradeoffCurve
from ebjr.exceptions import InputError, TargetUnreachableError

__all__ = [
    "HistogramCrossing",
    "MaxCost",
    "MaxDrop",
    "MaxTeacherFraction",
    "Selection",
    "Target",
    "TeacherAccuracy",
    "list_targets",
    "need_correctness",
    "register_target",
    "select_threshold",
    "target_from_spec",
]



@dataclass(frozen=True)
class Selection:
    """A chosen threshold with what it achieves on the calibration data.

    Attributes:
        threshold: the student answers iff ``score >= threshold``.
        point: the operating point on the calibration data (in-sample).
        target: the target as a dict (``Target.to_dict``).
        details: target-specific evidence (p-values, bound, crossing, ...).
    """

    threshold: float
    point: OperatingPoint
    target: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


class Target:
    """A rule that picks one point of a curve. Subclasses implement :meth:`select_index`."""

    kind: str = ""

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind}
        d.update({k: v for k, v in vars(self).items() if not k.startswith("_")})
        return d

    def drop_bound(self) -> float | None:
        """The accuracy drop this target allows, if it is a drop target."""
        return None


def _need_labels(curve: TradeoffCurve, what: str) -> None:
    if not curve.has_labels:
        raise InputError(f"the {what} target needs labels; the curve was built without them")


def _first_meeting(ok: np.ndarray, describe: str) -> int:
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        raise TargetUnreachableError(f"no threshold on the calibration data meets {describe}")
    return int(idx[0])


@dataclass(frozen=True)
class MaxDrop(Target):
    """Smallest teacher fraction whose accuracy >= teacher accuracy - ``eps``.

    In-sample: measured on the calibration data, with no guarantee on new data
    (see :class:`ebjr.calibration.guarantee.GuaranteedDrop` for one).
    """

    eps: float = 0.0
    kind = "max_drop"

    def __post_init__(self) -> None:
        check_probability(self.eps, "eps")

    def drop_bound(self) -> float | None:
        return float(self.eps)

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        _need_labels(curve, self.kind)
        goal = curve.teacher_accuracy - self.eps
        # a tiny tolerance so that "equal to the teacher" is not lost to float rounding
        ok = curve.accuracy >= goal - 1e-12
        return _first_meeting(ok, f"accuracy >= {goal:.6f}"), {"accuracy_goal": goal}


@dataclass(frozen=True)
class TeacherAccuracy(Target):
    """Smallest teacher fraction that reaches the teacher's accuracy (like ``MaxDrop(0)``).

    It has no parameters: for an allowed drop use :class:`MaxDrop`.
    """

    kind = "teacher_accuracy"

    def drop_bound(self) -> float | None:
        return 0.0

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        _need_labels(curve, self.kind)
        return MaxDrop(0.0).select_index(curve)


@dataclass(frozen=True)
class MaxTeacherFraction(Target):
    """Most accurate point that sends at most ``fraction`` of the inputs to the teacher.

    Ties in accuracy go to the smaller teacher fraction. Without labels, the
    point with the largest agreement with the teacher is taken.
    """

    fraction: float = 0.5
    kind = "max_teacher_fraction"

    def __post_init__(self) -> None:
        check_probability(self.fraction, "fraction")

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        allowed = curve.teacher_fraction <= self.fraction + 1e-12
        return _best_within(curve, allowed, f"teacher fraction <= {self.fraction}"), {}


@dataclass(frozen=True)
class MaxCost(Target):
    """Most accurate point whose average cost per input is at most ``cost``."""

    cost: float = 1.0
    kind = "max_cost"

    def __post_init__(self) -> None:
        check_cost(self.cost, "cost")

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        allowed = curve.cost <= self.cost * (1 + 1e-12)
        if not np.any(allowed):
            raise TargetUnreachableError(
                f"a cost of at most {self.cost:g} {curve.cost_unit} per input cannot be met: "
                f"the student alone costs {curve.student_cost:g}"
            )
        return _best_within(curve, allowed, f"cost <= {self.cost:g}"), {}


def _best_within(curve: TradeoffCurve, allowed: np.ndarray, describe: str) -> int:
    idx = np.flatnonzero(allowed)
    if idx.size == 0:
        raise TargetUnreachableError(f"no threshold on the calibration data meets {describe}")
    quality = curve.accuracy if curve.has_labels else curve.agreement
    best = idx[np.argmax(quality[idx])]  # argmax takes the first, i.e. smallest fraction
    return int(best)


@dataclass(frozen=True)
class HistogramCrossing(Target):
    """The paper's recommended point: where the score densities of inputs the
    student gets right and gets wrong cross.

    Located exactly, without binning, as the threshold that maximises
    ``P(score < t | student wrong) - P(score < t | student right)``: the gap
    between the two empirical CDFs is largest where the two densities cross
    (its derivative is their difference). This is Youden's J statistic of the
    score as a detector of student errors.
    """

    kind = "histogram_crossing"

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        _need_labels(curve, self.kind)
        need_correctness(curve, self.kind)
        wrong = ~curve.correctness(f"the {self.kind} target")[0]
        n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
        if n_wrong == 0 or n_right == 0:
            raise TargetUnreachableError(
                "the histogram crossing needs inputs the student gets right and wrong; "
                f"got {n_right} right and {n_wrong} wrong"
            )
        cum_wrong = np.concatenate([[0], np.cumsum(wrong)])[curve.n_teacher]
        cum_right = np.concatenate([[0], np.cumsum(~wrong)])[curve.n_teacher]
        gap = cum_wrong / n_wrong - cum_right / n_right
        k = int(np.argmax(gap))
        return k, {"cdf_gap": float(gap[k])}


def need_correctness(curve: TradeoffCurve, what: str) -> None:
    """Refuse ``what`` on a curve whose quality is not right/wrong per sample."""
    if curve.quality != "accuracy":
        raise InputError(
            f"{what} needs per-sample correctness (right or wrong), but this curve's quality "
            f"is {curve.quality!r}; use MaxDrop, TeacherAccuracy, MaxTeacherFraction or MaxCost"
        )


def select_threshold(curve: TradeoffCurve, target: Target) -> Selection:
    """Pick the threshold of ``curve`` that meets ``target``.

    Args:
        curve: from :func:`tradeoff_curve`.
        target: a :class:`Target` (e.g. ``MaxDrop(0.005)``,
            ``TeacherAccuracy()``, ``MaxTeacherFraction(0.3)``, ``MaxCost(2e8)``,
            ``HistogramCrossing()``, ``GuaranteedDrop(0.005, delta=0.05)``).

    Raises:
        TargetUnreachableError: no point meets the target.
    """
    if not isinstance(target, Target):
        raise InputError(f"target must be a Target (e.g. MaxDrop(0.005)), got {target!r}")
    index, details = target.select_index(curve)
    point = curve.point(index)
    return Selection(point.threshold, point, target.to_dict(), details)


#: the targets by kind
TARGETS: Registry[type[Target]] = Registry("target kind")


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator that adds a target to the registry under ``cls.kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute 'kind'")
    return TARGETS.add(cls.kind, cls)


def list_targets() -> list[str]:
    """Sorted kinds of the registered targets."""
    return TARGETS.names()


def target_from_spec(spec: dict[str, Any]) -> Target:
    """Rebuild a target from ``{"kind": ..., **fields}`` (see :meth:`Target.to_dict`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise InputError(f"a target spec is a dict with a 'kind' string, got {spec!r}")
    entry = TARGETS.get(spec["kind"])
    known = {f.name for f in fields(entry)}  # type: ignore[arg-type]
    params = {k: v for k, v in spec.items() if k != "kind"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(
            f"target {spec['kind']!r} takes {sorted(known) or 'no parameters'}, got {unknown}"
        )
    return entry(**params)


for _cls in (MaxDrop, TeacherAccuracy, MaxTeacherFraction, MaxCost, HistogramCrossing):
    register_target(_cls)
# a target of the guarantee module, imported the first time its kind is asked for
TARGETS.add_lazy("guaranteed_drop", "ebjr.calibration.guarantee:GuaranteedDrop")
