"""A cascade of 3 models as a Ray Serve application on a real local Ray cluster.

The first stage runs in the two ingress replicas (or, in the second layout, in a deployment
of its own too); each later stage is a deployment of its own that counts the rows it is
given: exactly the rows passed on to it, as the independent reference (every model on
every row, then :meth:`ebjr.Cascade.apply`) says.
Triton's ``tritonclient.http`` calls it as its docs show; a thresholds write reaches
every replica before it returns.
"""

import httpx
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")

from ray import serve  # noqa: E402

from ebjr.exceptions import InputError  # noqa: E402
from ebjr.ray.serve import build_app, cpus_needed  # noqa: E402
from serve_support import (  # noqa: E402
    cascade_reference,
    check_cascade,
    free_port,
    infer_body,
    make_cascade_bundle,
    outputs,
    random_rows,
)

TOKEN = "ray-token"
HALF_CPU = {"ray_actor_options": {"num_cpus": 0.5}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_cascade_bundle(tmp_path_factory.mktemp("ray_cascade"), combine="mean"))


@pytest.fixture(scope="module", params=["first_stage_in_ingress", "a_deployment_per_stage"])
def mode(request):
    return request.param


@pytest.fixture(scope="module")
def url(bundle, mode):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(bundle, admin_token=TOKEN, max_request_rows=256, student_replicas=2,
                        student=HALF_CPU, teacher=HALF_CPU, max_wait_ms=5.0,
                        first_stage_in_ingress=mode == "first_stage_in_ingress"),
              name="zoo", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def _rows_seen(mode, app="zoo"):
    names = ("stage1", "stage2") if mode == "first_stage_in_ingress" else \
        ("stage0", "stage1", "stage2")
    out = {}
    for d in names:  # every replica's rows: ask until each has answered (calls pick one)
        handle, per_replica = serve.get_deployment_handle(d, app_name=app), {}
        for _ in range(40):
            st = handle.stats.remote().result()
            per_replica[st["pid"]] = st["rows"]
        out[d] = sum(per_replica.values())
    return out


def test_each_later_stage_is_a_deployment_that_gets_only_the_rows_passed_on(url, bundle,
                                                                            mode):
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.get_model_metadata("zoo")["parameters"]["stages"] == ["small", "mid", "big"]
    before = _rows_seen(mode)
    x = random_rows(200, seed=31)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = client.infer("zoo", [inp])
    got = {n: result.as_numpy(n) for n in ("predictions", "probabilities", "scores",
                                            "answered_by")}
    got["answered_by"] = [a.decode() for a in got["answered_by"]]
    want = cascade_reference(bundle, x)
    check_cascade(got, want)
    after = _rows_seen(mode)
    answered = want["answered_by"]
    if mode != "first_stage_in_ingress":  # every stage a deployment: the first sees every row
        assert after["stage0"] - before["stage0"] == len(x)
    assert after["stage1"] - before["stage1"] == int((answered != "small").sum()) > 0
    assert after["stage2"] - before["stage2"] == int((answered == "big").sum()) > 0
    client.close()


def test_a_thresholds_write_reaches_every_replica_before_it_returns(url, bundle):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.put(f"{url}/v2/models/zoo/threshold", json={"thresholds": [0.5, 0.4]},
                  headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    bad = httpx.put(f"{url}/v2/models/zoo/threshold", json={"thresholds": [0.5]},
                    headers=auth, timeout=30)
    assert bad.status_code == 400 and "3 stages need 2 thresholds" in bad.json()["error"]
    for seed in range(6):  # requests land on either ingress replica
        x = random_rows(40, seed=seed)
        r = httpx.post(f"{url}/v2/models/zoo/infer", json=infer_body(x), timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["parameters"]["threshold"] == [0.5, 0.4]
        want = cascade_reference(bundle, x, thresholds=(0.5, 0.4))
        assert outputs(r.json())["answered_by"].tolist() == want["answered_by"].tolist()
    stats = httpx.get(f"{url}/v2/models/zoo/routing_stats", timeout=30).json()
    assert stats["threshold"] == [0.5, 0.4] and stats["stages"] == ["small", "mid", "big"]
    assert stats["counts"]["rows"] >= 240
    assert stats["counts"]["stage_rows"]["small"] == stats["counts"]["rows"]


def test_every_stage_in_the_ingress_replicas_answers_as_the_cascade(url, bundle, mode):
    """``teacher_in_ingress``: no stage deployment, each ingress replica runs every stage."""
    if mode != "first_stage_in_ingress":
        pytest.skip("one layout is enough: the application is its own")
    no_cpu = {"ray_actor_options": {"num_cpus": 0}}  # "zoo" holds the cluster's 2 CPUs
    serve.run(build_app(bundle, student=no_cpu, teacher_in_ingress=True, model_name="zoo2",
                        max_request_rows=256), name="zoo2", route_prefix="/zoo2")
    try:
        assert set(serve.status().applications["zoo2"].deployments) == {"ingress", "control"}
        x = random_rows(120, seed=37)
        r = httpx.post(f"{url}/zoo2/v2/models/zoo2/infer", json=infer_body(x), timeout=60)
        assert r.status_code == 200, r.text
        got = outputs(r.json())
        got["answered_by"] = got["answered_by"].tolist()
        want = cascade_reference(bundle, x)
        check_cascade(got, want)
        assert len(set(want["answered_by"].tolist())) == 3  # every stage answered some rows
    finally:
        serve.delete("zoo2")


def test_a_config_file_sets_each_stages_own_deployment_options(bundle, tmp_path):
    from serve_support import make_serve_bundle

    config = tmp_path / "deploy.yaml"
    config.write_text("teacher:\n  ray_actor_options: {num_cpus: 0.5}\n"
                      "stage2:\n  num_replicas: 2\n  ray_actor_options: {num_cpus: 0.25}\n")
    assert cpus_needed(bundle, config=str(config), student=HALF_CPU) == {
        "ingress": 0.5, "stage1": 0.5, "stage2": 0.5}
    config.write_text("stage9:\n  num_replicas: 2\n")
    with pytest.raises(InputError, match="no deployment 'stage9'"):
        cpus_needed(bundle, config=str(config))
    config.write_text("stage1:\n  replicas: 2\n")
    with pytest.raises(InputError, match=r"unknown option\(s\) \['replicas'\]"):
        cpus_needed(bundle, config=str(config))
    config.write_text("stage1:\n  num_replicas: 2\n")
    pair = str(make_serve_bundle(tmp_path))
    with pytest.raises(InputError, match="configure a cascade's stages"):
        cpus_needed(pair, config=str(config))


def test_cascade_options_are_checked_before_ray_starts(bundle):
    assert cpus_needed(bundle, student=HALF_CPU, teacher=HALF_CPU) == {
        "ingress": 0.5, "stage1": 0.5, "stage2": 0.5}
    assert cpus_needed(bundle, student=HALF_CPU, teacher=HALF_CPU,
                       first_stage_in_ingress=False) == {
        "ingress": 0.0, "stage0": 0.5, "stage1": 0.5, "stage2": 0.5}
    assert cpus_needed(bundle, student=HALF_CPU, teacher_in_ingress=True) == {"ingress": 0.5}
    with pytest.raises(InputError, match="not a cascade"):
        build_app(bundle, load_mode="share", load_budget=0.5)
