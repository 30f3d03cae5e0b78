"""What ``ebjr distill`` needs besides the training itself: reading inputs and references.

- Data: a ``.npy`` array, an ``.npz`` (its ``x``, ``images`` or only array), or a
  folder of images (PNG/JPEG, read with Pillow; all must share one size), as
  float32 scaled to ``[0, 1]`` for uint8 sources.
- Teacher: an ebjr bundle with models (its teacher is used), an ``.onnx``
  file, or ``package.module:function`` returning a torch module (with an
  optional state dict, read with ``weights_only=True``).
- Student: ``package.module:function`` returning an untrained torch module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ebjr._utils.factory import import_factory
from ebjr.exceptions import InputError

__all__ = ["distill_to_bundle", "load_inputs", "load_teacher", "make_module"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _scale(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind not in "fiu":
        raise InputError(f"inputs must be numeric, got dtype {x.dtype}")
    return x.astype(np.float32)


def load_inputs(source: str | Path) -> np.ndarray:
    """Unlabelled inputs from a ``.npy``/``.npz`` file or a folder of images."""
    p = Path(source)
    if p.is_dir():
        from PIL import Image

        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(p)!r}")
        arrays = []
        for f in files:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB" if im.mode != "L" else "L")))
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise InputError(f"images under {str(p)!r} differ in size: {sorted(shapes)[:3]}")
        return _scale(np.stack(arrays))
    if not p.is_file():
        raise InputError(f"data not found: {str(p)!r} (expected .npy, .npz or a folder)")
    if p.suffix == ".npy":
        return _scale(np.load(p, allow_pickle=False))
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            key = next(
                (k for k in ("x", "images") if k in keys), keys[0] if len(keys) == 1 else None
            )
            if key is None:
                raise InputError(f"{str(p)!r} holds {keys}; name the inputs 'x' or 'images'")
            return _scale(np.asarray(z[key]))
    raise InputError(f"unsupported data file {str(p)!r}: expected .npy, .npz or a folder")


def make_module(spec: str, kwargs_json: str | None = None) -> Any:
    """Call ``package.module:function`` with JSON keyword arguments.

    Returns:
        ``(module, kwargs)``.
    """
    factory = import_factory(spec)
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"factory arguments must be a JSON object: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise InputError(f"factory arguments must be a JSON object, got {kwargs!r}")
    return factory(**kwargs), kwargs


def load_teacher(ref: str, weights: str | None = None, kwargs_json: str | None = None,
                 **trust: Any) -> Any:
    """A teacher adapter from a bundle (its teacher only, loaded with ``trust``:
    ``allow_factories``, ``allow_torchscript``), an ``.onnx`` file, or a factory the
    user names (+ state dict)."""
    from ebjr.adapters.base import as_adapter

    if ref.endswith(".json"):
        from ebjr.bundle.persist import load_model

        return load_model(ref, "teacher", **trust)[0]
    if ref.endswith(".onnx"):
        return as_adapter(ref)
    import torch

    from ebjr.adapters.torch_module import TorchAdapter

    module, kwargs = make_module(ref, kwargs_json)
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        module.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return TorchAdapter(module, factory=ref, factory_kwargs=kwargs)


def distill_to_bundle(
    student_spec: str,
    teacher_ref: str,
    data: str | Path,
    output: str | Path,
    *,
    teacher_weights: str | None = None,
    teacher_kwargs: str | None = None,
    student_kwargs: str | None = None,
    router: str = "energy",
    temperature: float = 1.0,
    epochs: int = 30,
    max_disagreement: float = 0.01,
    confidence: float = 0.95,
    seed: int = 0,
    echo: Callable[[str], None] = print,
    allow_factories: list[str] | None = None,
    allow_torchscript: bool = False,
) -> tuple[Path, list[str]]:
    """Unlabelled inputs -> a student distilled from the teacher -> a label-free guaranteed
    threshold -> a bundle (what ``ebjr distill`` does). Returns the bundle's path and the
    factory patterns it loads with.

    80 % of the inputs train the student; the other 20 % (at least 20) calibrate the
    threshold with the disagreement loss, which needs no labels. Progress lines go to
    ``echo``. A teacher bundle loads its teacher only, trusting what ``allow_factories``
    and ``allow_torchscript`` name besides the registered builders.
    """
    import numpy as np
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.calibration.guarantee import GuaranteedDrop
    from ebjr.exceptions import InputError
    from ebjr.joint import JointModel
    from ebjr.training.classifier import predict_logits
    from ebjr.training.distill import distill, model_logits

    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    x = load_inputs(data)
    from ebjr.bundle.inputs import check_finite_rows

    check_finite_rows(x, list(range(len(x))), data)
    if x.shape[0] < 50:
        raise InputError(f"data needs at least 50 inputs, got {x.shape[0]}")
    trust = {"allow_factories": list(allow_factories or []),
             "allow_torchscript": allow_torchscript}
    teacher = load_teacher(teacher_ref, teacher_weights, teacher_kwargs, **trust)
    torch.manual_seed(seed)  # the student's initial weights are part of the result
    student, kwargs = make_module(student_spec, student_kwargs)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    n_cal = max(20, round(0.2 * x.shape[0]))
    cal, fit = perm[:n_cal], perm[n_cal:]
    result = distill(student, teacher, x[fit], temperature=temperature, epochs=epochs, seed=seed)
    echo(
        f"held-out KL to the teacher: {result.heldout_kl_before:.4f} -> "
        f"{result.heldout_kl_after:.4f} nats"
    )
    s_cal = predict_logits(student, x[cal]).numpy()
    t_cal = model_logits(teacher, x[cal])
    target = GuaranteedDrop(
        max_disagreement, round(1 - confidence, 12), loss="disagreement", seed=seed
    )
    costs = {"student_cost": 1.0, "teacher_cost": 1.0, "cost_unit": "model calls"}
    if hasattr(teacher, "module"):  # both are torch modules: count FLOPs per input
        from ebjr.joint.cost import count_flops

        example = torch.as_tensor(x[:8])
        costs = {
            "student_cost": count_flops(student, example),
            "teacher_cost": count_flops(teacher.module, example),
            "cost_unit": "FLOPs",
        }
    calibration = calibrate_outputs(s_cal, t_cal, None, target, router=router, seed=seed, **costs)
    echo(calibration.summary())
    joint = JointModel(
        TorchAdapter(student, factory=student_spec, factory_kwargs=kwargs),
        teacher,
        calibration.router,
        calibration.selection.threshold,
    )
    allow = [student_spec] + ([teacher_ref] if ":" in teacher_ref else [])
    allow += [a for a in trust["allow_factories"] if a not in allow]
    path = persist.save(joint, output, calibration.bundle, inputs=(data, teacher_ref))
    persist.load(path, allow_factories=allow,  # the bundle reads back before we say so
                 allow_torchscript=allow_torchscript)
    return path, allow
