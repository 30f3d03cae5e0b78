"""The service in-process (Starlette's TestClient runs the real app, lifespan included)."""

import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

import ebjr
from ebjr.exceptions import InputError
from ebjr.serve.app import create_app
from ebjr.serve.settings import ServeSettings
from serve_support import ROW_SHAPE, infer_body, make_serve_bundle, outputs, random_rows

TOKEN = "test-token"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_serve_bundle(tmp_path_factory.mktemp("serve"))


@pytest.fixture
def client(bundle):
    app = create_app(ServeSettings(bundle=bundle, admin_token=TOKEN, max_request_rows=256,
                                   max_queue_rows=1024, max_body_bytes=2_000_000))
    with TestClient(app) as c:
        yield c


def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/small/ready").json()["ready"] is True
    assert client.get("/v2").json()["name"] == "ebjr"
    md = client.get("/v2/models/small").json()
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *ROW_SHAPE]}]
    assert {o["name"] for o in md["outputs"]} == {"predictions", "probabilities", "scores",
                                                   "answered_by"}
    assert md["parameters"]["router"]["name"] == "energy"


def test_infer_equals_the_offline_joint_model(client, bundle):
    x = random_rows(50, seed=7)
    r = client.post("/v2/models/small/infer", json={**infer_body(x), "id": "req-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    out = outputs(body)
    offline = ebjr.load(bundle).predict(x)
    np.testing.assert_array_equal(out["predictions"], offline.predictions.numpy())
    np.testing.assert_allclose(out["scores"], offline.scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"], offline.probabilities.numpy(), atol=1e-6)
    assert out["answered_by"].tolist() == offline.source.tolist()
    assert body["id"] == "req-1" and body["model_name"] == "small"
    p = body["parameters"]
    assert p["threshold"] == pytest.approx(offline.threshold) and p["degraded"] is False
    assert p["teacher_rows"] == int(offline.to_teacher.sum()) > 0


def test_requested_outputs_and_the_predict_endpoint(client):
    x = random_rows(3)
    r = client.post("/v2/models/small/infer",
                    json={**infer_body(x), "outputs": [{"name": "predictions"}]})
    assert [o["name"] for o in r.json()["outputs"]] == ["predictions"]
    bad = client.post("/v2/models/small/infer", json={**infer_body(x), "outputs": [{"name": "z"}]})
    assert bad.status_code == 400 and "unknown outputs" in bad.json()["error"]
    p = client.post("/v2/models/small/predict", json={"instances": x.tolist()}).json()
    assert len(p["predictions"]) == 3 and set(p["answered_by"]) <= {"student", "teacher"}
    assert p["latency_ms"] > 0


def test_the_live_knob_needs_the_token_and_changes_routing(client, caplog):
    x = random_rows(200, seed=3)
    before = outputs(client.post("/v2/models/small/infer", json=infer_body(x)).json())
    assert client.put("/v2/models/small/threshold", json={"threshold": -1e9}).status_code == 401
    wrong = client.put("/v2/models/small/threshold", json={"threshold": -1e9},
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "admin token" in wrong.json()["error"]
    with caplog.at_level(logging.WARNING, logger="ebjr.serve"):
        ok = client.put("/v2/models/small/threshold", json={"threshold": -1e9},
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["threshold"] == -1e9
    assert any("changed from" in r.getMessage() for r in caplog.records)
    after = outputs(client.post("/v2/models/small/infer", json=infer_body(x)).json())
    assert (before["answered_by"] == "teacher").any() and (after["answered_by"] == "student").all()
    # by teacher share, on the bundle's calibration curve
    r = client.put("/v2/models/small/threshold", json={"teacher_fraction": 0.1},
                   headers={"Authorization": f"Bearer {TOKEN}"}).json()
    stats = client.get("/v2/models/small/stats").json()
    assert stats["operating_point"]["teacher_fraction"] <= 0.1 + 1e-9
    assert stats["threshold"] == r["threshold"]
    both = client.put("/v2/models/small/threshold", json={"threshold": 1, "teacher_fraction": 0.1},
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert both.status_code == 400 and "exactly one" in both.json()["error"]


def test_writes_are_refused_without_a_configured_token(bundle, monkeypatch):
    monkeypatch.delenv("EBJR_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(ServeSettings(bundle=bundle))) as c:
        r = c.put("/v2/models/small/threshold", json={"threshold": 0.0},
                  headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "--admin-token" in r.json()["error"]
        assert c.get("/v2/models/small/threshold").json()["writable"] is False


BAD = [
    ("wrong row shape", lambda: infer_body(random_rows(2)[:, :, :7]), 400, "expected shape"),
    ("bytes", lambda: {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                   "data": ["x"]}]}, 400, "not supported"),
    ("too many rows", lambda: infer_body(random_rows(300)), 400, "at most 256"),
    ("no inputs", lambda: {"inputs": []}, 400, "inputs"),
    ("two inputs", lambda: {"inputs": [infer_body(random_rows(1))["inputs"][0]] * 2}, 400,
     "inputs"),
    ("missing data", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                          "datatype": "FP32"}]}, 400, "data"),
    ("size mismatch", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                           "datatype": "FP32", "data": [1.0]}]}, 400, "needs 64"),
    ("strings as numbers", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                                "datatype": "FP32", "data": ["a"] * 64}]}, 400,
     "numbers"),
]


@pytest.mark.parametrize(("what", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_with_a_message(client, what, body, status, message):
    r = client.post("/v2/models/small/infer", json=body())
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_nan_garbage_huge_and_unknown(client):
    nan = json.dumps({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32",
                                  "data": [float("nan")] + [0.0] * 63}]})
    r = client.post("/v2/models/small/infer", content=nan,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["error"]
    r = client.post("/v2/models/small/infer", content=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.post("/v2/models/small/infer", content=b"x" * 3_000_000,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the streamed size is checked too
        for _ in range(30):
            yield b" " * 100_000

    r = client.post("/v2/models/small/infer", content=chunks(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v2/models/nope/infer", json=infer_body(random_rows(1)))
    assert r.status_code == 404 and "'small'" in r.json()["error"]


def test_metrics_count_rows_requests_and_batches(client):
    for _ in range(3):
        client.post("/v2/models/small/infer", json=infer_body(random_rows(20)))
    client.post("/v2/models/small/infer", json={"inputs": []})
    text = client.get("/metrics").text
    assert 'ebjr_requests_total{status="200"} 3.0' in text
    assert 'ebjr_requests_total{status="400"} 1.0' in text
    student = _metric(text, 'ebjr_rows_total{answered_by="student"}')
    teacher = _metric(text, 'ebjr_rows_total{answered_by="teacher"}')
    assert student + teacher == 60 and teacher > 0
    assert _metric(text, "ebjr_teacher_share") == pytest.approx(teacher / 60)
    assert _metric(text, 'ebjr_batch_rows_count{stage="student"}') == 3
    assert 'ebjr_request_latency_seconds_count{path="teacher"}' in text
    assert 'ebjr_queue_rows{stage="teacher"} 0.0' in text
    assert 'ebjr_threshold{kind="effective"}' in text


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def test_plain_model_role_serves_the_models_logits(bundle):
    from ebjr import persist

    teacher, _ = persist.load_model(bundle, "teacher")
    x = random_rows(5)
    with TestClient(create_app(ServeSettings(bundle=bundle, role="teacher"))) as c:
        md = c.get("/v2/models/teacher").json()
        assert md["platform"] == "ebjr_model" and md["outputs"][0]["name"] == "logits"
        out = outputs(c.post("/v2/models/teacher/infer", json=infer_body(x)).json())
        np.testing.assert_allclose(out["logits"], teacher(x).numpy(), rtol=1e-5, atol=1e-5)
        r = c.get("/v2/models/teacher/threshold")
        assert r.status_code == 404 and "plain teacher model" in r.json()["error"]


def test_load_aware_share_keeps_the_teacher_share_in_budget(bundle):
    settings = ServeSettings(bundle=bundle, load_mode="share", load_budget=0.1,
                             admin_token=TOKEN)
    with TestClient(create_app(settings)) as c:
        # the calibrated threshold sends ~30 % of this traffic to the teacher
        routed = []
        for i in range(20):
            out = outputs(c.post("/v2/models/small/infer",
                                 json=infer_body(random_rows(50, seed=100 + i))).json())
            routed.append((out["answered_by"] == "teacher").mean())
        assert np.mean(routed[:2]) > 0.2  # warm-up: the live threshold
        assert np.mean(routed[5:]) <= 0.15  # then the budget (10 %, sampling noise)
        st = c.get("/v2/models/small/threshold").json()
        assert st["effective_threshold"] < st["threshold"]
        assert st["load_control"]["mode"] == "share"
        assert "ebjr_load_allowed_share 0.1" in c.get("/metrics").text


def test_settings_are_checked():
    with pytest.raises(InputError, match="fallback"):
        ServeSettings(bundle="b.json", fallback="maybe")
    with pytest.raises(InputError, match="load_budget"):
        ServeSettings(bundle="b.json", load_mode="share")
    with pytest.raises(InputError, match="http"):
        ServeSettings(bundle="b.json", remote_teacher="teacher:8001")
    with pytest.raises(InputError, match="max_request_rows"):
        ServeSettings(bundle="b.json", max_request_rows=10, max_queue_rows=5)


def test_reading_the_threshold_does_not_step_the_load_control(bundle):
    settings = ServeSettings(bundle=bundle, load_mode="queue", load_budget=1)
    with TestClient(create_app(settings)) as c:
        control = c.app.state.ebjr.engine.control
        control.allowed_share = 0.5  # a step with an empty teacher queue would raise it
        for _ in range(20):  # the demo page polls like this
            c.get("/v2/models/small/threshold")
            c.get("/v2/models/small/stats")
        assert control.allowed_share == 0.5
        c.post("/v2/models/small/infer", json=infer_body(random_rows(4)))
        assert control.allowed_share == pytest.approx(0.52)  # one batch, one step


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[[0.0] * 8] * 7], "expected shape [n, 8, 8]"),
        ([[[0.0] * 8] * 8, [[0.0] * 8] * 7], "equally shaped"),
        ([[["a"] * 8] * 8], "numbers"),
        ([[[0.0] * 8] * 8] * 300, "at most 256"),
    ],
    ids=["row shape", "ragged", "strings", "too many"],
)
def test_bad_predict_instances_get_a_400(client, instances, message):
    r = client.post("/v2/models/small/predict", json={"instances": instances})
    assert r.status_code == 400 and message in r.json()["error"]
