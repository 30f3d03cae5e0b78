"""Reproduce the paper's Table 1 and Figure 2 with its own checkpoints, through JointModel.

Both pairs (CIFAR-10: DenseNet-BC 52-6 -> 64-12; CIFAR-100: 58-6 -> 88-8) run
on the real test images (../shared/data) with the paper's checkpoints
(../shared/models/ebjr-densenet). Every accuracy and student share below comes
from running :class:`ebjr.JointModel` on the images, not from stored outputs.

Rows:
- the paper's energy (eq. 3) at the paper's thresholds (12.0 / 15.0), and the
  released code's score (logsumexp of softmax probabilities) at its README
  thresholds (2.46 / 4.6195): no data used, so measured on the full test set,
  like the paper;
- thresholds chosen from data (energy, softmax, entropy, the code's score,
  ``auto`` at the teacher's accuracy; energy at the histogram crossing; energy
  with a guaranteed drop <= 0.5 point at 95 %): chosen on a seeded half of the
  test set, measured on the other half.

Also: counted FLOPs per image, measured latency per image at batch 1 and
throughput at batch 256, McNemar between routers, and accuracy-vs-FLOPs curves
(the paper's Fig. 2, in-sample on the full test set).

Writes docs/reproduction.md, docs/img/reproduction_*.png and
benchmarks/results/reproduce_paper.json.

Run: python benchmarks/reproduce_paper.py [--latency-images 200]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

import _common
from ebjr.calibration import (
    HistogramCrossing,
    TeacherAccuracy,
    select_threshold,
    tradeoff_curve,
)
from ebjr.calibration.auto import AutoRouter
from ebjr.calibration.guarantee import GuaranteedDrop
from ebjr.evaluation import mcnemar, oracle
from ebjr.joint import JointModel
from ebjr.joint.cost import count_flops
from ebjr.routing import Router, get_router
from ebjr.training import predict_logits
from ebjr.zoo.densenet import cifar_preprocess, load_ebjr_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DOCS = ROOT / "docs"

PAIRS = {
    "CIFAR-10": {
        "images": "cifar10-test-images.npz",
        "classes": 10,
        "dir": "cifar10",
        "student": (52, 6),
        "teacher": (64, 12),
        "paper_t": 12.0,
        "code_t": 2.46,
        # Table 1 of the paper: accuracy %, FLOPs x1e8, latency ms
        "paper": {"S": (91.81, 0.54, 14.0), "T": (94.76, 2.92, 35.0), "EBJR": (94.74, 1.36, 23.78)},
        "code_readme": (72.03, 94.77),
    },
    "CIFAR-100": {
        "images": "cifar100-test-images-classorder.npz",
        "classes": 100,
        "dir": "cifar100",
        "student": (58, 6),
        "teacher": (88, 8),
        "paper_t": 15.0,
        "code_t": 4.6195,
        "paper": {"S": (69.28, 0.64, 26.0), "T": (74.94, 2.14, 51.0), "EBJR": (74.87, 1.57, 42.1)},
        "code_readme": (56.73, 74.79),
    },
}


def load_pair(cfg: dict, limit: int | None = None) -> tuple:
    z = np.load(SHARED / "data" / cfg["images"])
    x = cifar_preprocess(z["images"][:limit])
    models = []
    for depth, growth in (cfg["student"], cfg["teacher"]):
        path = (
            SHARED
            / "models"
            / "ebjr-densenet"
            / cfg["dir"]
            / f"densenet-bc-{depth}-{growth}"
            / "model_best.pth.tar"
        )
        models.append(load_ebjr_checkpoint(path, depth, growth, cfg["classes"]))
    return x, z["labels"][:limit], models[0], models[1]


def stream_time(fn, x: torch.Tensor, batch: int, repeats: int = 3) -> float:
    """Median seconds per image to push ``x`` through ``fn`` in batches of ``batch``."""
    chunks = [x[i : i + batch] for i in range(0, x.shape[0], batch)]
    fn(chunks[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for c in chunks:
            fn(c)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / x.shape[0]


def run_row(
    name,
    router: Router,
    threshold,
    x,
    y,
    student,
    teacher,
    flops,
    lat_images,
    thr_images,
    in_sample,
):
    joint = JointModel(student, teacher, router, threshold, max_teacher_batch=100)
    preds = []
    for i in range(0, x.shape[0], 100):  # batches of 100 run these CPU models fastest
        preds.append(joint.predict(x[i : i + 100]).predictions.numpy())
    pred = np.concatenate(preds)
    counts = joint.counts()
    share_t = counts["teacher_rows"] / counts["rows"]
    row = {
        "row": name,
        "router": router.to_spec(),
        "threshold": float(threshold),
        "n": len(y),
        "in_sample": in_sample,
        "accuracy": float(100 * np.mean(pred == y)),
        "student_share": float(100 * (1 - share_t)),
        "flops_e8": (flops[0] + share_t * flops[1]) / 1e8,
        "latency_ms_b1": 1e3 * stream_time(joint.predict, lat_images, 1, repeats=1),
        "throughput_b256": 1.0 / stream_time(joint.predict, thr_images, 256, repeats=1),
    }
    print(
        f"  {name}: acc {row['accuracy']:.2f} student {row['student_share']:.2f}% "
        f"FLOPs {row['flops_e8']:.3f}e8",
        flush=True,
    )
    return row, pred


def figure(cfg_name: str, curves: dict, oracle, cfg: dict, flops, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    for label, curve in curves.items():
        ax.plot(
            curve.cost / 1e8,
            100 * curve.accuracy,
            label=label,
            lw=2.2 if label.startswith("energy") else 1.3,
        )
    ax.plot(
        [(flops[0] + f * flops[1]) / 1e8 for f in oracle.fractions],
        [100 * a for a in oracle.accuracies],
        "k:",
        lw=1.2,
        label="oracle (upper bound)",
    )
    for key, marker in (("S", "o"), ("T", "s"), ("EBJR", "*")):
        acc, fl, _ = cfg["paper"][key]
        ax.scatter(
            [fl],
            [acc],
            marker=marker,
            s=120 if key == "EBJR" else 60,
            c="k",
            zorder=5,
            label=f"paper Table 1: {key}",
        )
    any_curve = next(iter(curves.values()))
    ax.set_xlim(flops[0] / 1e8 * 0.9, (flops[0] + flops[1]) / 1e8 * 1.02)
    ax.set_ylim(
        100 * any_curve.student_accuracy - 0.5,
        max(100 * any_curve.teacher_accuracy, cfg["paper"]["EBJR"][0]) + 0.6,
    )
    ax.set_xlabel("FLOPs per image (x1e8, counted; joint = student + share x teacher)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{cfg_name}: paper's DenseNet-BC pair, all 10,000 test images (in-sample)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def full_curves(s_logits, t_logits, y, flops) -> dict:
    """In-sample curves on the whole test set for the scores the figure compares."""
    return {
        label: tradeoff_curve(s_logits, t_logits, y, label, flops[0], flops[1])
        for label in ("energy", "paper_code", "softmax", "entropy")
    }


#: where the figures go (a smoke run puts them in its temporary folder)
FIGURES = {"dir": DOCS / "img"}


def draw(cfg_name: str, cfg: dict, s_logits, t_logits, y, flops) -> Path:
    """The accuracy-vs-FLOPs figure (paper's Fig. 2) from full-test-set logits."""
    curves = full_curves(s_logits, t_logits, y, flops)
    ps, pt = s_logits.argmax(1), t_logits.argmax(1)
    FIGURES["dir"].mkdir(parents=True, exist_ok=True)
    path = FIGURES["dir"] / f"reproduction_{cfg['dir']}.png"
    figure(cfg_name, curves, oracle(ps == y, pt == y, flops[0], flops[1]), cfg, flops, path)
    return path


def figures_from_published_logits() -> None:
    """Redraw the figures from the logits published beside the checkpoints (which the tests
    show equal this implementation's outputs), without running the models."""
    import json

    results = json.loads((ROOT / "benchmarks/results/reproduce_paper.json").read_text())
    for (name, cfg), r in zip(PAIRS.items(), results, strict=True):
        prefix = "cifar100-classorder" if cfg["dir"] == "cifar100" else "cifar10"
        logits = []
        for depth, growth in (cfg["student"], cfg["teacher"]):
            f = (
                SHARED
                / "models/ebjr-densenet/logits"
                / f"{prefix}_ebjr-densenet-bc-{depth}-{growth}.npz"
            )
            logits.append(np.load(f))
        draw(
            name,
            cfg,
            logits[0]["logits"],
            logits[1]["logits"],
            logits[0]["labels"],
            tuple(r["flops"]),
        )


def reproduce(cfg_name: str, cfg: dict, args) -> dict:
    print(f"{cfg_name}", flush=True)
    x, y, student, teacher = load_pair(cfg, args.images)
    flops = (count_flops(student, x[:2]), count_flops(teacher, x[:2]))
    s_logits = predict_logits(student, x, 100).numpy()
    t_logits = predict_logits(teacher, x, 100).numpy()
    ps, pt = s_logits.argmax(1), t_logits.argmax(1)
    lat_images, thr_images = x[: args.latency_images], x[: args.throughput_images]
    with torch.inference_mode():
        teacher_alone = {
            "latency_ms_b1": 1e3 * stream_time(teacher, lat_images, 1, repeats=1),
            "throughput_b256": 1.0 / stream_time(teacher, thr_images, 256, repeats=1),
        }
    perm = np.random.default_rng(0).permutation(len(y))
    cal, test = perm[: len(y) // 2], perm[len(y) // 2 :]

    rows, preds = [], {}
    base = {
        "student only (t = -inf)": (get_router("energy"), -np.inf),
        "all to the teacher (t = +inf; the student still runs)": (get_router("energy"), np.inf),
        f"energy (eq. 3), paper's t = {cfg['paper_t']}": (get_router("energy"), cfg["paper_t"]),
        f"code's score, README t = {cfg['code_t']}": (get_router("paper_code"), cfg["code_t"]),
    }
    for name, (router, thr) in base.items():
        row, pred = run_row(
            name,
            router,
            thr,
            x,
            y,
            student,
            teacher,
            flops,
            lat_images,
            thr_images,
            in_sample=False,
        )
        row["split"] = "full test set"
        rows.append(row)
        preds[name] = pred

    chosen = {}
    for label in ("energy", "softmax", "entropy", "paper_code"):
        router = get_router(label)
        curve = tradeoff_curve(s_logits[cal], t_logits[cal], y[cal], router)
        chosen[f"{label} @ teacher accuracy"] = (router, select_threshold(curve, TeacherAccuracy()))
    e_curve = tradeoff_curve(s_logits[cal], t_logits[cal], y[cal], "energy")
    chosen["energy @ histogram crossing"] = (
        get_router("energy"),
        select_threshold(e_curve, HistogramCrossing()),
    )
    chosen["energy, guaranteed drop <= 0.5 pt at 95 %"] = (
        get_router("energy"),
        select_threshold(e_curve, GuaranteedDrop(0.005, 0.05)),
    )
    auto = AutoRouter(target=TeacherAccuracy()).fit(s_logits[cal], t_logits[cal], y[cal])
    a_curve = tradeoff_curve(s_logits[cal], t_logits[cal], y[cal], auto.selected_)
    chosen[f"auto ({auto.selected_.name}) @ teacher accuracy"] = (
        auto.selected_,
        select_threshold(a_curve, TeacherAccuracy()),
    )
    xt, yt = x[test], y[test]
    for name, (router, sel) in chosen.items():
        row, pred = run_row(
            name,
            router,
            sel.threshold,
            xt,
            yt,
            student,
            teacher,
            flops,
            lat_images,
            thr_images,
            in_sample=False,
        )
        row["split"] = "test half (threshold from the other half)"
        rows.append(row)
        preds[name] = pred

    sig = []
    pairs = [
        ("energy @ teacher accuracy", "softmax @ teacher accuracy"),
        ("energy @ teacher accuracy", "paper_code @ teacher accuracy"),
        ("energy @ teacher accuracy", "entropy @ teacher accuracy"),
    ]
    for a, b in pairs:
        m = mcnemar(preds[a], preds[b], yt)
        sig.append({"a": a, "b": b, **m.as_dict()})
    teacher_test = pt[test]
    for a in chosen:
        m = mcnemar(preds[a], teacher_test, yt)
        sig.append({"a": a, "b": "teacher alone", **m.as_dict()})

    curves = full_curves(s_logits, t_logits, y, flops)
    orc = oracle(ps == y, pt == y, flops[0], flops[1])
    fig_path = draw(cfg_name, cfg, s_logits, t_logits, y, flops)
    at_teacher = {
        k: select_threshold(c, TeacherAccuracy()).point.as_dict() for k, c in curves.items()
    }
    at_teacher["oracle"] = orc.at_teacher_accuracy.as_dict()
    at_teacher["oracle, best point"] = orc.best.as_dict()
    return {
        "pair": cfg_name,
        "flops": flops,
        "paper": cfg["paper"],
        "code_readme": cfg["code_readme"],
        "rows": rows,
        "mcnemar": sig,
        "in_sample_at_teacher_accuracy": at_teacher,
        "teacher_alone": teacher_alone,
        "student_accuracy": float(100 * np.mean(ps == y)),
        "teacher_accuracy": float(100 * np.mean(pt == y)),
        "figure": str(fig_path.relative_to(ROOT) if fig_path.is_relative_to(ROOT) else fig_path),
    }


def markdown(results: list[dict], args) -> str:
    out = []
    for r in results:
        p = r["paper"]
        fs, ft = r["flops"]
        out += [
            f"### {r['pair']}",
            "",
            f"Counted FLOPs per image: student {fs / 1e8:.3f}e8, teacher {ft / 1e8:.3f}e8 "
            f"(paper: {p['S'][1]}e8 and {p['T'][1]}e8; torch's counter counts convolutions "
            "and matrix products only). Measured accuracy: student "
            f"{r['student_accuracy']:.2f} % (paper {p['S'][0]}), teacher "
            f"{r['teacher_accuracy']:.2f} % (paper {p['T'][0]}). The teacher alone: "
            f"{r['teacher_alone']['latency_ms_b1']:.1f} ms per image at batch 1, "
            f"{r['teacher_alone']['throughput_b256']:.0f} images/s at batch 256.",
            "",
            "| row | measured on | accuracy % | student share % | FLOPs (x1e8) | latency ms, "
            "batch 1 | images/s, batch 256 |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            out.append(
                f"| {row['row']} | {row['split']} | {row['accuracy']:.2f} | "
                f"{row['student_share']:.2f} | {row['flops_e8']:.3f} | "
                f"{row['latency_ms_b1']:.1f} | {row['throughput_b256']:.0f} |"
            )
        out += [
            f"| *paper Table 1: EBJR* | *test set* | *{p['EBJR'][0]}* | | *{p['EBJR'][1]}* | "
            f"*{p['EBJR'][2]}* | |",
            f"| *code README, t = {'2.46' if r['pair'] == 'CIFAR-10' else '4.6195'}* | "
            f"*test set* | *{r['code_readme'][1]}* | *{r['code_readme'][0]}* | | | |",
            "",
            "In-sample on all 10,000 images, the cheapest point of each curve that reaches the "
            "teacher's accuracy:",
            "",
            "| score | student share % | accuracy % | FLOPs (x1e8) | speed-up |",
            "|---|---|---|---|---|",
        ]
        for k, v in r["in_sample_at_teacher_accuracy"].items():
            out.append(
                f"| {k} | {100 * (1 - v['teacher_fraction']):.2f} | "
                f"{100 * v['accuracy']:.2f} | {v['cost'] / 1e8:.3f} | "
                f"{v['speedup']:.2f}x |"
            )
        out += [
            "",
            "McNemar tests on the test half (only_a: A right and B wrong):",
            "",
            "| A | B | only_a | only_b | p-value |",
            "|---|---|---|---|---|",
        ]
        for m in r["mcnemar"]:
            out.append(
                f"| {m['a']} | {m['b']} | {m['only_a']} | {m['only_b']} | {m['p_value']:.3g} |"
            )
        out += [
            "",
            f"![{r['pair']} accuracy vs FLOPs]({_doc_path(r['figure'])})",
            "",
        ]
    return "\n".join(out)


def _doc_path(figure: str) -> str:
    """The figure's path as docs/reproduction.md links it."""
    p = Path(figure)
    return str(p.relative_to("docs")) if p.is_relative_to("docs") else str(p)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--latency-images", type=int, default=100)
    parser.add_argument("--images", type=int, default=None, help="first N test images (all)")
    parser.add_argument("--throughput-images", type=int, default=512,
                        help="images per throughput measurement at batch 256")
    parser.add_argument(
        "--figures-only",
        action="store_true",
        help="only redraw the figures, from the published logits",
    )
    args = parser.parse_args()
    if args.smoke:
        args.images, args.latency_images, args.throughput_images = 100, 2, 16
        FIGURES["dir"] = _common.results_dir(True)
    if args.figures_only:
        figures_from_published_logits()
        return
    results = [reproduce(name, cfg, args) for name, cfg in PAIRS.items()]
    _common.write_results("reproduce_paper", results, markdown(results, args), smoke=args.smoke)


if __name__ == "__main__":
    main()
