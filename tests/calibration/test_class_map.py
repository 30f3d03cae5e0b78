"""A specialized student (top-C classes plus ``other``) calibrated from outputs files: the class
map through tradeoff_curve, calibrate_outputs, evaluate and the command line."""

import json

import numpy as np
import pytest

from ebjr import InputError, JointModel
from ebjr.bundle import read_bundle
from ebjr.calibration import GuaranteedDrop, MaxDrop, curve_from_scores, tradeoff_curve
from ebjr.calibration.calibrate import calibrate_outputs
from ebjr.cli import main
from ebjr.evaluation import evaluate
from ebjr.routing import get_router
from ebjr.training.specialized import ClassMap


def specialized_pair(n: int = 3000, seed: int = 0):
    """Teacher logits over 10 classes, a student over the 4 most frequent plus ``other``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(10, size=n, p=[0.3, 0.25, 0.15, 0.1] + [0.2 / 6] * 6)
    t = rng.normal(size=(n, 10)) + 3.0 * np.eye(10)[y]
    cmap = ClassMap.from_labels(y, n_top=4, n_classes=10)
    s = rng.normal(size=(n, 5)) + 2.0 * np.eye(5)[cmap.to_student(y)]
    return s, t, y, cmap


def test_the_curve_maps_the_students_answers_into_the_teachers_classes():
    s, t, y, cmap = specialized_pair()
    m = cmap.joint_class_map()
    curve = tradeoff_curve(s, t, y, "specialized", class_map=m)
    by_hand = curve_from_scores(get_router("specialized").score(s), np.asarray(m)[s.argmax(1)],
                                t.argmax(1), y)
    np.testing.assert_array_equal(curve.accuracy, by_hand.accuracy)
    np.testing.assert_array_equal(curve.teacher_fraction, by_hand.teacher_fraction)
    other = s.argmax(1) == 4  # rows the student calls 'other' always go to the teacher
    assert curve.teacher_fraction[0] == pytest.approx(other.mean())


@pytest.mark.parametrize("target", [MaxDrop(0.01), GuaranteedDrop(0.01, 0.1)])
def test_a_calibrated_specialized_bundle_routes_as_calibrated(target):
    s, t, y, cmap = specialized_pair()
    result = calibrate_outputs(s, t, y, target, router="specialized",
                               class_map=cmap.joint_class_map())
    assert result.bundle.class_map == cmap.joint_class_map()
    joint = JointModel(lambda i: s[i], lambda i: t[i], "specialized", result.bundle.threshold,
                       class_map=result.bundle.class_map)
    out = joint.predict(np.arange(len(y)))
    assert np.mean(out.predictions == y) == pytest.approx(result.selection.point.accuracy)
    assert np.mean(out.to_teacher) == pytest.approx(result.selection.point.teacher_fraction)


def test_bad_class_maps_are_refused_with_what_was_expected():
    s, t, y, _ = specialized_pair(300)
    with pytest.raises(InputError, match="needs a class_map"):
        tradeoff_curve(s, t, y, "specialized")
    with pytest.raises(InputError, match="5 integers, got shape \\(4,\\)"):
        tradeoff_curve(s, t, y, "specialized", class_map=[0, 1, 2, 3])
    with pytest.raises(InputError, match=r"lie in -1 \.\. 9"):
        tradeoff_curve(s, t, y, "specialized", class_map=[0, 1, 2, 10, -1])
    with pytest.raises(InputError, match="router 'auto'"):
        calibrate_outputs(s, t, y, MaxDrop(0.01), router="auto", class_map=[0, 1, 2, 3, -1])


def test_the_command_line_takes_a_class_map_file(tmp_path, capsys):
    s, t, y, cmap = specialized_pair()
    np.savez(tmp_path / "spec.npz", logits=s, labels=y)  # teacher-space labels in both files
    np.savez(tmp_path / "teacher.npz", logits=t, labels=y)
    (tmp_path / "cmap.json").write_text(json.dumps(cmap.joint_class_map()))
    files = [str(tmp_path / "spec.npz"), str(tmp_path / "teacher.npz")]
    assert main(["calibrate", *files, "--router", "specialized", "--class-map",
                 str(tmp_path / "cmap.json"), "--max-drop", "0.01", "-o",
                 str(tmp_path / "b.json")]) == 0, capsys.readouterr().err
    assert read_bundle(tmp_path / "b.json").class_map == cmap.joint_class_map()
    capsys.readouterr()
    assert main(["evaluate", *files, "--routers", "specialized,softmax", "--class-map",
                 str(tmp_path / "cmap.json"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    ev = evaluate(s, t, y, ["specialized"], class_map=cmap.joint_class_map())
    assert d["student"]["accuracy"] == pytest.approx(ev.student_accuracy)
    assert main(["calibrate", *files, "--router", "specialized", "--max-drop", "0.01", "-o",
                 str(tmp_path / "x.json")]) == 2
    assert "--class-map FILE" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"a": 1}')
    assert main(["calibrate", *files, "--class-map", str(tmp_path / "bad.json"),
                 "--max-drop", "0.01", "-o", str(tmp_path / "x.json")]) == 2
    assert "flat list of integers" in capsys.readouterr().err
