"""Regression and detection bundles as Ray Serve applications on a real local Ray cluster,
in both layouts (the student in the ingress replicas, or a deployment of its own):
Triton's ``tritonclient.http`` gets each task's outputs, equal to an independent reference
(regression: a per-row loop; detection: the in-process joint detector, padded); the teacher
deployment is given exactly the routed rows."""

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")

from ray import serve  # noqa: E402

import ebjr  # noqa: E402
from ebjr.ray.serve import build_app  # noqa: E402
from ebjr.tasks.detection import pad_detections  # noqa: E402
from serve_support import (  # noqa: E402
    check_regression,
    detection_rows,
    free_port,
    make_detection_bundle,
    make_regression_bundle,
    regression_reference,
    regression_rows,
)

HALF_CPU = {"ray_actor_options": {"num_cpus": 0.5}}
DETECTION = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def detection_reference(bundle, x):
    out = ebjr.load(bundle).predict(x)
    return {**pad_detections(out.predictions, 8), "scores": np.asarray(out.scores),
            "answered_by": out.answered_by}


KINDS = {
    "regression": (make_regression_bundle, regression_rows, ("predictions",),
                   regression_reference),
    "detection": (make_detection_bundle, detection_rows, DETECTION, detection_reference),
}


@pytest.fixture(scope="module", params=[(k, layout) for k in KINDS
                                        for layout in ("student_in_ingress", "deployment")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def app(request, tmp_path_factory):
    kind, layout = request.param
    bundle = str(KINDS[kind][0](tmp_path_factory.mktemp(f"ray_{kind}")))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(bundle, max_request_rows=256, student=HALF_CPU, teacher=HALF_CPU,
                        max_wait_ms=5.0, first_stage_in_ingress=layout == "student_in_ingress"),
              name="app", route_prefix="/")
    yield kind, bundle, f"127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def _teacher_rows() -> int:
    handle, seen = serve.get_deployment_handle("teacher", app_name="app"), {}
    for _ in range(20):
        st = handle.stats.remote().result()
        seen[st["pid"]] = st["rows"]
    return sum(seen.values())


@pytest.mark.integration
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_gets_the_tasks_answers_and_the_teacher_only_routed_rows(app, binary):
    kind, bundle, url = app
    _, rows, names, reference = KINDS[kind]
    name = bundle.rsplit("/", 1)[-1].removesuffix(".json")
    client = httpclient.InferenceServerClient(url=url)
    md = client.get_model_metadata(name)
    assert [o["name"] for o in md["outputs"]] == [*names, "scores", "answered_by"]
    assert md["parameters"]["task"]["kind"] == kind
    before = _teacher_rows()
    x = rows(40 if kind == "regression" else 12, seed=21 + binary)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(name, [inp], outputs=[
        httpclient.InferRequestedOutput(n, binary_data=binary)
        for n in (*names, "scores", "answered_by")])
    client.close()
    got = {n: result.as_numpy(n) for n in (*names, "scores", "answered_by")}
    want = reference(bundle, x)
    if kind == "regression":
        check_regression(got, want)
    else:
        for n in (*names, "scores"):
            np.testing.assert_allclose(got[n], want[n], rtol=1e-6)
        who = [a.decode() if isinstance(a, bytes) else str(a) for a in got["answered_by"]]
        assert who == want["answered_by"].tolist()
    routed = int((want["answered_by"] == "teacher").sum())
    assert 0 < routed < len(x)
    assert _teacher_rows() - before == routed
