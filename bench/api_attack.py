#!/usr/bin/env python3
"""
The admin API under attack: the orchestrator's RSS, descriptors and
kernel send queues, and how fast a SIGKILLed backend comes back, while

 - C{streams}: N clients open C{GET /api/v1/events/stream} and never read,
   during a crash storm (a C{/bin/false} restarted at once, over and over, emits a
   steady stream of events);
 - C{flood}: N connections each drip one header byte a second (slowloris)
   past C{admin.max_connections}.

C{--src DIR} runs the orchestrator's code from another checkout (e.g. an
export of C{main}, for a before/after comparison: C{git archive main | tar
-x -C /tmp/before}); the configuration uses only keys both know, plus
C{--set admin.KEY=VALUE}.

Usage: python bench/api_attack.py [--attack streams|flood] [--clients 100]
       [--seconds 20] [--src DIR] [--set max_stream_clients=200]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import (DEMO, PYTHON, freePort, healthPid, log, metricSum, metricsSamples,  # noqa: E402
                     rssMB, startOrchestrator, stopAll, waitFor, writeResult)

from tests.hostile._api_attack import (BACKEND, CRASH_STORM, closeAll, drip, dripping, sendQueueBytes,  # noqa: E402
                                      silentStreams)

CONFIG = """\
admin:
  listen: "tcp:{admin_port}:interface=127.0.0.1"
{extra}
processes:
""" + BACKEND


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def respawn(backendPort: int, timeout: float = 10.0) -> float:
    """
    SIGKILL the backend; seconds until its /health reports a new pid.
    """
    old = waitFor(lambda: healthPid(backendPort), 20, what="backend")
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    waitFor(lambda: (healthPid(backendPort, 0.5) or old) != old, timeout, interval=0.005,
            what="respawn")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attack", choices=["streams", "flood"], default="streams")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--src", default=None, help="run the orchestrator code from this checkout")
    parser.add_argument("--set", action="append", default=[], help="admin.KEY=VALUE (repeatable)")
    parser.add_argument("--label", default=None)
    args = parser.parse_args()

    adminPort, backendPort = freePort(), freePort()
    extra = "\n".join(f"  {item.split('=', 1)[0]}: {item.split('=', 1)[1]}" for item in args.set)
    yaml = CONFIG + (CRASH_STORM if args.attack == "streams" else "")
    for key, value in {"admin_port": adminPort, "backend_port": backendPort, "python": PYTHON,
                       "demo": DEMO, "extra": extra}.items():
        yaml = yaml.replace("{" + key + "}", str(value))
    env = {"PYTHONPATH": os.path.abspath(args.src)} if args.src else None
    label = args.label or (args.src or "this checkout")
    with tempfile.TemporaryDirectory(prefix="api-attack-") as directory:
        try:
            process = startOrchestrator(directory, yaml, adminPort, env=env)
            pid = process.pid
            waitFor(lambda: healthPid(backendPort), 30, what="the backend")
            time.sleep(2)
            base = {"rss": rssMB(pid), "fds": fds(pid)}
            quiet = respawn(backendPort)
            log(f"{label}: before the attack RSS {base['rss']:.1f} MB, {base['fds']} fds, "
                f"respawn {quiet * 1000:.0f} ms")
            if args.attack == "streams":
                sockets = silentStreams(adminPort, args.clients)
            else:
                sockets = dripping(adminPort, args.clients)
            rss, fdCounts, queues, respawns = [], [], [], []
            started = time.monotonic()
            nextKill = started + 3
            while time.monotonic() - started < args.seconds:
                if args.attack == "flood":
                    drip(sockets)
                rss.append(rssMB(pid))
                fdCounts.append(fds(pid))
                queues.append(sendQueueBytes(adminPort))
                if time.monotonic() >= nextKill:
                    respawns.append(respawn(backendPort))
                    nextKill = time.monotonic() + 5
                time.sleep(1.0 if args.attack == "flood" else 0.5)
            samples = metricsSamples(adminPort)
            closeAll(sockets)
        finally:
            stopAll(graceful=5)
    result = {
        "label": label, "attack": args.attack, "clients": args.clients, "seconds": args.seconds,
        "set": args.set, "before": base, "quiet_respawn_s": quiet,
        "rss_max_mb": max(rss), "rss_end_mb": rss[-1], "fds_max": max(fdCounts), "fds_end": fdCounts[-1],
        "send_queue_max_mb": max(queues) / 2**20, "respawn_s": respawns,
        "events": metricSum(samples, "orchestrator_events_emitted_total"),
        "rejected": {k: v for k, v in samples.items() if k.startswith("orchestrator_admin_rejected_total")
                     and v},
    }
    writeResult(f"api_attack_{args.attack}", result)
    print(f"| {label} | {args.attack} x{args.clients} | {base['rss']:.1f} → {max(rss):.1f} "
          f"(end {rss[-1]:.1f}) | {base['fds']} → {max(fdCounts)} (end {fdCounts[-1]}) "
          f"| {max(queues) / 2**20:.1f} | {quiet * 1000:.0f} | "
          f"{', '.join(f'{r * 1000:.0f}' for r in respawns)} | {result['events']:.0f} | "
          f"{', '.join(f'{k.split(chr(34))[1]} {v:.0f}' for k, v in result['rejected'].items()) or '–'} |")


if __name__ == "__main__":
    main()
