"""Bundles: the versioned JSON schema (``schema``), model outputs files (``outputs``), and
saving and loading a whole joint model (``persist``).

Every name of the former ``ebjr.bundle`` module is here; ``persist`` and
``outputs`` load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ebjr._utils.json import dumps, json_safe
from ebjr.bundle.schema import FORMAT, SCHEMA_VERSION, RoutingBundle, read_bundle, write_bundle

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
    "dumps",
    "json_safe",
    "read_bundle",
    "write_bundle",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ebjr.bundle' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
