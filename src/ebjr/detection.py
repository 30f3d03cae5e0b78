"""Energy-based joint reasoning for object detection (eq. 12-14 of the paper).

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

import contextlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr.exceptions import InputError, missing_dependency
from ebjr.routers import check_threshold, teacher_mask

__all__ = [
    "DETECTION_ROUTERS",
    "Detections",
    "JointDetector",
    "detection_free_energy",
    "detection_scores",
    "dfl_coordinate_free_energy",
    "joint_detections",
    "mean_average_precision",
    "per_image_ap",
]


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
    top = lg.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(lg - top).sum(axis=-1)) + top[..., 0]
    return -lse - math.log(bin_width)


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1, keepdims=True)
    return np.log(np.exp(a - top).sum(axis=1)) + top[:, 0]


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
        f = float(np.mean(-_logsumexp_rows(logits)))
        if regression and d.coord_energy is not None:
            f += float(np.mean(np.asarray(d.coord_energy, dtype=np.float64)))
        out[i] = f
    return out


def _softmax_rows(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


#: score name -> description; every score is "higher = the student is fit"
DETECTION_ROUTERS = {
    "energy": "-(F_cls + F_reg), eq. 14",
    "energy_cls": "-F_cls, eq. 12 only",
    "mean_confidence": "mean detection confidence of the kept boxes",
    "min_confidence": "confidence of the least confident kept box",
    "mean_softmax": "mean max-softmax probability of the kept boxes' class logits",
}


def detection_scores(
    detections: Sequence[Detections], router: str = "energy", *, empty: str | float = "teacher"
) -> np.ndarray:
    """Routing score per image (higher = the student is fit); ``-inf`` for empty images.

    ``router`` is one of :data:`DETECTION_ROUTERS`. With ``empty`` a number,
    empty images get score ``-empty`` for the energy routers and ``0`` for
    the confidence routers.
    """
    if router not in DETECTION_ROUTERS:
        raise InputError(f"unknown detection router {router!r}; known: "
                         f"{', '.join(DETECTION_ROUTERS)}")
    if router in ("energy", "energy_cls"):
        return -detection_free_energy(detections, regression=router == "energy", empty=empty)
    out = np.empty(len(detections))
    for i, d in enumerate(detections):
        if len(d) == 0:
            out[i] = -math.inf if empty == "teacher" else 0.0
        elif router == "mean_confidence":
            out[i] = float(np.mean(d.scores))
        elif router == "min_confidence":
            out[i] = float(np.min(d.scores))
        else:
            out[i] = float(np.mean(_softmax_rows(np.asarray(d.class_logits, float)).max(axis=1)))
    return out


def joint_detections(
    student: Sequence[Detections], teacher: Sequence[Detections], to_teacher: Any
) -> list[Detections]:
    """Per image, the teacher's detections where ``to_teacher`` is true, else the student's."""
    mask = np.asarray(to_teacher, dtype=bool)
    if not (len(student) == len(teacher) == mask.shape[0]):
        raise InputError(f"need one entry per image: {len(student)} student, {len(teacher)} "
                         f"teacher, {mask.shape[0]} mask")
    return [t if m else s for s, t, m in zip(student, teacher, mask, strict=True)]


# ---------------------------------------------------------------- mAP (pycocotools)
def _coco(targets: Sequence[tuple[Any, Any]], n_classes: int) -> Any:
    try:
        from pycocotools.coco import COCO
    except ImportError as exc:  # pragma: no cover - pycocotools is in the detection extra
        raise missing_dependency("pycocotools", "detection", "mAP") from exc
    images, anns = [], []
    for i, (boxes, labels) in enumerate(targets):
        images.append({"id": i, "width": 1, "height": 1})
        for b, c in zip(np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels), strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c),
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c} for c in range(n_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _results(detections: Sequence[Detections], image_ids: Sequence[int]) -> list[dict]:
    res = []
    for i, d in zip(image_ids, detections, strict=True):
        for b, c, s in zip(np.asarray(d.boxes, float).reshape(-1, 4), d.labels, d.scores,
                           strict=True):
            res.append({"image_id": int(i), "category_id": int(c),
                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                 float(b[3] - b[1])], "score": float(s)})
    return res


def _evaluate(gt: Any, results: list[dict], image_ids: list[int] | None) -> np.ndarray:
    from pycocotools.cocoeval import COCOeval

    if not results:
        return np.zeros(12)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.maximum(np.asarray(ev.stats, dtype=np.float64), 0.0)  # -1 (no data) -> 0


def mean_average_precision(
    detections: Sequence[Detections], targets: Sequence[tuple[Any, Any]], n_classes: int
) -> dict[str, float]:
    """COCO mAP of ``detections`` against ``targets`` (``(boxes, labels)`` per image).

    Returns ``map`` (IoU 0.50:0.95) and ``map_50``, computed by pycocotools.
    """
    if len(detections) != len(targets):
        raise InputError(f"{len(detections)} detections for {len(targets)} images")
    gt = _coco(targets, n_classes)
    stats = _evaluate(gt, _results(detections, range(len(detections))), None)
    return {"map": float(stats[0]), "map_50": float(stats[1])}


class MapMetric:
    """mAP of the joint detections for a routing mask, with the ground truth indexed once.

    ``MapMetric(student, teacher, targets, C)(to_teacher)`` is what
    :func:`ebjr.calibration.curve_from_metric` calls at each operating point.
    """

    def __init__(self, student: Sequence[Detections], teacher: Sequence[Detections],
                 targets: Sequence[tuple[Any, Any]], n_classes: int, key: str = "map") -> None:
        self.gt = _coco(targets, n_classes)
        ids = list(range(len(targets)))
        self.student = [_results([d], [i]) for i, d in zip(ids, student, strict=True)]
        self.teacher = [_results([d], [i]) for i, d in zip(ids, teacher, strict=True)]
        self.index = 0 if key == "map" else 1

    def __call__(self, to_teacher: Any) -> float:
        mask = np.asarray(to_teacher, dtype=bool)
        res = [r for s, t, m in zip(self.student, self.teacher, mask, strict=True)
               for r in (t if m else s)]
        return float(_evaluate(self.gt, res, None)[self.index])


def per_image_ap(detections: Sequence[Detections], targets: Sequence[tuple[Any, Any]],
                 n_classes: int) -> np.ndarray:
    """COCO AP (IoU 0.50:0.95) of each image on its own, by pycocotools (for oracle orderings)."""
    gt = _coco(targets, n_classes)
    out = np.zeros(len(detections))
    for i, d in enumerate(detections):
        if len(np.asarray(targets[i][1])) == 0:
            out[i] = 1.0 if len(d) == 0 else 0.0
            continue
        out[i] = _evaluate(gt, _results([d], [i]), [i])[0]
    return out


# ---------------------------------------------------------------- the live joint detector
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
