"""CIFAR DenseNet-BC, written from the description of the paper's checkpoints.

Bottleneck layers (BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k
channels, output concatenated after the input), three dense blocks of
``n = (depth - 4) / 6`` layers, transitions that halve the channels (floor)
and average-pool by 2, then BN-ReLU, global 8x8 average pooling and a linear
classifier. Attribute names match the checkpoints' state-dict keys, so
:func:`load_ebjr_checkpoint` loads them with ``strict=True``.

The paper's pairs: CIFAR-10 student 52-6, teacher 64-12; CIFAR-100 student
58-6, teacher 88-8. Inputs: RGB images scaled to [0, 1] and normalised with
the CIFAR-10 statistics (:func:`cifar_preprocess`), also for CIFAR-100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebjr._utils.validation import check_int
from ebjr.adapters.builders import model_builder
from ebjr.exceptions import InputError

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DenseNetBC",
    "cifar_preprocess",
    "load_ebjr_checkpoint",
    "make_densenet",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


class _Bottleneck(nn.Module):
    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class _Transition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC for 32x32 inputs (compression 0.5, no dropout).

    Args:
        depth: total depth; ``(depth - 4)`` must be divisible by 6.
        growth: growth rate ``k``.
        num_classes: output classes.
        pixel_input: take raw RGB pixels ``(n, 32, 32, 3)`` in ``[0, 255]``
            and normalise them inside (:func:`cifar_preprocess`'s transform), so
            a served model accepts images as they are. The weights are the same.
    """

    def __init__(
        self, depth: int, growth: int, num_classes: int = 10, pixel_input: bool = False
    ) -> None:
        super().__init__()
        self.pixel_input = pixel_input
        scale = 255.0 * torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
        self.register_buffer("_mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_scale", scale, persistent=False)
        if (depth - 4) % 6 or depth < 10:
            raise InputError(f"DenseNet-BC depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for i in range(3):
            layers = [_Bottleneck(channels + j * growth, growth) for j in range(n)]
            blocks.append(nn.Sequential(*layers))
            channels += n * growth
            if i < 2:
                out = channels // 2  # floor, as in the checkpoints (87 -> 43)
                blocks.append(_Transition(channels, out))
                channels = out
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = blocks
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.depth, self.growth, self.num_classes = depth, growth, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixel_input:
            if x.dim() != 4 or x.shape[-1] != 3:
                raise InputError(f"expected pixels of shape (n, 32, 32, 3), got {tuple(x.shape)}")
            scale, mean = torch.as_tensor(self._scale), torch.as_tensor(self._mean)
            x = x.permute(0, 3, 1, 2).float() / scale - mean / (scale / 255.0)
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.dense3(x)
        x = F.avg_pool2d(F.relu(self.bn(x)), 8)
        return self.fc(torch.flatten(x, 1))


@model_builder
def make_densenet(
    depth: int, growth: int, num_classes: int = 10, pixel_input: bool = False
) -> DenseNetBC:
    """Factory for bundles: ``"ebjr.zoo.densenet:make_densenet"``."""
    check_int(depth, "depth", 10, 1000)
    check_int(growth, "growth", 1, 256)
    check_int(num_classes, "num_classes", 2, 1_000_000)
    if (depth - 4) % 6:
        raise InputError(f"DenseNet-BC depth must be 6n + 4, got {depth}")
    return DenseNetBC(depth, growth, num_classes, pixel_input)


def load_ebjr_checkpoint(path: str | Path, depth: int, growth: int, num_classes: int) -> DenseNetBC:
    """Load one of the paper's ``model_best.pth.tar`` files into a :class:`DenseNetBC`.

    The file is read with ``weights_only=True``; the ``module.`` prefix that
    ``nn.DataParallel`` added is stripped; loading is strict.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint not found: {str(p)!r}")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = DenseNetBC(depth, growth, num_classes)
    model.load_state_dict(state, strict=True)
    return model.eval()


def cifar_preprocess(images: Any) -> torch.Tensor:
    """uint8 images ``(n, 32, 32, 3)`` RGB -> normalised float tensor ``(n, 3, 32, 32)``."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"expected images of shape (n, 32, 32, 3), got {x.shape}")
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (t - mean) / std
