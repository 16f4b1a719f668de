"""Benchmark: exact SHAP via models.treeshap vs LightGBM pred_contrib, shap.TreeExplainer, predict.

Prints the machine and one markdown table (rows/second, 2 threads each, max |diff| to
pred_contrib). The reasons' attribution (Owen values against a reference, models.treeshap
baseline_values) is timed including building the reference rows; its check is how far its rows
are from adding up to the raw score. Usage::

    python benchmarks/treeshap.py [--rows 100000] [--slow-rows 5000]
                                  [--model model.txt --features features.parquet [--spec spec.json]]

The slow explainers (pred_contrib, shap) run on the first ``--slow-rows`` rows; differences are
measured on those rows. numba compile time is excluded from timings and reported separately.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from typing import Callable

import lightgbm as lgb
import numba
import numpy as np

THREADS = 2


def synthetic_model(n_train: int = 50_000, n_features: int = 60, seed: int = 0) -> tuple[lgb.Booster, np.ndarray]:
    """300-tree depth-6 binary model on synthetic data with NaNs and zeros; returns (booster, X)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train, n_features))
    X[rng.random(X.shape) < 0.05] = np.nan
    X[:, :5] = np.round(X[:, :5])  # some zero-heavy columns
    beta = rng.normal(size=n_features) * (rng.random(n_features) < 0.5)
    logit = np.nan_to_num(X) @ beta * 0.3 + np.sin(np.nan_to_num(X[:, 0]) * np.nan_to_num(X[:, 1]))
    y = (rng.random(n_train) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "num_leaves": 63, "max_depth": 6, "learning_rate": 0.05,
              "num_threads": THREADS, "verbose": -1, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=300)
    return booster, X


def rows_per_second(fn: Callable[[], object], n_rows: int, repeat: int = 1) -> float:
    """Best-of-``repeat`` throughput of ``fn`` explaining ``n_rows`` rows."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_rows / best


def reference_and_groups(X: np.ndarray, spec: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The reasons' reference rows and feature groups: from a package's spec (its attribution reference and
    families), else a stand-in (every feature moved down to its median, groups of 6 features)."""
    from linerisk.models import scoring

    if spec is not None:
        return scoring.reference_rows(X, spec), scoring.family_ids(spec)
    R = np.where(np.isnan(X), X, np.minimum(X, np.nanmedian(X, axis=0)))
    return R, np.arange(X.shape[1]) // 6


def bench(name: str, booster: lgb.Booster, X: np.ndarray, rows: int, slow_rows: int,
          spec: dict | None = None) -> list[str]:
    """Time all methods on one model/data pair; returns markdown table rows."""
    from linerisk.models import treeshap

    X = np.ascontiguousarray(X[:rows], dtype=np.float64)
    Xs = X[:slow_rows]
    t0 = time.perf_counter()
    ts = treeshap.TreeShap(booster).fit()
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts.shap_values(X[:10])  # JIT warm-up (or on-disk cache load)
    jit_s = time.perf_counter() - t0
    jit_kind = "compiled" if treeshap._explain.stats.cache_misses else "numba cache load"
    t0 = time.perf_counter()
    ts2 = treeshap.TreeShap(booster).fit()
    precompute_s = time.perf_counter() - t0

    ref = booster.predict(Xs, pred_contrib=True, num_threads=THREADS)
    mine = ts2.shap_values(Xs)
    diff = float(np.abs(mine - ref).max())

    import shap

    explainer = shap.TreeExplainer(booster)
    sv = np.asarray(explainer.shap_values(Xs[:1000]))
    shap_diff = float(np.abs(sv - ref[:1000, :-1]).max())

    R, groups = reference_and_groups(X, spec)
    ts2.baseline_values(X[:10], R[:10], groups)  # JIT warm-up
    owen = ts2.baseline_values(X, R, groups)
    owen_sum = float(np.abs(owen.sum(axis=1) - booster.predict(X, raw_score=True, num_threads=THREADS)).max())
    res = {
        "treeshap (this)": (rows_per_second(lambda: ts2.shap_values(X), len(X), 3), diff),
        "owen vs reference (reasons; diff = sum to raw score)": (rows_per_second(
            lambda: ts2.baseline_values(X, reference_and_groups(X, spec)[0], groups), len(X), 3), owen_sum),
        "lightgbm pred_contrib": (rows_per_second(
            lambda: booster.predict(Xs, pred_contrib=True, num_threads=THREADS), len(Xs)), 0.0),
        "shap.TreeExplainer": (rows_per_second(lambda: explainer.shap_values(Xs), len(Xs)), shap_diff),
        "lightgbm predict": (rows_per_second(
            lambda: booster.predict(X, raw_score=True, num_threads=THREADS), len(X), 3), float("nan")),
    }
    base = res["lightgbm pred_contrib"][0]
    lines = []
    for method, (rps, d) in res.items():
        lines.append(f"| {name} | {method} | {rps:,.0f} | {rps / base:.1f}x | "
                     f"{'-' if np.isnan(d) else f'{d:.2e}'} |")
    lines.append(f"| {name} | treeshap one-off costs | first fit+call {fit_s + jit_s:.2f}s "
                 f"({jit_kind}); precompute per booster {precompute_s:.2f}s | | |")
    return lines


def main() -> None:
    """Parse arguments, run the benchmarks, print machine info and the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--slow-rows", type=int, default=5_000)
    ap.add_argument("--model", help="LightGBM text model file")
    ap.add_argument("--features", help="parquet of features for --model")
    ap.add_argument("--spec", help="the package's spec.json (attribution reference and families) for --model")
    args = ap.parse_args()
    numba.set_num_threads(THREADS)
    warnings.filterwarnings("ignore", message=".*TreeExplainer shap values output has changed.*")

    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | "
          f"cpu_count={os.cpu_count()} | threads={THREADS} | python {platform.python_version()} | "
          f"lightgbm {lgb.__version__} | numba {numba.__version__}")
    print()
    print("| model | method | rows/s | vs pred_contrib | max abs diff to pred_contrib |")
    print("|---|---|---:|---:|---:|")
    booster, X = synthetic_model()
    rng = np.random.default_rng(1)
    Xb = X[rng.integers(0, len(X), args.rows)]
    for line in bench("synthetic 300x depth6, 60 feat", booster, Xb, args.rows, args.slow_rows):
        print(line, flush=True)
    if args.model:
        import pandas as pd

        user_booster = lgb.Booster(model_file=args.model)
        feats = pd.read_parquet(args.features)[user_booster.feature_name()]
        from lightgbm.basic import _data_from_pandas

        Xu = _data_from_pandas(feats, "auto", "auto", user_booster.pandas_categorical)[0]
        import json

        spec = json.loads(open(args.spec, encoding="utf-8").read()) if args.spec else None
        Xu = np.ascontiguousarray(Xu[:args.rows], dtype=np.float64)
        for line in bench(os.path.basename(args.model), user_booster, Xu, args.rows, args.slow_rows, spec):
            print(line, flush=True)


if __name__ == "__main__":
    main()
