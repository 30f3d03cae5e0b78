"""Routers and the guaranteed threshold on public student/teacher pairs.

Reads the real model outputs in ../shared/data (see its README for provenance)
and writes benchmarks/results/public_pairs.{json,md}:

1. Routers at the teacher's accuracy (the ``ebjr evaluate --json`` numbers):
   teacher share and speed-up per router, with the oracle at the same target.
   CIFAR pairs on the full 10,000-image test set (in-sample, as the paper
   reports); SNLI on the Desai-Durrett test half.
2. The guarantee (drop <= 0.5 pt with probability >= 95 %) on five CIFAR
   pairs and two routers, every test side by side, MAPIE 1.6's
   ``BinaryClassificationController`` included as an external reference:
   - "iid": the statement the guarantee makes. The 10,000 inputs are the
     population; each run draws 5,000 calibration inputs i.i.d. (with
     replacement) from it, and the drop is measured on the whole population.
     The violation rate must be <= delta. The cost is the mean teacher share
     over the population-optimal one (the smallest whose drop is <= eps).
   - "split": seeded 50/50 calibration/test splits, for the default and the
     betting bound. Stricter than the guarantee: the two halves are
     complementary, so a lucky calibration half means an unlucky test half,
     and the test half adds its own noise.

Run: python benchmarks/public_pairs.py [--runs 200] [--split-runs 100] [--jobs 2] [--smoke]
(MAPIE is a benchmark-only reference: pip install mapie==1.6.0)
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import _common
from ebjr.calibration import MaxDrop, select_threshold, tradeoff_curve
from ebjr.calibration.guarantee import GuaranteedDrop
from ebjr.evaluation import evaluate

DATA = _common.DATA

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
EPS, DELTA = 0.005, 0.05
#: the pairs of the guarantee check (student file, teacher file): 5 pairs x 2 routers
GUARANTEE_PAIRS = [
    ("CIFAR-10 ResNet-20 -> ResNet-56", "cifar10_resnet20", "cifar10_resnet56"),
    ("CIFAR-10 ResNet-20 -> RepVGG-A2", "cifar10_resnet20", "cifar10_repvgg_a2"),
    ("CIFAR-10 MobileNetV2-x0.5 -> VGG-16", "cifar10_mobilenetv2_x0_5", "cifar10_vgg16_bn"),
    ("CIFAR-100 ResNet-20 -> ResNet-56", "cifar100_resnet20", "cifar100_resnet56"),
    ("CIFAR-100 ResNet-20 -> RepVGG-A2", "cifar100_resnet20", "cifar100_repvgg_a2"),
]
GUARANTEE_ROUTERS = ("energy", "softmax")
#: (label, loss, test): ebjr's tests, and MAPIE's controller as an external reference
METHODS = [
    ("signed + exact (default)", "signed", "exact"),
    ("signed + betting", "signed", "wsr"),
    ("harm + exact binomial", "harm", "exact"),
    ("harm + Hoeffding-Bentkus", "harm", "hb"),
    ("MAPIE 1.6 (harm, HB)", "harm", "mapie"),
]


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


@functools.lru_cache(maxsize=8)
def population(sn: str, tn: str, router: str):
    """Logits, labels, the population curve and its optimal teacher share (cached per worker)."""
    s, y = load(sn)
    t, _ = load(tn)
    pop = tradeoff_curve(s, t, y, router)
    optimal = select_threshold(pop, MaxDrop(EPS)).point.teacher_fraction
    return s, t, y, pop, optimal


def mapie_threshold(curve, pop_scores: np.ndarray) -> float:
    """MAPIE's BinaryClassificationController on the harm loss, as its docs show.

    "Positive" means the student answers: ``predict_proba`` returns the
    population CDF of the row's score (a fixed monotone map, chosen before any
    calibration draw), so the thresholds are 1,001 quantiles of the population
    scores, tested from the all-teacher end by fixed-sequence testing with
    MAPIE's Hoeffding-Bentkus p-values.
    """
    from mapie.risk_control import BinaryClassificationController, BinaryRisk

    harm = ~curve.student_correct & curve.teacher_correct  # in the curve's sorted order
    sorted_pop = np.sort(pop_scores)

    def predict_proba(x: np.ndarray) -> np.ndarray:
        u = np.searchsorted(sorted_pop, x.ravel(), side="right") / sorted_pop.size
        return np.stack([1 - u, u], axis=1)

    def share_of(occurrence):  # a risk over every row, lower is better
        return BinaryRisk(
            risk_occurrence=occurrence,
            risk_condition=lambda y_true, y_pred: np.repeat(True, len(y_true)),
            higher_is_better=False,
        )

    harm_risk = share_of(lambda y_true, y_pred: (y_pred == 1) & (y_true == 1))
    teacher_share = share_of(lambda y_true, y_pred: y_pred == 0)
    params = np.linspace(1.0, 0.0, 1001)  # the all-teacher end first
    controller = BinaryClassificationController(
        predict_function=predict_proba,
        risk=harm_risk,
        target_level=EPS,
        confidence_level=1 - DELTA,
        best_predict_param_choice=teacher_share,
        list_predict_params=params,
        fwer_method="fixed_sequence",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no threshold controls the risk" -> all teacher
        controller.calibrate(curve.scores[:, None], harm.astype(int))
    best = controller.best_predict_param
    if best is None:
        return math.inf
    # the student answers iff CDF(score) >= best: back to a score threshold
    k = int(np.ceil(best * sorted_pop.size - 1e-9))
    return -math.inf if k <= 0 else float(sorted_pop[min(k, sorted_pop.size) - 1])


def one_run(args: tuple[str, str, str, str, str, int, str]) -> dict:
    sn, tn, router, loss, test, seed, mode = args
    s, t, y, pop, optimal = population(sn, tn, router)
    rng = np.random.default_rng(seed)
    if mode == "iid":  # calibration drawn i.i.d. from the population; measured on all of it
        cal, test_rows = rng.integers(0, y.size, y.size // 2), np.arange(y.size)
        reference = pop
    else:
        perm = rng.permutation(y.size)
        cal, test_rows = perm[: y.size // 2], perm[y.size // 2 :]
        reference = tradeoff_curve(s[test_rows], t[test_rows], y[test_rows], router)
        optimal = select_threshold(reference, MaxDrop(EPS)).point.teacher_fraction
    c_cal = tradeoff_curve(s[cal], t[cal], y[cal], router)
    start = time.perf_counter()
    if test == "mapie":
        threshold = mapie_threshold(c_cal, pop.scores)
    else:
        threshold = select_threshold(c_cal, GuaranteedDrop(EPS, DELTA, loss, test, seed)).threshold
    seconds = time.perf_counter() - start
    held = reference.at_threshold(threshold)
    return {
        "drop": reference.teacher_accuracy - held.accuracy,
        "teacher_fraction": held.teacher_fraction,
        "optimal_fraction": optimal,
        "seconds": seconds,
    }


def guarantee_table(runs: int, split_runs: int, jobs: int) -> list[dict]:
    """Every method on the i.i.d. check; the default and the betting bound on the split check."""
    configs = [(m, "iid", runs) for m in METHODS] + [
        (m, "split", split_runs) for m in METHODS[:2]
    ]
    rows = []
    with ProcessPoolExecutor(jobs) as pool:
        for label, sn, tn in GUARANTEE_PAIRS:
            for router in GUARANTEE_ROUTERS:
                for (name, loss, test), mode, n_runs in configs:
                    tasks = [(sn, tn, router, loss, test, seed, mode) for seed in range(n_runs)]
                    res = list(pool.map(one_run, tasks, chunksize=8))
                    drops = np.array([r["drop"] for r in res])
                    frac = np.array([r["teacher_fraction"] for r in res])
                    best = np.array([r["optimal_fraction"] for r in res])
                    row = {
                        "pair": label,
                        "router": router,
                        "method": name,
                        "loss": loss,
                        "test": test,
                        "mode": mode,
                        "runs": n_runs,
                        "violation_rate": float(np.mean(drops > EPS)),
                        "mean_drop": float(drops.mean()),
                        "mean_teacher_fraction": float(frac.mean()),
                        "optimal_fraction": float(best.mean()),
                        "ratio_to_optimal": float(frac.mean() / best.mean()),
                        "median_seconds": float(np.median([r["seconds"] for r in res])),
                    }
                    rows.append(row)
                    print(
                        f"  {label} {router} {name} {mode}: ratio {row['ratio_to_optimal']:.2f} "
                        f"violations {row['violation_rate']:.3f}",
                        file=sys.stderr,
                    )
    return rows


def markdown(routers: list[dict], guarantees: list[dict]) -> str:
    lines = [
        "### Routers at the teacher's accuracy "
        "(teacher share; speed-up = teacher cost / joint cost)",
        "",
        "| pair | student acc | teacher acc | energy | softmax | entropy | maxlogit | margin | "
        "paper_code | oracle | oracle, best point (accuracy) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in routers:
        cells = []
        for name in ROUTERS:
            p = d["routers"][name]["at_teacher_accuracy"]
            cells.append(f"{100 * p['teacher_fraction']:.1f}% ({p['speedup']:.2f}x)")
        o, b = d["oracle"]["at_teacher_accuracy"], d["oracle"]["best"]
        lines.append(
            f"| {d['pair']} | {100 * d['student']['accuracy']:.2f} | "
            f"{100 * d['teacher']['accuracy']:.2f} | "
            + " | ".join(cells)
            + f" | {100 * o['teacher_fraction']:.1f}% ({o['speedup']:.2f}x) | "
            f"{100 * b['teacher_fraction']:.1f}% ({100 * b['accuracy']:.2f}%) |"
        )
    lines += guarantee_markdown(guarantees)
    return "\n".join(lines) + "\n"


def guarantee_markdown(guarantees: list[dict]) -> list[str]:
    """One row per pair and router: every method's teacher share / optimal and violations."""
    iid = [g for g in guarantees if g["mode"] == "iid"]
    names = list(dict.fromkeys(g["method"] for g in iid))
    runs = iid[0]["runs"] if iid else 0
    lines = [
        "",
        f"### Guaranteed drop <= {100 * EPS:g} pt with probability >= {1 - DELTA:g}",
        "",
        f"i.i.d. check, {runs} runs per cell: 5,000 calibration rows drawn with replacement "
        "from the 10,000 test inputs (the population); the threshold's teacher share and "
        "drop are measured on the population. Each cell: mean teacher share / the "
        "population-optimal share (the smallest whose drop is <= eps), and in brackets the "
        "share of runs whose drop exceeded eps (allowed: 5 %).",
        "",
        "| pair | router | optimal share | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for g in iid:
        cells.setdefault((g["pair"], g["router"]), {})[g["method"]] = g
    for (pair, router), by in cells.items():
        first = next(iter(by.values()))
        lines.append(
            f"| {pair} | {router} | {100 * first['optimal_fraction']:.1f}% | "
            + " | ".join(
                f"{by[m]['ratio_to_optimal']:.2f}x ({100 * by[m]['violation_rate']:.1f}%)"
                for m in names
            )
            + " |"
        )
    for m in names:
        ratios = [g["ratio_to_optimal"] for g in iid if g["method"] == m]
        worst = max(g["violation_rate"] for g in iid if g["method"] == m)
        lines.append(
            f"\n- {m}: {min(ratios):.2f}-{max(ratios):.2f}x of optimal, at most "
            f"{100 * worst:.1f}% violations per row"
        )
    split = [g for g in guarantees if g["mode"] == "split"]
    if split:
        lines += [
            "",
            "Split check (stricter than the guarantee: calibrate on one half, measure on the "
            "complementary half): share of runs whose drop on the other half exceeded eps.",
            "",
            "| pair | router | " + " | ".join(dict.fromkeys(g["method"] for g in split)) + " |",
            "|---|---|" + "---|" * len(dict.fromkeys(g["method"] for g in split)),
        ]
        by_row: dict[tuple[str, str], list[dict]] = {}
        for g in split:
            by_row.setdefault((g["pair"], g["router"]), []).append(g)
        for (pair, router), gs in by_row.items():
            lines.append(
                f"| {pair} | {router} | "
                + " | ".join(
                    f"{g['ratio_to_optimal']:.2f}x ({100 * g['violation_rate']:.0f}%)" for g in gs
                )
                + " |"
            )
    return lines


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=200, help="i.i.d. runs per cell")
    parser.add_argument("--split-runs", type=int, default=100, help="split runs per cell")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--markdown-only", action="store_true",
        help="rewrite the .md from the stored .json (no runs)",
    )
    args = parser.parse_args()
    if args.markdown_only:
        import json

        stored = json.loads((_common.RESULTS / "public_pairs.json").read_text())
        md = markdown(stored["routers"], stored["guarantees"])
        (_common.RESULTS / "public_pairs.md").write_text(md)
        print(md)
        return
    if not DATA.is_dir():
        sys.exit(f"needs the public model outputs in {DATA}")
    routers = router_table()
    if args.smoke:
        args.runs, args.split_runs = 2, 1
    guarantees = guarantee_table(args.runs, args.split_runs, args.jobs)
    _common.write_results(
        "public_pairs",
        {"routers": routers, "guarantees": guarantees},
        markdown(routers, guarantees),
        smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
