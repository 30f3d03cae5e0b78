"""``ebjr serve`` and ``ebjr predict`` of a detection bundle, through the detection task kind.

The reference is the in-process joint detector (``ebjr.load(...).predict``, itself checked
against a loop over images in tests/tasks) encoded with :func:`pad_detections`; the server
answers with the padded tensors detection models are served with on Triton and KServe:
``num_detections``, ``detection_boxes``, ``detection_scores``, ``detection_classes``."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

import ebjr
from ebjr.bundle.predict import predict_file
from ebjr.exceptions import InputError
from ebjr.serve.app import create_app, load_models
from ebjr.serve.settings import ServeSettings
from ebjr.tasks.detection import pad_detections, unpad_detections
from serve_support import (
    ServerProcess,
    detection_rows,
    infer_body,
    make_detection_bundle,
    outputs,
)

NAMES = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_detection_bundle(tmp_path_factory.mktemp("detection")))


@pytest.fixture(scope="module")
def reference(bundle):
    joint = ebjr.load(bundle)

    def answer(x):
        out = joint.predict(x)
        return {**pad_detections(out.predictions, 8), "scores": np.asarray(out.scores),
                "answered_by": out.answered_by}

    return answer


def _check(got, want):
    for name in NAMES:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    who = [a.decode() if isinstance(a, bytes) else str(a) for a in got["answered_by"]]
    assert who == want["answered_by"].tolist()


@pytest.fixture
def client(bundle):
    with TestClient(create_app(ServeSettings(bundle=bundle))) as c:
        yield c


def test_metadata_lists_the_padded_detection_outputs(client):
    md = client.get("/v2/models/det").json()
    assert md["outputs"][:4] == [
        {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
        {"name": "detection_boxes", "datatype": "FP32", "shape": [-1, 8, 4]},
        {"name": "detection_scores", "datatype": "FP32", "shape": [-1, 8]},
        {"name": "detection_classes", "datatype": "INT64", "shape": [-1, 8]},
    ]
    assert md["parameters"]["task"] == {"kind": "detection", "max_detections": 8}


def test_infer_equals_the_in_process_joint_detector(client, reference):
    x = detection_rows(10, seed=7)
    r = client.post("/v2/models/det/infer", json=infer_body(x))
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    want = reference(x)
    assert 0 < (want["answered_by"] == "teacher").sum() < len(x)
    _check(got, want)
    assert got["detection_boxes"].shape == (10, 8, 4)
    per_image = unpad_detections(got)
    assert [len(d["boxes"]) for d in per_image] == got["num_detections"].tolist()


def test_a_wrongly_shaped_canvas_gets_a_400(client):
    r = client.post("/v2/models/det/infer", json=infer_body(np.zeros((2, 8, 8), np.float32)))
    assert r.status_code == 400 and "48" in r.json()["error"]


@pytest.mark.parametrize(("options", "match"), [
    ({"role": "teacher"}, "serve a detection bundle whole"),
    ({"remote_teacher": "http://127.0.0.1:9/v2/models/t"}, "serve a detection bundle whole"),
    ({"shadow_rate": 0.1}, "detection bundle"),
])
def test_what_does_not_apply_to_a_detector_is_refused_before_serving(bundle, options, match):
    with pytest.raises(InputError, match=match):
        load_models(ServeSettings(bundle=bundle, **options))


def test_predict_file_writes_the_padded_columns(bundle, reference, tmp_path):
    import pyarrow.parquet as pq

    x = detection_rows(9, seed=8)
    np.save(tmp_path / "x.npy", x)
    summary = predict_file(bundle, tmp_path / "x.npy", tmp_path / "out.parquet", batch_size=4,
                           progress=False)
    t = pq.read_table(tmp_path / "out.parquet")
    assert t.column_names == ["row", "prediction", "score", "answered_by", "detection_boxes",
                              "detection_scores", "detection_classes"]
    want = reference(x)
    np.testing.assert_array_equal(t["prediction"].to_numpy(), want["num_detections"])
    boxes = np.stack(t["detection_boxes"].to_numpy(zero_copy_only=False)).reshape(9, 8, 4)
    np.testing.assert_allclose(boxes, want["detection_boxes"], rtol=1e-6)
    assert t["answered_by"].to_pylist() == want["answered_by"].tolist()
    assert summary["teacher_rows"] == int((want["answered_by"] == "teacher").sum())


@pytest.mark.integration
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_calls_the_detector_unchanged(bundle, reference, binary):
    httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")
    x = detection_rows(6, seed=9)
    with ServerProcess(bundle) as srv:
        client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary)
                for n in (*NAMES, "scores", "answered_by")]
        result = client.infer("det", [inp], outputs=outs)
        client.close()
    got = {n: result.as_numpy(n) for n in (*NAMES, "scores", "answered_by")}
    assert got["num_detections"].dtype == np.int32
    _check(got, reference(x))
