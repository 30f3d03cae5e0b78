"""Load test of the Ray Serve application: teacher-only Ray Serve, joint Ray Serve and
the single-process ``ebjr serve``, in one run.

The workload is ``benchmarks/serve_load.py``'s: the paper's CIFAR-10 pair
(DenseNet-BC 52-6 student, 64-12 teacher, ``../shared/models/ebjr-densenet``)
on the second half of the real CIFAR-10 test images, one raw-pixel image per
request over the Open Inference Protocol v2, thresholds calibrated on the
first half ("accuracy drop <= 0.5 point"), closed-loop keep-alive clients
holding ``--concurrency`` images in flight (each value a workload of its own: 64, and
192 where a server's throughput is limited by its capacity rather than by the
clients' wait), the same batching everywhere, torch at 1 thread per model process.

Services, all on one local Ray cluster of ``--cpus`` CPUs (the machine's):

- teacher only on Ray Serve, two ways: the teacher in the ingress replicas
  (one hop; one replica per CPU), and an ingress before a teacher deployment
  of one replica per CPU (two hops);
- joint on Ray Serve (``ebjr.ray.serve.build_app``) with the student in the
  ingress replicas (the default), for each router, and with the student in a
  deployment of its own (``--separate`` routers): ``--student-replicas`` and
  ``--teacher-replicas`` (default 2 and 1, sharing the CPUs);
- joint ``ebjr serve`` (one process), for comparison.

Every process runs at the same niceness (Ray starts its workers at nice 15 and
this benchmark at 0: with ``--niceness`` each is set to it, default 0). The
cluster runs the data plane ``ebjr serve --ray`` gives one it starts
(``--data-plane fast``: Ray's HAProxy ingress and throughput settings, set by
:func:`ebjr.ray.data_plane.use_fast_data_plane` before Ray starts), or Ray's own
defaults (``--data-plane ray-default``).

Speed-up = joint throughput / the *best* teacher-only Ray Serve throughput
at the same workload, in the same run. Ideal =
``t_teacher / (t_student + share * t_teacher)`` from the models' own compute
time per image at the serving batch size (1 thread, medians of repeats) and
the measured teacher share. Reported: throughput, p50/p99, teacher share,
accuracy, and measured / ideal (target >= 0.8).

With ``--encoding binary`` the requests carry binary tensors instead of JSON:
the body Triton's ``tritonclient.http`` builds by default (a JSON header, then
the raw pixels) and binary outputs, read back with its ``InferResult``.

    python benchmarks/ray_serve_load.py        # about 25 minutes on 2 cores
    python benchmarks/ray_serve_load.py --encoding binary
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common
import serve_load

HERE = Path(__file__).resolve().parent


def encode(images: np.ndarray, rows: int, encoding: str = "json") -> list[tuple[bytes, bytes]]:
    """Requests of ``rows`` images each (raw UINT8 pixels), for /v2/models/cifar10/infer: JSON,
    or binary tensors as Triton's client sends them by default (its own request body: the
    pixels as raw bytes after a JSON header, and every output asked for in binary)."""
    if encoding == "binary":
        from tritonclient.http import InferenceServerClient, InferInput
    out = []
    for a in range(0, len(images) - rows + 1, rows):
        x = images[a : a + rows]
        extra = ""
        if encoding == "binary":
            tensor = InferInput("input", list(x.shape), "UINT8")
            tensor.set_data_from_numpy(x)  # binary_data=True, the client's default
            body, json_len = InferenceServerClient.generate_request_body([tensor])
            extra = f"Inference-Header-Content-Length: {json_len}\r\n"
            kind = "application/octet-stream"
        else:
            body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                           "datatype": "UINT8",
                                           "data": x.reshape(-1).tolist()}]},
                              separators=(",", ":")).encode()
            kind = "application/json"
        head = (f"POST /v2/models/cifar10/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {kind}\r\n{extra}Content-Length: {len(body)}\r\n\r\n")
        out.append((head.encode(), body))
    return out


def _ray_processes() -> dict:
    """Ray's worker processes on this machine by role (proxy, ingress, student, ...)."""
    import psutil

    out: dict = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::ProxyActor") or os.path.basename(cmd.split(" ")[0]) == "haproxy":
            out.setdefault("proxy", []).append(proc)
        elif cmd.startswith("ray::ServeReplica:bench:"):
            role = cmd.removeprefix("ray::ServeReplica:bench:").split()[0].split(".")[0]
            out.setdefault(role, []).append(proc)
    out.setdefault("load generator", []).append(psutil.Process())
    return out


def _cpu(procs: dict) -> dict:
    """CPU seconds (user + system) so far of each live process, by role and pid."""
    total: dict = {}
    for role, ps in procs.items():
        total[role] = {}
        for p in ps:
            try:
                c = p.cpu_times()
                total[role][p.pid] = c.user + c.system
            except Exception:  # a process that ended (HAProxy reloads start a new one)
                pass
    return total


def _cpu_spent(before: dict, after: dict) -> dict:
    """CPU seconds each role spent between two :func:`_cpu` readings, over the processes
    alive at both (an ended process's share is lost, never counted negative)."""
    return {role: sum(t - before[role][pid] for pid, t in after[role].items()
                      if pid in before[role]) for role in before}


def renice(procs: dict, niceness: int | None) -> None:
    """Every process of ``procs`` (by role) at ``niceness`` (None: left as they are)."""
    if niceness is None:
        return
    for ps in procs.values():
        for proc in ps:
            try:
                proc.nice(niceness)
            except Exception as exc:  # not allowed to lower it: say so, the numbers are biased
                print(f"cannot set niceness {niceness} on {proc.pid}: {exc}", file=sys.stderr)


def timed(port: int, requests, labels, rows: int, concurrency: int, repeats: int,
          ray_cpu: bool = False, niceness: int | None = None) -> dict:
    """Warm up, then the median of ``repeats`` closed loops (by images per second); with
    ``ray_cpu``, the CPU milliseconds per request of each Ray process role over the runs."""
    procs = _ray_processes() if ray_cpu else {}
    renice(procs, niceness)
    asyncio.run(serve_load.closed_loop(port, requests[: 2 * concurrency], concurrency))
    before = _cpu(procs)
    runs = []
    for _ in range(repeats):
        results, elapsed = asyncio.run(serve_load.closed_loop(port, requests, concurrency))
        runs.append(serve_load.summarise(results, elapsed, labels, rows))
    med = sorted(runs, key=lambda r: r["throughput_ips"])[len(runs) // 2]
    out = {**med, "throughput_runs": [r["throughput_ips"] for r in runs]}
    if ray_cpu:
        n = repeats * len(requests)
        spent = _cpu_spent(before, _cpu(procs))
        out["cpu_ms_per_request"] = {k: 1e3 * v / n for k, v in spent.items()}
    return out


def measure_ray(app, port: int, workloads: dict, labels, repeats: int,
                niceness: int | None) -> dict:
    """Deploy ``app`` on the running Ray cluster; time each workload (rows per request)."""
    from ray import serve

    serve.run(app, name="bench", route_prefix="/")
    try:
        return {key: timed(port, reqs, labels, key[0], conc, repeats, ray_cpu=True,
                           niceness=niceness)
                for key, (reqs, conc) in workloads.items()}
    finally:
        serve.delete("bench")
        time.sleep(1.0)  # let the replicas' processes go before the next service starts


def measure_process(bundle: Path, flags: list[str], workloads: dict, labels, repeats: int,
                    niceness: int | None) -> dict:
    import psutil

    server = serve_load.Server(bundle, *flags)
    try:
        server.wait_ready()
        renice({"server": [psutil.Process(server.proc.pid)],
                "load generator": [psutil.Process()]}, niceness)
        return {key: timed(server.port, reqs, labels, key[0], conc, repeats)
                for key, (reqs, conc) in workloads.items()}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--requests", type=int, default=1500, help="requests per timed run")
    p.add_argument("--concurrency", type=int, nargs="+", default=[64, 192],
                   help="images in flight, one workload each")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per service")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--routers", nargs="+", default=["energy", "softmax"])
    p.add_argument("--max-drop", type=float, default=0.005)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="the Ray cluster's CPUs")
    p.add_argument("--student-replicas", type=int, default=2)
    p.add_argument("--teacher-replicas", type=int, default=1)
    p.add_argument("--rows-per-request", type=int, nargs="+", default=[1, 16],
                   help="images per request, one workload each (1 is serve_load.py's)")
    p.add_argument("--separate", nargs="*", default=["energy"],
                   help="routers also measured with the student in a deployment of its own")
    p.add_argument("--everything-in-ingress", nargs="*", default=["energy", "softmax"],
                   help="routers also measured with both models in the ingress replicas "
                   "(--ray-teacher-in-ingress: no hop after the proxy), one per CPU")
    p.add_argument("--niceness", type=int, default=0,
                   help="every service's processes at this niceness (-1: leave them)")
    p.add_argument("--data-plane", choices=["fast", "ray-default"], default="fast",
                   help="fast: what ebjr serve --ray sets for a cluster it starts (HAProxy "
                   "ingress, RAY_SERVE_THROUGHPUT_OPTIMIZED); ray-default: Ray's own")
    p.add_argument("--encoding", choices=["json", "binary"], default="json",
                   help="the requests' tensors: JSON, or binary (Triton's and KServe's "
                   "clients' default; results go to ray_serve_load_binary.*)")
    p.add_argument("--skip-process", action="store_true",
                   help="do not measure the single-process ebjr serve")
    args = p.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency, args.repeats, args.routers = 40, [4], 1, ["energy"]
        args.rows_per_request, args.separate = [1, 4], []  # the tests deploy that layout
        args.everything_in_ingress = ["energy"]
    nice = None if args.niceness < 0 else args.niceness
    if nice is not None:  # Ray's workers start at nice 15 unless told
        os.environ["RAY_worker_niceness"] = str(nice)
    plane: dict = {}
    if args.data_plane == "fast":  # before Ray starts: its Serve processes read it at import
        from ebjr.ray.data_plane import use_fast_data_plane

        plane = use_fast_data_plane()  # also the short drain between two services
    _common.need(_common.MODELS, "the paper's checkpoints")

    import ray
    from ray import serve

    from ebjr.ray.serve import build_app

    z = np.load(_common.DATA / "cifar10-test-images.npz")
    half = len(z["labels"]) // 2
    images, labels = z["images"][half:], z["labels"][half:]
    # workload (rows per request, images in flight): requests x rows = images in flight
    encoded = {k: encode(images[: args.requests], k, args.encoding)
               for k in args.rows_per_request}
    workloads = {(k, c): (encoded[k], max(1, c // k))
                 for c in args.concurrency for k in args.rows_per_request}
    batching = {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
                "teacher_max_batch_size": args.max_batch_size,
                "teacher_max_wait_ms": args.max_wait_ms, "torch_threads": 1,
                "model_name": "cifar10"}
    one_cpu = {"ray_actor_options": {"num_cpus": 1}}
    print(f"per-image compute time of each model alone (batch {args.max_batch_size}, 1 thread)",
          file=sys.stderr)
    times = serve_load.compute_times(args.max_batch_size, repeats=2 if args.smoke else 7,
                                     threads=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundles = serve_load.build_bundles(Path(tmp), args.routers, args.max_drop)
        first = bundles[args.routers[0]]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        try:
            teacher_only = {}
            for here, name in ((True, "teacher in ingress"), (False, "ingress + teacher")):
                print(f"teacher only on Ray Serve ({name}), {args.cpus} replicas...",
                      file=sys.stderr)
                app = build_app(first, role="teacher", teacher_replicas=args.cpus,
                                teacher=one_cpu, first_stage_in_ingress=here,
                                max_request_rows=max(args.rows_per_request), **batching)
                teacher_only[name] = measure_ray(app, port, workloads, labels, args.repeats,
                                                 nice)
                for (k, c), r in teacher_only[name].items():
                    rows.append({"service": f"teacher only, Ray Serve ({name})",
                                 "rows_per_request": k, "in_flight": c,
                                 "replicas": f"{args.cpus} teacher", **r})
            base = {k: max((t[k] for t in teacher_only.values()),
                           key=lambda r: r["throughput_ips"]) for k in workloads}
            # the cluster's CPUs shared by the joint app's replicas (Ray only counts them)
            share = {"ray_actor_options": {"num_cpus": math.floor(
                1000 * args.cpus / (args.student_replicas + args.teacher_replicas)) / 1000}}
            two_hops = {"student_replicas": args.student_replicas,
                        "teacher_replicas": args.teacher_replicas, "student": share,
                        "teacher": share}
            replicas = (f"{args.student_replicas} student + {args.teacher_replicas} teacher")
            plan = [(r, "student in ingress", two_hops, replicas) for r in bundles] + [
                (r, "student deployment", {**two_hops, "first_stage_in_ingress": False},
                 replicas) for r in args.separate if r in bundles] + [
                (r, "both models in ingress", {"student_replicas": args.cpus,
                                               "student": one_cpu, "teacher_in_ingress": True},
                 f"{args.cpus} student + teacher")
                for r in args.everything_in_ingress if r in bundles]
            for router, where, layout, replicas in plan:
                print(f"joint on Ray Serve, {router} router, {where}...", file=sys.stderr)
                app = build_app(bundles[router], max_request_rows=max(args.rows_per_request),
                                **layout, **batching)
                measured = measure_ray(app, port, workloads, labels, args.repeats, nice)
                for key, r in measured.items():
                    rows.append(_joint_row(f"joint, {router}, Ray Serve ({where})", key,
                                           replicas, r, base[key], times))
        finally:
            serve.shutdown()
            ray.shutdown()
            if plane.get("HAPROXY_DIR"):
                shutil.rmtree(plane["HAPROXY_DIR"], ignore_errors=True)
        flags = ["--torch-threads", "1", "--max-batch-size", str(args.max_batch_size),
                 "--max-wait-ms", str(args.max_wait_ms), "--teacher-max-batch-size",
                 str(args.max_batch_size), "--teacher-max-wait-ms", str(args.max_wait_ms),
                 "--max-request-rows", str(max(args.rows_per_request))]
        for router, bundle in ({} if args.skip_process else bundles).items():
            print(f"joint ebjr serve (one process), {router} router...", file=sys.stderr)
            for key, r in measure_process(bundle, flags, workloads, labels, args.repeats,
                                          nice).items():
                rows.append(_joint_row(f"joint, {router}, ebjr serve", key, "1 process", r,
                                       base[key], times))
    report = {
        "command": "python benchmarks/ray_serve_load.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "ray": ray.__version__},
        "settings": vars(args),
        "compute_per_image_s": times,
        "services": rows,
    }
    out = _common.results_dir(args.smoke)
    stem = "ray_serve_load" + ("_ray_default" if args.data_plane == "ray-default" else "") + (
        "_binary" if args.encoding == "binary" else "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = to_markdown(report)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0


def _joint_row(service: str, key: tuple[int, int], replicas: str, r: dict, teacher: dict,
               times: dict) -> dict:
    """A joint service's row: speed-up over the teacher-only Ray app at the same workload
    (``key``: images per request, images in flight)."""
    compute = times["student"] + r["teacher_share"] * times["teacher"]
    ideal = times["teacher"] / compute
    speedup = r["throughput_ips"] / teacher["throughput_ips"]
    bound = floor_bound(compute, teacher, times["teacher"], key[0])
    return {"service": service, "rows_per_request": key[0], "in_flight": key[1],
            "replicas": replicas, **r, "speedup": speedup, "ideal_speedup": ideal,
            "efficiency": speedup / ideal, "floor_bound_speedup": bound,
            "of_floor_bound": None if bound is None else speedup / bound}


def floor_bound(compute_s: float, teacher: dict, teacher_s: float, rows: int) -> float | None:
    """The speed-up a joint app would reach if it paid per image its models' compute
    (``compute_s``) plus what the teacher-only app pays beyond its model: every process's
    CPU per image (HTTP, JSON, Ray's replica work, batching, the load generator) minus
    ``teacher_s``. The ideal leaves that floor out; it costs the cheaper joint app a
    larger share. None without the teacher-only app's CPU."""
    cpu = teacher.get("cpu_ms_per_request")
    if not cpu:
        return None
    per_image = sum(cpu.values()) / 1e3 / rows
    return per_image / (compute_s + per_image - teacher_s)


def _workload(row: dict) -> tuple[int, int]:
    return row["rows_per_request"], row.get("in_flight", 0)


def to_markdown(r: dict) -> str:
    t, s = r["compute_per_image_s"], r["settings"]
    lines = [
        f"`{r['command'].strip()}`: {s['requests']} CIFAR-10 images per run, sent "
        f"{' or '.join(map(str, s['rows_per_request']))} per request "
        + ("as binary tensors (Triton's client's request body, binary outputs) "
           if s.get("encoding") == "binary" else "as JSON ")
        + "by closed-loop clients "
        f"({' or '.join(map(str, s['concurrency']))} images in flight), batching "
        f"{s['max_batch_size']} rows / {s['max_wait_ms']} ms, torch 1 thread per model "
        f"process, a local Ray cluster of {s['cpus']} CPUs "
        + ("with Ray's default data plane, " if s.get("data_plane") == "ray-default" else
           "with the data plane `ebjr serve --ray` sets (HAProxy ingress, "
           "RAY_SERVE_THROUGHPUT_OPTIMIZED=1), ") +
        f"every process at nice {s.get('niceness', '?')}, medians of {s['repeats']} runs. "
        f"Models alone at batch {s['max_batch_size']}, 1 thread: "
        f"student {1e3 * t['student']:.2f} ms, teacher "
        f"{1e3 * t['teacher']:.2f} ms per image.",
        "",
        "| service | images / request | in flight | replicas | throughput | p50 | p99 | "
        "teacher share | accuracy | speed-up | ideal | measured / ideal | floor bound | "
        "measured / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(r["services"], key=_workload):
        acc = "–" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f} %"
        sp = row.get("speedup")
        lines.append(
            f"| {row['service']} | {row['rows_per_request']} | {row.get('in_flight', '–')} | "
            f"{row['replicas']} | "
            f"{row['throughput_ips']:.0f} img/s | "
            f"{row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | "
            f"{100 * row['teacher_share']:.1f} % | {acc} | "
            + (f"**{sp:.2f}x** | {row['ideal_speedup']:.2f}x | {row['efficiency']:.2f} | "
               + (f"{bound:.2f}x | {row['of_floor_bound']:.2f} |"
                  if (bound := row.get("floor_bound_speedup")) else "– | – |")
               if sp else "– | – | – | – | – |")
        )
    lines += ["", "Speed-up: images per second over the faster teacher-only Ray Serve "
              "application at the same workload, in the same run. Ideal: the models' compute "
              "alone at the measured teacher share. Floor bound: the speed-up if the joint app "
              "paid, per image, its models' compute plus only what that teacher-only app pays "
              "beyond its model (its CPU per image over every process, minus the teacher's "
              "compute): the ideal counts no such floor, and it weighs more on the cheaper "
              "joint app. Measured / bound is what ebjr's joint step itself costs. Latencies "
              "are per request.", "",
              "CPU per request of each process of the Ray Serve applications (ms, user + "
              "system, over the timed runs):", ""]
    roles = ["proxy", "ingress", "student", "control", "teacher", "load generator"]
    lines += ["| service | images / request | in flight | " + " | ".join(roles) + " | total |",
              "|---|---|---|" + "---|" * (len(roles) + 1)]
    for row in sorted(r["services"], key=_workload):
        cpu = row.get("cpu_ms_per_request")
        if cpu:
            cells = [f"{cpu[k]:.1f}" if k in cpu else "–" for k in roles]
            lines.append(f"| {row['service']} | {row['rows_per_request']} | "
                         f"{row.get('in_flight', '–')} | "
                         + " | ".join(cells) + f" | {sum(cpu.values()):.1f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
