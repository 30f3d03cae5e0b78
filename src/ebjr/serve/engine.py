"""What the HTTP layer calls: a joint engine (student, routing, teacher) or one plain model.

Flow of a joint request: its rows join the student :class:`~ebjr.serve.batcher.Batcher`;
a student batch is routed by :meth:`JointModel.route` with the threshold in
use (the live one, or the load-aware one); its routed rows join the teacher
batcher, so routed rows of several student batches share one teacher call;
:meth:`JointModel.merge` puts the answers together, and each request gets
its rows back. The student and the local teacher each run on their own
thread, so the two stages overlap.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeGuard, runtime_checkable

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.exceptions import InputError, ModelError, Overloaded, TeacherUnavailable
from ebjr.joint import JointModel
from ebjr.joint.step import JointAnswer, finish_batch, model_failure
from ebjr.serve.batcher import Batcher
from ebjr.serve.feedback import LocalFeedback
from ebjr.serve.load_control import LoadAwareThreshold, load_control_state
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.process import model_threads
from ebjr.serve.settings import ServeSettings
from ebjr.serve.shadow import LocalGuarantee, ShadowTraffic, live_guarantee, shadow_plan

__all__ = ["Engine", "JointAnswer", "JointEngine", "JointEngineAPI", "ModelEngine",
           "ModelRunner", "TeacherUnavailable", "ask_stage", "is_joint", "split_rows"]

log = logging.getLogger("ebjr.serve")


@runtime_checkable
class Engine(Protocol):
    """What the HTTP layer (:func:`ebjr.serve.app.create_app`) needs of an engine.

    ``kind`` is ``"joint"`` or ``"model"``; ``front.stats`` are the batching
    statistics of the stage every request enters; ``infer`` answers a plain model's
    logits, or a joint model's :class:`JointAnswer`. Implemented here in-process, and by
    :mod:`ebjr.ray` over Ray Serve.
    """

    kind: str

    @property
    def front(self) -> Any: ...

    async def start(self) -> None:
        """Start serving (on the server's event loop, before the first request)."""
        ...

    def check_room(self) -> None: ...

    async def infer(self, x: np.ndarray) -> np.ndarray | JointAnswer: ...

    async def queue_rows(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


@runtime_checkable
class JointEngineAPI(Engine, Protocol):
    """An :class:`Engine` of a joint model: also its router, the live threshold and the
    counts (the threshold routes, ``/curve`` and ``/routing_stats``)."""

    @property
    def router(self) -> Any: ...

    @property
    def task(self) -> Any:
        """The task kind (:mod:`ebjr.tasks`): what an answer is and how it is encoded."""
        ...

    async def threshold(self) -> float:
        """The live threshold (the one a PUT sets)."""
        ...

    async def set_threshold(self, threshold: float) -> float:
        """Set the live threshold for every later batch; returns the old one."""
        ...

    async def threshold_info(self) -> dict[str, Any]:
        """``threshold``, ``effective_threshold`` and ``load_control`` (its state or None)."""
        ...

    async def counts(self) -> dict[str, int]: ...


_JOINT_TYPES: dict[type, bool] = {}


def is_joint(engine: Engine) -> TypeGuard[JointEngineAPI]:
    """Whether ``engine`` is a :class:`JointEngineAPI`. ``isinstance`` against a runtime
    protocol inspects every member on every call (tens of microseconds, on each request's
    path); an engine's class decides it, so the answer is kept per class."""
    kind = type(engine)
    found = _JOINT_TYPES.get(kind)
    if found is None:
        found = _JOINT_TYPES[kind] = isinstance(engine, JointEngineAPI)
    return found


def split_rows(blocks: list[np.ndarray]) -> list[tuple[int, int]]:
    out, start = [], 0
    for b in blocks:
        out.append((start, start + int(b.shape[0])))
        start += int(b.shape[0])
    return out


async def ask_stage(batcher: Batcher, rows: np.ndarray, who: str, metrics: ServeMetrics
                    ) -> tuple[np.ndarray | None, TeacherUnavailable | None]:
    """``(logits, None)`` from a later stage's batcher, or ``(None, why it could not
    answer)``: overloaded, closing, unavailable or failed, counted in the metrics."""
    try:
        return await batcher.submit(rows), None
    except Overloaded as exc:
        kind = "shutting_down" if exc.closing else "queue_full"
        err = TeacherUnavailable(f"the {who} is overloaded: {exc}", kind, exc.retry_after,
                                 stage=who)
    except TeacherUnavailable as exc:
        err = exc
        err.stage = who
    except Exception as exc:  # a broken local model must not take the request down
        log.exception("the %s failed on %d rows", who, len(rows))
        err = TeacherUnavailable(f"the {who} failed: {type(exc).__name__}: {exc}",
                                 "model_error", stage=who)
    metrics.teacher_errors.labels(err.kind).inc()
    return None, err


class ModelRunner:
    """Runs ``fn`` on ``pool`` (default: a thread of its own): ``await runner(*args) ->
    fn(*args)``.

    The inputs were checked at the protocol edge, so anything ``fn`` raises
    (a crash, or NaN/inf outputs caught by the output checks) is the model's
    fault: it comes out as :class:`ModelError` naming the model.
    """

    def __init__(self, fn: Any, name: str, pool: ThreadPoolExecutor | None = None) -> None:
        self._fn = fn
        self.name = name
        self._pool = pool or ThreadPoolExecutor(1, thread_name_prefix=f"ebjr-{name}")

    async def __call__(self, rows: np.ndarray, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._fn, rows, *args)
        except Exception as exc:
            raise model_failure(self.name, rows, exc) from exc

    async def close(self) -> None:
        """Wait for its running call, then stop its thread (a shared one: for every model)."""
        self._pool.shutdown(wait=True)


class ModelEngine:
    """One model served alone (``--role student|teacher``): rows in, its raw output out
    (logits; a regressor's output columns), checked as ``task`` says."""

    kind = "model"

    def __init__(self, adapter: Any, settings: ServeSettings, metrics: ServeMetrics,
                 task: Any = None) -> None:
        from ebjr.tasks import get_task

        self.adapter = adapter
        self.settings = settings
        self.metrics = metrics
        self.task = get_task(task)
        self._runner = ModelRunner(
            lambda rows: self.task.host(self.task.check_output(adapter.forward(rows), len(rows),
                                                               adapter.kind or settings.role)),
            settings.role)
        self.batcher = Batcher(
            settings.role,
            self._run,
            max_batch=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_rows=settings.max_queue_rows,
            on_batch=lambda n: metrics.batch_rows.labels(settings.role).observe(n),
        )

    async def start(self) -> None:
        self.batcher.start()

    async def _run(self, blocks: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.concatenate(blocks)
        logits = await self._runner(batch)
        if not np.isfinite(logits).all():
            raise ModelError(
                f"the {self.settings.role} model emitted NaN or infinity on a batch of "
                f"{len(batch)} rows of shape {list(batch.shape[1:])}", self.settings.role
            )
        return [logits[a:b] for a, b in split_rows(blocks)]

    async def infer(self, x: np.ndarray) -> np.ndarray:
        return await self.batcher.submit(x)

    @property
    def front(self) -> Batcher:
        """The batcher every request enters (its statistics are the model's)."""
        return self.batcher

    async def queue_rows(self) -> dict[str, int]:
        return {self.settings.role: self.batcher.queued_rows}

    def check_room(self) -> None:
        self.batcher.check_room()

    async def close(self) -> None:
        await self.batcher.close()
        await self._runner.close()


class JointEngine:
    """The joint model behind dynamic batching, with a local or remote teacher; with
    ``settings.shadow_rate``, shadow traffic feeding ``guarantee`` (default: a
    :class:`~ebjr.serve.shadow.LocalGuarantee`; on Ray, the control deployment's)."""

    kind = "joint"

    def __init__(
        self,
        joint: JointModel,
        settings: ServeSettings,
        metrics: ServeMetrics,
        teacher: Any = None,
        guarantee: Any = None,
    ) -> None:
        self.joint = joint
        self.settings = settings
        self.metrics = metrics
        self._remote = teacher is not None  # its calls are counted here, not by the joint model
        threads = model_threads(settings.share_model_thread,
                                ["student"] if self._remote else ["student", "teacher"])
        #: threads the local models run on (1 when they share one)
        self.model_threads = len(set(threads.values()))
        self._student = ModelRunner(joint.route, "student", threads["student"])
        self._teacher = (
            teacher
            if teacher is not None
            else ModelRunner(lambda rows, count=True: joint.task.host(
                joint.run_teacher(rows, rows, count=count)), "teacher", threads["teacher"])
        )
        self.control: LoadAwareThreshold | None = None
        if settings.load_mode is not None:
            if settings.load_budget is None:
                raise InputError(f"load_mode {settings.load_mode!r} needs load_budget")
            self.control = LoadAwareThreshold(
                settings.load_mode, settings.load_budget, settings.load_min_threshold
            )
        self.student_batcher = Batcher(
            "student",
            self._run_student,
            max_batch=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_rows=settings.max_queue_rows,
            # one student batch at a time: the next one forms from every row that queued
            # while it ran (under load, full batches); up to 8 wait for the teacher
            max_in_flight=8,
            max_running=1,
            on_batch=lambda n: metrics.batch_rows.labels("student").observe(n),
            finish=self._finish_student,
        )
        self.teacher_batcher = Batcher(
            "teacher",
            self._run_teacher,
            max_batch=settings.teacher_max_batch_size,
            max_wait_s=settings.teacher_max_wait_ms / 1000,
            max_queue_rows=settings.teacher_max_queue_rows,
            max_in_flight=getattr(self._teacher, "max_in_flight", 1),
            on_batch=lambda n: metrics.batch_rows.labels("teacher").observe(n),
        )
        self.shadow: ShadowTraffic | None = None
        self.shadow_batcher: Batcher | None = None
        self.feedback: Any = None  # where labels that arrive later go (with a monitor)
        if settings.shadow_rate > 0:
            # shadows queue apart, so they never take a routed row's place in the teacher's
            # queue; they go only while the teacher's is under half full (shed first)
            self.shadow_batcher = Batcher(  # shadow calls answer no row: not teacher calls
                "shadow", lambda blocks: self._run_teacher(blocks, count=False),
                max_batch=settings.teacher_max_batch_size,
                max_wait_s=settings.teacher_max_wait_ms / 1000,
                max_queue_rows=settings.teacher_max_queue_rows,
                on_batch=lambda n: metrics.batch_rows.labels("shadow").observe(n))
            shadows = self.shadow_batcher
            limit = settings.teacher_max_queue_rows // 2
            bundle = getattr(joint, "bundle", None)
            sink = guarantee or LocalGuarantee(
                live_guarantee(settings, bundle, joint.threshold), lambda: joint.threshold,
                self._serve_threshold, metrics)
            self.shadow = ShadowTraffic(
                shadow_plan(settings, bundle), metrics, shadows.submit,
                lambda k: self.teacher_batcher.queued_rows + shadows.queued_rows + k <= limit,
                sink)
            if guarantee is None:  # labels for this process's answers (Ray sets its own)
                self.feedback = LocalFeedback(sink)
        self._last_effective = joint.threshold
        metrics.threshold.labels("set").set(joint.threshold)
        metrics.threshold.labels("effective").set(joint.threshold)

    async def start(self) -> None:
        self.student_batcher.start()
        self.teacher_batcher.start()
        if self.shadow_batcher is not None:
            self.shadow_batcher.start()

    # ------------------------------------------------------------ threshold
    def next_threshold(self) -> float:
        """The threshold for the next student batch (steps the load control once)."""
        t = self.joint.threshold
        if self.control is not None:
            t = self.control.effective(t, self.teacher_batcher.queued_rows)
            self.metrics.allowed_share.set(self.control.allowed_share)
        self._last_effective = t
        self.metrics.threshold.labels("set").set(self.joint.threshold)
        self.metrics.threshold.labels("effective").set(t)
        return t

    @property
    def effective_threshold(self) -> float:
        """The threshold in use, for reading: the live one, or the load control's last value."""
        if self.control is None:
            return self.joint.threshold
        return self._last_effective

    # ------------------------------------------------------------ serving
    def check_room(self) -> None:
        """Raise Overloaded if the student queue is full, before a request body is read."""
        self.student_batcher.check_room()

    @property
    def front(self) -> Batcher:
        """The batcher every request enters (its statistics are the model's)."""
        return self.student_batcher

    async def queue_rows(self) -> dict[str, int]:
        return {
            "student": self.student_batcher.queued_rows,
            "teacher": self.teacher_batcher.queued_rows,
        }

    # ------------------------------------------------------------ what the HTTP layer asks
    # (async, so that an engine whose threshold lives elsewhere, e.g. ebjr.ray's
    # shared control, answers through the same interface)
    @property
    def router(self) -> Any:
        return self.joint.router

    @property
    def task(self) -> Any:
        return self.joint.task

    async def threshold(self) -> float:
        """The live threshold (the one a PUT sets)."""
        return self.joint.threshold

    async def set_threshold(self, threshold: float) -> float:
        """Set the live threshold for every later batch; returns the old one."""
        return self._serve_threshold(threshold)

    def _serve_threshold(self, threshold: float) -> float:
        old = self.joint.set_threshold(threshold)
        self.metrics.threshold.labels("set").set(threshold)
        return old

    async def threshold_info(self) -> dict[str, Any]:
        """The live and the effective threshold, and the load control's state."""
        c = self.control
        return {
            "threshold": self.joint.threshold,
            "effective_threshold": self.effective_threshold,
            "load_control": None if c is None else load_control_state(c),
        }

    async def counts(self) -> dict[str, int]:
        return self.joint.counts()

    async def infer(self, x: np.ndarray) -> JointAnswer:
        """The joint answer for ``x``.

        Raises:
            Overloaded: the student queue is full or closed.
            TeacherUnavailable: rows went to a failed teacher under policy ``error``.
        """
        result = await self.student_batcher.submit(x)
        if isinstance(result, Exception):
            raise result
        return result

    async def _run_teacher(self, blocks: list[np.ndarray], count: bool = True
                           ) -> list[np.ndarray]:
        """The teacher on ``blocks``; counted in ``teacher_calls`` unless ``count`` is False
        (shadow calls: the monitor's, not an answer's)."""
        rows = np.concatenate(blocks)
        if self._remote:
            logits = await self._teacher(rows)
            if count:
                self.joint.count_teacher_call()
        else:
            logits = await self._teacher(rows, count)
        return [logits[a:b] for a, b in split_rows(blocks)]

    async def _ask_teacher(
        self, rows: np.ndarray
    ) -> tuple[np.ndarray | None, TeacherUnavailable | None]:
        return await ask_stage(self.teacher_batcher, rows, "teacher", self.metrics)

    async def _run_student(self, blocks: list[np.ndarray]) -> Any:
        """The student on a batch (the batch's slot): what :meth:`_finish_student` needs."""
        batch = np.concatenate(blocks)
        routed = await self._student(batch, self.next_threshold())
        return batch, [len(b) for b in blocks], routed

    async def _finish_student(self, out: Any) -> list[Any]:
        """The rest of a routed batch, off the student's slot: the teacher, merge, split."""
        batch, sizes, routed = out
        if self.control is not None:
            self.control.observe(to_numpy(routed.scores))
        self.metrics.observe_routing(len(batch), routed.k)
        shadow = self.shadow
        observe = None if shadow is None else (
            lambda mask, predictions, failed: shadow.observe(
                batch, ~mask, np.asarray(to_numpy(self.joint.student_classes(routed))),
                predictions, routed.scores, self.joint.threshold, failed))
        return await finish_batch(self.joint, batch, sizes, routed, self._ask_teacher,
                                  self.settings.fallback, observe)

    async def close(self) -> None:
        """Finish every queued request (student first, its teacher calls after), then stop."""
        await self.student_batcher.close()
        if self.shadow is not None and self.shadow_batcher is not None:
            await self.shadow_batcher.close()  # the shadows queued are answered first
            await self.shadow.close()
        await self.teacher_batcher.close()
        await self._student.close()
        await self._teacher.close()
        for adapter in (self.joint.student, self.joint.teacher):
            close = getattr(adapter, "close", None)  # e.g. a remote model's connection pool
            if callable(close):
                close()
