"""The HTTP edge as an attacker meets it: a real ``ebjr serve`` process on loopback, raw
sockets and httpx. Each attack gets its status, and the server is healthy afterwards."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from ebjr.exceptions import InputError
from ebjr.serve.bodies import count_json_values
from ebjr.serve.settings import ServeSettings
from serve_support import (
    ServerProcess,
    binary_body,
    infer_body,
    make_serve_bundle,
    random_rows,
    read_all,
)

INFER = "/v2/models/small/infer"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("edge")))


@pytest.fixture(scope="module")
def server(bundle):
    with ServerProcess(bundle, "--max-header-bytes", "8192", "--max-json-bytes", "200000",
                       "--max-json-elements", "20000", "--allowed-origins",
                       "https://trusted.example", log_level="info") as srv:
        yield srv


def _raw(port: int, data: bytes, read: bool = True) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    if not read:
        sock.close()
        return b""
    return read_all(sock)


def _healthy(srv: ServerProcess) -> None:
    r = httpx.post(srv.url + INFER, json=infer_body(random_rows(2)), timeout=10)
    assert r.status_code == 200, r.text


def _json_flood(n_bytes: int) -> bytes:
    """A body of ``[],[],...`` inside a valid-looking request: the worst case for a parser."""
    inner = b"[]," * (n_bytes // 3)
    return b'{"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": [' \
        + inner[:-1] + b"]}]}"


# ---------------------------------------------------------------- the attack table
ATTACKS = [
    # (name, request kwargs for httpx, expected status, a phrase of the error)
    ("text/plain POST from another site", dict(
        content=json.dumps(infer_body(random_rows(1))),
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}),
     403, "may not call this server"),
    ("null origin (sandboxed frame)", dict(
        json=infer_body(random_rows(1)), headers={"Origin": "null"}), 403, "another site"),
    ("DNS rebinding: a foreign Host on loopback", dict(
        json=infer_body(random_rows(1)), headers={"Host": "rebind.evil.example:8000"}),
     400, "does not name this server"),
    ("true mixed into FP32", dict(json={"inputs": [{
        "name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": [1.0] * 63 + [True]}]}),
     400, "got True"),
    ("JSON past max_json_bytes", dict(content=_json_flood(300_000)), 413,
     "limit of 200000 bytes for JSON"),
    ("JSON past max_json_bytes, streamed without a length", dict(
        content=iter([_json_flood(300_000)])), 413, "limit of 200000 bytes for JSON"),
    ("JSON elements past max_json_elements", dict(content=_json_flood(150_000)), 413,
     "values"),
    ("gzip bomb of JSON", dict(content=gzip.compress(_json_flood(300_000)),
                               headers={"Content-Encoding": "gzip"}), 413, "parses at most"),
]


@pytest.mark.parametrize(("name", "kwargs", "status", "phrase"), ATTACKS,
                         ids=[a[0] for a in ATTACKS])
def test_http_attacks_get_their_status_and_the_server_stays_healthy(server, name, kwargs,
                                                                    status, phrase):
    r = httpx.post(server.url + INFER, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert phrase in body["error"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-content-type-options"] == "nosniff"
    _healthy(server)


def test_clients_without_origin_and_allowed_origins_still_work(server):
    body = json.dumps(infer_body(random_rows(1)))
    # curl -d sends form-urlencoded; SDKs send no Content-Type: both without Origin
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {},
                    {"Origin": "https://trusted.example"},
                    {"Origin": server.url},  # the demo page itself (same origin)
                    {"Host": "localhost"}, {"Host": f"[::1]:{server.port}"}):
        r = httpx.post(server.url + INFER, content=body, headers=headers, timeout=10)
        assert r.status_code == 200, (headers, r.text)


def test_a_header_block_past_the_limit_gets_431_and_the_connection_closes(server):
    big = b"X-Filler: " + b"a" * 4000 + b"\r\n"
    reply = _raw(server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 + big * 64 + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert reply.count(b"HTTP/1.1") == 1  # one answer, then the connection is closed
    long_url = b"GET /v2/health/live?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert _raw(server.port, long_url).startswith(b"HTTP/1.1 431")
    ok = _raw(server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Connection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")
    _healthy(server)


def test_binary_bodies_are_not_held_to_the_json_limit(server):
    x = random_rows(200)  # 51 kB of FP32: fine as binary, 200 kB+ as JSON text
    raw, headers = binary_body(x)
    r = httpx.post(server.url + INFER, content=raw, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    as_json = json.dumps(infer_body(random_rows(800)))
    r = httpx.post(server.url + INFER, content=as_json, timeout=30)
    assert r.status_code == 413 and "binary" in r.json()["error"]


def test_the_liveness_probe_answers_while_clients_flood_maximal_json(server):
    """Four clients repeat the largest JSON body the server accepts for parsing; the
    liveness probe keeps answering (the 10 s bound is a hang detector, not a timing)."""
    flood = _json_flood(199_000)
    assert count_json_values(flood) <= 200_000

    async def run() -> list[float]:
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=60) as c:
            async def hammer() -> None:
                while not stop.is_set():
                    await c.post(server.url + INFER, content=flood)

            tasks = [asyncio.create_task(hammer()) for _ in range(4)]
            waits = []
            for _ in range(20):
                t0 = time.perf_counter()
                r = await c.get(server.url + "/v2/health/live")
                waits.append(time.perf_counter() - t0)
                assert r.status_code == 200
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return waits

    waits = asyncio.run(run())
    assert max(waits) < 10
    _healthy(server)


def test_a_client_that_disconnects_is_info_and_counted_never_an_error(server):
    head = (f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    for _ in range(3):
        _raw(server.port, head + b'{"inputs": [', read=False)  # then it hangs up
    time.sleep(1.0)
    log = server.output()
    assert "client went away before its answer" in log
    assert "ERROR" not in log and "Traceback" not in log and "No response returned" not in log
    metrics = httpx.get(server.url + "/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("ebjr_client_disconnects_total"))
    assert float(line.split()[-1]) >= 3
    _healthy(server)


def test_request_ids_are_echoed_or_made(server):
    r = httpx.post(server.url + INFER, json=infer_body(random_rows(1)),
                   headers={"X-Request-ID": "trace-42.a_b"})
    assert r.headers["x-request-id"] == "trace-42.a_b"
    r = httpx.post(server.url + INFER, json={"inputs": []},
                   headers={"X-Request-ID": "<script>alert(1)</script>"})
    assert r.status_code == 400
    rid = r.headers["x-request-id"]
    assert rid == r.json()["request_id"] and "<" not in rid and len(rid) == 16


def test_the_demo_page_embeds_the_name_safely_and_refuses_framing(server):
    r = httpx.get(server.url + "/")
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'nonce-" in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in r.text and "<script>" not in r.text
    assert r.headers["x-frame-options"] == "DENY"
    assert 'const MODEL = "small";' in r.text
    again = httpx.get(server.url + "/").headers["content-security-policy"]
    assert again != csp  # a new nonce every time


@pytest.mark.parametrize("name", ["</script><script>alert(1)</script>", "a/b", "x y",
                                  "-leading", "a" * 129, "naïve"])
def test_model_names_are_checked_like_tritons(bundle, name):
    with pytest.raises(InputError, match="is not a valid model name"):
        ServeSettings(bundle=bundle, model_name=name)


def test_a_bundle_name_that_is_no_model_name_asks_for_one():
    with pytest.raises(InputError, match="give one with --model-name"):
        ServeSettings(bundle="models/my bundle.json")
    assert ServeSettings(bundle="models/my bundle.json", model_name="mine").name == "mine"


def test_admin_token_file_strips_one_newline(tmp_path, bundle):
    f = tmp_path / "token"
    f.write_text("s3cret\n")
    assert ServeSettings(bundle=bundle, admin_token_file=f).admin_token == "s3cret"
    with pytest.raises(InputError, match="not both"):
        ServeSettings(bundle=bundle, admin_token="a", admin_token_file=f)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="is empty"):
        ServeSettings(bundle=bundle, admin_token_file=tmp_path / "empty")
    with pytest.raises(InputError, match="cannot read"):
        ServeSettings(bundle=bundle, admin_token_file=tmp_path / "missing")
    assert "s3cret" not in repr(ServeSettings(bundle=bundle, admin_token_file=f))


def test_the_token_file_is_what_the_server_checks(bundle, tmp_path):
    f = tmp_path / "token"
    f.write_text("from-a-file\n")
    with ServerProcess(bundle, "--admin-token-file", str(f)) as srv:
        url = srv.url + "/v2/models/small/threshold"
        assert httpx.put(url, json={"threshold": 1.0},
                         headers={"Authorization": "Bearer from-a-file"}).status_code == 200
        assert httpx.put(url, json={"threshold": 1.0},
                         headers={"Authorization": "Bearer from-a-fil"}).status_code == 401


def test_connections_past_the_cap_get_503_not_a_hang(bundle):
    with ServerProcess(bundle, "--max-connections", "4") as srv:
        socks = []
        for _ in range(6):  # idle keep-alive connections, each holding its place
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            socks.append(s)
        time.sleep(0.3)
        r = httpx.get(srv.url + "/v2/health/live", timeout=10)
        assert r.status_code == 503
        for s in socks:
            s.close()
        time.sleep(0.3)
        assert httpx.get(srv.url + "/v2/health/live", timeout=10).status_code == 200


@pytest.mark.parametrize("length", [b"9" * 30, b"99999999999999999999", b"17000000"])
def test_an_absurd_content_length_is_413_not_a_crash(length):
    """The guard is called as uvicorn calls it: a declared length of any size is refused
    before anything is read (a 30-digit number once would have been one int() away from
    Python's digit limit)."""
    from ebjr.serve.edge import BodyGuard

    sent = []

    async def app(scope, receive, send):  # pragma: no cover - never reached
        raise AssertionError("the body guard let an oversized body through")

    async def receive():  # pragma: no cover - never read
        raise AssertionError("the body guard read a body it should refuse unread")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": INFER, "headers": [
        (b"content-length", length), (b"inference-header-content-length", b"10")]}
    guard = BodyGuard(app, limit=16 * 1024 * 1024, timeout_s=1.0, stopping=lambda: False)
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 413
