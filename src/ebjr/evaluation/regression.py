"""Routers of a regressor side by side: the loss at every teacher share, the oracle, random.

What ``ebjr evaluate --task regression`` prints. Quality is the task's negated
loss (higher is better), so every curve is a :class:`~ebjr.calibration.TradeoffCurve`
like a classifier's; the **oracle** sends the rows where the teacher's loss
improves most on the student's first, the best any router can do at each share,
and **random** routing's expected loss is the straight line between the
student's and the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.calibration import TradeoffCurve, select_threshold
from ebjr.calibration.curve import curve_from_quality
from ebjr.calibration.targets import MaxDrop
from ebjr.exceptions import InputError, TargetUnreachableError
from ebjr.routing import get_router, list_routers
from ebjr.tasks import Regression, get_task

__all__ = ["RegressionEvaluation", "evaluate_regression"]

#: the teacher shares at which the table reports the loss
SHARES = (0.1, 0.2, 0.3, 0.5)


@dataclass
class RegressionEvaluation:
    """Every router's curve on one set with targets, the oracle's and random's losses."""

    n: int
    loss: str
    student_loss: float
    teacher_loss: float
    curves: dict[str, TradeoffCurve]
    #: the oracle's mean loss after sending ``k`` rows, ``k = 0 .. n`` (largest gains first)
    oracle: np.ndarray = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def oracle_loss(self) -> dict[float, float]:
        """The oracle's mean loss at each of :data:`SHARES`."""
        return {s: float(self.oracle[int(np.floor(s * self.n))]) for s in SHARES}

    def oracle_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """The oracle's ``(teacher shares, mean losses)``, for plots."""
        return np.arange(self.n + 1) / self.n, self.oracle

    def loss_at(self, curve: TradeoffCurve, share: float) -> float:
        """The mean loss of the last point that sends at most ``share`` to the teacher."""
        return -curve.quality_at_share(share)

    def teacher_level(self, curve: TradeoffCurve) -> dict[str, float] | None:
        """The cheapest point whose loss is at most the teacher's (``None``: none)."""
        try:
            p = select_threshold(curve, MaxDrop(0.0)).point
        except TargetUnreachableError:
            return None
        return {"threshold": p.threshold, "teacher_fraction": p.teacher_fraction,
                "loss": -p.accuracy, "speedup": p.speedup}

    def to_json_dict(self) -> dict[str, Any]:
        random = {s: (1 - s) * self.student_loss + s * self.teacher_loss for s in SHARES}
        return {
            "n": self.n, "loss": self.loss, "student_loss": self.student_loss,
            "teacher_loss": self.teacher_loss,
            "routers": {name: {"loss_at": {str(s): self.loss_at(c, s) for s in SHARES},
                               "teacher_level": self.teacher_level(c),
                               "router": c.router}
                        for name, c in self.curves.items()},
            "oracle_loss_at": {str(s): v for s, v in self.oracle_loss.items()},
            "random_loss_at": {str(s): v for s, v in random.items()},
            "skipped": self.skipped,
        }


def evaluate_regression(
    student: Any, teacher: Any, targets: Any, task: Regression | None = None,
    routers: list[str] | None = None, *, student_cost: float = 1.0, teacher_cost: float = 1.0,
    cost_unit: str = "",
) -> RegressionEvaluation:
    """Compare the regression routers on one set with targets.

    Args:
        student, teacher: the two regressors' outputs, ``(n,)`` or ``(n, columns)`` (the
            task's columns: ``prediction`` first).
        targets: ``(n,)``.
        task: the :class:`~ebjr.tasks.Regression` (its columns and loss); default
            ``Regression()``.
        routers: names (default: every regression router whose column the student gives;
            the others are listed in ``skipped`` with the reason).
    """
    kind = task if task is not None else get_task("regression")
    if not isinstance(kind, Regression):
        raise InputError(f"evaluate_regression needs a regression task, got {kind!r}")
    s_np = to_numpy(student)
    n = int(s_np.shape[0])
    s = kind.check_output(s_np, n, "student")
    t = kind.check_output(to_numpy(teacher), n, "teacher")
    y = np.asarray(to_numpy(targets), dtype=np.float64).reshape(-1)
    if y.shape[0] != n or not np.isfinite(y).all():
        raise InputError(f"targets: expected {n} finite values, got {y.shape[0]}")
    qs = kind.quality(s[:, 0], y)
    qt = kind.quality(t[:, 0], y)
    names = routers or list_routers(kind="regression")
    curves: dict[str, TradeoffCurve] = {}
    skipped: dict[str, str] = {}
    for name in names:
        r = get_router(name)
        try:
            kind.check_router(r)
            scores = kind.score(r, s)
        except InputError as exc:
            if routers:  # asked for by name: an error, not a skip
                raise
            skipped[name] = str(exc)
            continue
        curves[name] = curve_from_quality(
            np.asarray(scores, dtype=np.float64), qs, qt,
            quality=f"negative {kind.loss} error", student_cost=student_cost,
            teacher_cost=teacher_cost, cost_unit=cost_unit, router=r.to_spec())
    gain = np.clip(np.sort(qt - qs)[::-1], 0, None)  # the oracle: largest improvements first
    oracle = -(qs.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / n
    return RegressionEvaluation(n, kind.loss, float(-qs.mean()), float(-qt.mean()), curves,
                                oracle, skipped)

