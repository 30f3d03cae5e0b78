"""A model behind an Open Inference Protocol v2 server (KServe, Triton, ``ebjr serve``).

The request is one FP32 tensor of the batch; the response's output (by name,
or the first one) must be ``(n, C)`` logits. :func:`v2_request` and
:func:`v2_logits` are the codec the server's async remote teacher uses too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.adapters.base import Adapter, ModelFiles
from ebjr.exceptions import InputError, missing_dependency

__all__ = ["RemoteV2Adapter", "v2_logits", "v2_request"]


def v2_request(rows: Any, input_name: str = "input") -> dict[str, Any]:
    """The JSON body of an infer request carrying ``rows`` as one FP32 tensor."""
    x = np.ascontiguousarray(to_numpy(rows), dtype=np.float32)
    return {
        "inputs": [
            {
                "name": input_name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ]
    }


def v2_logits(payload: Any, n: int, output_name: str | None = None) -> np.ndarray:
    """The ``(n, C)`` logits in an infer response; :class:`InputError` if it has none."""
    outputs = payload.get("outputs") if isinstance(payload, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise InputError(f"the v2 response has no outputs: {str(payload)[:200]}")
    if output_name is None:
        out = outputs[0]
    else:
        named = [o for o in outputs if isinstance(o, dict) and o.get("name") == output_name]
        if not named:
            names = [o.get("name") for o in outputs if isinstance(o, dict)]
            raise InputError(f"the v2 response has no output {output_name!r} (it has {names})")
        out = named[0]
    try:
        shape = [int(d) for d in out["shape"]]
        arr = np.asarray(out["data"], dtype=np.float64).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the v2 response's output is not a numeric tensor: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != n:
        raise InputError(f"expected ({n}, C) logits from the remote model, got shape {arr.shape}")
    return arr


class RemoteV2Adapter(Adapter):
    """A remote model over the Open Inference Protocol v2 REST API (blocking client).

    Args:
        url: the model's URL, e.g. ``http://host:8001/v2/models/teacher``
            (``/infer`` is appended).
        input_name, output_name: tensor names (``None``: the first output).
        timeout: seconds per attempt; ``retries``: further attempts on
            connection errors, timeouts and 5xx answers.
    """

    kind = "remote_v2"

    def __init__(
        self,
        url: str,
        *,
        input_name: str = "input",
        output_name: str | None = None,
        timeout: float = 10.0,
        retries: int = 1,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is in the serve extra
            raise missing_dependency("httpx", "serve", "a remote v2 model") from exc
        if not url.startswith(("http://", "https://")):
            raise InputError(f"expected an http(s) URL of a v2 model, got {url!r}")
        self.url = url.rstrip("/")
        self.input_name = input_name
        self.output_name = output_name
        self.retries = retries
        self._client = httpx.Client(timeout=timeout)

    def forward(self, batch: Any) -> np.ndarray:
        import httpx

        try:
            from ebjr._utils.retry import Retryable, attempts
        except ImportError as exc:  # pragma: no cover - tenacity is in the serve extra
            raise missing_dependency("tenacity", "serve", "a remote v2 model") from exc

        body = v2_request(batch, self.input_name)
        n = body["inputs"][0]["shape"][0]
        try:
            for attempt in attempts(self.retries):
                with attempt:
                    try:
                        r = self._client.post(f"{self.url}/infer", json=body)
                    except httpx.TimeoutException as exc:
                        raise Retryable("timeout", str(exc) or "timed out") from exc
                    except httpx.TransportError as exc:
                        raise Retryable("connection", str(exc) or type(exc).__name__) from exc
                    if r.status_code >= 500 or r.status_code == 429:
                        raise Retryable("http_5xx", f"HTTP {r.status_code}: {r.text[:200]}")
                    if r.status_code != 200:
                        raise InputError(
                            f"the remote model refused the batch ({r.status_code}): "
                            f"{r.text[:300]}"
                        )
                    return v2_logits(r.json(), n, self.output_name)
        except Retryable as exc:
            raise ConnectionError(f"the remote model at {self.url} did not answer: {exc}") from exc
        raise ConnectionError(f"the remote model at {self.url} did not answer")  # unreachable

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def reference(self) -> dict[str, Any]:
        return {
            "kind": "remote_v2",
            "url": self.url,
            "input_name": self.input_name,
            "output_name": self.output_name,
        }

    @classmethod
    def from_reference(cls, ref: dict[str, Any], files: ModelFiles) -> RemoteV2Adapter:
        return cls(
            ref["url"], input_name=ref.get("input_name", "input"),
            output_name=ref.get("output_name"),
        )

    def __repr__(self) -> str:
        return f"RemoteV2Adapter({self.url!r})"
