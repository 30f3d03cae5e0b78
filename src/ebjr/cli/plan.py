"""``ebjr plan``: the replicas a joint service needs for a load, along the bundle's curve."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ebjr.cli._common import add_trust_args

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="capacity planning: student and teacher replicas for a load, per operating point",
        description="For operating points along BUNDLE's calibration curve: the teacher share, "
        "the student and teacher replicas needed for --qps requests per second at "
        "--utilisation, and the expected accuracy. Latencies are seconds per input of one "
        "replica at the serving batch size: give them, or --measure them on this machine.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle JSON (with its calibration curve)")
    p.add_argument("--qps", type=float, required=True, help="requests per second to serve")
    p.add_argument("--student-latency", type=float, metavar="S",
                   help="student seconds per input (one replica)")
    p.add_argument("--teacher-latency", type=float, metavar="S",
                   help="teacher seconds per input (one replica)")
    p.add_argument("--measure", action="store_true",
                   help="measure both latencies here, on random inputs of the bundle's input "
                   "record, at --batch-size")
    p.add_argument("--batch-size", type=int, default=32, help="batch size to measure at (32)")
    p.add_argument("--utilisation", type=float, default=0.7,
                   help="busy share each replica is planned for (0.7)")
    p.add_argument("--points", type=int, default=11,
                   help="operating points, evenly spaced in teacher share (11)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw replicas and accuracy")
    add_trust_args(p.add_argument_group("with --measure: what the bundle may run"))
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def _measured(args: argparse.Namespace, bundle: Any) -> tuple[float, float]:
    import numpy as np

    from ebjr.bundle import persist
    from ebjr.exceptions import InputError
    from ebjr.joint.cost import measure_latency

    spec = bundle.input or {}
    if not isinstance(spec.get("shape"), list):
        raise InputError(
            "--measure needs the bundle's input record (input.shape) to build inputs; "
            "give --student-latency and --teacher-latency instead"
        )
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    dtype = np.uint8 if spec.get("datatype") == "UINT8" else np.float32
    rng = np.random.default_rng(0)
    x = (rng.random((args.batch_size, *spec["shape"])) * (255 if dtype == np.uint8 else 1))
    x = x.astype(dtype)
    out = []
    for role in ("student", "teacher"):
        model, _ = persist.load_model(args.bundle, role, allow_factories=args.allow_factory,
                                      allow_torchscript=args.allow_torchscript)
        out.append(measure_latency(model, x).per_input_s)
    return out[0], out[1]


def run(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps, read_bundle
    from ebjr.evaluation.capacity import plan_capacity, plot_capacity, teacher_only_replicas
    from ebjr.exceptions import InputError

    bundle = read_bundle(args.bundle)
    if args.measure:
        if args.student_latency is not None or args.teacher_latency is not None:
            raise InputError("give the latencies or --measure, not both")
        t_s, t_t = _measured(args, bundle)
    elif args.student_latency is None or args.teacher_latency is None:
        raise InputError("give --student-latency and --teacher-latency, or --measure")
    else:
        t_s, t_t = args.student_latency, args.teacher_latency
    rows = plan_capacity(bundle.curve or {}, qps=args.qps, student_latency=t_s,
                         teacher_latency=t_t, utilisation=args.utilisation, points=args.points,
                         include_threshold=bundle.threshold)
    mine = min(rows, key=lambda r: abs(r.threshold - bundle.threshold)
               if math.isfinite(r.threshold) else math.inf)
    alone = teacher_only_replicas(args.qps, t_t, args.utilisation)
    if args.plot:
        plot_capacity(rows, args.plot, teacher_only=alone, calibrated=mine.teacher_fraction,
                      title=f"Replicas for {args.qps:g} requests/s at {args.utilisation:.0%}")
    if args.json:
        print(dumps({"qps": args.qps, "utilisation": args.utilisation, "student_latency": t_s,
                     "teacher_latency": t_t, "teacher_only_replicas": alone,
                     "calibrated_threshold": bundle.threshold,
                     "points": [r.as_dict() for r in rows]}, indent=2))
        return 0
    print(f"{args.qps:g} requests/s at {args.utilisation:.0%} utilisation; per input: "
          f"student {1e3 * t_s:.3g} ms, teacher {1e3 * t_t:.3g} ms; "
          f"the teacher alone needs {alone} replicas")
    header = ["threshold", "teacher %", "accuracy %", "student", "teacher", "replicas",
              "ms/request"]
    table = [header] + [
        [f"{r.threshold:.4g}" + ("*" if r is mine else ""), f"{100 * r.teacher_fraction:.1f}",
         "n/a" if r.accuracy is None else f"{100 * r.accuracy:.2f}",
         str(r.student_replicas), str(r.teacher_replicas), str(r.replicas),
         f"{1e3 * r.seconds_per_request:.3g}"]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"* the bundle's calibrated threshold ({bundle.threshold:.6g})")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0
