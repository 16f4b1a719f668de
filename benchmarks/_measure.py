"""Shared benchmark helpers: run a command, sample the whole process tree's memory, print tables."""
from __future__ import annotations

import os
import platform
import subprocess
import threading
import time

import psutil


def store_env(home) -> dict[str, str]:
    """The environment of a benchmark's private linerisk store under `home` (created): its home, its SQLite
    tracking store, and no progress bars in the measured output."""
    home.mkdir(parents=True, exist_ok=True)
    return {"LINERISK_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "TQDM_DISABLE": "1"}


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run `cmd`; return (seconds, peak resident memory of the process tree in GiB, stdout)."""
    secs, peak, _, out = run_measured_each(cmd, env)
    return secs, peak, out


def run_measured_each(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """Run `cmd`; return (seconds, peak GiB of the process tree, peak GiB of its largest single
    process, e.g. one Dask worker, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    peak = single = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, single
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)] if p.is_running()]
                peak, single = max(peak, sum(rss)), max(single, *rss)
            except (psutil.Error, ValueError):
                pass
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}")
    return time.perf_counter() - start, peak / 2**30, single / 2**30, out


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
