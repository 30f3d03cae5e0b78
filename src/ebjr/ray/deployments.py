"""The three deployments of the Ray Serve joint application, and its shared control.

- :class:`StudentReplica`: the bundle's student with ``@serve.batch`` dynamic
  batching (the batch size counts rows, not requests). Each batch asks the
  shared :class:`~ebjr.ray.control.RoutingControl` for the threshold, routes
  with :meth:`JointModel.route`, sends only the routed rows to the teacher
  deployment, and merges with :meth:`JointModel.merge`: the same split and
  merge as :class:`~ebjr.joint.JointModel` and ``ebjr serve``.
- :class:`ModelReplica`: the bundle's teacher (or, for an application of one
  model, that model), batched; it counts the rows it is given (``stats()``).
- :class:`Ingress`: the HTTP API of ``ebjr serve`` itself
  (:func:`ebjr.serve.app.create_app`). By default the student runs in it
  (:mod:`ebjr.ray.student_in_ingress`) and only routed rows reach the teacher
  deployment; with the student in a deployment of its own, its engine
  (:class:`RayJointEngine`) calls the student deployment.

When the teacher deployment fails (a crash, a dead replica, no answer within
the request timeout), the batch's routed rows get the settings' fallback, as
in ``ebjr serve``: the student's answer (``answered_by="student_fallback"``)
or a 503 for the requests that had routed rows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.metrics import Counter, Gauge, Histogram

from ebjr._utils.arrays import to_numpy
from ebjr.exceptions import ModelError, Overloaded, TeacherUnavailable
from ebjr.joint.step import JointAnswer, finish_batch, model_failure
from ebjr.ray.control import RoutingControl
from ebjr.serve.batcher import BatchStats
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.process import prepare_process, share_model_thread
from ebjr.serve.settings import ServeSettings

__all__ = ["Control", "Ingress", "ModelReplica", "RayJointEngine", "RayModelEngine",
           "StudentReplica"]

log = logging.getLogger("ebjr.ray")

_BATCH_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]


def _rows(items: list[np.ndarray]) -> int:
    """``@serve.batch``'s batch size: rows, not requests."""
    return sum(int(x.shape[0]) for x in items)


def _chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, int(x.shape[0]), size)] or [x]


def _batching(method: Any, rows: int, wait_ms: float) -> None:
    """Set a ``@serve.batch`` method's batch size (rows) and wait from the settings."""
    method.set_max_batch_size(rows)
    method.set_batch_wait_timeout_s(wait_ms / 1000)


def _in_replica(settings: ServeSettings) -> ServeSettings:
    """``settings`` as this replica applies them, once set up: torch's intra-op threads
    (``torch_threads``, or the CPUs Ray reserved for it, at least one, so that replicas on
    one node do not oversubscribe its cores), the allocator, and whether its models share
    a thread (from the CPUs Ray reserved, not the node's cores the process could run on)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    n = settings.torch_threads or max(1, round(cpus))
    prepare_process(n, settings.reuse_freed_memory)
    share = share_model_thread(settings.share_model_thread, cpus)
    return settings.model_copy(update={"torch_threads": n, "share_model_thread": share})


class _Metrics:
    """ebjr's metrics through Ray's metrics (exported by Ray's Prometheus endpoint;
    Ray adds the deployment, replica and application tags)."""

    def __init__(self) -> None:
        self.rows = Counter(
            "ebjr_rows", description="Rows by the model that answered them",
            tag_keys=("answered_by",),
        )
        self.batch_rows = Histogram(
            "ebjr_batch_rows", description="Rows per model call",
            boundaries=_BATCH_BUCKETS, tag_keys=("stage",),
        )
        self.teacher_errors = Counter(
            "ebjr_teacher_errors", description="Teacher failures", tag_keys=("kind",)
        )
        self.threshold = Gauge(
            "ebjr_threshold", description="Routing threshold", tag_keys=("kind",)
        )
        self.teacher_queue = Gauge(
            "ebjr_teacher_queue_rows",
            description="Rows routed to the teacher, not yet answered (whole application)",
        )
        self.guarantee_drop_upper: Gauge | None = None
        self.guarantee_alarm: Gauge | None = None

    def set_threshold(self, kind: str, value: float) -> None:
        if np.isfinite(value):
            self.threshold.set(float(value), tags={"kind": kind})

    def set_teacher_queue(self, rows: int) -> None:
        self.teacher_queue.set(rows)

    def set_guarantee(self, drop_upper: float, alarm: bool) -> None:
        if self.guarantee_drop_upper is None:  # made on first use: only with shadow_rate
            self.guarantee_drop_upper = Gauge(
                "ebjr_guarantee_drop_upper", description="Upper confidence bound of the "
                "disagreement with the teacher (valid at every time)")
            self.guarantee_alarm = Gauge(
                "ebjr_guarantee_alarm", description="1 once the monitor found the "
                "disagreement above eps")
        self.guarantee_drop_upper.set(float(drop_upper))
        self.guarantee_alarm.set(1.0 if alarm else 0.0)  # type: ignore[union-attr]


class Control(RoutingControl):
    """:class:`RoutingControl` as a deployment: its values recorded in Ray's metrics."""

    def __init__(self, settings: ServeSettings, threshold: float) -> None:
        guarantee = None
        if settings.shadow_rate > 0:  # every ingress replica's shadows feed this one
            from ebjr.bundle import read_bundle
            from ebjr.serve.shadow import live_guarantee

            guarantee = live_guarantee(settings, read_bundle(settings.bundle), threshold)
        super().__init__(
            threshold,
            settings.load_mode,
            settings.load_budget,
            settings.load_min_threshold,
            metrics=_Metrics(),
            guarantee=guarantee,
        )


class ModelReplica:
    """One model of the bundle (``role``: the teacher of a joint application, or a model
    served alone) behind ``@serve.batch``; it counts every row it is given."""

    def __init__(self, settings: ServeSettings, role: str = "teacher") -> None:
        from ebjr.bundle import persist

        settings = _in_replica(settings)
        self.role = role
        self.model, bundle = persist.load_model(
            settings.bundle, role, allow_factories=settings.allow_factories,
            allow_torchscript=settings.allow_torchscript,
        )
        self.task = bundle.make_task()  # what the model's output must be
        joint_teacher = settings.role == "joint"
        self.max_batch = settings.teacher_max_batch_size if joint_teacher \
            else settings.max_batch_size
        wait = settings.teacher_max_wait_ms if joint_teacher else settings.max_wait_ms
        _batching(self.infer_batch, self.max_batch, wait)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"ebjr-{role}")
        self._metrics = _Metrics()
        self.rows_seen = 0
        self.calls = 0

    def _forward(self, rows: np.ndarray) -> np.ndarray:
        try:
            logits = self.task.host(self.task.check_output(self.model.forward(rows), len(rows),
                                                           self.role))
        except Exception as exc:
            raise model_failure(self.role, rows, exc) from exc
        if isinstance(logits, np.ndarray) and not np.isfinite(logits).all():
            raise ModelError(
                f"the {self.role} model emitted NaN or infinity on a batch of {len(rows)} rows",
                self.role,
            )
        return logits

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=_rows)
    async def infer_batch(self, blocks: list[np.ndarray]) -> list[Any]:
        batch = np.concatenate(blocks)
        self.rows_seen += len(batch)
        self.calls += 1
        self._metrics.batch_rows.observe(len(batch), tags={"stage": self.role})
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        logits = await loop.run_in_executor(self._pool, self._forward, batch)
        info = (f"{id(self)}:{self.calls}", len(batch), time.perf_counter() - t0)
        out, start = [], 0
        for b in blocks:
            out.append((logits[start : start + len(b)], info))
            start += len(b)
        return out

    async def infer_with_info(self, rows: np.ndarray) -> Any:
        """The logits for ``rows`` (at most one batch) and its batch's (id, rows, seconds)."""
        return await self.infer_batch(rows)

    async def infer(self, rows: np.ndarray) -> np.ndarray:
        """The model's logits for ``rows`` (any number: split to fit the batch size)."""
        parts = [p for p, _ in await asyncio.gather(
            *(self.infer_batch(c) for c in _chunks(rows, self.max_batch)))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def stats(self) -> dict[str, Any]:
        """This replica's counts (rows given to the model, model calls), process and node."""
        return {"rows": self.rows_seen, "calls": self.calls, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id()}


class StudentReplica:
    """The student side of the joint model: route a batch, teacher for the routed rows, merge."""

    def __init__(self, settings: ServeSettings, teacher: Any, control: Any) -> None:
        from ebjr.bundle import persist

        self.settings = settings = _in_replica(settings)
        self.joint = persist.load(
            settings.bundle, allow_factories=settings.allow_factories,
            allow_torchscript=settings.allow_torchscript, student_side=True
        )
        self.teacher = teacher
        # the one mapping of the teacher deployment's failures (also the ingress's teacher)
        from ebjr.ray.student_in_ingress import TeacherDeployment

        self._teacher_call = TeacherDeployment(teacher, settings.teacher_timeout_s)
        self.control = control
        _batching(self.infer, settings.max_batch_size, settings.max_wait_ms)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ebjr-student")
        self._ids = itertools.count()
        self._metrics = _Metrics()
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._batches = 0
        self._last_threshold: float | None = None

    def _route(self, batch: np.ndarray, threshold: float) -> Any:
        try:
            return self.joint.route(batch, threshold)
        except Exception as exc:
            raise model_failure("student", batch, exc) from exc

    async def _ask_teacher(self, rows: np.ndarray) -> tuple[Any, TeacherUnavailable | None]:
        try:
            return await self._teacher_call(rows), None
        except TeacherUnavailable as err:
            self._metrics.teacher_errors.inc(tags={"kind": err.kind})
            return None, err

    @serve.batch(
        max_batch_size=64, batch_wait_timeout_s=0.002, max_concurrent_batches=8,
        batch_size_fn=_rows,
    )
    async def infer(self, blocks: list[np.ndarray]) -> list[Any]:
        t_start = time.perf_counter()
        batch = np.concatenate(blocks)
        n = len(batch)
        self._metrics.batch_rows.observe(n, tags={"stage": "student"})
        threshold = await self.control.begin_batch.remote()
        self._batches += 1
        self._last_threshold = threshold
        loop = asyncio.get_running_loop()
        routed = await loop.run_in_executor(self._pool, self._route, batch, threshold)
        load_aware = self.settings.load_mode is not None
        self.control.routed.remote(n, routed.k, to_numpy(routed.scores) if load_aware else None)
        teacher_answered = False

        async def ask_teacher(rows: np.ndarray) -> tuple[Any, TeacherUnavailable | None]:
            nonlocal teacher_answered
            t_logits, failure = await self._ask_teacher(rows)
            teacher_answered = t_logits is not None
            return t_logits, failure

        try:
            answers = await finish_batch(self.joint, batch, [len(b) for b in blocks], routed,
                                         ask_teacher, self.settings.fallback)
        finally:  # the routed rows leave the application's teacher queue, answered or not
            self.control.finished.remote(n, routed.k, routed.k > 0 and not teacher_answered)
        for answer in answers:
            for who, c in (answer.counts() if isinstance(answer, JointAnswer) else {}).items():
                self._metrics.rows.inc(c, tags={"answered_by": who})
        info = (f"{self._replica}:{next(self._ids)}", n, time.perf_counter() - t_start)
        out: list[Any] = []
        for answer in answers:
            if isinstance(answer, TeacherUnavailable):
                out.append(("error", str(answer), answer.kind, info))
                continue
            out.append(("ok", answer, threshold, info))
        return out

    def stats(self) -> dict[str, Any]:
        """This replica's id, process, node, batches so far and its last batch's threshold."""
        return {"replica": self._replica, "pid": os.getpid(), "batches": self._batches,
                "last_threshold": self._last_threshold,
                "node": ray.get_runtime_context().get_node_id()}


class _FrontStats:
    """Triton's statistics for the ingress: its requests and the student batches they ran in."""

    def __init__(self) -> None:
        self.stats = BatchStats()
        self._seen: OrderedDict[str, None] = OrderedDict()

    def record(self, info: tuple[str, int, float], waited_s: float) -> None:
        batch_id, rows, compute_s = info
        st, ns = self.stats, int(1e9 * compute_s)
        st.requests += 1
        st.queue_ns += int(1e9 * max(0.0, waited_s - compute_s))
        st.compute_ns += ns
        if batch_id not in self._seen:  # a batch counts once, however many requests it held
            self._seen[batch_id] = None
            if len(self._seen) > 4096:
                self._seen.popitem(last=False)
            st.executions += 1
            entry = st.batches.setdefault(rows, [0, 0])
            entry[0] += 1
            entry[1] += ns


class _RayEngine:
    """What both Ray engines share: the front statistics, and calls to a deployment with
    Ray's failures mapped to ebjr's errors (a full queue -> Overloaded, 429; a dead or
    broken replica -> ModelError, 502), a request split in chunks of a batch at most."""

    kind = ""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._front = _FrontStats()

    @property
    def front(self) -> _FrontStats:
        return self._front

    async def start(self) -> None:
        pass

    def check_room(self) -> None:
        pass  # admission control is the deployment's max_queued_requests (-> 429)

    async def _call(self, method: Any, rows: np.ndarray, what: str) -> Any:
        """``method.remote(rows)``; its answer ends with the batch's info (recorded)."""
        t0 = time.perf_counter()
        try:
            answer = await method.remote(rows)
        except BackPressureError as exc:
            raise Overloaded(f"the {what} deployment is at its queue limit: {exc}") from None
        except ModelError:
            raise
        except (RayError, RayServeException) as exc:  # e.g. its replica died under the request
            raise ModelError(
                f"the {what} deployment failed: {type(exc).__name__}: {str(exc)[:300]}", what
            ) from None
        self._front.record(answer[-1], time.perf_counter() - t0)
        return answer

    async def _chunked(self, x: np.ndarray, one: Any) -> list[Any]:
        return await asyncio.gather(*(one(c) for c in _chunks(x, self.settings.max_batch_size)))

    async def close(self) -> None:
        pass


class RayJointEngine(_RayEngine):
    """The engine of ``ebjr serve``'s HTTP layer (:class:`ebjr.serve.engine.Engine`),
    over the student deployment and the shared control."""

    kind = "joint"

    def __init__(
        self, settings: ServeSettings, router: Any, student: Any, control: Any,
        metrics: ServeMetrics, task: Any = None,
    ) -> None:
        from ebjr.tasks import get_task

        super().__init__(settings)
        self.router = router
        self.task = get_task(task)
        self.student = student
        self.control = control
        self.metrics = metrics

    async def _one(self, rows: np.ndarray) -> JointAnswer:
        status, payload, extra, _ = await self._call(self.student.infer, rows, "student")
        if status == "error":  # routed rows, a failed teacher, fallback policy 'error'
            raise TeacherUnavailable(payload, extra)
        return payload

    async def infer(self, x: np.ndarray) -> JointAnswer:
        parts = await self._chunked(x, self._one)
        if len(parts) == 1:
            answer = parts[0]
        else:
            answer = JointAnswer(
                self.task.concat([p.predictions for p in parts], np),
                None if parts[0].probabilities is None
                else np.concatenate([p.probabilities for p in parts]),
                np.concatenate([p.scores for p in parts]),
                np.concatenate([p.answered_by for p in parts]),
                parts[0].threshold,
                any(p.degraded for p in parts),
            )
        self.metrics.observe_routing(len(x), int((answer.answered_by != "student").sum()))
        return answer

    async def queue_rows(self) -> dict[str, int]:
        return await self.control.queue_rows.remote()

    async def threshold(self) -> float:
        return await self.control.get_threshold.remote()

    async def set_threshold(self, threshold: float) -> float:
        old = await self.control.publish_threshold.remote(threshold)
        self.metrics.threshold.labels("set").set(threshold)
        return old

    async def threshold_info(self) -> dict[str, Any]:
        return await self.control.threshold_info.remote()

    async def counts(self) -> dict[str, int]:
        return await self.control.counts.remote()


class RayModelEngine(_RayEngine):
    """The engine of ``ebjr serve --role student|teacher``'s HTTP layer over a model deployment."""

    kind = "model"

    def __init__(self, settings: ServeSettings, model: Any) -> None:
        super().__init__(settings)
        self.model = model

    async def _one(self, rows: np.ndarray) -> np.ndarray:
        logits, _ = await self._call(self.model.infer_with_info, rows, self.settings.role)
        return logits

    async def infer(self, x: np.ndarray) -> np.ndarray:
        parts = await self._chunked(x, self._one)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def queue_rows(self) -> dict[str, int]:
        return {}


class Ingress:
    """The HTTP API of ``ebjr serve`` (one implementation), over the deployments.

    ``model`` is the first stage's deployment (the student of a joint model, or the one
    model served alone); ``None`` runs that stage here, in this replica, with ``ebjr
    serve``'s own engine: a joint model's routed rows then go to ``teacher`` (the teacher
    deployment; of a cascade, a dict of each later stage's deployment by stage name), and
    its threshold comes from ``control``. ``teacher`` ``None`` (of a cascade, an empty
    dict) runs every model here.
    """

    def __init__(self, settings: ServeSettings, model: Any = None, control: Any = None,
                 teacher: Any = None) -> None:
        self.settings = settings
        self.model = model
        self.control = control
        self.teacher = teacher
        if model is None:  # the first stage runs here
            self.settings = _in_replica(settings)

    def _load(self, state: Any) -> None:
        from ebjr.bundle import read_bundle

        s = self.settings
        if self.model is None:
            self._load_here(state)
        elif s.role == "joint":
            state.bundle = read_bundle(s.bundle)
            state.engine = RayJointEngine(
                s, state.bundle.make_router(), self.model, self.control, state.metrics,
                state.bundle.make_task(),
            )
        else:
            state.bundle = read_bundle(s.bundle)
            state.engine = RayModelEngine(s, self.model)

    def _load_here(self, state: Any) -> None:
        """The first stage in this replica (as ``ebjr serve`` runs it)."""
        from ebjr.bundle import persist
        from ebjr.bundle.cascade import CascadeRecord
        from ebjr.joint.cascade_model import CascadeModel
        from ebjr.ray.student_in_ingress import IngressCascadeEngine, IngressJointEngine
        from ebjr.serve.app import install, load_models

        s = self.settings
        if s.role != "joint":
            install(state, load_models(s))
            return
        record = persist.read_record(s.bundle)
        everything_here = self.teacher is None or self.teacher == {}
        if isinstance(record, CascadeRecord) and isinstance(self.teacher, dict) \
                and record.cascade.stages[0] in self.teacher:  # every stage a deployment
            joint = persist.load_routing(s.bundle)
        else:
            joint = persist.load(s.bundle, student_side=not everything_here,
                                 allow_factories=s.allow_factories,
                                 allow_torchscript=s.allow_torchscript)
        state.bundle = joint.bundle  # type: ignore[attr-defined]
        replica = serve.get_replica_context().replica_id.unique_id
        engine: Any
        if isinstance(joint, CascadeModel):  # ``teacher``: each later stage's deployment
            engine = IngressCascadeEngine(joint, s, state.metrics, dict(self.teacher or {}),
                                          self.control, replica)
        else:
            engine = IngressJointEngine(joint, s, state.metrics, self.teacher, self.control,
                                        replica)
        self._engine = engine  # its start() takes the application's threshold
        state.engine = engine

    def stats(self) -> dict[str, Any]:
        """This replica's id, process and node; with the student here, its batches so far,
        its threshold, the threshold version it applied and the threads its models run on."""
        out: dict[str, Any] = {"replica": serve.get_replica_context().replica_id.unique_id,
                               "pid": os.getpid(),
                               "node": ray.get_runtime_context().get_node_id()}
        engine = getattr(self, "_engine", None)
        if engine is not None:
            joint = getattr(engine, "joint", None)
            model = engine.model if joint is None else joint
            out.update(batches=model.counts()["batches"], version=engine.version,
                       threshold=list(model.thresholds) if joint is None else joint.threshold,
                       model_threads=engine.model_threads)
        return out

    def __serve_build_asgi_app__(self) -> Any:
        from ebjr.serve.app import create_app

        return create_app(self.settings, load=self._load)
