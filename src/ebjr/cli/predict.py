"""``ebjr predict``: the joint model's answers for a file of inputs, into parquet."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ebjr.cli._common import add_trust_args

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="batch prediction: the joint answers for a .npy/.npz/.parquet file or an image "
        "folder, written to parquet (in this process, or on Ray with --ray)",
        description="Run the joint model of BUNDLE over INPUT (a .npy, .npz or .parquet file, or "
        "a folder of images decoded to the bundle's input record) and write one parquet file: "
        "row (or path), prediction, score, answered_by, probabilities, in input order. With "
        "--ray, cascaded batch inference on Ray Data: the student over every row, the teacher "
        "over the routed rows only, each stage with its own actors (pip install 'ebjr[ray]').",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle JSON saved with its models")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz, .parquet, or a folder of images")
    p.add_argument("-o", "--output", required=True, metavar="FILE.parquet",
                   help="where to write the predictions")
    p.add_argument("--column", help="the input array (.npz) or column (.parquet; default data)")
    p.add_argument("--batch-size", type=int, default=256, help="student batch rows (256)")
    add_trust_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group("on Ray (--ray)")
    ray.add_argument("--ray", action="store_true", help="run on Ray Data")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="join this Ray cluster (default: start a local one, or $RAY_ADDRESS)")
    ray.add_argument("--teacher-batch-size", type=int, default=64,
                     help="about how many routed rows each teacher call gets (64)")
    ray.add_argument("--student-actors", type=int, default=1, help="student actors (1)")
    ray.add_argument("--teacher-actors", type=int, default=1, help="teacher actors (1)")
    ray.add_argument("--torch-threads", type=int, default=1, help="torch threads per actor (1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ray:
        import ray

        from ebjr.ray.auth import cluster_address
        from ebjr.ray.data import predict_files

        ray.init(address=cluster_address(args.ray_address), ignore_reinit_error=True,
                 include_dashboard=False, log_to_driver=False)
        try:
            summary = predict_files(
                args.bundle, args.input, args.output, column=args.column,
                progress=not args.no_progress, batch_size=args.batch_size,
                teacher_batch_size=args.teacher_batch_size,
                student_concurrency=args.student_actors,
                teacher_concurrency=args.teacher_actors,
                torch_threads=args.torch_threads, allow_factories=args.allow_factory,
                allow_torchscript=args.allow_torchscript,
            )
        finally:
            ray.shutdown()
    else:
        from ebjr.bundle.predict import predict_file

        summary = predict_file(
            args.bundle, args.input, args.output, column=args.column,
            batch_size=args.batch_size, allow_factories=args.allow_factory,
            allow_torchscript=args.allow_torchscript,
            progress=not args.no_progress,
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    elif "stages" in summary:
        n = max(summary["rows"], 1)
        shares = ", ".join(f"{s} {100 * summary['answered_by'].get(s, 0) / n:.1f} %"
                           for s in summary["stages"])
        print(f"wrote {summary['rows']} predictions to {summary['output']} (answered by: "
              f"{shares})")
    else:
        print(f"wrote {summary['rows']} predictions to {summary['output']} "
              f"({100 * summary['teacher_fraction']:.1f} % answered by the teacher)")
    return 0
