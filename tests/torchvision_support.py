"""torchvision on this machine: its wheels are CUDA builds whose compiled ops do not load on
the CPU torch. :func:`import_torchvision` defines the two operators torchvision's import
needs (``torchvision::nms`` and ``torchvision::qnms``) with a pure-torch greedy NMS kernel,
and lets ``torchvision.ops.nms`` call it. RoI Align then runs torchvision's own pure-torch
path (used whenever the compiled ops are absent). For tests only: a real install has the
compiled ops."""

from __future__ import annotations

import os

import pytest

_LIB = None  # the Library object must stay alive for its operators to stay defined


def _greedy_nms(boxes, scores, iou_threshold):
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    over = (inter / (area[:, None] + area[None, :] - inter)) > iou_threshold  # all pairs once
    alive = torch.ones(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):  # greedy, by descending score
        if alive[i]:
            keep.append(i)
            alive &= ~over[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def import_torchvision():
    """``torchvision``, importable on the CPU torch (skips the test if it is not installed)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        if os.environ.get("EBJR_REQUIRE_TORCHVISION"):
            raise RuntimeError("EBJR_REQUIRE_TORCHVISION is set but torchvision is missing")
        pytest.skip("torchvision is not installed: .ci/run installs it for these tests alone "
                    "(pip install --no-deps torchvision==0.28.0; it breaks transformers' imports "
                    "on this CPU torch)")
    import torch

    global _LIB
    if _LIB is None and not hasattr(torch.ops.torchvision, "nms"):
        _LIB = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.impl("nms", _greedy_nms, "CPU")
    torchvision = importlib.import_module("torchvision")
    boxes = importlib.import_module("torchvision.ops.boxes")
    boxes._assert_has_ops = lambda: None  # the nms operator above stands in for the compiled one
    return torchvision
