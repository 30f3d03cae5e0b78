"""``ebjr quickstart --task detection``: a joint detector end to end, offline.

1. Data: 32x32 canvases of scikit-learn's bundled digits, one or two digits
   each with their boxes (:mod:`ebjr.zoo.digit_canvas`): training,
   calibration and test canvases are independent seeded draws.
2. Models: two grid detectors with a distribution (DFL) box head
   (:mod:`ebjr.zoo.grid_detector`), a narrow student and a deeper teacher,
   trained on the CPU (cached).
3. Calibration: the router's threshold for "mAP at most ``eps`` below the
   teacher's" on the calibration canvases (mAP is set-level: the target is
   in-sample, there is no per-image test to guarantee it).
4. Evaluation on the test canvases: every detection router's mAP against the
   teacher's share, by pycocotools, a plot, and the live joint detector.
5. A bundle (``OUT/bundle/detection.json``) that ``ebjr serve`` (padded
   detection tensors) and ``ebjr predict`` read.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ebjr.examples.quickstart import _say, single_threaded, write_summary

__all__ = ["DetectionQuickstartConfig", "run_detection_quickstart"]

SIZE = 32
CANVAS = {"size": SIZE, "max_digits": 2, "min_side": 10, "max_side": 14}
SHAPES = {"student": {"width": 8, "extra": 0}, "teacher": {"width": 16, "extra": 2}}


@dataclass(frozen=True)
class DetectionQuickstartConfig:
    """Everything the detection quickstart's result depends on."""

    seed: int = 0
    n_train: int = 2500
    n_calibration: int = 400
    n_test: int = 400
    student_epochs: int = 40
    teacher_epochs: int = 25
    eps: float = 0.03
    router: str = "energy"
    points: int = 21

    def key(self) -> str:
        data = {k: v for k, v in asdict(self).items()
                if k in ("seed", "n_train", "student_epochs", "teacher_epochs")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _train_or_load(name: str, canvases: Any, epochs: int, cfg: DetectionQuickstartConfig,
                   cache: Path) -> Any:
    import torch

    from ebjr.zoo.grid_detector import make_grid_detection_model, train_detector

    torch.manual_seed(cfg.seed)
    model = make_grid_detection_model(**SHAPES[name])
    path = cache / f"detection-{name}-{cfg.key()}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        _say(f"{name}: loaded from cache {path}")
    else:
        _say(f"training the {name} detector ({epochs} epochs)")
        train_detector(model.detector, canvases.images, canvases.boxes, canvases.labels,
                       epochs=epochs, lr=3e-3, seed=cfg.seed)
        torch.save(model.state_dict(), path)
    return model.eval()


def _plot(curves: dict[str, Any], chosen: tuple[float, float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(c.teacher_fraction, c.accuracy, marker=".", label=name)
    first = next(iter(curves.values()))
    ax.plot([0, 1], [first.accuracy[0], first.accuracy[-1]], color="grey", ls="--",
            label="straight line (random, about)")
    ax.plot(*chosen, "o", color="crimson", label="calibrated threshold (test)")
    ax.set_xlabel("share of canvases sent to the teacher")
    ax.set_ylabel("mAP (test, pycocotools)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@single_threaded
def run_detection_quickstart(out: str | Path = "ebjr-quickstart",
                             cfg: DetectionQuickstartConfig | None = None) -> dict[str, Any]:
    """Run the detection quickstart; returns the summary also written to
    ``OUT/detection-summary.json``."""
    import torch

    from ebjr._utils.files import output_folder
    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration import MaxDrop
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.evaluation.detection import MapMetric, evaluate_detection
    from ebjr.joint.cost import speedup
    from ebjr.joint.detector import JointDetector
    from ebjr.zoo.digit_canvas import make_digit_canvases
    from ebjr.zoo.grid_detector import flops_per_image

    cfg = cfg or DetectionQuickstartConfig()
    out = output_folder(out, "output folder")
    cache = output_folder(out / "cache", "cache folder")
    start = time.perf_counter()
    _say(f"data: {SIZE}x{SIZE} canvases of the bundled digits, one or two digits each")
    train = make_digit_canvases(cfg.n_train, part="train", seed=cfg.seed, **CANVAS)
    cal = make_digit_canvases(cfg.n_calibration, part="test", seed=cfg.seed + 1, **CANVAS)
    test = make_digit_canvases(cfg.n_test, part="test", seed=cfg.seed + 2, **CANVAS)
    student = _train_or_load("student", train, cfg.student_epochs, cfg, cache)
    teacher = _train_or_load("teacher", train, cfg.teacher_epochs, cfg, cache)
    flops_s = flops_per_image(student.detector, SIZE)
    flops_t = flops_per_image(teacher.detector, SIZE)

    def detect(model: Any, canvases: Any) -> list[Any]:
        with torch.inference_mode():
            return model(torch.as_tensor(canvases.images))

    s_cal, t_cal = detect(student, cal), detect(teacher, cal)
    result = calibrate_outputs(s_cal, t_cal, MapMetric(s_cal, t_cal, cal.targets, 10),
                               MaxDrop(cfg.eps), router=cfg.router, student_cost=flops_s,
                               teacher_cost=flops_t, cost_unit="FLOPs", task="detection",
                               n_points=cfg.points)
    _say(result.summary())
    s_test, t_test = detect(student, test), detect(teacher, test)
    metric = MapMetric(s_test, t_test, test.targets, 10)
    ev = evaluate_detection(s_test, t_test, metric, n_points=cfg.points, student_cost=flops_s,
                            teacher_cost=flops_t, cost_unit="FLOPs")
    kw = {name: {**shape} for name, shape in SHAPES.items()}
    adapters = {name: TorchAdapter(m, factory="ebjr.zoo.grid_detector:make_grid_detection_model",
                                   factory_kwargs=kw[name])
                for name, m in (("student", student), ("teacher", teacher))}
    joint = JointDetector(adapters["student"], adapters["teacher"], result.selection.threshold,
                          result.router, max_detections=8)
    live = joint.predict(test.images)
    mask = np.asarray(live.to_teacher, dtype=bool)
    live_map = metric(mask)
    share = float(mask.mean())
    plot = _plot(ev["curves"], (share, live_map), out / "detection.png")
    result.bundle.input = {"shape": [SIZE, SIZE], "datatype": "FP32",
                           "description": f"a {SIZE}x{SIZE} grey canvas, ink = 1"}
    bundle_path = persist.save(joint, out / "bundle" / "detection.json", result.bundle)
    summary = {
        "task": joint.task.to_spec(),
        "config": asdict(cfg),
        "student": {"map": ev["student_map"], "flops": flops_s},
        "teacher": {"map": ev["teacher_map"], "flops": flops_t},
        "threshold": result.selection.threshold,
        "router": result.router.to_spec(),
        "calibration": result.bundle.calibration,
        "test": {
            "n": len(test.images),
            "teacher_fraction": share,
            "map": live_map,
            "map_drop": ev["teacher_map"] - live_map,
            "target_met": ev["teacher_map"] - live_map <= cfg.eps,
            "flops_speedup": speedup(flops_s, flops_t, share),
            "routers": {name: {"map_at": {str(x): c.quality_at_share(x)
                                          for x in (0.1, 0.3, 0.5)}}
                        for name, c in ev["curves"].items()},
        },
        "plot": str(plot),
        "bundle": str(bundle_path),
        "seconds": time.perf_counter() - start,
    }
    write_summary(out, "detection-summary.json", summary)
    return summary


def print_detection_summary(summary: dict[str, Any]) -> None:
    """The human-readable end of ``ebjr quickstart --task detection``."""
    s, t, test, cfg = summary["student"], summary["teacher"], summary["test"], summary["config"]
    print(f"student (grid detector, narrow): mAP {s['map']:.3f}  {s['flops']:.3g} FLOPs/canvas")
    print(f"teacher (grid detector, deep):   mAP {t['map']:.3f}  {t['flops']:.3g} FLOPs/canvas")
    print(f"joint on {test['n']} held-out canvases: mAP {test['map']:.3f} (drop "
          f"{test['map_drop']:+.3f}, in-sample target <= {cfg['eps']}: "
          f"{'met' if test['target_met'] else 'NOT met'}), "
          f"{100 * test['teacher_fraction']:.1f} % to the teacher, "
          f"{test['flops_speedup']:.2f}x the teacher's speed (FLOPs)")
    if test["flops_speedup"] < 1:
        print("  no threshold that meets the target is cheaper than the teacher alone here: the "
              "student is too weak for it (a looser --max-drop, or a stronger student)")
    print("mAP at 10 / 30 / 50 % to the teacher, per router (test):")
    for name, r in test["routers"].items():
        print(f"  {name:<16} " + "  ".join(f"{v:.3f}" for v in r["map_at"].values()))
    print(f"plot: {summary['plot']}")
    print(f"bundle: {summary['bundle']}")
