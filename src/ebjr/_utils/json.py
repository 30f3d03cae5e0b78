"""Strict JSON: no NaN or Infinity tokens, numpy scalars as Python numbers."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

__all__ = ["dumps", "json_safe"]

_MAX = sys.float_info.max


def json_safe(value: Any) -> Any:
    """Recursively replace ``±inf`` by ``±max float`` and NaN by ``None`` for strict JSON."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return _MAX if value > 0 else -_MAX
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens) of ``value``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
