"""``ebjr cascade``: the cheapest chain of models from a zoo for a target, written as a document."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ebjr.cli.calibrate import target_spec

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cascade",
        help="choose which models to chain, and their thresholds, from a zoo",
        description="Search every chain of up to --max-stages models (cheapest first) from "
        "the outputs of a model zoo on the same calibration rows, and write the cheapest "
        "cascade that meets the target against a reference model (default: the most "
        "accurate). With --max-drop and --confidence, the drop is guaranteed with that "
        "probability for the chosen chain and thresholds together, assuming calibration "
        "rows and traffic come from the same distribution. A model is named by its file's "
        "stem.",
    )
    p.add_argument("files", nargs="+", metavar="OUTPUTS.npz",
                   help="each model's outputs (.npz with 'logits' and optionally 'labels')")
    p.add_argument("--costs", nargs="+", type=float, required=True, metavar="C",
                   help="cost per row of each model, in the order of the files")
    p.add_argument("--cost-unit", default="", metavar="UNIT", help="e.g. MAdds or ms")
    p.add_argument("--labels", metavar="FILE", help="labels (.npy, or .npz with 'labels')")
    p.add_argument("--reference", metavar="NAME",
                   help="the model targets are measured against (default: the most accurate)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--teacher-accuracy", action="store_true",
                   help="reach the reference's accuracy (in-sample)")
    g.add_argument("--max-drop", type=float, metavar="EPS",
                   help="accuracy drop vs the reference at most EPS (a fraction)")
    g.add_argument("--max-cost", type=float, metavar="C",
                   help="the most accurate cascade whose mean cost per row is at most C")
    p.add_argument("--confidence", type=float, metavar="P",
                   help="with --max-drop: guarantee the drop with probability >= P")
    p.add_argument("--max-stages", type=int, default=3, metavar="K",
                   help="longest chain tried (default 3)")
    p.add_argument("--combine", nargs="+", choices=("last", "mean"), default=["last", "mean"],
                   help="how a stage answers: its own probabilities (last) or the mean of the "
                   "stages run so far (mean); default: try both")
    p.add_argument("--router", default="softmax",
                   help="the score each stage routes on (default softmax; energy with "
                   "--combine last only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the selection/certification split")
    p.add_argument("-o", "--output", required=True, metavar="CASCADE.json",
                   help="where to write the cascade document")
    p.add_argument("--report", metavar="DIR", help="also write a chart and an HTML page to DIR")
    p.set_defaults(func=run, max_teacher_fraction=None, histogram_crossing=False,
                   loss="signed", p_value="exact")


def run(args: argparse.Namespace) -> int:
    from ebjr.bundle.cascade import write_cascade
    from ebjr.bundle.outputs import load_zoo
    from ebjr.calibration import target_from_spec
    from ebjr.calibration.zoo import search_cascade
    from ebjr.exceptions import InputError

    target = target_from_spec(target_spec(args))
    zoo, labels = load_zoo(args.files, args.labels)
    if len(args.costs) != len(zoo):
        raise InputError(f"--costs gives {len(args.costs)} costs for {len(zoo)} files: give one "
                         "per file, in the same order")
    outputs = {name: o.logits for name, o in zoo.items()}
    costs = dict(zip(zoo, args.costs, strict=True))
    cascade = search_cascade(outputs, labels, costs, target, max_stages=args.max_stages,
                             combine=args.combine, router=args.router, reference=args.reference,
                             seed=args.seed, progress=None)
    path = write_cascade(cascade, args.output, sources={n: o.path for n, o in zoo.items()})
    d = cascade.details
    unit = f" {args.cost_unit}" if args.cost_unit else ""
    print(f"cascade: {' -> '.join(cascade.stages)} (combine {cascade.combine}, router "
          f"{cascade.router.name})")  # type: ignore[union-attr]
    print(f"thresholds: {', '.join(f'{t:.6g}' for t in cascade.thresholds) or '(one model)'}")
    print(f"calibration: accuracy {100 * d['calibration_accuracy']:.2f}% at "
          f"{d['calibration_cost']:.4g}{unit} per row; reference {cascade.reference} "
          f"{100 * d['reference_accuracy']:.2f}% at {d['reference_cost']:.4g}{unit} "
          f"({d['reference_cost'] / d['calibration_cost']:.2f}x the cascade's cost)")
    if "certified" in d:
        if d["certified"]:
            print(f"guarantee: drop <= {target.eps} with probability >= "  # type: ignore[attr-defined]
                  f"{1 - target.delta:g}, certified on {d['certification_rows']} rows "  # type: ignore[attr-defined]
                  f"(chosen on {d['selection_rows']})")
        else:
            print("guarantee: no cheaper cascade could be certified; the reference alone meets it")
    if args.report:
        from ebjr.evaluation.zoo_report import write_cascade_report

        index = write_cascade_report(args.report, outputs, labels, costs, cascade, args.cost_unit)
        print(f"report: {index}", file=sys.stderr)
    print(f"cascade document: {path}")
    return 0
