"""Router ``auto``: choose the score by cross-validation on the calibration data.

For each candidate score (the energy at a few temperatures and the baselines),
the data are split into ``cv`` folds; on each fold the threshold is chosen on
the other folds with the user's target and applied to the held-out fold. Every
row thus gets an out-of-fold decision, pooled into a held-out cost and a
held-out accuracy drop vs the teacher (with its standard error). The candidate
with the lowest held-out cost among those that meet the target (held-out drop
at most the allowed drop plus one standard error) wins; if none meets it, the
one with the smallest drop; for budget targets (teacher share or cost), the
one with the smallest held-out drop. The
per-candidate evidence is kept in ``evidence_`` so the user sees why.

>>> import numpy as np
>>> from ebjr.calibration import MaxDrop
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 4, 400)
>>> s = rng.normal(size=(400, 4)) + 2.0 * np.eye(4)[y]
>>> t = rng.normal(size=(400, 4)) + 4.0 * np.eye(4)[y]
>>> auto = AutoRouter(target=MaxDrop(0.01), cv=4).fit(s, t, y)
>>> auto.selected_.name in list_candidates()
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ebjr._utils.arrays import Array, to_numpy
from ebjr._utils.validation import check_int, check_labels, check_pair
from ebjr.calibration import MaxDrop, Target, curve_from_scores, select_threshold
from ebjr.exceptions import (
    InputError,
    LogProbabilityInputError,
    NotFittedError,
    TargetUnreachableError,
)
from ebjr.routing import Router, router_from_spec, teacher_mask

__all__ = ["DEFAULT_CANDIDATES", "AutoRouter", "CandidateEvidence", "list_candidates"]

#: Scores tried by default: the paper's energy at four temperatures and the baselines.
DEFAULT_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"name": "energy", "params": {"temperature": 0.5}},
    {"name": "energy", "params": {"temperature": 1.0}},
    {"name": "energy", "params": {"temperature": 2.0}},
    {"name": "energy", "params": {"temperature": 5.0}},
    {"name": "softmax", "params": {}},
    {"name": "entropy", "params": {}},
    {"name": "maxlogit", "params": {}},
    {"name": "margin", "params": {}},
)


def _row_digests(logits: Array) -> list[bytes]:
    """A 16-byte digest of each row's float64 values: how ``auto`` recognises its fitting rows."""
    rows = np.ascontiguousarray(to_numpy(logits), dtype=np.float64)
    rows = rows.reshape(rows.shape[0], -1)
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def list_candidates() -> list[str]:
    """Names of the routers ``auto`` tries by default."""
    return sorted({c["name"] for c in DEFAULT_CANDIDATES})


def router_label(spec: dict[str, Any]) -> str:
    """A short readable label for a router spec: ``energy``, ``energy(T=2)``, ``softmax``."""
    params = spec.get("params") or {}
    if spec["name"] == "energy":
        t = float(params.get("temperature", 1.0))
        return "energy" if t == 1.0 else f"energy(T={t:g})"
    if not params:
        return spec["name"]
    return spec["name"] + "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


@dataclass(frozen=True)
class CandidateEvidence:
    """Held-out results of one candidate score (means over the folds)."""

    router: dict[str, Any]
    cost: float | None
    teacher_fraction: float | None
    accuracy_drop: float | None
    meets_target: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "label": router_label(self.router),
            "heldout_cost": self.cost,
            "heldout_teacher_fraction": self.teacher_fraction,
            "heldout_accuracy_drop": self.accuracy_drop,
            "meets_target": self.meets_target,
            "note": self.note,
        }


class AutoRouter(Router):
    """Picks among built-in scores by cross-validated cost at the user's target.

    Args:
        target: the target used inside each fold (default ``MaxDrop(0.005)``).
        candidates: router specs to try (default :data:`DEFAULT_CANDIDATES`).
        cv: number of folds (>= 2).
        seed: seed of the fold assignment.
        student_cost, teacher_cost: per-input costs used for the held-out cost.

    After :meth:`fit`: ``selected_`` (the chosen router) and ``evidence_``
    (a list of :class:`CandidateEvidence`). Scoring delegates to
    ``selected_``; a fitted ``auto`` router is saved as the router it chose.
    """

    name = "auto"
    requires_fit: ClassVar[bool] = True

    def __init__(
        self,
        target: Target | None = None,
        candidates: list[dict[str, Any]] | None = None,
        cv: int = 5,
        seed: int = 0,
        student_cost: float = 1.0,
        teacher_cost: float = 1.0,
    ) -> None:
        self.target = target
        self.candidates = candidates
        self.cv = cv
        self.seed = seed
        self.student_cost = student_cost
        self.teacher_cost = teacher_cost

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "selected_")

    def rows_fitted_on(self, logits: Array) -> int:
        """How many rows of ``logits`` (as float64 bytes) were among the rows ``fit`` saw."""
        seen = getattr(self, "_fit_rows", None)
        if not seen:
            return 0
        return sum(d in seen for d in _row_digests(logits))

    def to_spec(self) -> dict[str, Any]:
        if not self.is_fitted:
            raise NotFittedError("an 'auto' router must be fitted before it can be saved")
        return self.selected_.to_spec()

    def _score(self, logits: Array) -> Array:
        if not self.is_fitted:
            raise NotFittedError(
                "the 'auto' router must be fitted before it can score: call "
                ".fit(student_logits, teacher_logits, labels) first"
            )
        return self.selected_.score(logits, validate=False)

    def fit(self, student_logits: Array, teacher_logits: Array, labels: Any) -> AutoRouter:
        """Choose the score by ``cv``-fold cross-validation; returns ``self``."""
        s, t = check_pair(student_logits, teacher_logits)
        y = check_labels(labels, s.shape[0], s.shape[1])
        check_int(self.cv, "cv", 2)
        n = s.shape[0]
        if n < 2 * self.cv:
            raise InputError(f"auto needs at least {2 * self.cv} calibration rows, got {n}")
        target = self.target if self.target is not None else MaxDrop(0.005)
        bound = target.drop_bound()
        specs = list(self.candidates) if self.candidates is not None else list(DEFAULT_CANDIDATES)
        if not specs:
            raise InputError("candidates must name at least one router")
        folds = np.random.default_rng(self.seed).permutation(n) % self.cv
        ps, pt = to_numpy(s).argmax(axis=1), to_numpy(t).argmax(axis=1)
        evidence = []
        for spec in specs:
            router = router_from_spec(spec)
            try:
                router.check_raw_logits(s)  # s is checked by check_pair: only this is left
                score = to_numpy(router.score(s, validate=False), np.float64)
            except LogProbabilityInputError:
                evidence.append(
                    CandidateEvidence(
                        router.to_spec(),
                        None,
                        None,
                        None,
                        False,
                        "skipped: the inputs are log-probabilities, on which this score is "
                        "constant",
                    )
                )
                continue
            evidence.append(self._cross_validate(router, score, ps, pt, y, folds, target, bound))
        usable = [e for e in evidence if e.cost is not None]
        if not usable:
            raise TargetUnreachableError("no candidate router could be evaluated on this data")
        if bound is not None:
            meeting = [e for e in usable if e.meets_target]
            best = (
                min(meeting, key=lambda e: (e.cost, e.accuracy_drop))
                if meeting
                else min(usable, key=lambda e: (e.accuracy_drop, e.cost))
            )
        else:
            best = min(usable, key=lambda e: (e.accuracy_drop, e.cost))
        self.selected_ = router_from_spec(best.router)
        self.evidence_ = evidence
        self.target_ = target
        self._fit_rows = frozenset(_row_digests(s))
        return self

    def _cross_validate(
        self,
        router: Router,
        score: np.ndarray,
        ps: np.ndarray,
        pt: np.ndarray,
        y: np.ndarray,
        folds: np.ndarray,
        target: Target,
        bound: float | None,
    ) -> CandidateEvidence:
        costs, fractions = [], []
        signed = np.zeros(score.shape[0])  # out-of-fold signed loss per row
        for k in range(self.cv):
            fit, held = folds != k, folds == k
            kwargs: dict[str, Any] = {
                "student_cost": self.student_cost, "teacher_cost": self.teacher_cost
            }
            curve = curve_from_scores(score[fit], ps[fit], pt[fit], y[fit], **kwargs)
            try:
                threshold = select_threshold(curve, target).threshold
            except TargetUnreachableError as exc:
                return CandidateEvidence(router.to_spec(), None, None, None, False, str(exc))
            teacher = teacher_mask(score[held], threshold)
            joint = np.where(teacher, pt[held], ps[held])
            fraction = float(teacher.mean())
            fractions.append(fraction)
            costs.append(self.student_cost + fraction * self.teacher_cost)
            signed[held] = (pt[held] == y[held]).astype(float) - (joint == y[held])
        drop = float(signed.mean())
        stderr = float(signed.std(ddof=1) / np.sqrt(signed.size)) if signed.size > 1 else 0.0
        # the held-out drop is an estimate: a candidate meets the target unless its drop
        # exceeds the bound by more than one standard error
        meets = bound is None or drop <= bound + stderr
        return CandidateEvidence(
            router.to_spec(),
            float(np.mean(costs)),
            float(np.mean(fractions)),
            drop,
            meets,
            f"drop standard error {100 * stderr:.2f} pt",
        )
