"""Saving and loading a whole joint model: the routing bundle plus model references.

``ebjr.save(joint, "out/model.json")`` writes the bundle JSON and, beside it,
one file per model; ``ebjr.load("out/model.json")`` rebuilds the
:class:`~ebjr.joint.JointModel`. Model references by kind:

- ``factory``: a torch module rebuilt by calling ``"package.module:function"``
  with JSON keyword arguments, then loading a state dict with
  ``torch.load(..., weights_only=True)`` and ``strict=True``. Importing code
  named by a file is a trust decision, so only factories under ``ebjr.`` load
  by default; allow others with ``allow_factories=["mypkg.models:*"]``.
- ``torchscript``: a ``torch.jit`` archive (``torch.jit.load``).
- ``onnx``: an ONNX file run by ONNX Runtime.
- ``transformers``: a hub id or local directory (``from_pretrained``).
- ``remote_v2``: an Open Inference Protocol v2 model URL.

Each kind is its adapter's business (``Adapter.write_files`` and
``Adapter.from_reference``, found through the adapters' registry); this module
checks files and factories for them.

Every file is stored with its SHA-256; a missing or altered file fails to load
with a :class:`~ebjr.exceptions.BundleError` that says which.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ebjr._utils.factory import check_factory_spec, import_factory
from ebjr.adapters.base import Adapter, adapter_for_reference
from ebjr.bundle import RoutingBundle, read_bundle, write_bundle
from ebjr.exceptions import BundleError
from ebjr.joint import JointModel

__all__ = ["load", "load_model", "save"]

ROLES = ("student", "teacher")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _save_model(adapter: Adapter, role: str, folder: Path, stem: str) -> dict[str, Any]:
    ref = adapter.reference()
    if ref is None:
        raise BundleError(
            f"cannot save the {role} ({adapter!r}): give a torch module a factory "
            "(TorchAdapter(module, factory='pkg.mod:fn', factory_kwargs={...})), script it "
            "with torch.jit, or export it to ONNX"
        )
    ref = adapter.write_files(dict(ref), folder, f"{stem}.{role}")
    if "file" in ref:
        ref["sha256"] = _sha256(folder / ref["file"])
    return ref


def save(joint: JointModel, path: str | Path, calibration: RoutingBundle | None = None) -> Path:
    """Write ``joint`` as a bundle JSON at ``path`` with its model files beside it.

    Args:
        joint: the joint model (its router, current threshold and class map are saved).
        path: the JSON file to write.
        calibration: the routing bundle the threshold came from (costs, target and
            calibration summary are copied from it); ``None`` for an uncalibrated model.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    models = {role: _save_model(getattr(joint, role), role, p.parent, p.stem) for role in ROLES}
    base = calibration or RoutingBundle(
        router=joint.router.to_spec(),
        threshold=joint.threshold,
        costs={},
        target={},
        calibration={},
    )
    bundle = RoutingBundle(
        router=joint.router.to_spec(),
        threshold=joint.threshold,
        costs=base.costs,
        target=base.target,
        calibration=base.calibration,
        class_map=None if joint.class_map is None else joint.class_map.tolist(),
        models=models,
        extra={**base.extra, "max_teacher_batch": joint.max_teacher_batch},
    )
    return write_bundle(bundle, p)


def _check_file(folder: Path, ref: dict[str, Any], role: str) -> Path:
    name = ref.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise BundleError(f"the {role}'s file entry must be a plain file name, got {name!r}")
    f = folder / name
    if not f.is_file():
        raise BundleError(f"the {role}'s model file is missing: {str(f)!r}")
    expected = ref.get("sha256")
    actual = _sha256(f)
    if expected != actual:
        raise BundleError(
            f"the {role}'s model file {str(f)!r} does not match the bundle "
            f"(sha256 {actual[:12]}... "
            f"instead of {str(expected)[:12]}...): it was changed or replaced after saving"
        )
    return f


def _factory(spec: str, allow: list[str]) -> Any:
    check_factory_spec(spec, BundleError)
    if not any(fnmatch.fnmatchcase(spec, pattern) for pattern in ["ebjr.*", *allow]):
        raise BundleError(
            f"the bundle asks to run the factory {spec!r}, which is not trusted: pass "
            f"allow_factories=[{spec!r}] if you trust this bundle"
        )
    return import_factory(spec, BundleError)


@dataclass
class _BundleFiles:
    """The :class:`~ebjr.adapters.base.ModelFiles` of one model of a bundle."""

    folder: Path
    role: str
    device: Any
    allow: list[str]

    def file(self, ref: dict[str, Any]) -> Path:
        return _check_file(self.folder, ref, self.role)

    def factory(self, spec: Any) -> Any:
        return _factory(spec, self.allow)


def _load_model(folder: Path, ref: Any, role: str, device: Any, allow: list[str]) -> Adapter:
    if not isinstance(ref, dict) or "kind" not in ref:
        raise BundleError(f"the bundle has no usable {role} reference: {ref!r}")
    cls = adapter_for_reference(ref["kind"])
    return cls.from_reference(ref, _BundleFiles(folder, role, device, allow))


def load_model(
    path: str | Path,
    role: str,
    *,
    device: Any = None,
    allow_factories: list[str] | None = None,
) -> tuple[Adapter, RoutingBundle]:
    """Load one model (``"student"`` or ``"teacher"``) of the bundle at ``path``, and the bundle."""
    if role not in ROLES:
        raise BundleError(f"role must be one of {ROLES}, got {role!r}")
    p = Path(path)
    bundle = read_bundle(p)
    if role not in bundle.models:
        raise BundleError(f"{str(p)!r} has no {role} model reference")
    adapter = _load_model(p.parent, bundle.models[role], role, device, list(allow_factories or []))
    return adapter, bundle


def load(
    path: str | Path,
    *,
    device: Any = None,
    allow_factories: list[str] | None = None,
    teacher: Any = None,
    student_side: bool = False,
) -> JointModel:
    """Rebuild the :class:`~ebjr.joint.JointModel` saved at ``path``.

    Args:
        teacher: use this model as the teacher instead of the bundle's (e.g.
            a :class:`~ebjr.adapters.remote.RemoteV2Adapter` for an edge/cloud
            split); the bundle's teacher is then not loaded.
        student_side: load no teacher at all: the model routes and merges, and
            the teacher's logits come from elsewhere (``ebjr.ray``'s stages).

    Raises:
        BundleError: a malformed bundle, a missing or altered model file, an
            untrusted factory, or weights that do not fit the architecture.
    """
    p = Path(path)
    bundle = read_bundle(p)
    missing = [
        r for r in ROLES
        if r not in bundle.models and not (r == "teacher" and (teacher or student_side))
    ]
    if missing:
        raise BundleError(
            f"{str(p)!r} is a routing bundle without model references ({', '.join(missing)} "
            "missing): it was written by 'ebjr calibrate' for precomputed outputs; build a "
            "JointModel from your models and that threshold instead"
        )
    allow = list(allow_factories or [])
    student = _load_model(p.parent, bundle.models["student"], "student", device, allow)
    if teacher is None and not student_side:
        teacher = _load_model(p.parent, bundle.models["teacher"], "teacher", device, allow)
    joint = JointModel(
        student,
        teacher,
        bundle.make_router(),
        bundle.threshold,
        bundle.class_map,
        max_teacher_batch=bundle.extra.get("max_teacher_batch"),
    )
    joint.bundle = bundle  # type: ignore[attr-defined]
    return joint
