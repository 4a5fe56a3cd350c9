"""
Integration: notifiers across a real SIGHUP reload of C{twistd -n
orchestrator}.  A webhook receiver on 127.0.0.1 that is down while the
configuration is reloaded (the webhook replaced by a changed one) gets
every queued event once it comes back, and no counter goes down.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap

import pytest

from tests import harness
from tests.hostile import _receivers

pytestmark = pytest.mark.integration

CONFIG = _receivers.backendWithNotifiers(
    "{type: prometheus}",
    '{type: webhook, url: "RECEIVER", timeout: TIMEOUT, retry_initial: 0.2, retry_max: 0.5, '
    'max_retries: 10000, close_timeout: 10}')


def _counters(orchestrator) -> dict[str, float]:
    status, _, body = harness.http("GET", f"{orchestrator.url}/metrics", timeout=10)
    assert status == 200
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in body.decode().splitlines() if not line.startswith("#"))
            if name.split("{")[0].endswith("_total")}


def _render(template: str, orchestrator) -> str:
    """
    The template as L{harness.startOrchestrator} fills it in, for the
    orchestrator already running (same ports).
    """
    for key, value in {"admin_port": orchestrator.adminPort, "backend_port": orchestrator.backendPort,
                       "python": sys.executable, "demo": harness.DEMO_BACKEND}.items():
        template = template.replace("{" + key + "}", str(value))
    return textwrap.dedent(template)


def _eventIds(orchestrator) -> list[str]:
    status, body = harness.getJSON(f"{orchestrator.url}/api/v1/events?limit=500")
    assert status == 200
    return [e["id"] for e in body["events"]]


def test_receiverDownDuringReloadGetsEveryQueuedEvent(run_orchestrator):
    """Receiver down, crash, SIGHUP replacing the webhook: once the receiver is up, every event arrives, counters never went down."""
    port = harness.freePort()
    url = f"http://127.0.0.1:{port}/hook"
    orchestrator = run_orchestrator(CONFIG.replace("RECEIVER", url).replace("TIMEOUT", "1"))
    orchestrator.waitHealthy(30)
    harness.waitFor(lambda: orchestrator.status()["status"] == "running", 30, what="running")
    os.kill(orchestrator.status()["pid"], signal.SIGKILL)
    harness.waitFor(lambda: orchestrator.status()["status"] == "running"
                    and orchestrator.status()["restart_count"] >= 1, 30, what="the restart")
    before = _counters(orchestrator)
    assert before['orchestrator_webhook_deliveries_total{host="127.0.0.1:%d",notifier="notifiers[1]",'
                  'outcome="retried"}' % port] > 0, "the receiver is down: attempts are retried"

    with open(os.path.join(orchestrator.directory, "orchestrator.yaml"), "w") as f:
        f.write(_render(CONFIG.replace("RECEIVER", url).replace("TIMEOUT", "2"), orchestrator))
    orchestrator.signal(signal.SIGHUP)
    harness.waitFor(lambda: "notifiers reloaded: kept notifiers[0], replaced notifiers[1]"
                    in orchestrator.log(), 30, what="the reload")
    receiver = _receivers.Receiver(_receivers.ok, port=port)
    try:
        expected = set(_eventIds(orchestrator))
        assert {"crashed", "config_reloaded"} <= {
            e["type"] for e in harness.getJSON(f"{orchestrator.url}/api/v1/events?limit=500")[1]["events"]}
        harness.waitFor(lambda: expected <= set(receiver.webhookIds()), 30,
                        what="every queued event to reach the receiver")
        ids = receiver.webhookIds()
        assert len(ids) - len(set(ids)) <= 1, "at most the one in flight at the reload twice"
        after = _counters(orchestrator)
        for name, value in before.items():
            assert after.get(name, -1) >= value, f"{name} went down: {value} -> {after.get(name)}"
    finally:
        receiver.close()
