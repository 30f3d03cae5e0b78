import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ebjr import scores
from ebjr.exceptions import InputError

logit_blocks = arrays(
    np.float64,
    st.tuples(st.integers(1, 20), st.integers(2, 12)),
    elements=st.floats(-50, 50, allow_nan=False),
)


@given(logit_blocks)
def test_free_energy_is_minus_scipy_logsumexp(x):
    expected = -scipy.special.logsumexp(x, axis=1)
    np.testing.assert_allclose(scores.free_energy(x), expected, rtol=1e-6, atol=1e-12)


@given(logit_blocks, st.floats(-100, 100), st.floats(0.1, 10))
def test_free_energy_shift(x, c, temperature):
    # F(x + c) = F(x) - c at every temperature
    f = scores.free_energy(x, temperature)
    np.testing.assert_allclose(scores.free_energy(x + c, temperature), f - c, rtol=1e-9, atol=1e-8)


@given(logit_blocks, st.floats(0.1, 10))
def test_temperature_matches_scipy(x, temperature):
    expected = -temperature * scipy.special.logsumexp(x / temperature, axis=1)
    np.testing.assert_allclose(scores.free_energy(x, temperature), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_free_energy_finite_at_1e4(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    f = scores.free_energy(x)
    assert np.all(np.isfinite(f))
    np.testing.assert_allclose(f, [-1e4, 1e4 - np.log(3), -1e4 - np.log(3)], rtol=1e-6)
    for fn in (scores.softmax_confidence, scores.negative_entropy, scores.margin):
        assert np.all(np.isfinite(fn(x)))


@pytest.mark.parametrize(
    "fn",
    [
        scores.free_energy,
        scores.softmax_confidence,
        scores.negative_entropy,
        scores.max_logit,
        scores.margin,
        scores.softmax_logsumexp,
    ],
)
def test_numpy_and_torch_agree_and_stay_torch(fn):
    x = np.random.default_rng(1).normal(size=(64, 7)) * 5
    out_np = fn(x)
    xt = torch.tensor(x, dtype=torch.float32)
    out_t = fn(xt)
    assert isinstance(out_t, torch.Tensor)
    assert out_t.dtype == torch.float32 and out_t.device == xt.device and out_t.shape == (64,)
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-5, atol=1e-5)


def test_baselines_against_references():
    x = np.random.default_rng(2).normal(size=(50, 6)) * 3
    p = scipy.special.softmax(x, axis=1)
    np.testing.assert_allclose(scores.softmax_confidence(x), p.max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        scores.negative_entropy(x), -scipy.stats.entropy(p, axis=1), rtol=1e-9, atol=1e-12
    )
    top2 = np.sort(p, axis=1)[:, -2:]
    np.testing.assert_allclose(scores.margin(x), top2[:, 1] - top2[:, 0], atol=1e-12)
    np.testing.assert_allclose(scores.max_logit(x), x.max(axis=1))
    np.testing.assert_allclose(
        scores.softmax_logsumexp(x), scipy.special.logsumexp(p, axis=1), rtol=1e-12
    )


def test_paper_code_score_is_bounded_as_documented():
    c = 10
    lo, hi = np.log(c) + 1 / c, np.log(c - 1 + np.e)
    x = np.random.default_rng(3).normal(size=(500, c)) * 10
    v = scores.softmax_logsumexp(x)
    assert np.all(v >= lo - 1e-9) and np.all(v <= hi + 1e-9)
    np.testing.assert_allclose(scores.softmax_logsumexp(np.zeros((1, c))), [lo])


def test_log_probability_detection():
    x = np.random.default_rng(4).normal(size=(20, 5))
    assert not scores.looks_like_log_probabilities(x)
    assert scores.looks_like_log_probabilities(scipy.special.log_softmax(x, axis=1))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[1.0, np.nan]]), "NaN or infinite values in 1 of 1 rows"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite values in 1 of 2 rows"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros(3), r"shape \(n_samples, n_classes\)"),
        (np.zeros((2, 1)), "at least 2 classes"),
        (np.zeros((2, 3), dtype=np.int64), "real floating-point"),
        ("abc", "numpy array or a torch tensor"),
    ],
)
def test_bad_logits_raise_clear_errors(bad, match):
    with pytest.raises(InputError, match=match):
        scores.free_energy(bad)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_bad_temperature(t):
    with pytest.raises(InputError, match="temperature must be a positive"):
        scores.free_energy(np.zeros((2, 3)), t)


@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 6)),
              elements=st.floats(-1e308, 1e308, allow_nan=False)))
def test_negative_entropy_is_finite_and_bounded_for_any_finite_logits(x):
    """Extreme but finite logits used to give 0 * -inf = NaN (and route to the student at any
    threshold); the entropy is now finite, in [-log C, 0], and scipy's where scipy is exact."""
    import scipy.stats
    import torch

    from ebjr.scores.classification import negative_entropy

    h = negative_entropy(x)
    assert np.all(np.isfinite(h))
    assert np.all(h <= 1e-12) and np.all(h >= -np.log(x.shape[1]) - 1e-9)
    np.testing.assert_allclose(negative_entropy(torch.from_numpy(x)).numpy(), h, atol=1e-9)
    moderate = np.clip(x, -50, 50)
    p = np.exp(moderate - moderate.max(1, keepdims=True))
    np.testing.assert_allclose(negative_entropy(moderate),
                               -scipy.stats.entropy(p / p.sum(1, keepdims=True), axis=1),
                               atol=1e-9)
