"""Routers of regressors: each reads one named column of the student's output.

A regressor's output (:mod:`ebjr.tasks.regression`) is its prediction and,
beside it, what a router reads; a router here names the column it reads
(``column``) and turns it into a score, higher = the student is fit:

- ``spread``: ``-std``, the predictive standard deviation;
- ``regression_energy``: ``-F(x)``, the free energy of an energy-based
  regressor (eq. 9; see docs/regression.md for when it can route);
- ``peak_density``: ``log p(y_hat | x)``, the normalised density at the
  prediction.

>>> import numpy as np
>>> from ebjr.routing import get_router
>>> get_router("spread").score(np.array([0.5, 2.0])).tolist()
[-0.5, -2.0]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ebjr._utils.arrays import Array, namespace
from ebjr.exceptions import InputError
from ebjr.routing.base import Router, register_router

__all__ = ["PeakDensityRouter", "RegressionEnergyRouter", "RegressionRouter", "SpreadRouter"]


class RegressionRouter(Router):
    """Base of the regression routers: :meth:`score` takes the one column it reads, ``(n,)``."""

    scores_kind: ClassVar[str] = "regression"
    #: the output column this router reads (a name of :data:`ebjr.tasks.regression.COLUMNS`)
    column: ClassVar[str] = ""
    #: the score is ``sign * column``
    sign: ClassVar[float] = 1.0

    def score(self, values: Any, *, validate: bool = True) -> Array:
        """Routing score per row, shape ``(n,)``, from the column's values ``(n,)``."""
        if validate:
            if isinstance(values, list | tuple):
                values = np.asarray(values, dtype=np.float64)
            xp = namespace(values)
            if values.ndim != 1 or not xp.isdtype(values.dtype, "real floating"):
                raise InputError(f"the {self.name!r} router scores the {self.column!r} column: "
                                 f"a 1-d float array, got shape {tuple(values.shape)} of "
                                 f"{values.dtype}")
            if not bool(xp.all(xp.isfinite(values))):
                raise InputError(f"the {self.column!r} column contains NaN or infinite values")
        return values * self.sign if self.sign != 1.0 else values


@register_router
class SpreadRouter(RegressionRouter):
    """``-std``: the student answers where its predictive spread is small."""

    name = "spread"
    column = "std"
    sign = -1.0


@register_router
class RegressionEnergyRouter(RegressionRouter):
    """``-F(x)``: the paper's energy for an energy-based regressor (eq. 9)."""

    name = "regression_energy"
    column = "free_energy"
    sign = -1.0


@register_router
class PeakDensityRouter(RegressionRouter):
    """``log p(y_hat | x)``: the normalised density at the student's prediction."""

    name = "peak_density"
    column = "log_density"
