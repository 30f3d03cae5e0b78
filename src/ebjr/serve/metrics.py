"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Names (all prefixed ``ebjr_``):

- ``requests_total{status}``: answered requests by HTTP status.
- ``rows_total{answered_by}``: rows by the model that answered them
  (``student``, ``teacher``, ``student_fallback`` when the teacher failed).
- ``teacher_fraction``: fraction of rows routed to the teacher over the last
  ``window`` rows (fallback rows count as routed).
- ``request_latency_seconds{path}``: request latency; ``path`` is
  ``student`` (no row went to the teacher), ``teacher`` (some did) or
  ``fallback`` (some were answered by the student because the teacher failed).
- ``queue_rows{stage}``: rows waiting for the ``student`` or ``teacher``, read when
  ``/metrics`` is scraped.
- ``batch_rows{stage}``: rows per model call.
- ``shed_total{reason}``: requests refused for load (``queue_full``,
  ``shutting_down``, ``timeout``, ``teacher_unavailable``).
- ``teacher_errors_total{kind}``: teacher failures (``timeout``,
  ``connection``, ``http_5xx``, ``bad_response``, ``queue_full``,
  ``circuit_open``, ``model_error``).
- ``threshold{kind}``: the live threshold (``set``) and the one in use
  (``effective``, differs under the load-aware control).
- ``load_allowed_share``: the teacher share the load-aware control allows.
"""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self, window: int = 2048) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ebjr_requests", "Answered requests by HTTP status", ["status"], registry=r
        )
        self.rows = Counter(
            "ebjr_rows", "Rows by the model that answered them", ["answered_by"], registry=r
        )
        self.teacher_fraction = Gauge(
            "ebjr_teacher_fraction", "Share of recent rows routed to the teacher", registry=r
        )
        self.latency = Histogram(
            "ebjr_request_latency_seconds",
            "Request latency by path",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_rows = Gauge("ebjr_queue_rows", "Rows waiting per stage", ["stage"], registry=r)
        self.batch_rows = Histogram(
            "ebjr_batch_rows", "Rows per model call", ["stage"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.shed = Counter("ebjr_shed", "Requests refused for load", ["reason"], registry=r)
        self.disconnects = Counter(
            "ebjr_client_disconnects", "Requests whose client went away before the answer",
            registry=r)
        self.teacher_errors = Counter(
            "ebjr_teacher_errors", "Teacher failures", ["kind"], registry=r
        )
        self.threshold = Gauge("ebjr_threshold", "Routing threshold", ["kind"], registry=r)
        self.allowed_share = Gauge(
            "ebjr_load_allowed_share", "Teacher share the load-aware control allows", registry=r
        )
        self.allowed_share.set(1.0)
        self.shadow_rows = Counter(
            "ebjr_shadow_rows", "Rows the student answered, also sent to the teacher off the "
            "response path (sent, answered)", ["outcome"], registry=r)
        self.shadow_batches_left_out = Counter(
            "ebjr_shadow_batches_left_out", "Batches left out of the guarantee monitor",
            ["reason"], registry=r)
        self.guarantee_drop_upper = Gauge(
            "ebjr_guarantee_drop_upper", "Upper confidence bound of the disagreement with the "
            "teacher (valid at every time)", registry=r)
        self.guarantee_alarm = Gauge(
            "ebjr_guarantee_alarm", "1 once the monitor found the disagreement above eps",
            registry=r)
        self.guarantee_e_value = Gauge(
            "ebjr_guarantee_e_value", "The live test's e-value (alarm at 1/delta)", registry=r)
        self._recent: collections.deque[tuple[int, int]] = collections.deque()
        self._recent_rows = 0
        self._recent_routed = 0
        self._window = window

    def observe_routing(self, rows: int, routed: int) -> None:
        """Record one student batch's rows and routed rows (for the recent teacher share)."""
        self._recent.append((rows, routed))
        self._recent_rows += rows
        self._recent_routed += routed
        while self._recent_rows - self._recent[0][0] >= self._window:
            r, k = self._recent.popleft()
            self._recent_rows -= r
            self._recent_routed -= k
        self.teacher_fraction.set(self.recent_teacher_fraction())

    def recent_teacher_fraction(self) -> float:
        return self._recent_routed / self._recent_rows if self._recent_rows else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
