"""Batch prediction of a saved joint model over files, in this process (``ebjr predict``).

The output is one parquet file, a row per input row, in input order:
``row`` (the row number) or ``path`` (for image folders), ``prediction`` (a class; a
regressor's value), ``score``, ``answered_by`` (``student`` or ``teacher``; a cascade's
stage names) and, for a classification, ``probabilities`` (a fixed-size list per row):
the task kind's columns (``TaskKind.columns_for``). :mod:`ebjr.ray.data` writes
the same file from a Ray Dataset, through the same :class:`PredictionWriter`.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr._utils.files import AtomicWriter
from ebjr._utils.validation import check_int
from ebjr.bundle.inputs import open_inputs
from ebjr.exceptions import InputError, missing_dependency
from ebjr.joint.cascade_model import CascadeModel

__all__ = ["PredictionWriter", "predict_file"]


class PredictionWriter:
    """Streams prediction batches into one parquet file (``id_name`` is ``row`` or ``path``)."""

    def __init__(self, output: str | Path, id_name: str = "row", inputs: tuple = ()) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise missing_dependency("pyarrow", "predict", "writing parquet") from exc
        self._pa, self._pq = pa, pq
        self.output = Path(output)
        if self.output.suffix.lower() != ".parquet":
            raise InputError(f"the output must be a .parquet file, got {str(self.output)!r}")
        # written beside the output, renamed over it once whole (close); never an input
        self._file = AtomicWriter(self.output, "output", inputs)
        self.id_name = id_name
        self._writer: Any = None
        self.rows = 0
        self.teacher_rows = 0
        self.answered: dict[str, int] = {}

    def write(self, ids: list[Any], scores: Any, answered_by: Any,
              answer: dict[str, Any]) -> None:
        """One batch: its row ids, routing scores, who answered, and the answer's columns
        (``TaskKind.columns_for``: ``prediction``, maybe ``probabilities``), in that order
        in the file."""
        pa = self._pa
        answered = np.asarray(answered_by).astype(str)
        columns = {
            self.id_name: pa.array(ids, type=pa.int64() if self.id_name == "row" else pa.string()),
            "prediction": pa.array(np.asarray(answer["prediction"])),
            "score": pa.array(np.asarray(to_numpy(scores), dtype=np.float64)),
            "answered_by": pa.array(answered.tolist(), type=pa.string()),
        }
        for name, values in answer.items():
            if name == "prediction":
                continue
            a = np.ascontiguousarray(values)  # a fixed-size list per row
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)),
                                                              a.shape[1])
        table = pa.table(columns)
        if self._writer is None:
            self._writer = self._pq.ParquetWriter(self._file.temp, table.schema)
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise self._file.error(exc) from None
        self.rows += len(ids)
        self.teacher_rows += int((answered == "teacher").sum())
        labels, counts = np.unique(answered, return_counts=True)
        for label, c in zip(labels.tolist(), counts.tolist(), strict=True):
            self.answered[label] = self.answered.get(label, 0) + int(c)

    def abort(self) -> None:
        """Drop what was written: the output stays as it was."""
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
        self._file.discard()

    def close(self) -> dict[str, Any]:
        """Finish the file and move it into place."""
        if self._writer is None:  # no rows: no file (as the input had nothing to predict)
            self._file.discard()
            return self._summary()
        try:
            self._writer.close()
        except OSError as exc:
            self._file.discard()
            raise self._file.error(exc) from None
        self._file.commit()
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "rows": self.rows,
            "teacher_rows": self.teacher_rows,
            "teacher_fraction": self.teacher_rows / self.rows if self.rows else 0.0,
            "answered_by": dict(sorted(self.answered.items())),
        }


def predict_file(
    bundle_path: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    column: str | None = None,
    batch_size: int = 256,
    allow_factories: list[str] | None = None,
    allow_torchscript: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the joint model (or the cascade) of ``bundle_path`` over ``input_path`` into
    ``output`` (parquet).

    Returns the output's path, its rows, the rows and share the teacher answered, the rows
    each ``answered_by`` label got, and for a cascade its ``stages``.
    """
    from tqdm.auto import tqdm

    from ebjr.bundle import persist

    check_int(batch_size, "batch_size", 1)
    joint = persist.load(bundle_path, allow_factories=allow_factories,
                         allow_torchscript=allow_torchscript)
    source = open_inputs(input_path, joint.bundle, column)  # type: ignore[attr-defined]
    writer = PredictionWriter(output, "path" if source.kind == "images" else "row",
                              inputs=(bundle_path, input_path))
    total = math.ceil(len(source) / batch_size)
    bar = tqdm(source.batches(batch_size), total=total, unit="batch", desc="predict",
               disable=not progress or None)
    try:
        for ids, rows in bar:
            p = joint.predict(rows)
            writer.write(ids, p.scores, p.answered_by, joint.task.columns_for(p))
    except BaseException:
        writer.abort()
        raise
    summary = writer.close()
    if isinstance(joint, CascadeModel):
        summary["stages"] = list(joint.stages)
    return summary
