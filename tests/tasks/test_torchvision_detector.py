"""torchvision's Faster R-CNN as a joint detector's student and teacher, through the
built-in wrapper (:mod:`ebjr.zoo.torchvision_detection`). torchvision's compiled ops do not
load on this CPU torch: :func:`torchvision_support.import_torchvision` registers a pure-torch
``torchvision::nms`` first (a test-only stand-in; RoI Align runs torchvision's own pure-torch
path). Models are built with random weights (no download)."""

import numpy as np
import pytest
from scipy.special import logsumexp

from torchvision_support import import_torchvision

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models():
    import_torchvision()
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.zoo.torchvision_detection import make_torchvision_detector

    small = {"min_size": 128, "max_size": 128, "rpn_pre_nms_top_n_test": 200,
             "rpn_post_nms_top_n_test": 100, "box_detections_per_img": 12, "num_classes": 4}
    kw = {"student": {"name": "fasterrcnn_mobilenet_v3_large_320_fpn", **small},
          "teacher": {"name": "fasterrcnn_mobilenet_v3_large_fpn", **small}}
    torch.manual_seed(0)
    return {role: TorchAdapter(make_torchvision_detector(**kw[role]).eval(),
                               factory="ebjr.zoo.torchvision_detection:make_torchvision_detector",
                               factory_kwargs=kw[role]) for role in kw}


@pytest.fixture(scope="module")
def images():
    import torch

    torch.manual_seed(1)
    return torch.rand(4, 3, 96, 128)


def test_the_wrapper_returns_what_torchvision_returns_plus_each_kept_boxs_logits(models,
                                                                                  images):
    import torch

    wrapper = models["student"].module
    with torch.inference_mode():
        ours = wrapper(images)
        theirs = wrapper.model(list(images))
    for a, b in zip(ours, theirs, strict=True):
        for key in ("boxes", "labels", "scores"):
            torch.testing.assert_close(a[key], b[key])
        assert a["class_logits"].shape == (len(b["boxes"]), 3)  # 4 classes, background dropped


def test_eq_12_14_against_a_loop_over_images(models, images):
    import ebjr

    s = models["student"].forward(images)
    energy = [np.mean(-logsumexp(d["class_logits"].numpy().astype(np.float64), axis=1))
              if len(d["boxes"]) else np.inf for d in s]  # eq. 12; no coordinate term (eq. 13)
    threshold = float(np.median(-np.asarray(energy)))
    joint = ebjr.JointDetector(models["student"], models["teacher"], threshold)
    out = joint.predict(images)
    routed = [i for i, f in enumerate(energy) if -f < threshold]
    assert 0 < len(routed) < len(images)
    t = dict(zip(routed, models["teacher"].forward(images[routed]), strict=True))  # only those
    for i, f in enumerate(energy):
        assert out.answered_by[i] == ("teacher" if i in t else "student")
        want = t[i] if i in t else s[i]
        np.testing.assert_allclose(out.predictions[i].boxes, want["boxes"].numpy(), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(out.scores)[i], -f, rtol=1e-6)


def test_a_torchvision_joint_detector_is_a_bundle_ebjr_serve_answers(models, images, tmp_path):
    from fastapi.testclient import TestClient

    import ebjr
    from ebjr.bundle import RoutingBundle
    from ebjr.serve.app import create_app
    from ebjr.serve.settings import ServeSettings
    from ebjr.tasks.detection import pad_detections
    from serve_support import infer_body, outputs

    joint = ebjr.JointDetector(models["student"], models["teacher"], 0.0, max_detections=12)
    scores = np.asarray(joint.route(images).scores)
    joint.set_threshold(float(np.median(scores)))
    record = RoutingBundle(router=joint.router.to_spec(), threshold=joint.threshold, costs={},
                           target={}, calibration={},
                           input={"shape": [3, 96, 128], "datatype": "FP32"})
    path = ebjr.save(joint, tmp_path / "frcnn.json", record)
    back = ebjr.load(path)
    want = back.predict(images)
    assert want.answered_by.tolist() == joint.predict(images).answered_by.tolist()
    with TestClient(create_app(ServeSettings(bundle=str(path)))) as client:
        r = client.post("/v2/models/frcnn/infer", json=infer_body(images.numpy()))
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    padded = pad_detections(want.predictions, 12)
    for name, values in padded.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-5, atol=1e-4)
    assert got["answered_by"].tolist() == want.answered_by.tolist()
