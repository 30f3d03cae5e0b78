"""The one registry helper: named entries, loaded on first use, duplicates refused.

Routers (``ebjr.routing.base``), targets (``ebjr.calibration.targets``) and the
model kinds a bundle may name (``ebjr.adapters.base``) each keep one
:class:`Registry`, so they share one vocabulary (``add``, ``add_lazy``,
``get``, ``names``), one error (:class:`~ebjr.exceptions.UnknownNameError`,
naming the registered entries) and one rule: a name holds one entry; adding
another under it is refused, unless it is the same object, or the real object a
lazy entry named.

>>> r = Registry("colour")
>>> r.add("red", 1)
1
>>> r.add_lazy("pi", "math:pi", tag="number")
>>> r.get("pi") > 3, r.names(), r.names(tag="number")
(True, ['pi', 'red'], ['pi'])
"""

from __future__ import annotations

import fnmatch
from typing import Any, Generic, TypeVar

from ebjr._utils.lazy import load_attr
from ebjr.exceptions import InputError, UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name (``what`` names the kind in messages).

    An entry is an object, or a ``"module:attr"`` string imported the first time
    it is asked for (so a module can name what an optional dependency provides).
    Each entry may carry a ``tag`` (e.g. what a router scores), known before any
    import.
    """

    def __init__(self, what: str, error: type[UnknownNameError] = UnknownNameError) -> None:
        self.what = what
        self.error = error
        self._entries: dict[str, T | str] = {}
        self._tags: dict[str, Any] = {}

    def add(self, name: str, entry: T, *, tag: Any = None) -> T:
        """Register ``entry`` as ``name``; returns it (so it can end a decorator).

        Raises:
            InputError: (a ValueError) an empty name, or another entry holds it.
        """
        if not isinstance(name, str) or not name:
            raise InputError(f"a {self.what} needs a non-empty name, got {name!r}")
        old = self._entries.get(name)
        if old is not None and old is not entry and not self._names_it(old, entry):
            raise InputError(f"a {self.what} named {name!r} is already registered ({old!r})")
        self._entries[name] = entry
        if tag is not None or name not in self._tags:
            self._tags[name] = tag
        return entry

    def add_lazy(self, name: str, target: str, *, tag: Any = None) -> None:
        """Register ``"module:attr"`` as ``name``, imported when first asked for (a name
        already registered keeps its entry)."""
        self._entries.setdefault(name, target)
        self._tags.setdefault(name, tag)

    @staticmethod
    def _names_it(old: Any, entry: Any) -> bool:
        """``old`` is the lazy string of ``entry`` (its module registering it on import)."""
        if not isinstance(old, str):
            return False
        module, _, attr = old.partition(":")
        return getattr(entry, "__module__", None) == module and \
            getattr(entry, "__qualname__", None) == attr

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (imported if it was lazy).

        Raises:
            UnknownNameError: (the registry's error) ``name`` is not registered.
        """
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise self.error(f"unknown {self.what} {name!r}; the registered {self.what}s "
                             f"are: {', '.join(self.names()) or 'none'}")
        if isinstance(entry, str):
            entry = self._entries[name] = load_attr(entry)
        return entry  # type: ignore[return-value]

    def tag(self, name: str) -> Any:
        return self._tags.get(name)

    def names(self, pattern: str = "*", *, tag: Any = None) -> list[str]:
        """Sorted names matching the shell-style ``pattern`` (and ``tag``, if given)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern)
                      and (tag is None or self._tags.get(n) == tag))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"
