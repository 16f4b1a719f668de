"""File I/O for every job: reading the contract's tables and writing atomically.

Reads raise `InputError` with one clear line for files that cannot be used; writes go to a
temporary file beside the target and are renamed into place, so no half file is ever seen.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from linerisk.data.schema import EVENT_COLUMNS, InputError, Validated, require_columns, validate_events, validate_users


def linerisk_home() -> Path:
    """Where generated data, reports and the MLflow store live (`$LINERISK_HOME`, default ./.linerisk)."""
    return Path(os.environ.get("LINERISK_HOME", ".linerisk"))


def read_table(path: str | os.PathLike, what: str = "input") -> pd.DataFrame:
    """Read Parquet (file, directory or hive dataset) or CSV; unreadable input raises InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what}: {p} does not exist")
    try:
        if p.is_dir() or p.suffix in (".parquet", ".pq"):
            return pq.read_table(p).to_pandas()
        if p.suffix in (".csv", ".gz"):
            return pd.read_csv(p)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: cannot read {p}: {str(exc).splitlines()[0]}") from None
    raise InputError(f"{what}: {p} is neither Parquet nor CSV")


def load_model_package(ref: str):
    """A registered model's package (sha256-checked), refused with one line if its feature spec is not this code's.

    Features are built by this code's spec, so a model trained on another spec would read wrong columns."""
    from linerisk import api
    from linerisk.models.batch import require_feature_spec

    package = api.load_model(ref)
    require_feature_spec(package)
    return package


USERS_FILE = "users.parquet"


def users_path_for(events_path: str | os.PathLike) -> Path:
    """The default users table: `users.parquet` inside an events directory, else beside the events file."""
    p = Path(events_path)
    return p / USERS_FILE if p.is_dir() else p.parent / USERS_FILE


def read_users(path: str | os.PathLike) -> pd.DataFrame:
    """Users table validated against the contract."""
    return validate_users(read_table(path, "users"))


def read_events(path: str | os.PathLike, users: pd.DataFrame | None = None, tz: str = "UTC") -> Validated:
    """Events validated against the contract (naive times in `tz`): good rows plus quarantined rows with their rule."""
    return validate_events(EventSource(Path(path)).read(None), users, tz)


def _hash_ids(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash, is-present) per event id, by pandas' vectorised SipHash.

    Collisions only make extra duplicate candidates, which are then compared exactly."""
    values = arr.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values, categorize=False), ~np.asarray(arr.is_null(), dtype=bool)


class EventSource:
    """The events file (Parquet file, directory or hive dataset; or CSV, read whole) as an Arrow dataset."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"events: {self.path} does not exist")
        try:
            if self.path.is_dir():  # a Parquet dataset; a users table kept inside it is not events
                files = sorted(str(f) for f in self.path.rglob("*") if f.is_file() and f.name != USERS_FILE
                               and not any(part.startswith((".", "_")) for part in f.relative_to(self.path).parts))
                self.dataset = ds.dataset(files, format="parquet", partitioning="hive",
                                          partition_base_dir=str(self.path))
            elif self.path.suffix in (".parquet", ".pq"):
                self.dataset = ds.dataset(self.path, format="parquet")
            else:  # CSV (or an unknown suffix, which read_table rejects): small files, held in memory
                self.dataset = ds.dataset(pa.Table.from_pandas(read_table(self.path, "events"), preserve_index=False))
            self.n_rows = self.dataset.count_rows()
        except (pa.ArrowException, OSError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"events: cannot read {self.path}: {str(exc).splitlines()[0]}") from None
        require_columns(pd.DataFrame(columns=self.dataset.schema.names), EVENT_COLUMNS, f"events {self.path}")
        if self.n_rows == 0:
            raise InputError(f"events: {self.path} holds no rows")

    def _scan(self, what: str, fn):
        try:
            return fn()
        except pa.ArrowException as exc:
            raise InputError(f"events: cannot read {what} of {self.path}: {str(exc).splitlines()[0]}") from None

    def duplicate_candidates(self) -> pa.Table:
        """Every row whose event_id may occur more than once in the file, in file order."""
        def run() -> pa.Table:
            hashes = np.empty(self.n_rows, dtype=np.uint64)
            start = 0
            for batch in self.dataset.to_batches(columns=["event_id"]):
                h, present = _hash_ids(batch.column(0))
                h[~present] = 0  # null ids break another rule first; never duplicates
                hashes[start: start + len(h)] = h
                start += len(h)
            ordered = np.sort(hashes)
            repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
            del ordered
            rows = np.flatnonzero(np.isin(hashes, repeated[repeated != 0]))
            return self.dataset.take(pa.array(rows, type=pa.int64()))
        return self._scan("event ids", run)

    def read(self, where: ds.Expression | None) -> pd.DataFrame:
        """The rows matching `where` (file order) as pandas, typed as read_events would read them."""
        return self._scan("events", lambda: self.dataset.to_table(filter=where)).to_pandas()


def temp_beside(target: str | os.PathLike, prefix: str, suffix: str) -> Path:
    """A new empty file `<prefix><random><suffix>` beside `target`, with the permissions a plain write would give."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    tmp = temp_beside(target, f".{target.name}.", ".tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_table(frame: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write a frame atomically as Parquet (default) or CSV, chosen by `fmt` or the suffix."""
    path = Path(path)
    fmt = fmt or ("csv" if path.suffix == ".csv" else "parquet")
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: object, path: str | os.PathLike) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quarantine_path_for(out: str | Path) -> Path:
    """Where quarantined rows go: `<out stem>.quarantine.parquet` beside the output."""
    out = Path(out)
    return out.with_name(f"{out.stem}.quarantine.parquet")


def write_quarantine(quarantined: pd.DataFrame, path: Path) -> None:
    """Quarantined rows as Parquet; columns Arrow cannot type are written as strings."""
    frame = quarantined.reset_index(drop=True)
    try:
        pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        frame = frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object})
    write_table(frame, path)
