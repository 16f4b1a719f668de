"""`linerisk serve`: the registered models answer over HTTP through MLflow's scoring server.

Two populations, two models, two ports: the restriction model (active lines) on `--port`, the
restoration model (restricted lines) on `--port + 1` when it is registered (`--restore-model`;
by default `linerisk-restore@champion` if the registry has it). Each model keeps its own
signature, version and aliases, and a client knows a user's line state before it asks.

Each model is copied once from the registry into `$LINERISK_HOME/serving/<name>-v<version>` and
served by uvicorn in a child process of this interpreter (no `uvicorn` on PATH needed) with
`--workers` processes (default: one per core) running pipeline/serving.py's app. Stops both on Ctrl-C.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from linerisk.data.schema import InputError
from linerisk.pipeline.config import build, load_toml
from linerisk.pipeline.io import linerisk_home
from linerisk.pipeline.serving import MODEL_ENV

RESTORE_DEFAULT = "linerisk-restore@champion"


@dataclass(frozen=True)
class ServeParams:
    model: str = "linerisk@champion"
    restore_model: str = ""  # empty: RESTORE_DEFAULT when registered
    host: str = "127.0.0.1"
    port: int = 5001
    workers: int = 0  # 0: one per core


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_copy(ref: str) -> tuple[str, str, Path]:
    """(name, version, local directory) of a registered model, copied once (atomically) under $LINERISK_HOME/serving."""
    import mlflow

    from linerisk.models import registry

    try:
        name, version, uri = registry.resolve(ref)
    except (LookupError, ValueError) as exc:
        raise InputError(f"serve: {exc}") from None
    dest = linerisk_home() / "serving" / f"{name}-v{version}"
    if not (dest / "MLmodel").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return name, version, dest


def server_command(host: str, port: int, workers: int) -> list[str]:
    """This interpreter running uvicorn over the serving app (pipeline/serving.py `run`)."""
    return [sys.executable, "-m", "linerisk.pipeline.serving", "--host", host, "--port", str(port),
            "--workers", str(workers)]


def _restore_ref(flag: str) -> str | None:
    """The restoration model to serve: the flag's (must exist), else the default alias if registered."""
    if flag:
        return flag
    from linerisk.models import registry

    try:
        registry.resolve(RESTORE_DEFAULT)
    except LookupError:
        return None
    return RESTORE_DEFAULT


def _run(servers: list[subprocess.Popen]) -> int:
    """Wait until a server exits or we are told to stop; stop the others; its exit status."""
    stopping = []
    previous = {s: signal.signal(s, lambda *_: stopping.append(1)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping and all(p.poll() is None for p in servers):
            time.sleep(0.2)
    finally:
        for p in servers:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # uvicorn shuts its workers down gracefully
        for p in servers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0 if stopping else max(p.returncode or 0 for p in servers)


@click.command("serve")
@click.option("--model", help="Restriction model (active lines) [config: serve.model].")
@click.option("--restore-model", help=f"Restoration model (restricted lines), served on PORT+1 "
                                      f"[default: {RESTORE_DEFAULT} when registered].")
@click.option("--host", help="Address to listen on [config: serve.host, 127.0.0.1: this machine only].")
@click.option("--port", type=click.IntRange(1, 65534), help="Port of the restriction model [config: serve.port].")
@click.option("--workers", type=click.IntRange(min=0), help="Processes per model [config: serve.workers; 0: one per core].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file overriding the defaults.")
def command(model, restore_model, host, port, workers, config_path) -> None:
    """Serve the registered models over HTTP (MLflow's scoring protocol: POST /invocations)."""
    p = build(ServeParams, load_toml(config_path).get("serve", {}), model=model, restore_model=restore_model,
              host=host, port=port, workers=workers)
    n = p.workers or cores()
    plan = [(p.model, p.port)]
    restore = _restore_ref(p.restore_model)
    if restore:
        plan.append((restore, p.port + 1))
    copies = [(*local_copy(ref), port) for ref, port in plan]  # resolve every model before starting any
    bin_dir = str(Path(sys.executable).parent)  # anything a worker starts finds this environment's tools
    servers = []
    for name, version, path, port_ in copies:
        env = {**os.environ, MODEL_ENV: str(path), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        click.echo(f"serving {name} v{version} at http://{p.host}:{port_}/invocations ({n} worker{'s' * (n > 1)})")
        servers.append(subprocess.Popen(server_command(p.host, port_, n), env=env))
    if not restore:
        click.echo(f"no restoration model: {RESTORE_DEFAULT} is not registered (restricted lines are not served)")
    click.get_current_context().exit(_run(servers))
