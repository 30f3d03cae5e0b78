"""How a serving process runs its models: on how many threads, and with which allocator
settings.

Two measured costs on a small CPU (``benchmarks/model_threads.py``; docs/serve.md):

- **Two model threads on one core take turns and evict each other's caches.** A joint
  engine runs the student and the teacher on a thread each, so that on two or more cores
  one model's batch runs while the other's does. On one core (a Ray replica with
  ``num_cpus=1``) that buys nothing: the kernel switches between them every few ms, and
  each model finds its weights evicted. There, one thread for every model, running
  their batches one after another, spends less CPU per image.
- **glibc returns a batch's freed activations to the OS, and the next batch faults them
  in again.** PyTorch's CPU allocator uses ``malloc``; a model's activations are freed
  after every batch, glibc gives the top of its heaps back (``M_TRIM_THRESHOLD``) and
  serves large blocks with fresh ``mmap`` pages (``M_MMAP_THRESHOLD``), so every batch
  pays page faults and the zeroing of new pages in system time. Keeping that memory for
  the next batch (the habit of jemalloc and tcmalloc, which PyTorch's CPU tuning guide
  recommends) costs resident memory up to the models' peak working set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["model_threads", "prepare_process", "process_cpus", "reuse_freed_memory",
           "share_model_thread"]

log = logging.getLogger("ebjr.serve")

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest M_MMAP_THRESHOLD glibc accepts on 64-bit (a larger one is refused)
_MMAP_MAX = 32 * 1024 * 1024
#: free memory at a heap's top that glibc may keep before returning it to the OS
_TRIM = 1 << 30

_reused: bool | None = None


def prepare_process(torch_threads: int | None, reuse_memory: bool) -> None:
    """Before a serving process loads its models: torch's intra-op threads (None: torch's
    own), and with ``reuse_memory``, :func:`reuse_freed_memory`."""
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    if reuse_memory:
        reuse_freed_memory()


def reuse_freed_memory() -> bool:
    """Keep memory the models free for their next batch instead of returning it to the OS
    (glibc: blocks up to 32 MiB come from the heap, and up to 1 GiB of free heap stays).
    Process-wide and applied once; True if applied, False where the C library is not
    glibc (nothing changes)."""
    global _reused
    if _reused is None:
        _reused = _mallopt()
    return _reused


def _mallopt() -> bool:
    try:  # glibc names its version; other C libraries (musl, macOS, Windows) do not
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        glibc = None
    name = ctypes.util.find_library("c")
    if glibc is None or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM))
    except (OSError, AttributeError, ValueError) as exc:
        log.warning("could not tune the allocator (%s); models run as they are", exc)
        return False
    if not ok:
        log.warning("glibc refused the allocator settings; models run as they are")
    return ok


def process_cpus() -> float:
    """The CPUs this process may use: the cores it may run on, capped by a cgroup CPU
    quota (a container's ``--cpus``)."""
    try:
        n: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return min(n, quota) if quota is not None else n


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of the cgroup mounted at ``root`` (v2 ``cpu.max``, else v1's
    ``cpu/cpu.cfs_quota_us`` over its period), or None without one."""
    try:
        fields = (root / "cpu.max").read_text().split()
        return None if fields[0] == "max" else int(fields[0]) / int(fields[1])
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def share_model_thread(setting: bool | None, cpus: float) -> bool:
    """Whether the models of one process run on one shared thread: ``setting``, or (None)
    when the process has less than two ``cpus``, so that two model threads could never
    run at once. With two or more, each model keeps its thread even when their intra-op
    threads oversubscribe the cores: on 2 cores at 2 torch threads per model, the joint
    pattern of ``benchmarks/model_threads.py`` took 2.1 ms per image on two threads and
    3.5 on one."""
    return cpus < 2 if setting is None else setting


def model_threads(share: bool | None, names: list[str]) -> dict[str, ThreadPoolExecutor]:
    """The thread each model of ``names`` runs on: one each, or one for all (``share``, or
    None: :func:`share_model_thread` on this process's CPUs), which then runs one call at
    a time, in the order they were asked."""
    if share_model_thread(share, process_cpus()):
        one = ThreadPoolExecutor(1, thread_name_prefix="ebjr-models")
        return dict.fromkeys(names, one)
    return {name: ThreadPoolExecutor(1, thread_name_prefix=f"ebjr-{name}") for name in names}
