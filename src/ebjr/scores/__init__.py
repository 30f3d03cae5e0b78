"""Scores: pure functions of a model's outputs (no state).

``classification`` holds the free energy and the baselines on logits;
``detection`` and ``regression`` the energies of detectors and energy-based
regressors. Every name of the former ``ebjr.scores`` module is here.
"""

from __future__ import annotations

from ebjr._utils.lazy import lazy_getattr
from ebjr.scores.classification import (
    LOG_PROB_ATOL,
    free_energy,
    log_softmax,
    logsumexp,
    looks_like_log_probabilities,
    margin,
    max_logit,
    negative_entropy,
    softmax,
    softmax_confidence,
    softmax_logsumexp,
    specialized_free_energy,
)

__all__ = [
    "LOG_PROB_ATOL",
    "free_energy",
    "log_softmax",
    "logsumexp",
    "looks_like_log_probabilities",
    "margin",
    "max_logit",
    "negative_entropy",
    "softmax",
    "softmax_confidence",
    "softmax_logsumexp",
    "specialized_free_energy",
]

# scipy-backed and detection scores load on first use (``import ebjr`` stays numpy-only)
_LAZY = {
    "RegressionEnergy": "ebjr.scores.regression",
    "regression_free_energy": "ebjr.scores.regression",
    "Detections": "ebjr.scores.detection",
    "detection_free_energy": "ebjr.scores.detection",
    "dfl_coordinate_free_energy": "ebjr.scores.detection",
}
__all__ += sorted(_LAZY)


__getattr__ = lazy_getattr("ebjr.scores", _LAZY)
