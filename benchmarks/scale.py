"""Benchmark one process against a Dask cluster: `linerisk score` and `linerisk simulate` on 1M users.

Scores the 1M-user world (with reasons, end to end from events) in one process and on
`--scheduler local:2` (a LocalCluster of 2 single-threaded workers started by the run itself,
so its start-up is in the time), and simulates 1M users both ways. Prints partitions, workers,
seconds, users/s, peak memory of the whole run and of its largest process (a worker), and a
projection to 100M users on N workers from the measured cost of one partition.
Usage: python benchmarks/scale.py [--users 1000000] [--workers 8 32 128]   (run it alone: it uses both cores)
"""
from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import machine, run_measured_each, store_env, table  # noqa: E402
from score import BIN, OUT, ensure_model, ensure_world, last_day  # noqa: E402

CHUNK = 100_000  # users per partition (score) and per simulated block (fixed by the simulator)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 32, 128])
    args = ap.parse_args()
    home = OUT / "score_home"
    env = store_env(home)
    ensure_model(env, 24)
    world = ensure_world(args.users, 24)
    as_of = last_day(world)
    parts = math.ceil(args.users / CHUNK)
    rows, per_part = [], {}
    for label, extra, workers in (("score, one process", [], 1), ("score, local:2", ["--scheduler", "local:2"], 2)):
        out = OUT / f"scale_scores_{label.split()[-1].replace(':', '')}.parquet"
        secs, peak, single, stdout = run_measured_each(
            [str(BIN / "linerisk"), "score", "--events", str(world / "events.parquet"), "--as-of", as_of,
             "--out", str(out), "--chunk-users", str(CHUNK), *extra], env=env)
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        scored = int(re.search(r"scored ([\d,]+) users with a line", stdout).group(1).replace(",", ""))
        per_part[label] = secs * workers / parts  # worker-seconds per partition, start-up included
        rows.append([label, parts, workers, f"{secs:.0f}", f"{scored / secs:,.0f} scored", f"{peak:.2f}",
                     f"{single:.2f}"])
    for label, extra, workers in (("simulate, one process", ["--jobs", "1"], 1),
                                  ("simulate, local:2", ["--scheduler", "local:2"], 2)):
        out = OUT / "scale_world"
        secs, peak, single, _ = run_measured_each(
            [str(BIN / "linerisk"), "simulate", "--users", str(args.users), "--seed", "1", "--out", str(out), *extra],
            env=env)
        shutil.rmtree(out, ignore_errors=True)
        per_part[label] = secs * workers / parts
        rows.append([label, parts, workers, f"{secs:.0f}", f"{args.users / secs:,.0f} simulated", f"{peak:.2f}",
                     f"{single:.2f}"])
    print(f"one process vs a 2-worker LocalCluster, {args.users:,} users, on {machine()}\n")
    print(table(["run", "partitions", "workers", "seconds", "users/s", "peak GiB (all)", "peak GiB (largest process)"],
                rows))
    target = 100_000_000
    proj = []
    for label in ("score, local:2", "simulate, local:2"):
        cost = per_part[label]
        proj.append([label.split(",")[0], f"{cost:.1f}",
                     *[f"{math.ceil(target / CHUNK) * cost / n / 60:.0f}" for n in args.workers]])
    print(f"\nprojection to {target:,} users ({math.ceil(target / CHUNK):,} partitions of {CHUNK:,}), minutes:\n")
    print(table(["job", "worker-s per partition", *[f"{n} workers" for n in args.workers]], proj))
    print("\nAssumes: partitions are independent and cost what they cost here (same events per user, same "
          "model), workers as fast as these cores, storage and network keep up (each worker reads only its "
          "partitions' events; the event-id hash shuffle moves 8 bytes per event), and the client's own work "
          "(users table, merging counts) stays small; the cluster's start-up is counted in the measured cost.")


if __name__ == "__main__":
    main()
