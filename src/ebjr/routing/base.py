"""The router contract and its one registry.

A router turns the student's outputs into a score per row, **higher means the
student is fit to answer**, and the rule "the student answers iff
``score >= threshold``": :meth:`Router.route` returns a boolean mask that is
``True`` for the rows that go to the teacher (``score < threshold``, or a
score of ``-inf``). Every router, built in or added by a user, registers under
its ``name`` (:func:`register_router`), is built by :func:`get_router` and is
saved and rebuilt as a spec (:meth:`Router.to_spec`, :func:`router_from_spec`).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, TypeVar

from ebjr._utils.arrays import Array, check_logits, namespace
from ebjr._utils.registry import Registry
from ebjr.exceptions import InputError, LogProbabilityInputError, UnknownRouterError
from ebjr.scores import classification as scores

__all__ = [
    "Router",
    "check_threshold",
    "get_router",
    "list_routers",
    "register_lazy",
    "register_router",
    "router_from_spec",
    "teacher_mask",
]


def check_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float, or raise a clear error for NaN or non-numbers.

    ``+inf`` is allowed (everything goes to the teacher), and so is ``-inf``
    (nothing does).
    """
    if isinstance(threshold, bool):
        raise InputError(f"threshold must be a real number, got {threshold!r}")
    try:
        t = float(threshold)
    except (TypeError, ValueError) as exc:
        raise InputError(f"threshold must be a real number, got {threshold!r}") from exc
    if math.isnan(t):
        raise InputError("threshold must be a real number, got NaN")
    return t


def teacher_mask(scores: Array, threshold: float) -> Array:
    """``True`` where a row goes to the teacher: unless ``score >= threshold``, so a NaN
    score (and ``-inf``) goes to the teacher whatever the threshold: fail safe.

    One comparison: below the lowest finite value of the scores' dtype only
    ``-inf`` lies, so a threshold under it is raised to it (and one above the
    largest is ``+inf``: no threshold overflows the scores' dtype).
    """
    xp = namespace(scores)
    if not xp.isdtype(scores.dtype, "real floating"):  # e.g. a custom router's integer scores
        return (scores < threshold) | (scores == -math.inf)
    top, t = float(xp.finfo(scores.dtype).max), float(threshold)
    return ~(scores >= (-top if t < -top else math.inf if t > top else t))


def _plain(value: Any) -> Any:
    """A stored parameter as JSON-serialisable data (a target as its dict, numpy scalars
    as Python numbers)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        return value.item()
    return value


class Router:
    """Base class: subclasses set ``name`` and implement :meth:`_score`.

    Constructor arguments are stored as given, each under its own name (as in
    scikit-learn), and :meth:`params` reads them back from the constructor's
    signature, so a router's spec, equality and repr cannot drift from what it
    was built with, and a router is rebuilt from its spec
    (:func:`router_from_spec`). A router that learns from data sets
    ``requires_fit`` and says whether it ``is_fitted``.
    """

    name: ClassVar[str] = ""
    #: what :meth:`score` takes: ``"logits"`` (an ``(n, C)`` matrix), or ``"detections"``
    #: (one :class:`~ebjr.scores.detection.Detections` per image, :mod:`ebjr.routing.detection`)
    scores_kind: ClassVar[str] = "logits"
    #: True when the score is meaningless on log-probabilities (the energy).
    needs_raw_logits: ClassVar[bool] = False
    #: True for a router that must be fitted on data before it scores (``auto``).
    requires_fit: ClassVar[bool] = False

    @property
    def is_fitted(self) -> bool:
        """Whether the router can score (always, for a router that learns nothing)."""
        return not self.requires_fit

    def _score(self, logits: Array) -> Array:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The constructor's parameters as stored (JSON-serialisable; a target as its
        dict), read from the constructor's signature."""
        out = {}
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if not hasattr(self, name):
                raise TypeError(
                    f"{type(self).__name__} must store its constructor argument {name!r} "
                    f"as self.{name} (its spec is read from the constructor's signature)"
                )
            out[name] = _plain(getattr(self, name))
        return out

    def to_spec(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, the form stored in bundles."""
        return {"name": self.name, "params": self.params()}

    def score(self, logits: Array, *, validate: bool = True) -> Array:
        """Routing score per row, shape ``(n,)``; higher = the student is fit.

        Args:
            logits: student logits, shape ``(n, C)``.
            validate: check shape, finiteness and (for energy) that the rows
                are not log-probabilities. Switch off only on a hot path whose
                input was already checked.

        Raises:
            InputError: bad shape, NaN or infinite values.
            LogProbabilityInputError: an energy router was given rows that
                are all log-probabilities (at least two rows are needed to
                tell).
        """
        if validate:
            logits = check_logits(logits)
            self.check_raw_logits(logits)
        return self._score(logits)

    def check_raw_logits(self, logits: Array, *, log_probs: bool = False) -> bool:
        """Refuse log-probabilities for a router that needs raw logits (the energy).

        ``log_probs`` says the model is known to return log-probabilities. With
        fewer than two rows nothing can be told. Returns whether the check
        could decide (so a caller can run it once per model, not per batch).

        Raises:
            LogProbabilityInputError: the rows are log-probabilities.
        """
        if not self.needs_raw_logits:
            return True
        if not log_probs:
            if logits.shape[0] < 2:
                return False
            if not scores.looks_like_log_probabilities(logits):
                return True
        raise LogProbabilityInputError(
            f"the {self.name!r} router needs raw logits, but every row's logsumexp is "
            f"~0 (|logsumexp| <= {scores.LOG_PROB_ATOL}): these are log-probabilities, "
            "on which the free energy is the same constant for every input and cannot "
            "route. Pass the model's raw logits (before softmax/log_softmax), or use a "
            "router that is meaningful on probabilities: 'softmax', 'entropy' or 'margin'."
        )

    def rows_fitted_on(self, logits: Array) -> int:
        """How many rows of ``logits`` this router was fitted on (0 for a fixed score).

        A data-driven router (``auto``) counts the rows it saw in ``fit``; a
        guarantee computed on those rows would not be valid.
        """
        return 0

    def route(self, logits: Array, threshold: float, *, validate: bool = True) -> Array:
        """Boolean mask, shape ``(n,)``: ``True`` where the row goes to the teacher.

        The student answers iff ``score >= threshold``; a score of ``-inf``
        (never fit, e.g. a specialized student's ``other``) always goes to the
        teacher, whatever the threshold.
        """
        return teacher_mask(self.score(logits, validate=validate), check_threshold(threshold))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.params().items()))))


#: the routers by name, tagged with what they score (their ``scores_kind``)
ROUTERS: Registry[type[Router]] = Registry("router", UnknownRouterError)
_R = TypeVar("_R", bound=type[Router])


def register_router(cls: _R) -> _R:
    """Class decorator that adds a router to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute 'name'")
    ROUTERS.add(cls.name, cls, tag=cls.scores_kind)
    return cls


def register_lazy(name: str, target: str, kind: str = "logits") -> None:
    """Register a router whose module is imported only when it is first asked for;
    ``kind`` is what it scores (its ``scores_kind``)."""
    ROUTERS.add_lazy(name, target, tag=kind)


def list_routers(pattern: str = "*", *, kind: str | None = "logits") -> list[str]:
    """Sorted names of the registered routers matching a shell-style ``pattern`` that
    score ``kind`` (``"logits"``, the default; ``"detections"``; ``None``: all)."""
    return ROUTERS.names(pattern, tag=kind)


def get_router(name: str | Router, **params: Any) -> Router:
    """Build the router registered as ``name`` with ``params``.

    A :class:`Router` instance is returned as it is (``params`` must then be
    empty).

    Raises:
        UnknownRouterError: ``name`` is not registered (the message lists the
            registered names).
        InputError: a parameter the router does not take, or a bad value.
    """
    if isinstance(name, Router):
        if params:
            raise InputError("parameters cannot be given together with a router instance")
        return name
    if not isinstance(name, str):
        raise InputError(f"router must be a name or a Router, got {type(name).__name__}")
    cls = ROUTERS.get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(f"bad parameters for router {name!r}: {exc}") from exc


def router_from_spec(spec: dict[str, Any]) -> Router:
    """Rebuild a router from ``{"name": ..., "params": {...}}`` (see :meth:`Router.to_spec`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InputError(f"a router spec is a dict with a 'name' string, got {spec!r}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise InputError(f"router spec 'params' must be a dict, got {params!r}")
    return get_router(spec["name"], **params)


