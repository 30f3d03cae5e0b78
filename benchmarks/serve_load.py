"""Load test of ``ebjr serve``: the joint service against a teacher-only service.

The paper's own CIFAR-10 pair (DenseNet-BC 52-6 student, 64-12 teacher, from
``../shared/models/ebjr-densenet``) serves the real CIFAR-10 test images, sent
as raw uint8 pixels over the Open Inference Protocol v2 (the models normalise
inside, ``pixel_input=True``). Thresholds are calibrated on the first half of
the test set ("accuracy drop <= 0.5 point", from the published logits); the
load is the second half.

Each service is a real ``ebjr serve`` process on loopback with the same
dynamic batching. The load generator is a closed loop of ``--concurrency``
keep-alive connections (a small asyncio HTTP/1.1 client, so the generator
costs little CPU), one image per request. Reported per service (medians over
``--repeats`` runs): throughput, p50/p99 latency, teacher share, accuracy.

Speed-up = joint throughput / teacher-only throughput, measured in the same
run. Ideal = what routing alone would give at the measured teacher share,
from the models' own compute time per image at the service's batch size:
``t_teacher / (t_student + share * t_teacher)`` (medians of repeats, in this
process). The issue's target is measured / ideal >= 0.8.

The overload run offers ``--overload-factor`` times the concurrency to a joint
service with a small queue and counts requests served (200), shed (429/503
with Retry-After) and lost (no HTTP answer: must be 0).

    python benchmarks/serve_load.py            # about 4 minutes on 2 cores
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
STUDENT, TEACHER = (52, 6), (64, 12)


# ---------------------------------------------------------------- bundles
def build_bundles(folder: Path, routers: list[str], max_drop: float) -> dict[str, Path]:
    """One bundle per router: the paper's checkpoints, thresholds from the published logits."""
    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration import MaxDrop
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.joint import JointModel
    from ebjr.zoo.densenet import load_ebjr_checkpoint

    def adapter(depth: int, growth: int) -> TorchAdapter:
        ckpt = SHARED / "models/ebjr-densenet/cifar10" / f"densenet-bc-{depth}-{growth}"
        model = load_ebjr_checkpoint(ckpt / "model_best.pth.tar", depth, growth, 10)
        model.pixel_input = True
        kwargs = {"depth": depth, "growth": growth, "num_classes": 10, "pixel_input": True}
        return TorchAdapter(model, factory="ebjr.zoo.densenet:make_densenet", factory_kwargs=kwargs)

    logits = SHARED / "models/ebjr-densenet/logits"
    s = np.load(logits / "cifar10_ebjr-densenet-bc-52-6.npz")
    t = np.load(logits / "cifar10_ebjr-densenet-bc-64-12.npz")
    half = len(s["labels"]) // 2
    student, teacher = adapter(*STUDENT), adapter(*TEACHER)
    out = {}
    for router in routers:
        res = calibrate_outputs(
            s["logits"][:half],
            t["logits"][:half],
            s["labels"][:half],
            MaxDrop(max_drop),
            router=router,
            student_cost=5.32e7,
            teacher_cost=2.88e8,
            cost_unit="FLOPs",
        )
        res.bundle.input = {
            "shape": [32, 32, 3],
            "datatype": "UINT8",
            "description": "CIFAR RGB pixels, 0-255",
        }
        joint = JointModel(student, teacher, res.router, res.selection.threshold)
        out[router] = persist.save(joint, folder / router / "cifar10.json", res.bundle)
    return out


def compute_times(batch: int, repeats: int, threads: int) -> dict[str, float]:
    """Seconds per image of each model alone at ``batch`` (median of ``repeats``), with
    the allocator setting the servers run them with (``--reuse-freed-memory``, the
    default; it is process-wide, and this process is the load generator)."""
    import torch

    from ebjr.serve.process import reuse_freed_memory

    reuse_freed_memory()
    torch.set_num_threads(threads)
    from ebjr.joint.cost import measure_latency
    from ebjr.zoo.densenet import make_densenet

    images = np.load(SHARED / "data/cifar10-test-images.npz")["images"][:batch]
    x = torch.from_numpy(images.astype(np.float32))
    out = {}
    for role, (d, g) in (("student", STUDENT), ("teacher", TEACHER)):
        model = make_densenet(d, g, 10, pixel_input=True).eval()
        with torch.inference_mode():
            out[role] = measure_latency(model, x, warmup=2, repeats=repeats).per_input_s
    return out


# ---------------------------------------------------------------- a light HTTP client
class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes, int | None]:
        """One request; its status, body and (for a binary-tensor answer) the length of the
        body's JSON part (``Inference-Header-Content-Length``, else None)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(head + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        if headers.get("transfer-encoding", "").lower() == "chunked":
            payload = await self._chunks()
        else:
            payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        json_len = headers.get("inference-header-content-length")
        return status, payload, None if json_len is None else int(json_len)

    async def _chunks(self) -> bytes:
        """A chunked body (Ray's Python proxy sends some responses so), without trailers:
        each chunk is its size in hex, CRLF, the bytes, CRLF; a chunk of size 0 ends it."""
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append((await self.reader.readexactly(size + 2))[:size])
            if size == 0:
                return b"".join(parts)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def encode_requests(images: np.ndarray, path: str) -> list[tuple[bytes, bytes]]:
    out = []
    for img in images:
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, *img.shape],
                        "datatype": "UINT8",
                        "data": img.reshape(-1).tolist(),
                    }
                ]
            },
            separators=(",", ":"),
        ).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append((head, body))
    return out


async def closed_loop(
    port: int, requests: list[tuple[bytes, bytes]], concurrency: int, timeout: float = 120.0
) -> tuple[list, float]:
    """Send every request with ``concurrency`` workers; per request (status|None, latency,
    body, the length of a binary answer's JSON part or None)."""
    results: list = [None] * len(requests)
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        conn = Connection(port)
        while next_i < len(requests):
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                status, body, json_len = await asyncio.wait_for(conn.request(*requests[i]),
                                                                timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                results[i] = (None, time.perf_counter() - t0, repr(exc).encode(), None)
                await conn.close()
                continue
            results[i] = (status, time.perf_counter() - t0, body, json_len)
        await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - start


# ---------------------------------------------------------------- servers
class Server:
    def __init__(self, bundle: Path, *args: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ebjr.cli",
                "serve",
                str(bundle),
                "--port",
                str(self.port),
                "--model-name",
                "cifar10",
                "--log-level",
                "warning",
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        import httpx

        for _ in range(600):
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready after 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def outputs(body: bytes, json_len: int | None) -> dict:
    """An answer's outputs by name: from its JSON, or (a binary-tensor answer) read by
    Triton's own client, as a user's code reads it."""
    if json_len is None:
        return {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
    from tritonclient.http import InferResult

    result = InferResult.from_response_body(body, header_length=json_len)
    return {o["name"]: [v.decode() if isinstance(v, bytes) else v
                        for v in result.as_numpy(o["name"]).reshape(-1)]
            for o in result.get_response()["outputs"]}


def summarise(results: list, elapsed: float, labels: np.ndarray, rows: int = 1) -> dict:
    """Throughput (requests/s and images/s), latency per request, teacher share and
    accuracy over images (request ``i`` carries images ``i * rows`` to ``(i + 1) * rows``)."""
    ok = [(lat, outputs(body, json_len), i)
          for i, (status, lat, body, json_len) in enumerate(results) if status == 200]
    lat = np.array([r[0] for r in ok])
    right = routed = images = 0
    for _, outs, i in ok:
        want = labels[i * rows : (i + 1) * rows]
        if "predictions" in outs:
            pred = np.asarray(outs["predictions"])
            routed += sum(a != "student" for a in outs["answered_by"])
        else:  # a model served alone: every image is the teacher's
            pred = np.asarray(outs["logits"]).reshape(rows, -1).argmax(1)
            routed += rows
        right += int((pred == want).sum())
        images += rows
    return {
        "requests": len(results),
        "throughput_rps": len(ok) / elapsed,
        "throughput_ips": images / elapsed,
        "p50_ms": 1e3 * float(np.median(lat)) if len(lat) else None,
        "p99_ms": 1e3 * float(np.quantile(lat, 0.99)) if len(lat) else None,
        "teacher_share": routed / max(1, images),
        "accuracy": right / images if images and len(ok) == len(results) else None,
        "served": len(ok),
        "shed": sum(1 for r in results if r[0] in (429, 503)),
        "lost": sum(1 for r in results if r[0] is None),
        "other": sum(1 for r in results if r[0] is not None and r[0] not in (200, 429, 503)),
    }


def run_service(
    bundle: Path, args: list[str], requests, labels, concurrency: int, repeats: int, warmup: int
) -> dict:
    server = Server(bundle, *args)
    try:
        server.wait_ready()
        asyncio.run(closed_loop(server.port, requests[:warmup], concurrency))
        runs = []
        for _ in range(repeats):
            results, elapsed = asyncio.run(closed_loop(server.port, requests, concurrency))
            runs.append(summarise(results, elapsed, labels))
    finally:
        server.stop()
    med = sorted(runs, key=lambda r: r["throughput_rps"])[len(runs) // 2]
    return {**med, "throughput_runs": [r["throughput_rps"] for r in runs]}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--requests", type=int, default=1500, help="requests per timed run")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--torch-threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch intra-op threads of the services (each one is run)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per service")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--routers", nargs="+", default=["energy", "softmax"])
    p.add_argument("--max-drop", type=float, default=0.005)
    p.add_argument("--overload-factor", type=int, default=10)
    p.add_argument("--out", default=str(HERE / "results" / "serve_load"))
    args = p.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency, args.repeats = 40, 4, 1
        args.torch_threads, args.routers, args.overload_factor = [1], ["energy"], 2
        args.out = str(_common.results_dir(True) / "serve_load")
    if not (SHARED / "models/ebjr-densenet").is_dir():
        print(
            f"needs the paper's checkpoints in {SHARED / 'models/ebjr-densenet'}", file=sys.stderr
        )
        return 2

    z = np.load(SHARED / "data/cifar10-test-images.npz")
    half = len(z["labels"]) // 2
    images, labels = z["images"][half:], z["labels"][half:]
    requests = encode_requests(images[: args.requests], "/v2/models/cifar10/infer")
    batching = [
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--teacher-max-batch-size",
        str(args.max_batch_size),
        "--teacher-max-wait-ms",
        str(args.max_wait_ms),
    ]
    print(
        f"per-image compute time of each model alone (batch {args.max_batch_size})...",
        file=sys.stderr,
    )
    times = compute_times(args.max_batch_size, repeats=2 if args.smoke else 7,
                          threads=max(args.torch_threads))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundles = build_bundles(Path(tmp), args.routers, args.max_drop)
        first = bundles[args.routers[0]]
        for threads in args.torch_threads:
            print(f"teacher-only service, {threads} torch thread(s)...", file=sys.stderr)
            r = run_service(
                first,
                ["--role", "teacher", "--torch-threads", str(threads), *batching],
                requests,
                labels,
                args.concurrency,
                args.repeats,
                warmup=2 * args.concurrency,
            )
            rows.append({"service": "teacher only", "torch_threads": threads, **r})
        best_teacher = max(r["throughput_rps"] for r in rows)
        for router, bundle in bundles.items():
            for threads in args.torch_threads:
                print(
                    f"joint service, {router} router, {threads} torch thread(s)...", file=sys.stderr
                )
                r = run_service(
                    bundle,
                    ["--torch-threads", str(threads), *batching],
                    requests,
                    labels,
                    args.concurrency,
                    args.repeats,
                    warmup=2 * args.concurrency,
                )
                share = r["teacher_share"]
                ideal = times["teacher"] / (times["student"] + share * times["teacher"])
                speedup = r["throughput_rps"] / best_teacher
                rows.append(
                    {
                        "service": f"joint, {router}",
                        "torch_threads": threads,
                        **r,
                        "speedup": speedup,
                        "ideal_speedup": ideal,
                        "efficiency": speedup / ideal,
                    }
                )
        n_over = args.overload_factor * args.concurrency
        print(
            f"overload: {n_over} concurrent clients on a joint service with a small queue...",
            file=sys.stderr,
        )
        server = Server(
            first,
            *batching,
            "--torch-threads",
            "1",
            "--max-queue-rows",
            str(4 * args.max_batch_size),
            "--max-request-rows",
            str(args.max_batch_size),
        )
        try:
            server.wait_ready()
            over_requests = requests * max(1, (4 * n_over) // len(requests))
            results, elapsed = asyncio.run(closed_loop(server.port, over_requests, n_over))
        finally:
            server.stop()
        over = summarise(results, elapsed, labels)
        over.update(concurrency=n_over, queue_rows=4 * args.max_batch_size, shed_retry_after=True)

    import torch

    report = {
        "command": "python benchmarks/serve_load.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "settings": vars(args),
        "compute_per_image_s": times,
        "services": rows,
        "overload": over,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = to_markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def to_markdown(r: dict) -> str:
    t = r["compute_per_image_s"]
    s = r["settings"]
    lines = [
        f"`{r['command'].strip()}`: {s['requests']} requests per run, one CIFAR-10 image each, "
        f"{s['concurrency']} closed-loop clients, batching {s['max_batch_size']} rows / "
        f"{s['max_wait_ms']} ms, medians of {s['repeats']} runs. Models alone at batch "
        f"{s['max_batch_size']}: student {1e3 * t['student']:.2f} ms, teacher "
        f"{1e3 * t['teacher']:.2f} ms per image.",
        "",
        "| service | torch threads | throughput | p50 | p99 | teacher share | accuracy | "
        "speed-up | ideal | measured / ideal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["services"]:
        acc = "–" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f} %"
        sp = row.get("speedup")
        lines.append(
            f"| {row['service']} | {row['torch_threads']} | {row['throughput_rps']:.0f} req/s | "
            f"{row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | "
            f"{100 * row['teacher_share']:.1f} % | {acc} | "
            + (
                f"**{sp:.2f}x** | {row['ideal_speedup']:.2f}x | {row['efficiency']:.2f} |"
                if sp
                else "– | – | – |"
            )
        )
    lines += [
        "",
        "Speed-up: joint throughput over the best teacher-only throughput in the table. Ideal: "
        f"the models' compute alone ({max(s['torch_threads'])} threads, batch "
        f"{s['max_batch_size']}) at the measured teacher share.",
    ]
    o = r["overload"]
    lines += [
        "",
        f"Overload: {o['concurrency']} closed-loop clients ({s['overload_factor']}x) against a "
        f"joint service whose queue holds {o['queue_rows']} rows: {o['requests']} requests, "
        f"**{o['served']} served** ({o['throughput_rps']:.0f} req/s, p99 {o['p99_ms']:.0f} ms), "
        f"**{o['shed']} shed** with 429 + Retry-After, **{o['lost']} lost**, {o['other']} other.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
