"""``ebjr distill``: a student distilled from a teacher, with a label-free guarantee."""

from __future__ import annotations

import argparse
from typing import Any

from ebjr.cli._common import add_trust_args

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "distill",
        help="train a student from a teacher on unlabelled inputs, calibrate, write a bundle",
        description="Unsupervised EBJR: distil a student from the teacher's soft outputs on "
        "unlabelled inputs (80 %%), choose the threshold on the other 20 %% with a label-free "
        "guarantee (disagreement with the teacher <= EPS with probability P), and write a "
        "bundle with both models.",
    )
    p.add_argument(
        "--teacher",
        required=True,
        metavar="REF",
        help="a bundle (.json), an .onnx file, or package.module:function",
    )
    p.add_argument("--teacher-weights", metavar="FILE", help="state dict for a factory teacher")
    p.add_argument("--teacher-kwargs", metavar="JSON", help="arguments of the teacher factory")
    p.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="unlabelled inputs: .npy, .npz (x or images) or a folder of images",
    )
    p.add_argument(
        "--student",
        required=True,
        metavar="FACTORY",
        help="package.module:function building the (untrained) student",
    )
    p.add_argument("--student-kwargs", metavar="JSON", help="arguments of the student factory")
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    p.add_argument("--epochs", type=int, default=30, help="most training epochs (default 30)")
    p.add_argument("--router", default="energy", help="router for the bundle (default energy)")
    p.add_argument(
        "--max-disagreement",
        type=float,
        default=0.01,
        metavar="EPS",
        help="guaranteed share of answers that differ from the teacher's (0.01)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="P",
        help="probability of the guarantee (default 0.95)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE.json")
    add_trust_args(p.add_argument_group("a teacher bundle: what it may run"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ebjr.training.sources import distill_to_bundle

    path, allow = distill_to_bundle(
        args.student,
        args.teacher,
        args.data,
        args.output,
        teacher_weights=args.teacher_weights,
        teacher_kwargs=args.teacher_kwargs,
        student_kwargs=args.student_kwargs,
        router=args.router,
        temperature=args.temperature,
        epochs=args.epochs,
        max_disagreement=args.max_disagreement,
        confidence=args.confidence,
        seed=args.seed,
        allow_factories=args.allow_factory,
        allow_torchscript=args.allow_torchscript,
    )
    print(f"bundle: {path} (load with allow_factories={allow})")
    return 0
