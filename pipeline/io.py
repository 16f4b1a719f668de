"""File I/O for every job: reading the contract's tables and writing atomically.

Reads raise `InputError` with one clear line for files that cannot be used; writes go to a
temporary file beside the target and are renamed into place, so no half file is ever seen.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from linerisk.data.idhash import string_hashes
from linerisk.data.schema import (EVENT_COLUMNS, InputError, Validated, id_hashes, repeated_hashes, require_columns,
                                  validate_events, validate_users)
from linerisk.pipeline.cluster import Runner
from linerisk.pipeline.location import (Location, Url, expand, has_glob, location, open_read,
                                        require_complete, upload)


def linerisk_home() -> Path:
    """Where generated data, reports and the MLflow store live (`$LINERISK_HOME`, default ./.linerisk)."""
    return Path(os.environ.get("LINERISK_HOME", ".linerisk"))


def read_table(path: str | os.PathLike | Url, what: str = "input") -> pd.DataFrame:
    """Read Parquet (file, directory or hive dataset) or CSV, local or at an fsspec URL; unreadable input
    raises InputError."""
    p = location(path)
    if not p.exists():
        raise InputError(f"{what}: {p} does not exist")
    require_complete(p, what)
    remote = isinstance(p, Url)
    try:
        if p.is_dir() or p.suffix in (".parquet", ".pq"):
            return (pq.read_table(p.path, filesystem=p.fs) if remote else pq.read_table(p)).to_pandas()
        if p.suffix in (".csv", ".gz"):
            if remote:
                with open_read(p) as fh:
                    return pd.read_csv(fh, compression="infer" if p.suffix == ".csv" else "gzip")
            return pd.read_csv(p)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: cannot read {p}: {str(exc).splitlines()[0]}") from None
    raise InputError(f"{what}: {p} is neither Parquet nor CSV")


def load_model_package(ref: str, expect: str | None = None):
    """A registered model's package (sha256-checked), refused with one line if its feature spec is not this code's
    or (with `expect`) it predicts another target.

    Features are built by this code's spec, so a model trained on another spec would read wrong columns."""
    from linerisk import api
    from linerisk.models.batch import require_feature_spec

    package = api.load_model(ref)
    require_feature_spec(package, expect)
    return package


USERS_FILE = "users.parquet"


def users_path_for(events_path: str | os.PathLike | Url) -> Location:
    """The default users table: `users.parquet` inside an events directory, else beside the events file (or glob)."""
    p = location(events_path)
    return p / USERS_FILE if not has_glob(p) and p.is_dir() else p.parent / USERS_FILE


def world_dir(path: str | os.PathLike | Url) -> Location:
    """A directory written by `linerisk simulate` (a remote one only once its writer has marked it complete)."""
    p = location(path)
    require_complete(p, "world")
    return p


def world_parameters(world: Path) -> dict | None:
    """The parameters a `linerisk simulate` directory records in its manifest (None: no such manifest, or not
    simulate's); InputError for a manifest that cannot be read (never taken for a missing one)."""
    path = Path(world) / "manifest.json"
    try:
        recorded = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    ok = isinstance(recorded, dict) and recorded.get("generator") == "linerisk simulate"
    return recorded["parameters"] if ok and isinstance(recorded.get("parameters"), dict) else None


def read_users(path: str | os.PathLike | Url) -> pd.DataFrame:
    """Users table validated against the contract."""
    return validate_users(read_table(path, "users"))


def read_events(path: str | os.PathLike | Url, users: pd.DataFrame | None = None, tz: str = "UTC") -> Validated:
    """Events validated against the contract (naive times in `tz`): good rows plus quarantined rows with their rule."""
    return validate_events(EventSource(path).read(None), users, tz)


def _hash_ids(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash, is-present) per event id.

    Collisions only make extra duplicate candidates, which are then compared exactly. String ids
    are hashed from the Arrow buffers (data.idhash); other types by pandas."""
    present = ~np.asarray(arr.is_null(), dtype=bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return string_hashes(arr), present
    return id_hashes(arr.to_numpy(zero_copy_only=False)), present


def _repeated_present(hashes: list[np.ndarray]) -> np.ndarray:
    """Repeated hashes, without 0 (what a null id is given: nulls break another rule first)."""
    repeated = repeated_hashes(hashes, in_place=True)  # each bucket's hashes are its own
    return repeated[repeated != 0]


def dataset_files(root: Location) -> list[str]:
    """The data files of a dataset directory (sorted; hidden `.`/`_` names, e.g. `_SUCCESS`, and a users table
    kept inside it left out), as local paths or paths inside the Url's file system."""
    if isinstance(root, Url):
        base = root.path.rstrip("/")
        found = [(f, f[len(base) + 1:]) for f in root.fs.find(base)]
    else:
        found = [(str(f), f.relative_to(root).as_posix()) for f in root.rglob("*") if f.is_file()]
    return sorted(f for f, rel in found if posixpath.basename(rel) != USERS_FILE
                  and not any(part.startswith((".", "_")) for part in rel.split("/")))


class EventSource:
    """The events file (Parquet file, directory or hive dataset; or CSV, read whole) as an Arrow dataset."""

    def __init__(self, path: str | os.PathLike | Url):
        self.path = location(path)
        fs = self.path.fs if isinstance(self.path, Url) else None
        try:
            if has_glob(self.path):  # Parquet files named by a glob
                files = expand(self.path)
                if not files:
                    raise InputError(f"events: {self.path} matches no file")
                self.dataset = ds.dataset(files, format="parquet", filesystem=fs)
            elif not self.path.exists():
                raise InputError(f"events: {self.path} does not exist")
            elif self.path.is_dir():  # a Parquet dataset; a users table kept inside it is not events
                require_complete(self.path, "events")
                self.dataset = ds.dataset(dataset_files(self.path), format="parquet", partitioning="hive",
                                          partition_base_dir=self.path.path if fs else str(self.path), filesystem=fs)
            elif self.path.suffix in (".parquet", ".pq"):
                self.dataset = ds.dataset(self.path.path if fs else self.path, format="parquet", filesystem=fs)
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

    def __reduce__(self):
        return (EventSource, (self.path,))  # a worker reopens the file; the dataset itself never travels

    def pieces(self, rows_per_piece: int = 1 << 22) -> list[tuple[int, int, int] | None]:
        """The file in scan order as (fragment, first row group, stop row group) pieces of about
        `rows_per_piece` rows; [None] (the whole file) when it is not Parquet."""
        if not isinstance(self.dataset.format, ds.ParquetFileFormat):
            return [None]
        out = []
        for f, fragment in enumerate(self.dataset.get_fragments()):
            groups = fragment.metadata.num_row_groups
            sizes = [fragment.metadata.row_group(g).num_rows for g in range(groups)]
            start, rows = 0, 0
            for g, n in enumerate(sizes):
                rows += n
                if rows >= rows_per_piece or g == groups - 1:
                    out.append((f, start, g + 1))
                    start, rows = g + 1, 0
        return out or [None]

    def _piece(self, piece: tuple[int, int, int] | None) -> ds.Dataset:
        if piece is None:
            return self.dataset
        f, start, stop = piece
        fragment = list(self.dataset.get_fragments())[f]
        groups = fragment.split_by_row_group()[start:stop]
        return ds.FileSystemDataset(groups, self.dataset.schema, self.dataset.format, self.dataset.filesystem)

    def id_hashes(self, piece: tuple[int, int, int] | None = None) -> np.ndarray:
        """A 64-bit hash per row's event_id in scan order (0 for a null id: it breaks another rule first)."""
        def run() -> np.ndarray:
            out, at = [], 0
            whole = np.empty(self.n_rows, np.uint64) if piece is None else None  # filled in place: no concat
            for batch in self._piece(piece).to_batches(columns=["event_id"]):
                h, present = _hash_ids(batch.column(0))
                h[~present] = 0
                if whole is None:
                    out.append(h)
                else:
                    whole[at: at + len(h)] = h
                    at += len(h)
            if whole is not None:
                return whole[:at]
            return np.concatenate(out) if out else np.zeros(0, np.uint64)
        return self._scan("event ids", run)

    def rows_with_hashes(self, hashes: np.ndarray, piece: tuple[int, int, int] | None = None) -> pa.Table:
        """The rows (scan order) whose event_id hash is in `hashes`."""
        def run() -> pa.Table:
            data = self._piece(piece)
            rows = np.flatnonzero(np.isin(self.id_hashes(piece), hashes))
            if not len(rows):
                return data.schema.empty_table()
            return data.take(pa.array(rows, type=pa.int64()))
        return self._scan("events", run)

    def duplicate_candidates(self, runner: Runner | None = None) -> pa.Table:
        """Every row whose event_id may occur more than once in the file, in file order.

        On a cluster the file's pieces are hashed where they are read and the hashes are
        shuffled into buckets, so no machine holds every id; the candidates come back in
        file order, as one process finds them."""
        runner = runner or Runner()
        pieces = self.pieces() if runner.distributed else [None]
        buckets = 4 * runner.workers if runner.distributed else 1
        found = runner.map_buckets(functools.partial(_bucketed_id_hashes, source=self, buckets=buckets),
                                   pieces, _repeated_present, buckets)
        repeated = np.unique(np.concatenate(found))
        if not len(repeated):  # the usual case: no second pass over the ids
            return self.dataset.schema.empty_table()
        return pa.concat_tables(runner.map(_rows_with_hashes, pieces, self, runner.share(repeated)))

    def read(self, where: ds.Expression | None) -> pd.DataFrame:
        """The rows matching `where` (file order) as pandas, typed as read_events would read them."""
        return self._scan("events", lambda: self.dataset.to_table(filter=where)).to_pandas()


def _bucketed_id_hashes(piece, source: EventSource, buckets: int) -> list[np.ndarray]:
    h = source.id_hashes(piece)
    if buckets == 1:  # one process: no copy of the whole file's hashes
        return [h]
    which = h % np.uint64(buckets)
    return [h[which == b] for b in range(buckets)]


def _rows_with_hashes(piece, source: EventSource, hashes: np.ndarray) -> pa.Table:
    return source.rows_with_hashes(hashes, piece)


def temp_beside(target: str | os.PathLike | Url, prefix: str, suffix: str) -> Path:
    """A new empty local file `<prefix><random><suffix>` beside `target` (in the temporary directory when
    `target` is a Url), with the permissions a plain write would give."""
    target = location(target)
    if isinstance(target, Url):
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix)
        os.close(fd)
        return Path(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    return Path(tmp)


def publish(tmp: Path, target: Location) -> None:
    """Put the finished local file `tmp` in place: renamed onto a local target, uploaded whole to a Url."""
    if isinstance(target, Url):
        upload(tmp, target)
        tmp.unlink()
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike | Url) -> Iterator[Path]:
    """Yield a temporary local path; put it onto `target` (rename, or one upload to a Url) only if the block succeeds."""
    target = location(target)
    tmp = temp_beside(target, f".{target.name}.", ".tmp")
    try:
        yield Path(tmp)
        publish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def written_locally(target: Location) -> Iterator[Path]:
    """A local directory to write `target`'s files into: `target` itself when local, else a temporary
    directory whose files are uploaded (one object each) into the Url when the block succeeds."""
    if not isinstance(target, Url):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="linerisk-") as tmp:
        yield Path(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                upload(f, target / f.relative_to(tmp).as_posix())


def write_table(frame: pd.DataFrame, path: str | os.PathLike | Url, fmt: str | None = None) -> Location:
    """Write a frame atomically as Parquet (default) or CSV, chosen by `fmt` or the suffix."""
    path = location(path)
    fmt = fmt or ("csv" if path.suffix == ".csv" else "parquet")
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return path


def write_text(text: str, path: str | os.PathLike | Url) -> Location:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return location(path)


def write_bytes(data: bytes, path: str | os.PathLike | Url) -> Location:
    """Write bytes (a PNG) atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return location(path)


def write_json(obj: object, path: str | os.PathLike | Url) -> Location:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def sha256_file(path: str | os.PathLike | Url) -> str:
    h = hashlib.sha256()
    with open_read(location(path)) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quarantine_path_for(out: str | Path | Url) -> Location:
    """Where quarantined rows go: `<out stem>.quarantine.parquet` beside the output."""
    out = location(out)
    return out.with_name(f"{out.stem}.quarantine.parquet")


def write_quarantine(quarantined: pd.DataFrame, path: Location) -> None:
    """Quarantined rows as Parquet; columns Arrow cannot type are written as strings."""
    frame = quarantined.reset_index(drop=True)
    try:
        pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        frame = frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object})
    write_table(frame, path)
