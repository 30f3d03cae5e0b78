"""Helpers for the batch-prediction tests (in process and on Ray): inputs written in
every supported form, and the check of an output table against the joint model."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def write_inputs(folder, x):
    """The same rows as .npy, .npz, parquet (list cells) and -- as 0-255 grey pixels -- PNGs."""
    np.save(folder / "x.npy", x)
    np.savez(folder / "x.npz", x=x, labels=np.zeros(len(x)))
    pq.write_table(pa.table({"pixels": [r.tolist() for r in x]}), folder / "x.parquet")
    images = folder / "images"
    images.mkdir()
    pixels = (x * 255).round().astype(np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p, mode="L").save(images / f"{i:04d}.png")
    return pixels.astype(np.float32)


def check(table, want, ids):
    np.testing.assert_array_equal(table["prediction"].to_numpy(), want.predictions.numpy())
    np.testing.assert_allclose(table["score"].to_numpy(), want.scores.numpy(), rtol=1e-6)
    assert table["answered_by"].to_pylist() == want.answered_by.tolist()
    probs = np.stack(table["probabilities"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(probs, want.probabilities.numpy(), atol=1e-6)
    assert table[table.column_names[0]].to_pylist() == ids
