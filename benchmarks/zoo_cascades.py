"""Cascades chosen from a model zoo, with and without a guarantee, on the public CIFAR zoos.

Reads the 19 chenyaofo/pytorch-cifar-models outputs per dataset in
../shared/data (costs: the MAdds of its README) and writes
benchmarks/results/zoo_cascades.{json,md}. The 10,000 test rows are the
population; each run draws 5,000 calibration rows i.i.d. (with replacement),
searches, and measures the result on the whole population. The reference is
the most accurate model (RepVGG-A2). Per dataset and method, over the runs:
the mean cost ratio vs the reference (reference MAdds / the cascade's mean
MAdds per row), the mean drop vs the reference, and the violation rate (drop
> eps; the guarantee promises <= delta). Methods:

- "guaranteed cascade": ``search_cascade(..., GuaranteedDrop(0.005, 0.05))``,
  up to 3 stages, combine last or mean;
- "guaranteed pair": the same search limited to 2 stages routed by the score
  (combine last): the best guaranteed pair of the zoo;
- "in-sample cascade": ``MaxDrop(0.005)`` on the same search, no guarantee
  (thresholds and chain fitted on the calibration rows, as FrugalGPT does);
- "in-sample pair": the same, 2 stages, combine last;
- "accuracy mode": ``MaxCost(reference MAdds / 3)``, in-sample: the most
  accurate cascade at a third of the reference's cost.

It also reports the best single cheaper model within eps of the reference (if
any), the exact-vs-default grid gap of the search on a few runs, and the wall
time of one ``ebjr cascade`` over the whole zoo on 5,000 rows.

Run: python benchmarks/zoo_cascades.py [--runs 200] [--jobs 2] [--smoke]
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import _common
from ebjr.calibration import MaxCost, MaxDrop
from ebjr.calibration.guarantee import GuaranteedDrop
from ebjr.calibration.zoo import search_cascade

DATA = _common.DATA
EPS, DELTA = 0.005, 0.05
METHODS = {  # name -> (target factory taking the reference cost, search options)
    "guaranteed cascade": (lambda _c: GuaranteedDrop(EPS, DELTA), {}),
    "guaranteed pair": (lambda _c: GuaranteedDrop(EPS, DELTA),
                        {"max_stages": 2, "combine": "last"}),
    "in-sample cascade": (lambda _c: MaxDrop(EPS), {}),
    "in-sample pair": (lambda _c: MaxDrop(EPS), {"max_stages": 2, "combine": "last"}),
    "accuracy mode": (lambda c: MaxCost(c / 3), {}),
}


@functools.cache
def madds(dataset: str) -> dict[str, float]:
    """MAdds per model from the data README's first table (models without a count skipped)."""
    out = {}
    for line in (DATA / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 10 and cells[1] == dataset and re.fullmatch(r"[\d.]+", cells[4]):
            out[cells[2]] = float(cells[4])
    return out


@functools.cache
def zoo(dataset: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    outputs, labels = {}, None
    for name in madds(dataset):
        with np.load(DATA / f"{dataset}_{name}.npz") as z:
            outputs[name], labels = z["logits"], z["labels"]
    assert labels is not None
    return outputs, labels


def reference(dataset: str) -> str:
    outputs, y = zoo(dataset)
    return max(outputs, key=lambda m: np.mean(np.argmax(outputs[m], 1) == y))


def one_run(args: tuple[str, int, int]) -> dict:
    dataset, seed, n_cal = args
    outputs, y = zoo(dataset)
    costs, ref = madds(dataset), reference(dataset)
    ref_acc = float(np.mean(np.argmax(outputs[ref], 1) == y))
    rows = np.random.default_rng(seed).integers(0, y.size, n_cal)
    cal = {m: z[rows] for m, z in outputs.items()}
    out = {}
    for method, (target, options) in METHODS.items():
        start = time.perf_counter()
        c = search_cascade(cal, y[rows], costs, target(costs[ref]), reference=ref, seed=seed,
                           progress=False, **options)
        seconds = time.perf_counter() - start
        r = c.apply(outputs)
        acc = float(np.mean(r.predictions == y))
        out[method] = {"ratio": costs[ref] / float(r.cost.mean()), "drop": ref_acc - acc,
                       "stages": list(c.stages), "combine": c.combine, "seconds": seconds,
                       "certified": c.details.get("certified")}
    return out


def grid_gap(dataset: str, runs: int) -> dict:
    """In-sample cascade cost with the default grid (127 thresholds per stage of a 3-stage
    chain) over a 16x finer one (1,023; the exact frontier of 5,000 rows would need ~3,000
    per stage: its gap is checked by brute force on small problems in the tests)."""
    outputs, y = zoo(dataset)
    costs, ref = madds(dataset), reference(dataset)
    ratios = []
    for seed in range(runs):
        rows = np.random.default_rng(seed).integers(0, y.size, 5000)
        cal = {m: z[rows] for m, z in outputs.items()}
        got = [search_cascade(cal, y[rows], costs, MaxDrop(EPS), reference=ref, progress=False,
                              max_stages=3, max_cells=cells).details["calibration_cost"]
               for cells in (1 << 14, 1 << 20)]
        ratios.append(got[0] / got[1])
    return {"runs": runs, "mean_default_over_fine_cost": float(np.mean(ratios)),
            "max_default_over_fine_cost": float(np.max(ratios))}


def cli_seconds(dataset: str, n_rows: int) -> float:
    """Wall time of one ``ebjr cascade`` over the whole zoo (a guarantee; files on disk)."""
    outputs, y = zoo(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for m, z in outputs.items():
            files.append(str(Path(tmp) / f"{m}.npz"))
            np.savez(files[-1], logits=z[:n_rows], labels=y[:n_rows])
        costs = [str(madds(dataset)[m]) for m in outputs]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ebjr", "cascade", *files, "--costs", *costs,
                        "--max-drop", str(EPS), "--confidence", str(1 - DELTA), "-o",
                        str(Path(tmp) / "c.json")], check=True, capture_output=True)
        return time.perf_counter() - start


def summarize(dataset: str, runs: list[dict]) -> dict:
    outputs, y = zoo(dataset)
    costs, ref = madds(dataset), reference(dataset)
    ref_acc = float(np.mean(np.argmax(outputs[ref], 1) == y))
    singles = [m for m in outputs if costs[m] < costs[ref]
               and np.mean(np.argmax(outputs[m], 1) == y) >= ref_acc - EPS]
    single = min(singles, key=lambda m: costs[m]) if singles else None
    rows = {}
    for method in METHODS:
        r = [run[method] for run in runs]
        ratio = np.array([x["ratio"] for x in r])
        drop = np.array([x["drop"] for x in r])
        chains: dict[str, int] = {}
        for x in r:
            key = f"{' -> '.join(x['stages'])} ({x['combine']})"
            chains[key] = chains.get(key, 0) + 1
        rows[method] = {
            "mean_ratio": float(ratio.mean()), "median_ratio": float(np.median(ratio)),
            "mean_drop": float(drop.mean()), "violation_rate": float(np.mean(drop > EPS)),
            "fallback_rate": float(np.mean([x["certified"] is False for x in r])),
            "mean_seconds": float(np.mean([x["seconds"] for x in r])),
            "top_chain": max(chains.items(), key=lambda kv: kv[1]),
        }
    return {"dataset": dataset, "runs": len(runs), "reference": ref, "reference_accuracy": ref_acc,
            "reference_madds": costs[ref], "models": len(outputs),
            "best_single_within_eps": None if single is None else {
                "model": single, "ratio": costs[ref] / costs[single]},
            "methods": rows}


def markdown(results: list[dict], extra: dict) -> str:
    lines = [
        "# Cascades from a model zoo (CIFAR, public outputs)",
        "",
        f"Target: drop <= {100 * EPS:.1f} pt vs the most accurate model (RepVGG-A2), "
        f"guaranteed at {100 * (1 - DELTA):.0f} % where it says so; {results[0]['runs']} "
        "i.i.d. draws of 5,000 calibration rows, measured on the 10,000-row population. "
        "Cost ratio = reference MAdds / mean MAdds per row. Command: "
        "`python benchmarks/zoo_cascades.py`.",
        "",
        "| dataset | method | mean cost ratio | median | mean drop (pt) | violations | "
        "fell back to the reference | most chosen chain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for method, m in res["methods"].items():
            chain, count = m["top_chain"]
            lines.append(
                f"| {res['dataset']} | {method} | {m['mean_ratio']:.2f}x | "
                f"{m['median_ratio']:.2f}x | {100 * m['mean_drop']:+.2f} | "
                f"{100 * m['violation_rate']:.1f} % | {100 * m['fallback_rate']:.0f} % | "
                f"{chain} ({count}/{res['runs']}) |"
            )
    lines += ["", "Best single cheaper model within eps of the reference: " + "; ".join(
        f"{r['dataset']}: " + ("none" if r["best_single_within_eps"] is None else
                               f"{r['best_single_within_eps']['model']} "
                               f"({r['best_single_within_eps']['ratio']:.2f}x)")
        for r in results) + ".", ""]
    for key, value in extra.items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    _common.need(DATA, "the public model outputs")
    runs, n_cal, gap_runs = (args.runs, 5000, 5) if not args.smoke else (2, 1000, 0)
    results, extra = [], {}
    for dataset in ("cifar10", "cifar100"):
        tasks = [(dataset, seed, n_cal) for seed in range(runs)]
        with ProcessPoolExecutor(args.jobs) as pool:
            done = list(pool.map(one_run, tasks))
        results.append(summarize(dataset, done))
        if not gap_runs:
            continue
        gap = grid_gap(dataset, gap_runs)
        extra[f"{dataset} grid gap (in-sample cascade's cost, default grid / 16x finer, "
              f"{gap_runs} runs)"] = (f"mean {gap['mean_default_over_fine_cost']:.4f}, "
                                      f"max {gap['max_default_over_fine_cost']:.4f}")
        results[-1]["grid_gap"] = gap
    seconds = cli_seconds("cifar100", n_cal)
    extra["`ebjr cascade` over the 19-model CIFAR-100 zoo, guarantee, "
          f"{n_cal} rows (wall time, this machine)"] = f"{seconds:.1f} s"
    _common.write_results("zoo_cascades", {"results": results, "cli_seconds": seconds},
                          markdown(results, extra), smoke=args.smoke)


if __name__ == "__main__":
    main()
