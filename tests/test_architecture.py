"""The layers of docs/architecture.md: no module imports from a layer above its own.

Every ``import`` of an ``ebjr`` module in ``src/ebjr`` (also inside functions) is read
with ``ast`` and checked against the layer order. Lazy names (a registry's
``"module:attr"`` strings, a package's ``__getattr__`` table) are plug-ins, not
imports, and are not counted.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ebjr"

#: lowest first; a module may import its own layer and the layers below
LAYERS = [
    ("ebjr.exceptions", "ebjr._options", "ebjr._version", "ebjr._utils"),
    ("ebjr.scores",),
    ("ebjr.routing",),
    ("ebjr.tasks",),
    ("ebjr.adapters",),
    ("ebjr.joint",),
    ("ebjr.bundle",),
    ("ebjr.calibration",),
    ("ebjr.evaluation",),
    ("ebjr.training",),
    ("ebjr.zoo",),
    ("ebjr.serve",),
    ("ebjr.ray",),
    ("ebjr.examples",),
    ("ebjr.cli", "ebjr.__main__"),  # the command line and its python -m entry
]


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{module} is in no layer of {__file__}")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("ebjr")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ebjr":  # from ebjr import x: the submodule x, or the root's name
                for a in node.names:
                    sub = SRC / a.name
                    target = f"ebjr.{a.name}" if sub.is_dir() or sub.with_suffix(".py").is_file() \
                        else "ebjr"
                    out.append((node.lineno, target))
            elif node.module.startswith("ebjr."):
                out.append((node.lineno, node.module))
    return out


MODULES = sorted(p for p in SRC.rglob("*.py") if p != SRC / "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_no_module_imports_from_a_higher_layer(path):
    me = module_name(path)
    mine = layer_of(me)
    bad = []
    for line, target in imports_of(path):
        if target == "ebjr":
            bad.append(f"line {line}: imports the package root (the public API, the top layer)")
        elif layer_of(target) > mine:
            bad.append(f"line {line}: {target} (layer {layer_of(target)} > {mine})")
    assert not bad, f"{me} (layer {mine}) imports from above:\n" + "\n".join(bad)


def test_no_import_hook_rewrites_ebjr_modules():
    """The aliases of pre-package module paths are gone (they rewrote the real modules'
    __spec__, so a reload of ebjr.routing after importing ebjr.routers did nothing)."""
    import importlib
    import sys

    import ebjr
    import ebjr.routing

    assert not any(type(f).__module__.startswith("ebjr") for f in sys.meta_path)
    assert importlib.reload(ebjr.routing).__spec__.name == "ebjr.routing"
    with pytest.raises(ImportError):
        importlib.import_module("ebjr.routers")


def test_dir_is_the_api_and_the_version_has_one_source():
    import importlib.metadata

    import ebjr
    from ebjr._version import __version__

    assert dir(ebjr) == sorted(ebjr.__all__)
    assert all(hasattr(ebjr, name) for name in dir(ebjr))  # every lazy name resolves
    assert ebjr.__version__ == __version__ == importlib.metadata.version("ebjr")
