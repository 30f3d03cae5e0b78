"""Output paths: a folder, a device, a full disk, a missing folder or the command's own input
get one line and exit 2 (never a traceback, never a clobbered input), and files appear whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebjr._utils.files import AtomicWriter, check_output, write_atomic
from ebjr.exceptions import InputError


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    s = rng.normal(size=(400, 3)) + 2 * np.eye(3)[y]
    t = rng.normal(size=(400, 3)) + 4 * np.eye(3)[y]
    np.savez(tmp_path / "s.npz", logits=s, labels=y)
    np.savez(tmp_path / "t.npz", logits=t, labels=y)
    return tmp_path / "s.npz", tmp_path / "t.npz"


def _ebjr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ebjr.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("target", ["folder", "dev_full", "input", "parent_is_file"])
def test_bad_output_paths_are_one_line_and_exit_2(tmp_path, target):
    s, t = _pair(tmp_path)
    before = s.read_bytes()
    out = {"folder": str(tmp_path), "dev_full": "/dev/full", "input": str(s),
           "parent_is_file": str(s / "b.json")}[target]
    r = _ebjr("calibrate", str(s), str(t), "--max-drop", "0.05", "-o", out)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert s.read_bytes() == before  # the input is untouched
    assert Path("/dev/full").is_char_device()


def test_folders_that_are_files_are_one_line_and_exit_2(tmp_path):
    s, t = _pair(tmp_path)
    for args in (["quickstart", "--out", str(s)],
                 ["evaluate", str(s), str(t), "--report", str(s)]):
        r = _ebjr(*args)
        assert r.returncode == 2, r.stderr
        assert "exists and is not a folder" in r.stderr and r.stderr.count("\n") == 1


def test_a_missing_folder_is_made_and_the_bundle_is_whole(tmp_path):
    s, t = _pair(tmp_path)
    r = _ebjr("calibrate", str(s), str(t), "--max-drop", "0.05", "-o",
              str(tmp_path / "new" / "deeper" / "b.json"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new" / "deeper" / "b.json").is_file()
    assert not list((tmp_path / "new" / "deeper").glob(".*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    writer = AtomicWriter(target)
    with pytest.raises(RuntimeError), writer as f:
        f.write(b"half")
        raise RuntimeError("crash in the middle")
    assert target.read_bytes() == b"old" and not writer.temp.exists()
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(InputError, match="is also an input"):
        check_output(target, inputs=[str(target)])
    with pytest.raises(InputError, match="not a regular file"):
        write_atomic("/dev/null", b"x")


def test_nan_in_predict_inputs_names_the_file_and_row(tmp_path):
    from serve_support import make_serve_bundle

    bundle = make_serve_bundle(tmp_path)
    x = np.zeros((20, 8, 8), np.float32)
    x[13, 2, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    r = _ebjr("predict", str(bundle), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.parquet"),
              "--no-progress")
    assert r.returncode == 2 and "row 13 holds NaN or infinity" in r.stderr, r.stderr
    assert str(tmp_path / "x.npy") in r.stderr and not (tmp_path / "o.parquet").exists()
    import pyarrow as pa
    import pyarrow.parquet as pq

    inp = tmp_path / "in.parquet"
    pq.write_table(pa.table({"data": np.zeros((4, 8, 8), np.float32).tolist()}), inp)
    before = inp.read_bytes()
    r = _ebjr("predict", str(bundle), str(inp), "-o", str(inp))
    assert r.returncode == 2 and "also an input" in r.stderr, r.stderr
    assert inp.read_bytes() == before
