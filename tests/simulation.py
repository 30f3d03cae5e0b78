"""Guarantee simulations run on both cores: one seeded run per task, in worker processes.

The workers live here, in a module on the test path, so the pool can pickle them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from ebjr.calibration import select_threshold, tradeoff_curve
from ebjr.calibration.guarantee import GuaranteedDrop
from helpers import load_pair


def run_all(fn: Callable[[Any], Any], tasks: Iterable[Any], jobs: int = 2) -> list[Any]:
    """``[fn(t) for t in tasks]`` on ``jobs`` processes, in order."""
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(fn, tasks))


def pair_guarantee_run(task: tuple) -> tuple[float, float]:
    """One calibration draw of a public pair: (drop vs the teacher, teacher share), measured
    on the population (``how="iid"``: 5,000 rows drawn with replacement from the 10,000) or on
    the held-out half (``how="split"``: a 50/50 split)."""
    student, teacher, router, seed, how, p_value = task
    s, t, y = load_pair(student, teacher)
    rng = np.random.default_rng(seed)
    if how == "iid":
        cal, test = rng.integers(0, y.size, y.size // 2), np.arange(y.size)
    else:
        perm = rng.permutation(y.size)
        cal, test = perm[: y.size // 2], perm[y.size // 2 :]
    curve = tradeoff_curve(s[cal], t[cal], y[cal], router)
    target = GuaranteedDrop(0.005, 0.05, p_value=p_value, seed=seed)
    threshold = select_threshold(curve, target).threshold
    held = tradeoff_curve(s[test], t[test], y[test], router)
    point = held.at_threshold(threshold)
    return held.teacher_accuracy - point.accuracy, point.teacher_fraction


def zoo_search_run(task: tuple) -> tuple[float, float]:
    """One calibration draw of the synthetic zoo's population (20,000 rows): (drop vs the
    reference ``m3`` on the population, reference cost over the cascade's)."""
    from ebjr.calibration import MaxDrop
    from ebjr.calibration.zoo import search_cascade
    from helpers import synthetic_zoo

    run, n_cal, eps, delta, guaranteed = task
    outputs, y, costs = synthetic_zoo(20_000, seed=99)
    rows = np.random.default_rng(run).choice(y.size, n_cal, replace=True)
    target = GuaranteedDrop(eps, delta) if guaranteed else MaxDrop(eps)
    c = search_cascade({m: z[rows] for m, z in outputs.items()}, y[rows], costs, target,
                       reference="m3", seed=run, progress=False)
    r = c.apply(outputs)
    drop = float(np.mean(np.argmax(outputs["m3"], 1) == y) - np.mean(r.predictions == y))
    return drop, costs["m3"] / float(r.cost.mean())


def loss_population(n: int = 20_000, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Per-row absolute errors of a student and a teacher (the student's larger where its
    score is low), clipped at 10, and the student's score."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n)
    student = np.clip(rng.gamma(2.0, 0.15 + 3.0 * hard**2), 0, 10)
    teacher = np.clip(rng.gamma(2.0, 0.35 + 0.4 * hard), 0, 10)
    score = -hard + rng.normal(scale=0.3, size=n)
    return score, student, teacher


def loss_guarantee_run(task: tuple) -> tuple[float, float]:
    """One draw of ``n_cal`` rows from :func:`loss_population`: (the population's loss
    increase at the chosen threshold, its teacher share)."""
    from ebjr.calibration import MaxDrop, curve_from_loss

    seed, n_cal, eps, delta, guaranteed = task
    score, student, teacher = loss_population()
    rows = np.random.default_rng(seed).integers(0, score.size, n_cal)
    curve = curve_from_loss(score[rows], student[rows], teacher[rows])
    target = (GuaranteedDrop(eps, delta, p_value="wsr", seed=seed, loss_range=(0, 10))
              if guaranteed else MaxDrop(eps))
    threshold = select_threshold(curve, target).threshold
    point = curve_from_loss(score, student, teacher).at_threshold(threshold)
    return float(-teacher.mean() - point.accuracy), float(point.teacher_fraction)
