"""Shadow traffic and the live guarantee monitor of ``ebjr serve --shadow-rate p``.

After a student batch is answered, each row the student answered is *shadowed* with
probability ``p``: sent to the teacher as well, off the response path (the answers have
already gone back), through a batcher of its own, so a shadow row never takes a routed
row's place in the teacher's queue (a routed call may wait for a shadow call on the
teacher's thread, never fail for it). The routed rows have the teacher's
answer already. The student's class is compared with the teacher's, and the batch goes
to :class:`~ebjr.calibration.monitor.GuaranteeMonitor`.

So that every counted row was shadowed with probability exactly ``p``, a batch whose
shadow rows cannot go is left out of the monitor *whole*. That happens when the teacher's
queue is over half full (shadows are shed first under load), when the teacher fails on
them, or when a batch's routed rows fell back to the student. Which batches are left out
depends on load, not on what the rows hold.

When the monitor raises its alarm, ``on_alarm`` decides what happens: ``log`` logs it;
``teacher`` sends every row to the teacher; ``tighten`` restarts the grid's evidence
(the rows before the alarm no longer speak for the traffic now) and from then on serves
the cheapest grid threshold certified since the alarm, never below the calibrated one,
sending every row to the teacher until one is certified. A policy that acts restarts the
live test, which then watches the threshold now served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.calibration.monitor import AlarmPolicy, GuaranteeMonitor
from ebjr.exceptions import InputError

__all__ = ["ShadowTraffic", "monitor_grid"]

log = logging.getLogger("ebjr.serve")

#: at most this many grid thresholds get a certificate
GRID_POINTS = 32


def monitor_grid(bundle: Any, threshold: float) -> list[float]:
    """The thresholds to keep certificates for: the live one, the bundle curve's stored
    thresholds above it (thinned to :data:`GRID_POINTS`), and +inf (every row to the
    teacher, always certified)."""
    curve = getattr(bundle, "curve", None) or {}
    stored = np.asarray(curve.get("threshold") or [], dtype=np.float64)
    above = np.unique(stored[np.isfinite(stored) & (stored > threshold)])
    if above.size > GRID_POINTS - 2:
        above = above[np.linspace(0, above.size - 1, GRID_POINTS - 2).round().astype(int)]
    return [float(threshold), *above.tolist(), math.inf]


def _target_value(bundle: Any, key: str) -> float | None:
    target = getattr(bundle, "target", None) or {}
    if target.get("kind") == "guaranteed_drop" and target.get(key) is not None:
        return float(target[key])
    return None


class ShadowTraffic:
    """The shadow sampler, the monitor and the alarm policy of one joint engine.

    Args:
        joint: the served :class:`~ebjr.joint.JointModel` (its live threshold is the one a
            policy moves).
        settings: ``shadow_rate``, ``guarantee_eps``/``guarantee_delta`` (default: the
            bundle's ``guaranteed_drop`` target), ``on_alarm``.
        metrics: the server's metrics.
        teacher: ``await teacher(rows) -> logits`` (the engine's teacher batcher).
        room: ``room(rows) -> bool``: whether the teacher can take ``rows`` shadow rows now.
    """

    def __init__(self, joint: Any, settings: Any, metrics: Any, teacher: Any,
                 room: Any, seed: int | None = None) -> None:
        bundle = getattr(joint, "bundle", None)
        eps = settings.guarantee_eps or _target_value(bundle, "eps")
        if eps is None:
            raise InputError("--shadow-rate needs the disagreement to watch: give "
                             "--guarantee-eps (the bundle's target is not a guaranteed drop)")
        delta = settings.guarantee_delta or _target_value(bundle, "delta") or 0.05
        self.joint, self.metrics = joint, metrics
        self.rate = float(settings.shadow_rate)
        self.policy = settings.on_alarm
        self.monitor = GuaranteeMonitor(eps, delta, min_shadow_prob=self.rate,
                                        thresholds=monitor_grid(bundle, joint.threshold))
        self._teacher, self._room = teacher, room
        self._rng = np.random.default_rng(seed)
        # tighten never serves below the calibrated threshold
        self.policy_state = AlarmPolicy(self.monitor, self.policy, joint.threshold)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.left_out = 0  # batches left out of the monitor (shed, failed, fell back)
        self.actions: list[dict[str, Any]] = []
        self._publish()

    # ------------------------------------------------------------ per batch
    def observe(self, batch: Any, routed: Any, mask: np.ndarray, predictions: np.ndarray,
                failed: bool) -> None:
        """A student batch was answered: sample its shadows and feed the monitor (now, or
        when the shadows' answers come back)."""
        if failed:
            self._leave_out("teacher_failed")
            return
        student = ~mask
        mine = np.asarray(to_numpy(self.joint.student_classes(routed)))
        disagree = mine != predictions  # routed rows: the teacher's answer; others: equal
        scores = np.asarray(to_numpy(routed.scores), dtype=np.float64)
        pick = student & (self._rng.random(student.size) < self.rate)
        if not pick.any():
            self._feed(student, pick, disagree, scores)
            return
        rows = np.flatnonzero(pick)
        if not self._room(rows.size):
            self._leave_out("shed")
            return
        self.metrics.shadow_rows.labels("sent").inc(rows.size)
        task = asyncio.get_running_loop().create_task(
            self._shadow(batch[rows], rows, student, pick, disagree, mine, scores))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, rows_x: Any, rows: np.ndarray, student: np.ndarray,
                      pick: np.ndarray, disagree: np.ndarray, mine: np.ndarray,
                      scores: np.ndarray) -> None:
        try:
            logits = await self._teacher(rows_x)
        except Exception as exc:  # the teacher is down or full: this batch is left out
            log.debug("shadow rows not answered: %s", exc)
            self._leave_out("teacher_failed")
            return
        self.metrics.shadow_rows.labels("answered").inc(rows.size)
        disagree = disagree.copy()
        disagree[rows] = mine[rows] != np.asarray(to_numpy(logits)).argmax(axis=1)
        self._feed(student, pick, disagree, scores)

    def _feed(self, student, pick, disagree, scores) -> None:
        m, before = self.monitor, self.joint.threshold
        was, drop_upper = m.alarm, m.drop_upper
        m.update(student, pick, disagree, self.rate, scores=scores)
        raised = m.alarm and not was
        at, drop_upper = m.alarmed_at, m.drop_upper
        new = self.policy_state.next_threshold(before, raised)
        if new is not None and new != before:
            self.joint.set_threshold(new)
            self.metrics.threshold.labels("set").set(new)
        if raised or (new is not None and new != before):
            self._record(raised, before, at, drop_upper)
        self._publish()

    def _leave_out(self, why: str) -> None:
        self.left_out += 1
        self.metrics.shadow_batches_left_out.labels(why).inc()

    # ------------------------------------------------------------ the policy
    def _record(self, alarm: bool, before: float, at: int | None, drop_upper: float) -> None:
        after = self.joint.threshold
        self.actions.append({"at_row": at if alarm else self.monitor.rows,
                             "policy": self.policy if alarm else "certified",
                             "threshold_before": before, "threshold_after": after,
                             "drop_upper": drop_upper})
        if alarm:
            log.warning("guarantee alarm: the disagreement with the teacher exceeds eps=%g "
                        "(upper bound %.4g after %s rows); policy %r: threshold %r -> %r",
                        self.monitor.eps, drop_upper, at, self.policy, before, after)
        else:
            log.warning("guarantee: threshold %r certified since the alarm (after %d rows); "
                        "serving it instead of %r", after, self.monitor.rows, before)

    def _publish(self) -> None:
        m = self.metrics
        m.guarantee_drop_upper.set(self.monitor.drop_upper)
        m.guarantee_alarm.set(1.0 if self.monitor.alarm or self.actions else 0.0)
        m.guarantee_e_value.set(min(self.monitor.e_value, 1e300))

    def state(self) -> dict[str, Any]:
        """What ``GET /v2/models/{name}/guarantee`` answers."""
        m = self.monitor
        return {**m.state(), "alarm": m.alarm or bool(self.actions),
                "live_alarm": m.alarm, "shadow_rate": self.rate,
                "threshold": self.joint.threshold,
                "certified_threshold": m.certified_threshold(at_least=self.joint.threshold),
                "grid": [{"threshold": float(t), "certified": bool(c)}
                         for t, c in zip(m.thresholds if m.thresholds is not None else [],
                                         m.certified(), strict=True)],
                "batches_left_out": self.left_out, "on_alarm": self.policy,
                "actions": list(self.actions)}

    async def close(self) -> None:
        """Wait for the shadows in flight (their teacher calls are queued already)."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
