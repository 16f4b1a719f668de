"""Benchmark start-up: `linerisk --help` and `import linerisk` (the API loads its libraries on use).

Goal (issue 11): `linerisk --help` in under 0.5 s. Each command runs --runs times in a fresh process;
the table gives the median and the slowest run, and which heavy libraries were imported.
Usage: python benchmarks/startup.py [--runs 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import machine, table  # noqa: E402

HEAVY = ("pandas", "numpy", "pyarrow", "mlflow", "lightgbm", "sklearn", "shap", "numba", "matplotlib")
PROBE = "import sys; {code}; print(','.join(m for m in {heavy!r} if m in sys.modules) or 'none')"


def timed(cmd: list[str], runs: int) -> tuple[list[float], str]:
    """Wall seconds of `runs` fresh runs of `cmd`, and the last run's last output line."""
    seconds, out = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        seconds.append(time.perf_counter() - start)
    return seconds, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    bin_dir = Path(sys.executable).parent
    cases = {
        "linerisk --help": ([str(bin_dir / "linerisk"), "--help"], "-"),
        "python -c pass (interpreter alone)": ([sys.executable, "-c", "pass"], "-"),
        "import linerisk; linerisk.score": (
            [sys.executable, "-c", PROBE.format(code="import linerisk; linerisk.score", heavy=HEAVY)], None),
        "linerisk --help, in-process probe": (
            [sys.executable, "-c", PROBE.format(code="from linerisk.pipeline.cli import main; main(['--help'])",
                                                heavy=HEAVY)], None),
    }
    rows = []
    for name, (cmd, loaded) in cases.items():
        seconds, last = timed(cmd, args.runs)
        rows.append([name, f"{statistics.median(seconds):.3f}", f"{max(seconds):.3f}", loaded or last,
                     "yes" if name.startswith("linerisk --help") and statistics.median(seconds) < 0.5 else ""])
    print(f"Start-up, {args.runs} runs each; machine: {machine()}\n")
    print(table(["command", "median s", "slowest s", "heavy libraries imported", "goal < 0.5 s"], rows))


if __name__ == "__main__":
    main()
