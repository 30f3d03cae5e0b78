"""The module paths of ebjr before its subpackages, kept working as aliases.

``import ebjr.risk_control`` gives the module that now holds those names
(``ebjr.calibration.guarantee``), the same object, so old imports, pickles
and user code keep working without a file per old path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

__all__ = ["ALIASES", "install"]

#: former module path -> the module that holds its names now
ALIASES = {
    "ebjr.routers": "ebjr.routing",
    "ebjr.cost": "ebjr.joint.cost",
    "ebjr.risk_control": "ebjr.calibration.guarantee",
    "ebjr.trinomial": "ebjr.calibration.exact",
    "ebjr.auto": "ebjr.calibration.auto",
    "ebjr.pipeline": "ebjr.calibration.calibrate",
    "ebjr.report": "ebjr.evaluation.report",
    "ebjr.detection": "ebjr.evaluation.detection",
    "ebjr.regression": "ebjr.training.regressor",
    "ebjr.io": "ebjr.bundle.outputs",
    "ebjr.persist": "ebjr.bundle.persist",
    "ebjr.distill": "ebjr.training.distill",
    "ebjr.specialized": "ebjr.training.specialized",
    "ebjr.quickstart": "ebjr.examples.quickstart",
    "ebjr.distill_cli": "ebjr.training.sources",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in ALIASES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module is the real one, already executed."""


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
