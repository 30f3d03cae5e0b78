"""The free energy of a detector's output (eq. 12-14 of the paper).

A detector, for routing, is anything that maps a batch of images to one
:class:`Detections` per image: the boxes it *kept* (after its score threshold
and NMS), their labels and confidences, the **class logits of those kept
boxes**, and, if its box head scores coordinates, each coordinate's
regression free energy. Most detectors drop the logits during
post-processing. docs/detection.md says how to keep them for common
families: keep the indices that NMS returns, and gather the pre-activation
class outputs with them.

Per image with ``B`` kept boxes:

- ``F_cls = mean_b -logsumexp(class_logits[b])`` (eq. 12);
- ``F_reg = mean_{b, j} coord_energy[b, j]`` over the 4 coordinates (eq. 13);
- ``F = F_cls + F_reg`` (eq. 14). The router's score is ``-F``: the student
  answers iff ``-F >= t``.

**Images with no kept box** have no energy: the mean over zero boxes is
undefined. By default (``empty="teacher"``) their score is ``-inf``. This is
the library-wide mark for "always the teacher": a student that sees nothing
is not trusted to be right. Pass a number to give them that free energy
instead (e.g. when empty images are common and the student is reliable on
them).

mAP comes from pycocotools (COCO's own evaluation), never reimplemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from ebjr.exceptions import InputError

__all__ = ["Detections", "detection_free_energy", "dfl_coordinate_free_energy"]


@dataclass(frozen=True)
class Detections:
    """One image's kept detections.

    Attributes:
        boxes: ``(B, 4)`` boxes ``x1, y1, x2, y2`` in pixels.
        labels: ``(B,)`` class per box.
        scores: ``(B,)`` confidence per box, as the detector ranks them.
        class_logits: ``(B, C)`` pre-activation class outputs of these boxes
            (softmax logits, or sigmoid logits for one-vs-all heads).
        coord_energy: ``(B, 4)`` regression free energy of each coordinate,
            or ``None`` when the box head gives no scores (then eq. 13 is 0).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_logits: np.ndarray
    coord_energy: np.ndarray | None = None

    def __post_init__(self) -> None:
        b = np.asarray(self.boxes).reshape(-1, 4).shape[0]
        shapes = {
            "labels": np.shape(self.labels),
            "scores": np.shape(self.scores),
            "class_logits": np.shape(self.class_logits)[:1],
        }
        if self.coord_energy is not None:
            shapes["coord_energy"] = np.shape(self.coord_energy)
        for name, shape in shapes.items():
            want = (b, 4) if name == "coord_energy" else (b,)
            if tuple(shape) != want:
                raise InputError(f"Detections.{name} must have shape {want} for {b} boxes, "
                                 f"got {tuple(shape)}")
        logits = np.asarray(self.class_logits)
        if b and (logits.ndim != 2 or logits.shape[1] < 1):
            raise InputError(f"class_logits must be (B, C), got shape {logits.shape}")

    def __len__(self) -> int:
        return int(np.asarray(self.boxes).reshape(-1, 4).shape[0])

    @classmethod
    def empty(cls, n_classes: int) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0),
                   np.zeros((0, n_classes)), np.zeros((0, 4)))


def dfl_coordinate_free_energy(bin_logits: Any, bin_width: float = 1.0) -> np.ndarray:
    """Regression free energy of coordinates predicted as distributions over bins.

    Box heads of the distribution-focal-loss family (GFL, YOLOv8, RT-DETR's
    DFL variants) give, per coordinate, logits over ``R`` bins of width
    ``w``. Their density is constant within a bin, so the integral of eq. 9 is
    exact: ``F = -log sum_r w exp(l_r) = -logsumexp(l) - log w``.

    >>> float(dfl_coordinate_free_energy(np.zeros(4), 0.5))  # -log(4 * 0.5)
    -0.6931471805599453
    """
    lg = np.asarray(bin_logits, dtype=np.float64)
    if lg.ndim < 1 or lg.shape[-1] < 1:
        raise InputError(f"bin_logits must end with a bins axis, got shape {lg.shape}")
    if not bin_width > 0:
        raise InputError(f"bin_width must be > 0, got {bin_width!r}")
    return -np.asarray(special.logsumexp(lg, axis=-1)) - math.log(bin_width)


def detection_free_energy(
    detections: Sequence[Detections],
    *,
    regression: bool = True,
    empty: str | float = "teacher",
) -> np.ndarray:
    """``F = F_cls + F_reg`` per image (eq. 12-14); ``+inf`` for empty images by default.

    Args:
        detections: one :class:`Detections` per image.
        regression: add the coordinates' term (eq. 13) when they carry
            ``coord_energy``.
        empty: ``"teacher"`` gives images without kept boxes ``F = +inf``
            (router score ``-inf``: always the teacher); a number gives them
            that free energy.
    """
    if not (empty == "teacher" or (isinstance(empty, int | float) and math.isfinite(empty))):
        raise InputError(f"empty must be 'teacher' or a finite number, got {empty!r}")
    out = np.empty(len(detections))
    for i, d in enumerate(detections):
        if len(d) == 0:
            out[i] = math.inf if empty == "teacher" else float(empty)
            continue
        logits = np.asarray(d.class_logits, dtype=np.float64)
        f = float(np.mean(-np.asarray(special.logsumexp(logits, axis=1))))
        if regression and d.coord_energy is not None:
            f += float(np.mean(np.asarray(d.coord_energy, dtype=np.float64)))
        out[i] = f
    return out
