"""A training run: out-of-time split, calibrated LightGBM and a baseline, evaluation (with the
oracle), reason fidelity on an unseen world, the report, and the drift reference to register.

What `linerisk train` and `linerisk.train` both run; pure over DataFrames (no file I/O; progress
goes to the `linerisk` logger). The estimators are models/train.py, the metrics and plots
models/evaluate.py, fidelity models/explain.py.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from linerisk.data.errors import InputError
from linerisk.data.schema import Validated
from linerisk.models.evaluate import (evaluate, family_importance, figure_png, lift_table, metric_table,
                                      plot_calibration, plot_family_importance, plot_roc, plot_score_distribution,
                                      plot_shap_summary)
from linerisk.models.report import render_report, training_card
from linerisk.models.train import (Split, TrainParams, baseline_proba, oracle_scores, reference_distributions,
                                   split_out_of_time, split_random, suspicious_columns, train_baseline, train_model)

log = logging.getLogger(__name__)
SHAP_SAMPLE = 2000


@dataclass
class TrainResult:
    """What a training run produced: the model, its split, metrics (table and flat), the HTML report,
    and (once registered) where it went."""

    model: Any
    split: Split
    metrics: pd.DataFrame
    flat_metrics: dict[str, float]
    report_html: str
    report_path: Any = None
    run_id: str | None = None
    name: str | None = None
    version: str | None = None
    params: TrainParams = field(default_factory=TrainParams)
    source: str = ""
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (y, p) on test, for plots
    card: dict[str, Any] = field(default_factory=dict)  # report.training_card's fields but the names

    @property
    def spec(self) -> dict[str, Any]:
        return self.model.spec_

    def model_card(self) -> str:
        """The run's model card (Markdown), naming the registered version once there is one."""
        return training_card(name=self.name or "linerisk (not registered)", version=self.version, run_id=self.run_id,
                             **self.card)


@dataclass
class FidelityWorld:
    """A second simulated world the model never trained on: its panel and truth files, for reason fidelity."""

    panel: pd.DataFrame
    truth_snapshots: pd.DataFrame
    truth_restrictions: pd.DataFrame
    source: str = ""


# ---------------------------------------------------------------------------- panels

def snapshot_dates(events: pd.DataFrame, truth: pd.DataFrame | None, horizon_days: int,
                   tz: str = "UTC") -> list[pd.Timestamp]:
    """The simulator's snapshot dates when its truth is given (so the oracle joins on every row it
    sampled), else the default dates with a full horizon inside the log (local midnights of `tz`)."""
    from linerisk.features.labels import default_snapshots

    if truth is not None:
        return [pd.Timestamp(t) for t in sorted(pd.to_datetime(truth["as_of"], utc=True).unique())]
    return default_snapshots(events, horizon_days, tz=tz)


def world_panel(events: pd.DataFrame, users: pd.DataFrame, snapshots: Iterable[object], horizon_days: int,
                what: str = "events", tz: str = "UTC", read: Validated | None = None) -> pd.DataFrame:
    """The labelled panel (user_id a column) at `snapshots`, logging each snapshot's size and positives.

    With `read` (the validation the events came from), every row read is accounted for: used up to the
    last label window, later, or quarantined; a row lost stops the run (data.schema.RowCount)."""
    from linerisk.features.compute import prepare_events
    from linerisk.features.labels import panel_block

    snapshots = list(snapshots)
    log.info(f"building panel: {len(users):,} users, {len(events):,} events, {len(snapshots)} snapshots")
    if not snapshots:
        raise InputError(f"{what}: no snapshot dates with a full {horizon_days}-day horizon")
    prep = prepare_events(events, users, sort_by_day=True, tz=tz)  # sorted once, sliced by every snapshot
    blocks = []
    for as_of in snapshots:
        block = panel_block(prep, as_of, horizon_days)
        blocks.append(block)
        log.info(f"  as_of {pd.Timestamp(as_of):%Y-%m-%d}: {len(block):,} active users, "
                 f"{int(block['label'].sum()):,} restricted within {horizon_days} days")
    if read is not None:
        count = read.account(*prep.consumed(max(pd.Timestamp(t) for t in snapshots) + pd.Timedelta(days=horizon_days)))
        log.info(count.summary())
        count.check()
    panel = pd.concat(blocks)
    if "user_id" not in panel.columns and "user_id" in (panel.index.names or []):
        panel = panel.reset_index()
    return panel


def training_panel(frame: pd.DataFrame, label: str = "label", time_col: str | None = "as_of",
                   drop: tuple[str, ...] = (), id_col: str | None = None, allow: tuple[str, ...] = (),
                   what: str = "panel") -> tuple[pd.DataFrame, dict[str, Any]]:
    """A labelled feature table as a training panel and its spec. Every column but label/time/id/dropped is
    a feature; exactly the registry's columns get the registry's spec (monotone constraints, reasons,
    levers), any other table one from its columns (strings categorical), and there columns that identify
    rows or leak the label stop the run unless listed in `allow`. `label` becomes `label` (0/1, no
    nulls), `time_col` becomes `as_of`, the id column (`id_col`, default `user_id`) becomes `user_id`."""
    from linerisk.features.spec import feature_names
    from linerisk.models.train import default_spec

    if "user_id" not in frame.columns and "user_id" in (frame.index.names or []):
        frame = frame.reset_index()
    for col in (label, time_col, id_col, *drop, *allow):
        if col and col not in frame.columns:
            raise InputError(f"{what}: no column {col!r} (columns: {', '.join(map(str, frame.columns[:20]))})")
    values = set(pd.unique(frame[label].dropna()))
    if frame[label].isna().any() or not values <= {0, 1, True, False}:
        raise InputError(f"{what}: label column {label!r} must be 0/1 without nulls (found {sorted(map(str, values))[:5]})")
    id_col = id_col or ("user_id" if "user_id" in frame.columns else None)
    if id_col and id_col != "user_id" and "user_id" in frame.columns:
        raise InputError(f"{what}: --id-col {id_col} given but the table also has a user_id column; drop one")
    frame = frame.drop(columns=list(drop)).assign(**{label: frame[label].astype(np.int8)})
    frame = frame.rename(columns={label: "label", **({id_col: "user_id"} if id_col else {})})
    if time_col:
        frame = frame.rename(columns={time_col: "as_of"})
        frame["as_of"] = pd.to_datetime(frame["as_of"])
    feature_cols = [c for c in frame.columns if c not in {"label", "as_of", "user_id"}]
    bad = [c for c in feature_cols if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if bad:
        raise InputError(f"{what}: datetime column(s) {', '.join(bad)} cannot be features; pass --drop")
    if not feature_cols:
        raise InputError(f"{what}: no feature columns besides the label")
    registry = feature_names()
    extra = [c for c in feature_cols if c not in set(registry)]
    if extra and set(registry) <= set(feature_cols):  # the spec's panel plus something: a leak, not a new table
        raise InputError(f"{what}: column(s) {', '.join(map(str, extra[:5]))} are not in the feature spec; "
                         "leave them out (--drop / drop=)")
    spec = default_spec(frame[feature_cols])
    if feature_cols != registry:  # an external table (default_spec gave it a spec of its own)
        flagged = {c: why for c, why in suspicious_columns(frame, "label", feature_cols).items() if c not in allow}
        if flagged:
            raise InputError(f"{what}: column(s) that identify rows or leak the label: "
                             + "; ".join(f"{c} ({why})" for c, why in flagged.items())
                             + " (pass --drop COL, --id-col COL, or --allow COL to keep one)")
    return frame, spec


# ---------------------------------------------------------------------------- the run

FIDELITY_NOTE = ("Reason families of the model on a world simulated with another seed, against its truth. "
                 "driver_agreement_at_3: riskiest tenth per snapshot, largest observable hazard at as_of among "
                 "the top-3 reasons. cause_recall_at_k: restricted within the horizon, the drawn cause among the "
                 "top-k reasons (latent apart, left out of the overall). cause_ceiling_at_3: what naming the 3 "
                 "largest true hazards at as_of would reach (causes arising after as_of are out of reach); "
                 "cause_recall_at_3_present: recall where the cause's hazard was already positive at as_of.")


def compare_on(frame: pd.DataFrame, names: list[str], model, baseline, truth: pd.DataFrame | None, what: str
               ) -> tuple[dict[str, dict[str, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Metrics and ROC inputs on `frame` for the model (calibrated and raw), the baseline and, with truth, the oracle."""
    y, X = frame["label"].to_numpy(), frame[names]
    p_model = model.predict_proba(X)[:, 1]
    p_raw = 1.0 / (1.0 + np.exp(-model.raw_score(X)))
    p_base = baseline_proba(baseline, X)
    results = {"model": evaluate(y, p_model), "model_uncalibrated": evaluate(y, p_raw),
               "baseline_logreg": evaluate(y, p_base)}
    curves = {"model": (y, p_model), "baseline": (y, p_base)}
    if truth is not None:
        oracle = oracle_scores(frame, truth).to_numpy()
        have = ~np.isnan(oracle)
        if have.sum() and 0 < y[have].sum() < have.sum():
            results["oracle"] = evaluate(y[have], oracle[have])
            results["model_on_oracle_rows"] = evaluate(y[have], p_model[have])
            curves["oracle"] = (y[have], oracle[have])
        else:
            log.info(f"no {what} rows with oracle_prob (or one class only): oracle skipped")
    return results, curves


def run_training(panel: pd.DataFrame, spec: dict[str, Any], params: TrainParams, truth: pd.DataFrame | None = None,
                 time_split: bool = True, source: str = "", fidelity: FidelityWorld | None = None) -> TrainResult:
    """Split, fit model and baseline, evaluate on test (with the oracle when truth is given), measure reason
    fidelity on `fidelity` (another world) when given, build the report."""
    names = [f["name"] for f in spec["features"]]
    missing = [c for c in (*names, "label") if c not in panel.columns]
    if missing:
        raise InputError(f"panel lacks column(s) {', '.join(missing[:10])} that the spec requires")
    try:
        split = (split_out_of_time(panel, params.valid_snapshots, params.test_snapshots, params.horizon_days)
                 if time_split else split_random(panel, "label", params.seed,
                                                 group="user_id" if "user_id" in panel.columns else None))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    for part, frame in zip(split._fields, split):
        log.info(f"{part}: {len(frame):,} rows, {int(frame['label'].sum()):,} positives"
             + (f", as_of {frame['as_of'].min():%Y-%m-%d}..{frame['as_of'].max():%Y-%m-%d}" if "as_of" in frame else ""))
    log.info(f"training LightGBM (max_depth={params.max_depth}, lr={params.learning_rate}, up to {params.n_estimators} rounds)")
    t0 = time.perf_counter()
    model = train_model(split.train[names], split.train["label"], split.valid[names], split.valid["label"], params, spec)
    fit_seconds = time.perf_counter() - t0
    log.info(f"best iteration {model.best_iteration_}, calibration {model.calibrator_['method']}, {fit_seconds:.1f}s")

    log.info("training logistic-regression baseline")
    baseline = train_baseline(split.train[names], split.train["label"], C=params.baseline_C, seed=params.seed)
    results, curves = compare_on(split.test, names, model, baseline, truth, "test")
    if fidelity is not None:
        unseen, _ = compare_on(fidelity.panel, names, model, baseline, fidelity.truth_snapshots, "unseen world")
        results.update({f"unseen_{k}": v for k, v in unseen.items() if k != "model_uncalibrated"})
    y, X_test = split.test["label"].to_numpy(), split.test[names]
    p_model = curves["model"][1]
    table = metric_table(results)
    flat = {f"test_{k}": v for k, v in results["model"].items()}
    for name, m in results.items():
        if name != "model":
            flat.update({f"{name}_test_{k}": v for k, v in m.items()})
    flat.update({"best_iteration": model.best_iteration_, "fit_seconds": fit_seconds})

    log.info("building report (ROC, calibration, score distribution, SHAP, family importance)")
    sample = X_test.sample(min(SHAP_SAMPLE, len(X_test)), random_state=params.seed)
    contrib = model.contributions(sample)
    importance = family_importance(contrib, model.gain_importance(), spec)
    sections = {"Mean |SHAP| by family (test sample, log-odds)": (
        "Per behaviour family: mean absolute SHAP of the family sum, and its share of split gain.", importance)}
    if fidelity is not None:
        from linerisk.models.explain import evaluate_fidelity

        log.info(f"reason fidelity on {fidelity.source or 'the fidelity world'}: {len(fidelity.panel):,} rows")
        fid = evaluate_fidelity(model.scorer_, fidelity.panel, fidelity.truth_snapshots, fidelity.truth_restrictions,
                                params.horizon_days)
        flat.update(fid.flat_metrics())
        sections["Reason fidelity (unseen world)"] = (FIDELITY_NOTE, fid.overall_table())
        sections["Reason fidelity by family"] = ("n = rows counted per family.", fid.by_family)
        log.info("fidelity: " + ", ".join(f"{k} {v:.3f}" for k, v in fid.overall.items()
                                      if k in ("auc", "driver_agreement_at_3", "cause_recall_at_3",
                                               "bl_closure_false_blame")))
    figures = {
        "ROC": figure_png(plot_roc(curves)),
        "Calibration": figure_png(plot_calibration(curves)),
        "Score distribution": figure_png(plot_score_distribution(y, p_model)),
        "SHAP summary": figure_png(plot_shap_summary(contrib, sample)),
        "Importance by family": figure_png(plot_family_importance(importance)),
    }
    grouped = not time_split and "user_id" in panel.columns
    split_note = (f"Out of time: train on the earlier snapshots, validate on the next, test on the latest; a part "
                  f"keeps only rows whose {params.horizon_days}-day label window ends before the next part starts."
                  if time_split else "Random, stratified 60/20/20" + (" by id: every id on one side only."
                                                                       if grouped else " by row."))
    details = {"source": source, "spec_hash": spec["spec_hash"], "features": len(names),
               "best_iteration": model.best_iteration_, "calibration": model.calibrator_["method"],
               "rows train/valid/test": "/".join(f"{len(f):,}" for f in split),
               "split": "out of time" if time_split else "random stratified 60/20/20" + (" by id" if grouped else ""),
               **{f"param {k}": v for k, v in dataclasses.asdict(params).items()}}
    html_text = render_report("linerisk training report", table, lift_table(y, p_model), figures, details, sections)
    card = {"source": source, "spec": spec, "parts": split._asdict(), "split": split_note, "metrics": table,
            "calibration": model.calibrator_["method"], "horizon_days": params.horizon_days,
            "simulated": truth is not None, "fidelity": fid.overall_table() if fidelity is not None else None}
    return TrainResult(model, split, table, flat, html_text, params=params, source=source, curves=curves, card=card)


def run_params(result: TrainResult) -> dict[str, Any]:
    """The parameters logged with a registered run: the training parameters, source and calibration."""
    return {**dataclasses.asdict(result.params), "source": result.source,
            "calibration_method": result.model.calibrator_["method"]}


def training_reference(result: TrainResult) -> dict[str, Any]:
    """The drift reference registered with the model: its training part's feature and score distributions."""
    names = [f["name"] for f in result.spec["features"]]
    train = result.split.train
    return reference_distributions(train[names], result.model.predict_proba(train)[:, 1], result.spec)
