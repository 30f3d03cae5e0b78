"""Every Python example in the docs runs as written (each file's blocks in order, one scope),
on the data the library bundles or the public outputs in ../shared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


def run(name: str, scope: dict | None = None) -> dict:
    scope = {} if scope is None else scope
    for i, code in enumerate(blocks(name)):
        exec(compile(code, f"docs/{name} (python block {i + 1})", "exec"), scope)
    return scope


def test_students_examples_run(capsys):
    scope = run("students.md")
    assert scope["out"].predictions.shape == (397,)
    assert scope["result"].heldout_kl_after < scope["result"].heldout_kl_before
    assert "teacher share" in capsys.readouterr().out


def test_regression_examples_run():
    import numpy as np

    scope = run("regression.md")
    want = -np.log(np.sqrt(2 * np.pi) * scope["sigma"])  # the closed form of the Gaussian
    np.testing.assert_allclose(scope["est"].free_energy, want, atol=5 * scope["est"].std_error
                               .max() + 1e-3)
    assert scope["choice"].point.teacher_fraction <= 1.0
    assert scope["guaranteed"].target["loss_range"] == [0.0, 300.0]
    out, threshold = scope["out"], scope["guaranteed"].threshold  # the live joint regressor
    s_mean, s_std = scope["student"].predict(scope["x"][300:], return_std=True)
    t_pred = scope["teacher"].predict(scope["x"][300:])
    teacher = -s_std < threshold
    np.testing.assert_allclose(out.predictions, np.where(teacher, t_pred, s_mean))
    assert out.answered_by.tolist() == np.where(teacher, "teacher", "student").tolist()


@pytest.mark.integration  # trains two small detectors (~20 s)
def test_detection_examples_run():
    scope = run("detection.md")
    import numpy as np

    curve, metric, n = scope["curve"], scope["metric"], len(scope["val"])
    assert curve.quality == "mAP" and len(curve) == 21
    assert curve.teacher_fraction[0] == 0 and curve.teacher_fraction[-1] == 1
    assert curve.accuracy[0] == pytest.approx(metric(np.zeros(n, bool)))  # the student alone
    assert curve.accuracy[-1] == pytest.approx(metric(np.ones(n, bool)))  # the teacher alone


def test_cascades_examples_run(tmp_path, monkeypatch, capsys):
    """The zoo search on four public CIFAR-100 outputs (linked into a scratch folder, where the
    live example also saves its cascade), then a live cascade saved and loaded."""
    from ebjr import load as ebjr_load
    from ebjr.joint.cascade_model import CascadeModel
    from helpers import shared_file

    for m in ("resnet20", "mobilenetv2_x0_75", "mobilenetv2_x1_4", "repvgg_a2"):
        (tmp_path / f"cifar100_{m}.npz").symlink_to(shared_file(f"cifar100_{m}.npz"))
    monkeypatch.chdir(tmp_path)
    scope = run("cascades.md", {"ebjr": __import__("ebjr")})
    assert scope["result"].predictions.shape == (10_000,)
    assert "certified" in scope["cascade"].details and "(" in capsys.readouterr().out
    assert isinstance(scope["live"], CascadeModel) and scope["out"].predictions.shape == (32,)
    assert (tmp_path / "zoo" / "cascade.json").is_file()
    served = ebjr_load(tmp_path / "zoo" / "chosen-bundle.json")
    assert served.stages == ("small", "big") and served.input["shape"] == [8, 8]


def test_monitor_example_runs(capsys):
    scope = run("monitor.md")
    m = scope["monitor"]
    assert m.rows == 25_600 and not m.alarm and 0.008 < m.drop_upper < 0.05
    assert "False" in capsys.readouterr().out
