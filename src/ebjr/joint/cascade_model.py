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
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array
from ebjr.adapters.base import Adapter, as_adapter, batch_size
from ebjr.exceptions import InputError
from ebjr.joint.cascade import Cascade
from ebjr.joint.cascade_walk import CascadePrediction, CascadeWalk
from ebjr.joint.functional import take_rows
from ebjr.routing import Router, check_threshold
from ebjr.tasks import Classification

__all__ = ["CascadeModel", "CascadePrediction", "check_thresholds"]


def check_thresholds(thresholds: Sequence[float], n_stages: int) -> tuple[float, ...]:
    """``thresholds`` as a tuple, if they are ``n_stages - 1`` numbers (not NaN); else a
    clear :class:`InputError`."""
    if isinstance(thresholds, str) or not isinstance(thresholds, Sequence):
        raise InputError(f"a cascade of {n_stages} stages takes a list of {n_stages - 1} "
                         f"thresholds, got {type(thresholds).__name__}")
    new = tuple(check_threshold(t) for t in thresholds)
    if len(new) != n_stages - 1:
        raise InputError(f"{n_stages} stages need {n_stages - 1} thresholds, got {len(new)}")
    return new


class CascadeModel:
    """Live models run as ``cascade`` says; see the module documentation.

    Args:
        models: stage name -> model, for every stage of ``cascade``.
        cascade: stages, thresholds, router and combine rule (e.g. from
            :func:`ebjr.search_cascade`, or :func:`ebjr.bundle.cascade.read_cascade`).
        validate: check every model's outputs (shape, NaN/inf) at the adapters' boundary.
        input: the per-row input record ``{"shape": [...], "datatype": "FP32", ...}``
            (:class:`~ebjr.bundle.schema.InputRecord`) that :func:`ebjr.save` writes, so
            that ``ebjr serve`` checks request shapes and ``ebjr predict`` decodes images.
        elsewhere: stages whose models run elsewhere (``ebjr.ray``'s stage
            deployments): not given here, and a server runs them on its own.
    """

    def __init__(self, models: Mapping[str, Any], cascade: Cascade, *,
                 validate: bool = True, input: dict[str, Any] | None = None,
                 elsewhere: Sequence[str] = ()) -> None:
        unknown = [s for s in elsewhere if s not in cascade.stages]
        if unknown:
            raise InputError(f"elsewhere names {unknown}, which are not stages of "
                             f"{list(cascade.stages)}")
        missing = [s for s in cascade.stages if s not in models and s not in elsewhere]
        if missing:
            raise InputError(f"no model for stage(s) {missing}; got {sorted(models)}")
        self.cascade = cascade
        self.elsewhere = tuple(elsewhere)
        self.adapters: dict[str, Adapter] = {s: as_adapter(models[s]) for s in cascade.stages
                                             if s not in self.elsewhere}
        self.router: Router = cascade.router  # type: ignore[assignment]
        self.validate = validate
        self.input = None if input is None else dict(input)
        self._thresholds = tuple(cascade.thresholds)
        self._lock = threading.Lock()
        self._reached = dict.fromkeys(cascade.stages, 0)
        self._answered = dict.fromkeys(cascade.stages, 0)
        self._batches = 0

    @property
    def stages(self) -> tuple[str, ...]:
        return self.cascade.stages

    @property
    def task(self) -> Classification:
        """The task kind: a cascade of classifiers (other kinds are not cascaded yet)."""
        return Classification()

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self._thresholds

    def set_thresholds(self, thresholds: Sequence[float]) -> tuple[float, ...]:
        """Change every threshold for the batches that start from now on; returns the old."""
        new = check_thresholds(thresholds, len(self.stages))
        with self._lock:
            old, self._thresholds = self._thresholds, new
        return old

    def counts(self) -> dict[str, Any]:
        """``batches``, ``rows``, and per stage the rows it ran on (``stage_rows``, one call
        per batch it saw) and the rows it answered (``answered``)."""
        with self._lock:
            return {"batches": self._batches, "rows": self._reached[self.stages[0]],
                    "stage_rows": dict(self._reached), "answered": dict(self._answered)}

    def run_stage(self, name: str, rows: Any) -> Array:
        """Stage ``name``'s model on ``rows`` (its outputs checked unless ``validate=False``)."""
        if name in self.elsewhere:
            raise InputError(f"stage {name!r} runs elsewhere (this CascadeModel was loaded "
                             "without its model)")
        adapter = self.adapters[name]
        return adapter(rows) if self.validate else adapter.forward(rows)

    def predict(self, batch: Any) -> CascadePrediction:
        """Run the cascade on a batch (array, tensor, list of inputs, or dict of tensors)."""
        n = batch_size(batch)
        if n == 0:
            raise InputError("the batch is empty: expected at least one input")
        walk = CascadeWalk(self.cascade, self._thresholds, n)  # one read of the knob
        rows = walk.feed(self.run_stage(self.stages[0], batch))
        while rows is not None:
            rows = walk.feed(self.run_stage(walk.stage_name, take_rows(batch, rows)))
        out = walk.result()
        self.count(out)
        return out

    def count(self, out: CascadePrediction) -> dict[str, int]:
        """Add one answered batch to :meth:`counts` (servers that walk the cascade
        themselves call it); returns the rows each stage ran on in it."""
        reached = out.stage_rows()
        with self._lock:
            self._batches += 1
            for i, name in enumerate(self.stages):
                self._reached[name] += reached[name]
                self._answered[name] += int(np.sum(out.exit_stage == i))
        return reached

    def __call__(self, batch: Any) -> CascadePrediction:
        return self.predict(batch)

    def __repr__(self) -> str:
        return (f"CascadeModel(stages={list(self.stages)}, thresholds={list(self._thresholds)}, "
                f"router={self.router!r}, combine={self.cascade.combine!r})")
