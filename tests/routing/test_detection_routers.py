"""The detection routers: in the one router registry, with the routers' contract, on
``Detections`` instead of logits; the two kinds never mix."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from ebjr import JointModel
from ebjr.exceptions import InputError
from ebjr.routing import get_router, list_routers, router_from_spec
from ebjr.routing.base import ROUTERS
from ebjr.routing.detection import DETECTION_ROUTERS, detection_router, detection_scores
from ebjr.scores.detection import Detections

NAMES = list_routers(kind="detections")


def detections(seed, n=30, n_classes=4):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = 0 if i % 7 == 0 else int(rng.integers(1, 5))
        xy = rng.uniform(0, 30, size=(b, 2))
        logits = rng.normal(0, 3, size=(b, n_classes))
        p = softmax(logits, axis=1)
        out.append(Detections(np.concatenate([xy, xy + 5], axis=1), p.argmax(1), p.max(1),
                              logits, rng.normal(size=(b, 4))))
    return out


def by_hand(name, d, empty):
    """Each detection score written out for one image."""
    if len(d) == 0:
        if empty == "teacher":
            return -math.inf
        return -empty if "energy" in name else 0.0
    f_cls = float(np.mean([-logsumexp(row) for row in d.class_logits]))
    return {
        "detection_energy": -(f_cls + float(np.mean(d.coord_energy))),
        "detection_energy_cls": -f_cls,
        "detection_mean_confidence": float(np.mean(d.scores)),
        "detection_min_confidence": float(np.min(d.scores)),
        "detection_mean_softmax": float(np.mean(softmax(d.class_logits, axis=1).max(axis=1))),
    }[name]


def test_the_detection_routers_are_in_the_one_registry():
    assert NAMES == sorted(f"detection_{n}" for n in DETECTION_ROUTERS)
    assert set(NAMES) <= set(list_routers(kind=None))
    assert not set(NAMES) & set(list_routers())  # the default lists the routers of logits
    for name in NAMES:  # the lazy table names the class that registers under that name
        assert get_router(name).name == name and ROUTERS.get(name) is type(get_router(name))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("empty", ["teacher", 2.5])
def test_detection_router_conformance(name, empty):
    dets = detections(3)
    r = get_router(name, empty=empty)
    s = r.score(dets)
    np.testing.assert_allclose(s, [by_hand(name, d, empty) for d in dets], rtol=1e-12)
    assert s.shape == (30,) and not np.any(np.isnan(s)) and not np.any(s == np.inf)
    finite = s[np.isfinite(s)]
    for t in [float(np.median(finite)), float(finite.min()), float(finite.max()) + 1]:
        np.testing.assert_array_equal(r.route(dets, t), (s < t) | (s == -np.inf))
    assert r.route(dets, np.inf).all()
    np.testing.assert_array_equal(r.route(dets, -np.inf), s == -np.inf)
    assert router_from_spec(r.to_spec()) == r
    short = name.removeprefix("detection_")
    np.testing.assert_array_equal(detection_scores(dets, short, empty=empty), s)
    with pytest.raises(InputError, match="scores a sequence of Detections"):
        r.score(np.zeros((3, 4)))


def test_the_kinds_never_mix():
    with pytest.raises(InputError, match="routed by one of"):
        JointModel(lambda x: x, lambda x: x, "detection_energy")
    with pytest.raises(InputError, match="scores logits, not detections"):
        detection_router("softmax")
    with pytest.raises(InputError, match="unknown detection router 'nope'"):
        detection_scores(detections(1), "nope")
    with pytest.raises(InputError, match="empty must be 'teacher' or a finite number"):
        get_router("detection_energy", empty=math.inf)
