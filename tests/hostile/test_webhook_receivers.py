"""
Hostile webhook receivers against a real C{twistd -n orchestrator}: a
receiver on 127.0.0.1 answering 200 with an endless body, one sending
endless header lines, and one dripping its body a byte at a time, while
the supervised backend is crashed again and again.

The orchestrator reads at most C{max_response_bytes} of an answer and
aborts an attempt's connection at its C{timeout}: its RSS and descriptor
count stay flat, and a crashed backend is still respawned at once.
"""

from __future__ import annotations

import statistics
import time

import pytest

from tests import harness
from tests.hostile import _receivers
from tests.hostile._watch import RESPAWN_BOUND, Usage, respawnSeconds

pytestmark = pytest.mark.integration

CONFIG = _receivers.backendWithNotifiers(
    '{type: webhook, url: "RECEIVER", timeout: TIMEOUT, max_retries: 0, max_response_bytes: 65536}')

#: What an attack may cost the orchestrator at most.
RSS_BOUND = 16 * 2**20
FD_BOUND = 4
CRASHES = 5


def _metric(orchestrator, name: str, **labels) -> float:
    status, _, body = harness.http("GET", f"{orchestrator.url}/metrics", timeout=10)
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rpartition(" ")[2])
    return total


def _running(orchestrator) -> None:
    harness.waitFor(lambda: orchestrator.status().get("status") == "running", 30,
                    interval=0.05, what="the backend to be running again")


# A flood gets a long timeout (an unbounded client would read for that
# long); a drip a short one (an unbounded client would leak one connection
# per timed-out attempt), and room for every such connection.
@pytest.mark.parametrize("attack, timeout, cut", [("flood", 5, "too_large"),
                                                  ("headerFlood", 5, "too_large"),
                                                  ("drip", 0.5, "timeout")])
def test_hostileReceiverCostsNeitherMemoryNorDescriptors(run_orchestrator, attack, timeout, cut):
    """A flooding, header-flooding or dripping receiver: RSS and fds stay flat, cuts are counted, crashes respawn within 1 s."""
    receiver = _receivers.Receiver(getattr(_receivers, attack), maxConnections=128)
    try:
        orchestrator = run_orchestrator(CONFIG.replace("RECEIVER", receiver.url)
                                        .replace("TIMEOUT", str(timeout)))
        orchestrator.waitHealthy(30)
        _running(orchestrator)
        # One crash first, so the baseline already holds what the first
        # deliveries and restarts allocate for good (imports, buffers).
        respawnSeconds(orchestrator)
        _running(orchestrator)
        time.sleep(1.5)
        usage = Usage(orchestrator.process.pid)
        usage.take()
        latencies = []
        for _ in range(CRASHES):
            latencies.append(respawnSeconds(orchestrator))
            usage.take()
            _running(orchestrator)
            usage.take()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            time.sleep(0.25)
            usage.take()
        assert len(receiver.requests) >= CRASHES, "the attack reached the orchestrator"
        assert _metric(orchestrator, "orchestrator_webhook_responses_cut_total", reason=cut) >= 1
        print(f"{attack}: {len(receiver.requests)} requests, RSS +{usage.rssGrowth / 2**20:.1f} MiB, "
              f"fds +{usage.fdGrowth}, respawn {[round(x, 3) for x in latencies]} s")
        usage.assertBounded(RSS_BOUND, FD_BOUND)
        # The median (one respawn may land on a busy moment of a shared
        # machine), and none twice the bound: as _watch.assertRespawns.
        assert statistics.median(latencies) < RESPAWN_BOUND, latencies
        assert max(latencies) < 2 * RESPAWN_BOUND, latencies
    finally:
        receiver.close()
