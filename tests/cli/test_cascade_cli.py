"""``ebjr cascade``: files in, a cascade document (and a report) out, clear errors."""

import json

import numpy as np
import pytest

from ebjr import InputError
from ebjr.bundle.cascade import read_cascade, write_cascade
from ebjr.cli import main
from ebjr.exceptions import BundleError
from ebjr.joint.cascade import Cascade
from helpers import shared_file, synthetic_zoo


@pytest.fixture
def zoo_files(tmp_path):
    outputs, y, costs = synthetic_zoo(3000, seed=8)
    paths = []
    for name, z in outputs.items():
        paths.append(tmp_path / f"{name}.npz")
        np.savez(paths[-1], logits=z, labels=y)
    return paths, [costs[p.stem] for p in paths], outputs, y


def test_cascade_writes_a_document_that_applies_as_searched(zoo_files, tmp_path, capsys):
    paths, costs, outputs, y = zoo_files
    out = tmp_path / "c.json"
    argv = ["cascade", *map(str, paths), "--costs", *map(str, costs), "--max-drop", "0.02",
            "--confidence", "0.9", "-o", str(out), "--report", str(tmp_path / "rep")]
    assert main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "guarantee: " in text and f"cascade document: {out}" in text
    c = read_cascade(out)
    assert c.details["target"] == {"kind": "guaranteed_drop", "eps": 0.02, "delta": 0.1,
                                   "loss": "signed", "p_value": "exact", "seed": 0,
                                   "loss_range": None}
    from ebjr import search_cascade
    from ebjr.calibration.guarantee import GuaranteedDrop

    same = search_cascade(outputs, y, dict(zip(outputs, costs, strict=True)),
                          GuaranteedDrop(0.02, 0.1), progress=False)
    assert c == same
    assert np.array_equal(c.apply(outputs).predictions, same.apply(outputs).predictions)
    doc = json.loads(out.read_text())
    assert [s["source"] for s in doc["stages"]] == [str(tmp_path / f"{s}.npz") for s in c.stages]
    page = (tmp_path / "rep" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "(answers the rest)" in page
    assert (tmp_path / "rep" / "cascade.png").stat().st_size > 10_000


def test_cascade_on_the_public_cifar100_zoo_beats_the_best_routed_pair(tmp_path, capsys):
    names = {"shufflenetv2_x1_0": 45.09, "mobilenetv2_x0_75": 59.43, "mobilenetv2_x1_4": 170.23,
             "repvgg_a2": 1850.22}
    files = [str(shared_file(f"cifar100_{m}.npz")) for m in names]
    out = tmp_path / "c.json"
    assert main(["cascade", *files, "--costs", *map(str, names.values()), "--cost-unit",
                 "MAdds", "--teacher-accuracy", "-o", str(out)]) == 0
    c = read_cascade(out)
    assert main(["cascade", *files, "--costs", *map(str, names.values()), "--teacher-accuracy",
                 "--max-stages", "2", "--combine", "last", "-o", str(tmp_path / "pair.json")]) == 0
    p = read_cascade(tmp_path / "pair.json")
    capsys.readouterr()
    assert len(c.stages) == 3 and c.combine == "mean"
    assert c.details["calibration_cost"] < 0.5 * p.details["calibration_cost"]
    assert c.details["calibration_accuracy"] >= c.details["reference_accuracy"]


def test_cascade_errors_name_what_is_wrong(zoo_files, tmp_path, capsys):
    paths, costs, _, _ = zoo_files
    out = str(tmp_path / "c.json")
    other = tmp_path / "sub"
    other.mkdir()
    np.savez(other / "m0.npz", logits=np.zeros((3000, 10), np.float32))
    short = tmp_path / "short.npz"
    np.savez(short, logits=np.zeros((10, 10), np.float32))
    files = list(map(str, paths))
    cases = [
        (["cascade", *files, "--costs", "1", "2", "--teacher-accuracy", "-o", out],
         "--costs gives 2 costs for 4 files"),
        (["cascade", *files, str(other / "m0.npz"), "--costs", *map(str, [*costs, 1]),
          "--teacher-accuracy", "-o", out], "both named 'm0'"),
        (["cascade", *files, str(short), "--costs", *map(str, [*costs, 1]),
          "--teacher-accuracy", "-o", out], "short"),
        (["cascade", *files, "--costs", *map(str, costs), "--max-cost", "0.1", "-o", out],
         "cheapest model, 'm0', alone costs 1"),
        (["cascade", *files, "--costs", *map(str, costs), "--teacher-accuracy", "--reference",
          "m7", "-o", out], "reference 'm7'"),
        (["cascade", *files, "--costs", *map(str, costs), "--teacher-accuracy", "--router",
          "energy", "-o", out], "combine='mean'"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert match in capsys.readouterr().err, argv


def test_cascade_documents_are_checked_on_read(tmp_path):
    c = Cascade(("a", "b", "c"), (0.5, np.inf), costs=(1, 2, 4), router="softmax")
    path = write_cascade(c, tmp_path / "c.json")
    back = read_cascade(path)
    assert back.stages == c.stages and back.thresholds[0] == 0.5
    assert back.thresholds[1] > 1e308  # +inf travels as the largest double: routes the same
    doc = json.loads(path.read_text())
    for change, match in [
        (lambda d: d.update(schema_version=9), "schema_version"),
        (lambda d: d["stages"][0].pop("threshold"), "needs a threshold"),
        (lambda d: d["stages"][2].update(threshold=0.1), "the last has none"),
        (lambda d: d.update(combine="vote"), "combine"),
        (lambda d: d["stages"][1].update(cost=-1.0), "stages.1.cost"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["router"].update(name="nope"), "nope"),
    ]:
        bad = json.loads(path.read_text())
        change(bad)
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(bad))
        with pytest.raises(BundleError, match=match):
            read_cascade(p)
    (tmp_path / "nan.json").write_text(path.read_text().replace("0.5", "NaN"))
    with pytest.raises(BundleError, match="not strict JSON"):
        read_cascade(tmp_path / "nan.json")
    assert doc["format"] == "ebjr.cascade"
    with pytest.raises(InputError):
        Cascade(("a",), (0.1,))
