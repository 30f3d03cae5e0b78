"""Everything ``ebjr serve`` can be told, in one checked settings model (pydantic-settings).

Each setting is a field here and nowhere else: its type, default and help
text make the ``ebjr serve`` flag (:func:`add_settings_arguments`), the
``EBJR_<NAME>`` environment variable (e.g. ``EBJR_ADMIN_TOKEN``,
``EBJR_MAX_BATCH_SIZE=32``) and the arguments of the Ray Serve application
(:mod:`ebjr.ray.serve`). Values given by name beat flags beat the
environment beat the defaults; a bad value is an :class:`~ebjr.exceptions.InputError`
that names the setting.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    CliImplicitFlag,
    CliPositionalArg,
    CliSettingsSource,
    SettingsConfigDict,
)

from ebjr.exceptions import InputError

__all__ = [
    "FALLBACK_POLICIES",
    "LOAD_MODES",
    "ROLES",
    "ServeSettings",
    "add_settings_arguments",
    "settings_from_arguments",
]

FALLBACK_POLICIES = ("student", "error")
#: a served model's name, as Triton allows it in a URL path (no '/', quote or markup)
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
LOAD_MODES = ("share", "queue")
ROLES = ("joint", "student", "teacher")

#: the shorter flag each setting also answers to (the names ``ebjr serve`` always had)
FLAG_ALIASES = {
    "request-timeout-s": "request-timeout",
    "header-timeout-s": "header-timeout",
    "body-timeout-s": "body-timeout",
    "teacher-timeout-s": "teacher-timeout",
    "allow-factories": "allow-factory",
}


def _not_a_bool(v: Any) -> Any:  # True is an int to Python, never a row count or a port
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


#: an integer setting: what pydantic accepts as ``int``, except booleans
Integer = Annotated[int, BeforeValidator(_not_a_bool)]


class ServeSettings(BaseSettings):
    """Settings of the inference service; see each field's description (``ebjr serve --help``).

    The joint engine runs the student and the teacher on two threads of their
    own, beside the HTTP event loop (one shared thread when the CPUs are too few for
    both: ``share_model_thread``); on a small CPU ``torch_threads=1`` avoids
    oversubscription (docs/serve.md has the measurements).
    """

    model_config = SettingsConfigDict(
        env_prefix="EBJR_",
        env_ignore_empty=True,
        extra="forbid",
        validate_default=True,
        cli_kebab_case=True,
        cli_hide_none_type=True,
        cli_parse_none_str="none",
    )

    bundle: CliPositionalArg[str | Path] = Field(
        description="bundle JSON written by ebjr.save (or the quickstart)")
    role: Literal["joint", "student", "teacher"] = Field(
        "joint", description="serve the joint model, or the student or teacher alone as a plain "
        "Open Inference Protocol model (e.g. the remote teacher of another joint server)")
    model_name: str | None = Field(
        None, description="name under /v2/models/; none: the bundle's stem, or the role")
    host: str = Field("127.0.0.1", description="address to bind")
    port: Integer = Field(8000, ge=0, le=65535, description="port")
    admin_token: str | None = Field(
        None, repr=False, description="bearer token that threshold writes require; give it "
        "as $EBJR_ADMIN_TOKEN or --admin-token-file (a command line is visible to every user "
        "in /proc); none: writes are refused")
    admin_token_file: Path | None = Field(
        None, description="read the admin token from this file (one trailing newline "
        "stripped)")
    max_batch_size: Integer = Field(
        64, gt=0, description="student batch rows: a batch starts when it has this many rows...")
    max_wait_ms: float = Field(
        2.0, ge=0, description="... or its first request has waited this long (ms)")
    teacher_max_batch_size: Integer = Field(
        64, gt=0, description="teacher batch rows (routed rows coalesce again across batches)")
    teacher_max_wait_ms: float = Field(
        2.0, ge=0, description="longest routed rows wait for a teacher batch (ms)")
    max_queue_rows: Integer = Field(
        4096, gt=0, description="rows that may wait for the student; beyond: 429 + Retry-After")
    teacher_max_queue_rows: Integer = Field(
        4096, gt=0, description="routed rows that may wait for the teacher; beyond: the fallback")
    max_request_rows: Integer = Field(1024, gt=0, description="rows per request (413 beyond)")
    max_body_bytes: Integer = Field(
        16 * 1024 * 1024, gt=0, description="request body limit in bytes (413 beyond)")
    max_json_bytes: Integer = Field(
        4 * 1024 * 1024, gt=0, description="limit of a body's JSON part in bytes (413 beyond; "
        "large tensors travel as binary data)")
    max_json_elements: Integer = Field(
        1 << 18, gt=0, description="JSON values one body may hold, counted before it is "
        "parsed (413 beyond)")
    max_concurrent_parses: Integer = Field(
        2, gt=0, description="JSON bodies parsed at once, off the event loop (more wait)")
    max_header_bytes: Integer = Field(
        64 * 1024, gt=0, description="limit of a request's line and headers in bytes (431 "
        "beyond)")
    max_connections: Integer = Field(
        1024, gt=0, description="concurrent connections and requests (503 beyond)")
    allowed_origins: list[str] = Field(
        default_factory=list, description="web origins (https://app.example.com) whose pages "
        "may call this server from a browser; others get 403 (repeat the flag for more)")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names accepted besides localhost when bound to "
        "loopback (against DNS rebinding); or, when set, the only ones accepted")
    request_timeout_s: float = Field(
        30.0, gt=0, description="longest a request may wait for its answer before 503 (s)")
    header_timeout_s: float = Field(
        10.0, gt=0, description="longest a request's line and headers may take to arrive, from "
        "its first byte, before 408 (s)")
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest a request's body may take to arrive before 408 (s)")
    remote_teacher: str | None = Field(
        None, description="the teacher's v2 model URL, e.g. http://host:8001/v2/models/teacher "
        "(the bundle's teacher is then not loaded)")
    teacher_timeout_s: float = Field(
        5.0, gt=0, description="the longest one teacher call may take before its rows get "
        "the fallback: a remote teacher's per attempt; on Ray, a call to the teacher "
        "deployment (or a cascade's later stage), so a call Ray holds for a replica that "
        "died does not wait for its replacement (s)")
    teacher_retries: Integer = Field(1, ge=0, description="remote teacher: retries after the first")
    teacher_input_name: str = Field("input", description="remote teacher: input tensor name")
    teacher_output_name: str | None = Field(
        None, description="remote teacher: output tensor name; none: its first output")
    fallback: Literal["student", "error"] = Field(
        "student", description="when the teacher fails: answer with the student, flagged "
        "degraded, or 503")
    load_mode: Literal["share", "queue"] | None = Field(
        None, description="opt-in load-aware threshold: keep the teacher share of recent "
        "traffic (share) or the teacher queue (queue) within load_budget")
    load_budget: float | None = Field(
        None, description="teacher share in [0, 1] (mode share) or queued teacher rows >= 1 "
        "(mode queue)")
    load_min_threshold: float | None = Field(
        None, description="lowest threshold the load-aware control may use")
    shadow_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of the rows the student answered that the "
        "teacher answers too, off the response path (shed first under load); > 0 turns on "
        "the live guarantee monitor (GET /v2/models/{name}/guarantee)")
    shadow_near_rate: float | None = Field(
        None, gt=0.0, le=1.0, description="shadow probability of the rows the student "
        "answers just above the threshold (a band holding shadow_near_share of the "
        "traffic, from the bundle's curve), where disagreements gather; shadow_rate "
        "elsewhere; each shadow is weighted by 1/p; none: shadow_rate everywhere")
    shadow_near_share: float = Field(
        0.1, gt=0.0, le=1.0, description="share of all traffic in the band above the "
        "threshold shadowed at shadow_near_rate")
    guarantee_eps: float | None = Field(
        None, gt=0.0, lt=1.0, description="the disagreement with the teacher the monitor "
        "tests; none: the bundle's guaranteed_drop eps")
    guarantee_delta: float | None = Field(
        None, gt=0.0, lt=1.0, description="the monitor's false-alarm probability; none: the "
        "bundle's guaranteed_drop delta, else 0.05")
    on_alarm: Literal["log", "tighten", "teacher"] = Field(
        "log", description="when the monitor alarms: log it, move the live threshold to the "
        "cheapest still-certified one, or send every row to the teacher")
    input_shape: tuple[int, ...] | None = Field(
        None, description="per-row input shape, checked before batching, e.g. 3,32,32; "
        "none: the bundle's input record")
    torch_threads: Integer | None = Field(
        None, gt=0, description="torch intra-op threads; none: torch's, one per core (1 "
        "suits a joint server on a small CPU)")
    share_model_thread: bool | None = Field(
        None, description="run every model of the process on one thread, one batch after "
        "another, instead of one thread each; none: share when the process has less than 2 "
        "CPUs (a Ray replica: the CPUs Ray reserved for it), where two model threads only "
        "take turns on a core")
    reuse_freed_memory: CliImplicitFlag[bool] = Field(
        True, description="keep the memory a model frees after a batch for the next one "
        "(glibc's malloc), instead of returning it to the OS and faulting it in again: less "
        "CPU per batch, resident memory up to the models' peak")
    allow_factories: list[str] = Field(
        default_factory=list, description="also trust this exact model builder of the bundle, "
        "e.g. mypkg.models:make_net (repeat the flag for more; no patterns)")
    allow_torchscript: CliImplicitFlag[bool] = Field(
        False, description="load TorchScript archives of the bundle (they are programs)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="server log level")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InputError(_explain(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> ServeSettings:
        from ebjr.adapters.builders import check_allowed_names

        check_allowed_names(self.allow_factories, ValueError)
        if self.admin_token_file is not None:
            if self.admin_token is not None:
                raise ValueError("give admin_token or admin_token_file, not both")
            self.admin_token = _read_token(self.admin_token_file)
        name = self.name
        if not MODEL_NAME.fullmatch(name):
            raise ValueError(
                f"the model name {name!r} is not a valid model name (letters, digits, '_', '.' "
                "and '-', at most 128, starting with a letter or digit)"
                + ("" if self.model_name else "; give one with --model-name")
            )
        for origin in self.allowed_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"allowed_origins: expected scheme://host[:port], got {origin!r}")
        if self.max_request_rows > self.max_queue_rows:
            raise ValueError(
                f"max_request_rows ({self.max_request_rows}) cannot exceed max_queue_rows "
                f"({self.max_queue_rows}): such a request could never be queued"
            )
        if self.load_mode is not None:
            if self.role != "joint":
                raise ValueError("the load-aware threshold needs role 'joint'")
            b = self.load_budget
            if b is None:
                raise ValueError(f"load_mode {self.load_mode!r} needs load_budget")
            if self.load_mode == "share" and not 0.0 <= b <= 1.0:
                raise ValueError(f"load_budget for mode 'share' is a share in [0, 1], got {b!r}")
            if self.load_mode == "queue" and not b >= 1:
                raise ValueError(f"load_budget for mode 'queue' is rows >= 1, got {b!r}")
        if self.shadow_rate > 0 and self.role != "joint":
            raise ValueError("shadow_rate needs role 'joint' (a student and a teacher)")
        if self.shadow_near_rate is not None and self.shadow_rate == 0:
            raise ValueError("shadow_near_rate needs shadow_rate > 0 (the probability away "
                             "from the threshold)")
        if self.remote_teacher is not None:
            if self.role != "joint":
                raise ValueError("remote_teacher needs role 'joint'")
            if not self.remote_teacher.startswith(("http://", "https://")):
                raise ValueError(
                    "remote_teacher must be an http(s) URL of a v2 model, e.g. "
                    f"http://host:8001/v2/models/teacher; got {self.remote_teacher!r}"
                )
        return self

    @property
    def roles(self) -> tuple[str, ...]:
        """The bundle's models this server loads."""
        if self.role != "joint":
            return (self.role,)
        return ("student",) if self.remote_teacher else ("student", "teacher")

    @property
    def name(self) -> str:
        if self.model_name:
            return self.model_name
        return Path(self.bundle).stem if self.role == "joint" else self.role


def _read_token(path: Path) -> str:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"admin_token_file: cannot read {str(path)!r}: {exc}") from None
    token = text.removesuffix("\n").removesuffix("\r")
    if not token.strip():
        raise ValueError(f"admin_token_file: {str(path)!r} is empty")
    return token


def _explain(exc: ValidationError) -> str:
    """One line per bad setting, naming it and what arrived."""
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting; the settings are {', '.join(ServeSettings.model_fields)}"
        elif where and err["type"] != "value_error":
            msg = f"{msg}, got {err.get('input')!r}"
        lines.append(f"{where}: {msg}" if where else msg)
    return "bad serve settings: " + "; ".join(lines)


def add_settings_arguments(parser: argparse.ArgumentParser) -> CliSettingsSource[Any]:
    """Add one flag per setting to ``parser`` (``--max-batch-size``, ...); returns the source
    that :func:`settings_from_arguments` reads the parsed flags with."""
    return CliSettingsSource(
        ServeSettings, root_parser=parser, cli_shortcuts=FLAG_ALIASES,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def settings_from_arguments(
    source: CliSettingsSource[Any], parsed: argparse.Namespace, **overrides: Any
) -> ServeSettings:
    """The settings of a parsed command line (flags over ``EBJR_*`` variables over defaults)."""
    return ServeSettings(_cli_settings_source=source(parsed_args=parsed), **overrides)


def check_task(settings: ServeSettings, task: Any) -> None:
    """Refuse, before serving, the settings that do not apply to the bundle's task kind.

    Raises:
        InputError: naming the setting and the task.
    """
    from ebjr.exceptions import InputError

    if settings.shadow_rate > 0 and task.name != "classification":
        raise InputError(f"the guarantee monitor (--shadow-rate) watches the disagreement of "
                         f"two classifiers; {settings.bundle!r} is a {task.name} bundle")
    if task.name == "detection" and (settings.remote_teacher or settings.role != "joint"):
        raise InputError("a detector's answer travels over the protocol as padded detection "
                         "tensors, which carry no class logits: serve a detection bundle whole "
                         "(role 'joint', its teacher in this process or on Ray: --ray), not "
                         "one of its models alone or with a remote teacher")
