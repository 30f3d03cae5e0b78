"""Routers and the guaranteed threshold on public student/teacher pairs.

Reads the real model outputs in ../shared/data (see its README for provenance)
and writes benchmarks/results/public_pairs.{json,md}:

1. Routers at the teacher's accuracy (the ``ebjr evaluate --json`` numbers):
   teacher share and speed-up per router, with the oracle. CIFAR pairs on
   the full 10,000-image test set (in-sample, as the paper reports); SNLI on
   the Desai-Durrett test half.
2. The guarantee on each CIFAR pair, two ways:
   - "split": seeded 50/50 calibration/test splits. How often the drop on the
     test half exceeds eps, and the teacher share the guaranteed threshold
     needs relative to the hindsight-best threshold (the smallest teacher
     share whose drop on the test half is <= eps).
   - "iid": the statement the guarantee makes. The 10,000 inputs are the
     population; each run draws 5,000 calibration inputs i.i.d. (with
     replacement) from it, and the drop is measured on the whole population.
     The violation rate must be <= delta. (The split check is stricter than
     the guarantee: the two halves are complementary, so a lucky calibration
     half means an unlucky test half, and the test half adds its own noise.)

Run: python benchmarks/public_pairs.py [--splits 100] [--jobs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ebjr.bundle import dumps
from ebjr.calibration import MaxDrop, select_threshold, tradeoff_curve
from ebjr.evaluation import evaluate
from ebjr.risk_control import GuaranteedDrop

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"

# (label, student file, teacher file, student cost, teacher cost, unit, eval file suffix)
# Costs: FLOPs = 2 x the MAdds of ../shared/data/README.md; SNLI: parameters (millions).
PAIRS = [
    (
        "CIFAR-10 ResNet-20 -> ResNet-56",
        "cifar10_resnet20",
        "cifar10_resnet56",
        2 * 40.81e6,
        2 * 125.75e6,
        "FLOPs",
    ),
    (
        "CIFAR-10 ResNet-20 -> RepVGG-A2",
        "cifar10_resnet20",
        "cifar10_repvgg_a2",
        2 * 40.81e6,
        2 * 1850.10e6,
        "FLOPs",
    ),
    (
        "CIFAR-100 ResNet-20 -> ResNet-56",
        "cifar100_resnet20",
        "cifar100_resnet56",
        2 * 40.82e6,
        2 * 125.75e6,
        "FLOPs",
    ),
    (
        "SNLI BERT-base -> RoBERTa-base (test half)",
        "snli-dd-test_bert-base-uncased-s0",
        "snli-dd-test_roberta-base-s0",
        110.0,
        125.0,
        "M params",
    ),
]
ROUTERS = ["energy", "softmax", "entropy", "maxlogit", "margin", "paper_code"]
GUARANTEES = [("signed", "wsr"), ("harm", "wsr"), ("harm", "hb"), ("signed", "hb")]
EPS, DELTA = 0.005, 0.05


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(DATA / f"{name}.npz")
    return z["logits"], z["labels"]


def router_table() -> list[dict]:
    rows = []
    for label, sn, tn, cs, ct, unit in PAIRS:
        s, y = load(sn)
        t, yt = load(tn)
        assert np.array_equal(y, yt)
        ev = evaluate(s, t, y, ROUTERS, student_cost=cs, teacher_cost=ct, cost_unit=unit)
        d = ev.to_json_dict()
        d["pair"] = label
        rows.append(d)
    return rows


def one_split(args: tuple[str, str, int, str, str, str, str]) -> dict:
    sn, tn, seed, loss, pv, router, mode = args
    s, y = load(sn)
    t, _ = load(tn)
    rng = np.random.default_rng(seed)
    if mode == "iid":  # calibration drawn i.i.d. from the population; measured on all of it
        cal, test = rng.integers(0, y.size, y.size // 2), np.arange(y.size)
    else:
        perm = rng.permutation(y.size)
        cal, test = perm[: y.size // 2], perm[y.size // 2 :]
    c_cal = tradeoff_curve(s[cal], t[cal], y[cal], router)
    c_test = tradeoff_curve(s[test], t[test], y[test], router)
    start = time.perf_counter()
    sel = select_threshold(c_cal, GuaranteedDrop(EPS, DELTA, loss, pv, seed=seed))
    seconds = time.perf_counter() - start
    held = c_test.at_threshold(sel.threshold)
    hindsight = select_threshold(c_test, MaxDrop(EPS)).point.teacher_fraction
    return {
        "drop": c_test.teacher_accuracy - held.accuracy,
        "teacher_fraction": held.teacher_fraction,
        "hindsight_fraction": hindsight,
        "seconds": seconds,
    }


def guarantee_table(splits: int, jobs: int) -> list[dict]:
    # every loss / p-value on held-out halves; the two main ones also on the i.i.d. check
    configs = [(g, "split") for g in GUARANTEES] + [
        (g, "iid") for g in (("signed", "wsr"), ("harm", "hb"))
    ]
    rows = []
    cifar = [p for p in PAIRS if p[0].startswith("CIFAR")]
    with ProcessPoolExecutor(jobs) as pool:
        for label, sn, tn, *_ in cifar:
            for router in ("energy", "softmax"):
                for (loss, pv), mode in configs:
                    tasks = [(sn, tn, seed, loss, pv, router, mode) for seed in range(splits)]
                    res = list(pool.map(one_split, tasks))
                    drops = np.array([r["drop"] for r in res])
                    frac = np.array([r["teacher_fraction"] for r in res])
                    hind = np.array([r["hindsight_fraction"] for r in res])
                    row = {
                        "pair": label,
                        "router": router,
                        "loss": loss,
                        "p_value": pv,
                        "mode": mode,
                        "splits": splits,
                        "violation_rate": float(np.mean(drops > EPS)),
                        "mean_heldout_drop": float(drops.mean()),
                        "mean_teacher_fraction": float(frac.mean()),
                        "mean_hindsight_fraction": float(hind.mean()),
                        "ratio_of_means": float(frac.mean() / hind.mean()),
                        "median_ratio": float(np.median(frac / np.maximum(hind, 1e-12))),
                        "median_seconds": float(np.median([r["seconds"] for r in res])),
                    }
                    rows.append(row)
                    print(
                        f"  {label} {router} {loss}/{pv} {mode}: ratio "
                        f"{row['ratio_of_means']:.2f} violations {row['violation_rate']:.3f}",
                        file=sys.stderr,
                    )
    return rows


def markdown(routers: list[dict], guarantees: list[dict]) -> str:
    lines = [
        "### Routers at the teacher's accuracy "
        "(teacher share; speed-up = teacher cost / joint cost)",
        "",
        "| pair | student acc | teacher acc | energy | softmax | entropy | maxlogit | margin | "
        "paper_code | oracle |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in routers:
        cells = []
        for name in ROUTERS:
            p = d["routers"][name]["at_teacher_accuracy"]
            cells.append(f"{100 * p['teacher_fraction']:.1f}% ({p['speedup']:.2f}x)")
        o = d["oracle"]
        lines.append(
            f"| {d['pair']} | {100 * d['student']['accuracy']:.2f} | "
            f"{100 * d['teacher']['accuracy']:.2f} | "
            + " | ".join(cells)
            + f" | {100 * o['teacher_fraction']:.1f}% ({o['speedup']:.2f}x) |"
        )
    lines += [
        "",
        f"### Guaranteed drop <= {EPS} with probability >= {1 - DELTA}",
        "",
        "check 'split': calibrate on one half, measure on the other; 'iid': calibrate on "
        "5,000 i.i.d. draws from the 10,000 inputs, measure on all 10,000 (the guarantee's "
        "own statement). Ratio: mean teacher share of the guaranteed threshold over that of "
        "the best threshold in hindsight on the test half.",
        "",
        "| pair | router | loss / p-value | check | runs | drop > eps | teacher share "
        "(guaranteed) | teacher share (hindsight best) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in guarantees:
        lines.append(
            f"| {g['pair']} | {g['router']} | {g['loss']} / {g['p_value']} | {g['mode']} | "
            f"{g['splits']} | "
            f"{100 * g['violation_rate']:.1f}% | {100 * g['mean_teacher_fraction']:.1f}% | "
            f"{100 * g['mean_hindsight_fraction']:.1f}% | {g['ratio_of_means']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the public model outputs in {DATA}")
    routers = router_table()
    guarantees = guarantee_table(args.splits, args.jobs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "public_pairs.json").write_text(
        dumps({"routers": routers, "guarantees": guarantees}, indent=2) + "\n"
    )
    md = markdown(routers, guarantees)
    (OUT / "public_pairs.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
