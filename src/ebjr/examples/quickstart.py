"""``ebjr quickstart``: the whole workflow on scikit-learn's bundled digits, offline.

1. Data: the 1,797 bundled 8x8 digits. Half of the original images train the
   models, a tenth is for early stopping, and the remaining 40 % define the
   "traffic": a random original image plus a random small rotation, scaling,
   shift and pixel noise. Calibration and test sets are independent draws from
   that traffic distribution, so the guarantee's assumption holds exactly.
2. Models: a tiny MLP student and a small CNN teacher, trained with torch on
   the CPU (cached by configuration in ``OUT/cache``).
3. Calibration: the threshold for the target (default: accuracy drop vs the
   teacher <= 0.5 point with probability >= 95 %), on the calibration set.
4. Evaluation on the test set: every router, the oracle, McNemar of the joint
   model vs the teacher, FLOPs and measured latency, the live
   :class:`~ebjr.joint.JointModel` checked against the offline numbers, and an
   HTML report with plots.
5. A bundle (``OUT/bundle/quickstart.json`` plus weights) that ``ebjr.load``
   and ``ebjr serve`` read.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["QuickstartConfig", "make_digits_traffic", "run_quickstart"]


@dataclass(frozen=True)
class QuickstartConfig:
    """Everything the quickstart's result depends on (the cache key)."""

    seed: int = 0
    n_calibration: int = 6000
    n_test: int = 6000
    augment_per_image: int = 12
    epochs: int = 40
    eps: float = 0.005
    confidence: float = 0.95
    router: str = "energy"
    #: the calibration and test traffic's classes: ``None`` uniform, or one weight per class
    class_weights: tuple[float, ...] | None = None

    def key(self) -> str:
        data = json.dumps(
            # what the trained models depend on (not the calibration, nor the traffic's skew)
            {k: v for k, v in vars(self).items()
             if k not in ("eps", "confidence", "router", "class_weights")},
            sort_keys=True,
        )
        return hashlib.sha256(data.encode()).hexdigest()[:12]


def _augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random rotation (+-10 deg), scale (0.9-1.1), shift (+-1 px) and noise, per image."""
    from scipy import ndimage

    out = np.empty_like(images)
    centre = np.array([3.5, 3.5])
    for i, img in enumerate(images):
        angle = np.deg2rad(rng.uniform(-10, 10))
        scale = rng.uniform(0.9, 1.1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
        shift = rng.uniform(-1, 1, size=2)
        offset = centre - rot @ (centre + shift)
        out[i] = ndimage.affine_transform(
            img, rot, offset=offset, order=1, mode="constant"  # pyright: ignore[reportArgumentType]
        )
    out += rng.normal(0, 0.05, size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def make_digits_traffic(cfg: QuickstartConfig) -> dict[str, np.ndarray]:
    """Training, early-stopping, calibration and test sets from the bundled digits (seeded).

    Returns a dict with ``x_train, y_train, x_val, y_val, x_cal, y_cal, x_test,
    y_test``; images are float32 ``(n, 8, 8)`` in ``[0, 1]``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits: Any = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, rest = train_test_split(idx, train_size=0.5, stratify=labels, random_state=cfg.seed)
    val_idx, pool = train_test_split(
        rest, train_size=0.2, stratify=labels[rest], random_state=cfg.seed
    )
    rng = np.random.default_rng(cfg.seed)
    reps = np.repeat(train_idx, cfg.augment_per_image)
    data = {
        "x_train": _augment(images[reps], rng),
        "y_train": labels[reps],
        "x_val": _augment(images[np.repeat(val_idx, 3)], rng),
        "y_val": labels[np.repeat(val_idx, 3)],
    }
    p = None
    if cfg.class_weights is not None:  # skewed traffic: each image weighted by its class
        w = np.asarray(cfg.class_weights, dtype=np.float64)[labels[pool]]
        p = w / w.sum()
    for split, n in (("cal", cfg.n_calibration), ("test", cfg.n_test)):
        draw = rng.choice(pool, size=n, replace=True, p=p)  # i.i.d. draws from the traffic
        data[f"x_{split}"] = _augment(images[draw], rng)
        data[f"y_{split}"] = labels[draw]
    return data


def single_threaded(fn: Any) -> Any:
    """Run ``fn`` with torch on one intra-op thread (restored after). The quickstarts' small
    models train faster so, and their numbers do not depend on the machine's core count
    (parallel reductions sum in another order with another number of threads)."""
    import functools

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


def write_summary(out: Path, filename: str, summary: dict[str, Any]) -> None:
    """Write a quickstart's ``summary`` as strict JSON to ``out/filename`` (atomically)."""
    from ebjr._utils.files import write_atomic
    from ebjr.bundle import dumps

    write_atomic(out / filename, (dumps(summary, indent=2) + "\n").encode(), "summary")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train_or_load(
    name: str, factory: str, data: dict, cfg: QuickstartConfig, cache: Path, progress: bool,
    labels: Any = None, **kwargs: Any,
) -> Any:
    """The digits model ``factory`` (with ``kwargs``) trained on ``data`` (its labels mapped
    by ``labels``, e.g. a specialized student's), or read from the cache."""
    import torch

    from ebjr.training import train_classifier
    from ebjr.zoo import digits

    model = getattr(digits, factory)(**kwargs)
    relabel = (lambda y: y) if labels is None else labels
    # the architecture is part of the key: a cache from another version is never loaded
    arch = hashlib.sha256(
        repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()]).encode()
    ).hexdigest()[:8]
    path = cache / f"{name}-{cfg.key()}-{arch}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        _say(f"{name}: loaded from cache {path}")
    else:
        train_classifier(
            model,
            data["x_train"],
            relabel(data["y_train"]),
            data["x_val"],
            relabel(data["y_val"]),
            epochs=cfg.epochs,
            seed=cfg.seed,
            progress=progress,
            desc=f"training {name}",
            checkpoint=path,
        )
    return model.eval()


@single_threaded
def run_quickstart(
    out: str | Path = "ebjr-quickstart",
    cfg: QuickstartConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the quickstart end to end; returns the summary also written to ``OUT/summary.json``."""
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import dumps, persist
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.calibration.guarantee import GuaranteedDrop
    from ebjr.evaluation import evaluate, mcnemar
    from ebjr.evaluation.report import write_report
    from ebjr.joint import JointModel
    from ebjr.joint.cost import count_flops, measure_latency, speedup
    from ebjr.training import predict_logits

    cfg = cfg or QuickstartConfig()
    from ebjr._utils.files import output_folder

    out = output_folder(out, "output folder")
    cache = output_folder(out / "cache", "cache folder")
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    _say("data: scikit-learn's bundled digits, augmented into i.i.d. calibration/test traffic")
    data = make_digits_traffic(cfg)
    student = _train_or_load("student", "make_student", data, cfg, cache, progress)
    teacher = _train_or_load("teacher", "make_teacher", data, cfg, cache, progress)

    one = torch.as_tensor(data["x_test"][:64])
    flops_s, flops_t = count_flops(student, one), count_flops(teacher, one)
    s_cal, t_cal = predict_logits(student, data["x_cal"]), predict_logits(teacher, data["x_cal"])
    target = GuaranteedDrop(cfg.eps, round(1 - cfg.confidence, 12), seed=cfg.seed)
    result = calibrate_outputs(
        s_cal.numpy(),
        t_cal.numpy(),
        data["y_cal"],
        target,
        router=cfg.router,
        student_cost=flops_s,
        teacher_cost=flops_t,
        cost_unit="FLOPs",
        seed=cfg.seed,
    )
    _say(result.summary())

    # held-out test: offline curves of every router, and the live joint model
    y = data["y_test"]
    s_test, t_test = (
        predict_logits(student, data["x_test"]),
        predict_logits(teacher, data["x_test"]),
    )
    ev = evaluate(
        s_test.numpy(),
        t_test.numpy(),
        y,
        student_cost=flops_s,
        teacher_cost=flops_t,
        cost_unit="FLOPs",
    )
    label = "energy" if cfg.router == "energy" else cfg.router
    curve = ev.curves[label] if label in ev.curves else None
    s_factory = TorchAdapter(student, factory="ebjr.zoo.digits:make_student")
    t_factory = TorchAdapter(teacher, factory="ebjr.zoo.digits:make_teacher")
    joint = JointModel(s_factory, t_factory, result.router, result.selection.threshold)
    live = joint.predict(torch.as_tensor(data["x_test"]))
    joint_pred = live.predictions.numpy()
    held_acc = float(np.mean(joint_pred == y))
    held_share = float(live.to_teacher.float().mean())
    teacher_acc = float(np.mean(t_test.numpy().argmax(1) == y))
    offline = curve.at_threshold(result.selection.threshold) if curve is not None else None
    sig = mcnemar(joint_pred, t_test.numpy().argmax(1), y)

    lat_batch = torch.as_tensor(data["x_test"][:256])
    lat_s = measure_latency(lambda b: student(b), lat_batch, repeats=20)
    lat_t = measure_latency(lambda b: teacher(b), lat_batch, repeats=20)
    lat_j = measure_latency(joint.predict, lat_batch, repeats=20)

    from ebjr.calibration import Selection

    held_point = offline if offline is not None else result.selection.point
    test_selection = Selection(result.selection.threshold, held_point, result.selection.target)
    report = write_report(
        ev,
        out / "report",
        selection=test_selection,
        title="ebjr quickstart: digits, held-out test set",
        notes=[
            f"Threshold chosen on {result.curve.n} calibration inputs with target "
            f"{dumps(result.selection.target)}; everything on this page is measured on "
            f"{len(y)} separate test inputs from the same traffic distribution.",
            f"Live JointModel on the test set: {100 * held_share:.1f} % of inputs to the "
            f"teacher, accuracy {100 * held_acc:.2f} % (teacher alone {100 * teacher_acc:.2f} %). "
            f"McNemar vs the teacher: p = {sig.p_value:.3g} ({sig.only_a} inputs only the joint "
            f"model gets right, {sig.only_b} only the teacher).",
            f"Measured at batch 256 on this CPU: student {1e6 * lat_s.per_input_s:.1f} us, "
            f"teacher {1e6 * lat_t.per_input_s:.1f} us, joint {1e6 * lat_j.per_input_s:.1f} us "
            "per input.",
        ],
    )
    result.bundle.input = {
        "shape": [8, 8],
        "datatype": "FP32",
        "description": "an 8x8 grey image of one digit, ink = 1, background = 0; an image "
        "file's pixels (ink 255) are scaled to that",
        "pixel_scale": 1 / 255,
    }
    bundle_path = persist.save(joint, out / "bundle" / "quickstart.json", result.bundle)
    summary = {
        "config": vars(cfg),
        "student": {
            "accuracy": ev.student_accuracy,
            "flops": flops_s,
            "latency_us": 1e6 * lat_s.per_input_s,
        },
        "teacher": {
            "accuracy": teacher_acc,
            "flops": flops_t,
            "latency_us": 1e6 * lat_t.per_input_s,
        },
        "threshold": result.selection.threshold,
        "router": result.router.to_spec(),
        "calibration": result.bundle.calibration,
        "test": {
            "n": len(y),
            "teacher_fraction": held_share,
            "accuracy": held_acc,
            "accuracy_drop": teacher_acc - held_acc,
            "target_met": teacher_acc - held_acc <= cfg.eps,
            "flops_per_input": flops_s + held_share * flops_t,
            "flops_speedup": speedup(flops_s, flops_t, held_share),
            "latency_us": 1e6 * lat_j.per_input_s,
            "measured_speedup": lat_t.per_input_s / lat_j.per_input_s,
            "mcnemar_vs_teacher": sig.as_dict(),
            "live_matches_offline": bool(
                offline is None or abs(offline.accuracy - held_acc) < 1e-12
            ),
        },
        "report": str(report),
        "bundle": str(bundle_path),
        "seconds": time.perf_counter() - start,
    }
    write_summary(out, "summary.json", summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The human-readable end of ``ebjr quickstart``."""
    s, t, test = summary["student"], summary["teacher"], summary["test"]
    print(f"student (MLP): {100 * s['accuracy']:.2f} %  {s['flops']:.3g} FLOPs/input")
    print(f"teacher (CNN): {100 * t['accuracy']:.2f} %  {t['flops']:.3g} FLOPs/input")
    print(
        f"joint on {test['n']} held-out inputs: {100 * test['accuracy']:.2f} % "
        f"(drop {100 * test['accuracy_drop']:+.2f} pt, target <= "
        f"{100 * summary['config']['eps']:.2f} pt: {'met' if test['target_met'] else 'NOT met'}), "
        f"{100 * test['teacher_fraction']:.1f} % to the teacher, "
        f"{test['flops_speedup']:.2f}x fewer FLOPs, {test['measured_speedup']:.2f}x faster "
        "measured (batch 256)"
    )
    print(f"McNemar joint vs teacher: p = {test['mcnemar_vs_teacher']['p_value']:.3g}")
    print(f"report: {summary['report']}")
    print(f"bundle: {summary['bundle']}")
    print("\nnext:")
    print(f"  open {summary['report']}")
    print(f"  python -c \"import ebjr; j = ebjr.load('{summary['bundle']}'); print(j)\"")
    print(f"  ebjr serve {summary['bundle']} --admin-token SECRET   # demo page at "
          "http://127.0.0.1:8000/")
    print("  ebjr evaluate STUDENT.npz TEACHER.npz --report DIR   # your own models' outputs")
