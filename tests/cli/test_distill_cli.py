import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import ebjr
from ebjr.cli import main
from ebjr.exceptions import InputError
from ebjr.training import train_classifier
from ebjr.training.sources import load_inputs
from ebjr.zoo.digits import make_teacher


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """A small CNN teacher trained on the digits, saved as a state dict, and unlabelled data."""
    d = tmp_path_factory.mktemp("distill")
    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 8, 8) / 16.0).astype(np.float32)
    torch.manual_seed(0)
    teacher = make_teacher(width=4)
    train_classifier(
        teacher, x[:1000], y[:1000], x[1000:1200], y[1000:1200], epochs=8, progress=False
    )
    torch.save(teacher.state_dict(), d / "teacher.pt")
    np.savez(d / "pool.npz", x=x[1000:])  # unlabelled: no 'labels' key at all
    return d


def argv_tail(d):
    return [
        "--teacher",
        "ebjr.zoo.digits:make_teacher",
        "--teacher-kwargs",
        '{"width": 4}',
        "--teacher-weights",
        str(d / "teacher.pt"),
        "--data",
        str(d / "pool.npz"),
        "--student",
        "ebjr.zoo.digits:make_student",
        "--epochs",
        "15",
        "--max-disagreement",
        "0.05",
        "--confidence",
        "0.9",
    ]


def test_distill_cli_writes_a_loadable_bundle(teacher_files, tmp_path, capsys):
    out = tmp_path / "distilled.json"
    code = main(["distill", *argv_tail(teacher_files), "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    before, after = (
        float(v)
        for v in printed.split("held-out KL to the teacher: ")[1].split(" nats")[0].split(" -> ")
    )
    assert after < before
    joint = ebjr.load(out)  # ebjr.* factories are trusted by default
    assert joint.bundle.target["loss"] == "disagreement"
    assert joint.bundle.costs["unit"] == "FLOPs"
    # seeded: the same command gives the same student and threshold
    again = tmp_path / "again.json"
    assert main(["distill", *argv_tail(teacher_files), "-o", str(again)]) == 0
    assert ebjr.load(again).threshold == joint.threshold
    x = torch.as_tensor(np.load(teacher_files / "pool.npz")["x"][:64])
    assert joint.predict(x).predictions.shape == (64,)


def test_inputs_from_a_folder_of_images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    x = load_inputs(tmp_path)
    assert x.shape == (5, 8, 8) and x.dtype == np.float32 and x.max() <= 1.0
    Image.fromarray(np.zeros((9, 9), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(InputError, match="differ in size"):
        load_inputs(tmp_path)


def test_distill_cli_errors(tmp_path, capsys, teacher_files):
    np.save(tmp_path / "tiny.npy", np.zeros((10, 8, 8), dtype=np.float32))
    cases = [
        (["--data", str(tmp_path / "none.npz")], "data not found"),
        (["--data", str(tmp_path / "tiny.npy")], "at least 50 inputs"),
        (
            ["--data", str(teacher_files / "pool.npz"), "--student", "nowhere:make"],
            "cannot import the factory 'nowhere:make'",
        ),
        (
            ["--data", str(teacher_files / "pool.npz"), "--student-kwargs", "[1]"],
            "must be a JSON object",
        ),
    ]
    for extra, match in cases:
        argv = [
            "distill",
            "--teacher",
            "ebjr.zoo.digits:make_teacher",
            "--student",
            "ebjr.zoo.digits:make_student",
            "-o",
            str(tmp_path / "b.json"),
            *extra,
        ]
        assert main(argv) == 2, extra
        assert match in capsys.readouterr().err
