"""Helpers shared by the tests: paths of the public model outputs and synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"


def shared_file(name: str) -> Path:
    """Path of a file under ../shared/data, or skip the test with the reason."""
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"needs {path} (the public model outputs in ../shared/data; CI has them)")
    return path


def load_pair(student: str, teacher: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.load(shared_file(student))
    t = np.load(shared_file(teacher))
    assert np.array_equal(s["labels"], t["labels"])
    return s["logits"], t["logits"], s["labels"]


def synthetic(n: int = 300, c: int = 5, seed: int = 0, ties: bool = False):
    """Student/teacher logits and labels with a student that errs more on low-energy rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    s = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    t = rng.normal(size=(n, c)) + 3.0 * np.eye(c)[y]
    if ties:
        s = np.round(s, 0)
    return s, t, y


def synthetic_zoo(n: int, seed: int, skills=(2.4, 2.9, 3.3, 3.6), c: int = 10):
    """Models of rising skill whose errors are partly shared (a common hard-row noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    shared = rng.normal(size=(n, c))
    outputs = {}
    for i, s in enumerate(skills):
        z = 0.9 * shared + rng.normal(size=(n, c))
        z[np.arange(n), y] += s
        outputs[f"m{i}"] = (2.0 * z).astype(np.float32)
    costs = {f"m{i}": float(2**i) for i in range(len(skills))}
    return outputs, y, costs


MODELS = SHARED / "models" / "ebjr-densenet"

#: the paper's pairs: dataset -> (images file, classes, student (depth, growth), teacher)
PAPER_PAIRS = {
    "cifar10": ("cifar10-test-images.npz", 10, (52, 6), (64, 12)),
    "cifar100": ("cifar100-test-images-classorder.npz", 100, (58, 6), (88, 8)),
}


def checkpoint(dataset: str, depth: int, growth: int) -> Path:
    path = MODELS / dataset / f"densenet-bc-{depth}-{growth}" / "model_best.pth.tar"
    if not path.is_file():
        pytest.skip(f"needs the paper's checkpoint {path} (../shared/models; CI has it)")
    return path


def coco_annotations(truth, ids, categories) -> dict:
    """``truth`` (``(boxes, labels)`` per row; row ``r`` is image ``ids[r]``) as a COCO
    annotations document with the category ids ``categories``."""
    images = [{"id": int(i), "width": 100, "height": 100} for i in ids]
    anns = []
    for i, (boxes, labels) in zip(ids, truth, strict=True):
        for b, c in zip(boxes, labels, strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": int(i), "category_id": int(c),
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": int(c), "name": str(c)} for c in categories]}
