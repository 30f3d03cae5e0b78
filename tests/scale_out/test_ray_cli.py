"""``ebjr serve BUNDLE --ray`` as a user runs it: a fresh process starts its own local Ray,
serves the application (Triton's client gets the offline joint model's answers), and
stops cleanly on SIGTERM."""

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="pip install 'ebjr[ray]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")

import ebjr  # noqa: E402
from serve_support import ServerProcess, make_serve_bundle, random_rows  # noqa: E402


def test_ebjr_serve_ray_serves_and_stops_on_sigterm(tmp_path):
    bundle = str(make_serve_bundle(tmp_path))
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text("student:\n  ray_actor_options: {num_cpus: 0.5}\n"
                   "teacher:\n  ray_actor_options: {num_cpus: 0.5}\n")
    server = ServerProcess(bundle, "--ray", "--ray-config", str(cfg), "--student-replicas", "2",
                           env={"RAY_ADDRESS": ""})
    server.start(timeout=180)
    try:
        client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
        x = random_rows(40, seed=9)
        inputs = [httpclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=True)
        result = client.infer("small", inputs)
        want = ebjr.load(bundle).predict(x)
        np.testing.assert_array_equal(result.as_numpy("predictions"), want.predictions.numpy())
        assert [a.decode() for a in result.as_numpy("answered_by")] == want.source.tolist()
        assert server.terminate() == 0, server.output()[-3000:]
    finally:
        server.kill()


def test_ebjr_serve_ray_refuses_a_remote_teacher(tmp_path, capsys):
    from ebjr.cli import main

    bundle = str(make_serve_bundle(tmp_path))
    assert main(["serve", bundle, "--ray", "--remote-teacher", "http://h:1/v2/models/t"]) == 2
    assert "drop --remote-teacher" in capsys.readouterr().err
