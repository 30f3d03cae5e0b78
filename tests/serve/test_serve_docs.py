"""Every ``curl`` command and client example in docs/serve.md, run against a real server.

The blocks run as written, with the host and port of the test's server put in place
of ``localhost:8000`` and ``curl`` made to fail on an HTTP error.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serve_support import ServerProcess, make_serve_bundle

DOC = Path(__file__).resolve().parents[2] / "docs" / "serve.md"
TOKEN = "docs-token"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


CURL = [b for b in blocks("bash") if re.search(r"^curl ", b, flags=re.M)]
CLIENTS = [b for b in blocks("python") if "localhost:8000" in b]


def test_the_doc_has_what_the_tests_run():
    assert len(CURL) >= 2 and len(CLIENTS) == 2
    # a block either starts a server or calls one, never both
    assert not any("ebjr serve" in b for b in CURL)
    curls = sum(len(re.findall(r"^curl ", b, flags=re.M)) for b in CURL)
    assert curls == len(re.findall(r"^curl ", DOC.read_text(), flags=re.M))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = make_serve_bundle(tmp_path_factory.mktemp("docs"))
    with ServerProcess(str(bundle), "--model-name", "quickstart", "--admin-token", TOKEN) as srv:
        yield srv


@pytest.mark.parametrize("block", CURL, ids=[f"bash-{i}" for i in range(len(CURL))])
def test_curl_commands_work(server, block, tmp_path):
    script = "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n"
    script += block.replace("localhost:8000", f"127.0.0.1:{server.port}")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "EBJR_ADMIN_TOKEN": TOKEN}, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"error"' not in done.stdout, done.stdout


@pytest.mark.parametrize("block", CLIENTS, ids=["tritonclient", "kserve"])
def test_client_examples_work(server, block, tmp_path):
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("kserve")
    code = block.replace("localhost:8000", f"127.0.0.1:{server.port}")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\[\d+ \d+ \d+ \d+\]", done.stdout), done.stdout
