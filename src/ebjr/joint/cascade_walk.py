"""One batch's way through a cascade, with no model run here (sans I/O).

Every server of a cascade does the same thing between model calls: form the
stage's answer, score it, keep the rows it answers, and pass the others on;
only *how* a stage is called differs (a direct call in
:class:`~ebjr.joint.cascade_model.CascadeModel`, a batcher on a thread in
``ebjr serve``, a deployment handle on Ray). :class:`CascadeWalk` is that
shared part, written once: the caller runs the stage :attr:`~CascadeWalk.stage`
names on the batch rows :meth:`~CascadeWalk.feed` returned, and feeds its
logits back, until ``feed`` returns ``None``.

>>> import numpy as np
>>> from ebjr.joint.cascade import Cascade
>>> c = Cascade(("small", "big"), (0.9,), router="softmax")
>>> walk = CascadeWalk(c, c.thresholds, 3)
>>> walk.feed(np.array([[4.0, 0.0], [0.1, 0.0], [0.0, 5.0]])).tolist()  # rows for "big"
[1]
>>> walk.feed(np.array([[0.0, 9.0]])) is None
True
>>> walk.result().answered_by.tolist()
['small', 'big', 'small']

If a later stage fails, :meth:`~CascadeWalk.fail` answers its rows with the
answer they had before it (marked in ``fallback``); no row is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, namespace, to_numpy
from ebjr.exceptions import InputError
from ebjr.joint.cascade import Cascade, stage_answer
from ebjr.joint.functional import device_of, into_namespace, scatter_rows, take_rows
from ebjr.routing.base import teacher_mask
from ebjr.scores import softmax

__all__ = ["CascadePrediction", "CascadeWalk", "StageStep", "stage_step"]


@dataclass(frozen=True)
class CascadePrediction:
    """A cascade's answer for one batch.

    Attributes:
        predictions: class per row, shape ``(n,)``.
        probabilities: the answering stage's probabilities, shape ``(n, C)``.
        scores: the router's score of the answer each row got (numpy).
        exit_stage: index of the stage that answered each row (numpy).
        fallback: rows whose next stage failed, answered by the stage before it (numpy).
        stages: the stage names.
        thresholds: the one threshold vector this batch was routed with.
    """

    predictions: Array
    probabilities: Array
    scores: np.ndarray
    exit_stage: np.ndarray
    fallback: np.ndarray
    stages: tuple[str, ...]
    thresholds: tuple[float, ...]

    @property
    def answered_by(self) -> np.ndarray:
        """The name of the stage that answered each row; ``<name>_fallback`` where the next
        stage failed and this one answered in its place."""
        names = np.asarray(self.stages, dtype=object)[self.exit_stage]
        out = np.where(self.fallback, names + "_fallback", names)
        return out.astype(str)

    @property
    def degraded(self) -> bool:
        return bool(self.fallback.any())

    def stage_rows(self) -> dict[str, int]:
        """Rows that reached each stage (a row reaches every stage up to the one that
        answered it, and the one that failed it)."""
        reached = self.exit_stage + self.fallback.astype(np.int64)
        return {s: int(np.sum(reached >= i)) for i, s in enumerate(self.stages)}


@dataclass(frozen=True)
class StageStep:
    """One stage's decision on the rows that reached it: its answer (as logits), the
    running sum to pass on (``combine="mean"``; else ``None``), the router's scores of the
    answer, and which rows go on (``None`` at the last stage: it answers every row)."""

    answer: Any
    running: Any
    scores: Any
    go_on: Any


def stage_step(cascade: Cascade, i: int, thresholds: Sequence[float], logits: Any,
               running: Any) -> StageStep:
    """Stage ``i``'s step on its rows (numpy or torch; ``running`` aligned with ``logits``)."""
    answer, running = stage_answer(logits, running, i, cascade.combine)
    scores = cascade.router.score(answer, validate=False)  # type: ignore[union-attr]
    last = i == len(cascade.stages) - 1
    return StageStep(answer, running, scores,
                     None if last else teacher_mask(scores, thresholds[i]))


class CascadeWalk:
    """The routing state of one batch of ``n`` rows through ``cascade`` with ``thresholds``.

    Feed it the logits of :attr:`stage` on :attr:`rows` (the batch rows that reached
    that stage; all rows for the first); it returns the rows the next stage must run
    on, or ``None`` once every row is answered. Arrays stay in the first stage's
    namespace and device.
    """

    def __init__(self, cascade: Cascade, thresholds: Sequence[float], n: int) -> None:
        if len(thresholds) != len(cascade.stages) - 1:
            raise InputError(f"{len(cascade.stages)} stages need {len(cascade.stages) - 1} "
                             f"thresholds, got {len(thresholds)}")
        self.cascade = cascade
        self.thresholds = tuple(float(t) for t in thresholds)
        self.n = n
        self.stage = 0
        self.rows: Any = None  # batch rows at the current stage (None: all of them)
        self._like: Any = None
        self._xp: Any = None
        self._running: Any = None
        self._before: tuple[Any, Any] | None = None  # the answer and score passed on
        self._pred: Any = None
        self._probs: Any = None
        self._scores = np.zeros(n, dtype=np.float64)
        self._exit = np.full(n, len(cascade.stages) - 1, dtype=np.int64)
        self._fallback = np.zeros(n, dtype=bool)
        self.done = False

    @property
    def stage_name(self) -> str:
        return self.cascade.stages[self.stage]

    def _answer(self, at: Any, answer: Any, scores: Any, stage: int) -> None:
        xp, like = self._xp, self._like
        p = softmax(answer, validate=False)
        c = xp.argmax(answer, axis=1)
        if self._pred is None:
            dev = device_of(like)
            self._pred = xp.zeros(self.n, dtype=c.dtype, device=dev)
            self._probs = xp.zeros((self.n, p.shape[1]), dtype=p.dtype, device=dev)
        self._pred = scatter_rows(xp, self._pred, at, c)
        self._probs = scatter_rows(xp, self._probs, at, p)
        idx = to_numpy(at)
        self._exit[idx] = stage
        self._scores[idx] = np.asarray(to_numpy(scores), dtype=np.float64)

    def feed(self, logits: Any) -> Any:
        """Take :attr:`stage`'s logits on :attr:`rows`; return the batch rows for the next
        stage, or ``None`` when the batch is answered."""
        if self.done:
            raise InputError("this batch is already answered")
        i = self.stage
        if i == 0:
            self._like, self._xp = logits, namespace(logits)
            self.rows = self._xp.arange(self.n, device=device_of(logits))
        else:
            logits = into_namespace(logits, self._xp, self._like)
        expected = (int(self.rows.shape[0]), int(self._like.shape[1]))
        if tuple(int(d) for d in logits.shape) != expected:
            raise InputError(
                f"stage {self.stage_name!r} gave outputs of shape {list(logits.shape)} for "
                f"{expected[0]} rows; expected {list(expected)}: the stages of a cascade share "
                f"one label space ({expected[1]} classes, from {self.cascade.stages[0]!r})")
        xp = self._xp
        step = stage_step(self.cascade, i, self.thresholds, logits, self._running)
        answer, scores, go_on, self._running = step.answer, step.scores, step.go_on, step.running
        if go_on is None:
            self._answer(self.rows, answer, scores, i)
            return self._finish()
        here = xp.nonzero(~go_on)[0]
        self._answer(take_rows(self.rows, here), take_rows(answer, here),
                     take_rows(scores, here), i)
        keep = xp.nonzero(go_on)[0]
        self.rows = take_rows(self.rows, keep)
        if not int(self.rows.shape[0]):
            return self._finish()
        if self._running is not None:
            self._running = take_rows(self._running, keep)
        self._before = (take_rows(answer, keep), take_rows(scores, keep))
        self.stage = i + 1
        return self.rows

    def fail(self) -> None:
        """:attr:`stage` failed on :attr:`rows` (not the first stage: its failure is the
        batch's): they keep the answer of the stage before, marked ``fallback``."""
        if self.done or self.stage == 0 or self._before is None:
            raise InputError("only a later stage of an unanswered batch can fail over")
        answer, scores = self._before
        self._answer(self.rows, answer, scores, self.stage - 1)
        self._fallback[to_numpy(self.rows)] = True
        self._finish()

    def _finish(self) -> None:
        self.done = True
        self._running = self._before = None

    def result(self) -> CascadePrediction:
        if not self.done:
            raise InputError(f"the batch is not answered yet: stage {self.stage_name!r} is due")
        return CascadePrediction(self._pred, self._probs, self._scores, self._exit,
                                 self._fallback, self.cascade.stages, self.thresholds)
