"""
Integration test of reload by SIGHUP: a real C{twistd -n orchestrator}, the
demo backend, a real Prometheus-format scrape parsed with prometheus_client's
text parser before and after each reload.

What an operator must see: tuning C{health.interval} and adding or removing
a process never bounces the backend (same pid), and no counter ever goes
down (no counter reset in Prometheus, C{increase()} stays right).
"""

from __future__ import annotations

import os
import signal
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import DEMO_BACKEND, freePort, http, waitFor

pytestmark = pytest.mark.integration

_CONFIG = """
admin: {{listen: "tcp:{admin_port}:interface=127.0.0.1"}}
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend_port}"]
    url: "http://127.0.0.1:{backend_port}"
    stop: {{timeout: 5}}
    restart: {{policy: backoff, max_attempts: 5}}
    health: {{interval: {interval}}}
{extra}notifiers:
  - {{type: log}}
  - {{type: prometheus}}
{webhook}"""

#: A webhook whose receiver never answers: its retries are counted, and
#: once a reload removes it those counts must stay in /metrics.
_WEBHOOK = """\
  - {{type: webhook, url: "http://127.0.0.1:{port}/hook", timeout: 1, retry_initial: 0.2,
      retry_max: 0.5, close_timeout: 1}}
"""

_WORKER = """
  worker:
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    start: {{ready_after: 0.2}}
"""


def _scrape(orchestrator) -> dict[tuple, float]:
    """
    Every counter sample of C{/metrics}, parsed as Prometheus would:
    C{{(sample name, sorted labels): value}}; the seed's gauge too.
    """
    status, _, body = http("GET", f"{orchestrator.url}/metrics", timeout=10)
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if family.type == "counter" or sample.name == "backend_restart_count":
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _write(orchestrator, interval: float, worker: bool, webhook: int | None) -> None:
    text = _CONFIG.format(admin_port=orchestrator.adminPort, backend_port=orchestrator.backendPort,
                          python=sys.executable, demo=DEMO_BACKEND, interval=interval,
                          extra=_WORKER.format(python=sys.executable) if worker else "",
                          webhook=_WEBHOOK.format(port=webhook) if webhook else "")
    with open(os.path.join(orchestrator.directory, "orchestrator.yaml"), "w") as f:
        f.write(text)


def _reloads(orchestrator) -> int:
    return orchestrator.log().count("configuration reloaded:")


def test_sighupReloadsKeepThePidAndEveryCounter(run_orchestrator):
    """SIGHUP reloads tuning health.interval and adding/removing a process and a notifier keep the backend's pid and never lower a counter."""
    orchestrator = run_orchestrator(_CONFIG.format(
        admin_port="{admin_port}", backend_port="{backend_port}", python="{python}",
        demo="{demo}", interval=1, extra="", webhook=""))
    receiver = freePort()  # nothing listens there: the webhook retries
    first = orchestrator.waitHealthy()
    os.kill(first, signal.SIGKILL)  # one crash, so the restart counters are not all zero
    pid = waitFor(lambda: (p := orchestrator.backendPid()) and p != first and p, 30,
                  what="the backend to be restarted")
    waitFor(lambda: orchestrator.status()["status"] == "running", 30, what="running again")
    before = _scrape(orchestrator)
    restarts = [v for (n, labels), v in before.items()
                if n == "orchestrator_process_restarts_total" and ("process", "backend") in labels]
    assert sum(restarts) == before[("backend_restart_count", ())] == 1

    steps = [(2, True, True), (0.5, True, True), (3, False, False), (1, True, True), (1, False, False)]
    hadWebhook = False
    for i, (interval, worker, webhook) in enumerate(steps, start=1):
        closed = orchestrator.log().count("undelivered after")
        _write(orchestrator, interval, worker, receiver if webhook else None)
        orchestrator.signal(signal.SIGHUP)
        try:
            waitFor(lambda: _reloads(orchestrator) >= i, 30, what=f"reload {i}")
        except AssertionError:
            lines = [line for line in orchestrator.log().splitlines() if "[backend]" not in line]
            raise AssertionError(f"reload {i} not applied:\n" + "\n".join(lines[-30:]))
        if worker:
            waitFor(lambda: orchestrator.status("worker").get("status") == "running", 30,
                    what="the worker to run")
        if webhook:
            waitFor(lambda: any(n == "orchestrator_webhook_deliveries_total" and v > 0
                                for (n, _), v in _scrape(orchestrator).items()), 30,
                    what="the webhook to count its attempts")
        elif hadWebhook:
            # The removed webhook gives up on its queue after close_timeout;
            # from then on only what it counted, kept, reports its series.
            waitFor(lambda: orchestrator.log().count("undelivered after") > closed, 30,
                    what="the removed webhook to close")
        after = _scrape(orchestrator)
        for key, value in before.items():
            if ("process", "worker") in key[1] and key not in after:
                continue  # a removed process's series may go (stale, not a reset)
            assert key in after, f"reload {i}: the series {key} vanished"
            assert after[key] >= value, f"reload {i}: {key} went from {value} to {after[key]}"
        backend = sum(v for (n, labels), v in after.items()
                      if n == "orchestrator_process_restarts_total" and ("process", "backend") in labels)
        assert backend == after[("backend_restart_count", ())]
        assert orchestrator.backendPid() == pid
        assert orchestrator.status()["pid"] == pid
        before = {**before, **after}
        hadWebhook = webhook
    log = orchestrator.log()
    assert "backend: updated in place (health.interval)" in log
    assert "worker: added" in log and "worker: removed" in log
    assert "added notifiers[2]" in log and "removed notifiers[2]" in log
    assert any(n == "orchestrator_webhook_deliveries_total" for n, _ in before), before
    assert orchestrator.stop() == 0
