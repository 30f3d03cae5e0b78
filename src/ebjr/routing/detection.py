"""Routers of detections: a score per image, higher = the student is fit.

The detection scores act on one :class:`~ebjr.scores.detection.Detections`
per image rather than on a logits matrix, so they have a registry of their
own names (:data:`DETECTION_ROUTERS`), used by
:class:`~ebjr.joint.detector.JointDetector` and the detection benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from ebjr.exceptions import InputError
from ebjr.scores.detection import Detections, detection_free_energy

__all__ = ["DETECTION_ROUTERS", "detection_scores"]


#: score name -> description; every score is "higher = the student is fit"
DETECTION_ROUTERS = {
    "energy": "-(F_cls + F_reg), eq. 14",
    "energy_cls": "-F_cls, eq. 12 only",
    "mean_confidence": "mean detection confidence of the kept boxes",
    "min_confidence": "confidence of the least confident kept box",
    "mean_softmax": "mean max-softmax probability of the kept boxes' class logits",
}


def detection_scores(
    detections: Sequence[Detections], router: str = "energy", *, empty: str | float = "teacher"
) -> np.ndarray:
    """Routing score per image (higher = the student is fit); ``-inf`` for empty images.

    ``router`` is one of :data:`DETECTION_ROUTERS`. With ``empty`` a number,
    empty images get score ``-empty`` for the energy routers and ``0`` for
    the confidence routers.
    """
    if router not in DETECTION_ROUTERS:
        raise InputError(f"unknown detection router {router!r}; known: "
                         f"{', '.join(DETECTION_ROUTERS)}")
    if router in ("energy", "energy_cls"):
        return -detection_free_energy(detections, regression=router == "energy", empty=empty)
    out = np.empty(len(detections))
    for i, d in enumerate(detections):
        if len(d) == 0:
            out[i] = -math.inf if empty == "teacher" else 0.0
        elif router == "mean_confidence":
            out[i] = float(np.mean(d.scores))
        elif router == "min_confidence":
            out[i] = float(np.min(d.scores))
        else:
            probs = special.softmax(np.asarray(d.class_logits, float), axis=1)
            out[i] = float(np.mean(probs.max(axis=1)))
    return out
