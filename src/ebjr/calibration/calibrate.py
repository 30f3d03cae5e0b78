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
from ebjr.tasks import Classification, TaskKind, get_task

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
        loss = c.quality.removeprefix("negative ") if c.quality.startswith("negative ") \
            else None
        if loss is not None:  # a loss curve: its accuracy is the negated mean loss
            quality = (f"mean {loss} {-p.accuracy:.4g} (teacher {-c.teacher_accuracy:.4g}, "
                       f"student {-c.student_accuracy:.4g}), ")
        elif c.quality != "accuracy":  # a set-level quality (mAP): the curve's ends
            quality = (f"{c.quality} {p.accuracy:.4g} (teacher {c.accuracy[-1]:.4g}, "
                       f"student {c.accuracy[0]:.4g}), ")
        elif c.has_labels:
            quality = (f"accuracy {100 * p.accuracy:.2f}% (teacher "
                       f"{100 * c.teacher_accuracy:.2f}%, student "
                       f"{100 * c.student_accuracy:.2f}%), ")
        else:
            quality = f"agreement with teacher {100 * p.agreement:.2f}%, "
        lines.append(
            f"threshold {p.threshold:.6g}: teacher share {100 * p.teacher_fraction:.2f}%, "
            + quality
            + f"cost {p.cost:.4g}{unit} per input, speed-up {p.speedup:.2f}x over the teacher alone"
            f" (on {c.n} calibration inputs)"
        )
        if self.selection.target.get("kind") == "guaranteed_drop":
            t = self.selection.target
            what = (
                "share of answers that differ from the teacher's (so also the accuracy drop)"
                if t.get("loss") == "disagreement"
                else f"increase of the mean {loss} (clipped to {t.get('loss_range')}) over "
                "the teacher's" if loss is not None
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
    task: str | TaskKind | None = None,
    n_points: int = 21,
) -> CalibrationResult:
    """Choose a router's threshold for ``target`` on calibration outputs and build a bundle.

    With ``router="auto"`` the score is chosen by cross-validation first. If
    the target is a guarantee, the router is chosen on a seeded
    ``AUTO_SELECTION_SHARE`` of the rows and the guarantee is computed on the
    others, so the router does not depend on the data the test uses. ``class_map`` (a
    specialized student's classes in the teacher's, see :func:`tradeoff_curve`) is kept in
    the bundle.

    ``task`` (:mod:`ebjr.tasks`, default classification) says what the outputs are. For a
    regression, ``student_logits`` and ``teacher_logits`` are the two regressors' outputs
    (``(n,)`` or ``(n, columns)``, the task's columns), ``labels`` the targets (required),
    and quality is the task's negated loss: targets and guarantees are in loss units
    (:func:`~ebjr.calibration.curve.curve_from_loss`). For a detection, they are one
    ``Detections`` per image each, and ``labels`` is the set-level quality of a routing
    mask (e.g. :class:`ebjr.evaluation.detection.MapMetric`): the curve is
    :func:`~ebjr.calibration.curve.curve_from_metric`'s, ``n_points`` operating points.
    """
    kind = get_task(task)
    if not isinstance(kind, Classification):
        return _calibrate_task(kind, student_logits, teacher_logits, labels, target, router,
                               router_params, student_cost, teacher_cost, cost_unit, sources,
                               n_points)
    if class_map is None:
        class_map = kind.class_map
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


def _calibrate_task(task: TaskKind, student: Any, teacher: Any, truth: Any, target: Target,
                    router: str | Router, router_params: dict[str, Any] | None,
                    student_cost: float, teacher_cost: float, cost_unit: str,
                    sources: dict[str, str] | None, n_points: int) -> CalibrationResult:
    """:func:`calibrate_outputs` for a task whose quality is per row against the truth (a
    regression's negated loss) or set-level (a detection's mAP): the task checks, scores and
    answers; the curve is the quality's."""
    from ebjr.calibration.curve import curve_from_metric, curve_from_quality

    if truth is None:
        raise InputError(f"a {task.name} is calibrated against its targets: pass them "
                         "(labels=..., --labels FILE, or 'targets' in an outputs file)"
                         if task.name != "detection" else "a detection is calibrated against "
                         "its ground truth: pass a metric of routing masks (MapMetric; "
                         "--ground-truth COCO.json)")
    n = len(student) if isinstance(student, list | tuple) else int(to_numpy(student).shape[0])
    s_out = task.check_output(student if isinstance(student, list | tuple)
                              else to_numpy(student), n, "student")
    t_out = task.check_output(teacher if isinstance(teacher, list | tuple)
                              else to_numpy(teacher), n, "teacher")
    r = task.get_router(router) if not router_params else get_router(router, **router_params)
    task.check_router(r)
    scores = np.asarray(to_numpy(task.score(r, s_out)), dtype=np.float64)
    if task.name == "detection":
        if not callable(truth):
            raise InputError("a detection's truth is a metric of routing masks (e.g. "
                             f"MapMetric), got a {type(truth).__name__}")
        curve = curve_from_metric(scores, truth, n_points=n_points, quality="mAP",
                                  student_cost=student_cost, teacher_cost=teacher_cost,
                                  cost_unit=cost_unit, router=r.to_spec())
        return _result(task, r, curve, select_threshold(curve, target), sources,
                       {"student_quality": float(curve.accuracy[0]),
                        "teacher_quality": float(curve.accuracy[-1])})
    y = np.asarray(to_numpy(truth), dtype=np.float64).reshape(-1)
    if y.shape[0] != n or not np.isfinite(y).all():
        raise InputError(f"targets: expected {n} finite values (one per row), got shape "
                         f"{y.shape}" + ("" if y.shape[0] != n else " with NaN or inf"))
    qs = task.quality(task.answer(np, s_out, "student").predictions, y)
    qt = task.quality(task.answer(np, t_out).predictions, y)
    what = getattr(task, "loss", "quality")
    curve = curve_from_quality(scores, qs, qt, quality=f"negative {what} error",
                               student_cost=student_cost, teacher_cost=teacher_cost,
                               cost_unit=cost_unit, router=r.to_spec())
    return _result(task, r, curve, select_threshold(curve, target), sources,
                   {"student_quality": float(qs.mean()), "teacher_quality": float(qt.mean())})


def _result(task: TaskKind, r: Router, curve: TradeoffCurve, selection: Selection,
            sources: dict[str, str] | None, qualities: dict[str, float]) -> CalibrationResult:
    """The result of a calibration whose curve and selection are made: the bundle with the
    task's record."""
    calibration = {
        "n": curve.n,
        "in_sample": True,
        "quality": curve.quality,
        **qualities,
        **selection.point.as_dict(),
        "details": selection.details,
    }
    bundle = RoutingBundle(
        router=r.to_spec(),
        threshold=selection.threshold,
        costs={"student": curve.student_cost, "teacher": curve.teacher_cost,
               "unit": curve.cost_unit},
        target=selection.target,
        calibration=calibration,
        curve=curve.summary(),
        task=task.to_spec(),
        extra={"sources": sources} if sources else {},
    )
    return CalibrationResult(bundle, selection, curve, r)
