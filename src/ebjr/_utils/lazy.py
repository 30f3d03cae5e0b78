"""Names and plug-ins that load on first use: a package's lazy names, a registry's entries.

Both are ``"module"`` or ``"module:attr"`` strings, so a module can name what a
higher layer (or an optional dependency) provides without importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_getattr", "load_attr"]


def load_attr(target: str) -> Any:
    """The object ``"package.module:attr"`` names (importing its module)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (a module path) on first use."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
