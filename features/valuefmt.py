"""How a feature value is shown to people, by unit: the one formatter behind every reason text.

Pure and standard-library only, so it is also shipped inside the registered model (MLflow
code_paths) where this repository is absent: features/spec.py, models/scoring.py and the
served model all format values here, so a batch score, the REST answer and `linerisk explain`
read the same.
"""
from __future__ import annotations

import math


def format_value(unit: str, value: object, lang: str = "en") -> str:
    """A value as shown in a reason text: ints as ints, shares as percent, money rounded, flags yes/no."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "n/a" if lang == "en" else "无"
    if unit == "flag":
        yes = x >= 0.5
        return ("yes" if yes else "no") if lang == "en" else ("是" if yes else "否")
    if unit in ("share", "ratio"):
        return f"{x * 100:.0f}%"
    if unit == "money":
        return f"¥{x:,.0f}"
    if unit == "points":
        return f"{x:+.0f}"
    if unit == "weighted":  # a recency-weighted count: one decimal, it is rarely whole
        return f"{x:,.1f}"
    if unit in ("count", "days", "score"):
        return f"{x:,.0f}"
    return f"{x:.4g}"  # a column outside the spec (external feature tables): no unit known


def is_missing(value: object) -> bool:
    """True for None and NaN: the user has no such event before as_of."""
    try:
        return math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value is None


def fill_template(template: str, unit: str, value: object, lang: str = "en", none_text: str = "") -> str:
    """`template` with its `{value}` slot filled by the formatted value; `none_text` (if given) for a missing value."""
    if none_text and is_missing(value):
        return none_text
    return template.format(value=format_value(unit, value, lang))
