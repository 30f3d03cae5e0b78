"""The adapter contract and its registry: what each kind accepts, and how it is re-loaded.

Each adapter module registers its class: :func:`register_adapter` with a
predicate saying which models it wraps (for :func:`as_adapter`), and
:func:`register_reference` with the reference kinds it writes to a bundle and
reads back (:meth:`Adapter.write_files`, :meth:`Adapter.from_reference`). The
built-in kinds are registered here by name only (``"module:Class"``), so this
module imports none of them; each is imported the first time it is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ebjr._utils.arrays import Array, check_logits
from ebjr._utils.lazy import load_attr
from ebjr._utils.registry import Registry
from ebjr.exceptions import BundleError, InputError

__all__ = [
    "Adapter",
    "ModelFiles",
    "adapter_for_reference",
    "as_adapter",
    "register_adapter",
    "register_reference",
]


class ModelFiles(Protocol):
    """What a bundle gives an adapter that re-loads itself (see ``ebjr.bundle.persist``)."""

    device: Any
    role: str  # "student" or "teacher", for messages

    def file(self, ref: dict[str, Any]) -> Path:
        """The model file that ``ref`` names, checked against its SHA-256."""
        ...

    def external(self, name: str, sha256: str) -> Path:
        """A further file beside the model (e.g. ONNX external weights), checked likewise."""
        ...

    def factory(self, spec: Any) -> Callable[..., Any]:
        """The model builder ``spec`` names, if it is registered or the caller trusts it."""
        ...

    def check_torchscript(self) -> None:
        """Raise :class:`BundleError` unless the caller allows TorchScript (a program)."""
        ...


class Adapter:
    """A model seen as ``batch -> logits`` of shape ``(n, C)``.

    Subclasses implement :meth:`forward`. Calling the adapter runs
    :meth:`forward` and checks that the model returned one finite row of
    logits per input, so a broken model is caught where it breaks.

    Attributes:
        kind: short name of the model kind (``torch``, ``onnx``, ...).
        returns_log_probs: the adapter can only see probabilities and
            returns their logarithm (the free energy is then constant: route
            with ``softmax``, ``entropy`` or ``margin`` instead).
    """

    kind: ClassVar[str] = ""
    returns_log_probs: bool = False

    def forward(self, batch: Any) -> Array:
        raise NotImplementedError

    def __call__(self, batch: Any) -> Array:
        n = batch_size(batch)
        logits = check_logits(self.forward(batch), f"{self.kind or 'model'} output")
        if logits.shape[0] != n:
            raise InputError(
                f"the {self.kind or 'model'} returned {logits.shape[0]} rows of logits for a "
                f"batch of {n} inputs; expected one row per input"
            )
        return logits

    def reference(self) -> dict[str, Any] | None:
        """How to rebuild this model from a bundle (``None``: cannot be saved)."""
        return None

    def write_files(self, ref: dict[str, Any], folder: Path, stem: str) -> dict[str, Any]:
        """Write the files ``ref`` needs into ``folder`` (named from ``stem``); the reference,
        with a ``file`` entry for each written file. A reference with no file: as it is."""
        return ref

    @classmethod
    def from_reference(cls, ref: dict[str, Any], files: ModelFiles) -> Adapter:
        """The adapter a bundle's ``ref`` describes (the inverse of :meth:`reference`)."""
        raise BundleError(f"{cls.__name__} cannot be re-loaded from a bundle")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def batch_size(batch: Any) -> int:
    """Number of inputs in a batch (array, tensor, list, or dict of those)."""
    if isinstance(batch, dict):
        if not batch:
            raise InputError("a batch given as a dict must hold at least one array")
        return batch_size(next(iter(batch.values())))
    shape = getattr(batch, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise InputError("a batch must have a leading batch dimension, got a scalar")
        return int(shape[0])
    if isinstance(batch, list | tuple):
        return len(batch)
    raise InputError(
        "a batch must be an array, a tensor, a list or a dict of arrays, got "
        f"{type(batch).__name__}"
    )


# (predicate, factory) pairs tried first by as_adapter (registered by users)
_DISPATCH: list[tuple[Callable[[Any], bool], Callable[..., Adapter]]] = []


def register_adapter(predicate: Callable[[Any], bool], factory: Callable[..., Adapter]) -> None:
    """Teach :func:`as_adapter` a new model kind (tried before the built-in kinds)."""
    _DISPATCH.insert(0, (predicate, factory))


def _is_torch_module(m: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(m, torch.nn.Module)


def _is_transformers_model(m: Any) -> bool:
    tf = sys.modules.get("transformers")
    return tf is not None and isinstance(m, tf.PreTrainedModel)


def _is_onnx(m: Any) -> bool:
    if isinstance(m, str) and m.endswith(".onnx"):
        return True
    ort = sys.modules.get("onnxruntime")
    return ort is not None and isinstance(m, ort.InferenceSession)


def _is_sklearn(m: Any) -> bool:
    return hasattr(m, "fit") and (hasattr(m, "predict_proba") or hasattr(m, "decision_function"))


#: the built-in kinds, in the order tried: what each accepts, and its class by name
_BUILT_IN: list[tuple[Callable[[Any], bool], str]] = [
    (_is_transformers_model, "ebjr.adapters.transformers:TransformersAdapter"),
    (_is_torch_module, "ebjr.adapters.torch_module:TorchAdapter"),
    (_is_onnx, "ebjr.adapters.onnx:OnnxAdapter"),
    (_is_sklearn, "ebjr.adapters.sklearn:SklearnAdapter"),
    (callable, "ebjr.adapters.callable:CallableAdapter"),
]

#: bundle reference kind -> the adapter class that reads it
MODEL_KINDS: Registry[type[Adapter]] = Registry("model kind")
for _kind, _cls in (("factory", "ebjr.adapters.torch_module:TorchAdapter"),
                    ("torchscript", "ebjr.adapters.torch_module:TorchAdapter"),
                    ("onnx", "ebjr.adapters.onnx:OnnxAdapter"),
                    ("transformers", "ebjr.adapters.transformers:TransformersAdapter"),
                    ("remote_v2", "ebjr.adapters.remote:RemoteV2Adapter")):
    MODEL_KINDS.add_lazy(_kind, _cls)


def register_reference(kind: str, cls: type[Adapter], schema: Any = None) -> None:
    """Let bundles name ``kind``: ``cls.from_reference`` re-loads such a reference.

    Args:
        schema: the reference's fields, a subclass of
            :class:`ebjr.adapters.references.Reference` (default: ``kind`` and nothing
            else), checked before anything is built.

    Raises:
        InputError: ``kind`` is registered already.
    """
    from ebjr.adapters.references import SCHEMAS, Reference

    if kind in MODEL_KINDS:
        raise InputError(f"a model kind named {kind!r} is already registered")
    MODEL_KINDS.add(kind, cls)
    SCHEMAS[kind] = schema or Reference


def adapter_for_reference(kind: str) -> type[Adapter]:
    """The adapter class that re-loads a bundle reference of ``kind``.

    Raises:
        UnknownNameError: ``kind`` is not registered.
    """
    return MODEL_KINDS.get(kind)


def as_adapter(model: Any, **kwargs: Any) -> Adapter:
    """Wrap ``model`` in the adapter of its kind.

    Recognised: an :class:`Adapter` (returned as is), a transformers
    ``PreTrainedModel``, a torch ``nn.Module``, an ONNX Runtime session or an
    ``.onnx`` path, a scikit-learn classifier, and any other callable.

    Raises:
        InputError: ``model`` is none of these.
    """
    if isinstance(model, Adapter):
        if kwargs:
            raise InputError("options cannot be given together with an Adapter instance")
        return model
    for predicate, factory in _DISPATCH:
        if predicate(model):
            return factory(model, **kwargs)
    for predicate, target in _BUILT_IN:
        if predicate(model):
            return load_attr(target)(model, **kwargs)
    raise InputError(
        f"cannot use a {type(model).__name__} as a model: expected a torch nn.Module, an ONNX "
        "file or session, a scikit-learn classifier, a transformers model, or a callable "
        "batch -> logits"
    )
