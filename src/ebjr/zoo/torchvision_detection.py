"""torchvision's two-stage detectors (Faster R-CNN and its family) with per-box class logits.

A joint detector routes on the class logits of the boxes a detector *keeps*
(eq. 12), which torchvision's ``forward`` does not return: its post-processing
keeps boxes, labels and scores only. :class:`TorchvisionDetectionModel` wraps a
torchvision ``GeneralizedRCNN`` and runs the same stages its ``forward`` runs,
through the model's public components (``transform``, ``backbone``, ``rpn``,
``roi_heads`` and its ``box_roi_pool``, ``box_head`` and ``box_predictor``), then
runs the box head once more on the kept boxes: the class logits of each kept
box, as the detector's own classifier scores that box. No private code of
torchvision is used or copied.

**The background column.** torchvision's box predictor scores ``C + 1``
classes, column 0 being background. Eq. 12 is the free energy of the box's
distribution over the object classes, so by default (``background="drop"``)
``class_logits`` holds the ``C`` object columns (label ``k`` is column
``k - 1``); ``background="keep"`` keeps all ``C + 1``.

These detectors regress box coordinates as points (no distribution over a
coordinate), so eq. 13 has no term for them: ``coord_energy`` is absent and
the energy is eq. 12 alone (see docs/detection.md).

The output, per image: ``boxes`` ``(B, 4)`` in the input image's pixels,
``labels``, ``scores`` and ``class_logits`` ``(B, C)``: the form of
:class:`ebjr.tasks.detection.Detection`. A bundle names the architecture by
:func:`make_torchvision_detector` (a registered builder: torchvision's
detection model registry, never arbitrary code) and stores the weights.

Needs ``torchvision`` (``pip install 'ebjr[detection]'``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ebjr._utils.validation import check_int, check_probability
from ebjr.adapters.builders import model_builder
from ebjr.exceptions import InputError

__all__ = ["OPTIONS", "TorchvisionDetectionModel", "make_torchvision_detector"]

BACKGROUND = ("drop", "keep")
#: the further options a bundle may give a torchvision detector: the largest count each
#: takes (``None``: a probability)
OPTIONS: dict[str, int | None] = {
    "box_score_thresh": None,
    "box_nms_thresh": None,
    "box_detections_per_img": 1000,
    "rpn_pre_nms_top_n_test": 10_000,
    "rpn_post_nms_top_n_test": 10_000,
}


class TorchvisionDetectionModel(nn.Module):
    """A torchvision ``GeneralizedRCNN`` whose output carries each kept box's class logits.

    Args:
        model: e.g. ``torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=...)``.
        background: ``"drop"`` (default) or ``"keep"`` the background column of the logits.
    """

    def __init__(self, model: nn.Module, background: str = "drop") -> None:
        super().__init__()
        for part in ("transform", "backbone", "rpn", "roi_heads"):
            if not hasattr(model, part):
                raise InputError(f"expected a torchvision two-stage detector (GeneralizedRCNN: "
                                 f"transform, backbone, rpn, roi_heads); a "
                                 f"{type(model).__name__} has no {part!r}")
        if background not in BACKGROUND:
            raise InputError(f"background must be one of {BACKGROUND}, got {background!r}")
        self.model, self.background = model, background

    def forward(self, images: Any) -> list[dict[str, torch.Tensor]]:
        """Images ``(n, 3, H, W)`` (or a list of ``(3, H, W)``) in ``[0, 1]`` -> one dict per
        image: ``boxes``, ``labels``, ``scores``, ``class_logits``."""
        m: Any = self.model  # a torchvision GeneralizedRCNN (its parts are untyped here)
        images = list(images)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, _ = m.transform(images)
        features = m.backbone(batch.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = m.rpn(batch, features)
        detections, _ = m.roi_heads(features, proposals, batch.image_sizes)
        heads = m.roi_heads
        kept = [d["boxes"] for d in detections]  # in the resized images' pixels
        pooled = heads.box_roi_pool(features, kept, batch.image_sizes)
        logits, _ = heads.box_predictor(heads.box_head(pooled))
        detections = m.transform.postprocess(detections, batch.image_sizes, sizes)
        out, start = [], 0
        for d, boxes in zip(detections, kept, strict=True):
            own = logits[start:start + boxes.shape[0]]
            start += boxes.shape[0]
            if self.background == "drop":
                own = own[:, 1:]
            out.append({"boxes": d["boxes"], "labels": d["labels"], "scores": d["scores"],
                        "class_logits": own})
        return out


@model_builder
def make_torchvision_detector(name: str = "fasterrcnn_resnet50_fpn", num_classes: int = 91,
                              background: str = "drop", min_size: int = 800,
                              max_size: int = 1333, **options: Any) -> TorchvisionDetectionModel:
    """Factory for bundles: torchvision's detection model ``name`` (no weights downloaded;
    the bundle's state dict is loaded into it), wrapped in :class:`TorchvisionDetectionModel`.

    ``name`` must be one of torchvision's detection models with a ``roi_heads`` (Faster
    R-CNN family); ``min_size`` and ``max_size`` are its transform's resize bounds;
    ``options`` are more of its keyword arguments, those of :data:`OPTIONS` only. A bundle
    names all of these, so each is checked against its bounds before anything is built.
    """
    checked: dict[str, int | float] = {
        "num_classes": check_int(num_classes, "num_classes", 2, 100_000),
        "min_size": check_int(min_size, "min_size", 16, 4096),
        "max_size": check_int(max_size, "max_size", 16, 4096)}
    for key, value in options.items():
        if key not in OPTIONS:
            raise InputError(f"unknown option {key!r} for a torchvision detector; expected "
                             f"some of {sorted(OPTIONS)}")
        high = OPTIONS[key]
        checked[key] = check_probability(value, key) if high is None \
            else check_int(value, key, 1, high)
    import torchvision  # pyright: ignore[reportMissingImports]
    from torchvision.models import detection  # pyright: ignore[reportMissingImports]

    known = torchvision.models.list_models(module=detection)
    if name not in known:
        raise InputError(f"unknown torchvision detection model {name!r}; known: {known}")
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **checked)
    return TorchvisionDetectionModel(model, background)
