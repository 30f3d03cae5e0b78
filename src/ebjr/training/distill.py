"""Training a student from a teacher: unsupervised distillation and specialized students.

No labels and no small model? Run the teacher on unlabelled inputs and train
a student against its soft outputs, ``-sum_i tau_i log S_i(x)`` with
``tau = softmax(T(x) / temperature)`` (the paper's unsupervised EBJR). The
student then works best on traffic like the unlabelled pool. Held-out KL
divergence to the teacher measures how well it imitates.

>>> import numpy as np, torch
>>> from ebjr.zoo.digits import make_student
>>> _ = torch.manual_seed(0)
>>> x = np.random.default_rng(0).random((256, 8, 8), dtype=np.float32)
>>> teacher = lambda b: np.asarray(b).reshape(len(b), -1)[:, :10] * 8.0
>>> result = distill(make_student(), teacher, x, epochs=10, batch_size=16, progress=False)
>>> result.heldout_kl_after < result.heldout_kl_before
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ebjr._utils.arrays import to_numpy
from ebjr.adapters.base import as_adapter
from ebjr.exceptions import InputError
from ebjr.training import TrainResult, predict_logits, train_classifier
from ebjr.training.specialized import ClassMap

__all__ = [
    "DistillResult",
    "distill",
    "kl_to_teacher",
    "model_logits",
    "teacher_probabilities",
    "train_specialized",
]


def model_logits(model: Any, x: Any, batch_size: int = 256) -> np.ndarray:
    """Logits of any model (anything :func:`~ebjr.adapters.as_adapter` accepts), batched."""
    adapter = as_adapter(model)
    xs = np.asarray(to_numpy(x))
    parts = [to_numpy(adapter(xs[i : i + batch_size])) for i in range(0, xs.shape[0], batch_size)]
    return np.concatenate(parts)


def teacher_probabilities(
    teacher: Any, x: Any, temperature: float = 1.0, batch_size: int = 256
) -> np.ndarray:
    """``softmax(teacher_logits / temperature)`` on ``x``, batched; float32 ``(n, C)``."""
    if not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature!r}")
    logits = torch.as_tensor(model_logits(teacher, x, batch_size), dtype=torch.float64)
    return torch.softmax(logits / temperature, dim=1).float().numpy()


def kl_to_teacher(
    student: torch.nn.Module, x: Any, teacher_probs: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean ``KL(teacher || student)`` in nats over ``x`` (both at ``temperature``)."""
    logq = torch.log_softmax(predict_logits(student, x).double() / temperature, dim=1)
    p = torch.as_tensor(teacher_probs, dtype=torch.float64)
    return float(torch.nn.functional.kl_div(logq, p, reduction="batchmean"))


@dataclass
class DistillResult:
    """What :func:`distill` did: the training record and held-out KL before and after."""

    student: torch.nn.Module
    training: TrainResult
    heldout_kl_before: float
    heldout_kl_after: float


def distill(
    student: torch.nn.Module,
    teacher: Any,
    x_unlabelled: Any,
    *,
    temperature: float = 1.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    **train_kwargs: Any,
) -> DistillResult:
    """Train ``student`` (in place) to imitate ``teacher`` on unlabelled inputs.

    Args:
        student: the torch module to train (any initial weights).
        teacher: anything :func:`~ebjr.adapters.as_adapter` accepts.
        x_unlabelled: the unlabelled pool, shape ``(n, ...)``.
        temperature: softens both the teacher's targets and the student's outputs.
        val_fraction: share of the pool held out for early stopping and the KL report.
        seed: seeds the split and the training.
        **train_kwargs: passed to :func:`~ebjr.training.train_classifier`
            (``epochs``, ``batch_size``, ``lr``, ``progress``, ``checkpoint``, ...).
    """
    x = np.asarray(to_numpy(x_unlabelled), dtype=np.float32)
    if x.ndim < 2 or x.shape[0] < 10:
        raise InputError(f"x_unlabelled needs at least 10 inputs, got shape {x.shape}")
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    probs = teacher_probabilities(teacher, x, temperature)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    n_val = max(1, round(val_fraction * x.shape[0]))
    val, fit = perm[:n_val], perm[n_val:]
    before = kl_to_teacher(student, x[val], probs[val], temperature)
    record = train_classifier(
        student,
        x[fit],
        probs[fit],
        x[val],
        probs[val],
        seed=seed,
        temperature=temperature,
        **train_kwargs,
    )
    after = kl_to_teacher(student, x[val], probs[val], temperature)
    return DistillResult(student, record, before, after)


def train_specialized(
    student: torch.nn.Module,
    cmap: ClassMap,
    x_train: Any,
    y_train: Any,
    x_val: Any,
    y_val: Any,
    **train_kwargs: Any,
) -> TrainResult:
    """Train a specialized student: labels are mapped to the top-C classes plus ``other``.

    ``student`` must output ``cmap.n_top + 1`` logits (the last one is ``other``).
    """
    return train_classifier(
        student, x_train, cmap.to_student(y_train), x_val, cmap.to_student(y_val), **train_kwargs
    )
