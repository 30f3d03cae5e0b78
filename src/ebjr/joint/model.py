"""The live joint model: student on every row, teacher on the routed rows only.

>>> import numpy as np
>>> student = lambda x: np.asarray(x) * 1.0            # logits = inputs, for the example
>>> teacher = lambda x: np.asarray(x)[:, ::-1] * 10.0  # a teacher that disagrees
>>> joint = JointModel(student, teacher, "energy", threshold=3.0)
>>> out = joint.predict(np.array([[5.0, 0.0], [0.2, 0.1]]))
>>> out.answered_by.tolist(), out.predictions.tolist()
(['student', 'teacher'], [0, 1])
>>> joint.counts()["teacher_rows"]
1
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, to_numpy
from ebjr._utils.validation import check_int
from ebjr.adapters.base import Adapter, as_adapter, batch_size
from ebjr.exceptions import InputError
from ebjr.joint.counts import RoutingCounts
from ebjr.joint.functional import (
    RoutedBatch,
    concat_rows,
    route_rows,
    take_rows,
)
from ebjr.joint.knob import LiveThreshold
from ebjr.routing import Router, check_threshold
from ebjr.tasks import Classification, TaskKind, get_task

__all__ = ["JointModel", "JointPrediction"]


@dataclass(frozen=True)
class JointPrediction:
    """The joint model's answer for one batch.

    Attributes:
        predictions: the answer per row, shape ``(n,)``: a class in the teacher's
            label space; a regressor's prediction.
        probabilities: the answering model's softmax probabilities in the
            teacher's label space, shape ``(n, C_teacher)``; ``None`` for a task
            without classes (regression).
        to_teacher: boolean mask, ``True`` where the teacher answered.
        scores: the router's score per row (higher = student fit).
        threshold: the one threshold this whole batch was routed with.
        timings: seconds spent per stage (``student``, ``route``, ``teacher``,
            ``merge``) when the model was built with ``profile=True``.
    """

    predictions: Array
    probabilities: Array | None
    to_teacher: Array
    scores: Array
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def answered_by(self) -> np.ndarray:
        """Who answered each row, ``"student"`` or ``"teacher"`` (the same labels as the
        server's ``answered_by`` output); ``to_teacher`` is the same as a mask."""
        return np.where(to_numpy(self.to_teacher), "teacher", "student")


class JointModel(LiveThreshold):
    """Student first; rows whose score is below the threshold go to the teacher.

    Args:
        student, teacher: models (anything :func:`~ebjr.adapters.as_adapter`
            accepts: torch modules, ONNX files, scikit-learn classifiers,
            transformers models, callables). ``teacher=None`` makes a student
            side: :meth:`route` and :meth:`merge` work, the teacher's logits
            come from elsewhere (e.g. a Ray Serve deployment, :mod:`ebjr.ray`).
        router: router name or instance (scores the student's logits).
        threshold: the student answers iff ``score >= threshold``. A live
            knob: :meth:`set_threshold` is thread-safe; every batch is routed
            with the one threshold read when it starts.
        class_map: for a student whose classes are a subset of the teacher's,
            ``class_map[j]`` is the teacher class of student class ``j``
            (``-1`` for a student class with no teacher class, e.g. ``other``).
        task: the task kind (:mod:`ebjr.tasks`): ``"classification"`` (the
            default), ``"regression"`` or an instance (e.g.
            ``Regression(columns=["prediction", "std"])``); it says what the models'
            outputs are, which routers score them and what an answer is.
        max_teacher_batch: largest sub-batch sent to the teacher at once.
        validate: check the models' outputs (shape, NaN/inf) on every batch, at the
            adapters' boundary; whether the student's rows are log-probabilities
            (on which the energy cannot route) is checked once, on the first batch
            of two rows or more.
        profile: record per-stage timings in each prediction.

    The teacher sees only the routed rows, as one sub-batch (chunked by
    ``max_teacher_batch``) on the batch's device, and is not called at all
    when no row is routed.
    """

    def __init__(
        self,
        student: Any,
        teacher: Any,
        router: str | Router = "energy",
        threshold: float = 0.0,
        class_map: Any = None,
        *,
        task: str | TaskKind | None = None,
        max_teacher_batch: int | None = None,
        validate: bool = True,
        profile: bool = False,
    ) -> None:
        self.student: Adapter = as_adapter(student)
        self.teacher: Adapter | None = None if teacher is None else as_adapter(teacher)
        if class_map is not None:
            if task is not None and not isinstance(get_task(task), Classification):
                raise InputError("class_map applies to classification, not to a "
                                 f"{get_task(task).name} task")
            task = Classification(class_map)
        self.task: TaskKind = get_task(task)
        self.router: Router = self.task.get_router(router)
        self.task.check_router(self.router)
        if getattr(self.router, "requires_fit", False) and not getattr(
            self.router, "is_fitted", False
        ):
            raise InputError("an 'auto' router must be fitted before it is used in a JointModel")
        LiveThreshold.__init__(self, threshold)
        if max_teacher_batch is not None:
            check_int(max_teacher_batch, "max_teacher_batch", 1)
        self.max_teacher_batch = max_teacher_batch
        self.validate = validate
        self.profile = profile
        self._raw_logits_checked = False
        self._counts = RoutingCounts()

    @property
    def class_map(self) -> np.ndarray | None:
        """A specialized student's class map (``None``: one label space, or not a
        classification)."""
        return getattr(self.task, "class_map", None)

    def counts(self) -> dict[str, int]:
        """Rows and calls so far: ``batches``, ``rows``, ``student_rows``, ``teacher_rows``,
        ``teacher_calls``, ``fallback_rows`` (routed rows the student answered because
        the teacher could not)."""
        with self._lock:
            return self._counts.as_dict()

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.reset()

    # ------------------------------------------------------------ prediction
    def route(self, batch: Any, threshold: float | None = None) -> RoutedBatch:
        """The student stage of one batch: forward, scores and the routing mask.

        The threshold is read once (``threshold`` overrides the live knob for
        this batch, e.g. a server's load-aware value). Finish the batch with
        :meth:`merge` once the teacher has answered the ``routed`` rows.
        """
        n = batch_size(batch)
        if n == 0:
            raise InputError("the batch is empty: expected at least one input")
        if threshold is None:
            threshold = self._threshold  # one read: the whole batch uses this value
        else:
            threshold = check_threshold(threshold)
        t0 = time.perf_counter()
        # the one check of the student's outputs: at the adapter's boundary
        s_logits = self.student.forward(batch)
        if self.validate:
            s_logits = self.task.check_output(s_logits, n, _who("student", self.student))
        xp = self.task.namespace(s_logits)
        t1 = time.perf_counter()
        if self.validate and not self._raw_logits_checked:  # once per model, not per batch
            self._raw_logits_checked = self.task.scores_kind != "logits" or \
                self.router.check_raw_logits(s_logits, log_probs=self.student.returns_log_probs)
        scores = self.task.score(self.router, s_logits)
        to_teacher, routed = route_rows(xp, scores, threshold)
        t2 = time.perf_counter()
        return RoutedBatch(
            batch,
            n,
            threshold,
            xp,
            s_logits,
            scores,
            to_teacher,
            routed,
            int(routed.shape[0]),
            {"student": t1 - t0, "route": t2 - t1},
        )

    def merge(
        self, p: RoutedBatch, t_logits: Array | None, teacher_s: float = 0.0
    ) -> JointPrediction:
        """Merge the teacher's logits for ``p``'s routed rows into the student's answers; count.

        ``t_logits`` is ``None`` when no row was routed, or when the teacher
        could not answer (a server's fallback): the student then answers every
        row, and the routed rows are counted as ``fallback_rows``.
        """
        t3 = time.perf_counter()
        if t_logits is not None:
            t_logits = self.task.into(t_logits, p.xp, p.s_logits)
        answer = self.task.merge(p.xp, p.s_logits, p.routed, t_logits)
        pred, probs = answer.predictions, answer.probabilities
        timings = {}
        if self.profile:
            timings = {**p.timings, "teacher": teacher_s, "merge": time.perf_counter() - t3}
        with self._lock:
            self._counts.answered(p.n, p.k, fell_back=t_logits is None)
        return JointPrediction(pred, probs, p.to_teacher, p.scores, p.threshold, timings)

    def predict(self, batch: Any) -> JointPrediction:
        """Run the joint model on a batch (array, tensor, list of inputs, or dict of tensors)."""
        p = self.route(batch)
        start = time.perf_counter()
        t_logits = None
        if p.k:
            t_logits = self._run_teacher(take_rows(batch, p.routed), p.xp, p.s_logits)
        return self.merge(p, t_logits, time.perf_counter() - start)

    def predict_stream(
        self, batches: Iterable[Any], teacher_batch_size: int = 256
    ) -> Iterator[JointPrediction]:
        """Predict a stream of batches, pooling routed rows into large teacher batches.

        The student runs on each batch as it arrives (each batch reads the
        threshold once, as in :meth:`predict`). Routed rows wait until at least
        ``teacher_batch_size`` of them are pending, or the stream ends; the
        teacher then runs once on all of them, and the waiting batches' results
        are yielded, in input order. With small batches and a deep teacher this
        avoids paying the teacher's per-call cost for a handful of rows. For
        offline scoring of a dataset; a server uses dynamic batching instead.

        Args:
            batches: any iterable of batches (arrays, tensors, lists or dicts).
            teacher_batch_size: pending routed rows that trigger a teacher call.
        """
        check_int(teacher_batch_size, "teacher_batch_size", 1)
        pending: list[RoutedBatch] = []
        waiting = 0
        for batch in batches:
            p = self.route(batch)
            pending.append(p)
            waiting += p.k
            if waiting >= teacher_batch_size:
                yield from self._flush(pending)
                pending, waiting = [], 0
        yield from self._flush(pending)

    def _flush(self, pending: list[RoutedBatch]) -> Iterator[JointPrediction]:
        routed = [p for p in pending if p.k]
        start = time.perf_counter()
        outputs: dict[int, Array] = {}
        if routed:
            rows = concat_rows([take_rows(p.batch, p.routed) for p in routed])
            t_all = self._run_teacher(rows, routed[0].xp, routed[0].s_logits)
            offset = 0
            for p in routed:
                outputs[id(p)] = self.task.into(t_all[offset : offset + p.k], p.xp, p.s_logits)
                offset += p.k
        total = sum(p.k for p in routed) or 1
        elapsed = time.perf_counter() - start
        for p in pending:
            yield self.merge(p, outputs.get(id(p)), elapsed * p.k / total)

    def student_classes(self, p: RoutedBatch) -> Array:
        """The student's class for every row of ``p`` in the teacher's label space (through
        ``class_map``; -1 where a class has none), without counting anything: what a
        monitor compares with the teacher's answers (classification only)."""
        if not isinstance(self.task, Classification):
            raise InputError(f"a {self.task.name} model has no classes to compare")
        return self.task.student_classes(p.xp, p.s_logits)

    def count_teacher_call(self) -> None:
        """Count one call of a teacher that runs elsewhere (a server's remote teacher), so
        ``counts()`` is right whoever calls the teacher."""
        with self._lock:
            self._counts.teacher_calls += 1

    def run_teacher(self, sub_batch: Any, like: Array, *, count: bool = True) -> Array:
        """The teacher's logits for ``sub_batch`` (chunked by ``max_teacher_batch``), as
        arrays of ``like``'s namespace and device; counted in ``teacher_calls`` unless
        ``count`` is False (a server's shadow calls, which answer no row)."""
        return self._run_teacher(sub_batch, self.task.namespace(like), like, count)

    def _run_teacher(self, sub_batch: Any, xp: Any, like: Array, count: bool = True) -> Array:
        if self.teacher is None:
            raise InputError(
                "this JointModel has no teacher (a student side that routes and merges, "
                "its teacher running elsewhere); give it one to predict"
            )
        k = batch_size(sub_batch)
        step = self.max_teacher_batch or k
        parts = []
        for start in range(0, k, step):
            chunk = (
                sub_batch
                if step >= k
                else take_rows(sub_batch, np.arange(start, min(start + step, k)))
            )
            out = self.teacher.forward(chunk)
            if self.validate:
                out = self.task.check_output(out, batch_size(chunk),
                                             _who("teacher", self.teacher))
            if count:
                with self._lock:
                    self._counts.teacher_calls += 1
            parts.append(self.task.into(out, xp, like))
        return self.task.concat(parts, xp)

    def __call__(self, batch: Any) -> JointPrediction:
        return self.predict(batch)

    def __repr__(self) -> str:
        return (
            f"JointModel(student={self.student!r}, teacher={self.teacher!r}, "
            f"router={self.router!r}, threshold={self._threshold!r}"
            + ("" if self.task == Classification() else f", task={self.task!r}") + ")"
        )


def _who(role: str, adapter: Adapter) -> str:
    """How messages name a model: its role and kind (``student (torch)``)."""
    return f"{role} ({adapter.kind})" if adapter.kind else role
