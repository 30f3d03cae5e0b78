"""A small, dependable torch training loop for classifiers.

Seeded, with a progress bar, early stopping on a validation split (the best
weights are restored), and an optional checkpoint. Targets are either class
indices (cross-entropy) or probability rows (soft cross-entropy
``-sum_i tau_i log p_i``, as used to distil a student from a teacher).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ebjr.exceptions import InputError

__all__ = ["TrainResult", "predict_logits", "soft_cross_entropy", "train_classifier"]


@dataclass
class TrainResult:
    """What :func:`train_classifier` did.

    Attributes:
        best_epoch: epoch (1-based) whose weights were kept.
        best_val_loss: validation loss at that epoch.
        history: per epoch ``{"epoch", "train_loss", "val_loss", "val_accuracy"}``.
        stopped_early: training stopped before ``epochs`` for lack of progress.
    """

    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``-sum_i tau_i log S_i(x / T)``, averaged, scaled by ``T^2`` so gradients keep their
    size (Hinton et al.): torch's cross-entropy with probability targets."""
    return nn.functional.cross_entropy(logits / temperature, target) * temperature**2


def _loss(logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    if target.dtype.is_floating_point:
        return soft_cross_entropy(logits, target, temperature)
    return nn.functional.cross_entropy(logits, target)


def predict_logits(model: nn.Module, x: Any, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched, on the CPU."""
    model.eval()
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    device = next(model.parameters()).device
    outs = []
    with torch.inference_mode():
        for start in range(0, xt.shape[0], batch_size):
            outs.append(model(xt[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(outs)


def _check_targets(x: Any, y: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y))
    if xt.shape[0] != yt.shape[0] or xt.shape[0] == 0:
        raise InputError(
            f"{name}: inputs and targets must be non-empty with one target per input, got "
            f"{xt.shape[0]} inputs and {yt.shape[0]} targets"
        )
    if yt.dtype.is_floating_point:
        if yt.ndim != 2:
            raise InputError(f"{name}: soft targets must be (n, C) probabilities")
        yt = yt.float()
    else:
        yt = yt.long()
    return xt, yt


def train_classifier(
    model: nn.Module,
    x_train: Any,
    y_train: Any,
    x_val: Any,
    y_val: Any,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    checkpoint: str | Path | None = None,
    temperature: float = 1.0,
) -> TrainResult:
    """Train ``model`` in place with AdamW and cosine decay; keep the best validation weights.

    Args:
        model: the module to train (its current weights are the start).
        x_train, y_train: inputs and targets (class indices, or probability rows).
        x_val, y_val: validation inputs and targets of the same kind, for early stopping.
        epochs: most epochs to run.
        patience: stop after this many epochs without a better validation loss.
        seed: seeds torch and the shuffling, so runs are reproducible.
        progress: show a progress bar (tqdm) over epochs.
        checkpoint: if given, the best state dict is saved there.
        temperature: with soft targets, the student's logits are divided by it
            (the targets should be the teacher's softmax at the same temperature).
    """
    if not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature!r}")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    xt, yt = _check_targets(x_train, y_train, "training data")
    xv, yv = _check_targets(x_val, y_val, "validation data")
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(xt, yt), batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    bar: Any = range(1, epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=desc, unit="epoch", leave=True, disable=None)  # off without a tty
    stopped = False
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = _loss(model(xb), yb, temperature)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * xb.shape[0]
            count += xb.shape[0]
        logits = predict_logits(model, xv)
        val_loss = float(_loss(logits, yv, temperature))
        hard = yv.argmax(1) if yv.dtype.is_floating_point else yv
        val_acc = float((logits.argmax(1) == hard).float().mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / count,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if progress:
            bar.set_postfix(
                loss=f"{total / count:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}"
            )
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience:
            stopped = True
            break
    if progress:
        bar.close()
    model.load_state_dict(best[2])
    model.eval()
    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(best[2], checkpoint)
    return TrainResult(best[1], best[0], history, stopped)
