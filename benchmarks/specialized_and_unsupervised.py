"""Specialized and unsupervised students on the bundled digits (offline, CPU, ~2 min).

A. Specialized EBJR under skewed traffic. Traffic follows a Zipf law over the
   ten digits (class k in popularity order has weight 1 / k^1.5). The top-C
   classes come from the calibration traffic's histogram. For C in 2, 3, 5, a
   specialized student (top-C classes plus "other", routed with the
   specialized energy) is compared with the general student (all 10 classes,
   energy router). Both are 2-layer MLPs of the same width; the teacher is the
   same small CNN. Curves are on held-out skewed test traffic, and costs are
   counted FLOPs.
B. Unsupervised vs supervised students as the pool grows. For n in 250 ..
   4000 inputs from the training distribution, one student is trained on n
   labelled inputs and another is distilled from the teacher on the same n
   inputs without labels (epochs scaled so each pool size gets about the same
   number of optimiser steps). Reported: the student's test accuracy, its
   agreement with the teacher, the teacher share the joint model needs for an
   accuracy at most 1 point below the teacher's, and the area under the
   joint model's accuracy-vs-teacher-share curve.

Writes benchmarks/results/specialized_and_unsupervised.{json,md} and
docs/img/specialized_curves.png.

Run: python benchmarks/specialized_and_unsupervised.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import _common
from ebjr.bundle import dumps
from ebjr.calibration import MaxDrop, TeacherAccuracy, curve_from_scores, select_threshold
from ebjr.examples.quickstart import QuickstartConfig, make_digits_traffic
from ebjr.joint.cost import count_flops
from ebjr.routing import get_router
from ebjr.training import predict_logits, train_classifier
from ebjr.training.distill import distill, train_specialized
from ebjr.training.specialized import ClassMap
from ebjr.zoo.digits import make_student, make_teacher

ROOT = _common.ROOT
EPOCHS = 30
#: the sizes each experiment sweeps (a smoke run takes the first only)
SIZES = {"top_c": (2, 3, 5), "pools": (250, 500, 1000, 2000, 4000)}


def skewed(x: np.ndarray, y: np.ndarray, order: np.ndarray, n: int, seed: int):
    """``n`` i.i.d. draws from (x, y) with Zipf class weights in popularity ``order``."""
    weight = np.empty(10)
    weight[order] = 1.0 / np.arange(1, 11) ** 1.5
    p = weight[y] / weight[y].sum()
    idx = np.random.default_rng(seed).choice(len(y), size=n, replace=True, p=p)
    return x[idx], y[idx]


def joint_point(score, s_pred, t_pred, y, cs, ct):
    curve = curve_from_scores(score, s_pred, t_pred, y, student_cost=cs, teacher_cost=ct)
    return curve, select_threshold(curve, TeacherAccuracy()).point


def experiment_specialized(data, teacher, t_flops):
    order = np.random.default_rng(1).permutation(10)  # which digits are popular
    _, y_cal = skewed(data["x_cal"], data["y_cal"], order, 4000, seed=2)  # its histogram
    x_test, y_test = skewed(data["x_test"], data["y_test"], order, 6000, seed=3)
    t_pred = predict_logits(teacher, x_test).argmax(1).numpy()
    example = torch.as_tensor(x_test[:8])
    rows, curves = [], {}
    torch.manual_seed(0)
    general = make_student()
    train_classifier(
        general,
        data["x_train"],
        data["y_train"],
        data["x_val"],
        data["y_val"],
        epochs=EPOCHS,
        progress=False,
    )
    g_logits = predict_logits(general, x_test)
    g_flops = count_flops(general, example)
    curve, p = joint_point(
        get_router("energy").score(g_logits).numpy(),
        g_logits.argmax(1).numpy(),
        t_pred,
        y_test,
        g_flops,
        t_flops,
    )
    curves["general student (10 classes)"] = curve
    rows.append(
        {
            "student": "general",
            "C": 10,
            "top_share": 1.0,
            "student_accuracy": float(np.mean(g_logits.argmax(1).numpy() == y_test)),
            "teacher_share": p.teacher_fraction,
            "flops": p.cost,
            "speedup": p.speedup,
            "auc": curve.auc(),
        }
    )
    for c in SIZES["top_c"]:
        cmap = ClassMap.from_labels(y_cal, n_top=c, n_classes=10)
        torch.manual_seed(0)
        student = make_student(n_classes=c + 1)
        train_specialized(
            student,
            cmap,
            data["x_train"],
            data["y_train"],
            data["x_val"],
            data["y_val"],
            epochs=EPOCHS,
            progress=False,
        )
        logits = predict_logits(student, x_test)
        router = get_router("specialized", other_index=c)
        score = router.score(logits).numpy()
        arg = logits.argmax(1).numpy()
        s_pred = np.where(arg == c, -1, cmap.top[np.minimum(arg, c - 1)])
        flops = count_flops(student, example)
        curve, p = joint_point(score, s_pred, t_pred, y_test, flops, t_flops)
        curves[f"specialized, C = {c}"] = curve
        rows.append(
            {
                "student": "specialized",
                "C": c,
                "top_share": float(np.mean(np.isin(y_test, cmap.top))),
                "student_accuracy": float(np.mean(s_pred == y_test)),
                "teacher_share": p.teacher_fraction,
                "flops": p.cost,
                "speedup": p.speedup,
                "auc": curve.auc(),
            }
        )
    return rows, curves


def experiment_unsupervised(data, teacher):
    x_test, y_test = data["x_test"], data["y_test"]
    t_logits = predict_logits(teacher, x_test)
    t_pred = t_logits.argmax(1).numpy()
    rows = []
    for n in SIZES["pools"]:
        idx = np.random.default_rng(n).choice(len(data["y_train"]), size=n, replace=False)
        x, y = data["x_train"][idx], data["y_train"][idx]
        # about the same number of optimiser steps for every pool size (early stopping on)
        epochs = min(400, int(np.ceil(EPOCHS * 4000 / n)))
        for kind in ("supervised", "unsupervised"):
            torch.manual_seed(0)
            student = make_student()
            if kind == "supervised":
                train_classifier(
                    student,
                    x,
                    y,
                    data["x_val"],
                    data["y_val"],
                    epochs=epochs,
                    patience=10,
                    progress=False,
                )
            else:
                distill(student, teacher, x, epochs=epochs, patience=10, progress=False)
            logits = predict_logits(student, x_test)
            pred = logits.argmax(1).numpy()
            curve, p = joint_point(
                get_router("energy").score(logits).numpy(), pred, t_pred, y_test, 1.0, 1.0
            )
            one_point = select_threshold(curve, MaxDrop(0.01)).point
            rows.append(
                {
                    "n": n,
                    "student": kind,
                    "accuracy": float(np.mean(pred == y_test)),
                    "agreement_with_teacher": float(np.mean(pred == t_pred)),
                    "teacher_share_at_teacher_accuracy": p.teacher_fraction,
                    "teacher_share_at_1pt_drop": one_point.teacher_fraction,
                    "auc": curve.auc(),
                }
            )
            print(
                f"  n={n} {kind}: acc {rows[-1]['accuracy']:.3f} teacher share "
                f"{p.teacher_fraction:.3f}",
                flush=True,
            )
    return rows


def plot(curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, c in curves.items():
        ax.plot(c.cost, 100 * c.accuracy, label=label, lw=2 if "general" in label else 1.4)
    ax.axhline(
        100 * next(iter(curves.values())).teacher_accuracy,
        color="k",
        lw=0.6,
        ls="--",
        label="teacher",
    )
    ax.set_xlabel("FLOPs per input (counted)")
    ax.set_ylabel("accuracy on skewed test traffic (%)")
    ax.set_title("Specialized vs general student, digits, Zipf traffic")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    global EPOCHS
    args = _common.parser(__doc__).parse_args()
    out = _common.results_dir(args.smoke)
    figures = out if args.smoke else ROOT / "docs" / "img"
    if args.smoke:
        EPOCHS = 1
        SIZES["top_c"], SIZES["pools"] = (2,), (250,)
    data = make_digits_traffic(QuickstartConfig())
    torch.manual_seed(0)
    teacher = make_teacher()
    train_classifier(
        teacher,
        data["x_train"],
        data["y_train"],
        data["x_val"],
        data["y_val"],
        epochs=EPOCHS,
        progress=False,
    )
    t_flops = count_flops(teacher, torch.as_tensor(data["x_test"][:8]))
    spec_rows, curves = experiment_specialized(data, teacher, t_flops)
    figures.mkdir(parents=True, exist_ok=True)
    plot(curves, figures / "specialized_curves.png")
    unsup_rows = experiment_unsupervised(data, teacher)
    (out / "specialized_and_unsupervised.json").write_text(
        dumps({"specialized": spec_rows, "unsupervised": unsup_rows}, indent=2) + "\n"
    )
    lines = [
        "| student | C | test inputs from top-C | student accuracy | teacher share at "
        "teacher accuracy | FLOPs per input | speed-up | AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in spec_rows:
        lines.append(
            f"| {r['student']} | {r['C']} | {100 * r['top_share']:.0f}% | "
            f"{100 * r['student_accuracy']:.2f}% | {100 * r['teacher_share']:.1f}% | "
            f"{r['flops']:.3g} | {r['speedup']:.2f}x | {r['auc']:.4f} |"
        )
    lines += [
        "",
        "| pool n | student | accuracy | agreement with teacher | teacher share for <= 1 pt "
        "drop | AUC (accuracy vs teacher share) |",
        "|---|---|---|---|---|---|",
    ]
    for r in unsup_rows:
        lines.append(
            f"| {r['n']} | {r['student']} | {100 * r['accuracy']:.2f}% | "
            f"{100 * r['agreement_with_teacher']:.2f}% | "
            f"{100 * r['teacher_share_at_1pt_drop']:.1f}% | {r['auc']:.4f} |"
        )
    md = "\n".join(lines) + "\n"
    (out / "specialized_and_unsupervised.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
