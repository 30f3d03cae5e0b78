import numpy as np
import pytest

from ebjr.calibration import MaxDrop, tradeoff_curve
from ebjr.calibration.auto import AutoRouter
from ebjr.exceptions import InputError, NotFittedError
from ebjr.routing import get_router
from helpers import synthetic


def test_auto_picks_the_informative_score_and_shows_evidence():
    # the student's errors are exactly where its max logit is low, so maxlogit-like
    # scores route far better than a candidate that ignores the logits' scale
    rng = np.random.default_rng(0)
    n, c = 3000, 5
    y = rng.integers(0, c, n)
    conf = rng.random(n)
    wrong = rng.random(n) > conf
    pred = np.where(wrong, (y + 1) % c, y)
    s = rng.normal(scale=0.1, size=(n, c)) + (8 * conf)[:, None] * np.eye(c)[pred]
    t = np.eye(c)[y] * 10.0
    candidates = [
        {"name": "maxlogit", "params": {}},
        {"name": "random", "params": {"seed": 0}},
    ]
    auto = AutoRouter(target=MaxDrop(0.01), candidates=candidates, cv=5).fit(s, t, y)
    assert auto.selected_.name == "maxlogit"
    costs = {e.router["name"]: e.cost for e in auto.evidence_}
    assert costs["maxlogit"] < costs["random"]
    np.testing.assert_allclose(auto.score(s), get_router("maxlogit").score(s))
    assert auto.to_spec() == {"name": "maxlogit", "params": {}}


def test_auto_default_candidates_and_curve():
    s, t, y = synthetic(400)
    auto = get_router("auto", target=MaxDrop(0.02), cv=4).fit(s, t, y)
    assert len(auto.evidence_) == 8
    curve = tradeoff_curve(s, t, y, auto)
    assert curve.router == auto.selected_.to_spec()


def test_auto_errors():
    s, t, y = synthetic(50)
    with pytest.raises(NotFittedError, match="must be fitted"):
        get_router("auto").score(s)
    with pytest.raises(NotFittedError, match="must be fitted"):
        tradeoff_curve(s, t, y, "auto")
    with pytest.raises(InputError, match="cv must be an integer >= 2"):
        AutoRouter(cv=1).fit(s, t, y)
    with pytest.raises(InputError, match="at least 20 calibration rows"):
        AutoRouter(cv=10).fit(s[:10], t[:10], y[:10])


def test_auto_skips_energy_on_log_probabilities():
    s, t, y = synthetic(300)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    auto = AutoRouter(cv=3).fit(logp, t, y)
    notes = {e.router["name"]: e.note for e in auto.evidence_}
    assert "log-probabilities" in notes["energy"]
    assert auto.selected_.name != "energy"
