"""The teacher behind an Open Inference Protocol v2 server (edge/cloud split)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

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
        kind, detail = "connection", ""
        for attempt in range(self.settings.teacher_retries + 1):
            if attempt:
                self.metrics.teacher_errors.labels(kind).inc()
                await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
            try:
                r = await self._client.post(f"{self.url}/infer", json=body)
            except httpx.TimeoutException as exc:
                kind, detail = "timeout", str(exc) or "timed out"
                continue
            except httpx.TransportError as exc:
                kind, detail = "connection", str(exc) or type(exc).__name__
                continue
            if r.status_code >= 500 or r.status_code == 429:
                kind, detail = "http_5xx", f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            try:
                if r.status_code != 200:
                    raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
                logits = v2_logits(r.json(), len(rows), self.settings.teacher_output_name)
            except ValueError as exc:
                kind, detail = "bad_response", str(exc)
                break
            self._failures = 0
            return logits
        self._failures += 1
        if self._failures >= self.trip_after:
            self._open_until = time.monotonic() + self.cooldown_s
        raise TeacherUnavailable(
            f"the remote teacher at {self.url} failed ({kind}): {detail}", kind
        )

    async def close(self) -> None:
        await self._client.aclose()
