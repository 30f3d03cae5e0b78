"""A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``): the teacher
deployment and the teacher stage of batch inference run on the second node,
and the answers still equal the offline joint model's."""

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")
pytest.importorskip("ray.data", reason="pip install 'ebjr[ray]'")

from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import ebjr  # noqa: E402
from ebjr.ray.data import joint_map_batches  # noqa: E402
from ebjr.ray.serve import build_app  # noqa: E402
from serve_support import free_port, infer_body, make_serve_bundle, outputs, random_rows  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("ray_cluster")))


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"second_node": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    serve.shutdown()
    ray.shutdown()
    c.shutdown()


def test_the_serve_app_spans_two_nodes(cluster, bundle):
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(bundle, student={"ray_actor_options": {"num_cpus": 0.5}},
                        teacher={"ray_actor_options": {"num_cpus": 0.5,
                                                       "resources": {"second_node": 1}}}),
              name="small", route_prefix="/")
    x = random_rows(120, seed=3)
    r = httpx.post(f"http://127.0.0.1:{port}/v2/models/small/infer", json=infer_body(x),
                   timeout=60)
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    want = ebjr.load(bundle).predict(x)
    np.testing.assert_array_equal(got["predictions"], want.predictions.numpy())
    assert got["answered_by"].tolist() == want.answered_by.tolist()
    teacher = serve.get_deployment_handle("teacher", app_name="small").stats.remote().result()
    # the student runs in the ingress replica
    student = serve.get_deployment_handle("ingress", app_name="small").stats.remote().result()
    assert teacher["node"] != student["node"] and student["batches"] >= 1
    assert teacher["rows"] == int((want.answered_by == "teacher").sum())
    serve.delete("small")


def test_batch_inference_spans_two_nodes(cluster, bundle):
    x = random_rows(2000, seed=4)
    ds = ray.data.from_numpy(x).repartition(4)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    try:
        out = joint_map_batches(
            ds, bundle, batch_size=250, student_num_cpus=0.25, teacher_num_cpus=0.25,
            teacher_ray_args={"resources": {"second_node": 1}},
        ).to_pandas()
    finally:
        ctx.execution_options.preserve_order = False
    want = ebjr.load(bundle).predict(x)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), want.predictions.numpy())
    assert out["answered_by"].tolist() == want.answered_by.tolist()
