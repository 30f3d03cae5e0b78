"""Cold start of the numpy-only CLI: ``ebjr evaluate --help`` and ``import ebjr``.

Runs each command in a fresh interpreter ``--repeats`` times and reports the
median wall time, and checks that torch, scipy and matplotlib stay unimported.

Run: python benchmarks/cold_start.py [--repeats 15]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import _common

PROBE = (
    "import sys\n"
    "{code}\n"
    "heavy = [m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules]\n"
    "print(','.join(heavy))\n"
)
CASES = {
    "import ebjr": "import ebjr",
    "ebjr evaluate --help": (
        "import contextlib, io\nfrom ebjr.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['evaluate', '--help'])\n    except SystemExit:\n        pass"
    ),
}


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 2
    baseline = _common.median_seconds(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeats
    )
    print(f"python -c pass: median {baseline:.3f} s")
    for name, code in CASES.items():
        times, heavy = [], ""
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", PROBE.format(code=code)],
                check=True,
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - start)
            heavy = out.stdout.strip()
        print(
            f"{name}: median {statistics.median(times):.3f} s over {args.repeats} runs; "
            f"heavy modules imported: {heavy or 'none'}"
        )


if __name__ == "__main__":
    main()
