"""The shared routing state of the Ray Serve application, as plain Python (no Ray needed).

Its load-aware threshold must be exactly ``ebjr serve``'s control
(:class:`LoadAwareThreshold`) fed the application-wide teacher queue.
"""

import asyncio
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebjr.exceptions import InputError
from ebjr.ray.control import Broadcast, RoutingControl
from ebjr.serve.load_control import LoadAwareThreshold


def test_the_live_threshold_is_one_value_for_every_later_batch():
    c = RoutingControl(1.5)
    assert c.begin_batch() == 1.5
    assert c.set_threshold(-2.0) == 1.5
    assert c.get_threshold() == -2.0
    assert [c.begin_batch() for _ in range(3)] == [-2.0] * 3
    assert c.threshold_info() == {"threshold": -2.0, "effective_threshold": -2.0,
                                  "load_control": None}
    with pytest.raises(InputError):
        c.set_threshold(float("nan"))
    assert c.get_threshold() == -2.0


def test_counts_and_the_teacher_queue_follow_the_batches():
    c = RoutingControl(0.0)
    c.routed(10, 4)
    c.routed(6, 2)
    assert c.queue_rows() == {"teacher": 6}  # both replicas' routed rows, not yet answered
    c.finished(10, 4, fell_back=False)
    c.finished(6, 2, fell_back=True)
    c.finished(5, 0, fell_back=False)
    assert c.queue_rows() == {"teacher": 0}
    assert c.counts() == {"batches": 3, "rows": 21, "student_rows": 17, "teacher_rows": 4,
                          "teacher_calls": 1, "fallback_rows": 2}


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(["share", "queue"]),
    budget=st.floats(0.05, 20.0),
    batches=st.lists(st.tuples(st.integers(1, 64), st.booleans()),
                     min_size=1, max_size=40),
)
def test_load_aware_threshold_equals_ebjr_serves_control_on_the_app_wide_queue(
        mode, budget, batches):
    if mode == "share":
        budget = min(budget, 1.0)
    c = RoutingControl(2.0, mode, budget, -1.0)
    ref = LoadAwareThreshold(mode, budget, -1.0)
    rng = np.random.default_rng(len(batches))
    queue = 0
    for rows, answered in batches:
        t = c.begin_batch()
        assert t == ref.effective(2.0, queue)
        scores = rng.normal(2.0, 1.0, rows)
        k = int((scores < t).sum())
        c.routed(rows, k, scores)
        ref.observe(scores)
        queue += k
        if answered:  # the teacher answered this batch (others stay queued)
            c.finished(rows, k, fell_back=False)
            queue -= k
        assert c.queue_rows() == {"teacher": queue}
    info = c.threshold_info()
    assert info["load_control"]["mode"] == mode
    assert math.isclose(info["load_control"]["allowed_share"], ref.allowed_share)


# ---------------------------------------------------------------- the pushed threshold
def test_a_published_threshold_returns_once_every_watching_replica_applied_it():
    async def go():
        c = RoutingControl(1.0)
        applied = {"a": [], "b": []}

        async def replica(name, stop):
            version = -1
            while not stop.is_set():
                version, t = await c.watch(name, version, wait_s=0.2)
                applied[name].append((version, t))

        stop = asyncio.Event()
        tasks = [asyncio.create_task(replica(n, stop)) for n in applied]
        await asyncio.sleep(0.05)
        assert await c.publish_threshold(-3.0) == 1.0
        # when publish returns, both replicas hold the new value
        assert applied["a"][-1] == applied["b"][-1] == (1, -3.0)
        stop.set()
        await asyncio.gather(*tasks)
        return c

    c = asyncio.run(go())
    assert c.get_threshold() == -3.0


def test_a_silent_replica_delays_a_publish_at_most_the_ack_timeout_and_is_then_forgotten():
    async def go():
        b = Broadcast(0.0, ack_timeout_s=0.3, forget_after_s=0.5)
        assert await b.watch("gone", -1, wait_s=0.0) == (0, 0.0)  # then never calls again
        t0 = time.monotonic()
        assert await b.publish(1.0) == ["gone"]
        assert 0.25 <= time.monotonic() - t0 < 2.0
        await asyncio.sleep(0.6)
        t0 = time.monotonic()
        assert await b.publish(2.0) == []  # forgotten: no wait
        assert time.monotonic() - t0 < 0.1
        # a replica behind gets the latest value at once, whatever it missed
        assert await b.watch("new", 0, wait_s=5.0) == (2, 2.0)

    asyncio.run(go())


def test_counts_are_the_student_deployment_s_plus_every_replica_s_last_report():
    c = RoutingControl(0.0)
    c.finished(10, 4, fell_back=False)
    c.report("a", {"rows": 5, "teacher_rows": 1, "batches": 1})
    c.report("b", {"rows": 7, "teacher_rows": 0, "batches": 2})
    c.report("a", {"rows": 9, "teacher_rows": 2, "batches": 2})  # replaces a's last
    counts = c.counts()
    assert counts["rows"] == 10 + 9 + 7
    assert counts["teacher_rows"] == 4 + 2 and counts["batches"] == 1 + 2 + 2
