"""`linerisk train`: panel -> out-of-time split -> calibrated LightGBM + baseline (+ oracle) -> report -> MLflow.

Wiring and I/O only; the modelling lives in models/train.py and models/evaluate.py.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from linerisk.data.schema import InputError
from linerisk.models.evaluate import (evaluate, family_importance, figure_png, lift_table, metric_table,
                             plot_calibration, plot_family_importance, plot_roc, plot_score_distribution,
                             plot_shap_summary)
from linerisk.models.report import CARD_FILE, markdown_table, render_report, training_card
from linerisk.models.train import (Split, TrainParams, baseline_proba, model_spec, oracle_scores,
                          reference_distributions, split_out_of_time, split_random, suspicious_columns,
                          train_baseline, train_model)
from linerisk.pipeline.config import build, load_toml, timezone_option
from linerisk.pipeline.io import linerisk_home, read_table, write_text

SHAP_SAMPLE = 2000


@dataclass
class TrainResult:
    """What a training run produced (returned to tests and printed by the CLI)."""

    model: Any
    split: Split
    metrics: pd.DataFrame
    flat_metrics: dict[str, float]
    report_html: str
    report_path: Path | None = None
    run_id: str | None = None
    name: str | None = None
    version: str | None = None
    card: dict[str, Any] = dataclasses.field(default_factory=dict)  # report.training_card's fields but the names

    def model_card(self) -> str:
        """The run's model card (Markdown), naming the registered version once there is one."""
        return training_card(name=self.name or "linerisk (not registered)", version=self.version, run_id=self.run_id,
                             **self.card)


def _say(msg: str) -> None:
    click.echo(f"[{dt.datetime.now():%H:%M:%S}] {msg}", err=True)


# ---------------------------------------------------------------------------- config

def load_params(config: str | Path | None, overrides: dict[str, Any]) -> TrainParams:
    """Defaults, then the `[train]` table of the embedded defaults and of `--config FILE`, then flags (None = not given)."""
    section = load_toml(config).get("train", {})
    try:
        return build(TrainParams, section, "train", **overrides)
    except (ValueError, TypeError) as exc:
        raise InputError(f"training parameters: {exc}") from None


# ---------------------------------------------------------------------------- inputs

def load_world_panel(data_dir: Path, horizon_days: int, tz: str = "UTC"
                     ) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
    """Panel, spec and truth snapshots from a `linerisk simulate` directory (features via features.labels);
    naive times and day windows in `tz`."""
    from linerisk.features import spec as feature_spec
    from linerisk.features.compute import prepare_events
    from linerisk.features.labels import default_snapshots, panel_block
    from linerisk.pipeline.io import read_events, read_users

    data_dir = Path(data_dir)
    if not feature_spec.FEATURES:
        raise InputError("features.spec.FEATURES is empty: the feature registry is not filled in yet")
    users = read_users(data_dir / "users.parquet")
    validated = read_events(data_dir / "events.parquet", users, tz)
    events = validated.good
    truth_path = data_dir / "truth_snapshots.parquet"
    truth = read_table(truth_path, "truth snapshots") if truth_path.exists() else None
    if truth is not None:  # the simulator's snapshot dates, so the oracle joins on every test row it sampled
        snapshots = [pd.Timestamp(t) for t in sorted(pd.to_datetime(truth["as_of"], utc=True).unique())]
    else:
        snapshots = default_snapshots(events, horizon_days, tz=tz)
    _say(f"building panel: {len(users):,} users, {len(events):,} events, {len(snapshots)} snapshots")
    blocks = []
    prep = prepare_events(events, users, sort_by_day=True, tz=tz)  # sorted once, sliced by every snapshot
    for as_of in snapshots:
        block = panel_block(prep, as_of, horizon_days)
        blocks.append(block)
        _say(f"  as_of {as_of:%Y-%m-%d}: {len(block):,} active users, {int(block['label'].sum()):,} restricted within {horizon_days} days")
    if not blocks:
        raise InputError(f"{data_dir}: no snapshot dates with a full {horizon_days}-day horizon")
    count = validated.account(*prep.consumed(max(snapshots) + pd.Timedelta(days=horizon_days)))
    _say(count.summary())
    count.check()
    panel = pd.concat(blocks)
    if "user_id" not in panel.columns and "user_id" in (panel.index.names or []):
        panel = panel.reset_index()
    spec = model_spec(features=feature_spec.FEATURES, spec_hash=feature_spec.spec_hash())
    return panel, spec, truth


def load_external(path: Path, label: str, time_col: str | None, drop: tuple[str, ...] = (),
                  id_col: str | None = None, allow: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A feature table from Parquet/CSV: every column but label/time/id/dropped is a feature; strings are
    categorical. The id column (`id_col`, default `user_id` when present) becomes `user_id`. Columns that
    identify rows or leak the label stop the run unless listed in `allow`."""
    frame = read_table(path, "features")
    for col in (label, time_col, id_col, *drop, *allow):
        if col and col not in frame.columns:
            raise InputError(f"features {path}: no column {col!r} (columns: {', '.join(map(str, frame.columns[:20]))})")
    values = set(pd.unique(frame[label].dropna()))
    if frame[label].isna().any() or not values <= {0, 1, True, False}:
        raise InputError(f"features {path}: label column {label!r} must be 0/1 without nulls (found {sorted(map(str, values))[:5]})")
    id_col = id_col or ("user_id" if "user_id" in frame.columns else None)
    if id_col and id_col != "user_id" and "user_id" in frame.columns:
        raise InputError(f"features {path}: --id-col {id_col} given but the table also has a user_id column; drop one")
    frame = frame.drop(columns=list(drop)).assign(**{label: frame[label].astype(np.int8)})
    frame = frame.rename(columns={label: "label", **({id_col: "user_id"} if id_col else {})})
    if time_col:
        frame = frame.rename(columns={time_col: "as_of"})
        frame["as_of"] = pd.to_datetime(frame["as_of"])
    feature_cols = [c for c in frame.columns if c not in {"label", "as_of", "user_id"}]
    bad = [c for c in feature_cols if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if bad:
        raise InputError(f"features {path}: datetime column(s) {', '.join(bad)} cannot be features; pass --drop")
    if not feature_cols:
        raise InputError(f"features {path}: no feature columns besides the label")
    flagged = {c: why for c, why in suspicious_columns(frame, "label", feature_cols).items() if c not in allow}
    if flagged:
        raise InputError(f"features {path}: column(s) that identify rows or leak the label: "
                         + "; ".join(f"{c} ({why})" for c, why in flagged.items())
                         + " (pass --drop COL, --id-col COL, or --allow COL to keep one)")
    return frame, model_spec(X=frame[feature_cols])


# ---------------------------------------------------------------------------- the run

@dataclass
class FidelityWorld:
    """A second simulated world the model never trained on: its panel and truth files, for reason fidelity."""

    panel: pd.DataFrame
    truth_snapshots: pd.DataFrame
    truth_restrictions: pd.DataFrame
    source: str = ""


def load_fidelity_world(data_dir: Path, horizon_days: int, tz: str = "UTC") -> FidelityWorld:
    """Panel at the world's snapshot dates plus truth_snapshots and truth_restrictions (both required)."""
    data_dir = Path(data_dir)
    for name in ("truth_snapshots.parquet", "truth_restrictions.parquet"):
        if not (data_dir / name).exists():
            raise InputError(f"--fidelity-data {data_dir}: no {name} (a directory written by `linerisk simulate`)")
    panel, _, truth = load_world_panel(data_dir, horizon_days, tz)
    return FidelityWorld(panel, truth, read_table(data_dir / "truth_restrictions.parquet", "truth restrictions"),
                         str(data_dir))


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
            _say(f"no {what} rows with oracle_prob (or one class only): oracle skipped")
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
        _say(f"{part}: {len(frame):,} rows, {int(frame['label'].sum()):,} positives"
             + (f", as_of {frame['as_of'].min():%Y-%m-%d}..{frame['as_of'].max():%Y-%m-%d}" if "as_of" in frame else ""))
    _say(f"training LightGBM (max_depth={params.max_depth}, lr={params.learning_rate}, up to {params.n_estimators} rounds)")
    t0 = time.perf_counter()
    model = train_model(split.train[names], split.train["label"], split.valid[names], split.valid["label"], params, spec)
    fit_seconds = time.perf_counter() - t0
    _say(f"best iteration {model.best_iteration_}, calibration {model.calibrator_['method']}, {fit_seconds:.1f}s")

    _say("training logistic-regression baseline")
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

    _say("building report (ROC, calibration, score distribution, SHAP, family importance)")
    sample = X_test.sample(min(SHAP_SAMPLE, len(X_test)), random_state=params.seed)
    contrib = model.contributions(sample)
    importance = family_importance(contrib, model.gain_importance(), spec)
    sections = {"Mean |SHAP| by family (test sample, log-odds)": (
        "Per behaviour family: mean absolute SHAP of the family sum, and its share of split gain.", importance)}
    if fidelity is not None:
        from linerisk.models.explain import evaluate_fidelity

        _say(f"reason fidelity on {fidelity.source or 'the fidelity world'}: {len(fidelity.panel):,} rows")
        fid = evaluate_fidelity(model.scorer_, fidelity.panel, fidelity.truth_snapshots, fidelity.truth_restrictions,
                                params.horizon_days)
        flat.update(fid.flat_metrics())
        sections["Reason fidelity (unseen world)"] = (FIDELITY_NOTE, fid.overall_table())
        sections["Reason fidelity by family"] = ("n = rows counted per family.", fid.by_family)
        _say("fidelity: " + ", ".join(f"{k} {v:.3f}" for k, v in fid.overall.items()
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
    return TrainResult(model, split, table, flat, html_text, card=card)


def _print_summary(result: TrainResult) -> None:
    click.echo(markdown_table(result.metrics))
    if result.run_id:
        click.echo(f"\nMLflow run id: {result.run_id}")
        click.echo(f"registered model: {result.name} version {result.version} (alias @challenger)")
    if result.report_path:
        click.echo(f"report: {result.report_path}")
        click.echo(f"model card: {result.report_path.with_name(CARD_FILE)}")


@click.command("train")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Directory written by `linerisk simulate`.")
@click.option("--features", "features_path", type=click.Path(path_type=Path), help="External feature table (Parquet or CSV).")
@click.option("--label", default=None, help="Label column of the external table (0/1).")
@click.option("--time-col", default=None, help="Snapshot-time column of the external table (else random split).")
@click.option("--drop", multiple=True, help="External-table columns that are not features (repeatable).")
@click.option("--id-col", default=None, help="Id column of the external table, never a feature; a random split "
              "keeps each id on one side [default: user_id when present].")
@click.option("--allow", multiple=True, help="Keep a column flagged as identifying rows or leaking the label (repeatable).")
@click.option("--config", type=click.Path(path_type=Path), help="TOML file with a [train] table.")
@timezone_option
@click.option("--learning-rate", type=float)
@click.option("--num-leaves", type=int)
@click.option("--max-depth", type=int)
@click.option("--n-estimators", type=int)
@click.option("--early-stopping-rounds", type=int)
@click.option("--min-child-samples", type=int)
@click.option("--seed", type=int)
@click.option("--calibration", type=click.Choice(["auto", "isotonic", "sigmoid"]))
@click.option("--valid-snapshots", type=int)
@click.option("--test-snapshots", type=int)
@click.option("--horizon-days", type=int)
@click.option("--num-threads", type=int, help="LightGBM threads (fixed for determinism) [default: 2].")
@click.option("--log-every", type=int, help="Print validation loss every N boosting rounds (0 = quiet).")
@click.option("--name", default="linerisk", show_default=True, help="Registered model name.")
@click.option("--out", type=click.Path(path_type=Path), help="Report path (default $LINERISK_HOME/reports/<run_id>/report.html).")
@click.option("--no-register", is_flag=True, help="Train and report only; log nothing to MLflow.")
@click.option("--keep-user-ids", is_flag=True,
              help="Store raw user ids in the run's test part [default: keyed pseudonyms].")
@click.option("--fidelity-data", "fidelity_dir", type=click.Path(path_type=Path),
              help="A second `linerisk simulate` world (another seed): measure reason-code fidelity on it.")
def command(data_dir, features_path, label, time_col, drop, id_col, allow, config, tz, name, out, no_register,
            fidelity_dir, keep_user_ids, **flags) -> TrainResult:
    """Train the calibrated LightGBM model, evaluate it against a baseline (and the oracle), register it."""
    if bool(data_dir) == bool(features_path):
        raise click.UsageError("give exactly one of --data DIR or --features PATH")
    if features_path and not label:
        raise click.UsageError("--features needs --label COL")
    params = load_params(config, flags)
    import matplotlib
    matplotlib.use("Agg")  # the report is drawn off-screen, also where a display exists
    if fidelity_dir and not data_dir:
        raise click.UsageError("--fidelity-data needs --data (reason families come from the feature spec)")
    if data_dir:
        panel, spec, truth = load_world_panel(data_dir, params.horizon_days, tz)
        fidelity = load_fidelity_world(fidelity_dir, params.horizon_days, tz) if fidelity_dir else None
        result = run_training(panel, spec, params, truth, time_split=True, source=str(data_dir), fidelity=fidelity)
    else:
        panel, spec = load_external(features_path, label, time_col, tuple(drop), id_col, tuple(allow))
        result = run_training(panel, spec, params, None, time_split=bool(time_col), source=str(features_path))
    if not no_register:
        from linerisk.models import registry  # imports mlflow: only when registering

        _say(f"logging to MLflow at {registry.tracking_uri()}")
        test_frame = result.split.test
        reference = reference_distributions(result.split.train[[f["name"] for f in spec["features"]]],
                                            result.model.predict_proba(result.split.train)[:, 1], spec)
        reg = registry.register_model(
            result.model, params={**dataclasses.asdict(params), "source": str(data_dir or features_path),
                                  "calibration_method": result.model.calibrator_["method"]},
            metrics=result.flat_metrics, reference=reference, test_frame=test_frame,
            report_html=result.report_html, name=name, keep_user_ids=keep_user_ids,
            signature_frame=result.split.train)
        result.run_id, result.name, result.version = reg.run_id, reg.name, reg.version
        registry.log_text(reg.run_id, result.model_card(), f"report/{CARD_FILE}")
    stamp = result.run_id or f"local-{dt.datetime.now():%Y%m%d-%H%M%S}"
    result.report_path = write_text(result.report_html, out or linerisk_home() / "reports" / stamp / "report.html")
    write_text(result.model_card(), result.report_path.with_name(CARD_FILE))  # the report links to it
    _print_summary(result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk train` in-process; the exit status (tests call this)."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["train", *(argv if argv is not None else sys.argv[1:])])
