"""CPU per image of the paper's DenseNets: glibc's default allocator against the memory
reuse ``ebjr serve`` sets (``--reuse-freed-memory``), and a joint engine's two models on a
thread each against one shared thread (``--share-model-thread``).

Each allocator setting runs in a process of its own (the setting is process-wide), torch
at one thread, on real CIFAR-10 test images, pinned to one core:

- the teacher alone at ``--batch`` images per call;
- the joint pattern of a one-CPU Ray replica: student batches of ``--batch`` images and
  teacher batches of ``--routed`` (the routed rows of a student batch), on two threads
  that take turns on the core, and on one thread, one batch after the other;

then, on two cores at two torch threads per model (``ebjr serve --torch-threads 2`` on
this machine), the same joint pattern both ways, where the two threads can run at once.

Reported: CPU and wall milliseconds per image, medians of ``--repeats`` runs; for the
joint pattern, per student image (a student batch and its teacher batch).

    python benchmarks/model_threads.py        # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import _common

CHILD = "--child"


def child(reuse: bool, batch: int, routed: int, rounds: int, repeats: int) -> dict:
    """In this process, pinned to one core: the measurements for one allocator setting."""
    import numpy as np
    import torch

    from ebjr.serve.process import reuse_freed_memory
    from ebjr.zoo.densenet import load_ebjr_checkpoint

    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(cores[:1]))
    applied = reuse_freed_memory() if reuse else False
    torch.set_num_threads(1)

    def load(depth: int, growth: int) -> torch.nn.Module:
        path = (_common.MODELS / "cifar10" / f"densenet-bc-{depth}-{growth}"
                / "model_best.pth.tar")
        model = load_ebjr_checkpoint(path, depth, growth, 10)
        model.pixel_input = True
        return model.eval()

    student, teacher = load(52, 6), load(64, 12)
    images = np.load(_common.DATA / "cifar10-test-images.npz")["images"][5000:5000 + batch]
    xs = torch.from_numpy(images.astype(np.float32))
    xt = xs[:routed].clone()

    def calls(model: torch.nn.Module, x: torch.Tensor, n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                model(x)

    def cpu(fn) -> tuple[float, float, float]:
        """User and system CPU seconds of this process while ``fn`` ran, and the wall time."""
        before, start = os.times(), time.perf_counter()
        fn()
        after = os.times()
        return (after.user - before.user, after.system - before.system,
                time.perf_counter() - start)

    def two_threads() -> None:
        jobs = [threading.Thread(target=calls, args=(m, x, rounds))
                for m, x in ((student, xs), (teacher, xt))]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()

    def one_thread() -> None:
        def both() -> None:
            for _ in range(rounds):
                calls(student, xs, 1)
                calls(teacher, xt, 1)
        job = threading.Thread(target=both)
        job.start()
        job.join()

    calls(student, xs, 2)
    calls(teacher, xs, 2)
    calls(teacher, xt, 2)
    out: dict = {"reuse_applied": applied}

    def measure(name: str, fn) -> None:
        runs = [cpu(fn) for _ in range(repeats)]
        out[name] = {k: statistics.median(r[i] for r in runs) / (rounds * batch) * 1e3
                     for i, k in enumerate(("user_ms", "system_ms", "wall_ms"))}

    measure("teacher alone", lambda: calls(teacher, xs, rounds))
    measure("joint, two threads", two_threads)
    measure("joint, one thread", one_thread)
    if len(cores) >= 2:  # two cores, two torch threads per model
        os.sched_setaffinity(0, set(cores[:2]))
        torch.set_num_threads(2)
        calls(student, xs, 2)
        calls(teacher, xt, 2)
        measure("2 cores: joint, two threads", two_threads)
        measure("2 cores: joint, one thread", one_thread)
    return out


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--batch", type=int, default=32, help="student (and teacher-alone) batch")
    p.add_argument("--routed", type=int, default=9,
                   help="teacher batch of the joint pattern (energy routes about 28 %%)")
    p.add_argument("--rounds", type=int, default=10, help="batches per run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(CHILD, choices=["default", "reuse"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.repeats = 2, 1
    _common.need(_common.MODELS, "the paper's checkpoints")
    if args.child:
        print(json.dumps(child(args.child == "reuse", args.batch, args.routed, args.rounds,
                               args.repeats)))
        return 0
    rows = {}
    for mode in ("default", "reuse"):
        print(f"allocator: {mode}...", file=sys.stderr)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, __file__, CHILD, mode,
                              *(argv or sys.argv[1:])],
                             capture_output=True, text=True, check=True)
        rows[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"  {time.perf_counter() - start:.0f} s", file=sys.stderr)
    report = {"command": "python benchmarks/model_threads.py " + " ".join(argv or sys.argv[1:]),
              "settings": {k: v for k, v in vars(args).items() if k != "child"},
              "cpu_per_image": rows}
    _common.write_results("model_threads", report, to_markdown(report), smoke=args.smoke)
    return 0


def to_markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"`{r['command'].strip()}`: the paper's CIFAR-10 DenseNets, real test images; "
        f"student batches of {s['batch']}, teacher batches of {s['batch']} alone and of "
        f"{s['routed']} in the joint pattern; on one core at 1 torch thread, then on two "
        f"cores at 2 torch threads per model; per image, medians of {s['repeats']} runs of "
        f"{s['rounds']} batches.",
        "",
        "| allocator | work | CPU per image | of which system | wall per image |",
        "|---|---|---|---|---|",
    ]
    for mode, label in (("default", "glibc's default"), ("reuse", "freed memory reused")):
        for work, m in r["cpu_per_image"][mode].items():
            if work == "reuse_applied":
                continue
            if not work.startswith("2 cores"):
                work = "1 core: " + work
            lines.append(f"| {label} | {work} | {m['user_ms'] + m['system_ms']:.2f} ms | "
                         f"{m['system_ms']:.2f} ms | {m['wall_ms']:.2f} ms |")
    lines += ["", "The joint rows count a student batch and its teacher batch per student "
              "image. On one core the wall time is the CPU time; on two, two model threads "
              "can run at once."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
