import json
import math

import pytest

from ebjr.bundle import RoutingBundle, dumps, read_bundle, write_bundle
from ebjr.exceptions import BundleError


def _bundle(threshold=1.5):
    return RoutingBundle(
        router={"name": "energy", "params": {"temperature": 2.0}},
        threshold=threshold,
        costs={"student": 1.0, "teacher": 4.0, "unit": "ms"},
        target={"kind": "max_drop", "eps": 0.01},
        calibration={"n": 100, "accuracy": 0.9, "nan_value": float("nan")},
    )


def test_round_trip(tmp_path):
    path = write_bundle(_bundle(), tmp_path / "b.json")
    back = read_bundle(path)
    assert back.router == _bundle().router and back.threshold == 1.5
    assert back.make_router().temperature == 2.0
    raw = json.loads(path.read_text())
    assert raw["format"] == "ebjr.bundle" and raw["schema_version"] == 2
    assert raw["calibration"]["nan_value"] is None  # strict JSON: NaN becomes null


def test_infinite_threshold_is_strict_json_and_routes_the_same(tmp_path):
    path = write_bundle(_bundle(math.inf), tmp_path / "b.json")
    assert "Infinity" not in path.read_text()
    back = read_bundle(path)
    assert back.threshold > 1e300

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    values = json.loads(
        dumps({"a": math.inf, "b": -math.inf, "c": math.nan}), parse_constant=refuse
    )
    assert values["a"] > 1e300 and values["b"] < -1e300 and values["c"] is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": "other"}', "is not an ebjr bundle"),
        ('{"format": "ebjr.bundle", "schema_version": 99}', "schema_version 99"),
        ('{"format": "ebjr.bundle", "schema_version": 1}', "router: Field required"),
        (
            '{"format": "ebjr.bundle", "schema_version": 1, "router": {"name": "nope"}, '
            '"threshold": 1, "costs": {}, "target": {}, "calibration": {}}',
            "bad router spec",
        ),
        (
            '{"format": "ebjr.bundle", "schema_version": 1, "router": {"name": "energy"}, '
            '"threshold": "high", "costs": {}, "target": {}, "calibration": {}}',
            "threshold: .*valid (number|integer)",
        ),
    ],
)
def test_bad_bundles(tmp_path, text, match):
    p = tmp_path / "b.json"
    p.write_text(text)
    with pytest.raises(BundleError, match=match):
        read_bundle(p)


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleError, match="bundle file not found"):
        read_bundle(tmp_path / "none.json")
