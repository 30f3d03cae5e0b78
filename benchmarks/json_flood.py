"""One client must not stall the server: liveness and memory while four clients flood JSON.

Four clients repeat a JSON body as fast as the server answers, while a probe
asks ``/v2/health/live`` every 50 ms; we report the probe's latency (median,
p99, max) and the server's peak resident memory (psutil), for:

- ``attack``: the 16 MiB body of ``[],[],...`` (about 5.6 million values) that
  stalled the server before the JSON limits: every client sends it;
- ``largest accepted``: the largest body the default limits still parse
  (a flat ``data`` of ``max_json_elements`` numbers).

against three servers in the same run: the default settings; the same code
with the JSON limits lifted to the body limit (what parsing off the event
loop alone buys); and, with ``--baseline REV``, ebjr at that git revision
(e.g. the commit before the limits) in a temporary worktree.

Run: python benchmarks/json_flood.py [--seconds 10] [--baseline 553c9c9]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

import _common

BUNDLE_CODE = """
import sys, torch, ebjr
from ebjr.adapters.torch_module import TorchAdapter
from ebjr.joint import JointModel
from ebjr.zoo.digits import make_student, make_teacher
torch.manual_seed(0)
s = TorchAdapter(make_student(), factory="ebjr.zoo.digits:make_student")
t = TorchAdapter(make_teacher(), factory="ebjr.zoo.digits:make_teacher")
print(ebjr.save(JointModel(s, t, "energy", 0.0), sys.argv[1]))
"""
SIXTEEN_MIB = 16 * 1024 * 1024


def body_of(values: bytes, count: int) -> bytes:
    head = b'{"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": ['
    return head + (values * count)[:-1] + b"]}]}"


class Server:
    """``ebjr serve`` from ``src`` (a source folder first on the path) on a free port."""

    def __init__(self, src: Path, bundle: Path, *args: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebjr.cli", "serve", str(bundle), "--port", str(self.port),
             "--model-name", "m", "--log-level", "error", "--torch-threads", "1", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def flood(server: Server, body: bytes, seconds: float) -> dict[str, Any]:
    proc = psutil.Process(server.proc.pid)
    idle = proc.memory_info().rss
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(proc.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def run() -> tuple[list[float], dict[int, int]]:
        statuses: dict[int, int] = {}
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=120) as c:
            async def hammer() -> None:
                while not stop.is_set():
                    try:
                        r = await c.post(server.url + "/v2/models/m/infer", content=body)
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    except httpx.HTTPError:  # refused with 413 while still sending, closed
                        statuses[0] = statuses.get(0, 0) + 1

            tasks = [asyncio.create_task(hammer()) for _ in range(4)]
            waits = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                await c.get(server.url + "/v2/health/live", timeout=120)
                waits.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return waits, statuses

    waits, statuses = asyncio.run(run())
    done.set()
    sampler.join()
    waits.sort()
    return {
        "probes": len(waits),
        "live_median_ms": 1e3 * statistics.median(waits),
        "live_p99_ms": 1e3 * waits[min(len(waits) - 1, int(0.99 * len(waits)))],
        "live_max_ms": 1e3 * waits[-1],
        "idle_rss_mib": idle / 2**20,
        "peak_rss_mib": max(peak) / 2**20,
        "flood_answers": {(str(k) if k else "413 before the body, closed"): v
                          for k, v in sorted(statuses.items())},
    }


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline", metavar="REV", help="also measure ebjr at this revision")
    args = parser.parse_args()
    seconds = 1.5 if args.smoke else args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="ebjr-json-flood-"))
    servers: dict[str, tuple[Path, list[str]]] = {
        "default limits": (_common.ROOT / "src", []),
        "limits lifted (off-loop parsing only)": (
            _common.ROOT / "src", ["--max-json-bytes", str(SIXTEEN_MIB),
                                   "--max-json-elements", str(10**9)]),
    }
    worktree = None
    if args.smoke:  # the second server differs only in its flags
        del servers["limits lifted (off-loop parsing only)"]
    if args.baseline and not args.smoke:
        worktree = tmp / "baseline"
        subprocess.run(["git", "-C", str(_common.ROOT), "worktree", "add", "--detach",
                        str(worktree), args.baseline], check=True, capture_output=True)
        servers[f"ebjr at {args.baseline}"] = (worktree / "src", [])
    attack = body_of(b"[],", SIXTEEN_MIB // 3 - 40)
    accepted = body_of(b"0,", (1 << 18) - 20)
    rows, data = [], {}
    try:
        for name, (src, extra) in servers.items():
            bundle = tmp / name.split()[0] / "b.json"
            subprocess.run([sys.executable, "-c", BUNDLE_CODE, str(bundle)], check=True,
                           env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True)
            for load, body in (("attack (16 MiB of [],)", attack),
                               ("largest accepted (262k numbers)", accepted)):
                srv = Server(src, bundle, *extra)
                try:
                    r = flood(srv, body, seconds)
                finally:
                    srv.stop()
                data[f"{name} / {load}"] = r
                rows.append(f"| {name} | {load} | {r['live_median_ms']:.1f} | "
                            f"{r['live_p99_ms']:.1f} | {r['live_max_ms']:.1f} | "
                            f"{r['idle_rss_mib']:.0f} -> {r['peak_rss_mib']:.0f} | "
                            f"{r['flood_answers']} |")
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(_common.ROOT), "worktree", "remove", "--force",
                            str(worktree)], capture_output=True)
    md = (
        "# JSON flood: liveness and memory while 4 clients flood JSON bodies\n\n"
        f"`python benchmarks/json_flood.py --seconds {seconds:g}"
        f"{' --baseline ' + args.baseline if args.baseline else ''}`; one run, "
        f"{os.cpu_count()} CPUs; a probe every 50 ms.\n\n"
        "| server | flood body | live median (ms) | live p99 (ms) | live max (ms) | "
        "RSS idle -> peak (MiB) | flood answers (status: count) |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )
    _common.write_results("json_flood", data, md, smoke=args.smoke)


if __name__ == "__main__":
    main()
