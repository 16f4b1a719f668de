"""The Python API: DataFrames in and out, the same functions the `linerisk` CLI runs.

    world = simulate(users=2_000, months=12, seed=0)          # events, users, truth
    panel = build_panel(world.events, world.users, truth=world.truth_snapshots)
    result = train(panel, truth=world.truth_snapshots)        # metrics, model, report
    version = register(result); promote(version.version)
    scores = score(world.events, world.users, "2024-12-01")   # the Scores frame
    view = explain(world.events, world.users, "2024-12-01", user_id=3)

Functions that read events also take the `Validated` of data.schema.validate_events (events checked
once, by the caller, who has dealt with its quarantined rows). Libraries are imported when a function
runs, so `import linerisk` stays cheap. Bad input raises
`InputError` (a ValueError) with one line naming the column (or parameter) and the rule.
MLflow: a tracking URI the caller set is used as it is; otherwise `$LINERISK_HOME/mlflow.db`.
"""
from __future__ import annotations

import dataclasses
import datetime
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from linerisk.data.errors import InputError

if TYPE_CHECKING:  # annotations only: nothing heavy is imported at `import linerisk`
    import pandas as pd

    from linerisk.data.schema import Validated
    from linerisk.data.simulate import World, WorldParams
    from linerisk.models.experiment import FidelityWorld, TrainResult
    from linerisk.models.recover import PathBack
    from linerisk.models.registry import ModelPackage, PromotionDecision, RegisteredVersion
    from linerisk.models.train import TrainParams

DEFAULT_MODEL = "linerisk@champion"
BadRows = Literal["raise", "drop"]

__all__ = ["InputError", "simulate", "build_features", "build_panel", "train", "register", "promote", "load_model",
           "score", "explain", "plan", "validate_plans"]
Target = Literal["restrict", "restore"]


# ---------------------------------------------------------------------------- checks shared by the functions

def _timestamp(value: object, tz: str = "UTC", what: str = "as_of") -> pd.Timestamp:
    import zoneinfo

    from linerisk.features.compute import to_utc_timestamp

    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, TypeError, ValueError):
        raise InputError(f"tz: unknown time zone {tz!r} (an IANA name such as Asia/Shanghai)") from None
    try:
        return to_utc_timestamp(value, tz)
    except (TypeError, ValueError):
        raise InputError(f"{what}: {value!r} is not a time (a UTC date or ISO time)") from None


def _validated(events: pd.DataFrame | Validated, users: pd.DataFrame, bad_rows: BadRows, tz: str = "UTC"
               ) -> tuple[Validated, pd.DataFrame]:
    """(validated events, users), both checked against the events contract (naive times in `tz`).

    bad_rows="raise": any row breaking a rule raises, naming the rule and column; "drop": such rows
    are left out with a warning that counts them per rule. Events already validated (the `Validated` of
    data.schema.validate_events, whose quarantined rows the caller has dealt with) are not checked again."""
    from linerisk.data.schema import Validated, describe_quarantine, validate_events, validate_users

    if bad_rows not in ("raise", "drop"):
        raise InputError(f"bad_rows: must be 'raise' or 'drop', not {bad_rows!r}")
    users = validate_users(users)
    if isinstance(events, Validated):
        return events, users
    checked = validate_events(events, users, tz)
    if len(checked.quarantined):
        message = describe_quarantine(checked.quarantined)
        if bad_rows == "raise":
            raise InputError(f"events: {message}; pass bad_rows='drop' to leave such rows out")
        warnings.warn(f"events: left out {message}", stacklevel=3)
    return checked, users


def _package(model: str | ModelPackage, expect: str) -> ModelPackage:
    """A loaded package (loaded from the registry when given a reference), its feature spec and its target
    (`expect`: "restrict" / "restore") checked."""
    from linerisk.models.batch import require_feature_spec

    package = load_model(model) if isinstance(model, str) else model
    require_feature_spec(package, expect)
    return package


# ---------------------------------------------------------------------------- data and features

def simulate(users: int = 50_000, months: int = 24, seed: int = 0, *, corrupt_rate: float = 0.0, jobs: int = 1,
             **params: Any) -> World:
    """A synthetic world in memory (events, users and the truth_* tables): table for table
    what `linerisk simulate` writes for the same parameters. `params`: other data.simulate.WorldParams fields."""
    from linerisk.data.simulate import WorldParams, simulate_world

    for name, value, low in (("users", users, 1), ("months", months, 1), ("jobs", jobs, 1)):
        if not isinstance(value, int) or value < low:
            raise InputError(f"{name}: must be a whole number of at least {low}, not {value!r}")
    if not 0.0 <= corrupt_rate <= 0.5:
        raise InputError(f"corrupt_rate: must be between 0 and 0.5, not {corrupt_rate!r}")
    known = {f.name for f in dataclasses.fields(WorldParams)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"simulate: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return simulate_world(WorldParams(users=users, months=months, seed=seed, **params), corrupt_rate, jobs)


def build_features(events: pd.DataFrame, users: pd.DataFrame, as_of: object, *, tz: str = "UTC",
                   bad_rows: BadRows = "raise") -> pd.DataFrame:
    """Point-in-time features at `as_of` (events strictly before it): one row per user, indexed by
    user_id, columns in spec order plus `as_of`; the function training and scoring use. `tz`: where
    naive times are wall-clock times and day windows count local days (a date is local midnight)."""
    from linerisk.features.compute import build_features as compute

    ts = _timestamp(as_of, tz)
    checked, users = _validated(events, users, bad_rows, tz)
    return compute(checked.good, ts, users, tz)


def _target(target: str) -> str:
    from linerisk.models.experiment import MODEL_NAME

    if target not in MODEL_NAME:
        raise InputError(f"target: must be one of {', '.join(MODEL_NAME)}, not {target!r}")
    return target


def build_panel(events: pd.DataFrame, users: pd.DataFrame, as_of: object | Iterable[object] | None = None, *,
                horizon_days: int = 90, truth: pd.DataFrame | None = None, tz: str = "UTC",
                bad_rows: BadRows = "raise", target: Target = "restrict") -> pd.DataFrame:
    """The labelled training panel, user_id a column: target "restrict", the features plus `label`
    (restricted within `horizon_days`) of the lines active at each snapshot; "restore", the restricted
    lines, label restored within the horizon. Snapshots: `as_of`, else the simulator's dates in `truth`
    (truth_snapshots, or truth_recovery_snapshots for "restore"), else every 90 days with a full horizon."""
    from linerisk.models.experiment import snapshot_dates, world_panel

    _target(target)
    if horizon_days < 1:
        raise InputError(f"horizon_days: must be at least 1, not {horizon_days!r}")
    checked, users = _validated(events, users, bad_rows, tz)
    if as_of is None:
        snapshots = snapshot_dates(checked.good, truth, horizon_days, tz)
    else:
        one = isinstance(as_of, (str, datetime.date)) or not hasattr(as_of, "__iter__")
        snapshots = [_timestamp(t, tz) for t in ([as_of] if one else as_of)]
    return world_panel(checked.good, users, snapshots, horizon_days, tz=tz, read=checked, target=target)


# ---------------------------------------------------------------------------- training and the registry

def _params(params: TrainParams | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainParams:
    from linerisk.models.train import TrainParams, params_from_dict

    base = params if isinstance(params, TrainParams) else TrainParams()
    values = {**(params if isinstance(params, dict) else {}), **overrides}
    try:
        return params_from_dict(values, base)
    except (TypeError, ValueError) as exc:
        raise InputError(f"training parameters: {exc}") from None


def _fidelity_world(world: World | FidelityWorld, horizon_days: int, target: Target = "restrict") -> FidelityWorld:
    """An unseen world for fidelity: its target's panel at the simulator's snapshot dates and its truth."""
    from linerisk.models.experiment import FidelityWorld

    if isinstance(world, FidelityWorld):
        return world
    truth = world.truth_recovery_snapshots if target == "restore" else world.truth_snapshots
    checked, users = _validated(world.events, world.users, "drop")
    panel = build_panel(checked, users, horizon_days=horizon_days, truth=truth, target=target)
    unseen = FidelityWorld(panel, truth, world.truth_restrictions, "fidelity world")
    if target == "restore":  # "why it was restricted" scores the restriction model's reasons on its events
        unseen.events, unseen.users = checked.good, users
    return unseen


def train(panel: pd.DataFrame, *, truth: pd.DataFrame | None = None, fidelity: World | FidelityWorld | None = None,
          params: TrainParams | dict[str, Any] | None = None, label: str = "label", time_col: str | None = "as_of",
          drop: tuple[str, ...] = (), id_col: str | None = None, allow: tuple[str, ...] = (), source: str = "",
          target: Target = "restrict", restriction_model: str | None = None, **overrides: Any) -> TrainResult:
    """Train the calibrated LightGBM model and a baseline on `panel`, evaluate on the test part (against
    the oracle when `truth` holds truth_snapshots), measure reason fidelity on `fidelity` (another
    world), build the report and model card. Out-of-time split on `time_col` (None: random, each
    `id_col` on one side); an external table's columns that identify rows or leak the label stop it
    unless in `allow`. `overrides`: TrainParams fields; `source` names the data in the report and errors.

    target "restore": the restoration model on `build_panel(..., target="restore")` (out of time on
    `as_of`; `truth` and the fidelity world's truth are truth_recovery_snapshots), with
    `restriction_model` (a registered reference) scoring "why it was restricted" on `fidelity`.

    Returns a TrainResult: `.metrics` (table), `.flat_metrics`, `.model`, `.report_html`, `.split`, `.curves`."""
    from linerisk.models.experiment import run_training, training_panel

    p = _params(params, overrides)
    if _target(target) == "restore":
        if label != "label" or drop or id_col is not None or allow or time_col not in ("as_of", None):
            raise InputError("target=\"restore\" trains on build_panel(..., target=\"restore\") as it is: "
                             "label, drop, id_col and allow keep their defaults (time_col: as_of, or None)")
        return _train_restore(panel, truth, fidelity, p, time_col is not None, source, restriction_model)
    if restriction_model is not None:
        raise InputError("restriction_model: only with target=\"restore\"")
    frame, spec = training_panel(panel, label, time_col, tuple(drop), id_col, tuple(allow), what=source or "panel")
    world = None if fidelity is None else _fidelity_world(fidelity, p.horizon_days)
    return run_training(frame, spec, p, truth, time_split=time_col is not None, source=source, fidelity=world)


def _train_restore(panel: pd.DataFrame, truth: pd.DataFrame | None, fidelity: World | FidelityWorld | None,
                   p: TrainParams, time_split: bool, source: str, restriction_model: str | None) -> TrainResult:
    """`train(target="restore")`: the spec's restoration view on a restore panel, out of time on `as_of`
    (`time_split`) or split at random with each user on one side."""
    from linerisk.models.experiment import run_training
    from linerisk.models.train import registry_spec

    spec = registry_spec("restore", p.horizon_days)
    missing = [c for c in ("user_id", "restore_days", "followup_days") if c not in panel.columns]
    if missing:
        raise InputError(f"panel lacks column(s) {', '.join(missing)}: build it with build_panel(..., target=\"restore\")")
    world = None if fidelity is None else _fidelity_world(fidelity, p.horizon_days, "restore")
    return run_training(panel, spec, p, truth, time_split, source, fidelity=world, restriction_model=restriction_model)


def register(result: TrainResult, name: str | None = None, *, keep_user_ids: bool = False) -> RegisteredVersion:
    """Log the run to MLflow (params, metrics, report, model card, test part with pseudonymous user ids
    unless `keep_user_ids`, drift reference) and register the model as a new version of `name` (default:
    linerisk, or linerisk-restore for a restoration model) with alias @challenger; recorded on `result` too."""
    from linerisk.models import registry
    from linerisk.models.experiment import MODEL_NAME, run_params, training_reference
    from linerisk.models.report import CARD_FILE

    name = name or MODEL_NAME[result.spec.get("target", "restrict")]

    reg = registry.register_model(result.model, params=run_params(result), metrics=result.flat_metrics,
                                  reference=training_reference(result), test_frame=result.split.test,
                                  report_html=result.report_html, name=name, keep_user_ids=keep_user_ids,
                                  signature_frame=result.split.train)
    result.run_id, result.name, result.version = reg.run_id, reg.name, reg.version
    registry.log_text(reg.run_id, result.model_card(), f"report/{CARD_FILE}")
    return reg


def promote(version: str | int, name: str = "linerisk", *, force: bool = False) -> PromotionDecision:
    """Move @champion to `version` (a number, or a reference such as `linerisk@challenger`) if its test
    AUC is not worse than the champion's on the version's own test data; `force` overrides."""
    from linerisk.models import registry

    ref = f"{name}/{version}" if str(version).isdigit() else str(version)
    try:
        ref_name, ver, _ = registry.resolve(ref)
        return registry.promote(ref_name, ver, force)
    except (LookupError, ValueError) as exc:
        raise InputError(str(exc).strip("'\"")) from None


def load_model(ref: str = DEFAULT_MODEL) -> ModelPackage:
    """A registered model's package (`models:/name@alias`, `name@alias`, `name/version` or `name` =
    @champion): its Scorer, drift reference, name and version, every artifact sha256-checked."""
    from linerisk.models import registry

    try:
        return registry.load_package(ref)
    except (LookupError, ValueError) as exc:
        raise InputError(f"model {ref}: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------- scoring and explaining

def score(events: pd.DataFrame, users: pd.DataFrame, as_of: object, model: str | ModelPackage = DEFAULT_MODEL, *,
          restore_model: str | None = None, tz: str = "UTC", bad_rows: BadRows = "raise") -> pd.DataFrame:
    """The Scores frame, as `linerisk score` writes it: one row per user with a line at `as_of`; active
    lines get probability, band and the top-3 reasons, restricted lines (with `restore_model`, e.g.
    "linerisk-restore@champion"; else active lines only) the restoration answer and what holds it back."""
    from linerisk.models.batch import score_users

    restore = None if restore_model is None else _package(restore_model, "restore")
    package = _package(model, "restrict")
    ts = _timestamp(as_of, tz)
    checked, users = _validated(events, users, bad_rows, tz)
    scores, _, consumed = score_users(package, checked.good, users, ts, tz, restore)
    checked.account(*consumed).check()  # every row used, at/after as_of, or left out by rule
    return scores.reset_index(drop=True)


def _user_rows(events: pd.DataFrame | Validated, users: pd.DataFrame, user_id: Any
               ) -> tuple[pd.DataFrame | Validated, pd.DataFrame]:
    from linerisk.data.schema import Validated

    if "user_id" not in users.columns or not (users["user_id"] == user_id).any():
        raise InputError(f"user_id: {user_id!r} is not in the users table ({len(users):,} users)")
    if isinstance(events, Validated):
        return Validated(*(part[part["user_id"] == user_id] for part in (events.good, events.quarantined))), users
    if "user_id" not in events.columns:
        raise InputError("events: missing column(s) user_id")
    return events[events["user_id"] == user_id], users


def explain(events: pd.DataFrame, users: pd.DataFrame, as_of: object, user_id: Any,
            model: str | ModelPackage = DEFAULT_MODEL, *, threshold: float | None = None,
            restore_model: str | ModelPackage | None = None, tz: str = "UTC", bad_rows: BadRows = "raise"
            ) -> dict[str, Any]:
    """One user's explanation, the structure `linerisk explain --json` prints. An active line: probability,
    band, reasons, what helps and the path back (time alone and a plan of actions). A restricted line (needs
    `restore_model`, e.g. "linerisk-restore@champion", loaded only then): why it was most likely restricted,
    the red line, P(restored within 90 days and a year), the expected date, what holds it back and what would
    bring it sooner. A user without a line at `as_of` raises."""
    from linerisk.features.labels import line_state
    from linerisk.models.view import explain_restricted_user, explain_user

    package = _package(model, "restrict")
    ts = _timestamp(as_of, tz)
    if threshold is not None and not 0 < threshold < 1:
        raise InputError(f"threshold: must be between 0 and 1 (exclusive), not {threshold!r}")
    mine, users = _user_rows(events, users, user_id)
    checked, users = _validated(mine, users, bad_rows, tz)
    state = line_state(checked.good, ts, users[users["user_id"] == user_id], tz)
    since = state["state_since"].iloc[0]
    if state["state"].iloc[0] == "no_line":
        raise InputError(f"user_id: {user_id!r} has no personal line at {ts:%Y-%m-%d} (no pl_open before it)")
    if state["state"].iloc[0] != "restricted":
        view = explain_user(package.scorer, checked.good, users, user_id, ts, threshold, tz)
        view["model"] = {"name": package.name, "version": package.version}
        return view
    if restore_model is None:
        raise InputError(f"user_id: {user_id!r}'s line is restricted since {since:%Y-%m-%d}; pass restore_model "
                         "(e.g. 'linerisk-restore@champion') for the way back")
    restore = _package(restore_model, "restore")
    view = explain_restricted_user(package.scorer, restore.scorer, checked.good, users, user_id, ts, tz)
    view["model"] = {"name": package.name, "version": package.version}
    view["restore_model"] = {"name": restore.name, "version": restore.version}
    return view


def plan(events: pd.DataFrame, users: pd.DataFrame, as_of: object, user_ids: Iterable[Any] | None = None,
         model: str | ModelPackage = DEFAULT_MODEL, *, threshold: float | None = None, tz: str = "UTC",
         bad_rows: BadRows = "raise") -> PathBack:
    """The path back below `threshold` (default: out of the high bands) for `user_ids` (default: every
    active line): `.time` (weekly curve with no new adverse events, first date below) and `.actions`
    (the smallest set of the spec's levers that gets there now, step by step)."""
    from linerisk.features.labels import line_state
    from linerisk.models.recover import path_back

    package = _package(model, "restrict")
    ts = _timestamp(as_of, tz)
    checked, users = _validated(events, users, bad_rows, tz)
    good = checked.good
    if user_ids is None:
        state = line_state(good, ts, users, tz)["state"]
        ids = state.index[state == "active"].to_numpy()
    else:
        ids = list(user_ids)
        unknown = [u for u in ids if not (users["user_id"] == u).any()]
        if unknown:
            raise InputError(f"user_ids: {unknown[:5]!r} not in the users table ({len(users):,} users)")
    if not len(ids):
        raise InputError(f"user_ids: no users to plan for (none given, or no active line at {ts:%Y-%m-%d})")
    return path_back(package.scorer, good, users, ids, ts, threshold, tz)


def validate_plans(events: pd.DataFrame, users: pd.DataFrame, params: WorldParams, as_of: object,
                   model: str | ModelPackage = DEFAULT_MODEL, *, restore_model: str | ModelPackage | None = None,
                   n_users: int = 500, seed: int = 0, futures: int = 16, bad_rows: BadRows = "raise",
                   on_day: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Plans checked against the true world, as `linerisk validate-plans` writes them: for `n_users`
    sampled users with a plan, the projected and the true (forward-simulated, common random numbers)
    risk with and without it, and the `summary`. `params`: what simulated the world (`World.params` of
    `simulate`), so its full state at `as_of` can be simulated again; with `restore_model`, restoration
    plans too. `on_day(n)` is called as each simulated day is done (progress)."""
    from linerisk.data.simulate import WorldParams
    from linerisk.models.plan_check import validate_plans as check

    if not isinstance(params, WorldParams):
        raise InputError("params: the WorldParams that simulated the world (World.params); plans can only be "
                         "checked where the simulator knows the truth")
    for name, value in (("n_users", n_users), ("futures", futures)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name}: must be a whole number of at least 1, not {value!r}")
    package = _package(model, "restrict")
    restore = None if restore_model is None else _package(restore_model, "restore")
    checked, users = _validated(events, users, bad_rows)
    return check(params, checked.good, users, _timestamp(as_of), package.scorer,
                 None if restore is None else restore.scorer, n_users, seed, futures, on_day)
