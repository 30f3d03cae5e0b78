"""The regression free energy by importance sampling, against quadrature."""

import numpy as np
import pytest
from scipy import integrate

from ebjr.exceptions import InputError
from ebjr.scores import regression_free_energy


def bimodal(x, y):
    """An unnormalised, skewed two-bump log-density whose location depends on x."""
    x = np.asarray(x)[:, None]
    return np.logaddexp(-0.5 * ((y - x) / 0.3) ** 2 + 1.0, -np.abs(y - x - 1.5) / 0.5)


def quadrature(x: float) -> float:
    z, _ = integrate.quad(lambda y: np.exp(bimodal(np.array([x]), np.array([[y]]))[0, 0]),
                          x - 20, x + 20, points=[x, x + 1.5], limit=200)
    return -np.log(z)


def test_importance_sampling_converges_to_quadrature():
    x = np.array([-1.0, 0.0, 2.5])
    exact = np.array([quadrature(v) for v in x])
    errors, ses = [], []
    for k in (256, 4096, 65536):
        est = regression_free_energy(bimodal, x, x + 0.3, scales=(0.3, 1.0, 3.0), n_samples=k,
                                     seed=1)
        err = np.abs(est.free_energy - exact)
        assert (err <= 5 * est.std_error + 1e-12).all()  # within the reported error
        errors.append(err.max())
        ses.append(est.std_error.max())
        assert (est.ess > 0.1 * k).all()
    assert errors[-1] < 1e-2 and errors[-1] < errors[0]
    # the standard error shrinks like 1/sqrt(K): 16x the samples, about a quarter
    assert ses[1] / ses[0] == pytest.approx(0.25, rel=0.3)
    assert ses[2] / ses[1] == pytest.approx(0.25, rel=0.3)


def test_seeded_runs_are_reproducible_and_seeds_differ():
    x = np.linspace(-1, 1, 5)
    a = regression_free_energy(bimodal, x, x, n_samples=128, seed=7)
    b = regression_free_energy(bimodal, x, x, n_samples=128, seed=7)
    c = regression_free_energy(bimodal, x, x, n_samples=128, seed=8)
    np.testing.assert_array_equal(a.free_energy, b.free_energy)
    assert not np.array_equal(a.free_energy, c.free_energy)


def test_gaussian_closed_form_and_torch_scores():
    torch = pytest.importorskip("torch")
    sigma = np.array([0.5, 2.0])

    def score(x, y):  # a Gaussian bump of height 0 and width sigma: Z = sqrt(2 pi) sigma
        return -0.5 * ((torch.as_tensor(y) - 1.0) / torch.as_tensor(sigma)[:, None]) ** 2

    est = regression_free_energy(score, None, np.ones(2), scales=(0.5, 2.0, 6.0),
                                 n_samples=20000, seed=0)
    exact = -np.log(np.sqrt(2 * np.pi) * sigma)
    np.testing.assert_allclose(est.free_energy, exact, atol=5 * est.std_error.max())
    # the wider density has the lower free energy: more mass, "more at ease"
    assert est.free_energy[1] < est.free_energy[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scales": (0.0,)}, "scales"),
        ({"n_samples": 1}, "n_samples"),
        ({"center": np.array([np.nan])}, "center"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"center": np.zeros(1), **kwargs}
    with pytest.raises(InputError, match=message):
        regression_free_energy(bimodal, np.zeros(1), **args)


def test_score_fn_shape_is_checked():
    with pytest.raises(InputError, match="shape"):
        regression_free_energy(lambda x, y: y[:, :1], np.zeros(2), np.zeros(2), n_samples=4)
