"""Energy-based regressors: ``s(x, y)`` scores pairs, trained by noise-contrastive estimation.

An :class:`EnergyRegressor` encodes ``x`` once, then scores any number of
candidate targets ``y`` with a small head: ``p(y | x) ∝ exp(s(x, y))``. It
also has a direct mean head ``mu(x)``, used to centre the proposals. Its
prediction is the mean of ``p(y | x)``. Its free energy
``F(x) = -log integral exp(s(x, y')) dy'`` (eq. 9 of the paper) comes from
:func:`ebjr.scores.regression_free_energy`. The router's score is ``-F``.

Ranking NCE sees only differences of ``s(x, .)`` between targets of the same
``x``: adding any ``c(x)`` to the score leaves its loss unchanged, and
changes ``F`` by ``-c(x)``. The free energy of such a model is therefore
set by the network's inductive bias, not by the data. The normalised
quantities (``spread``, ``peak_log_density``) do not have this problem.

Training follows Gustafsson et al. (ECCV 2020), "NCE": for each pair
``(x_i, y_i)``, draw ``M`` noise targets around ``y_i`` from a Gaussian
mixture ``q``. Classify the true target against them with the logits
``s(x_i, y) - log q(y | y_i)``. The mean head is fitted with squared error
alongside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ebjr.exceptions import InputError
from ebjr.scores import RegressionEnergy, regression_free_energy

__all__ = ["EnergyRegressor", "RegressionOutputs", "regressor_outputs", "train_energy_regressor"]


class EnergyRegressor(nn.Module):
    """``s(x, y)`` for a scalar target: an MLP encoder of ``x``, a feature net of ``y``, a head.

    Args:
        in_features: size of ``x``.
        hidden: width of the encoder and head.
        depth: hidden layers of the encoder.
    """

    def __init__(self, in_features: int, hidden: int = 32, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.encoder = nn.Sequential(*layers)
        self.mean_head = nn.Linear(width, 1)
        self.y_net = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(width + 16, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.in_features, self.hidden, self.depth = in_features, hidden, depth

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The direct prediction ``mu(x)``, shape ``(n,)``."""
        return self.mean_head(self.encode(x)).squeeze(-1)

    def score_from_features(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``s(x, y)`` for features ``h`` ``(n, d)`` and targets ``y`` ``(n, K)``: ``(n, K)``."""
        n, k = y.shape
        fy = self.y_net(y.reshape(n * k, 1))
        hh = h[:, None, :].expand(n, k, h.shape[1]).reshape(n * k, -1)
        return self.head(torch.cat([hh, fy], dim=1)).reshape(n, k)

    def score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.score_from_features(self.encode(x), y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean(x)


def _mixture_noise(
    y: torch.Tensor, scales: torch.Tensor, m: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` draws per row from the mixture around ``y``, and ``log q`` of them and of ``y``."""
    n = y.shape[0]
    comp = torch.randint(len(scales), (n, m), generator=gen)
    noise = y[:, None] + scales[comp] * torch.randn(n, m, generator=gen)
    cand = torch.cat([y[:, None], noise], dim=1)  # the true target first
    z = (cand[:, :, None] - y[:, None, None]) / scales
    log_q = torch.logsumexp(-0.5 * z**2 - torch.log(scales), dim=2) - math.log(len(scales))
    return cand, log_q


def train_energy_regressor(
    model: EnergyRegressor,
    x_train: Any,
    y_train: Any,
    x_val: Any,
    y_val: Any,
    *,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    noise_scales: tuple[float, ...] = (0.1, 0.4, 1.2),
    n_noise: int = 64,
    patience: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model`` by NCE (plus squared error on the mean head), with early stopping.

    The validation loss is the same NCE loss on ``(x_val, y_val)`` with a fixed
    noise draw; the best epoch's weights are kept. Returns the history.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y_train), dtype=torch.float32).reshape(-1)
    xv = torch.as_tensor(np.asarray(x_val), dtype=torch.float32)
    yv = torch.as_tensor(np.asarray(y_val), dtype=torch.float32).reshape(-1)
    if xt.shape[0] != yt.shape[0] or xv.shape[0] != yv.shape[0]:
        raise InputError("x and y must have the same number of rows")
    scales = torch.tensor(noise_scales, dtype=torch.float32)
    val_cand, val_logq = _mixture_noise(yv, scales, n_noise, torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    def loss_on(x: torch.Tensor, cand: torch.Tensor, log_q: torch.Tensor, y: torch.Tensor):
        h = model.encode(x)
        logits = model.score_from_features(h, cand) - log_q
        nce = -torch.log_softmax(logits, dim=1)[:, 0].mean()
        mse = ((model.mean_head(h).squeeze(-1) - y) ** 2).mean()
        return nce + mse, nce

    best, best_state, since, history = math.inf, None, 0, []
    epoch = 0
    for epoch in range(1, epochs + 1):  # noqa: B007 (reported below)
        model.train()
        perm = torch.randperm(xt.shape[0], generator=gen)
        for start in range(0, xt.shape[0], batch_size):
            idx = perm[start : start + batch_size]
            cand, log_q = _mixture_noise(yt[idx], scales, n_noise, gen)
            loss, _ = loss_on(xt[idx], cand, log_q, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            _, val_nce = loss_on(xv, val_cand, val_logq, yv)
        history.append(float(val_nce))
        if float(val_nce) < best - 1e-5:
            best, since = float(val_nce), 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"val_nce": history, "best_val_nce": best, "epochs": epoch}


@dataclass(frozen=True)
class RegressionOutputs:
    """What routing a regressor needs, per input.

    Attributes:
        prediction: the mean of ``p(y | x)`` (self-normalised importance
            sampling on the same draw as the energy).
        energy: the importance-sampling free energy (with its standard error).
        spread: standard deviation of ``p(y | x)`` under the same samples.
        peak_log_density: ``log p(prediction | x) = s(x, prediction) + F(x)``,
            the normalised density at the prediction. Unlike ``F`` alone it
            does not change when ``s(x, .)`` is shifted by a function of
            ``x`` (which ranking NCE cannot see); see docs/regression.md.
    """

    prediction: np.ndarray
    energy: RegressionEnergy
    spread: np.ndarray
    peak_log_density: np.ndarray


@torch.no_grad()
def regressor_outputs(
    model: EnergyRegressor,
    x: Any,
    *,
    scales: tuple[float, ...] = (0.2, 0.6, 2.0),
    n_samples: int = 1024,
    seed: int = 0,
) -> RegressionOutputs:
    """Prediction, free energy and spread of ``model`` on ``x`` (seeded).

    One importance-sampling draw around ``mu(x)`` gives all three: the free
    energy from the mean weight, the prediction and the spread from the
    self-normalised weights (the mean and standard deviation of ``p(y | x)``).
    """
    model.eval()
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    h = model.encode(xt)
    mu = model.mean_head(h).squeeze(-1).double().numpy()

    def score_fn(_: Any, y: np.ndarray) -> torch.Tensor:
        return model.score_from_features(h, torch.as_tensor(y, dtype=torch.float32))

    energy = regression_free_energy(score_fn, None, mu, scales=scales, n_samples=n_samples,
                                    seed=seed)
    y, lw = energy.samples, energy.log_weights
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    mean = (w * y).sum(axis=1)
    spread = np.sqrt(np.maximum((w * (y - mean[:, None]) ** 2).sum(axis=1), 0.0))
    at_mean = model.score_from_features(h, torch.as_tensor(mean[:, None], dtype=torch.float32))
    peak = at_mean[:, 0].double().numpy() + energy.free_energy
    return RegressionOutputs(mean, energy, spread, peak)
