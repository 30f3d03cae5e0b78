"""``ebjr serve``: the inference service over the Open Inference Protocol v2.

Every flag but the Ray group comes from :class:`ebjr.serve.settings.ServeSettings`
(pydantic-settings): its fields are the flags, their help and defaults.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP (Open Inference Protocol v2, live threshold, demo page)",
        description="Serve the joint model of BUNDLE (or one of its models, --role) with "
        "dynamic batching, Prometheus metrics at /metrics, a live threshold and a demo page at "
        "/. Every setting can also come from an EBJR_<SETTING> environment variable (e.g. "
        "EBJR_ADMIN_TOKEN, EBJR_MAX_BATCH_SIZE). Needs: pip install 'ebjr[serve]'.",
    )
    try:
        from ebjr.serve.settings import add_settings_arguments
    except ImportError as exc:  # the serve extra is missing: say so when the command runs
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_missing, missing=exc.name or "pydantic_settings")
        return
    p.set_defaults(func=run, settings_source=add_settings_arguments(p))
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
    ray.add_argument("--ray-separate-student", action="store_true",
                     help="give the student (or the one model) a deployment of its own "
                     "instead of running it in the ingress replicas (a second hop per "
                     "request; the load-aware control then sees the whole application's "
                     "teacher queue)")
    ray.add_argument("--ray-teacher-in-ingress", action="store_true",
                     help="run the teacher (of a cascade, every stage) in the ingress "
                     "replicas too: no hop after the proxy, each replica holds every model "
                     "(for one node, or models small enough to copy; the teacher no longer "
                     "scales apart from the student)")
    ray.add_argument("--ray-data-plane", choices=["fast", "ray-default"], default="fast",
                     help="on a cluster started here, 'fast' (the default) turns on Ray's "
                     "HAProxy ingress and throughput settings (RAY_SERVE_ENABLE_HA_PROXY, "
                     "RAY_SERVE_THROUGHPUT_OPTIMIZED; each left as the environment sets it); "
                     "'ray-default' keeps Ray's own. A cluster joined with --ray-address keeps "
                     "the settings its nodes were started with")
    ray.add_argument("--ray-config", metavar="FILE.yaml",
                     help="deployment options per role (sections ingress/student/teacher: "
                     "num_replicas, autoscaling_config, ray_actor_options, ...)")


def _missing(args: argparse.Namespace) -> int:
    from ebjr.exceptions import missing_dependency

    raise missing_dependency(args.missing, "serve", "ebjr serve")


def run(args: argparse.Namespace) -> int:
    try:
        from ebjr.serve import serve
        from ebjr.serve.settings import settings_from_arguments
    except ImportError as exc:
        from ebjr.exceptions import missing_dependency

        raise missing_dependency(exc.name or "fastapi", "serve", "ebjr serve") from exc
    settings = settings_from_arguments(args.settings_source, args)
    # a bad bundle fails before any server starts, with one line and exit code 2: serve()
    # loads the models before it listens, and the Ray app checks them before Ray starts
    if args.ray:
        return _run_on_ray(args, settings)
    serve(settings)
    return 0


def _run_on_ray(args: argparse.Namespace, settings: Any) -> int:
    from ebjr.exceptions import InputError

    if settings.remote_teacher:
        raise InputError("--ray runs the teacher as a deployment of the application; drop "
                         "--remote-teacher (or serve without --ray)")
    if args.ray_address or os.environ.get("RAY_ADDRESS"):
        from ebjr.ray.auth import use_cluster_token

        use_cluster_token()  # before Ray is imported: it reads RAY_AUTH_MODE once
    elif args.ray_data_plane == "fast":
        from ebjr.ray.data_plane import use_fast_data_plane

        # before Ray is imported; the local cluster inherits it
        private = use_fast_data_plane().get("HAPROXY_DIR")
        if private:
            import atexit
            import shutil

            atexit.register(shutil.rmtree, private, ignore_errors=True)
    try:
        from ebjr.ray.serve import run as run_on_ray
        from ebjr.ray.serve import settings_for_ray
    except ImportError as exc:
        from ebjr.exceptions import missing_dependency

        raise missing_dependency(exc.name or "ray", "ray", "ebjr serve --ray") from exc
    options = settings_for_ray(settings)
    for role in ("student", "teacher", "ingress"):
        options[f"{role}_replicas"] = getattr(args, f"{role}_replicas")
    run_on_ray(settings.bundle, address=args.ray_address, host=settings.host, port=settings.port,
               name=settings.name, config=args.ray_config,
               first_stage_in_ingress=not args.ray_separate_student,
               teacher_in_ingress=args.ray_teacher_in_ingress, **options)
    return 0
