"""
Hostile: a crash loop whose every child leaves a daemon behind (double
fork into a new session) that keeps the child's stdout and stderr open.
The orchestrator reads at most three runs of a process: older runs' pipes
are closed, so its descriptors stay bounded however long the loop runs.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.harness import children, http, waitFor
from tests.hostile._watch import Usage, fdCount, respawnSeconds

pytestmark = pytest.mark.integration

CONFIG = """
admin: {listen: "tcp:{admin_port}:interface=127.0.0.1"}
processes:
  leaky:
    command: ["/bin/sh", "-c", "setsid sleep 20 & echo started; sleep 0.2; exit 1"]
    health: {probe: none}
    start: {ready_after: 0.1}
    restart: {policy: always, interval: 0.1, max_attempts: 1000, reset_after: 1000}
  sibling:
    command: ["/bin/sleep", "600"]
    health: {probe: none}
    start: {ready_after: 0.1}
    restart: {policy: always, interval: 0, max_attempts: 1000}
"""


def test_pipesHeldByDaemonsOfACrashLoopAreBounded(run_orchestrator):
    """Twelve runs each leaving a daemon that holds its pipes: the orchestrator's fd count stays within the three runs it still reads, its RSS stays flat, and a crashed sibling is respawned within 1 s."""
    orchestrator = run_orchestrator(CONFIG)
    twistd = orchestrator.process.pid
    try:
        waitFor(lambda: orchestrator.status("leaky")["restart_count"] >= 3, 30, what="three restarts")
        baseline = fdCount(twistd)
        usage = Usage(twistd)
        usage.take()
        latency = respawnSeconds(orchestrator, "sibling")
        waitFor(lambda: orchestrator.status("leaky")["restart_count"] >= 12, 60, what="twelve restarts")
        usage.take()
        # Each open run holds 3 pipe ends (stdin, stdout, stderr): without the
        # bound, 9 more runs would hold 27 more descriptors.
        assert fdCount(twistd) - baseline <= 6, (baseline, fdCount(twistd))
        usage.assertBounded(rssBytes=16 * 2**20, fds=6)
        assert latency < 1.0, f"sibling respawn took {latency:.3f} s"
        assert "still open after 3 newer runs; closing its pipes" in orchestrator.log()
    finally:
        # Stop the loop first, so no new daemon appears while we end them.
        http("POST", f"{orchestrator.url}/api/v1/processes/leaky/stop")
        for pid, _, cmdline in children(twistd):
            if cmdline.startswith("sleep"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
