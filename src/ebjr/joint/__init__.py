"""The joint model: the functional split and merge, the live ``JointModel``, costs, and
cascades of N models (``Cascade`` on precomputed outputs, ``CascadeModel`` on live ones).

Every name of the former ``ebjr.joint`` module is here; ``cost`` and the
detector load on first use.
"""

from __future__ import annotations

from ebjr._utils.lazy import lazy_getattr
from ebjr.joint.functional import RoutedBatch, concat_rows, take_rows
from ebjr.joint.model import JointModel, JointPrediction

_LAZY = {
    "JointDetector": "ebjr.joint.detector",
    "joint_detections": "ebjr.joint.detector",
    "Cascade": "ebjr.joint.cascade",
    "CascadeModel": "ebjr.joint.cascade_model",
}

__all__ = [
    "JointModel",
    "JointPrediction",
    "RoutedBatch",
    "concat_rows",
    "take_rows",
    *sorted(_LAZY),
]


__getattr__ = lazy_getattr("ebjr.joint", _LAZY)
