"""What a task kind is: the one place that says what a model's output and a joint answer
are for classification, regression, ...

A joint model, a server and a batch prediction do the same thing whatever the
task: score the student's output with a router, send the rows below the
threshold to the teacher, put the teacher's answers in their place, and ship
the answers. What differs per task is

- what one model's output is (:meth:`TaskKind.check_output`: logits, or a
  regressor's prediction and its spread, ...);
- which routers score it (``scores_kind``, the tag of the router registry) and
  how a router reads it (:meth:`TaskKind.score`);
- what a model's answer is and how the teacher's replaces the student's
  (:meth:`TaskKind.answer`, :meth:`TaskKind.merge`);
- what quality means (:meth:`TaskKind.quality`: right or wrong, a negated loss);
- how an answer travels over the Open Inference Protocol and into a parquet
  file (:meth:`TaskKind.output_specs`, :meth:`TaskKind.tensors`,
  :meth:`TaskKind.columns_for`).

Each kind is a small class registered in :data:`TASKS`; a bundle records the
kind (:meth:`TaskKind.to_spec`) and :func:`task_from_spec` rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ebjr._utils.arrays import Array, namespace, to_numpy
from ebjr._utils.registry import Registry
from ebjr.exceptions import InputError

__all__ = ["TASKS", "Answer", "TaskKind", "get_task", "task_from_spec"]


@dataclass(frozen=True)
class Answer:
    """One model's (or the joint model's) answer for a batch.

    Attributes:
        predictions: the answer per row (a class, a value), shape ``(n,)``.
        probabilities: the answering model's class probabilities ``(n, C)``, or
            ``None`` for a task that has none (regression).
    """

    predictions: Array
    probabilities: Array | None = None


class TaskKind:
    """A task kind (subclasses: :class:`~ebjr.tasks.classification.Classification`,
    :class:`~ebjr.tasks.regression.Regression`)."""

    name: ClassVar[str] = ""
    #: what this task's routers score (the router registry's tag)
    scores_kind: ClassVar[str] = ""

    # ------------------------------------------------------------ outputs
    def check_output(self, out: Any, n: int, who: str) -> Array:
        """``out``, one model's output for a batch of ``n`` rows, checked (and in the form
        the task works on); ``who`` names the model in messages.

        Raises:
            InputError: wrong shape, dtype, row count, or a NaN/infinite value.
        """
        raise NotImplementedError

    def get_router(self, router: Any) -> Any:
        """The router ``router`` names for this task (an instance is returned as it is)."""
        from ebjr.routing import get_router

        return get_router(router)

    def check_router(self, router: Any) -> None:
        """Refuse a router that does not score this task's outputs."""
        if router.scores_kind != self.scores_kind:
            raise InputError(
                f"the {router.name!r} router scores {router.scores_kind}; a {self.name} is "
                f"routed by one of {_routers_for(self.scores_kind)}")

    def score(self, router: Any, out: Array) -> Array:
        """The router's score per row of the student's (checked) output."""
        return router.score(out, validate=False)

    def namespace(self, out: Any) -> Any:
        """The array namespace a batch's routing and merging run in (the output's)."""
        return namespace(out)

    def into(self, t_out: Any, xp: Any, like: Any) -> Any:
        """The teacher's output moved into the student's namespace and device."""
        from ebjr._utils.arrays import into_namespace

        return into_namespace(t_out, xp, like)

    def concat(self, parts: list[Any], xp: Any) -> Any:
        """Outputs of consecutive sub-batches as one."""
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    def host(self, out: Any) -> Any:
        """A model's output on the host, to ship (numpy arrays; lists stay lists)."""
        return to_numpy(out)

    # ------------------------------------------------------------ answers
    def answer(self, xp: Any, out: Array, role: str = "teacher") -> Answer:
        """One model's own answer from its output (``role`` ``"student"`` answers in the
        teacher's terms, e.g. through a class map)."""
        raise NotImplementedError

    def merge(self, xp: Any, s_out: Array, routed: Array, t_out: Array | None) -> Answer:
        """The joint answer: the student's, with the rows ``routed`` (indices, in order)
        answered by the teacher, whose output for them is ``t_out`` (``None``: the
        student answers every row)."""
        student = self.answer(xp, s_out, "student")
        if t_out is None:
            return student
        return self.replace(xp, student, routed, t_out)

    def replace(self, xp: Any, answer: Answer, routed: Array, t_out: Array) -> Answer:
        """``answer`` with the rows ``routed`` replaced by the teacher's answers from
        ``t_out`` (one output row per routed index)."""
        raise NotImplementedError

    def quality(self, predictions: Any, truth: Any) -> np.ndarray:
        """Per-row quality of answers against the truth, higher is better (``1.0``/``0.0``
        for right/wrong; a negated loss)."""
        raise NotImplementedError

    # ------------------------------------------------------------ transport
    def output_specs(self) -> list[dict[str, Any]]:
        """The answer's Open Inference Protocol output tensors (before ``scores`` and
        ``answered_by``): ``name``, ``datatype``, ``shape``."""
        raise NotImplementedError

    def tensors(self, answer: Any) -> list[tuple[str, np.ndarray]]:
        """The answer's output tensors, in :meth:`output_specs`'s order (``answer`` has
        ``predictions`` and ``probabilities``)."""
        raise NotImplementedError

    def json_answer(self, answer: Any) -> dict[str, Any]:
        """The answer as plain JSON fields (the ``/predict`` route's)."""
        return {name: t.tolist() for name, t in self.tensors(answer)}

    def columns_for(self, answer: Any) -> dict[str, np.ndarray]:
        """The answer's columns of a prediction file (beside the row id, ``score`` and
        ``answered_by``)."""
        raise NotImplementedError

    # ------------------------------------------------------------ record
    def params(self) -> dict[str, Any]:
        """What else than the name this task kind holds (JSON-serialisable)."""
        return {}

    def to_spec(self) -> dict[str, Any]:
        """``{"kind": name, **params}``, the form a bundle records."""
        return {"kind": self.name, **self.params()}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), repr(self.params())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _routers_for(kind: str) -> list[str]:
    from ebjr.routing import list_routers

    return list_routers(kind=kind)


#: the task kinds by name
TASKS: Registry[type[TaskKind]] = Registry("task kind")
for _name, _target in (("classification", "ebjr.tasks.classification:Classification"),
                       ("regression", "ebjr.tasks.regression:Regression"),
                       ("detection", "ebjr.tasks.detection:Detection")):
    TASKS.add_lazy(_name, _target)


def get_task(task: str | TaskKind | None = None, **params: Any) -> TaskKind:
    """The task kind ``task`` names (``None``: classification), built with ``params``; an
    instance is returned as it is."""
    if isinstance(task, TaskKind):
        if params:
            raise InputError("parameters cannot be given together with a task instance")
        return task
    if task is None:
        task = "classification"
    if not isinstance(task, str):
        raise InputError(f"task must be a name or a TaskKind, got {type(task).__name__}")
    cls = TASKS.get(task)
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(f"bad parameters for the {task!r} task: {exc}") from exc


def task_from_spec(spec: dict[str, Any] | None, **extra: Any) -> TaskKind:
    """Rebuild a task kind from :meth:`TaskKind.to_spec`'s form (``None``: classification);
    ``extra`` adds parameters kept elsewhere in a bundle (a classification's class map)."""
    if spec is None:
        return get_task("classification", **extra)
    params = {k: v for k, v in spec.items() if k != "kind"}
    return get_task(spec["kind"], **params, **extra)


def numpy_rows(a: Any) -> np.ndarray:
    """``a`` as a host numpy array (answers leave the model's device to be shipped)."""
    return np.asarray(to_numpy(a))
