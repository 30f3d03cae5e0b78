"""Streams of rows for the monitor benchmarks, in numpy and scipy only.

``monitor_drift.py`` (ebjr's venv) and ``monitor_baselines.py`` (a venv holding NannyML
and alibi-detect, which pin numpy < 2) both draw their streams from here, so the monitor
and the baselines see the same rows.

A :class:`Population` is a pool of real rows (one model pair's outputs on a test set):
per row the student's router score (its softmax confidence), whether the student's class
differs from the teacher's, both models' probabilities and the label. A stream draws
batches of rows from one population i.i.d. (with optional weights), then from another
after the shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.special import softmax

BATCH = 1000


@dataclass
class Population:
    """Real rows of one pair; ``weights`` (optional) skew how often each row is drawn."""

    student_probs: np.ndarray
    teacher_probs: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None

    @cached_property
    def score(self) -> np.ndarray:
        return self.student_probs.max(1)

    @cached_property
    def disagree(self) -> np.ndarray:
        return self.student_probs.argmax(1) != self.teacher_probs.argmax(1)

    @cached_property
    def row_weights(self) -> np.ndarray:
        """How much each row counts (the weights, normalised to sum to 1)."""
        n = self.labels.size
        return np.full(n, 1.0 / n) if self.weights is None else self.weights / self.weights.sum()

    def weighted(self, weights: np.ndarray) -> Population:
        return Population(self.student_probs, self.teacher_probs, self.labels, weights)

    def disagreement(self, threshold: float) -> float:
        """The population's disagreement with the teacher at ``threshold`` (rows the
        student answers and the teacher would have answered otherwise)."""
        w = self.row_weights
        return float(np.sum(w * ((self.score >= threshold) & self.disagree)))

    def drop(self, threshold: float) -> float:
        """The joint model's accuracy drop against the teacher at ``threshold`` (labels)."""
        w = self.row_weights
        teacher = self.teacher_probs.argmax(1)
        joint = np.where(self.score >= threshold, self.student_probs.argmax(1), teacher)
        return float(np.sum(w * ((teacher == self.labels).astype(float)
                                 - (joint == self.labels))))

    def weighted_accuracy(self, model: str) -> float:
        """The accuracy of ``"student"`` or ``"teacher"`` on the population."""
        w = self.row_weights
        probs = self.student_probs if model == "student" else self.teacher_probs
        return float(np.sum(w * (probs.argmax(1) == self.labels)))

    def student_share(self, threshold: float) -> float:
        w = self.row_weights
        return float(np.sum(w * (self.score >= threshold)))

    def save(self, path: Path, **extra: np.ndarray) -> None:
        w = np.ones(self.labels.size) if self.weights is None else self.weights
        np.savez(path, student_probs=self.student_probs, teacher_probs=self.teacher_probs,
                 labels=self.labels, weights=w, **extra)

    @classmethod
    def load(cls, path: Path) -> Population:
        z = np.load(path)
        return cls(z["student_probs"], z["teacher_probs"], z["labels"], z["weights"])


def from_logits(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray) -> Population:
    return Population(softmax(student.astype(np.float64), axis=1),
                      softmax(teacher.astype(np.float64), axis=1), labels.astype(np.int64))


def from_outputs(student_file: Path, teacher_file: Path) -> Population:
    """A pair from two ``.npz`` outputs files (``logits``, ``labels``) of the same rows."""
    s, t = np.load(student_file), np.load(teacher_file)
    if not np.array_equal(s["labels"], t["labels"]):
        raise ValueError(f"{student_file.name} and {teacher_file.name} hold different rows")
    return from_logits(s["logits"], t["logits"], s["labels"])


def boundary_threshold(pop: Population, eps: float) -> float:
    """The lowest threshold whose population disagreement is at most ``eps``."""
    score = pop.score
    order = np.argsort(-score)
    rate = np.cumsum(pop.disagree[order]) / score.size  # the student answering the top k
    k = int(np.flatnonzero(rate <= eps)[-1])
    return float(score[order][k])


def kl(a: float, b: float) -> float:
    """The Bernoulli KL divergence ``KL(a || b)``."""
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


class Stream:
    """Batches of row indices of ``before`` (i.i.d., by its weights), then of ``after``
    from row ``shift_at`` on."""

    def __init__(self, rng: np.random.Generator, before: Population,
                 after: Population | None = None, shift_at: int | None = None) -> None:
        self.rng, self.before, self.after, self.shift_at = rng, before, after, shift_at

    def batches(self, n_rows: int, batch: int = BATCH):
        """``(rows seen before this batch, population, row indices)`` per batch."""
        seen = 0
        while seen < n_rows:
            pop = self.before if self.after is None or seen < (self.shift_at or 0) \
                else self.after
            n = pop.labels.size
            idx = (self.rng.integers(0, n, batch) if pop.weights is None
                   else self.rng.choice(n, batch, p=pop.weights / pop.weights.sum()))
            yield seen, pop, idx
            seen += batch
