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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.schema import InputError, Validated, validate_events, validate_users


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


def users_path_for(events_path: str | os.PathLike) -> Path:
    """The default users table: `users.parquet` beside the events file (or inside its directory)."""
    p = Path(events_path)
    base = p.parent if p.is_file() or p.suffix else p.parent
    return base / "users.parquet"


def read_users(path: str | os.PathLike) -> pd.DataFrame:
    """Users table validated against the contract."""
    return validate_users(read_table(path, "users"))


def read_events(path: str | os.PathLike, users: pd.DataFrame | None = None) -> Validated:
    """Events validated against the contract: good rows plus quarantined rows with their rule."""
    events = read_table(path, "events")
    if events.empty:
        raise InputError(f"events: {path} holds no rows")
    return validate_events(events, users)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
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
