"""``ebjr predict`` in this process: files of inputs in, one parquet file out, row for row
what :meth:`JointModel.predict` gives."""

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet", reason="pip install 'ebjr[predict]'")
Image = pytest.importorskip("PIL.Image", reason="pip install 'ebjr[predict]'")

import pyarrow as pa  # noqa: E402

import ebjr  # noqa: E402
from ebjr.bundle.inputs import images_to_rows  # noqa: E402
from ebjr.bundle.predict import predict_file  # noqa: E402
from ebjr.cli import main  # noqa: E402
from ebjr.exceptions import InputError  # noqa: E402
from predict_support import check, write_inputs  # noqa: E402
from serve_support import make_serve_bundle, random_rows  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("predict")))


def test_every_input_kind_gives_the_joint_models_answers_in_order(bundle, tmp_path):
    x = random_rows(300, seed=2)
    pixels = write_inputs(tmp_path, x)
    joint = ebjr.load(bundle)
    want, want_px = joint.predict(x), joint.predict(pixels)
    for name, column in (("x.npy", None), ("x.npz", None), ("x.parquet", "pixels")):
        out = predict_file(bundle, tmp_path / name, tmp_path / f"{name}.parquet",
                           column=column, batch_size=64, progress=False)
        assert out["rows"] == 300
        assert out["teacher_rows"] == int((want.answered_by == "teacher").sum())
        check(pq.read_table(out["output"]), want, list(range(300)))
    out = predict_file(bundle, tmp_path / "images", tmp_path / "img.parquet", batch_size=50,
                       progress=False)
    files = sorted(str(p) for p in (tmp_path / "images").iterdir())
    check(pq.read_table(out["output"]), want_px, files)


def test_images_are_laid_out_as_the_input_record_says():
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    img = Image.fromarray(rgb, mode="RGB")
    hwc = images_to_rows([img], (4, 6, 3), np.dtype(np.uint8))
    np.testing.assert_array_equal(hwc[0], rgb)
    chw = images_to_rows([img], (3, 4, 6), np.dtype(np.float32))
    np.testing.assert_array_equal(chw[0], rgb.transpose(2, 0, 1).astype(np.float32))
    small = images_to_rows([img], (2, 3, 3), np.dtype(np.uint8))  # resized
    assert small.shape == (1, 2, 3, 3)
    with pytest.raises(InputError, match="not an image layout"):
        images_to_rows([img], (5, 4, 6), np.dtype(np.uint8))
    with pytest.raises(InputError, match="input record"):
        images_to_rows([img], None, np.dtype(np.uint8))


def test_the_command_line_writes_the_same_file(bundle, tmp_path, capsys):
    x = random_rows(100, seed=4)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", bundle, str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.parquet"),
                 "--no-progress", "--json"]) == 0
    assert '"rows": 100' in capsys.readouterr().out
    check(pq.read_table(tmp_path / "o.parquet"), ebjr.load(bundle).predict(x), list(range(100)))


@pytest.mark.parametrize(("make", "column", "output", "message"), [
    (lambda d: np.save(d / "in.npy", np.zeros((3, 8, 7), np.float32)), None, "o.parquet",
     "rows of shape [8, 7], but the bundle's input record says [8, 8]"),
    (lambda d: np.savez(d / "in.npz", a=np.zeros((3, 8, 8)), b=np.zeros(3)), None, "o.parquet",
     "holds arrays ['a', 'b']; name the input with --column"),
    (lambda d: pq.write_table(pa.table({"x": [[0.0] * 64]}), d / "in.parquet"), None,
     "o.parquet", "has columns ['x']; name the input with --column (got 'data')"),
    (lambda d: np.save(d / "in.npy", np.zeros((3, 8, 8), np.float32)), None, "o.csv",
     "the output must be a .parquet file"),
    (lambda d: (d / "in.txt").write_text("1 2 3"), None, "o.parquet",
     "expected a .npy, .npz or .parquet file or a folder of images, got '.txt'"),
    (lambda d: (d / "in").mkdir(), None, "o.parquet", "holds no images"),
])
def test_bad_inputs_are_refused_with_what_was_expected(bundle, tmp_path, capsys, make, column,
                                                        output, message):
    make(tmp_path)
    src = next(p for p in tmp_path.iterdir() if p.name.startswith("in"))
    args = ["predict", bundle, str(src), "-o", str(tmp_path / output), "--no-progress"]
    assert main(args + (["--column", column] if column else [])) == 2
    assert message in capsys.readouterr().err


def test_images_are_preprocessed_as_the_input_record_says_so_files_equal_arrays(bundle, tmp_path):
    """A model trained on 0-1 pixels: with ``pixel_scale: 1/255`` in its record, a folder of
    PNGs gives the answers the same images give as a 0-1 array (without it, the 0-255 pixels
    would reach the model unscaled)."""
    import json
    from pathlib import Path

    doc = json.loads(Path(bundle).read_text())
    doc["input"]["pixel_scale"] = 1 / 255
    scaled = Path(bundle).with_name("scaled.json")
    scaled.write_text(json.dumps(doc))
    x = random_rows(120, seed=5)
    pixels = write_inputs(tmp_path, x)
    joint = ebjr.load(scaled)
    want = joint.predict(pixels / np.float32(255))  # the same images, as an array of 0-1 rows
    out = predict_file(scaled, tmp_path / "images", tmp_path / "img.parquet", progress=False)
    check(pq.read_table(out["output"]), want, sorted(str(p) for p in (tmp_path / "images")
                                                     .iterdir()))
    unscaled = joint.predict(pixels)
    assert not np.array_equal(unscaled.predictions.numpy(), want.predictions.numpy())


def test_mean_and_std_apply_per_channel_in_either_layout():
    from ebjr.bundle.inputs import ImagePreprocessing

    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    img = Image.fromarray(rgb, mode="RGB")
    prep = ImagePreprocessing(1 / 255, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    want = (rgb / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    hwc = images_to_rows([img], (4, 6, 3), np.dtype(np.float32), prep)[0]
    np.testing.assert_allclose(hwc, want, rtol=1e-5)
    chw = images_to_rows([img], (3, 4, 6), np.dtype(np.float32), prep)[0]
    np.testing.assert_allclose(chw, want.transpose(2, 0, 1), rtol=1e-5)
    grey = images_to_rows([img.convert("L")], (4, 6), np.dtype(np.float32),
                          ImagePreprocessing(1 / 255, (0.5,), (0.25,)))[0]
    np.testing.assert_allclose(grey, (np.asarray(img.convert("L")) / 255 - 0.5) / 0.25,
                               rtol=1e-5)
    with pytest.raises(InputError, match="2 mean values for images of 3 channels"):
        images_to_rows([img], (4, 6, 3), np.dtype(np.float32),
                       ImagePreprocessing(1.0, (0.1, 0.2), (1.0,)))


@pytest.mark.parametrize(("field", "value"), [("pixel_scale", 0.0), ("std", [0.0]),
                                              ("mean", []), ("pixel_scale", "1/255")])
def test_bad_preprocessing_records_are_refused_naming_the_field(bundle, field, value):
    import json
    from pathlib import Path

    from ebjr.exceptions import BundleError

    doc = json.loads(Path(bundle).read_text())
    doc["input"][field] = value
    bad = Path(bundle).with_name(f"bad-{field}.json")
    bad.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=f"input.{field}"):
        ebjr.load(bad)


@pytest.mark.integration
def test_the_quickstart_bundle_answers_digit_files_as_it_answers_digit_arrays(
        quickstart_bundle, tmp_path):
    """The user's report: the quickstart's digits as PNG files scored 0.43 (0-255 pixels
    into a model trained on 0-1); its input record now scales them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images / 16.0 * 255).astype(np.uint8)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p, mode="L").save(folder / f"{i:04d}.png")
    np.save(tmp_path / "digits.npy", (pixels / np.float32(255)).astype(np.float32))
    files = predict_file(quickstart_bundle, folder, tmp_path / "f.parquet", progress=False)
    arrays = predict_file(quickstart_bundle, tmp_path / "digits.npy", tmp_path / "a.parquet",
                          progress=False)
    by_file = pq.read_table(files["output"])["prediction"].to_numpy()
    by_array = pq.read_table(arrays["output"])["prediction"].to_numpy()
    np.testing.assert_array_equal(by_file, by_array)
    assert np.mean(by_file == digits.target) > 0.9
    assert files["teacher_rows"] == arrays["teacher_rows"] > 0
