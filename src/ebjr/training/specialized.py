"""Specialized students: the top-C classes of skewed traffic plus one ``other`` class.

A specialized student knows only the ``C`` most frequent classes; every other
class is folded into one extra class, ``other`` (the paper's eq. 16-18). Its
label space is ``0 .. C-1`` for the kept classes (most frequent first) and
``C`` for ``other``. :class:`ClassMap` holds the mapping both ways:

>>> import numpy as np
>>> cmap = ClassMap.from_labels(np.array([3, 3, 3, 7, 7, 1, 0]), n_top=2, n_classes=10)
>>> cmap.top.tolist(), cmap.other_index
([3, 7], 2)
>>> cmap.to_student(np.array([7, 3, 5])).tolist()
[1, 0, 2]
>>> cmap.to_teacher(np.array([1, 0])).tolist()
[7, 3]

The router (:class:`ebjr.routing.SpecializedRouter`) scores with the free
energy over the ``C`` real classes only (eq. 17), and a row whose argmax is
``other`` always goes to the teacher (eq. 16). The joint model maps the
student's answers into the teacher's label space with
``class_map=cmap.joint_class_map()`` (eq. 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError

__all__ = ["ClassMap", "top_classes"]


def top_classes(counts: Any, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` most frequent classes of a histogram, most frequent first.

    Ties are broken by the smaller class index, so the choice is deterministic.

    Args:
        counts: per-class counts (or frequencies), shape ``(n_classes,)``.
        n_top: how many classes to keep, ``1 <= n_top < n_classes``.
    """
    c = np.asarray(to_numpy(counts), dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise InputError(f"counts must be a 1-d histogram over >= 2 classes, got shape {c.shape}")
    if np.any(~np.isfinite(c)) or np.any(c < 0):
        raise InputError("counts must be finite and non-negative")
    check_int(n_top, "n_top", 1, c.size - 1)
    order = np.lexsort((np.arange(c.size), -c))  # by count descending, then index ascending
    return order[: int(n_top)].astype(np.int64)


@dataclass(frozen=True)
class ClassMap:
    """The label maps of a specialized student.

    Attributes:
        top: the teacher classes the student keeps, most frequent first; student
            class ``j`` is teacher class ``top[j]``.
        n_classes: classes in the teacher's label space.
    """

    top: np.ndarray
    n_classes: int

    def __post_init__(self) -> None:
        top = np.asarray(self.top, dtype=np.int64)
        if top.ndim != 1 or top.size < 1:
            raise InputError("top must list at least one class")
        if np.unique(top).size != top.size:
            raise InputError(f"top must not repeat classes, got {top.tolist()}")
        if top.min() < 0 or top.max() >= self.n_classes or top.size >= self.n_classes:
            raise InputError(
                f"top must be fewer than {self.n_classes} distinct classes in "
                f"[0, {self.n_classes}), got {top.tolist()}"
            )
        object.__setattr__(self, "top", top)

    @classmethod
    def from_labels(cls, labels: Any, n_top: int, n_classes: int) -> ClassMap:
        """The top-``n_top`` classes of a label sample (training data or logged traffic)."""
        y = np.asarray(to_numpy(labels))
        if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "iu":
            raise InputError("labels must be a non-empty 1-d array of class indices")
        if y.min() < 0 or y.max() >= n_classes:
            raise InputError(f"labels must lie in [0, {n_classes})")
        return cls(top_classes(np.bincount(y, minlength=n_classes), n_top), n_classes)

    @property
    def n_top(self) -> int:
        return int(self.top.size)

    @property
    def other_index(self) -> int:
        """The student's ``other`` class: the last one, ``C``."""
        return self.n_top

    def to_student(self, labels: Any) -> np.ndarray:
        """Teacher-space labels -> student labels (``other`` for classes not kept)."""
        y = np.asarray(to_numpy(labels), dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= self.n_classes):
            bad = y[(y < 0) | (y >= self.n_classes)]
            raise InputError(
                f"labels must lie in [0, {self.n_classes}), got values such as {bad[:5].tolist()}"
            )
        lookup = np.full(self.n_classes, self.other_index, dtype=np.int64)
        lookup[self.top] = np.arange(self.n_top)
        return lookup[y]

    def to_teacher(self, student_labels: Any) -> np.ndarray:
        """Student labels of kept classes -> teacher labels (``other`` has none: an error)."""
        j = np.asarray(to_numpy(student_labels), dtype=np.int64)
        if j.size and (j.min() < 0 or j.max() >= self.n_top):
            raise InputError(
                f"student labels must be kept classes in [0, {self.n_top}); the 'other' class "
                f"({self.other_index}) has no teacher label"
            )
        return self.top[j]

    def joint_class_map(self) -> list[int]:
        """``class_map`` for :class:`~ebjr.joint.JointModel`: kept classes, then -1 for other."""
        return [*self.top.tolist(), -1]

    def to_dict(self) -> dict[str, Any]:
        return {"top": self.top.tolist(), "n_classes": int(self.n_classes)}
