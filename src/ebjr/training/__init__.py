"""Training students: supervised classifiers (``classifier``), distillation from a teacher
(``distill``), specialized top-C students (``specialized``) and energy-based regressors
(``regressor``). Needs torch (``pip install 'ebjr[torch]'``).

Every name of the former ``ebjr.training`` module is here.
"""

from ebjr.training.classifier import (
    TrainResult,
    predict_logits,
    soft_cross_entropy,
    train_classifier,
)

__all__ = ["TrainResult", "predict_logits", "soft_cross_entropy", "train_classifier"]
