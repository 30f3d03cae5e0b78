"""What several commands share: the pair of outputs files and their labels."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_pair_args", "add_trust_args", "load_pair"]


def add_trust_args(p: Any) -> None:
    """``--allow-factory NAME`` and ``--allow-torchscript``: what a bundle may run besides
    ebjr's registered model builders (nothing, by default)."""
    p.add_argument("--allow-factory", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="also trust this exact model builder of the bundle (repeat for more; "
                   "no patterns)")
    p.add_argument("--allow-torchscript", action="store_true",
                   help="load TorchScript archives of the bundle (they are programs)")


def add_pair_args(p: argparse.ArgumentParser) -> None:
    from ebjr._options import REGRESSION_ERRORS, TASKS

    p.add_argument("student", help="student outputs: .npz with 'logits' (n x C) [and 'labels']; "
                   "a regressor's: 'prediction' (n), what its router reads ('std', "
                   "'free_energy' or 'log_density', n each) [and 'targets']")
    p.add_argument("teacher", help="teacher outputs on the same inputs, same format")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="labels (.npz with 'labels', or .npy); default: from the outputs files. A "
        "regression's targets: .npz with 'targets', or .npy",
    )
    p.add_argument("--task", choices=TASKS, default=TASKS[0],
                   help="what the models do (default classification; see docs/regression.md "
                   "and docs/detection.md)")
    p.add_argument("--ground-truth", metavar="COCO.json",
                   help="--task detection: the COCO annotations the images' detections are "
                   "scored against (mAP by pycocotools); the outputs files' image_ids name "
                   "their images")
    p.add_argument("--error", choices=REGRESSION_ERRORS, default=REGRESSION_ERRORS[0],
                   help="a regression's per-row loss (default absolute); targets such as "
                   "--max-drop are then in its units")
    p.add_argument(
        "--class-map",
        metavar="FILE",
        help="for a student over a subset of the teacher's classes: a JSON list (or .npy) "
        "giving the teacher class of each student class, -1 for none (a specialized "
        "student's 'other'); labels are the teacher's",
    )
    p.add_argument(
        "--student-cost",
        type=float,
        default=1.0,
        metavar="A",
        help="student cost per input (FLOPs, seconds, ...; default 1)",
    )
    p.add_argument(
        "--teacher-cost",
        type=float,
        default=1.0,
        metavar="B",
        help="teacher cost per input, same unit (default 1)",
    )
    p.add_argument(
        "--cost-unit",
        default="",
        metavar="UNIT",
        help="name of the cost unit for reports, e.g. FLOPs or ms",
    )


def class_map(args: argparse.Namespace) -> Any:
    """The ``--class-map`` file's map, or ``None``."""
    from ebjr.bundle.outputs import load_class_map

    return None if args.class_map is None else load_class_map(args.class_map)


def load_regression_pair(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The student's and the teacher's regression outputs, their targets and the task."""
    import numpy as np

    from ebjr.bundle.outputs import load_regression_outputs
    from ebjr.exceptions import InputError
    from ebjr.tasks import Regression

    if args.class_map is not None:
        raise InputError("--class-map applies to classification, not to --task regression")
    s = load_regression_outputs(args.student)
    t = load_regression_outputs(args.teacher)
    if s.outputs.shape[0] != t.outputs.shape[0]:
        raise InputError(f"the student's file has {s.outputs.shape[0]} rows and the teacher's "
                         f"{t.outputs.shape[0]}: they must hold the same inputs")
    y = _targets(args.labels) if args.labels else next(
        (o.targets for o in (s, t) if o.targets is not None), None)
    if y is None:
        raise InputError("no targets: neither outputs file has a 'targets' array; pass "
                         "--labels FILE")
    for o in (s, t):
        if o.targets is not None and (o.targets.shape != y.shape or
                                      not np.allclose(o.targets, y)):
            raise InputError(f"the targets in {o.path!r} differ from the others: the files "
                             "must hold the same inputs in the same order")
    task = Regression(columns=s.columns, loss=args.error)
    return s, t, y, task


def load_detection_pair(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The student's and the teacher's detections (one per image), the mAP metric of a
    routing mask against ``--ground-truth``, and the task."""
    import numpy as np

    from ebjr.bundle.outputs import load_detections
    from ebjr.evaluation.detection import MapMetric
    from ebjr.exceptions import InputError
    from ebjr.tasks import get_task

    if args.class_map is not None or args.labels is not None:
        raise InputError("--task detection is scored against --ground-truth COCO.json; "
                         "--labels and --class-map do not apply")
    if args.ground_truth is None:
        raise InputError("--task detection needs --ground-truth COCO.json (the annotations "
                         "the detections are scored against)")
    (s, s_ids), (t, t_ids) = load_detections(args.student), load_detections(args.teacher)
    if not np.array_equal(s_ids, t_ids):
        raise InputError(f"the two outputs files hold different images (image_ids differ): "
                         f"{args.student!r} and {args.teacher!r} must hold the same images in "
                         "the same order")
    return s, t, MapMetric.from_coco(s, t, args.ground_truth, s_ids.tolist()), \
        get_task("detection")


def _targets(path: str) -> Any:
    import numpy as np

    from ebjr.exceptions import InputError

    try:
        if path.endswith(".npy"):
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        with np.load(path, allow_pickle=False) as z:
            if "targets" not in z:
                raise InputError(f"{path!r} has no 'targets' array; it holds {list(z)}")
            return np.asarray(z["targets"], dtype=np.float64)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path!r} is not a readable .npy/.npz targets file ({exc})") from exc


def load_pair(args: argparse.Namespace, need_labels: bool = True) -> tuple[Any, Any, Any]:
    from ebjr.bundle.outputs import load_outputs, resolve_labels

    s = load_outputs(args.student)
    t = load_outputs(args.teacher)
    if not need_labels and args.labels is None and s.labels is None and t.labels is None:
        return s, t, None  # label-free calibration; labels that exist are still checked
    return s, t, resolve_labels(s, t, labels_path=args.labels)
