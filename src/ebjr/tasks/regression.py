"""Regression: a model's output is its prediction per row, and beside it what routers read.

A regressor's output is ``(n,)`` (the prediction alone: enough for a teacher)
or ``(n, m)`` whose columns are named by :attr:`Regression.columns`, the
first always ``prediction``. The other names a router may read:

- ``std``: the predictive standard deviation (a Gaussian head, an ensemble's
  spread, ``BayesianRidge.predict(return_std=True)``), read by ``spread``;
- ``free_energy``: ``F(x)`` of an energy-based regressor (eq. 9, e.g.
  :func:`ebjr.scores.regression_free_energy`), read by ``regression_energy``;
- ``log_density``: the normalised density at the prediction,
  ``log p(y_hat | x)``, read by ``peak_density``.

The joint answer is the answering model's prediction; quality is the negated
loss (``absolute`` or ``squared`` error) against the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, namespace
from ebjr.exceptions import InputError
from ebjr.tasks.base import Answer, TaskKind, numpy_rows

__all__ = ["COLUMNS", "LOSSES", "Regression"]

#: the column names a regressor's output may have (``prediction`` first)
COLUMNS = ("prediction", "std", "free_energy", "log_density")
#: per-row losses, ``loss(prediction, target)``
LOSSES = {
    "absolute": lambda p, y: np.abs(p - y),
    "squared": lambda p, y: (p - y) ** 2,
}


class Regression(TaskKind):
    """Regression of one scalar target.

    Args:
        columns: the names of the output's columns, ``prediction`` first (see the
            module's documentation); default ``("prediction", "std")``.
        loss: ``"absolute"`` or ``"squared"``: what quality (its negation) means.
    """

    name = "regression"
    scores_kind = "regression"

    def __init__(self, columns: Any = ("prediction", "std"), loss: str = "absolute") -> None:
        cols = tuple(columns) if isinstance(columns, list | tuple) else None
        if not cols or cols[0] != "prediction" or len(set(cols)) != len(cols) or \
                any(c not in COLUMNS for c in cols):
            raise InputError(f"columns must start with 'prediction' and name each column once, "
                             f"from {list(COLUMNS)}; got {columns!r}")
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.columns, self.loss = cols, loss

    def params(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "loss": self.loss}

    def check_output(self, out: Any, n: int, who: str) -> Array:
        if isinstance(out, list | tuple):
            out = np.asarray(out, dtype=np.float64)
        xp = namespace(out)
        if out.ndim == 1:
            out = xp.reshape(out, (-1, 1))
        if out.ndim != 2 or out.shape[0] != n:
            raise InputError(f"the {who} output must be (n,) or (n, columns) with one row per "
                             f"input ({n}), got shape {tuple(out.shape)}")
        if out.shape[1] > len(self.columns):
            raise InputError(f"the {who} output has {out.shape[1]} columns, but the task names "
                             f"{len(self.columns)}: {list(self.columns)}")
        if not xp.isdtype(out.dtype, "real floating"):
            raise InputError(f"the {who} output must hold real floating-point values, got "
                             f"dtype {out.dtype}")
        if not bool(xp.all(xp.isfinite(out))):
            raise InputError(f"the {who} output contains NaN or infinite values")
        return out

    def check_router(self, router: Any) -> None:
        super().check_router(router)
        if router.column not in self.columns:
            raise InputError(f"the {router.name!r} router reads the student's {router.column!r} "
                             f"column, which this task's columns {list(self.columns)} lack")

    def score(self, router: Any, out: Array) -> Array:
        i = self.columns.index(router.column)
        if out.shape[1] <= i:
            raise InputError(f"the {router.name!r} router reads the student's {router.column!r} "
                             f"(column {i}), but the student gives {out.shape[1]} column(s): "
                             f"expected {list(self.columns)}")
        return router.score(out[:, i], validate=False)

    # ------------------------------------------------------------ answers
    def answer(self, xp: Any, out: Array, role: str = "teacher") -> Answer:
        return Answer(out[:, 0])

    def replace(self, xp: Any, answer: Answer, routed: Array, t_out: Array) -> Answer:
        from ebjr._utils.arrays import scatter_rows

        pred = answer.predictions
        wide = xp.result_type(pred.dtype, t_out.dtype)  # a float64 teacher is not rounded
        if pred.dtype != wide:
            pred = xp.astype(pred, wide)
        return Answer(scatter_rows(xp, pred, routed, t_out[:, 0]))

    def quality(self, predictions: Any, truth: Any) -> np.ndarray:
        p = numpy_rows(predictions).astype(np.float64)
        return -LOSSES[self.loss](p, numpy_rows(truth).astype(np.float64))

    # ------------------------------------------------------------ transport
    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]

    def tensors(self, answer: Any) -> list[tuple[str, np.ndarray]]:
        return [("predictions", numpy_rows(answer.predictions).astype(np.float64))]

    def columns_for(self, answer: Any) -> dict[str, np.ndarray]:
        return {"prediction": numpy_rows(answer.predictions).astype(np.float64)}
