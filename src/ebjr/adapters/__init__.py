"""Adapters: turn a model of any kind into ``batch -> logits``.

One file per kind; optional dependencies are imported only when an adapter of
that kind is built, and a missing one is a clear error naming the pip extra.

>>> import numpy as np
>>> student = as_adapter(lambda x: np.asarray(x, dtype=float) @ np.eye(3))
>>> student(np.eye(3)[:2]).shape
(2, 3)
"""

from __future__ import annotations

from typing import Any

from ebjr.adapters.base import Adapter, as_adapter, register_adapter
from ebjr.adapters.callable import CallableAdapter

__all__ = [
    "Adapter",
    "CallableAdapter",
    "OnnxAdapter",
    "SklearnAdapter",
    "TorchAdapter",
    "TransformersAdapter",
    "as_adapter",
    "register_adapter",
]

_LAZY = {
    "TorchAdapter": "ebjr.adapters.torch_module",
    "OnnxAdapter": "ebjr.adapters.onnx",
    "SklearnAdapter": "ebjr.adapters.sklearn",
    "TransformersAdapter": "ebjr.adapters.transformers",
}


def __getattr__(name: str) -> Any:
    import importlib

    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ebjr.adapters' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
