"""Every public error of ebjr.

Each error subclasses the builtin that an existing ``except`` clause would
expect (``ValueError`` for bad values, ``KeyError`` for unknown names,
``ImportError`` for a missing extra), and its message says what was expected,
what arrived and, where there is one, how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "EBJRError",
    "InputError",
    "LogProbabilityInputError",
    "MissingDependencyError",
    "ModelError",
    "NotFittedError",
    "Overloaded",
    "TargetUnreachableError",
    "TeacherUnavailable",
    "UnknownNameError",
    "UnknownRouterError",
]


class EBJRError(Exception):
    """Base class of every error raised on purpose by ebjr."""


class InputError(EBJRError, ValueError):
    """An array, file or argument does not have the shape, type or values expected."""


class LogProbabilityInputError(InputError):
    """The free energy was asked of log-probabilities, on which it is constant.

    For rows that already went through ``log_softmax``, ``logsumexp`` is 0 for
    every row, so ``-F`` carries no information and routing on it would send
    everything (or nothing) to the teacher. Use raw logits, or a router that is
    meaningful on probabilities (softmax, entropy, margin).
    """


class UnknownNameError(InputError, KeyError):
    """A name that no registry entry has (a router, a target kind, a model kind); the
    message lists the registered names."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class UnknownRouterError(UnknownNameError):
    """A router name that is not registered."""


class NotFittedError(EBJRError, ValueError, AttributeError):
    """A fitted-only attribute or method was used before ``fit``."""


class TargetUnreachableError(EBJRError, ValueError):
    """No threshold on the calibration data meets the requested target."""


class ModelError(EBJRError, RuntimeError):
    """A model failed on inputs that passed every check: it raised, or emitted NaN or infinity.

    The fault is the model's, not the caller's; the server answers 502 naming only
    ``model`` (the role), and logs the message (which may describe the model's insides).
    """

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class Overloaded(EBJRError, RuntimeError):
    """A queue is full (or shutting down): retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0, *, closing: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.closing = closing


class TeacherUnavailable(EBJRError, RuntimeError):
    """The teacher (or, in a cascade, a later ``stage``) could not answer (down, slow,
    overloaded, or broken); ``kind`` says how."""

    def __init__(self, message: str, kind: str, retry_after: float = 1.0, *,
                 stage: str = "teacher") -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.stage = stage


class BundleError(EBJRError, ValueError):
    """A bundle file is missing, malformed, of an unknown version, or points at a bad file."""


class MissingDependencyError(EBJRError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def missing_dependency(module: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error for a missing optional module.

    Args:
        module: the importable module name that failed to import.
        extra: the ebjr pip extra that installs it.
        purpose: what the user tried to do, for the message.
    """
    return MissingDependencyError(
        f"{purpose} needs the optional dependency {module!r}, which is not installed; "
        f"install it with: pip install 'ebjr[{extra}]'"
    )
