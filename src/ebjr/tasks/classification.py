"""Classification: a model's output is a row of logits; the answer is the argmax class and
the softmax probabilities, in the teacher's label space.

A *specialized* student (eq. 15-18) knows a subset of the teacher's classes
(and maybe an ``other`` class): ``class_map[j]`` is the teacher class of its
class ``j``, ``-1`` for none. Its answers are mapped into the teacher's label
space, its probabilities spread into the teacher's columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ebjr._utils.arrays import Array, check_logits
from ebjr.exceptions import InputError
from ebjr.scores import softmax
from ebjr.tasks.base import Answer, TaskKind, numpy_rows

__all__ = ["Classification"]


def _device(x: Any) -> Any:
    return getattr(x, "device", None)


class Classification(TaskKind):
    """Classification (specialized with ``class_map``).

    Args:
        class_map: for a student whose classes are a subset of the teacher's,
            ``class_map[j]`` is the teacher class of student class ``j`` (``-1``
            for none, e.g. ``other``); ``None``: one label space.
    """

    name = "classification"
    scores_kind = "logits"

    def __init__(self, class_map: Any = None) -> None:
        self.class_map = None if class_map is None else np.asarray(class_map, dtype=np.int64)
        if self.class_map is not None and self.class_map.ndim != 1:
            raise InputError(f"class_map must be 1-d, got shape {self.class_map.shape}")

    def params(self) -> dict[str, Any]:
        return {} if self.class_map is None else {"class_map": self.class_map.tolist()}

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.name}  # a bundle keeps the class map in its own field

    def check_output(self, out: Any, n: int, who: str) -> Array:
        logits = check_logits(out, f"{who} output")
        if logits.shape[0] != n:
            raise InputError(f"the {who} returned {logits.shape[0]} rows of logits for a batch "
                             f"of {n} inputs; expected one row per input")
        return logits

    # ------------------------------------------------------------ answers
    def _teacher_classes(self, s_out: Array, t_out: Array | None) -> int:
        if t_out is not None:
            return int(t_out.shape[1])
        if self.class_map is not None:
            return int(self.class_map.max()) + 1
        return int(s_out.shape[1])

    def answer(self, xp: Any, out: Array, role: str = "teacher",
               c_teacher: int | None = None) -> Answer:
        pred, probs = xp.argmax(out, axis=1), softmax(out, validate=False)
        if role == "student" and self.class_map is not None:
            return self._to_teacher_space(xp, pred, probs,
                                          c_teacher or self._teacher_classes(out, None))
        return Answer(pred, probs)

    def _to_teacher_space(self, xp: Any, pred: Array, probs: Array, c_teacher: int) -> Answer:
        cmap_np = self.class_map
        assert cmap_np is not None
        if cmap_np.shape[0] != probs.shape[1] or cmap_np.max() >= c_teacher:
            raise InputError(
                f"class_map has {cmap_np.shape[0]} entries into classes up to "
                f"{int(cmap_np.max())}, but the student gives {probs.shape[1]} classes "
                f"and the teacher {c_teacher}: it must map each student class to a teacher "
                "class (or -1)"
            )
        cmap = xp.asarray(cmap_np, device=_device(pred))
        mapped = xp.take(cmap, pred, axis=0)
        out = xp.zeros((probs.shape[0], c_teacher), dtype=probs.dtype, device=_device(probs))
        keep = np.flatnonzero(cmap_np >= 0)  # student columns with a teacher class
        src = xp.asarray(keep, device=_device(probs))
        dst = xp.asarray(cmap_np[keep], device=_device(probs))
        out[:, dst] = xp.take(probs, src, axis=1)
        return Answer(mapped, out)

    def merge(self, xp: Any, s_out: Array, routed: Array, t_out: Array | None) -> Answer:
        from ebjr._utils.arrays import scatter_rows

        if t_out is not None and self.class_map is None and t_out.shape[1] != s_out.shape[1]:
            raise InputError(
                f"the student has {s_out.shape[1]} classes and the teacher {t_out.shape[1]}; "
                "pass class_map to map the student's into the teacher's")
        if t_out is not None and self.class_map is None and t_out.dtype == s_out.dtype:
            # one label space and one dtype: merge the logits, then one softmax and one argmax
            k, n = int(routed.shape[0]), int(s_out.shape[0])
            merged = t_out if k == n else scatter_rows(xp, s_out, routed, t_out)
            return Answer(xp.argmax(merged, axis=1), softmax(merged, validate=False))
        student = self.answer(xp, s_out, "student", self._teacher_classes(s_out, t_out))
        if t_out is None:
            return student
        return self.replace(xp, student, routed, t_out)

    def replace(self, xp: Any, answer: Answer, routed: Array, t_out: Array) -> Answer:
        from ebjr._utils.arrays import scatter_rows

        assert answer.probabilities is not None
        if answer.probabilities.shape[1] != t_out.shape[1]:
            raise InputError(
                f"the student answers in {answer.probabilities.shape[1]} classes but the "
                f"teacher has {t_out.shape[1]}: "
                + ("the class_map maps into too few" if self.class_map is not None
                   else "give the model a class_map"))
        pred = scatter_rows(xp, answer.predictions, routed, xp.argmax(t_out, axis=1))
        probs = scatter_rows(xp, answer.probabilities, routed, softmax(t_out, validate=False))
        return Answer(pred, probs)

    def student_classes(self, xp: Any, s_out: Array) -> Array:
        """The student's class per row in the teacher's label space (``-1`` where its class
        has none), without its probabilities."""
        pred = xp.argmax(s_out, axis=1)
        if self.class_map is None:
            return pred
        return xp.take(xp.asarray(self.class_map, device=_device(pred)), pred, axis=0)

    def quality(self, predictions: Any, truth: Any) -> np.ndarray:
        return (numpy_rows(predictions) == numpy_rows(truth)).astype(np.float64)

    # ------------------------------------------------------------ transport
    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "predictions", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, -1]}]

    def tensors(self, answer: Any) -> list[tuple[str, np.ndarray]]:
        return [("predictions", numpy_rows(answer.predictions).astype(np.int64)),
                ("probabilities", numpy_rows(answer.probabilities).astype(np.float32))]

    def columns_for(self, answer: Any) -> dict[str, np.ndarray]:
        return {"prediction": numpy_rows(answer.predictions).astype(np.int64),
                "probabilities": numpy_rows(answer.probabilities).astype(np.float32)}
