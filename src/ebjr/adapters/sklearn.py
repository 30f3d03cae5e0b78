"""A scikit-learn classifier.

What "logits" means here, and so what the energy means:

- Linear models (``LogisticRegression``, ``SGDClassifier``, ``LinearSVC``,
  ...) expose ``decision_function``: per-class scores whose softmax is the
  model's probability (exactly so for multinomial logistic regression). These
  are logits; the energy works on them.
- ``MLPClassifier`` has no ``decision_function``; the adapter computes the
  output layer *before* the softmax from the fitted weights (``coefs_``,
  ``intercepts_``), which are its logits.
- Anything else (trees, forests, boosting, ``predict_proba`` only) exposes
  probabilities alone. The adapter then returns ``log(predict_proba)`` and sets
  ``returns_log_probs``: every row's logsumexp is 0, so the free energy is the
  same for every input and the energy router refuses it. Use ``softmax``,
  ``entropy`` or ``margin`` for such students.

Binary classifiers' single decision value ``d`` becomes the two logits
``[0, d]``, whose softmax is ``sigmoid(d)``, the model's probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, to_numpy
from ebjr.adapters.base import Adapter
from ebjr.exceptions import InputError

__all__ = ["SklearnAdapter", "mlp_logits"]

_ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def mlp_logits(mlp: Any, x: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs of a fitted ``MLPClassifier`` from its public weights."""
    h = x
    last = len(mlp.coefs_) - 1
    act = _ACTIVATIONS[mlp.activation]
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        h = h @ w + b
        if i < last:
            h = act(h)
    return h


class SklearnAdapter(Adapter):
    """Wrap a fitted scikit-learn classifier.

    Args:
        estimator: the fitted classifier (a ``Pipeline`` works too).
        method: ``"auto"`` (``decision_function``, else the MLP's logits, else
            ``log(predict_proba)``), ``"decision_function"``, ``"mlp_logits"``
            or ``"predict_proba"``.
    """

    kind = "sklearn"
    METHODS = ("auto", "decision_function", "mlp_logits", "predict_proba")

    def __init__(self, estimator: Any, *, method: str = "auto") -> None:
        if method not in self.METHODS:
            raise InputError(f"method must be one of {', '.join(self.METHODS)}, got {method!r}")
        if not hasattr(estimator, "classes_"):
            raise InputError(
                f"the {type(estimator).__name__} is not fitted (no classes_): fit it first; "
                "ebjr never trains or refits a user's model"
            )
        if method == "auto":
            if hasattr(estimator, "decision_function"):
                method = "decision_function"
            elif hasattr(estimator, "coefs_") and hasattr(estimator, "intercepts_"):
                method = "mlp_logits"
            else:
                method = "predict_proba"
        if method == "predict_proba" and not hasattr(estimator, "predict_proba"):
            raise InputError(f"{type(estimator).__name__} has no predict_proba")
        self.estimator = estimator
        self.method = method
        self.returns_log_probs = method == "predict_proba"

    def forward(self, batch: Any) -> Array:
        x = to_numpy(batch)
        if self.method == "decision_function":
            d = np.asarray(self.estimator.decision_function(x), dtype=np.float64)
            if d.ndim == 1:
                d = np.stack([np.zeros_like(d), d], axis=1)
            return d
        if self.method == "mlp_logits":
            z = mlp_logits(self.estimator, x.reshape(x.shape[0], -1).astype(np.float64))
            if z.shape[1] == 1:
                z = np.concatenate([np.zeros_like(z), z], axis=1)
            return z
        p = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
        with np.errstate(divide="ignore"):
            logp = np.log(p)
        # a probability of exactly 0 would be -inf: floor it at the smallest normal double
        return np.maximum(logp, np.log(np.finfo(np.float64).tiny))

    def __repr__(self) -> str:
        return f"SklearnAdapter({type(self.estimator).__name__}, method={self.method!r})"
