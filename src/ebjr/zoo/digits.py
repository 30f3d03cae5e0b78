"""The quickstart pair for 8x8 handwritten digits: a tiny MLP student, a small CNN teacher."""

from __future__ import annotations

import torch
from torch import nn

from ebjr._utils.validation import check_int
from ebjr.adapters.builders import model_builder

__all__ = ["make_student", "make_teacher"]


@model_builder
def make_student(hidden: int = 48, n_classes: int = 10) -> nn.Module:
    """A two-layer perceptron on the 64 pixels (about 3.6k parameters)."""
    check_int(hidden, "hidden", 1, 65536)
    check_int(n_classes, "n_classes", 2, 1_000_000)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
    )


class _DigitsCNN(nn.Module):
    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (n, 8, 8) -> (n, 1, 8, 8)
            x = x.unsqueeze(1)
        return self.head(self.features(x))


@model_builder
def make_teacher(width: int = 16, n_classes: int = 10) -> nn.Module:
    """A small CNN: three 3x3 convolutions with batch norm, one pooling, two dense layers."""
    check_int(width, "width", 1, 1024)
    check_int(n_classes, "n_classes", 2, 1_000_000)
    return _DigitsCNN(width, n_classes)
