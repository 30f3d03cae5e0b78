"""``ebjr calibrate / evaluate --task detection`` on detectors' outputs files and COCO ground
truth, checked against the library's curve built with the ground truth given in memory."""

import json

import numpy as np
import pytest

from ebjr.bundle import read_bundle
from ebjr.bundle.outputs import load_detections, save_detections
from ebjr.calibration import MaxDrop, curve_from_metric, select_threshold
from ebjr.cli import main
from ebjr.evaluation.detection import MapMetric, detection_scores
from ebjr.scores.detection import Detections
from helpers import coco_annotations

pytest.importorskip("pycocotools", reason="pip install 'ebjr[detection]'")


def _world(n=40, seed=0):
    """Ground truth of ``n`` images, and two detectors: a noisy student that is unsure where
    it is wrong, and a near-perfect teacher."""
    rng = np.random.default_rng(seed)
    truth, student, teacher = [], [], []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        xy = rng.uniform(0, 60, size=(k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 30, size=(k, 2))], axis=1)
        labels = rng.integers(1, 4, k)
        truth.append((boxes, labels))
        noise = rng.uniform(0, 12)
        logits = rng.normal(size=(k, 3)) * (3 - noise / 5)  # sure when accurate
        student.append(Detections(boxes + rng.normal(0, noise, size=boxes.shape), labels,
                                  rng.uniform(0.5, 1, k), logits))
        teacher.append(Detections(boxes + rng.normal(0, 0.5, size=boxes.shape), labels,
                                  rng.uniform(0.8, 1, k), rng.normal(size=(k, 3)) * 3))
    return truth, student, teacher


@pytest.fixture
def files(tmp_path):
    truth, student, teacher = _world()
    ids = np.arange(100, 140)  # COCO ids need not be row numbers
    sp, tp, gp = tmp_path / "s.npz", tmp_path / "t.npz", tmp_path / "gt.json"
    save_detections(sp, student, ids)
    save_detections(tp, teacher, ids)
    gp.write_text(json.dumps(coco_annotations(truth, ids, (1, 2, 3))))
    return sp, tp, gp, truth, student, teacher


def test_outputs_files_round_trip_ragged_detections(files):
    sp, _, _, _, student, _ = files
    back, ids = load_detections(sp)
    assert ids.tolist() == list(range(100, 140))
    for a, b in zip(student, back, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.class_logits, b.class_logits)


def test_calibrate_equals_the_curve_built_from_the_ground_truth_in_memory(files, tmp_path,
                                                                          capsys):
    sp, tp, gp, truth, student, teacher = files
    out = tmp_path / "det.json"
    assert main(["calibrate", str(sp), str(tp), "--task", "detection", "--ground-truth",
                 str(gp), "--max-drop", "0.02", "-o", str(out)]) == 0
    assert "teacher share" in capsys.readouterr().out
    b = read_bundle(out)
    assert b.task == {"kind": "detection", "max_detections": 100}
    assert b.router["name"] == "detection_energy"
    metric = MapMetric(student, teacher, truth, 4)  # the same truth, built in memory
    curve = curve_from_metric(detection_scores(student), metric, n_points=21, quality="mAP")
    want = select_threshold(curve, MaxDrop(0.02))
    assert b.threshold == want.threshold
    assert b.calibration["accuracy"] == pytest.approx(want.point.accuracy)
    assert b.calibration["student_quality"] < b.calibration["teacher_quality"]


def test_evaluate_prints_every_detection_router(files, capsys):
    sp, tp, gp, *_ = files
    assert main(["evaluate", str(sp), str(tp), "--task", "detection", "--ground-truth",
                 str(gp), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n"] == 40 and d["student_map"] < d["teacher_map"]
    assert {"energy", "energy_cls", "mean_confidence"} <= set(d["routers"])


@pytest.mark.parametrize(("extra", "match"), [
    (["--max-drop", "0.02"], "needs --ground-truth"),
    (["--ground-truth", "GT", "--max-drop", "0.02", "--confidence", "0.9"],
     "no per-image test"),
    (["--ground-truth", "GT", "--max-drop", "0.02", "--router", "softmax"], "scores logits"),
])
def test_what_does_not_apply_to_a_detector_is_refused(files, tmp_path, capsys, extra, match):
    sp, tp, gp, *_ = files
    extra = [str(gp) if a == "GT" else a for a in extra]
    assert main(["calibrate", str(sp), str(tp), "--task", "detection", *extra,
                 "-o", str(tmp_path / "o.json")]) == 2
    assert match in capsys.readouterr().err


def test_image_ids_missing_from_the_ground_truth_are_named(files, tmp_path, capsys):
    sp, tp, _, truth, *_ = files
    gp = tmp_path / "other.json"
    gp.write_text(json.dumps(coco_annotations(truth, np.arange(40), (1, 2, 3))))
    assert main(["evaluate", str(sp), str(tp), "--task", "detection", "--ground-truth",
                 str(gp)]) == 2
    assert "image ids [100, 101" in capsys.readouterr().err
