"""Reason codes from the model's attributions, grouped by behaviour family, and their fidelity against the simulator's truth.

Attributions come from `Scorer.attributions` (models/scoring.py): Owen values with families as
players against an achievable, ordinary-good self for a package with a reference, path-dependent
SHAP otherwise; per row they add up to the booster's raw score. The families pushing risk up most
are the reasons; what pulls risk down most against the average user (path SHAP) is "what is helping you".

Fidelity compares reason families with the truth files of a world the model never saw:
driver agreement (the largest hazard component at as_of), cause recall (the cause the
simulator drew for a restriction within the horizon, overall and where its hazard was already
positive at as_of), how often `bl_closure` is blamed when something else was the cause, and the
share of named reasons whose family had no hazard at as_of. Pure functions over DataFrames; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from linerisk.features.spec import CAUSE_FAMILIES
from linerisk.models.scoring import N_REASONS, Explanation, Scorer
from linerisk.models.train import utc_naive

# The simulator's cause families (shared/design/world.md); `latent` has no feature.
CAUSES = (*CAUSE_FAMILIES, "latent")
UNOBSERVED = ("latent",)
TOP_FRACTION = 0.10  # driver agreement: the riskiest tenth of users per snapshot


# ---------------------------------------------------------------------------- attributions and families

def explain_frame(scorer: Scorer, frame: pd.DataFrame, k: int = N_REASONS) -> Explanation:
    """Probability, band, the top-k families pushing risk up (reasons, attributions) and down (helping): `Scorer.explain`."""
    return scorer.explain(frame, k)


def reason_families(scores: pd.DataFrame, k: int = N_REASONS) -> np.ndarray:
    """(n, k) object array of reason families, None where fewer than k push risk up."""
    cols = [f"reason_{j}_family" for j in range(1, k + 1)]
    return np.column_stack([scores[c].to_numpy(dtype=object, na_value=None) for c in cols])


def _in_top(families: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    return (families[:, :k] == np.asarray(target, dtype=object)[:, None]).any(axis=1)


# ---------------------------------------------------------------------------- fidelity

def _keys(frame: pd.DataFrame) -> pd.DataFrame:
    """(user_id, as_of) with as_of as naive UTC microseconds, so truth and panel times join."""
    out = frame.reset_index() if "user_id" not in frame.columns else frame
    return pd.DataFrame({"user_id": out["user_id"].to_numpy(),
                         "as_of": utc_naive(out["as_of"]).to_numpy()})


def _per_family(group: pd.Series, hit: np.ndarray, name: str) -> pd.DataFrame:
    """n and hit rate per group value."""
    frame = pd.DataFrame({"g": group.to_numpy(dtype=object), "hit": hit.astype(np.float64)})
    agg = frame.groupby("g", sort=False)["hit"].agg(["size", "mean"])
    return agg.rename(columns={"size": f"{name}_n", "mean": name}).rename_axis("family")


def driver_agreement_at_3(scores: pd.DataFrame, truth_snapshots: pd.DataFrame, k: int = 3,
                          top_fraction: float = TOP_FRACTION) -> tuple[float, pd.DataFrame]:
    """Share of the riskiest `top_fraction` per snapshot whose largest observable hazard is a top-k reason.

    `scores`: user_id, as_of, probability, reason_j_family. The driver is the cause family with the
    largest `hazard_<cause>` at as_of, `latent` left out; rows with no observable hazard are skipped.
    Returns (overall, per driver family: driver_n, driver_agreement_at_3).
    """
    rows, hazards, observed = _hazards_at_as_of(scores, truth_snapshots)
    snap = pd.DataFrame({"as_of": _keys(scores)["as_of"].to_numpy()[rows],
                         "p": scores["probability"].to_numpy()[rows]})
    rank = snap.groupby("as_of")["p"].rank(method="first", ascending=False).to_numpy()
    size = snap.groupby("as_of")["p"].transform("size").to_numpy()
    top = (rank <= np.ceil(size * top_fraction)) & (hazards.max(axis=1) > 0)
    driver = np.asarray(observed, dtype=object)[hazards[top].argmax(axis=1)]
    hit = _in_top(reason_families(scores, k)[rows[top]], driver, k)
    overall = float(hit.mean()) if len(hit) else float("nan")
    return overall, _per_family(pd.Series(driver), hit, "driver_agreement_at_3")


def restriction_causes(scores: pd.DataFrame, truth_restrictions: pd.DataFrame, horizon_days: int = 90) -> pd.Series:
    """Per scored row, the cause of the first restriction in [as_of, as_of + horizon) (None when there is none)."""
    left = _keys(scores).assign(_row=np.arange(len(scores)))
    truth = pd.DataFrame({"user_id": truth_restrictions["user_id"].to_numpy(),
                          "t": utc_naive(truth_restrictions["event_time"]).to_numpy(),
                          "cause": truth_restrictions["cause"].to_numpy(dtype=object)})
    merged = left.merge(truth, on="user_id", how="inner")
    inside = (merged["t"] >= merged["as_of"]) & (merged["t"] < merged["as_of"] + pd.Timedelta(days=horizon_days))
    first = merged[inside.to_numpy()].sort_values("t", kind="stable").drop_duplicates("_row")
    out = np.full(len(scores), None, dtype=object)
    out[first["_row"].to_numpy()] = first["cause"].to_numpy(dtype=object)
    return pd.Series(pd.array(out, dtype="string"), index=scores.index, name="cause")


def cause_recall_at_k(scores: pd.DataFrame, causes: pd.Series, ks: tuple[int, ...] = (1, 3)
                      ) -> tuple[dict[str, float], pd.DataFrame]:
    """Recall@k of the drawn cause among the top-k reason families, for rows restricted within the horizon.

    Returns (overall recall per k with `latent` left out, plus latent apart as `latent_recall_at_k`;
    per cause family: cause_n, cause_recall_at_k).
    """
    cause = causes.to_numpy(dtype=object, na_value=None)
    rows = np.flatnonzero(causes.notna().to_numpy())
    fams = reason_families(scores, max(ks))[rows]
    table, overall = None, {}
    observed = ~np.isin(cause[rows], UNOBSERVED)
    for k in ks:
        hit = _in_top(fams, cause[rows], k)
        part = _per_family(pd.Series(cause[rows]), hit, f"cause_recall_at_{k}")
        table = part if table is None else table.join(part.drop(columns=f"cause_recall_at_{k}_n"))
        overall[f"cause_recall_at_{k}"] = float(hit[observed].mean()) if observed.any() else float("nan")
        for u in UNOBSERVED:
            mask = cause[rows] == u
            overall[f"{u}_recall_at_{k}"] = float(hit[mask].mean()) if mask.any() else float("nan")
    table = table.rename(columns={f"cause_recall_at_{ks[0]}_n": "cause_n"})
    return overall, table


def _hazards_at_as_of(scores: pd.DataFrame, truth_snapshots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows of `scores` found in the truth snapshots, their observable hazard matrix, cause names)."""
    observed = [c for c in CAUSES if c not in UNOBSERVED and f"hazard_{c}" in truth_snapshots.columns]
    truth = _keys(truth_snapshots).assign(**{c: truth_snapshots[f"hazard_{c}"].to_numpy() for c in observed})
    left = _keys(scores).assign(_row=np.arange(len(scores)))
    merged = left.merge(truth, on=["user_id", "as_of"], how="inner", validate="one_to_one")
    return merged["_row"].to_numpy(), merged[observed].to_numpy(dtype=np.float64), observed


def cause_recall_ceiling(scores: pd.DataFrame, causes: pd.Series, truth_snapshots: pd.DataFrame, k: int = 3
                         ) -> tuple[dict[str, float], pd.DataFrame]:
    """What an explainer that knew the true hazards at as_of could reach, on restricted rows in the truth snapshots.

    `cause_ceiling_at_3`: the drawn cause is among the 3 largest positive observable hazards at as_of
    (causes that only arise after as_of are out of reach); `cause_recall_at_3_present`: the reasons'
    recall@3 on rows whose cause already had a positive hazard at as_of. `latent` left out.
    """
    rows, hazards, observed = _hazards_at_as_of(scores, truth_snapshots)
    cause = causes.to_numpy(dtype=object, na_value=None)[rows]
    keep = np.asarray([c is not None and c not in UNOBSERVED for c in cause], dtype=bool)
    rows, hazards, cause = rows[keep], hazards[keep], cause[keep]
    order = np.argsort(-hazards, axis=1, kind="stable")[:, :k]
    names = np.asarray(observed, dtype=object)[order]
    names[np.take_along_axis(hazards, order, axis=1) <= 0] = None
    ceiling = _in_top(names, cause, k)
    own = hazards[np.arange(len(cause)), [observed.index(c) for c in cause]] > 0
    hit = _in_top(reason_families(scores, k)[rows], cause, k)
    table = _per_family(pd.Series(cause), ceiling, f"cause_ceiling_at_{k}").join(
        _per_family(pd.Series(cause[own]), hit[own], f"cause_recall_at_{k}_present"))
    overall = {f"cause_ceiling_at_{k}": float(ceiling.mean()) if len(ceiling) else float("nan"),
               f"cause_recall_at_{k}_present": float(hit[own].mean()) if own.any() else float("nan")}
    return overall, table.drop(columns=f"cause_ceiling_at_{k}_n")


def zero_hazard_share(scores: pd.DataFrame, causes: pd.Series, truth_snapshots: pd.DataFrame, k: int = 3
                      ) -> tuple[float, pd.DataFrame]:
    """Share of the reasons named for rows restricted within the horizon (in the truth snapshots) whose
    family has no hazard at as_of: a reason must be true of the user. Families without a hazard in the
    world (activity, tenure) count as zero. Returns (overall, per family: named_n, named_zero_hazard)."""
    rows, hazards, observed = _hazards_at_as_of(scores, truth_snapshots)
    restricted = causes.notna().to_numpy()[rows]
    rows, hazards = rows[restricted], hazards[restricted]
    fams = reason_families(scores, k)[rows]
    column = {c: i for i, c in enumerate(observed)}
    padded = np.column_stack([hazards, np.zeros(len(rows))])  # last column: no hazard in the world
    index = np.vectorize(lambda f: column.get(f, len(observed)), otypes=[np.int64])(fams) if fams.size else \
        np.zeros(fams.shape, dtype=np.int64)
    named = fams != None  # noqa: E711 (object array)
    zero = named & (np.take_along_axis(padded, index, axis=1) <= 0)
    table = _per_family(pd.Series(fams[named]), zero[named], "named_zero_hazard").rename(
        columns={"named_zero_hazard_n": "named_n"})
    return (float(zero.sum() / named.sum()) if named.any() else float("nan")), table


def bl_closure_false_blame(scores: pd.DataFrame, causes: pd.Series, k: int = 3) -> float:
    """Share of rows restricted within the horizon for another cause that still get `bl_closure` in the top k."""
    rows = np.flatnonzero((causes.notna() & (causes != "bl_closure")).to_numpy())
    if not len(rows):
        return float("nan")
    return float((reason_families(scores, k)[rows] == "bl_closure").any(axis=1).mean())


@dataclass
class Fidelity:
    """Fidelity of reason codes against the truth: overall figures and a per-family table."""

    overall: dict[str, float]
    by_family: pd.DataFrame
    goals: dict[str, str] = field(default_factory=dict)

    def overall_table(self) -> pd.DataFrame:
        """Overall figures with their goals (met or MISSED), for the report."""
        return pd.DataFrame({"value": pd.Series(self.overall, dtype="float64"),
                             "goal": pd.Series({k: self.goals.get(k, "") for k in self.overall}, dtype="object")})

    def plot(self):
        """Per cause family: how often the reasons name the drawn cause (recall@3, its ceiling from the true
        hazards, and where the cause's hazard is present at as_of) against the per-family goal; and the share of
        each family's named reasons with no hazard at as_of against the overall goal."""
        from matplotlib.figure import Figure

        rows = self.by_family[self.by_family["cause_n"].fillna(0) > 0].drop(index=list(UNOBSERVED), errors="ignore")
        fig = Figure(figsize=(10, 4))
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        x = np.arange(len(rows))
        for i, (col, label) in enumerate((("cause_recall_at_3", "recall@3"),
                                          ("cause_ceiling_at_3", "its ceiling (the 3 largest true hazards)"),
                                          ("cause_recall_at_3_present", "recall@3 where present at as_of"))):
            if col in rows:
                left.bar(x + (i - 1) * 0.27, rows[col].to_numpy(dtype=float), 0.27, label=label)
        floor = GOALS["min_cause_recall_at_3_present_20plus"][1]
        left.axhline(floor, color="k", ls=":", lw=1, label=f"goal per family where present ({floor:.2f})")
        left.set_xticks(x, rows.index, rotation=30, ha="right")
        left.set(ylim=(0, 1.05), title="Is the cause named? (restricted within 90 days)")
        left.legend(loc="lower left", fontsize=8)
        named = rows["named_zero_hazard"].to_numpy(dtype=float) if "named_zero_hazard" in rows else np.zeros(len(rows))
        untrue = GOALS["named_zero_hazard_share"][1]
        right.barh(x, np.nan_to_num(named), color="tab:red")
        right.axvline(untrue, color="k", ls=":", lw=1, label=f"goal overall ({untrue:.2f})")
        right.set_yticks(x, rows.index)
        right.invert_yaxis()
        right.set(xlabel="share of its named reasons", title="Named with no hazard at as_of")
        right.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        return fig

    def flat_metrics(self, prefix: str = "fidelity_") -> dict[str, float]:
        """MLflow metric names: fidelity_<metric> overall and fidelity_<metric>_<family> per family."""
        out = {f"{prefix}{k}": v for k, v in self.overall.items()}
        for fam, row in self.by_family.iterrows():
            for col, v in row.items():
                if pd.notna(v):
                    out[f"{prefix}{col}_{fam}"] = float(v)
        return out


# Goals from the issue: overall figures and the per-family floor for cause recall@3.
GOALS = {"driver_agreement_at_3": (">=", 0.95), "cause_recall_at_3": (">=", 0.83),
         "cause_recall_at_3_present": (">=", 0.95), "min_cause_recall_at_3_present_20plus": (">=", 0.90),
         "named_zero_hazard_share": ("<=", 0.03), "bl_closure_false_blame": ("<=", 0.05)}
MIN_CASES = 20


def fidelity_metrics(scores: pd.DataFrame, truth_snapshots: pd.DataFrame, truth_restrictions: pd.DataFrame,
                     horizon_days: int = 90) -> Fidelity:
    """All fidelity figures for scored rows (user_id, as_of, probability, reason_j_family) of an unseen world."""
    agreement, by_driver = driver_agreement_at_3(scores, truth_snapshots)
    causes = restriction_causes(scores, truth_restrictions, horizon_days)
    recall, by_cause = cause_recall_at_k(scores, causes)
    blame = bl_closure_false_blame(scores, causes)
    ceiling, by_ceiling = cause_recall_ceiling(scores, causes, truth_snapshots)
    zero, by_zero = zero_hazard_share(scores, causes, truth_snapshots)
    table = by_driver.join(by_cause, how="outer").join(by_ceiling, how="left").join(by_zero, how="outer")
    table = table.reindex([c for c in CAUSES if c in table.index] + [c for c in table.index if c not in CAUSES])
    enough = table[(table["cause_n"] >= MIN_CASES) & ~table.index.isin(UNOBSERVED)]
    present = table[table["cause_recall_at_3_present_n"].fillna(0) >= MIN_CASES]
    overall = {"driver_agreement_at_3": agreement, **recall, **ceiling,
               "min_cause_recall_at_3_present_20plus": (float(present["cause_recall_at_3_present"].min())
                                                        if len(present) else float("nan")),
               "named_zero_hazard_share": zero, "bl_closure_false_blame": blame,
               "min_cause_recall_at_3_20plus": float(enough["cause_recall_at_3"].min()) if len(enough) else float("nan"),
               "driver_rows": float(by_driver["driver_agreement_at_3_n"].sum()),
               "restricted_rows": float(table["cause_n"].sum())}
    goals = {}
    for name, (op, goal) in GOALS.items():
        v = overall[name]
        met = (v >= goal) if op == ">=" else (v <= goal)
        goals[name] = f"{op} {goal:.2f}: {'met' if met else 'MISSED'}"
    if len(present):  # which family is the lowest
        goals["min_cause_recall_at_3_present_20plus"] += f" ({present['cause_recall_at_3_present'].idxmin()})"
    return Fidelity(overall, table, goals)


def evaluate_fidelity(scorer: Scorer, panel: pd.DataFrame, truth_snapshots: pd.DataFrame,
                      truth_restrictions: pd.DataFrame, horizon_days: int = 90) -> Fidelity:
    """Score and explain a labelled panel of an unseen world, then compare with its truth (AUC included)."""
    from linerisk.models.evaluate import evaluate

    rows = panel.reset_index() if "user_id" not in panel.columns else panel
    ex = explain_frame(scorer, rows)
    scores = pd.concat([rows[["user_id", "as_of"]], ex.scores], axis=1)
    fid = fidelity_metrics(scores, truth_snapshots, truth_restrictions, horizon_days)
    if "label" in rows.columns:
        model = evaluate(rows["label"].to_numpy(), ex.scores["probability"].to_numpy())
        fid.overall = {**{k: model[k] for k in ("auc", "pr_auc", "ece", "rows", "positives")}, **fid.overall}
    return fid
