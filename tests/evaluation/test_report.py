import json

import numpy as np
from PIL import Image

from ebjr.calibration import MaxDrop, select_threshold
from ebjr.evaluation import evaluate
from ebjr.evaluation.report import plot_score_histograms, plot_tradeoff, write_report
from helpers import synthetic


def test_report_files(tmp_path):
    s, t, y = synthetic(500)
    ev = evaluate(s, t, y, student_cost=1, teacher_cost=3, cost_unit="ms", random_seeds=3)
    sel = select_threshold(ev.curves["energy"], MaxDrop(0.01))
    index = write_report(ev, tmp_path, selection=sel, notes=["a note"])
    html = index.read_text()
    assert "Chosen operating point" in html and "a note" in html and "oracle (bound)" in html
    assert "random (3 seeds)" in html
    for png in ["tradeoff.png", "score_histograms.png"]:
        with Image.open(tmp_path / png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
            # not a blank canvas: a plot has many distinct colours
            assert len(np.unique(np.asarray(im.convert("L")))) > 20
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["significance_vs_teacher"]["energy"]["p_value"] <= 1.0


def test_plots_accept_single_router(tmp_path):
    s, t, y = synthetic(100)
    ev = evaluate(s, t, y, ["softmax"], random_seeds=0)
    assert plot_tradeoff(ev, tmp_path / "a.png").is_file()
    assert plot_score_histograms(ev.curves, tmp_path / "b.png").is_file()
