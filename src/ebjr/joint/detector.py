"""The live joint detector: a :class:`~ebjr.joint.model.JointModel` of the detection task.

The student detector runs on every image; a detection router (eq. 14 by
default) scores its detections, and the images scored below the threshold go
to the teacher, as one sub-batch. Nothing here is specific to detection but
the task kind (:class:`~ebjr.tasks.detection.Detection`): the same route, merge,
counts and live threshold as a classifier's joint model, so it is saved,
served and run by ``ebjr predict`` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ebjr._utils.arrays import scatter_rows
from ebjr.exceptions import InputError
from ebjr.joint.model import JointModel
from ebjr.routing import Router
from ebjr.routing.detection import detection_router
from ebjr.scores.detection import Detections
from ebjr.tasks.detection import Detection

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


class JointDetector(JointModel):
    """Student detector on every image; images scored below the threshold go to the teacher.

    Args:
        student, teacher: detectors: anything :func:`~ebjr.adapters.as_adapter` accepts
            whose output for a batch of images is one result per image
            (:class:`~ebjr.scores.detection.Detections`, or dicts with ``boxes``,
            ``labels``, ``scores``, ``class_logits`` and optionally ``coord_energy``).
        threshold: the student answers an image iff its score ``>= threshold``;
            a live knob (:meth:`set_threshold`), read once per batch.
        router: a detection router: a short name of
            :data:`~ebjr.routing.detection.DETECTION_ROUTERS` (default ``energy``,
            eq. 14), a registered name (``detection_energy``) or an instance.
        empty: the rule for images where the student kept no box (for a
            router given by name).
        max_detections: boxes per image in the padded protocol tensors of a server.

    :meth:`predict` returns a :class:`~ebjr.joint.model.JointPrediction` whose
    ``predictions`` hold one ``Detections`` per image.
    """

    def __init__(self, student: Any, teacher: Any, threshold: float,
                 router: str | Router = "energy", *, empty: str | float = "teacher",
                 max_detections: int = 100, **options: Any) -> None:
        params = {} if isinstance(router, Router) else {"empty": empty}
        super().__init__(student, teacher, detection_router(router, **params), threshold,
                         task=Detection(max_detections), **options)
