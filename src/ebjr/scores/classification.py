"""Routing scores: pure functions of a student's logits.

Sign convention (shared by the whole library): every function here except
:func:`free_energy` returns a **score where higher means the student is fit to
answer**. :func:`free_energy` returns the paper's ``F`` itself (eq. 3), whose
*negative* is the energy router's score: a low ``-F`` means the input is
unfamiliar to the student.

All functions take an array of shape ``(n, C)`` (numpy array, torch tensor or
any array-API array), return shape ``(n,)`` in the same namespace, dtype and
device, and never copy data to the host.

>>> import numpy as np
>>> logits = np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
>>> np.round(free_energy(logits), 3)
array([-4.036, -2.099])
>>> np.round(softmax_confidence(logits), 4)
array([0.9647, 0.3333])
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import is_torch_array

from ebjr._utils.arrays import Array, check_logits, namespace
from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError

__all__ = [
    "free_energy",
    "log_softmax",
    "logsumexp",
    "looks_like_log_probabilities",
    "margin",
    "max_logit",
    "negative_entropy",
    "softmax",
    "softmax_confidence",
    "softmax_logsumexp",
    "specialized_free_energy",
]

#: A row whose logsumexp is within this distance of 0 looks like log-probabilities.
LOG_PROB_ATOL = 1e-3


def logsumexp(x: Array, *, validate: bool = True) -> Array:
    """Row-wise ``log(sum(exp(x)))``, stable for any finite magnitude.

    Args:
        x: shape ``(n, C)``.
        validate: check shape and finiteness first (switch off on hot paths
            whose input was already checked).

    Returns:
        Shape ``(n,)``.
    """
    if validate:
        x = check_logits(x, min_classes=1)
    if is_torch_array(x):  # torch's own logsumexp: one call, not five (the router's hot path)
        return x.logsumexp(dim=1)
    xp = namespace(x)
    m = xp.max(x, axis=1, keepdims=True)
    with np.errstate(over="ignore"):  # x - m below -max float is -inf: exp gives its 0
        return m[:, 0] + xp.log(xp.sum(xp.exp(x - m), axis=1))


def log_softmax(x: Array, *, validate: bool = True) -> Array:
    """Row-wise log-softmax, shape ``(n, C)``."""
    if validate:
        x = check_logits(x)
    if is_torch_array(x):
        return x.log_softmax(dim=1)
    xp = namespace(x)
    with np.errstate(over="ignore"):  # a finite row's far tail is -inf: probability 0
        z = x - xp.max(x, axis=1, keepdims=True)  # never add the max back: no rounding at 1e17
        return z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))


def softmax(x: Array, *, validate: bool = True) -> Array:
    """Row-wise softmax probabilities, shape ``(n, C)``."""
    if is_torch_array(x):
        return (check_logits(x) if validate else x).softmax(dim=1)
    xp = namespace(x)
    return xp.exp(log_softmax(x, validate=validate))


def _check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError) as exc:
        raise InputError(f"temperature must be a positive number, got {temperature!r}") from exc
    if not (t > 0.0 and math.isfinite(t)):
        raise InputError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def free_energy(logits: Array, temperature: float = 1.0, *, validate: bool = True) -> Array:
    """The student's free energy ``F(x) = -T * logsumexp(logits / T)`` (paper eq. 3).

    This is ``F`` itself, **not** a score: the energy router's score is ``-F``
    (higher = the input is more familiar to the student). Stable for logits of
    any finite magnitude (the row maximum is subtracted first).

    Args:
        logits: raw student logits, shape ``(n, C)``.
        temperature: ``T > 0``; the paper uses 1.
        validate: check shape and finiteness first.

    Returns:
        ``F``, shape ``(n,)``, same namespace, dtype and device as ``logits``.

    >>> import numpy as np
    >>> float(free_energy(np.array([[1e4, 0.0]]))[0])
    -10000.0
    """
    t = _check_temperature(temperature)
    if validate:
        logits = check_logits(logits)
    if t == 1.0:
        return -logsumexp(logits, validate=False)
    return -t * logsumexp(logits / t, validate=False)


def specialized_free_energy(
    logits: Array, other_index: int, temperature: float = 1.0, *, validate: bool = True
) -> Array:
    """Free energy over every class except ``other`` (the paper's eq. 17).

    A specialized student has ``C`` real classes plus one ``other`` class; its
    energy is computed over the real classes only.

    Args:
        logits: specialized student logits, shape ``(n, C + 1)``.
        other_index: the column of the ``other`` class (negative counts from the end).
        temperature: ``T > 0``.
    """
    if validate:
        logits = check_logits(logits, min_classes=3)
    c = logits.shape[1]
    check_int(other_index, "other_index", -c, c - 1)
    xp = namespace(logits)
    keep = [j for j in range(c) if j != other_index % c]
    real = xp.take(logits, xp.asarray(keep, device=getattr(logits, "device", None)), axis=1)
    return free_energy(real, temperature, validate=False)


def softmax_confidence(logits: Array, *, validate: bool = True) -> Array:
    """Maximum softmax probability per row (higher = more confident), shape ``(n,)``."""
    xp = namespace(logits)
    if validate:
        logits = check_logits(logits)
    lse = logsumexp(logits, validate=False)
    return xp.exp(xp.max(logits, axis=1) - lse)


def negative_entropy(logits: Array, *, validate: bool = True) -> Array:
    """``-H(softmax(logits))`` per row (higher = more confident), shape ``(n,)``.

    Lies in ``[-log C, 0]``. Stable for any finite logits: a class whose
    probability underflows to 0 adds ``0 * log 0 = 0`` (not ``0 * -inf = NaN``).
    """
    xp = namespace(logits)
    logp = log_softmax(logits, validate=validate)
    p = xp.exp(logp)
    zero = xp.zeros_like(p)
    return xp.sum(xp.where(p > 0, p * xp.where(p > 0, logp, zero), zero), axis=1)


def max_logit(logits: Array, *, validate: bool = True) -> Array:
    """Largest logit per row (higher = more confident), shape ``(n,)``."""
    xp = namespace(logits)
    if validate:
        logits = check_logits(logits)
    return xp.max(logits, axis=1)


def margin(logits: Array, *, validate: bool = True) -> Array:
    """Top-1 minus top-2 softmax probability per row, in ``[0, 1]``, shape ``(n,)``."""
    xp = namespace(logits)
    p = xp.sort(softmax(logits, validate=validate), axis=1)
    return p[:, -1] - p[:, -2]


def softmax_logsumexp(logits: Array, *, validate: bool = True) -> Array:
    """``logsumexp(softmax(logits))``: the score the paper's released code routes on.

    The code that accompanied the EBJR paper applies logsumexp to the softmax
    *probabilities*, not to the logits. The result is a bounded confidence
    score, between ``log C + 1/C`` (uniform) and ``log(C - 1 + e)`` (one-hot),
    that grows with how peaked the probabilities are. It is **not** the free
    energy of eq. 3; it is provided to reproduce that code's numbers.
    """
    return logsumexp(softmax(logits, validate=validate), validate=False)


def looks_like_log_probabilities(logits: Array, atol: float = LOG_PROB_ATOL) -> bool:
    """True if every row's logsumexp is within ``atol`` of 0 (rows are log-probabilities).

    On such rows the free energy is 0 everywhere and cannot route.
    """
    xp = namespace(logits)
    lse = logsumexp(logits)
    return bool(xp.all(xp.abs(lse) <= atol))
