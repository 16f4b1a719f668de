"""The behaviour-log contract (shared/design/events-contract.md) in code: one place.

`validate_events` splits a frame into good rows and quarantined rows, each quarantined row
carrying the first rule it broke; nothing is silently dropped or coerced.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from linerisk.data.errors import InputError  # noqa: F401 (re-exported: the contract's error)

EVENT_COLUMNS = ("event_id", "user_id", "event_time", "event_type", "amount", "days_past_due", "credit_score")
USER_COLUMNS = ("user_id", "signup_date", "segment")
SEGMENTS = ("consumer", "merchant")
SCORE_RANGE = (350, 950)

# event_type -> which of (amount, days_past_due, credit_score) is required ("req"),
# optional ("opt") or must be null (absent from the mapping).
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "bl_open": {"amount": "req"},
    "bl_drawdown": {"amount": "req"},
    "bl_repayment": {"amount": "req", "days_past_due": "req"},
    "bl_fund_misuse": {"amount": "req"},
    "bl_close": {},
    "pl_open": {"amount": "req"},
    "pl_limit_change": {"amount": "req"},
    "pl_drawdown": {"amount": "req"},
    "pl_repayment": {"amount": "req", "days_past_due": "req"},
    "pl_restricted": {},
    "pl_restored": {},
    "credit_score": {"credit_score": "req"},
    "credit_inquiry": {"amount": "opt"},
    "pl_appeal": {},
    "bl_default": {"amount": "req", "days_past_due": "req"},
    "pl_default": {"amount": "req", "days_past_due": "req"},
}
DEFAULT_TYPES = ("bl_default", "pl_default")
RED_LINE_DPD = 90  # a default is marked beyond this many days past due
RED_LINE_MISUSE_FLAGS = 2  # so many fund-misuse flags are the red line too
EVENT_TYPES = tuple(EVENT_FIELDS)
VALUE_FIELDS = ("amount", "days_past_due", "credit_score")

# Quarantine rules, in the order they are checked: a row reports the first it breaks.
RULES = (
    "missing_required",   # event_id, user_id, event_time, event_type or a per-type field is null
    "unknown_event_type",
    "unparseable_time",
    "must_be_null",       # a field set that the event type says must be null
    "negative_amount",
    "score_out_of_range",
    "dpd_out_of_range",   # a default (bl_default / pl_default) at or under RED_LINE_DPD days past due
    "unknown_user",
    "duplicate_event_id",  # the second and later rows with an event_id already seen
)


@dataclass(frozen=True)
class Validated:
    """Result of validation: rows to use, rows quarantined (with `rule`), and the count read."""

    good: pd.DataFrame
    quarantined: pd.DataFrame

    @property
    def n_read(self) -> int:
        return len(self.good) + len(self.quarantined)

    def by_rule(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.quarantined["rule"].value_counts().items()} if len(self.quarantined) else {}

    def account(self, used: int, future: int) -> "RowCount":
        """The row count of this validation, given what the features consumed and what lay at/after as_of."""
        return RowCount(self.n_read, used, future, self.by_rule())


@dataclass(frozen=True)
class RowCount:
    """Where every event row read went: `used` by the features, `future` (at or after as_of, so not used) or
    quarantined (by rule). `check` fails closed when they do not add up to `read`: a row lost is an error."""

    read: int
    used: int
    future: int
    quarantined: dict[str, int]

    @property
    def n_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def __add__(self, other: "RowCount") -> "RowCount":
        rules = {k: self.quarantined.get(k, 0) + other.quarantined.get(k, 0) for k in {*self.quarantined, *other.quarantined}}
        return RowCount(self.read + other.read, self.used + other.used, self.future + other.future, rules)

    def summary(self) -> str:
        detail = "".join(f", {k}={v}" for k, v in sorted(self.quarantined.items()) if v)
        return (f"rows read {self.read:,} = used {self.used:,} + future {self.future:,} "
                f"+ quarantined {self.n_quarantined:,}{detail}")

    def check(self) -> "RowCount":
        lost = self.read - self.used - self.future - self.n_quarantined
        if lost:
            raise InputError(f"{self.summary()} does not add up: {lost:,} row(s) unaccounted for")
        return self


NO_ROWS = RowCount(0, 0, 0, {})


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Raise InputError naming the missing columns: such a file cannot be used at all."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {', '.join(missing)}")


# an ISO time ending in an offset ("Z", "+08:00", "-0530"); a bare date's "-01" is no offset
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d*)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


def parse_times(values: pd.Series, tz: str = "UTC") -> pd.Series:
    """Times as UTC instants (datetime64[us, UTC]): naive times are wall-clock times in `tz`, times with an
    offset keep their instant. Unparseable values, and local times that do not exist or occur twice (a
    DST change in `tz`), become NaT (flagged by the caller). Vectorised; UTC input costs nothing extra."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        local = values.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT") if tz != "UTC" else values.dt.tz_localize("UTC")
        return local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    out = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601").astype("datetime64[us, UTC]")
    if tz != "UTC":
        naive = ~values.astype("string").str.contains(_OFFSET, regex=True).fillna(True).to_numpy(dtype=bool)
        if naive.any():
            local = out.dt.tz_localize(None).dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            out = out.where(~naive, local.dt.tz_convert("UTC").astype("datetime64[us, UTC]"))
    return out


def _numeric(values: pd.Series, what: str) -> pd.Series:
    try:
        return pd.to_numeric(values, errors="raise")
    except (TypeError, ValueError) as exc:
        raise InputError(f"events: column {what} is not numeric ({exc})") from None


def id_hashes(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash per id (pandas' vectorised SipHash); equal ids hash equal, so distinct hashes are distinct ids."""
    return pd.util.hash_array(values, categorize=False)


def repeated_hashes(hashes: list[np.ndarray], in_place: bool = False) -> np.ndarray:
    """The hashes occurring more than once across `hashes` (sorted, unique). `in_place`: a single array
    may be sorted where it is (the caller no longer needs its order), which saves a copy of every hash."""
    if len(hashes) == 1 and in_place:
        ordered = hashes[0]
    else:
        ordered = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)  # a new array, ours to sort
    ordered.sort()
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def duplicated_ids(ids: pd.Series) -> np.ndarray:
    """`ids.duplicated(keep="first")`, exactly, but compared only among rows that share a hash: an id
    whose hash is unique cannot repeat (pandas' duplicated on a million string ids takes about twice as long)."""
    if not pd.api.types.is_string_dtype(ids):  # numbers (7 == 7.0) or mixed objects: pandas' own equality
        return ids.duplicated(keep="first").to_numpy()
    h = id_hashes(ids.to_numpy(dtype=object))
    out = np.zeros(len(ids), dtype=bool)
    shared = np.isin(h, repeated_hashes([h]))
    if shared.any():
        out[shared] = ids[shared].duplicated(keep="first").to_numpy()
    return out


def type_codes(col: pd.Series) -> np.ndarray:
    """event_type as int8 positions in EVENT_TYPES (-1: unknown or missing), via Arrow: fast on string columns
    (a categorical column maps its categories once)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col.dtype, pd.CategoricalDtype):
        lut = pd.Index(EVENT_TYPES).get_indexer(col.cat.categories.astype(str)).astype(np.int8)
        codes = col.cat.codes.to_numpy()
        return np.where(codes >= 0, lut[codes], -1).astype(np.int8)
    arr = col.array
    data = pa.array(arr) if hasattr(arr, "__arrow_array__") else pa.array(np.asarray(arr, dtype=object), from_pandas=True)
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        data = data.cast(pa.string())
    value_set = pa.array(list(EVENT_TYPES), type=data.type)

    def encode(part: pa.Array | pa.ChunkedArray) -> np.ndarray:
        codes = pc.index_in(part, value_set=value_set).fill_null(-1)
        return np.asarray(codes.to_numpy(zero_copy_only=False) if isinstance(codes, pa.Array)
                          else codes.to_numpy()).astype(np.int8)

    if len(data) < 4_000_000:
        return encode(data)
    half = len(data) // 2
    with ThreadPoolExecutor(2) as pool:  # Arrow releases the GIL: both cores encode
        return np.concatenate(list(pool.map(encode, (data.slice(0, half), data.slice(half)))))


def validate_events(events: pd.DataFrame, users: pd.DataFrame | None = None, tz: str = "UTC",
                    unique_ids: bool = False) -> Validated:
    """Check every row against the contract; return good rows typed per contract and bad rows with their rule.

    `users` enables the unknown-user rule; naive times are wall-clock times in `tz` (good rows carry UTC
    instants). `unique_ids`: the caller has already taken out every row whose event_id may repeat (a
    partition after the global duplicate check), so the duplicate rule has nothing to find and is skipped.
    The input frame is not modified.
    """
    require_columns(events, EVENT_COLUMNS, "events")
    n = len(events)
    rule = np.full(n, -1, dtype=np.int8)

    def flag(mask: np.ndarray, code: int) -> None:
        rule[(rule < 0) & mask] = code

    etype = events["event_type"].astype("string")
    times = parse_times(events["event_time"], tz)
    fields = {f: _numeric(events[f], f) for f in VALUE_FIELDS}
    present = {f: fields[f].notna().to_numpy(dtype=bool) for f in VALUE_FIELDS}
    code = type_codes(etype)
    known = code >= 0

    def of_types(types) -> np.ndarray:  # rows whose event type is one of `types` (a table lookup per row)
        return np.append(np.isin(EVENT_TYPES, list(types)), False)[code]

    missing = (events["event_id"].isna() | events["user_id"].isna() | etype.isna()
               | events["event_time"].isna()).to_numpy(dtype=bool, copy=True)
    must_null = np.zeros(n, dtype=bool)
    for f in VALUE_FIELDS:
        req = of_types(t for t, spec in EVENT_FIELDS.items() if spec.get(f) == "req")
        allowed = of_types(t for t, spec in EVENT_FIELDS.items() if f in spec)
        missing |= req & ~present[f]
        must_null |= known & ~allowed & present[f]

    flag(missing, 0)
    flag(~known, 1)
    flag(times.isna().to_numpy(), 2)
    flag(must_null, 3)
    flag((fields["amount"] < 0).fillna(False).to_numpy(bool), 4)
    score = fields["credit_score"]
    flag(((score < SCORE_RANGE[0]) | (score > SCORE_RANGE[1])).fillna(False).to_numpy(bool), 5)
    is_default = of_types(DEFAULT_TYPES)
    flag(is_default & (fields["days_past_due"] <= RED_LINE_DPD).fillna(False).to_numpy(bool), 6)
    if users is not None:
        flag(~events["user_id"].isin(users["user_id"]).to_numpy(dtype=bool), 7)
    # Duplicates are judged among rows that passed every other rule: a broken row is not "first".
    if not unique_ids:
        ok = rule < 0
        dup = np.zeros(n, dtype=bool)
        dup[ok] = duplicated_ids(events["event_id"][ok])
        flag(dup, 8)

    bad = rule >= 0
    if bad.any():
        def kept(col: pd.Series) -> pd.Series:
            return col[~bad]
        good = events.loc[~bad, list(EVENT_COLUMNS)].copy()
    else:  # the usual case: no row taken out, so no copy (copy-on-write keeps `events` as it is)
        def kept(col: pd.Series) -> pd.Series:
            return col
        good = events[list(EVENT_COLUMNS)]
    good["event_id"] = good["event_id"].astype("string")
    if pd.api.types.is_numeric_dtype(good["user_id"].dtype):
        good["user_id"] = good["user_id"].astype("int64")  # nullable after corruption; no nulls remain
    good["event_type"] = kept(etype)
    good["event_time"] = kept(times)
    good["amount"] = kept(fields["amount"]).astype("float64")
    good["days_past_due"] = kept(fields["days_past_due"]).astype("Int32")
    good["credit_score"] = kept(fields["credit_score"]).astype("Int32")
    quarantined = events.loc[bad].copy()
    quarantined["rule"] = pd.Series(np.asarray(RULES)[rule[bad]], index=quarantined.index, dtype="string")
    return Validated(good, quarantined)


# The column each rule is about (missing_required / must_be_null: found per row, see `broken_column`).
RULE_COLUMNS = {"unknown_event_type": "event_type", "unparseable_time": "event_time", "negative_amount": "amount",
                "score_out_of_range": "credit_score", "dpd_out_of_range": "days_past_due", "unknown_user": "user_id",
                "duplicate_event_id": "event_id"}


def broken_column(row: pd.Series) -> str:
    """The column a quarantined row breaks its `rule` on (the first one, for a rule over several)."""
    rule = str(row["rule"])
    if rule in RULE_COLUMNS:
        return RULE_COLUMNS[rule]
    fields = EVENT_FIELDS.get(str(row["event_type"]), {}) if pd.notna(row["event_type"]) else {}
    if rule == "missing_required":
        required = [*EVENT_COLUMNS[:4], *(f for f, need in fields.items() if need == "req")]
        return next((c for c in required if pd.isna(row[c])), "event_id")
    return next((f for f in VALUE_FIELDS if f not in fields and pd.notna(row[f])), "amount")  # must_be_null


def describe_quarantine(quarantined: pd.DataFrame) -> str:
    """One line on rows that break the contract: how many, per rule and column, and the first of them."""
    counts = quarantined["rule"].value_counts()
    first = quarantined.iloc[0]
    rules = ", ".join(f"{rule} {n:,}" for rule, n in counts.items())
    return (f"{len(quarantined):,} event row(s) break the contract ({rules}); first: row {first.name!r} "
            f"(event_id {first['event_id']!r}) breaks rule {first['rule']} on column {broken_column(first)}")


def validate_users(users: pd.DataFrame) -> pd.DataFrame:
    """Users typed per contract; a users table with broken rows cannot be used (InputError)."""
    require_columns(users, USER_COLUMNS, "users")
    out = users.loc[:, list(USER_COLUMNS)].copy()
    if out["user_id"].isna().any() or out["user_id"].duplicated().any():
        raise InputError("users: user_id must be present and unique")
    bad_segment = ~out["segment"].isin(SEGMENTS)
    if bad_segment.any():
        raise InputError(f"users: segment must be one of {SEGMENTS}, found {out['segment'][bad_segment].iloc[0]!r}")
    signup = pd.to_datetime(out["signup_date"], errors="coerce")
    if signup.isna().any():
        raise InputError("users: signup_date is missing or not a date")
    out["signup_date"] = signup.astype("datetime64[s]")
    out["segment"] = out["segment"].astype("string")
    return out
