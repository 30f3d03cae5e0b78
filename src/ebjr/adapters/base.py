"""The adapter contract and the dispatcher that picks an adapter for a model."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

from ebjr._utils.arrays import Array, check_logits
from ebjr.exceptions import InputError

__all__ = ["Adapter", "as_adapter", "register_adapter"]


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


# (predicate, factory) pairs tried in order by as_adapter
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
    if _is_transformers_model(model):
        from ebjr.adapters.transformers import TransformersAdapter

        return TransformersAdapter(model, **kwargs)
    if _is_torch_module(model):
        from ebjr.adapters.torch_module import TorchAdapter

        return TorchAdapter(model, **kwargs)
    if _is_onnx(model):
        from ebjr.adapters.onnx import OnnxAdapter

        return OnnxAdapter(model, **kwargs)
    if _is_sklearn(model):
        from ebjr.adapters.sklearn import SklearnAdapter

        return SklearnAdapter(model, **kwargs)
    if callable(model):
        from ebjr.adapters.callable import CallableAdapter

        return CallableAdapter(model, **kwargs)
    raise InputError(
        f"cannot use a {type(model).__name__} as a model: expected a torch nn.Module, an ONNX "
        "file or session, a scikit-learn classifier, a transformers model, or a callable "
        "batch -> logits"
    )
