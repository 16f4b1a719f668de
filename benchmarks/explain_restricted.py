"""Benchmark: `linerisk explain` for a restricted line, seconds per user after start-up (goal: under 1 s).

Start-up (imports, both models loaded from the registry and sha256-checked, the users table) is
timed apart; then each user's events are read and validated and the whole restricted view is
built (why it was restricted, the red line, the curve, what holds it back, the levers), as
`linerisk explain` does. Uses the store and world of benchmarks/score.py (run it first):

    python benchmarks/explain_restricted.py [--users 20] [--world benchmarks/out/world_20000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import machine, table  # noqa: E402

OUT = Path(__file__).parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--world", type=Path, default=OUT / "world_20000")
    args = ap.parse_args()
    home = OUT / "score_home"
    os.environ.update({"LINERISK_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"})
    started = time.perf_counter()
    import numpy as np
    import pyarrow.dataset as ds

    from linerisk import api
    from linerisk.data.schema import validate_events
    from linerisk.features.labels import line_state
    from linerisk.pipeline.io import EventSource, load_model_package, read_events, read_users

    restrict, restore = load_model_package("linerisk@champion"), load_model_package("linerisk-restore@champion")
    users = read_users(args.world / "users.parquet")
    source = EventSource(args.world / "events.parquet")
    startup = time.perf_counter() - started
    as_of = "2026-01-01"
    sample = users.sample(min(len(users), 20 * args.users), random_state=0)
    state = line_state(read_events(args.world / "events.parquet", sample).good, as_of, sample)["state"]
    picked = state.index[state == "restricted"][: args.users]
    seconds = []
    for user in picked:
        t0 = time.perf_counter()
        events = validate_events(source.read(ds.field("user_id") == user), users)  # checked once, as in
        view = api.explain(events, users, as_of, user, restrict, restore_model=restore)  # `linerisk explain`
        assert view["line_state"] == "restricted"
        seconds.append(time.perf_counter() - t0)
    s = np.asarray(seconds)
    print(f"linerisk explain, restricted lines, on {machine()}\n")
    print(table(["users", "start-up s", "first user s", "median s", "p90 s", "max after first s", "goal (< 1 s)"],
                [[len(s), f"{startup:.1f}", f"{s[0]:.2f}", f"{np.median(s):.2f}", f"{np.quantile(s, 0.9):.2f}",
                  f"{s[1:].max():.2f}", "yes" if np.median(s) < 1 else "no"]]))


if __name__ == "__main__":
    main()
