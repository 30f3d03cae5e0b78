"""The detection task kind: the padded protocol encoding round-trips ragged per-image
detections; a detection bundle round-trips; the joint detector equals a loop written out
per image on eq. 12-14."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebjr
from ebjr.bundle import read_bundle
from ebjr.exceptions import BundleError, InputError
from ebjr.scores.detection import Detections, detection_free_energy
from ebjr.tasks import get_task
from ebjr.tasks.detection import Detection, pad_detections, unpad_detections
from serve_support import detection_rows, make_detection_bundle


def random_dets(rng, b, c=3):
    boxes = rng.uniform(0, 40, size=(b, 4))
    boxes[:, 2:] += boxes[:, :2]
    return Detections(boxes, rng.integers(0, c, b), rng.uniform(0, 1, b),
                      rng.normal(size=(b, c)), rng.normal(size=(b, 4)))


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=6), k=st.integers(1, 10),
       seed=st.integers(0, 1000))
def test_the_padded_encoding_round_trips_ragged_detections(sizes, k, seed):
    rng = np.random.default_rng(seed)
    dets = [random_dets(rng, b) for b in sizes]
    t = pad_detections(dets, k)
    assert t["detection_boxes"].shape == (len(sizes), k, 4)
    back = unpad_detections(t)
    for d, got, b in zip(dets, back, sizes, strict=True):
        m = min(b, k)
        assert got["boxes"].shape == (m, 4)
        top = np.argsort(-d.scores, kind="stable")[:m]  # the highest-scoring boxes, in order
        np.testing.assert_allclose(got["boxes"], d.boxes[top].astype(np.float32))
        np.testing.assert_allclose(got["scores"], d.scores[top].astype(np.float32))
        np.testing.assert_array_equal(got["labels"], d.labels[top])
    row = int(np.argmin(sizes))
    pad = slice(min(sizes[row], k), None)  # past the count: zeros, classes -1
    assert (t["detection_classes"][row, pad] == -1).all()
    assert not t["detection_scores"][row, pad].any()


def test_a_joint_detector_equals_a_loop_over_images_on_eq_14():
    rng = np.random.default_rng(2)
    s = [random_dets(rng, b) for b in (0, 3, 1, 5, 2, 4)]
    t = [random_dets(rng, 2) for _ in s]
    f = detection_free_energy(s)
    threshold = float(np.median(-f[np.isfinite(f)]))
    joint = ebjr.JointDetector(lambda x: [s[int(i)] for i in x],
                               lambda x: [t[int(i)] for i in x], threshold)
    out = joint.predict(np.arange(len(s)))
    for i in range(len(s)):
        # eq. 12-14 per image written out: mean over boxes of -logsumexp, plus the coordinates'
        if len(s[i]) == 0:
            teacher = True  # no box: always the teacher
        else:
            lse = np.log(np.exp(s[i].class_logits).sum(axis=1))
            score = -(np.mean(-lse) + np.mean(s[i].coord_energy))
            teacher = score < threshold
        assert out.predictions[i] is (t[i] if teacher else s[i])
        assert out.answered_by[i] == ("teacher" if teacher else "student")
    assert joint.counts()["teacher_rows"] == int(np.asarray(out.to_teacher).sum())


def test_detector_outputs_of_the_wrong_form_are_refused():
    task = Detection()
    with pytest.raises(InputError, match="one result per image"):
        task.check_output(np.zeros((2, 3)), 2, "student")
    with pytest.raises(InputError, match="2 results for a batch of 3"):
        task.check_output([{}, {}], 3, "student")
    with pytest.raises(InputError, match="lacks \\['class_logits'\\]"):
        task.check_output([{"boxes": np.zeros((0, 4)), "labels": [], "scores": []}], 1, "s")
    bad = {"boxes": np.full((1, 4), np.nan), "labels": [0], "scores": [0.5],
           "class_logits": np.zeros((1, 2))}
    with pytest.raises(InputError, match="boxes contains NaN"):
        task.check_output([bad], 1, "student")
    with pytest.raises(InputError, match="max_detections"):
        Detection(0)
    assert get_task("detection", max_detections=5) == Detection(5)


def test_a_detection_bundle_round_trips(tmp_path):
    path = make_detection_bundle(tmp_path)
    joint = ebjr.load(path)
    assert joint.task == Detection(8) and joint.router.name == "detection_energy"
    x = detection_rows(12, seed=5)
    a = joint.predict(x)
    b = ebjr.load(path).predict(x)
    assert a.answered_by.tolist() == b.answered_by.tolist()
    assert 0 < int(np.asarray(a.to_teacher).sum()) < len(x)
    for da, db in zip(a.predictions, b.predictions, strict=True):
        np.testing.assert_array_equal(da.boxes, db.boxes)
        np.testing.assert_array_equal(da.class_logits, db.class_logits)
    doc = json.loads(path.read_text())
    assert doc["task"] == {"kind": "detection", "max_detections": 8}
    doc["router"] = {"name": "energy", "params": {}}  # a router of logits
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="routed by one of"):
        read_bundle(tmp_path / "bad.json")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rpn_pre_nms_top_n_test": 10**9}, "rpn_pre_nms_top_n_test"),
    ({"num_classes": 10**9}, "num_classes"),
    ({"min_size": 10**6}, "min_size"),
    ({"box_score_thresh": 2.0}, "box_score_thresh"),
    ({"trainable_backbone_layers": 5}, "unknown option 'trainable_backbone_layers'"),
])
def test_a_bundle_cannot_make_the_torchvision_builder_allocate_what_it_names(kwargs, match):
    """The builder's arguments come from a bundle: bounded and listed, checked before
    torchvision is imported or anything is built."""
    from ebjr.zoo.torchvision_detection import make_torchvision_detector

    with pytest.raises(InputError, match=match):
        make_torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", **kwargs)
