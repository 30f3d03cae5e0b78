"""The live joint detector: the student detector on every image, the teacher on routed ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ebjr.exceptions import InputError
from ebjr.routing import check_threshold, teacher_mask
from ebjr.routing.detection import DETECTION_ROUTERS, detection_scores
from ebjr.scores.detection import Detections

__all__ = ["JointDetector", "joint_detections"]


def joint_detections(
    student: Sequence[Detections], teacher: Sequence[Detections], to_teacher: Any
) -> list[Detections]:
    """Per image, the teacher's detections where ``to_teacher`` is true, else the student's."""
    mask = np.asarray(to_teacher, dtype=bool)
    if not (len(student) == len(teacher) == mask.shape[0]):
        raise InputError(f"need one entry per image: {len(student)} student, {len(teacher)} "
                         f"teacher, {mask.shape[0]} mask")
    return [t if m else s for s, t, m in zip(student, teacher, mask, strict=True)]


class JointDetector:
    """Student detector on every image; images scored below the threshold go to the teacher.

    Args:
        student, teacher: callables ``images -> list[Detections]``.
        threshold: the student answers an image iff its score ``>= threshold``.
        router: one of :data:`DETECTION_ROUTERS` (default ``energy``, eq. 14).
        empty: the rule for images where the student kept no box.
    """

    def __init__(self, student: Callable[[Any], Sequence[Detections]],
                 teacher: Callable[[Any], Sequence[Detections]], threshold: float,
                 router: str = "energy", *, empty: str | float = "teacher") -> None:
        if router not in DETECTION_ROUTERS:
            raise InputError(f"unknown detection router {router!r}")
        self.student, self.teacher = student, teacher
        self.threshold = check_threshold(threshold)
        self.router, self.empty = router, empty

    def predict(self, images: Any) -> tuple[list[Detections], np.ndarray]:
        """The joint detections and the mask of images the teacher answered."""
        s = list(self.student(images))
        scores = detection_scores(s, self.router, empty=self.empty)
        mask = np.asarray(teacher_mask(scores, self.threshold), dtype=bool)
        out = list(s)
        idx = np.flatnonzero(mask)
        if idx.size:
            t = list(self.teacher(images[idx]))
            if len(t) != idx.size:
                raise InputError(f"the teacher returned {len(t)} results for {idx.size} images")
            for j, det in zip(idx, t, strict=True):
                out[j] = det
        return out, mask
