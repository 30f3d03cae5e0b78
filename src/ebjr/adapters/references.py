"""The schema of every model reference a bundle may hold, checked before anything is built.

A reference is plain data: a ``kind``, the model file beside the bundle with
its SHA-256, and what the kind needs besides (a builder's name and plain
keyword arguments, an ONNX model's external weight files with their digests,
a hub id, a URL). :func:`validate_reference` checks one against its kind's
schema and names the role and the field that is wrong; it imports nothing
heavy, so ``ebjr serve`` can refuse a bad bundle before it starts.

A kind registered by :func:`ebjr.adapters.base.register_reference` brings its
own schema (a subclass of :class:`Reference`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from ebjr._utils.factory import SPEC_PATTERN
from ebjr.exceptions import BundleError

__all__ = [
    "FactoryReference",
    "FileReference",
    "OnnxReference",
    "Reference",
    "RemoteV2Reference",
    "TorchScriptReference",
    "TransformersReference",
    "describe_errors",
    "validate_reference",
]

#: a file beside the bundle: a plain name, no folder, no leading dot
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,254}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
BuilderName = Annotated[
    str, StringConstraints(pattern=f"^{SPEC_PATTERN.pattern}$", max_length=200)
]
#: a builder's keyword argument: a JSON scalar, or a short list of them
ShortText = Annotated[str, StringConstraints(max_length=256)]
Scalar = StrictBool | StrictInt | StrictFloat | ShortText | None
KwargValue = Scalar | Annotated[list[Scalar], Field(max_length=64)]


class Reference(BaseModel):
    """Every reference: its ``kind``; nothing else unless the kind's schema says so."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str


class FileReference(Reference):
    """A model stored in one file beside the bundle, with its SHA-256."""

    file: FileName
    sha256: Sha256


class FactoryReference(FileReference):
    """A torch module: a registered builder called with plain data, then a state dict."""

    kind: Literal["factory"]
    factory: BuilderName
    kwargs: Annotated[dict[Identifier, KwargValue], Field(max_length=64)] = {}


class TorchScriptReference(FileReference):
    """A TorchScript archive: a program, so it loads only when the caller allows TorchScript."""

    kind: Literal["torchscript"]


class OnnxReference(FileReference):
    """An ONNX graph; weights stored outside it are listed here with their digests."""

    kind: Literal["onnx"]
    external_data: Annotated[dict[FileName, Sha256], Field(max_length=1024)] = {}


class TransformersReference(Reference):
    """A transformers model by hub id or local folder (safetensors only, no remote code)."""

    kind: Literal["transformers"]
    name_or_path: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class RemoteV2Reference(Reference):
    """An Open Inference Protocol v2 model at a URL."""

    kind: Literal["remote_v2"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
    input_name: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "input"
    output_name: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


#: reference kind -> its schema (kinds registered later add theirs)
SCHEMAS: dict[str, type[Reference]] = {
    "factory": FactoryReference,
    "torchscript": TorchScriptReference,
    "onnx": OnnxReference,
    "transformers": TransformersReference,
    "remote_v2": RemoteV2Reference,
}


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as ``field: what was wrong (got ...)``, at most five, one line."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        parts.append(f"{loc or 'document'}: {err['msg']}{got}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_reference(ref: Any, role: str) -> dict[str, Any]:
    """``ref`` checked against its kind's schema, as plain data.

    Raises:
        BundleError: not an object, an unknown kind, or a field that does not fit; the
            message names the role and the field.
    """
    if not isinstance(ref, dict):
        raise BundleError(f"models.{role}: a model reference is a JSON object, got {_short(ref)}")
    kind = ref.get("kind")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise BundleError(
            f"models.{role}.kind: unknown model kind {_short(kind)}; known kinds: "
            f"{', '.join(sorted(SCHEMAS))}"
        )
    try:
        return schema.model_validate(ref).model_dump()
    except ValidationError as exc:
        raise BundleError(f"the {role}'s reference is invalid: "
                          f"{describe_errors(exc, f'models.{role}')}") from None
