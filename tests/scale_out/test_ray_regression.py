"""A regression bundle as a Ray Serve application on a real local Ray cluster, in both
layouts (the student in the ingress replicas, or a deployment of its own): Triton's
``tritonclient.http`` gets the task's outputs, equal to the independent per-row reference;
the teacher deployment is given exactly the routed rows."""

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")

from ray import serve  # noqa: E402

from ebjr.ray.serve import build_app  # noqa: E402
from serve_support import (  # noqa: E402
    check_regression,
    free_port,
    make_regression_bundle,
    regression_reference,
    regression_rows,
)

HALF_CPU = {"ray_actor_options": {"num_cpus": 0.5}}
OUTPUTS = ("predictions", "scores", "answered_by")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_regression_bundle(tmp_path_factory.mktemp("ray_regression")))


@pytest.fixture(scope="module", params=["student_in_ingress", "student_deployment"])
def url(request, bundle):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(bundle, max_request_rows=256, student=HALF_CPU, teacher=HALF_CPU,
                        max_wait_ms=5.0,
                        first_stage_in_ingress=request.param == "student_in_ingress"),
              name="reg", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def _teacher_rows() -> int:
    handle, seen = serve.get_deployment_handle("teacher", app_name="reg"), {}
    for _ in range(20):
        st = handle.stats.remote().result()
        seen[st["pid"]] = st["rows"]
    return sum(seen.values())


@pytest.mark.integration
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_gets_the_regression_answers_and_the_teacher_only_routed_rows(
        url, bundle, binary):
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    md = client.get_model_metadata("reg")
    assert [o["name"] for o in md["outputs"]] == list(OUTPUTS)
    assert md["parameters"]["task"]["kind"] == "regression"
    before = _teacher_rows()
    x = regression_rows(120, seed=21 + binary)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("reg", [inp], outputs=[
        httpclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS])
    client.close()
    got = {n: result.as_numpy(n) for n in OUTPUTS}
    assert got["predictions"].dtype == np.float64
    want = regression_reference(bundle, x)
    check_regression(got, want)
    assert _teacher_rows() - before == int((want["answered_by"] == "teacher").sum())
