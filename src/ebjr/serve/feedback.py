"""Labels that arrive later: ``POST /v2/models/{name}/feedback {"id", "labels"}``.

An answered request waits for its labels in a bounded :class:`FeedbackStore`, by its id.
When they come, each row gives the signed loss of the offline guarantee (``joint wrong -
teacher wrong``), known where the teacher's answer is: the rows it answered, and the
shadowed rows (weighted by ``1 / p`` of their own probability). That feeds the monitor's
labelled test (:meth:`~ebjr.calibration.monitor.GuaranteeMonitor.update_labels`).

- In one process (:class:`LocalFeedback`) the store holds the answers with a handle on
  what their batch's shadows find (they finish after the response).
- On Ray, an ingress replica sends its answers, once their shadows are in, to the control
  deployment about once a second (``ebjr.ray``); the control keeps the application's
  store, so a label may reach any replica. It uses the same :class:`Labelled` records.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from ebjr.exceptions import InputError, Overloaded

__all__ = ["FeedbackStore", "Labelled", "LocalFeedback", "NotWaiting", "Pending",
           "check_labels", "labelled", "signed_loss"]


class NotWaiting(LookupError):
    """No answered request with this id is waiting for labels (a 404)."""


class Pending(NamedTuple):
    """An answered request whose batch's shadows may still be out: its classes, and the
    batch's :class:`~ebjr.serve.shadow.BatchShadow` with the request's rows in it
    (``found, a, b``)."""

    predictions: np.ndarray
    shadow: tuple[Any, int, int]


class Labelled(NamedTuple):
    """What labels for one answered request need, per row: its class, whether the student
    answered, whether it was shadowed, the teacher's class where known (else -1), and the
    shadow probability. ``usable`` is False if its batch was left out of the monitor."""

    predictions: np.ndarray
    student: np.ndarray
    shadowed: np.ndarray
    teacher_classes: np.ndarray
    shadow_prob: np.ndarray
    usable: bool


def pending(answer: Any) -> Pending | None:
    """The record an answer leaves for its labels (``None``: it had no shadow handle)."""
    if getattr(answer, "shadow", None) is None:
        return None
    return Pending(np.array(answer.predictions, dtype=np.int64), answer.shadow)


def labelled(rec: Pending) -> Labelled:
    """``rec`` once its batch's shadows are in (``rec.shadow[0].done`` is set)."""
    found, a, b = rec.shadow
    return Labelled(rec.predictions, found.student[a:b], found.shadowed[a:b],
                    found.teacher_classes[a:b], found.shadow_prob[a:b], found.usable)


def check_labels(request_id: str, predictions: np.ndarray, labels: Any) -> np.ndarray:
    """``labels`` as class indices, one per row of the request.

    Raises:
        InputError: naming how many were expected and what arrived.
    """
    got = np.asarray(labels, dtype=np.int64).reshape(-1)
    if got.shape != predictions.shape or (got < 0).any():
        raise InputError(f"labels: expected {predictions.shape[0]} class indices >= 0 (one "
                         f"per row of request {request_id!r}), got {len(got)}"
                         + (" with negatives" if (got < 0).any() else ""))
    return got


def signed_loss(rec: Labelled, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arguments of ``update_labels`` for one labelled request: ``student, shadowed,
    joint_wrong, teacher_wrong, shadow_prob``.

    Raises:
        InputError: if the request's batch was left out of the monitor.
    """
    if not rec.usable:
        raise InputError("this request's batch was left out of the monitor (its shadows "
                         "could not go), so its labels cannot be counted")
    joint_wrong = rec.predictions != labels
    # a routed row's answer is the teacher's; elsewhere the teacher's is known if shadowed
    teacher_wrong = np.where(rec.student & ~rec.shadowed, joint_wrong,
                             rec.teacher_classes != labels)
    return rec.student, rec.shadowed, joint_wrong, teacher_wrong, rec.shadow_prob


class FeedbackStore:
    """Records waiting for labels, by request id: at most ``capacity`` requests and
    ``max_rows`` rows (the oldest forgotten first); each is counted once."""

    def __init__(self, capacity: int = 65_536, max_rows: int = 1 << 20) -> None:
        self.capacity, self.max_rows = capacity, max_rows
        self._records: OrderedDict[str, Any] = OrderedDict()
        self._rows = 0

    def put(self, request_id: str | None, rec: Any) -> None:
        if request_id is None or rec is None:
            return
        self.pop(request_id)
        self._records[request_id] = rec
        self._rows += rec.predictions.size
        while len(self._records) > self.capacity or self._rows > self.max_rows:
            _, old = self._records.popitem(last=False)
            self._rows -= old.predictions.size

    def get(self, request_id: str) -> Any:
        """The record of ``request_id``, kept.

        Raises:
            NotWaiting: if none is waiting.
        """
        rec = self._records.get(request_id)
        if rec is None:
            raise NotWaiting(f"no answered request {request_id!r} is waiting for labels "
                             "(unknown, already counted, or older than the last "
                             f"{self.capacity} requests)")
        return rec

    def pop(self, request_id: str) -> Any:
        """The record of ``request_id`` (forgotten from now on); ``None`` if unknown."""
        rec = self._records.pop(request_id, None)
        if rec is not None:
            self._rows -= rec.predictions.size
        return rec


class LocalFeedback:
    """Labels for the answers of this process, fed to ``sink`` (a
    :class:`~ebjr.serve.shadow.LocalGuarantee`)."""

    def __init__(self, sink: Any, store: FeedbackStore | None = None) -> None:
        self.sink = sink
        self.store = store or FeedbackStore()

    def put(self, request_id: str | None, answer: Any) -> None:
        self.store.put(request_id, pending(answer))

    async def label(self, request_id: str, labels: Any, wait_s: float = 2.0) -> None:
        """Count the labels of request ``request_id``.

        Raises:
            NotWaiting: no such request is waiting.
            InputError: wrong labels, or its batch was left out of the monitor.
            Overloaded: its shadows are not in yet (retry).
        """
        rec: Pending = self.store.get(request_id)
        got = check_labels(request_id, rec.predictions, labels)
        try:
            await asyncio.wait_for(rec.shadow[0].done.wait(), wait_s)
        except TimeoutError:
            raise Overloaded("this request's shadow answers are not in yet; retry", 1.0
                             ) from None
        self.store.pop(request_id)
        await self.sink.feed_labels(*signed_loss(labelled(rec), got))
