"""The live joint detector: the student detector on every image, the teacher on routed ones.

A thin shell over :mod:`ebjr.joint.functional`, as :class:`~ebjr.joint.model.JointModel`
is: the router (one of the registry's detection routers) scores the student's
detections, :func:`~ebjr.joint.functional.route_rows` splits the batch,
:func:`~ebjr.joint.functional.take_rows` gives the teacher its images and
:func:`~ebjr.joint.functional.scatter_rows` merges its answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ebjr.exceptions import InputError
from ebjr.joint.functional import route_rows, scatter_rows, take_rows
from ebjr.joint.knob import LiveThreshold
from ebjr.routing import Router
from ebjr.routing.detection import detection_router
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
    routed = np.flatnonzero(mask)
    return scatter_rows(np, list(student), routed, [teacher[int(i)] for i in routed])


class JointDetector(LiveThreshold):
    """Student detector on every image; images scored below the threshold go to the teacher.

    Args:
        student, teacher: callables ``images -> list[Detections]``.
        threshold: the student answers an image iff its score ``>= threshold``;
            a live knob (:meth:`set_threshold`), read once per batch.
        router: a detection router: a short name of
            :data:`~ebjr.routing.detection.DETECTION_ROUTERS` (default ``energy``,
            eq. 14), a registered name (``detection_energy``) or an instance.
        empty: the rule for images where the student kept no box (for a
            router given by name).
    """

    def __init__(self, student: Callable[[Any], Sequence[Detections]],
                 teacher: Callable[[Any], Sequence[Detections]], threshold: float,
                 router: str | Router = "energy", *, empty: str | float = "teacher") -> None:
        params = {} if isinstance(router, Router) else {"empty": empty}
        self.router = detection_router(router, **params)
        self.student, self.teacher = student, teacher
        LiveThreshold.__init__(self, threshold)

    def predict(self, images: Any) -> tuple[list[Detections], np.ndarray]:
        """The joint detections and the mask of images the teacher answered."""
        threshold = self._threshold  # one read: the whole batch uses this value
        s = list(self.student(images))
        mask, routed = route_rows(np, self.router.score(s), threshold)
        if not routed.size:
            return s, np.asarray(mask, dtype=bool)
        t = list(self.teacher(take_rows(images, routed)))
        if len(t) != routed.size:
            raise InputError(f"the teacher returned {len(t)} results for {routed.size} images")
        return scatter_rows(np, s, routed, t), np.asarray(mask, dtype=bool)
