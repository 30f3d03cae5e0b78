"""Training a Gaussian-head regressor (:class:`ebjr.zoo.regression.GaussianMLP`) by the
Gaussian negative log-likelihood, with early stopping on a validation split."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ebjr.exceptions import InputError

__all__ = ["train_gaussian_regressor"]


def _tensors(x: Any, y: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float32)).reshape(-1)
    if xt.shape[0] != yt.shape[0] or xt.shape[0] == 0:
        raise InputError(f"{what}: {xt.shape[0]} inputs and {yt.shape[0]} targets; expected "
                         "the same number, at least one")
    return xt, yt


def train_gaussian_regressor(
    model: Any, x_train: Any, y_train: Any, x_val: Any, y_val: Any, *, epochs: int = 200,
    batch_size: int = 256, lr: float = 3e-3, patience: int = 15, seed: int = 0,
    progress: bool = True, desc: str = "train", checkpoint: str | Path | None = None,
) -> float:
    """Train ``model`` (a ``GaussianMLP``) in place; keep the best validation weights.

    The loss is the Gaussian negative log-likelihood of the standardised target
    (``(y - y_mean) / y_scale``, the model's own buffers). Returns the best validation loss.
    """
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    xt, yt = _tensors(x_train, y_train, "training data")
    xv, yv = _tensors(x_val, y_val, "validation data")
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(xt, yt), batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    nll = torch.nn.GaussianNLLLoss()

    def loss_on(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, sd = model.standardised(x)
        return nll(mu, (y - model.y_mean) / model.y_scale, sd**2)

    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    bar: Any = range(1, epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=desc, unit="epoch", leave=True, disable=None)
    for epoch in bar:
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_on(xb, yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(loss_on(xv, yv))
        if progress:
            bar.set_postfix(val_nll=f"{val:.3f}")
        if val < best[0] - 1e-5:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience:
            break
    if progress:
        bar.close()
    model.load_state_dict(best[2])
    model.eval()
    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(best[2], checkpoint)
    return best[0]
