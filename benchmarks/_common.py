"""What the benchmarks share: paths, a ``--smoke`` flag, writing results, medians.

Every benchmark takes ``--smoke``: a few seconds of the same code on tiny
sizes, run by CI to prove the script still works. A smoke run writes its
results under the system's temporary folder, never over ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ebjr.bundle import dumps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
MODELS = SHARED / "models" / "ebjr-densenet"
RESULTS = ROOT / "benchmarks" / "results"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the module's first paragraph, with ``--smoke``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, results in a temporary folder (what CI runs)")
    return p


def results_dir(smoke: bool) -> Path:
    """Where results go: ``benchmarks/results``, or a temporary folder for a smoke run."""
    out = Path(tempfile.gettempdir()) / "ebjr-benchmark-smoke" if smoke else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(name: str, data: Any, markdown: str, *, smoke: bool = False) -> Path:
    """Write ``<name>.json`` (strict JSON) and ``<name>.md``, print the markdown; the folder."""
    out = results_dir(smoke)
    (out / f"{name}.json").write_text(dumps(data, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
    return out


def need(path: Path, what: str) -> Path:
    """``path``, or exit with a message naming what is missing."""
    if not path.exists():
        sys.exit(f"needs {what} at {path} (../shared; see its README)")
    return path


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
