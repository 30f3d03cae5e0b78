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
