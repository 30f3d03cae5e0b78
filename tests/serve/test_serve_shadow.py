"""Shadow traffic and the live guarantee monitor of ``ebjr serve --shadow-rate``, in-process.

Shadowing never changes a response (shadow rows queue apart from routed rows, so they
never take a routed row's place in the teacher's queue); the ``/guarantee`` route equals
the library's :class:`ebjr.GuaranteeMonitor` fed the same rows in the same batches (computed
independently: the student and the teacher run offline on every row); shadows are shed
first when the teacher's queue is busy; the policies move the threshold as they say.
"""

import logging
import math
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import ebjr
from ebjr.serve.app import create_app
from ebjr.serve.settings import ServeSettings
from serve_support import (
    cascade_reference,
    infer_body,
    make_cascade_bundle,
    make_serve_bundle,
    outputs,
    random_rows,
)

TOKEN = "shadow-token"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_serve_bundle(tmp_path_factory.mktemp("shadow"))


def serve(bundle, **settings):
    return TestClient(create_app(ServeSettings(bundle=bundle, admin_token=TOKEN,
                                               max_wait_ms=1.0, **settings)))


def guarantee(c, rows=None, timeout=10.0, name="small"):
    """The monitor's state, once it has seen ``rows`` rows (shadows answer after the
    response)."""
    deadline = time.monotonic() + timeout
    while True:
        g = c.get(f"/v2/models/{name}/guarantee").json()
        if rows is None or g["rows"] + 0 >= rows or time.monotonic() > deadline:
            return g
        time.sleep(0.02)


def test_shadowing_never_changes_a_response(bundle):
    xs = [random_rows(16, seed=i) for i in range(12)]
    with serve(bundle) as plain, serve(bundle, shadow_rate=1.0, guarantee_eps=0.05) as shadowed:
        for x in xs:
            a = plain.post("/v2/models/small/infer", json=infer_body(x)).json()
            b = shadowed.post("/v2/models/small/infer", json=infer_body(x)).json()
            assert a["outputs"] == b["outputs"] and a["parameters"] == b["parameters"]
        g = guarantee(shadowed, rows=16 * 12)
        assert g["rows"] == 16 * 12 and g["shadow_rows"] == 16 * 12 - g["teacher_rows"]
        # shadow calls answer no row: teacher_calls counts the routed rows' calls alone
        # (requests one at a time: each routes its rows in one teacher call on both servers)
        calls = [c.get("/v2/models/small/routing_stats").json()["counts"]["teacher_calls"]
                 for c in (plain, shadowed)]
        assert g["shadow_rows"] > 0 and calls[0] == calls[1] > 0


def test_the_route_equals_the_library_monitor_fed_the_same_rows(bundle):
    """With shadow rate 1 every row's teacher answer is known: the monitor's input is
    computed offline from the two models, batch by batch, and fed to the library object."""
    joint = ebjr.load(bundle)
    lib = None
    with serve(bundle, shadow_rate=1.0, guarantee_eps=0.05, guarantee_delta=0.1) as c:
        grid = [g["threshold"] for g in guarantee(c)["grid"]]
        lib = ebjr.GuaranteeMonitor(0.05, 0.1, min_shadow_prob=1.0, thresholds=grid)
        seen = 0
        for i in range(15):
            x = random_rows(20, seed=50 + i)
            r = c.post("/v2/models/small/infer", json=infer_body(x))
            assert r.status_code == 200
            seen += 20
            g = guarantee(c, rows=seen)  # one request, one batch, fed before the next
            student = outputs(r.json())["answered_by"] == "student"
            s_logits, t_logits = joint.student(x).numpy(), joint.teacher(x).numpy()
            disagree = s_logits.argmax(1) != t_logits.argmax(1)
            scores = joint.router.score(s_logits)
            lib.update(student, student, disagree, 1.0, scores=scores)
            assert g["rows"] == lib.rows and g["teacher_rows"] == lib.teacher_rows
            assert g["e_value"] == pytest.approx(lib.e_value, rel=1e-9)
            assert g["drop_upper"] == pytest.approx(lib.drop_upper)
            assert [p["certified"] for p in g["grid"]] == lib.certified().tolist()
        text = c.get("/metrics").text
    assert f"ebjr_guarantee_drop_upper {lib.drop_upper}" in text
    assert f'ebjr_shadow_rows_total{{outcome="answered"}} {float(lib.shadow_rows)}' in text


def test_rows_near_the_threshold_are_shadowed_more_and_weighted_by_their_probability(
        bundle):
    """``--shadow-near-rate 1`` with ``--shadow-rate 1e-9``: the shadowed rows are the band's
    (a row away from it is shadowed with probability 1e-9), the band holds the share of the
    calibration rows it says (their scores computed offline), and the route equals the
    library monitor fed the band's rows with their probabilities."""
    joint = ebjr.load(bundle)
    calibration = joint.router.score(joint.student(random_rows(600, seed=1)).numpy())
    with serve(bundle, shadow_rate=1e-9, shadow_near_rate=1.0, shadow_near_share=0.2,
               guarantee_eps=0.05, guarantee_delta=0.1) as c:
        g = guarantee(c)
        thr, top = g["threshold"], g["shadow_band_top"]
        assert g["shadow_near_rate"] == 1.0 and g["shadow_near_share"] == 0.2
        band_share = np.mean((calibration >= thr) & (calibration < top))
        assert 0.2 - 1 / 600 <= band_share <= 0.25, band_share
        lib = ebjr.GuaranteeMonitor(0.05, 0.1, min_shadow_prob=1e-9,
                                    thresholds=[p["threshold"] for p in g["grid"]])
        seen = 0
        for i in range(10):
            x = random_rows(24, seed=300 + i)
            r = c.post("/v2/models/small/infer", json=infer_body(x))
            seen += 24
            g = guarantee(c, rows=seen)
            student = outputs(r.json())["answered_by"] == "student"
            s_logits, t_logits = joint.student(x).numpy(), joint.teacher(x).numpy()
            scores = joint.router.score(s_logits)
            band = student & (scores < top)
            lib.update(student, band, s_logits.argmax(1) != t_logits.argmax(1),
                       np.where(band, 1.0, 1e-9), scores=scores)
            assert g["shadow_rows"] == lib.shadow_rows
            assert g["e_value"] == pytest.approx(lib.e_value, rel=1e-9)
            assert g["drop_upper"] == pytest.approx(lib.drop_upper)
    assert lib.shadow_rows > 0


def test_shadows_are_shed_first_when_the_teacher_is_busy(bundle):
    # the teacher queue holds 4 rows; shadows may use half of it: batches of 16 rows whose
    # student answers several are left out of the monitor, and no response changes
    busy = {"teacher_max_queue_rows": 4, "teacher_max_batch_size": 4}
    with serve(bundle, shadow_rate=1.0, guarantee_eps=0.05, **busy) as c, \
            serve(bundle, **busy) as plain:
        for i in range(8):
            x = random_rows(16, seed=200 + i)
            a = c.post("/v2/models/small/infer", json=infer_body(x)).json()
            b = plain.post("/v2/models/small/infer", json=infer_body(x)).json()
            assert a["outputs"] == b["outputs"]
        g = guarantee(c)
        assert g["batches_left_out"] > 0 and g["shadow_rows"] == 0
        assert 'ebjr_shadow_batches_left_out_total{reason="shed"}' in c.get("/metrics").text


@pytest.mark.parametrize("policy", ["tighten", "teacher"])
def test_on_alarm_moves_the_threshold_to_a_certified_one(bundle, policy, caplog):
    """The untrained student disagrees with the teacher on most rows it answers: with eps
    1 % the alarm comes within a few batches, and the policy acts on it."""
    with caplog.at_level(logging.WARNING, logger="ebjr.serve"), \
            serve(bundle, shadow_rate=1.0, guarantee_eps=0.01, on_alarm=policy) as c:
        before = c.get("/v2/models/small/threshold").json()["threshold"]
        for i in range(30):
            c.post("/v2/models/small/infer", json=infer_body(random_rows(32, seed=300 + i)))
        g = guarantee(c, rows=30 * 32)
        assert g["alarm"] and g["actions"]
        first = g["actions"][0]
        assert first["threshold_before"] == pytest.approx(before)
        after = c.get("/v2/models/small/threshold").json()["threshold"]
        if policy == "teacher":
            assert after >= 1e300 and first["threshold_after"] >= 1e300
        else:
            grid = {p["threshold"]: p["certified"] for p in g["grid"]}
            assert first["threshold_after"] > before
            # served: a threshold certified since the alarm, or every row to the teacher
            # until one is
            assert after >= 1e300 or grid.get(after)
    assert any("guarantee alarm" in r.message and policy in r.message for r in caplog.records)


def test_bad_monitor_settings_are_refused(bundle, tmp_path):
    from ebjr.exceptions import InputError

    with pytest.raises(InputError, match="needs the disagreement to watch"), \
            serve(bundle, shadow_rate=0.1):
        pass
    with pytest.raises(InputError, match="shadow_rate"):
        ServeSettings(bundle=bundle, shadow_rate=1.5)
    with pytest.raises(InputError, match="shadow_rate needs role 'joint'"):
        ServeSettings(bundle=bundle, shadow_rate=0.1, role="student")
    with pytest.raises(InputError, match="shadow_near_rate needs shadow_rate"):
        ServeSettings(bundle=bundle, shadow_near_rate=0.5)
    with serve(bundle) as c:
        r = c.get("/v2/models/small/guarantee")
        assert r.status_code == 404 and "--shadow-rate" in r.json()["error"]


def test_a_guaranteed_drop_bundle_gives_the_monitor_its_eps_and_delta(tmp_path):
    from ebjr.bundle import persist, read_bundle

    path = make_serve_bundle(tmp_path)
    b = read_bundle(path)
    b.target = {"kind": "guaranteed_drop", "eps": 0.03, "delta": 0.2, "p_value": "exact",
                "loss_range": None}
    joint = ebjr.load(path)
    persist.save(joint, tmp_path / "g.json", b)
    with serve(tmp_path / "g.json", shadow_rate=0.1) as c:
        g = c.get("/v2/models/g/guarantee").json()
    assert (g["eps"], g["delta"]) == (0.03, 0.2) and not math.isnan(g["drop_upper"])


def test_labels_that_arrive_later_feed_the_signed_loss_test(bundle):
    """Shadow rate 1: every row's teacher answer is known, so the labelled test's input is
    computed offline and fed to the library monitor in the same order; the route's
    labelled bound and e-value equal it. Then the refusals."""
    joint = ebjr.load(bundle)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve(bundle, shadow_rate=1.0, guarantee_eps=0.05) as c:
        grid = [g["threshold"] for g in guarantee(c)["grid"]]
        lib = ebjr.GuaranteeMonitor(0.05, 0.05, min_shadow_prob=1.0, thresholds=grid)
        for i in range(6):
            x = random_rows(24, seed=700 + i)
            r = c.post("/v2/models/small/infer", json={**infer_body(x), "id": f"req-{i}"})
            out = outputs(r.json())
            labels = (np.arange(24) + i) % 10  # the truth, from elsewhere
            fb = c.post("/v2/models/small/feedback", headers=auth,
                        json={"id": f"req-{i}", "labels": labels.tolist()})
            assert fb.status_code == 200, fb.text
            student = out["answered_by"] == "student"
            teacher = joint.teacher(x).numpy().argmax(1)
            lib.update_labels(student, student, out["predictions"] != labels,
                              teacher != labels, 1.0)
            got = fb.json()["labelled"]
            assert got["rows"] == lib.labelled_rows == 24 * (i + 1)
            assert got["drop_upper"] == pytest.approx(lib.labelled_drop_upper)
            assert got["e_value"] == pytest.approx(lib.state()["labelled"]["e_value"])
        x = random_rows(4, seed=1)
        r = c.post("/v2/models/small/infer", json={**infer_body(x), "id": "last"})
        bad = c.post("/v2/models/small/feedback", headers=auth,
                     json={"id": "last", "labels": [1, 2]})
        assert bad.status_code == 400 and "expected 4 class indices" in bad.json()["error"]
        again = c.post("/v2/models/small/feedback", headers=auth,
                       json={"id": "req-0", "labels": [0] * 24})
        assert again.status_code == 404 and "already counted" in again.json()["error"]
        assert c.post("/v2/models/small/feedback",
                      json={"id": "req-1", "labels": [0]}).status_code == 401
    with serve(bundle) as c:
        r = c.post("/v2/models/small/feedback", headers=auth, json={"id": "x", "labels": [0]})
        assert r.status_code == 404 and "--shadow-rate" in r.json()["error"]


def test_the_feedback_store_forgets_the_oldest_by_requests_and_rows():
    from types import SimpleNamespace

    from ebjr.serve.feedback import FeedbackStore, NotWaiting, pending

    def answer(n):
        return pending(SimpleNamespace(predictions=np.zeros(n),
                                       answered_by=np.array(["student"] * n),
                                       shadow=(None, 0, n)))

    store = FeedbackStore(capacity=3, max_rows=10)
    for i in range(4):
        store.put(f"r{i}", answer(2))
    assert store.pop("r0") is None and store.pop("r1") is not None  # 3 requests at most
    store.put("big", answer(9))  # 10 rows at most: the older ones go
    assert store.pop("r2") is None and store.pop("r3") is None and store.pop("big") is not None
    store.put(None, answer(1))  # no id: nothing to wait for
    store.put("plain", pending(SimpleNamespace(predictions=np.zeros(1), shadow=None)))
    with pytest.raises(NotWaiting, match="'plain'"):
        store.get("plain")


def test_a_cascades_monitor_watches_the_disagreement_with_its_last_stage(tmp_path):
    """A cascade of 3: rows an earlier stage answered are shadowed to the last stage; the
    route equals the library monitor fed the same rows, computed offline (every stage on
    every row, Cascade.apply); responses are those of a server without shadows; labels
    count; the 'teacher' policy sends every row to the last stage on the alarm."""
    from ebjr.exceptions import InputError

    path = make_cascade_bundle(tmp_path)
    live = ebjr.load(path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    lib = ebjr.GuaranteeMonitor(0.05, 0.1, min_shadow_prob=1.0)
    with serve(path, shadow_rate=1.0, guarantee_eps=0.05, guarantee_delta=0.1) as c, \
            serve(path) as plain:
        for i in range(8):
            x = random_rows(24, seed=900 + i)
            body = {**infer_body(x), "id": f"c-{i}"}
            r = c.post("/v2/models/zoo/infer", json=body)
            assert r.json()["outputs"] == plain.post("/v2/models/zoo/infer",
                                                     json=body).json()["outputs"]
            want = cascade_reference(path, x)
            early = want["answered_by"] != "big"
            big = live.adapters["big"](x).numpy().argmax(1)
            lib.update(early, early, want["predictions"] != big, 1.0)
            g = guarantee(c, rows=24 * (i + 1), name="zoo")
            assert (g["rows"], g["shadow_rows"]) == (lib.rows, lib.shadow_rows)
            assert g["e_value"] == pytest.approx(lib.e_value, rel=1e-9)
            assert g["drop_upper"] == pytest.approx(lib.drop_upper)
            assert g["threshold"] == pytest.approx(list(live.thresholds))
        labels = np.arange(24) % 10
        fb = c.post("/v2/models/zoo/feedback", headers=auth,
                    json={"id": "c-7", "labels": labels.tolist()})
        assert fb.status_code == 200, fb.text
        want_wrong = want["predictions"] != labels
        lib.update_labels(early, early, want_wrong, big != labels, 1.0)
        assert fb.json()["labelled"]["e_value"] == pytest.approx(
            lib.state()["labelled"]["e_value"])
    with serve(path, shadow_rate=1.0, guarantee_eps=0.001, on_alarm="teacher") as c:
        for i in range(6):
            c.post("/v2/models/zoo/infer", json=infer_body(random_rows(24, seed=950 + i)))
        g = guarantee(c, rows=6 * 24, name="zoo")
        assert g["alarm"] and g["actions"][0]["threshold_after"] >= 1e300
        r = c.post("/v2/models/zoo/infer", json=infer_body(random_rows(16, seed=3)))
        assert set(outputs(r.json())["answered_by"].tolist()) == {"big"}
    for bad in ({"on_alarm": "tighten"}, {"shadow_near_rate": 0.5}):
        with pytest.raises(InputError, match="a cascade's guarantee monitor"), \
                serve(path, shadow_rate=0.1, guarantee_eps=0.05, **bad):
            pass
