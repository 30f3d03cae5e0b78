"""Plots and an HTML report of an :class:`~ebjr.evaluation.Evaluation`.

Matplotlib runs on the Agg backend (no display needed). The report is one
self-contained HTML file with the plots embedded, next to the PNGs and a
``results.json`` holding the ``evaluate --json`` object.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from ebjr.bundle import dumps
from ebjr.calibration import Selection, TradeoffCurve
from ebjr.evaluation import Evaluation, mcnemar

__all__ = ["plot_score_histograms", "plot_tradeoff", "write_report"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _unit(ev: Evaluation) -> str:
    return f" ({ev.cost_unit})" if ev.cost_unit else ""


def plot_tradeoff(
    ev: Evaluation,
    path: str | Path,
    selection: Selection | None = None,
    title: str = "Accuracy vs cost",
) -> Path:
    """Accuracy-vs-cost curve of every router with the oracle, random and model points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, curve in ev.curves.items():
        style = {"lw": 2.2, "zorder": 3} if label.startswith("energy") else {"lw": 1.3}
        ax.plot(curve.cost, 100 * curve.accuracy, label=label, **style)
    cs, ct = ev.student_cost, ev.teacher_cost
    o = ev.oracle
    ax.plot(
        [cs + f * ct for f in o.fractions],
        [100 * a for a in o.accuracies],
        "k:",
        lw=1.5,
        label="oracle (upper bound)",
    )
    ax.plot(
        [cs, cs + ct],
        [100 * ev.student_accuracy, 100 * ev.teacher_accuracy],
        color="grey",
        ls="--",
        lw=1,
        label="random (expected)",
    )
    ax.scatter([cs], [100 * ev.student_accuracy], marker="o", s=60, c="tab:blue", zorder=5)
    ax.annotate(
        "student", (cs, 100 * ev.student_accuracy), textcoords="offset points", xytext=(6, -12)
    )
    ax.scatter([ct], [100 * ev.teacher_accuracy], marker="s", s=60, c="tab:red", zorder=5)
    ax.annotate(
        "teacher alone",
        (ct, 100 * ev.teacher_accuracy),
        textcoords="offset points",
        xytext=(-30, 8),
    )
    ax.axhline(100 * ev.teacher_accuracy, color="tab:red", lw=0.6, alpha=0.5)
    if selection is not None:
        p = selection.point
        ax.scatter(
            [p.cost],
            [100 * p.accuracy],
            marker="*",
            s=220,
            c="gold",
            edgecolors="k",
            zorder=6,
            label=f"chosen threshold {p.threshold:.4g}",
        )
    lo = min(100 * ev.student_accuracy, *(100 * c.accuracy.min() for c in ev.curves.values()))
    hi = 100 * max(o.best.accuracy, ev.teacher_accuracy)
    pad = max(0.5, 0.08 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"average cost per input{_unit(ev)}")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_score_histograms(
    curves: dict[str, TradeoffCurve],
    path: str | Path,
    thresholds: dict[str, float] | None = None,
) -> Path:
    """Score histograms of inputs the student gets right vs wrong, one panel per router.

    The paper's Fig. 4, on a common axis: each score is replaced by its rank
    among all inputs (the share of inputs with a lower score), so saturated
    confidences (softmax near 1) spread out and every panel reads the same way:
    a threshold at ``x`` sends a share ``x`` of the inputs to the teacher. A good
    score piles the student's errors on the left. The dashed line is the
    threshold (its value in the legend).
    """
    plt = _pyplot()
    labelled = {k: c for k, c in curves.items() if c.has_labels}
    k = max(1, len(labelled))
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (label, curve) in zip(axes.ravel(), labelled.items(), strict=False):
        student_correct = curve.correctness("a score histogram")[0]
        # mid-rank of each score among all inputs (ties share a rank): curve.scores is sorted
        lo = np.searchsorted(curve.scores, curve.scores, side="left")
        hi = np.searchsorted(curve.scores, curve.scores, side="right")
        rank = (lo + hi) / (2.0 * curve.n)
        right, wrong = rank[student_correct], rank[~student_correct]
        bins = np.linspace(0, 1, 41)
        ax.hist(right, bins=bins, density=True, alpha=0.55, label=f"student right ({right.size})")
        ax.hist(wrong, bins=bins, density=True, alpha=0.55, label=f"student wrong ({wrong.size})")
        if thresholds and label in thresholds and math.isfinite(thresholds[label]):
            x = np.searchsorted(curve.scores, thresholds[label], side="left") / curve.n
            ax.axvline(x, color="k", ls="--", lw=1.2, label=f"threshold {thresholds[label]:.4g}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("share of inputs with a lower score", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(labelled) :]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def router_rows(ev: Evaluation) -> list[list[str]]:
    """One row per router: teacher share and speed-up at the teacher's accuracy, AUC."""
    rows = []
    for label, curve in ev.curves.items():
        p = ev.at_teacher_accuracy[label]
        rows.append(
            [
                label,
                _pct(p.teacher_fraction),
                _pct(p.accuracy),
                f"{p.cost:.4g}",
                f"{p.speedup:.2f}x",
                f"{curve.auc():.4f}",
            ]
        )
    auc = float(np.trapezoid(ev.oracle.accuracies, ev.oracle.fractions))
    for name, o in [
        ("oracle (bound)", ev.oracle.at_teacher_accuracy),
        ("oracle, best point", ev.oracle.best),
    ]:
        rows.append(
            [
                name,
                _pct(o.teacher_fraction),
                _pct(o.accuracy),
                f"{o.cost:.4g}",
                f"{o.speedup:.2f}x",
                f"{auc:.4f}" if o is ev.oracle.at_teacher_accuracy else "",
            ]
        )
    if ev.random is not None:
        r = ev.random
        rows.append(
            [
                f"random ({r.seeds} seeds)",
                f"{_pct(r.teacher_fraction_mean)} ± {_pct(r.teacher_fraction_std)}",
                "",
                "",
                "",
                f"{r.auc_mean:.4f} ± {r.auc_std:.4f}",
            ]
        )
    return rows


def write_report(
    ev: Evaluation,
    out_dir: str | Path,
    *,
    selection: Selection | None = None,
    title: str = "ebjr evaluation",
    notes: list[str] | None = None,
) -> Path:
    """Write ``index.html`` (plots embedded), the PNGs and ``results.json`` to ``out_dir``.

    Returns:
        The path of ``index.html``.
    """
    from ebjr._utils.files import output_folder

    out = output_folder(out_dir)
    curve_png = plot_tradeoff(ev, out / "tradeoff.png", selection, title=title)
    thresholds = {k: p.threshold for k, p in ev.at_teacher_accuracy.items()}
    hist_png = plot_score_histograms(ev.curves, out / "score_histograms.png", thresholds)
    results = ev.to_json_dict()
    sig_rows = []
    if ev.student_pred is not None and ev.teacher_pred is not None and ev.labels is not None:
        for label in ev.curves:
            joint = ev.joint_predictions(label, ev.at_teacher_accuracy[label].threshold)
            m = mcnemar(joint, ev.teacher_pred, ev.labels)
            sig_rows.append(
                [
                    label,
                    f"{m.only_a}",
                    f"{m.only_b}",
                    f"{m.p_value:.3g}",
                    f"{m.odds_ratio:.3g}",
                    m.method,
                ]
            )
    results["significance_vs_teacher"] = {r[0]: {"p_value": float(r[3])} for r in sig_rows}
    (out / "results.json").write_text(dumps(results, indent=2) + "\n")
    unit = html.escape(ev.cost_unit or "cost units")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
        ".note{color:#555;font-size:0.92em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{ev.n} inputs. Student accuracy {_pct(ev.student_accuracy)} % at "
        f"{ev.student_cost:.4g} {unit}; teacher accuracy {_pct(ev.teacher_accuracy)} % at "
        f"{ev.teacher_cost:.4g} {unit}. Joint cost per input = student cost + teacher share "
        "x teacher cost.</p>",
    ]
    if selection is not None:
        p = selection.point
        parts.append(
            f"<h2>Chosen operating point</h2><p>Target <code>"
            f"{html.escape(dumps(selection.target))}</code>: threshold {p.threshold:.6g}, "
            f"teacher share {_pct(p.teacher_fraction)} %, accuracy {_pct(p.accuracy)} %, "
            f"cost {p.cost:.4g} {unit} ({p.speedup:.2f}x cheaper than the teacher alone), "
            "measured on the data this report was made from.</p>"
        )
    parts += [
        "<h2>Routers at the teacher's accuracy</h2>",
        "<p class='note'>The smallest teacher share whose joint accuracy reaches the "
        "teacher's on this data (in-sample). AUC: area under accuracy vs teacher share.</p>",
        _table(
            ["router", "teacher share %", "accuracy %", f"cost ({unit})", "speed-up", "AUC"],
            router_rows(ev),
        ),
        "<h2>Accuracy vs cost</h2>",
        _img(curve_png),
        "<h2>Score histograms: student right vs wrong</h2>",
        "<p class='note'>Inputs left of the dashed line (the threshold at the teacher's "
        "accuracy) go to the teacher. The less the two histograms overlap, the better the "
        "score routes.</p>",
        _img(hist_png),
    ]
    if sig_rows:
        parts += [
            "<h2>McNemar: joint model at the teacher's accuracy vs the teacher alone</h2>",
            _table(
                [
                    "router",
                    "joint right, teacher wrong",
                    "teacher right, joint wrong",
                    "p-value",
                    "odds ratio",
                    "test",
                ],
                sig_rows,
            ),
        ]
    if ev.skipped:
        parts.append(
            "<h2>Skipped routers</h2><ul>"
            + "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in ev.skipped.items()
            )
            + "</ul>"
        )
    for note in notes or []:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts))
    return index
