"""The joint model: the functional split and merge, the live ``JointModel``, costs.

Every name of the former ``ebjr.joint`` module is here; ``cost`` and the
detector load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ebjr.joint.functional import RoutedBatch, concat_rows, take_rows
from ebjr.joint.model import JointModel, JointPrediction

_LAZY = {"JointDetector": "ebjr.joint.detector", "joint_detections": "ebjr.joint.detector"}

__all__ = [
    "JointModel",
    "JointPrediction",
    "RoutedBatch",
    "concat_rows",
    "take_rows",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ebjr.joint' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
