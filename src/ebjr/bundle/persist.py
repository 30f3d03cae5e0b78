"""Saving and loading a whole joint model: the routing bundle plus model references.

``ebjr.save(joint, "out/model.json")`` writes the bundle JSON and, beside it,
one file per model; ``ebjr.load("out/model.json")`` rebuilds the
:class:`~ebjr.joint.JointModel`. Model references by kind:

- ``factory``: a torch module rebuilt by a *model builder*
  (``"package.module:function"``) called with plain keyword arguments, then a
  state dict read with ``torch.load(..., weights_only=True)`` and loaded with
  ``strict=True``. Only registered builders run (``@ebjr.model_builder``:
  ebjr's zoo, or your code once imported), or names the caller gives exactly
  (``allow_factories=["mypkg.models:make_net"]``); never a pattern.
- ``torchscript``: a ``torch.jit`` archive. TorchScript is a program (PyTorch
  has no safe mode for ``torch.jit.load``), so it loads only with
  ``allow_torchscript=True``.
- ``onnx``: an ONNX file run by ONNX Runtime; weights stored outside the file
  load only when the bundle lists each file with its SHA-256.
- ``transformers``: a hub id or local directory (``from_pretrained`` with
  safetensors only and no remote code).
- ``remote_v2``: an Open Inference Protocol v2 model URL.

Loading checks the whole document (:func:`ebjr.bundle.read_bundle`), then every
model's trust and files (:func:`check`), and only then builds anything.

Each kind is its adapter's business (``Adapter.write_files`` and
``Adapter.from_reference``, found through the adapters' registry); this module
checks files and factories for them.

Every file is stored with its SHA-256; a missing or altered file fails to load
with a :class:`~ebjr.exceptions.BundleError` that says which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebjr.adapters.base import Adapter, adapter_for_reference
from ebjr.adapters.builders import check_allowed_names, check_builder, resolve_builder
from ebjr.bundle import RoutingBundle, read_bundle, write_bundle
from ebjr.bundle.cascade import CascadeRecord, read_cascade_document
from ebjr.exceptions import BundleError
from ebjr.joint import JointModel
from ebjr.joint.cascade_model import CascadeModel

__all__ = ["check", "load", "load_model", "load_routing", "read_record", "save"]

ROLES = ("student", "teacher")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _save_model(adapter: Adapter, role: str, folder: Path, prefix: str) -> dict[str, Any]:
    """Write one model's files (named ``prefix.*``) and return its reference; ``role`` names
    the model in messages."""
    ref = adapter.reference()
    if ref is None:
        raise BundleError(
            f"cannot save the {role} ({adapter!r}): give a torch module a factory "
            "(TorchAdapter(module, factory='pkg.mod:fn', factory_kwargs={...})), script it "
            "with torch.jit, or export it to ONNX"
        )
    ref = adapter.write_files(dict(ref), folder, prefix)
    if "file" in ref:
        ref["sha256"] = _sha256(folder / ref["file"])
    return ref


def save(joint: JointModel | CascadeModel, path: str | Path,
         calibration: RoutingBundle | None = None, inputs: tuple = ()) -> Path:
    """Write ``joint`` as a bundle JSON at ``path`` with its model files beside it.

    A :class:`~ebjr.joint.cascade_model.CascadeModel` is written as a cascade
    document (:mod:`ebjr.bundle.cascade`) whose every stage holds its model's
    reference (``calibration`` does not apply to it).

    Args:
        joint: the joint model (its router, current threshold and class map are saved).
        path: the JSON file to write.
        calibration: the routing bundle the threshold came from (costs, target and
            calibration summary are copied from it); ``None`` for an uncalibrated model.
        inputs: files the bundle must not overwrite (a command's own inputs).
    """
    from ebjr._utils.files import check_output

    if not isinstance(joint, JointModel | CascadeModel):
        raise BundleError(
            f"ebjr.save writes a JointModel (or JointDetector) or a CascadeModel, got "
            f"{type(joint).__name__}")
    p = check_output(path, inputs, "bundle")
    if isinstance(joint, CascadeModel):
        return _save_cascade(joint, p)
    models = {role: _save_model(getattr(joint, role), role, p.parent, f"{p.stem}.{role}")
              for role in ROLES}
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
        input=base.input,
        curve=base.curve,
        max_teacher_batch=joint.max_teacher_batch,
        task=joint.task.to_spec(),
        extra=base.extra,
    )
    return write_bundle(bundle, p, inputs)


def _save_cascade(model: CascadeModel, p: Path) -> Path:
    from dataclasses import replace

    if model.elsewhere:
        raise BundleError(f"cannot save a CascadeModel whose stages {list(model.elsewhere)} run "
                          "elsewhere: save the one that holds every stage's model")

    from ebjr.bundle.cascade import write_cascade

    refs = {name: _save_model(model.adapters[name], f"stage {name!r}", p.parent,
                              f"{p.stem}.stage{i}")  # stage names need not be file names
            for i, name in enumerate(model.stages)}
    live = replace(model.cascade, thresholds=model.thresholds)  # the knob as it is now
    return write_cascade(live, p, models=refs, input=model.input)


def _cascade_checked(p: Path, stages: tuple[str, ...] | None, device: Any,
                     allow: list[str] | None, allow_torchscript: bool, first_only: bool = False
                     ) -> tuple[CascadeRecord, dict[str, _BundleFiles]]:
    """The cascade document at ``p`` and the checked files of ``stages`` (default: all; the
    first one only with ``first_only``)."""
    record = read_cascade_document(p)
    cascade, refs = record.cascade, record.models
    missing = [s for s in cascade.stages if s not in refs]
    if missing:
        raise BundleError(
            f"{str(p)!r} is a cascade document without model references for {missing}: "
            "it was written by 'ebjr cascade' for precomputed outputs; build a CascadeModel "
            "from your models and ebjr.bundle.cascade.read_cascade(path) instead"
        )
    unknown = [s for s in stages or () if s not in cascade.stages]
    if unknown:
        raise BundleError(f"{str(p)!r} has no stage(s) {unknown}; its stages are "
                          f"{list(cascade.stages)}")
    names = cascade.stages[:1] if first_only else cascade.stages if stages is None else stages
    files = {s: _files(p.parent, f"stage {s!r}", device, allow, allow_torchscript)
             for s in names}
    for s in names:  # every model checked before any is built
        _check_model(files[s], refs[s])
    return record, files


def _load_cascade(p: Path, device: Any, allow: list[str] | None,
                  allow_torchscript: bool, first_only: bool = False) -> CascadeModel:
    record, files = _cascade_checked(p, None, device, allow, allow_torchscript, first_only)
    cascade = record.cascade
    built = {s: _build(record.models[s], files[s]) for s in files}
    model = CascadeModel(built, cascade, input=record.input,
                         elsewhere=cascade.stages[1:] if first_only else ())
    model.bundle = record  # type: ignore[attr-defined]
    return model


def read_record(path: str | Path) -> RoutingBundle | CascadeRecord:
    """The bundle (or the cascade document) at ``path``, read and checked as a document; no
    model file is read (:func:`check` checks those too)."""
    p = Path(path)
    return read_cascade_document(p) if _format_of(p) == "ebjr.cascade" else read_bundle(p)


def load_routing(path: str | Path) -> CascadeModel:
    """The cascade document at ``path`` as a :class:`CascadeModel` that routes only: every
    stage's model runs elsewhere (``ebjr.ray``'s one deployment per stage); none is read."""
    p = Path(path)
    record = read_cascade_document(p)
    model = CascadeModel({}, record.cascade, input=record.input,
                         elsewhere=record.cascade.stages)
    model.bundle = record  # type: ignore[attr-defined]
    return model


def _format_of(p: Path) -> str | None:
    """The ``format`` field of the JSON document at ``p`` (``None`` if it has none)."""
    from ebjr.bundle.schema import read_document

    doc = read_document(p)
    return doc.get("format") if isinstance(doc, dict) else None


def _check_file(folder: Path, name: str, expected: str, role: str) -> Path:
    """``folder / name`` if it exists and has the SHA-256 ``expected`` (the schema has
    checked that ``name`` is a plain file name)."""
    f = folder / name
    if not f.is_file():
        raise BundleError(f"the {role}'s model file is missing: {str(f)!r}")
    actual = _sha256(f)
    if expected != actual:
        raise BundleError(
            f"the {role}'s model file {str(f)!r} does not match the bundle "
            f"(sha256 {actual[:12]}... "
            f"instead of {str(expected)[:12]}...): it was changed or replaced after saving"
        )
    return f


@dataclass
class _BundleFiles:
    """The :class:`~ebjr.adapters.base.ModelFiles` of one model of a bundle."""

    folder: Path
    role: str
    device: Any
    allow: list[str]
    allow_torchscript: bool
    checked: dict[tuple[str, str], Path] = field(default_factory=dict)  # hashed once per load

    def file(self, ref: dict[str, Any]) -> Path:
        return self.external(ref["file"], ref["sha256"])

    def external(self, name: str, sha256: str) -> Path:
        if (name, sha256) not in self.checked:
            self.checked[name, sha256] = _check_file(self.folder, name, sha256, self.role)
        return self.checked[name, sha256]

    def factory(self, spec: Any) -> Any:
        return resolve_builder(spec, self.allow, self.role)

    def check_factory(self, spec: Any) -> None:
        check_builder(spec, self.allow, self.role)

    def check_torchscript(self) -> None:
        if not self.allow_torchscript:
            raise BundleError(
                f"the {self.role} is a TorchScript archive, which is a program: PyTorch cannot "
                "load one safely. Load it only if you trust this bundle: "
                "allow_torchscript=True (ebjr ... --allow-torchscript)"
            )


def _files(folder: Path, role: str, device: Any, allow: list[str] | None,
           allow_torchscript: bool) -> _BundleFiles:
    return _BundleFiles(folder, role, device, check_allowed_names(allow or [], BundleError),
                        allow_torchscript)


def _check_model(files: _BundleFiles, ref: dict[str, Any]) -> None:
    """Everything about one reference that can be checked without building it."""
    if ref["kind"] == "factory":
        files.check_factory(ref["factory"])
    elif ref["kind"] == "torchscript":
        files.check_torchscript()
    if "file" in ref:
        files.file(ref)
    for name, digest in (ref.get("external_data") or {}).items():
        files.external(name, digest)


def _roles(bundle: RoutingBundle, p: Path, roles: tuple[str, ...]) -> None:
    missing = [r for r in roles if r not in bundle.models]
    if missing:
        raise BundleError(
            f"{str(p)!r} is a routing bundle without model references ({', '.join(missing)} "
            "missing): it was written by 'ebjr calibrate' for precomputed outputs; build a "
            "JointModel from your models and that threshold instead"
        )


def _checked(p: Path, roles: tuple[str, ...], device: Any, allow: list[str] | None,
             allow_torchscript: bool) -> tuple[RoutingBundle, dict[str, _BundleFiles]]:
    bundle = read_bundle(p)
    _roles(bundle, p, roles)
    files = {role: _files(p.parent, role, device, allow, allow_torchscript) for role in roles}
    for role in roles:
        _check_model(files[role], bundle.models[role])
    return bundle, files


def check(
    path: str | Path,
    roles: tuple[str, ...] = ROLES,
    *,
    allow_factories: list[str] | None = None,
    allow_torchscript: bool = False,
) -> Any:
    """Check the bundle at ``path`` and the models of ``roles`` without building any.

    The document against its schema, each model's builder against the trusted
    ones, TorchScript against ``allow_torchscript``, and every file against its
    SHA-256. What :func:`load` does first; ``ebjr serve`` calls it before it starts.

    A cascade document (:mod:`ebjr.bundle.cascade`) has every stage's model checked
    (``roles`` does not apply) and its :class:`~ebjr.bundle.cascade.CascadeRecord` returned.

    Raises:
        BundleError: the first problem found, naming the role and the field.
    """
    if _format_of(Path(path)) == "ebjr.cascade":
        return _cascade_checked(Path(path), None, None, allow_factories, allow_torchscript)[0]
    return _checked(Path(path), roles, None, allow_factories, allow_torchscript)[0]


def _build(ref: dict[str, Any], files: _BundleFiles) -> Adapter:
    """The adapter of a checked reference (its files are not hashed again)."""
    return adapter_for_reference(ref["kind"]).from_reference(ref, files)


def load_model(
    path: str | Path,
    role: str,
    *,
    device: Any = None,
    allow_factories: list[str] | None = None,
    allow_torchscript: bool = False,
) -> tuple[Adapter, Any]:
    """Load one model (``"student"`` or ``"teacher"``; of a cascade document, a stage's name)
    of the bundle at ``path``, and the bundle.

    Args:
        allow_factories: exact builder names to trust besides the registered ones.
        allow_torchscript: load a TorchScript archive (a program) if the bundle has one.
    """
    if _format_of(Path(path)) == "ebjr.cascade":
        record, files = _cascade_checked(Path(path), (role,), device, allow_factories,
                                         allow_torchscript)
        return _build(record.models[role], files[role]), record
    if role not in ROLES:
        raise BundleError(f"role must be one of {ROLES}, got {role!r}")
    bundle, files = _checked(Path(path), (role,), device, allow_factories, allow_torchscript)
    return _build(bundle.models[role], files[role]), bundle


def load(
    path: str | Path,
    *,
    device: Any = None,
    allow_factories: list[str] | None = None,
    allow_torchscript: bool = False,
    teacher: Any = None,
    student_side: bool = False,
) -> Any:
    """Rebuild the :class:`~ebjr.joint.JointModel` saved at ``path`` (or the
    :class:`~ebjr.joint.cascade_model.CascadeModel`, for a cascade document).

    Args:
        allow_factories: exact model-builder names (``"mypkg.models:make_net"``) to
            trust besides the registered ones (``ebjr.list_builders()``); no patterns.
        allow_torchscript: load TorchScript archives (programs) if the bundle has them.
        teacher: use this model as the teacher instead of the bundle's (e.g.
            a :class:`~ebjr.adapters.remote.RemoteV2Adapter` for an edge/cloud
            split); the bundle's teacher is then not loaded.
        student_side: load no teacher at all: the model routes and merges, and
            the teacher's logits come from elsewhere (``ebjr.ray``'s stages); of a
            cascade, only the first stage's model is loaded.

    Raises:
        BundleError: a malformed bundle, a missing or altered model file, an
            untrusted builder or TorchScript, or weights that do not fit the
            architecture; checked for every model before any is built.
    """
    p = Path(path)
    if _format_of(p) == "ebjr.cascade":
        if teacher is not None:
            raise BundleError(f"{str(p)!r} is a cascade of models: teacher= applies to a "
                              "student/teacher bundle")
        return _load_cascade(p, device, allow_factories, allow_torchscript, student_side)
    roles = ("student",) if teacher is not None or student_side else ROLES
    bundle, files = _checked(Path(path), roles, device, allow_factories, allow_torchscript)
    adapters = {role: _build(bundle.models[role], files[role]) for role in roles}
    joint = JointModel(
        adapters["student"],
        adapters.get("teacher", teacher),
        bundle.make_router(),
        bundle.threshold,
        task=bundle.make_task(),
        max_teacher_batch=bundle.max_teacher_batch,
    )
    joint.bundle = bundle  # type: ignore[attr-defined]
    return joint
