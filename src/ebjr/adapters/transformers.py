"""A Hugging Face transformers classifier (sequence or image classification).

Loading from the hub needs internet access; :meth:`TransformersAdapter.from_pretrained`
is the real loading path for users who have it (a local directory works
offline). Tests build tiny randomly initialised models from a config instead.
"""

from __future__ import annotations

from typing import Any

from ebjr._utils.arrays import Array
from ebjr.adapters.base import Adapter, ModelFiles
from ebjr.adapters.torch_module import extract_logits, to_tensor
from ebjr.exceptions import InputError, missing_dependency

__all__ = ["TransformersAdapter"]

TASKS = ("sequence-classification", "image-classification")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise missing_dependency("transformers", "transformers", "A transformers model") from exc
    return transformers


class TransformersAdapter(Adapter):
    """Run a transformers ``...ForSequenceClassification`` / ``...ForImageClassification``.

    Args:
        model: the ``PreTrainedModel``.
        preprocessor: a tokenizer (for text) or image processor; when given,
            batches of raw strings (or string pairs) or images are accepted.
        device: where the model and inputs go (default: the model's device).
        max_length: truncation length for text.

    A batch may be a dict of tensors (already tokenised or processed), a list
    of strings or of ``(text, text_pair)`` tuples (needs a tokenizer), or an
    array of images (needs an image processor, or already ``pixel_values``).
    """

    kind = "transformers"

    def __init__(
        self,
        model: Any,
        preprocessor: Any = None,
        *,
        device: Any = None,
        max_length: int | None = 512,
    ) -> None:
        tf = _transformers()
        import torch

        if not isinstance(model, tf.PreTrainedModel):
            raise InputError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else model.device
        if device is not None:
            self.model.to(self.device)
        self.preprocessor = preprocessor
        self.max_length = max_length
        self.name_or_path = getattr(model.config, "_name_or_path", "") or None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        task: str = "sequence-classification",
        *,
        trust_remote_code: bool = False,
        use_safetensors: bool | None = None,
        **kwargs: Any,
    ) -> TransformersAdapter:
        """Load a model and its preprocessor from the hub or a local directory.

        Args:
            name_or_path: a hub id (``"textattack/bert-base-uncased-SST-2"``)
                or a local directory saved with ``save_pretrained``.
            task: ``"sequence-classification"`` or ``"image-classification"``.
            trust_remote_code: run model code from the hub (off; a bundle never does).
            use_safetensors: ``True`` refuses pickled weights (what a bundle asks).
            **kwargs: passed to :class:`TransformersAdapter`.
        """
        load = {"trust_remote_code": trust_remote_code, "use_safetensors": use_safetensors}
        tf = _transformers()
        if task == "sequence-classification":
            model = tf.AutoModelForSequenceClassification.from_pretrained(name_or_path, **load)
            pre = tf.AutoTokenizer.from_pretrained(name_or_path,
                                                   trust_remote_code=trust_remote_code)
        elif task == "image-classification":
            model = tf.AutoModelForImageClassification.from_pretrained(name_or_path, **load)
            pre = tf.AutoImageProcessor.from_pretrained(name_or_path,
                                                        trust_remote_code=trust_remote_code)
        else:
            raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        return cls(model, pre, **kwargs)

    def _encode(self, batch: Any) -> Any:
        if isinstance(batch, dict):
            return batch
        if isinstance(batch, list | tuple) and batch and isinstance(batch[0], str | tuple | list):
            if self.preprocessor is None:
                raise InputError("raw text needs a tokenizer: pass preprocessor=AutoTokenizer...")
            if isinstance(batch[0], str):
                enc = self.preprocessor(
                    list(batch),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
            else:
                first, second = zip(*batch, strict=True)
                enc = self.preprocessor(
                    list(first),
                    list(second),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
            return dict(enc)
        if self.preprocessor is not None and hasattr(self.preprocessor, "preprocess"):
            return dict(self.preprocessor(images=list(batch), return_tensors="pt"))
        return {"pixel_values": batch}

    def forward(self, batch: Any) -> Array:
        import torch

        inputs = to_tensor(self._encode(batch), self.device, self.model.dtype)
        with torch.inference_mode():
            return extract_logits(self.model(**inputs))

    def reference(self) -> dict[str, Any] | None:
        if self.name_or_path:
            return {"kind": "transformers", "name_or_path": self.name_or_path}
        return None

    @classmethod
    def from_reference(cls, ref: dict[str, Any], files: ModelFiles) -> TransformersAdapter:
        # a bundle never runs code: no model code from the hub, no pickled weights
        return cls.from_pretrained(ref["name_or_path"], device=files.device,
                                   trust_remote_code=False, use_safetensors=True)

    def __repr__(self) -> str:
        return f"TransformersAdapter({type(self.model).__name__})"
