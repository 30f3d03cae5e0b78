"""Fuzz the service's OpenAPI schema with schemathesis against a real server on loopback.

Every operation gets generated requests, valid and invalid; the checks are that no
answer is a 5xx, that every status, content type and body is one the schema declares,
and that invalid requests are refused. Threshold writes are fuzzed without the admin
token, so they get the declared 401 and the live threshold stays as calibrated.

(schemathesis's pytest plugin does not run on pytest 9, so the operations are driven
with hypothesis directly, through schemathesis's own strategies and checks.)
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from serve_support import ServerProcess, make_serve_bundle

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    bundle = make_serve_bundle(tmp_path_factory.mktemp("fuzz"))
    with ServerProcess(str(bundle), "--admin-token", "fuzz-secret", "--max-request-rows",
                       "64") as srv:
        yield schemathesis.openapi.from_url(f"{srv.url}/openapi.json"), srv


def _operations():
    # the operation list is fixed by the app; the schema is fetched again per test
    return [
        ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
        ("POST", "/v2/repository/index"), ("GET", "/v2/models/stats"),
        ("GET", "/v2/models/{name}/ready"), ("GET", "/v2/models/{name}/versions/{version}/ready"),
        ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/versions/{version}"),
        ("GET", "/v2/models/{name}/config"), ("GET", "/v2/models/{name}/versions/{version}/config"),
        ("GET", "/v2/models/{name}/stats"), ("GET", "/v2/models/{name}/versions/{version}/stats"),
        ("POST", "/v2/models/{name}/infer"), ("POST", "/v2/models/{name}/versions/{version}/infer"),
        ("POST", "/v2/models/{name}/predict"),
        ("GET", "/v2/models/{name}/threshold"), ("PUT", "/v2/models/{name}/threshold"),
        ("GET", "/v2/models/{name}/curve"), ("GET", "/v2/models/{name}/routing_stats"),
        ("GET", "/v2/models/{name}/guarantee"), ("POST", "/v2/models/{name}/feedback"),
        ("GET", "/metrics"),
    ]


def test_the_schema_lists_every_operation(api):
    schema, _ = api
    found = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert found == set(_operations())


# negative cases need something to mutate: the bodies of POST and PUT
# (the repository index's body is optional and nearly empty: there is nothing to mutate)
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in _operations()] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in _operations()
    if m in ("POST", "PUT") and p != "/v2/repository/index"
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES,
                         ids=lambda v: getattr(v, "value", v))
def test_no_5xx_and_responses_conform(api, method, path, mode):
    schema, srv = api
    op = schema[path][method]
    # the served model's name, so that generated requests reach the handlers (a random
    # name only ever meets the 404); negative cases still mutate the rest
    names = {"name": "small"} if "{name}" in path else None
    if "{version}" in path:
        names = {"name": "small", "version": "1"}
    statuses = []

    @given(case=op.as_strategy(generation_mode=mode, path_parameters=names))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def run(case):
        statuses.append(case.call_and_validate(base_url=srv.url, checks=CHECKS).status_code)

    run()
    assert srv.proc.poll() is None  # still serving
    # 502 is the model's fault (e.g. FP32 inputs near 3e38 overflow its logits), not ours
    assert all(s < 500 or s == 502 for s in statuses)
    if mode is GenerationMode.NEGATIVE and method in ("POST", "PUT"):
        assert all(400 <= s < 500 for s in statuses)
