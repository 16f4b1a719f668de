"""Benchmark: reason fidelity of attribution candidates on an unseen world, per cause family.

Each candidate explains the same model on the same rows; reasons are the 3 families with the
largest attribution (at least MIN_CONTRIBUTION, or the candidate's materiality threshold), scored
against the world's truth by models.explain.fidelity_metrics. Prints the overall table, the
per-family tables and rows/s. Usage::

    python benchmarks/fidelity.py --train-world .linerisk/demo/world_seed0 \
        --world .linerisk/demo/world_seed1 [--model linerisk@champion] [--cache .linerisk/cache]
        [--background 20]

Candidates: path-dependent TreeSHAP (LightGBM's pred_contrib, against the average user); baseline
Shapley and Owen values (families as players) against the user's best-achievable self with the
best value seen in training; Owen values against references built like `attribution_reference`
from the training world (the lowest-risk tenth's 75th/90th percentiles, issue 16's first choice;
the package's own reference [chosen]; the population's median or 75th percentile for risk-raising
features), some with a materiality threshold (a family is named only when its value reaches it);
the chosen reference with evidence gates (`GATES`: a family named only when its behaviour is there), and
the credit-score features' reference at the population median; with `--background K`, interventional
TreeSHAP against the K lowest-risk training rows (the mean of baseline Shapley values, slow).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _panel(world: Path, cache: Path | None) -> pd.DataFrame:
    """The world's labelled panel at its snapshot dates (cached as Parquet when `cache` is given)."""
    from linerisk.pipeline.train_job import load_world_panel

    path = None if cache is None else cache / f"panel_{world.name}.parquet"
    if path is not None and path.exists():
        return pd.read_parquet(path)
    panel, _, _ = load_world_panel(world, 90)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        panel.to_parquet(path)
    return panel


# name -> (TrainParams overrides of the reference, materiality threshold); None: the defaults
REFERENCES = {
    "Owen vs lowest-risk tenth q75/q90 (previous)": ({"reference_low_risk_share_up": 0.10,
                                                      "reference_quantile_up": 0.75}, None),
    "Owen vs lowest-risk tenth q75/q90, material >= 0.1": ({"reference_low_risk_share_up": 0.10,
                                                            "reference_quantile_up": 0.75}, 0.10),
    "Owen vs low-risk half q60 / tenth q90 [chosen]": ({}, None),
    "Owen vs low-risk half q60 / tenth q90, material >= 0.05": ({}, 0.05),
    "Owen vs low-risk half q60 / tenth q90, material >= 0.1": ({}, 0.10),
    "Owen vs population median (risk-raising)": ({"reference_low_risk_share_up": 1.0,
                                                  "reference_quantile_up": 0.5}, None),
    "Owen vs population q75 (risk-raising), material >= 0.1": ({"reference_low_risk_share_up": 1.0,
                                                                "reference_quantile_up": 0.75}, 0.10),
}


def material(values: np.ndarray, spec: dict, threshold: float | None) -> np.ndarray:
    """The attribution with every family whose total is under `threshold` zeroed (so it is never named)."""
    if threshold is None:
        return values
    from linerisk.models import scoring

    ids = scoring.family_ids(spec)
    sums = scoring.family_contributions(values, spec).to_numpy()
    out = values.copy()
    out[:, : len(ids)] = np.where(sums[:, ids] >= threshold, values[:, : len(ids)], 0.0)
    return out


# Evidence gates: a family is named only when the behaviour it names is there (README "Evidence gates").
GATES = {"multi_borrowing": lambda X, fam: X["credit_inquiry_peak_30d_180d"].to_numpy() >= 2,
         "utilisation": lambda X, fam: X["pl_utilisation"].to_numpy() >= 0.5,
         "early_repayment": lambda X, fam: fam["early_repayment"].to_numpy() >= 0.25}


def gated(values: np.ndarray, X: pd.DataFrame, spec: dict) -> np.ndarray:
    """The attribution with each gated family zeroed on the rows where its evidence is missing."""
    from linerisk.models import scoring

    fam = scoring.family_contributions(values, spec)
    family = np.asarray([f["family"] for f in spec["features"]])
    out = values.copy()
    for name, keep in GATES.items():
        out[np.ix_(~keep(X, fam), np.flatnonzero(family == name))] = 0.0
    return out


def candidates(scorer, X: pd.DataFrame, train_X: pd.DataFrame, background: int) -> dict[str, tuple]:
    """name -> (per-feature attribution with a last column, seconds)."""
    from linerisk.models import scoring, treeshap
    from linerisk.models.train import TrainParams, attribution_reference

    ts = treeshap.explainer_for(scorer.booster)
    A = treeshap.to_matrix(X, scorer.booster)
    T = treeshap.to_matrix(train_X, scorer.booster)
    train_raw = scorer.booster.predict(T, raw_score=True)
    direction = np.asarray([f.get("direction", 0) for f in scorer.spec["features"]])
    best = {f["name"]: float(np.nanmin(T[:, j]) if d > 0 else np.nanmax(T[:, j]))
            for j, (f, d) in enumerate(zip(scorer.spec["features"], direction)) if d != 0}
    best_spec = {**scorer.spec, "attribution": {"reference": best}}
    groups = scoring.family_ids(scorer.spec)
    out, owen_of = {}, {}

    def timed(name, fn, base_seconds=0.0):
        t0 = time.perf_counter()
        out[name] = (fn(), base_seconds + time.perf_counter() - t0)

    def owen(reference: dict) -> tuple[np.ndarray, float]:
        """Owen values against `reference` and the seconds they took, computed once per distinct reference."""
        key = tuple(sorted(reference.items()))
        if key not in owen_of:
            t0 = time.perf_counter()
            spec = {**scorer.spec, "attribution": {"reference": reference}}
            owen_of[key] = (ts.baseline_values(A, scoring.reference_rows(A, spec), groups), time.perf_counter() - t0)
        return owen_of[key]

    timed("path TreeSHAP (pred_contrib)", lambda: ts.shap_values(A))
    timed("baseline Shapley vs best", lambda: ts.baseline_values(A, scoring.reference_rows(A, best_spec)))
    timed("Owen (families) vs best", lambda: ts.baseline_values(A, scoring.reference_rows(A, best_spec), groups))
    chosen = scorer.spec["attribution"]["reference"]  # the package's own (TrainParams' defaults)
    for name, (overrides, threshold) in REFERENCES.items():
        params = dataclasses.replace(TrainParams(), **overrides)
        values, seconds = owen(attribution_reference(train_X, train_raw, scorer.spec, params) if overrides else chosen)
        timed(name, lambda: material(values, scorer.spec, threshold), seconds)
    values, seconds = owen(chosen)
    timed("Owen [chosen], evidence gates", lambda: gated(values, X, scorer.spec), seconds)
    median = {f["name"]: float(train_X[f["name"]].median()) for f in scorer.spec["features"]
              if f["family"] == "credit_score" and f["name"] in chosen}
    values, seconds = owen({**chosen, **median})
    timed("Owen, credit-score reference at the population median", lambda: values, seconds)
    if background:
        low = np.argsort(train_raw, kind="stable")[:background]

        def interventional():
            total = np.zeros((len(A), A.shape[1] + 1))
            for i in low:
                total += ts.baseline_values(A, np.broadcast_to(T[i], A.shape))
            return total / len(low)
        timed(f"interventional vs {background} lowest-risk users", interventional)
    return out


def main() -> None:
    from linerisk.models import registry
    from linerisk.models.report import markdown_table
    from linerisk.models.explain import fidelity_metrics
    from linerisk.models.scoring import apply_calibrator, prepare_features, reasons_frame
    from linerisk.pipeline.io import read_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-world", type=Path, required=True)
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--model", default="linerisk@champion")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--background", type=int, default=0)
    args = ap.parse_args()

    scorer = registry.load_package(args.model).scorer
    panel = _panel(args.world, args.cache).reset_index(drop=True)
    train = _panel(args.train_world, args.cache)
    X, train_X = prepare_features(panel, scorer.spec), prepare_features(train, scorer.spec)
    truth = read_table(args.world / "truth_snapshots.parquet")
    restrictions = read_table(args.world / "truth_restrictions.parquet")
    p = apply_calibrator(scorer.booster.predict(X, raw_score=True), scorer.calibrator)

    overall, families, speed = {}, {}, {}
    for name, (values, seconds) in candidates(scorer, X, train_X, args.background).items():
        scores = pd.concat([panel[["user_id", "as_of"]], pd.DataFrame({"probability": p}),
                            reasons_frame(values, X, scorer.spec)], axis=1)
        fid = fidelity_metrics(scores, truth, restrictions)
        overall[name] = fid.overall
        families[name] = fid.by_family
        speed[name] = len(X) / seconds

    keys = ["driver_agreement_at_3", "cause_recall_at_3", "cause_recall_at_3_present",
            "min_cause_recall_at_3_present_20plus", "named_zero_hazard_share", "bl_closure_false_blame",
            "cause_recall_at_1", "cause_ceiling_at_3"]
    table = pd.DataFrame(overall).T[keys]
    table["rows/s"] = pd.Series(speed).round(0)
    print(f"{len(X):,} rows of {args.world}; goals: driver >= 0.95, recall@3 >= 0.83, present >= 0.95 "
          "(>= 0.90 per family with 20+), zero-hazard <= 0.03, bl_closure blame <= 0.05\n")
    print(markdown_table(table.round(3)))
    for col, what in (("cause_recall_at_3", "cause recall@3"), ("cause_recall_at_3_present", "recall@3 where present"),
                      ("named_zero_hazard", "share of named reasons with zero hazard")):
        per = pd.DataFrame({name: t[col] for name, t in families.items()}).T
        print(f"\n{what} by family\n")
        drop = [] if col == "named_zero_hazard" else [c for c in ("latent",) if c in per.columns]
        print(markdown_table(per.drop(columns=drop).round(3)))


if __name__ == "__main__":
    main()
