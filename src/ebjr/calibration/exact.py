"""An exact unconditional test for the mean of a loss in {-1, 0, +1}.

The signed loss of :mod:`ebjr.calibration.guarantee` is ``+1`` on a row the student
answers wrongly where the teacher is right, ``-1`` on a row the student
answers rightly where the teacher is wrong, and ``0`` elsewhere. Its mean,
``p_plus - p_minus``, is exactly the accuracy drop vs the teacher. In a
sample of ``n`` rows, with ``a`` losses of ``+1`` and ``b`` of ``-1``,
``(a, b, n - a - b)`` is trinomial, and the null to reject is
``H0: p_plus - p_minus > eps``.

The statistic is Tango's restricted score statistic for a difference of
paired proportions (Tango, Stat Med 1998)::

    Z = (a - b - n eps) / sqrt(n (2 q + eps - eps^2))

where ``q`` is the maximum-likelihood estimate of ``p_minus`` under the
boundary ``p_plus = p_minus + eps``: the positive root of
``2 n q^2 - B q - b eps (1 - eps) = 0`` with
``B = a (1 - eps) + b (1 - 3 eps) - 2 (n - a - b) eps``. Small ``Z`` is
evidence against the null; the test rejects iff ``Z <= -z*``.

The normal quantile is not a valid ``z*``: the trinomial is discrete and
skewed when discordant rows are rare. Instead ``z*`` is calibrated so that
the test's **exact** size, the probability of rejecting computed by summing
the trinomial over the rejection region, is at most ``delta`` at every value
of the nuisance ``q`` on the null's boundary (an exact unconditional test in
the manner of Suissa and Shuster, 1985; Berger and Boos, 1994). Deeper in the
null (``p_plus - p_minus > eps``) the rejection probability is smaller, which
the tests check. The size at one ``q`` is computed without enumerating the
``O(n^2)`` region: given ``a``, ``b`` is binomial, and for fixed ``a`` the
region is ``b >= b_min(a)``, so the size is a sum over ``a`` of binomial
tails. Terms below ``1e-15`` are dropped and their mass added back, so the
computed size is an upper bound of the true one.

>>> cal = critical_value(5000, 0.005, 0.05)
>>> round(cal.z, 3), cal.size <= 0.05
(1.655, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError

__all__ = [
    "TangoCalibration",
    "critical_value",
    "exact_pvalue",
    "exact_size",
    "rejection_probability",
    "tango_statistic",
]

#: binomial mass dropped from each end of a window (and added back to the size)
_TAIL = 1e-15


def _check(n: int, eps: float) -> None:
    check_int(n, "n", 1)
    if not 0.0 <= eps < 1.0:
        raise InputError(f"eps must lie in [0, 1), got {eps!r}")


def tango_statistic(a: np.ndarray, b: np.ndarray, n: int, eps: float) -> np.ndarray:
    """Tango's score statistic of ``H0: p_plus - p_minus = eps`` from counts ``a``, ``b``.

    ``a`` and ``b`` broadcast; both in ``[0, n]`` with ``a + b <= n``. Where the
    variance estimate is 0 (only when ``eps = 0`` and ``a = b = 0``) the
    statistic is 0: no evidence either way.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = n - a - b
    big_b = a * (1 - eps) + b * (1 - 3 * eps) - 2 * c * eps
    q = (big_b + np.sqrt(big_b * big_b + 8 * n * b * eps * (1 - eps))) / (4 * n)
    var = n * (2 * q + eps - eps * eps)
    num = a - b - n * eps
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return z


@lru_cache(maxsize=8)
def _b_min_table(n: int, eps: float, z: float) -> np.ndarray:
    """:func:`_b_min` for every ``a`` in ``[0, n]`` (it does not depend on the nuisance)."""
    table = _b_min(np.arange(n + 1, dtype=np.int64), n, eps, z)
    table.setflags(write=False)
    return table


def _b_min(a: np.ndarray, n: int, eps: float, z: float) -> np.ndarray:
    """Per ``a``: the smallest ``b`` in ``[0, n - a]`` with ``Z(a, b) <= -z`` (``n - a + 1``: none).

    The statistic falls as ``b`` grows with ``a`` fixed, so the region is an
    upper set in ``b`` and bisection finds its edge.
    """
    lo = np.zeros_like(a)
    hi = n - a  # inclusive upper end of the search
    rejects_hi = tango_statistic(a, hi, n, eps) <= -z
    hi = np.where(rejects_hi, hi, n - a + 1)  # no b rejects: answer n - a + 1
    rejects_lo = tango_statistic(a, lo, n, eps) <= -z
    # invariant on the rows still searched: Z(a, lo) > -z and Z(a, hi) <= -z
    lo_ok = ~rejects_lo & rejects_hi
    result = np.where(rejects_lo, 0, hi)
    lo_s, hi_s = lo[lo_ok], hi[lo_ok]
    a_s = a[lo_ok]
    while np.any(hi_s - lo_s > 1):
        mid = (lo_s + hi_s) // 2
        rej = tango_statistic(a_s, mid, n, eps) <= -z
        hi_s = np.where(rej, mid, hi_s)
        lo_s = np.where(rej, lo_s, mid)
    result[lo_ok] = hi_s
    return result


def rejection_probability(n: int, eps: float, z: float, q: float, excess: float = 0.0) -> float:
    """Exact probability that ``Z <= -z`` when ``p_minus = q`` and ``p_plus = q + eps + excess``.

    ``excess = 0`` is the null's boundary; ``excess > 0`` lies deeper in the
    null. Binomial terms below ``1e-15`` are dropped and their mass added
    back, so the result is an upper bound, tight to about ``1e-14``.
    """
    _check(n, eps)
    p_plus = q + eps + excess
    if q < 0 or q + p_plus > 1 + 1e-12:
        raise InputError(f"p_minus = {q!r}, p_plus = {p_plus!r} is not a trinomial")
    p_plus = min(p_plus, 1.0)
    a, pa = _binomial_window(n, p_plus)
    dropped = max(0.0, 1.0 - float(pa.sum()))
    rest = 1.0 - p_plus
    r = 0.0 if rest <= 0 else min(1.0, q / rest)
    bmin = _b_min_table(int(n), float(eps), float(z))[a]
    m = n - a
    # P(b >= bmin | a) for b ~ Binomial(n - a, r); bdtrc(k, m, r) = P(b > k)
    with np.errstate(invalid="ignore"):
        tail = special.bdtrc(np.maximum(bmin - 1, 0), m, r)
    pb = np.where(bmin <= 0, 1.0, np.where(bmin > m, 0.0, tail))
    if r == 0.0:
        pb = (bmin <= 0).astype(np.float64)
    elif r == 1.0:
        pb = (bmin <= m).astype(np.float64)
    return min(1.0, float(np.dot(pa, pb)) + dropped)


def _binomial_window(n: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Values of Binomial(n, p) holding all but about ``1e-15`` of its mass, and their pmf."""
    if p <= 0.0 or p >= 1.0:
        k = 0 if p <= 0.0 else n
        return np.array([k], dtype=np.int64), np.ones(1)
    sd = math.sqrt(n * p * (1 - p))
    lo = max(0, math.floor(n * p - 9 * sd - 40))
    hi = min(n, math.ceil(n * p + 9 * sd + 40))
    k = np.arange(lo, hi + 1, dtype=np.int64)
    log_pmf = (
        special.gammaln(n + 1)
        - special.gammaln(k + 1)
        - special.gammaln(n - k + 1)
        + special.xlogy(k, p)
        + special.xlog1py(n - k, -p)
    )
    pmf = np.exp(log_pmf)
    return k[pmf > _TAIL], pmf[pmf > _TAIL]


def _nuisance_grid(eps: float, points: int) -> np.ndarray:
    """Values of ``p_minus`` on the boundary, dense near both ends (where the size peaks)."""
    top = (1 - eps) / 2
    u = np.linspace(0.0, 1.0, points)
    return top * (1 - np.cos(np.pi * u)) / 2


def _max_over(n: int, eps: float, z: float, qs: np.ndarray) -> tuple[float, float]:
    sizes = np.array([rejection_probability(n, eps, z, float(q)) for q in qs])
    k = int(np.argmax(sizes))
    return float(sizes[k]), float(qs[k])


def _refined(
    n: int, eps: float, z: float, grid: np.ndarray, top: int
) -> tuple[np.ndarray, float, float]:
    """Sizes on ``grid``, then 21 points between the neighbours of the ``top`` largest."""
    sizes = np.array([rejection_probability(n, eps, z, float(q)) for q in grid])
    local = [
        np.linspace(grid[max(int(k) - 1, 0)], grid[min(int(k) + 1, grid.size - 1)], 21)
        for k in np.argsort(sizes)[-top:]
    ]
    fine = np.unique(np.concatenate(local))
    size, q = _max_over(n, eps, z, fine)
    k = int(np.argmax(sizes))
    if sizes[k] > size:
        size, q = float(sizes[k]), float(grid[k])
    return fine, size, q


def exact_size(n: int, eps: float, z: float, *, points: int = 1201) -> tuple[float, float]:
    """The test's size: the largest rejection probability over the null's boundary.

    Searched on ``points`` nuisance values (dense near both ends of
    ``[0, (1 - eps) / 2]``), then refined around the five largest. Returns
    ``(size, q at the maximum)``.
    """
    _, size, q = _refined(n, eps, z, _nuisance_grid(eps, points), top=5)
    return size, q


@dataclass(frozen=True)
class TangoCalibration:
    """The critical value of the exact test for one ``(n, eps, delta)``.

    Attributes:
        n, eps, delta: what it was calibrated for.
        z: reject ``p_plus - p_minus > eps`` iff ``Z <= -z``.
        size: the exact size at ``z`` (at most ``delta``).
        q_at_size: the nuisance ``p_minus`` where that size is reached.
    """

    n: int
    eps: float
    delta: float
    z: float
    size: float
    q_at_size: float


@lru_cache(maxsize=64)
def critical_value(n: int, eps: float, delta: float) -> TangoCalibration:
    """The smallest ``z`` whose exact size is at most ``delta`` (cached per arguments).

    A bisection on ``z`` to ``1e-4`` that keeps the upper end (a size at most
    ``delta``). To be fast it maximises over a few candidate nuisance values
    (the largest ones of a full search at the normal quantile); the result is
    then checked by :func:`exact_size` over the whole boundary, and any
    nuisance value found above ``delta`` joins the candidates and the search
    goes on. About a second for ``n = 5,000``.
    """
    _check(n, eps)
    if not 0.0 < delta < 1.0:
        raise InputError(f"delta must lie in (0, 1), got {delta!r}")
    z_normal = float(stats.norm.isf(delta))
    candidates, _, _ = _refined(n, eps, z_normal, _nuisance_grid(eps, 1201), top=8)
    lo, hi = z_normal - 1.0, z_normal + 0.5
    while _max_over(n, eps, hi, candidates)[0] > delta and hi < 40:
        lo, hi = hi, hi + 1.0  # tiny n: far from normal
    while True:
        while hi - lo > 1e-4:
            mid = (lo + hi) / 2
            if _max_over(n, eps, mid, candidates)[0] <= delta:
                hi = mid
            else:
                lo = mid
        size, q = exact_size(n, eps, hi)
        if size <= delta or hi >= 40:
            return TangoCalibration(int(n), float(eps), float(delta), hi, size, q)
        candidates = np.append(candidates, q)
        lo, hi = hi, hi + 0.5


def exact_pvalue(a: int, b: int, n: int, eps: float) -> float:
    """Exact unconditional p-value of ``H0: p_plus - p_minus > eps`` at counts ``(a, b)``.

    The largest, over the null's boundary, probability of a statistic at most
    the observed one. ``p <= delta`` iff the calibrated test rejects (up to
    the bisection tolerance of :func:`critical_value`).
    """
    _check(n, eps)
    z_obs = float(tango_statistic(np.array(a), np.array(b), n, eps))
    return exact_size(n, eps, -z_obs - 1e-12)[0]  # Z <= z_obs, ties included
