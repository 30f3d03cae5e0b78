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
from serve_support import (
    BAD,
    BAD_BINARY,
    ROW_SHAPE,
    binary_body,
    infer_body,
    make_faulty_bundle,
    make_serve_bundle,
    outputs,
    random_rows,
)

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
    assert out["answered_by"].tolist() == offline.answered_by.tolist()
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
    stats = client.get("/v2/models/small/routing_stats").json()
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


@pytest.mark.parametrize(("what", "make", "message"), BAD_BINARY,
                         ids=[b[0] for b in BAD_BINARY])
def test_inconsistent_binary_lengths_get_a_400(client, what, make, message):
    body, headers = make(random_rows(1))
    r = client.post("/v2/models/small/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize("content_type", [None, "application/json", "application/octet-stream",
                                          "text/plain"])
def test_json_bodies_are_read_whatever_the_content_type(client, content_type, bundle):
    x = random_rows(3, seed=11)
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/v2/models/small/infer", content=json.dumps(infer_body(x)).encode(),
                    headers=headers)
    assert r.status_code == 200, r.text
    offline = ebjr.load(bundle).predict(x)
    np.testing.assert_array_equal(outputs(r.json())["predictions"],
                                  offline.predictions.numpy())
    r = client.put("/v2/models/small/threshold", content=b'{"teacher_fraction": 0.2}',
                   headers={**headers, "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    r = client.post("/v2/models/small/predict", content=json.dumps({"instances": x.tolist()}),
                    headers=headers)
    assert r.status_code == 200, r.text


def test_binary_extension_both_ways_equals_json(client, bundle):
    x = random_rows(6, seed=12)
    body, headers = binary_body(x)
    body = body.replace(b'"inputs"', b'"parameters": {"binary_data_output": true}, "inputs"')
    headers["Inference-Header-Content-Length"] = str(int(headers[
        "Inference-Header-Content-Length"]) + len(b'"parameters": {"binary_data_output": true}, '))
    r = client.post("/v2/models/small/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    assert r.headers["content-type"] == "application/octet-stream"
    rest, got = r.content[n:], {}
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        blob, rest = rest[:size], rest[size:]
        if o["datatype"] == "BYTES":
            items = []
            while blob:
                k = int.from_bytes(blob[:4], "little")
                items.append(blob[4:4 + k].decode())
                blob = blob[4 + k:]
            got[o["name"]] = np.array(items)
        else:
            dtype = {"INT64": "<i8", "FP32": "<f4", "FP64": "<f8"}[o["datatype"]]
            got[o["name"]] = np.frombuffer(blob, dtype).reshape(o["shape"])
    assert rest == b""
    offline = ebjr.load(bundle).predict(x)
    np.testing.assert_array_equal(got["predictions"], offline.predictions.numpy())
    np.testing.assert_allclose(got["scores"], offline.scores.numpy(), rtol=1e-6)
    assert got["answered_by"].tolist() == offline.answered_by.tolist()
    # one output in binary, one in JSON
    r = client.post("/v2/models/small/infer", json={**infer_body(x), "outputs": [
        {"name": "scores", "parameters": {"binary_data": True}}, {"name": "predictions"}]})
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    assert [o["name"] for o in head["outputs"]] == ["scores", "predictions"]
    assert "data" not in head["outputs"][0] and head["outputs"][1]["data"] == \
        offline.predictions.numpy().tolist()
    assert len(r.content) - n == 8 * 6


def test_gzip_bodies_and_version_routes(client):
    import gzip

    x = random_rows(2)
    r = client.post("/v2/models/small/versions/1/infer",
                    content=gzip.compress(json.dumps(infer_body(x)).encode()),
                    headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    r = client.post("/v2/models/small/infer", content=b"not gzip",
                    headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "could not be decompressed" in r.json()["error"]
    r = client.post("/v2/models/small/infer", content=b"{}", headers={"Content-Encoding": "br"})
    assert r.status_code == 400 and "not supported" in r.json()["error"]
    bomb = gzip.compress(b" " * 3_000_000)  # 3 MB of JSON whitespace, far over the limit
    r = client.post("/v2/models/small/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    for path in ["/v2/models/small/versions/2", "/v2/models/small/versions/2/ready",
                 "/v2/models/small/versions/0/config", "/v2/models/small/versions/9/stats"]:
        r = client.get(path)
        assert r.status_code == 404 and "unknown version" in r.json()["error"], path
    r = client.post("/v2/models/small/versions/7/infer", json=infer_body(x))
    assert r.status_code == 404 and "it has version '1'" in r.json()["error"]
    assert client.get("/v2/models/small/versions/1/ready").json()["ready"] is True
    md = client.get("/v2/models/small").json()
    assert md["versions"] == ["1"] and "remote_teacher" not in md["parameters"]
    assert None not in md.values()


def test_triton_statistics_config_and_index(client):
    for _ in range(3):
        client.post("/v2/models/small/infer", json=infer_body(random_rows(5)))
    client.post("/v2/models/small/infer", json=infer_body(random_rows(1), name="bad"))
    st = client.get("/v2/models/small/stats").json()["model_stats"][0]
    assert st["name"] == "small" and st["version"] == "1"
    assert st["inference_count"] == 15 and st["execution_count"] >= 1
    inf = st["inference_stats"]
    assert inf["success"]["count"] == 3 and inf["success"]["ns"] > 0
    assert inf["queue"]["count"] == 3 and inf["compute_infer"]["ns"] > 0
    assert sum(b["compute_infer"]["count"] for b in st["batch_stats"]) == st["execution_count"]
    assert client.get("/v2/models/stats").json()["model_stats"][0]["inference_count"] == 15
    cfg = client.get("/v2/models/small/config").json()
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [8, 8]}]
    assert cfg["max_batch_size"] == 256
    assert client.post("/v2/repository/index").json() == [
        {"name": "small", "version": "1", "state": "READY"}]
    ext = client.get("/v2").json()["extensions"]
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(ext)


@pytest.mark.parametrize(
    ("header", "status"),
    [(f"Bearer {TOKEN}", 200), (f"bearer  {TOKEN}", 200), (TOKEN, 401), (f"Basic {TOKEN}", 401),
     (f"Bearer {TOKEN}x", 401), ("Bearer", 401), ("", 401)],
)
def test_the_admin_token_only_as_bearer(client, header, status):
    r = client.put("/v2/models/small/threshold", json={"threshold": 1.0},
                   headers={"Authorization": header} if header else {})
    assert r.status_code == status, r.text


@pytest.fixture(scope="module")
def typed_bundles(bundle, tmp_path_factory):
    """The same models with the input record declaring other datatypes."""
    import shutil

    folder = tmp_path_factory.mktemp("typed")
    for f in bundle.parent.glob("small.*.pt"):  # the model files, beside the bundle
        shutil.copy(f, folder / f.name)
    out = {}
    data = json.loads(bundle.read_text())
    for dt in ("INT8", "UINT8", "FP16"):
        data["input"]["datatype"] = dt
        out[dt] = json.dumps(data)
    return out, folder


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [("INT8", 1000, "values must lie in [-128, 127] for datatype INT8"),
     ("UINT8", -5, "values must lie in [0, 255] for datatype UINT8"),
     ("FP16", 70000.0, "values must lie in [-65504, 65504] for datatype FP16"),
     ("INT8", 1.5, "datatype INT8 needs whole numbers")],
)
def test_values_are_checked_against_the_datatype_range(typed_bundles, datatype, value,
                                                       message):
    texts, folder = typed_bundles
    path = folder / "small.json"
    path.write_text(texts[datatype])
    with TestClient(create_app(ServeSettings(bundle=path))) as c:
        assert c.get("/v2/models/small").json()["inputs"][0]["datatype"] == datatype
        ok = c.post("/v2/models/small/infer", json={"inputs": [{
            "name": "input", "shape": [1, 8, 8], "datatype": datatype, "data": [1] * 64}]})
        assert ok.status_code == 200, ok.text
        r = c.post("/v2/models/small/infer", json={"inputs": [{
            "name": "input", "shape": [1, 8, 8], "datatype": datatype,
            "data": [value] + [0] * 63}]})
        assert r.status_code == 400 and message in r.json()["error"], r.text


@pytest.mark.parametrize(
    ("value", "message"),
    [(3e38, "NaN or infinite values"), (-1.0, "RuntimeError: the student refuses")],
)
def test_a_model_fault_is_a_502_naming_the_model(tmp_path, caplog, value, message):
    """Large FP32 inputs are valid FP32, but this student's logits overflow to NaN; or the
    student raises: the model's fault, not the caller's. The client learns which model and
    a request id; the exception (which may describe the model's insides) goes to the log."""
    path = make_faulty_bundle(tmp_path)
    settings = ServeSettings(bundle=path, allow_factories=["serve_support:faulty_student"])
    with TestClient(create_app(settings)) as c:
        r = c.post("/v2/models/faulty/infer", json={"inputs": [{
            "name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": [value] * 64}]})
        assert r.status_code == 502, r.text
        msg, rid = r.json()["error"], r.json()["request_id"]
        assert msg == ("model fault, not a bad request: the student failed on this batch; "
                       "the server log has the details")
        assert rid == r.headers["x-request-id"] and message not in msg
        logged = [m for m in caplog.messages if rid in m]
        assert logged and message in logged[0] and "rows of shape [8, 8]" in logged[0]
        ok = c.post("/v2/models/faulty/infer", json=infer_body(random_rows(2)))
        assert ok.status_code == 200  # and it goes on serving


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
    assert _metric(text, "ebjr_teacher_fraction") == pytest.approx(teacher / 60)
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
    from ebjr.bundle import persist

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
            c.get("/v2/models/small/routing_stats")
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


def test_routing_stats_count_a_remote_teachers_calls(bundle):
    """With a remote teacher, /routing_stats counted the routed rows but not the calls (0);
    both now equal what the teacher server itself counted."""
    from serve_support import ServerProcess

    with ServerProcess(str(bundle), "--role", "teacher") as teacher:
        settings = ServeSettings(bundle=bundle, remote_teacher=f"{teacher.url}/v2/models/teacher")
        with TestClient(create_app(settings)) as c:
            for seed in range(6):
                r = c.post("/v2/models/small/infer", json=infer_body(random_rows(16, seed)))
                assert r.status_code == 200, r.text
            counts = c.get("/v2/models/small/routing_stats").json()["counts"]
        import httpx

        served = httpx.get(f"{teacher.url}/v2/models/teacher/stats").json()["model_stats"][0]
    assert counts["teacher_rows"] == served["inference_count"] > 0
    assert counts["teacher_calls"] == served["inference_stats"]["success"]["count"] > 0


def _api_routes(routes):
    """The app's API routes in the order they are tried (FastAPI >= 0.160 keeps an included
    router as one entry holding its routes; older versions copy them in)."""
    from fastapi.routing import APIRoute

    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):
            yield from _api_routes(r.original_router.routes)


def _dependencies(dependant):
    for d in dependant.dependencies:
        yield d
        yield from _dependencies(d)


def test_no_route_takes_a_thread_hop_for_its_lookups(bundle):
    """FastAPI runs a plain-function dependency on a worker thread: a thread hop on every
    request for a lookup of microseconds. Every dependency of every route is a coroutine."""
    import inspect

    routes = list(_api_routes(create_app(ServeSettings(bundle=bundle)).routes))
    assert any(r.path.endswith("/infer") for r in routes)
    plain = sorted({f"{r.path}: {d.call.__name__}" for r in routes
                    for d in _dependencies(r.dependant)
                    if d.call is not None and not inspect.iscoroutinefunction(d.call)})
    assert plain == []


def test_the_infer_route_is_matched_first(bundle):
    """Routes are tried in order; the inference route comes before every other of ours."""
    app = create_app(ServeSettings(bundle=bundle))
    ours = [r.path for r in _api_routes(app.routes) if r.path.startswith("/v2")]
    assert ours[:2] == ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]


def test_is_joint_agrees_with_the_protocol_check(bundle):
    """``is_joint`` (kept per class) answers as ``isinstance`` against the protocol."""
    from ebjr.serve.engine import JointEngine, JointEngineAPI, ModelEngine, is_joint

    for role, kind in (("joint", JointEngine), ("student", ModelEngine)):
        with TestClient(create_app(ServeSettings(bundle=bundle, role=role))) as c:
            engine = c.app.state.ebjr.engine
            assert type(engine) is kind
            assert is_joint(engine) == isinstance(engine, JointEngineAPI) == (role == "joint")
            assert is_joint(engine) == (role == "joint")  # the kept answer, asked again
