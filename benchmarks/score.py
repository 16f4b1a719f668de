"""Benchmark `linerisk score`: users per second and peak memory, end to end from events, with reasons.

Goal (issue 6): 1,000,000 users scored with reasons in under 10 minutes and 4 GB on the 2-core machine.
A model is trained once on a 20,000-user world (default training parameters) and made champion in
a private store under benchmarks/out/score_home; then `linerisk score` runs on the scored world,
measured as a process tree (validation, features, probability, SHAP reasons, drift counts, writing).
Usage: python benchmarks/score.py [--users 1000000] [--months 24] [--chunk-users 100000]
Worlds are simulated under benchmarks/out/ when absent (seed 1).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import machine, run_measured, table  # noqa: E402

OUT = Path(__file__).parent / "out"
BIN = Path(sys.executable).parent
TRAIN_USERS = 20_000


def ensure_world(users: int, months: int) -> Path:
    out = OUT / f"world_{users}" if months == 24 else OUT / f"world_{users}_{months}m"
    if not (out / "manifest.json").exists():
        subprocess.run([str(BIN / "linerisk"), "simulate", "--users", str(users), "--months", str(months),
                        "--seed", "1", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def ensure_model(env: dict[str, str], months: int) -> None:
    """Train and promote a champion in the benchmark's own store (once)."""
    home = Path(env["LINERISK_HOME"])
    if (home / "champion").exists():
        return
    world = ensure_world(TRAIN_USERS, months)
    subprocess.run([str(BIN / "linerisk"), "train", "--data", str(world), "--log-every", "0",
                    "--out", str(home / "train_report.html")], check=True, env={**os.environ, **env},
                   stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "linerisk"), "registry", "promote", "1", "--force"], check=True,
                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    (home / "champion").touch()


def last_day(world: Path) -> str:
    """The scoring date: the day after the last event (so every event is in the past)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    times = pq.read_table(world / "events.parquet", columns=["event_time"]).column(0)
    return (pc.max(times).as_py().date().isoformat())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--chunk-users", type=int, default=100_000)
    args = ap.parse_args()
    home = OUT / "score_home"
    env = {"LINERISK_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "TQDM_DISABLE": "1"}
    home.mkdir(parents=True, exist_ok=True)
    ensure_model(env, args.months)
    rows = []
    for n in args.users:
        world = ensure_world(n, args.months)
        out = OUT / f"scores_{n}.parquet"
        secs, peak, stdout = run_measured(
            [str(BIN / "linerisk"), "score", "--events", str(world / "events.parquet"), "--as-of", last_day(world),
             "--out", str(out), "--chunk-users", str(args.chunk_users)], env=env)
        scored = int(re.search(r"scored ([\d,]+) active users", stdout).group(1).replace(",", ""))
        events = int(re.search(r"rows read ([\d,]+)", stdout).group(1).replace(",", ""))
        psi = re.search(r"score PSI vs training reference: (\S+)", stdout).group(1)
        ok = secs * 1_000_000 / max(n, 1) < 600 and peak < 4
        rows.append([f"{n:,}", f"{scored:,}", f"{events:,}", f"{args.chunk_users:,}", f"{secs:.0f}",
                     f"{scored / secs:,.0f}", f"{peak:.2f}", psi, "yes" if ok else "no"])
    print(f"linerisk score (with reasons, end to end from events) on {machine()}\n")
    print(table(["users", "active users scored", "events", "chunk users", "seconds", "users/s", "peak GiB",
                 "score PSI", "goal (1M in <600 s, <4 GiB)"], rows))


if __name__ == "__main__":
    main()
