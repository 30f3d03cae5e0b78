"""The live N-stage cascade: against JointModel, against Cascade.apply, and who sees which rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebjr import InputError, JointModel
from ebjr.joint.cascade import Cascade
from ebjr.joint.cascade_model import CascadeModel


class Recorder:
    """A model that answers precomputed logits for the row ids it is given, and records them."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits, self.seen = logits, []

    def __call__(self, ids):
        ids = np.asarray(ids).astype(np.int64).ravel()
        self.seen.append(ids)
        return self.logits[ids]


def _zoo(seed: int, n: int = 400, c: int = 6, k: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"m{i}": rng.normal(scale=1.5 + i, size=(n, c)) for i in range(k)}


@pytest.mark.parametrize("router", ["energy", "softmax", "margin"])
@pytest.mark.parametrize("quantile", [0.0, 0.3, 0.8, 1.0])
def test_two_live_stages_answer_as_joint_model(router, quantile):
    z = _zoo(1, k=2)
    ids = np.arange(400)[:, None]
    joint = JointModel(Recorder(z["m0"]), Recorder(z["m1"]), router)
    t = float(np.quantile(joint.router.score(z["m0"]), quantile))
    joint.set_threshold(t)
    want = joint.predict(ids)
    got = CascadeModel({"m0": Recorder(z["m0"]), "m1": Recorder(z["m1"])},
                       Cascade(("m0", "m1"), (t,), router=router)).predict(ids)
    np.testing.assert_array_equal(got.predictions, want.predictions)
    np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-12)
    np.testing.assert_array_equal(got.answered_by == "m1", want.to_teacher)


@pytest.mark.parametrize("combine", ["last", "mean"])
@pytest.mark.parametrize("seed", range(4))
def test_n_live_stages_equal_the_offline_cascade_and_see_only_their_rows(combine, seed):
    z = _zoo(seed, k=4)
    stages = tuple(z)
    thresholds = tuple(np.random.default_rng(seed).uniform(0.3, 0.8, size=3))
    cascade = Cascade(stages, thresholds, router="softmax", combine=combine)
    models = {m: Recorder(v) for m, v in z.items()}
    live = CascadeModel(models, cascade)
    got = live.predict(np.arange(400)[:, None])
    want = cascade.apply(z)
    np.testing.assert_array_equal(got.predictions, want.predictions)
    np.testing.assert_array_equal(got.exit_stage, want.exit_stage)
    for i, m in enumerate(stages):  # each stage ran once, on exactly the rows that reached it
        reached = np.flatnonzero(want.exit_stage >= i)
        if reached.size:
            assert len(models[m].seen) == 1
            np.testing.assert_array_equal(np.sort(models[m].seen[0]), reached)
        else:
            assert models[m].seen == []
    counts = live.counts()
    assert counts["stage_rows"] == {m: int(np.sum(want.exit_stage >= i))
                                    for i, m in enumerate(stages)}
    assert sum(counts["answered"].values()) == 400 == counts["rows"]


def test_a_stage_no_row_reaches_is_not_called():
    z = _zoo(2, k=3)
    models = {m: Recorder(v) for m, v in z.items()}
    live = CascadeModel(models, Cascade(tuple(z), (-np.inf, 0.5), router="softmax"))
    out = live.predict(np.arange(10)[:, None])
    assert out.answered_by.tolist() == ["m0"] * 10
    assert models["m1"].seen == [] and models["m2"].seen == []


def test_torch_stages_stay_torch_and_match_numpy():
    torch.manual_seed(0)
    nets = {f"m{i}": torch.nn.Linear(8, 5) for i in range(3)}
    x = torch.randn(64, 8)
    cascade = Cascade(tuple(nets), (0.45, 0.5), router="softmax", combine="mean")
    out = CascadeModel(nets, cascade).predict(x)
    assert isinstance(out.predictions, torch.Tensor) and out.probabilities.dtype == torch.float32
    with torch.no_grad():
        offline = cascade.apply({m: n(x).numpy() for m, n in nets.items()})
    np.testing.assert_array_equal(out.predictions.numpy(), offline.predictions)
    np.testing.assert_array_equal(out.exit_stage, offline.exit_stage)


def test_thresholds_are_a_live_knob_and_bad_input_is_refused():
    z = _zoo(3, k=3)
    live = CascadeModel({m: Recorder(v) for m, v in z.items()},
                        Cascade(tuple(z), (0.99, 0.99), router="softmax"))
    assert live.set_thresholds([-np.inf, 0.5]) == (0.99, 0.99)
    assert live.predict(np.arange(5)[:, None]).thresholds == (-np.inf, 0.5)
    with pytest.raises(InputError, match="3 stages need 2 thresholds, got 1"):
        live.set_thresholds([0.1])
    with pytest.raises(InputError, match="NaN"):
        live.set_thresholds([0.1, float("nan")])
    with pytest.raises(InputError, match=r"no model for stage\(s\) \['m2'\]"):
        CascadeModel({"m0": Recorder(z["m0"]), "m1": Recorder(z["m1"])},
                     Cascade(tuple(z), (0.5, 0.5)))
    with pytest.raises(InputError, match="empty"):
        live.predict(np.zeros((0, 1)))
    odd = CascadeModel({"a": Recorder(z["m0"]), "b": Recorder(z["m1"][:, :4])},
                       Cascade(("a", "b"), (np.inf,), router="softmax"))
    with pytest.raises(InputError, match=r"stage 'b' gave outputs of shape \[3, 4\] for 3 "
                                         r"rows; expected \[3, 6\]"):
        odd.predict(np.arange(3)[:, None])
