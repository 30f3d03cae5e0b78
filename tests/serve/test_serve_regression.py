"""``ebjr serve`` and ``ebjr predict`` of a regression bundle: one path for every task kind.

The reference for every answer is written out independently
(:func:`serve_support.regression_reference`): both regressors run on *every* row, the
``spread`` router's rule ``-std < threshold -> teacher`` applied per row with numpy.
In-process (the real app, lifespan included) in the fast tier; a real ``ebjr serve``
process called by tritonclient (binary and JSON), and a joint server whose teacher is a
second ``ebjr serve --role teacher`` process, in the integration tier.
"""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ebjr.bundle.predict import predict_file
from ebjr.serve.app import create_app
from ebjr.serve.settings import ServeSettings
from serve_support import (
    ServerProcess,
    check_regression,
    infer_body,
    make_regression_bundle,
    outputs,
    regression_reference,
    regression_rows,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_regression_bundle(tmp_path_factory.mktemp("regression")))


@pytest.fixture(scope="module")
def reference(bundle):
    return lambda x: regression_reference(bundle, x)


_check = check_regression


@pytest.fixture
def client(bundle):
    with TestClient(create_app(ServeSettings(bundle=bundle, max_request_rows=256))) as c:
        yield c


def test_metadata_lists_the_regression_outputs_and_the_task(client):
    md = client.get("/v2/models/reg").json()
    assert md["platform"] == "ebjr_joint"
    assert md["outputs"] == [
        {"name": "predictions", "datatype": "FP64", "shape": [-1]},
        {"name": "scores", "datatype": "FP64", "shape": [-1]},
        {"name": "answered_by", "datatype": "BYTES", "shape": [-1]},
    ]
    assert md["parameters"]["task"] == {"kind": "regression", "columns": ["prediction", "std"],
                                        "loss": "absolute"}
    assert md["parameters"]["router"]["name"] == "spread"
    cfg = client.get("/v2/models/reg/config").json()
    assert [o["name"] for o in cfg["output"]] == ["predictions", "scores", "answered_by"]


def test_infer_and_predict_routes_equal_the_reference(client, reference):
    x = regression_rows(150, seed=3)
    want = reference(x)
    assert 0 < (want["answered_by"] == "teacher").sum() < len(x)  # both models answer
    r = client.post("/v2/models/reg/infer", json=infer_body(x))
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    assert set(got) == {"predictions", "scores", "answered_by"}
    _check(got, want)
    r = client.post("/v2/models/reg/predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "probabilities" not in body
    _check({k: np.asarray(body[k]) for k in ("predictions", "scores", "answered_by")}, want)


def test_bad_inputs_get_a_400_naming_what_was_expected(client):
    r = client.post("/v2/models/reg/infer", json=infer_body(np.zeros((3, 8), np.float32)))
    assert r.status_code == 400 and "10" in r.json()["error"]
    r = client.post("/v2/models/reg/infer", json=infer_body(regression_rows(2), datatype="FP64"))
    assert r.status_code == 400 and "FP32" in r.json()["error"]
    r = client.post("/v2/models/reg/predict", json={"instances": [[0.5] * 9]})
    assert r.status_code == 400 and "10" in r.json()["error"]


def test_the_shadow_monitor_is_refused_for_a_regression(bundle):
    from ebjr.exceptions import InputError
    from ebjr.serve.app import load_models

    with pytest.raises(InputError, match="regression bundle"):
        load_models(ServeSettings(bundle=bundle, shadow_rate=0.1))


def test_predict_file_equals_the_reference_row_for_row(bundle, reference, tmp_path):
    import pyarrow.parquet as pq

    x = regression_rows(300, seed=4)
    np.save(tmp_path / "x.npy", x)
    summary = predict_file(bundle, tmp_path / "x.npy", tmp_path / "out.parquet",
                           batch_size=64, progress=False)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["row", "prediction", "score", "answered_by"]
    assert str(table.schema.field("prediction").type) == "double"
    got = {"predictions": table["prediction"].to_numpy(), "scores": table["score"].to_numpy(),
           "answered_by": np.asarray(table["answered_by"].to_pylist())}
    want = reference(x)
    _check(got, want)
    assert summary["teacher_rows"] == int((want["answered_by"] == "teacher").sum())


# ------------------------------------------------------------ real processes, real clients
@pytest.mark.integration
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_gets_what_ebjr_predict_writes(bundle, reference, tmp_path, binary):
    httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")
    import pyarrow.parquet as pq

    x = regression_rows(64, seed=8)
    np.save(tmp_path / "x.npy", x)
    predict_file(bundle, tmp_path / "x.npy", tmp_path / "out.parquet", progress=False)
    table = pq.read_table(tmp_path / "out.parquet")
    with ServerProcess(bundle) as srv:
        client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary)
                for n in ("predictions", "scores", "answered_by")]
        result = client.infer("reg", [inp], outputs=outs)
        client.close()
    got = {n: result.as_numpy(n) for n in ("predictions", "scores", "answered_by")}
    assert got["predictions"].dtype == np.float64
    np.testing.assert_array_equal(got["predictions"], table["prediction"].to_numpy())
    _check(got, reference(x))


@pytest.mark.integration
def test_a_remote_regression_teacher_answers_the_routed_rows(bundle, reference):
    httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")
    x = regression_rows(64, seed=12)
    with ServerProcess(bundle, "--role", "teacher") as teacher, \
            ServerProcess(bundle, "--remote-teacher", f"{teacher.url}/v2/models/teacher") as joint:
        client = httpclient.InferenceServerClient(url=joint.url.removeprefix("http://"))
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("reg", [inp])
        client.close()
    got = {n: result.as_numpy(n) for n in ("predictions", "scores", "answered_by")}
    assert b"student_fallback" not in set(got["answered_by"].tolist())
    _check(got, reference(x))
