"""
Hostile: a child writing stdout as fast as it can, with C{log.echo} on (the
default).  The orchestrator's memory, descriptors and own log stay bounded,
and a crashed sibling is still respawned at once while the flood goes on.
"""

from __future__ import annotations

import json
import os
import statistics

import pytest

from tests.harness import getJSON, http, waitFor
from tests.hostile._watch import assertRespawns, sample

pytestmark = pytest.mark.integration

#: 100-byte lines, 64 KiB per write, for ever; each write ends with a line
#: of 2500 bytes, cut twice at the flooder's max_line_bytes.
FLOODER = ("import sys\n"
           "chunk = (b'x' * 99 + b'\\n') * 640 + b'x' * 2499 + b'\\n'\n"
           "write = sys.stdout.buffer.write\n"
           "while True:\n"
           "    write(chunk)\n")

CONFIG = """
admin: {{listen: "tcp:{{admin_port}}:interface=127.0.0.1"}}
processes:
  flooder:
    command: ["{{python}}", "-c", {flooder}]
    health: {{probe: none}}
    log: {{echo: true, echo_rate: 100, max_line_bytes: 1024}}
  sibling:
    command: ["/bin/sleep", "100000"]
    health: {{probe: none}}
    start: {{ready_after: 0.1}}
    restart: {{policy: always, interval: 0, max_attempts: 100}}
"""

#: Bounds during the flood (from the first sample): the orchestrator's RSS,
#: its descriptors, and its own log (100 echoed lines/s of ~150 bytes and
#: one "suppressed" line per second come to ~16 KB/s; unlimited it was
#: ~10 MB/s).
RSS_BOUND = 20 * 2**20
FD_BOUND = 4
LOG_BYTES_PER_SECOND_BOUND = 100_000


def test_outputFloodIsBoundedAndSupervisionKeepsUp(run_orchestrator):
    """During a stdout flood the orchestrator's RSS, fds and log growth stay bounded, suppressed lines are counted, and a crashed sibling is respawned within 1 s."""
    orchestrator = run_orchestrator(CONFIG.format(flooder=json.dumps(FLOODER)))
    waitFor(lambda: orchestrator.status("flooder")["pid"] and orchestrator.status("sibling")["pid"],
            30, what="the flooder and its sibling to run")
    waitFor(lambda: "lines suppressed" in orchestrator.log(), 15, what="the first suppressed notice")
    pid = orchestrator.process.pid
    sizeBefore = os.path.getsize(orchestrator.logPath)
    usage = sample(pid, seconds=4)
    logRate = (os.path.getsize(orchestrator.logPath) - sizeBefore) / 4
    latencies = assertRespawns(orchestrator, "sibling")

    usage.assertBounded(rssBytes=RSS_BOUND, fds=FD_BOUND)
    assert logRate < LOG_BYTES_PER_SECOND_BOUND, f"own log grew {logRate / 1e6:.2f} MB/s"
    # The flood is still read (kept in memory for the logs route), only not echoed.
    status, body = getJSON(f"{orchestrator.url}/api/v1/processes/flooder/logs")
    assert status == 200
    assert body["count"] and all(set(line["text"]) == {"x"} for line in body["lines"])
    assert orchestrator.status("flooder")["status"] == "running"
    # Both bounds are counted where a scraper sees them.
    _, _, metrics = http("GET", f"{orchestrator.url}/metrics")
    counted = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in metrics.decode().splitlines()
               if line.startswith("orchestrator_output_limit_hits_total{")}
    assert counted['limit="echo_rate",process="flooder"'] > 1000, counted
    assert counted['limit="max_line_bytes",process="flooder"'] >= 2, counted
    print(f"RSS growth {usage.rssGrowth / 2**20:.1f} MiB, fd growth {usage.fdGrowth}, "
          f"log {logRate / 1e3:.1f} kB/s, respawn median {statistics.median(latencies) * 1e3:.0f} ms")
