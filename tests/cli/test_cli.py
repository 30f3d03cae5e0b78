import json
import subprocess
import sys

import numpy as np
import pytest

from ebjr.bundle import read_bundle
from ebjr.cli import main
from helpers import shared_file, synthetic


@pytest.fixture
def pair_files(tmp_path):
    s, t, y = synthetic(600, seed=4)
    sp, tp = tmp_path / "s.npz", tmp_path / "t.npz"
    np.savez(sp, logits=s, labels=y)
    np.savez(tp, logits=t, labels=y)
    return sp, tp, y


def test_evaluate_json_on_a_public_pair(capsys):
    s = shared_file("cifar10_resnet20.npz")
    t = shared_file("cifar10_resnet56.npz")
    code = main(
        [
            "evaluate",
            str(s),
            str(t),
            "--student-cost",
            "40.81",
            "--teacher-cost",
            "125.75",
            "--json",
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n"] == 10000
    assert d["student"]["accuracy"] == pytest.approx(0.926)
    assert d["teacher"]["accuracy"] == pytest.approx(0.9437)
    for name in ["energy", "softmax", "entropy", "maxlogit", "margin"]:
        p = d["routers"][name]["at_teacher_accuracy"]
        assert p["accuracy"] >= 0.9437
        assert p["speedup"] == pytest.approx(125.75 / p["cost"])
    assert (
        d["oracle"]["teacher_fraction"]
        < d["routers"]["energy"]["at_teacher_accuracy"]["teacher_fraction"]
    )


def test_evaluate_table_and_report(pair_files, tmp_path, capsys):
    sp, tp, _ = pair_files
    assert main(["evaluate", str(sp), str(tp), "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "energy" in out and "oracle (bound)" in out
    html = (tmp_path / "rep" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "McNemar" in html
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert "energy" in results["routers"]


def test_calibrate_guaranteed_writes_bundle(pair_files, tmp_path, capsys):
    sp, tp, _ = pair_files
    out = tmp_path / "b.json"
    code = main(
        [
            "calibrate",
            str(sp),
            str(tp),
            "--max-drop",
            "0.02",
            "--confidence",
            "0.9",
            "-o",
            str(out),
            "--student-cost",
            "1",
            "--teacher-cost",
            "5",
        ]
    )
    assert code == 0
    b = read_bundle(out)
    assert b.target["kind"] == "guaranteed_drop" and b.target["delta"] == pytest.approx(0.1)
    assert b.calibration["n"] == 600 and b.router["name"] == "energy"
    assert b.costs == {"student": 1.0, "teacher": 5.0, "unit": ""}
    assert "guarantee: accuracy drop" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target",
    [
        ["--teacher-accuracy"],
        ["--max-drop", "0.01"],
        ["--max-teacher-fraction", "0.3"],
        ["--max-cost", "2.0"],
        ["--histogram-crossing"],
    ],
)
def test_calibrate_targets(pair_files, tmp_path, target):
    sp, tp, _ = pair_files
    out = tmp_path / "b.json"
    assert main(["calibrate", str(sp), str(tp), *target, "-o", str(out), "--json"]) == 0
    assert read_bundle(out).calibration["n"] == 600


def test_calibrate_label_free(tmp_path, capsys):
    s, t, _ = synthetic(500)
    sp, tp = tmp_path / "s.npz", tmp_path / "t.npz"
    np.savez(sp, logits=s)
    np.savez(tp, logits=t)
    code = main(
        [
            "calibrate",
            str(sp),
            str(tp),
            "--max-drop",
            "0.05",
            "--confidence",
            "0.9",
            "--loss",
            "disagreement",
            "--router",
            "softmax",
            "-o",
            str(tmp_path / "b.json"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "agreement with teacher" in capsys.readouterr().out


def test_cli_errors_are_clear(pair_files, tmp_path, capsys):
    sp, tp, y = pair_files
    other = tmp_path / "other.npz"
    np.savez(other, logits=np.zeros((600, 5)), labels=np.roll(y, 1))
    cases = [
        (["evaluate", str(sp), str(other)], "labels disagree"),
        (["evaluate", str(sp), str(tmp_path / "missing.npz")], "outputs file not found"),
        (["evaluate", str(sp), str(tp), "--routers", "energy,bogus"], "unknown router 'bogus'"),
        (
            ["calibrate", str(sp), str(tp), "--max-cost", "0.5", "-o", str(tmp_path / "x.json")],
            "cannot be met",
        ),
        (
            [
                "calibrate",
                str(sp),
                str(tp),
                "--teacher-accuracy",
                "--confidence",
                "0.9",
                "-o",
                str(tmp_path / "x.json"),
            ],
            "--confidence goes with --max-drop",
        ),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert match in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["evaluate", str(bad), str(tp)]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    nolog = tmp_path / "nolog.npz"
    np.savez(nolog, scores=np.zeros(3))
    assert main(["evaluate", str(nolog), str(tp)]) == 2
    assert "has no 'logits' array; it holds ['scores']" in capsys.readouterr().err


def test_energy_on_public_log_probabilities_is_refused(tmp_path, capsys):
    s = shared_file("cifar10_netcal-lenet5.npz")
    t = shared_file("cifar10_netcal-wrn16-4.npz")
    assert (
        main(["calibrate", str(s), str(t), "--teacher-accuracy", "-o", str(tmp_path / "b.json")])
        == 2
    )
    assert "log-probabilities" in capsys.readouterr().err
    assert main(["evaluate", str(s), str(t), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "energy" in d["skipped"] and "softmax" in d["routers"]


def test_cold_start_does_not_import_torch():
    code = (
        "import sys, runpy; sys.argv = ['ebjr', 'evaluate', '--help']\n"
        "try:\n    runpy.run_module('ebjr.cli', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "bad = [m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    # what was imported is the test; how long it took is benchmarks/cold_start.py's
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
