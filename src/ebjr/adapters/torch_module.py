"""A PyTorch ``nn.Module`` (or TorchScript module)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ebjr._utils.arrays import Array
from ebjr.adapters.base import Adapter, ModelFiles
from ebjr.exceptions import BundleError, InputError, missing_dependency

__all__ = ["TorchAdapter", "extract_logits", "to_tensor"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise missing_dependency("torch", "torch", "A PyTorch model") from exc
    return torch


def to_tensor(batch: Any, device: Any, dtype: Any = None) -> Any:
    """Move a batch (numpy array, tensor, list, or dict of those) to ``device`` as tensors.

    Floating arrays take ``dtype`` (the model's); integer arrays keep theirs.
    """
    torch = _torch()
    if isinstance(batch, dict):
        return {k: to_tensor(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        t = batch
    else:
        try:
            import numpy as np

            t = torch.as_tensor(np.asarray(batch))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot turn the batch into a tensor: {exc}") from exc
    if t.is_floating_point() and dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t.to(device, non_blocking=True) if t.device != torch.device(device) else t


def extract_logits(out: Any) -> Any:
    """The logits tensor of a model output: a tensor, ``out.logits``, ``out["logits"]``,
    or the first element of a tuple. A list of per-image results (detections: dicts or
    objects with ``boxes``) is returned as it is, for the task kind to read."""
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list) and out and all(
            "boxes" in o if isinstance(o, dict) else hasattr(o, "boxes") for o in out):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if logits is None and isinstance(out, tuple | list) and out:
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise InputError(
            f"the model returned a {type(out).__name__}; expected a logits tensor, an object "
            "with .logits, a dict with 'logits', or a tuple whose first item is the logits"
        )
    return logits


class TorchAdapter(Adapter):
    """Run a torch module in eval and inference mode; logits stay on its device.

    Args:
        module: an ``nn.Module`` (or a TorchScript ``ScriptModule``).
        device: where inputs are moved (default: the module's parameters' device).
        factory: ``"package.module:function"`` that builds the architecture, so
            a bundle can rebuild it and load a state dict into it.
        factory_kwargs: keyword arguments for ``factory`` (JSON-serialisable).

    Inputs may be numpy arrays or tensors (moved to ``device``; floating
    inputs take the parameters' dtype), or a dict passed as keyword arguments.
    """

    kind = "torch"

    def __init__(
        self,
        module: Any,
        *,
        device: Any = None,
        factory: str | None = None,
        factory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise InputError(f"expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module.eval()
        param = next(iter(module.parameters()), None)
        self.device = (
            torch.device(device)
            if device is not None
            else (param.device if param is not None else torch.device("cpu"))
        )
        self.dtype = param.dtype if param is not None and param.is_floating_point() else None
        if device is not None and param is not None and param.device != self.device:
            self.module.to(self.device)
        self.factory = factory
        self.factory_kwargs = dict(factory_kwargs or {})

    def forward(self, batch: Any) -> Array:
        torch = _torch()
        x = to_tensor(batch, self.device, self.dtype)
        with torch.inference_mode():
            out = self.module(**x) if isinstance(x, dict) else self.module(x)
        return extract_logits(out)

    def reference(self) -> dict[str, Any] | None:
        torch = _torch()
        if isinstance(self.module, torch.jit.ScriptModule):
            return {"kind": "torchscript"}
        if self.factory:
            return {"kind": "factory", "factory": self.factory, "kwargs": self.factory_kwargs}
        return None

    def write_files(self, ref: dict[str, Any], folder: Path, stem: str) -> dict[str, Any]:
        torch = _torch()
        if ref["kind"] == "factory":
            name = f"{stem}.state_dict.pt"
            state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
            torch.save(state, folder / name)
        else:
            name = f"{stem}.torchscript.pt"
            torch.jit.save(self.module, str(folder / name))
        return {**ref, "file": name}

    @classmethod
    def from_reference(cls, ref: dict[str, Any], files: ModelFiles) -> TorchAdapter:
        torch = _torch()
        f = files.file(ref)
        if ref["kind"] == "torchscript":
            files.check_torchscript()
            return cls(torch.jit.load(str(f), map_location="cpu"), device=files.device)
        from ebjr.adapters.builders import call_builder

        build = files.factory(ref["factory"])  # a registered or explicitly allowed builder
        try:  # the weights are read (as data only) before any builder runs
            state = torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise BundleError(
                f"the {files.role}'s weights file {str(f)!r} is not a plain state dict of tensors "
                f"(ebjr never unpickles other objects): {str(exc).splitlines()[0]}"
            ) from exc
        if not isinstance(state, dict):
            raise BundleError(f"the {files.role}'s weights file {str(f)!r} holds a "
                              f"{type(state).__name__}, not a state dict")
        kwargs = ref.get("kwargs") or {}
        module = call_builder(build, kwargs, ref["factory"], files.role)
        if not isinstance(module, torch.nn.Module):
            raise BundleError(f"the {files.role}'s factory {ref['factory']!r} returned a "
                              f"{type(module).__name__}, not a torch module")
        try:
            module.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
            detail = " ".join(str(exc).split())  # torch's message spans many lines
            raise BundleError(
                f"the {files.role}'s weights do not fit {ref['factory']}: "
                f"{detail[:400]}{'...' if len(detail) > 400 else ''}"
            ) from exc
        return cls(module, device=files.device, factory=ref["factory"], factory_kwargs=kwargs)

    def __repr__(self) -> str:
        return f"TorchAdapter({type(self.module).__name__}, device={self.device})"
