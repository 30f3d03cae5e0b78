"""Cascaded batch inference on Ray Data, on a real local Ray cluster: row for row what
:meth:`JointModel.predict` gives, with the teacher given only the routed rows; a cascade
of 3 models row for row what its reference gives."""

import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="pip install 'ebjr[ray]'")
pytest.importorskip("ray.data", reason="pip install 'ebjr[ray]'")
pq = pytest.importorskip("pyarrow.parquet", reason="pip install 'ebjr[predict]'")


import ebjr  # noqa: E402
from ebjr.bundle.predict import predict_file  # noqa: E402
from ebjr.exceptions import InputError  # noqa: E402
from ebjr.ray.data import joint_map_batches, predict_files  # noqa: E402
from predict_support import check, write_inputs  # noqa: E402
from serve_support import (  # noqa: E402
    cascade_reference,
    check_cascade,
    detection_rows,
    make_cascade_bundle,
    make_detection_bundle,
    make_regression_bundle,
    make_serve_bundle,
    random_rows,
    regression_rows,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("ray_data")))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


@ray.remote
class RowCounter:
    def __init__(self):
        self.calls = []

    def add(self, n):
        self.calls.append(n)

    def get(self):
        return self.calls


def test_joint_map_batches_equals_the_joint_model_row_for_row(local_ray, bundle):
    x = random_rows(6000, seed=11)
    counter = RowCounter.remote()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # before the dataset: it copies the context
    try:
        ds = ray.data.from_numpy(x).repartition(6).materialize()
        assert ds.num_blocks() >= 4
        out = joint_map_batches(
            ds, bundle, batch_size=512, teacher_batch_size=64,
            on_teacher_batch=lambda n: counter.add.remote(n),
        ).to_pandas()
    finally:
        ctx.execution_options.preserve_order = False
    want = ebjr.load(bundle).predict(x)
    assert list(out.columns) == ["prediction", "probabilities", "score", "answered_by"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), want.predictions.numpy())
    np.testing.assert_allclose(out["score"].to_numpy(), want.scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.stack(out["probabilities"].to_numpy()),
                               want.probabilities.numpy(), atol=1e-6)
    assert out["answered_by"].tolist() == want.answered_by.tolist()
    calls = ray.get(counter.get.remote())
    routed = int((want.answered_by == "teacher").sum())
    assert 0 < routed < len(x)
    assert sum(calls) == routed  # the teacher saw the routed rows, and only those
    assert len(calls) < len(x) / 64  # in batches, not row by row


def test_predict_files_writes_what_the_in_process_predict_writes(local_ray, bundle, tmp_path):
    x = random_rows(700, seed=12)
    write_inputs(tmp_path, x)
    for name, column in (("x.npy", None), ("x.npz", None), ("x.parquet", "pixels"),
                         ("images", None)):
        a = predict_files(bundle, tmp_path / name, tmp_path / f"ray-{name}.parquet",
                          column=column, progress=False, batch_size=128)
        b = predict_file(bundle, tmp_path / name, tmp_path / f"local-{name}.parquet",
                         column=column, progress=False)
        assert a["rows"] == b["rows"] == 700 and a["teacher_rows"] == b["teacher_rows"]
        ta, tb = pq.read_table(a["output"]), pq.read_table(b["output"])
        assert ta.column_names == tb.column_names
        ids = tb[tb.column_names[0]].to_pylist()
        rows = x if name != "images" else (x * 255).round().astype(np.float32)
        check(ta, ebjr.load(bundle).predict(rows), ids)


@pytest.mark.parametrize("combine", ["last", "mean"])
def test_a_cascade_runs_one_stage_per_map_batches_row_for_row(local_ray, tmp_path, combine):
    """Each stage's actors see only the rows still open; the file equals the in-process
    ``ebjr predict`` of the cascade and the independent reference (Cascade.apply)."""
    path = str(make_cascade_bundle(tmp_path, combine=combine))
    x = random_rows(900, seed=14)
    np.save(tmp_path / "x.npy", x)
    a = predict_files(path, tmp_path / "x.npy", tmp_path / "ray.parquet", progress=False,
                      batch_size=128)
    b = predict_file(path, tmp_path / "x.npy", tmp_path / "local.parquet", progress=False)
    want = cascade_reference(path, x)
    assert a["stages"] == b["stages"] == ["small", "mid", "big"]
    assert a["answered_by"] == b["answered_by"] == {
        s: int((want["answered_by"] == s).sum()) for s in ("small", "mid", "big")}
    ta = pq.read_table(a["output"])
    assert ta.column_names == pq.read_table(b["output"]).column_names
    assert ta["row"].to_pylist() == list(range(900))
    check_cascade({"predictions": ta["prediction"].to_numpy(),
                   "scores": ta["score"].to_numpy(),
                   "probabilities": np.stack(ta["probabilities"].to_numpy(zero_copy_only=False)),
                   "answered_by": ta["answered_by"].to_pylist()}, want)


def test_a_regression_bundle_writes_what_the_in_process_predict_writes(local_ray, tmp_path):
    """The task kind's columns (a float prediction, no probabilities) on Ray Data, row for
    row the joint regressor's answers, the teacher called on the routed rows only."""
    path = str(make_regression_bundle(tmp_path))
    x = regression_rows(800, seed=15)
    np.save(tmp_path / "x.npy", x)
    a = predict_files(path, tmp_path / "x.npy", tmp_path / "ray.parquet", progress=False,
                      batch_size=128)
    b = predict_file(path, tmp_path / "x.npy", tmp_path / "local.parquet", progress=False)
    want = ebjr.load(path).predict(x)
    routed = int((want.answered_by == "teacher").sum())
    assert 0 < routed < len(x) and a["teacher_rows"] == b["teacher_rows"] == routed
    ta, tb = pq.read_table(a["output"]), pq.read_table(b["output"])
    assert ta.column_names == tb.column_names == ["row", "prediction", "score", "answered_by"]
    assert ta["row"].to_pylist() == list(range(len(x)))
    # float32 models round differently in batches of other sizes: equal up to that
    np.testing.assert_allclose(ta["prediction"].to_numpy(), want.predictions.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tb["prediction"].to_numpy(), want.predictions.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ta["score"].to_numpy(), want.scores.numpy(), rtol=1e-6)
    assert ta["answered_by"].to_pylist() == want.answered_by.tolist()


def test_a_detection_bundle_writes_what_the_in_process_predict_writes(local_ray, tmp_path):
    """A detector's answers travel between the stages as the task's padded columns; the
    file equals the in-process ``ebjr predict`` of the joint detector."""
    path = str(make_detection_bundle(tmp_path))
    x = detection_rows(40, seed=16)
    np.save(tmp_path / "x.npy", x)
    a = predict_files(path, tmp_path / "x.npy", tmp_path / "ray.parquet", progress=False,
                      batch_size=16)
    b = predict_file(path, tmp_path / "x.npy", tmp_path / "local.parquet", progress=False)
    assert 0 < a["teacher_rows"] == b["teacher_rows"] < len(x)
    ta, tb = pq.read_table(a["output"]), pq.read_table(b["output"])
    assert ta.column_names == tb.column_names
    for name in ta.column_names:
        if name == "score":
            np.testing.assert_allclose(ta[name].to_numpy(), tb[name].to_numpy(), rtol=1e-6)
        elif name.startswith("detection_"):
            np.testing.assert_allclose(np.stack(ta[name].to_numpy(zero_copy_only=False)),
                                       np.stack(tb[name].to_numpy(zero_copy_only=False)),
                                       rtol=1e-6)
        else:
            assert ta[name].to_pylist() == tb[name].to_pylist(), name


def test_bad_datasets_and_bundles_are_refused(local_ray, bundle, tmp_path):
    ds = ray.data.from_numpy(random_rows(10))
    with pytest.raises(InputError, match="batch sizes must be positive"):
        joint_map_batches(ds, bundle, batch_size=0)
    with pytest.raises(InputError, match="concurrency must be a positive integer"):
        joint_map_batches(ds, bundle, student_concurrency=0)
    with pytest.raises(Exception, match="no column 'pixels'"):
        joint_map_batches(ds, bundle, column="pixels").take_all()


def test_the_command_line_on_ray(bundle, tmp_path):
    """``ebjr predict --ray`` in a fresh process (it starts and stops its own local Ray)."""
    x = random_rows(400, seed=13)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.parquet"
    r = subprocess.run([sys.executable, "-m", "ebjr.cli", "predict", bundle,
                        str(tmp_path / "x.npy"), "-o", str(out), "--ray", "--no-progress",
                        "--batch-size", "100"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote 400 predictions" in r.stdout
    check(pq.read_table(out), ebjr.load(bundle).predict(x), list(range(400)))
