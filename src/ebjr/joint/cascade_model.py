"""A cascade of live models: each stage runs only on the rows that reach it.

:class:`CascadeModel` runs a :class:`~ebjr.joint.cascade.Cascade` over real
models (anything :func:`~ebjr.adapters.as_adapter` takes). The first stage
sees every row; each later stage sees, as one sub-batch, only the rows every
earlier stage passed on, and is not called when none is. Routing stays in the
first stage's namespace and device (numpy or torch). The thresholds are a live
knob: :meth:`CascadeModel.set_thresholds` is thread-safe, and every batch is
routed with the one vector read when it starts. A 2-stage ``CascadeModel``
answers as :class:`~ebjr.joint.model.JointModel` does, row for row (tested).

>>> import numpy as np
>>> from ebjr.joint.cascade import Cascade
>>> small = lambda x: np.asarray(x) * 1.0
>>> mid = lambda x: np.asarray(x)[:, ::-1] * 6.0
>>> big = lambda x: np.asarray(x)[:, ::-1] * 9.0
>>> c = Cascade(("small", "mid", "big"), (0.9, 0.99), router="softmax")
>>> live = CascadeModel({"small": small, "mid": mid, "big": big}, c)
>>> out = live.predict(np.array([[5.0, 0.0], [0.2, 0.1], [0.1, 1.0]]))
>>> out.answered_by.tolist(), out.predictions.tolist()
(['small', 'big', 'mid'], [0, 1, 0])
>>> live.counts()["stage_rows"]
{'small': 3, 'mid': 2, 'big': 1}
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, namespace, to_numpy
from ebjr.adapters.base import Adapter, as_adapter, batch_size
from ebjr.exceptions import InputError
from ebjr.joint.cascade import Cascade, stage_answer
from ebjr.joint.functional import device_of, into_namespace, scatter_rows, take_rows
from ebjr.routing import Router, check_threshold
from ebjr.routing.base import teacher_mask
from ebjr.scores import softmax

__all__ = ["CascadeModel", "CascadePrediction"]


@dataclass(frozen=True)
class CascadePrediction:
    """A cascade's answer for one batch.

    Attributes:
        predictions: class per row, shape ``(n,)``.
        probabilities: the answering stage's probabilities, shape ``(n, C)``.
        exit_stage: index of the stage that answered each row (numpy).
        stages: the stage names.
        thresholds: the one threshold vector this batch was routed with.
    """

    predictions: Array
    probabilities: Array
    exit_stage: np.ndarray
    stages: tuple[str, ...]
    thresholds: tuple[float, ...]

    @property
    def answered_by(self) -> np.ndarray:
        """The name of the stage that answered each row."""
        return np.asarray(self.stages)[self.exit_stage]


class CascadeModel:
    """Live models run as ``cascade`` says; see the module documentation.

    Args:
        models: stage name -> model, for every stage of ``cascade``.
        cascade: stages, thresholds, router and combine rule (e.g. from
            :func:`ebjr.search_cascade`, or :func:`ebjr.bundle.cascade.read_cascade`).
        validate: check every model's outputs (shape, NaN/inf) at the adapters' boundary.
    """

    def __init__(self, models: Mapping[str, Any], cascade: Cascade, *,
                 validate: bool = True) -> None:
        missing = [s for s in cascade.stages if s not in models]
        if missing:
            raise InputError(f"no model for stage(s) {missing}; got {sorted(models)}")
        self.cascade = cascade
        self.adapters: dict[str, Adapter] = {s: as_adapter(models[s]) for s in cascade.stages}
        self.router: Router = cascade.router  # type: ignore[assignment]
        self.validate = validate
        self._thresholds = tuple(cascade.thresholds)
        self._lock = threading.Lock()
        self._reached = dict.fromkeys(cascade.stages, 0)
        self._answered = dict.fromkeys(cascade.stages, 0)
        self._batches = 0

    @property
    def stages(self) -> tuple[str, ...]:
        return self.cascade.stages

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self._thresholds

    def set_thresholds(self, thresholds: Sequence[float]) -> tuple[float, ...]:
        """Change every threshold for the batches that start from now on; returns the old."""
        new = tuple(check_threshold(t) for t in thresholds)
        if len(new) != len(self.stages) - 1:
            raise InputError(f"{len(self.stages)} stages need {len(self.stages) - 1} "
                             f"thresholds, got {len(new)}")
        with self._lock:
            old, self._thresholds = self._thresholds, new
        return old

    def counts(self) -> dict[str, Any]:
        """``batches``, ``rows``, and per stage the rows it ran on (``stage_rows``, one call
        per batch it saw) and the rows it answered (``answered``)."""
        with self._lock:
            return {"batches": self._batches, "rows": self._reached[self.stages[0]],
                    "stage_rows": dict(self._reached), "answered": dict(self._answered)}

    def _run(self, name: str, rows: Any) -> Array:
        adapter = self.adapters[name]
        return adapter(rows) if self.validate else adapter.forward(rows)

    def predict(self, batch: Any) -> CascadePrediction:
        """Run the cascade on a batch (array, tensor, list of inputs, or dict of tensors)."""
        n = batch_size(batch)
        if n == 0:
            raise InputError("the batch is empty: expected at least one input")
        thresholds = self._thresholds  # one read: the whole batch uses this vector
        last = len(self.stages) - 1
        exit_stage = np.full(n, last, dtype=np.int64)
        reached: dict[str, int] = {}
        first = self._run(self.stages[0], batch)
        xp = namespace(first)
        rows = xp.arange(n, device=device_of(first))  # batch rows at the current stage
        pred = probs = running = None
        logits = first
        for i, name in enumerate(self.stages):
            if i:
                logits = into_namespace(self._run(name, take_rows(batch, rows)), xp, first)
                if logits.shape[1] != first.shape[1]:
                    raise InputError(f"stage {name!r} gives {logits.shape[1]} classes but "
                                     f"{self.stages[0]!r} gives {first.shape[1]}: the stages "
                                     "of a cascade share one label space")
            reached[name] = int(rows.shape[0])
            answer, running = stage_answer(logits, running, i, self.cascade.combine)
            if i < last:
                go_on = teacher_mask(self.router.score(answer, validate=False), thresholds[i])
                here = xp.nonzero(~go_on)[0]
            else:
                go_on, here = None, xp.arange(int(rows.shape[0]), device=device_of(first))
            answer_here = take_rows(answer, here)
            p_here = softmax(answer_here, validate=False)
            c_here = xp.argmax(answer_here, axis=1)
            at = take_rows(rows, here)
            if pred is None:
                pred = xp.zeros(n, dtype=c_here.dtype, device=device_of(first))
                probs = xp.zeros((n, p_here.shape[1]), dtype=p_here.dtype,
                                 device=device_of(first))
            pred = scatter_rows(xp, pred, at, c_here)
            probs = scatter_rows(xp, probs, at, p_here)
            exit_stage[to_numpy(at)] = i
            if go_on is None:
                break
            keep = xp.nonzero(go_on)[0]
            rows = take_rows(rows, keep)
            running = None if running is None else take_rows(running, keep)
            if not int(rows.shape[0]):
                break
        with self._lock:
            self._batches += 1
            for name, k in reached.items():
                self._reached[name] += k
            for i, name in enumerate(self.stages):
                self._answered[name] += int(np.sum(exit_stage == i))
        return CascadePrediction(pred, probs, exit_stage, self.stages, thresholds)

    def __call__(self, batch: Any) -> CascadePrediction:
        return self.predict(batch)

    def __repr__(self) -> str:
        return (f"CascadeModel(stages={list(self.stages)}, thresholds={list(self._thresholds)}, "
                f"router={self.router!r}, combine={self.cascade.combine!r})")
