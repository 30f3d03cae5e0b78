"""An ONNX model run by ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ebjr._utils.arrays import Array, to_numpy
from ebjr.adapters.base import Adapter, ModelFiles
from ebjr.exceptions import BundleError, InputError, missing_dependency

__all__ = ["OnnxAdapter", "external_data_files"]


class OnnxAdapter(Adapter):
    """Run an ONNX model with ONNX Runtime (CPU by default).

    Args:
        model: path of an ``.onnx`` file, or an ``onnxruntime.InferenceSession``.
        input_name: the graph input fed with the batch (default: the first).
        output_name: the graph output holding the logits (default: the first).
        providers: ONNX Runtime execution providers.

    Inputs are converted to numpy with the input's declared element type;
    a dict batch feeds several graph inputs by name.
    """

    kind = "onnx"
    _DTYPES: ClassVar[dict[str, Any]] = {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
    }

    def __init__(
        self,
        model: Any,
        *,
        input_name: str | None = None,
        output_name: str | None = None,
        providers: list[str] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_dependency("onnxruntime", "onnx", "An ONNX model") from exc
        self.path: str | None = None
        if isinstance(model, str | Path):
            p = Path(model)
            if not p.is_file():
                raise InputError(f"ONNX file not found: {str(p)!r}")
            self.path = str(p)
            try:
                model = ort.InferenceSession(
                    self.path, providers=providers or ["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise InputError(f"ONNX Runtime cannot load {str(p)!r}: {exc}") from exc
        if not isinstance(model, ort.InferenceSession):
            raise InputError(f"expected an .onnx path or an InferenceSession, got {type(model)}")
        self.session = model
        inputs = {i.name: i for i in model.get_inputs()}
        outputs = [o.name for o in model.get_outputs()]
        self.input_name = input_name or next(iter(inputs))
        if self.input_name not in inputs:
            raise InputError(
                f"the ONNX graph has no input {self.input_name!r}; it has {list(inputs)}"
            )
        self.output_name = output_name or outputs[0]
        if self.output_name not in outputs:
            raise InputError(f"the ONNX graph has no output {self.output_name!r}; it has {outputs}")
        self._input_types = {name: self._DTYPES.get(i.type) for name, i in inputs.items()}

    def _feed(self, name: str, value: Any) -> np.ndarray:
        arr = to_numpy(value)
        dtype = self._input_types.get(name)
        return arr.astype(dtype, copy=False) if dtype is not None else arr

    def forward(self, batch: Any) -> Array:
        if isinstance(batch, dict):
            feed = {k: self._feed(k, v) for k, v in batch.items()}
        else:
            feed = {self.input_name: self._feed(self.input_name, batch)}
        try:
            (out,) = self.session.run([self.output_name], feed)
        except Exception as exc:
            raise InputError(f"ONNX Runtime rejected the batch: {exc}") from exc
        return out

    def reference(self) -> dict[str, Any] | None:
        return {"kind": "onnx"} if self.path else None

    def write_files(self, ref: dict[str, Any], folder: Path, stem: str) -> dict[str, Any]:
        name = f"{stem}.onnx"
        _copy_onnx(Path(str(self.path)), folder / name)
        return {**ref, "file": name}

    @classmethod
    def from_reference(cls, ref: dict[str, Any], files: ModelFiles) -> OnnxAdapter:
        path = files.file(ref)
        listed = ref.get("external_data") or {}
        for location in external_data_files(path):
            if location not in listed:
                raise BundleError(
                    f"the {files.role}'s ONNX model {str(path)!r} reads weights from "
                    f"{location!r}, which the bundle does not list with its SHA-256 "
                    "(models.{role}.external_data); save the model again with ebjr.save, "
                    "which stores it as one file".replace("{role}", files.role)
                )
            files.external(location, listed[location])
        return cls(str(path))

    def __repr__(self) -> str:
        return f"OnnxAdapter({self.path or 'session'})"


def _copy_onnx(src: Path, dest: Path) -> None:
    """Copy an ONNX model into one self-contained file (external weight files inlined)."""
    if src.resolve() == dest.resolve():
        return
    try:
        import onnx
    except ImportError:
        shutil.copyfile(src, dest)
        return
    model = onnx.load(str(src))  # also reads external data files beside src
    try:
        onnx.save_model(model, str(dest), save_as_external_data=False)
    except ValueError as exc:  # protobuf's 2 GB limit
        raise BundleError(
            f"the ONNX model {str(src)!r} is too large for one file ({exc}); save it with a "
            "factory or TorchScript instead"
        ) from exc


def external_data_files(path: Path) -> list[str]:
    """The files an ONNX model reads its weights from besides itself (read without them).

    Raises:
        BundleError: a location that is not a plain file name beside the model.
    """
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    except ImportError as exc:
        raise missing_dependency("onnx", "onnx", "Checking an ONNX model of a bundle") from exc
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's own decode errors
        raise BundleError(f"{str(path)!r} is not an ONNX model: {exc}") from exc
    found: list[str] = []
    graphs = [model.graph, *(f for f in model.functions)]
    while graphs:
        g = graphs.pop()
        tensors = list(getattr(g, "initializer", []))
        for node in g.node:
            for attr in node.attribute:
                tensors += [attr.t, *attr.tensors] if attr.HasField("t") else list(attr.tensors)
                graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for t in tensors:
            if uses_external_data(t):
                location = ExternalDataInfo(t).location
                if Path(location).name != location or location in ("", ".", ".."):
                    raise BundleError(f"the ONNX model {str(path)!r} reads weights from "
                                      f"{location!r}, outside its folder")
                if location not in found:
                    found.append(location)
    return found
