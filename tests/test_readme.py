"""The README's example runs as written (with small stand-ins for the user's files)."""

import re
from pathlib import Path

import numpy as np
import torch

from helpers import synthetic

README = Path(__file__).resolve().parents[1] / "README.md"


def test_ten_line_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 12
    s, t, y = synthetic(3000, c=4, seed=0)
    np.savez(tmp_path / "student_val.npz", logits=s, labels=y)
    np.savez(tmp_path / "teacher_val.npz", logits=t, labels=y)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    scope = {
        "student_model": torch.nn.Linear(6, 4),
        "teacher_model": torch.nn.Linear(6, 4),
        "batch": torch.randn(16, 6),
    }
    exec(compile(example, "README.md", "exec"), scope)
    threshold, share, speedup = capsys.readouterr().out.split()
    assert 0.0 <= float(share) <= 1.0 and float(speedup) > 0
    assert scope["out"].predictions.shape == (16,)
    assert scope["joint"].threshold == float(threshold)
