"""How a serving process runs its models: one thread each or one shared, and the allocator."""

import asyncio
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ebjr
from ebjr.serve.cascade_engine import CascadeEngine
from ebjr.serve.engine import JointEngine
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.process import _cgroup_quota, process_cpus, share_model_thread
from ebjr.serve.settings import ServeSettings
from serve_support import cascade_reference, make_cascade_bundle, make_serve_bundle, random_rows


@pytest.mark.parametrize(("setting", "cpus", "shared"), [
    (None, 1.0, True),  # a Ray replica with num_cpus=1: two model threads would take turns
    (None, 0.5, True),
    (None, 1.99, True),
    (None, 2.0, False),  # they can run at once, whatever their intra-op threads
    (None, 8.0, False),
    (True, 8.0, True),  # the setting wins both ways
    (False, 1.0, False),
])
def test_when_models_share_a_thread(setting, cpus, shared):
    assert share_model_thread(setting, cpus) is shared


def test_the_cpus_of_this_process_are_its_cores_capped_by_a_quota(tmp_path):
    assert 0 < process_cpus() <= len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert _cgroup_quota(v1) is None
    assert _cgroup_quota(tmp_path / "absent") is None


def _record(adapters):
    """Wrap each adapter's forward to note the thread it ran on, and whether two model calls
    ever ran at once (each takes a moment, so on threads of their own they do)."""
    threads, running, overlapped, lock = set(), [0], [False], threading.Lock()

    def recorded(forward):
        def call(batch):
            with lock:
                threads.add(threading.current_thread().name)
                running[0] += 1
                overlapped[0] |= running[0] > 1
            try:
                time.sleep(0.002)
                return forward(batch)
            finally:
                with lock:
                    running[0] -= 1
        return call

    for adapter in adapters:
        adapter.forward = recorded(adapter.forward)
    return threads, lambda: overlapped[0]


async def _serve(engine, x, rows=4):
    await engine.start()
    try:
        return await asyncio.gather(*(engine.infer(x[a:a + rows])
                                      for a in range(0, len(x), rows)))
    finally:
        await engine.close()


def _serve_recorded(engine_class, model, adapters, bundle, shared, names, seed):
    """``model``'s engine with ``share_model_thread=shared`` on 96 random rows, 4 per
    request: checks the threads its models ran on (``names`` when each has its own) and
    that shared ones never ran two calls at once; returns the rows and the answers."""
    threads, overlapped = _record(adapters)
    settings = ServeSettings(bundle=str(bundle), share_model_thread=shared, max_batch_size=8,
                             max_wait_ms=1.0, teacher_max_batch_size=8)
    x = random_rows(96, seed=seed)
    engine = engine_class(model, settings, ServeMetrics())
    assert engine.model_threads == (1 if shared else len(names))
    answers = asyncio.run(_serve(engine, x))
    assert threads == ({"ebjr-models_0"} if shared else {f"ebjr-{n}_0" for n in names})
    if shared:
        assert not overlapped()  # one model call at a time
    return x, answers


@pytest.mark.parametrize("shared", [True, False])
def test_a_joint_engines_models_run_on_one_thread_or_one_each(tmp_path, shared):
    bundle = make_serve_bundle(tmp_path)
    joint = ebjr.load(bundle)
    x, answers = _serve_recorded(JointEngine, joint, [joint.student, joint.teacher], bundle,
                                 shared, ["student", "teacher"], seed=3)
    want = ebjr.load(bundle).predict(x)
    got = np.concatenate([a.predictions for a in answers])
    np.testing.assert_array_equal(got, np.asarray(want.predictions))
    teacher = np.concatenate([a.answered_by == "teacher" for a in answers])
    np.testing.assert_array_equal(teacher, np.asarray(want.to_teacher))


@pytest.mark.parametrize("shared", [True, False])
def test_a_cascades_local_stages_run_on_one_thread_or_one_each(tmp_path, shared):
    bundle = make_cascade_bundle(tmp_path)
    model = ebjr.load(bundle)
    x, answers = _serve_recorded(CascadeEngine, model, model.adapters.values(), bundle, shared,
                                 ["small", "mid", "big"], seed=4)
    want = cascade_reference(bundle, x)
    got = np.concatenate([a.predictions for a in answers])
    np.testing.assert_array_equal(got, want["predictions"])


_FAULTS = """
import resource, sys, torch
from ebjr.serve.process import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
torch.set_num_threads(1)
net = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)]).eval()
x = torch.randn(16, 16, 32, 32)
with torch.inference_mode():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")
def test_reused_memory_spares_every_batch_its_page_faults(tmp_path):
    """A conv net's activations (4 MiB each) are freed after every batch: by default glibc
    hands them back to the OS and the next batch faults them in again; kept, the batches
    after the first fault (almost) never."""
    script = tmp_path / "faults.py"
    script.write_text(_FAULTS)

    def faults(mode):
        out = subprocess.run([sys.executable, str(script), mode], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parent).stdout.split()
        return out[0], float(out[1])

    (applied_default, default), (applied, reused) = faults("default"), faults("reuse")
    assert applied_default == "None" and applied == "True"
    assert default > 100  # a page fault per 4 KiB page of the activations, batch after batch
    assert reused < default / 10
