"""
Hostile configuration files on reload, measured: for each file of
C{tests/hostile/_configs.py} plus the worst case that stays inside the
bounds (1 MiB, 100,000 nodes), SIGHUP a real C{twistd orchestrator} and
measure while the file is read and refused:

- the admin API's slowest answer (polled every 10 ms: how long the
  reactor was held),
- the respawn latency of the backend, SIGKILLed right after the SIGHUP,
- the orchestrator's RSS and fd growth,
- the time from SIGHUP to the "reload rejected" log line.

Usage: .venv/bin/python bench/config_reload.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.hostile import _watch  # noqa: E402
from tests.hostile._configs import HOSTILE, RELOADABLE, rejections  # noqa: E402



def _worstInBounds(path: str) -> None:
    # Just under 1 MiB, the node budget reached at its very end: the most
    # parsing a refused file can cost.
    with open(path, "w") as f:
        f.write("- 1\n" * 100_001)


def _idle(path: str) -> None:
    """No reload at all: the baseline of the same measurements."""


FILES = {"(no reload: baseline)": (_idle, None)}
FILES.update(HOSTILE)
FILES["worst-in-bounds"] = (_worstInBounds, "more than 100000 nodes")


class Poller(threading.Thread):
    """
    GET the backend's status every 10 ms, recording each answer's time.
    """

    def __init__(self, orchestrator) -> None:
        super().__init__(daemon=True)
        self.orchestrator = orchestrator
        self.times: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.orchestrator.status()
            except OSError:
                pass
            self.times.append(time.monotonic() - started)
            time.sleep(0.01)


def _running(orchestrator):
    harness.waitFor(lambda: orchestrator.status()["status"] == "running", timeout=30,
                    interval=0.05, what="running")


def measure(rounds: int) -> list[dict]:
    directory = tempfile.mkdtemp(prefix="bench-config-reload-")
    orchestrator = harness.startOrchestrator(directory, RELOADABLE)
    rows = []
    try:
        _running(orchestrator)
        path = os.path.join(directory, "orchestrator.yaml")
        good = open(path).read()
        for name, (write, words) in FILES.items():
            samples = {"api_max": [], "respawn": [], "rejected": [], "rss": [], "fds": []}
            for _ in range(rounds):
                before = rejections(orchestrator, words) if words else 0
                if words:
                    write(path)
                usage = _watch.Usage(orchestrator.process.pid)
                usage.take()
                poller = Poller(orchestrator)
                poller.start()
                sent = time.monotonic()
                if words:
                    orchestrator.signal(signal.SIGHUP)
                samples["respawn"].append(_watch.respawnSeconds(orchestrator))
                if words:
                    harness.waitFor(lambda: rejections(orchestrator, words) > before, timeout=120,
                                    interval=0.01, what=f"{name} rejected")
                else:
                    time.sleep(1.0)
                samples["rejected"].append(time.monotonic() - sent)
                usage.take()
                poller.stopping.set()
                poller.join()
                samples["api_max"].append(max(poller.times))
                samples["rss"].append(usage.rssGrowth)
                samples["fds"].append(usage.fdGrowth)
                if words:
                    with open(path, "w") as f:
                        f.write(good)
                _running(orchestrator)
            rows.append({
                "file": name,
                "api_max_ms": 1000 * max(samples["api_max"]),
                "respawn_ms": 1000 * statistics.median(samples["respawn"]),
                "respawn_max_ms": 1000 * max(samples["respawn"]),
                "rejected_s": statistics.median(samples["rejected"]),
                "rss_mib": max(samples["rss"]) / 2**20,
                "fds": max(samples["fds"]),
                "peak_rss_mib": _watch.rssBytes(orchestrator.process.pid) / 2**20,
            })
    finally:
        orchestrator.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args.rounds)
    print("| file | refused after (median) | slowest API answer during the reload | respawn of a backend killed during it (median / max) | RSS growth | fd growth |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['rejected_s']:.2f} s | {r['api_max_ms']:.0f} ms | "
              f"{r['respawn_ms']:.0f} / {r['respawn_max_ms']:.0f} ms | {r['rss_mib']:.1f} MiB | {r['fds']} |")


if __name__ == "__main__":
    main()
