"""One map from an exception to its HTTP answer: status, message and Retry-After.

Every error the service answers with is ``{"error": message, "request_id": id}``.
Client mistakes are 4xx and name what was expected and what arrived; a model
that fails on valid input is 502 naming only which model; a teacher that
cannot answer under the fallback policy ``error`` is 503 naming only how it
failed (a remote teacher's URL and answer, like a model's exception, may
describe the inside of the deployment: they go to the server log, under the
request id); a server that cannot answer now is 429 or 503 with
``Retry-After``. Anything unexpected is a 500 whose details stay in the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ebjr.exceptions import (
    EBJRError,
    InputError,
    ModelError,
    Overloaded,
    TeacherUnavailable,
)

__all__ = ["STATUS", "ErrorAnswer", "answer_for"]

#: exception -> status, most specific first (documented in docs/serve.md)
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (InputError, 400),
    (ModelError, 502),
    (TeacherUnavailable, 503),
    (Overloaded, 429),  # 503 while shutting down
    (EBJRError, 400),
)


@dataclass(frozen=True)
class ErrorAnswer:
    """An error response: ``status``, the ``message`` and, for a retry, ``retry_after`` seconds."""

    status: int
    message: str
    retry_after: float | None = None

    @property
    def headers(self) -> dict[str, str] | None:
        if self.retry_after is None:
            return None
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def answer_for(exc: BaseException) -> ErrorAnswer:
    """The answer to give for ``exc``."""
    if isinstance(exc, Overloaded):
        return ErrorAnswer(503 if exc.closing else 429, str(exc), exc.retry_after)
    if isinstance(exc, TeacherUnavailable):
        return ErrorAnswer(503, f"the {exc.stage} could not answer ({exc.kind}) and the fallback "
                           "policy is 'error'; retry later", exc.retry_after)
    if isinstance(exc, ModelError):
        return ErrorAnswer(502, f"model fault, not a bad request: the {exc.model or 'model'} "
                           "failed on this batch; the server log has the details")
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return ErrorAnswer(status, str(exc))
    return ErrorAnswer(500, "internal error; the server log has the details")
