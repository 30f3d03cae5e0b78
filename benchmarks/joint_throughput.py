"""Joint model speed vs teacher-only, against the ideal the curve predicts.

Pairs written in the project (random weights: speed does not depend on them):
the paper's CIFAR-10 DenseNet-BC 52-6 -> 64-12, and ResNet-20 -> ResNet-56.
Inputs are the real CIFAR-10 test images when ../shared/data has them.

For each pair, batch size B in (1, 32, 256) and teacher share f in 0.1..0.5,
over a stream of inputs cut into batches of B:

- measured speed-up = time(teacher alone on the stream) / time(JointModel);
- ideal speed-up = T_teacher / (T_student + f * T_teacher), with T_student and
  T_teacher the per-input times of each model timed alone at batch size B;
- efficiency = measured / ideal;
- router overhead = (scoring + masking + gather + scatter time) / student time,
  from the JointModel's own per-stage timings;
- the same stream through ``JointModel.predict_stream`` (routed rows pooled
  into teacher batches of 256), which avoids tiny teacher sub-batches.

The threshold for share f is the f-quantile of the student's scores over the
stream, so exactly that share of the stream goes to the teacher. Medians over
``--repeats`` runs. Writes benchmarks/results/joint_throughput.{json,md}.

Run: python benchmarks/joint_throughput.py [--repeats 5] [--stream 512]
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import _common
from ebjr.joint import JointModel
from ebjr.joint.cost import count_flops
from ebjr.routing import get_router
from ebjr.zoo.densenet import cifar_preprocess, make_densenet
from ebjr.zoo.resnet_cifar import make_resnet

IMAGES = _common.DATA / "cifar10-test-images.npz"
PAPER_FLOPS = {"DenseNet-BC 52-6 -> 64-12": (0.54e8, 2.92e8)}


def stream_inputs(n: int) -> torch.Tensor:
    if IMAGES.is_file():
        return cifar_preprocess(np.load(IMAGES)["images"][:n])
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def batches(x: torch.Tensor, b: int) -> list[torch.Tensor]:
    return [x[i : i + b] for i in range(0, x.shape[0], b)]


def run_stream(fn, chunks) -> float:
    start = time.perf_counter()
    for c in chunks:
        fn(c)
    return time.perf_counter() - start


def median_time(fn, chunks, repeats: int) -> float:
    run_stream(fn, chunks[:2])  # warm-up
    return statistics.median(run_stream(fn, chunks) for _ in range(repeats))


def bench_pair(name: str, student, teacher, x: torch.Tensor, repeats: int,
               sizes=(1, 32, 256), fractions=(0.1, 0.2, 0.3, 0.4, 0.5)) -> list[dict]:
    student.eval()
    teacher.eval()
    router = get_router("energy")
    with torch.inference_mode():
        scores = router.score(torch.cat([student(c) for c in batches(x, 256)])).numpy()
    rows = []
    flops_s, flops_t = count_flops(student, x[:2]), count_flops(teacher, x[:2])
    for b in sizes:
        chunks = batches(x, b)
        with torch.inference_mode():
            t_s = median_time(student, chunks, repeats)
            t_t = median_time(teacher, chunks, repeats)
        for f in fractions:
            threshold = float(np.quantile(scores, f))
            joint = JointModel(student, teacher, router, threshold, profile=True)
            t_j = median_time(joint.predict, chunks, repeats)

            def whole_stream(cs, joint=joint):
                return list(joint.predict_stream(cs, 256))

            t_stream = statistics.median(run_stream(whole_stream, [chunks]) for _ in range(repeats))
            joint.reset_counts()
            stages = {"student": 0.0, "route": 0.0, "teacher": 0.0, "merge": 0.0}
            for c in chunks:
                for k, v in joint.predict(c).timings.items():
                    stages[k] += v
            share = joint.counts()["teacher_rows"] / x.shape[0]
            ideal = t_t / (t_s + share * t_t)
            rows.append(
                {
                    "pair": name,
                    "batch": b,
                    "teacher_share": share,
                    "target_share": f,
                    "student_s": t_s,
                    "teacher_s": t_t,
                    "joint_s": t_j,
                    "measured_speedup": t_t / t_j,
                    "ideal_speedup": ideal,
                    "efficiency": (t_t / t_j) / ideal,
                    "stream_s": t_stream,
                    "stream_speedup": t_t / t_stream,
                    "stream_efficiency": (t_t / t_stream) / ideal,
                    "router_overhead": (stages["route"] + stages["merge"]) / stages["student"],
                    "student_flops": flops_s,
                    "teacher_flops": flops_t,
                }
            )
            print(
                f"  {name} B={b} f={share:.2f}: measured {t_t / t_j:.2f}x ideal {ideal:.2f}x "
                f"eff {rows[-1]['efficiency']:.2f} "
                f"overhead {100 * rows[-1]['router_overhead']:.2f}%",
                flush=True,
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = []
    for name in dict.fromkeys(r["pair"] for r in rows):
        sub = [r for r in rows if r["pair"] == name]
        fs, ft = sub[0]["student_flops"], sub[0]["teacher_flops"]
        paper = PAPER_FLOPS.get(name)
        note = f" (paper: {paper[0]:.3g} / {paper[1]:.3g})" if paper else ""
        lines += [
            f"#### {name}: counted FLOPs {fs:.3g} / {ft:.3g}{note}",
            "",
            "| batch | teacher share | ideal | predict: speed-up | efficiency | "
            "predict_stream: speed-up | efficiency | router overhead |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sub:
            lines.append(
                f"| {r['batch']} | {100 * r['teacher_share']:.0f}% | {r['ideal_speedup']:.2f}x | "
                f"{r['measured_speedup']:.2f}x | {r['efficiency']:.2f} | "
                f"{r['stream_speedup']:.2f}x | {r['stream_efficiency']:.2f} | "
                f"{100 * r['router_overhead']:.2f}% |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stream", type=int, default=512, help="inputs per timed stream")
    args = parser.parse_args()
    grid = {}
    if args.smoke:  # every code path, on a smaller grid
        args.repeats, args.stream = 1, 64
        grid = {"sizes": (1, 32), "fractions": (0.2,)}
    torch.manual_seed(0)
    x = stream_inputs(args.stream)
    rows = bench_pair("DenseNet-BC 52-6 -> 64-12", make_densenet(52, 6), make_densenet(64, 12),
                      x, args.repeats, **grid)
    rows += bench_pair("ResNet-20 -> ResNet-56", make_resnet(20), make_resnet(56), x,
                       args.repeats, **grid)
    meta = {
        "torch_threads": torch.get_num_threads(),
        "stream": args.stream,
        "repeats": args.repeats,
        "inputs": "CIFAR-10 test images" if IMAGES.is_file() else "random",
    }
    _common.write_results(
        "joint_throughput", {"meta": meta, "rows": rows}, markdown(rows), smoke=args.smoke
    )


if __name__ == "__main__":
    main()
