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

from tests.harness import DEMO_BACKEND, http, waitFor

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
{extra}"""

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


def _write(orchestrator, interval: float, worker: bool) -> None:
    text = _CONFIG.format(admin_port=orchestrator.adminPort, backend_port=orchestrator.backendPort,
                          python=sys.executable, demo=DEMO_BACKEND, interval=interval,
                          extra=_WORKER.format(python=sys.executable) if worker else "")
    with open(os.path.join(orchestrator.directory, "orchestrator.yaml"), "w") as f:
        f.write(text)


def _reloads(orchestrator) -> int:
    return orchestrator.log().count("configuration reloaded:")


def test_sighupReloadsKeepThePidAndEveryCounter(run_orchestrator):
    """SIGHUP reloads tuning health.interval and adding/removing a process keep the backend's pid and never lower a counter."""
    orchestrator = run_orchestrator(_CONFIG.format(
        admin_port="{admin_port}", backend_port="{backend_port}", python="{python}",
        demo="{demo}", interval=1, extra=""))
    first = orchestrator.waitHealthy()
    os.kill(first, signal.SIGKILL)  # one crash, so the restart counters are not all zero
    pid = waitFor(lambda: (p := orchestrator.backendPid()) and p != first and p, 30,
                  what="the backend to be restarted")
    waitFor(lambda: orchestrator.status()["status"] == "running", 30, what="running again")
    before = _scrape(orchestrator)
    restarts = [v for (n, labels), v in before.items()
                if n == "orchestrator_process_restarts_total" and ("process", "backend") in labels]
    assert sum(restarts) == before[("backend_restart_count", ())] == 1

    steps = [(2, True), (0.5, True), (3, False), (1, True), (1, False)]
    for i, (interval, worker) in enumerate(steps, start=1):
        _write(orchestrator, interval, worker)
        orchestrator.signal(signal.SIGHUP)
        try:
            waitFor(lambda: _reloads(orchestrator) >= i, 30, what=f"reload {i}")
        except AssertionError:
            lines = [line for line in orchestrator.log().splitlines() if "[backend]" not in line]
            raise AssertionError(f"reload {i} not applied:\n" + "\n".join(lines[-30:]))
        if worker:
            waitFor(lambda: orchestrator.status("worker").get("status") == "running", 30,
                    what="the worker to run")
        after = _scrape(orchestrator)
        for key, value in before.items():
            if key in after:
                assert after[key] >= value, f"reload {i}: {key} went from {value} to {after[key]}"
        backend = sum(v for (n, labels), v in after.items()
                      if n == "orchestrator_process_restarts_total" and ("process", "backend") in labels)
        assert backend == after[("backend_restart_count", ())]
        assert orchestrator.backendPid() == pid
        assert orchestrator.status()["pid"] == pid
        before = {**before, **after}
    log = orchestrator.log()
    assert "backend: updated in place (health.interval)" in log
    assert "worker: added" in log and "worker: removed" in log
    assert orchestrator.stop() == 0
