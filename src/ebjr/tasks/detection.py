"""Detection: a model's output is one :class:`~ebjr.scores.detection.Detections` per image.

A detector's output for a batch of ``n`` images is a list of ``n`` per-image
results: :class:`Detections`, or dicts with ``boxes`` ``(B, 4)``, ``labels``
``(B,)``, ``scores`` ``(B,)``, ``class_logits`` ``(B, C)`` and optionally
``coord_energy`` ``(B, 4)`` (numpy arrays or torch tensors). The detection
routers score them (eq. 12-14); the joint answer per image is the answering
model's detections; quality is set-level (mAP, :mod:`ebjr.evaluation.detection`).

Over the Open Inference Protocol an answer travels as detection models are
usually served on Triton and KServe: fixed-size padded tensors, ``K =
max_detections`` slots per image (the highest-scoring boxes first), and a count:

- ``num_detections`` INT32 ``[n]``;
- ``detection_boxes`` FP32 ``[n, K, 4]`` (``x1, y1, x2, y2`` in pixels; zeros past the count);
- ``detection_scores`` FP32 ``[n, K]`` (zeros past the count);
- ``detection_classes`` INT64 ``[n, K]`` (``-1`` past the count).

:func:`pad_detections` and :func:`unpad_detections` are the encoding and its inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, scatter_rows, to_numpy
from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError
from ebjr.scores.detection import Detections
from ebjr.tasks.base import Answer, TaskKind

__all__ = ["Detection", "as_detections", "pad_detections", "unpad_detections"]

_FIELDS = ("boxes", "labels", "scores", "class_logits")


def as_detections(item: Any, where: str) -> Detections:
    """One image's result as :class:`Detections` (from a dict of arrays or tensors)."""
    if isinstance(item, Detections):
        d = item
    elif isinstance(item, dict):
        missing = [k for k in _FIELDS if k not in item]
        if missing:
            raise InputError(f"{where}: a detection result needs {list(_FIELDS)} (and "
                             f"optionally coord_energy); it lacks {missing}")
        coord = item.get("coord_energy")
        d = Detections(to_numpy(item["boxes"]).reshape(-1, 4),
                       to_numpy(item["labels"]).astype(np.int64).reshape(-1),
                       to_numpy(item["scores"]).reshape(-1),
                       to_numpy(item["class_logits"]),
                       None if coord is None else to_numpy(coord))
    else:
        raise InputError(f"{where}: expected Detections or a dict of arrays, got "
                         f"{type(item).__name__}")
    for name in ("boxes", "scores", "class_logits", "coord_energy"):
        v = getattr(d, name)
        if v is not None and np.size(v) and not np.isfinite(np.asarray(v, np.float64)).all():
            raise InputError(f"{where}: {name} contains NaN or infinite values")
    return d


class Detection(TaskKind):
    """Object detection (eq. 12-14), one answer per image.

    Args:
        max_detections: the slots per image of the padded protocol tensors (the
            highest-scoring boxes are kept).
    """

    name = "detection"
    scores_kind = "detections"

    def __init__(self, max_detections: int = 100) -> None:
        self.max_detections = check_int(max_detections, "max_detections", 1, 100_000)

    def params(self) -> dict[str, Any]:
        return {"max_detections": self.max_detections}

    def get_router(self, router: Any) -> Any:
        """A detection router: a short name (``energy``, eq. 14), a registered name or an
        instance."""
        from ebjr.routing.detection import detection_router

        return detection_router(router)

    def check_output(self, out: Any, n: int, who: str) -> list[Detections]:
        if not isinstance(out, list | tuple):
            raise InputError(f"the {who} must return one result per image (a list of "
                             f"Detections or dicts), got a {type(out).__name__}")
        if len(out) != n:
            raise InputError(f"the {who} returned {len(out)} results for a batch of {n} "
                             "images; expected one per image")
        return [as_detections(d, f"the {who}'s result for image {i}") for i, d in enumerate(out)]

    def namespace(self, out: Any) -> Any:
        return np  # per-image lists live on the host

    def into(self, t_out: Any, xp: Any, like: Any) -> Any:
        return list(t_out)

    def concat(self, parts: list[Any], xp: Any) -> Any:
        return [d for part in parts for d in part]

    def host(self, out: Any) -> Any:
        return list(out)

    # ------------------------------------------------------------ answers
    def answer(self, xp: Any, out: Array, role: str = "teacher") -> Answer:
        return Answer(list(out))

    def replace(self, xp: Any, answer: Answer, routed: Array, t_out: Array) -> Answer:
        return Answer(scatter_rows(np, list(answer.predictions), to_numpy(routed), list(t_out)))

    def quality(self, predictions: Any, truth: Any) -> np.ndarray:
        raise InputError("a detector's quality is set-level (mAP over the images, "
                         "ebjr.evaluation.detection.coco_map), not per image")

    # ------------------------------------------------------------ transport
    def output_specs(self) -> list[dict[str, Any]]:
        k = self.max_detections
        return [{"name": "num_detections", "datatype": "INT32", "shape": [-1]},
                {"name": "detection_boxes", "datatype": "FP32", "shape": [-1, k, 4]},
                {"name": "detection_scores", "datatype": "FP32", "shape": [-1, k]},
                {"name": "detection_classes", "datatype": "INT64", "shape": [-1, k]}]

    def tensors(self, answer: Any) -> list[tuple[str, np.ndarray]]:
        return list(pad_detections(answer.predictions, self.max_detections).items())

    def columns_for(self, answer: Any) -> dict[str, np.ndarray]:
        t = pad_detections(answer.predictions, self.max_detections)
        n = t["num_detections"].shape[0]
        return {"prediction": t["num_detections"],  # the count per image; the slots beside it
                "detection_boxes": t["detection_boxes"].reshape(n, -1),
                "detection_scores": t["detection_scores"],
                "detection_classes": t["detection_classes"]}


def pad_detections(dets: Sequence[Detections], k: int) -> dict[str, np.ndarray]:
    """Ragged per-image detections as the fixed-size protocol tensors (the top ``k`` boxes
    by score per image)."""
    n = len(dets)
    out = {"num_detections": np.zeros(n, np.int32),
           "detection_boxes": np.zeros((n, k, 4), np.float32),
           "detection_scores": np.zeros((n, k), np.float32),
           "detection_classes": np.full((n, k), -1, np.int64)}
    for i, d in enumerate(dets):
        scores = np.asarray(d.scores, np.float64).reshape(-1)
        top = np.argsort(-scores, kind="stable")[:k]
        m = top.shape[0]
        out["num_detections"][i] = m
        out["detection_boxes"][i, :m] = np.asarray(d.boxes, np.float64).reshape(-1, 4)[top]
        out["detection_scores"][i, :m] = scores[top]
        out["detection_classes"][i, :m] = np.asarray(d.labels).reshape(-1)[top]
    return out


def unpad_detections(tensors: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """The protocol tensors back to one ``{"boxes", "scores", "labels"}`` dict per image."""
    num = np.asarray(tensors["num_detections"]).reshape(-1)
    out = []
    for i, m in enumerate(num.tolist()):
        out.append({"boxes": np.asarray(tensors["detection_boxes"])[i, :m],
                    "scores": np.asarray(tensors["detection_scores"])[i, :m],
                    "labels": np.asarray(tensors["detection_classes"])[i, :m]})
    return out
