"""The one v2 client and the one retry policy of remote calls, against a real HTTP server that
fails on purpose."""

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from ebjr._utils.retry import Retryable, attempts
from ebjr.adapters.remote import RemoteV2Adapter, V2Client
from ebjr.exceptions import InputError, TeacherUnavailable


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
            first = body["inputs"][0]["data"][:: len(body["inputs"][0]["data"]) // rows]
            # logits that carry each row's first input value, to check rows keep their order
            out = {"outputs": [{"name": "logits", "shape": [rows, 2], "datatype": "FP32",
                                "data": [v for f in first for v in (f, 0.0)]}]}
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


def test_the_back_off_is_exponential_and_capped():
    """The waits the policy asks for, on an injected clock (no wall-clock timing)."""
    waits, tries = [], []
    for attempt in attempts(6, sleep=waits.append):
        with attempt:
            tries.append(1)
            if len(tries) < 7:
                raise Retryable("http_5xx", "HTTP 503")
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5] and len(tries) == 7


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


def test_the_async_client_retries_counts_and_refuses(server):
    async def go():
        seen = []
        client = V2Client(server, retries=2, on_retry=lambda e: seen.append(e.kind))
        Flaky.plan = [503, 429]
        logits = await client.infer(np.arange(6, dtype=np.float32).reshape(3, 2))
        np.testing.assert_array_equal(logits[:, 0], [0, 2, 4])
        assert seen == ["http_5xx", "http_5xx"]
        Flaky.plan = [502, 502, 502]
        with pytest.raises(TeacherUnavailable) as e:
            await client.infer(np.zeros((1, 2)))
        assert e.value.kind == "http_5xx" and "did not answer" in str(e.value)
        Flaky.plan = [404]
        with pytest.raises(InputError, match="refused the batch \\(404\\)"):
            await client.infer(np.zeros((1, 2)))
        await client.aclose()

    asyncio.run(go())


def test_the_blocking_adapter_runs_the_same_client_from_many_threads(server):
    remote = RemoteV2Adapter(server, retries=0)
    batches = [np.full((4, 3), i, np.float32) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(remote, batches))
    assert all((np.asarray(o)[:, 0] == i).all() for i, o in enumerate(outs))
    assert isinstance(remote._client, V2Client)  # one client, the server's kind
    loop_threads = [t for t in threading.enumerate() if t.name == f"ebjr-remote-{server}"]
    assert len(loop_threads) == 1 and loop_threads[0].daemon
    remote.close()
    loop_threads[0].join(5)
    assert not loop_threads[0].is_alive()  # close stops the adapter's loop
    assert np.asarray(remote(batches[3]))[0, 0] == 3  # and a later call starts it again
    remote.close()


def test_a_dropped_adapter_stops_its_loop(server):
    import gc

    remote = RemoteV2Adapter(server)
    remote(np.ones((2, 2), np.float32))
    (thread,) = [t for t in threading.enumerate() if t.name == f"ebjr-remote-{server}"]
    del remote
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_the_blocking_adapter_works_inside_a_running_event_loop(server):
    remote = RemoteV2Adapter(server)

    async def in_a_notebook_cell():
        return remote(np.ones((2, 2), np.float32))

    assert np.asarray(asyncio.run(in_a_notebook_cell())).shape == (2, 2)
    remote.close()
