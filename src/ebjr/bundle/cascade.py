"""A calibrated cascade of N models as one strict-JSON document (``ebjr.cascade``, version 1).

It records what :meth:`ebjr.Cascade.apply` needs (the stages in order, each
with its cost and, but for the last, its threshold; the router; the combine
rule), the reference model, the target and the evidence of the search
(``details``: in-sample figures, or for a guarantee the rows used to select and
to certify, the p-value and the finalists), and where each model's outputs
came from. Reading it never runs anything: the document is checked against
:class:`CascadeDocument` (strict JSON, bounded sizes, every field typed) and
every failure is a :class:`~ebjr.exceptions.BundleError` naming the field.

A stage may also carry its model's reference (the kinds of
:mod:`ebjr.bundle.persist`): ``ebjr.save`` of a
:class:`~ebjr.joint.cascade_model.CascadeModel` writes one, and ``ebjr.load``
rebuilds the live cascade from it; ``ebjr serve`` and ``ebjr predict`` run it,
as they run a pair bundle (:mod:`ebjr.bundle.schema`). ``ebjr cascade`` writes a
cascade document from precomputed outputs (no models). The ``input`` record is
the pair bundle's (:class:`~ebjr.bundle.schema.InputRecord`).

>>> import tempfile, os
>>> from ebjr.joint.cascade import Cascade
>>> c = Cascade(("small", "big"), (0.9,), costs=(1.0, 8.0), router="softmax")
>>> path = write_cascade(c, os.path.join(tempfile.mkdtemp(), "c.json"))
>>> read_cascade(path) == c
True
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
    StringConstraints,
    ValidationError,
)

from ebjr._utils.json import dumps, loads_strict
from ebjr.adapters.references import describe_errors, validate_reference
from ebjr.bundle.schema import InputRecord, RouterSpec, read_document
from ebjr.exceptions import BundleError, InputError
from ebjr.joint.cascade import COMBINES, Cascade

__all__ = ["CASCADE_FORMAT", "CascadeDocument", "CascadeRecord", "read_cascade",
           "read_cascade_document", "write_cascade"]

CASCADE_FORMAT = "ebjr.cascade"
Name = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StageRecord(_Strict):
    """One stage: its model's name, cost per row, threshold (none for the last) and source."""

    name: Name
    cost: Annotated[StrictFloat, Field(ge=0)]
    threshold: StrictFloat | None = None
    source: Annotated[str, StringConstraints(max_length=4096)] | None = None
    model: dict[str, JsonValue] | None = None  # checked against its kind's schema on read


class CascadeDocument(_Strict):
    """The whole document (its JSON Schema: ``model_json_schema()``)."""

    format: Literal["ebjr.cascade"]
    schema_version: Literal[1]
    created_by: Annotated[str, StringConstraints(max_length=4096)] | None = None
    stages: Annotated[list[StageRecord], Field(min_length=1, max_length=64)]
    router: RouterSpec
    combine: Literal[COMBINES]  # type: ignore[valid-type]
    reference: Name | None = None
    details: dict[str, JsonValue] = {}
    input: InputRecord | None = None


@dataclass
class CascadeRecord:
    """A read cascade document: the cascade, each stage's model reference (where recorded)
    and the per-row input record; read as a pair bundle is where servers need it (the
    thresholds, the costs, the search's details as its calibration; no single curve)."""

    cascade: Cascade
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    input: dict[str, Any] | None = None
    curve: None = None

    @property
    def threshold(self) -> list[float]:
        return list(self.cascade.thresholds)

    def make_task(self) -> Any:
        """The task kind: a cascade of classifiers (other kinds are not cascaded yet)."""
        from ebjr.tasks import Classification

        return Classification()

    @property
    def costs(self) -> dict[str, float]:
        return dict(zip(self.cascade.stages, self.cascade.costs or (), strict=False))

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.cascade.details.get("target") or {})

    @property
    def calibration(self) -> dict[str, Any]:
        return dict(self.cascade.details)


def write_cascade(cascade: Cascade, path: str | Path, sources: dict[str, str] | None = None,
                  created_by: str | None = None,
                  models: dict[str, dict[str, Any]] | None = None,
                  input: dict[str, Any] | None = None) -> Path:
    """Write ``cascade`` as a cascade document; returns the path.

    Args:
        sources: stage name -> where its outputs came from (a file), for the record.
        models: stage name -> model reference (what :func:`ebjr.save` writes for a
            :class:`~ebjr.joint.cascade_model.CascadeModel`).
        input: the per-row input record (:class:`~ebjr.bundle.schema.InputRecord`).
    """
    from ebjr._version import __version__

    d = cascade.to_dict()
    stages = [
        {"name": name, "cost": float(cost),
         "threshold": d["thresholds"][i] if i < len(d["thresholds"]) else None,
         "source": (sources or {}).get(name), "model": (models or {}).get(name)}
        for i, (name, cost) in enumerate(zip(d["stages"], d["costs"], strict=True))
    ]
    doc = {"format": CASCADE_FORMAT, "schema_version": 1,
           "created_by": created_by or f"ebjr {__version__}", "stages": stages,
           "router": d["router"], "combine": d["combine"], "reference": d["reference"],
           "details": d["details"], "input": input}
    text = dumps(doc, indent=2)  # +-inf as the largest double: it routes identically
    CascadeDocument.model_validate(loads_strict(text, "the cascade", BundleError))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n", encoding="utf-8")
    return p


def read_cascade(path: str | Path) -> Cascade:
    """Read and check a cascade document (see :func:`read_cascade_document`)."""
    return read_cascade_document(path).cascade


def read_cascade_document(path: str | Path) -> CascadeRecord:
    """Read and check a cascade document: the cascade, the model reference of each stage
    that has one (checked against its kind's schema; nothing is built) and the input record.

    Raises:
        BundleError: missing, too large, not strict JSON, or not a valid document (the
            message names the field).
    """
    p = Path(path)
    raw = read_document(p, "cascade")
    try:
        doc = CascadeDocument.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{str(p)!r} is not a valid cascade document: "
                          f"{describe_errors(exc)}") from None
    stages = doc.stages
    missing = [s.name for s in stages[:-1] if s.threshold is None]
    if missing or stages[-1].threshold is not None:
        raise BundleError(f"{str(p)!r}: every stage but the last needs a threshold (missing for "
                          f"{missing}) and the last has none")
    models = {s.name: validate_reference(dict(s.model), s.name)
              for s in stages if s.model is not None}
    try:
        cascade = Cascade(
            tuple(s.name for s in stages),
            tuple(float(s.threshold) for s in stages[:-1]),  # type: ignore[arg-type]
            tuple(s.cost for s in stages),
            _router(doc.router.model_dump()),
            doc.combine,
            doc.reference,
            dict(doc.details),
        )
    except (InputError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{str(p)!r}: {exc}") from exc
    record = None if doc.input is None else doc.input.model_dump(exclude_none=True)
    return CascadeRecord(cascade, models, record)


def _router(spec: dict[str, Any]):
    from ebjr.routing import router_from_spec

    return router_from_spec(spec)
