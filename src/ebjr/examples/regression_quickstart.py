"""``ebjr quickstart --task regression``: a regression pair end to end, offline.

1. Data: Friedman's regression problem #1 (``sklearn.datasets.make_friedman1``:
   ten uniform features of which five matter, a sine, a square and two linear
   terms, Gaussian noise), generated from the seed. Training, early stopping,
   calibration and test sets are independent draws, so the guarantee's
   assumption holds exactly.
2. Models: a tiny Gaussian-head MLP student (8 hidden units) and a larger one
   as the teacher (two layers of 128), both outputting ``[prediction, std]``
   (:mod:`ebjr.zoo.regression`), trained by the Gaussian likelihood (cached).
3. Calibration: the ``spread`` router's threshold for "mean absolute error at
   most ``eps`` above the teacher's, with probability >= ``confidence``", the
   errors clipped to ``loss_range`` (a betting test, :mod:`ebjr.calibration.guarantee`).
4. Evaluation on the test set: every regression router the student's output
   allows, the oracle and random routing, the live :class:`~ebjr.joint.JointModel`
   checked against the offline numbers, and a plot of the error against the
   teacher's share.
5. A bundle (``OUT/bundle/regression.json`` plus weights) that ``ebjr.load``,
   ``ebjr serve`` and ``ebjr predict`` read.
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

__all__ = ["RegressionQuickstartConfig", "make_friedman_splits", "run_regression_quickstart"]

N_FEATURES = 10


@dataclass(frozen=True)
class RegressionQuickstartConfig:
    """Everything the regression quickstart's result depends on."""

    seed: int = 0
    n_train: int = 8000
    n_val: int = 2000
    n_calibration: int = 5000
    n_test: int = 5000
    noise: float = 1.0
    epochs: int = 200
    eps: float = 0.05
    confidence: float = 0.95
    loss_range: tuple[float, float] = (0.0, 4.0)
    router: str = "spread"

    def key(self) -> str:
        data = {k: v for k, v in asdict(self).items()
                if k not in ("eps", "confidence", "loss_range", "router")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def make_friedman_splits(cfg: RegressionQuickstartConfig) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_val, y_val, x_cal, y_cal, x_test, y_test`` (float32 inputs of
    10 features in [0, 1]), independent draws of Friedman #1 from ``cfg.seed``."""
    from sklearn.datasets import make_friedman1

    sizes = {"train": cfg.n_train, "val": cfg.n_val, "cal": cfg.n_calibration,
             "test": cfg.n_test}
    x, y = make_friedman1(n_samples=sum(sizes.values()), n_features=N_FEATURES,
                          noise=cfg.noise, random_state=cfg.seed)
    out, start = {}, 0
    for name, n in sizes.items():
        out[f"x_{name}"] = x[start:start + n].astype(np.float32)
        out[f"y_{name}"] = y[start:start + n].astype(np.float64)
        start += n
    return out


def _train_or_load(name: str, kwargs: dict[str, Any], data: dict, cfg: RegressionQuickstartConfig,
                   cache: Path, progress: bool) -> Any:
    import torch

    from ebjr.training.gaussian import train_gaussian_regressor
    from ebjr.zoo.regression import make_gaussian_mlp

    torch.manual_seed(cfg.seed)  # the initial weights too: the same model on every run
    model = make_gaussian_mlp(**kwargs)
    arch = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()[:8]
    path = cache / f"regression-{name}-{cfg.key()}-{arch}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        _say(f"{name}: loaded from cache {path}")
    else:
        train_gaussian_regressor(model, data["x_train"], data["y_train"], data["x_val"],
                                 data["y_val"], epochs=cfg.epochs, seed=cfg.seed,
                                 progress=progress, desc=f"training {name}", checkpoint=path)
    return model.eval()


def _outputs(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy().astype(np.float64)


def _plot(ev: Any, chosen: tuple[float, float], teacher_loss: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in ev.curves.items():
        ax.plot(c.teacher_fraction, -c.accuracy, label=f"{name} router")
    f, loss = ev.oracle_curve()
    ax.plot(f, loss, "k:", label="oracle")
    ax.plot([0, 1], [ev.student_loss, teacher_loss], color="grey", ls="--", label="random")
    ax.plot(*chosen, "o", color="crimson", label="calibrated threshold (test)")
    ax.set_xlabel("share of inputs sent to the teacher")
    ax.set_ylabel(f"mean {ev.loss} error (test)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@single_threaded
def run_regression_quickstart(out: str | Path = "ebjr-quickstart",
                              cfg: RegressionQuickstartConfig | None = None, *,
                              progress: bool = True) -> dict[str, Any]:
    """Run the regression quickstart; returns the summary also written to
    ``OUT/regression-summary.json``."""
    import torch

    from ebjr._utils.files import output_folder
    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.calibration.guarantee import GuaranteedDrop
    from ebjr.evaluation.regression import evaluate_regression
    from ebjr.joint import JointModel
    from ebjr.joint.cost import count_flops, speedup
    from ebjr.tasks import Regression

    cfg = cfg or RegressionQuickstartConfig()
    out = output_folder(out, "output folder")
    cache = output_folder(out / "cache", "cache folder")
    start = time.perf_counter()
    _say("data: Friedman #1 (scikit-learn's generator), independent train/calibration/test draws")
    data = make_friedman_splits(cfg)
    y_mean, y_scale = float(data["y_train"].mean()), float(data["y_train"].std())
    shapes = {"student": {"hidden": 8, "depth": 1}, "teacher": {"hidden": 128, "depth": 2}}
    kwargs = {name: {"in_features": N_FEATURES, **shape, "y_mean": y_mean, "y_scale": y_scale}
              for name, shape in shapes.items()}
    student = _train_or_load("student", kwargs["student"], data, cfg, cache, progress)
    teacher = _train_or_load("teacher", kwargs["teacher"], data, cfg, cache, progress)
    one = torch.as_tensor(data["x_test"][:64])
    flops_s, flops_t = count_flops(student, one), count_flops(teacher, one)

    task = Regression(columns=["prediction", "std"], loss="absolute")
    target = GuaranteedDrop(cfg.eps, round(1 - cfg.confidence, 12), p_value="wsr",
                            loss_range=cfg.loss_range, seed=cfg.seed)
    result = calibrate_outputs(
        _outputs(student, data["x_cal"]), _outputs(teacher, data["x_cal"]), data["y_cal"],
        target, router=cfg.router, student_cost=flops_s, teacher_cost=flops_t,
        cost_unit="FLOPs", seed=cfg.seed, task=task)
    _say(result.summary())

    y = data["y_test"]
    s_test, t_test = _outputs(student, data["x_test"]), _outputs(teacher, data["x_test"])
    ev = evaluate_regression(s_test, t_test, y, task, student_cost=flops_s,
                             teacher_cost=flops_t, cost_unit="FLOPs")
    joint = JointModel(TorchAdapter(student, factory="ebjr.zoo.regression:make_gaussian_mlp",
                                    factory_kwargs=kwargs["student"]),
                       TorchAdapter(teacher, factory="ebjr.zoo.regression:make_gaussian_mlp",
                                    factory_kwargs=kwargs["teacher"]),
                       result.router, result.selection.threshold, task=task)
    live = joint.predict(torch.as_tensor(data["x_test"]))
    pred = live.predictions.numpy().astype(np.float64)
    share = float(live.to_teacher.float().mean())
    mae, teacher_mae = float(np.abs(pred - y).mean()), float(np.abs(t_test[:, 0] - y).mean())
    offline = ev.curves[cfg.router].at_threshold(result.selection.threshold)
    plot = _plot(ev, (share, mae), teacher_mae, out / "regression.png")
    result.bundle.input = {"shape": [N_FEATURES], "datatype": "FP32",
                           "description": "the ten features of Friedman #1, each in [0, 1]"}
    bundle_path = persist.save(joint, out / "bundle" / "regression.json", result.bundle)
    summary = {
        "task": task.to_spec(),
        "config": asdict(cfg),
        "student": {"mae": ev.student_loss, "flops": flops_s},
        "teacher": {"mae": teacher_mae, "flops": flops_t},
        "threshold": result.selection.threshold,
        "router": result.router.to_spec(),
        "calibration": result.bundle.calibration,
        "test": {
            "n": len(y),
            "teacher_fraction": share,
            "mae": mae,
            "mae_increase": mae - teacher_mae,
            "target_met": mae - teacher_mae <= cfg.eps,
            "flops_speedup": speedup(flops_s, flops_t, share),
            "live_matches_offline": bool(abs(-offline.accuracy - mae) < 1e-9),
            "routers": ev.to_json_dict()["routers"],
            "oracle_mae_at": ev.to_json_dict()["oracle_loss_at"],
        },
        "plot": str(plot),
        "bundle": str(bundle_path),
        "seconds": time.perf_counter() - start,
    }
    write_summary(out, "regression-summary.json", summary)
    return summary


def print_regression_summary(summary: dict[str, Any]) -> None:
    """The human-readable end of ``ebjr quickstart --task regression``."""
    s, t, test, cfg = summary["student"], summary["teacher"], summary["test"], summary["config"]
    print(f"student (MLP, 8 units): MAE {s['mae']:.4f}  {s['flops']:.3g} FLOPs/input")
    print(f"teacher (MLP, 2x128):   MAE {t['mae']:.4f}  {t['flops']:.3g} FLOPs/input")
    print(f"joint on {test['n']} held-out inputs: MAE {test['mae']:.4f} (increase "
          f"{test['mae_increase']:+.4f}, target <= {cfg['eps']}: "
          f"{'met' if test['target_met'] else 'NOT met'}), "
          f"{100 * test['teacher_fraction']:.1f} % to the teacher, "
          f"{test['flops_speedup']:.2f}x fewer FLOPs")
    print(f"plot: {summary['plot']}")
    print(f"bundle: {summary['bundle']}")
    print("\nnext:")
    print(f"  ebjr serve {summary['bundle']}")
    print("  ebjr calibrate STUDENT.npz TEACHER.npz --task regression --router spread ... "
          "# your own regressors' outputs")
