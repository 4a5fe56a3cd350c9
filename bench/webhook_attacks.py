#!/usr/bin/env python3
"""
Hostile webhook receivers against a real C{twistd -n orchestrator}: the
orchestrator's RSS and descriptor count during each attack, and how fast
a SIGKILLed backend is respawned meanwhile.

Attacks (receivers on 127.0.0.1, C{tests/hostile/_receivers.py}):
C{ok} (a well-behaved receiver, the baseline), C{flood} (200 announcing
1 GiB, sent as fast as it is read), C{headerFlood} (header lines without
end), C{drip} (200, then a byte every 0.2 s).  The webhook uses
C{timeout: 5} for floods (what an unbounded client would keep reading for)
and C{0.5} for the drip (one abandoned connection per attempt otherwise).

Usage: .venv/bin/python bench/webhook_attacks.py [--seconds 20] [--only flood,drip]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.hostile import _receivers  # noqa: E402
from tests.hostile._watch import Usage, respawnSeconds  # noqa: E402

CONFIG = _receivers.backendWithNotifiers('{type: webhook, url: "RECEIVER", timeout: TIMEOUT, max_retries: 0}')

ATTACKS = {"ok": 5, "flood": 5, "headerFlood": 5, "drip": 0.5}


def _cut(orchestrator) -> str:
    _, _, body = harness.http("GET", f"{orchestrator.url}/metrics", timeout=10)
    found = {}
    for line in body.decode().splitlines():
        if line.startswith("orchestrator_webhook_responses_cut_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            found[reason] = int(float(line.rpartition(" ")[2]))
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "-"


def run(attack: str, seconds: float) -> dict:
    directory = tempfile.mkdtemp(prefix="bench-webhook-")
    receiver = _receivers.Receiver(getattr(_receivers, attack), maxConnections=128)
    orchestrator = None
    try:
        orchestrator = harness.startOrchestrator(
            directory, CONFIG.replace("RECEIVER", receiver.url).replace("TIMEOUT", str(ATTACKS[attack])))
        orchestrator.waitHealthy(30)

        def running():
            harness.waitFor(lambda: orchestrator.status().get("status") == "running", 30, interval=0.05,
                            what="running")

        running()
        usage = Usage(orchestrator.process.pid)
        usage.take()
        latencies = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            latencies.append(respawnSeconds(orchestrator))
            usage.take()
            running()
            time.sleep(1)
            usage.take()
        return {"attack": attack, "requests": len(receiver.requests),
                "rss0": usage.rss[0] / 2**20, "rssMax": max(usage.rss) / 2**20,
                "fd0": usage.fds[0], "fdMax": max(usage.fds), "kills": len(latencies),
                "median": statistics.median(latencies) * 1000, "max": max(latencies) * 1000,
                "cut": _cut(orchestrator)}
    finally:
        if orchestrator is not None:
            orchestrator.stop()
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", default=",".join(ATTACKS))
    args = parser.parse_args()
    print("| attack | requests | RSS start → max (MiB) | fds start → max | kills | respawn median / max (ms) | cut |")
    print("|---|---|---|---|---|---|---|")
    for attack in args.only.split(","):
        r = run(attack, args.seconds)
        print(f"| {r['attack']} | {r['requests']} | {r['rss0']:.1f} → {r['rssMax']:.1f} | "
              f"{r['fd0']} → {r['fdMax']} | {r['kills']} | {r['median']:.0f} / {r['max']:.0f} | {r['cut']} |",
              flush=True)


if __name__ == "__main__":
    main()
