"""Where the per-partition functions run: in this process, or on a Dask cluster (`--scheduler`).

A job splits its users into partitions and maps ONE function over them through a runner;
the runner decides where that happens. `Runner` runs them here, one after another (lazily,
so memory stays at one partition); `DaskRunner` sends them to `dask.distributed` workers.
`--scheduler ADDRESS` (or `$DASK_SCHEDULER_ADDRESS`) connects to a running scheduler,
`--scheduler local[:N]` starts a LocalCluster of N single-threaded worker processes.

Partitioned output is staged: every part is written atomically into a hidden directory
beside the target, which is renamed into place only when every part is there (at an fsspec
URL, where there is no atomic rename, parts go in place and a `_SUCCESS` marker is written
last: pipeline.location). A task
whose worker dies is re-run by Dask and rewrites the same part; its half-written
temporary file is swept at commit, so the committed dataset is the same as without the
failure. A run interrupted as a whole leaves the target untouched and can be re-run.
"""
from __future__ import annotations

import contextlib
import operator
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import click
import pyarrow as pa
import pyarrow.parquet as pq

from linerisk.data.schema import InputError
from linerisk.pipeline.location import SUCCESS, Location, Url, clear, location, mark_complete, open_read

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def scheduler_option(command: Callable) -> Callable:
    """The `--scheduler` flag shared by simulate, features, train and score."""
    return click.option(
        "--scheduler", envvar=SCHEDULER_ENV, default=None, show_envvar=True,
        help="Run partitions on Dask: a scheduler address (tcp://host:8786) or local[:N] for a LocalCluster "
             "of N worker processes. Without it everything runs in this process.")(command)


class Runner:
    """Runs partition functions in this process, in order, one at a time."""

    workers = 1
    distributed = False

    def share(self, obj: Any) -> Any:
        """A handle on `obj` that every task can take as an argument (here: the object itself)."""
        return obj

    def map(self, fn: Callable, items: Iterable[Any], *args: Any) -> Iterator[Any]:
        """`fn(item, *args)` for each item, yielded in item order."""
        for item in items:
            yield fn(item, *args)

    def map_buckets(self, fn: Callable, items: Iterable[Any], combine: Callable, buckets: int) -> list[Any]:
        """`combine([fn(item)[b] for item in items])` for each bucket b < `buckets` (a shuffle)."""
        results = [fn(item) for item in items]
        return [combine([r[b] for r in results]) for b in range(buckets)]


class DaskRunner(Runner):
    """Runs partition functions as tasks on a `dask.distributed` cluster; results come back in order."""

    distributed = True

    def __init__(self, client):
        self.client = client

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def share(self, obj: Any) -> Any:
        # a task that returns `obj`, not scattered data: if the workers holding it die, the
        # scheduler still has the task and computes it again
        return self.client.submit(_identity, obj, pure=False)

    def map(self, fn: Callable, items: Iterable[Any], *args: Any) -> Iterator[Any]:
        items = list(items)
        if not items:
            return
        # pure=False: a fresh key per call, so a long-lived client never hands back an earlier run's result
        futures = self.client.map(fn, items, *[[a] * len(items) for a in args], pure=False)
        try:
            for i in range(len(futures)):
                yield futures[i].result()
                futures[i] = None  # let Dask forget a result once it is taken
        except BaseException:
            self.client.cancel([f for f in futures if f is not None and not f.done()])
            raise

    def map_buckets(self, fn: Callable, items: Iterable[Any], combine: Callable, buckets: int) -> list[Any]:
        # each bucket task receives only its slice of every item's result: data moves worker to worker
        futures = self.client.map(fn, list(items), pure=False)
        combined = [self.client.submit(combine, [self.client.submit(operator.getitem, f, b, pure=False)
                                                 for f in futures], pure=False) for b in range(buckets)]
        return self.client.gather(combined)


def _identity(obj: Any) -> Any:
    return obj


def parse_local(address: str) -> int | None:
    """N for `local` / `local:N` (N defaults to the number of cores), None for a scheduler address."""
    if address != "local" and not address.startswith("local:"):
        return None
    n = address.partition(":")[2]
    try:
        workers = int(n) if n else (os.cpu_count() or 1)
    except ValueError:
        raise InputError(f"--scheduler {address}: expected local or local:N with N a number of workers") from None
    if workers < 1:
        raise InputError(f"--scheduler {address}: N must be at least 1")
    return workers


@contextlib.contextmanager
def runner_for(address: str | None) -> Iterator[Runner]:
    """A `Runner` for no address, else a `DaskRunner` on the named (or a new local) cluster."""
    if not address:
        yield Runner()
        return
    from dask.distributed import Client, LocalCluster

    workers = parse_local(address)
    if workers is not None:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            yield DaskRunner(client)
        return
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--scheduler {address}: cannot connect: {str(exc).splitlines()[0]}") from None
    with client:
        yield DaskRunner(client)


# ---------------------------------------------------------------------------- staged part files

def part_name(index: int, suffix: str) -> str:
    return f"part-{index:05d}{suffix}"


@dataclass(frozen=True)
class Staging:
    """Where part files collect until `commit` puts them at `target`.

    Locally a hidden directory beside `target`, renamed onto it. For a Url (an object store has no
    atomic rename) the parts are written in place, the old target removed first (its `_SUCCESS`
    marker before anything else), and `commit` writes a new `_SUCCESS` last; `in_place=False`
    (parts to be streamed into one file) stages under a hidden prefix beside it instead."""

    target: Location
    path: Location

    @classmethod
    def beside(cls, target: str | os.PathLike | Url, in_place: bool = True) -> "Staging":
        target = location(target)
        hidden = f".{target.name}.partial-{uuid.uuid4().hex[:12]}"  # unique: runs never collide
        if isinstance(target, Url):
            if not in_place:
                return cls(target, target.parent / hidden)
            clear(target)
            return cls(target, target)
        path = target.parent / hidden
        path.mkdir(parents=True)
        return cls(target, path)

    def commit(self, names: Sequence[str]) -> Location:
        """Keep exactly the files `names` (relative paths; each must exist; leftovers of killed attempts
        go), then replace the target with the directory."""
        missing = [n for n in names if not (self.path / n).is_file()]
        if missing:
            raise RuntimeError(f"{self.target}: {len(missing)} part file(s) missing after the run, e.g. {missing[0]}")
        if isinstance(self.path, Url):
            mark_complete(self.path, list(names))
            return self.target
        keep = {Path(n) for n in names}
        for extra in [f for f in self.path.rglob("*") if f.is_file() and f.relative_to(self.path) not in keep]:
            extra.unlink()
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:12]}"
            self.target.rename(old)
            self.path.rename(self.target)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            self.path.rename(self.target)
        return self.target

    def discard(self) -> None:
        """Remove what an unfinished run left (a remote target without its marker; a committed one stays)."""
        if isinstance(self.path, Url):
            if self.path != self.target or not (self.path / SUCCESS).exists():
                clear(self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


def concat_parts(parts: list[Location], out: Location, fmt: str, schema: pa.Schema | None) -> None:
    """Part files, in order, into one file written atomically: Parquet row groups, or CSV lines under one header."""
    from linerisk.pipeline.io import atomic_path  # io imports this module

    with atomic_path(out) as tmp:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in parts:
                    with open_read(part) as fh:
                        writer.write_table(pq.read_table(fh, schema=schema))
            return
        with open(tmp, "wb") as dest:
            for i, part in enumerate(parts):
                with open_read(part) as src:
                    if i:
                        src.readline()  # each part repeats the header
                    shutil.copyfileobj(src, dest)


@contextlib.contextmanager
def staged(target: str | os.PathLike | Url, in_place: bool = True) -> Iterator[Staging]:
    """A `Staging` for `target` (see `Staging.beside`), removed unless committed inside the block."""
    staging = Staging.beside(target, in_place)
    try:
        yield staging
    finally:
        staging.discard()
