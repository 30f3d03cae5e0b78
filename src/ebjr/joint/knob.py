"""The live threshold that every joint shell exposes: read once per batch, set from any thread."""

from __future__ import annotations

import logging
import threading

from ebjr.routing import check_threshold

__all__ = ["LiveThreshold"]

log = logging.getLogger("ebjr.joint")


class LiveThreshold:
    """Mixin: ``threshold`` (read it once per batch) and a thread-safe :meth:`set_threshold`.

    Subclasses call ``LiveThreshold.__init__(self, threshold)``; ``_lock`` is
    theirs to share for their own counters.
    """

    def __init__(self, threshold: float) -> None:
        self._threshold = check_threshold(threshold)
        self._lock = threading.Lock()

    @property
    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, threshold: float) -> float:
        """Change the threshold for every batch that starts from now on; returns the old one."""
        t = check_threshold(threshold)
        with self._lock:
            old, self._threshold = self._threshold, t
        log.info("threshold changed from %r to %r", old, t)
        return old
