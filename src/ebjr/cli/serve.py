"""``ebjr serve``: the inference service over the Open Inference Protocol v2."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP (Open Inference Protocol v2, live threshold, demo page)",
        description="Serve the joint model of BUNDLE (or one of its models, --role) with "
        "dynamic batching, Prometheus metrics at /metrics, a live threshold and a demo page at "
        "/. Needs: pip install 'ebjr[serve]'.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle JSON written by ebjr.save")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--role",
        choices=("joint", "student", "teacher"),
        default="joint",
        help="serve the joint model (default) or one model alone",
    )
    p.add_argument("--model-name", help="name under /v2/models/ (default: the bundle's stem)")
    p.add_argument(
        "--admin-token",
        help="token that threshold writes require "
        "(default: $EBJR_ADMIN_TOKEN; none = writes refused)",
    )
    p.add_argument("--max-batch-size", type=int, default=64, help="student batch rows (64)")
    p.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="longest a request waits for a batch (2 ms)"
    )
    p.add_argument("--teacher-max-batch-size", type=int, default=64, help="teacher batch rows (64)")
    p.add_argument(
        "--teacher-max-wait-ms",
        type=float,
        default=2.0,
        help="longest routed rows wait for a teacher batch (2 ms)",
    )
    p.add_argument(
        "--max-queue-rows",
        type=int,
        default=4096,
        help="rows that may wait for the student; beyond: 429 (4096)",
    )
    p.add_argument(
        "--teacher-max-queue-rows",
        type=int,
        default=4096,
        help="routed rows that may wait for the teacher; beyond: fallback (4096)",
    )
    p.add_argument("--max-request-rows", type=int, default=1024, help="rows per request (1024)")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="request body limit in bytes (16 MiB)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="longest a request may take before 503 (30 s)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="longest a request's headers may take to arrive before 408 (10 s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="longest a request's body may take to arrive before 408 (30 s)",
    )
    p.add_argument(
        "--remote-teacher",
        metavar="URL",
        help="the teacher's v2 model URL, e.g. http://host:8001/v2/models/teacher",
    )
    p.add_argument(
        "--teacher-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="remote teacher timeout per attempt (5 s)",
    )
    p.add_argument("--teacher-retries", type=int, default=1, help="remote teacher retries (1)")
    p.add_argument("--teacher-input-name", default="input", help="remote input tensor name")
    p.add_argument("--teacher-output-name", help="remote output tensor name (default: first)")
    p.add_argument(
        "--fallback",
        choices=("student", "error"),
        default="student",
        help="when the teacher fails: answer with the student, flagged degraded (default), or 503",
    )
    p.add_argument(
        "--load-mode",
        choices=("share", "queue"),
        help="opt-in load-aware threshold: keep the teacher share or queue in budget",
    )
    p.add_argument(
        "--load-budget",
        type=float,
        help="teacher share (mode share) or queued teacher rows (mode queue)",
    )
    p.add_argument(
        "--load-min-threshold", type=float, help="lowest threshold the load-aware control may use"
    )
    p.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        metavar="D",
        help="per-row input shape (default: the bundle's input record)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        metavar="N",
        help="torch intra-op threads (default: torch's; 1 suits a joint server on a small CPU)",
    )
    p.add_argument(
        "--allow-factory",
        action="append",
        default=[],
        metavar="PATTERN",
        help="trust model factories matching PATTERN (e.g. 'mypkg.models:*')",
    )
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    ray = p.add_argument_group(
        "on Ray Serve (--ray; pip install 'ebjr[ray]')",
        "ingress, student and teacher deployments that scale on their own, one shared threshold",
    )
    ray.add_argument("--ray", action="store_true",
                     help="serve as a Ray Serve application (the same HTTP API)")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="join this Ray cluster (default: start a local one, or $RAY_ADDRESS)")
    for role in ("student", "teacher", "ingress"):
        ray.add_argument(f"--{role}-replicas", metavar="N",
                         help=f"{role} replicas: a number, or 'auto' (default 1)")
    ray.add_argument("--ray-config", metavar="FILE.yaml",
                     help="deployment options per role (sections ingress/student/teacher: "
                     "num_replicas, autoscaling_config, ray_actor_options, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    if args.ray:
        return _run_on_ray(args, settings)
    serve(settings)
    return 0


def _run_on_ray(args: argparse.Namespace, settings: Any) -> int:
    from ebjr.exceptions import InputError

    if args.remote_teacher:
        raise InputError("--ray runs the teacher as a deployment of the application; drop "
                         "--remote-teacher (or serve without --ray)")
    try:
        from ebjr.ray.serve import run as run_on_ray
    except ImportError as exc:
        from ebjr.exceptions import missing_dependency

        raise missing_dependency(exc.name or "ray", "ray", "ebjr serve --ray") from exc
    options = {
        name: getattr(settings, name)
        for name in ("role", "model_name", "admin_token", "max_batch_size", "max_wait_ms",
                     "teacher_max_batch_size", "teacher_max_wait_ms", "max_queue_rows",
                     "teacher_max_queue_rows", "max_request_rows", "max_body_bytes",
                     "request_timeout_s", "body_timeout_s", "fallback", "load_mode",
                     "load_budget", "load_min_threshold", "input_shape", "torch_threads",
                     "allow_factories")
    }
    for role in ("student", "teacher", "ingress"):
        options[f"{role}_replicas"] = getattr(args, f"{role}_replicas")
    run_on_ray(settings.bundle, address=args.ray_address, host=args.host, port=args.port,
               name=settings.name, config=args.ray_config, **options)
    return 0
