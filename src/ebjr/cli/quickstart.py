"""``ebjr quickstart``: the embedded digits pair, end to end."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the whole workflow on bundled digits: train, calibrate, evaluate, report, bundle",
        description="Train a tiny MLP student and a small CNN teacher on scikit-learn's bundled "
        "digits (CPU, well under a minute, cached), calibrate a guaranteed threshold, evaluate "
        "every router on a held-out test set, write an HTML report and a bundle. Offline.",
    )
    p.add_argument(
        "--out",
        default="ebjr-quickstart",
        metavar="DIR",
        help="output folder (default ./ebjr-quickstart)",
    )
    p.add_argument("--epochs", type=int, default=None,
                   help="most training epochs (default 40; regression 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and calibration")
    p.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="EPS",
        help="guaranteed accuracy drop vs the teacher (default 0.005); regression: the "
        "increase of the mean absolute error (default 0.05)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="P",
        help="probability of the guarantee (default 0.95)",
    )
    p.add_argument("--router", default=None,
                   help="router (default energy; try auto. Regression: spread)")
    p.add_argument("--task", choices=("classification", "specialized", "regression",
                                      "detection"),
                   default="classification",
                   help="classification (digits, default); specialized (a student over the "
                   "3 most frequent digits + other, on skewed traffic); or regression "
                   "(Friedman #1: a Gaussian-head pair, the guarantee on the mean absolute "
                   "error); or detection (two grid detectors on digit canvases, mAP)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps
    from ebjr.exceptions import InputError

    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence must lie in (0, 1), got {args.confidence}")
    run_task = {"regression": _regression, "detection": _detection}.get(args.task, _digits)
    summary, show = run_task(args)
    if args.json:
        print(dumps(summary, indent=2))
    else:
        show(summary)
    return 0


def _digits(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The classification and specialized quickstarts: their summary and its printer."""
    from ebjr.examples.quickstart import QuickstartConfig, print_summary, run_quickstart

    cfg = QuickstartConfig(
        seed=args.seed,
        epochs=40 if args.epochs is None else args.epochs,
        eps=0.005 if args.max_drop is None else args.max_drop,
        confidence=args.confidence,
        router=args.router or "energy",
    )
    if args.task == "specialized":
        from ebjr.examples.specialized_quickstart import (
            print_specialized_summary,
            run_specialized_quickstart,
        )

        return run_specialized_quickstart(args.out, cfg), print_specialized_summary
    return run_quickstart(args.out, cfg), print_summary


def _regression(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from ebjr.examples.regression_quickstart import (
        RegressionQuickstartConfig,
        print_regression_summary,
        run_regression_quickstart,
    )

    cfg = RegressionQuickstartConfig(
        seed=args.seed,
        epochs=200 if args.epochs is None else args.epochs,
        eps=0.05 if args.max_drop is None else args.max_drop,
        confidence=args.confidence,
        router=args.router or "spread",
    )
    return run_regression_quickstart(args.out, cfg), print_regression_summary


def _detection(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from ebjr.examples.detection_quickstart import (
        DetectionQuickstartConfig,
        print_detection_summary,
        run_detection_quickstart,
    )
    from ebjr.exceptions import InputError

    if args.epochs is not None:
        raise InputError("--epochs sets the classifiers' training; the detection quickstart "
                         "trains its detectors for fixed epochs")
    cfg = DetectionQuickstartConfig(seed=args.seed, router=args.router or "energy",
                                    eps=0.03 if args.max_drop is None else args.max_drop)
    return run_detection_quickstart(args.out, cfg), print_detection_summary
