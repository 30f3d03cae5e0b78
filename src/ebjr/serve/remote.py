"""The teacher behind an Open Inference Protocol v2 server (edge/cloud split)."""

from __future__ import annotations

import time

import numpy as np

from ebjr._utils.retry import Retryable, async_attempts
from ebjr.exceptions import InputError
from ebjr.serve.engine import TeacherUnavailable
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.settings import ServeSettings

__all__ = ["RemoteTeacher"]


class RemoteTeacher:
    """The teacher behind an Open Inference Protocol v2 server, over a pooled async client.

    Each call tries ``1 + retries`` times (connection errors, timeouts and 5xx
    answers are retried after a short back-off); then it raises
    :class:`TeacherUnavailable`. After ``trip_after`` failed calls in a row the
    circuit opens: calls fail at once for ``cooldown_s`` seconds, then one is
    let through to probe the teacher again.
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
        import httpx

        if settings.remote_teacher is None:
            raise InputError("a remote teacher needs settings.remote_teacher, the model's URL")
        self.url = settings.remote_teacher.rstrip("/")
        self.settings = settings
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.trip_after = trip_after
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._open_until = 0.0
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.teacher_timeout_s),
            limits=httpx.Limits(
                max_connections=2 * max_in_flight, max_keepalive_connections=max_in_flight
            ),
        )

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        import httpx

        from ebjr.adapters.remote import v2_logits, v2_request

        now = time.monotonic()
        if now < self._open_until:
            raise TeacherUnavailable(
                f"the remote teacher at {self.url} failed {self._failures} times in a row; "
                "not retrying for a moment",
                "circuit_open",
                self._open_until - now,
            )
        body = v2_request(rows, self.settings.teacher_input_name)

        def counted(exc: Retryable) -> None:  # every failed attempt that is retried
            self.metrics.teacher_errors.labels(exc.kind).inc()

        try:
            async for attempt in async_attempts(self.settings.teacher_retries, counted):
                with attempt:
                    try:
                        r = await self._client.post(f"{self.url}/infer", json=body)
                    except httpx.TimeoutException as exc:
                        raise Retryable("timeout", str(exc) or "timed out") from exc
                    except httpx.TransportError as exc:
                        raise Retryable("connection", str(exc) or type(exc).__name__) from exc
                    if r.status_code >= 500 or r.status_code == 429:
                        raise Retryable("http_5xx", f"HTTP {r.status_code}: {r.text[:200]}")
                    if r.status_code != 200:
                        raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
                    logits = v2_logits(r.json(), len(rows), self.settings.teacher_output_name)
                    self._failures = 0
                    return logits
            kind, detail = "connection", "no attempt was made"  # unreachable: reraise
        except Retryable as exc:
            kind, detail = exc.kind, exc.detail
        except ValueError as exc:  # an answer that is not the logits asked for: not retried
            kind, detail = "bad_response", str(exc)
        self._failures += 1
        if self._failures >= self.trip_after:
            self._open_until = time.monotonic() + self.cooldown_s
        raise TeacherUnavailable(
            f"the remote teacher at {self.url} failed ({kind}): {detail}", kind
        )

    async def close(self) -> None:
        await self._client.aclose()
