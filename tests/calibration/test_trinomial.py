"""The exact unconditional test of the signed loss, against brute force and closed forms."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from ebjr.calibration.exact import (
    critical_value,
    exact_pvalue,
    exact_size,
    rejection_probability,
    tango_statistic,
)
from ebjr.exceptions import InputError


def brute_force_probability(n, eps, z, q, excess=0.0):
    """P(Z <= -z) summed over every (a, b) of the trinomial, with scipy's multinomial pmf."""
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = a + b <= n
    a, b = a[ok], b[ok]
    p = [q + eps + excess, q, 1 - 2 * q - eps - excess]
    pmf = stats.multinomial.pmf(np.stack([a, b, n - a - b], axis=1), n, p)
    return float(pmf[tango_statistic(a, b, n, eps) <= -z].sum())


@pytest.mark.parametrize(("a", "b", "n", "eps"), [(30, 10, 500, 0.01), (0, 3, 80, 0.05)])
def test_statistic_uses_the_restricted_maximum_likelihood_estimate(a, b, n, eps):
    """q is the argmax of the boundary likelihood, found here by a numerical optimiser."""
    c = n - a - b

    def neg_loglik(q):
        return -(
            a * math.log(q + eps) + (b * math.log(q) if b else 0.0) + c * math.log(1 - 2 * q - eps)
        )

    q = optimize.minimize_scalar(
        neg_loglik,
        bounds=(1e-12, (1 - eps) / 2 - 1e-12),
        method="bounded",
        options={"xatol": 1e-12},
    ).x
    expected = (a - b - n * eps) / math.sqrt(n * (2 * q + eps - eps**2))
    assert tango_statistic(a, b, n, eps) == pytest.approx(expected, rel=1e-6)


def test_statistic_is_monotone_so_the_region_is_an_upper_set_in_b():
    for n in (15, 60, 300):
        for eps in (0.0, 0.005, 0.05, 0.3):
            a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
            z = np.where(a + b <= n, tango_statistic(a, b, n, eps), np.nan)
            with np.errstate(invalid="ignore"):
                assert not np.any(np.diff(z, axis=1) > 1e-12)  # falls as b grows
                assert not np.any(np.diff(z, axis=0) < -1e-12)  # rises as a grows


@pytest.mark.parametrize(
    ("n", "eps", "z", "q", "excess"),
    [
        (40, 0.05, 1.6, 0.1, 0.0),
        (40, 0.0, 1.2, 0.3, 0.0),
        (70, 0.02, 1.9, 0.01, 0.0),
        (70, 0.02, 1.9, 0.2, 0.05),
        (25, 0.1, 1.0, 0.0, 0.0),
    ],
)
def test_rejection_probability_equals_brute_force(n, eps, z, q, excess):
    assert rejection_probability(n, eps, z, q, excess) == pytest.approx(
        brute_force_probability(n, eps, z, q, excess), abs=1e-13
    )


@pytest.mark.parametrize(
    ("n", "eps", "delta"),
    [
        (30, 0.0, 0.05),
        (50, 0.05, 0.1),
        (120, 0.02, 0.05),
        (400, 0.01, 0.05),
        (1000, 0.005, 0.1),
        (2000, 0.005, 0.01),
        (5000, 0.005, 0.05),
    ],
)
def test_calibrated_test_has_exact_size_at_most_delta(n, eps, delta):
    """The exact size, maximised over the nuisance on a grid finer than the one used to
    calibrate (with brute-force enumeration where n is small), never exceeds delta."""
    cal = critical_value(n, eps, delta)
    assert cal.size <= delta
    qs = np.linspace(0.0, (1 - eps) / 2, 2001)
    finest = max(rejection_probability(n, eps, cal.z, float(q)) for q in qs)
    assert finest <= delta
    if n <= 120:
        for q in np.linspace(0.0, (1 - eps) / 2, 41):
            assert brute_force_probability(n, eps, cal.z, float(q)) <= delta + 1e-12
    # and the test is not needlessly conservative: a slightly smaller z exceeds delta
    # (up to the discreteness of small n, where the size jumps)
    if n >= 400:
        assert exact_size(n, eps, cal.z - 0.01)[0] > delta * 0.97


def test_reproduces_the_issue_numbers():
    cal = critical_value(5000, 0.005, 0.05)
    assert cal.z == pytest.approx(1.655, abs=2e-3)
    assert 0.049 < cal.size <= 0.05


def test_size_is_smaller_deeper_in_the_null():
    n, eps, delta = 300, 0.02, 0.05
    cal = critical_value(n, eps, delta)
    for q in (0.0, 0.01, 0.05, 0.2, 0.4):
        at_boundary = rejection_probability(n, eps, cal.z, q)
        for excess in (0.005, 0.02, 0.1):
            if q + eps + excess <= 1 - q:
                assert rejection_probability(n, eps, cal.z, q, excess) <= at_boundary + 1e-12


@settings(max_examples=40, deadline=None)
@given(a=st.integers(0, 200), b=st.integers(0, 200))
def test_pvalue_agrees_with_the_calibrated_decision(a, b):
    n, eps, delta = 400, 0.01, 0.05
    if a + b > n:
        return
    cal = critical_value(n, eps, delta)
    z = float(tango_statistic(a, b, n, eps))
    if abs(z + cal.z) < 1e-3:  # within the bisection tolerance of the critical value
        return
    assert (exact_pvalue(a, b, n, eps) <= delta) == (z <= -cal.z)


def test_rejection_rate_under_the_null_by_simulation():
    """Monte Carlo at the maximising nuisance agrees with the exact size."""
    n, eps, delta = 1000, 0.01, 0.05
    cal = critical_value(n, eps, delta)
    rng = np.random.default_rng(0)
    q = cal.q_at_size
    draws = rng.multinomial(n, [q + eps, q, 1 - 2 * q - eps], size=40_000)
    rate = np.mean(tango_statistic(draws[:, 0], draws[:, 1], n, eps) <= -cal.z)
    assert rate == pytest.approx(cal.size, abs=4 * math.sqrt(delta / 40_000))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: critical_value(0, 0.01, 0.05), "n must be a positive integer"),
        (lambda: critical_value(100, 1.0, 0.05), r"eps must lie in \[0, 1\)"),
        (lambda: critical_value(100, 0.01, 1.0), r"delta must lie in \(0, 1\)"),
        (lambda: rejection_probability(100, 0.4, 1.0, 0.5), "is not a trinomial"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(InputError, match=match):
        call()
