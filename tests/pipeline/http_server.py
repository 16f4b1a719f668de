"""Starting, asking and stopping `linerisk serve` in tests: real processes, real HTTP, loopback only."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 120
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict | bytes, content_type: str = "application/json") -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, "server did not answer /ping in time"
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGINT)  # `linerisk serve` stops its uvicorn servers and their workers
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass


def start(argv: list[str] | str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`argv` (a shell line when a string) as its own process group, with only the given environment."""
    return subprocess.Popen(argv, env=env, shell=isinstance(argv, str), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def bare_env(store: dict[str, str]) -> dict[str, str]:
    """The store's variables over a PATH without this virtualenv, as a user's fresh shell has."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    return {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, **store, "PATH": path}


