"""The energy-based regressor trained by NCE, and what its free energy can and cannot tell."""

import numpy as np
import pytest
import torch

from ebjr.training.regressor import EnergyRegressor, regressor_outputs, train_energy_regressor


def heteroscedastic(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 3))
    sigma = np.where(x[:, 0] > 0, 0.5, 0.1)
    y = np.sin(x[:, 0]) + sigma * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32), sigma


@pytest.fixture(scope="module")
def trained():
    x, y, _ = heteroscedastic(1200, 0)
    xv, yv, _ = heteroscedastic(300, 1)
    model = EnergyRegressor(3, hidden=32, depth=2)
    hist = train_energy_regressor(model, x, y, xv, yv, epochs=60, seed=0, patience=15)
    return model, hist


def test_nce_learns_the_mean_and_the_noise_level(trained):
    model, hist = trained
    assert hist["val_nce"][-1] < hist["val_nce"][0]
    x, _, sigma = heteroscedastic(400, 2)
    out = regressor_outputs(model, x, n_samples=512)
    assert np.abs(out.prediction - np.sin(x[:, 0])).mean() < 0.15
    noisy = sigma > 0.3
    # the normalised density knows where the noise is
    assert out.spread[noisy].mean() > 2 * out.spread[~noisy].mean()
    assert out.peak_log_density[noisy].mean() < out.peak_log_density[~noisy].mean() - 0.5
    assert (out.energy.std_error < 0.1).all()


def test_training_and_outputs_are_seeded():
    x, y, _ = heteroscedastic(200, 3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the initial weights
        m = EnergyRegressor(3, hidden=8, depth=1)
        train_energy_regressor(m, x, y, x[:50], y[:50], epochs=3, seed=5)
        runs.append(regressor_outputs(m, x[:20], n_samples=64, seed=1))
    np.testing.assert_array_equal(runs[0].energy.free_energy, runs[1].energy.free_energy)
    np.testing.assert_array_equal(runs[0].prediction, runs[1].prediction)


class _Shifted(EnergyRegressor):
    """The same model with ``c(x) = 3 x_0`` added to every score: invisible to ranking NCE."""

    def score_from_features(self, h, y):
        return super().score_from_features(h, y) + 3.0 * self._x0[:, None]


def test_a_per_input_shift_moves_the_energy_but_not_the_normalised_scores(trained):
    model, _ = trained
    x, _, _ = heteroscedastic(50, 4)
    shifted = _Shifted(3, hidden=32, depth=2)
    shifted.load_state_dict(model.state_dict())
    shifted._x0 = torch.as_tensor(x[:, 0])
    a = regressor_outputs(model, x, n_samples=256)
    b = regressor_outputs(shifted, x, n_samples=256)
    np.testing.assert_allclose(b.energy.free_energy, a.energy.free_energy - 3.0 * x[:, 0],
                               atol=1e-4)
    np.testing.assert_allclose(b.peak_log_density, a.peak_log_density, atol=1e-4)
    np.testing.assert_allclose(b.spread, a.spread, atol=1e-5)
    np.testing.assert_allclose(b.prediction, a.prediction, atol=1e-5)
