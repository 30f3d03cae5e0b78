"""Reading precomputed model outputs (``.npz`` with ``logits`` and optional ``labels``)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebjr._utils.validation import check_labels
from ebjr.exceptions import InputError

__all__ = ["ModelOutputs", "load_outputs", "resolve_labels"]


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
        labels = check_labels(labels, logits.shape[0], logits.shape[1], f"'labels' in {p.name}")
    return ModelOutputs(logits, labels, flag, str(p))


def resolve_labels(
    student: ModelOutputs, teacher: ModelOutputs, labels_path: str | Path | None = None
) -> np.ndarray:
    """The labels for a student/teacher pair.

    From ``labels_path`` (an ``.npz`` with ``labels``, or a ``.npy``) if
    given, else from the student file, else from the teacher file. Labels that
    the files disagree on are an error: the rows are then not the same inputs.
    """
    n, c = student.logits.shape
    candidates = [(o.path, o.labels) for o in (student, teacher) if o.labels is not None]
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
        raise InputError("no labels: neither outputs file has a 'labels' array; pass --labels FILE")
    ref_path, ref = candidates[0]
    for other_path, other in candidates[1:]:
        if other.shape != ref.shape or not np.array_equal(other, ref):
            diff = int(np.sum(other != ref)) if other.shape == ref.shape else "all"
            raise InputError(
                f"labels disagree between {ref_path!r} and {other_path!r} ({diff} rows differ): "
                "the files must hold the same inputs in the same order"
            )
    return ref
