"""Routers of detections: a score per image, higher = the student is fit.

They are routers like the others, in the one registry (``detection_energy``,
``detection_energy_cls``, ``detection_mean_confidence``,
``detection_min_confidence``, ``detection_mean_softmax``); what differs is what
they score: one :class:`~ebjr.scores.detection.Detections` per image
(``scores_kind = "detections"``) rather than a logits matrix.
``list_routers(kind="detections")`` lists them;
:func:`detection_scores` and :class:`~ebjr.joint.detector.JointDetector` also
take the short names of :data:`DETECTION_ROUTERS` (``energy``, ...).

>>> from ebjr.routing import get_router
>>> get_router("detection_energy", empty=2.5)
DetectionEnergyRouter(empty=2.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from scipy import special

from ebjr.exceptions import InputError
from ebjr.routing.base import Router, get_router, list_routers, register_router
from ebjr.scores.detection import Detections, detection_free_energy

__all__ = [
    "DETECTION_ROUTERS",
    "DetectionEnergyClsRouter",
    "DetectionEnergyRouter",
    "DetectionRouter",
    "MeanConfidenceRouter",
    "MeanSoftmaxRouter",
    "MinConfidenceRouter",
    "detection_router",
    "detection_scores",
]

PREFIX = "detection_"


class DetectionRouter(Router):
    """Base of the routers of detections: :meth:`score` takes one ``Detections`` per image.

    Args:
        empty: the rule for images where the student kept no box:
            ``"teacher"`` (score ``-inf``, always the teacher) or a number
            (a free energy for the energy routers, whose score is then
            ``-empty``; the confidence routers give such images ``0``).
    """

    scores_kind: ClassVar[str] = "detections"

    def __init__(self, empty: str | float = "teacher") -> None:
        if not (empty == "teacher" or (isinstance(empty, int | float)
                                       and not isinstance(empty, bool)
                                       and math.isfinite(empty))):
            raise InputError(f"empty must be 'teacher' or a finite number, got {empty!r}")
        self.empty = empty

    def score(self, detections: Any, *, validate: bool = True) -> np.ndarray:
        """Routing score per image, shape ``(n,)``; higher = the student is fit."""
        if validate:
            detections = _check_detections(detections)
        return self._score(detections)

    def _score(self, detections: Sequence[Detections]) -> np.ndarray:
        out = np.empty(len(detections))
        for i, d in enumerate(detections):
            out[i] = (-math.inf if self.empty == "teacher" else 0.0) if len(d) == 0 \
                else self._image(d)
        return out

    def _image(self, d: Detections) -> float:
        raise NotImplementedError


def _check_detections(detections: Any) -> Sequence[Detections]:
    if isinstance(detections, Detections) or not isinstance(detections, Sequence) or not all(
        isinstance(d, Detections) for d in detections
    ):
        kind = type(detections).__name__
        raise InputError(f"a detection router scores a sequence of Detections, one per image; "
                         f"got {kind}")
    return detections


@register_router
class DetectionEnergyRouter(DetectionRouter):
    """The paper's detection score: ``-(F_cls + F_reg)`` per image (eq. 14)."""

    name = "detection_energy"
    regression: ClassVar[bool] = True

    def _score(self, detections: Sequence[Detections]) -> np.ndarray:
        return -detection_free_energy(detections, regression=self.regression, empty=self.empty)


@register_router
class DetectionEnergyClsRouter(DetectionEnergyRouter):
    """The classification term only: ``-F_cls`` per image (eq. 12)."""

    name = "detection_energy_cls"
    regression = False


@register_router
class MeanConfidenceRouter(DetectionRouter):
    """The mean confidence of the kept boxes."""

    name = "detection_mean_confidence"

    def _image(self, d: Detections) -> float:
        return float(np.mean(d.scores))


@register_router
class MinConfidenceRouter(DetectionRouter):
    """The confidence of the least confident kept box."""

    name = "detection_min_confidence"

    def _image(self, d: Detections) -> float:
        return float(np.min(d.scores))


@register_router
class MeanSoftmaxRouter(DetectionRouter):
    """The mean max-softmax probability of the kept boxes' class logits."""

    name = "detection_mean_softmax"

    def _image(self, d: Detections) -> float:
        probs = special.softmax(np.asarray(d.class_logits, float), axis=1)
        return float(np.mean(probs.max(axis=1)))


def _short(name: str) -> str:
    return name.removeprefix(PREFIX)


#: short name -> description of every registered detection router (higher = the student is fit)
DETECTION_ROUTERS = {
    _short(n): (get_router(n).__doc__ or "").strip().splitlines()[0]
    for n in list_routers(kind="detections")
}


def detection_router(router: str | Router = "energy", **params: Any) -> Router:
    """The detection router ``router`` (a short name such as ``energy``, a registered name
    such as ``detection_energy``, or an instance), built with ``params``."""
    known = ", ".join(DETECTION_ROUTERS)
    if isinstance(router, str):
        router = PREFIX + router if router in DETECTION_ROUTERS else router
        if router not in list_routers(kind="detections"):
            if router in list_routers(kind=None):
                raise InputError(f"the {router!r} router scores logits, not detections; use "
                                 f"one of {known}")
            names = ", ".join(list_routers(kind="detections"))
            raise InputError(f"unknown detection router {router!r}; known: {known} (or "
                             f"their registered names {names})")
    r = get_router(router, **params)
    if r.scores_kind != "detections":
        raise InputError(f"the {r.name!r} router scores {r.scores_kind}, not detections; "
                         f"use one of {known}")
    return r


def detection_scores(
    detections: Sequence[Detections], router: str | Router = "energy", *,
    empty: str | float = "teacher",
) -> np.ndarray:
    """Routing score per image (higher = the student is fit); ``-inf`` for empty images.

    ``router`` is one of :data:`DETECTION_ROUTERS` (or a detection router). With
    ``empty`` a number, empty images get score ``-empty`` for the energy
    routers and ``0`` for the confidence routers.
    """
    params = {} if isinstance(router, Router) else {"empty": empty}
    return detection_router(router, **params).score(detections)
