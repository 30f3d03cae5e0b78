"""What a model costs per input: counted FLOPs, measured latency, and the joint formula.

Costs can be in any unit (FLOPs, seconds, joules, dollars) as long as the
student's and the teacher's are in the same one; reports print the unit given.
The joint model pays for the student on every input and for the teacher on the
routed ones (the paper's formula):

    cost = student_cost + teacher_fraction * teacher_cost
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ebjr._utils.validation import check_cost, check_probability
from ebjr.adapters.base import batch_size
from ebjr.exceptions import InputError, missing_dependency

__all__ = ["Latency", "count_flops", "joint_cost", "measure_latency", "speedup"]


def joint_cost(student_cost: float, teacher_cost: float, teacher_fraction: float) -> float:
    """Average cost per input of the joint model (paper's formula).

    >>> joint_cost(0.54e8, 2.92e8, 0.25)
    127000000.0
    """
    cs = check_cost(student_cost, "student_cost")
    ct = check_cost(teacher_cost, "teacher_cost")
    f = check_probability(teacher_fraction, "teacher_fraction")
    return cs + f * ct


def speedup(student_cost: float, teacher_cost: float, teacher_fraction: float) -> float:
    """Teacher-only cost over joint cost: the ideal speed-up at a teacher share.

    >>> round(speedup(1.0, 4.0, 0.25), 3)
    2.0
    """
    return check_cost(teacher_cost, "teacher_cost", positive=True) / joint_cost(
        student_cost, teacher_cost, teacher_fraction
    )


def count_flops(module: Any, example: Any) -> float:
    """FLOPs per input of a torch module, counted by PyTorch's own FLOP counter.

    ``torch.utils.flop_counter.FlopCounterMode`` counts matrix multiplies and
    convolutions at 2 FLOPs per multiply-add (the convention the paper's
    "FLOPs = 2 x MACs" uses); element-wise work (ReLU, batch norm, pooling) is
    not counted, so totals are slightly below counters that include it.

    Args:
        module: an ``nn.Module``.
        example: a batch of inputs (any size); the count is divided by it.
    """
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError as exc:
        raise missing_dependency("torch", "torch", "Counting FLOPs") from exc
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"count_flops needs a torch.nn.Module, got {type(module).__name__}")
    n = batch_size(example)
    x = torch.as_tensor(example) if not isinstance(example, torch.Tensor) else example
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return counter.get_total_flops() / n


@dataclass(frozen=True)
class Latency:
    """Measured wall-clock time of one call on a batch.

    Attributes:
        batch_size: inputs per call.
        median_s: median seconds per call over the repeats.
        per_input_s: ``median_s / batch_size``.
        p90_s: 90th percentile seconds per call.
        repeats: calls timed (after ``warmup`` untimed ones).
    """

    batch_size: int
    median_s: float
    per_input_s: float
    p90_s: float
    repeats: int

    @property
    def throughput(self) -> float:
        """Inputs per second at the median."""
        return self.batch_size / self.median_s


def measure_latency(
    fn: Callable[[Any], Any], batch: Any, *, warmup: int = 3, repeats: int = 10
) -> Latency:
    """Time ``fn(batch)``: ``warmup`` untimed calls, then the median of ``repeats``.

    Torch work is synchronised (CUDA) before the clock stops.
    """
    if repeats < 1 or warmup < 0:
        raise InputError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sync = _synchroniser()
    for _ in range(warmup):
        fn(batch)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        sync()
        times.append(time.perf_counter() - start)
    n = batch_size(batch)
    med = statistics.median(times)
    p90 = sorted(times)[min(len(times) - 1, int(0.9 * len(times)))]
    return Latency(n, med, med / n, p90, repeats)


def _synchroniser() -> Callable[[], None]:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.synchronize
    return lambda: None
