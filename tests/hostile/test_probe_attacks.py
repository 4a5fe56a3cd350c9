"""
A probed backend turns hostile: its health endpoint floods header lines,
drips its body a byte at a time, or sends a huge body.  Against a real
twistd, the orchestrator's RSS and open descriptors must stay flat, the
probe must report the attack as a clear unhealthy reason where a bound is
crossed, and a crashed neighbour must still be respawned within 1 s.

Bounds asserted (generous for a loaded CI machine; before the fix the
header flood grew RSS by about 150 MB per second and the drip leaked one
descriptor per probe timeout):
  - RSS growth over the attack: at most 24 MiB;
  - descriptor growth: at most 4 (one kept-alive probe connection per
    target, plus a respawn's pipes in flight);
  - the hostile server sees at most 2 of our connections open at once.
"""

from __future__ import annotations

import sys
import time

import pytest

from tests import harness
from tests.hostile import _watch
from tests.hostile._servers import HostileServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CONFIG = """
    admin:
      listen: "tcp:{admin_port}:interface=127.0.0.1"
    processes:
      backend:
        command: ["{python}", "{demo}", "--port", "{backend_port}"]
        url: "http://127.0.0.1:{backend_port}"
        restart: {backoff: {initial: 0.05}}
        health: {interval: 1, start_interval: 0.1}
      victim:
        command: ["{python}", "-c", "import time; time.sleep(600)"]
        url: "http://127.0.0.1:HOSTILE_PORT"
        health: {interval: 0.2, timeout: 0.5, start_interval: 0.1, failure_threshold: 1,
                 restart_on_unhealthy: false}
"""

#: Seconds each attack is sampled for (bounded; the whole test takes a few more).
ATTACK_SECONDS = 3.0
RSS_BOUND = 24 * 2**20
FD_BOUND = 4


def _attack(run_orchestrator, attack: str):
    server = HostileServer(attack)
    try:
        orchestrator = run_orchestrator(CONFIG.replace("HOSTILE_PORT", str(server.port)))
        orchestrator.waitHealthy()
        harness.waitFor(lambda: orchestrator.status("victim")["health"]["total"] >= 1, 20,
                        what="the victim's first recorded probe")
        opened = []
        usage = _watch.sample(orchestrator.process.pid, ATTACK_SECONDS,
                              during=lambda: opened.append(server.open))
        respawn = _watch.respawnSeconds(orchestrator)
        victim = orchestrator.status("victim")
        return usage, respawn, victim, max(opened), server
    finally:
        server.stop()


def _assertHeld(usage, respawn, openConnections) -> None:
    usage.assertBounded(RSS_BOUND, FD_BOUND)
    assert respawn < 1.0, f"respawn took {respawn:.3f} s during the attack"
    assert openConnections <= 2, f"{openConnections} probe connections left open at the server"


def test_probe_header_flood(run_orchestrator):
    """Endless response header lines: each probe stops at 16 KiB, unhealthy with that reason; RSS flat."""
    usage, respawn, victim, opened, _ = _attack(run_orchestrator, "header_flood")
    _assertHeld(usage, respawn, opened)
    assert victim["health"]["last"]["reason"] == "response headers over 16 KiB", victim["health"]


def test_probe_dripping_body(run_orchestrator):
    """Headers then a body dripped a byte at a time: every timed-out probe aborts its connection; fds flat."""
    usage, respawn, victim, opened, server = _attack(run_orchestrator, "drip")
    _assertHeld(usage, respawn, opened)
    assert victim["health"]["last"]["reason"] == "timeout after 0.5s", victim["health"]
    assert server.accepted >= 3  # several probes timed out, each on a connection of its own


def test_probe_huge_body(run_orchestrator):
    """A 1 GiB body: only max_body_bytes are read, then the connection is closed; RSS flat."""
    started = time.monotonic()
    usage, respawn, victim, opened, server = _attack(run_orchestrator, "huge_body")
    _assertHeld(usage, respawn, opened)
    assert victim["health"]["last"]["reason"] == "HTTP 200", victim["health"]
    assert server.accepted >= 3
    assert time.monotonic() - started < 60
