"""The regression task kind through the library: the joint model, calibration, evaluation and
the bundle, each against an independent reference (a loop written out per row, brute force
over subsets, a curve built by hand)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebjr
from ebjr.bundle import read_bundle
from ebjr.calibration import MaxDrop, MaxTeacherFraction, select_threshold
from ebjr.calibration.calibrate import calibrate_outputs
from ebjr.calibration.curve import curve_from_loss
from ebjr.evaluation.regression import evaluate_regression
from ebjr.exceptions import BundleError, InputError
from ebjr.joint import JointModel
from ebjr.tasks import Classification, Regression, get_task, task_from_spec


def per_row(s_out, t_out, threshold, column=1, sign=-1.0):
    """The joint answer written out row by row: the score is ``sign * column``."""
    pred, who = [], []
    for i in range(len(s_out)):
        teacher = sign * s_out[i][column] < threshold
        pred.append(float(t_out[i][0] if teacher else s_out[i][0]))
        who.append("teacher" if teacher else "student")
    return np.array(pred), np.array(who)


rows = st.integers(1, 40)


@settings(max_examples=60, deadline=None)
@given(n=rows, seed=st.integers(0, 10_000), threshold=st.floats(-3, 0.5),
       teacher_cols=st.sampled_from([0, 1, 2]))
def test_the_joint_regressor_equals_a_loop_written_out_per_row(n, seed, threshold, teacher_cols):
    rng = np.random.default_rng(seed)
    s_out = np.stack([rng.normal(size=n), rng.uniform(0.01, 3, size=n)], axis=1)
    t_full = rng.normal(size=(n, 2))
    t_out = t_full[:, 0] if teacher_cols == 0 else t_full[:, :teacher_cols]  # (n,) or (n, k)
    joint = JointModel(lambda x: s_out[x.astype(int)], lambda x: t_out[x.astype(int)],
                       "spread", threshold, task="regression")
    out = joint.predict(np.arange(n, dtype=np.float64))
    want_pred, want_who = per_row(s_out, np.reshape(t_out, (n, -1)), threshold)
    np.testing.assert_array_equal(out.predictions, want_pred)
    assert out.answered_by.tolist() == want_who.tolist()
    assert out.probabilities is None
    assert joint.counts()["teacher_rows"] == int((want_who == "teacher").sum())


def test_torch_stays_torch_and_a_float64_teacher_is_not_rounded():
    torch = pytest.importorskip("torch")
    s_out = torch.tensor([[1.0, 0.1], [2.0, 5.0]], dtype=torch.float32)
    t_out = torch.tensor([[10.123456789012], [20.123456789012]], dtype=torch.float64)
    joint = JointModel(lambda x: s_out, lambda x: t_out[:1], "spread", -1.0, task="regression")
    out = joint.predict(torch.zeros(2, 3))
    assert isinstance(out.predictions, torch.Tensor) and out.predictions.dtype == torch.float64
    assert out.predictions.tolist() == [1.0, 10.123456789012]


def test_every_router_reads_its_named_column():
    s_out = np.array([[0.0, 2.0, 5.0, -1.0], [1.0, 0.5, -5.0, -3.0]])
    task = Regression(columns=["prediction", "std", "free_energy", "log_density"])
    for router, want in (("spread", [-2.0, -0.5]), ("regression_energy", [-5.0, 5.0]),
                         ("peak_density", [-1.0, -3.0])):
        joint = JointModel(lambda x: s_out, lambda x: s_out, router, -100.0, task=task)
        np.testing.assert_array_equal(joint.route(np.zeros((2, 1))).scores, want)


def test_mismatches_are_refused_with_a_clear_message():
    with pytest.raises(InputError, match=r"routed by one of .*spread"):
        JointModel(lambda x: x, lambda x: x, "energy", 0.0, task="regression")
    with pytest.raises(InputError, match=r"routed by one of .*energy"):
        JointModel(lambda x: x, lambda x: x, "spread", 0.0)
    with pytest.raises(InputError, match="lack"):
        JointModel(lambda x: x, lambda x: x, "regression_energy", 0.0, task="regression")
    with pytest.raises(InputError, match="class_map applies to classification"):
        JointModel(lambda x: x, lambda x: x, "spread", 0.0, [0, 1], task="regression")
    only_prediction = JointModel(lambda x: np.zeros(len(x)), lambda x: x, "spread", 0.0,
                                 task="regression")
    with pytest.raises(InputError, match="gives 1 column"):
        only_prediction.predict(np.zeros((3, 2)))
    wrong_rows = JointModel(lambda x: np.zeros((len(x) + 1, 2)), lambda x: x, "spread", 0.0,
                            task="regression")
    with pytest.raises(InputError, match="one row per input"):
        wrong_rows.predict(np.zeros((3, 2)))
    nan = JointModel(lambda x: np.full((len(x), 2), np.nan), lambda x: x, "spread", 0.0,
                     task="regression")
    with pytest.raises(InputError, match="NaN"):
        nan.predict(np.zeros((3, 2)))
    with pytest.raises(InputError, match="columns must start with 'prediction'"):
        Regression(columns=["std", "prediction"])
    with pytest.raises(InputError, match="loss must be one of"):
        Regression(loss="huber")


def test_task_specs_round_trip():
    for task in (Classification(), Regression(), Regression(["prediction"], "squared")):
        assert task_from_spec(task.to_spec()) == task
    assert task_from_spec(None) == Classification()
    assert task_from_spec({"kind": "classification"}, class_map=[0, -1]) == \
        Classification([0, -1])
    assert get_task("regression") != get_task("classification")


def test_calibration_equals_the_curve_built_by_hand():
    rng = np.random.default_rng(0)
    n = 500
    y = rng.normal(size=n)
    sd = rng.uniform(0.1, 2, n)
    s_out = np.stack([y + rng.normal(size=n) * sd, sd], axis=1)
    t_pred = y + rng.normal(size=n) * 0.2
    for loss in ("absolute", "squared"):
        task = Regression(loss=loss)
        result = calibrate_outputs(s_out, t_pred, y, MaxDrop(0.1), router="spread", task=task,
                                   teacher_cost=10.0)
        err = (np.abs if loss == "absolute" else np.square)
        curve = curve_from_loss(-sd, err(s_out[:, 0] - y), err(t_pred - y), loss=loss,
                                teacher_cost=10.0)
        want = select_threshold(curve, MaxDrop(0.1))
        assert result.selection.threshold == want.threshold
        assert result.bundle.task == task.to_spec()
        assert result.bundle.calibration["teacher_quality"] == pytest.approx(
            -err(t_pred - y).mean())
    with pytest.raises(InputError, match="targets"):
        calibrate_outputs(s_out, t_pred, None, MaxDrop(0.1), router="spread",
                          task="regression")


def test_the_oracle_equals_the_best_subset_by_brute_force():
    rng = np.random.default_rng(3)
    n = 8
    y = rng.normal(size=n)
    s = np.stack([y + rng.normal(size=n), rng.uniform(0.1, 1, n)], axis=1)
    t = y + rng.normal(size=n) * 0.5
    ev = evaluate_regression(s, t, y)
    ls, lt = np.abs(s[:, 0] - y), np.abs(t - y)
    for share, got in ev.oracle_loss.items():
        k = int(np.floor(share * n))
        best = min((ls.sum() - ls[list(c)].sum() + lt[list(c)].sum()) / n
                   for j in range(k + 1) for c in itertools.combinations(range(n), j))
        assert got == pytest.approx(best)
    assert set(ev.curves) == {"spread"} and set(ev.skipped) == {"peak_density",
                                                                 "regression_energy"}


def test_a_regression_bundle_round_trips_and_bad_documents_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    import json

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.zoo.regression import make_gaussian_mlp

    torch.manual_seed(0)
    kw = {"in_features": 3, "hidden": 4, "depth": 1}
    models = [TorchAdapter(make_gaussian_mlp(**kw).eval(),
                           factory="ebjr.zoo.regression:make_gaussian_mlp", factory_kwargs=kw)
              for _ in range(2)]
    task = Regression(columns=["prediction", "std"], loss="squared")
    joint = JointModel(*models, "spread", -0.7, task=task)
    path = ebjr.save(joint, tmp_path / "r.json")
    back = ebjr.load(path)
    assert back.task == task
    x = torch.rand(50, 3)
    a, b = joint.predict(x), back.predict(x)
    assert torch.equal(a.predictions, b.predictions)
    assert a.answered_by.tolist() == b.answered_by.tolist()
    doc = json.loads(path.read_text())
    for change, match in ((lambda d: d.update(class_map=[0, 1]), "class_map applies"),
                          (lambda d: d.update(router={"name": "energy", "params": {}}),
                           "routed by one of"),
                          (lambda d: d["task"].update(kind="detection"), "task")):
        bad = json.loads(json.dumps(doc))
        change(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(BundleError, match=match):
            read_bundle(tmp_path / "bad.json")


def test_max_teacher_fraction_works_on_a_loss_curve():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    s = np.stack([y + rng.normal(size=300), rng.uniform(0.1, 1, 300)], axis=1)
    r = calibrate_outputs(s, y, y, MaxTeacherFraction(0.25), router="spread",
                          task="regression")
    assert r.selection.point.teacher_fraction <= 0.25
