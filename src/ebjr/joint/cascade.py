"""A cascade of N >= 2 models: each stage answers the rows it is fit for, the rest go on.

Stage ``i`` (all but the last) answers a row iff its router's score is
``>= thresholds[i]``; a NaN or ``-inf`` score goes on (fail safe), and the last
stage answers every row that reaches it. A stage's answer is formed one of two
ways (``combine``):

- ``"last"``: the stage's own softmax probabilities (the paper's pair is the
  2-stage case: ``Cascade(("student", "teacher"), (t,))`` answers exactly as
  ``JointModel(student, teacher, router, t)``);
- ``"mean"``: the average of the softmax probabilities of every stage run so
  far, a committee that costs nothing extra since those stages already ran.
  The router then scores the committee's probabilities, so it must be one
  that is meaningful on probabilities (``softmax``, ``margin``, ``entropy``):
  the free energy of averaged probabilities is 0 for every row.

A row pays for every stage it reaches. :class:`Cascade` applies to
precomputed outputs (``{model name: logits}``); the functions below are the
per-stage steps a live shell runs on the rows that reach each stage.

>>> import numpy as np
>>> small = np.array([[4.0, 0.0], [0.1, 0.0], [0.2, 0.1]])
>>> mid = np.array([[0.0, 1.0], [3.0, 0.0], [0.0, 0.1]])
>>> big = np.array([[0.0, 9.0], [0.0, 9.0], [9.0, 0.0]])
>>> c = Cascade(("small", "mid", "big"), (0.9, 0.9), costs=(1.0, 2.0, 10.0), router="softmax")
>>> r = c.apply({"small": small, "mid": mid, "big": big})
>>> r.predictions.tolist(), r.exit_stage.tolist(), r.answered_by.tolist()
([0, 0, 0], [0, 1, 2], ['small', 'mid', 'big'])
>>> float(r.cost.mean())
5.666666666666667
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr._utils.arrays import namespace
from ebjr._utils.validation import check_cost
from ebjr.exceptions import InputError
from ebjr.routing import Router, check_threshold, get_router
from ebjr.routing.base import router_from_spec, teacher_mask
from ebjr.scores import softmax

__all__ = [
    "COMBINES",
    "Cascade",
    "CascadeResult",
    "answer_logits",
    "check_combine",
    "exit_stages",
    "stage_answer",
]

#: how a stage forms its answer: its own probabilities, or the mean of the stages run so far
COMBINES = ("last", "mean")
_TINY = 1e-30  # floor of averaged probabilities before the log (a class no stage gives any mass)


def check_combine(combine: str, router: Router) -> str:
    """``combine`` if it is known and the router can score its answers; else a clear error."""
    if combine not in COMBINES:
        raise InputError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    if combine == "mean" and router.needs_raw_logits:
        raise InputError(
            f"combine='mean' answers with averaged probabilities, on which the {router.name!r} "
            "score is the same for every row; use a router meaningful on probabilities "
            "('softmax', 'margin' or 'entropy')"
        )
    return combine


def stage_answer(logits: Any, running: Any, i: int, combine: str) -> tuple[Any, Any]:
    """Stage ``i``'s answer as logits, and the running sum of probabilities to pass on (numpy
    or torch, rows aligned with ``running``): its own logits for ``"last"``; for ``"mean"``,
    the log of the average softmax of stages ``0..i``."""
    if combine == "last":
        return logits, None
    xp = namespace(logits)
    p = softmax(logits, validate=False)
    total = p if running is None else running + p
    return xp.log(xp.clip(total / (i + 1), min=_TINY)), total


def answer_logits(logits: Sequence[np.ndarray], combine: str) -> list[np.ndarray]:
    """Each stage's answer as logits, on rows aligned across stages (:func:`stage_answer`
    of every stage on every row)."""
    out, running = [], None
    for i, z in enumerate(logits):
        answer, running = stage_answer(np.asarray(z), running, i, combine)
        out.append(answer)
    return out


def exit_stages(scores: Sequence[np.ndarray], thresholds: Sequence[float], n: int) -> np.ndarray:
    """The stage that answers each of ``n`` rows: the first ``i`` with
    ``scores[i] >= thresholds[i]``, else the last stage (``len(scores)``). NaN and ``-inf``
    scores go on."""
    out = np.full(n, len(scores), dtype=np.int64)
    open_rows = np.ones(n, dtype=bool)
    for i, (s, t) in enumerate(zip(scores, thresholds, strict=True)):
        answers = open_rows & ~np.asarray(teacher_mask(np.asarray(s), t))
        out[answers] = i
        open_rows &= ~answers
    return out


@dataclass(frozen=True)
class CascadeResult:
    """A cascade's answers on a set of rows.

    Attributes:
        predictions: class per row, shape ``(n,)``.
        exit_stage: index of the stage that answered each row.
        stages: the stage names, in order.
        stage_costs: cost of each stage per row it reaches.
    """

    predictions: np.ndarray
    exit_stage: np.ndarray
    stages: tuple[str, ...]
    stage_costs: tuple[float, ...]

    @property
    def answered_by(self) -> np.ndarray:
        """The name of the stage that answered each row."""
        return np.asarray(self.stages, dtype=object)[self.exit_stage].astype(str)

    @property
    def cost(self) -> np.ndarray:
        """Cost per row: every stage up to and including the one that answered."""
        return np.cumsum(self.stage_costs)[self.exit_stage]

    def stage_shares(self) -> dict[str, float]:
        """Share of the rows each stage answered."""
        counts = np.bincount(self.exit_stage, minlength=len(self.stages))
        n = max(int(self.exit_stage.shape[0]), 1)
        return {name: float(c) / n for name, c in zip(self.stages, counts, strict=True)}


@dataclass(frozen=True)
class Cascade:
    """Models chained by cost; see the module documentation. One stage is the model alone
    (what a search returns when nothing cheaper can be certified).

    Attributes:
        stages: model names, cheapest first (keys of the outputs :meth:`apply` takes).
        thresholds: one per stage but the last.
        costs: cost per row of each stage, in any one unit (default 1 each).
        router: the score every stage but the last routes on (name or instance).
        combine: ``"last"`` or ``"mean"``.
        reference: the model the cascade's targets were measured against, if any.
        details: how the cascade was chosen (target, evidence, certificate).
    """

    stages: tuple[str, ...]
    thresholds: tuple[float, ...]
    costs: tuple[float, ...] | None = None
    router: Router | str = "energy"
    combine: str = "last"
    reference: str | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        stages = tuple(str(s) for s in self.stages)
        if len(stages) < 1 or len(set(stages)) != len(stages):  # one stage: the model alone
            raise InputError(f"a cascade needs distinct stage names, got {list(self.stages)}")
        if len(self.thresholds) != len(stages) - 1:
            raise InputError(
                f"a cascade of {len(stages)} stages needs {len(stages) - 1} thresholds "
                f"(none for the last stage), got {len(self.thresholds)}"
            )
        costs = (1.0,) * len(stages) if self.costs is None else tuple(self.costs)
        if len(costs) != len(stages):
            raise InputError(f"{len(costs)} costs for {len(stages)} stages")
        costs = tuple(
            check_cost(c, f"cost of stage {s!r}") for c, s in zip(costs, stages, strict=True)
        )
        router = get_router(self.router)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "thresholds", tuple(check_threshold(t) for t in self.thresholds))
        object.__setattr__(self, "costs", costs)
        object.__setattr__(self, "router", router)
        object.__setattr__(self, "combine", check_combine(self.combine, router))

    def apply(self, outputs: Mapping[str, Any]) -> CascadeResult:
        """Answers on precomputed outputs: ``outputs[name]`` holds each stage's logits
        (``(n, C)``, rows aligned). Only the stages' entries are read."""
        missing = [s for s in self.stages if s not in outputs]
        if missing:
            raise InputError(f"no outputs for stage(s) {missing}; got {sorted(outputs)}")
        logits = [np.asarray(outputs[s]) for s in self.stages]
        shapes = {s: z.shape for s, z in zip(self.stages, logits, strict=True)}
        if any(z.ndim != 2 for z in logits) or len({z.shape for z in logits}) != 1:
            raise InputError(f"every stage's outputs must be (n, C) with the same n and C, "
                             f"got {shapes}")
        answers = answer_logits(logits, self.combine)
        router: Router = self.router  # type: ignore[assignment]
        scores = [router.score(a, validate=False) for a in answers[:-1]]
        exit_stage = exit_stages(scores, self.thresholds, logits[0].shape[0])
        answer = np.take_along_axis(np.stack(answers), exit_stage[None, :, None], 0)[0]
        return CascadeResult(np.argmax(answer, axis=1), exit_stage, self.stages, self.costs)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (:meth:`from_dict` rebuilds the cascade)."""
        router: Router = self.router  # type: ignore[assignment]
        return {
            "stages": list(self.stages),
            "thresholds": list(self.thresholds),
            "costs": list(self.costs or ()),
            "router": router.to_spec(),
            "combine": self.combine,
            "reference": self.reference,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cascade:
        try:
            return cls(
                tuple(d["stages"]),
                tuple(d["thresholds"]),
                tuple(d["costs"]) if d.get("costs") else None,
                router_from_spec(d["router"]),
                d.get("combine", "last"),
                d.get("reference"),
                dict(d.get("details") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a cascade record ({exc}); expected stages, thresholds, "
                             "costs, router, combine") from exc
