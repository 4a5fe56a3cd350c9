"""
A SIGHUP storm against a real C{twistd orchestrator} whose configuration
file was replaced by an alias bomb (each read of it costs ~0.3 s of CPU
before it is refused): how many times the file is read, how long the
reads go on after the last signal, the orchestrator's RSS growth, and the
respawn latency of a backend SIGKILLed right after the storm.

Usage: .venv/bin/python bench/reload_storm.py [--signals N] [--gap SECONDS] [--src TREE]
(C{--src}: run another source tree, e.g. an exported older commit, with
this bench's harness.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.hostile import _watch  # noqa: E402
from tests.hostile._configs import BILLION_LAUGHS, RELOADABLE, rejections  # noqa: E402


def storm(signals: int, gap: float, src: str | None) -> dict:
    root = tempfile.mkdtemp(prefix="reload-storm-")
    env = {"PYTHONPATH": src} if src else None
    orchestrator = None
    try:
        orchestrator = harness.startOrchestrator(root, RELOADABLE, env=env)
        orchestrator.waitHealthy()
        with open(os.path.join(root, "orchestrator.yaml"), "w") as f:
            f.write(BILLION_LAUGHS)
        usage = _watch.Usage(orchestrator.process.pid)
        usage.take()
        for _ in range(signals):
            orchestrator.signal(signal.SIGHUP)
            time.sleep(gap)
        last = time.monotonic()
        respawn = _watch.respawnSeconds(orchestrator)
        words, seen, changed = "aliases expand past", [], last
        deadline = last + 120  # bounded
        while time.monotonic() < deadline:
            seen.append(rejections(orchestrator, words))
            if len(seen) > 1 and seen[-1] != seen[-2]:
                changed = time.monotonic()
            if time.monotonic() - changed > 3:
                break
            usage.take()
            time.sleep(0.1)
        return {"reads": seen[-1], "reading_after_last_signal_s": round(max(0.0, changed - last), 2),
                "rss_growth_mib": round(usage.rssGrowth / 2**20, 1), "fd_growth": usage.fdGrowth,
                "respawn_ms": round(respawn * 1000)}
    finally:
        if orchestrator is not None:
            orchestrator.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--src", default=None)
    options = parser.parse_args()
    print(storm(options.signals, options.gap, options.src))


if __name__ == "__main__":
    main()
