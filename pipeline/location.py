"""Where a job's input or output lives: a local path, or an fsspec URL (`s3://`, `gs://`, `memory://`, ...).

`location()` turns what a user typed into a `pathlib.Path` (plain paths and `file://` URLs: one
local file system, where a rename is atomic) or a `Url` (any other fsspec file system). `Url`
offers the few `Path` operations the jobs use (`/`, `name`, `suffix`, `stem`, `parent`,
`with_name`, `exists`, `is_dir`), so a job handles both the same way.

Atomic writes on a remote file system: object stores have no atomic rename (S3's "move" is a
copy then a delete, key by key), but one object appears only when its upload completes. So a
single file is written to a local temporary file and uploaded in one `put_file`; a dataset
directory is written part by part in place and a `_SUCCESS` marker (the Hadoop/Spark
convention, so Spark-written data reads as well) is written last, after every part is there;
`require_complete` refuses a remote directory without it.
"""
from __future__ import annotations

import glob
import os
import posixpath
from pathlib import Path
from typing import IO, Union

import click

from linerisk.data.errors import InputError

SUCCESS = "_SUCCESS"
LOCAL_PROTOCOLS = ("file", "local")


class Url:
    """A file or directory on an fsspec file system, named by its URL (picklable: a worker reopens the file system)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") if not url.endswith("://") else url
        self.protocol = url.split("://", 1)[0]
        self._fs = None
        self._path = None

    def __reduce__(self):
        return (Url, (self.url,))

    def _open(self) -> None:
        import fsspec.core

        try:
            self._fs, self._path = fsspec.core.url_to_fs(self.url)
        except ImportError:
            raise InputError(f"{self.url}: the {self.protocol}:// file system needs the {_package(self.protocol)} "
                             f"package (pip install {_package(self.protocol)})") from None
        except ValueError as exc:  # an unknown protocol
            raise InputError(f"{self.url}: {str(exc).splitlines()[0]}") from None

    @property
    def fs(self):
        """The fsspec file system (opened on first use)."""
        if self._fs is None:
            self._open()
        return self._fs

    @property
    def path(self) -> str:
        """The path inside the file system, as its methods and pyarrow take it."""
        if self._fs is None:
            self._open()
        return self._path

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Url({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __truediv__(self, name: str) -> "Url":
        return Url(f"{self.url}/{name}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.split("://", 1)[1])

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> "Url":
        return Url(posixpath.dirname(self.url))

    def with_name(self, name: str) -> "Url":
        return self.parent / name

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.path))


Location = Union[Path, Url]


def _package(protocol: str) -> str:
    from fsspec.registry import known_implementations

    impl = known_implementations.get(protocol, {})
    return impl.get("class", f"{protocol}fs.").split(".")[0]


def location(value: str | os.PathLike | Url) -> Location:
    """A local `Path` for a plain path or a `file://` URL, else a `Url` (its file system's package checked now,
    so a missing one, e.g. s3fs for s3://, is one clear line before any work)."""
    if isinstance(value, (Url, Path)):
        return value
    text = os.fspath(value)
    if "://" not in text:
        return Path(text)
    protocol, rest = text.split("://", 1)
    if protocol in LOCAL_PROTOCOLS:
        return Path(rest)
    url = Url(text)
    url.fs  # noqa: B018 (fail early on a missing package or an unknown protocol)
    return url


def has_glob(target: Location) -> bool:
    return glob.has_magic(str(target))


def expand(target: Location) -> list[str]:
    """The files a glob names, sorted (local paths, or paths inside the Url's file system)."""
    if isinstance(target, Url):
        return sorted(target.fs.glob(target.path))
    return sorted(f for f in glob.glob(str(target), recursive=True) if os.path.isfile(f))


def open_read(target: Location) -> IO[bytes]:
    """A binary file object reading `target`."""
    if isinstance(target, Url):
        return target.fs.open(target.path, "rb")
    return open(target, "rb")


def ensure_parent(target: Location) -> None:
    """Create the directory `target` goes in (object stores have none to create)."""
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target.fs.makedirs(target.parent.path, exist_ok=True)


def upload(local: str | os.PathLike, target: Url) -> None:
    """One local file to `target` in one upload: the object appears whole or not at all."""
    ensure_parent(target)
    target.fs.put_file(os.fspath(local), target.path)


def require_complete(target: Location, what: str) -> None:
    """Refuse a remote dataset directory without its `_SUCCESS` marker: its writer has not finished
    (or was interrupted), so some parts may be missing. Local directories are renamed into place whole."""
    if isinstance(target, Url) and target.is_dir() and not (target / SUCCESS).exists():
        raise InputError(f"{what}: {target} has no {SUCCESS} marker: the dataset is incomplete (the run "
                         "writing it is still going or was interrupted; run it again)")


def mark_complete(target: Url, names: list[str]) -> None:
    """Keep exactly the files `names` (relative) in the remote directory `target`, then write a `_SUCCESS`
    marker (listing its files) into each directory holding them, `target`'s own last: a table inside
    a world (`world/events.parquet/`) is as complete as the world."""
    keep = {(target / n).path for n in names}
    for f in target.fs.find(target.path.rstrip("/")):
        if f not in keep:
            target.fs.rm_file(f)
    by_dir: dict[str, list[str]] = {}
    for n in names:
        folder, _, file = n.rpartition("/")
        by_dir.setdefault(folder, []).append(file)
    for folder in sorted(by_dir, key=lambda d: (d == "", d)):
        listed = "".join(f"{f}\n" for f in sorted(by_dir[folder]))
        target.fs.pipe_file(((target / folder) if folder else target).path + "/" + SUCCESS, listed.encode())


def clear(target: Url) -> None:
    """Remove a remote file or directory, its `_SUCCESS` marker first (so no reader takes a half-removed dataset)."""
    if (target / SUCCESS).exists():
        target.fs.rm_file((target / SUCCESS).path)
    if target.exists():
        target.fs.rm(target.path, recursive=True)


class LocationParam(click.ParamType):
    """A click parameter taking a local path or an fsspec URL (see `location`)."""

    name = "path|url"

    def convert(self, value, param, ctx):
        try:
            return location(value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


LOCATION = LocationParam()
