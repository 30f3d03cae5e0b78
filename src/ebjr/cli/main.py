"""The ``ebjr`` command line: parse, call the library, print. No logic of its own.

Heavy modules are imported inside the command handlers so that ``--help``
answers fast and numpy-only commands never import torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ebjr import __version__
from ebjr._options import LOSSES, P_VALUES
from ebjr.exceptions import EBJRError

__all__ = ["build_parser", "main"]


def _add_pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("student", help="student outputs: .npz with 'logits' (n x C) [and 'labels']")
    p.add_argument("teacher", help="teacher outputs on the same inputs, same format")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="labels (.npz with 'labels', or .npy); default: from the outputs files",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebjr",
        description="Energy-based joint reasoning: route inputs between a fast student and an "
        "accurate teacher by the student's free energy.",
    )
    parser.add_argument("--version", action="version", version=f"ebjr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ev = sub.add_parser(
        "evaluate",
        help="compare routers on precomputed outputs (curves, oracle, report)",
        description="Compare every router's accuracy-vs-cost trade-off on a labelled set of "
        "precomputed student and teacher outputs, with the oracle bound and the random "
        "baseline.",
    )
    _add_pair_args(ev)
    ev.add_argument(
        "--routers",
        default=None,
        metavar="A,B,...",
        help="routers to compare (default: energy,softmax,entropy,maxlogit,margin,paper_code)",
    )
    ev.add_argument(
        "--random-seeds",
        type=int,
        default=10,
        metavar="K",
        help="seeds of the random router to summarise (default 10; 0 = none)",
    )
    ev.add_argument("--report", metavar="DIR", help="write an HTML report with plots to DIR")
    ev.add_argument("--json", action="store_true", help="print the results as JSON")
    ev.set_defaults(func=cmd_evaluate)

    cal = sub.add_parser(
        "calibrate",
        help="choose a threshold for a target and save a bundle",
        description="Choose the threshold that meets a target on calibration outputs and "
        "write a versioned JSON bundle. With --max-drop and --confidence, the accuracy drop "
        "is guaranteed with that probability (Learn-then-Test), assuming calibration data and "
        "traffic come from the same distribution.",
    )
    _add_pair_args(cal)
    cal.add_argument(
        "--router",
        default="energy",
        help="router name (default energy; 'auto' picks one by cross-validation)",
    )
    cal.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="temperature of the energy router (default 1)",
    )
    g = cal.add_mutually_exclusive_group(required=True)
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
    cal.add_argument(
        "--confidence",
        type=float,
        metavar="P",
        help="with --max-drop: guarantee the drop with probability >= P (e.g. 0.95)",
    )
    cal.add_argument(
        "--loss",
        choices=LOSSES,
        default=LOSSES[0],
        help="with --confidence: the loss controlled (default signed; "
        "'disagreement' needs no labels)",
    )
    cal.add_argument(
        "--p-value",
        choices=P_VALUES,
        default=P_VALUES[0],
        help="with --confidence: the test: exact (default; exact unconditional for the signed "
        "loss, exact binomial otherwise), betting (wsr) or Hoeffding-Bentkus (hb)",
    )
    cal.add_argument("--seed", type=int, default=0, help="seed for auto folds and wsr order")
    cal.add_argument(
        "-o", "--output", required=True, metavar="BUNDLE.json", help="where to write the bundle"
    )
    cal.add_argument("--report", metavar="DIR", help="also write an HTML report to DIR")
    cal.add_argument("--json", action="store_true", help="print the bundle as JSON")
    cal.set_defaults(func=cmd_calibrate)

    qs = sub.add_parser(
        "quickstart",
        help="the whole workflow on bundled digits: train, calibrate, evaluate, report, bundle",
        description="Train a tiny MLP student and a small CNN teacher on scikit-learn's bundled "
        "digits (CPU, well under a minute, cached), calibrate a guaranteed threshold, evaluate "
        "every router on a held-out test set, write an HTML report and a bundle. Offline.",
    )
    qs.add_argument(
        "--out",
        default="ebjr-quickstart",
        metavar="DIR",
        help="output folder (default ./ebjr-quickstart)",
    )
    qs.add_argument("--epochs", type=int, default=40, help="most training epochs (default 40)")
    qs.add_argument("--seed", type=int, default=0, help="seed of data, training and calibration")
    qs.add_argument(
        "--max-drop",
        type=float,
        default=0.005,
        metavar="EPS",
        help="guaranteed accuracy drop vs the teacher (default 0.005)",
    )
    qs.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="P",
        help="probability of the guarantee (default 0.95)",
    )
    qs.add_argument("--router", default="energy", help="router (default energy; try auto)")
    qs.add_argument("--json", action="store_true", help="print the summary as JSON")
    qs.set_defaults(func=cmd_quickstart)

    di = sub.add_parser(
        "distill",
        help="train a student from a teacher on unlabelled inputs, calibrate, write a bundle",
        description="Unsupervised EBJR: distil a student from the teacher's soft outputs on "
        "unlabelled inputs (80 %%), choose the threshold on the other 20 %% with a label-free "
        "guarantee (disagreement with the teacher <= EPS with probability P), and write a "
        "bundle with both models.",
    )
    di.add_argument(
        "--teacher",
        required=True,
        metavar="REF",
        help="a bundle (.json), an .onnx file, or package.module:function",
    )
    di.add_argument("--teacher-weights", metavar="FILE", help="state dict for a factory teacher")
    di.add_argument("--teacher-kwargs", metavar="JSON", help="arguments of the teacher factory")
    di.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="unlabelled inputs: .npy, .npz (x or images) or a folder of images",
    )
    di.add_argument(
        "--student",
        required=True,
        metavar="FACTORY",
        help="package.module:function building the (untrained) student",
    )
    di.add_argument("--student-kwargs", metavar="JSON", help="arguments of the student factory")
    di.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    di.add_argument("--epochs", type=int, default=30, help="most training epochs (default 30)")
    di.add_argument("--router", default="energy", help="router for the bundle (default energy)")
    di.add_argument(
        "--max-disagreement",
        type=float,
        default=0.01,
        metavar="EPS",
        help="guaranteed share of answers that differ from the teacher's (0.01)",
    )
    di.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="P",
        help="probability of the guarantee (default 0.95)",
    )
    di.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    di.add_argument("-o", "--output", required=True, metavar="BUNDLE.json")
    di.set_defaults(func=cmd_distill)

    sv = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP (Open Inference Protocol v2, live threshold, demo page)",
        description="Serve the joint model of BUNDLE (or one of its models, --role) with "
        "dynamic batching, Prometheus metrics at /metrics, a live threshold and a demo page at "
        "/. Needs: pip install 'ebjr[serve]'.",
    )
    sv.add_argument("bundle", metavar="BUNDLE", help="bundle JSON written by ebjr.save")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--role", choices=("joint", "student", "teacher"), default="joint",
                    help="serve the joint model (default) or one model alone")
    sv.add_argument("--model-name", help="name under /v2/models/ (default: the bundle's stem)")
    sv.add_argument("--admin-token", help="token that threshold writes require "
                    "(default: $EBJR_ADMIN_TOKEN; none = writes refused)")
    sv.add_argument("--max-batch-size", type=int, default=64, help="student batch rows (64)")
    sv.add_argument("--max-wait-ms", type=float, default=2.0,
                    help="longest a request waits for a batch (2 ms)")
    sv.add_argument("--teacher-max-batch-size", type=int, default=64,
                    help="teacher batch rows (64)")
    sv.add_argument("--teacher-max-wait-ms", type=float, default=2.0,
                    help="longest routed rows wait for a teacher batch (2 ms)")
    sv.add_argument("--max-queue-rows", type=int, default=4096,
                    help="rows that may wait for the student; beyond: 429 (4096)")
    sv.add_argument("--teacher-max-queue-rows", type=int, default=4096,
                    help="routed rows that may wait for the teacher; beyond: fallback (4096)")
    sv.add_argument("--max-request-rows", type=int, default=1024,
                    help="rows per request (1024)")
    sv.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                    help="request body limit in bytes (16 MiB)")
    sv.add_argument("--request-timeout", type=float, default=30.0, metavar="S",
                    help="longest a request may take before 503 (30 s)")
    sv.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                    help="longest a request's headers may take to arrive before 408 (10 s)")
    sv.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                    help="longest a request's body may take to arrive before 408 (30 s)")
    sv.add_argument("--remote-teacher", metavar="URL",
                    help="the teacher's v2 model URL, e.g. http://host:8001/v2/models/teacher")
    sv.add_argument("--teacher-timeout", type=float, default=5.0, metavar="S",
                    help="remote teacher timeout per attempt (5 s)")
    sv.add_argument("--teacher-retries", type=int, default=1, help="remote teacher retries (1)")
    sv.add_argument("--teacher-input-name", default="input", help="remote input tensor name")
    sv.add_argument("--teacher-output-name", help="remote output tensor name (default: first)")
    sv.add_argument("--fallback", choices=("student", "error"), default="student",
                    help="when the teacher fails: answer with the student, flagged degraded "
                    "(default), or 503")
    sv.add_argument("--load-mode", choices=("share", "queue"),
                    help="opt-in load-aware threshold: keep the teacher share or queue in budget")
    sv.add_argument("--load-budget", type=float,
                    help="teacher share (mode share) or queued teacher rows (mode queue)")
    sv.add_argument("--load-min-threshold", type=float,
                    help="lowest threshold the load-aware control may use")
    sv.add_argument("--input-shape", type=int, nargs="+", metavar="D",
                    help="per-row input shape (default: the bundle's input record)")
    sv.add_argument("--torch-threads", type=int, metavar="N",
                    help="torch intra-op threads (default: torch's; 1 suits a joint server "
                    "on a small CPU)")
    sv.add_argument("--allow-factory", action="append", default=[], metavar="PATTERN",
                    help="trust model factories matching PATTERN (e.g. 'mypkg.models:*')")
    sv.add_argument("--log-level", default="info",
                    choices=("critical", "error", "warning", "info", "debug"))
    sv.set_defaults(func=cmd_serve)

    return parser


def _load_pair(args: argparse.Namespace, need_labels: bool = True) -> tuple[Any, Any, Any]:
    from ebjr.bundle.outputs import load_outputs, resolve_labels

    s = load_outputs(args.student)
    t = load_outputs(args.teacher)
    if not need_labels and args.labels is None and s.labels is None and t.labels is None:
        return s, t, None  # label-free calibration; labels that exist are still checked
    return s, t, resolve_labels(s, t, args.labels)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps
    from ebjr.evaluation import DEFAULT_ROUTERS, evaluate

    s, t, y = _load_pair(args)
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
    header = ["router", "teacher %", "accuracy %", "cost", "speed-up", "AUC"]
    rows = router_rows(ev)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print(
            "  "
            + "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    for name, why in ev.skipped.items():
        print(f"skipped {name}: {why}")
    return 0


def _target_from_args(args: argparse.Namespace) -> Any:
    from ebjr.calibration import (
        HistogramCrossing,
        MaxCost,
        MaxDrop,
        MaxTeacherFraction,
        TeacherAccuracy,
    )
    from ebjr.exceptions import InputError

    if args.confidence is not None and args.max_drop is None:
        raise InputError("--confidence goes with --max-drop (a guaranteed accuracy drop)")
    if args.max_drop is not None:
        if args.confidence is None:
            return MaxDrop(args.max_drop)
        from ebjr.calibration.guarantee import GuaranteedDrop

        if not 0 < args.confidence < 1:
            raise InputError(f"--confidence must lie in (0, 1), got {args.confidence}")
        return GuaranteedDrop(
            args.max_drop, round(1 - args.confidence, 12), args.loss, args.p_value, args.seed
        )
    if args.teacher_accuracy:
        return TeacherAccuracy()
    if args.max_teacher_fraction is not None:
        return MaxTeacherFraction(args.max_teacher_fraction)
    if args.max_cost is not None:
        return MaxCost(args.max_cost)
    return HistogramCrossing()


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps, write_bundle
    from ebjr.calibration.calibrate import calibrate_outputs

    target = _target_from_args(args)
    label_free = getattr(target, "loss", None) == "disagreement"
    s, t, y = _load_pair(args, need_labels=not label_free)
    params = {} if args.temperature is None else {"temperature": args.temperature}
    result = calibrate_outputs(
        s.logits,
        t.logits,
        y,
        target,
        router=args.router,
        router_params=params,
        student_cost=args.student_cost,
        teacher_cost=args.teacher_cost,
        cost_unit=args.cost_unit,
        seed=args.seed,
        sources={"student": s.path, "teacher": t.path},
    )
    path = write_bundle(result.bundle, args.output)
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
        )
        index = write_report(
            ev, args.report, selection=result.selection, title="ebjr calibration (in-sample)"
        )
        print(f"report: {index}", file=sys.stderr)
    if args.json:
        print(dumps(result.bundle.to_dict(), indent=2))
    else:
        print(result.summary())
        print(f"bundle: {path}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from ebjr.bundle import dumps
    from ebjr.examples.quickstart import QuickstartConfig, print_summary, run_quickstart
    from ebjr.exceptions import InputError

    if args.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence must lie in (0, 1), got {args.confidence}")
    cfg = QuickstartConfig(
        seed=args.seed,
        epochs=args.epochs,
        eps=args.max_drop,
        confidence=args.confidence,
        router=args.router,
    )
    summary = run_quickstart(args.out, cfg)
    if args.json:
        print(dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.calibration.guarantee import GuaranteedDrop
    from ebjr.cli.distill import load_inputs, load_teacher, make_module
    from ebjr.exceptions import InputError
    from ebjr.joint import JointModel
    from ebjr.training import predict_logits
    from ebjr.training.distill import distill, model_logits

    if args.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence must lie in (0, 1), got {args.confidence}")
    x = load_inputs(args.data)
    if x.shape[0] < 50:
        raise InputError(f"--data needs at least 50 inputs, got {x.shape[0]}")
    teacher = load_teacher(args.teacher, args.teacher_weights, args.teacher_kwargs)
    torch.manual_seed(args.seed)  # the student's initial weights are part of the result
    student, kwargs = make_module(args.student, args.student_kwargs)
    perm = np.random.default_rng(args.seed).permutation(x.shape[0])
    n_cal = max(20, round(0.2 * x.shape[0]))
    cal, fit = perm[:n_cal], perm[n_cal:]
    result = distill(
        student, teacher, x[fit], temperature=args.temperature, epochs=args.epochs, seed=args.seed
    )
    print(
        f"held-out KL to the teacher: {result.heldout_kl_before:.4f} -> "
        f"{result.heldout_kl_after:.4f} nats"
    )
    s_cal = predict_logits(student, x[cal]).numpy()
    t_cal = model_logits(teacher, x[cal])
    target = GuaranteedDrop(
        args.max_disagreement, round(1 - args.confidence, 12), loss="disagreement", seed=args.seed
    )
    costs = {"student_cost": 1.0, "teacher_cost": 1.0, "cost_unit": "model calls"}
    if hasattr(teacher, "module"):  # both are torch modules: count FLOPs per input
        from ebjr.joint.cost import count_flops

        example = torch.as_tensor(x[:8])
        costs = {
            "student_cost": count_flops(student, example),
            "teacher_cost": count_flops(teacher.module, example),
            "cost_unit": "FLOPs",
        }
    calibration = calibrate_outputs(
        s_cal, t_cal, None, target, router=args.router, seed=args.seed, **costs
    )
    print(calibration.summary())
    joint = JointModel(
        TorchAdapter(student, factory=args.student, factory_kwargs=kwargs),
        teacher,
        calibration.router,
        calibration.selection.threshold,
    )
    allow = [args.student] + ([args.teacher] if ":" in args.teacher else [])
    path = persist.save(joint, args.output, calibration.bundle)
    persist.load(path, allow_factories=allow)  # the bundle reads back before we say so
    print(f"bundle: {path} (load with allow_factories={allow})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ebjr.serve import serve
        from ebjr.serve.settings import ServeSettings
    except ImportError as exc:
        from ebjr.exceptions import missing_dependency

        raise missing_dependency(exc.name or "fastapi", "serve", "ebjr serve") from exc
    settings = ServeSettings(
        bundle=args.bundle,
        role=args.role,
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        admin_token=args.admin_token,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        teacher_max_batch_size=args.teacher_max_batch_size,
        teacher_max_wait_ms=args.teacher_max_wait_ms,
        max_queue_rows=args.max_queue_rows,
        teacher_max_queue_rows=args.teacher_max_queue_rows,
        max_request_rows=args.max_request_rows,
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        remote_teacher=args.remote_teacher,
        teacher_timeout_s=args.teacher_timeout,
        teacher_retries=args.teacher_retries,
        teacher_input_name=args.teacher_input_name,
        teacher_output_name=args.teacher_output_name,
        fallback=args.fallback,
        load_mode=args.load_mode,
        load_budget=args.load_budget,
        load_min_threshold=args.load_min_threshold,
        input_shape=tuple(args.input_shape) if args.input_shape else None,
        torch_threads=args.torch_threads,
        allow_factories=args.allow_factory,
        log_level=args.log_level,
    )
    from ebjr.bundle import read_bundle

    read_bundle(settings.bundle)  # a bad bundle fails here, with exit code 2, not in uvicorn
    serve(settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EBJRError as exc:
        print(f"ebjr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
