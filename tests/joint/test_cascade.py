"""The N-stage cascade on precomputed outputs: against JointModel and a loop written out per row."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax as sp_softmax

from ebjr import InputError, JointModel
from ebjr.joint.cascade import Cascade, exit_stages
from ebjr.scores import free_energy


def _zoo(seed: int, n: int = 300, c: int = 5, k: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"m{i}": rng.normal(scale=1 + i, size=(n, c)) for i in range(k)}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), router=st.sampled_from(["energy", "softmax", "margin"]),
       q=st.floats(0.0, 1.0))
def test_two_stages_answer_as_joint_model_row_for_row(seed, router, q):
    z = _zoo(seed, k=2)
    student, teacher = z["m0"], z["m1"]
    joint_probe = JointModel(lambda x: x, lambda x: x, router)
    threshold = float(np.quantile(joint_probe.router.score(student), q))
    joint = JointModel(lambda i: student[np.asarray(i)], lambda i: teacher[np.asarray(i)], router,
                       threshold=threshold)
    expected = joint.predict(np.arange(student.shape[0]))
    got = Cascade(("m0", "m1"), (threshold,), router=router).apply(z)
    np.testing.assert_array_equal(got.predictions, expected.predictions)
    np.testing.assert_array_equal(got.answered_by == "m1", expected.to_teacher)


def _loop(z: dict[str, np.ndarray], stages, thresholds, combine, score) -> tuple[list, list]:
    """The cascade written out one row at a time, with scipy's softmax."""
    preds, exits = [], []
    for r in range(z[stages[0]].shape[0]):
        total = np.zeros(z[stages[0]].shape[1])
        for i, name in enumerate(stages):
            p = sp_softmax(z[name][r].astype(np.float64))
            total += p
            answer = total / (i + 1) if combine == "mean" else p
            last = i == len(stages) - 1
            if last or score(answer, z[name][r]) >= thresholds[i]:
                preds.append(int(np.argmax(answer)))
                exits.append(i)
                break
    return preds, exits


@pytest.mark.parametrize("combine", ["last", "mean"])
@pytest.mark.parametrize("seed", range(5))
def test_n_stages_against_a_loop_per_row(seed, combine):
    z = _zoo(seed, k=4)
    stages = ("m0", "m1", "m2", "m3")
    rng = np.random.default_rng(seed)
    thresholds = tuple(float(t) for t in rng.uniform(0.3, 0.9, size=3))
    got = Cascade(stages, thresholds, router="softmax", combine=combine).apply(z)
    preds, exits = _loop(z, stages, thresholds, combine, lambda p, _z: p.max())
    np.testing.assert_array_equal(got.predictions, preds)
    np.testing.assert_array_equal(got.exit_stage, exits)


def test_energy_stages_against_a_loop_per_row():
    z = _zoo(7, k=3)
    stages = ("m0", "m1", "m2")
    thresholds = (2.5, 3.5)  # on -F = logsumexp
    got = Cascade(stages, thresholds, router="energy").apply(z)
    preds, exits = _loop(z, stages, thresholds, "last",
                         lambda _p, logits: -float(free_energy(logits[None, :])[0]))
    np.testing.assert_array_equal(got.predictions, preds)
    np.testing.assert_array_equal(got.exit_stage, exits)


def test_costs_shares_and_names():
    z = _zoo(1, n=6, k=3)
    c = Cascade(("m0", "m1", "m2"), (np.inf, -np.inf), costs=(1, 2, 10), router="softmax")
    r = c.apply(z)  # stage 0 answers nothing, stage 1 answers everything
    assert r.answered_by.tolist() == ["m1"] * 6
    assert r.cost.tolist() == [3.0] * 6
    assert r.stage_shares() == {"m0": 0.0, "m1": 1.0, "m2": 0.0}


def test_nan_and_minus_inf_scores_go_on():
    assert exit_stages([np.array([np.nan, -np.inf, 1.0])], [-np.inf], 3).tolist() == [1, 1, 0]


def test_round_trip_through_a_dict():
    c = Cascade(("a", "b", "c"), (0.5, 0.7), costs=(1, 2, 3), router="margin", combine="mean",
                reference="c", details={"why": "test"})
    back = Cascade.from_dict(c.to_dict())
    assert back == c and back.details == {"why": "test"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": ("a", "a"), "thresholds": (0.0,)}, "distinct stage names"),
        ({"stages": ("a", "b"), "thresholds": ()}, "needs 1 thresholds"),
        ({"stages": ("a", "b"), "thresholds": (0.0,), "costs": (1.0,)}, "1 costs for 2 stages"),
        ({"stages": ("a", "b"), "thresholds": (0.0,), "combine": "mean"}, "same for every row"),
        ({"stages": ("a", "b"), "thresholds": (0.0,), "combine": "vote"}, "combine must be one"),
        ({"stages": ("a", "b"), "thresholds": (float("nan"),)}, "NaN"),
        ({"stages": ("a", "b"), "thresholds": (0.0,), "costs": (1.0, -1.0)}, "cost of stage 'b'"),
    ],
)
def test_bad_cascades_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        Cascade(**kwargs)


def test_apply_names_missing_and_misshapen_outputs():
    c = Cascade(("a", "b"), (0.0,))
    with pytest.raises(InputError, match=r"no outputs for stage\(s\) \['b'\]"):
        c.apply({"a": np.zeros((2, 3))})
    with pytest.raises(InputError, match="same n and C"):
        c.apply({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})
    with pytest.raises(InputError, match="not a cascade record"):
        Cascade.from_dict({"stages": ["a"]})
