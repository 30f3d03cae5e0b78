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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebjr._arrays import Array, check_logits, namespace
from ebjr.exceptions import InputError

__all__ = [
    "free_energy",
    "log_softmax",
    "logsumexp",
    "looks_like_log_probabilities",
    "margin",
    "max_logit",
    "negative_entropy",
    "regression_free_energy",
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
    xp = namespace(x)
    m = xp.max(x, axis=1, keepdims=True)
    return m[:, 0] + xp.log(xp.sum(xp.exp(x - m), axis=1))


def log_softmax(x: Array, *, validate: bool = True) -> Array:
    """Row-wise log-softmax, shape ``(n, C)``."""
    if validate:
        x = check_logits(x)
    return x - logsumexp(x, validate=False)[:, None]


def softmax(x: Array, *, validate: bool = True) -> Array:
    """Row-wise softmax probabilities, shape ``(n, C)``."""
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
    if (
        isinstance(other_index, bool)
        or not isinstance(other_index, int)
        or not (-c <= other_index < c)
    ):
        raise InputError(f"other_index must be a column in [-{c}, {c}), got {other_index!r}")
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

    Lies in ``[-log C, 0]``.
    """
    xp = namespace(logits)
    logp = log_softmax(logits, validate=validate)
    return xp.sum(xp.exp(logp) * logp, axis=1)


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


@dataclass(frozen=True)
class RegressionEnergy:
    """An importance-sampling estimate of a regressor's free energy, per input.

    Attributes:
        free_energy: ``F(x) = -log integral exp(s(x, y)) dy``, shape ``(n,)``.
        std_error: the estimate's standard error (delta method on the mean
            importance weight), shape ``(n,)``; it shrinks like ``1/sqrt(K)``.
        ess: effective sample size of the weights, ``(sum w)^2 / sum w^2``,
            out of ``K``; a small value says the proposal misses the density.
        samples: the drawn targets, ``(n, K)``.
        log_weights: ``s(x, y_k) - log q(y_k)`` per sample, ``(n, K)``; their
            softmax over ``K`` gives self-normalised moments of ``p(y | x)``.
    """

    free_energy: np.ndarray
    std_error: np.ndarray
    ess: np.ndarray
    samples: np.ndarray = field(repr=False, compare=False)
    log_weights: np.ndarray = field(repr=False, compare=False)


def regression_free_energy(
    score_fn: Callable[[Any, np.ndarray], Any],
    x: Any,
    center: Any,
    *,
    scales: tuple[float, ...] = (0.1, 0.5, 2.0),
    n_samples: int = 1024,
    seed: int | None = 0,
) -> RegressionEnergy:
    """Free energy of an energy-based regressor, ``-log integral exp(s(x, y')) dy'``.

    Estimated by Monte Carlo importance sampling (Gustafsson et al., ECCV
    2020): ``K = n_samples`` targets per input are drawn from an equal-weight
    mixture of Gaussians centred on ``center`` (the model's prediction) with
    standard deviations ``scales``, and ``Z = mean_k exp(s(x, y_k)) / q(y_k)``
    is averaged in log space. Scalar targets; the draw is seeded.

    Args:
        score_fn: ``score_fn(x, y)`` with ``y`` of shape ``(n, K)`` returns the
            unnormalised log-density ``s(x, y)`` of shape ``(n, K)`` (numpy or
            torch).
        x: the inputs, passed through to ``score_fn`` unchanged.
        center: the proposal's centre per input, shape ``(n,)``.
        scales: the mixture's standard deviations, in target units. Cover the
            model's density: the smallest near its width, the largest beyond
            its tails (check ``ess``).
        n_samples: ``K``.
        seed: seed of the draw (``None``: fresh entropy).

    >>> # s(x, y) = -(y - x)^2 / 2 integrates to sqrt(2 pi), so F = -log sqrt(2 pi);
    >>> # with the proposal equal to the normalised density, every weight is the same
    >>> est = regression_free_energy(lambda x, y: -0.5 * (y - x[:, None]) ** 2,
    ...                              np.zeros(2), np.zeros(2), scales=(1.0,), n_samples=64)
    >>> bool(np.allclose(est.free_energy, -0.5 * np.log(2 * np.pi)))
    True
    >>> bool(est.std_error.max() < 1e-12)
    True
    """
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    sig = np.asarray(scales, dtype=np.float64).reshape(-1)
    if sig.size == 0 or not np.all(sig > 0) or not np.all(np.isfinite(sig)):
        raise InputError(f"scales must be positive finite standard deviations, got {scales!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise InputError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if not np.isfinite(c).all():
        raise InputError("center contains NaN or infinite values")
    n, k, m = c.shape[0], n_samples, sig.shape[0]
    rng = np.random.default_rng(seed)
    comp = rng.integers(m, size=(n, k))
    y = c[:, None] + sig[comp] * rng.standard_normal((n, k))
    # log q(y): equal-weight mixture of N(c, sig_m^2)
    z = (y[:, :, None] - c[:, None, None]) / sig[None, None, :]
    log_comp = -0.5 * z**2 - np.log(sig)[None, None, :] - 0.5 * math.log(2 * math.pi)
    log_q = _np_logsumexp(log_comp, axis=2) - math.log(m)
    s_val = np.asarray(_as_numpy(score_fn(x, y)), dtype=np.float64)
    if s_val.shape != (n, k):
        raise InputError(f"score_fn must return shape ({n}, {k}), got {s_val.shape}")
    if np.isnan(s_val).any() or (s_val == np.inf).any():
        raise InputError("score_fn returned NaN or +inf")
    log_w = s_val - log_q
    top = log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w - top)  # in (0, 1], the largest is 1
    mean_w = w.mean(axis=1)
    log_z = np.log(mean_w) + top[:, 0]
    se = np.sqrt(w.var(axis=1, ddof=1) / k) / mean_w
    ess = w.sum(axis=1) ** 2 / (w**2).sum(axis=1)
    return RegressionEnergy(-log_z, se, ess, y, log_w)


def _np_logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.log(np.exp(a - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _as_numpy(v: Any) -> Any:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v
