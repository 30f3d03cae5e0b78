"""The teacher behind an Open Inference Protocol v2 server (edge/cloud split)."""

from __future__ import annotations

import time

import numpy as np

from ebjr.adapters.remote import V2Client
from ebjr.exceptions import InputError, TeacherUnavailable
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.settings import ServeSettings

__all__ = ["RemoteTeacher"]


class RemoteTeacher:
    """The teacher behind an Open Inference Protocol v2 server: the one v2 client
    (:class:`~ebjr.adapters.remote.V2Client`, pooled, with the one retry policy) plus a
    circuit breaker and the server's metrics.

    Each call tries ``1 + retries`` times (connection errors, timeouts and 5xx
    answers are retried after a short back-off, each retried failure counted in
    ``ebjr_teacher_errors``); then it raises :class:`TeacherUnavailable`. After
    ``trip_after`` failed calls in a row the circuit opens: calls fail at once
    for ``cooldown_s`` seconds, then one is let through to probe the teacher.
    """

    def __init__(
        self,
        settings: ServeSettings,
        metrics: ServeMetrics,
        *,
        trip_after: int = 3,
        cooldown_s: float = 2.0,
        max_in_flight: int = 4,
    ) -> None:
        if settings.remote_teacher is None:
            raise InputError("a remote teacher needs settings.remote_teacher, the model's URL")
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.trip_after = trip_after
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._open_until = 0.0
        self.client = V2Client(
            settings.remote_teacher,
            input_name=settings.teacher_input_name,
            output_name=settings.teacher_output_name,
            timeout=settings.teacher_timeout_s,
            retries=settings.teacher_retries,
            max_connections=2 * max_in_flight,
            on_retry=lambda exc: metrics.teacher_errors.labels(exc.kind).inc(),
        )
        self.url = self.client.url

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        now = time.monotonic()
        if now < self._open_until:
            raise TeacherUnavailable(
                f"the remote teacher at {self.url} failed {self._failures} times in a row; "
                "not retrying for a moment",
                "circuit_open",
                self._open_until - now,
            )
        try:
            logits = await self.client.infer(rows)
        except TeacherUnavailable as exc:
            kind, detail = exc.kind, str(exc)
        except InputError as exc:  # refused, or an answer that is not the logits: not retried
            kind, detail = "bad_response", str(exc)
        else:
            self._failures = 0
            return logits
        self._failures += 1
        if self._failures >= self.trip_after:
            self._open_until = time.monotonic() + self.cooldown_s
        raise TeacherUnavailable(f"the remote teacher failed ({kind}): {detail}", kind)

    async def close(self) -> None:
        await self.client.aclose()
