"""The live guarantee on Ray Serve: the monitor lives in the control deployment and counts
the rows of both ingress replicas (shadowed with per-row probabilities); its policy's move
reaches every replica; labels that arrive later reach it from any replica."""

import asyncio
import time

import httpx
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")

from ray import serve  # noqa: E402

from ebjr.exceptions import InputError  # noqa: E402
from ebjr.ray.serve import build_app  # noqa: E402
from serve_support import free_port, infer_body, make_serve_bundle, outputs, random_rows  # noqa: E402

HALF_CPU = {"ray_actor_options": {"num_cpus": 0.5}}
TOKEN = "ray-guarantee-token"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("ray_guarantee")))


@pytest.fixture(scope="module")
def url(bundle):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # rows near the threshold shadowed always, the others half the time (per-row weights)
    serve.run(build_app(bundle, shadow_rate=0.5, shadow_near_rate=1.0, guarantee_eps=0.01,
                        on_alarm="teacher", admin_token=TOKEN,
                        student_replicas=2, student=HALF_CPU, teacher=HALF_CPU,
                        max_wait_ms=2.0),
              name="small", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def _guarantee(url, rows, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        g = httpx.get(f"{url}/v2/models/small/guarantee", timeout=30).json()
        if g["rows"] >= rows or time.monotonic() > deadline:
            return g
        time.sleep(0.1)


def test_the_control_deployment_monitors_every_replica_and_its_policy_reaches_all(url):
    async def load():
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i):
                x = random_rows(16, seed=400 + i)
                r = await client.post(f"{url}/v2/models/small/infer", json=infer_body(x))
                assert r.status_code == 200, r.text
                return r.json()
            return await asyncio.gather(*(one(i) for i in range(40)))

    answers = asyncio.run(load())
    g = _guarantee(url, 40 * 16)
    assert g["batches_left_out"] == 0 and g["rows"] == 40 * 16  # both replicas' rows
    assert g["shadow_rows"] > 0 and g["eps"] == 0.01
    assert g["shadow_near_rate"] == 1.0 and g["shadow_rate"] == 0.5
    # the untrained student disagrees with the teacher on most rows it answers: the alarm
    # comes, and the 'teacher' policy sends every row to the teacher, on every replica
    assert g["alarm"] and g["actions"][0]["threshold_after"] >= 1e300
    assert any(outputs(a)["answered_by"].tolist().count("student") for a in answers)
    for seed in range(8):  # requests land on either replica
        r = httpx.post(f"{url}/v2/models/small/infer",
                       json=infer_body(random_rows(8, seed=900 + seed)), timeout=60)
        assert set(outputs(r.json())["answered_by"].tolist()) == {"teacher"}


def test_labels_reach_the_application_monitor_from_either_replica(url):
    """Answers of both replicas wait for labels in the control deployment: a label posted
    to whichever replica counts once; unknown ids and wrong counts are refused."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rows = 0
    for i in range(12):
        x = random_rows(8, seed=1200 + i)
        r = httpx.post(f"{url}/v2/models/small/infer", json={**infer_body(x), "id": f"lab-{i}"},
                       timeout=60)
        assert r.status_code == 200, r.text
    time.sleep(2.5)  # each replica sends its answers to the control about once a second
    for i in range(12):
        fb = httpx.post(f"{url}/v2/models/small/feedback", headers=auth, timeout=60,
                        json={"id": f"lab-{i}", "labels": [i % 10] * 8})
        assert fb.status_code == 200, fb.text
        rows += 8
        assert fb.json()["labelled"]["rows"] == rows
    again = httpx.post(f"{url}/v2/models/small/feedback", headers=auth, timeout=60,
                       json={"id": "lab-0", "labels": [0] * 8})
    assert again.status_code == 404 and "already counted" in again.json()["error"]
    httpx.post(f"{url}/v2/models/small/infer", timeout=60,
               json={**infer_body(random_rows(4, seed=1)), "id": "short"})
    time.sleep(2.5)
    bad = httpx.post(f"{url}/v2/models/small/feedback", headers=auth, timeout=60,
                     json={"id": "short", "labels": [1, 2]})
    assert bad.status_code == 400 and "expected 4 class indices" in bad.json()["error"]
    assert httpx.post(f"{url}/v2/models/small/feedback", timeout=60,
                      json={"id": "short", "labels": [1] * 4}).status_code == 401


def test_shadows_need_the_student_in_the_ingress(bundle):
    with pytest.raises(InputError, match="needs the student in the ingress"):
        build_app(bundle, shadow_rate=0.1, guarantee_eps=0.02, first_stage_in_ingress=False)
