"""Routers: a score per input plus the rule "the student answers iff score >= threshold".

Every router exposes :meth:`Router.score` (shape ``(n,)``, **higher means the
student is fit to answer**) and :meth:`Router.route`, which returns a boolean
mask that is ``True`` for the rows that go to the teacher
(``score < threshold``). For the energy router the score is ``-F`` (the
negative free energy), so thresholds are in the paper's units.

One registry holds every router; look routers up by name:

>>> import numpy as np
>>> router = get_router("energy", temperature=1.0)
>>> router.route(np.array([[9.0, 0.0], [0.1, 0.0]]), threshold=2.0)
array([False,  True])
>>> list_routers("*entropy*")
['entropy']
"""

from __future__ import annotations

import fnmatch
import importlib
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ebjr import scores
from ebjr._arrays import Array, check_logits, namespace
from ebjr.exceptions import InputError, LogProbabilityInputError, UnknownRouterError

__all__ = [
    "EnergyRouter",
    "EntropyRouter",
    "MarginRouter",
    "MaxLogitRouter",
    "PaperCodeRouter",
    "RandomRouter",
    "Router",
    "SoftmaxRouter",
    "SpecializedRouter",
    "check_threshold",
    "get_router",
    "list_routers",
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
    """``True`` where a row goes to the teacher: ``score < threshold`` or ``score == -inf``."""
    return (scores < threshold) | (scores == -math.inf)


class Router:
    """Base class: subclasses set ``name`` and implement :meth:`_score`.

    Constructor arguments are stored as given and returned by :meth:`params`,
    so a router can be rebuilt from its spec (see :func:`router_from_spec`).
    """

    name: ClassVar[str] = ""
    #: True when the score is meaningless on log-probabilities (the energy).
    needs_raw_logits: ClassVar[bool] = False

    def _score(self, logits: Array) -> Array:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Constructor parameters, JSON-serialisable."""
        return {}

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
            if (
                self.needs_raw_logits
                and logits.shape[0] >= 2
                and scores.looks_like_log_probabilities(logits)
            ):
                raise LogProbabilityInputError(
                    f"the {self.name!r} router needs raw logits, but every row's logsumexp is "
                    f"~0 (|logsumexp| <= {scores.LOG_PROB_ATOL}): these are log-probabilities, "
                    "on which the free energy is the same constant for every input and cannot "
                    "route. Pass the model's raw logits (before softmax/log_softmax), or use a "
                    "router that is meaningful on probabilities: 'softmax', 'entropy' or 'margin'."
                )
        return self._score(logits)

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


_REGISTRY: dict[str, type[Router] | str] = {}


def register_router(cls: type[Router]) -> type[Router]:
    """Class decorator that adds a router to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute 'name'")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls and not isinstance(existing, str):
        raise ValueError(f"a router named {cls.name!r} is already registered ({existing!r})")
    _REGISTRY[cls.name] = cls
    return cls


def _lazy(name: str, target: str) -> None:
    """Register a router whose module is imported only when it is first asked for."""
    _REGISTRY.setdefault(name, target)


def list_routers(pattern: str = "*") -> list[str]:
    """Sorted names of the registered routers matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def _resolve(name: str) -> type[Router]:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownRouterError(
            f"unknown router {name!r}; the registered routers are: {', '.join(list_routers())}"
        )
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = cls
        return cls
    return entry


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
    cls = _resolve(name)
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


def _simple(cls_name: str, name: str, fn: Callable[..., Array], doc: str) -> type[Router]:
    def _score(self: Router, logits: Array) -> Array:
        return fn(logits, validate=False)

    cls = type(
        cls_name,
        (Router,),
        {"name": name, "_score": _score, "__doc__": doc, "__module__": __name__},
    )
    return register_router(cls)


@register_router
class EnergyRouter(Router):
    """The paper's router: score ``-F(x) = T * logsumexp(logits / T)`` (eq. 3 and 6).

    Args:
        temperature: ``T > 0``; the paper uses 1.
    """

    name = "energy"
    needs_raw_logits = True

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature
        scores._check_temperature(temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": float(self.temperature)}

    def _score(self, logits: Array) -> Array:
        return -scores.free_energy(logits, self.temperature, validate=False)


SoftmaxRouter = _simple(
    "SoftmaxRouter", "softmax", scores.softmax_confidence, "Baseline: maximum softmax probability."
)
EntropyRouter = _simple(
    "EntropyRouter",
    "entropy",
    scores.negative_entropy,
    "Baseline: negative entropy of the softmax.",
)
MaxLogitRouter = _simple(
    "MaxLogitRouter", "maxlogit", scores.max_logit, "Baseline: the largest logit."
)
MarginRouter = _simple(
    "MarginRouter", "margin", scores.margin, "Baseline: top-1 minus top-2 softmax probability."
)
PaperCodeRouter = _simple(
    "PaperCodeRouter",
    "paper_code",
    scores.softmax_logsumexp,
    "What the paper's released code routed on: logsumexp of the softmax probabilities.\n\n"
    "Not the free energy of eq. 3 (see :func:`ebjr.scores.softmax_logsumexp`); kept to\n"
    "reproduce that code's numbers (its thresholds: 2.46 on CIFAR-10, 4.6195 on CIFAR-100).",
)


@register_router
class RandomRouter(Router):
    """Baseline: a uniform random score in ``[0, 1)`` per row, from a seeded stream.

    With this score the threshold *is* the expected teacher fraction. Each call
    draws fresh numbers from the router's generator, so the same router gives
    a reproducible stream for a given seed.

    Args:
        seed: seed of the numpy generator.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise InputError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _score(self, logits: Array) -> Array:
        xp = namespace(logits)
        u = self._rng.random(logits.shape[0])
        device = getattr(logits, "device", None)
        if device is None or isinstance(logits, np.ndarray):
            return xp.asarray(u, dtype=logits.dtype)
        return xp.asarray(u, dtype=logits.dtype, device=device)


@register_router
class SpecializedRouter(Router):
    """Router of a specialized student (paper's eq. 16-17).

    The score is the negative free energy over the real classes, excluding
    the ``other`` column; a row whose argmax is ``other`` scores ``-inf`` and so
    always goes to the teacher, whatever the threshold.

    Args:
        other_index: the student's ``other`` column (default: the last).
        temperature: ``T > 0`` of the energy.
    """

    name = "specialized"
    needs_raw_logits = True

    def __init__(self, other_index: int = -1, temperature: float = 1.0) -> None:
        if isinstance(other_index, bool) or not isinstance(other_index, int):
            raise InputError(f"other_index must be an integer, got {other_index!r}")
        self.other_index = other_index
        self.temperature = temperature
        scores._check_temperature(temperature)

    def params(self) -> dict[str, Any]:
        return {"other_index": self.other_index, "temperature": float(self.temperature)}

    def _score(self, logits: Array) -> Array:
        xp = namespace(logits)
        c = logits.shape[1]
        if not -c <= self.other_index < c:
            raise InputError(
                f"other_index {self.other_index} is not a column of logits with {c} classes"
            )
        s = -scores.specialized_free_energy(
            logits, self.other_index, self.temperature, validate=False
        )
        is_other = xp.argmax(logits, axis=1) == (self.other_index % c)
        return xp.where(is_other, xp.asarray(-math.inf, dtype=s.dtype), s)


_lazy("auto", "ebjr.auto:AutoRouter")
