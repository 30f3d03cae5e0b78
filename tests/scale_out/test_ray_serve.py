"""The Ray Serve application on a real local Ray cluster (``ray.init(num_cpus=2)``).

Driven over HTTP with Triton's ``tritonclient.http`` (called as its docs show)
and plain JSON; every answer must equal :meth:`ebjr.JointModel.predict`
offline. Two student replicas share one threshold; the teacher deployment
counts the rows it is given; killing the teacher's process under load loses
no request; bad input gets the same 4xx as ``ebjr serve``.
"""

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")

from fastapi.testclient import TestClient  # noqa: E402
from ray import serve  # noqa: E402

import ebjr  # noqa: E402
from ebjr.ray.serve import build_app  # noqa: E402
from ebjr.serve.app import create_app  # noqa: E402
from ebjr.serve.settings import ServeSettings  # noqa: E402
from serve_support import (  # noqa: E402
    BAD,
    BAD_BINARY,
    free_port,
    infer_body,
    make_serve_bundle,
    make_slow_teacher_bundle,
    outputs,
    random_rows,
)

TOKEN = "ray-token"
HALF_CPU = {"ray_actor_options": {"num_cpus": 0.5}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("ray_serve")))


TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["student_in_ingress", "student_deployment"])
def mode(request):
    return request.param


@pytest.fixture(scope="module")
def url(bundle, mode):
    """The application on a cluster of its own: the default layout on the data plane
    ``ebjr serve --ray`` gives a cluster it starts (HAProxy ingress, Ray's throughput
    settings), the separate student on Ray's default one; both as a user deploys them."""
    from ebjr.ray.data_plane import use_fast_data_plane

    saved = dict(os.environ)
    # the replicas import the slow teacher's factory from tests/serve_support.py
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), old) if p)
    # (with the short drain of a cluster ebjr starts: the module's applications come and go)
    plane = use_fast_data_plane() if mode == "student_in_ingress" else {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    os.environ.clear()  # the cluster's processes have their environment; the driver's back
    os.environ.update(saved)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(bundle, admin_token=TOKEN, max_request_rows=256, student_replicas=2,
                  student=HALF_CPU, teacher=HALF_CPU, max_wait_ms=5.0,
                  first_stage_in_ingress=mode == "student_in_ingress"),
        name="small", route_prefix="/",
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()
    if plane.get("HAPROXY_DIR"):
        shutil.rmtree(plane["HAPROXY_DIR"], ignore_errors=True)


@pytest.fixture(scope="module")
def offline(bundle):
    joint = ebjr.load(bundle)

    def predict(x, threshold=None):
        if threshold is not None:
            joint.set_threshold(threshold)
        out = joint.predict(x)
        joint.set_threshold(joint.bundle.threshold)
        return {"predictions": out.predictions.numpy(),
                "probabilities": out.probabilities.numpy(),
                "scores": out.scores.numpy(), "answered_by": np.asarray(out.answered_by)}

    return predict


def _check(got, want):
    np.testing.assert_array_equal(got["predictions"], want["predictions"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    answered = [a.decode() if isinstance(a, bytes) else str(a) for a in got["answered_by"]]
    assert answered == want["answered_by"].tolist()


def _teacher_stats(app="small"):
    return serve.get_deployment_handle("teacher", app_name=app).stats.remote().result()


def test_tritonclient_gets_answers_equal_to_the_offline_joint_model(url, offline, mode):
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready("small")
    assert client.get_model_metadata("small")["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}]
    for rows, binary in ((1, True), (64, False), (200, True)):  # 200 rows: split in chunks
        x = random_rows(rows, seed=rows)
        inputs = [httpclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput(n, binary_data=binary)
                  for n in ("predictions", "probabilities", "scores", "answered_by")]
        result = client.infer("small", inputs, outputs=wanted)
        got = {n: result.as_numpy(n) for n in ("predictions", "probabilities", "scores",
                                                "answered_by")}
        _check(got, offline(x))
    if mode == "student_deployment":  # one student deployment counts every row
        stats = client.get_inference_statistics("small")["model_stats"][0]
        assert stats["inference_count"] >= 265 and stats["execution_count"] >= 1
    else:  # documented: the statistics are those of the ingress replica that answers, and
        # either of the two may answer a statistics call: ask until one that served rows does
        seen = [client.get_inference_statistics("small")["model_stats"][0]
                for _ in range(30)]
        best = max(seen, key=lambda st: st["inference_count"])
        assert 1 <= best["inference_count"] <= 265 and best["execution_count"] >= 1


def test_the_teacher_deployment_gets_only_the_routed_rows(url, offline):
    before = _teacher_stats()["rows"]
    x = random_rows(250, seed=7)
    r = httpx.post(f"{url}/v2/models/small/infer", json=infer_body(x), timeout=60)
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    want = offline(x)
    routed = int((want["answered_by"] == "teacher").sum())
    assert 0 < routed < len(x)
    assert _teacher_stats()["rows"] - before == routed
    assert r.json()["parameters"]["teacher_rows"] == routed
    np.testing.assert_array_equal(got["predictions"], want["predictions"])


async def _load(url, n_requests, rows=8, concurrency=16, seed=0):
    """``n_requests`` JSON requests of ``rows`` random rows; (x, status, payload) each."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(i):
            x = random_rows(rows, seed=seed + i)
            async with sem:
                r = await client.post(f"{url}/v2/models/small/infer", json=infer_body(x))
            return x, r.status_code, r.json()
        return await asyncio.gather(*(one(i) for i in range(n_requests)))


def test_a_threshold_put_is_seen_by_batches_on_every_student_replica(url, offline, bundle,
                                                                     mode):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    new = 2.3  # not the bundle's (2.294), and it routes about half of these rows, so this
    # test's own load makes teacher calls (it must not rely on the tests before it)
    r = httpx.put(f"{url}/v2/models/small/threshold", json={"threshold": new}, headers=headers)
    assert r.status_code == 200 and r.json()["threshold"] == new
    try:
        results = asyncio.run(_load(url, 48, seed=100))
        for x, status, payload in results:
            assert status == 200
            assert payload["parameters"]["threshold"] == new
            _check(outputs(payload), offline(x, threshold=new))
        where = "ingress" if mode == "student_in_ingress" else "student"
        handle = serve.get_deployment_handle(where, app_name="small")
        deadline = time.monotonic() + 60
        while True:
            seen = {}
            while len(seen) < 2 and time.monotonic() < deadline:  # a call reaches either
                s = handle.stats.remote().result()
                seen[s["replica"]] = s
            if all(s["batches"] > 0 for s in seen.values()) or time.monotonic() > deadline:
                break
            # a replica no request has reached yet (HAProxy adds a replica to its servers at
            # its next reload; seen once in CI): more load, all of it at the new threshold
            for _, status, payload in asyncio.run(_load(url, 16, seed=300)):
                assert status == 200 and payload["parameters"]["threshold"] == new
        assert len(seen) == 2, "both student replicas should have answered"
        for s in seen.values():
            assert s["batches"] > 0
            assert s["threshold" if where == "ingress" else "last_threshold"] == new
        # every replica's rows are counted, whichever replica answers the stats (another
        # replica's report is at most about a second old)
        deadline = time.monotonic() + 10
        while True:
            counts = httpx.get(f"{url}/v2/models/small/routing_stats").json()["counts"]
            if counts["rows"] >= 48 * 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counts["rows"] >= 48 * 8 and counts["teacher_calls"] > 0
        assert httpx.get(f"{url}/v2/models/small/threshold").json()["threshold"] == new
    finally:
        httpx.put(f"{url}/v2/models/small/threshold",
                  json={"threshold": ebjr.load(bundle).threshold}, headers=headers)


@pytest.mark.parametrize(("what", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_the_same_4xx_as_ebjr_serve(url, bundle, what, body, status, message):
    payload = body()
    with TestClient(create_app(ServeSettings(bundle=bundle, max_request_rows=256))) as c:
        local = c.post("/v2/models/small/infer", json=payload)
    remote = httpx.post(f"{url}/v2/models/small/infer", json=payload, timeout=30)
    assert remote.status_code == local.status_code == status, remote.text
    mine, theirs = local.json(), remote.json()
    # each request its own id (Ray's proxy gives its requests one: the app keeps it)
    assert mine.pop("request_id") == local.headers["x-request-id"]
    # (Ray's proxy adds the id it gave the request to the response as well)
    assert {theirs.pop("request_id")} == {
        v.strip() for v in remote.headers["x-request-id"].split(",")}
    assert theirs == mine
    assert message in theirs["error"]


@pytest.mark.parametrize(("what", "make", "message"), BAD_BINARY,
                         ids=[b[0] for b in BAD_BINARY])
def test_bad_binary_bodies_get_the_same_400_as_ebjr_serve(url, what, make, message):
    body, headers = make(random_rows(1))
    r = httpx.post(f"{url}/v2/models/small/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 400 and message in r.json()["error"]


def test_unknown_models_and_unauthorised_writes_are_refused_as_by_ebjr_serve(url):
    r = httpx.post(f"{url}/v2/models/other/infer", json=infer_body(random_rows(1)))
    assert r.status_code == 404 and "this server serves 'small'" in r.json()["error"]
    r = httpx.put(f"{url}/v2/models/small/threshold", json={"threshold": 0.0},
                  headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_one_model_alone_as_ebjr_serve_role_does(url, bundle):
    serve.run(build_app(bundle, role="teacher", teacher=HALF_CPU, model_name="t"),
              name="teacher-alone", route_prefix="/alone")
    try:
        x = random_rows(70, seed=21)
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://") + "/alone")
        inputs = [httpclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x)
        logits = client.infer("t", inputs).as_numpy("logits")
        want = ebjr.load(bundle).teacher(x).numpy()
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
        assert client.get_model_metadata("t")["platform"] == "ebjr_model"
    finally:
        serve.delete("teacher-alone")


def test_both_models_in_the_ingress_replicas_answer_as_the_joint_model(url, bundle, offline,
                                                                     mode):
    """``teacher_in_ingress``: no teacher deployment; each ingress replica runs both models,
    answers as the joint model offline, counts its teacher calls in the application's
    counts, and applies a threshold written through any replica."""
    if mode != "student_in_ingress":
        pytest.skip("one layout is enough: the application is its own")
    quarter = {"ray_actor_options": {"num_cpus": 0.25}}  # beside "small"'s 1.5 of 2 CPUs
    serve.run(build_app(bundle, student=quarter, student_replicas=2,
                        teacher_in_ingress=True, model_name="here", admin_token=TOKEN,
                        max_request_rows=256, max_wait_ms=5.0),
              name="here", route_prefix="/here")
    try:
        deployments = serve.status().applications["here"].deployments
        assert set(deployments) == {"ingress", "control"}
        # a replica of a quarter CPU runs its two models on one thread, one after the other
        stats = serve.get_deployment_handle("ingress", app_name="here").stats.remote().result()
        assert stats["model_threads"] == 1
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://") + "/here")
        x = random_rows(150, seed=41)
        inputs = [httpclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=True)
        result = client.infer("here", inputs)
        got = {n: result.as_numpy(n) for n in ("predictions", "probabilities", "scores",
                                                "answered_by")}
        want = offline(x)
        _check(got, want)
        routed = int((want["answered_by"] == "teacher").sum())
        assert 0 < routed < len(x)
        deadline = time.monotonic() + 10  # another replica's report is about a second old
        while True:
            counts = httpx.get(f"{url}/here/v2/models/here/routing_stats").json()["counts"]
            if counts["teacher_rows"] >= routed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counts["rows"] == len(x) and counts["teacher_rows"] == routed
        assert counts["teacher_calls"] >= 1
        r = httpx.put(f"{url}/here/v2/models/here/threshold", json={"threshold": 2.3},
                      headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        for seed in range(4):  # requests land on either replica
            x = random_rows(30, seed=50 + seed)
            r = httpx.post(f"{url}/here/v2/models/here/infer", json=infer_body(x), timeout=60)
            assert r.status_code == 200, r.text
            _check(outputs(r.json()), offline(x, threshold=2.3))
        client.close()
    finally:
        serve.delete("here")


#: the slow application's teacher call timeout: rows whose call Ray holds for a dead replica
#: fall back after it instead of waiting for the replacement (about 15 s here)
TEACHER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def slow_url(url, mode, tmp_path_factory):
    """A second application on the cluster: the same models, a teacher 40 ms slower per
    call (so that a kill meets calls in flight)."""
    bundle = make_slow_teacher_bundle(tmp_path_factory.mktemp("slow"))
    quarter = {"ray_actor_options": {"num_cpus": 0.25}}  # beside "small"'s 1.5 of 2 CPUs
    serve.run(build_app(bundle, student=quarter, teacher=quarter, max_wait_ms=5.0,
                        teacher_timeout_s=TEACHER_TIMEOUT_S,
                        allow_factories=["serve_support:slow_teacher"],
                        first_stage_in_ingress=mode == "student_in_ingress"),
              name="slow", route_prefix="/slow")
    yield f"{url}/slow"
    serve.delete("slow")


def _wait_for_a_new_teacher(old_pid):
    deadline = time.monotonic() + 60  # Serve replaces the replica
    while time.monotonic() < deadline:
        try:
            pid = _teacher_stats("slow")["pid"]
            if pid != old_pid:
                return pid
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError("Serve did not replace the killed teacher replica within 60 s")


def test_killing_the_teacher_under_load_loses_no_request(slow_url, offline, mode):
    """SIGKILL the teacher replica's process mid-load: every request is answered (200);
    rows the teacher answered equal the offline teacher's, the others the student's;
    the routed rows whose teacher call died with the process, or waited for a replacement
    longer than ``teacher_timeout_s``, fell back to the student."""
    pid = _teacher_stats("slow")["pid"]
    done = []
    killed_at = []

    async def go():
        sem = asyncio.Semaphore(24)
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i):
                x = random_rows(8, seed=1000 + i)
                async with sem:
                    r = await client.post(f"{slow_url}/v2/models/slow/infer",
                                          json=infer_body(x))
                done.append(i)
                return x, r.status_code, r.json(), time.monotonic()

            tasks = [asyncio.create_task(one(i)) for i in range(240)]
            while len(done) < 30:  # the load is flowing: kill the teacher mid-stream
                await asyncio.sleep(0.01)
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.monotonic())
            return await asyncio.gather(*tasks)

    fallback, first_fallback = 0, np.inf
    for x, status, payload, answered_at in asyncio.run(go()):
        assert status == 200, payload
        got = outputs(payload)
        student = offline(x, threshold=-np.inf)["predictions"]  # nothing routed
        teacher = offline(x, threshold=np.inf)["predictions"]  # everything routed
        who = got["answered_by"].astype(str)
        np.testing.assert_array_equal(got["predictions"][who == "teacher"],
                                      teacher[who == "teacher"])
        np.testing.assert_array_equal(got["predictions"][who != "teacher"],
                                      student[who != "teacher"])
        routed = offline(x)["answered_by"] == "teacher"
        np.testing.assert_array_equal(who != "student", routed)  # routing itself unchanged
        fallback += int((who == "student_fallback").sum())
        assert payload["parameters"]["degraded"] == bool((who == "student_fallback").any())
        if (who == "student_fallback").any():
            first_fallback = min(first_fallback, answered_at - killed_at[0])
    # Ray 2.60 holds the calls it had not handed to the dead replica until a replacement
    # starts (about 15 s here); their rows fall back after teacher_timeout_s instead
    assert fallback > 0
    assert first_fallback < TEACHER_TIMEOUT_S + 5.0, first_fallback
    _wait_for_a_new_teacher(pid)
    x = random_rows(64, seed=5)  # the replaced teacher answers again
    r = httpx.post(f"{slow_url}/v2/models/slow/infer", json=infer_body(x), timeout=60)
    assert r.status_code == 200
    _check(outputs(r.json()), offline(x))
