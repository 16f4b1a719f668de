"""Benchmark training: LightGBM (the shipped model) vs XGBoost (hist) vs scikit-learn HistGradientBoosting.

Same out-of-time panel, same depth, learning rate, monotone constraints and early stopping on the
validation part; prints one markdown table (training seconds, rounds, test AUC / PR-AUC) with the machine.
Usage: python benchmarks/train.py [--data benchmarks/out/world_1000000] [--threads 2] [--sample-users 0.25]
The world is simulated first if absent (1,000,000 users x 24 months, seed 1); the panel is cached
as benchmarks/out/panel_<world>.parquet.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _measure import machine, table  # noqa: E402

OUT = Path(__file__).parent / "out"
DEFAULT_DATA = OUT / "world_1000000"


def ensure_world(data: Path) -> None:
    """Simulate the default world when the directory is missing."""
    if (data / "events.parquet").exists():
        return
    linerisk = str(Path(sys.executable).parent / "linerisk")
    cmd = [linerisk, "simulate", "--users", "1000000", "--months", "24", "--seed", "1", "--out", str(data)]
    print("simulating:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def load_panel(data: Path, horizon_days: int) -> tuple[pd.DataFrame, dict]:
    """The training panel and model spec; cached under benchmarks/out/."""
    from linerisk.models.train import registry_spec
    from linerisk.pipeline.train_job import load_world_panel

    cache = OUT / f"panel_{data.name}.parquet"
    spec = registry_spec()
    if cache.exists():
        panel = pd.read_parquet(cache)
        if all(f["name"] in panel.columns for f in spec["features"]):
            return panel, spec
    t0 = time.perf_counter()
    panel, spec, _ = load_world_panel(data, horizon_days)
    print(f"panel built in {time.perf_counter() - t0:.0f}s: {len(panel):,} rows", file=sys.stderr)
    panel.to_parquet(cache, index=False)
    return panel, spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample-users", type=float, default=1.0, help="Fraction of users kept (all snapshots).")
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--n-estimators", type=int, default=2000)
    ap.add_argument("--early-stopping-rounds", type=int, default=100)
    args = ap.parse_args()

    import lightgbm
    import sklearn
    import xgboost as xgb
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score, roc_auc_score
    from threadpoolctl import threadpool_limits

    from linerisk.models.train import TrainParams, monotone_constraints, split_out_of_time, train_model

    ensure_world(args.data)
    params = TrainParams(max_depth=args.max_depth, learning_rate=args.learning_rate, n_estimators=args.n_estimators,
                         early_stopping_rounds=args.early_stopping_rounds, num_threads=args.threads, log_every=0)
    panel, spec = load_panel(args.data, params.horizon_days)
    if args.sample_users < 1.0:
        users = panel["user_id"].drop_duplicates().sample(frac=args.sample_users, random_state=0)
        panel = panel[panel["user_id"].isin(users)]
    split = split_out_of_time(panel, params.valid_snapshots, params.test_snapshots, params.horizon_days)
    names = [f["name"] for f in spec["features"]]
    Xt, Xv, Xs = (part[names].astype("float32") for part in split)
    yt, yv, ys = (part["label"].to_numpy() for part in split)
    mono = monotone_constraints(spec)

    def lgbm():
        m = train_model(Xt, yt, Xv, yv, params, spec)
        return m.best_iteration_, m.predict_proba(Xs)[:, 1]

    def xgboost_hist():
        m = xgb.XGBClassifier(tree_method="hist", max_depth=params.max_depth, learning_rate=params.learning_rate,
                              n_estimators=params.n_estimators, early_stopping_rounds=params.early_stopping_rounds,
                              monotone_constraints=tuple(mono), min_child_weight=1.0, subsample=1.0,
                              colsample_bytree=params.feature_fraction, reg_lambda=params.lambda_l2,
                              n_jobs=args.threads, random_state=params.seed, eval_metric="logloss")
        m.fit(Xt, yt, eval_set=[(Xv, yv)], verbose=False)
        return m.best_iteration + 1, m.predict_proba(Xs)[:, 1]

    def sklearn_hgb():
        m = HistGradientBoostingClassifier(max_depth=params.max_depth, learning_rate=params.learning_rate,
                                           max_iter=params.n_estimators, max_leaf_nodes=params.num_leaves,
                                           min_samples_leaf=params.min_child_samples, l2_regularization=params.lambda_l2,
                                           monotonic_cst=mono, early_stopping=True,
                                           n_iter_no_change=params.early_stopping_rounds, random_state=params.seed)
        with threadpool_limits(args.threads, user_api="openmp"):
            m.fit(Xt, yt, X_val=Xv, y_val=yv)
            return m.n_iter_, m.predict_proba(Xs)[:, 1]

    rows = []
    for label, fit in ((f"LightGBM {lightgbm.__version__} (+ calibration)", lgbm),
                       (f"XGBoost {xgb.__version__} hist", xgboost_hist),
                       (f"scikit-learn {sklearn.__version__} HistGradientBoosting", sklearn_hgb)):
        print(f"training {label} ...", file=sys.stderr)
        t0 = time.perf_counter()
        rounds, p = fit()
        seconds = time.perf_counter() - t0
        rows.append([label, f"{seconds:.1f}", rounds, f"{roc_auc_score(ys, p):.4f}",
                     f"{average_precision_score(ys, p):.4f}"])

    print(f"\nTraining benchmark on {args.data.name}: train {len(Xt):,} / valid {len(Xv):,} / test {len(Xs):,} rows, "
          f"{len(names)} features, max_depth {params.max_depth}, lr {params.learning_rate}, {args.threads} threads")
    print(f"machine: {machine()}\n")
    print(table(["model", "train seconds", "rounds", "test AUC", "test PR-AUC"], rows))


if __name__ == "__main__":
    main()
