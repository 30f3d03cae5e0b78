"""One chart of a zoo: every model, every pair's frontier and the chosen cascade.

:func:`write_cascade_report` writes ``cascade.png`` (accuracy vs mean cost per
row, log cost axis; each model a dot, each cost-ordered pair's Pareto frontier
a thin line, the chosen cascade a star; below, the share of rows each stage
answers), an ``index.html`` that embeds it with the cascade's table, and
``cascade.json`` (the cascade's record). Measured on the rows given, which
for ``ebjr cascade`` are the calibration rows (in-sample, as the table says).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ebjr._utils.json import dumps
from ebjr.calibration.chain import chain_points
from ebjr.evaluation.report import _img, _pct, _pyplot, _table
from ebjr.joint.cascade import Cascade

__all__ = ["plot_zoo", "write_cascade_report"]


def _pair_frontiers(outputs, labels, costs, router):
    """(cost, accuracy) along each cost-ordered pair's Pareto frontier."""
    right = {m: np.argmax(z, 1) == labels for m, z in outputs.items()}
    score = {m: np.asarray(router.score(z, validate=False), dtype=np.float64)
             for m, z in outputs.items()}
    for a, b in itertools.combinations(sorted(outputs, key=lambda m: costs[m]), 2):
        pts = chain_points([score[a]], [right[a], right[b]], [costs[a], costs[b]],
                           max_cells=512)
        front = pts.frontier()
        yield pts.cost[front], pts.correct[front] / pts.n


def plot_zoo(outputs: Mapping[str, np.ndarray], labels: np.ndarray, costs: Mapping[str, float],
             cascade: Cascade, path: str | Path, unit: str = "") -> Path:
    """The chart described in the module documentation."""
    plt = _pyplot()
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(8, 6.5), height_ratios=(4, 1))
    for i, (c, a) in enumerate(_pair_frontiers(outputs, labels, costs, cascade.router)):
        ax.plot(c, 100 * a, color="0.7", lw=0.7, label="every pair's frontier" if i == 0 else None)
    for m, z in outputs.items():
        acc = 100 * np.mean(np.argmax(z, 1) == labels)
        ax.plot(costs[m], acc, "o", color="tab:blue", ms=4)
        ax.annotate(m, (costs[m], acc), fontsize=6, xytext=(3, -3), textcoords="offset points")
    r = cascade.apply(outputs)
    ax.plot(r.cost.mean(), 100 * np.mean(r.predictions == labels), "*", color="tab:red", ms=14,
            label=f"cascade: {' -> '.join(cascade.stages)} ({cascade.combine})", zorder=5)
    if cascade.reference is not None:
        ref_acc = 100 * np.mean(np.argmax(outputs[cascade.reference], 1) == labels)
        ax.axhline(ref_acc, color="tab:blue", ls="--", lw=0.8,
                   label=f"reference {cascade.reference}")
    ax.set_xscale("log")
    ax.set_xlabel(f"mean cost per row{f' ({unit})' if unit else ''}")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    shares = r.stage_shares()
    left = 0.0
    for name, share in shares.items():
        bars.barh(0, share, left=left, label=f"{name}: {100 * share:.1f}%")
        left += share
    bars.set_xlim(0, 1)
    bars.set_yticks([])
    bars.set_xlabel("share of rows answered by each stage")
    bars.legend(fontsize=7, ncol=min(3, len(shares)), loc="upper center",
                bbox_to_anchor=(0.5, -0.6))
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_cascade_report(directory: str | Path, outputs: Mapping[str, np.ndarray],
                         labels: np.ndarray, costs: Mapping[str, float], cascade: Cascade,
                         unit: str = "") -> Path:
    """Write the chart, an HTML page and the cascade's JSON to ``directory``; returns the page."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    png = plot_zoo(outputs, labels, costs, cascade, d / "cascade.png", unit)
    r = cascade.apply(outputs)
    ref = cascade.reference
    last = len(cascade.thresholds)
    rows = [[name, f"{cascade.costs[i]:g}",  # type: ignore[index]
             f"{cascade.thresholds[i]:.6g}" if i < last else "(answers the rest)", _pct(share)]
            for i, (name, share) in enumerate(r.stage_shares().items())]
    facts = [["accuracy (in-sample)", _pct(float(np.mean(r.predictions == labels)))],
             ["mean cost per row", f"{r.cost.mean():.4g} {unit}"]]
    if ref is not None:
        facts += [[f"reference {ref}",
                   f"{_pct(float(np.mean(np.argmax(outputs[ref], 1) == labels)))} at "
                   f"{costs[ref]:g}: {costs[ref] / r.cost.mean():.2f}x the cascade's cost"]]
    target = cascade.details.get("target")
    if target:
        facts.append(["target", dumps(target)])
    if "certified" in cascade.details:
        facts.append(["certified", str(cascade.details["certified"])])
    page = (
        "<!doctype html><meta charset='utf-8'><title>ebjr cascade</title>"
        "<h1>ebjr cascade</h1>"
        f"<p>Router {html.escape(cascade.router.name)}, combine "  # type: ignore[union-attr]
        f"{html.escape(cascade.combine)}, {len(labels)} rows.</p>"
        + _table(["stage", "cost", "threshold", "answers"], rows)
        + _table(["", ""], facts)
        + f"<p>{_img(png)}</p>"
    )
    (d / "cascade.json").write_text(dumps(cascade.to_dict(), indent=2) + "\n", encoding="utf-8")
    index = d / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
