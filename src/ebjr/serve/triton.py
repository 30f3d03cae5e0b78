"""Triton's extensions in Triton's own schema: statistics and the model configuration.

``tritonclient``'s ``get_inference_statistics`` and ``get_model_config`` read
these unchanged. Times are nanoseconds, as Triton counts them.
"""

from __future__ import annotations

from typing import Any

from ebjr.serve.protocol import NUMERIC_DATATYPES

__all__ = ["TRITON_TYPES", "TritonStats", "model_config", "model_statistics"]

#: protocol datatype -> Triton's config name for it
TRITON_TYPES = {**{k: f"TYPE_{k}" for k in NUMERIC_DATATYPES}, "BYTES": "TYPE_STRING"}


class TritonStats:
    """Request-level counters for Triton's statistics extension (nanoseconds)."""

    def __init__(self) -> None:
        self.inference_count = 0  # rows answered
        self.success = [0, 0]  # requests, ns
        self.fail = [0, 0]
        self.last_inference_ms = 0
        self.decode_ns = [0, 0]
        self.encode_ns = [0, 0]


def _dur(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def model_statistics(name: str, version: str, st: TritonStats, batches: Any) -> dict[str, Any]:
    """One model's entry of ``GET /v2/models/{name}/stats``: the request counters ``st``
    and the batching statistics ``batches`` (:class:`~ebjr.serve.batcher.BatchStats`, or
    None before the models load)."""
    if batches is None:
        queue = infer = _dur(0, 0)
        executions, per_size = 0, []
    else:
        queue = _dur(batches.requests, batches.queue_ns)
        infer = _dur(batches.requests, batches.compute_ns)
        executions = batches.executions
        per_size = [{"batch_size": size, "compute_infer": _dur(count, ns)}
                    for size, (count, ns) in sorted(batches.batches.items())]
    return {
        "name": name,
        "version": version,
        "last_inference": st.last_inference_ms,
        "inference_count": st.inference_count,
        "execution_count": executions,
        "inference_stats": {
            "success": _dur(*st.success),
            "fail": _dur(*st.fail),
            "queue": queue,
            "compute_input": _dur(*st.decode_ns),
            "compute_infer": infer,
            "compute_output": _dur(*st.encode_ns),
            "cache_hit": _dur(0, 0),
            "cache_miss": _dur(0, 0),
        },
        "batch_stats": per_size,
    }


def model_config(name: str, version: str, platform: str, inputs: list[dict[str, Any]],
                 outputs: list[dict[str, Any]], max_batch_size: int, preferred_batch: int,
                 max_wait_ms: float) -> dict[str, Any]:
    """``GET /v2/models/{name}/config``: the model's configuration as Triton writes it, from
    the protocol metadata of its ``inputs`` and ``outputs`` (first axis the batch)."""
    def tensors(metadata: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": t["name"], "data_type": TRITON_TYPES[t["datatype"]],
                 "dims": t["shape"][1:] or [1]} for t in metadata]

    return {
        "name": name,
        "platform": platform,
        "backend": "ebjr",
        "max_batch_size": max_batch_size,
        "input": tensors(inputs),
        "output": tensors(outputs),
        "dynamic_batching": {
            "preferred_batch_size": [preferred_batch],
            "max_queue_delay_microseconds": int(max_wait_ms * 1000),
        },
        "version_policy": {"specific": {"versions": [int(version)]}},
    }
