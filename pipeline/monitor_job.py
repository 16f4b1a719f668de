"""`linerisk monitor`: drift of a scored batch against the model's training reference (PSI).

Reading, writing and printing only; PSI, bands, the comparison and plots are models/drift.py. The score's PSI is computed
from the scores file; the features' PSI from the bin counts `linerisk score` wrote beside it
(`<stem>.drift.json`), or from a feature table given with --features.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from linerisk.data.schema import InputError
from linerisk.models import drift
from linerisk.models.report import render_drift
from linerisk.pipeline.io import linerisk_home, read_table, write_text
from linerisk.pipeline.score_job import drift_path_for

TOP_PLOTS = 6


def _model_ref(scores: pd.DataFrame, given: str | None) -> str:
    if given:
        return given
    if not {"model_name", "model_version"} <= set(scores.columns) or scores.empty:
        raise InputError("scores: no model_name/model_version columns to find the model; pass --model")
    names = scores[["model_name", "model_version"]].drop_duplicates()
    if len(names) > 1:
        raise InputError(f"scores: rows from {len(names)} model versions; pass --model")
    return f"{names.iloc[0, 0]}/{names.iloc[0, 1]}"


def _feature_counts(scores_path: Path, features_path: Path | None, reference: dict[str, Any],
                    spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Per-feature batch counts and where they came from."""
    if features_path is not None:
        from linerisk.models.scoring import prepare_features

        frame = read_table(features_path, "features")
        try:
            X = prepare_features(frame, spec)
        except ValueError as exc:
            raise InputError(f"features {features_path}: {exc}") from None
        return drift.batch_counts(X, None, reference)["features"], str(features_path)
    sidecar = drift_path_for(scores_path)
    if sidecar.exists():
        return json.loads(sidecar.read_text()).get("features", {}), str(sidecar)
    return {}, "none (no --features and no drift counts beside the scores: score PSI only)"


@click.command("monitor")
@click.option("--scores", "scores_path", required=True, type=click.Path(path_type=Path),
              help="Scores written by `linerisk score` (Parquet or CSV).")
@click.option("--model", "model_ref", help="Model whose training reference to compare with "
              "[default: the model_name/model_version in the scores].")
@click.option("--features", "features_path", type=click.Path(path_type=Path),
              help="Feature table for the features' PSI [default: <scores stem>.drift.json written by score].")
@click.option("--out", type=click.Path(path_type=Path),
              help="HTML page [default: $LINERISK_HOME/reports/drift-<model>-v<version>-<time>.html].")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=1), help="Feature rows in the terminal table.")
@click.option("--fail-on-drift", is_flag=True, help=f"Exit 1 when any PSI is above {drift.SIGNIFICANT}.")
@click.pass_context
def command(ctx: click.Context, scores_path: Path, model_ref: str | None, features_path: Path | None,
            out: Path | None, top: int, fail_on_drift: bool) -> pd.DataFrame:
    """PSI of the score and of every feature: a scored batch vs the model's training reference."""
    import matplotlib
    matplotlib.use("Agg")
    from linerisk.models import registry
    from linerisk.models.evaluate import figure_png

    scores = read_table(scores_path, "scores")
    if "probability" not in scores.columns:
        raise InputError(f"scores: {scores_path} has no probability column")
    if "line_state" in scores.columns:  # the restriction model answers for the active lines only
        active = (scores["line_state"] == "active").to_numpy(dtype=bool, na_value=False)
        if not active.all():
            click.echo(f"left out: {int((~active).sum()):,} rows of lines not active (the restoration model's)")
        scores = scores[active]
    ref = _model_ref(scores, model_ref)
    try:
        package = registry.load_package(ref)
    except (LookupError, ValueError) as exc:
        raise InputError(f"model {ref}: {str(exc).splitlines()[0]}") from None
    reference = package.reference
    if not reference:
        raise InputError(f"model {package.name} v{package.version} has no training reference stored with it")
    spec = package.scorer.spec
    counts, source = _feature_counts(scores_path, features_path, reference, spec)
    batch, table = drift.compare(reference, scores["probability"].to_numpy(dtype=float), counts, spec)

    shown = table.head(top + 1)
    click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if len(table) > len(shown):
        click.echo(f"... {len(table) - len(shown)} more features in the HTML page")
    worst = table["psi"].max(skipna=True)
    bands = table["band"].value_counts()
    click.echo(f"model {package.name} v{package.version}; {len(scores):,} scored users; feature counts: {source}")
    click.echo("bands: " + ", ".join(f"{b} {int(bands.get(b, 0))}" for b in ("stable", "moderate", "significant"))
               + f"; max PSI {worst:.4f} ({drift.psi_band(worst)})")

    names = [n for n in table["name"] if n == drift.SCORE or n in batch["features"]][: TOP_PLOTS + 1]
    figures = {"PSI per feature": figure_png(drift.plot_psi(table)),
               "Distributions (largest PSI)": figure_png(drift.plot_distributions(reference, batch, names))}
    stamp = dt.datetime.now(dt.timezone.utc)
    details = {"scores": str(scores_path), "model": f"{package.name} v{package.version}", "scored users": len(scores),
               "feature counts": source, "max PSI": f"{worst:.4f} ({drift.psi_band(worst)})",
               "generated": stamp.isoformat(timespec="seconds")}
    out = out or linerisk_home() / "reports" / f"drift-{package.name}-v{package.version}-{stamp:%Y%m%d-%H%M%S}.html"
    write_text(render_drift(f"linerisk drift: {package.name} v{package.version}", table, figures, details,
                            {"moderate": drift.MODERATE, "significant": drift.SIGNIFICANT, "eps": drift.EPS}), out)
    click.echo(f"report: {out}")
    if fail_on_drift and np.isfinite(worst) and worst > drift.SIGNIFICANT:
        click.echo(f"drift: max PSI {worst:.4f} is above {drift.SIGNIFICANT}", err=True)
        ctx.exit(1)
    return table
