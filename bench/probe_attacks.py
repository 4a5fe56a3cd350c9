#!/usr/bin/env python3
"""
The orchestrator under the probe attacks of C{tests/hostile/test_probe_attacks.py},
measured rather than asserted: for each attack (endless header lines, a body
dripped a byte at a time, a 1 GiB body), its RSS and descriptor growth
over the attack, the most connections the hostile server saw open at
once, the victim's last probe reason, and the respawn latency of a
SIGKILLed neighbour during the attack.

C{--pythonpath DIR} runs twistd on another checkout of the code (for a
before/after comparison: C{git archive <commit> | tar -x -C DIR}).

Usage: .venv/bin/python bench/probe_attacks.py [--seconds 3] [--pythonpath DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import harness  # noqa: E402
from tests.hostile import _watch  # noqa: E402
from tests.hostile._servers import ATTACKS, HostileServer  # noqa: E402
from tests.hostile.test_probe_attacks import CONFIG  # noqa: E402


def attack(name: str, seconds: float, pythonpath: str | None) -> dict:
    directory = tempfile.mkdtemp(prefix=f"orch-bench-{name}-")
    # At most 64 MiB per connection: the unbounded "before" client buffers it all.
    server = HostileServer(name, maxBytes=64 * 2**20)
    handle = None
    try:
        env = {"PYTHONPATH": pythonpath} if pythonpath else {}
        handle = harness.startOrchestrator(directory, CONFIG.replace("HOSTILE_PORT", str(server.port)),
                                           env=env)
        handle.waitHealthy()
        harness.waitFor(lambda: handle.status("victim")["health"]["total"] >= 1, 20,
                        what="the victim's first recorded probe")
        opened: list[int] = []
        usage = _watch.sample(handle.process.pid, seconds, during=lambda: opened.append(server.open))
        respawn = _watch.respawnSeconds(handle)
        last = (handle.status("victim")["health"] or {}).get("last") or {}
        return {"attack": name, "rss_start_mb": usage.rss[0] / 2**20,
                "rss_growth_mb": usage.rssGrowth / 2**20, "fds_start": usage.fds[0],
                "fd_growth": usage.fdGrowth, "server_open_max": max(opened),
                "accepted": server.accepted, "respawn_ms": respawn * 1000,
                "reason": last.get("reason")}
    finally:
        server.stop()
        if handle is not None:
            handle.kill()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pythonpath", default=None)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    args = parser.parse_args(argv)
    print("| attack | RSS at start | RSS growth | fds at start | fd growth | "
          "connections open at the server (max) | connections accepted | "
          "respawn during attack | victim's last reason |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.attacks.split(","):
        r = attack(name, args.seconds, args.pythonpath)
        print(f"| {name} | {r['rss_start_mb']:.0f} MB | {r['rss_growth_mb']:+.1f} MB | {r['fds_start']} | "
              f"{r['fd_growth']:+d} | {r['server_open_max']} | {r['accepted']} | "
              f"{r['respawn_ms']:.0f} ms | {r['reason']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
