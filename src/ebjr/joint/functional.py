"""The joint model's split and merge as functions of arrays, shared by every shell.

The student stage ends in a :class:`RoutedBatch` (the student's logits, the
scores, the mask and the routed row indices); the teacher answers the routed
rows, taken with :func:`take_rows`; the task kind (:mod:`ebjr.tasks`) writes
their answers into the student's with :func:`scatter_rows`.
:class:`~ebjr.joint.model.JointModel` (and through it the server's engines) and
:class:`~ebjr.joint.detector.JointDetector` run on these,
on numpy arrays or torch tensors without leaving their device, or on lists of
per-image answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, device_of, into_namespace, namespace, scatter_rows, to_numpy
from ebjr.routing.base import teacher_mask

__all__ = [
    "RoutedBatch",
    "concat_rows",
    "device_of",
    "into_namespace",
    "route_rows",
    "scatter_rows",
    "take_rows",
]


@dataclass
class RoutedBatch:
    """One batch after the student stage, waiting for its routed rows' teacher answers.

    Made by :meth:`JointModel.route`, finished by :meth:`JointModel.merge`.
    ``routed`` holds the row indices the teacher must answer (``k`` of them),
    in the batch's namespace; ``threshold`` is the one value this batch was
    routed with.
    """

    batch: Any
    n: int
    threshold: float
    xp: Any
    s_logits: Array
    scores: Array
    to_teacher: Array
    routed: Array
    k: int
    timings: dict[str, float]


def concat_rows(parts: list[Any]) -> Any:
    """Concatenate batches row-wise (arrays, tensors, lists, or dicts of those)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, dict):
        return {k: concat_rows([p[k] for p in parts]) for k in first}
    if isinstance(first, list | tuple):
        return [row for p in parts for row in p]
    if isinstance(first, np.ndarray):
        return np.concatenate([to_numpy(p) for p in parts], axis=0)
    return namespace(first).concat(parts, axis=0)


def take_rows(batch: Any, index: Any) -> Any:
    """Rows ``index`` of a batch (array, tensor, list, or dict of those), on its device."""
    if isinstance(batch, dict):
        return {k: take_rows(v, index) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return [batch[int(i)] for i in to_numpy(index)]
    if isinstance(batch, np.ndarray):
        return batch[to_numpy(index)]
    return batch[index]


def route_rows(xp: Any, scores: Array, threshold: float) -> tuple[Array, Array]:
    """The routing of one batch: the mask of rows for the teacher (``score < threshold`` or
    ``-inf``) and their indices, in the scores' namespace."""
    to_teacher = teacher_mask(scores, threshold)
    return to_teacher, xp.nonzero(to_teacher)[0]
