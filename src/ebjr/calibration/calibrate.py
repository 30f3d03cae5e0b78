"""From calibration outputs to a bundle: router (fitted if ``auto``), curve, threshold.

This is the one function behind ``ebjr calibrate`` and the quickstart, so
the command line and the library give the same bundle for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, to_numpy
from ebjr._utils.validation import check_pair
from ebjr.bundle import RoutingBundle
from ebjr.calibration import Selection, Target, TradeoffCurve, select_threshold, tradeoff_curve
from ebjr.calibration.auto import AutoRouter, router_label
from ebjr.exceptions import InputError
from ebjr.routing import Router, get_router

__all__ = ["CalibrationResult", "calibrate_outputs"]

#: With ``auto`` and a guaranteed target, this share of the calibration rows
#: picks the router and the rest runs the test, so the guarantee stays valid.
AUTO_SELECTION_SHARE = 0.3


@dataclass
class CalibrationResult:
    """What :func:`calibrate_outputs` produced."""

    bundle: RoutingBundle
    selection: Selection
    curve: TradeoffCurve
    router: Router
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines about the chosen operating point."""
        p, c = self.selection.point, self.curve
        unit = f" {c.cost_unit}" if c.cost_unit else ""
        lines = [f"router: {router_label(self.router.to_spec())}"]
        if self.evidence:
            lines.append("auto: held-out cost per candidate (lower is better):")
            for e in self.evidence:
                cost = "n/a" if e["heldout_cost"] is None else f"{e['heldout_cost']:.4g}"
                drop = (
                    "n/a"
                    if e["heldout_accuracy_drop"] is None
                    else f"{100 * e['heldout_accuracy_drop']:+.2f} pt"
                )
                mark = "*" if e["router"] == self.router.to_spec() else " "
                lines.append(
                    f"  {mark} {e['label']:<16} cost {cost:>10}  drop {drop:>10}  {e['note']}"
                )
        lines.append(f"target: {self.selection.target}")
        lines.append(
            f"threshold {p.threshold:.6g}: teacher share {100 * p.teacher_fraction:.2f}%, "
            + (
                f"accuracy {100 * p.accuracy:.2f}% (teacher {100 * c.teacher_accuracy:.2f}%, "
                f"student {100 * c.student_accuracy:.2f}%), "
                if c.has_labels
                else f"agreement with teacher {100 * p.agreement:.2f}%, "
            )
            + f"cost {p.cost:.4g}{unit} per input, speed-up {p.speedup:.2f}x over the teacher alone"
            f" (on {c.n} calibration inputs)"
        )
        if self.selection.target.get("kind") == "guaranteed_drop":
            t = self.selection.target
            what = (
                "share of answers that differ from the teacher's (so also the accuracy drop)"
                if t.get("loss") == "disagreement"
                else "accuracy drop vs the teacher"
            )
            lines.append(
                f"guarantee: {what} <= {t['eps']} with probability >= "
                f"{1 - t['delta']:g} on new inputs from the calibration distribution"
            )
        return "\n".join(lines)


def calibrate_outputs(
    student_logits: Array,
    teacher_logits: Array,
    labels: Any | None,
    target: Target,
    *,
    router: str | Router = "energy",
    router_params: dict[str, Any] | None = None,
    student_cost: float = 1.0,
    teacher_cost: float = 1.0,
    cost_unit: str = "",
    seed: int = 0,
    sources: dict[str, str] | None = None,
    class_map: Any = None,
) -> CalibrationResult:
    """Choose a router's threshold for ``target`` on calibration outputs and build a bundle.

    With ``router="auto"`` the score is chosen by cross-validation first. If
    the target is a guarantee, the router is chosen on a seeded
    ``AUTO_SELECTION_SHARE`` of the rows and the guarantee is computed on the
    others, so the router does not depend on the data the test uses. ``class_map`` (a
    specialized student's classes in the teacher's, see :func:`tradeoff_curve`) is kept in
    the bundle.
    """
    s, t = check_pair(student_logits, teacher_logits, class_map)
    s_np, t_np = to_numpy(s), to_numpy(t)
    y = None if labels is None else to_numpy(labels)
    r = get_router(router, **(router_params or {}))
    evidence: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if isinstance(r, AutoRouter):
        if class_map is not None:
            raise InputError("router 'auto' compares scores of a student in the teacher's "
                             "classes; with a class_map name the router (e.g. specialized)")
        if y is None:
            raise InputError("router 'auto' needs labels to compare candidate scores")
        guaranteed = target.kind == "guaranteed_drop"
        inner = target
        if guaranteed:
            from ebjr.calibration import MaxDrop

            inner = MaxDrop(target.drop_bound() or 0.0)
        auto = AutoRouter(
            target=inner, seed=seed, student_cost=student_cost, teacher_cost=teacher_cost
        )
        if guaranteed:
            perm = np.random.default_rng(seed).permutation(s_np.shape[0])
            k = round(AUTO_SELECTION_SHARE * s_np.shape[0])
            pick, rest = perm[:k], perm[k:]
            auto.fit(s_np[pick], t_np[pick], y[pick])
            s_np, t_np, y = s_np[rest], t_np[rest], y[rest]
            extra["auto_selection_rows"] = k
        else:
            auto.fit(s_np, t_np, y)
        evidence = [e.as_dict() for e in auto.evidence_]
        extra["auto_evidence"] = evidence
        r = auto.selected_
    curve = tradeoff_curve(s_np, t_np, y, r, student_cost, teacher_cost, cost_unit=cost_unit,
                           class_map=class_map)
    selection = select_threshold(curve, target)
    p = selection.point
    calibration = {
        "n": curve.n,
        "in_sample": True,
        "student_accuracy": curve.student_accuracy if curve.has_labels else None,
        "teacher_accuracy": curve.teacher_accuracy if curve.has_labels else None,
        **p.as_dict(),
        "details": selection.details,
    }
    bundle = RoutingBundle(
        router=r.to_spec(),
        threshold=selection.threshold,
        costs={"student": curve.student_cost, "teacher": curve.teacher_cost, "unit": cost_unit},
        target=selection.target,
        calibration=calibration,
        curve=curve.summary(),
        class_map=None if class_map is None else np.asarray(class_map).astype(int).tolist(),
        extra={**extra, **({"sources": sources} if sources else {})},
    )
    return CalibrationResult(bundle, selection, curve, r, evidence)
