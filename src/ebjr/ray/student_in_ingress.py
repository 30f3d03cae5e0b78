"""The student inside the ingress replicas: one hop per request, and only routed rows take a
second one, to the teacher deployment.

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

from ebjr.exceptions import ModelError, TeacherUnavailable
from ebjr.joint import JointModel
from ebjr.serve.engine import JointEngine
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.settings import ServeSettings

__all__ = ["IngressJointEngine", "TeacherDeployment"]

log = logging.getLogger("ebjr.ray")

#: how often a replica reports its counts to the control deployment (seconds)
REPORT_EVERY_S = 1.0


class TeacherDeployment:
    """The teacher deployment as :class:`JointEngine`'s teacher: ``await teacher(rows)`` ->
    logits, with Ray's failures mapped to :class:`TeacherUnavailable` (its fallback policy
    then decides) and the request timeout applied."""

    def __init__(self, handle: Any, timeout_s: float, max_in_flight: int = 4) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        try:
            return await asyncio.wait_for(self.handle.infer.remote(rows), self.timeout_s)
        except BackPressureError as exc:
            raise TeacherUnavailable(f"the teacher is overloaded: {exc}", "queue_full") from None
        except TimeoutError:
            raise TeacherUnavailable(
                f"the teacher gave no answer within {self.timeout_s} s", "timeout") from None
        except (RayError, RayServeException, ModelError) as exc:
            log.warning("the teacher deployment failed on %d rows: %s", len(rows), exc)
            raise TeacherUnavailable(
                f"the teacher failed: {type(exc).__name__}: {str(exc)[:300]}", "model_error"
            ) from None

    async def close(self) -> None:
        pass


class IngressJointEngine(JointEngine):
    """:class:`JointEngine` in an ingress replica: its threshold is the application's
    (pushed by the control deployment), and its counts are reported there."""

    def __init__(self, joint: JointModel, settings: ServeSettings, metrics: ServeMetrics,
                 teacher: Any, control: Any, replica: str) -> None:
        super().__init__(joint, settings, metrics,
                         TeacherDeployment(teacher, settings.request_timeout_s))
        self.app_control = control
        self.replica = replica
        self.version = -1  # the threshold version applied
        self._tasks: list[asyncio.Task[Any]] = []
        self._reported: dict[str, int] | None = None

    def apply(self, version: int, threshold: float) -> None:
        """Route every later batch with ``threshold`` (the application's version ``version``)."""
        if version != self.version:
            self.joint.set_threshold(threshold)
            self.metrics.threshold.labels("set").set(threshold)
            self.version = version

    async def start(self) -> None:
        """Take the application's threshold (so one set before this replica started applies
        to it too), then serve, watching for changes and reporting counts."""
        await super().start()
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
        counts = self.joint.counts()
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

    # ------------------------------------------------------------ the application's values
    async def set_threshold(self, threshold: float) -> float:
        """Set the threshold on every replica; returns once each has applied it."""
        old = await self.app_control.publish_threshold.remote(threshold)
        self.metrics.threshold.labels("set").set(threshold)
        return old

    async def counts(self) -> dict[str, int]:
        """The whole application's counts (this replica's are reported first, so they are
        current; another replica's are at most about a second old)."""
        await self._report()
        return await self.app_control.counts.remote()

    async def close(self) -> None:
        await super().close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._report()
