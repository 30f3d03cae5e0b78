"""Conformance with the real third-party clients, called exactly as their docs show.

A real ``ebjr serve`` process on loopback; Triton's ``tritonclient.http`` (sync and
``aio``) and KServe's ``InferenceRESTClient``, with no extra headers. Every answer
must equal :meth:`ebjr.JointModel.predict` offline. Then the protocol edge with raw
sockets: stalled headers and bodies, and SIGTERM during a stalled upload.
"""

import asyncio
import json
import socket
import time

import numpy as np
import pytest

import ebjr
from serve_support import ServerProcess, make_serve_bundle, random_rows, read_all

httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'ebjr[test]'")
aioclient = pytest.importorskip("tritonclient.http.aio", reason="pip install 'ebjr[test]'")
kserve = pytest.importorskip("kserve", reason="pip install 'ebjr[test]'")

OUTPUTS = ("predictions", "probabilities", "scores", "answered_by")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("clients")))


@pytest.fixture(scope="module")
def server(bundle):
    with ServerProcess(bundle, "--max-request-rows", "256", "--header-timeout", "1",
                       "--body-timeout", "1") as srv:
        yield srv


@pytest.fixture(scope="module")
def offline(bundle):
    joint = ebjr.load(bundle)

    def predict(x):
        out = joint.predict(x)
        return {
            "predictions": out.predictions.numpy(),
            "probabilities": out.probabilities.numpy(),
            "scores": out.scores.numpy(),
            "answered_by": np.asarray(out.answered_by),
        }

    return predict


def _check(got: dict, want: dict) -> None:
    np.testing.assert_array_equal(got["predictions"], want["predictions"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    answered = [a.decode() if isinstance(a, bytes) else str(a) for a in got["answered_by"]]
    assert answered == want["answered_by"].tolist()


def test_tritonclient_health_metadata_config_index_and_stats(server):
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("small") and client.is_model_ready("small", "1")
    assert not client.is_model_ready("small", "2")
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    md = client.get_model_metadata("small")
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert md["versions"] == ["1"]
    assert client.get_model_metadata("small", "1")["name"] == "small"
    cfg = client.get_model_config("small")
    assert cfg["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [8, 8]}
    assert [o["name"] for o in cfg["output"]] == list(OUTPUTS)
    assert client.get_model_repository_index() == [
        {"name": "small", "version": "1", "state": "READY"}]
    stats = client.get_inference_statistics("small")["model_stats"][0]
    assert stats["name"] == "small" and "success" in stats["inference_stats"]
    client.close()


@pytest.mark.parametrize("rows", [1, 64])
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer(server, offline, rows, binary):
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    x = random_rows(rows, seed=rows)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    # all outputs (binary by default), then named outputs in the asked form
    result = client.infer("small", [inp])
    _check({n: result.as_numpy(n) for n in OUTPUTS}, offline(x))
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary)
            for n in ("scores", "answered_by", "predictions", "probabilities")]
    result = client.infer("small", [inp], outputs=outs, request_id="r-7")
    _check({n: result.as_numpy(n) for n in OUTPUTS}, offline(x))
    response = result.get_response()
    assert response["id"] == "r-7" and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]][:2] == ["scores", "answered_by"]
    assert all(("data" in o) != binary for o in response["outputs"])
    only = client.infer("small", [inp], outputs=[httpclient.InferRequestedOutput("predictions")])
    assert only.as_numpy("scores") is None
    np.testing.assert_array_equal(only.as_numpy("predictions"), offline(x)["predictions"])
    client.close()


def test_tritonclient_errors_are_raised_with_the_servers_message(server):
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    x = random_rows(2)
    inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="unknown input 'INPUT0'"):
        client.infer("small", [inp])
    inp = httpclient.InferInput("input", list(x.shape), "FP64")
    inp.set_data_from_numpy(x.astype(np.float64))
    with pytest.raises(InferenceServerException, match="does not match the model's 'FP32'"):
        client.infer("small", [inp])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    client.close()


def test_tritonclient_aio(server, offline):
    x = random_rows(64, seed=5)

    async def main():
        client = aioclient.InferenceServerClient(url=server.url.removeprefix("http://"))
        try:
            assert await client.is_server_ready()
            assert (await client.get_model_metadata("small"))["name"] == "small"
            assert (await client.get_model_config("small"))["name"] == "small"
            results = []
            for binary in (True, False):
                inp = aioclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                outs = [aioclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
                results += await asyncio.gather(
                    client.infer("small", [inp]), client.infer("small", [inp], outputs=outs)
                )
            return [{n: r.as_numpy(n) for n in OUTPUTS} for r in results]
        finally:
            await client.close()

    for got in asyncio.run(main()):
        _check(got, offline(x))


@pytest.mark.parametrize("binary", [False, True])
def test_kserve_rest_client(server, offline, binary):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    x = random_rows(64, seed=9)

    async def main():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            assert await client.is_server_live(server.url)
            assert await client.is_server_ready(server.url)
            assert await client.is_model_ready(server.url, "small")
            inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            request = InferRequest(model_name="small", infer_inputs=[inp], request_id="k-1")
            return await client.infer(server.url, request, model_name="small")
        finally:
            await client.close()

    response = asyncio.run(main())
    assert response.id == "k-1" and response.model_name == "small"
    _check({o.name: o.as_numpy() for o in response.outputs}, offline(x))


# ------------------------------------------------------------ the protocol edge, raw


def _raw(port: int, data: bytes, wait: float = 0.0) -> tuple[socket.socket, float]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    if wait:
        time.sleep(wait)
    return sock, time.monotonic()


def _status_and_body(reply: bytes) -> tuple[int, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_stalled_headers_are_cut_with_408(server):
    sock, t0 = _raw(server.port, b"POST /v2/models/small/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    status, body = _status_and_body(read_all(sock))
    assert status == 408 and "headers did not arrive within 1 s" in body["error"]
    assert time.monotonic() - t0 < 5
    sock, t0 = _raw(server.port, b"")  # a connection that says nothing
    assert _status_and_body(read_all(sock))[0] == 408


def test_a_stalled_body_is_cut_with_408_and_the_server_goes_on(server):
    head = (b"POST /v2/models/small/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 5000\r\n\r\n{\"inputs\": [")
    sock, t0 = _raw(server.port, head)
    status, body = _status_and_body(read_all(sock))
    assert status == 408 and "body did not arrive within 1 s" in body["error"]
    assert time.monotonic() - t0 < 5
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_ready()
    client.close()


def test_sigterm_with_a_stalled_upload_exits_cleanly(bundle):
    srv = ServerProcess(bundle, "--body-timeout", "60", log_level="info").start()
    try:
        head = (b"POST /v2/models/small/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 5000\r\n\r\n{\"inputs\": [")
        sock, _ = _raw(srv.port, head, wait=0.5)
        t0 = time.monotonic()
        assert srv.terminate() == 0
        assert time.monotonic() - t0 < 10  # not the 60 s body timeout
        status, body = _status_and_body(read_all(sock))
        assert status == 503 and "shutting down" in body["error"]
        log = srv.output()
        assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
        assert " 500" not in log
    finally:
        srv.kill()
