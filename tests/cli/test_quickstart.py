import json

import numpy as np
import pytest
import torch

import ebjr
from ebjr.cli import main
from ebjr.examples.quickstart import QuickstartConfig, make_digits_traffic


def test_traffic_is_seeded_and_disjoint_from_training_images():
    cfg = QuickstartConfig(n_calibration=50, n_test=50, augment_per_image=1)
    a, b = make_digits_traffic(cfg), make_digits_traffic(cfg)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["x_cal"].shape == (50, 8, 8) and a["x_cal"].dtype == np.float32
    assert 0.0 <= a["x_cal"].min() and a["x_cal"].max() <= 1.0
    c = make_digits_traffic(
        QuickstartConfig(seed=1, n_calibration=50, n_test=50, augment_per_image=1)
    )
    assert not np.array_equal(a["x_cal"], c["x_cal"])


def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--epochs", "6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # report with plots, results and a loadable bundle
    html = (out / "report" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "held-out test set" in html
    bundle = out / "bundle" / "quickstart.json"
    joint = ebjr.load(bundle)
    assert joint.threshold == pytest.approx(summary["threshold"])
    # the held-out drop respects the guaranteed target, and the joint model routes
    test = summary["test"]
    assert test["accuracy_drop"] <= summary["config"]["eps"]
    assert test["target_met"] and 0.0 < test["teacher_fraction"] < 1.0
    assert test["live_matches_offline"]
    assert summary["teacher"]["flops"] > 20 * summary["student"]["flops"]
    # the loaded bundle reproduces the live predictions
    cfg = QuickstartConfig(epochs=6)
    data = make_digits_traffic(cfg)
    pred = joint.predict(torch.as_tensor(data["x_test"])).predictions.numpy()
    assert np.mean(pred == data["y_test"]) == pytest.approx(test["accuracy"])
    # a second run reuses the cached models
    assert main(["quickstart", "--out", str(out), "--epochs", "6"]) == 0
    assert "loaded from cache" in capsys.readouterr().err


def test_quickstart_rejects_bad_options(capsys, tmp_path):
    assert main(["quickstart", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert main(["quickstart", "--out", str(tmp_path), "--confidence", "1.5"]) == 2
    assert "--confidence must lie in (0, 1)" in capsys.readouterr().err


def test_specialized_quickstart_writes_a_bundle_predict_and_serve_answer(tmp_path, capsys):
    """``--task specialized``: skewed traffic, a student over the top 3 digits + other, a
    bundle with its class map; ``ebjr predict`` and ``ebjr serve`` answer what the loaded
    joint model answers."""
    from fastapi.testclient import TestClient

    from ebjr.bundle.predict import predict_file
    from ebjr.examples.specialized_quickstart import specialized_config
    from ebjr.serve.app import create_app
    from ebjr.serve.settings import ServeSettings
    from serve_support import infer_body, outputs

    out = tmp_path / "qs"
    assert main(["quickstart", "--task", "specialized", "--out", str(out), "--epochs", "6",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    test = summary["test"]
    assert 0.0 < test["teacher_fraction"] < 1.0 and summary["student"]["classes"] == 4
    joint = ebjr.load(summary["bundle"])
    assert joint.class_map.tolist() == [0, 1, 2, -1] and joint.router.name == "specialized"
    data = make_digits_traffic(specialized_config(QuickstartConfig(epochs=6)))
    top = np.isin(data["y_test"], [0, 1, 2]).mean()
    assert abs(top - 0.8) < 0.02  # the traffic is skewed as said
    want = joint.predict(torch.as_tensor(data["x_test"]))
    assert np.mean(want.predictions.numpy() == data["y_test"]) == pytest.approx(test["accuracy"])
    x = data["x_test"][:300]
    np.save(tmp_path / "x.npy", x)
    predict_file(summary["bundle"], tmp_path / "x.npy", tmp_path / "p.parquet", progress=False)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "p.parquet")
    np.testing.assert_array_equal(table["prediction"].to_numpy(),
                                  want.predictions.numpy()[:300])
    with TestClient(create_app(ServeSettings(bundle=summary["bundle"]))) as client:
        r = client.post("/v2/models/specialized/infer", json=infer_body(x[:50]))
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(outputs(r.json())["predictions"],
                                  want.predictions.numpy()[:50])


@pytest.mark.integration  # trains two grid detectors (about a minute)
def test_detection_quickstart_writes_a_bundle_the_server_answers(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from ebjr.evaluation.detection import MapMetric
    from ebjr.examples.detection_quickstart import CANVAS
    from ebjr.serve.app import create_app
    from ebjr.serve.settings import ServeSettings
    from ebjr.tasks.detection import pad_detections
    from ebjr.zoo.digit_canvas import make_digit_canvases
    from serve_support import infer_body, outputs

    assert main(["quickstart", "--task", "detection", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    joint = ebjr.load(summary["bundle"])
    assert joint.task.name == "detection" and joint.router.name == "detection_energy"
    test = make_digit_canvases(400, part="test", seed=2, **CANVAS)  # the quickstart's test
    live = joint.predict(test.images)
    mask = np.asarray(live.to_teacher)
    assert mask.mean() == pytest.approx(summary["test"]["teacher_fraction"])
    s, t = joint.student.forward(test.images), joint.teacher.forward(test.images)
    metric = MapMetric(joint.task.check_output(s, 400, "s"), joint.task.check_output(t, 400, "t"),
                       test.targets, 10)
    assert metric(mask) == pytest.approx(summary["test"]["map"])
    assert summary["student"]["map"] < summary["test"]["map"] <= summary["teacher"]["map"] + 1e-9
    with TestClient(create_app(ServeSettings(bundle=summary["bundle"]))) as client:
        r = client.post("/v2/models/detection/infer", json=infer_body(test.images[:6]))
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    want = pad_detections(live.predictions[:6], 8)
    np.testing.assert_allclose(got["detection_boxes"], want["detection_boxes"], rtol=1e-5)
    assert got["num_detections"].tolist() == want["num_detections"].tolist()
