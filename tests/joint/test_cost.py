import numpy as np
import pytest
import torch

from ebjr.exceptions import InputError
from ebjr.joint.cost import count_flops, joint_cost, measure_latency, speedup


def test_flops_match_the_closed_form():
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16 * 16, 10),
    )
    # 2 FLOPs per multiply-add: conv 3*8*9 MACs per output pixel, linear in*out MACs
    expected = 2 * (3 * 8 * 9 * 16 * 16 + 8 * 16 * 16 * 10)
    assert count_flops(conv, torch.randn(5, 3, 16, 16)) == expected
    assert count_flops(conv, np.zeros((1, 3, 16, 16), dtype=np.float32)) == expected
    conv.train()
    count_flops(conv, torch.randn(1, 3, 16, 16))
    assert conv.training  # the mode is restored


def test_latency_fields():
    calls = []
    lat = measure_latency(lambda b: calls.append(len(b)), np.zeros((32, 3)), warmup=2, repeats=5)
    assert len(calls) == 7 and lat.batch_size == 32 and lat.repeats == 5
    assert lat.per_input_s == pytest.approx(lat.median_s / 32)
    assert lat.p90_s >= lat.median_s > 0 and lat.throughput == pytest.approx(32 / lat.median_s)
    with pytest.raises(InputError, match="repeats >= 1"):
        measure_latency(lambda b: b, np.zeros((2, 2)), repeats=0)


def test_joint_cost_formula_and_errors():
    assert joint_cost(0.54e8, 2.92e8, 0.0) == 0.54e8
    assert joint_cost(0.54e8, 2.92e8, 1.0) == pytest.approx(3.46e8)
    assert speedup(1.0, 9.0, 0.5) == pytest.approx(9 / 5.5)
    with pytest.raises(InputError, match=r"teacher_fraction must lie in \[0, 1\]"):
        joint_cost(1, 2, 1.5)
    with pytest.raises(InputError, match="student_cost must be a finite non-negative"):
        joint_cost(-1, 2, 0.5)
    with pytest.raises(InputError, match=r"needs a torch\.nn\.Module"):
        count_flops(lambda x: x, np.zeros((1, 2)))
