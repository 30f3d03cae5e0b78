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

__all__ = ["ANSWERED_BY", "JointAnswer", "finish_batch", "model_failure"]

#: who answered a row: the student, the teacher, or the student because the teacher failed
ANSWERED_BY = ("student", "teacher", "student_fallback")

#: ``ask_teacher(rows) -> (logits, None)`` or ``(None, the failure)``
AskTeacher = Callable[[Any], Awaitable[tuple[Any, TeacherUnavailable | None]]]


@dataclass
class JointAnswer:
    """The joint model's answer for one request's rows."""

    predictions: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray
    answered_by: np.ndarray  # one of ANSWERED_BY per row
    threshold: float
    degraded: bool  # routed rows answered by the student because the teacher failed

    @property
    def path(self) -> str:
        if self.degraded:
            return "fallback"
        return "teacher" if (self.answered_by == "teacher").any() else "student"

    def counts(self) -> dict[str, int]:
        """Rows per :data:`ANSWERED_BY` label (those with rows)."""
        labels, n = np.unique(self.answered_by, return_counts=True)
        return {str(k): int(v) for k, v in zip(labels, n, strict=True)}


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
) -> list[JointAnswer | TeacherUnavailable]:
    """The answers of a routed batch, one per request (``sizes`` rows each, in order).

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
    predictions = to_numpy(pred.predictions)
    probs = to_numpy(pred.probabilities)
    scores = to_numpy(routed.scores)
    answered = np.where(mask, "student_fallback" if failure else "teacher", "student")
    out: list[JointAnswer | TeacherUnavailable] = []
    start = 0
    for n in sizes:
        a, start = start, start + n
        hit = bool(mask[a:start].any())
        if failure is not None and hit and fallback == "error":
            out.append(failure)
            continue
        out.append(JointAnswer(predictions[a:start], probs[a:start], scores[a:start],
                               answered[a:start], routed.threshold,
                               failure is not None and hit))
    return out
