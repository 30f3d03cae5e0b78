"""``ebjr quickstart --task specialized``: a specialized student on skewed traffic, offline.

The paper's specialized students (eq. 15-18): traffic is skewed toward a few
classes, and the student knows only those (``n_top``, most frequent first)
plus one ``other`` class for the rest.

1. Data: the quickstart's digits, with calibration and test traffic drawn so
   that the ``n_top`` classes (0, 1, 2 by default) make ``top_share`` of it
   (80 %); both are i.i.d. draws from that traffic.
2. Models: the quickstart's tiny MLP as the student, over ``n_top + 1`` classes
   (labels outside the top classes become ``other``), and its CNN teacher over
   all 10 (both cached).
3. Calibration: the ``specialized`` router (the free energy over the kept
   classes, eq. 17; a row whose answer is ``other`` always goes to the teacher,
   eq. 16) with the student's answers mapped into the teacher's classes by the
   class map (eq. 18), for the guaranteed accuracy drop.
4. Evaluation on the test traffic with the live joint model, and a bundle
   (``OUT/bundle/specialized.json``, with its class map) that ``ebjr serve`` and
   ``ebjr predict`` read.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ebjr.examples.quickstart import (
    QuickstartConfig,
    _say,
    _train_or_load,
    make_digits_traffic,
    single_threaded,
    write_summary,
)

__all__ = ["run_specialized_quickstart", "specialized_config"]


def specialized_config(cfg: QuickstartConfig, n_top: int = 3, top_share: float = 0.8
                       ) -> QuickstartConfig:
    """``cfg`` with traffic where classes ``0 .. n_top-1`` make ``top_share`` of the rows."""
    w = [top_share / n_top] * n_top + [(1 - top_share) / (10 - n_top)] * (10 - n_top)
    return replace(cfg, class_weights=tuple(w), router="specialized")


@single_threaded
def run_specialized_quickstart(out: str | Path = "ebjr-quickstart",
                               cfg: QuickstartConfig | None = None, *, n_top: int = 3,
                               progress: bool = True) -> dict[str, Any]:
    """Run the specialized quickstart; returns the summary also written to
    ``OUT/specialized-summary.json``."""
    import torch

    from ebjr._utils.files import output_folder
    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.calibration.guarantee import GuaranteedDrop
    from ebjr.joint import JointModel
    from ebjr.joint.cost import count_flops, speedup
    from ebjr.training import predict_logits
    from ebjr.training.specialized import ClassMap

    cfg = specialized_config(cfg or QuickstartConfig(), n_top)
    out = output_folder(out, "output folder")
    cache = output_folder(out / "cache", "cache folder")
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    _say(f"data: the digits, with traffic where classes 0-{n_top - 1} make "
         f"{100 * sum(cfg.class_weights[:n_top]):.0f} % of the rows")  # type: ignore[index]
    data = make_digits_traffic(cfg)
    cmap = ClassMap(np.arange(n_top), 10)
    student = _train_or_load(f"specialized{n_top}", "make_student", data, cfg, cache, progress,
                             labels=cmap.to_student, n_classes=n_top + 1)
    teacher = _train_or_load("teacher", "make_teacher", data, cfg, cache, progress)
    one = torch.as_tensor(data["x_test"][:64])
    flops_s, flops_t = count_flops(student, one), count_flops(teacher, one)
    class_map = cmap.joint_class_map()
    result = calibrate_outputs(
        predict_logits(student, data["x_cal"]).numpy(),
        predict_logits(teacher, data["x_cal"]).numpy(), data["y_cal"],
        GuaranteedDrop(cfg.eps, round(1 - cfg.confidence, 12), seed=cfg.seed),
        router="specialized", router_params={"other_index": n_top}, student_cost=flops_s,
        teacher_cost=flops_t, cost_unit="FLOPs", seed=cfg.seed, class_map=class_map)
    _say(result.summary())

    joint = JointModel(TorchAdapter(student, factory="ebjr.zoo.digits:make_student",
                                    factory_kwargs={"n_classes": n_top + 1}),
                       TorchAdapter(teacher, factory="ebjr.zoo.digits:make_teacher"),
                       result.router, result.selection.threshold, class_map)
    y = data["y_test"]
    live = joint.predict(torch.as_tensor(data["x_test"]))
    acc = float(np.mean(live.predictions.numpy() == y))
    share = float(live.to_teacher.float().mean())
    teacher_acc = float(np.mean(predict_logits(teacher, data["x_test"]).numpy().argmax(1) == y))
    s_arg = predict_logits(student, data["x_test"]).numpy().argmax(1)
    s_pred = np.asarray(class_map)[s_arg]  # in the teacher's classes; other -> -1, never right
    result.bundle.input = {"shape": [8, 8], "datatype": "FP32", "pixel_scale": 1 / 255,
                           "description": "an 8x8 grey image of one digit, ink = 1"}
    bundle_path = persist.save(joint, out / "bundle" / "specialized.json", result.bundle)
    summary = {
        "config": {**vars(cfg), "n_top": n_top},
        "student": {"accuracy": float(np.mean(s_pred == y)), "flops": flops_s,
                    "classes": n_top + 1, "other_share": float(np.mean(s_arg == n_top))},
        "teacher": {"accuracy": teacher_acc, "flops": flops_t},
        "threshold": result.selection.threshold,
        "router": result.router.to_spec(),
        "calibration": result.bundle.calibration,
        "test": {"n": len(y), "teacher_fraction": share, "accuracy": acc,
                 "accuracy_drop": teacher_acc - acc, "target_met": teacher_acc - acc <= cfg.eps,
                 "flops_speedup": speedup(flops_s, flops_t, share)},
        "bundle": str(bundle_path),
        "seconds": time.perf_counter() - start,
    }
    write_summary(out, "specialized-summary.json", summary)
    return summary


def print_specialized_summary(summary: dict[str, Any]) -> None:
    """The human-readable end of ``ebjr quickstart --task specialized``."""
    s, t, test = summary["student"], summary["teacher"], summary["test"]
    print(f"student (MLP over {s['classes'] - 1} classes + other): right on "
          f"{100 * s['accuracy']:.2f} % of the traffic, 'other' on {100 * s['other_share']:.1f} "
          f"% (those always go to the teacher)  {s['flops']:.3g} FLOPs/input")
    print(f"teacher (CNN over 10 classes): {100 * t['accuracy']:.2f} %  "
          f"{t['flops']:.3g} FLOPs/input")
    print(f"joint on {test['n']} held-out inputs: {100 * test['accuracy']:.2f} % (drop "
          f"{100 * test['accuracy_drop']:+.2f} pt, target <= "
          f"{100 * summary['config']['eps']:.2f} pt: "
          f"{'met' if test['target_met'] else 'NOT met'}), "
          f"{100 * test['teacher_fraction']:.1f} % to the teacher, "
          f"{test['flops_speedup']:.2f}x fewer FLOPs")
    print(f"bundle: {summary['bundle']}")
