"""Benchmark the point-in-time feature pipeline: events per second and peak memory, with DuckDB alongside.

Rows: one snapshot (the restriction model's features, as the panel has them), a 12-snapshot labelled panel (`build_panel`),
and five features computed both by us and by an equivalent DuckDB query. A subprocess loads the
data once and runs the jobs in turn; memory is the resident set sampled during each job, above
what was resident before it (the loaded events frame).
Goal: >= 5 million events/s for one snapshot on 2 cores; peak extra memory under 3x the events frame.

Usage: python benchmarks/features.py [--data DIR] [--synthetic N_EVENTS --users N]
  --data DIR     a `linerisk simulate` directory (default benchmarks/out/world_1000000, simulated if absent)
  --synthetic N  random contract-format events instead (no simulator needed)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# this file is named features.py: keep its folder off the front of sys.path so `features` is the package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
from _measure import machine, table  # noqa: E402

OUT = Path(__file__).parent / "out"
DEFAULT_WORLD = OUT / "world_1000000"
SUBSET = ("late_repayment_count_90d", "late_days_sum_90d", "early_repayment_count_90d",
          "credit_inquiry_count_30d", "credit_score_latest")

DUCKDB_SQL = """
SELECT user_id,
  count(*) FILTER (WHERE event_type IN ('bl_repayment','pl_repayment') AND days_past_due > 0
                   AND event_time >= $lo90)                                          AS late_repayment_count_90d,
  coalesce(sum(least(days_past_due, 120)) FILTER (WHERE event_type IN ('bl_repayment','pl_repayment')
                   AND days_past_due > 0 AND event_time >= $lo90), 0)                AS late_days_sum_90d,
  count(*) FILTER (WHERE event_type IN ('bl_repayment','pl_repayment') AND days_past_due < 0
                   AND event_time >= $lo90)                                          AS early_repayment_count_90d,
  count(*) FILTER (WHERE event_type = 'credit_inquiry' AND event_time >= $lo30)      AS credit_inquiry_count_30d,
  arg_max(credit_score, event_time) FILTER (WHERE event_type = 'credit_score')       AS credit_score_latest
FROM events WHERE event_time < $as_of
GROUP BY user_id
"""


# ----------------------------------------------------------------------------- data

def synthetic_events(n_events: int, n_users: int, days: int = 730, seed: int = 1):
    """(events, users) with contract dtypes: random users, types in realistic proportions, time-ordered."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from linerisk.data.schema import DEFAULT_TYPES, EVENT_FIELDS, EVENT_TYPES

    share = {"credit_score": .35, "credit_inquiry": .18, "pl_repayment": .17, "bl_repayment": .11, "pl_drawdown": .07,
             "pl_limit_change": .04, "bl_drawdown": .03, "pl_open": .016, "pl_restricted": .008, "bl_open": .007,
             "pl_restored": .003, "bl_fund_misuse": .002, "bl_close": .002, "pl_appeal": .011,
             "pl_default": .0014, "bl_default": .0007}
    rng = np.random.default_rng(seed)
    p = np.array([share[t] for t in EVENT_TYPES])
    code = rng.choice(len(EVENT_TYPES), n_events, p=p / p.sum()).astype(np.int8)
    defaults = [EVENT_TYPES.index(t) for t in DEFAULT_TYPES]  # beyond 90 days past due, as the contract says
    need = {f: np.isin(code, [i for i, t in enumerate(EVENT_TYPES) if EVENT_FIELDS[t].get(f) == "req"])
            for f in ("amount", "days_past_due", "credit_score")}
    start = pd.Timestamp("2024-01-01", tz="UTC").value // 1000
    table_ = pa.table({
        "event_id": pa.array(np.arange(n_events)).cast(pa.string()),
        "user_id": pa.array(rng.integers(1, n_users + 1, n_events)),
        "event_time": pa.array(np.sort(rng.integers(0, days * 86_400_000_000, n_events)) + start,
                                type=pa.timestamp("us", tz="UTC")),
        "event_type": pa.DictionaryArray.from_arrays(pa.array(code), pa.array(list(EVENT_TYPES))).cast(pa.string()),
        "amount": pa.array(rng.gamma(2, 2000, n_events).round(2), mask=~need["amount"]),
        "days_past_due": pa.array((rng.integers(-20, 30, n_events) + 111 * np.isin(code, defaults)).astype(np.int32),
                                  mask=~need["days_past_due"]),
        "credit_score": pa.array(rng.integers(350, 951, n_events).astype(np.int32), mask=~need["credit_score"]),
    })
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1, dtype=np.int64),
                          "signup_date": pd.Timestamp("2023-01-01").as_unit("s"),
                          "segment": pd.array(np.where(rng.random(n_users) < .45, "merchant", "consumer"), dtype="string")})
    return table_, users


def load(args) -> tuple:
    """(events, users) typed as data.schema.validate_events leaves them (contract dtypes)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from linerisk.pipeline.io import read_users

    if args.synthetic:
        table_, users = synthetic_events(args.synthetic, args.users)
    else:
        table_ = pq.read_table(Path(args.data) / "events.parquet")
        users = read_users(Path(args.data) / "users.parquet")
    events = table_.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    del table_
    events["event_time"] = events["event_time"].astype("datetime64[us, UTC]")
    return events, users


# ----------------------------------------------------------------------------- worker (one measured job)

def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args) -> None:
    """Load the data, then time one job while sampling resident memory; print one JSON line."""
    import duckdb
    import pandas as pd

    from linerisk.features.compute import features_from_prepared, prepare_events
    from linerisk.features.labels import build_panel, default_snapshots
    from linerisk.features.spec import features_for, get

    import gc

    import pyarrow as pa

    events, users = load(args)
    frame_bytes = int(events.memory_usage(deep=True).sum())
    gc.collect()
    pa.default_memory_pool().release_unused()  # so memory freed after loading is not reused unseen
    snaps = default_snapshots(events, horizon_days=90, warmup_days=180, step_days=30)
    panel_snaps = snaps[:12]
    as_of = snaps[-1]
    subset = tuple(get(n) for n in SUBSET)
    restrict = features_for("restrict")  # the restriction model's features, as the panel builds them

    def one():
        return features_from_prepared(prepare_events(events, users, until=as_of), as_of, restrict)

    def panel():
        return build_panel(events, users, panel_snaps, horizon_days=90)

    def ours_subset():
        return features_from_prepared(prepare_events(events, users, until=as_of), as_of, subset)

    def duck():
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.register("events", events)
        day = pd.Timedelta(days=1)
        return con.execute(DUCKDB_SQL, {"as_of": as_of, "lo90": as_of - 90 * day, "lo30": as_of - 30 * day}).df()

    jobs = {"one": one, "panel": panel, "ours_subset": ours_subset, "duckdb": duck}
    for name in args.job.split(","):
        gc.collect()
        pa.default_memory_pool().release_unused()
        before, peak, done = _rss(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        result = jobs[name]()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        done.set()
        sampler.join()
        peak[0] = max(peak[0], _rss())
        print(json.dumps({"job": name, "events": len(events), "seconds": wall, "cpu": cpu, "rows": len(result),
                          "cols": result.shape[1], "frame_bytes": frame_bytes, "extra_peak": peak[0] - before,
                          "snapshots": len(panel_snaps) if name == "panel" else 1, "n_features": len(restrict),
                          "as_of": str(as_of)}), flush=True)
        del result


# ----------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="dataset directory written by `linerisk simulate`")
    ap.add_argument("--synthetic", type=int, help="use N random events instead of a dataset")
    ap.add_argument("--users", type=int, default=1_000_000, help="users for --synthetic")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        return worker(args)
    if not args.synthetic and args.data is None:
        args.data = DEFAULT_WORLD
        if not (args.data / "events.parquet").exists():
            subprocess.run([str(Path(sys.executable).parent / "linerisk"), "simulate", "--users", "1000000",
                            "--months", "24", "--seed", "1", "--out", str(args.data)], check=True)
    base = [sys.executable, __file__] + (["--synthetic", str(args.synthetic), "--users", str(args.users)]
                                         if args.synthetic else ["--data", str(args.data)])
    # one process loads the data once and runs the jobs in turn; memory is sampled per job
    out = subprocess.run(base + ["--job", "one,panel,ours_subset,duckdb"], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    res = {r["job"]: r for r in map(json.loads, out.stdout.strip().splitlines()) if isinstance(r, dict)}
    r = res["one"]
    gib = 2**30
    rows = []
    for name, job, what in (("one snapshot", "one", f"{r['n_features']} features"),
                            ("12-snapshot panel", "panel", f"{res['panel']['rows']:,} labelled rows"),
                            ("5 features, ours", "ours_subset", "prepare + 5 features"),
                            ("5 features, DuckDB", "duckdb", "one GROUP BY query, 2 threads")):
        x = res[job]
        rows.append([name, what, f"{x['seconds']:.2f}", f"{x['cpu']:.2f}", f"{x['events'] / x['seconds'] / 1e6:.2f}",
                     f"{x['events'] / x['cpu'] / 1e6:.2f}", f"{x['extra_peak'] / gib:.2f}",
                     f"{x['extra_peak'] / x['frame_bytes']:.2f}"])
    ratio = res["duckdb"]["seconds"] / res["ours_subset"]["seconds"]
    source = f"synthetic {args.synthetic:,} events / {args.users:,} users" if args.synthetic else str(args.data)
    print(f"Feature pipeline on {machine()}; data: {source}; {r['events']:,} events "
          f"({r['frame_bytes'] / gib:.2f} GiB in pandas), as_of {r['as_of']}\n")
    print(table(["run", "what", "wall s", "cpu s", "M events/s", "M events/cpu-s", "extra peak GiB",
                 "x events frame"], rows))
    print(f"\nload average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall time is only meaningful on an otherwise idle machine)")
    print(f"\nDuckDB / ours wall-time ratio for the same 5 features: {ratio:.2f} "
          f"(> 1 means ours is faster). Goal: >= 5 M events/s for one snapshot; extra peak < 3x the frame: "
          f"{'met' if r['events'] / r['seconds'] >= 5e6 and r['extra_peak'] < 3 * r['frame_bytes'] else 'not met'}.")


if __name__ == "__main__":
    main()
