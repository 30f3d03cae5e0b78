"""Cascaded batch inference over a Ray Dataset.

:func:`joint_map_batches` adds two ``map_batches`` stages to a dataset, each
with actors that hold one model and their own concurrency and batch size:

1. the **student stage** runs the student over every row: its score, the
   routing mask (``score < threshold``, the bundle's threshold) and the
   student's answer (in the teacher's label space);
2. the **teacher stage** runs the teacher over the routed rows of each of its
   batches only, and puts its answers in their place.

Each output row gets ``prediction``, ``probabilities``, ``score`` and
``answered_by`` (``student`` / ``teacher``): row for row what
:meth:`JointModel.predict` gives. The teacher stage's batches hold rows of
the stream, of which only the routed share reaches the teacher; its batch
size is therefore chosen so that the teacher sees about ``teacher_batch_size``
rows per call at the bundle's calibrated teacher share.

:func:`predict_files` is ``ebjr predict BUNDLE INPUT --ray``: it reads
``.npy`` / ``.npz`` / ``.parquet`` files or an image folder into a dataset,
runs the two stages, and streams the results, in input order, into one
parquet file (the same columns as the in-process ``ebjr predict``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from ebjr._utils.validation import check_int
from ebjr.exceptions import InputError, missing_dependency

try:
    import ray
    import ray.data
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise missing_dependency("ray", "ray", "ebjr.ray.data") from _exc

from ebjr._utils.arrays import to_numpy
from ebjr.joint.functional import take_rows
from ebjr.serve.process import prepare_process

__all__ = ["joint_map_batches", "predict_files", "read_inputs"]

class _StudentStage:
    """Holds the student (and the router and threshold); routes every row."""

    def __init__(self, bundle: str, column: str, trust: dict[str, Any],
                 setup: dict[str, Any]) -> None:
        from ebjr.bundle import persist

        prepare_process(**setup)
        self.joint = persist.load(bundle, student_side=True, **trust)
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = _column(batch, self.column)
        routed = self.joint.route(x)
        answer = self.joint.merge(routed, None)  # the student's answer for every row
        out = dict(batch)
        out.update(self.joint.task.columns_for(answer))
        out["score"] = np.asarray(to_numpy(routed.scores), dtype=np.float64)
        out["_to_teacher"] = np.asarray(to_numpy(routed.to_teacher), dtype=bool)
        return out


class _TeacherStage:
    """Holds the teacher; answers the routed rows of each batch, passes the rest through."""

    def __init__(self, bundle: str, column: str, trust: dict[str, Any],
                 setup: dict[str, Any], keep_input: bool, on_teacher_batch: Any) -> None:
        from ebjr.bundle import persist

        prepare_process(**setup)
        self.teacher, record = persist.load_model(bundle, "teacher", **trust)
        self.task = record.make_task()
        self.column = column
        self.keep_input = keep_input
        self.on_teacher_batch = on_teacher_batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = np.asarray(batch["_to_teacher"], dtype=bool)
        routed = np.flatnonzero(mask)
        out = {k: v for k, v in batch.items() if k != "_to_teacher"}
        if routed.size:
            rows = take_rows(_column(batch, self.column), routed)
            t_out = self.task.check_output(self.teacher.forward(rows), routed.size, "teacher")
            if self.on_teacher_batch is not None:
                self.on_teacher_batch(int(routed.size))
            # the teacher's answer columns written over the routed rows' (every task kind's
            # answer travels between the stages as its columns)
            for name, values in self.task.columns_for(
                    self.task.answer(np, self.task.host(t_out))).items():
                column = np.array(batch[name])  # a copy: blocks may be read-only views
                if column.shape[1:] != values.shape[1:]:
                    raise InputError(f"the student answers {name!r} with rows of shape "
                                     f"{column.shape[1:]} and the teacher {values.shape[1:]}; "
                                     "save the bundle with a class_map")
                column[routed] = values
                out[name] = column
        if not self.keep_input:
            out.pop(self.column, None)
        out["answered_by"] = np.where(mask, "teacher", "student")
        return out


class _CascadeStage:
    """Holds stage ``i`` of a cascade; runs it on the rows of each batch still open (every
    row at the first stage), answers those it keeps (:func:`stage_step`, the one step of
    every cascade server) and leaves the rest open for the next stage."""

    def __init__(self, bundle: str, i: int, column: str, trust: dict[str, Any],
                 setup: dict[str, Any], keep_input: bool) -> None:
        from ebjr.bundle import persist
        from ebjr.bundle.cascade import read_cascade_document

        prepare_process(**setup)
        self.cascade = read_cascade_document(bundle).cascade
        self.i, self.name = i, self.cascade.stages[i]
        self.model, _ = persist.load_model(bundle, self.name, **trust)
        self.column = column
        self.keep_input = keep_input

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ebjr.joint.cascade_walk import stage_step
        from ebjr.scores import softmax

        x = _column(batch, self.column)
        n, first = len(x), self.i == 0
        out = dict(batch)
        open_rows = np.ones(n, dtype=bool) if first else np.asarray(batch["_open"], dtype=bool)
        at = np.flatnonzero(open_rows)
        if at.size:
            logits = np.asarray(to_numpy(self.model(take_rows(x, at))))
            running = None if first or "_running" not in batch else batch["_running"][at]
            step = stage_step(self.cascade, self.i, self.cascade.thresholds, logits, running)
            if first:
                out["prediction"] = np.zeros(n, dtype=np.int64)
                out["probabilities"] = np.zeros((n, logits.shape[1]), dtype=np.float32)
                out["score"] = np.zeros(n, dtype=np.float64)
                out["answered_by"] = np.full(n, "", dtype=object)
            else:  # a batch's arrays may be read-only views of the object store
                for k in ("prediction", "probabilities", "score", "answered_by"):
                    out[k] = np.array(batch[k], dtype=object if k == "answered_by" else None)
            here = np.ones(at.size, dtype=bool) if step.go_on is None \
                else ~np.asarray(step.go_on, dtype=bool)
            rows = at[here]
            answer = step.answer[here]
            out["prediction"][rows] = np.argmax(answer, axis=1)
            out["probabilities"][rows] = softmax(answer, validate=False)
            out["score"][rows] = np.asarray(step.scores, dtype=np.float64)[here]
            out["answered_by"][rows] = self.name
            open_rows = open_rows.copy()
            open_rows[rows] = False
            if step.running is not None:
                full = np.zeros((n, logits.shape[1]), dtype=step.running.dtype)
                full[at] = step.running
                out["_running"] = full
        last = self.i == len(self.cascade.stages) - 1
        if last:
            for k in ("_open", "_running"):
                out.pop(k, None)
            if not self.keep_input:
                out.pop(self.column, None)
            out["answered_by"] = np.asarray(out["answered_by"], dtype=str)
        else:
            out["_open"] = open_rows
        return out


def _column(batch: dict[str, np.ndarray], column: str) -> np.ndarray:
    if column not in batch:
        raise InputError(f"the dataset has no column {column!r}; its columns are {sorted(batch)}")
    x = batch[column]
    if x.dtype == object:  # nested cells (e.g. parquet lists): stack them
        from ebjr.bundle.inputs import rows_of_cells

        x = rows_of_cells(x)
    return x


def joint_map_batches(
    ds: ray.data.Dataset,
    bundle: str | Path,
    *,
    column: str = "data",
    batch_size: int = 256,
    teacher_batch_size: int = 64,
    student_concurrency: int | tuple[int, int] = 1,
    teacher_concurrency: int | tuple[int, int] = 1,
    student_num_cpus: float | None = None,
    teacher_num_cpus: float | None = None,
    torch_threads: int | None = 1,
    reuse_freed_memory: bool = True,
    allow_factories: list[str] | None = None,
    allow_torchscript: bool = False,
    keep_input: bool = False,
    on_teacher_batch: Any = None,
    student_ray_args: dict[str, Any] | None = None,
    teacher_ray_args: dict[str, Any] | None = None,
) -> ray.data.Dataset:
    """``ds`` with the joint model's answer in every row (lazy, like any ``map_batches``).

    A cascade document (:mod:`ebjr.bundle.cascade`) runs as one ``map_batches`` per stage
    (the first with the student's options, each later one with the teacher's; every stage
    ``batch_size`` rows per batch), each stage's model only on the rows still open, and
    ``answered_by`` names the stage.

    Args:
        ds: rows whose ``column`` holds one model input each (``ray.data.from_numpy``
            and ``read_numpy`` name it ``data``).
        bundle: a bundle saved with its models; its path must be readable on
            every node that runs a stage.
        batch_size: rows per student call.
        teacher_batch_size: about how many rows each teacher call should get
            (the teacher stage's batches are this divided by the calibrated
            teacher share; ``batch_size`` when the bundle stores no curve).
        student_concurrency, teacher_concurrency: actors per stage (an int,
            or ``(min, max)`` for an autoscaling pool).
        student_num_cpus, teacher_num_cpus: CPUs Ray reserves per actor. By
            default 1, or less on a cluster too small to also run the read
            tasks beside every actor (``(CPUs - 1) / actors``, at least 0.1):
            what an actor really uses is ``torch_threads``.
        torch_threads: intra-op threads per actor (``None``: torch's default).
        reuse_freed_memory: each actor keeps the memory its model frees after a batch for
            the next one (glibc; as ``ebjr serve --reuse-freed-memory``, docs/serve.md).
        allow_factories, allow_torchscript: what the bundle may run besides the
            registered model builders (see :func:`ebjr.load`).
        keep_input: keep ``column`` in the output (default: dropped).
        on_teacher_batch: called in the teacher actors with the number of rows
            of every teacher call (metering; must be serialisable).
        student_ray_args, teacher_ray_args: more of Ray's actor options per
            stage (``resources``, ``num_gpus``, ``memory``, ...).

    Returns:
        The dataset with ``prediction``, ``probabilities``, ``score`` and
        ``answered_by`` added.
    """
    from ebjr.bundle import curve_point_at, persist
    from ebjr.bundle.cascade import CascadeRecord

    if batch_size < 1 or teacher_batch_size < 1:
        raise InputError(
            f"batch sizes must be positive integers, got batch_size={batch_size!r}, "
            f"teacher_batch_size={teacher_batch_size!r}"
        )
    path = str(Path(bundle).expanduser().resolve())
    trust = {"allow_factories": list(allow_factories or []),
             "allow_torchscript": allow_torchscript}
    record = persist.check(path, **trust)  # in the driver: a bad bundle fails before any actor
    setup = {"torch_threads": torch_threads, "reuse_memory": reuse_freed_memory}
    if isinstance(record, CascadeRecord):
        return _cascade_map_batches(ds, path, record, column, batch_size, student_concurrency,
                                    teacher_concurrency, student_num_cpus, teacher_num_cpus,
                                    setup, trust, keep_input)
    point = curve_point_at(record.curve, record.threshold)
    share = None if point is None else float(point["teacher_fraction"])
    stream_batch = (
        batch_size if not share else max(batch_size, math.ceil(teacher_batch_size / share))
    )
    pools = (_pool(student_concurrency), _pool(teacher_concurrency))
    default_cpus = _default_cpus(sum(int(p.max_size or p.min_size or 1) for p in pools))
    routed = ds.map_batches(
        _StudentStage,
        fn_constructor_args=(path, column, trust, setup),
        batch_size=batch_size,
        batch_format="numpy",
        compute=pools[0],
        num_cpus=default_cpus if student_num_cpus is None else student_num_cpus,
        **(student_ray_args or {}),
    )
    return routed.map_batches(
        _TeacherStage,
        fn_constructor_args=(path, column, trust, setup, keep_input, on_teacher_batch),
        batch_size=stream_batch,
        batch_format="numpy",
        compute=pools[1],
        num_cpus=default_cpus if teacher_num_cpus is None else teacher_num_cpus,
        **(teacher_ray_args or {}),
    )


def _cascade_map_batches(ds: ray.data.Dataset, path: str, record: Any, column: str,
                         batch_size: int, first_concurrency: Any, later_concurrency: Any,
                         first_cpus: float | None, later_cpus: float | None,
                         setup: dict[str, Any], trust: dict[str, Any],
                         keep_input: bool) -> ray.data.Dataset:
    """A cascade's stages, one ``map_batches`` each (the first with the student's actor
    options, every later one with the teacher's); each stage's model sees only the rows
    still open when a batch reaches it."""
    stages = record.cascade.stages
    pools = [_pool(first_concurrency)] + [_pool(later_concurrency) for _ in stages[1:]]
    default_cpus = _default_cpus(sum(int(p.max_size or p.min_size or 1) for p in pools))
    for i in range(len(stages)):
        cpus = first_cpus if i == 0 else later_cpus
        ds = ds.map_batches(
            _CascadeStage,
            fn_constructor_args=(path, i, column, trust, setup, keep_input),
            batch_size=batch_size,
            batch_format="numpy",
            compute=pools[i],
            num_cpus=default_cpus if cpus is None else cpus,
        )
    return ds


def _pool(concurrency: int | tuple[int, int]) -> ray.data.ActorPoolStrategy:
    if isinstance(concurrency, tuple):
        lo, hi = concurrency
        if not 1 <= lo <= hi:
            raise InputError(f"an actor pool's (min, max) must have 1 <= min <= max, got "
                             f"{concurrency!r}")
        return ray.data.ActorPoolStrategy(min_size=lo, max_size=hi)
    check_int(concurrency, "concurrency", 1)
    return ray.data.ActorPoolStrategy(size=concurrency)


def _default_cpus(actors: int) -> float:
    """1 CPU per actor, unless that would leave no CPU for the read tasks (a deadlock)."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return 1.0 if cpus >= actors + 1 else max(0.1, (cpus - 1) / actors)


def _read_npy(batch: Any, path: str) -> Any:
    """Rows ``batch["id"]`` of the .npy file at ``path`` (memory-mapped in the worker)."""
    ids = np.asarray(batch["id"], dtype=np.int64)
    return {"row": ids, "data": np.asarray(np.load(path, mmap_mode="r")[ids])}


def _parquet_rows(batch: Any, column: str, dtype: str) -> Any:
    from ebjr.bundle.inputs import rows_of_cells

    return {"data": rows_of_cells(batch[column], np.dtype(dtype))}


def _decode_images(batch: Any, shape: tuple[int, ...] | None, dtype: str,
                   preprocessing: Any = None) -> Any:
    from ebjr.bundle.inputs import images_to_rows

    rows = images_to_rows(list(batch["image"]), shape, np.dtype(dtype), preprocessing)
    return {"path": batch["path"], "data": rows}


def read_inputs(
    path: str | Path, bundle: Any, column: str | None = None, *, blocks: int | None = None
) -> tuple[ray.data.Dataset, str, int]:
    """A dataset of ``path``'s rows for ``bundle``: ``(dataset, id column, rows)``.

    ``.npy`` files are read by the workers (memory-mapped, by row number);
    ``.npz`` arrays are put in the object store; parquet is read by Ray Data;
    image folders are decoded by the workers to the bundle's input record.
    The dataset's input column is ``data``; ``row`` or ``path`` names each row.
    """
    from ebjr.bundle.inputs import InputSource, image_files, input_record

    source = InputSource(path, bundle, column)  # checks the file, column and shapes
    n = len(source)
    if n == 0:
        raise InputError(f"input {str(path)!r} has no rows")
    kind, p = source.kind, Path(path).resolve()
    parallel = blocks or max(1, min(64, math.ceil(n / 1024)))
    if kind == "npy":
        ds = ray.data.range(n, override_num_blocks=parallel).map_batches(
            functools.partial(_read_npy, path=str(p)), batch_format="numpy"
        )
        return ds, "row", n
    if kind == "npz":
        x = np.asarray(source._array)
        ds = ray.data.from_numpy(x).repartition(parallel)
        return ds, "", n
    if kind == "parquet":
        name = str(source.column or "data")
        # select_columns right after the read: Ray pushes the projection into the reader
        ds = ray.data.read_parquet(str(p)).select_columns([name]).map_batches(
            functools.partial(_parquet_rows, column=name, dtype=source.dtype.name),
            batch_format="numpy",
        )
        return ds, "", n
    shape, dtype = input_record(bundle)
    files = [str(f) for f in image_files(p)]
    ds = ray.data.read_images(files, include_paths=True, mode=None)
    ds = ds.map_batches(
        functools.partial(_decode_images, shape=shape, dtype=dtype.name,
                          preprocessing=source.preprocessing), batch_format="numpy"
    )
    return ds, "path", n


def predict_files(
    bundle: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    column: str | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """``ebjr predict BUNDLE INPUT --ray``: the joint answers of every input row, in input
    order, in one parquet file; ``options`` go to :func:`joint_map_batches`."""
    from tqdm.auto import tqdm

    from ebjr.bundle import persist
    from ebjr.bundle.cascade import CascadeRecord
    from ebjr.bundle.predict import PredictionWriter

    record = persist.read_record(bundle)
    # input order, row for row: a Dataset copies the DataContext when it is created, so the
    # option is set before the datasets are made (setting it later has no effect on them)
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        ds, id_name, n = read_inputs(input_path, record, column)
        out = joint_map_batches(ds, bundle, **options)
    finally:
        ctx.execution_options.preserve_order = before
    writer = PredictionWriter(output, id_name or "row", inputs=(bundle, input_path))
    bar = tqdm(total=n, unit="row", desc="predict (ray)", disable=not progress or None)
    start = 0
    try:
        for b in out.iter_batches(batch_size=4096, batch_format="numpy"):
            k = len(b["prediction"])
            ids = b[id_name].tolist() if id_name else list(range(start, start + k))
            writer.write(ids, b["score"], b["answered_by"],  # the rest: the task's columns
                         {str(k): v for k, v in b.items()
                          if k not in ("score", "answered_by", id_name)})
            start += k
            bar.update(k)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    summary = writer.close()
    if isinstance(record, CascadeRecord):
        summary["stages"] = list(record.cascade.stages)
    return summary
