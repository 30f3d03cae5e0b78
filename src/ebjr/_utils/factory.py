"""Resolving ``"package.module:function"`` references (model factories)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from ebjr.exceptions import InputError

__all__ = ["SPEC_PATTERN", "check_factory_spec", "import_factory"]

#: ``package.module:function``: dotted identifiers, one colon, one identifier
SPEC_PATTERN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
)


def check_factory_spec(spec: Any, error: type[Exception] = InputError) -> str:
    """``spec`` if it has the form ``package.module:function``, else ``error``."""
    if not isinstance(spec, str) or not SPEC_PATTERN.fullmatch(spec):
        raise error(f"a factory is 'package.module:function', got {spec!r}")
    return spec


def import_factory(spec: Any, error: type[Exception] = InputError) -> Callable[..., Any]:
    """Import the callable named by ``package.module:function``.

    Args:
        spec: the reference.
        error: the exception type raised for a malformed or unimportable spec.
    """
    module, _, name = check_factory_spec(spec, error).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise error(f"cannot import the factory {spec!r}: {exc}") from exc
