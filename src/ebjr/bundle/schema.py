"""The calibrated routing bundle: one versioned JSON file.

A bundle records everything needed to route new inputs exactly as
calibrated: the router and its parameters, the threshold, the model costs and
their unit, the target, what was achieved on the calibration data (in-sample)
and how many inputs that was measured on. :mod:`ebjr.serve` and
:func:`ebjr.load` read it back; later versions add model references.

JSON has no infinity: a threshold of ``+inf`` (everything to the teacher) is
written as the largest finite double, which routes identically for any finite
score, and read back as that number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebjr._utils.json import dumps
from ebjr.exceptions import BundleError
from ebjr.routing import Router, router_from_spec

__all__ = ["FORMAT", "SCHEMA_VERSION", "RoutingBundle", "curve_point_at", "read_bundle",
           "write_bundle"]

FORMAT = "ebjr.bundle"
SCHEMA_VERSION = 1


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
        class_map: student label -> teacher label, or ``None`` (same space).
        models: model references (see the joint-model docs), or ``{}``.
        extra: anything else worth keeping (e.g. ``auto``'s evidence).
    """

    router: dict[str, Any]
    threshold: float
    costs: dict[str, Any]
    target: dict[str, Any]
    calibration: dict[str, Any]
    class_map: list[int] | None = None
    models: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def make_router(self) -> Router:
        """Rebuild the router this bundle was calibrated with."""
        return router_from_spec(self.router)

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
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "bundle") -> RoutingBundle:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise BundleError(
                f'{source} is not an ebjr bundle: expected a JSON object with "format": {FORMAT!r}'
            )
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{source} has schema_version {version!r}; this ebjr reads version "
                f"{SCHEMA_VERSION} (upgrade ebjr, or recalibrate)"
            )
        missing = [
            k for k in ("router", "threshold", "costs", "target", "calibration") if k not in d
        ]
        if missing:
            raise BundleError(f"{source} lacks required keys: {', '.join(missing)}")
        threshold = d["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise BundleError(f"{source}: threshold must be a number, got {threshold!r}")
        bundle = cls(
            router=d["router"],
            threshold=float(threshold),
            costs=d["costs"],
            target=d["target"],
            calibration=d["calibration"],
            class_map=d.get("class_map"),
            models=d.get("models") or {},
            extra=d.get("extra") or {},
        )
        try:
            bundle.make_router()
        except (KeyError, ValueError) as exc:
            raise BundleError(f"{source}: bad router spec {d['router']!r}: {exc}") from exc
        return bundle


def write_bundle(bundle: RoutingBundle, path: str | Path) -> Path:
    """Write ``bundle`` as strict JSON; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dumps(bundle.to_dict(), indent=2) + "\n")
    return p


def read_bundle(path: str | Path) -> RoutingBundle:
    """Read and validate a bundle file.

    Raises:
        BundleError: missing file, invalid JSON, wrong format or version, bad router.
    """
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"bundle file not found: {str(p)!r}")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{str(p)!r} is not valid JSON: {exc}") from exc
    return RoutingBundle.from_dict(d, source=repr(str(p)))


def curve_point_at(curve: dict | None, threshold: float) -> dict | None:
    """The stored curve's point that ``threshold`` realises (the next stored one at or
    above): its threshold, teacher fraction, accuracy, agreement and cost; ``None``
    without a curve."""
    if not curve:
        return None
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
