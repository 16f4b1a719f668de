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
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from linerisk.data.errors import InputError
from linerisk.data.schema import Validated
from linerisk.models.evaluate import (evaluate, family_importance, figure_png, lift_table, metric_table,
                                      plot_calibration, plot_family_importance, plot_roc, plot_score_distribution,
                                      plot_shap_summary)
from linerisk.models.report import render_report, training_card
from linerisk.models.scoring import apply_calibrator
from linerisk.models.restore import evaluate_curve, red_line_check
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
    events: pd.DataFrame | None = None  # kept for the restoration report's "why it was restricted"
    users: pd.DataFrame | None = None


# Per target: the truth file of its population at each snapshot, the oracle's column in it, the registered name.
TRUTH_FILE = {"restrict": "truth_snapshots.parquet", "restore": "truth_recovery_snapshots.parquet"}
ORACLE_COLUMN = {"restrict": "oracle_prob", "restore": "restore_oracle_prob"}
MODEL_NAME = {"restrict": "linerisk", "restore": "linerisk-restore"}
_COUNTED = {"restrict": ("active", "restricted"), "restore": ("restricted", "restored")}


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
                what: str = "events", tz: str = "UTC", read: Validated | None = None,
                target: str = "restrict") -> pd.DataFrame:
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
    population, outcome = _COUNTED[target]
    for as_of in snapshots:
        block = panel_block(prep, as_of, horizon_days, target)
        blocks.append(block)
        log.info(f"  as_of {pd.Timestamp(as_of):%Y-%m-%d}: {len(block):,} {population} lines, "
                 f"{int(block['label'].sum()):,} {outcome} within {horizon_days} days")
    if read is not None:  # labels read the horizon; the restoration panel's survival columns the whole log
        cut = None if target == "restore" else max(pd.Timestamp(t) for t in snapshots) + pd.Timedelta(days=horizon_days)
        count = read.account(*prep.consumed(cut))
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
    if "user_id" in frame.columns and frame["user_id"].isna().any():  # a row with no id would fall out of an id split
        raise InputError(f"{what}: id column {id_col or 'user_id'!r} has {int(frame['user_id'].isna().sum()):,} "
                         "null value(s); every row needs an id")
    if time_col:
        frame = frame.rename(columns={time_col: "as_of"})
        frame["as_of"] = pd.to_datetime(frame["as_of"])
    feature_cols = [c for c in frame.columns if c not in {"label", "as_of", "user_id"}]
    bad = [c for c in feature_cols if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if bad:
        raise InputError(f"{what}: datetime column(s) {', '.join(bad)} cannot be features; pass --drop")
    if not feature_cols:
        raise InputError(f"{what}: no feature columns besides the label")
    registry = feature_names("restrict")  # linerisk.train's panel is the restriction model's
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
                 "cause_recall_at_3_present: recall where the cause's hazard was already positive at as_of "
                 "(min_..._20plus: the lowest per family with 20+ such cases). named_zero_hazard_share: of the "
                 "reasons named for restricted rows, the share whose family had no hazard at as_of (activity and "
                 "tenure have none in the world). bl_closure_false_blame: restricted for another cause, yet "
                 "bl_closure among the reasons.")


def compare_on(frame: pd.DataFrame, names: list[str], model, baseline, truth: pd.DataFrame | None, what: str,
               oracle_column: str = "oracle_prob"
               ) -> tuple[dict[str, dict[str, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Metrics and ROC inputs on `frame` for the model (calibrated and raw), the baseline and, with truth, the oracle."""
    y, X = frame["label"].to_numpy(), frame[names]
    p_model = model.predict_proba(X)[:, 1]
    p_raw = apply_calibrator(model.raw_score(X), {"method": "none"})
    p_base = baseline_proba(baseline, X)
    results = {"model": evaluate(y, p_model), "model_uncalibrated": evaluate(y, p_raw),
               "baseline_logreg": evaluate(y, p_base)}
    curves = {"model": (y, p_model), "baseline": (y, p_base)}
    if truth is not None:
        oracle = oracle_scores(frame, truth, oracle_column).to_numpy()
        have = ~np.isnan(oracle)
        if have.sum() and 0 < y[have].sum() < have.sum():
            results["oracle"] = evaluate(y[have], oracle[have])
            results["model_on_oracle_rows"] = evaluate(y[have], p_model[have])
            curves["oracle"] = (y[have], oracle[have])
        else:
            log.info(f"no {what} rows with oracle_prob (or one class only): oracle skipped")
    return results, curves


CURVE_NOTE = ("P(restored within d days) against what happened, on rows followed for at least d days (so the "
              "outcome by d is known); ECE over 10 equal-frequency bins; C-index: Uno's IPCW concordance "
              "(scikit-survival) of P(restored within a year) against the time to restoration, up to 365 days. "
              "chained: the model's 90-day periods chained with the line's clock advanced (the curve used); "
              "constant_hazard: the first period's probability carried on at a constant hazard (the alternative).")


WHY_NOTE = ("The restriction model's reasons on the day each line of the unseen world's latest snapshot was "
            "restricted, against the cause the simulator drew for that restriction (latent apart in the overall).")


def restoration_sections(model, split: Split, truth: pd.DataFrame | None, unseen: FidelityWorld | None,
                         flat: dict[str, float], restriction_model: str | None = None
                         ) -> dict[str, tuple[str, pd.DataFrame]]:
    """The restoration report's own sections (curve calibration and concordance, the red line, and with a
    restriction model "why it was restricted" on the unseen world); adds their figures to `flat`."""
    sections = {}
    if unseen is not None and restriction_model is not None:
        from linerisk import api
        from linerisk.models.batch import require_feature_spec
        from linerisk.models.restore_plan import why_restricted_fidelity

        package = api.load_model(restriction_model)
        require_feature_spec(package, "restrict")
        scorer = package.scorer
        latest = unseen.panel[unseen.panel["as_of"] == unseen.panel["as_of"].max()].set_index("user_id")
        since = latest["as_of"] - pd.to_timedelta(latest["days_restricted"].astype("float64").round(6), unit="D")
        log.info(f"why it was restricted: {len(since):,} restricted lines of the unseen world")
        overall, by_cause = why_restricted_fidelity(scorer, unseen.events, unseen.users, since, unseen.truth_restrictions)
        flat.update({f"unseen_why_{k}": v for k, v in overall.items()})
        sections["Why it was restricted (unseen world)"] = (WHY_NOTE, pd.DataFrame(
            {"value": pd.Series(overall, dtype="float64")}))
        sections["Why it was restricted, by cause"] = ("n = restricted lines per drawn cause.", by_cause)
    checks = {"test": (split.test, truth)}
    if unseen is not None:
        checks["unseen"] = (unseen.panel, unseen.truth_snapshots)
    for what, (frame, frame_truth) in checks.items():
        log.info(f"restoration curve on {what}: {len(frame):,} rows")
        curve_flat, table = evaluate_curve(model, frame, split.train, what)
        flat.update(curve_flat)
        sections[f"Restoration curve ({what})"] = (CURVE_NOTE, table)
        red = red_line_check(model, frame, frame_truth)
        flat.update({f"{what}_{k}": v for k, v in red.items()})
        sections[f"Red line ({what})"] = ("Rows past the red line by the events (a default, over 90 days past due, "
                                          "or a second misuse flag) and by the truth; their largest probabilities.",
                                          pd.DataFrame({"value": pd.Series(red, dtype="float64")}))
    return sections


def run_training(panel: pd.DataFrame | None, spec: dict[str, Any], params: TrainParams,
                 truth: pd.DataFrame | None = None, time_split: bool = True, source: str = "",
                 fidelity: FidelityWorld | None = None, split: Split | None = None,
                 fit: Callable[[Split], Any] | None = None, restriction_model: str | None = None) -> TrainResult:
    """Split, fit model and baseline, evaluate on test (with the oracle when truth is given), measure reason
    fidelity on `fidelity` (another world) when given, build the report.

    A cluster run passes its `split` (train: a sample, for the baseline and the report) and `fit`,
    which grows the model on the workers' whole training part (pipeline/train_cluster.py)."""
    names = [f["name"] for f in spec["features"]]
    left_out = 0
    if split is None:
        missing = [c for c in (*names, "label") if c not in panel.columns]
        if missing:
            raise InputError(f"panel lacks column(s) {', '.join(missing[:10])} that the spec requires")
        try:
            split = (split_out_of_time(panel, params.valid_snapshots, params.test_snapshots, params.horizon_days)
                     if time_split else split_random(panel, "label", params.seed,
                                                     group="user_id" if "user_id" in panel.columns else None))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        left_out = len(panel) - sum(map(len, split))  # snapshots between parts: their label windows cross an edge
        if left_out:
            log.info(f"left out: {left_out:,} rows at snapshots between the parts (the embargo)")
    for part, frame in zip(split._fields, split):
        log.info(f"{part}: {len(frame):,} rows, {int(frame['label'].sum()):,} positives"
             + (f", as_of {frame['as_of'].min():%Y-%m-%d}..{frame['as_of'].max():%Y-%m-%d}" if "as_of" in frame else ""))
    log.info(f"training LightGBM (max_depth={params.max_depth}, lr={params.learning_rate}, up to {params.n_estimators} rounds)")
    t0 = time.perf_counter()
    target = spec.get("target", "restrict")
    if fit is not None:
        model = fit(split)
    elif target == "restore":  # the curve's later periods are calibrated on the lines followed that long
        from linerisk.models.restore import train_restoration_model

        model = train_restoration_model(split.train[names], split.train["label"], split.valid[names],
                                        split.valid["label"], params, spec, curve_panel=pd.concat([split.train, split.valid]))
    else:
        model = train_model(split.train[names], split.train["label"], split.valid[names], split.valid["label"], params, spec)
    fit_seconds = time.perf_counter() - t0
    log.info(f"best iteration {model.best_iteration_}, calibration {model.calibrator_['method']}, {fit_seconds:.1f}s")

    log.info("training logistic-regression baseline")
    baseline = train_baseline(split.train[names], split.train["label"], C=params.baseline_C, seed=params.seed)
    results, curves = compare_on(split.test, names, model, baseline, truth, "test", ORACLE_COLUMN[target])
    if fidelity is not None:
        unseen, _ = compare_on(fidelity.panel, names, model, baseline, fidelity.truth_snapshots, "unseen world",
                               ORACLE_COLUMN[target])
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
    fid = None
    if target == "restore":
        sections.update(restoration_sections(model, split, truth, fidelity, flat, restriction_model))
    elif fidelity is not None:
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
    if fid is not None:
        figures["Reason fidelity by family (unseen world)"] = figure_png(fid.plot())
    grouped = not time_split and "user_id" in panel.columns
    split_note = (f"Out of time: train on the earlier snapshots, validate on the next, test on the latest; a part "
                  f"keeps only rows whose {params.horizon_days}-day label window ends before the next part starts."
                  if time_split else "Random, stratified 60/20/20" + (" by id: every id on one side only."
                                                                       if grouped else " by row."))
    details = {"source": source, "spec_hash": spec["spec_hash"], "features": len(names),
               "best_iteration": model.best_iteration_, "calibration": model.calibrator_["method"],
               "rows train/valid/test": "/".join(f"{len(f):,}" for f in split),
               "rows left out (embargo)": f"{left_out:,}",
               "split": "out of time" if time_split else "random stratified 60/20/20" + (" by id" if grouped else ""),
               **{f"param {k}": v for k, v in dataclasses.asdict(params).items()}}
    title = "linerisk restoration model report" if target == "restore" else "linerisk training report"
    html_text = render_report(title, table, lift_table(y, p_model), figures, details, sections)
    card = {"source": source, "spec": model.spec_, "parts": split._asdict(), "split": split_note, "metrics": table,
            "calibration": model.calibrator_["method"], "horizon_days": params.horizon_days,
            "simulated": truth is not None, "fidelity": fid.overall_table() if fid is not None else None}
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
