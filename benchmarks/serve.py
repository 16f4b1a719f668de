"""Benchmark `linerisk serve`: latency (p50 / p99) and requests per second over real HTTP on loopback.

Goals (issue 15, 2-core machine): one user per request with reasons p50 < 10 ms and p99 < 50 ms;
at least 200 requests/s with 8 concurrent clients; in-process `predict` of one row < 3 ms.
The champion is trained once on the 20,000-user world (default parameters, like benchmarks/score.py)
in a private store under benchmarks/out/serve_home; request rows are that world's users at its end.
`linerisk serve` is started on 127.0.0.1 only, sent a bounded number of requests per scenario over
keep-alive connections (dataframe_split JSON, as a client sends it), and stopped.
CPU ms per request (server process tree; in process, the calling thread) is printed beside the wall
times because it does not grow when other work shares the machine.
Usage: python benchmarks/serve.py [--workers N] [--requests 1000]   (run under flock /tmp/linerisk-heavy.lock)
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import machine, store_env, table  # noqa: E402
from score import OUT, TRAIN_USERS, ensure_model, ensure_world, last_day  # noqa: E402

BIN = Path(sys.executable).parent
GOALS = {"one user": (10, 50, None), "8 concurrent clients, one user each": (None, None, 200)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_rows(world: Path, n: int):
    """`n` users' feature rows at the world's last day (what a client would send)."""
    from linerisk.features.compute import build_features
    from linerisk.features.spec import feature_names
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(world / "users.parquet")
    events = read_events(world / "events.parquet", users).good
    return build_features(events, last_day(world), users)[feature_names("restrict")].head(n).astype("float64")


def payload(frame) -> bytes:
    rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in r] for r in frame.to_numpy().tolist()]
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": rows}}).encode()


def _client(port: int, bodies: list[bytes], latencies: list[float]) -> None:
    """Send `bodies` one after another over one keep-alive connection (TCP_NODELAY, as requests and
    urllib3 set it); record each latency."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for body in bodies:
            start = time.perf_counter()
            conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            latencies.append(time.perf_counter() - start)
            if resp.status != 200:
                raise SystemExit(f"server answered {resp.status}: {data[:300]!r}")
    finally:
        conn.close()


def load(port: int, bodies: list[bytes], clients: int) -> tuple[np.ndarray, float]:
    """Latencies (s) and requests per second of `bodies` split over `clients` concurrent clients."""
    shares = [bodies[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(port, share, lat)) for share, lat in zip(shares, latencies)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    flat = np.concatenate([np.asarray(x) for x in latencies])
    if len(flat) != len(bodies):
        raise SystemExit("a client stopped early")
    return flat, len(bodies) / elapsed


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its children (the server and its workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def in_process(model_dir: Path, frame, repeats: int) -> list[tuple]:
    """Wall and CPU time of MLflow pyfunc `predict` of one row in this process (signature checks included)."""
    import mlflow

    model = mlflow.pyfunc.load_model(str(model_dir))
    row = frame.head(1)
    mapping = {c: row[c].to_numpy() for c in row.columns}
    scorer = model.unwrap_python_model().scorer
    rows = []
    for label, predict, data in (("in-process predict, one-row DataFrame", model.predict, row),
                                 ("in-process predict, column mapping", model.predict, mapping),
                                 ("in-process Scorer.score, one row (no MLflow)", scorer.score, row)):
        predict(data)
        times = []
        cpu = time.thread_time()
        for _ in range(repeats):
            start = time.perf_counter()
            predict(data)
            times.append(time.perf_counter() - start)
        rows.append((label, np.asarray(times), (time.thread_time() - cpu) / repeats))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=0, help="server workers (0: one per core)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per one-user scenario")
    args = ap.parse_args()
    home = OUT / "serve_home"
    env = store_env(home)
    ensure_model(env, 24)
    os.environ.update(env)
    frame = request_rows(ensure_world(TRAIN_USERS, 24), 1000)
    singles = [payload(frame.iloc[[i % len(frame)]]) for i in range(args.requests)]
    hundreds = [payload(frame.iloc[(i * 100) % 900:(i * 100) % 900 + 100]) for i in range(max(args.requests // 10, 20))]

    port = _free_port()
    argv = [str(BIN / "linerisk"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    log = open(home / "serve.log", "w")
    server = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    results = []
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise SystemExit(f"linerisk serve exited: {(home / 'serve.log').read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start in 300 s")
            time.sleep(0.5)
        load(port, singles[:50], 2)  # warm every worker (first requests compile nothing, but page in)
        for label, bodies, clients in (("one user", singles, 1), ("100 users per request", hundreds, 1),
                                       ("8 concurrent clients, one user each", singles * 2, 8)):
            cpu = tree_cpu(server.pid)
            lat, rps = load(port, bodies, clients)
            results.append((label, lat, rps, len(bodies), (tree_cpu(server.pid) - cpu) / len(bodies)))
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # linerisk serve stops its servers and their workers
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
    served = sorted((home / "serving").glob("linerisk-v*"), key=lambda p: int(p.name.rsplit("v", 1)[1]))[-1]
    local = in_process(served, frame, 500)

    def ok(label, p50, p99, rps):
        goal = GOALS.get(label)
        if goal is None:
            return ""
        g50, g99, grps = goal
        good = (g50 is None or p50 < g50) and (g99 is None or p99 < g99) and (grps is None or rps >= grps)
        return "yes" if good else "NO"

    rows = []
    for label, lat, rps, n, cpu in results:
        p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
        rows.append([label, f"{n:,}", f"{p50:.1f}", f"{p99:.1f}", f"{rps:,.0f}", f"{cpu * 1e3:.2f}",
                     ok(label, p50, p99, rps)])
    for label, times, cpu in local:
        p50, p99 = np.percentile(times, 50) * 1e3, np.percentile(times, 99) * 1e3
        rows.append([label, f"{len(times):,}", f"{p50:.2f}", f"{p99:.2f}", f"{1 / np.median(times):,.0f}",
                     f"{cpu * 1e3:.2f}", ("yes" if p50 < 3 else "NO") if "DataFrame" in label else ""])
    workers = args.workers or len(os.sched_getaffinity(0))
    print(f"\nlinerisk serve ({workers} workers, loopback, with reasons), model {served.name}; {machine()}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(table(["scenario", "requests", "p50 ms", "p99 ms", "requests/s", "CPU ms/request", "goal met"], rows))
    print("\nCPU ms/request: the server's process tree (all workers) per request; in process, this thread's.")


if __name__ == "__main__":
    main()
