"""Capacity planning: the replicas a joint service needs for a load, along the bundle's curve.

A student replica busy ``t_s`` seconds per input serves at most ``1 / t_s``
inputs per second; run at utilisation ``u`` (say 0.7, to leave room for bursts
and keep queues short) it serves ``u / t_s``. Every request meets the student;
a share ``f`` of them (the operating point's teacher share) also meets the
teacher. For ``Q`` requests per second:

    student replicas = ceil(Q * t_s / u)
    teacher replicas = ceil(Q * f * t_t / u)

At each operating point stored in a bundle (its calibration curve) the plan
gives those counts, the expected accuracy, and the compute per request,
``t_s + f * t_t``, next to the teacher alone's ``ceil(Q * t_t / u)`` replicas.
The accuracies and shares are those of the calibration data (in-sample).

>>> curve = {"threshold": [0.0, 1.0, 2.0], "teacher_fraction": [0.0, 0.25, 1.0],
...          "accuracy": [0.90, 0.95, 0.96]}
>>> rows = plan_capacity(curve, qps=100, student_latency=0.002, teacher_latency=0.02,
...                      utilisation=0.5)
>>> [(r.student_replicas, r.teacher_replicas) for r in rows]
[(1, 0), (1, 1), (1, 4)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError

__all__ = ["CapacityRow", "plan_capacity", "plot_capacity", "teacher_only_replicas"]


@dataclass(frozen=True)
class CapacityRow:
    """One operating point of a capacity plan."""

    threshold: float
    teacher_fraction: float
    accuracy: float | None
    student_replicas: int
    teacher_replicas: int
    seconds_per_request: float

    @property
    def replicas(self) -> int:
        return self.student_replicas + self.teacher_replicas

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "replicas": self.replicas}


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value!r}")
    return float(value)


def _replicas(load: float, utilisation: float) -> int:
    """Replicas for ``load`` busy-seconds per second at ``utilisation`` (a tiny epsilon
    keeps an exact fit, e.g. 2.0000000001 from float rounding, at 2)."""
    return max(0, math.ceil(load / utilisation - 1e-9))


def teacher_only_replicas(qps: float, teacher_latency: float, utilisation: float = 0.7) -> int:
    """Teacher replicas a teacher-only service needs for ``qps``."""
    return _replicas(
        _positive(qps, "qps") * _positive(teacher_latency, "teacher_latency"), utilisation
    )


def plan_capacity(
    curve: dict[str, Any],
    *,
    qps: float,
    student_latency: float,
    teacher_latency: float,
    utilisation: float = 0.7,
    points: int | None = None,
    include_threshold: float | None = None,
) -> list[CapacityRow]:
    """The replicas of student and teacher for ``qps`` at operating points of ``curve``.

    Args:
        curve: a bundle's stored curve (``threshold``, ``teacher_fraction`` and,
            with labels, ``accuracy``), as ``TradeoffCurve.summary()`` writes it.
        qps: requests (inputs) per second to serve.
        student_latency, teacher_latency: seconds of one replica per input, at
            the batch size the service will run (``ebjr.joint.cost.measure_latency``
            gives ``per_input_s``).
        utilisation: the busy share each replica is planned for, in ``(0, 1]``.
        points: keep about this many points, evenly spaced in teacher share
            (``None``: every stored point).
        include_threshold: also keep the stored point this threshold realises
            (e.g. the bundle's own).
    """
    qps = _positive(qps, "qps")
    t_s = _positive(student_latency, "student_latency")
    t_t = _positive(teacher_latency, "teacher_latency")
    u = _positive(utilisation, "utilisation")
    if u > 1:
        raise InputError(f"utilisation must lie in (0, 1], got {utilisation!r}")
    if not isinstance(curve, dict) or not curve.get("teacher_fraction"):
        raise InputError(
            "the bundle stores no trade-off curve (extra.curve); calibrate it with "
            "ebjr calibrate or ebjr.calibrate_outputs, which store one"
        )
    share = np.asarray(curve["teacher_fraction"], dtype=np.float64)
    thr = np.asarray(curve["threshold"], dtype=np.float64)
    thr = np.where(thr >= np.finfo(np.float64).max, np.inf, thr)  # JSON's stand-in for +inf
    acc = curve.get("accuracy")
    idx = np.arange(share.shape[0])
    if points is not None:
        check_int(points, "points", 2)
        want = np.linspace(share[0], share[-1], points)
        idx = np.unique(np.searchsorted(share, want, side="left").clip(0, share.shape[0] - 1))
    if include_threshold is not None:
        at = int(np.searchsorted(thr, float(include_threshold), side="left"))
        idx = np.unique(np.append(idx, min(at, thr.shape[0] - 1)))
    rows = []
    for i in idx:
        f = float(share[i])
        rows.append(
            CapacityRow(
                threshold=float(thr[i]),
                teacher_fraction=f,
                accuracy=None if acc is None else float(acc[i]),
                student_replicas=_replicas(qps * t_s, u),
                teacher_replicas=_replicas(qps * f * t_t, u),
                seconds_per_request=t_s + f * t_t,
            )
        )
    return rows


def plot_capacity(rows: list[CapacityRow], path: Any, *, teacher_only: int,
                  calibrated: float | None = None, title: str = "Replicas for the load") -> Any:
    """Replicas (student, teacher, total) against the teacher share, with the accuracy;
    ``calibrated`` marks the bundle's own teacher share."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    f = [100 * r.teacher_fraction for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(f, [r.replicas for r in rows], "o-", label="joint: all replicas", lw=2)
    ax.plot(f, [r.teacher_replicas for r in rows], "s-", label="joint: teacher", lw=1.2, ms=4)
    ax.plot(f, [r.student_replicas for r in rows], "^-", label="joint: student", lw=1.2, ms=4)
    ax.axhline(teacher_only, color="grey", ls="--", lw=1, label="teacher alone")
    if calibrated is not None:
        ax.axvline(100 * calibrated, color="tab:red", ls=":", lw=1, label="calibrated threshold")
    ax.set_xlabel("teacher share (%)")
    ax.set_ylabel("replicas")
    ax.set_title(title)
    if all(r.accuracy is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot(f, [100 * (r.accuracy or 0.0) for r in rows], "k:", lw=1.2,
                 label="accuracy (calibration)")
        ax2.set_ylabel("accuracy (%)")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    from ebjr._utils.files import AtomicWriter

    writer = AtomicWriter(path, "plot")
    try:
        with writer as f:
            fig.savefig(f, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
