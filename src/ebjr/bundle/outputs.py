"""Reading precomputed model outputs: a classifier's ``.npz`` with ``logits`` and optional
``labels``; a regressor's with ``prediction``, the columns its routers read and optional
``targets``."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebjr._utils.validation import check_labels
from ebjr.exceptions import InputError

__all__ = ["ModelOutputs", "RegressionOutputs", "load_class_map", "load_outputs",
           "load_regression_outputs", "load_zoo", "resolve_labels"]


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
    if not p.is_file():
        raise InputError(f"outputs file not found: {str(p)!r}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.keys()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{str(p)!r} is not a readable .npz file ({exc}); expected numpy.savez "
                         "output with a 'prediction' array") from exc
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
