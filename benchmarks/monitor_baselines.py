"""NannyML's CBPE and alibi-detect's online Fisher exact test on the monitor's streams.

``monitor_drift.py --baselines PYTHON`` runs this script with ``PYTHON``, a venv of its
own, because NannyML pins numpy < 2 and ebjr needs numpy >= 2. Set it up once:

    python3 -m venv .venv-baselines
    .venv-baselines/bin/pip install nannyml==0.13.1 statsmodels==0.15.0 alibi-detect==0.13.0
    python benchmarks/monitor_drift.py --baselines .venv-baselines/bin/python

(statsmodels is imported by nannyml 0.13.1 but not in its requirements.)

Each scenario's populations come as ``.npz`` files written by ``monitor_drift.py``, and the
streams are drawn with the same code (``_streams.py``), so the three monitors see rows of
the same kind. Each baseline is set up as its documentation shows, with a labelled
reference sample of 20,000 rows from the population before the shift:

- **CBPE** (``nannyml.CBPE``) estimates the joint model's accuracy per chunk of 1,000 rows
  from the probabilities it answered with (the student's on the rows it answered, the
  teacher's on the others), without labels. An alarm is NannyML's own ``alert`` on a
  chunk: the estimate outside the reference chunks' mean +- 3 standard deviations.
- **FETDriftOnline** (``alibi_detect.cd``) watches the same shadowed rows as ebjr's
  monitor: one bit per shadowed row the student answered (did the teacher disagree?),
  ``alternative="greater"``. Its thresholds are simulated for an expected run time
  (ERT) in shadowed rows; the ERT is limited by what its configuration can simulate
  (``n_bootstraps`` should be ten times the ERT, and its memory grows with both).

Writes a JSON file: per scenario, the share of runs with an alarm before the shift (a
false alarm), the share that alarm after it, and the median delay.

Run: python benchmarks/monitor_baselines.py SPEC.json OUT.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import _streams
from _streams import Population, Stream

REFERENCE_ROWS = 20_000
CHUNK = _streams.BATCH


def joint_frame(pop: Population, idx: np.ndarray, threshold: float, labels: bool):
    """A NannyML frame of the joint model's answers on rows ``idx``."""
    import pandas as pd

    answered = pop.score[idx] >= threshold
    probs = np.where(answered[:, None], pop.student_probs[idx], pop.teacher_probs[idx])
    cols = {f"p{k}": probs[:, k] for k in range(probs.shape[1])}
    cols["y_pred"] = probs.argmax(1)
    if labels:
        cols["y_true"] = pop.labels[idx]
    return pd.DataFrame(cols)


def cbpe(reference, classes: int):
    import nannyml as nml

    est = nml.CBPE(y_pred_proba={k: f"p{k}" for k in range(classes)}, y_pred="y_pred",
                   y_true="y_true", problem_type="classification_multiclass",
                   metrics=["accuracy"], chunk_size=CHUNK)
    return est.fit(reference)


def fet(x_ref: np.ndarray, smoke: bool):
    from alibi_detect.cd import FETDriftOnline

    # boots: ten times the ERT, as its docs ask (the smoke run: tiny, just to run the code)
    ert, boots, windows = (50, 2_000, [20, 50]) if smoke else (500, 5_000, [50, 200])
    start = time.perf_counter()
    detector = FETDriftOnline(x_ref, ert=ert, window_sizes=windows, n_bootstraps=boots,
                              alternative="greater", verbose=False)
    return detector, {"ert_shadowed_rows": ert, "n_bootstraps": boots, "window_sizes": windows,
                      "configure_seconds": time.perf_counter() - start}


def one_run(rng, sc, before, after, threshold, p, estimator, detector):
    """The row at which CBPE and FET first alarm (``None`` if never)."""
    stream = Stream(rng, before, after, sc.get("shift_at"))
    parts = []
    fet_at = None
    detector.reset_state()
    for seen, pop, idx in stream.batches(sc["rows"]):
        parts.append(joint_frame(pop, idx, threshold, labels=False))
        answered = pop.score[idx] >= threshold
        shadowed = np.flatnonzero(answered & (rng.random(idx.size) < p))
        if fet_at is None:
            for row in shadowed:
                out = detector.predict(np.array([pop.disagree[idx[row]]]))
                if out["data"]["is_drift"]:
                    fet_at = seen + int(row) + 1
                    break
    import pandas as pd

    chunks = estimator.estimate(pd.concat(parts, ignore_index=True)).filter(
        period="analysis").to_df()
    alerts = np.flatnonzero(chunks[("accuracy", "alert")].to_numpy(dtype=bool))
    cbpe_at = int(chunks[("chunk", "end_index")].iloc[alerts[0]]) + 1 if alerts.size else None
    return cbpe_at, fet_at


def summarise(alarms: list, shift_at: int | None) -> dict:
    """Each run's first alarm: before the shift (false; every alarm without a shift) or
    after it (with the median delay), and the median row of a false alarm."""
    end = shift_at if shift_at is not None else float("inf")
    early = [a for a in alarms if a is not None and a <= end]
    late = [a - end for a in alarms if a is not None and a > end]
    return {"alarm_before_shift": len(early) / len(alarms),
            "alarm_after_shift": len(late) / len(alarms),
            "median_delay_rows": statistics.median(late) if late else None,
            "median_false_alarm_row": statistics.median(early) if early else None}


def scenario(sc: dict, folder: Path, spec: dict, configured: dict) -> dict:
    rng = np.random.default_rng(3)
    before = Population.load(folder / sc["before"])
    after = Population.load(folder / sc["after"]) if sc["after"] else None
    thr, p = sc["threshold"], spec["p"]
    ref_idx = rng.integers(0, before.labels.size, REFERENCE_ROWS)
    estimator = cbpe(joint_frame(before, ref_idx, thr, labels=True),
                     before.student_probs.shape[1])
    key = (sc["before"], thr)
    if key not in configured:  # FET's simulation is slow: once per reference
        answered = before.score[ref_idx] >= thr
        configured[key] = fet(before.disagree[ref_idx][answered], spec["smoke"])
    detector, fet_setup = configured[key]
    cb, fe = [], []
    for _ in range(spec["runs"]):
        a, b = one_run(rng, sc, before, after, thr, p, estimator, detector)
        cb.append(a)
        fe.append(b)
    return {"name": sc["name"], "cbpe": summarise(cb, sc.get("shift_at")),
            "fet": summarise(fe, sc.get("shift_at")), "fet_setup": fet_setup}


def main() -> None:
    spec_file, out_file = map(Path, sys.argv[1:3])
    spec = json.loads(spec_file.read_text())
    warnings.filterwarnings("ignore")  # NannyML's and pandas' deprecation chatter
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # NannyML reports usage online by default
    import alibi_detect
    import nannyml

    out = {"nannyml": nannyml.__version__, "alibi_detect": alibi_detect.__version__,
           "runs": spec["runs"], "p": spec["p"], "reference_rows": REFERENCE_ROWS,
           "scenarios": []}
    configured: dict = {}
    t0 = time.perf_counter()
    for sc in spec["scenarios"]:
        out["scenarios"].append(scenario(sc, spec_file.parent, spec, configured))
        print(f"baselines: {sc['name']!r} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    out_file.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
