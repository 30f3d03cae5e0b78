"""Capacity planning against a hand computation on a stored curve, and ``ebjr plan``."""

import itertools
import json
import math

import pytest

from ebjr.bundle import read_bundle
from ebjr.calibration import tradeoff_curve
from ebjr.cli import main
from ebjr.evaluation.capacity import plan_capacity, teacher_only_replicas
from ebjr.exceptions import InputError
from helpers import synthetic
from serve_support import make_serve_bundle


def stored_curve():
    s, t, y = synthetic(500, seed=4)
    return tradeoff_curve(s, t, y, "softmax").summary()


def test_every_point_against_a_hand_computation():
    curve = stored_curve()
    qps, t_s, t_t, u = 1500.0, 0.0004, 0.006, 0.6
    rows = plan_capacity(curve, qps=qps, student_latency=t_s, teacher_latency=t_t,
                         utilisation=u)
    assert len(rows) == len(curve["teacher_fraction"])
    for r, f, a, thr in zip(rows, curve["teacher_fraction"], curve["accuracy"],
                            curve["threshold"], strict=True):
        # by hand: busy seconds per second over the utilisation, rounded up
        assert r.student_replicas == math.ceil(qps * t_s / u - 1e-9) == 1
        assert r.teacher_replicas == math.ceil(qps * f * t_t / u - 1e-9)
        assert r.teacher_fraction == f and r.accuracy == a
        assert r.seconds_per_request == pytest.approx(t_s + f * t_t)
        assert r.threshold == (math.inf if thr >= 1.7e308 else thr)
    # the all-teacher end needs the teacher alone's replicas, plus the student's
    assert rows[-1].teacher_replicas == teacher_only_replicas(qps, t_t, u) == 15
    # more teacher traffic never needs fewer teacher replicas
    assert all(a.teacher_replicas <= b.teacher_replicas for a, b in itertools.pairwise(rows))


def test_exact_fits_are_not_rounded_up_and_points_thin_the_table():
    curve = {"threshold": [0.0, 1.0, 2.0], "teacher_fraction": [0.0, 0.5, 1.0],
             "accuracy": None}
    rows = plan_capacity(curve, qps=100, student_latency=0.007, teacher_latency=0.014,
                         utilisation=0.7)
    assert [r.student_replicas for r in rows] == [1, 1, 1]  # 0.7 / 0.7 is exactly 1
    assert [r.teacher_replicas for r in rows] == [0, 1, 2]
    assert rows[0].accuracy is None
    many = stored_curve()
    thin = plan_capacity(many, qps=10, student_latency=0.01, teacher_latency=0.1, points=5)
    assert 2 <= len(thin) <= 5
    assert thin[0].teacher_fraction == 0.0 and thin[-1].teacher_fraction == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"qps": 0}, "qps must be a positive number"),
        ({"student_latency": -1.0}, "student_latency must be a positive number"),
        ({"utilisation": 1.5}, r"utilisation must lie in \(0, 1\]"),
        ({"points": 1}, "points must be an integer >= 2"),
        ({"curve": {}}, "stores no trade-off curve"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"curve": stored_curve(), "qps": 10.0, "student_latency": 0.01,
            "teacher_latency": 0.1, **kwargs}
    curve = args.pop("curve")
    with pytest.raises(InputError, match=match):
        plan_capacity(curve, **args)


def test_ebjr_plan_json_plot_and_measure(tmp_path, capsys):
    bundle = make_serve_bundle(tmp_path)
    png = tmp_path / "plan.png"
    assert main(["plan", str(bundle), "--qps", "800", "--student-latency", "0.001",
                 "--teacher-latency", "0.01", "--points", "6", "--plot", str(png),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 10_000
    assert out["teacher_only_replicas"] == math.ceil(800 * 0.01 / 0.7)
    curve = read_bundle(bundle).curve
    for p in out["points"]:
        assert p["teacher_fraction"] in curve["teacher_fraction"]
        assert p["teacher_replicas"] == math.ceil(800 * p["teacher_fraction"] * 0.01 / 0.7 - 1e-9)
        assert p["replicas"] == p["student_replicas"] + p["teacher_replicas"]
    # the bundle's own point is in the plan
    assert any(abs(p["teacher_fraction"] - 0.3) < 0.02 for p in out["points"])
    assert main(["plan", str(bundle), "--qps", "100", "--measure", "--batch-size", "8"]) == 0
    text = capsys.readouterr().out
    assert "the teacher alone needs" in text and "*" in text
    assert main(["plan", str(bundle), "--qps", "100"]) == 2
    assert "give --student-latency and --teacher-latency, or --measure" in \
        capsys.readouterr().err
