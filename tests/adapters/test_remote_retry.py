"""The one retry policy of remote calls, against a real HTTP server that fails on purpose."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from ebjr._utils.retry import Retryable, attempts
from ebjr.adapters.remote import RemoteV2Adapter
from ebjr.exceptions import InputError


class Flaky(BaseHTTPRequestHandler):
    """Answers ``plan`` in order (an HTTP status, or 200 with logits), then 200."""

    plan: ClassVar[list[int]] = []
    calls: ClassVar[list[float]] = []

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(n))
        Flaky.calls.append(time.monotonic())
        status = Flaky.plan.pop(0) if Flaky.plan else 200
        if status == 200:
            rows = body["inputs"][0]["shape"][0]
            out = {"outputs": [{"name": "logits", "shape": [rows, 2], "datatype": "FP32",
                                "data": [1.0, 0.0] * rows}]}
            payload, ctype = json.dumps(out).encode(), "application/json"
        else:
            payload, ctype = json.dumps({"error": "try later"}).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    Flaky.calls.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
    srv.shutdown()


def test_5xx_is_retried_with_backoff_then_answers(server):
    Flaky.plan = [503, 502]
    logits = RemoteV2Adapter(server, retries=2)(np.zeros((3, 4), np.float32))
    assert np.asarray(logits).shape == (3, 2) and len(Flaky.calls) == 3
    gaps = np.diff(Flaky.calls)
    assert gaps[0] >= 0.045 and gaps[1] >= gaps[0] * 1.5  # exponential back-off


def test_attempts_run_out_and_4xx_is_not_retried(server):
    Flaky.plan = [503, 503, 503]
    with pytest.raises(ConnectionError, match="did not answer: http_5xx: HTTP 503"):
        RemoteV2Adapter(server, retries=1)(np.zeros((1, 4), np.float32))
    assert len(Flaky.calls) == 2
    Flaky.calls.clear()
    Flaky.plan = [400]
    with pytest.raises(InputError, match="refused the batch \\(400\\)"):
        RemoteV2Adapter(server, retries=3)(np.zeros((1, 4), np.float32))
    assert len(Flaky.calls) == 1


def test_the_policy_reports_each_retried_failure():
    seen, tries = [], []
    with pytest.raises(Retryable):
        for attempt in attempts(2, seen.append):
            with attempt:
                tries.append(1)
                raise Retryable("timeout", f"attempt {len(tries)}")
    assert len(tries) == 3 and [e.detail for e in seen] == ["attempt 1", "attempt 2"]
