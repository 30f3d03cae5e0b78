"""A cascade of N models behind dynamic batching: what ``ebjr serve`` runs for a cascade bundle.

Every stage has its own :class:`~ebjr.serve.batcher.Batcher` and thread. A
request's rows join the first stage's batcher; a batch is walked through the
cascade by :class:`~ebjr.joint.cascade_walk.CascadeWalk` (the one routing
step every cascade server shares): the rows a stage passes on join the next
stage's batcher, so passed-on rows of several batches share one call of a
later stage, and the stages overlap. A later stage that fails leaves its rows
with the answer of the stage before (``<stage>_fallback``, the request
``degraded``), or under the fallback policy ``error`` fails the requests that
had a row there. Where a stage runs elsewhere (``ebjr.ray``'s one deployment
per stage) its callable is passed in ``remote``; a failure of the first stage
fails its requests (no earlier answer exists).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.calibration.shadow_plan import ShadowPlan
from ebjr.exceptions import InputError, ModelError, TeacherUnavailable
from ebjr.joint.cascade_model import CascadeModel
from ebjr.joint.cascade_walk import CascadeWalk
from ebjr.joint.functional import take_rows
from ebjr.joint.step import JointAnswer, split_answers
from ebjr.serve.batcher import Batcher
from ebjr.serve.engine import ModelRunner, ask_stage, split_rows
from ebjr.serve.feedback import LocalFeedback
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.process import model_threads
from ebjr.serve.settings import ServeSettings
from ebjr.serve.shadow import LocalGuarantee, ShadowTraffic, live_guarantee

__all__ = ["CascadeEngine"]


class CascadeEngine:
    """The :class:`~ebjr.serve.engine.JointEngineAPI` of a
    :class:`~ebjr.joint.cascade_model.CascadeModel`: the threshold is the vector of the
    stages' thresholds, and the counts are per stage."""

    kind = "cascade"

    def __init__(self, model: CascadeModel, settings: ServeSettings, metrics: ServeMetrics,
                 remote: dict[str, Any] | None = None, bundle: Any = None) -> None:
        if settings.load_mode is not None:
            raise InputError("the load-aware threshold (--load-mode) applies to a "
                             "student/teacher pair, not a cascade")
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.stages = model.stages
        remote = dict(remote or {})
        unknown = sorted(set(remote) - set(self.stages))
        if unknown:
            raise InputError(f"remote stages {unknown} are not stages of {list(self.stages)}")
        self._remote = remote
        threads = model_threads(settings.share_model_thread,
                                [name for name in self.stages if name not in remote])
        #: threads the local stages run on (1 when they share one)
        self.model_threads = len(set(threads.values()))
        self._runners: list[Any] = [
            remote.get(name) or ModelRunner(self._local(name), name, threads[name])
            for name in self.stages
        ]
        self.batchers = [
            Batcher(name, self._run_front if i == 0 else self._stage_call(i),
                    finish=self._finish_front if i == 0 else None,
                    max_batch=settings.max_batch_size if i == 0
                    else settings.teacher_max_batch_size,
                    max_wait_s=(settings.max_wait_ms if i == 0
                                else settings.teacher_max_wait_ms) / 1000,
                    max_queue_rows=settings.max_queue_rows if i == 0
                    else settings.teacher_max_queue_rows,
                    # the first stage's later stages wait off its slot (see JointEngine)
                    max_in_flight=8 if i == 0 else getattr(self._runners[i], "max_in_flight", 1),
                    max_running=getattr(self._runners[i], "max_in_flight", 1),
                    on_batch=lambda n, name=name: metrics.batch_rows.labels(name).observe(n))
            for i, name in enumerate(self.stages)
        ]
        self._show_thresholds()
        self.shadow: ShadowTraffic | None = None
        self.shadow_batcher: Batcher | None = None
        self.feedback: Any = None
        if settings.shadow_rate > 0:
            self._watch_the_guarantee(bundle)

    def _watch_the_guarantee(self, bundle: Any) -> None:
        """Shadow a share of the rows an earlier stage answered to the last stage (its own
        queue, off the response path, shed first), and monitor the disagreement with it."""
        s, last = self.settings, len(self.stages) - 1
        if s.shadow_near_rate is not None or s.on_alarm == "tighten":
            raise InputError("a cascade's guarantee monitor shadows uniformly and acts with "
                             "--on-alarm log or teacher: --shadow-near-rate and --on-alarm "
                             "tighten move along one threshold, and a cascade has one per "
                             "stage")
        shadows = self.shadow_batcher = Batcher(
            "shadow", self._stage_call(last), max_batch=s.teacher_max_batch_size,
            max_wait_s=s.teacher_max_wait_ms / 1000, max_queue_rows=s.teacher_max_queue_rows,
            on_batch=lambda n: self.metrics.batch_rows.labels("shadow").observe(n))
        sink = LocalGuarantee(live_guarantee(s, bundle, list(self.model.thresholds),
                                             grid=False),
                              lambda: list(self.model.thresholds), self._serve_everywhere,
                              self.metrics)
        limit = s.teacher_max_queue_rows // 2
        self.shadow = ShadowTraffic(
            ShadowPlan(s.shadow_rate), self.metrics, shadows.submit,
            lambda k: self.batchers[last].queued_rows + shadows.queued_rows + k <= limit, sink)
        self.feedback = LocalFeedback(sink)

    def _serve_everywhere(self, threshold: float) -> None:
        """The policy's move: ``threshold`` at every stage (``inf``: the last answers all)."""
        self.model.set_thresholds([threshold] * (len(self.stages) - 1))
        self._show_thresholds()

    def _local(self, name: str) -> Any:
        return lambda rows: to_numpy(self.model.run_stage(name, rows))

    def _show_thresholds(self) -> None:
        for name, t in zip(self.stages, self.model.thresholds, strict=False):
            self.metrics.threshold.labels(f"set:{name}").set(t)

    async def start(self) -> None:
        for b in self.batchers:
            b.start()
        if self.shadow_batcher is not None:
            self.shadow_batcher.start()

    # ------------------------------------------------------------ what the HTTP layer asks
    @property
    def front(self) -> Batcher:
        """The batcher every request enters (the first stage's)."""
        return self.batchers[0]

    @property
    def router(self) -> Any:
        return self.model.router

    @property
    def task(self) -> Any:
        from ebjr.tasks import Classification

        return Classification()  # a cascade of classifiers

    def check_room(self) -> None:
        self.batchers[0].check_room()

    async def queue_rows(self) -> dict[str, int]:
        return {name: b.queued_rows for name, b in zip(self.stages, self.batchers, strict=True)}

    async def threshold(self) -> list[float]:
        """The live thresholds, one per stage but the last."""
        return list(self.model.thresholds)

    async def set_threshold(self, thresholds: Any) -> list[float]:
        """Set every stage's threshold for every later batch; returns the old ones."""
        old = list(self.model.set_thresholds(thresholds))
        self._show_thresholds()
        return old

    async def threshold_info(self) -> dict[str, Any]:
        t = list(self.model.thresholds)
        return {"threshold": t, "effective_threshold": t, "load_control": None,
                "stages": list(self.stages)}

    async def counts(self) -> dict[str, Any]:
        return self.model.counts()

    async def infer(self, x: np.ndarray) -> JointAnswer:
        """The cascade's answer for ``x``.

        Raises:
            Overloaded: the first stage's queue is full or closed.
            TeacherUnavailable: a later stage failed on a row of ``x`` under policy ``error``.
        """
        result = await self.batchers[0].submit(x)
        if isinstance(result, Exception):
            raise result
        return result

    # ------------------------------------------------------------ the stages
    def _stage_call(self, i: int) -> Any:
        async def run(blocks: list[np.ndarray]) -> list[np.ndarray]:
            logits = await self._runners[i](np.concatenate(blocks))
            return [logits[a:b] for a, b in split_rows(blocks)]

        return run

    async def _run_front(self, blocks: list[np.ndarray]) -> Any:
        """The first stage on a batch (the batch's slot): what :meth:`_finish_front` needs."""
        batch = np.concatenate(blocks)
        walk = CascadeWalk(self.model.cascade, self.model.thresholds, len(batch))
        try:
            first = await self._runners[0](batch)
        except TeacherUnavailable as exc:  # a first stage elsewhere: no earlier answer exists
            raise ModelError(str(exc), self.stages[0]) from exc
        return batch, [len(b) for b in blocks], walk, first

    async def _finish_front(self, out: Any) -> list[Any]:
        """The later stages of a batch, off the first stage's slot; then split."""
        batch, sizes, walk, first = out
        rows = walk.feed(first)
        failure: TeacherUnavailable | None = None
        while rows is not None:
            name = walk.stage_name
            logits, failure = await ask_stage(self.batchers[walk.stage], take_rows(batch, rows),
                                              f"stage {name!r}", self.metrics)
            if failure is not None:
                walk.fail()
                break
            rows = walk.feed(logits)
        out = walk.result()
        reached = self.model.count(out)
        self.metrics.observe_routing(len(batch), reached[self.stages[1]]
                                     if len(self.stages) > 1 else 0)
        answer = JointAnswer(to_numpy(out.predictions), to_numpy(out.probabilities), out.scores,
                             out.answered_by, out.thresholds, False, self.stages)
        found = None
        if self.shadow is not None:
            served = np.asarray(answer.predictions)
            last = list(self.stages)[-1]
            found = self.shadow.observe(batch, answer.answered_by != last, served,
                                        served, out.scores, out.thresholds,
                                        failure is not None or bool(np.any(out.fallback)))
        return split_answers(answer, out.fallback, failure, sizes, self.settings.fallback,
                             shadow=found)

    async def close(self) -> None:
        """Finish every queued request (earlier stages first), then stop."""
        for b in self.batchers:
            await b.close()
        if self.shadow is not None and self.shadow_batcher is not None:
            await self.shadow_batcher.close()  # the shadows queued are answered first
            await self.shadow.close()
        for r in self._runners:
            await r.close()
        for adapter in self.model.adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
