"""Inputs from files, shaped by a bundle's input record, for batch prediction.

A bundle may record its input (``bundle.input``: ``shape`` per row
and ``datatype``, as ``ebjr serve`` reads it). Batch prediction reads:

- ``.npy``: an array whose first axis is the rows (memory-mapped);
- ``.npz``: the array named ``column`` (default: the only array, or ``x``);
- ``.parquet``: the column ``column`` (default ``data``), each cell a row
  (a list, or a tensor column as Ray Data writes it);
- a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``,
  ``.webp``): each image decoded to 0-255 pixels, converted to the record's
  channels (grey for ``[H, W]`` or one channel, RGB for three), resized to
  its height and width, laid out as the record says (``[H, W, C]`` or
  ``[C, H, W]``), preprocessed as the record says (``(pixels * pixel_scale -
  mean) / std``; a model trained on 0-1 pixels needs ``pixel_scale: 1/255``)
  and cast to its datatype. Images need the input record.

Rows are then checked against the record's shape when there is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ebjr.exceptions import InputError, missing_dependency

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagePreprocessing",
    "InputSource",
    "check_finite_rows",
    "image_files",
    "images_to_rows",
    "input_record",
    "open_inputs",
    "rows_of_cells",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

_NUMPY_TYPES = {
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
}


@dataclass(frozen=True)
class ImagePreprocessing:
    """How decoded pixels (0-255) become a row: ``(pixels * scale - mean) / std`` per channel
    (the bundle's input record: ``pixel_scale``, ``mean``, ``std``). The default leaves the
    pixels as they are."""

    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def of(cls, bundle: Any) -> ImagePreprocessing:
        spec = (bundle.input if bundle is not None else None) or {}
        mean = tuple(float(v) for v in spec.get("mean") or (0.0,))
        std = tuple(float(v) for v in spec.get("std") or (1.0,))
        return cls(float(spec.get("pixel_scale") or 1.0), mean, std)

    def apply(self, pixels: np.ndarray, channels_first: bool) -> np.ndarray:
        """``pixels`` (rows x image, HW, HWC or CHW) as float32 rows."""
        out = pixels.astype(np.float32) * np.float32(self.scale)
        if self.mean == (0.0,) and self.std == (1.0,):
            return out
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        channels = out.shape[1] if channels_first else (out.shape[-1] if out.ndim == 4 else 1)
        for name, v in (("mean", mean), ("std", std)):
            if v.size not in (1, channels):
                raise InputError(f"the bundle's input record gives {v.size} {name} values for "
                                 f"images of {channels} channels: give one, or one per channel")
        if channels_first and out.ndim == 4:
            mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
        return (out - mean) / std


def input_record(bundle: Any) -> tuple[tuple[int, ...] | None, np.dtype]:
    """The bundle's per-row input shape (``None`` if unrecorded) and numpy dtype (FP32 default)."""
    spec = bundle.input or {}
    shape = spec.get("shape")
    dtype = np.dtype(_NUMPY_TYPES.get(spec.get("datatype", "FP32"), np.float32))
    return (tuple(int(d) for d in shape) if isinstance(shape, list) else None), dtype


def _image_layout(shape: tuple[int, ...] | None) -> tuple[str, int, int, bool]:
    """(PIL mode, height, width, channels first) for rows of ``shape``."""
    if shape is None:
        raise InputError(
            "images need the bundle's input record (its 'input' shape and datatype) to be "
            "turned into rows; save the bundle with bundle.input = {'shape': [...], "
            "'datatype': ...}, or convert the images to a .npy file yourself"
        )
    if len(shape) == 2:
        return "L", shape[0], shape[1], False
    if len(shape) == 3 and shape[2] in (1, 3):
        return ("L" if shape[2] == 1 else "RGB"), shape[0], shape[1], False
    if len(shape) == 3 and shape[0] in (1, 3):
        return ("L" if shape[0] == 1 else "RGB"), shape[1], shape[2], True
    raise InputError(
        f"the bundle's input shape {list(shape)} is not an image layout; expected [H, W], "
        "[H, W, 1|3] or [1|3, H, W]"
    )


def images_to_rows(images: list[Any], shape: tuple[int, ...] | None, dtype: np.dtype,
                   preprocessing: ImagePreprocessing | None = None) -> np.ndarray:
    """PIL images (or HWC/HW uint8 arrays) as model rows of ``shape`` and ``dtype``, through
    the record's ``preprocessing`` (every path that decodes images calls this)."""
    from PIL import Image

    mode, h, w, channels_first = _image_layout(shape)
    rows = []
    for img in images:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8).squeeze())
        img = img.convert(mode)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        a = np.asarray(img)
        if mode == "RGB" and channels_first:
            a = a.transpose(2, 0, 1)
        rows.append(a.reshape(shape))  # type: ignore[arg-type]
    pixels = np.stack(rows)
    if preprocessing is not None and preprocessing != ImagePreprocessing():
        pixels = preprocessing.apply(pixels, channels_first)
    return pixels.astype(dtype, copy=False)


def image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder`` (and below), sorted by path."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"{str(folder)!r} holds no images (expected files ending in {list(IMAGE_SUFFIXES)})"
        )
    return files


class InputSource:
    """Rows of one input file or folder, read in batches without loading it all.

    ``ids`` name the rows in the output (row numbers, or image paths).
    """

    def __init__(self, path: str | Path, bundle: Any, column: str | None = None) -> None:
        self.path = Path(path)
        self.shape, self.dtype = input_record(bundle)
        self.preprocessing = ImagePreprocessing.of(bundle)
        self.kind = self._kind()
        self.column = column
        self._array: Any = None
        self._files: list[Path] = []
        self._table: Any = None
        if self.kind == "npy":
            self._array = np.load(self.path, mmap_mode="r")
        elif self.kind == "npz":
            with np.load(self.path) as z:
                names = list(z.files)
                name = column or (names[0] if len(names) == 1 else "x" if "x" in names else None)
                if name not in names:
                    raise InputError(
                        f"{str(self.path)!r} holds arrays {names}; name the input with "
                        f"--column (got {column!r})"
                    )
                self._array = z[name]
        elif self.kind == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise missing_dependency("pyarrow", "predict", "reading parquet") from exc
            name = column or "data"
            pf = pq.ParquetFile(self.path)
            if name not in pf.schema_arrow.names:
                raise InputError(
                    f"{str(self.path)!r} has columns {pf.schema_arrow.names}; name the input "
                    f"with --column (got {name!r})"
                )
            self._table = pf
            self.column = name
        else:
            self._files = image_files(self.path)
            _image_layout(self.shape)  # a bundle without an image record fails now
        if self._array is not None:
            self._check(self._array.shape[1:])

    def _kind(self) -> str:
        p = self.path
        if p.is_dir():
            return "images"
        if not p.is_file():
            raise InputError(f"input {str(p)!r} does not exist")
        kind = p.suffix.lower().lstrip(".")
        if kind not in ("npy", "npz", "parquet"):
            raise InputError(
                f"input {str(p)!r}: expected a .npy, .npz or .parquet file or a folder of "
                f"images, got {p.suffix!r}"
            )
        return kind

    def _check(self, row_shape: tuple[int, ...]) -> None:
        if self.shape is not None and tuple(row_shape) != self.shape:
            raise InputError(
                f"input {str(self.path)!r}: rows of shape {list(row_shape)}, but the bundle's "
                f"input record says {list(self.shape)}"
            )

    def __len__(self) -> int:
        if self._array is not None:
            return int(self._array.shape[0])
        if self._table is not None:
            return int(self._table.metadata.num_rows)
        return len(self._files)

    def batches(self, size: int) -> Iterator[tuple[list[Any], np.ndarray]]:
        """``(ids, rows)`` in order, ``size`` rows at a time.

        Raises:
            InputError: a row holds NaN or infinity (named by its id): the input's fault,
                not the model's.
        """
        for ids, rows in self._batches(size):
            check_finite_rows(rows, ids, self.path)
            yield ids, rows

    def _batches(self, size: int) -> Iterator[tuple[list[Any], np.ndarray]]:
        if self._array is not None:
            for a in range(0, len(self), size):
                b = min(a + size, len(self))
                yield list(range(a, b)), np.array(self._array[a:b])  # a copy: writable
        elif self._table is not None:
            start = 0
            for rb in self._table.iter_batches(batch_size=size, columns=[self.column]):
                rows = rows_of_cells(rb.column(0).to_pylist(), self.dtype)
                self._check(rows.shape[1:])
                yield list(range(start, start + len(rows))), rows
                start += len(rows)
        else:
            from PIL import Image

            for a in range(0, len(self._files), size):
                files = self._files[a : a + size]
                images = []
                for f in files:
                    with Image.open(f) as im:
                        im.load()
                        images.append(im.copy())
                yield [str(f) for f in files], images_to_rows(images, self.shape, self.dtype,
                                                              self.preprocessing)


def check_finite_rows(rows: np.ndarray, ids: list[Any], source: Any) -> None:
    """Refuse NaN or infinity in input rows, naming the file and the first bad row."""
    if rows.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"input {str(source)!r}: row {ids[first]!r} holds NaN or infinity "
            f"({int(bad.sum())} such rows in this batch); models take finite numbers only"
        )


def rows_of_cells(cells: Any, dtype: Any = None) -> np.ndarray:
    """Parquet cells (nested lists, or object arrays of arrays as Ray Data gives them) as
    one numeric array of rows, cast to ``dtype`` if given."""

    def numeric(c: Any) -> np.ndarray:
        if isinstance(c, list | tuple) or (isinstance(c, np.ndarray) and c.dtype == object):
            return np.stack([numeric(e) for e in c]) if len(c) else np.zeros(0)
        return np.asarray(c)

    try:
        rows = np.stack([numeric(c) for c in cells])
    except ValueError as exc:
        raise InputError(f"the input column's rows differ in shape: {exc}") from None
    return rows if dtype is None else rows.astype(dtype, copy=False)


def open_inputs(path: str | Path, bundle: Any, column: str | None = None) -> InputSource:
    """The rows at ``path`` for ``bundle`` (see the module's docstring for what is read)."""
    return InputSource(path, bundle, column)
