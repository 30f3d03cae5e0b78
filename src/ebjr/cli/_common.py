"""What several commands share: the pair of outputs files and their labels."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_pair_args", "add_trust_args", "load_pair"]


def add_trust_args(p: Any) -> None:
    """``--allow-factory NAME`` and ``--allow-torchscript``: what a bundle may run besides
    ebjr's registered model builders (nothing, by default)."""
    p.add_argument("--allow-factory", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="also trust this exact model builder of the bundle (repeat for more; "
                   "no patterns)")
    p.add_argument("--allow-torchscript", action="store_true",
                   help="load TorchScript archives of the bundle (they are programs)")


def add_pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("student", help="student outputs: .npz with 'logits' (n x C) [and 'labels']")
    p.add_argument("teacher", help="teacher outputs on the same inputs, same format")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="labels (.npz with 'labels', or .npy); default: from the outputs files",
    )
    p.add_argument(
        "--class-map",
        metavar="FILE",
        help="for a student over a subset of the teacher's classes: a JSON list (or .npy) "
        "giving the teacher class of each student class, -1 for none (a specialized "
        "student's 'other'); labels are the teacher's",
    )
    p.add_argument(
        "--student-cost",
        type=float,
        default=1.0,
        metavar="A",
        help="student cost per input (FLOPs, seconds, ...; default 1)",
    )
    p.add_argument(
        "--teacher-cost",
        type=float,
        default=1.0,
        metavar="B",
        help="teacher cost per input, same unit (default 1)",
    )
    p.add_argument(
        "--cost-unit",
        default="",
        metavar="UNIT",
        help="name of the cost unit for reports, e.g. FLOPs or ms",
    )


def class_map(args: argparse.Namespace) -> Any:
    """The ``--class-map`` file's map, or ``None``."""
    from ebjr.bundle.outputs import load_class_map

    return None if args.class_map is None else load_class_map(args.class_map)


def load_pair(args: argparse.Namespace, need_labels: bool = True) -> tuple[Any, Any, Any]:
    from ebjr.bundle.outputs import load_outputs, resolve_labels

    s = load_outputs(args.student)
    t = load_outputs(args.teacher)
    if not need_labels and args.labels is None and s.labels is None and t.labels is None:
        return s, t, None  # label-free calibration; labels that exist are still checked
    return s, t, resolve_labels(s, t, labels_path=args.labels)
