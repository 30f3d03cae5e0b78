"""Any Python callable ``batch -> logits``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ebjr._utils.arrays import Array
from ebjr.adapters.base import Adapter
from ebjr.exceptions import InputError

__all__ = ["CallableAdapter"]


class CallableAdapter(Adapter):
    """Wrap a function that maps a batch to logits of shape ``(n, C)``.

    Args:
        fn: the function. Its output may be a numpy array or a torch tensor.
        returns_log_probs: set when ``fn`` returns log-probabilities.
    """

    kind = "callable"

    def __init__(self, fn: Callable[[Any], Array], *, returns_log_probs: bool = False) -> None:
        if not callable(fn):
            raise InputError(f"expected a callable batch -> logits, got {type(fn).__name__}")
        self.fn = fn
        self.returns_log_probs = returns_log_probs

    def forward(self, batch: Any) -> Array:
        return self.fn(batch)

    def __repr__(self) -> str:
        return f"CallableAdapter({getattr(self.fn, '__name__', type(self.fn).__name__)})"
