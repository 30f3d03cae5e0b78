"""Regression EBJR on scikit-learn's bundled diabetes data (442 patients, 10 features).

Two energy-based regressors are trained by NCE (:mod:`ebjr.training.regressor`) on
each of ``--splits`` random splits (train 50 %, early stopping 15 %,
calibration 15 %, test 20 %), for two pairs:

- ``cheap -> full``: a small student (hidden 8) that sees only age, sex, BMI
  and blood pressure, and a large teacher (2 x 64) that also sees the six
  blood-serum measurements;
- ``small -> large``: the same two architectures, both on all 10 features.

Each student is routed by its free energy ``-F`` (eq. 9, importance sampling
with K = 1024), by its normalised density at the prediction
(``peak_log_density``), and by its predictive spread. These are compared
with random routing (exact expectation) and the oracle (largest loss gain
first). Quality is the mean absolute error, in disease-progression points,
lower is better. Reported, as means over splits on the test parts:

- the MAE at teacher shares of 20 / 40 / 60 %;
- the threshold chosen on the calibration part for "MAE at most 1 point
  above the teacher's" (``MaxDrop`` in loss units): its held-out MAE and
  teacher share.

    python benchmarks/regression_diabetes.py      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import _common
from ebjr.calibration import MaxDrop, curve_from_loss, select_threshold
from ebjr.exceptions import TargetUnreachableError
from ebjr.training.regressor import EnergyRegressor, regressor_outputs, train_energy_regressor

HERE = Path(__file__).resolve().parent
CHEAP = [0, 1, 2, 3]  # age, sex, bmi, bp: no blood test needed
ROUTERS = ("energy", "peak_density", "spread", "random", "oracle")
SHARES = (0.2, 0.4, 0.6)


def ebm_flops(model: EnergyRegressor, k: int) -> float:
    """FLOPs per input of an EBM prediction with K importance samples (Linear layers, 2 x MACs)."""

    def lin(mod: torch.nn.Module) -> int:
        return sum(2 * m.in_features * m.out_features for m in mod.modules()
                   if isinstance(m, torch.nn.Linear))

    return float(lin(model.encoder) + lin(model.mean_head) + k * (lin(model.y_net)
                                                                  + lin(model.head)))


def split(n: int, seed: int) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng(seed).permutation(n)
    a, b, c = int(0.5 * n), int(0.65 * n), int(0.8 * n)
    return perm[:a], perm[a:b], perm[b:c], perm[c:]


def router_scores(out) -> dict[str, np.ndarray]:
    return {"energy": -out.energy.free_energy, "peak_density": out.peak_log_density,
            "spread": -out.spread}


def run_pair(x, y, student_cols, seed, k, eps) -> dict:
    tr, va, ca, te = split(len(y), seed)
    mx, sx = x[tr].mean(0), x[tr].std(0)
    my, sy = y[tr].mean(), y[tr].std()
    xs, ys = (x - mx) / sx, (y - my) / sy
    torch.manual_seed(seed)
    student = EnergyRegressor(len(student_cols), hidden=8, depth=1)
    teacher = EnergyRegressor(x.shape[1], hidden=64, depth=2)
    train_energy_regressor(student, xs[tr][:, student_cols], ys[tr], xs[va][:, student_cols],
                           ys[va], epochs=300, seed=seed)
    train_energy_regressor(teacher, xs[tr], ys[tr], xs[va], ys[va], epochs=300, seed=seed)
    res = {"flops": {"student": ebm_flops(student, k), "teacher": ebm_flops(teacher, k)}}
    parts = {}
    for name, idx in (("cal", ca), ("test", te)):
        so = regressor_outputs(student, xs[idx][:, student_cols], n_samples=k, seed=seed)
        to = regressor_outputs(teacher, xs[idx], n_samples=k, seed=seed)
        es = np.abs(so.prediction * sy + my - y[idx])
        et = np.abs(to.prediction * sy + my - y[idx])
        parts[name] = (router_scores(so), es, et)
    scores, es, et = parts["test"]
    res["student_mae"], res["teacher_mae"] = float(es.mean()), float(et.mean())
    res["at_share"] = {}
    for r in ROUTERS:
        if r == "random":  # the exact expectation: a straight line
            res["at_share"][r] = [float((1 - f) * es.mean() + f * et.mean()) for f in SHARES]
            continue
        s = -(es - et) if r == "oracle" else scores[r]
        c = curve_from_loss(s, es, et, loss="absolute error")
        res["at_share"][r] = [float(-c.accuracy[np.searchsorted(c.teacher_fraction, f)])
                              for f in SHARES]
    res["calibrated"] = {}
    cal_scores, ces, cet = parts["cal"]
    for r in ("energy", "peak_density", "spread"):
        c = curve_from_loss(cal_scores[r], ces, cet, loss="absolute error")
        try:
            t = select_threshold(c, MaxDrop(eps)).threshold
        except TargetUnreachableError:
            t = np.inf
        routed = scores[r] < t
        res["calibrated"][r] = {
            "teacher_share": float(routed.mean()),
            "mae": float(np.where(routed, et, es).mean()),
        }
    return res


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--samples", type=int, default=1024, help="importance samples K")
    p.add_argument("--eps", type=float, default=1.0, help="MaxDrop in MAE points")
    p.add_argument("--out", default=str(HERE / "results" / "regression_diabetes"))
    p.add_argument("--markdown-only", action="store_true",
                   help="rewrite the .md from the saved .json, without training")
    args = p.parse_args(argv)
    if args.smoke:
        args.splits, args.samples = 2, 64
        args.out = str(_common.results_dir(True) / "regression_diabetes")
    out = Path(args.out)
    if args.markdown_only:
        md = to_markdown(json.loads(out.with_suffix(".json").read_text()))
        out.with_suffix(".md").write_text(md)
        print(md)
        return 0
    from sklearn.datasets import load_diabetes
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    x, y = load_diabetes(return_X_y=True)
    pairs = {"cheap -> full": CHEAP, "small -> large": list(range(x.shape[1]))}
    runs: dict[str, list] = {name: [] for name in pairs}
    for seed in tqdm(range(args.splits), desc="splits"):
        for name, cols in pairs.items():
            runs[name].append(run_pair(x, y, cols, seed, args.samples, args.eps))
    report = {"command": "python benchmarks/regression_diabetes.py " + " ".join(argv or []),
              "settings": vars(args), "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    md = to_markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def to_markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"`{r['command'].strip()}`: diabetes, {s['splits']} random splits, test MAE in "
        f"disease-progression points (lower is better), means over splits (± sd of the mean). "
        f"K = {s['samples']} importance samples.",
        "",
        "| pair | student | teacher | share | energy (-F) | peak density | spread | random "
        "| oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in r["runs"].items():
        sm = np.mean([x["student_mae"] for x in runs])
        tm = np.mean([x["teacher_mae"] for x in runs])
        for j, f in enumerate(SHARES):
            cells = []
            for router in ROUTERS:
                v = np.array([x["at_share"][router][j] for x in runs])
                cells.append(f"{v.mean():.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f}")
            lines.append(f"| {name if j == 0 else ''} | {sm:.2f} | {tm:.2f} | {100 * f:.0f} % | "
                         + " | ".join(cells) + " |")
    lines += ["", "Difference to random routing, paired over splits (negative = better than "
              "random; ± sd of the mean):", "",
              "| pair | share | energy (-F) | peak density | spread |", "|---|---|---|---|---|"]
    for name, runs in r["runs"].items():
        for j, f in enumerate(SHARES):
            cells = []
            for router in ("energy", "peak_density", "spread"):
                d = np.array([x["at_share"][router][j] - x["at_share"]["random"][j]
                              for x in runs])
                cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f}")
            lines.append(f"| {name if j == 0 else ''} | {100 * f:.0f} % | " + " | ".join(cells)
                         + " |")
    lines += [
        "",
        f"Threshold chosen on the calibration part for \"MAE <= teacher's + {s['eps']}\" "
        "(MaxDrop in loss units), on the test part:",
        "",
        "| pair | router | teacher share | MAE | MAE - teacher's | target met |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in r["runs"].items():
        for router in ("energy", "peak_density", "spread"):
            share = np.mean([x["calibrated"][router]["teacher_share"] for x in runs])
            gap = np.array([x["calibrated"][router]["mae"] - x["teacher_mae"] for x in runs])
            mae = np.mean([x["calibrated"][router]["mae"] for x in runs])
            met = np.mean(gap <= s["eps"])
            lines.append(f"| {name} | {router} | {100 * share:.1f} % | {mae:.2f} | "
                         f"{gap.mean():+.2f} | {100 * met:.0f} % of splits |")
    f = r["runs"]["cheap -> full"][0]["flops"]
    lines += ["", f"FLOPs per input with K samples: student {f['student']:.3g}, teacher "
              f"{f['teacher']:.3g}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
