"""Benchmark `linerisk simulate`: wall time, events per second and peak memory at 100k and 1M users.

Goal (world.md): 1,000,000 users x 24 months in under 5 minutes and 8 GB on the 2-core machine.
Usage: python benchmarks/simulate.py [--users 100000 1000000] [--months 24]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import machine, run_measured, table  # noqa: E402

OUT = Path(__file__).parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--months", type=int, default=24)
    args = ap.parse_args()
    linerisk = str(Path(sys.executable).parent / "linerisk")
    rows = []
    for n in args.users:
        out = OUT / f"world_{n}"
        secs, peak, _ = run_measured([linerisk, "simulate", "--users", str(n), "--months", str(args.months),
                                      "--seed", "1", "--out", str(out)])
        manifest = json.loads((out / "manifest.json").read_text())
        events = manifest["rows"]["events"]
        size = sum(f.stat().st_size for f in out.iterdir()) / 2**30
        rows.append([f"{n:,}", args.months, f"{events:,}", f"{secs:.0f}", f"{events / secs:,.0f}",
                     f"{peak:.2f}", f"{size:.2f}", "yes" if secs < 300 and peak < 8 else "no"])
    print(f"linerisk simulate on {machine()}\n")
    print(table(["users", "months", "events", "seconds", "events/s", "peak GiB", "on disk GiB",
                 "goal (<300 s, <8 GiB)"], rows))


if __name__ == "__main__":
    main()
