"""mAP of detections by pycocotools (COCO's own evaluation, never reimplemented).

Every name of the former ``ebjr.detection`` module is importable from here:
the scores, routers and the joint detector are re-exported from their homes.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ebjr.exceptions import InputError, missing_dependency
from ebjr.joint.detector import JointDetector, joint_detections
from ebjr.routing.detection import DETECTION_ROUTERS, detection_scores
from ebjr.scores.detection import Detections, detection_free_energy, dfl_coordinate_free_energy

__all__ = [
    "DETECTION_ROUTERS",
    "Detections",
    "JointDetector",
    "MapMetric",
    "coco_ground_truth",
    "detection_free_energy",
    "detection_scores",
    "dfl_coordinate_free_energy",
    "evaluate_detection",
    "joint_detections",
    "mean_average_precision",
    "per_image_ap",
]


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
    gt: Any = COCO()  # pycocotools is untyped: its dataset is set by hand
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
    :func:`ebjr.calibration.curve_from_metric` calls at each operating point;
    :meth:`from_coco` takes the ground truth from a COCO annotations file instead.

    COCO's matching of detections to ground truth is done image by image, and the
    routing only decides whose detections an image gets. So pycocotools' per-image
    evaluation runs once for the student and once for the teacher, and each mask only
    picks one of the two records per image and runs pycocotools' accumulation: the
    same numbers as evaluating the joint detections from scratch, without repeating
    the matching at every operating point.
    """

    def __init__(self, student: Sequence[Detections], teacher: Sequence[Detections],
                 targets: Sequence[tuple[Any, Any]] | None, n_classes: int = 0,
                 key: str = "map", *, gt: Any = None, image_ids: Sequence[int] | None = None
                 ) -> None:
        if len(student) != len(teacher):
            raise InputError(f"{len(student)} student and {len(teacher)} teacher images")
        if gt is None:
            if targets is None or len(targets) != len(student):
                raise InputError("targets: expected one (boxes, labels) per image")
            gt, image_ids = _coco(targets, n_classes), None
        ids = list(range(len(student))) if image_ids is None else [int(i) for i in image_ids]
        if len(set(ids)) != len(ids):
            raise InputError("image_ids: expected one row per image, got a repeated image id")
        self.index = 0 if key == "map" else 1
        self._student = _per_image(gt, _results(student, ids), ids)
        self._teacher = _per_image(gt, _results(teacher, ids), ids)
        # pycocotools orders its images by id; row r of the detections is image ids[r]
        self._rows_of_images = np.argsort(ids, kind="stable")
        self._n = len(ids)

    @classmethod
    def from_coco(cls, student: Sequence[Detections], teacher: Sequence[Detections],
                  annotations: str | Path, image_ids: Sequence[int], key: str = "map"
                  ) -> MapMetric:
        """The metric against a COCO annotations file (``images``, ``annotations``,
        ``categories``); row ``i`` of the detections is the image ``image_ids[i]`` and
        their labels are the file's category ids."""
        gt = coco_ground_truth(annotations)
        known = set(gt.getImgIds())
        missing = sorted({int(i) for i in image_ids} - known)
        if missing:
            raise InputError(f"image ids {missing[:5]}{'...' if len(missing) > 5 else ''} are "
                             f"not in {str(annotations)!r} ({len(known)} images)")
        return cls(student, teacher, None, key=key, gt=gt, image_ids=image_ids)

    def __call__(self, to_teacher: Any) -> float:
        mask = np.asarray(to_teacher, dtype=bool)
        if mask.shape != (self._n,):
            raise InputError(f"to_teacher: expected {self._n} booleans, got shape {mask.shape}")
        # per pycocotools image slot (sorted ids), whether the teacher answered that image
        teacher_slot = mask[self._rows_of_images]
        blocks = len(self._student.evalImgs) // self._n  # categories x area ranges
        pick = np.tile(teacher_slot, blocks)
        ev = copy.copy(self._student)
        ev.evalImgs = [t if m else s for s, t, m in
                       zip(self._student.evalImgs, self._teacher.evalImgs, pick, strict=True)]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
            ev.summarize()
        return float(max(ev.stats[self.index], 0.0))  # -1 (no data) -> 0


def _per_image(gt: Any, results: list[dict], image_ids: list[int]) -> Any:
    """pycocotools' per-image evaluation of ``results`` on ``image_ids`` (not accumulated)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes refuses an empty list: a result set with no detection at all
            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                          "categories": list(gt.dataset.get("categories", []))}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
    return ev


def coco_ground_truth(path: str | Path) -> Any:
    """A COCO annotations file read by pycocotools.

    Raises:
        InputError: the file is missing, not JSON, or not COCO-shaped (named).
    """
    import json

    try:
        from pycocotools.coco import COCO
    except ImportError as exc:  # pragma: no cover - pycocotools is in the detection extra
        raise missing_dependency("pycocotools", "detection", "mAP") from exc
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ground-truth file not found: {str(p)!r}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{str(p)!r} is not a JSON file: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in
                                             ("images", "annotations", "categories")):
        raise InputError(f"{str(p)!r} is not COCO annotations: expected an object with "
                         "'images', 'annotations' and 'categories' lists")
    gt: Any = COCO()
    gt.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
    except (KeyError, TypeError) as exc:
        raise InputError(f"{str(p)!r}: a COCO record lacks a field: {exc}") from exc
    return gt


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




def evaluate_detection(student: Sequence[Detections], teacher: Sequence[Detections],
                       metric: Any, routers: Sequence[str] | None = None, *,
                       n_points: int = 11, student_cost: float = 1.0,
                       teacher_cost: float = 1.0, cost_unit: str = "") -> dict[str, Any]:
    """Every detection router's mAP against the teacher's share (``n_points`` operating
    points each, by ``metric``, e.g. :class:`MapMetric`), with the student's and the
    teacher's mAP alone: what ``ebjr evaluate --task detection`` prints."""
    from ebjr.calibration import curve_from_metric
    from ebjr.routing.detection import detection_router

    names = list(routers or DETECTION_ROUTERS)
    curves = {}
    for name in names:
        r = detection_router(name)
        curves[name] = curve_from_metric(r.score(list(student)), metric, n_points=n_points,
                                         quality="mAP", student_cost=student_cost,
                                         teacher_cost=teacher_cost, cost_unit=cost_unit,
                                         router=r.to_spec())
    any_curve = next(iter(curves.values()))
    return {"n": len(student), "student_map": float(any_curve.accuracy[0]),
            "teacher_map": float(any_curve.accuracy[-1]), "curves": curves}
