"""Validation of the arrays and numbers that calibration and evaluation take."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, check_logits, to_numpy
from ebjr.exceptions import InputError

__all__ = ["check_class_map", "check_cost", "check_int", "check_labels", "check_pair",
           "check_probability"]


def check_pair(student_logits: Array, teacher_logits: Array,
               class_map: Any = None) -> tuple[Array, Array]:
    """Validate student and teacher logits of the same inputs (same ``n``; same ``C``, or a
    ``class_map`` taking each student class to a teacher class, see :func:`check_class_map`)."""
    s = check_logits(student_logits, "student_logits")
    t = check_logits(teacher_logits, "teacher_logits")
    if s.shape[0] != t.shape[0]:
        raise InputError(
            f"student and teacher outputs must cover the same inputs: the student has "
            f"{s.shape[0]} rows, the teacher {t.shape[0]}"
        )
    if class_map is not None:
        check_class_map(class_map, s.shape[1], t.shape[1])
    elif s.shape[1] != t.shape[1]:
        raise InputError(
            f"student and teacher must share the label space: the student has {s.shape[1]} "
            f"classes, the teacher {t.shape[1]} (a student over a subset of the teacher's "
            "classes needs a class_map: class_map=..., or --class-map FILE)"
        )
    return s, t


def check_class_map(class_map: Any, n_student: int, n_teacher: int) -> np.ndarray:
    """``class_map[j]``: the teacher class of student class ``j`` (``-1``: none, e.g. a
    specialized student's ``other``), as an int64 array; else a clear error."""
    try:
        m = np.asarray(class_map)
    except (TypeError, ValueError) as exc:
        raise InputError(f"class_map must be a list of integers, got {class_map!r}") from exc
    if m.ndim != 1 or m.dtype.kind not in "iu" or m.shape[0] != n_student:
        raise InputError(
            f"class_map must list one teacher class (or -1) per student class: {n_student} "
            f"integers, got shape {m.shape} of {m.dtype}"
        )
    if m.size and (m.min() < -1 or m.max() >= n_teacher):
        raise InputError(f"class_map values must lie in -1 .. {n_teacher - 1} (the teacher's "
                         f"classes), got {int(m.min())} .. {int(m.max())}")
    return m.astype(np.int64)


def check_labels(labels: Any, n: int, n_classes: int | None, name: str = "labels") -> np.ndarray:
    """Validate integer labels in ``[0, n_classes)`` for ``n`` rows; return int64 numpy.
    ``n_classes=None`` checks only that they are class indices (the classes are known later,
    e.g. a specialized student's file holding the teacher's labels)."""
    y = to_numpy(labels) if not isinstance(labels, list | tuple) else np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"{name} must be a 1-d array of class indices, got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"{name} must have one entry per row: expected {n}, got {y.shape[0]}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError(f"{name} must be whole class indices, got non-integer values")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise InputError(f"{name} must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if n_classes is None:
        if n and y.min() < 0:
            raise InputError(f"{name} must be class indices >= 0, got {int(y.min())}")
        return y
    if n and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)]
        raise InputError(
            f"{name} must lie in [0, {n_classes}) for {n_classes} classes, got values such as "
            f"{bad[:5].tolist()} ({bad.size} out of range)"
        )
    return y


def check_cost(value: Any, name: str, *, positive: bool = False) -> float:
    """A finite, non-negative (or positive) cost."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "positive" if positive else "non-negative"
        raise InputError(f"{name} must be a finite {need} number, got {value!r}")
    return v


def check_probability(value: Any, name: str, *, open_low: bool = False) -> float:
    """A number in ``[0, 1]`` (or ``(0, 1]`` / ``(0, 1)`` where stated)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}") from exc
    lo_ok = v > 0 if open_low else v >= 0
    if not (lo_ok and v <= 1):
        lo = "(0" if open_low else "[0"
        raise InputError(f"{name} must lie in {lo}, 1], got {value!r}")
    return v


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number (Python's or numpy's) in ``[low, high]``, either bound optional;
    booleans are refused (``True`` is no size). The one check of integer arguments.

    >>> check_int(3, "n", 1)
    3
    >>> check_int(True, "n", 1)
    Traceback (most recent call last):
    ebjr.exceptions.InputError: n must be a positive integer, got True
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or \
            (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name} must be {_int_range(low, high)}, got {value!r}")
    return int(value)


def _int_range(low: int | None, high: int | None) -> str:
    if high is not None:
        return f"an integer in [{'-inf' if low is None else low}, {high}]"
    if low is None:
        return "an integer"
    return {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
