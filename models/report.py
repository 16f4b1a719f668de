"""Reports from one Jinja2 template set (models/templates): the training report, the drift page, the model card.

Numbers are formatted in one place (`format_value`): counts as integers with thousands separators,
rates, scores and PSI with four decimals (tiny ones in scientific notation). Every table sits in a
scrolling box, so a wide one never breaks the page.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import jinja2
import numpy as np
import pandas as pd

CARD_FILE = "model_card.md"  # beside report.html, on disk and in the MLflow run
# columns (and index entries) that hold counts, printed as integers
COUNT_NAMES = frozenset({"rows", "positives", "n", "decile", "count", "users", "n_reference", "n_batch",
                         "best_iteration", "features", "version"})

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=lambda name: name is not None and name.endswith(".html.j2"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def is_count(name: Any) -> bool:
    text = str(name)
    return text in COUNT_NAMES or text.startswith("n_") or text.endswith(("_rows", "_count", "_n"))


def format_value(value: Any, count: bool = False) -> str:
    """One cell as text: blank for missing, integers with separators, floats with four decimals."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)) or (count and isinstance(value, (float, np.floating))
                                                and float(value).is_integer()):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.1f}"
        return f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.2e}"
    return str(value)


def table_cells(frame: pd.DataFrame, index: bool = True) -> dict[str, Any]:
    """A frame as header, index name and formatted rows; counts by column name, or by row label for a
    frame whose rows are metrics (a transposed table)."""
    counts = [is_count(c) for c in frame.columns]
    rows = []
    for label, values in zip(frame.index, frame.itertuples(index=False)):
        rows.append((format_value(label), [format_value(v, c or is_count(label)) for v, c in zip(values, counts)]))
    name = frame.index.name if frame.index.name is not None else ""
    return {"columns": [str(c) for c in frame.columns], "index_name": name if index else None, "rows": rows}


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table, cells as in the HTML reports."""
    t = table_cells(frame)
    lines = ["| " + " | ".join([t["index_name"] or "", *t["columns"]]) + " |", "|" + "---|" * (len(t["columns"]) + 1)]
    lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in t["rows"]]
    return "\n".join(lines)


def _details(items: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): format_value(v, is_count(k)) for k, v in items.items()}


def render_report(title: str, metrics: pd.DataFrame, lift: pd.DataFrame, figures: Mapping[str, str],
                  details: Mapping[str, Any], sections: Mapping[str, tuple[str, pd.DataFrame]] | None = None,
                  card_link: str | None = CARD_FILE) -> str:
    """The training report: metrics, lift, run details, extra `sections` (heading -> (note, table)), PNG figures
    and a link to the model card."""
    return _ENV.get_template("report.html.j2").render(
        title=title, metrics=table_cells(metrics), lift=table_cells(lift.set_index("decile")), run=_details(details),
        sections=[(head, note, table_cells(frame)) for head, (note, frame) in (sections or {}).items()],
        plots=dict(figures), card_link=card_link)


def render_drift(title: str, table: pd.DataFrame, figures: Mapping[str, str], details: Mapping[str, Any],
                 thresholds: Mapping[str, float]) -> str:
    """The drift page: details, the PSI table (`thresholds`: moderate, significant, eps) and the plots."""
    return _ENV.get_template("drift.html.j2").render(
        title=title, run=_details(details), psi=table_cells(table, index=False), plots=dict(figures), **thresholds)


def model_card(**context: Any) -> str:
    """The model card (Markdown) from its template; see templates/model_card.md.j2 for the fields."""
    return _ENV.get_template("model_card.md.j2").render(**context)


def _part_row(name: str, frame: pd.DataFrame) -> dict[str, str]:
    y = frame["label"]
    dates = ""
    if "as_of" in frame and len(frame):
        t = pd.to_datetime(frame["as_of"], utc=True)
        dates = f"{t.min():%Y-%m-%d}" + ("" if t.min() == t.max() else f" .. {t.max():%Y-%m-%d}")
    return {"name": name, "rows": f"{len(frame):,}", "positives": f"{int(y.sum()):,}",
            "rate": f"{y.mean():.2%}" if len(frame) else "n/a", "dates": dates}


def training_card(*, name: str, version: str | None, run_id: str | None, source: str, spec: Mapping[str, Any],
                  parts: Mapping[str, pd.DataFrame], split: str, metrics: pd.DataFrame, calibration: str,
                  horizon_days: int, simulated: bool, fidelity: pd.DataFrame | None = None) -> str:
    """The model card of one training run: intended use, data and dates, split, metrics against the baseline
    (and the oracle), fidelity, feature families and limitations."""
    import datetime as dt

    families: dict[str, list[str]] = {}
    for f in spec["features"]:
        families.setdefault(f["family"], []).append(f["name"])
    family_lines = "\n".join(f"- {fam} ({len(names)}): " + ", ".join(f"`{n}`" for n in names[:6])
                             + (" ..." if len(names) > 6 else "") for fam, names in families.items())
    if simulated:
        use = (f"Ranks users whose personal credit line is active by the probability that the line is restricted "
               f"within the next {horizon_days} days, with the three behaviour families behind each score (reason "
               "codes in English and Chinese), for a credit team's review queue and for showing users what they can "
               "change.")
    else:
        use = (f"Scores rows shaped like `{source}` by the probability of its label, with the three columns "
               "contributing most to each score; for review by a person who knows that table.")
    limitations = [
        f"Probabilities are calibrated ({calibration}) on the validation part; when the base rate moves they "
        "drift. Watch `linerisk monitor` and retrain.",
        ("Reasons are exact Owen values of this model against an achievable, ordinary-good self (families as "
         "players): associations it learnt, not causes; it also reads behaviour below the platform's rules as risk."
         if "attribution" in spec else
         "Reasons are exact SHAP contributions of this model: associations it learnt, not causes."),
        "Rows quarantined at input (see each run's summary) are not scored.",
        "The test part is one period (or one random fifth); performance elsewhere can differ.",
    ]
    if simulated:
        limitations.insert(0, "Trained and measured on a simulated world; real behaviour logs differ in ways the "
                              "simulator does not know.")
    else:
        limitations.insert(0, "An external table: every column is its own family, no monotone constraints, and the "
                              "table's own definitions decide what the label means.")
    return model_card(name=name, version=version, run_id=run_id, spec_hash=str(spec.get("spec_hash", "")),
                      trained=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), intended_use=use,
                      source=source, parts=[_part_row(k, v) for k, v in parts.items()], split=split,
                      metrics=markdown_table(metrics), has_oracle="oracle" in metrics.index,
                      fidelity=None if fidelity is None else markdown_table(fidelity),
                      families=family_lines, limitations=limitations)
