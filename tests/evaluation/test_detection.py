"""Detection energy (eq. 12-14) against a direct implementation, mAP via pycocotools,
the joint detector, the digit canvases and the grid detector."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from ebjr.evaluation.detection import (
    Detections,
    JointDetector,
    MapMetric,
    detection_free_energy,
    detection_scores,
    dfl_coordinate_free_energy,
    joint_detections,
    mean_average_precision,
)
from ebjr.exceptions import InputError
from helpers import coco_annotations


def random_detections(rng, n_images, n_classes=5, with_coords=True, max_boxes=4):
    out = []
    for _ in range(n_images):
        b = int(rng.integers(0, max_boxes + 1))
        xy = rng.uniform(0, 30, size=(b, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(2, 10, size=(b, 2))], axis=1)
        logits = rng.normal(0, 3, size=(b, n_classes))
        p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
        out.append(Detections(boxes, p.argmax(1), p.max(1), logits,
                              rng.normal(size=(b, 4)) if with_coords else None))
    return out


def direct_energy(dets, empty=math.inf, regression=True):
    """Eq. 12-14 written out with loops."""
    out = []
    for d in dets:
        b = len(d)
        if b == 0:
            out.append(empty)
            continue
        f_cls = sum(-logsumexp(d.class_logits[i]) for i in range(b)) / b
        f_reg = 0.0
        if regression and d.coord_energy is not None:
            f_reg = sum(d.coord_energy[i, j] for i in range(b) for j in range(4)) / (4 * b)
        out.append(f_cls + f_reg)
    return np.array(out)


@given(st.integers(0, 2**31 - 1), st.booleans())
def test_detection_energy_equals_eq_12_to_14(seed, with_coords):
    dets = random_detections(np.random.default_rng(seed), 12, with_coords=with_coords)
    np.testing.assert_allclose(detection_free_energy(dets), direct_energy(dets), rtol=1e-12)
    np.testing.assert_allclose(detection_free_energy(dets, regression=False),
                               direct_energy(dets, regression=False), rtol=1e-12)
    np.testing.assert_allclose(detection_free_energy(dets, empty=2.5),
                               direct_energy(dets, empty=2.5), rtol=1e-12)
    s = detection_scores(dets)
    empty = np.array([len(d) == 0 for d in dets])
    assert (s[empty] == -np.inf).all() and np.isfinite(s[~empty]).all()  # empty: the teacher


def test_zero_box_images_follow_the_documented_rule():
    dets = [Detections.empty(3)]
    assert detection_free_energy(dets)[0] == math.inf
    assert detection_scores(dets, "mean_confidence")[0] == -math.inf
    assert detection_free_energy(dets, empty=1.0)[0] == 1.0
    with pytest.raises(InputError, match="empty"):
        detection_free_energy(dets, empty="student")
    with pytest.raises(InputError, match="unknown detection router"):
        detection_scores(dets, "nope")


def test_dfl_energy_is_the_exact_integral_of_the_piecewise_density():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 16))
    width = 0.5
    # the density is exp(l_r) on each bin of width w: integral = sum_r w exp(l_r)
    direct = -np.log((width * np.exp(logits)).sum(axis=-1))
    np.testing.assert_allclose(dfl_coordinate_free_energy(logits, width), direct, rtol=1e-12)
    with pytest.raises(InputError, match="bin_width"):
        dfl_coordinate_free_energy(logits, 0)


def test_detections_are_checked():
    with pytest.raises(InputError, match="labels"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2), np.zeros((2, 3)))
    with pytest.raises(InputError, match="coord_energy"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros(2), np.zeros((2, 3)), np.zeros((2, 3)))


def test_map_by_pycocotools_and_the_joint_metric():
    rng = np.random.default_rng(3)
    targets, perfect, jittered = [], [], []
    for _ in range(20):
        k = int(rng.integers(1, 4))
        xy = rng.uniform(0, 30, size=(k, 2))
        boxes = np.concatenate([xy, xy + 10], axis=1)
        labels = rng.integers(0, 4, size=k)
        targets.append((boxes, labels))
        logits = np.eye(4)[labels] * 5
        perfect.append(Detections(boxes, labels, np.full(k, 0.9), logits))
        jittered.append(Detections(boxes + rng.normal(0, 2, size=boxes.shape), labels,
                                   np.full(k, 0.9), logits))
    assert mean_average_precision(perfect, targets, 4)["map"] == pytest.approx(1.0)
    worse = mean_average_precision(jittered, targets, 4)
    assert 0 < worse["map"] < worse["map_50"] <= 1
    nothing = [Detections.empty(4) for _ in targets]
    assert mean_average_precision(nothing, targets, 4) == {"map": 0.0, "map_50": 0.0}
    metric = MapMetric(jittered, perfect, targets, 4)
    mask = np.arange(20) % 3 == 0
    want = mean_average_precision(joint_detections(jittered, perfect, mask), targets, 4)["map"]
    assert metric(mask) == pytest.approx(want)
    assert metric(np.zeros(20, bool)) == pytest.approx(worse["map"])


def _coco_map(path, detections, ids, key):
    """pycocotools from scratch: the annotations file, the detections as results."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    res = [{"image_id": int(i), "category_id": int(c), "score": float(sc),
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
           for i, d in zip(ids, detections, strict=True)
           for b, c, sc in zip(d.boxes, d.labels, d.scores, strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.params.imgIds = list(ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(ev.stats[0 if key == "map" else 1], 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_metric_equals_pycocotools_on_the_joint_detections_at_every_mask(seed, tmp_path):
    """The metric reuses each model's per-image evaluation; the reference evaluates the
    joint detections from scratch. Shuffled COCO image ids, images with no box, tied
    scores, and a model with no detection at all are included."""
    rng = np.random.default_rng(seed)
    n, c = 24, 4
    truth = random_detections(rng, n, c)
    targets = [(d.boxes, d.labels) for d in truth]

    def near(d, noise, keep):  # the truth's boxes moved by ``noise``, some dropped
        k = rng.random(len(d)) < keep
        return Detections(d.boxes[k] + rng.normal(0, noise, size=d.boxes[k].shape),
                          d.labels[k], rng.uniform(0.3, 1, size=k.sum()), d.class_logits[k])

    student = [near(d, 1.0, 0.7) for d in truth]
    teacher = [near(d, 0.3, 0.9) for d in truth]
    for d in student[:6]:  # tied scores across images
        d.scores[:] = 0.5
    ids = [int(i) for i in rng.permutation(1000)[:n]]  # row r is COCO image ids[r]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_annotations(targets, ids, range(c))))
    masks = [rng.random(n) < p for p in (0.0, 0.3, 0.5, 0.7, 1.0)]
    alone = [mean_average_precision(m, targets, c)["map"] for m in (student, teacher)]
    assert 0.05 < alone[0] < alone[1] - 0.05  # the masks' choices matter
    for key in ("map", "map_50"):
        metric = MapMetric.from_coco(student, teacher, path, ids, key=key)
        in_memory = MapMetric(student, teacher, targets, c, key=key)
        for mask in masks:
            joint = joint_detections(student, teacher, mask)
            # tied scores across images rank in pycocotools' image order (by id), so the
            # file's shuffled ids and the in-memory 0..n-1 may differ: each has its reference
            assert metric(mask) == pytest.approx(_coco_map(path, joint, ids, key), abs=1e-12)
            want = mean_average_precision(joint, targets, c)[key]
            assert in_memory(mask) == pytest.approx(want, abs=1e-12)
    nothing = [Detections.empty(c) for _ in range(n)]
    metric = MapMetric(nothing, teacher, targets, c)
    for mask in masks:
        want = mean_average_precision(joint_detections(nothing, teacher, mask), targets, c)
        assert metric(mask) == pytest.approx(want["map"], abs=1e-12)
    with pytest.raises(InputError, match="expected 24 booleans"):
        metric(np.ones(23, bool))
    with pytest.raises(InputError, match="repeated image id"):
        MapMetric.from_coco(student, teacher, path, [ids[0]] * n)


def test_joint_detector_sends_only_low_scoring_images_to_the_teacher():
    rng = np.random.default_rng(5)
    images = np.arange(10)
    s_dets = random_detections(rng, 10)
    t_dets = random_detections(rng, 10)
    seen = []

    def teacher(batch):
        seen.append(batch.tolist())
        return [t_dets[i] for i in batch]

    scores = detection_scores(s_dets)
    t = float(np.median(scores[np.isfinite(scores)]))
    joint = JointDetector(lambda b: [s_dets[i] for i in b], teacher, t)
    p = joint.predict(images)
    out, mask = p.predictions, np.asarray(p.to_teacher)
    assert p.answered_by.tolist() == np.where(mask, "teacher", "student").tolist()
    assert mask.tolist() == (scores < t).tolist()
    assert seen == [images[mask].tolist()]
    for i in range(10):
        assert out[i] is (t_dets[i] if mask[i] else s_dets[i])
    assert out == joint_detections(s_dets, t_dets, mask)
    # the live knob: -inf keeps every image with a box on the student (empty ones still go)
    assert joint.set_threshold(-math.inf) == t
    seen.clear()
    mask = np.asarray(joint.predict(images).to_teacher)
    assert mask.tolist() == [len(d) == 0 for d in s_dets]
    assert seen == ([images[mask].tolist()] if mask.any() else [])
    with pytest.raises(InputError, match="scores logits, not detections"):
        JointDetector(lambda b: b, teacher, 0.0, router="softmax")


def test_digit_canvases_are_seeded_disjoint_and_drawn_in_their_boxes():
    from ebjr.zoo.digit_canvas import make_digit_canvases

    a = make_digit_canvases(30, seed=4)
    b = make_digit_canvases(30, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (30, 48, 48) and 0 <= a.images.min() and a.images.max() <= 1
    for boxes, labels, img in zip(a.boxes, a.labels, a.images, strict=True):
        assert 1 <= len(boxes) == len(labels) <= 4
        assert (boxes >= 0).all() and (boxes <= 48).all()
        for i in range(len(boxes)):
            x0, y0, x1, y1 = boxes[i].astype(int)
            assert img[y0:y1, x0:x1].max() > 0.5  # ink inside every box
            for j in range(i):
                o = boxes[j]
                assert x1 <= o[0] or o[2] <= x0 or y1 <= o[1] or o[3] <= y0


def test_grid_detector_outputs_carry_logits_and_coordinate_energies():
    import torch

    from ebjr.zoo.digit_canvas import make_digit_canvases
    from ebjr.zoo.grid_detector import GridDetector, _nms, decode, train_detector

    data = make_digit_canvases(96, seed=0)
    model = GridDetector(width=4)
    losses = train_detector(model, data.images, data.boxes, data.labels, epochs=3, seed=0)
    assert losses[-1] < losses[0]
    dets = decode(model, data.images[:8], min_confidence=0.0)  # every cell, before NMS
    logits, bins = model(torch.as_tensor(data.images[:8]))
    for i, d in enumerate(dets):
        assert d.class_logits.shape == (len(d), 10) and d.coord_energy.shape == (len(d), 4)
        # each kept box's energy is its cell's: find the cell by its class logits
        for k in range(len(d)):
            cell = np.argwhere(np.isclose(logits[i, ..., :10].detach().numpy(),
                                          d.class_logits[k]).all(-1))[0]
            want = dfl_coordinate_free_energy(bins[i, cell[0], cell[1]].detach().double().numpy())
            np.testing.assert_allclose(d.coord_energy[k], want, rtol=1e-6)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    kept = _nms(boxes, np.array([0.9, 0.8, 0.7, 0.95]), np.array([1, 1, 1, 2]), 0.5)
    assert kept.tolist() == [3, 0, 2]  # the overlapping same-class box is suppressed
