"""``ebjr calibrate / evaluate / quickstart --task regression`` as a user runs them."""

import json

import numpy as np
import pytest

from ebjr.bundle import read_bundle
from ebjr.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.uniform(-2, 2, n)
    sd = 0.1 + 0.5 * np.abs(x)
    y = np.sin(x) + rng.normal(0, 0.05, n)
    sp, tp = tmp_path / "s.npz", tmp_path / "t.npz"
    np.savez(sp, prediction=np.sin(x) + rng.normal(size=n) * sd, std=sd, targets=y)
    np.savez(tp, prediction=np.sin(x) + rng.normal(size=n) * 0.05, targets=y)
    return sp, tp, y


def test_calibrate_writes_a_regression_bundle_with_a_loss_guarantee(files, tmp_path, capsys):
    sp, tp, _ = files
    out = tmp_path / "b.json"
    code = main(["calibrate", str(sp), str(tp), "--task", "regression", "--router", "spread",
                 "--max-drop", "0.05", "--confidence", "0.9", "--loss-range", "0", "2",
                 "--teacher-cost", "10", "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "mean absolute error" in text and "clipped to [0.0, 2.0]" in text
    b = read_bundle(out)
    assert b.task == {"kind": "regression", "columns": ["prediction", "std"],
                      "loss": "absolute"}
    assert b.target["p_value"] == "wsr" and b.target["loss_range"] == [0.0, 2.0]
    assert 0 < b.calibration["teacher_fraction"] < 1


@pytest.mark.parametrize(("extra", "match"), [
    (["--max-drop", "0.05", "--confidence", "0.9"], "--loss-range LO HI"),
    (["--router", "energy", "--max-drop", "0.05"], "routed by one of"),
    (["--histogram-crossing"], "right/wrong"),
    (["--max-drop", "0.05", "--loss-range", "0", "1"], "--loss-range goes with"),
    (["--max-drop", "0.05", "--class-map", "m.json"], "--class-map applies to classification"),
])
def test_calibrate_refuses_what_does_not_apply_to_a_regression(files, tmp_path, capsys, extra,
                                                               match):
    sp, tp, _ = files
    args = ["calibrate", str(sp), str(tp), "--task", "regression", "-o", str(tmp_path / "o.json")]
    if "--router" not in extra:
        args += ["--router", "spread"]
    assert main(args + extra) == 2
    assert match in capsys.readouterr().err


def test_outputs_files_of_the_wrong_form_are_named(tmp_path, files, capsys):
    _, tp, _ = files
    np.savez(tmp_path / "logits.npz", logits=np.zeros((3, 2)))
    assert main(["calibrate", str(tmp_path / "logits.npz"), str(tp), "--task", "regression",
                 "--router", "spread", "--max-drop", "0.1", "-o", str(tmp_path / "o.json")]) == 2
    assert "no 'prediction' array" in capsys.readouterr().err
    np.savez(tmp_path / "short.npz", prediction=np.zeros(5), std=np.ones(4))
    assert main(["evaluate", str(tmp_path / "short.npz"), str(tp), "--task", "regression"]) == 2
    assert "'std'" in capsys.readouterr().err


def test_evaluate_prints_every_router_the_oracle_and_random(files, capsys):
    sp, tp, y = files
    assert main(["evaluate", str(sp), str(tp), "--task", "regression", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["routers"]) == {"spread"} and "regression_energy" in d["skipped"]
    with np.load(sp) as s, np.load(tp) as t:
        ls, lt = np.abs(s["prediction"] - y).mean(), np.abs(t["prediction"] - y).mean()
    assert d["student_loss"] == pytest.approx(ls) and d["teacher_loss"] == pytest.approx(lt)
    at = d["routers"]["spread"]["loss_at"]
    for share, v in d["random_loss_at"].items():
        assert d["oracle_loss_at"][share] <= at[share] <= v  # spread beats random here
    assert main(["evaluate", str(sp), str(tp), "--task", "regression"]) == 0
    assert "oracle" in capsys.readouterr().out


@pytest.mark.integration
def test_quickstart_regression_meets_its_target_and_writes_a_bundle_predict_reads(tmp_path,
                                                                                   capsys):
    from ebjr.bundle.predict import predict_file
    from ebjr.examples.regression_quickstart import (
        RegressionQuickstartConfig,
        make_friedman_splits,
    )

    assert main(["quickstart", "--task", "regression", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    test = summary["test"]
    assert test["live_matches_offline"] and test["target_met"]
    assert 0 < test["teacher_fraction"] < 1 and test["flops_speedup"] > 1
    assert (tmp_path / "regression.png").stat().st_size > 10_000
    x = make_friedman_splits(RegressionQuickstartConfig())["x_test"][:200]
    np.save(tmp_path / "x.npy", x)
    out = predict_file(summary["bundle"], tmp_path / "x.npy", tmp_path / "p.parquet",
                       progress=False)
    assert out["rows"] == 200
