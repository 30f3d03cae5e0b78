"""Evaluation: routers side by side with the oracle and McNemar's test (``compare``), reports
with plots (``report``), and mAP for detectors (``detection``).

Every name of the former ``ebjr.evaluation`` module is here; the report loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ebjr.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
