"""Calibration: from validation outputs to a threshold.

``curve`` builds the exact trade-off curve; ``targets`` picks a point of it
by target; ``guarantee`` (with ``exact``, its exact test) certifies a drop
with high probability; ``auto`` chooses the score by cross-validation;
``calibrate`` is the one pipeline behind ``ebjr calibrate``. Every name of the
former ``ebjr.calibration`` module is here; the others load on first use.
"""

from __future__ import annotations

from ebjr._utils.lazy import lazy_getattr
from ebjr.calibration.curve import (
    OperatingPoint,
    TradeoffCurve,
    curve_from_loss,
    curve_from_metric,
    curve_from_quality,
    curve_from_scores,
    tradeoff_curve,
)
from ebjr.calibration.targets import (
    HistogramCrossing,
    MaxCost,
    MaxDrop,
    MaxTeacherFraction,
    Selection,
    Target,
    TeacherAccuracy,
    list_targets,
    need_correctness,
    register_target,
    select_threshold,
    target_from_spec,
)

_LAZY = {
    "GuaranteedDrop": "ebjr.calibration.guarantee",
    "AutoRouter": "ebjr.calibration.auto",
    "CalibrationResult": "ebjr.calibration.calibrate",
    "calibrate_outputs": "ebjr.calibration.calibrate",
}

__all__ = [
    "HistogramCrossing",
    "MaxCost",
    "MaxDrop",
    "MaxTeacherFraction",
    "OperatingPoint",
    "Selection",
    "Target",
    "TeacherAccuracy",
    "TradeoffCurve",
    "curve_from_loss",
    "curve_from_metric",
    "curve_from_quality",
    "curve_from_scores",
    "list_targets",
    "need_correctness",
    "register_target",
    "select_threshold",
    "target_from_spec",
    "tradeoff_curve",
    *sorted(_LAZY),
]


__getattr__ = lazy_getattr("ebjr.calibration", _LAZY)
