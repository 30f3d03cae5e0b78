"""The multi-node recipe of docs/scale-out.md, run as written on this machine: ``ray start
--head`` and a second ``ray start --address`` (two raylets, two "nodes"), Ray's token
authentication on, then ``ebjr serve BUNDLE --ray --ray-address`` with the teacher pinned
to the second node by a custom resource. Driven over HTTP; the answers must equal the
offline joint model's."""

import os
import secrets
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest

pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")

import ebjr
from serve_support import (
    ServerProcess,
    free_port,
    infer_body,
    make_serve_bundle,
    outputs,
    random_rows,
)

RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


@pytest.fixture
def cluster(tmp_path):
    """A head and a worker started with ``ray start``, sharing a token (a file of its own,
    so the user's ``~/.ray/auth_token`` is not touched); stopped with ``ray stop``."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_MODE": "token"}
    port = free_port()

    def ray(*args):
        r = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"ray {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"

    ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
        "--disable-usage-stats")
    try:
        ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
            '--resources={"teacher_node": 1}', "--disable-usage-stats")
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_the_documented_recipe_serves_across_two_nodes_with_the_token(cluster, tmp_path):
    address, env = cluster
    bundle = make_serve_bundle(tmp_path)
    config = tmp_path / "deploy.yaml"
    config.write_text("student:\n  ray_actor_options: {num_cpus: 0.5}\n"
                      "teacher:\n  ray_actor_options: {num_cpus: 0.5, "
                      "resources: {teacher_node: 1}}\n")
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}  # ebjr sets it from the token
    server = ServerProcess(str(bundle), "--ray", "--ray-address", address, "--ray-config",
                           str(config), env=env)
    server.start(timeout=180)
    try:
        x = random_rows(100, seed=9)
        r = httpx.post(f"{server.url}/v2/models/{bundle.stem}/infer", json=infer_body(x),
                       timeout=60)
        assert r.status_code == 200, r.text
        got, want = outputs(r.json()), ebjr.load(bundle).predict(x)
        np.testing.assert_array_equal(got["predictions"], want.predictions.numpy())
        assert got["answered_by"].astype(str).tolist() == want.answered_by.tolist()
        assert 0 < int((want.answered_by == "teacher").sum()) < len(x)
    finally:
        assert server.terminate() == 0, server.output()
