"""The joint model as a Ray Serve application.

Deployments that scale on their own: an ``ingress`` speaking ``ebjr serve``'s
Open Inference Protocol v2 API and running the student (``ebjr serve``'s own
engine, in each ingress replica), a batched ``teacher`` that gets only the
routed rows, and a one-replica ``control`` holding the live threshold (pushed
to every ingress replica) and the counts. With ``first_stage_in_ingress=False``
the student gets a batched deployment of its own (a second hop per request);
with ``teacher_in_ingress=True`` the teacher runs in the ingress replicas too
(no hop after the proxy: each replica holds both models)::

    from ebjr.ray.serve import build_app
    from ray import serve
    serve.run(build_app("bundle.json", student_replicas=2, teacher_replicas=1),
              route_prefix="/")

or from the shell, as any Ray Serve application::

    serve run ebjr.ray.serve:app bundle=/models/bundle.json student_replicas=2

or ``ebjr serve BUNDLE --ray``. ``role="student"`` or ``"teacher"`` serves
that model alone (an ingress and one model deployment), as ``ebjr serve
--role`` does. Every option of ``ebjr serve`` that concerns
the model (batch sizes and waits, fallback, load-aware threshold, admin
token, limits) is accepted by name (:class:`AppArgs`); each deployment takes
Ray Serve's deployment options (``num_replicas``, ``autoscaling_config``,
``ray_actor_options``, ``max_ongoing_requests``, ``max_queued_requests``)
from ``student=`` / ``teacher=`` / ``ingress=`` dicts or a YAML file
(``config=``) with those sections. Ray Serve's own config file
(``serve deploy``) overrides them by deployment name as usual.

The bundle's path must be readable on every node that runs a replica (a
shared volume, or the same path baked into the image).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model, field_validator
from ray import serve
from ray.serve import Application

from ebjr.bundle.cascade import CascadeRecord
from ebjr.exceptions import InputError
from ebjr.ray.auth import cluster_address, token_path, use_cluster_token
from ebjr.ray.control import CascadeControl
from ebjr.ray.data_plane import data_plane_of
from ebjr.ray.deployments import Control, Ingress, ModelReplica, StudentReplica
from ebjr.serve.settings import ServeSettings, check_task

__all__ = [
    "DEPLOYMENT_OPTIONS",
    "AppArgs",
    "app",
    "build_app",
    "cpus_needed",
    "deployment_options",
    "run",
    "settings_for_ray",
    "stage_deployment",
]

log = logging.getLogger("ebjr.ray")

ROLES = ("ingress", "student", "teacher")
#: a cascade's stage deployment, by index (a config section may name one)
STAGE = re.compile(r"stage\d+")

#: Ray Serve deployment options a role's section may set
DEPLOYMENT_OPTIONS = (
    "num_replicas",
    "autoscaling_config",
    "ray_actor_options",
    "max_ongoing_requests",
    "max_queued_requests",
    "placement_group_bundles",
    "placement_group_strategy",
    "health_check_period_s",
    "health_check_timeout_s",
    "graceful_shutdown_timeout_s",
    "logging_config",
)

#: the control deployment: one replica, no CPU of its own. Besides calls that take
#: milliseconds, its open calls are the replicas' standing threshold watches (up to 10 s
#: each), which Serve would wait out before it stops the replica, on every delete, redeploy
#: and shutdown (an idle application's delete: 11-21 s with them, 3 s without). So it waits
#: at most 2 s for its calls to end.
CONTROL: dict[str, Any] = {
    "name": "control", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0},
    "max_ongoing_requests": 100_000, "logging_config": {"enable_access_log": False},
    "graceful_shutdown_wait_loop_s": 0.2, "graceful_shutdown_timeout_s": 2.0,
}

#: settings a Ray application does not take (they belong to the single-process server)
_NOT_FOR_RAY = {"host", "port", "remote_teacher", "teacher_retries",
                "teacher_input_name", "teacher_output_name", "header_timeout_s", "log_level"}
_SETTINGS = set(ServeSettings.model_fields) - _NOT_FOR_RAY - {"bundle"}


class _AppArgsBase(BaseModel):
    """The arguments of ``serve run ebjr.ray.serve:app key=value ...`` (strings are parsed):
    the bundle, the deployment options, and every model setting of :class:`ServeSettings`
    that a Ray application takes (its fields and defaults, read from the settings model)."""

    model_config = ConfigDict(extra="forbid")

    bundle: str
    config: str | None = None
    first_stage_in_ingress: bool = True
    teacher_in_ingress: bool = False
    student_replicas: int | str | None = None
    teacher_replicas: int | str | None = None
    ingress_replicas: int | str | None = None

    @field_validator("input_shape", "allow_factories", mode="before", check_fields=False)
    @classmethod
    def _split(cls, v: Any) -> Any:  # "3,32,32" on a command line
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v


def _settings_fields() -> dict[str, Any]:
    return {
        name: (f.annotation, f.get_default(call_default_factory=True))
        for name, f in ServeSettings.model_fields.items()
        if name in _SETTINGS
    }


def settings_for_ray(settings: ServeSettings) -> dict[str, Any]:
    """The settings that a Ray application takes, by name (``ebjr serve --ray``)."""
    return {name: getattr(settings, name) for name in sorted(_SETTINGS)}


AppArgs: type[_AppArgsBase] = create_model(  # type: ignore[call-overload]
    "AppArgs", __base__=_AppArgsBase, __module__=__name__, **_settings_fields()
)


def _replicas(value: Any, role: str) -> dict[str, Any]:
    if value is None:
        return {}
    if value == "auto":
        return {"num_replicas": "auto"}
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(
            f"{role}_replicas must be a positive integer or 'auto', got {value!r}"
        ) from None
    if n < 1:
        raise InputError(f"{role}_replicas must be a positive integer or 'auto', got {value!r}")
    return {"num_replicas": n}


def _read_config(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise InputError(f"cannot read the Ray deployment config {str(p)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(k in ROLES or STAGE.fullmatch(str(k))
                                             for k in data):
        raise InputError(
            f"{str(p)!r} must be a mapping with sections among {list(ROLES)} (and, for a "
            f"cascade, stage1, stage2, ...), got "
            f"{sorted(data) if isinstance(data, dict) else type(data).__name__}"
        )
    return data


def _check_section(role: str, section: Any) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise InputError(f"the {role!r} section must be a mapping of deployment options")
    unknown = sorted(set(section) - set(DEPLOYMENT_OPTIONS))
    if unknown:
        raise InputError(
            f"unknown option(s) {unknown} for the {role!r} deployment; "
            f"expected some of {list(DEPLOYMENT_OPTIONS)}"
        )
    return section


def deployment_options(
    settings: ServeSettings,
    sections: dict[str, dict[str, Any]] | None = None,
    replicas: dict[str, Any] | None = None,
    first_stage_in_ingress: bool = True,
    teacher_in_ingress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Each deployment's Ray Serve options: defaults, then ``sections``
    (a YAML file's or dicts), then ``replicas`` (``{"student": 2, ...}``) on top.

    With ``first_stage_in_ingress`` the first stage (the student, or the one model) runs
    in the ingress replicas: there is no deployment of its own, and its section and
    replicas configure the ingress (after the ingress's own). With ``teacher_in_ingress``
    too, so does the teacher: the ingress is the only deployment besides the control, and
    a section or replica count for the teacher is refused (it has no deployment)."""
    if teacher_in_ingress:
        if not first_stage_in_ingress:
            raise InputError("teacher_in_ingress runs every model in the ingress replicas: "
                             "it needs the student there too (first_stage_in_ingress=True)")
        if settings.role != "joint":
            raise InputError(f"teacher_in_ingress applies to a joint model served whole, not "
                             f"to role {settings.role!r} (one model, already in the ingress)")
        if "teacher" in (sections or {}) or "teacher" in (replicas or {}):
            raise InputError("with teacher_in_ingress the teacher has no deployment of its "
                             "own: set its replicas and options on the ingress (or the "
                             "student, which runs there too)")
    per_chunk = settings.max_batch_size
    out: dict[str, dict[str, Any]] = {
        # the ingress parses JSON and waits: no core of its own, many requests at once
        "ingress": {"ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": 1024},
        # a request is split in chunks of at most max_batch_size rows; the queue limit
        # of ebjr serve (rows) becomes one in chunks; beyond it, 503
        "student": {
            "ray_actor_options": {"num_cpus": 1},
            # @serve.batch runs up to 8 batches at once (routed ones wait for the teacher)
            "max_ongoing_requests": max(256, 8 * per_chunk),
            "max_queued_requests": max(1, math.ceil(settings.max_queue_rows / per_chunk)),
        },
        # routed rows beyond the teacher's queue get the fallback, as in ebjr serve
        "teacher": {
            "ray_actor_options": {"num_cpus": 1},
            "max_ongoing_requests": 256,
            "max_queued_requests": max(1, math.ceil(
                settings.teacher_max_queue_rows / settings.teacher_max_batch_size)),
        },
    }
    if settings.role != "joint":  # one model alone: its queue is the server's
        out[settings.role] = {**out["student"]}
    # no access-log line per call (calls between deployments are many; a line costs
    # about a millisecond of CPU); a section's logging_config turns them back on
    for role in out:
        out[role]["logging_config"] = {"enable_access_log": False}
    for role, section in (sections or {}).items():
        if role not in ROLES:
            raise InputError(f"unknown deployment {role!r}; expected one of {list(ROLES)}")
        out[role].update(_check_section(role, section))
    for role, value in (replicas or {}).items():
        out[role].update(_replicas(value, role))
    if first_stage_in_ingress:
        out = _first_stage_in_ingress(settings, out, sections or {}, replicas or {})
    if teacher_in_ingress:
        out.pop("teacher", None)
    for opts in out.values():
        if "autoscaling_config" in opts and opts.get("num_replicas") not in (None, "auto"):
            opts.pop("num_replicas")  # autoscaling decides, within its bounds
    return out


def _first_stage_in_ingress(
    settings: ServeSettings, out: dict[str, dict[str, Any]],
    sections: dict[str, dict[str, Any]], replicas: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """The options with the first stage's deployment folded into the ingress."""
    first = "student" if settings.role == "joint" else settings.role
    ingress = {**out[first], "max_ongoing_requests": 1024,
               "max_queued_requests": out[first]["max_queued_requests"]}
    ingress.update(sections.get("ingress") or {})
    ingress.update(sections.get(first) or {})
    for role in ("ingress", first):
        if replicas.get(role) is not None:
            ingress.update(_replicas(replicas[role], role))
    kept = {"ingress": ingress}
    if settings.role == "joint":
        kept["teacher"] = out["teacher"]
    return kept


def build_app(bundle_path: str | Path, **options: Any) -> Application:
    """The Ray Serve application of the joint model saved at ``bundle_path``.

    Args:
        options: ``ebjr serve``'s model settings by name (``max_batch_size``,
            ``fallback``, ``load_mode``, ``admin_token``, ...); ``student`` /
            ``teacher`` / ``ingress``: dicts of deployment options;
            ``student_replicas`` / ``teacher_replicas`` / ``ingress_replicas``
            (an int or ``"auto"``); ``config``: a YAML file with ``student`` /
            ``teacher`` / ``ingress`` sections; ``first_stage_in_ingress`` (default
            True): the student (or the one model) runs in the ingress replicas, so a
            request takes one hop and only routed rows a second; False gives it a
            deployment of its own (its threshold then asked for per batch, and the
            load-aware control sees the whole application's teacher queue);
            ``teacher_in_ingress`` (default False; with ``first_stage_in_ingress``): the
            teacher (of a cascade, every later stage) runs in the ingress replicas too, so
            a request takes no hop after the proxy and each replica holds every model (for
            models that fit in each replica: it gives up scaling the teacher apart).

    Raises:
        InputError: an unknown option, or a bundle this application cannot serve.
        BundleError: the bundle cannot be read.
    """
    settings, bundle, opts = _prepare(bundle_path, dict(options))
    here = options.get("first_stage_in_ingress", True)
    everything_here = options.get("teacher_in_ingress", False)
    ingress = serve.deployment(serve.ingress()(Ingress), name="ingress", **opts["ingress"])
    if isinstance(bundle, CascadeRecord):  # the first stage in the ingress, then one each
        stages = bundle.cascade.stages
        control = serve.deployment(CascadeControl, **CONTROL).bind(
            list(bundle.cascade.thresholds), list(stages))
        handles = {name: serve.deployment(ModelReplica, name=stage_deployment(i),
                                          **opts[stage_deployment(i)]).bind(settings, name)
                   for i, name in enumerate(stages) if (i or not here) and not everything_here}
        return ingress.bind(settings, None, control, handles)
    if settings.role != "joint":  # one model alone, as ebjr serve --role
        if here:
            return ingress.bind(settings)
        model = serve.deployment(ModelReplica, name=settings.role,
                                 **opts[settings.role]).bind(settings, settings.role)
        return ingress.bind(settings, model)
    control = serve.deployment(Control, **CONTROL).bind(settings, bundle.threshold)
    if everything_here:  # no teacher deployment: each ingress replica runs it
        return ingress.bind(settings, None, control, None)
    teacher = serve.deployment(ModelReplica, name="teacher", **opts["teacher"]).bind(
        settings, "teacher"
    )
    if here:
        return ingress.bind(settings, None, control, teacher)
    student = serve.deployment(StudentReplica, name="student", **opts["student"]).bind(
        settings, teacher, control
    )
    return ingress.bind(settings, student, control)


def _prepare(bundle_path: str | Path, options: dict[str, Any]
             ) -> tuple[ServeSettings, Any, dict[str, dict[str, Any]]]:
    """The settings, the bundle and each deployment's options; the bundle and the models
    it will load checked (document, trust, files) before anything starts."""
    from ebjr.bundle import persist

    sections: dict[str, Any] = {}
    config = options.pop("config", None)
    if config is not None:
        sections.update(_read_config(config))
    stage_sections = {k: sections.pop(k) for k in list(sections) if STAGE.fullmatch(str(k))}
    for role in ROLES:
        if role in options:
            sections[role] = {**sections.get(role, {}), **(options.pop(role) or {})}
    replicas = {role: options.pop(f"{role}_replicas") for role in ROLES
                if options.get(f"{role}_replicas") is not None}
    for role in ROLES:
        options.pop(f"{role}_replicas", None)
    here = options.pop("first_stage_in_ingress", True)
    everything_here = options.pop("teacher_in_ingress", False)
    for name, value in (("first_stage_in_ingress", here),
                        ("teacher_in_ingress", everything_here)):
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
    unknown = sorted(set(options) - _SETTINGS)
    if unknown:
        hint = sorted(set(unknown) & _NOT_FOR_RAY)
        raise InputError(
            f"unknown option(s) {unknown} for the Ray Serve application"
            + (f" ({hint} belong to the single-process 'ebjr serve')" if hint else "")
            + f"; expected some of {sorted(_SETTINGS)}"
        )
    path = Path(bundle_path).expanduser().resolve()
    settings = ServeSettings(bundle=str(path), **options)
    if settings.shadow_rate > 0 and not here:
        raise InputError("the guarantee monitor (shadow_rate) needs the student in the "
                         "ingress replicas (first_stage_in_ingress=True): their shadow "
                         "traffic feeds the control deployment's monitor")
    bundle = persist.check(path, settings.roles, allow_factories=settings.allow_factories,
                           allow_torchscript=settings.allow_torchscript)
    opts = deployment_options(settings, sections, replicas, here, everything_here)
    if not isinstance(bundle, CascadeRecord):
        check_task(settings, bundle.make_task())
    if isinstance(bundle, CascadeRecord):
        opts = _cascade_options(settings, bundle, opts, here, stage_sections, everything_here)
    elif stage_sections:
        raise InputError(f"sections {sorted(stage_sections)} configure a cascade's stages; "
                         f"{str(path)!r} is a student/teacher bundle")
    return settings, bundle, opts


def stage_deployment(i: int) -> str:
    """The deployment name of a cascade's stage ``i`` (its first stage runs in the ingress)."""
    return f"stage{i}"


def _cascade_options(settings: ServeSettings, bundle: CascadeRecord,
                     opts: dict[str, dict[str, Any]], here: bool,
                     sections: dict[str, Any] | None = None,
                     everything_here: bool = False) -> dict[str, dict[str, Any]]:
    """A cascade's deployments: the ingress (with the first stage, as the student of a pair,
    unless ``here`` is False: then the first stage is ``stage0``, with the student's
    options) and, for each later stage, a deployment with the teacher's options; a
    ``stageI`` section of the config file then sets that stage's own. With
    ``everything_here``, every stage runs in the ingress replicas: no stage deployment."""
    if settings.role != "joint":
        raise InputError(f"{settings.bundle!r} is a cascade: serve it whole (role 'joint'), "
                         "not one model of it")
    if settings.load_mode is not None:
        raise InputError("the load-aware threshold (load_mode) applies to a "
                         "student/teacher pair, not a cascade")
    if settings.shadow_rate > 0:
        raise InputError("a cascade's guarantee monitor (shadow_rate) runs in 'ebjr serve' "
                         "without --ray; on Ray, only a student/teacher pair's does")
    stages = bundle.cascade.stages
    first = {} if here else {stage_deployment(0): dict(opts["student"])}
    later = {} if everything_here else {
        stage_deployment(i): dict(opts["teacher"]) for i in range(1, len(stages))}
    out = {"ingress": opts["ingress"], **first, **later}
    for name, section in (sections or {}).items():
        if name not in out:
            raise InputError(f"no deployment {name!r}: this cascade's stage deployments are "
                             f"{sorted(k for k in out if k != 'ingress')}")
        out[name].update(_check_section(name, section))
        if "autoscaling_config" in section and out[name].get("num_replicas") not in (
                None, "auto"):
            out[name].pop("num_replicas")
    return out


def cpus_needed(bundle_path: str | Path, **options: Any) -> dict[str, float]:
    """The CPUs each deployment of the application reserves at its start (replicas x
    ``ray_actor_options.num_cpus``; an autoscaled one, its ``min_replicas``)."""
    _, _, opts = _prepare(bundle_path, dict(options))
    out = {}
    for role, o in opts.items():
        auto = o.get("autoscaling_config") or {}
        n = o.get("num_replicas", 1)
        if auto or n == "auto":
            n = int(auto.get("initial_replicas") or auto.get("min_replicas") or 1)
        out[role] = float(n) * float((o.get("ray_actor_options") or {}).get("num_cpus", 1))
    return out


def app(args: Any) -> Application:
    """The builder that ``serve run ebjr.ray.serve:app bundle=... key=value`` calls, with
    the arguments as a dict (of strings, from a command line) or as :data:`AppArgs`."""
    if not isinstance(args, _AppArgsBase):
        args = AppArgs.model_validate(args)
    values = args.model_dump(exclude_defaults=True)
    bundle = values.pop("bundle", args.bundle)
    return build_app(bundle, **values)


#: the longest a stop waits for Ray Serve to drain before it shuts Ray down regardless
SHUTDOWN_S = 30.0


def _bounded(fn: Any, seconds: float, what: str) -> None:
    """``fn()`` on a daemon thread, waited for at most ``seconds`` (errors logged)."""
    def call() -> None:
        try:
            fn()
        except Exception as exc:  # Ray's own errors while it goes down
            log.warning("%s failed: %s", what, exc)

    t = threading.Thread(target=call, daemon=True, name="ebjr-ray-stop")
    t.start()
    t.join(seconds)
    if t.is_alive():
        log.warning("%s took longer than %g s; shutting Ray down", what, seconds)


def _check_ray_token() -> None:
    """A local cluster requires Ray's token (Ray's default for a new local cluster; a user's
    ``RAY_AUTH_MODE=disabled`` is warned about), and the token's file (which Ray writes
    readable by every local user) is made the user's alone."""
    from ray._raylet import (
        AuthenticationMode,  # pyright: ignore[reportAttributeAccessIssue]
        get_authentication_mode,  # pyright: ignore[reportAttributeAccessIssue]
    )

    if get_authentication_mode() != AuthenticationMode.TOKEN:
        log.warning("Ray's token authentication is off (RAY_AUTH_MODE=%s): this cluster's "
                    "control-plane ports, which Ray binds to the machine's address, accept "
                    "anyone who can reach them", os.environ.get("RAY_AUTH_MODE"))
    token = token_path()
    with contextlib.suppress(OSError):
        if token.is_file():
            token.chmod(0o600)


def run(
    bundle_path: str | Path,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> None:
    """``ebjr serve BUNDLE --ray``: start (or join, ``address``) a Ray cluster, run the
    application on ``host:port`` until SIGINT/SIGTERM (or ``stop`` is set), then shut it down.

    A cluster started here serves HTTP on ``host`` only (loopback by default), runs no
    dashboard, and requires Ray's token on its control-plane ports: Ray binds those to
    the machine's address whatever it is told (it turns ``127.0.0.1`` into the node's
    address), so the token is what keeps them closed; its file is made private to the
    user. A multi-node cluster is started with ``ray start`` on a private network and
    joined with ``address`` (docs/scale-out.md), with Ray's token when one is at
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (or in ``RAY_AUTH_TOKEN``). Before
    deploying, the CPUs the deployments reserve are checked against a local cluster's, so
    a deployment that could never start fails at once with a message instead of waiting
    forever. A signal stops it at any time, deploying too.

    Raises:
        InputError: bad options, or more CPUs asked for than a local cluster has.
    """
    import ray

    application = build_app(bundle_path, **options)  # bad options fail before Ray starts
    needed = cpus_needed(bundle_path, **options)
    app_name = name or options.get("model_name") or Path(bundle_path).stem
    address = cluster_address(address)
    local = address == "local"
    if local:
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=True)
        _check_ray_token()
    else:
        use_cluster_token()  # effective when Ray was not imported yet (ebjr serve --ray)
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    done = stop or threading.Event()
    deploying = True
    interrupted = False

    def on_signal(*_: Any) -> None:
        nonlocal interrupted
        done.set()
        if deploying:  # serve.run waits inside Ray until the replicas start: leave it
            interrupted = True
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # after ray.init, which sets its own
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    try:
        if local:
            have = float(ray.cluster_resources().get("CPU", 0))
            if sum(needed.values()) > have + 1e-9:
                parts = ", ".join(f"{k} {v:g}" for k, v in needed.items() if v)
                raise InputError(
                    f"the application reserves {sum(needed.values()):g} CPUs ({parts}) but "
                    f"this machine's Ray cluster has {have:g}: ask for fewer replicas, or "
                    "give each a share of a CPU (ray_actor_options: {num_cpus: 0.5} in "
                    "--ray-config)")
        serve.start(http_options={"host": host, "port": port})
        log.warning("deploying %r on Ray Serve (%s)", app_name, data_plane_of(os.environ)
                    if local else "the data plane the cluster's nodes were started with")
        serve.run(application, name=app_name, route_prefix="/", blocking=False)
        deploying = False
        log.warning("serving %r on Ray at http://%s:%d (Ctrl-C stops)", app_name, host, port)
        while not done.wait(0.5):  # a short wait, so signals are handled promptly
            pass
        log.warning("shutting down %r", app_name)
        if not local:  # on a shared cluster, this application only
            _bounded(lambda: serve.delete(app_name), SHUTDOWN_S, "deleting the application")
    except KeyboardInterrupt:
        log.warning("stopped while %r was deploying", app_name)
    finally:
        deploying = False
        if local and not interrupted:  # replicas drain (a deployment stopped halfway has
            # nothing to drain: Ray's shutdown ends it); a cluster broken under us (a signal
            # to the whole process group reached Ray's own processes) must not hang the exit
            _bounded(serve.shutdown, SHUTDOWN_S, "stopping Ray Serve")
        ray.shutdown()
