"""Benchmark: reason codes per second (this project's TreeSHAP path, shap.TreeExplainer, LightGBM pred_contrib)
and milliseconds per user for the path back (action plan, time projection).

All three SHAP backends explain the same model and rows and feed the same family grouping and
reason texts (models.scoring.reasons_frame). The model is trained on the real feature spec from
a simulated world (simulated here unless --world is given). Prints the machine and one table::

    python benchmarks/explain.py [--rows 20000] [--slow-rows 2000] [--plan-users 50] [--world DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import machine, table  # noqa: E402

THREADS = 2


def _world(path: Path | None, users: int) -> Path:
    if path is not None:
        return path
    from linerisk.data.simulate import WorldParams
    from linerisk.pipeline.simulate_job import write_world

    out = Path(tempfile.mkdtemp(prefix="linerisk-bench-explain-")) / "world"
    write_world(WorldParams(users=users, months=15, seed=3, oracle_users=100), out, jobs=1, progress=False)
    return out


def _model_and_rows(world: Path, rows: int):
    from linerisk.features import spec as feature_spec
    from linerisk.features.labels import build_panel, default_snapshots
    from linerisk.models.train import TrainParams, registry_spec, split_random, train_model
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(world / "users.parquet")
    events = read_events(world / "events.parquet", users).good
    snaps = default_snapshots(events, horizon_days=90, step_days=45)
    panel = build_panel(events, users, snaps, horizon_days=90).reset_index()
    names = feature_spec.feature_names()
    spec = registry_spec()
    split = split_random(panel, "label", seed=0)
    params = TrainParams(n_estimators=300, early_stopping_rounds=50, log_every=0, num_threads=THREADS)
    model = train_model(split.train[names], split.train["label"], split.valid[names], split.valid["label"], params, spec)
    X = panel[names].sample(rows, replace=len(panel) < rows, random_state=0).reset_index(drop=True)
    return model, X, events, users, snaps[-1]


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows for this project's path and pred_contrib")
    ap.add_argument("--slow-rows", type=int, default=2_000, help="rows for shap.TreeExplainer")
    ap.add_argument("--plan-users", type=int, default=50, help="users for the recovery timings")
    ap.add_argument("--users", type=int, default=5_000, help="users of the simulated world")
    ap.add_argument("--world", type=Path, help="an existing `linerisk simulate` directory")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*TreeExplainer shap values output has changed.*")
    import numba
    import shap

    from linerisk.models import recover
    from linerisk.models.explain import explain_frame
    from linerisk.models.scoring import prepare_features, reasons_frame

    numba.set_num_threads(THREADS)
    model, X, events, users, as_of = _model_and_rows(_world(args.world, args.users), args.rows)
    scorer, spec = model.scorer_, model.spec_
    Xp = prepare_features(X, spec)
    explain_frame(scorer, X.head(10))  # JIT / cache load outside the timings

    booster = scorer.booster
    explainer = shap.TreeExplainer(booster)
    Xs = Xp.head(args.slow_rows)
    backends = {
        "linerisk explain_frame (TreeSHAP kernel, up + help)": (X, lambda d: explain_frame(scorer, d)),
        "TreeSHAP kernel + reasons_frame": (Xp, lambda d: reasons_frame(scorer.shap_values(d), d, spec)),
        "LightGBM pred_contrib + reasons_frame": (Xp, lambda d: reasons_frame(
            booster.predict(d, pred_contrib=True, num_threads=THREADS), d, spec)),
        "shap.TreeExplainer + reasons_frame": (Xs, lambda d: reasons_frame(
            np.column_stack([explainer.shap_values(d), np.full(len(d), explainer.expected_value)]), d, spec)),
    }
    rows = []
    ref = booster.predict(Xs, pred_contrib=True)
    for name, (data, fn) in backends.items():
        seconds = _best(lambda: fn(data), repeat=1 if "shap." in name else 3)
        rows.append([name, f"{len(data):,}", f"{len(data) / seconds:,.0f} users/s", ""])
    diff = float(np.abs(scorer.shap_values(Xs) - ref).max())
    sv = float(np.abs(np.asarray(explainer.shap_values(Xs.head(200))) - ref[:200, :-1]).max())
    rows[1][3] = f"max abs diff to pred_contrib {diff:.1e}"
    rows[3][3] = f"max abs diff to pred_contrib {sv:.1e}"

    # the path back: one user per call (what `linerisk explain` does) and batched
    from linerisk.features.compute import build_features

    active = pd.Index(pd.unique(events["user_id"]))[: args.plan_users]
    mine = events[events["user_id"].isin(active)]
    feats = build_features(mine, as_of, users[users["user_id"].isin(active)])
    recover.plan_actions(scorer, feats.head(1))  # warm-up
    single = [_best(lambda i=i: recover.plan_actions(scorer, feats.iloc[[i]]), 1) for i in range(len(feats))]
    batch = _best(lambda: recover.plan_actions(scorer, feats), 1)
    one_user = mine[mine["user_id"] == active[0]]
    proj = _best(lambda: recover.project_time(scorer, one_user, users, [active[0]], as_of), 3)
    proj_batch = _best(lambda: recover.project_time(scorer, mine, users, active, as_of), 1)
    rows += [
        ["action plan, one user per call (median / p95)", f"{len(feats)}",
         f"{1000 * np.median(single):.1f} / {1000 * np.quantile(single, 0.95):.1f} ms/user", "goal < 100 ms"],
        ["action plan, batched", f"{len(feats)}", f"{1000 * batch / len(feats):.2f} ms/user", ""],
        ["time projection (53 weekly dates), one user", "1", f"{1000 * proj:.1f} ms/user", ""],
        ["time projection, batched", f"{len(active)}", f"{1000 * proj_batch / len(active):.1f} ms/user", ""],
    ]
    print(f"machine: {machine()}; threads {THREADS}; model {booster.num_trees()} trees, depth <= 6, "
          f"{booster.num_feature()} features")
    print()
    print(table(["what", "rows", "speed", "note"], rows))


if __name__ == "__main__":
    main()
