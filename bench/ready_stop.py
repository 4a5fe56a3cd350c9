#!/usr/bin/env python3
"""
Start to READY and stop: what C{systemctl start} and C{systemctl stop} wait
for under C{Type=notify}.

Each sample starts C{twistd -n orchestrator} with the demo backend and
C{NOTIFY_SOCKET} pointing at a datagram socket this script binds, and
measures:

  - start → READY=1: from the C{exec} of twistd to the READY datagram (the
    admin API listens and the backend passed its first probe);
  - SIGTERM → exit: from the signal to twistd's exit (every child stopped);
  - the split of the start: twistd start → admin API listening → backend
    spawned → READY (from the log's timestamps).

Usage: python bench/ready_stop.py [--samples 20]
"""

from __future__ import annotations

import argparse
import calendar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import DEMO, PYTHON, fmt, freePort, log, machineInfo, projectBin, summary, table, writeResult  # noqa: E402

CONFIG = """\
admin: {{listen: "tcp:{admin}:interface=127.0.0.1"}}
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend}"]
    url: "http://127.0.0.1:{backend}"
    health: {{interval: 30}}
"""

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")


def _logTime(line: str) -> float | None:
    match = _STAMP.match(line)
    if not match:
        return None
    # The orchestrator's log stamps are UTC with milliseconds.
    return calendar.timegm(time.strptime(match.group(1)[:19], "%Y-%m-%dT%H:%M:%S")) \
        + float("0." + match.group(1)[20:])


def sample(directory: str) -> dict:
    admin, backend = freePort(), freePort()
    config = os.path.join(directory, "orchestrator.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(admin=admin, backend=backend, python=PYTHON, demo=DEMO))
    notify = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    sock.settimeout(60)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORCHESTRATOR", "GO_BACKEND", "WATCHDOG_")) and k != "INVOCATION_ID"}
    env["NOTIFY_SOCKET"] = notify
    logPath = os.path.join(directory, "twistd.log")
    try:
        wall0 = time.time()
        t0 = time.monotonic()
        process = subprocess.Popen(
            [projectBin("twistd"), "-n", "--pidfile=", "orchestrator", "--config", config,
             "--env-file", os.devnull],
            cwd=directory, env=env, stdin=subprocess.DEVNULL,
            stdout=open(logPath, "wb"), stderr=subprocess.STDOUT)
        while True:
            fields = dict(l.split("=", 1) for l in sock.recv(4096).decode().splitlines() if "=" in l)
            if "READY" in fields:
                ready = time.monotonic() - t0
                break
        t1 = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        stopped = time.monotonic() - t1
    finally:
        sock.close()
    stamps = {}
    with open(logPath, encoding="utf-8", errors="replace") as f:
        for line in f:
            when = _logTime(line)
            if when is None:
                continue
            if "twistd" in line and "starting up" in line:
                stamps.setdefault("twistd", when - wall0)
            elif "admin API listening" in line:
                stamps.setdefault("listening", when - wall0)
            elif "backend started (PID" in line:
                stamps.setdefault("spawned", when - wall0)
    return {"ready": ready, "stop": stopped, "exit": code, **stamps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    results = []
    for i in range(args.samples):
        directory = tempfile.mkdtemp(prefix="orch-bench-ready-")
        try:
            results.append(sample(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        log(f"sample {i + 1}/{args.samples}: READY after {results[-1]['ready'] * 1000:.0f} ms, "
            f"stopped in {results[-1]['stop'] * 1000:.0f} ms (exit {results[-1]['exit']})")
    rows = []
    for key, label in (("twistd", "exec → twistd logging"), ("listening", "exec → admin API listening"),
                       ("spawned", "exec → backend spawned"), ("ready", "exec → READY=1"),
                       ("stop", "SIGTERM → exit")):
        s = summary(r.get(key) for r in results)
        rows.append([label, s["n"], fmt(s.get("median")), fmt(s.get("p95")), fmt(s.get("min")),
                     fmt(s.get("max"))])
    print(table(["interval", "n", "median", "p95", "min", "max"], rows))
    print(f"exit codes: {sorted(set(r['exit'] for r in results))}")
    writeResult("ready_stop", {"machine": machineInfo(), "samples": results})


if __name__ == "__main__":
    main()
