"""The one retry policy of remote calls (tenacity): which failures are retried, and how long
to wait between attempts.

A call is tried ``1 + retries`` times. Connection errors, timeouts and 5xx
(or 429) answers are raised as :class:`Retryable` and retried after an
exponential back-off of 0.05 s, 0.1 s, 0.2 s ... capped at 0.5 s; anything
else ends the call at once. The one v2 client,
:class:`~ebjr.adapters.remote.V2Client`, uses it (and with it the server's
remote teacher and the blocking :class:`~ebjr.adapters.remote.RemoteV2Adapter`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

__all__ = ["Retryable", "async_attempts", "attempts"]


class Retryable(Exception):
    """A failure worth another attempt; ``kind`` names it (``timeout``, ``connection``,
    ``http_5xx``), ``detail`` says what happened."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _policy(retries: int, on_retry: Callable[[Retryable], None] | None) -> dict[str, Any]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if on_retry is not None and isinstance(exc, Retryable):
            on_retry(exc)

    return {
        "stop": stop_after_attempt(max(0, int(retries)) + 1),
        "wait": wait_exponential(multiplier=0.05, min=0.05, max=0.5),
        "retry": retry_if_exception_type(Retryable),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def attempts(retries: int, on_retry: Callable[[Retryable], None] | None = None,
             sleep: Callable[[float], None] | None = None) -> Retrying:
    """``for attempt in attempts(n): with attempt: ...``; the last :class:`Retryable` is
    re-raised when every attempt failed. ``on_retry`` sees each failure that is retried;
    ``sleep`` waits between attempts (default ``time.sleep``; a test's clock)."""
    policy = _policy(retries, on_retry)
    if sleep is not None:
        policy["sleep"] = sleep
    return Retrying(**policy)


def async_attempts(
    retries: int, on_retry: Callable[[Retryable], None] | None = None
) -> AsyncRetrying:
    """The same policy for ``async for attempt in async_attempts(n): with attempt: ...``."""
    return AsyncRetrying(**_policy(retries, on_retry))
