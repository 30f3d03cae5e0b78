"""The one routing state of a Ray Serve joint application: the live threshold,
the load-aware control and the application-wide teacher queue.

It is a deployment of one replica (``num_cpus=0``), so every student replica
reads the same value: each student batch asks it for the threshold to route
with (:meth:`RoutingControl.begin_batch`), and reports how many rows it sent
to the teacher and when they came back. The teacher queue the load-aware
control sees is therefore the whole application's (rows routed by any student
replica and not yet answered by any teacher replica), not one replica's.

The class is plain Python; :mod:`ebjr.ray.serve` wraps it with
``serve.deployment`` (so the logic is tested without Ray too).
"""

from __future__ import annotations

from typing import Any

from ebjr.joint.counts import RoutingCounts
from ebjr.routing.base import check_threshold
from ebjr.serve.load_control import LoadAwareThreshold, load_control_state

__all__ = ["RoutingControl"]


class RoutingControl:
    """The shared threshold and counts.

    Args:
        threshold: the calibrated threshold to start with.
        load_mode, load_budget, load_min_threshold: the load-aware control
            (as ``ebjr serve --load-mode``); ``None`` for none.
        metrics: optional recorder with ``set_threshold(kind, value)`` and
            ``set_teacher_queue(rows)`` (Ray's metrics in a deployment).
    """

    def __init__(
        self,
        threshold: float,
        load_mode: str | None = None,
        load_budget: float | None = None,
        load_min_threshold: float | None = None,
        metrics: Any = None,
    ) -> None:
        self._threshold = check_threshold(threshold)
        self._effective = self._threshold
        self.control = (
            None
            if load_mode is None
            else LoadAwareThreshold(load_mode, float(load_budget or 0.0), load_min_threshold)
        )
        self.teacher_queued = 0  # rows routed by any student replica, not yet answered
        self._metrics = metrics
        self._counts = RoutingCounts()
        self._record()

    def _record(self) -> None:
        if self._metrics is not None:
            self._metrics.set_threshold("set", self._threshold)
            self._metrics.set_threshold("effective", self._effective)
            self._metrics.set_teacher_queue(self.teacher_queued)

    # ------------------------------------------------------------ student replicas
    def begin_batch(self) -> float:
        """The threshold for the next student batch, anywhere (steps the load control once)."""
        t = self._threshold
        if self.control is not None:
            t = self.control.effective(t, self.teacher_queued)
        self._effective = t
        self._record()
        return t

    def routed(self, rows: int, to_teacher: int, scores: Any = None) -> None:
        """A student batch of ``rows`` sent ``to_teacher`` of them on (``scores`` feed the
        load control)."""
        self.teacher_queued += int(to_teacher)
        if self.control is not None and scores is not None:
            self.control.observe(scores)
        self._record()

    def finished(self, rows: int, to_teacher: int, fell_back: bool) -> None:
        """The batch is answered: its routed rows left the teacher queue."""
        self.teacher_queued = max(0, self.teacher_queued - int(to_teacher))
        self._counts.answered(rows, to_teacher, fell_back=fell_back)
        if to_teacher and not fell_back:
            self._counts.teacher_calls += 1
        self._record()

    # ------------------------------------------------------------ the HTTP layer
    def get_threshold(self) -> float:
        return self._threshold

    def set_threshold(self, threshold: float) -> float:
        """Set the live threshold for every later batch on every replica; returns the old one."""
        old, self._threshold = self._threshold, check_threshold(threshold)
        self._record()
        return old

    def threshold_info(self) -> dict[str, Any]:
        c = self.control
        return {
            "threshold": self._threshold,
            "effective_threshold": self._effective if c is not None else self._threshold,
            "load_control": None if c is None else load_control_state(c),
        }

    def counts(self) -> dict[str, int]:
        return self._counts.as_dict()

    def queue_rows(self) -> dict[str, int]:
        return {"teacher": self.teacher_queued}

    def __repr__(self) -> str:
        return (
            f"RoutingControl(threshold={self._threshold!r}, "
            f"load_aware={self.control is not None}, teacher_queued={self.teacher_queued})"
        )
