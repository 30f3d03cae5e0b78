"""Detection EBJR on digit canvases: mAP-vs-cost of the energy router against baselines.

The data are 48x48 canvases with 1-4 of scikit-learn's bundled digits each
(:mod:`ebjr.zoo.digit_canvas`). Training and calibration canvases come from
one half of the bundled images; the test canvases come from the other half.
Both detectors are the project's grid detector with a DFL box head
(:mod:`ebjr.zoo.grid_detector`): a small student (width 8, one extra layer,
80 epochs) and a larger teacher (width 16, two extra layers, 60 epochs).
FLOPs are counted by torch.

Routers, per image (higher score = the student is fit):

- ``energy``: ``-(F_cls + F_reg)``, eq. 14;
- ``energy_cls``: ``-F_cls``, eq. 12 alone;
- ``mean_softmax``, ``mean_confidence``, ``min_confidence``: baselines;
- ``random``: the mean over 5 seeds;
- ``oracle``: images by the teacher's per-image AP gain, largest first.

Images where the student keeps no box go to the teacher (the library's rule).
The joint COCO mAP (pycocotools) is recomputed at each of 21 operating
points. Reported: the mAP at teacher shares of 10-50 %, and the smallest
teacher share (and FLOPs speed-up) that keeps 97 % of the teacher's mAP (the
paper's detection anchor). Shares are from the test curve, in hindsight; a
threshold is also chosen on the calibration canvases and checked on the test
ones.

    python benchmarks/detection_digits.py     # about 9 minutes on 2 cores
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _common
from ebjr.calibration import TradeoffCurve, curve_from_metric
from ebjr.evaluation.detection import MapMetric, detection_scores, per_image_ap
from ebjr.zoo.digit_canvas import make_digit_canvases
from ebjr.zoo.grid_detector import GridDetector, decode, flops_per_image, train_detector

HERE = Path(__file__).resolve().parent
ROUTERS = ("energy", "energy_cls", "mean_softmax", "mean_confidence", "min_confidence")
SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)
KEEP = 0.97


def share_to_keep(curve: TradeoffCurve, target: float) -> tuple[float, float]:
    """Smallest teacher share whose mAP is at least ``target``, and its FLOPs speed-up."""
    ok = np.flatnonzero(curve.accuracy >= target)
    if ok.size == 0:
        return 1.0, 1.0
    i = int(ok[0])
    return float(curve.teacher_fraction[i]), float(curve.teacher_cost / curve.cost[i])


def at_shares(curve: TradeoffCurve) -> list[float]:
    """The mAP at each share in SHARES, linear between the curve's points."""
    return [float(np.interp(f, curve.teacher_fraction, curve.accuracy)) for f in SHARES]


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--cal", type=int, default=500)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--student-epochs", type=int, default=80)
    p.add_argument("--teacher-epochs", type=int, default=60)
    p.add_argument("--points", type=int, default=21)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "detection_digits"))
    args = p.parse_args(argv)
    if args.smoke:
        args.train, args.cal, args.test = 200, 60, 60
        args.student_epochs, args.teacher_epochs, args.points = 2, 2, 5
        args.out = str(_common.results_dir(True) / "detection_digits")
    t0 = time.time()
    train = make_digit_canvases(args.train, part="train", seed=args.seed)
    cal = make_digit_canvases(args.cal, part="train", seed=args.seed + 1)
    test = make_digit_canvases(args.test, part="test", seed=args.seed + 2)
    torch.manual_seed(args.seed)
    models = {"student": GridDetector(width=8, extra=1),
              "teacher": GridDetector(width=16, extra=2)}
    epochs = {"student": args.student_epochs, "teacher": args.teacher_epochs}
    for name, m in models.items():
        print(f"training the {name}...", file=sys.stderr)
        train_detector(m, train.images, train.boxes, train.labels, epochs=epochs[name],
                       seed=args.seed, progress=True)
    flops = {k: flops_per_image(m) for k, m in models.items()}
    report: dict = {"command": "python benchmarks/detection_digits.py " + " ".join(argv or []),
                    "settings": vars(args), "flops": flops}
    results = {}
    for part, data in (("cal", cal), ("test", test)):
        dets = {k: decode(m, data.images) for k, m in models.items()}
        metric = MapMetric(dets["student"], dets["teacher"], data.targets, 10)
        n = len(data)
        maps = {"student": metric(np.zeros(n, bool)), "teacher": metric(np.ones(n, bool))}
        scores = {r: detection_scores(dets["student"], r) for r in ROUTERS}
        ap_s = per_image_ap(dets["student"], data.targets, 10)
        ap_t = per_image_ap(dets["teacher"], data.targets, 10)
        scores["oracle"] = -(ap_t - ap_s)
        curves = {}
        for r, s in scores.items():
            print(f"{part}: mAP per operating point, {r}...", file=sys.stderr)
            curves[r] = curve_from_metric(s, metric, n_points=args.points, quality="mAP",
                                          student_cost=flops["student"],
                                          teacher_cost=flops["teacher"], cost_unit="FLOPs",
                                          router={"name": r, "params": {}})
        rand = []
        for seed in range(5):
            s = np.random.default_rng(seed).random(n)
            rand.append(curve_from_metric(s, metric, n_points=args.points, quality="mAP",
                                          student_cost=flops["student"],
                                          teacher_cost=flops["teacher"]))
        empty = float(np.mean([len(d) == 0 for d in dets["student"]]))
        results[part] = (maps, curves, rand, scores, empty, metric)

    maps, curves, rand, _, empty, test_metric = results["test"]
    target = KEEP * maps["teacher"]
    table = {}
    for r, c in curves.items():
        share, speed = share_to_keep(c, target)
        table[r] = {"map_at_shares": at_shares(c), "share_to_keep": share, "speedup": speed}
    rand_at = np.mean([at_shares(c) for c in rand], axis=0).tolist()
    rand_keep = [share_to_keep(c, target) for c in rand]
    table["random"] = {"map_at_shares": rand_at,
                       "share_to_keep": float(np.mean([k[0] for k in rand_keep])),
                       "speedup": float(np.mean([k[1] for k in rand_keep]))}
    # a threshold chosen on the calibration canvases, checked on the test canvases
    cal_maps, cal_curves = results["cal"][:2]
    test_scores = results["test"][3]
    chosen = {}
    for r in ROUTERS:
        c = cal_curves[r]
        ok = np.flatnonzero(c.accuracy >= KEEP * cal_maps["teacher"])
        t = float(c.threshold[ok[0]]) if ok.size else np.inf
        routed = test_scores[r] < t
        chosen[r] = {"teacher_share": float(routed.mean()), "map": test_metric(routed)}
    report.update(test_map=maps, student_empty_share=empty, routers=table, calibrated=chosen,
                  seconds=time.time() - t0,
                  curves={r: {"teacher_fraction": c.teacher_fraction.tolist(),
                              "map": c.accuracy.tolist()} for r, c in curves.items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    md = to_markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r, c in report["curves"].items():
        style = {"energy": "-", "oracle": ":"}.get(r, "--")
        ax.plot(c["teacher_fraction"], c["map"], style, label=r, lw=1.6)
    ax.axhline(KEEP * report["test_map"]["teacher"], color="grey", lw=0.8)
    ax.set_xlabel("share of images sent to the teacher")
    ax.set_ylabel("joint COCO mAP (test canvases)")
    ax.set_title("Detection EBJR on digit canvases")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def to_markdown(r: dict) -> str:
    m, f = r["test_map"], r["flops"]
    lines = [
        f"`{r['command'].strip()}`: {r['settings']['test']} test canvases. Student mAP "
        f"{m['student']:.3f} at {f['student']:.3g} FLOPs, teacher {m['teacher']:.3f} at "
        f"{f['teacher']:.3g} FLOPs; the student keeps no box on "
        f"{100 * r['student_empty_share']:.1f} % of the images (those go to the teacher). mAP "
        "by pycocotools at each operating point.",
        "",
        "| router | " + " | ".join(f"mAP at {100 * s:.0f} %" for s in SHARES)
        + f" | share for {100 * KEEP:.0f} % of the teacher's mAP | speed-up |",
        "|---|" + "---|" * (len(SHARES) + 2),
    ]
    for name, row in r["routers"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row["map_at_shares"])
                     + f" | {100 * row['share_to_keep']:.1f} % | {row['speedup']:.2f}x |")
    lines += ["", f"Threshold chosen on {r['settings']['cal']} calibration canvases for "
              f"{100 * KEEP:.0f} % of the teacher's mAP there, checked on the test canvases:", "",
              "| router | teacher share | mAP | of the teacher's |", "|---|---|---|---|"]
    for name, row in r["calibrated"].items():
        lines.append(f"| {name} | {100 * row['teacher_share']:.1f} % | {row['map']:.3f} | "
                     f"{100 * row['map'] / m['teacher']:.1f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
