"""Which served rows to shadow: one probability per row the student answered.

Disagreements with the teacher gather just above the threshold, where the student is
least sure of the rows it still answers. Shadowing those rows more often, and the rest
less, gives the monitor more of the evidence that matters for the same teacher work.
The monitor stays unbiased because every shadowed row is weighted by ``1 / p`` of its
own probability (Horvitz-Thompson), and ``p`` is fixed from the row's score before the
teacher's answer is known.

A :class:`ShadowPlan` shadows a row the student answered with probability ``near_rate``
when its score lies in the *band* just above the live threshold, and ``rate`` elsewhere.
The band holds a share ``near_share`` of all traffic: it ends at the threshold that would
send ``near_share`` more of the traffic to the teacher, read from the score distribution
of the calibration rows (a bundle's stored curve, or the scores themselves). When the
live threshold moves, the band moves with it.

>>> import numpy as np
>>> scores = np.arange(100) / 100  # calibration rows: 10 % of them in [0.5, 0.6)
>>> plan = ShadowPlan.from_scores(0.02, scores, near_rate=0.2, near_share=0.1)
>>> plan.band_top(0.5)
0.6
>>> plan.probabilities(np.array([0.55, 0.9]), 0.5).tolist()
[0.2, 0.02]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ebjr._utils.validation import check_probability
from ebjr.exceptions import InputError

__all__ = ["ShadowPlan"]


class ShadowPlan:
    """The shadow probability of each row the student answered (see the module docs).

    Args:
        rate: the probability away from the threshold (every row, without ``near_rate``).
        near_rate: the probability in the band just above the threshold; ``None``: ``rate``.
        near_share: the share of all traffic the band holds.
        thresholds, teacher_fraction: the score distribution: at each threshold
            (ascending), the share of calibration rows below it.
    """

    def __init__(self, rate: float, near_rate: float | None = None, near_share: float = 0.1,
                 thresholds: Any = (), teacher_fraction: Any = ()) -> None:
        self.rate = check_probability(rate, "rate", open_low=True)
        self.near_rate = None if near_rate is None else check_probability(
            near_rate, "near_rate", open_low=True)
        self.near_share = check_probability(near_share, "near_share", open_low=True)
        thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        tf = np.asarray(teacher_fraction, dtype=np.float64).reshape(-1)
        if thr.size != tf.size or np.isnan(thr).any() or np.isnan(tf).any():
            raise InputError(f"thresholds and teacher_fraction must be numbers of the same "
                             f"length; got {thr.size} and {tf.size}")
        if self.near_rate is not None and thr.size == 0:
            raise InputError("near_rate needs the score distribution (a curve or scores) to "
                             "place the band above the threshold")
        order = np.argsort(thr, kind="stable")
        self.thresholds = thr[order]
        self.teacher_fraction = np.maximum.accumulate(tf[order]) if tf.size else tf

    @classmethod
    def from_curve(cls, rate: float, curve: dict[str, Any] | None, *,
                   near_rate: float | None = None, near_share: float = 0.1) -> ShadowPlan:
        """The plan for a bundle's stored curve (its ``threshold`` and ``teacher_fraction``)."""
        if near_rate is None:
            return cls(rate)
        if not curve or not curve.get("threshold"):
            raise InputError("near_rate needs the bundle's curve (ebjr calibrate stores it) "
                             "to place the band above the threshold; this bundle has none")
        thr = np.asarray(curve["threshold"], dtype=np.float64)
        keep = np.isfinite(thr)
        return cls(rate, near_rate, near_share, thr[keep],
                   np.asarray(curve["teacher_fraction"], dtype=np.float64)[keep])

    @classmethod
    def from_scores(cls, rate: float, scores: Any, *, near_rate: float | None = None,
                    near_share: float = 0.1) -> ShadowPlan:
        """The plan for calibration rows' router ``scores`` (their empirical distribution)."""
        s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
        s = s[np.isfinite(s)]
        if near_rate is not None and s.size == 0:
            raise InputError("from_scores needs at least one finite score")
        values = np.unique(s)  # each distinct score, with the share of rows below it
        return cls(rate, near_rate, near_share, values,
                   np.searchsorted(s, values, side="left") / max(s.size, 1))

    @property
    def min_prob(self) -> float:
        """The smallest probability any row the student answered gets (the monitor's
        ``min_shadow_prob``)."""
        return self.rate if self.near_rate is None else min(self.rate, self.near_rate)

    def band_top(self, threshold: float) -> float:
        """Where the band above ``threshold`` ends (``threshold`` itself without a band)."""
        if self.near_rate is None:
            return float(threshold)
        thr, tf = self.thresholds, self.teacher_fraction
        # the share below ``threshold``: that of the next stored threshold at or above it
        # (no calibration score lies between them)
        at = int(np.searchsorted(thr, threshold, side="left"))
        here = float(tf[at]) if at < thr.size else 1.0
        i = int(np.searchsorted(tf, here + self.near_share - 1e-12, side="left"))
        return float(thr[i]) if i < thr.size else math.inf

    def probabilities(self, scores: Any, threshold: float) -> np.ndarray:
        """Each row's shadow probability at the live ``threshold`` (meaningful on the rows
        the student answers, ``score >= threshold``)."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if self.near_rate is None:
            return np.full(s.size, self.rate)
        return np.where(s < self.band_top(threshold), self.near_rate, self.rate)

    def describe(self) -> dict[str, Any]:
        return {"shadow_rate": self.rate, "shadow_near_rate": self.near_rate,
                "shadow_near_share": self.near_share if self.near_rate is not None else None}

    def __repr__(self) -> str:
        if self.near_rate is None:
            return f"ShadowPlan(rate={self.rate})"
        return (f"ShadowPlan(rate={self.rate}, near_rate={self.near_rate}, "
                f"near_share={self.near_share})")

