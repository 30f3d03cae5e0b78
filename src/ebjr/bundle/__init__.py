"""Bundles: the versioned JSON schema (``schema``), model outputs files (``outputs``), and
saving and loading a whole joint model (``persist``).

Every name of the former ``ebjr.bundle`` module is here; ``persist`` and
``outputs`` load on first use.
"""

from __future__ import annotations

from ebjr._utils.json import dumps, json_safe
from ebjr._utils.lazy import lazy_getattr
from ebjr.bundle.schema import (
    FORMAT,
    SCHEMA_VERSION,
    RoutingBundle,
    curve_point_at,
    read_bundle,
    write_bundle,
)

_LAZY = {
    "save": "ebjr.bundle.persist",
    "load": "ebjr.bundle.persist",
    "load_model": "ebjr.bundle.persist",
    "ModelOutputs": "ebjr.bundle.outputs",
    "load_outputs": "ebjr.bundle.outputs",
}

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "RoutingBundle",
    "curve_point_at",
    "dumps",
    "json_safe",
    "read_bundle",
    "write_bundle",
    *sorted(_LAZY),
]


__getattr__ = lazy_getattr("ebjr.bundle", _LAZY)
