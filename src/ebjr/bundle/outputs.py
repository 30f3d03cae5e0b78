"""Reading precomputed model outputs: a classifier's ``.npz`` with ``logits`` and optional
``labels``; a regressor's with ``prediction``, the columns its routers read and optional
``targets``."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ebjr._utils.validation import check_labels
from ebjr.exceptions import InputError

__all__ = ["ModelOutputs", "RegressionOutputs", "load_class_map", "load_detections",
           "load_outputs", "load_regression_outputs", "load_zoo", "resolve_labels",
           "save_detections"]


@dataclass(frozen=True)
class ModelOutputs:
    """One model's outputs on a dataset.

    Attributes:
        logits: shape ``(n, C)``.
        labels: shape ``(n,)`` or ``None``.
        logits_are_log_probs: the file says its rows are log-probabilities.
        path: where they were read from.
    """

    logits: np.ndarray
    labels: np.ndarray | None
    logits_are_log_probs: bool
    path: str


def load_outputs(path: str | Path) -> ModelOutputs:
    """Read an outputs file: an ``.npz`` with ``logits`` (n x C) and optionally ``labels`` (n).

    Raises:
        InputError: the file is missing, is not an ``.npz``, lacks ``logits``,
            or holds arrays of the wrong shape or type.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"outputs file not found: {str(p)!r}")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            if "logits" not in keys:
                raise InputError(
                    f"{str(p)!r} has no 'logits' array; it holds {keys or 'nothing'}. "
                    "Expected an .npz with 'logits' (n x C) and optionally 'labels' (n)."
                )
            logits = np.asarray(z["logits"])
            labels = np.asarray(z["labels"]) if "labels" in keys else None
            flag = bool(z["logits_are_log_probs"]) if "logits_are_log_probs" in keys else False
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"{str(p)!r} is not a readable .npz file ({exc}); expected numpy.savez output "
            "with a 'logits' array"
        ) from exc
    if logits.ndim != 2 or logits.dtype.kind != "f":
        raise InputError(
            f"'logits' in {str(p)!r} must be a 2-d float array (n x C), got shape "
            f"{logits.shape} and dtype {logits.dtype}"
        )
    if labels is not None:
        # their range is checked against the pair's or the zoo's classes (resolve_labels):
        # a specialized student's file may hold the teacher's labels
        labels = check_labels(labels, logits.shape[0], None, f"'labels' in {p.name}")
    return ModelOutputs(logits, labels, flag, str(p))


@dataclass(frozen=True)
class RegressionOutputs:
    """One regressor's outputs on a dataset.

    Attributes:
        outputs: ``(n, m)``, the columns ``columns`` (``prediction`` first).
        columns: the names of the columns, in :data:`ebjr.tasks.regression.COLUMNS`'s order.
        targets: ``(n,)`` or ``None``.
        path: where they were read from.
    """

    outputs: np.ndarray
    columns: tuple[str, ...]
    targets: np.ndarray | None
    path: str


def load_regression_outputs(path: str | Path) -> RegressionOutputs:
    """Read a regressor's outputs file: an ``.npz`` with ``prediction`` (n), any of ``std``,
    ``free_energy``, ``log_density`` (n each: what the routers read) and optionally
    ``targets`` (n).

    Raises:
        InputError: the file is missing or unreadable, lacks ``prediction``, or holds
            arrays of the wrong shape, type or with NaN/inf.
    """
    from ebjr.tasks.regression import COLUMNS

    p = Path(path)
    arrays = _read_npz(p, "a 'prediction' array")
    if "prediction" not in arrays:
        raise InputError(f"{str(p)!r} has no 'prediction' array; it holds "
                         f"{sorted(arrays) or 'nothing'}. Expected a regressor's outputs: "
                         f"'prediction' (n), any of {list(COLUMNS[1:])} (n) and optionally "
                         "'targets' (n)")
    n = arrays["prediction"].shape[0] if arrays["prediction"].ndim else -1
    for name in (*COLUMNS, "targets"):
        a = arrays.get(name)
        if a is None:
            continue
        if a.shape != (n,) or a.dtype.kind not in "fiu" or not np.isfinite(a).all():
            raise InputError(f"{name!r} in {str(p)!r} must be {max(n, 0)} finite numbers (one per "
                             f"row, 1-d), got shape {a.shape} of {a.dtype}")
    columns = tuple(c for c in COLUMNS if c in arrays)
    out = np.stack([arrays[c].astype(np.float64) for c in columns], axis=1)
    targets = arrays["targets"].astype(np.float64) if "targets" in arrays else None
    return RegressionOutputs(out, columns, targets, str(p))


def load_zoo(
    paths: list[str | Path], labels_path: str | Path | None = None
) -> tuple[dict[str, ModelOutputs], np.ndarray]:
    """Several models' outputs on the same rows, named by file stem, and their labels.

    Raises:
        InputError: two files share a stem, a file is unreadable, or the labels disagree
            (see :func:`resolve_labels`).
    """
    zoo: dict[str, ModelOutputs] = {}
    for path in paths:
        name = Path(path).stem
        if name in zoo:
            raise InputError(f"two outputs files are both named {name!r} ({zoo[name].path!r} and "
                             f"{str(path)!r}); a model is named by its file's stem")
        zoo[name] = load_outputs(path)
    if not zoo:
        raise InputError("no outputs files given")
    return zoo, resolve_labels(*zoo.values(), labels_path=labels_path)


def resolve_labels(*outputs: ModelOutputs, labels_path: str | Path | None = None) -> np.ndarray:
    """The labels for models' outputs on the same rows (a student/teacher pair, a zoo).

    From ``labels_path`` (an ``.npz`` with ``labels``, or a ``.npy``) if
    given, else from the first file that has them. Labels that the files
    disagree on are an error: the rows are then not the same inputs.
    """
    n = outputs[0].logits.shape[0]
    c = max(o.logits.shape[1] for o in outputs)  # a specialized student has fewer classes
    candidates = [(o.path, o.labels) for o in outputs if o.labels is not None]
    if labels_path is not None:
        p = Path(labels_path)
        if not p.is_file():
            raise InputError(f"labels file not found: {str(p)!r}")
        try:
            if p.suffix == ".npy":
                arr = np.load(p, allow_pickle=False)
            else:
                with np.load(p, allow_pickle=False) as z:
                    if "labels" not in z:
                        raise InputError(f"{str(p)!r} has no 'labels' array; it holds {list(z)}")
                    arr = np.asarray(z["labels"])
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{str(p)!r} is not a readable .npy/.npz labels file ({exc})") from exc
        candidates.insert(0, (str(p), check_labels(arr, n, c, f"labels in {p.name}")))
    if not candidates:
        raise InputError("no labels: no outputs file has a 'labels' array; pass --labels FILE")
    ref_path, ref = candidates[0]
    ref = check_labels(ref, n, c, f"labels in {Path(ref_path).name}")
    for other_path, other in candidates[1:]:
        if other.shape != ref.shape or not np.array_equal(other, ref):
            diff = int(np.sum(other != ref)) if other.shape == ref.shape else "all"
            raise InputError(
                f"labels disagree between {ref_path!r} and {other_path!r} ({diff} rows differ): "
                "the files must hold the same inputs in the same order"
            )
    return ref


def load_class_map(path: str | Path) -> np.ndarray:
    """A class map from a file: a JSON list of integers, or a 1-d integer ``.npy`` (entry ``j``
    is the teacher class of student class ``j``; ``-1`` for none, e.g. ``other``). Its length
    and range are checked against the models when it is used."""
    import json

    p = Path(path)
    if not p.is_file():
        raise InputError(f"class map file not found: {str(p)!r}")
    try:
        m = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.asarray(
            json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{str(p)!r} is not a class map (a JSON list of integers or a .npy "
                         f"of them): {exc}") from exc
    if m.ndim != 1 or m.dtype.kind not in "iu":
        raise InputError(f"{str(p)!r} must hold a flat list of integers (one teacher class, or "
                         f"-1, per student class), got shape {m.shape} of {m.dtype}")
    return m.astype(np.int64)


#: the arrays of a detector's outputs file (padded per image: ``K`` slots, a count)
DETECTION_ARRAYS = ("num_detections", "boxes", "labels", "scores", "class_logits")


def save_detections(path: str | Path, detections: list[Any], image_ids: Any = None) -> Path:
    """Write one :class:`~ebjr.scores.detection.Detections` per image as a detector's outputs
    file: ``num_detections`` (n), ``boxes`` (n, K, 4), ``labels`` (n, K), ``scores`` (n, K),
    ``class_logits`` (n, K, C), ``coord_energy`` (n, K, 4) when every image has it, and
    ``image_ids`` (n; the ground truth's image ids, default 0..n-1). ``K`` is the most boxes
    an image has; slots past an image's count are zeros."""
    n = len(detections)
    k = max([len(d) for d in detections] + [1])
    c = max([np.shape(d.class_logits)[-1] for d in detections if len(d)] + [1])
    arrays = {"num_detections": np.zeros(n, np.int64), "boxes": np.zeros((n, k, 4)),
              "labels": np.zeros((n, k), np.int64), "scores": np.zeros((n, k)),
              "class_logits": np.zeros((n, k, c))}
    coord = all(d.coord_energy is not None for d in detections)
    if coord:
        arrays["coord_energy"] = np.zeros((n, k, 4))
    for i, d in enumerate(detections):
        b = len(d)
        arrays["num_detections"][i] = b
        if not b:
            continue
        arrays["boxes"][i, :b] = np.asarray(d.boxes, np.float64).reshape(-1, 4)
        arrays["labels"][i, :b] = np.asarray(d.labels)
        arrays["scores"][i, :b] = np.asarray(d.scores)
        arrays["class_logits"][i, :b] = np.asarray(d.class_logits)
        if coord:
            arrays["coord_energy"][i, :b] = np.asarray(d.coord_energy)
    arrays["image_ids"] = np.arange(n) if image_ids is None else np.asarray(image_ids, np.int64)
    np.savez(path, **arrays)
    return Path(path)


def load_detections(path: str | Path) -> tuple[list[Any], np.ndarray]:
    """A detector's outputs file (:func:`save_detections`) as one ``Detections`` per image,
    and the images' ids.

    Raises:
        InputError: the file is missing or unreadable, lacks an array, or the arrays'
            shapes disagree (named).
    """
    from ebjr.scores.detection import Detections

    p = Path(path)
    a = _read_npz(p, f"{list(DETECTION_ARRAYS)}")
    missing = [k for k in DETECTION_ARRAYS if k not in a]
    if missing:
        raise InputError(f"{str(p)!r} is not a detector's outputs file: it lacks {missing} "
                         f"(expected {list(DETECTION_ARRAYS)}, optionally coord_energy and "
                         "image_ids; see ebjr.bundle.outputs.save_detections)")
    num = a["num_detections"]
    n = num.shape[0] if num.ndim == 1 else -1
    k = a["boxes"].shape[1] if a["boxes"].ndim == 3 else -1
    want = {"boxes": (n, k, 4), "labels": (n, k), "scores": (n, k)}
    if "coord_energy" in a:
        want["coord_energy"] = (n, k, 4)
    bad = {name: a[name].shape for name, shape in want.items() if a[name].shape != shape}
    if n < 0 or k < 0 or bad or a["class_logits"].shape[:2] != (n, k) or \
            a["class_logits"].ndim != 3 or (num < 0).any() or (num > k).any():
        raise InputError(f"{str(p)!r}: expected num_detections (n), boxes (n, K, 4), labels and "
                         f"scores (n, K), class_logits (n, K, C) with 0 <= num_detections <= K; "
                         f"got {({name: a[name].shape for name in a})}")
    ids = a.get("image_ids", np.arange(n))
    if ids.shape != (n,):
        raise InputError(f"{str(p)!r}: image_ids must be (n,) = ({n},), got {ids.shape}")
    dets = []
    for i, b in enumerate(num.tolist()):
        coord = a["coord_energy"][i, :b] if "coord_energy" in a else None
        dets.append(Detections(a["boxes"][i, :b], a["labels"][i, :b].astype(np.int64),
                               a["scores"][i, :b], a["class_logits"][i, :b], coord))
    return dets, ids.astype(np.int64)


def _read_npz(p: Path, expected: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``p`` (never unpickling); ``expected`` says what it
    should hold, in messages."""
    if not p.is_file():
        raise InputError(f"outputs file not found: {str(p)!r}")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.keys()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{str(p)!r} is not a readable .npz file ({exc}); expected "
                         f"numpy.savez output with {expected}") from exc
