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

Labels that arrive later (``POST .../feedback``, :mod:`ebjr.serve.feedback`) find what
their request's batch's shadows found in a :class:`BatchShadow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.calibration.monitor import GuaranteeMonitor, LiveGuarantee
from ebjr.calibration.shadow_plan import ShadowPlan
from ebjr.exceptions import InputError

__all__ = ["BatchShadow", "LocalGuarantee", "ShadowTraffic", "live_guarantee", "monitor_grid",
           "shadow_plan"]

log = logging.getLogger("ebjr.serve")

#: at most this many grid thresholds get a certificate
GRID_POINTS = 32


def monitor_grid(bundle: Any, threshold: float) -> list[float]:
    """The thresholds to keep certificates for: the live one, the bundle curve's stored
    thresholds above it (thinned to :data:`GRID_POINTS`), and +inf (every row to the
    teacher: it never disagrees, so it is certified after a few hundred rows)."""
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


def shadow_plan(settings: Any, bundle: Any) -> ShadowPlan:
    """The shadow probabilities that ``settings`` ask for (the near-threshold band placed
    by the bundle's stored curve)."""
    return ShadowPlan.from_curve(settings.shadow_rate, getattr(bundle, "curve", None),
                                 near_rate=settings.shadow_near_rate,
                                 near_share=settings.shadow_near_share)


def live_guarantee(settings: Any, bundle: Any, threshold: Any,
                   grid: bool = True) -> LiveGuarantee:
    """The monitor and policy that ``settings`` ask for (``eps``/``delta`` by default the
    bundle's ``guaranteed_drop`` target's; the grid from :func:`monitor_grid`, or none:
    a cascade's thresholds are a vector)."""
    eps = settings.guarantee_eps or _target_value(bundle, "eps")
    if eps is None:
        raise InputError("--shadow-rate needs the disagreement to watch: give "
                         "--guarantee-eps (the bundle's target is not a guaranteed drop)")
    delta = settings.guarantee_delta or _target_value(bundle, "delta") or 0.05
    plan = shadow_plan(settings, bundle)
    monitor = GuaranteeMonitor(eps, delta, min_shadow_prob=plan.min_prob,
                               thresholds=monitor_grid(bundle, threshold) if grid else None)
    # tighten (a grid's policy) never serves below the calibrated threshold
    return LiveGuarantee(monitor, settings.on_alarm, threshold if grid else -math.inf, plan)


class LocalGuarantee:
    """The guarantee kept in this process: fed batch by batch, moving the served threshold
    when the policy says so, and shown in this server's metrics.

    Args:
        live: the monitor and its policy.
        served: ``served()`` is the live threshold (a number, or a cascade's vector).
        serve: ``serve(t)`` serves threshold ``t`` from the next batch on.
        metrics: the server's metrics.
    """

    def __init__(self, live: LiveGuarantee, served: Any, serve: Any, metrics: Any) -> None:
        self.live, self.served, self.serve, self.metrics = live, served, serve, metrics
        self._publish()

    async def feed(self, student: Any, shadowed: Any, disagree: Any, scores: Any,
                   shadow_prob: Any) -> None:
        new = self.live.feed(self.served(), student, shadowed, disagree, scores, shadow_prob)
        if new is not None:
            self.serve(new)
        self._publish()

    async def leave_out(self, why: str) -> None:
        self.live.leave_out(why)

    async def feed_labels(self, student: Any, shadowed: Any, joint_wrong: Any,
                          teacher_wrong: Any, shadow_prob: Any) -> None:
        new = self.live.feed_labels(self.served(), student, shadowed, joint_wrong,
                                    teacher_wrong, shadow_prob)
        if new is not None:
            self.serve(new)
        self._publish()

    async def state(self) -> dict[str, Any]:
        return self.live.state(self.served())

    def _publish(self) -> None:
        m, mon = self.metrics, self.live.monitor
        m.guarantee_drop_upper.set(mon.drop_upper)
        m.guarantee_alarm.set(1.0 if mon.alarm or self.live.actions else 0.0)
        m.guarantee_e_value.set(min(mon.e_value, 1e300))


class BatchShadow:
    """What the shadows of one student batch found, for labels that arrive later: per row,
    whether the student answered it, whether it was shadowed and the teacher's class where
    known (its routed rows too);
    ``usable`` is False for a batch left out of the monitor. ``done`` is set once known."""

    def __init__(self, student: np.ndarray) -> None:
        n = student.size
        self.student = student  # the rows answered before the teacher (the last stage)
        self.done = asyncio.Event()
        self.usable = False
        self.shadowed = np.zeros(n, dtype=bool)
        self.teacher_classes = np.full(n, -1, dtype=np.int64)
        self.shadow_prob = np.ones(n)

    def finish(self, usable: bool, shadowed: Any = None, teacher_classes: Any = None,
               shadow_prob: Any = None) -> None:
        self.usable = usable
        if usable:
            self.shadowed, self.teacher_classes = shadowed, teacher_classes
            self.shadow_prob = shadow_prob
        self.done.set()


class ShadowTraffic:
    """The shadow sampler of one joint engine, feeding a guarantee (``sink``: a
    :class:`LocalGuarantee`, or on Ray the control deployment's).

    Args:
        plan: each row's shadow probability (:class:`~ebjr.calibration.ShadowPlan`).
        metrics: the server's metrics (the shadow counts).
        teacher: ``await teacher(rows) -> logits`` (the engine's shadow batcher).
        room: ``room(rows) -> bool``: whether the teacher can take ``rows`` shadow rows now.
        sink: ``await feed(student, shadowed, disagree, scores)``, ``await leave_out(why)``
            and ``await state()``.
    """

    def __init__(self, plan: ShadowPlan, metrics: Any, teacher: Any, room: Any, sink: Any,
                 seed: int | None = None) -> None:
        self.metrics, self.sink = metrics, sink
        self.plan = plan
        self._teacher, self._room = teacher, room
        self._rng = np.random.default_rng(seed)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ per batch
    def observe(self, batch: Any, student: np.ndarray, mine: np.ndarray,
                predictions: np.ndarray, scores: Any, threshold: Any,
                failed: bool) -> BatchShadow:
        """A batch was answered: sample its shadows and feed the guarantee, off the
        response path; the returned handle tells what they found.

        Args:
            batch: the batch's rows.
            student: per row, whether it was answered before the teacher (the last stage).
            mine: per row, the class the student (an earlier stage) gives.
            predictions: per row, the class served (the teacher's on the rows it answered).
            scores, threshold: the router's scores and the live threshold (the plan's).
            failed: whether the teacher failed on the batch's routed rows.
        """
        found = BatchShadow(np.asarray(student, dtype=bool))
        if failed:
            self._spawn(self._leave_out("teacher_failed", found))
            return found
        disagree = mine != predictions  # routed rows: the teacher's answer; others: equal
        scores = np.asarray(to_numpy(scores), dtype=np.float64)
        # each row's probability is fixed by its score before the teacher's answer is known
        prob = self.plan.probabilities(scores, threshold)
        pick = student & (self._rng.random(student.size) < prob)
        rows = np.flatnonzero(pick)
        if rows.size and not self._room(rows.size):
            self._spawn(self._leave_out("shed", found))
            return found
        if rows.size:
            self.metrics.shadow_rows.labels("sent").inc(rows.size)
        teacher = np.where(student, -1, predictions).astype(np.int64)
        self._spawn(self._shadow(batch[rows], rows, student, pick, disagree, mine, scores,
                                 prob, teacher, found))
        return found

    async def _shadow(self, rows_x: Any, rows: np.ndarray, student: np.ndarray,
                      pick: np.ndarray, disagree: np.ndarray, mine: np.ndarray,
                      scores: np.ndarray, prob: np.ndarray, teacher: np.ndarray,
                      found: BatchShadow) -> None:
        if rows.size:
            try:
                logits = await self._teacher(rows_x)
            except Exception as exc:  # the teacher is down or full: this batch is left out
                log.debug("shadow rows not answered: %s", exc)
                await self._leave_out("teacher_failed", found)
                return
            self.metrics.shadow_rows.labels("answered").inc(rows.size)
            disagree = disagree.copy()
            teacher[rows] = np.asarray(to_numpy(logits)).argmax(axis=1)
            disagree[rows] = mine[rows] != teacher[rows]
        found.finish(True, pick, teacher, prob)
        try:
            await self.sink.feed(student, pick, disagree, scores, prob)
        except Exception as exc:  # e.g. the control deployment restarting: never the answer
            log.warning("the guarantee monitor could not take a batch: %s", exc)

    async def _leave_out(self, why: str, found: BatchShadow) -> None:
        found.finish(False)
        self.metrics.shadow_batches_left_out.labels(why).inc()
        try:
            await self.sink.leave_out(why)
        except Exception as exc:
            log.warning("the guarantee monitor could not count a left-out batch: %s", exc)

    async def state(self) -> dict[str, Any]:
        return await self.sink.state()

    async def close(self) -> None:
        """Wait for the shadows in flight (their teacher calls are queued already)."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
