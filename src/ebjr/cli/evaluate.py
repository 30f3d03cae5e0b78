"""``ebjr evaluate``: every router on precomputed outputs, the oracle, a report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ebjr.cli._common import add_pair_args, class_map, load_pair

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare routers on precomputed outputs (curves, oracle, report)",
        description="Compare every router's accuracy-vs-cost trade-off on a labelled set of "
        "precomputed student and teacher outputs, with the oracle bound and the random "
        "baseline.",
    )
    add_pair_args(p)
    p.add_argument(
        "--routers",
        default=None,
        metavar="A,B,...",
        help="routers to compare (default: energy,softmax,entropy,maxlogit,margin,paper_code)",
    )
    p.add_argument(
        "--random-seeds",
        type=int,
        default=10,
        metavar="K",
        help="seeds of the random router to summarise (default 10; 0 = none)",
    )
    p.add_argument("--report", metavar="DIR", help="write an HTML report with plots to DIR")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps
    from ebjr.evaluation import DEFAULT_ROUTERS, evaluate

    if args.task == "regression":
        return _run_regression(args)
    if args.task == "detection":
        return _run_detection(args)
    s, t, y = load_pair(args)
    routers = DEFAULT_ROUTERS if not args.routers else [r.strip() for r in args.routers.split(",")]
    ev = evaluate(
        s.logits,
        t.logits,
        y,
        routers,
        student_cost=args.student_cost,
        teacher_cost=args.teacher_cost,
        cost_unit=args.cost_unit,
        random_seeds=args.random_seeds,
        class_map=class_map(args),
    )
    if args.report:
        from ebjr.evaluation.report import write_report

        index = write_report(ev, args.report)
        print(f"report: {index}", file=sys.stderr)
    if args.json:
        print(dumps(ev.to_json_dict(), indent=2))
        return 0
    from ebjr.evaluation.report import router_rows

    unit = f" {args.cost_unit}" if args.cost_unit else ""
    print(
        f"n={ev.n}  student {100 * ev.student_accuracy:.2f}% at {ev.student_cost:.4g}{unit}"
        f"  teacher {100 * ev.teacher_accuracy:.2f}% at {ev.teacher_cost:.4g}{unit}"
    )
    print("at the teacher's accuracy (in-sample):")
    _print_table(["router", "teacher %", "accuracy %", "cost", "speed-up", "AUC"],
                 router_rows(ev))
    for name, why in ev.skipped.items():
        print(f"skipped {name}: {why}")
    return 0


def _run_regression(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps
    from ebjr.cli._common import load_regression_pair
    from ebjr.evaluation.regression import SHARES, evaluate_regression
    from ebjr.exceptions import InputError

    if args.report:
        raise InputError("--report draws a classification's report; for a regression use "
                         "--json (every router's loss at each teacher share)")
    s, t, y, task = load_regression_pair(args)
    routers = [r.strip() for r in args.routers.split(",")] if args.routers else None
    ev = evaluate_regression(s.outputs, t.outputs, y, task, routers,
                             student_cost=args.student_cost, teacher_cost=args.teacher_cost,
                             cost_unit=args.cost_unit)
    if args.json:
        print(dumps(ev.to_json_dict(), indent=2))
        return 0
    print(f"n={ev.n}  mean {ev.loss} error: student {ev.student_loss:.4g}, "
          f"teacher {ev.teacher_loss:.4g}")
    header = ["router", *(f"loss @{round(100 * s)}%" for s in SHARES), "teacher-level share"]
    rows = []
    for name, c in ev.curves.items():
        level = ev.teacher_level(c)
        rows.append([name, *(f"{ev.loss_at(c, s):.4g}" for s in SHARES),
                     "-" if level is None else f"{100 * level['teacher_fraction']:.1f}%"])
    rows.append(["oracle", *(f"{ev.oracle_loss[s]:.4g}" for s in SHARES), ""])
    rows.append(["random", *(f"{(1 - s) * ev.student_loss + s * ev.teacher_loss:.4g}"
                             for s in SHARES), ""])
    _print_table(header, rows)
    for name, why in ev.skipped.items():
        print(f"skipped {name}: {why}")
    return 0


def _run_detection(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps
    from ebjr.cli._common import load_detection_pair
    from ebjr.evaluation.detection import evaluate_detection
    from ebjr.exceptions import InputError

    if args.report:
        raise InputError("--report draws a classification's report; for a detection use "
                         "--json (every router's mAP at each teacher share)")
    s, t, metric, _ = load_detection_pair(args)
    routers = [r.strip() for r in args.routers.split(",")] if args.routers else None
    ev = evaluate_detection(s, t, metric, routers, student_cost=args.student_cost,
                            teacher_cost=args.teacher_cost, cost_unit=args.cost_unit)
    if args.json:
        print(dumps({**{k: v for k, v in ev.items() if k != "curves"},
                     "routers": {k: c.summary() for k, c in ev["curves"].items()}}, indent=2))
        return 0
    print(f"n={ev['n']}  mAP: student {ev['student_map']:.4f}, teacher {ev['teacher_map']:.4f}")
    shares = (0.1, 0.2, 0.3, 0.5)
    _print_table(["router", *(f"mAP @{round(100 * x)}%" for x in shares)],
                 [[name, *(f"{c.quality_at_share(x):.4f}" for x in shares)]
                  for name, c in ev["curves"].items()])
    return 0


def _print_table(header: list[str], rows: list[list[Any]]) -> None:
    """Rows under a header, columns aligned (the first to the left, the others right)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
