"""The live guarantee monitor on streams built from real model outputs: false alarms, delays.

Streams of rows drawn i.i.d. from real outputs (``_streams.py``): the public CIFAR pairs in
../shared/data (ResNet-20 -> RepVGG-A2, softmax router) and the paper's DenseNets
(../shared/models). The threshold is set where the pair's disagreement with the teacher on
the whole population equals eps (the boundary of the monitor's null, the hardest case for
false alarms). A share ``p`` of the rows the student answers is shadowed. Writes
benchmarks/results/monitor_drift.{json,md}:

1. No shift: the share of runs of 10^6 rows in which ``ebjr.GuaranteeMonitor`` ever
   alarms (it must be <= delta), next to a naive z-test of the same shadowed rows
   repeated every 1,000 rows (its false-alarm rate under peeking).
2. Shifts after 100,000 rows: a class-prior shift (the three classes the student gets
   most wrong made 10x as frequent), a switch to a worse, overconfident student (the
   playground CIFAR-10 net at the same threshold, as after a bad model push), a harmless
   prior shift that stays below eps (an alarm there is a false one), and covariate shifts:
   the real CIFAR-10 test images corrupted by Gaussian noise or blur at CIFAR-10-C's
   severities 1, 3 and 5, through the paper's DenseNet-BC 52-6 and 64-12 (run here once,
   on the first 5,000 images, and cached in ~/.cache/ebjr-benchmarks). For each: the
   disagreement before and after, the alarms before and after the shift, the median
   delay against an oracle that knows the post-shift rate (``log(1/delta) / KL``, a
   sequential likelihood-ratio test on the same shadowed rows), and, with the ``tighten``
   policy, the share of runs whose final threshold keeps the post-shift disagreement <= eps
   and the share of rows the student answers then.
3. Shadowing more near the threshold (``ShadowPlan``) against uniform shadows with the
   same teacher work: false alarms and delays.
4. The teacher's extra work (``p`` x the student's share) for p in {0.01, 0.05, 0.2}.
5. The monitor's cost per batch of 256 rows (with a 32-threshold grid) next to a
   ResNet-20 forward on the same batch, and its memory after 10^6 rows.
6. With ``--baselines PYTHON``: NannyML's CBPE and alibi-detect's online Fisher exact
   test on the same streams (``monitor_baselines.py``, in a venv of their own).

Run: python benchmarks/monitor_drift.py [--runs 200] [--baselines PYTHON] [--smoke]
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

import _common
import _streams
from _streams import Population, Stream
from ebjr.calibration.monitor import AlarmPolicy, GuaranteeMonitor
from ebjr.calibration.shadow_plan import ShadowPlan

CACHE = Path.home() / ".cache" / "ebjr-benchmarks"

EPS, DELTA = 0.02, 0.05
RATES = (0.01, 0.05, 0.2)
BATCH = _streams.BATCH
SHIFT_AT = 100_000
NEAR_RATE = 0.2  # the near-threshold plan's rate in its band
#: CIFAR-10-C's severities 1, 3 and 5 (Hendrycks & Dietterich, 2019): the noise's standard
#: deviation and the blur's sigma, on pixels scaled to [0, 1]
CORRUPTIONS = {"gaussian noise": {1: 0.04, 3: 0.08, 5: 0.10},
               "gaussian blur": {1: 0.4, 3: 0.7, 5: 1.0}}
DENSENETS = ((52, 6), (64, 12))  # the paper's CIFAR-10 student and teacher


def pair(dataset: str, student: str = "resnet20") -> Population:
    return _streams.from_outputs(_common.need(_common.DATA / f"{dataset}_{student}.npz",
                                              "the outputs"),
                                 _common.DATA / f"{dataset}_repvgg_a2.npz")


def corrupt(images: np.ndarray, kind: str, level: float, rng: np.random.Generator):
    """``images`` (uint8, NHWC) corrupted as CIFAR-10-C does, back to uint8 pixels."""
    from scipy.ndimage import gaussian_filter

    x = images.astype(np.float64) / 255.0
    if kind == "gaussian noise":
        x = x + rng.normal(scale=level, size=x.shape)
    else:
        x = gaussian_filter(x, sigma=(0, level, level, 0))
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def densenet_pair(n: int, kind: str | None = None, severity: int = 0) -> Population:
    """The paper's DenseNets (``../shared/models``) on the first ``n`` CIFAR-10 test images,
    clean (their published logits) or corrupted (run here once, then cached)."""
    logits = _common.MODELS / "logits"
    if kind is None:
        s = np.load(_common.need(logits / "cifar10_ebjr-densenet-bc-52-6.npz", "the logits"))
        t = np.load(logits / "cifar10_ebjr-densenet-bc-64-12.npz")
        return _streams.from_logits(s["logits"][:n], t["logits"][:n], s["labels"][:n])
    cache = CACHE / f"densenets_{kind.replace(' ', '-')}-{severity}_{n}.npz"
    if not cache.exists():
        import torch

        from ebjr.zoo.densenet import load_ebjr_checkpoint

        data = np.load(_common.need(_common.DATA / "cifar10-test-images.npz", "the images"))
        x = torch.from_numpy(corrupt(data["images"][:n], kind, CORRUPTIONS[kind][severity],
                                     np.random.default_rng(severity)))
        out = []
        for depth, growth in DENSENETS:
            ckpt = _common.MODELS / "cifar10" / f"densenet-bc-{depth}-{growth}"
            model = load_ebjr_checkpoint(ckpt / "model_best.pth.tar", depth, growth, 10).eval()
            model.pixel_input = True
            with torch.inference_mode():
                out.append(torch.cat([model(b) for b in x.split(500)]).numpy())
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cache, student=out[0], teacher=out[1], labels=data["labels"][:n])
    z = np.load(cache)
    return _streams.from_logits(z["student"], z["teacher"], z["labels"])


def grid_for(pop: Population, threshold: float) -> list[float]:
    """The monitor's threshold grid: the live one, 30 score quantiles above, +inf."""
    score = pop.score
    return [threshold, *np.quantile(score[score > threshold], np.linspace(0.02, 0.98, 30)
                                     ).tolist(), math.inf]


def run(stream, n_rows, threshold, p, grid=None, policy="log", rng=None, naive=False):
    """One stream: the rows seen at the first alarm (``None`` if none), whether the naive
    test ever alarmed, and the threshold served at the end (``policy`` acting, as
    ``ebjr serve --on-alarm`` does, through :class:`AlarmPolicy`). ``p`` is a shadow rate
    or a :class:`ShadowPlan` (per-row probabilities, as ``--shadow-near-rate`` samples)."""
    plan = p if isinstance(p, ShadowPlan) else ShadowPlan(p)
    mon = GuaranteeMonitor(EPS, DELTA, min_shadow_prob=plan.min_prob, thresholds=grid)
    act = AlarmPolicy(mon, policy, threshold)
    z = norm.ppf(1 - DELTA)
    n = total = squares = 0.0
    naive_alarm = False
    alarm_at = None
    for seen, pop, idx in stream.batches(n_rows):
        score, disagree = pop.score[idx], pop.disagree[idx]
        student = score >= threshold
        prob = plan.probabilities(score, threshold)
        shadowed = student & (rng.random(student.size) < prob)
        was = mon.alarm
        mon.update(student, shadowed, disagree, prob,
                   scores=score if grid is not None else None)
        if naive:  # a z-test of the weighted mean, repeated every batch (peeking)
            x = np.where(student & shadowed & disagree, 1 / prob, 0.0)
            n, total, squares = n + x.size, total + x.sum(), squares + (x ** 2).sum()
            sd = math.sqrt(max(squares / n - (total / n) ** 2, 1e-12))
            naive_alarm |= (total / n - EPS) / (sd / math.sqrt(n)) > z
        raised = mon.alarm and not was
        if raised and alarm_at is None:
            alarm_at = seen + BATCH
        new = act.next_threshold(threshold, raised)
        threshold = threshold if new is None else new
    return alarm_at, naive_alarm, threshold, mon


def near_plan(pop: Population, threshold: float, p: float) -> ShadowPlan:
    """A plan shadowing the band of 10 % of the traffic just above the threshold at
    NEAR_RATE and the rest at the rate that keeps the teacher's work of a uniform ``p``."""
    probe = ShadowPlan.from_scores(p, pop.score, near_rate=NEAR_RATE, near_share=0.1)
    answered = pop.score >= threshold
    band = answered & (pop.score < probe.band_top(threshold))
    rate = (p * answered.mean() - NEAR_RATE * band.mean()) / (answered & ~band).mean()
    return ShadowPlan.from_scores(rate, pop.score, near_rate=NEAR_RATE, near_share=0.1)


def near_threshold(shifts, runs, rows, no_shift_runs, no_shift_rows, seed) -> dict:
    """Uniform shadows at p = 0.05 against the near-threshold plan with the same teacher
    work: false alarms without a shift, and the delay after the harmful shifts."""
    rng = np.random.default_rng(seed)
    c10 = pair("cifar10")
    thr = _streams.boundary_threshold(c10, EPS)
    plan = near_plan(c10, thr, 0.05)
    res: dict = {"near_rate": NEAR_RATE, "far_rate": plan.rate, "near_share": 0.1,
                 "no_shift": {}, "shifts": []}
    for name, p in (("uniform", 0.05), ("near", plan)):
        alarms = sum(run(Stream(rng, c10), no_shift_rows, thr, p, rng=rng)[0] is not None
                     for _ in range(no_shift_runs))
        res["no_shift"][name] = alarms / no_shift_runs
    for name, before, after, threshold in shifts:
        if after.disagreement(threshold) <= EPS:
            continue
        row = {"shift": name}
        for label, p in (("uniform", 0.05), ("near", near_plan(before, threshold, 0.05))):
            delays = []
            for _ in range(runs):
                at = run(Stream(rng, before, after, SHIFT_AT), rows, threshold, p, rng=rng)[0]
                if at is not None and at > SHIFT_AT:
                    delays.append(at - SHIFT_AT)
            row[label] = {"detected": len(delays) / runs,
                          "median_delay_rows": statistics.median(delays) if delays else None}
        res["shifts"].append(row)
    return res


def no_shift(pop: Population, threshold, runs, n_rows, seed) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for p in RATES:
        alarms = naive = 0
        for _ in range(runs):
            at, peek, _, _ = run(Stream(rng, pop), n_rows, threshold, p, rng=rng, naive=True)
            alarms += at is not None
            naive += peek
        out[p] = {"false_alarm_rate": alarms / runs, "naive_false_alarm_rate": naive / runs}
    return out


def shifted(name, before: Population, after: Population, threshold, runs, n_rows,
            seed) -> dict:
    """Runs of ``before`` then ``after`` at ``threshold`` (the tighten policy acting)."""
    rng = np.random.default_rng(seed)
    grid = grid_for(before, threshold)
    d0, d1 = before.disagreement(threshold), after.disagreement(threshold)
    res = {"shift": name, "disagreement_before": d0, "disagreement_after": d1,
           "harmful": d1 > EPS, "drop_after": after.drop(threshold),
           "teacher_accuracy_after": after.weighted_accuracy("teacher"), "by_rate": {}}
    for p in RATES:
        delays, early, kept, shares = [], 0, 0, []
        for _ in range(runs):
            at, _, final, _ = run(Stream(rng, before, after, SHIFT_AT), n_rows, threshold, p,
                                  grid=grid, policy="tighten", rng=rng)
            early += at is not None and at <= SHIFT_AT
            if at is not None and at > SHIFT_AT:
                delays.append(at - SHIFT_AT)
            kept += after.disagreement(final) <= EPS
            shares.append(after.student_share(final))
        ideal = math.log(1 / DELTA) / _streams.kl(p * d1, p * EPS) if d1 > EPS else math.inf
        res["by_rate"][p] = {
            "alarm_before_shift": early / runs,
            "detected": len(delays) / runs,
            "median_delay_rows": statistics.median(delays) if delays else None,
            "oracle_delay_rows": ideal,
            "after_tighten_within_eps": kept / runs,
            "student_share_at_the_end": statistics.mean(shares),
            "student_share_before": after.student_share(threshold),
        }
    return res


def scenarios(n_images: int) -> list[tuple[str, Population, Population, float]]:
    """The shifts: ``(name, before, after, threshold)``."""
    c10 = pair("cifar10")
    thr = _streams.boundary_threshold(c10, EPS)
    labels = c10.labels
    per_class = np.array([c10.disagree[labels == k].mean() for k in range(10)])
    hard = np.isin(labels, np.argsort(-per_class)[:3])
    out = [("class prior (3 hardest classes x10)", c10, c10.weighted(np.where(hard, 10., 1.)),
            thr),
           ("worse student (playground CIFAR-10 net)", c10, pair("cifar10", "playground-cifar10"),
            thr)]
    # a harmless change: a milder prior shift at a threshold with room below eps
    low = _streams.boundary_threshold(c10, EPS / 2)
    out.append(("harmless: 3 hardest classes x2, at 1 % disagreement", c10,
                c10.weighted(np.where(hard, 2.0, 1.0)), low))
    clean = densenet_pair(n_images)
    dthr = _streams.boundary_threshold(clean, EPS)
    for kind, levels in CORRUPTIONS.items():
        for severity in levels:
            out.append((f"covariate: {kind}, severity {severity} (paper's DenseNets)", clean,
                        densenet_pair(n_images, kind, severity), dthr))
    return out


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


def baselines(python: str, shifts, rows: int, runs: int, smoke: bool) -> dict:
    """NannyML's CBPE and alibi-detect's online FET on the same streams, run by
    ``monitor_baselines.py`` in the venv of ``python`` (they pin numpy < 2)."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        c10 = pair("cifar10")
        specs = [{"name": "no shift (CIFAR-10 pair)", "before": "c10.npz", "after": None,
                  "threshold": _streams.boundary_threshold(c10, EPS), "rows": rows}]
        c10.save(folder / "c10.npz")
        for i, (name, before, after, thr) in enumerate(shifts):
            before.save(folder / f"before{i}.npz")
            after.save(folder / f"after{i}.npz")
            specs.append({"name": name, "before": f"before{i}.npz", "after": f"after{i}.npz",
                          "threshold": thr, "rows": rows, "shift_at": SHIFT_AT,
                          "harmful": after.disagreement(thr) > EPS})
        spec = {"eps": EPS, "delta": DELTA, "p": 0.05, "runs": runs, "smoke": smoke,
                "scenarios": specs}
        (folder / "spec.json").write_text(json.dumps(spec))
        script = Path(__file__).with_name("monitor_baselines.py")
        subprocess.run([python, str(script), str(folder / "spec.json"),
                        str(folder / "out.json")], check=True)
        return json.loads((folder / "out.json").read_text())


def near_markdown(r: dict) -> list[str]:
    n = r["near_threshold"]
    out = ["", "## Shadowing more near the threshold (`--shadow-near-rate`)", "",
           f"Uniform shadows at p = 0.05 against a plan with the same teacher work: the band "
           f"of {100 * n['near_share']:.0f} % of the traffic just above the threshold at "
           f"{n['near_rate']}, the rest at {n['far_rate']:.3f} (CIFAR-10 pair). Runs of "
           f"{r['rows']:,} rows without a shift that ever alarm: uniform "
           f"{100 * n['no_shift']['uniform']:.1f} %, near-threshold "
           f"{100 * n['no_shift']['near']:.1f} %.", "",
           "| shift | uniform: detected, median delay | near-threshold: detected, median "
           "delay |", "|---|---|---|"]

    def cell(v: dict) -> str:
        md = v["median_delay_rows"]
        return f"{100 * v['detected']:.0f} %, " + ("-" if md is None else f"{md:,.0f}")

    for row in n["shifts"]:
        out.append(f"| {row['shift']} | {cell(row['uniform'])} | {cell(row['near'])} |")
    return out


def baselines_markdown(r: dict) -> list[str]:
    b = r["baselines"]
    fs = b["scenarios"][0]["fet_setup"]
    out = ["", "## Side by side: NannyML CBPE and alibi-detect's online Fisher test", "",
           f"nannyml {b['nannyml']}, alibi-detect {b['alibi_detect']}, run by "
           "`monitor_baselines.py` on streams drawn by the same code, "
           f"{b['runs']} runs each, {b['reference_rows']:,} labelled reference rows from "
           "before the shift. CBPE: NannyML's alert on the joint model's estimated accuracy "
           "per chunk of 1,000 rows. FET: `FETDriftOnline` on the shadowed rows' "
           f"disagreement bits (p = {b['p']}), ERT {fs['ert_shadowed_rows']:,} shadowed rows "
           f"(windows {fs['window_sizes']}, {fs['n_bootstraps']:,} bootstraps: "
           f"{fs['configure_seconds']:.0f} s to configure). ebjr: the monitor at p = "
           f"{b['p']}, from the tables above. Each cell: the share of runs whose first alarm "
           "came before the shift (a false alarm; at the median row) / after it (the median "
           "delay in rows).", "",
           "| stream | harmful | ebjr monitor | NannyML CBPE | alibi-detect FET |",
           "|---|---|---|---|---|"]

    def cell(v: dict) -> str:
        md, fa = v["median_delay_rows"], v.get("median_false_alarm_row")
        return (f"{100 * v['alarm_before_shift']:.0f} %"
                + ("" if fa is None else f" (at {fa:,.0f})")
                + f" / {100 * v['alarm_after_shift']:.0f} %"
                + ("" if md is None else f" ({md:,.0f})"))

    ours = {s["shift"]: s for s in r["shifts"]}
    for sc in b["scenarios"]:
        if sc["name"] in ours:
            v = ours[sc["name"]]["by_rate"][b["p"]]
            mine = {"alarm_before_shift": v["alarm_before_shift"],
                    "alarm_after_shift": v["detected"],
                    "median_delay_rows": v["median_delay_rows"]}
            harmful = "yes" if ours[sc["name"]]["harmful"] else "no"
        else:  # no shift: the CIFAR-10 runs of the first table (10^6 rows each)
            v = r["no_shift"]["CIFAR-10"][b["p"]]
            mine = {"alarm_before_shift": v["false_alarm_rate"], "alarm_after_shift": 0.0,
                    "median_delay_rows": None}
            harmful = "none"
        out.append(f"| {sc['name']} | {harmful} | {cell(mine)} | {cell(sc['cbpe'])} | "
                   f"{cell(sc['fet'])} |")
    return out


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
    lines += ["", f"## Shifts after {SHIFT_AT:,} rows", "",
              "Harmful: the disagreement after the shift is above eps (the monitor's H0 is "
              "false), so an alarm is due; after a harmless shift an alarm is a false one. "
              "The accuracy drop against the teacher after the shift (from the labels, which "
              "the monitor does not see) is what the disagreement bounds; the teacher's "
              "accuracy after it is in brackets. The tighten policy acts on the alarm.", "",
              "| shift | harmful | disagreement before -> after | drop vs teacher after "
              "(teacher acc.) | p | alarm before the shift | alarm after it | median delay "
              "(rows) | oracle delay | tighten: final threshold <= eps | student share: "
              "shifted -> final |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["shifts"]:
        for p, v in s["by_rate"].items():
            md = v["median_delay_rows"]
            oracle = v["oracle_delay_rows"]
            lines.append(
                f"| {s['shift']} | {'yes' if s['harmful'] else 'no'} | "
                f"{100 * s['disagreement_before']:.2f} % -> "
                f"{100 * s['disagreement_after']:.2f} % | {100 * s['drop_after']:+.2f} pt "
                f"({100 * s['teacher_accuracy_after']:.1f} %) | {p} | "
                f"{100 * v['alarm_before_shift']:.0f} % | {100 * v['detected']:.0f} % | "
                f"{'-' if md is None else f'{md:,.0f}'} | "
                f"{'-' if math.isinf(oracle) else f'{oracle:,.0f}'} | "
                f"{100 * v['after_tighten_within_eps']:.0f} % | "
                f"{100 * v['student_share_before']:.0f} % -> "
                f"{100 * v['student_share_at_the_end']:.0f} % |")
    lines += near_markdown(r)
    if "baselines" in r:
        lines += baselines_markdown(r)
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
    p.add_argument("--baselines", metavar="PYTHON",
                   help="a Python whose venv holds nannyml and alibi-detect (see "
                        "monitor_baselines.py): run them side by side on the same streams")
    args = p.parse_args()
    runs, rows, shift_runs, shift_rows, images = (
        (4, 20_000, 3, 150_000, 64) if args.smoke else
        (args.runs, 1_000_000, 100, 600_000, 5_000))
    t0 = time.perf_counter()
    res: dict = {"runs": runs, "rows": rows, "no_shift": {}, "student_share": {}, "shifts": [],
                 "images": images}
    for ds in ("CIFAR-10", "CIFAR-100"):
        pop = pair(ds.lower().replace("-", ""))
        thr = _streams.boundary_threshold(pop, EPS)
        res["student_share"][ds] = pop.student_share(thr)
        res["no_shift"][ds] = no_shift(pop, thr, runs, rows, seed=1)
        print(f"{ds}: no shift done ({time.perf_counter() - t0:.0f} s)", flush=True)
    shifts = scenarios(images)
    for name, before, after, thr in shifts:
        res["shifts"].append(shifted(name, before, after, thr, shift_runs, shift_rows, seed=2))
        print(f"shift {name!r} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    res["near_threshold"] = near_threshold(shifts, shift_runs, shift_rows, runs, rows, seed=4)
    print(f"near-threshold shadows done ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.baselines:  # the smoke run: two shifts, two runs (it proves the code runs)
        res["baselines"] = baselines(args.baselines, shifts[:2] if args.smoke else shifts,
                                     shift_rows, 2 if args.smoke else 20, args.smoke)
    c10 = pair("cifar10")
    res["cost"] = cost(grid_for(c10, _streams.boundary_threshold(c10, EPS)))
    res["seconds"] = time.perf_counter() - t0
    _common.write_results("monitor_drift", res, markdown(res), smoke=args.smoke)


if __name__ == "__main__":
    main()
