"""CIFAR ResNets (ResNet-20/32/44/56): 3 stages of basic blocks at 16, 32, 64 channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebjr._utils.validation import check_int
from ebjr.adapters.builders import model_builder
from ebjr.exceptions import InputError

__all__ = ["CifarResNet", "make_resnet"]


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``depth = 6n + 2`` (20, 32, 44, 56, ...)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise InputError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [_Basic(cin, cout, stride)] + [_Basic(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@model_builder
def make_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """Factory for bundles: ``"ebjr.zoo.resnet_cifar:make_resnet"``."""
    check_int(depth, "depth", 8, 2000)
    check_int(num_classes, "num_classes", 2, 1_000_000)
    return CifarResNet(depth, num_classes)
