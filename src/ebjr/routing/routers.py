"""The built-in routers: the paper's energy, the baselines, random and the specialized energy.

For the energy router the score is ``-F`` (the negative free energy), so
thresholds are in the paper's units. Look routers up by name:

>>> import numpy as np
>>> router = get_router("energy", temperature=1.0)
>>> router.route(np.array([[9.0, 0.0], [0.1, 0.0]]), threshold=2.0)
array([False,  True])
>>> list_routers("*entropy*")
['entropy']
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ebjr._utils.arrays import Array, namespace
from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError
from ebjr.routing.base import (  # get_router, list_routers: for the doctest
    Router,
    get_router,  # noqa: F401
    list_routers,  # noqa: F401
    register_lazy,
    register_router,
)
from ebjr.scores import classification as scores

__all__ = [
    "EnergyRouter",
    "EntropyRouter",
    "MarginRouter",
    "MaxLogitRouter",
    "PaperCodeRouter",
    "RandomRouter",
    "SoftmaxRouter",
    "SpecializedRouter",
]


def _simple(cls_name: str, name: str, fn: Callable[..., Array], doc: str) -> type[Router]:
    def _score(self: Router, logits: Array) -> Array:
        return fn(logits, validate=False)

    cls = type(
        cls_name,
        (Router,),
        {"name": name, "_score": _score, "__doc__": doc, "__module__": __name__},
    )
    return register_router(cls)


@register_router
class EnergyRouter(Router):
    """The paper's router: score ``-F(x) = T * logsumexp(logits / T)`` (eq. 3 and 6).

    Args:
        temperature: ``T > 0``; the paper uses 1.
    """

    name = "energy"
    needs_raw_logits = True

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature
        scores._check_temperature(temperature)

    def _score(self, logits: Array) -> Array:
        # -F = T * logsumexp(logits / T), written without the two negations (the hot path)
        t = float(self.temperature)
        if t == 1.0:
            return scores.logsumexp(logits, validate=False)
        return t * scores.logsumexp(logits / t, validate=False)


SoftmaxRouter = _simple(
    "SoftmaxRouter", "softmax", scores.softmax_confidence, "Baseline: maximum softmax probability."
)
EntropyRouter = _simple(
    "EntropyRouter",
    "entropy",
    scores.negative_entropy,
    "Baseline: negative entropy of the softmax.",
)
MaxLogitRouter = _simple(
    "MaxLogitRouter", "maxlogit", scores.max_logit, "Baseline: the largest logit."
)
MarginRouter = _simple(
    "MarginRouter", "margin", scores.margin, "Baseline: top-1 minus top-2 softmax probability."
)
PaperCodeRouter = _simple(
    "PaperCodeRouter",
    "paper_code",
    scores.softmax_logsumexp,
    "What the paper's released code routed on: logsumexp of the softmax probabilities.\n\n"
    "Not the free energy of eq. 3 (see :func:`ebjr.scores.softmax_logsumexp`); kept to\n"
    "reproduce that code's numbers (its thresholds: 2.46 on CIFAR-10, 4.6195 on CIFAR-100).",
)


@register_router
class RandomRouter(Router):
    """Baseline: a uniform random score in ``[0, 1)`` per row, from a seeded stream.

    With this score the threshold *is* the expected teacher fraction. Each call
    draws fresh numbers from the router's generator, so the same router gives
    a reproducible stream for a given seed.

    Args:
        seed: seed of the numpy generator.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = check_int(seed, "seed")
        self._rng = np.random.default_rng(self.seed)

    def _score(self, logits: Array) -> Array:
        xp = namespace(logits)
        u = self._rng.random(logits.shape[0])
        device = getattr(logits, "device", None)
        if device is None or isinstance(logits, np.ndarray):
            return xp.asarray(u, dtype=logits.dtype)
        return xp.asarray(u, dtype=logits.dtype, device=device)


@register_router
class SpecializedRouter(Router):
    """Router of a specialized student (paper's eq. 16-17).

    The score is the negative free energy over the real classes, excluding
    the ``other`` column; a row whose argmax is ``other`` scores ``-inf`` and so
    always goes to the teacher, whatever the threshold.

    Args:
        other_index: the student's ``other`` column (default: the last).
        temperature: ``T > 0`` of the energy.
    """

    name = "specialized"
    needs_raw_logits = True

    def __init__(self, other_index: int = -1, temperature: float = 1.0) -> None:
        self.other_index = check_int(other_index, "other_index")
        self.temperature = temperature
        scores._check_temperature(temperature)

    def _score(self, logits: Array) -> Array:
        xp = namespace(logits)
        c = logits.shape[1]
        if not -c <= self.other_index < c:
            raise InputError(
                f"other_index {self.other_index} is not a column of logits with {c} classes"
            )
        s = -scores.specialized_free_energy(
            logits, self.other_index, self.temperature, validate=False
        )
        is_other = xp.argmax(logits, axis=1) == (self.other_index % c)
        return xp.where(is_other, xp.asarray(-math.inf, dtype=s.dtype), s)


# a plug-in of the calibration layer: imported the first time "auto" is asked for
register_lazy("auto", "ebjr.calibration.auto:AutoRouter")
for _name, _cls in (("spread", "SpreadRouter"), ("regression_energy", "RegressionEnergyRouter"),
                    ("peak_density", "PeakDensityRouter")):
    register_lazy(_name, f"ebjr.routing.regression:{_cls}", kind="regression")
for _name, _cls in (("energy", "DetectionEnergyRouter"), ("energy_cls", "DetectionEnergyClsRouter"),
                    ("mean_confidence", "MeanConfidenceRouter"),
                    ("min_confidence", "MinConfidenceRouter"),
                    ("mean_softmax", "MeanSoftmaxRouter")):
    register_lazy(f"detection_{_name}", f"ebjr.routing.detection:{_cls}", kind="detections")
