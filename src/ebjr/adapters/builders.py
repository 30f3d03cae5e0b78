"""The model builders a bundle may name: an explicit registry, never a package pattern.

A bundle rebuilds a torch module by calling a *builder* (``"package.module:function"``)
with plain keyword arguments, then loading a state dict into it. Which builders
may run is the one trust decision of loading a bundle, so it is made here and
only here:

- ebjr's zoo builders (:data:`BUILT_IN_BUILDERS`, each decorated with
  :func:`model_builder`, which a test checks) are trusted by name, so a bundle is
  checked without importing torch;
- a function decorated with :func:`model_builder` in your own code is trusted
  once you have imported it;
- any other name runs only if the caller names it exactly
  (``allow_factories=["mypkg.models:make_net"]``, ``--allow-factory``).

No wildcard and no package prefix is ever trusted: ``ebjr.*`` would admit
ebjr's own import-and-call helpers and so any code. Keyword arguments are
plain JSON data (checked by the bundle schema) and must bind to the
builder's signature; a builder refuses sizes it cannot build.

>>> from ebjr.adapters.builders import list_builders
>>> "ebjr.zoo.digits:make_student" in list_builders()
True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from ebjr._utils.factory import SPEC_PATTERN, import_factory
from ebjr.exceptions import BundleError, InputError

__all__ = [
    "BUILT_IN_BUILDERS",
    "call_builder",
    "check_allowed_names",
    "check_builder",
    "list_builders",
    "model_builder",
    "resolve_builder",
]

F = TypeVar("F", bound=Callable[..., Any])

#: ebjr's own registered builders, by name (tests/bundle/test_trust.py checks that this
#: is exactly what the zoo's decorators register)
BUILT_IN_BUILDERS = frozenset({
    "ebjr.zoo.digits:make_student",
    "ebjr.zoo.digits:make_teacher",
    "ebjr.zoo.densenet:make_densenet",
    "ebjr.zoo.resnet_cifar:make_resnet",
    "ebjr.zoo.grid_detector:make_grid_detector",
    "ebjr.zoo.grid_detector:make_grid_detection_model",
    "ebjr.zoo.regression:make_gaussian_mlp",
    "ebjr.zoo.torchvision_detection:make_torchvision_detector",
})

_BUILDERS: dict[str, Callable[..., Any]] = {}


def _name_of(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def model_builder(fn: F) -> F:
    """Register ``fn`` as a model builder that bundles may name (``"module:function"``).

    Raises:
        InputError: ``fn`` is not a module-level function, or another function was
            registered under the same name.
    """
    if not inspect.isfunction(fn) or "." in fn.__qualname__ or "<" in fn.__qualname__:
        raise InputError(f"a model builder is a module-level function, got {fn!r}")
    name = _name_of(fn)
    old = _BUILDERS.get(name)
    if old is not None and _source(old) != _source(fn):  # a reload of the same source is fine
        raise InputError(f"another model builder is registered as {name!r} already")
    _BUILDERS[name] = fn
    return cast(F, fn)


def _source(fn: Callable[..., Any]) -> tuple[str, int]:
    return fn.__code__.co_filename, fn.__code__.co_firstlineno


def list_builders() -> list[str]:
    """The names of every trusted builder: ebjr's own and those registered so far."""
    return sorted(BUILT_IN_BUILDERS | set(_BUILDERS))


def check_allowed_names(names: Iterable[Any], error: type[Exception] = InputError) -> list[str]:
    """The exact builder names a caller trusts, checked: no pattern, no prefix.

    Raises:
        error: a name is not of the form ``package.module:function``.
    """
    out = []
    for name in names:
        if not isinstance(name, str) or not SPEC_PATTERN.fullmatch(name):
            raise error(
                "allow_factories takes exact builder names 'package.module:function' (no "
                f"wildcards or package patterns), got {name!r}"
            )
        out.append(name)
    return out


def check_builder(spec: Any, allow: Iterable[str] = (), role: str = "model") -> str:
    """``spec`` if a bundle may run it: registered, or named exactly in ``allow``. Imports
    nothing.

    Raises:
        BundleError: a malformed name, or a builder nobody trusts.
    """
    if not isinstance(spec, str) or not SPEC_PATTERN.fullmatch(spec):
        raise BundleError(
            f"the {role}'s factory must be 'package.module:function', got {spec!r}"
        )
    if spec in BUILT_IN_BUILDERS or spec in _BUILDERS or spec in check_allowed_names(allow):
        return spec
    raise BundleError(
        f"the {role}'s factory {spec!r} is not a registered model builder, so the bundle "
        "may not run it. If you trust this bundle, name it exactly: "
        f"allow_factories=[{spec!r}] (ebjr ... --allow-factory {spec}), or decorate it "
        "with @ebjr.model_builder in code you import"
    )


def resolve_builder(
    spec: Any, allow: Iterable[str] = (), role: str = "model"
) -> Callable[..., Any]:
    """The builder ``spec`` names, if :func:`check_builder` lets it run.

    Raises:
        BundleError: an untrusted name, or one that does not import to a callable.
    """
    check_builder(spec, allow, role)
    if spec in _BUILDERS:
        return _BUILDERS[spec]
    try:
        fn = import_factory(spec, BundleError)
    except BundleError as exc:
        raise BundleError(f"the {role}'s factory: {exc}") from exc
    if not callable(fn):
        raise BundleError(f"the {role}'s factory {spec!r} is not callable")
    return fn


def call_builder(fn: Callable[..., Any], kwargs: dict[str, Any], spec: str, role: str) -> Any:
    """``fn(**kwargs)``, with a :class:`BundleError` naming the role and field on failure."""
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        raise BundleError(
            f"the {role}'s factory {spec!r} does not take kwargs {kwargs}: {exc}"
        ) from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    try:
        return fn(**kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise BundleError(f"the {role}'s factory {spec!r} refused kwargs {kwargs}: {exc}") from exc
