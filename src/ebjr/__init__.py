"""ebjr: energy-based joint reasoning.

A fast student answers most inputs; the inputs it is unfit for, judged by its
free energy (or another score), go to an accurate teacher. This package
computes the scores, the full accuracy-vs-cost trade-off, thresholds chosen
by target (with a high-probability guarantee where asked), the evaluation
against baselines and the oracle, and reports.

``import ebjr`` is light: it loads numpy only; modules that need scipy,
matplotlib or torch are imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ebjr._version import __version__
from ebjr.exceptions import (
    BundleError,
    EBJRError,
    InputError,
    LogProbabilityInputError,
    MissingDependencyError,
    NotFittedError,
    TargetUnreachableError,
    UnknownNameError,
    UnknownRouterError,
)
from ebjr.routing import Router, get_router, list_routers
from ebjr.scores import (
    free_energy,
    margin,
    max_logit,
    negative_entropy,
    softmax_confidence,
    softmax_logsumexp,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from ebjr.adapters.base import as_adapter
    from ebjr.adapters.builders import list_builders, model_builder
    from ebjr.bundle import RoutingBundle, read_bundle, write_bundle
    from ebjr.bundle.outputs import load_outputs
    from ebjr.bundle.persist import load, save
    from ebjr.calibration import (
        HistogramCrossing,
        MaxCost,
        MaxDrop,
        MaxTeacherFraction,
        OperatingPoint,
        TeacherAccuracy,
        TradeoffCurve,
        curve_from_loss,
        curve_from_metric,
        curve_from_quality,
        curve_from_scores,
        select_threshold,
        tradeoff_curve,
    )
    from ebjr.calibration.auto import AutoRouter
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.calibration.guarantee import GuaranteedDrop
    from ebjr.calibration.monitor import GuaranteeMonitor
    from ebjr.calibration.shadow_plan import ShadowPlan
    from ebjr.calibration.zoo import search_cascade
    from ebjr.evaluation import evaluate, mcnemar
    from ebjr.evaluation.report import write_report
    from ebjr.joint.cascade import Cascade, CascadeResult
    from ebjr.joint.cascade_model import CascadeModel, CascadePrediction
    from ebjr.joint.cost import count_flops, joint_cost, measure_latency
    from ebjr.joint.detector import JointDetector
    from ebjr.joint.model import JointModel, JointPrediction
    from ebjr.scores.detection import Detections, detection_free_energy
    from ebjr.scores.regression import regression_free_energy
    from ebjr.tasks import Classification, Regression

# name -> module, imported on first attribute access (keeps `import ebjr` fast)
_LAZY = {
    "tradeoff_curve": "ebjr.calibration",
    "curve_from_scores": "ebjr.calibration",
    "curve_from_quality": "ebjr.calibration",
    "curve_from_loss": "ebjr.calibration",
    "curve_from_metric": "ebjr.calibration",
    "regression_free_energy": "ebjr.scores.regression",
    "detection_free_energy": "ebjr.scores.detection",
    "Detections": "ebjr.scores.detection",
    "JointDetector": "ebjr.joint.detector",
    "select_threshold": "ebjr.calibration",
    "TradeoffCurve": "ebjr.calibration",
    "OperatingPoint": "ebjr.calibration",
    "TeacherAccuracy": "ebjr.calibration",
    "MaxDrop": "ebjr.calibration",
    "MaxTeacherFraction": "ebjr.calibration",
    "MaxCost": "ebjr.calibration",
    "HistogramCrossing": "ebjr.calibration",
    "GuaranteedDrop": "ebjr.calibration.guarantee",
    "GuaranteeMonitor": "ebjr.calibration.monitor",
    "ShadowPlan": "ebjr.calibration.shadow_plan",
    "AutoRouter": "ebjr.calibration.auto",
    "evaluate": "ebjr.evaluation",
    "mcnemar": "ebjr.evaluation",
    "write_report": "ebjr.evaluation.report",
    "RoutingBundle": "ebjr.bundle",
    "read_bundle": "ebjr.bundle",
    "write_bundle": "ebjr.bundle",
    "load_outputs": "ebjr.bundle.outputs",
    "JointModel": "ebjr.joint.model",
    "JointPrediction": "ebjr.joint.model",
    "save": "ebjr.bundle.persist",
    "model_builder": "ebjr.adapters.builders",
    "list_builders": "ebjr.adapters.builders",
    "load": "ebjr.bundle.persist",
    "as_adapter": "ebjr.adapters.base",
    "count_flops": "ebjr.joint.cost",
    "measure_latency": "ebjr.joint.cost",
    "joint_cost": "ebjr.joint.cost",
    "calibrate_outputs": "ebjr.calibration.calibrate",
    "search_cascade": "ebjr.calibration.zoo",
    "Cascade": "ebjr.joint.cascade",
    "CascadeResult": "ebjr.joint.cascade",
    "CascadeModel": "ebjr.joint.cascade_model",
    "CascadePrediction": "ebjr.joint.cascade_model",
    "Classification": "ebjr.tasks",
    "Regression": "ebjr.tasks",
}

__all__ = [
    "BundleError",
    "EBJRError",
    "InputError",
    "LogProbabilityInputError",
    "MissingDependencyError",
    "NotFittedError",
    "Router",
    "TargetUnreachableError",
    "UnknownNameError",
    "UnknownRouterError",
    "__version__",
    "free_energy",
    "get_router",
    "list_routers",
    "margin",
    "max_logit",
    "negative_entropy",
    "softmax_confidence",
    "softmax_logsumexp",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ebjr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API (``__all__``), lazy names included: what ``dir(ebjr)`` shows."""
    return sorted(__all__)
