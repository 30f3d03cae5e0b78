"""The calibrated routing bundle: one strict-JSON document with a versioned schema.

A bundle records everything needed to route new inputs exactly as
calibrated: the router and its parameters, the threshold, the model costs and
their unit, the target, what was achieved on the calibration data (in-sample),
the trade-off curve, the input record (per-row shape and datatype) and the
model references. :mod:`ebjr.serve` and :func:`ebjr.load` read it back.

Reading a bundle never runs anything: the whole document is checked against
:class:`BundleDocument` (strict JSON, bounded nesting and numbers, every
field typed, every model reference checked against its kind's schema) before
any model is built, and every failure is a :class:`~ebjr.exceptions.BundleError`
that names the field. Version-1 documents (``input``, ``curve`` and
``max_teacher_batch`` under ``extra``) are migrated on read.

JSON has no infinity: a threshold of ``+inf`` (everything to the teacher) is
written as the largest finite double, which routes identically for any finite
score, and read back as that number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from ebjr._utils.json import dumps, loads_strict
from ebjr.adapters.references import describe_errors, validate_reference
from ebjr.exceptions import BundleError
from ebjr.routing import Router, router_from_spec
from ebjr.tasks import TaskKind, task_from_spec

__all__ = ["FORMAT", "SCHEMA_VERSION", "BundleDocument", "RoutingBundle", "curve_point_at",
           "read_bundle", "read_document", "write_bundle"]

FORMAT = "ebjr.bundle"
SCHEMA_VERSION = 2
#: the largest bundle file read (a curve of 201 points is a few tens of kB)
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
#: the Open Inference Protocol's numeric datatypes an input may declare
INPUT_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                   "INT64", "FP16", "FP32", "FP64")

Number = StrictFloat  # strict: an int is accepted, a bool or a string is not
Text = Annotated[str, StringConstraints(max_length=4096)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RouterSpec(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    params: dict[str, JsonValue] = {}


class Costs(_Strict):
    student: Annotated[Number, Field(ge=0)] | None = None
    teacher: Annotated[Number, Field(ge=0)] | None = None
    unit: Text | None = None


class InputRecord(_Strict):
    """One row of the model's input: its shape and Open Inference Protocol datatype, and how
    a decoded image (pixels 0-255) becomes a row: ``row = (pixels * pixel_scale - mean) /
    std``, per channel (one value, or one per channel)."""

    shape: Annotated[list[Annotated[StrictInt, Field(ge=1, le=1 << 20)]],
                     Field(min_length=1, max_length=8)]
    datatype: Literal[INPUT_DATATYPES] = "FP32"  # type: ignore[valid-type]
    description: Text | None = None
    pixel_scale: Annotated[Number, Field(gt=0)] | None = None
    mean: Annotated[list[Number], Field(min_length=1, max_length=4)] | None = None
    std: Annotated[list[Annotated[Number, Field(gt=0)]],
                   Field(min_length=1, max_length=4)] | None = None


class TaskRecord(_Strict):
    """The task kind (:mod:`ebjr.tasks`); a bundle without one is a classification."""

    kind: Literal["classification", "regression", "detection"]
    columns: Annotated[list[Annotated[str, StringConstraints(max_length=64)]],
                       Field(min_length=1, max_length=16)] | None = None
    loss: Literal["absolute", "squared"] | None = None
    max_detections: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None


class CurveRecord(_Strict):
    """The stored trade-off curve: one entry per point, thresholds ascending."""

    threshold: Annotated[list[Number], Field(min_length=1, max_length=100_000)]
    teacher_fraction: list[Number]
    accuracy: list[Number | None] | None = None
    agreement: list[Number | None]
    cost: list[Number]
    n: Annotated[StrictInt, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _aligned(self) -> CurveRecord:
        k = len(self.threshold)
        for name in ("teacher_fraction", "accuracy", "agreement", "cost"):
            values = getattr(self, name)
            if values is not None and len(values) != k:
                raise ValueError(f"{name} has {len(values)} points, threshold {k}")
        if any(b < a for a, b in zip(self.threshold, self.threshold[1:], strict=False)):
            raise ValueError("thresholds must be in ascending order")
        return self


class BundleDocument(_Strict):
    """The whole bundle document, version 2 (its JSON Schema: ``model_json_schema()``)."""

    format: Literal["ebjr.bundle"]
    schema_version: Literal[2]
    created_by: Text | None = None
    router: RouterSpec
    threshold: Number
    costs: Costs
    target: dict[str, JsonValue]
    calibration: dict[str, JsonValue]
    class_map: Annotated[list[Annotated[StrictInt, Field(ge=-1, le=1 << 24)]],
                         Field(min_length=1, max_length=1 << 24)] | None = None
    models: dict[Literal["student", "teacher"], dict[str, JsonValue]] = {}
    input: InputRecord | None = None
    curve: CurveRecord | None = None
    max_teacher_batch: Annotated[StrictInt, Field(ge=1)] | None = None
    task: TaskRecord | None = None
    extra: dict[str, JsonValue] = {}

    @model_validator(mode="after")
    def _class_map(self) -> BundleDocument:
        if self.class_map is not None and max(self.class_map) < 0:
            raise ValueError("class_map maps no student class to a teacher class")
        if self.class_map is not None and self.task is not None and \
                self.task.kind != "classification":
            raise ValueError(f"class_map applies to classification, not to {self.task.kind}")
        return self


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 document as version 2: ``extra``'s typed records move to the top level."""
    if d.get("schema_version") != 1:
        return d
    d = dict(d)
    extra = d.get("extra")
    extra = {} if extra is None else dict(extra) if isinstance(extra, dict) else extra
    if isinstance(extra, dict):
        for key in ("input", "curve", "max_teacher_batch"):
            if key in extra:
                d[key] = extra.pop(key)
    d["extra"] = extra
    d["class_map"] = d.get("class_map")
    d["models"] = d.get("models") or {}
    d["schema_version"] = 2
    return d


@dataclass
class RoutingBundle:
    """A calibrated router: what :func:`write_bundle` stores.

    Attributes:
        router: router spec ``{"name": ..., "params": {...}}``.
        threshold: the student answers iff ``score >= threshold``.
        costs: ``{"student": a, "teacher": b, "unit": "FLOPs"}``.
        target: the target that chose the threshold (``Target.to_dict()``).
        calibration: what was achieved on the calibration data: ``n``,
            ``student_accuracy``, ``teacher_accuracy``, ``teacher_fraction``,
            ``accuracy``, ``cost``, ``speedup`` and target details (in-sample).
        class_map: student label -> teacher label (``-1``: none), or ``None``
            (same label space).
        models: model references (see the joint-model docs), or ``{}``.
        input: the per-row input record ``{"shape": [...], "datatype": "FP32"}``, or ``None``.
        curve: the trade-off curve's summary (``TradeoffCurve.summary()``), or ``None``.
        max_teacher_batch: rows per teacher call, or ``None`` (all routed rows at once).
        task: the task kind's spec (``TaskKind.to_spec()``), or ``None``: classification.
        extra: anything else worth keeping (e.g. ``auto``'s evidence); never read to
            build or route.
    """

    router: dict[str, Any]
    threshold: float
    costs: dict[str, Any]
    target: dict[str, Any]
    calibration: dict[str, Any]
    class_map: list[int] | None = None
    models: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] | None = None
    curve: dict[str, Any] | None = None
    max_teacher_batch: int | None = None
    task: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def make_router(self) -> Router:
        """Rebuild the router this bundle was calibrated with."""
        return router_from_spec(self.router)

    def make_task(self) -> TaskKind:
        """Rebuild the task kind (a classification's with the bundle's class map)."""
        extra = {} if self.class_map is None else {"class_map": self.class_map}
        return task_from_spec(self.task, **extra)

    def to_dict(self) -> dict[str, Any]:
        from ebjr._version import __version__

        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_by": f"ebjr {__version__}",
            "router": self.router,
            "threshold": self.threshold,
            "costs": self.costs,
            "target": self.target,
            "calibration": self.calibration,
            "class_map": self.class_map,
            "models": self.models,
            "input": self.input,
            "curve": self.curve,
            "max_teacher_batch": self.max_teacher_batch,
            "task": self.task,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "bundle") -> RoutingBundle:
        """Check ``d`` against the schema (migrating version 1) and build the bundle.

        Raises:
            BundleError: naming the field that is wrong.
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise BundleError(
                f'{source} is not an ebjr bundle: expected a JSON object with "format": {FORMAT!r}'
            )
        version = d.get("schema_version")
        if version not in (1, SCHEMA_VERSION) or isinstance(version, bool):
            raise BundleError(
                f"{source} has schema_version {version!r}; this ebjr reads versions 1 and "
                f"{SCHEMA_VERSION} (upgrade ebjr, or recalibrate)"
            )
        try:
            doc = BundleDocument.model_validate(migrate(d))
        except ValidationError as exc:
            raise BundleError(f"{source}: {describe_errors(exc)}") from None
        models = {role: validate_reference(ref, role) for role, ref in doc.models.items()}
        data = doc.model_dump(exclude={"format", "schema_version", "created_by"})
        if data.get("task"):
            data["task"] = {k: v for k, v in data["task"].items() if v is not None}
        if data.get("input"):  # image preprocessing only where a bundle states it
            data["input"] = {k: v for k, v in data["input"].items()
                             if v is not None or k not in ("pixel_scale", "mean", "std")}
        bundle = cls(**{**data, "models": models, "threshold": float(doc.threshold)})
        try:
            router = bundle.make_router()
        except (KeyError, ValueError, TypeError) as exc:
            raise BundleError(f"{source}: router: bad router spec {d['router']!r}: {exc}") from exc
        try:
            bundle.make_task().check_router(router)
        except ValueError as exc:
            raise BundleError(f"{source}: task: {exc}") from exc
        return bundle


def write_bundle(bundle: RoutingBundle, path: str | Path, inputs: tuple = ()) -> Path:
    """Write ``bundle`` as strict JSON (atomically: a whole file or none, never over one of
    ``inputs``); returns the path.

    Raises:
        BundleError: the bundle does not fit the schema (it would not read back).
    """
    from ebjr._utils.files import write_atomic

    text = dumps(bundle.to_dict(), indent=2) + "\n"
    RoutingBundle.from_dict(loads_strict(text, "the bundle being written", BundleError))
    return write_atomic(path, text.encode(), "bundle", inputs)


def read_document(path: str | Path, what: str = "bundle") -> Any:
    """The strict JSON of a bundle or cascade document file, not yet checked against a schema.

    Raises:
        BundleError: missing file, larger than :data:`MAX_BUNDLE_BYTES`, or not strict JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{what} file not found: {str(p)!r}")
    if p.stat().st_size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{str(p)!r} is larger than a {what} may be ({MAX_BUNDLE_BYTES} bytes)")
    return loads_strict(p.read_bytes(), repr(str(p)), BundleError)


def read_bundle(path: str | Path) -> RoutingBundle:
    """Read and validate a bundle file.

    Raises:
        BundleError: missing file, too large, not strict JSON, wrong format or version, or a
            field that does not fit the schema (named).
    """
    return RoutingBundle.from_dict(read_document(path), source=repr(str(path)))


def curve_point_at(curve: dict | None, threshold: float) -> dict | None:
    """The stored curve's point that ``threshold`` realises (the next stored one at or
    above): its threshold, teacher fraction, accuracy, agreement and cost; ``None``
    without a curve."""
    if not curve:
        return None  # no curve stored
    import numpy as np

    from ebjr._utils.json import json_safe

    thr = np.asarray(curve["threshold"], dtype=np.float64)
    i = min(int(np.searchsorted(thr, threshold, side="left")), len(thr) - 1)
    acc = curve.get("accuracy")
    return {
        "threshold": json_safe(float(threshold)),
        "teacher_fraction": curve["teacher_fraction"][i],
        "accuracy": None if acc is None else acc[i],
        "agreement": curve["agreement"][i],
        "cost": curve["cost"][i],
    }
