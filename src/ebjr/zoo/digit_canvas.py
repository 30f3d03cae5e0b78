"""A detection set from scikit-learn's bundled digits: several digits on a larger canvas.

Each canvas is ``size x size`` (default 48) grey pixels in ``[0, 1]`` with
1 to ``max_digits`` digits. Each digit is an 8x8 bundled image, upscaled to a
random side of ``min_side`` to ``max_side`` pixels and placed where it does
not overlap another. Its box is the upscaled image's extent, and its label is
its digit. Pixel noise is added. Training and test canvases draw from
disjoint halves of the 1,797 bundled images (``part="train"`` or ``"test"``),
so a test canvas never shows a digit image seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ebjr.exceptions import InputError

__all__ = ["DigitCanvases", "make_digit_canvases"]


@dataclass(frozen=True)
class DigitCanvases:
    """``images`` ``(n, size, size)`` float32; per image, ``boxes`` ``(k, 4)`` xyxy and
    ``labels`` ``(k,)``."""

    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]

    @property
    def targets(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(self.boxes, self.labels, strict=True))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def make_digit_canvases(
    n: int,
    *,
    part: str = "train",
    size: int = 48,
    max_digits: int = 4,
    min_side: int = 10,
    max_side: int = 16,
    noise: float = 0.05,
    seed: int = 0,
) -> DigitCanvases:
    """``n`` seeded canvases (see the module docs)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    if part not in ("train", "test"):
        raise InputError(f"part must be 'train' or 'test', got {part!r}")
    if not 1 <= min_side <= max_side < size:
        raise InputError(f"need 1 <= min_side <= max_side < size, got {min_side}, {max_side}, "
                         f"{size}")
    digits: Any = load_digits()
    idx = np.arange(len(digits.target))
    pool = idx[idx % 2 == 0] if part == "train" else idx[idx % 2 == 1]
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.float32)
    boxes, labels = [], []
    for i in range(n):
        k = int(rng.integers(1, max_digits + 1))
        placed: list[np.ndarray] = []
        lab: list[int] = []
        for _ in range(k):
            side = int(rng.integers(min_side, max_side + 1))
            for _attempt in range(50):
                x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                box = np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)
                if all(_disjoint(box, b) for b in placed):
                    break
            else:
                continue  # no room left on this canvas
            j = int(rng.choice(pool))
            img = ndimage.zoom(digits.images[j] / 16.0, side / 8.0, order=1)[:side, :side]
            region = images[i, y0 : y0 + side, x0 : x0 + side]
            np.maximum(region, np.clip(np.asarray(img), 0, 1), out=region)
            placed.append(box)
            lab.append(int(digits.target[j]))
        boxes.append(np.asarray(placed, dtype=np.float64).reshape(-1, 4))
        labels.append(np.asarray(lab, dtype=np.int64))
    images += rng.normal(0, noise, size=images.shape).astype(np.float32)
    np.clip(images, 0, 1, out=images)
    return DigitCanvases(images, boxes, labels)


def _disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])
