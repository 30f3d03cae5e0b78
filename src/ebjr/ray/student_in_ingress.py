"""The student inside the ingress replicas: one hop per request, and only routed rows take a
second one, to the teacher deployment (of a cascade: the first stage inside, each later
stage a deployment that only the rows passed on to it reach).

An ingress replica runs ``ebjr serve``'s own engine (:class:`~ebjr.serve.engine.JointEngine`:
the student batcher, routing, the teacher batcher, the fallback policy) with
:class:`TeacherDeployment` as its teacher, so a request costs the proxy hop and
the ingress replica's work, and a routed row one call to the teacher deployment.
The live threshold is pushed to the replica by the control deployment
(:class:`~ebjr.ray.control.Broadcast`: a standing watch call, acknowledged), and
the replica reports its counts to it about once a second, so the threshold
endpoints and ``/routing_stats`` answer for the whole application whichever
replica a request reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException

from ebjr.exceptions import InputError, ModelError, TeacherUnavailable
from ebjr.joint import JointModel
from ebjr.joint.cascade_model import CascadeModel, check_thresholds
from ebjr.serve.cascade_engine import CascadeEngine
from ebjr.serve.engine import JointEngine
from ebjr.serve.feedback import NotWaiting, Pending, labelled, pending
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.settings import ServeSettings

__all__ = ["ControlFeedback", "ControlGuarantee", "IngressCascadeEngine", "IngressJointEngine",
           "TeacherDeployment"]

log = logging.getLogger("ebjr.ray")

#: how often a replica reports its counts to the control deployment (seconds)
REPORT_EVERY_S = 1.0


class TeacherDeployment:
    """A later stage's deployment (the teacher, or a cascade's stage ``who``) as the
    engine's callable: ``await stage(rows)`` -> logits, with Ray's failures mapped to
    :class:`TeacherUnavailable` (the fallback policy then decides) and ``timeout_s`` (the
    settings' ``teacher_timeout_s``) applied: when the teacher's replica dies, Ray Serve
    holds the calls it had not yet handed over until a replacement starts (about 15 s
    here), and the rows waiting on them fall back after ``timeout_s`` instead."""

    def __init__(self, handle: Any, timeout_s: float, max_in_flight: int = 4,
                 who: str = "teacher") -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.who = who

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        who = self.who
        try:
            return await asyncio.wait_for(self.handle.infer.remote(rows), self.timeout_s)
        except BackPressureError as exc:
            raise TeacherUnavailable(f"the {who} is overloaded: {exc}", "queue_full",
                                     stage=who) from None
        except TimeoutError:
            raise TeacherUnavailable(f"the {who} gave no answer within {self.timeout_s} s",
                                     "timeout", stage=who) from None
        except (RayError, RayServeException, ModelError) as exc:
            log.warning("the %s deployment failed on %d rows: %s", who, len(rows), exc)
            raise TeacherUnavailable(
                f"the {who} failed: {type(exc).__name__}: {str(exc)[:300]}", "model_error",
                stage=who) from None

    async def close(self) -> None:
        pass


class _FollowsTheApplication:
    """What an engine in an ingress replica adds: it applies the application's threshold
    (pushed by the control deployment: a standing watch call, acknowledged by the next
    one), reports its counts there about once a second, and answers the threshold and
    counts endpoints for the whole application. Mixed in before the engine's class."""

    app_control: Any
    replica: str

    def _follow(self, control: Any, replica: str) -> None:
        self.app_control = control
        self.replica = replica
        self.version = -1  # the threshold version applied
        self._tasks: list[asyncio.Task[Any]] = []
        self._reported: dict[str, Any] | None = None

    def _apply_value(self, value: Any) -> None:  # the engine's own setter, per kind
        raise NotImplementedError

    def _local_counts(self) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, version: int, value: Any) -> None:
        """Route every later batch with ``value`` (the application's version ``version``)."""
        if version != self.version:
            self._apply_value(value)
            self.version = version

    async def start(self) -> None:
        """Take the application's threshold (so one set before this replica started applies
        to it too), then serve, watching for changes and reporting counts."""
        await super().start()  # type: ignore[misc]
        self.apply(*await self.app_control.watch.remote(self.replica, -1, 0.0))
        self._tasks = [asyncio.get_running_loop().create_task(job())
                       for job in (self._watch, self._report_often)]

    async def _watch(self) -> None:
        while True:
            try:
                self.apply(*await self.app_control.watch.remote(self.replica, self.version))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the control replica restarting: try again shortly
                log.warning("watching the threshold failed (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def _report(self) -> None:
        counts = self._local_counts()
        if counts != self._reported:
            await self.app_control.report.remote(self.replica, counts)
            self._reported = counts

    async def _report_often(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            try:
                await self._report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reporting counts failed (%s); retrying", exc)

    async def counts(self) -> dict[str, Any]:
        """The whole application's counts (this replica's are reported first, so they are
        current; another replica's are at most about a second old)."""
        await self._report()
        return await self.app_control.counts.remote()

    async def close(self) -> None:
        await super().close()  # type: ignore[misc]
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._report()


class ControlGuarantee:
    """The application's live guarantee, kept by the control deployment: an ingress
    replica's shadow traffic feeds it (and a policy's move reaches every replica)."""

    def __init__(self, control: Any) -> None:
        self.control = control

    async def feed(self, student: Any, shadowed: Any, disagree: Any, scores: Any,
                   shadow_prob: Any) -> None:
        await self.control.guarantee_feed.remote(student, shadowed, disagree, scores,
                                                 shadow_prob)

    async def leave_out(self, why: str) -> None:
        await self.control.guarantee_leave_out.remote(why)

    async def state(self) -> dict[str, Any]:
        return await self.control.guarantee_state.remote()


class ControlFeedback:
    """Labels that arrive later, on Ray: this replica's answers go to the control
    deployment once their shadows are in (with the counts, about once a second; at most
    ``capacity`` waiting here), and a label reaching any replica is counted there."""

    def __init__(self, control: Any, capacity: int = 65_536) -> None:
        self.control, self.capacity = control, capacity
        self._waiting: list[tuple[str, Pending]] = []

    def put(self, request_id: str | None, answer: Any) -> None:
        rec = pending(answer)
        if request_id is not None and rec is not None:
            self._waiting.append((request_id, rec))
            del self._waiting[:-self.capacity]

    async def flush(self) -> None:
        """Send the answers whose shadows are in."""
        ready = [(i, labelled(r)) for i, r in self._waiting if r.shadow[0].done.is_set()]
        if ready:
            self._waiting = [(i, r) for i, r in self._waiting if not r.shadow[0].done.is_set()]
            await self.control.guarantee_pending.remote(ready)

    async def label(self, request_id: str, labels: Any) -> None:
        await self.flush()  # this replica's own answers first
        refused = await self.control.guarantee_label.remote(request_id, labels)
        if refused is not None:
            status, message = refused
            raise (NotWaiting if status == 404 else InputError)(message)


class IngressJointEngine(_FollowsTheApplication, JointEngine):
    """:class:`JointEngine` in an ingress replica: its threshold is the application's
    (pushed by the control deployment), its counts are reported there, and with
    ``shadow_rate`` its shadow traffic feeds the application's guarantee there. Routed
    rows go to ``teacher``, the teacher deployment (``None``: the teacher runs here too)."""

    def __init__(self, joint: JointModel, settings: ServeSettings, metrics: ServeMetrics,
                 teacher: Any, control: Any, replica: str) -> None:
        JointEngine.__init__(self, joint, settings, metrics,
                             None if teacher is None
                             else TeacherDeployment(teacher, settings.teacher_timeout_s),
                             ControlGuarantee(control) if settings.shadow_rate > 0 else None)
        self._follow(control, replica)
        if self.shadow is not None:
            self.feedback = ControlFeedback(control)

    async def _report(self) -> None:
        await super()._report()
        if self.feedback is not None:
            await self.feedback.flush()

    def _apply_value(self, value: float) -> None:
        self.joint.set_threshold(value)
        self.metrics.threshold.labels("set").set(value)

    def _local_counts(self) -> dict[str, Any]:
        return self.joint.counts()

    async def set_threshold(self, threshold: float) -> float:
        """Set the threshold on every replica; returns once each has applied it."""
        old = await self.app_control.publish_threshold.remote(threshold)
        self.metrics.threshold.labels("set").set(threshold)
        return old


class IngressCascadeEngine(_FollowsTheApplication, CascadeEngine):
    """:class:`~ebjr.serve.cascade_engine.CascadeEngine` in an ingress replica: the first
    stage runs here, every later stage is a deployment of its own (only the rows passed on
    reach it), and the thresholds are the application's."""

    def __init__(self, model: CascadeModel, settings: ServeSettings, metrics: ServeMetrics,
                 stages: dict[str, Any], control: Any, replica: str) -> None:
        remote = {name: TeacherDeployment(handle, settings.teacher_timeout_s,
                                          who=f"stage {name!r}")
                  for name, handle in stages.items()}
        CascadeEngine.__init__(self, model, settings, metrics, remote)
        self._follow(control, replica)

    def _apply_value(self, value: Any) -> None:
        self.model.set_thresholds(value)
        self._show_thresholds()

    def _local_counts(self) -> dict[str, Any]:
        return self.model.counts()

    async def set_threshold(self, thresholds: Any) -> list[float]:
        """Set the thresholds on every replica; returns once each has applied them."""
        new = check_thresholds(thresholds, len(self.stages))  # a 400 here, before any change
        return await self.app_control.publish_threshold.remote(list(new))
