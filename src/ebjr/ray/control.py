"""The one routing state of a Ray Serve joint application: the live threshold,
the load-aware control, the application-wide teacher queue and the counts.

It is a deployment of one replica (``num_cpus=0``). How student replicas see
the threshold depends on where the student runs:

- **in the ingress replicas** (the default): the threshold is *pushed*. Each
  replica keeps a standing :meth:`RoutingControl.watch` call open, which
  returns when the threshold changes; the replica applies the new value and
  calls again, which acknowledges it. :meth:`RoutingControl.publish_threshold`
  returns once every live replica has acknowledged, so every batch that starts
  after a threshold write returns routes with the new value, on every replica,
  with no control call per batch. Replicas report their counts
  (:meth:`RoutingControl.report`) about once a second.
- **in a student deployment of its own**: each student batch asks for the
  threshold (:meth:`RoutingControl.begin_batch`) and reports how many rows it
  sent to the teacher and when they came back, so the teacher queue the
  load-aware control sees is the whole application's.

The class is plain Python; :mod:`ebjr.ray.serve` wraps it with
``serve.deployment`` (so the logic is tested without Ray too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ebjr.exceptions import InputError
from ebjr.joint.counts import RoutingCounts
from ebjr.routing.base import check_threshold
from ebjr.serve.feedback import FeedbackStore, Labelled, NotWaiting, check_labels, signed_loss
from ebjr.serve.load_control import LoadAwareThreshold, load_control_state

__all__ = ["Broadcast", "CascadeControl", "RoutingControl"]

log = logging.getLogger("ebjr.ray")


class Broadcast:
    """A versioned value pushed to subscribers, each acknowledging the version it applied.

    A subscriber calls :meth:`watch` with the version it has applied (``-1`` at
    first); the call returns ``(version, value)`` as soon as a newer version
    exists, or after ``wait_s`` with the current one. :meth:`publish` sets a new
    value and waits until every subscriber heard from in the last
    ``forget_after_s`` seconds has applied it (at most ``ack_timeout_s``); it
    returns the subscribers that did not, which are logged.

    Plain asyncio: the Ray control deployment holds one (tested without Ray).
    """

    def __init__(self, value: Any, *, ack_timeout_s: float = 10.0,
                 forget_after_s: float = 60.0) -> None:
        self.value = value
        self.version = 0
        self.ack_timeout_s = ack_timeout_s
        self.forget_after_s = forget_after_s
        self._applied: dict[str, tuple[int, float]] = {}  # subscriber -> (version, last seen)
        self._change: asyncio.Event | None = None  # made in the running loop
        self._ack: asyncio.Event | None = None

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._change is None or self._ack is None:
            self._change, self._ack = asyncio.Event(), asyncio.Event()
        return self._change, self._ack

    def subscribers(self) -> dict[str, int]:
        """Each live subscriber's applied version."""
        now = time.monotonic()
        return {k: v for k, (v, seen) in self._applied.items()
                if now - seen <= self.forget_after_s}

    async def watch(self, subscriber: str, applied: int, wait_s: float = 10.0
                    ) -> tuple[int, Any]:
        """``subscriber`` has applied version ``applied``: the next version and its value."""
        change, ack = self._events()
        self._applied[subscriber] = (applied, time.monotonic())
        ack.set()
        if applied == self.version:
            try:
                await asyncio.wait_for(change.wait(), wait_s)
            except TimeoutError:
                pass
            self._applied[subscriber] = (applied, time.monotonic())
        return self.version, self.value

    async def publish(self, value: Any) -> list[str]:
        """Set ``value`` for every subscriber; the subscribers that did not acknowledge it."""
        change, ack = self._events()
        self.value = value
        self.version += 1
        version = self.version
        self._change = asyncio.Event()  # later watches wait on a fresh event
        change.set()
        deadline = time.monotonic() + self.ack_timeout_s
        while True:
            behind = sorted(k for k, v in self.subscribers().items() if v < version)
            left = deadline - time.monotonic()
            if not behind or left <= 0 or self.version != version:
                break
            ack.clear()
            try:
                await asyncio.wait_for(ack.wait(), min(left, 0.5))
            except TimeoutError:
                pass
        if behind and self.version == version:
            log.warning("replicas %s did not acknowledge threshold version %d within %g s",
                        behind, version, self.ack_timeout_s)
        return behind if self.version == version else []


class RoutingControl:
    """The shared threshold and counts.

    Args:
        threshold: the calibrated threshold to start with.
        load_mode, load_budget, load_min_threshold: the load-aware control
            (as ``ebjr serve --load-mode``); ``None`` for none.
        metrics: optional recorder with ``set_threshold(kind, value)`` and
            ``set_teacher_queue(rows)`` (Ray's metrics in a deployment).
        guarantee: the application's live guarantee
            (:class:`~ebjr.calibration.monitor.LiveGuarantee`), fed by every replica's
            shadow traffic; ``None`` without ``shadow_rate``.
    """

    def __init__(
        self,
        threshold: float,
        load_mode: str | None = None,
        load_budget: float | None = None,
        load_min_threshold: float | None = None,
        metrics: Any = None,
        guarantee: Any = None,
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
        self._reported: dict[str, dict[str, int]] = {}  # replica -> its counts so far
        self.broadcast = Broadcast(self._threshold)
        self.guarantee = guarantee
        self._labels: FeedbackStore | None = None  # answers waiting for labels, by id
        self._record()

    def _record(self) -> None:
        if self._metrics is not None and self.guarantee is not None:
            mon = self.guarantee.monitor
            self._metrics.set_guarantee(mon.drop_upper, mon.alarm or bool(self.guarantee.actions))
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

    async def watch(self, replica: str, applied: int, wait_s: float = 10.0
                    ) -> tuple[int, float]:
        """A replica running the student has applied threshold version ``applied``: the next
        version and threshold (see :class:`Broadcast`)."""
        return await self.broadcast.watch(replica, applied, wait_s)

    def report(self, replica: str, counts: dict[str, int]) -> None:
        """A replica running the student reports its counts so far (they replace its last)."""
        self._reported[str(replica)] = {k: int(v) for k, v in counts.items()}

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

    async def publish_threshold(self, threshold: float) -> float:
        """:meth:`set_threshold`, returning once every replica that runs the student has
        applied it (each batch a student deployment runs asks for it anyway)."""
        old = self.set_threshold(threshold)
        await self.broadcast.publish(self._threshold)
        return old

    def threshold_info(self) -> dict[str, Any]:
        c = self.control
        return {
            "threshold": self._threshold,
            "effective_threshold": self._effective if c is not None else self._threshold,
            "load_control": None if c is None else load_control_state(c),
        }

    def counts(self) -> dict[str, int]:
        """The application's counts: the student deployment's batches and every replica's
        last report."""
        total = self._counts.as_dict()
        for counts in self._reported.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
        return total

    def queue_rows(self) -> dict[str, int]:
        return {"teacher": self.teacher_queued}

    # ------------------------------------------------------------ the live guarantee
    def _live(self) -> Any:
        if self.guarantee is None:
            raise RuntimeError("this application runs no guarantee monitor (shadow_rate 0)")
        return self.guarantee

    async def guarantee_feed(self, student: Any, shadowed: Any, disagree: Any,
                             scores: Any, shadow_prob: Any = None) -> None:
        """One replica's batch of served rows; a policy's new threshold is published to
        every replica before this returns."""
        new = self._live().feed(self._threshold, student, shadowed, disagree, scores,
                                shadow_prob)
        if new is not None:
            await self.publish_threshold(new)
        self._record()

    def guarantee_leave_out(self, why: str) -> None:
        self._live().leave_out(why)

    def guarantee_pending(self, records: list[tuple[str, Labelled]]) -> None:
        """Answered requests of one replica (their shadows in), waiting for labels."""
        if self._labels is None:
            self._labels = FeedbackStore()
        for request_id, rec in records:
            self._labels.put(request_id, rec)

    async def guarantee_label(self, request_id: str, labels: Any) -> tuple[int, str] | None:
        """Count the labels of request ``request_id``: ``None``, or the HTTP status and
        message that refuse them (a policy's move is published to every replica first)."""
        live = self._live()
        try:
            if self._labels is None:
                raise NotWaiting(f"no answered request {request_id!r} is waiting for labels")
            rec: Labelled = self._labels.get(request_id)
            got = check_labels(request_id, rec.predictions, labels)
            self._labels.pop(request_id)
            new = live.feed_labels(self._threshold, *signed_loss(rec, got))
        except NotWaiting as exc:
            return 404, (f"{exc} (a replica sends its answers here about once a second: "
                         "retry one answered just now)")
        except InputError as exc:
            return 400, str(exc)
        if new is not None:
            await self.publish_threshold(new)
        self._record()
        return None

    def guarantee_state(self) -> dict[str, Any]:
        return self._live().state(self._threshold)

    def __repr__(self) -> str:
        return (
            f"RoutingControl(threshold={self._threshold!r}, "
            f"load_aware={self.control is not None}, teacher_queued={self.teacher_queued})"
        )


class CascadeControl:
    """The shared thresholds (one per stage but the last) and counts of a Ray Serve cascade
    application: pushed to every ingress replica (which runs the first stage) as
    :class:`RoutingControl` pushes a pair's, and the replicas' reported counts summed.

    Args:
        thresholds: the cascade's calibrated thresholds, to start with.
        stages: the stage names, in order.
        metrics: optional recorder with ``set_threshold(kind, value)``.
    """

    def __init__(self, thresholds: Any, stages: Any, metrics: Any = None) -> None:
        from ebjr.joint.cascade_model import check_thresholds

        self.stages = tuple(stages)
        self._check = lambda t: check_thresholds(t, len(self.stages))
        self._thresholds = self._check(thresholds)
        self._metrics = metrics
        self._reported: dict[str, dict[str, Any]] = {}
        self.broadcast = Broadcast(self._thresholds)
        self._record()

    def _record(self) -> None:
        if self._metrics is not None:
            for name, t in zip(self.stages, self._thresholds, strict=False):
                self._metrics.set_threshold(f"set:{name}", t)

    async def watch(self, replica: str, applied: int, wait_s: float = 10.0
                    ) -> tuple[int, Any]:
        """A replica has applied thresholds version ``applied``: the next version and value."""
        return await self.broadcast.watch(replica, applied, wait_s)

    def report(self, replica: str, counts: dict[str, Any]) -> None:
        """A replica reports its counts so far (they replace its last)."""
        self._reported[str(replica)] = counts

    def get_threshold(self) -> list[float]:
        return list(self._thresholds)

    async def publish_threshold(self, thresholds: Any) -> list[float]:
        """Set the thresholds for every later batch on every replica; returns the old ones
        once every replica has applied the new ones."""
        old, self._thresholds = self._thresholds, self._check(thresholds)
        self._record()
        await self.broadcast.publish(self._thresholds)
        return list(old)

    def counts(self) -> dict[str, Any]:
        """Every replica's last report, summed (per stage for ``stage_rows`` and
        ``answered``)."""
        total: dict[str, Any] = {"batches": 0, "rows": 0,
                                 "stage_rows": dict.fromkeys(self.stages, 0),
                                 "answered": dict.fromkeys(self.stages, 0)}
        for counts in self._reported.values():
            for k, v in counts.items():
                if isinstance(v, dict):
                    for name, n in v.items():
                        total[k][name] = total[k].get(name, 0) + int(n)
                else:
                    total[k] = total.get(k, 0) + int(v)
        return total

    def __repr__(self) -> str:
        return f"CascadeControl(stages={list(self.stages)}, thresholds={list(self._thresholds)})"
