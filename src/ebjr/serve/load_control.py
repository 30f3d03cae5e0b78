"""The opt-in load-aware threshold: lower the threshold when the teacher is over budget.

The live threshold ``t`` (set by calibration or over HTTP) is the most the
control uses: it never sends *more* rows to the teacher than ``t`` would. It
keeps the student scores of the last ``window`` rows and, before each batch,
computes the allowed teacher share ``a``:

- mode ``share``: ``a`` is the budget (e.g. 0.3);
- mode ``queue``: ``a`` follows the teacher's queue: multiplied by 0.7 after
  a batch that finds more than ``budget`` rows waiting, raised by 0.02
  (additively, up to 1) after one that does not.

The threshold in use is then ``max(lower, min(t, q_a))``, where ``q_a`` is the
largest threshold that routes at most a share ``a`` of the recent scores
(routing sends ``score < threshold`` to the teacher), and ``lower`` is the
user's floor. Until ``min_scores`` scores are seen it uses ``t``.

>>> c = LoadAwareThreshold("share", 0.25, window=8, min_scores=4)
>>> c.observe([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
>>> c.effective(10.0, teacher_queue_rows=0)   # at most 2 of 8 recent scores below
3.0
>>> c.effective(2.5, teacher_queue_rows=0)    # the live threshold routes fewer: keep it
2.5
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

__all__ = ["LoadAwareThreshold", "load_control_state"]


class LoadAwareThreshold:
    def __init__(
        self,
        mode: str,
        budget: float,
        lower: float | None = None,
        *,
        window: int = 2048,
        min_scores: int = 64,
    ) -> None:
        if mode not in ("share", "queue"):
            raise ValueError(f"mode must be 'share' or 'queue', got {mode!r}")
        self.mode = mode
        self.budget = float(budget)
        self.lower = -math.inf if lower is None else float(lower)
        self.min_scores = min_scores
        self._scores: collections.deque[float] = collections.deque(maxlen=window)
        self.allowed_share = self.budget if mode == "share" else 1.0

    def observe(self, scores: Any) -> None:
        """Add one batch's student scores (``-inf`` scores are forced to the teacher)."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        self._scores.extend(s[np.isfinite(s)].tolist())

    def effective(self, threshold: float, teacher_queue_rows: int) -> float:
        """The threshold to route the next batch with, given the live one."""
        if self.mode == "queue":
            if teacher_queue_rows > self.budget:
                self.allowed_share *= 0.7
            else:
                self.allowed_share = min(1.0, self.allowed_share + 0.02)
        if len(self._scores) < self.min_scores:
            return threshold
        s = np.sort(np.fromiter(self._scores, dtype=np.float64))
        k = math.floor(self.allowed_share * s.size + 1e-9)  # rows that may go to the teacher
        cap = math.inf if k >= s.size else float(s[k])  # s < s[k] holds for at most k rows
        return max(self.lower, min(threshold, cap))


def load_control_state(c: LoadAwareThreshold) -> dict[str, Any]:
    """What the threshold routes report of a load control."""
    return {
        "mode": c.mode,
        "budget": c.budget,
        "lower": c.lower,
        "allowed_share": c.allowed_share,
    }
