"""A small one-stage grid detector with a distribution (DFL-style) box head.

The backbone takes a canvas to an ``S x S`` grid (stride 8). Each cell
predicts:

- class logits over the ``C`` classes plus background;
- for each box edge (left, top, right, bottom), logits over ``bins``
  distances from the cell centre, one pixel apart. This is the distribution
  focal loss head of GFL and YOLOv8.

A box is assigned to the cell that contains its centre. Training is
cross-entropy on the classes, plus the DFL loss on the two bins around each
true edge distance. Decoding keeps the cells whose object probability
(``1 - p(background)``) exceeds a threshold. Each box's edges are the
expected distances, and greedy per-class NMS removes duplicates. The kept
boxes carry their digit-class logits (background excluded, as in the
specialized student's energy) and each edge's exact regression free energy,
so :func:`ebjr.evaluation.detection.detection_free_energy` gets both terms of eq. 14.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebjr._utils.validation import check_int
from ebjr.adapters.builders import model_builder
from ebjr.evaluation.detection import Detections, dfl_coordinate_free_energy
from ebjr.exceptions import InputError

__all__ = ["GridDetectionModel", "GridDetector", "decode", "flops_per_image",
           "make_grid_detection_model", "make_grid_detector", "train_detector"]

STRIDE = 8


class GridDetector(nn.Module):
    """Args: ``width`` channels, ``extra`` 3x3 layers at grid resolution, ``n_classes``,
    ``bins`` distance bins per edge (1 px each)."""

    def __init__(self, width: int = 16, extra: int = 0, n_classes: int = 10, bins: int = 16):
        super().__init__()
        w = width
        layers: list[nn.Module] = [
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        ]
        for _ in range(extra):
            layers += [nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU()]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(4 * w, n_classes + 1 + 4 * bins, 1)
        self.n_classes, self.bins = n_classes, bins

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, H, W)`` canvases -> class logits ``(n, S, S, C+1)``, bin logits
        ``(n, S, S, 4, bins)``."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        out = self.head(self.backbone(x)).permute(0, 2, 3, 1)
        c = self.n_classes + 1
        n, s1, s2, _ = out.shape
        return out[..., :c], out[..., c:].reshape(n, s1, s2, 4, self.bins)


@model_builder
def make_grid_detector(width: int = 16, extra: int = 0, n_classes: int = 10,
                       bins: int = 16) -> GridDetector:
    """Factory for bundles: ``"ebjr.zoo.grid_detector:make_grid_detector"``."""
    check_int(width, "width", 1, 1024)
    check_int(extra, "extra", 0, 64)
    check_int(n_classes, "n_classes", 1, 100_000)
    check_int(bins, "bins", 2, 1024)
    return GridDetector(width, extra, n_classes, bins)


class GridDetectionModel(nn.Module):
    """A :class:`GridDetector` and its decoding: canvases in, one
    :class:`~ebjr.scores.detection.Detections` per canvas out (the form a joint detector,
    its bundle and ``ebjr serve`` take)."""

    def __init__(self, detector: GridDetector, min_confidence: float = 0.25,
                 iou: float = 0.5) -> None:
        super().__init__()
        self.detector, self.min_confidence, self.iou = detector, min_confidence, iou

    def forward(self, x: torch.Tensor) -> list[Detections]:
        return decode(self.detector, x.detach().cpu().numpy(),
                      min_confidence=self.min_confidence, iou=self.iou)


@model_builder
def make_grid_detection_model(width: int = 16, extra: int = 0, n_classes: int = 10,
                              bins: int = 16, min_confidence: float = 0.25,
                              iou: float = 0.5) -> GridDetectionModel:
    """Factory for bundles: ``"ebjr.zoo.grid_detector:make_grid_detection_model"``."""
    if not (0 <= float(min_confidence) < 1 and 0 < float(iou) <= 1):
        raise InputError(f"min_confidence must lie in [0, 1) and iou in (0, 1], got "
                         f"{min_confidence!r} and {iou!r}")
    return GridDetectionModel(make_grid_detector(width, extra, n_classes, bins),
                              float(min_confidence), float(iou))


def _targets(boxes: list[np.ndarray], labels: list[np.ndarray], grid: int, n_classes: int,
             bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(boxes)
    cls = torch.full((n, grid, grid), n_classes, dtype=torch.long)  # background
    dist = torch.zeros((n, grid, grid, 4))
    pos = torch.zeros((n, grid, grid), dtype=torch.bool)
    for i, (bs, ls) in enumerate(zip(boxes, labels, strict=True)):
        for b, c in zip(bs, ls, strict=True):
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            gx, gy = min(int(cx // STRIDE), grid - 1), min(int(cy // STRIDE), grid - 1)
            if pos[i, gy, gx]:
                continue  # one object per cell
            ccx, ccy = gx * STRIDE + STRIDE / 2, gy * STRIDE + STRIDE / 2
            d = np.array([ccx - b[0], ccy - b[1], b[2] - ccx, b[3] - ccy])
            dist[i, gy, gx] = torch.as_tensor(np.clip(d, 0, bins - 1 - 1e-3))
            cls[i, gy, gx] = int(c)
            pos[i, gy, gx] = True
    return cls, dist, pos


def _loss(model: GridDetector, x: torch.Tensor, cls: torch.Tensor, dist: torch.Tensor,
          pos: torch.Tensor) -> torch.Tensor:
    logits, bins = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls.reshape(-1))
    if pos.any():
        b = bins[pos]  # (P, 4, bins)
        d = dist[pos]  # (P, 4)
        lo = d.floor().long()
        frac = d - lo
        logp = F.log_softmax(b, dim=-1)
        dfl = -(logp.gather(-1, lo[..., None])[..., 0] * (1 - frac)
                + logp.gather(-1, (lo + 1)[..., None])[..., 0] * frac)
        loss = loss + dfl.mean()
    return loss


def train_detector(model: GridDetector, images: np.ndarray, boxes: list[np.ndarray],
                   labels: list[np.ndarray], *, epochs: int = 30, batch_size: int = 64,
                   lr: float = 2e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``model`` on canvases with Adam and a cosine schedule; returns epoch losses."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(images, dtype=torch.float32)
    grid = model(x[:1])[0].shape[1]
    cls, dist, pos = _targets(boxes, labels, grid, model.n_classes, model.bins)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    it: Any = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"training detector (width {model.head.in_channels // 4})")
    history = []
    for _ in it:
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            loss = _loss(model, x[idx], cls[idx], dist[idx], pos[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        history.append(total / len(x))
    model.eval()
    return history


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


@torch.no_grad()
def decode(model: GridDetector, images: Any, *, min_confidence: float = 0.25,
           iou: float = 0.5, batch_size: int = 256) -> list[Detections]:
    """Run ``model`` and keep its detections, with logits and coordinate energies."""
    model.eval()
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.dim() != 3:
        raise InputError(f"expected canvases of shape (n, H, W), got {tuple(x.shape)}")
    out: list[Detections] = []
    centers = None
    for start in range(0, len(x), batch_size):
        logits, bins = model(x[start : start + batch_size])
        n, s, _, c1 = logits.shape
        if centers is None:
            g = torch.arange(s, dtype=torch.float32) * STRIDE + STRIDE / 2
            centers = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1)  # (S, S, 2) x, y
        probs = logits.softmax(-1)
        dist = (bins.softmax(-1) * torch.arange(model.bins, dtype=torch.float32)).sum(-1)
        for i in range(n):
            conf = 1 - probs[i, ..., -1]
            keep = (conf > min_confidence).nonzero()
            if len(keep) == 0:
                out.append(Detections.empty(c1 - 1))
                continue
            yy, xx = keep[:, 0], keep[:, 1]
            cxy = centers[yy, xx]
            d = dist[i, yy, xx]
            boxes = torch.stack([cxy[:, 0] - d[:, 0], cxy[:, 1] - d[:, 1],
                                 cxy[:, 0] + d[:, 2], cxy[:, 1] + d[:, 3]], dim=1).numpy()
            cls_logits = logits[i, yy, xx, :-1].double().numpy()
            p = probs[i, yy, xx, :-1].double().numpy()
            labels, scores = p.argmax(1), p.max(1)
            energy = dfl_coordinate_free_energy(bins[i, yy, xx].double().numpy(), 1.0)
            order = _nms(boxes.astype(np.float64), scores, labels, iou)
            out.append(Detections(boxes[order].astype(np.float64), labels[order], scores[order],
                                  cls_logits[order], energy[order]))
    return out


def _nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy per-class non-maximum suppression, by descending score."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if labels[k] == labels[i]]
        if same and (_iou(boxes[i], boxes[same]) > iou).any():
            continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def flops_per_image(model: GridDetector, size: int = 48) -> float:
    """Counted FLOPs of one forward pass on one ``size x size`` canvas."""
    from ebjr.joint.cost import count_flops

    return float(count_flops(model, torch.zeros(1, size, size)))
