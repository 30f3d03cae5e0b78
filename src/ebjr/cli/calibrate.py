"""``ebjr calibrate``: a threshold for a target, written as a bundle."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ebjr._options import LOSSES, P_VALUES
from ebjr.cli._common import (
    add_pair_args,
    class_map,
    load_detection_pair,
    load_pair,
    load_regression_pair,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose a threshold for a target and save a bundle",
        description="Choose the threshold that meets a target on calibration outputs and "
        "write a versioned JSON bundle. With --max-drop and --confidence, the accuracy drop "
        "is guaranteed with that probability (Learn-then-Test), assuming calibration data and "
        "traffic come from the same distribution.",
    )
    add_pair_args(p)
    p.add_argument(
        "--router",
        default=None,
        help="router name (default energy; 'auto' picks one by cross-validation; "
        "--task regression: spread; --task detection: energy, eq. 14)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="temperature of the energy router (default 1)",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--teacher-accuracy",
        action="store_true",
        help="smallest teacher share that reaches the teacher's accuracy",
    )
    g.add_argument(
        "--max-drop",
        type=float,
        metavar="EPS",
        help="accuracy drop vs the teacher at most EPS (a fraction: 0.005 = 0.5 point)",
    )
    g.add_argument(
        "--max-teacher-fraction",
        type=float,
        metavar="F",
        help="send at most F of the inputs to the teacher",
    )
    g.add_argument(
        "--max-cost",
        type=float,
        metavar="C",
        help="average cost per input at most C (in the unit of the costs)",
    )
    g.add_argument(
        "--histogram-crossing",
        action="store_true",
        help="the paper's recommendation: where the score histograms of inputs the "
        "student gets right and wrong cross",
    )
    p.add_argument(
        "--confidence",
        type=float,
        metavar="P",
        help="with --max-drop: guarantee the drop with probability >= P (e.g. 0.95)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=LOSSES[0],
        help="with --confidence: the loss controlled (default signed; "
        "'disagreement' needs no labels)",
    )
    p.add_argument(
        "--p-value",
        choices=P_VALUES,
        default=None,
        help="with --confidence: the test: exact (the default for classification; exact "
        "unconditional for the signed loss, exact binomial otherwise), betting (wsr, the "
        "default for regression) or Hoeffding-Bentkus (hb)",
    )
    p.add_argument(
        "--loss-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="with --task regression --confidence: the range every row's loss is clipped to "
        "(the guarantee holds for the clipped loss; narrower is tighter)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for auto folds and wsr order")
    p.add_argument(
        "-o", "--output", required=True, metavar="BUNDLE.json", help="where to write the bundle"
    )
    p.add_argument("--report", metavar="DIR", help="also write an HTML report to DIR")
    p.add_argument("--json", action="store_true", help="print the bundle as JSON")
    p.set_defaults(func=run)


def target_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The target the flags ask for, as a spec for :func:`ebjr.calibration.target_from_spec`."""
    from ebjr.exceptions import InputError

    if args.confidence is not None and args.max_drop is None:
        raise InputError("--confidence goes with --max-drop (a guaranteed accuracy drop)")
    regression = getattr(args, "task", "classification") == "regression"
    if getattr(args, "task", None) == "detection" and args.confidence is not None:
        raise InputError("mAP is a quality of the whole set, not of each image, so there is no "
                         "per-image test to guarantee it: drop --confidence (--max-drop is "
                         "then in-sample, in mAP points)")
    if getattr(args, "task", None) == "detection" and args.histogram_crossing:
        raise InputError("--histogram-crossing needs right/wrong per row: a classification")
    loss_range = getattr(args, "loss_range", None)
    if loss_range is not None and not (regression and args.confidence is not None):
        raise InputError("--loss-range goes with --task regression --confidence")
    if regression and args.confidence is not None and loss_range is None:
        raise InputError("a guarantee for a regression's loss needs the range the loss is "
                         "clipped to: --loss-range LO HI (e.g. 0 and a value your errors "
                         "rarely exceed)")
    if regression and args.histogram_crossing:
        raise InputError("--histogram-crossing needs right/wrong per row: a classification")
    p_value = args.p_value or ("wsr" if regression else P_VALUES[0])
    if args.max_drop is not None:
        if args.confidence is None:
            return {"kind": "max_drop", "eps": args.max_drop}
        if not 0 < args.confidence < 1:
            raise InputError(f"--confidence must lie in (0, 1), got {args.confidence}")
        return {
            "kind": "guaranteed_drop",
            "eps": args.max_drop,
            "delta": round(1 - args.confidence, 12),
            "loss": args.loss,
            "p_value": p_value,
            "seed": args.seed,
            **({"loss_range": list(loss_range)} if loss_range is not None else {}),
        }
    if args.teacher_accuracy:
        return {"kind": "teacher_accuracy"}
    if args.max_teacher_fraction is not None:
        return {"kind": "max_teacher_fraction", "fraction": args.max_teacher_fraction}
    if args.max_cost is not None:
        return {"kind": "max_cost", "cost": args.max_cost}
    return {"kind": "histogram_crossing"}


def run(args: argparse.Namespace) -> int:
    from ebjr.bundle import write_bundle
    from ebjr.calibration import target_from_spec
    from ebjr.calibration.calibrate import calibrate_outputs

    target = target_from_spec(target_spec(args))
    if args.task != "classification":
        return _run_task(args, target)
    label_free = getattr(target, "loss", None) == "disagreement"
    s, t, y = load_pair(args, need_labels=not label_free)
    cmap = class_map(args)
    params = {} if args.temperature is None else {"temperature": args.temperature}
    result = calibrate_outputs(
        s.logits,
        t.logits,
        y,
        target,
        router=args.router or "energy",
        router_params=params,
        student_cost=args.student_cost,
        teacher_cost=args.teacher_cost,
        cost_unit=args.cost_unit,
        seed=args.seed,
        sources={"student": s.path, "teacher": t.path},
        class_map=cmap,
    )
    path = write_bundle(result.bundle, args.output,
                        inputs=(args.student, args.teacher, args.labels))
    if args.report and y is not None:
        from ebjr.evaluation import evaluate
        from ebjr.evaluation.report import write_report

        ev = evaluate(
            s.logits,
            t.logits,
            y,
            student_cost=args.student_cost,
            teacher_cost=args.teacher_cost,
            cost_unit=args.cost_unit,
            class_map=cmap,
        )
        index = write_report(
            ev, args.report, selection=result.selection, title="ebjr calibration (in-sample)"
        )
        print(f"report: {index}", file=sys.stderr)
    return _print(args, result, path)


def _print(args: argparse.Namespace, result: Any, path: Any) -> int:
    from ebjr.bundle import dumps

    if args.json:
        print(dumps(result.bundle.to_dict(), indent=2))
    else:
        print(result.summary())
        print(f"bundle: {path}")
    return 0


def _run_task(args: argparse.Namespace, target: Any) -> int:
    """A regression or a detection: their outputs files, through the same calibration."""
    from ebjr.bundle import write_bundle
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.exceptions import InputError

    if args.report:
        raise InputError(f"--report draws a classification's report; for a {args.task} the "
                         "bundle's curve holds the trade-off (ebjr evaluate --task ... --json)")
    if args.temperature is not None:
        raise InputError(f"--temperature applies to the energy of logits, not to a {args.task}")
    if args.task == "regression":
        s, t, truth, task = load_regression_pair(args)
        s, t = s.outputs, t.outputs
    else:
        s, t, truth, task = load_detection_pair(args)
    router = args.router or ("spread" if args.task == "regression" else "energy")
    result = calibrate_outputs(s, t, truth, target, router=router,
                               student_cost=args.student_cost, teacher_cost=args.teacher_cost,
                               cost_unit=args.cost_unit, seed=args.seed,
                               sources={"student": args.student, "teacher": args.teacher},
                               task=task)
    path = write_bundle(result.bundle, args.output,
                        inputs=(args.student, args.teacher, args.labels, args.ground_truth))
    return _print(args, result, path)
