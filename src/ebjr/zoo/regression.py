"""A regressor with a Gaussian head: its prediction and its predictive spread per row.

The output is ``(n, 2)``: the mean and the standard deviation, in target units
(the columns ``["prediction", "std"]`` of :class:`ebjr.tasks.Regression`), the
form the ``spread`` router reads. Trained by the Gaussian negative
log-likelihood (:func:`train_gaussian_regressor`).
"""

from __future__ import annotations

import torch
from torch import nn

from ebjr._utils.validation import check_int
from ebjr.adapters.builders import model_builder

__all__ = ["GaussianMLP", "make_gaussian_mlp"]


class GaussianMLP(nn.Module):
    """An MLP whose last layer gives a mean and a log-spread; outputs ``[mean, std]``.

    ``y_mean`` and ``y_scale`` map the standardised target the network learns back to
    target units, so the model's output is in the units of the data it was trained on.
    """

    y_mean: torch.Tensor
    y_scale: torch.Tensor

    def __init__(self, in_features: int, hidden: int, depth: int, y_mean: float,
                 y_scale: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2)
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_scale", torch.tensor(float(y_scale)))

    def standardised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the standardised target."""
        h = self.head(self.body(x.reshape(x.shape[0], -1)))
        return h[:, 0], nn.functional.softplus(h[:, 1]) + 1e-3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, sd = self.standardised(x)
        return torch.stack([mu * self.y_scale + self.y_mean, sd * self.y_scale], dim=1)


@model_builder
def make_gaussian_mlp(in_features: int = 10, hidden: int = 64, depth: int = 2,
                      y_mean: float = 0.0, y_scale: float = 1.0) -> nn.Module:
    """A Gaussian-head MLP regressor (``depth`` hidden layers of ``hidden`` units)."""
    check_int(in_features, "in_features", 1, 1 << 20)
    check_int(hidden, "hidden", 1, 65536)
    check_int(depth, "depth", 0, 64)
    if not float(y_scale) > 0:
        raise ValueError(f"y_scale must be positive, got {y_scale!r}")
    return GaussianMLP(in_features, hidden, depth, y_mean, y_scale)
