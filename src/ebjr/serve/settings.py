"""Everything ``ebjr serve`` can be told, in one checked dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ebjr.exceptions import InputError

__all__ = ["FALLBACK_POLICIES", "LOAD_MODES", "ROLES", "ServeSettings"]

FALLBACK_POLICIES = ("student", "error")
LOAD_MODES = ("share", "queue")
ROLES = ("joint", "student", "teacher")


@dataclass
class ServeSettings:
    """Settings of the inference service (see ``ebjr serve --help`` for each one).

    Attributes:
        bundle: the bundle written by ``ebjr.save`` (or the quickstart).
        role: ``joint`` serves the joint model; ``student`` or ``teacher``
            serves that model alone, as a plain Open Inference Protocol
            model (e.g. the remote teacher of another joint server).
        model_name: the name under ``/v2/models/``; defaults to the bundle's
            file stem (``joint``) or the role.
        admin_token: bearer token that threshold writes require; ``None``
            (the default, or ``EBJR_ADMIN_TOKEN`` unset) refuses all writes.
        max_batch_size, max_wait_ms: dynamic batching of the student stage:
            a batch starts when it has ``max_batch_size`` rows or its first
            request has waited ``max_wait_ms``.
        teacher_max_batch_size, teacher_max_wait_ms: the same for the routed
            rows, which coalesce again across student batches.
        max_queue_rows: rows that may wait for the student; beyond, requests
            get 429 with Retry-After.
        teacher_max_queue_rows: routed rows that may wait for the teacher;
            beyond, the fallback policy applies.
        max_request_rows, max_body_bytes: per-request limits (413 beyond).
        request_timeout_s: longest a request may wait for its answer (503).
        header_timeout_s: longest a request's line and headers may take to
            arrive, from its first byte (or the connection's opening) (408).
        body_timeout_s: longest a request's body may take to arrive (408).
        remote_teacher: Open Inference Protocol v2 model URL of the teacher,
            e.g. ``http://host:8001/v2/models/teacher``; the bundle's teacher
            is then not loaded.
        teacher_timeout_s, teacher_retries: per attempt, and retries after
            the first attempt, for the remote teacher.
        teacher_input_name, teacher_output_name: tensor names the remote
            teacher expects and returns (``None``: its first output).
        fallback: ``student`` answers routed rows with the student (flagged
            ``degraded``) when the teacher fails; ``error`` answers 503.
        load_mode: opt-in load-aware threshold: ``share`` keeps the teacher
            share of recent traffic at or under ``load_budget``; ``queue``
            keeps the teacher's queue at or under ``load_budget`` rows.
        load_min_threshold: the lowest threshold the load control may use.
        input_shape: per-row input shape, checked before batching (defaults
            to the bundle's ``input`` record, if any).
        torch_threads: torch's intra-op threads (``None``: torch's default,
            one per core). The joint engine runs the student and the teacher
            on two threads of their own, beside the HTTP event loop; on a
            small CPU one thread per model avoids oversubscription (see
            docs/serve.md for the measurements).
    """

    bundle: str | Path
    role: str = "joint"
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    teacher_max_batch_size: int = 64
    teacher_max_wait_ms: float = 2.0
    max_queue_rows: int = 4096
    teacher_max_queue_rows: int = 4096
    max_request_rows: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    remote_teacher: str | None = None
    teacher_timeout_s: float = 5.0
    teacher_retries: int = 1
    teacher_input_name: str = "input"
    teacher_output_name: str | None = None
    fallback: str = "student"
    load_mode: str | None = None
    load_budget: float | None = None
    load_min_threshold: float | None = None
    input_shape: tuple[int, ...] | None = None
    torch_threads: int | None = None
    allow_factories: list[str] = field(default_factory=list)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.admin_token is None:
            self.admin_token = os.environ.get("EBJR_ADMIN_TOKEN") or None
        if self.role not in ROLES:
            raise InputError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.fallback not in FALLBACK_POLICIES:
            raise InputError(f"fallback must be one of {FALLBACK_POLICIES}, got {self.fallback!r}")
        for name in (
            "max_batch_size",
            "teacher_max_batch_size",
            "max_queue_rows",
            "teacher_max_queue_rows",
            "max_request_rows",
            "max_body_bytes",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.max_request_rows > self.max_queue_rows:
            raise InputError(
                f"max_request_rows ({self.max_request_rows}) cannot exceed max_queue_rows "
                f"({self.max_queue_rows}): such a request could never be queued"
            )
        for name in ("max_wait_ms", "teacher_max_wait_ms"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("request_timeout_s", "teacher_timeout_s", "header_timeout_s",
                     "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if isinstance(self.teacher_retries, bool) or self.teacher_retries < 0:
            raise InputError(f"teacher_retries must be >= 0, got {self.teacher_retries!r}")
        if self.load_mode is not None:
            if self.role != "joint":
                raise InputError("the load-aware threshold needs role 'joint'")
            if self.load_mode not in LOAD_MODES:
                raise InputError(f"load_mode must be one of {LOAD_MODES}, got {self.load_mode!r}")
            b = self.load_budget
            if b is None:
                raise InputError(f"load_mode {self.load_mode!r} needs load_budget")
            if self.load_mode == "share" and not 0.0 <= b <= 1.0:
                raise InputError(f"load_budget for mode 'share' is a share in [0, 1], got {b!r}")
            if self.load_mode == "queue" and not b >= 1:
                raise InputError(f"load_budget for mode 'queue' is rows >= 1, got {b!r}")
        if self.remote_teacher is not None:
            if self.role != "joint":
                raise InputError("remote_teacher needs role 'joint'")
            if not self.remote_teacher.startswith(("http://", "https://")):
                raise InputError(
                    "remote_teacher must be an http(s) URL of a v2 model, e.g. "
                    f"http://host:8001/v2/models/teacher; got {self.remote_teacher!r}"
                )
        if self.torch_threads is not None and (
            isinstance(self.torch_threads, bool) or self.torch_threads < 1
        ):
            raise InputError(
                f"torch_threads must be a positive integer, got {self.torch_threads!r}"
            )
        if self.input_shape is not None:
            self.input_shape = tuple(int(d) for d in self.input_shape)

    @property
    def name(self) -> str:
        if self.model_name:
            return self.model_name
        return Path(self.bundle).stem if self.role == "joint" else self.role
