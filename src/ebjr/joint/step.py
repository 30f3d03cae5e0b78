"""One serving step of the joint model, written once for every engine that serves it.

A server batches several requests' rows, routes the batch with the student
(:meth:`JointModel.route`), and then does the same thing whatever carries the
rows: ask the teacher for the routed rows, merge, label who answered each
row, split the answers back per request, and apply the fallback policy. That
is :func:`finish_batch`. What differs is only transport: how the teacher is
asked (a local thread, an HTTP client, a Ray deployment handle) and how its
failures arrive, which each engine maps to :class:`TeacherUnavailable` in the
``ask_teacher`` it passes. ``ebjr serve``'s engine and ``ebjr.ray``'s student
replica both call it; a model that fails is reported by :func:`model_failure`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.exceptions import ModelError, TeacherUnavailable
from ebjr.joint.functional import RoutedBatch, take_rows

__all__ = ["ANSWERED_BY", "JointAnswer", "finish_batch", "model_failure", "split_answers"]

#: who answered a row: the student, the teacher, or the student because the teacher failed
ANSWERED_BY = ("student", "teacher", "student_fallback")

#: ``ask_teacher(rows) -> (logits, None)`` or ``(None, the failure)``
AskTeacher = Callable[[Any], Awaitable[tuple[Any, TeacherUnavailable | None]]]


@dataclass
class JointAnswer:
    """The answer of a joint model (or of a cascade) for one request's rows."""

    predictions: Any  # an array; a detector's: a list of Detections per image
    probabilities: np.ndarray | None  # None for a task without classes (regression)
    scores: np.ndarray
    answered_by: np.ndarray  # one of ANSWERED_BY per row; a cascade's: its stage names
    threshold: float | tuple[float, ...]  # a cascade's: one per stage but the last
    degraded: bool  # routed rows answered by an earlier stage because a later one failed
    stages: tuple[str, ...] = ("student", "teacher")
    shadow: Any = None  # (what its batch's shadows found, first row, end): for feedback

    @property
    def path(self) -> str:
        """``fallback`` if degraded, else the last stage that answered a row."""
        if self.degraded:
            return "fallback"
        present = set(self.answered_by.tolist())
        return next(s for s in reversed(self.stages) if s in present or s == self.stages[0])

    @property
    def passed_on(self) -> int:
        """Rows the first stage did not answer (the teacher's rows, for a pair)."""
        return int((self.answered_by != self.stages[0]).sum())

    def counts(self) -> dict[str, int]:
        """Rows per :data:`ANSWERED_BY` label (those with rows)."""
        labels, n = np.unique(self.answered_by, return_counts=True)
        return {str(k): int(v) for k, v in zip(labels, n, strict=True)}


def _host(a: Any) -> np.ndarray | None:
    return None if a is None else to_numpy(a)


def model_failure(name: str, rows: Any, exc: BaseException) -> ModelError:
    """The :class:`ModelError` for a model that raised on ``rows`` (valid inputs)."""
    first = (str(exc).splitlines() or [""])[0][:300]
    shape = list(np.shape(rows)[1:])
    return ModelError(f"the {name} model failed on a batch of {len(rows)} rows of shape "
                      f"{shape}: {type(exc).__name__}: {first}", name)


async def finish_batch(
    joint: Any,
    batch: Any,
    sizes: Sequence[int],
    routed: RoutedBatch,
    ask_teacher: AskTeacher,
    fallback: str,
    observe: Callable[[np.ndarray, np.ndarray, bool], Any] | None = None,
) -> list[JointAnswer | TeacherUnavailable]:
    """The answers of a routed batch, one per request (``sizes`` rows each, in order).

    ``observe(routed_mask, predictions, teacher_failed)`` sees the whole batch's answer
    before it is split (the shadow monitor's hook); what it returns is kept with each
    request's answer (``shadow``).

    The routed rows go to ``ask_teacher``; if it fails, they are answered by the
    student (``student_fallback``, the request ``degraded``), or, under the fallback
    policy ``"error"``, a request with a routed row gets the failure instead of an
    answer. No row is lost either way.
    """
    mask = np.asarray(to_numpy(routed.to_teacher), dtype=bool)
    t_logits, failure = None, None
    if routed.k:
        t_logits, failure = await ask_teacher(take_rows(batch, np.flatnonzero(mask)))
    pred = joint.merge(routed, t_logits)
    answered = np.where(mask, "student_fallback" if failure else "teacher", "student")
    answer = JointAnswer(joint.task.host(pred.predictions), _host(pred.probabilities),
                         to_numpy(routed.scores), answered, routed.threshold, False)
    found = None if observe is None else observe(mask, answer.predictions, failure is not None)
    return split_answers(answer, mask if failure else np.zeros_like(mask), failure, sizes,
                         fallback, found)


def split_answers(
    batch: JointAnswer,
    fell_back: np.ndarray,
    failure: TeacherUnavailable | None,
    sizes: Sequence[int],
    fallback: str,
    shadow: Any = None,
) -> list[JointAnswer | TeacherUnavailable]:
    """A batch's answer split into one per request (``sizes`` rows each, in order).

    ``fell_back`` marks the rows answered by an earlier stage because a later one
    failed with ``failure``: a request with such a row is ``degraded``, or under the
    fallback policy ``"error"`` gets the failure instead of an answer.
    """
    out: list[JointAnswer | TeacherUnavailable] = []
    start = 0
    for n in sizes:
        a, start = start, start + n
        hit = bool(fell_back[a:start].any())
        if failure is not None and hit and fallback == "error":
            out.append(failure)
            continue
        probs = None if batch.probabilities is None else batch.probabilities[a:start]
        out.append(JointAnswer(batch.predictions[a:start], probs,
                               batch.scores[a:start], batch.answered_by[a:start],
                               batch.threshold, hit, batch.stages,
                               None if shadow is None else (shadow, a, start)))
    return out
