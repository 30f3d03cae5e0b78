"""Array helpers shared by scores, routers and calibration.

Everything here works on any array the ``array-api-compat`` package knows
(numpy, torch, cupy, ...) and never moves data off its device; only
:func:`to_numpy` does, and it is used on the offline paths alone.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import is_torch_array

from ebjr.exceptions import InputError

Array = Any  # an array-API compatible array (numpy.ndarray, torch.Tensor, ...)

__all__ = ["Array", "check_logits", "device_of", "into_namespace", "namespace", "scatter_rows",
           "to_numpy"]


def namespace(*arrays: Array) -> Any:
    """Return the array-API namespace of ``arrays`` (numpy for lists and scalars)."""
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = ", ".join(sorted({type(a).__name__ for a in arrays}))
        raise InputError(
            f"expected numpy arrays or torch tensors, got {kinds}; convert with numpy.asarray"
        ) from exc


def _as_array(x: Array, name: str) -> Array:
    if isinstance(x, list | tuple):
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be a rectangular array of numbers: {exc}") from exc
    if array_api_compat.is_array_api_obj(x):
        return x
    raise InputError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def check_logits(logits: Array, name: str = "logits", *, min_classes: int = 2) -> Array:
    """Validate a ``(n, C)`` block of logits and return it as an array.

    Args:
        logits: the model outputs, shape ``(n, C)``, real floating point.
        name: how to call the argument in error messages.
        min_classes: smallest ``C`` accepted.

    Returns:
        ``logits`` itself (a list is turned into a float64 numpy array).

    Raises:
        InputError: wrong rank, no rows, fewer than ``min_classes`` columns,
            a non-floating dtype, or any NaN or infinite value.
    """
    x = _as_array(logits, name)
    xp = namespace(x)
    if x.ndim != 2:
        raise InputError(
            f"{name} must have shape (n_samples, n_classes), got an array of shape {tuple(x.shape)}"
        )
    n, c = x.shape
    if n == 0:
        raise InputError(f"{name} is empty: expected at least one row, got shape {(n, c)}")
    if c < min_classes:
        raise InputError(f"{name} must have at least {min_classes} classes (columns), got {c}")
    if not xp.isdtype(x.dtype, "real floating"):
        raise InputError(f"{name} must hold real floating-point values, got dtype {x.dtype}")
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(xp.any(~finite, axis=1), xp.int64)))
        raise InputError(
            f"{name} contains NaN or infinite values in {bad} of {n} rows; "
            "a model that emits them must be fixed before routing"
        )
    return x


def to_numpy(x: Array, dtype: Any = None) -> np.ndarray:
    """Copy any supported array to a host numpy array (offline paths only)."""
    if isinstance(x, np.ndarray):
        return x if dtype is None else x.astype(dtype, copy=False)
    if array_api_compat.is_torch_array(x):
        x = x.detach().cpu()
    out = np.asarray(x)
    return out if dtype is None else out.astype(dtype, copy=False)


def scatter_rows(xp: Any, base: Any, index: Any, values: Any) -> Any:
    """A copy of ``base`` with rows ``index`` replaced by ``values`` (arrays, or lists of
    per-row answers such as one ``Detections`` per image)."""
    if isinstance(base, list):
        out_list = list(base)
        idx = to_numpy(index)
        if len(values) != idx.shape[0]:
            raise InputError(f"{len(values)} answers for {idx.shape[0]} routed rows")
        for i, v in zip(idx, values, strict=True):
            out_list[int(i)] = v
        return out_list
    if is_torch_array(base) and is_torch_array(values) and values.dtype == base.dtype:
        return base.index_put((index,), values)  # copy and write in one call (hot path)
    out = xp.asarray(base, copy=True)
    if values.dtype != out.dtype:
        values = xp.astype(values, out.dtype)
    out[index, ...] = values
    return out


def device_of(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def into_namespace(x: Array, xp: Any, like: Array) -> Array:
    """``x`` as an array of ``like``'s namespace and device (a no-op when it already is)."""
    if namespace(x) is xp:
        dev = device_of(like)
        return x if device_of(x) == dev else xp.asarray(x, device=dev)
    host = to_numpy(x)
    if isinstance(like, np.ndarray):
        return host
    return xp.asarray(host, device=device_of(like))
