"""Strict JSON: no NaN or Infinity tokens, numpy scalars as Python numbers."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

__all__ = ["MAX_DEPTH", "dumps", "json_safe", "loads_strict"]

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


#: deepest nesting a document read by :func:`loads_strict` may have
MAX_DEPTH = 32
#: largest integer magnitude it accepts (beyond: not a count, size or index)
MAX_INT = 2**63


def loads_strict(text: str | bytes, source: str, error: type[Exception]) -> Any:
    """Parse strict JSON: no ``NaN``/``Infinity`` tokens, no number that overflows a double
    or an int64, no duplicate keys, nesting at most :data:`MAX_DEPTH`.

    Raises:
        error: naming ``source`` and what was wrong.
    """

    def constant(token: str) -> Any:
        raise error(f"{source} is not strict JSON: {token} is not a JSON number")

    def number(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            raise error(f"{source} is not strict JSON: {token[:40]} overflows a double")
        return value

    def integer(token: str) -> int:
        if len(token) > 20 or abs(int(token)) > MAX_INT:
            raise error(f"{source}: the integer {token[:40]} is out of range (|n| <= 2**63)")
        return int(token)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise error(f"{source} is not strict JSON: the key {k!r} appears twice")
            out[k] = v
        return out

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number,
                           parse_int=integer, object_pairs_hook=pairs)
    except RecursionError:
        raise error(f"{source} nests deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{source} is not valid JSON: {exc}") from None
    stack = [(value, 1)]
    while stack:  # nesting, without recursion
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                raise error(f"{source} nests deeper than {MAX_DEPTH} levels")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return value
