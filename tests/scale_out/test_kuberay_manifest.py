"""deploy/kuberay/rayservice.yaml, checked as far as this machine can: its serve config
against Ray Serve's own schema and ebjr's application arguments (built for real with a
bundle in place of the volume's), its envelope against the RayService fields it uses.
It cannot be applied here (no Kubernetes)."""

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve", reason="pip install 'ebjr[ray]'")
jsonschema = pytest.importorskip("jsonschema")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from ebjr.ray.serve import DEPLOYMENT_OPTIONS, AppArgs, app  # noqa: E402
from serve_support import make_serve_bundle  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kuberay" / "rayservice.yaml"

_CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string"}, "image": {"type": "string"},
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "ports": {"type": "array", "items": {"type": "object",
                                             "required": ["containerPort"]}},
        "volumeMounts": {"type": "array", "items": {"type": "object",
                                                    "required": ["name", "mountPath"]}},
    },
}
_POD = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {"type": "object", "required": ["containers"], "properties": {
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
    }}},
}
_START = {"type": "object", "additionalProperties": {"type": "string"}}
#: the RayService (ray.io/v1) fields the manifest uses, with the CRD's types
RAYSERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "required": ["serveConfigV2", "rayClusterConfig"],
            "additionalProperties": False,
            "properties": {
                "serveConfigV2": {"type": "string"},
                "rayClusterConfig": {
                    "type": "object", "required": ["headGroupSpec"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object", "required": ["template"],
                            "properties": {"rayStartParams": _START, "template": _POD},
                        },
                        "workerGroupSpecs": {"type": "array", "items": {
                            "type": "object", "required": ["groupName", "template"],
                            "properties": {
                                "groupName": {"type": "string"},
                                "replicas": {"type": "integer", "minimum": 0},
                                "minReplicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 0},
                                "rayStartParams": _START, "template": _POD,
                            },
                        }},
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def manifest():
    return yaml.safe_load(MANIFEST.read_text())


def test_the_envelope_has_the_rayservice_fields_with_their_types(manifest):
    jsonschema.validate(manifest, RAYSERVICE)
    cluster = manifest["spec"]["rayClusterConfig"]
    import ray

    assert cluster["rayVersion"] == ray.__version__  # the image's Ray must match
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_serve_config_is_valid_for_ray_serve_and_ebjr(manifest, tmp_path):
    config = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    (application,) = config.applications
    assert application.import_path == "ebjr.ray.serve:app"
    args = AppArgs.model_validate(application.args)
    names = {d.name for d in application.deployments}
    assert names == {"ingress", "teacher"}  # the student runs in the ingress replicas
    for d in application.deployments:
        given = d.model_dump(exclude_unset=True)
        assert set(given) - {"name"} <= set(DEPLOYMENT_OPTIONS)
    # the same arguments build the application, a real bundle standing in for the volume's
    bundle = make_serve_bundle(tmp_path)
    app(args.model_copy(update={"bundle": str(bundle)}))


def test_every_pod_runs_the_fast_data_plane(manifest):
    """Ray reads the data-plane settings in each of its processes: every pod sets both, as
    ``ebjr serve --ray`` does for a cluster it starts."""
    from ebjr.ray.data_plane import FAST

    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert {k: env.get(k) for k in FAST} == FAST, container["name"]
