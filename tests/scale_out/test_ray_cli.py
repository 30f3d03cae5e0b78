"""``ebjr serve BUNDLE --ray`` as a user runs it: a fresh process starts its own local Ray,
serves the application (Triton's client gets the offline joint model's answers), and
stops cleanly on SIGTERM."""

import os
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="pip install 'ebjr[ray]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")

import ebjr  # noqa: E402
from serve_support import ServerProcess, free_port, make_serve_bundle, random_rows  # noqa: E402


def test_ebjr_serve_ray_serves_and_stops_on_sigterm(tmp_path):
    """With a stale record of the last ``ray start`` cluster in Ray's temporary folder (a
    cluster that was killed leaves one): a plain ``ray.init()`` would try to join it and
    hang; ``ebjr serve --ray`` starts a cluster of its own."""
    bundle = str(make_serve_bundle(tmp_path))
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text("student:\n  ray_actor_options: {num_cpus: 0.5}\n"
                   "teacher:\n  ray_actor_options: {num_cpus: 0.5}\n")
    ray_tmp = tempfile.mkdtemp(prefix="ebjr-ray-", dir="/tmp")  # short: Ray's socket paths
    os.makedirs(os.path.join(ray_tmp, "ray"))
    with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as f:
        f.write(f"127.0.0.1:{free_port()}")  # nothing listens there
    server = ServerProcess(bundle, "--ray", "--ray-config", str(cfg), "--student-replicas", "2",
                           env={"RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp}, log_level="info")
    try:  # (a server that does not start is killed too, and the folder removed)
        server.start(timeout=180)
        client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
        x = random_rows(40, seed=9)
        inputs = [httpclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=True)
        result = client.infer("small", inputs)
        want = ebjr.load(bundle).predict(x)
        np.testing.assert_array_equal(result.as_numpy("predictions"), want.predictions.numpy())
        assert [a.decode() for a in result.as_numpy("answered_by")] == want.answered_by.tolist()
        assert server.terminate() == 0, server.output()[-3000:]
        _check_haproxy_gone(server.output())
    finally:
        server.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ebjr_serve_ray_refuses_a_remote_teacher(tmp_path, capsys):
    from ebjr.cli import main

    bundle = str(make_serve_bundle(tmp_path))
    assert main(["serve", bundle, "--ray", "--remote-teacher", "http://h:1/v2/models/t"]) == 2
    assert "drop --remote-teacher" in capsys.readouterr().err


def _ray_processes_of(pid: int) -> list[str]:
    """Ray's processes (GCS, raylet, agents, workers) of the session the driver ``pid`` started
    (the session's name ends with the driver's pid)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if f"_{pid} " in cmd and "session_" in cmd:
            out.append(cmd[:80])
    return out


def _check_haproxy_gone(log: str) -> None:
    """The fast data plane's HAProxy (its files in a private directory the server's log
    names) stopped with the server, and its directory is gone."""
    import os
    import re

    import psutil

    found = re.search(r"HAProxy's files in (\S+?)\)", log)
    assert found, log[-2000:]
    folder = found.group(1)
    assert os.path.basename(folder).startswith("ebjr-haproxy-")
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if folder in " ".join(p.info["cmdline"] or [])]
    assert left == []
    assert not os.path.exists(folder)


def test_more_replicas_than_cpus_fail_at_once_with_a_message(tmp_path):
    """The docs' own command on a small machine used to wait forever for CPUs that do not
    exist (and then ignore signals); now it says so and exits 2, leaving no Ray behind."""
    import os
    import subprocess
    import sys
    import time

    bundle = str(make_serve_bundle(tmp_path))
    n = (os.cpu_count() or 2) + 1
    t0 = time.monotonic()
    r = subprocess.Popen([sys.executable, "-m", "ebjr.cli", "serve", bundle, "--ray",
                          "--student-replicas", str(n), "--teacher-replicas", "1",
                          "--port", "0"], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RAY_ADDRESS": ""})
    _, err = r.communicate(timeout=180)
    assert r.returncode == 2, err[-2000:]
    assert f"reserves {n + 1} CPUs (ingress {n}, teacher 1)" in err  # the student runs there
    assert "ask for fewer replicas" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 120
    assert _ray_processes_of(r.pid) == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_deployment_that_cannot_start(tmp_path, sig):
    """A replica waiting for a resource no node has: a signal still stops the server,
    promptly, and Ray's processes go with it."""
    import signal

    bundle = str(make_serve_bundle(tmp_path))
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text("teacher:\n  ray_actor_options: {num_cpus: 0.25, resources: {gpu_box: 1}}\n"
                   "student:\n  ray_actor_options: {num_cpus: 0.25}\n")
    server = ServerProcess(bundle, "--ray", "--ray-config", str(cfg), log_level="info",
                           env={"RAY_ADDRESS": ""})
    import subprocess
    import time

    server.proc = subprocess.Popen(server.args, env=server.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "deploying 'small' on Ray Serve" not in seen:
            assert time.monotonic() < deadline, seen[-2000:]
            seen += server.proc.stdout.readline()
        time.sleep(2)
        t0 = time.monotonic()
        server.proc.send_signal(getattr(signal, sig))
        out, _ = server.proc.communicate(timeout=90)
        assert server.proc.returncode == 0, (seen + out)[-3000:]
        assert "stopped while 'small' was deploying" in out
        assert time.monotonic() - t0 < 60
        assert _ray_processes_of(server.proc.pid) == []
        _check_haproxy_gone(seen)
    finally:
        server.kill()
