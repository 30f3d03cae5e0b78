"""The live guarantee monitor on streams built from real model outputs: false alarms, delays.

Streams of rows drawn i.i.d. from the public CIFAR outputs in ../shared/data
(ResNet-20 -> RepVGG-A2, softmax router). The threshold is set where the pair's
disagreement with the teacher on the whole population equals eps (the boundary
of the monitor's null, the hardest case for false alarms). A share ``p`` of the
rows the student answers is shadowed. Writes benchmarks/results/monitor_drift.{json,md}:

1. No shift: the share of runs of 10^6 rows in which ``ebjr.GuaranteeMonitor``
   ever alarms (it must be <= delta), next to a naive z-test of the same
   shadowed rows repeated every 1,000 rows (its false-alarm rate under peeking).
2. Shifts after 100,000 rows on the CIFAR-10 pair: a class-prior shift (the
   three classes the student gets most wrong made 10x as frequent) and a
   switch to a worse, overconfident student (the playground CIFAR-10 net's
   outputs at the same threshold, as after a bad model push). For each: the disagreement
   before and after, the median detection delay against the delay of an
   oracle that knows the post-shift rate (``log(1/delta) / KL``, a sequential
   likelihood-ratio test on the same shadowed rows), and, with the ``tighten``
   policy (everything to the teacher on the alarm, then the cheapest threshold
   certified since), the share of runs whose final threshold keeps the
   post-shift disagreement <= eps and the share of rows the student answers then.
3. The teacher's extra work (``p`` x the student's share) for p in {0.01, 0.05, 0.2}.
4. The monitor's cost per batch of 256 rows (with a 32-threshold grid) next to a
   ResNet-20 forward on the same batch, and its memory after 10^6 rows.

Not in this run yet: a covariate shift of corrupted CIFAR images through the
paper's DenseNets, and NannyML's CBPE and alibi-detect side by side.

Run: python benchmarks/monitor_drift.py [--runs 200] [--smoke]
"""

from __future__ import annotations

import math
import pickle
import statistics
import time

import numpy as np
from scipy.special import softmax
from scipy.stats import norm

import _common
from ebjr.calibration.monitor import AlarmPolicy, GuaranteeMonitor

EPS, DELTA = 0.02, 0.05
RATES = (0.01, 0.05, 0.2)
BATCH = 1000
SHIFT_AT = 100_000


def pair(dataset: str, student: str = "resnet20"):
    """Student score, and whether the student's class differs from the teacher's, per row."""
    s = np.load(_common.need(_common.DATA / f"{dataset}_{student}.npz", "the outputs"))
    t = np.load(_common.DATA / f"{dataset}_repvgg_a2.npz")
    ps = softmax(s["logits"].astype(np.float64), axis=1)
    disagree = ps.argmax(1) != t["logits"].argmax(1)
    return ps.max(1), disagree, s["labels"]


def boundary_threshold(score: np.ndarray, disagree: np.ndarray, eps: float) -> float:
    """The lowest threshold whose population disagreement (student answers and disagrees)
    is at most eps."""
    order = np.argsort(-score)
    rate = np.cumsum(disagree[order]) / score.size  # answering the top-k rows
    k = int(np.flatnonzero(rate <= eps)[-1])
    return float(score[order][k])


def disagreement(score, disagree, threshold, weights=None) -> float:
    w = np.full(score.size, 1.0 / score.size) if weights is None else weights / weights.sum()
    return float(np.sum(w * ((score >= threshold) & disagree)))


def kl(a: float, b: float) -> float:
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


class Stream:
    """Batches of row indices: i.i.d. from ``before`` (with weights), then from ``after``."""

    def __init__(self, rng, before, after=None, shift_at=None):
        self.rng, self.before, self.after, self.shift_at = rng, before, after, shift_at

    def batches(self, n_rows: int):
        seen = 0
        while seen < n_rows:
            src = self.before if self.shift_at is None or seen < self.shift_at else self.after
            score, disagree, w = src
            idx = self.rng.choice(score.size, BATCH, p=w / w.sum()) if w is not None else \
                self.rng.integers(0, score.size, BATCH)
            yield seen, score[idx], disagree[idx]
            seen += BATCH


def run(stream, n_rows, threshold, p, grid=None, policy="log", rng=None, naive=False,
        after=SHIFT_AT):
    """One stream: the first alarm at or after row ``after`` (rows seen then), whether the
    naive test ever alarmed, and the threshold served at the end (``policy`` acting, as
    ``ebjr serve --on-alarm`` does, through :class:`AlarmPolicy`)."""
    mon = GuaranteeMonitor(EPS, DELTA, min_shadow_prob=p, thresholds=grid)
    act = AlarmPolicy(mon, policy, threshold)
    z = norm.ppf(1 - DELTA)
    n = total = squares = 0.0
    naive_alarm = False
    alarm_at = None
    for seen, score, disagree in stream.batches(n_rows):
        student = score >= threshold
        shadowed = student & (rng.random(student.size) < p)
        was = mon.alarm
        mon.update(student, shadowed, disagree, p, scores=score if grid is not None else None)
        if naive:  # a z-test of the weighted mean, repeated every batch (peeking)
            x = np.where(student & shadowed & disagree, 1 / p, 0.0)
            n, total, squares = n + x.size, total + x.sum(), squares + (x ** 2).sum()
            sd = math.sqrt(max(squares / n - (total / n) ** 2, 1e-12))
            naive_alarm |= (total / n - EPS) / (sd / math.sqrt(n)) > z
        raised = mon.alarm and not was
        if raised and alarm_at is None and seen + BATCH > after:
            alarm_at = seen + BATCH
        new = act.next_threshold(threshold, raised)
        threshold = threshold if new is None else new
    return alarm_at, naive_alarm, threshold, mon


def no_shift(data, threshold, runs, n_rows, seed) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for p in RATES:
        alarms = naive = 0
        for _ in range(runs):
            at, peek, _, _ = run(Stream(rng, (*data, None)), n_rows, threshold, p, rng=rng,
                                 naive=True, after=0)
            alarms += at is not None
            naive += peek
        out[p] = {"false_alarm_rate": alarms / runs, "naive_false_alarm_rate": naive / runs}
    return out


def shifted(name, before, after, threshold, grid, runs, n_rows, seed) -> dict:
    rng = np.random.default_rng(seed)
    d0 = disagreement(before[0], before[1], threshold, before[2])
    d1 = disagreement(after[0], after[1], threshold, after[2])
    res = {"shift": name, "disagreement_before": d0, "disagreement_after": d1, "by_rate": {}}
    for p in RATES:
        delays, kept, shares = [], 0, []
        for _ in range(runs):
            at, _, final, _ = run(Stream(rng, before, after, SHIFT_AT), n_rows, threshold, p,
                                  grid=grid, policy="tighten", rng=rng)
            if at is not None:
                delays.append(at - SHIFT_AT)
            kept += disagreement(after[0], after[1], final, after[2]) <= EPS
            shares.append(float(np.mean(after[0] >= final)))
        ideal = math.log(1 / DELTA) / kl(p * d1, p * EPS) if d1 > EPS else math.inf
        res["by_rate"][p] = {
            "detected": len(delays) / runs,
            "median_delay_rows": statistics.median(delays) if delays else None,
            "oracle_delay_rows": ideal,
            "after_tighten_within_eps": kept / runs,
            "student_share_at_the_end": statistics.mean(shares),
            "student_share_before": float(np.mean(after[0] >= threshold)),
        }
    return res


def cost(grid) -> dict:
    import torch

    from ebjr.zoo.resnet_cifar import make_resnet

    torch.set_num_threads(1)
    model = make_resnet(20).eval()
    x = torch.rand(256, 3, 32, 32)
    with torch.no_grad():
        model(x)
        student = _common.median_seconds(lambda: model(x), 5)
    rng = np.random.default_rng(0)
    mon = GuaranteeMonitor(EPS, DELTA, min_shadow_prob=0.05, thresholds=grid)
    score = rng.random(256)

    def update():
        mon.update(score >= 0.5, (score >= 0.5) & (rng.random(256) < 0.05),
                   rng.random(256) < 0.05, 0.05, scores=score)

    per_batch = _common.median_seconds(update, 50)
    before = len(pickle.dumps(mon))  # everything the monitor holds
    for _ in range(4000):  # 10^6 rows
        update()
    after = len(pickle.dumps(mon))
    return {"monitor_ms_per_batch": 1e3 * per_batch, "resnet20_ms_per_batch": 1e3 * student,
            "share_of_student": per_batch / student, "state_bytes_start": before,
            "state_bytes_after_1e6_rows": after}


def markdown(r: dict) -> str:
    lines = [
        "# The live guarantee monitor on public CIFAR streams",
        "",
        f"`python benchmarks/monitor_drift.py --runs {r['runs']}`: ResNet-20 -> RepVGG-A2, "
        f"softmax router, eps = {EPS}, delta = {DELTA}, threshold where the population's "
        f"disagreement with the teacher equals eps; batches of {BATCH} rows.",
        "",
        f"## No shift: runs of {r['rows']:,} rows that ever alarm",
        "",
        "| pair | shadow rate p | teacher overhead (p x student share) | ebjr monitor | "
        "naive z-test every 1,000 rows |",
        "|---|---|---|---|---|",
    ]
    for ds, res in r["no_shift"].items():
        for p, v in res.items():
            lines.append(f"| {ds} | {p} | {100 * p * r['student_share'][ds]:.2f} % | "
                         f"{100 * v['false_alarm_rate']:.1f} % | "
                         f"{100 * v['naive_false_alarm_rate']:.1f} % |")
    lines += ["", f"## Shifts after {SHIFT_AT:,} rows (CIFAR-10 pair before)", "",
              "| shift | disagreement before -> after | p | detected | median delay (rows) | "
              "oracle delay | tighten: final threshold <= eps | student share: shifted -> "
              "final |", "|---|---|---|---|---|---|---|---|"]
    for s in r["shifts"]:
        for p, v in s["by_rate"].items():
            md = v["median_delay_rows"]
            lines.append(
                f"| {s['shift']} | {100 * s['disagreement_before']:.2f} % -> "
                f"{100 * s['disagreement_after']:.2f} % | {p} | {100 * v['detected']:.0f} % | "
                f"{'-' if md is None else f'{md:,.0f}'} | {v['oracle_delay_rows']:,.0f} | "
                f"{100 * v['after_tighten_within_eps']:.0f} % | "
                f"{100 * v['student_share_before']:.0f} % -> "
                f"{100 * v['student_share_at_the_end']:.0f} % |")
    c = r["cost"]
    lines += ["", "## Cost on the serving path", "",
              f"- monitor update, 256 rows, 32-threshold grid: {c['monitor_ms_per_batch']:.3f} "
              f"ms; a ResNet-20 forward on the same batch (1 thread): "
              f"{c['resnet20_ms_per_batch']:.1f} ms; ratio {100 * c['share_of_student']:.2f} %.",
              f"- monitor state (pickled): {c['state_bytes_start']:,} bytes at the start, "
              f"{c['state_bytes_after_1e6_rows']:,} after 10^6 rows.", ""]
    return "\n".join(lines)


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    runs, rows, shift_runs, shift_rows = (
        (4, 20_000, 3, 150_000) if args.smoke else (args.runs, 1_000_000, 100, 600_000))
    t0 = time.perf_counter()
    c10, c100 = pair("cifar10"), pair("cifar100")
    res: dict = {"runs": runs, "rows": rows, "no_shift": {}, "student_share": {}, "shifts": []}
    for ds, (score, disagree, _) in (("CIFAR-10", c10), ("CIFAR-100", c100)):
        thr = boundary_threshold(score, disagree, EPS)
        res["student_share"][ds] = float(np.mean(score >= thr))
        res["no_shift"][ds] = no_shift((score, disagree), thr, runs, rows, seed=1)
        print(f"{ds}: no shift done ({time.perf_counter() - t0:.0f} s)", flush=True)
    score, disagree, labels = c10
    thr = boundary_threshold(score, disagree, EPS)
    grid = [thr, *np.quantile(score[score > thr], np.linspace(0.02, 0.98, 30)).tolist(),
            math.inf]
    per_class = np.array([disagree[labels == k].mean() for k in range(10)])
    hard = np.isin(labels, np.argsort(-per_class)[:3])
    before = (score, disagree, None)
    prior = (score, disagree, np.where(hard, 10.0, 1.0))
    worse = (*pair("cifar10", "playground-cifar10")[:2], None)
    for name, after in (("class prior (3 hardest classes x10)", prior),
                        ("worse student (playground CIFAR-10 net)", worse)):
        res["shifts"].append(shifted(name, before, after, thr, grid, shift_runs, shift_rows,
                                     seed=2))
        print(f"shift {name!r} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    res["cost"] = cost(grid)
    res["seconds"] = time.perf_counter() - t0
    _common.write_results("monitor_drift", res, markdown(res), smoke=args.smoke)


if __name__ == "__main__":
    main()
