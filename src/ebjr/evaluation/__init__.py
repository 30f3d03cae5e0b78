"""Evaluation: routers side by side with the oracle and McNemar's test (``compare``), reports
with plots (``report``), and mAP for detectors (``detection``).

Every name of the former ``ebjr.evaluation`` module is here; the report loads on first use.
"""

from __future__ import annotations

from ebjr._utils.lazy import lazy_getattr
from ebjr.evaluation.compare import (
    DEFAULT_ROUTERS,
    Evaluation,
    McNemarResult,
    OraclePoint,
    OracleResult,
    RandomSummary,
    evaluate,
    joint_predictions,
    mcnemar,
    oracle,
)

_LAZY = {"write_report": "ebjr.evaluation.report"}

__all__ = [
    "DEFAULT_ROUTERS",
    "Evaluation",
    "McNemarResult",
    "OraclePoint",
    "OracleResult",
    "RandomSummary",
    "evaluate",
    "joint_predictions",
    "mcnemar",
    "oracle",
    *sorted(_LAZY),
]


__getattr__ = lazy_getattr("ebjr.evaluation", _LAZY)
