"""Shared fixtures (helpers live in helpers.py so tests can import them)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import load_pair


@pytest.fixture(scope="session")
def cifar10_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ResNet-20 (student) and ResNet-56 (teacher) on the CIFAR-10 test set."""
    return load_pair("cifar10_resnet20.npz", "cifar10_resnet56.npz")


@pytest.fixture(scope="session")
def quickstart_bundle(tmp_path_factory):
    """The quickstart's bundle (6 epochs, about 15 s), built once per test session."""
    from ebjr.examples.quickstart import QuickstartConfig, run_quickstart

    out = tmp_path_factory.mktemp("quickstart")
    summary = run_quickstart(out, QuickstartConfig(epochs=6), progress=False)
    return summary["bundle"]


#: whole test files of the integration tier (``pytest -m integration``): real Ray clusters,
#: a real browser, load loops against a server process; single tests elsewhere carry the mark
INTEGRATION_FILES = ("scale_out/", "serve/test_serve_demo.py", "serve/test_serve_live.py")


@pytest.hookimpl(tryfirst=True)  # before -m selects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.as_posix()
        if any(f"/tests/{part}" in path for part in INTEGRATION_FILES):
            item.add_marker(pytest.mark.integration)
