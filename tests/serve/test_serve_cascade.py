"""``ebjr serve`` of a cascade bundle of 3 models, in-process (the real app, lifespan included).

Every answer is checked against an independent reference: each stage's model run on
*every* row, then :meth:`ebjr.Cascade.apply` (vectorised over precomputed outputs), and
scipy's softmax for the probabilities and scores; the server instead runs each stage
only on the rows passed on to it, batched across requests.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

import ebjr
from ebjr.joint.cascade import answer_logits
from ebjr.serve.app import create_app
from ebjr.serve.settings import ServeSettings
from serve_support import (
    ROW_SHAPE,
    cascade_reference,
    check_cascade,
    infer_body,
    make_cascade_bundle,
    outputs,
    random_rows,
)

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=["last", "mean"])
def bundle(request, tmp_path_factory):
    return make_cascade_bundle(tmp_path_factory.mktemp("cascade"), combine=request.param)


@pytest.fixture
def client(bundle):
    app = create_app(ServeSettings(bundle=bundle, admin_token=TOKEN, max_request_rows=256))
    with TestClient(app) as c:
        yield c


def test_metadata_names_the_stages_and_their_thresholds(client, bundle):
    md = client.get("/v2/models/zoo").json()
    assert md["platform"] == "ebjr_cascade"
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *ROW_SHAPE]}]
    p = md["parameters"]
    assert p["stages"] == ["small", "mid", "big"]
    assert p["threshold"] == pytest.approx(list(ebjr.load(bundle).thresholds))
    assert p["costs"] == {"small": 1.0, "mid": 8.0, "big": 60.0}
    assert p["router"]["name"] == "softmax" and p["combine"] in ("last", "mean")


def test_infer_equals_the_cascade_applied_to_every_models_outputs(client, bundle):
    x = random_rows(200, seed=11)
    r = client.post("/v2/models/zoo/infer", json=infer_body(x))
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    want = cascade_reference(bundle, x)
    check_cascade(got, want)
    assert set(want["answered_by"]) == {"small", "mid", "big"}  # every stage answers some
    p = r.json()["parameters"]
    assert p["passed_on"] == int((want["answered_by"] != "small").sum())
    assert p["degraded"] is False and len(p["threshold"]) == 2
    stats = client.get("/v2/models/zoo/routing_stats").json()
    n = {s: int((want["answered_by"] == s).sum()) for s in ("small", "mid", "big")}
    assert stats["counts"]["answered"] == n
    assert stats["counts"]["stage_rows"] == {"small": 200, "mid": n["mid"] + n["big"],
                                             "big": n["big"]}
    assert stats["stages"] == ["small", "mid", "big"] and stats["operating_point"] is None


def test_concurrent_requests_share_batches_and_get_their_own_rows(client, bundle):
    xs = [random_rows(1 + i % 5, seed=100 + i) for i in range(40)]

    def one(x):
        r = client.post("/v2/models/zoo/infer", json=infer_body(x))
        assert r.status_code == 200, r.text
        return outputs(r.json())

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, xs))
    for x, g in zip(xs, got, strict=True):
        check_cascade(g, cascade_reference(bundle, x))
    counts = client.get("/v2/models/zoo/routing_stats").json()["counts"]
    assert counts["rows"] == sum(len(x) for x in xs)
    assert counts["batches"] < len(xs)  # requests were batched together


def test_the_thresholds_are_a_live_knob(client, bundle):
    x = random_rows(120, seed=5)
    assert client.put("/v2/models/zoo/threshold", json={"thresholds": [0.2, 0.3]}).status_code \
        == 401
    r = client.put("/v2/models/zoo/threshold", json={"thresholds": [0.2, 0.3]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["threshold"] == [0.2, 0.3]
    assert r.json()["old_threshold"] == pytest.approx(list(ebjr.load(bundle).thresholds))
    got = outputs(client.post("/v2/models/zoo/infer", json=infer_body(x)).json())
    check_cascade(got, cascade_reference(bundle, x, thresholds=(0.2, 0.3)))
    # everything answered by the first stage, then everything sent on to the last
    client.put("/v2/models/zoo/threshold", json={"thresholds": [-1e308, 0.5]}, headers=AUTH)
    got = outputs(client.post("/v2/models/zoo/infer", json=infer_body(x)).json())
    assert set(got["answered_by"].tolist()) == {"small"}
    client.put("/v2/models/zoo/threshold", json={"thresholds": [1e308, 1e308]}, headers=AUTH)
    got = outputs(client.post("/v2/models/zoo/infer", json=infer_body(x)).json())
    assert set(got["answered_by"].tolist()) == {"big"}
    assert client.get("/v2/models/zoo/threshold").json()["threshold"] == [1e308, 1e308]


@pytest.mark.parametrize("body, message", [
    ({"threshold": 0.5}, "a cascade takes 'thresholds': a list of 2 numbers"),
    ({"teacher_fraction": 0.5}, "a cascade takes 'thresholds'"),
    ({"thresholds": [0.5]}, "3 stages need 2 thresholds, got 1"),
    ({"thresholds": [0.5, 0.1, 0.2]}, "3 stages need 2 thresholds, got 3"),
    ({"thresholds": [0.5, "x"]}, "thresholds"),
    ({"thresholds": []}, "thresholds"),
])
def test_bad_threshold_writes_get_400_and_change_nothing(client, body, message):
    before = client.get("/v2/models/zoo/threshold").json()["threshold"]
    r = client.put("/v2/models/zoo/threshold", json=body, headers=AUTH)
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert client.get("/v2/models/zoo/threshold").json()["threshold"] == before


def test_a_cascade_has_no_single_curve_and_bad_rows_get_400(client):
    r = client.get("/v2/models/zoo/curve")
    assert r.status_code == 404 and "no single trade-off curve" in r.json()["error"]
    bad = client.post("/v2/models/zoo/infer", json=infer_body(np.zeros((2, 3, 3), np.float32)))
    assert bad.status_code == 400 and "[n, 8, 8]" in bad.json()["error"]
    p = client.post("/v2/models/zoo/predict",
                    json={"instances": random_rows(3).tolist()}).json()
    assert len(p["predictions"]) == 3 and set(p["answered_by"]) <= {"small", "mid", "big"}
    assert client.get("/metrics").text.count('ebjr_threshold{kind="set:') == 2


@pytest.mark.parametrize("fallback", ["student", "error"])
def test_a_failing_later_stage_falls_back_to_the_stage_before_or_fails_the_request(
        tmp_path, fallback):
    path = make_cascade_bundle(tmp_path, name="faulty", faulty_last=True)
    settings = ServeSettings(bundle=path, fallback=fallback, admin_token=TOKEN,
                             allow_factories=["serve_support:faulty_student"])
    with TestClient(create_app(settings)) as c:
        # everything goes on to the last stage, which refuses negative pixels
        c.put("/v2/models/faulty/threshold", json={"thresholds": [1e308, 1e308]}, headers=AUTH)
        x = random_rows(6, seed=2) - 0.5
        r = c.post("/v2/models/faulty/infer", json=infer_body(x))
        if fallback == "error":
            assert r.status_code == 503 and "stage 'big'" in r.json()["error"], r.text
        else:
            assert r.status_code == 200, r.text
            out = outputs(r.json())
            assert set(out["answered_by"].tolist()) == {"mid_fallback"}
            assert r.json()["parameters"]["degraded"] is True
            live = ebjr.load(path, allow_factories=["serve_support:faulty_student"])
            mid = answer_logits([live.adapters[s](x).numpy() for s in ("small", "mid")],
                                live.cascade.combine)[1]
            np.testing.assert_array_equal(out["predictions"], mid.argmax(1))
        ok = c.post("/v2/models/faulty/infer", json=infer_body(random_rows(3)))
        assert ok.status_code == 200 and "degraded" in ok.json()["parameters"]
        assert 'ebjr_teacher_errors_total{kind="model_error"}' in c.get("/metrics").text


# ------------------------------------------------------------ a real server, real clients
def test_tritonclient_and_kserve_call_a_served_cascade_unchanged(tmp_path):
    """``ebjr serve`` in its own process; Triton's and KServe's clients as their docs show."""
    import asyncio

    httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")
    pytest.importorskip("kserve", reason="pip install 'ebjr[test]'")
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    from serve_support import ServerProcess

    path = make_cascade_bundle(tmp_path, combine="mean")
    x = random_rows(64, seed=21)
    want = cascade_reference(path, x)
    names = ("predictions", "probabilities", "scores", "answered_by")
    with ServerProcess(str(path)) as srv:
        client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
        assert client.is_model_ready("zoo")
        assert client.get_model_metadata("zoo")["platform"] == "ebjr_cascade"
        for binary in (True, False):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            result = client.infer("zoo", [inp])
            got = {n: result.as_numpy(n) for n in names}
            got["answered_by"] = [a.decode() for a in got["answered_by"]]
            check_cascade(got, want)
        client.close()

        async def kserve_infer():
            kc = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
            try:
                inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
                inp.set_data_from_numpy(x, binary_data=True)
                return await kc.infer(srv.url, InferRequest(model_name="zoo",
                                                            infer_inputs=[inp]),
                                      model_name="zoo")
            finally:
                await kc.close()

        response = asyncio.run(kserve_infer())
        got = {o.name: o.as_numpy() for o in response.outputs}
        got["answered_by"] = [a.decode() if isinstance(a, bytes) else str(a)
                              for a in got["answered_by"]]
        check_cascade(got, want)


def test_ebjr_predict_writes_the_cascades_answers_in_order(tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet", reason="pip install 'ebjr[predict]'")
    from ebjr.cli import main

    path = make_cascade_bundle(tmp_path)
    x = random_rows(150, seed=8)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(path), str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "out.parquet"), "--batch-size", "32", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "answered by: small" in printed and "mid" in printed and "big" in printed
    table = pq.read_table(tmp_path / "out.parquet")
    want = cascade_reference(path, x)
    assert table["row"].to_pylist() == list(range(150))
    got = {"predictions": table["prediction"].to_numpy(), "scores": table["score"].to_numpy(),
           "probabilities": np.stack(table["probabilities"].to_numpy(zero_copy_only=False)),
           "answered_by": table["answered_by"].to_pylist()}
    check_cascade(got, want)


@pytest.mark.parametrize("extra, message", [
    (["--remote-teacher", "http://127.0.0.1:9/v2/models/x"], "--remote-teacher applies to a "
                                                            "student/teacher bundle"),
    (["--load-mode", "share", "--load-budget", "0.3"], "a cascade has one per stage"),
])
def test_pair_only_options_are_refused_before_the_server_starts(tmp_path, capsys, extra,
                                                                 message):
    from ebjr.cli import main

    path = make_cascade_bundle(tmp_path)
    assert main(["serve", str(path), "--port", "0", *extra]) == 2
    assert message in capsys.readouterr().err
