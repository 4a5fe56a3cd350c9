"""
What the probes' bounds did, as Prometheus metric families: how often a
response hit a bound (per process and bound) and how often the cap on
probes in flight made a probe wait.  Read at scrape time from the
supervisor's L{orchestrator.health.monitor.ProbeGate} and each process's
L{orchestrator.health.monitor.HealthMonitor}.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["probeFamilies"]


def probeFamilies(supervisor):
    """
    Yield C{orchestrator_probe_limit_hits_total{process,limit}},
    C{orchestrator_probes_deferred_total} and C{orchestrator_probes_in_flight}.
    """
    hits = CounterMetricFamily(
        "orchestrator_probe_limit_hits",
        "Probe answers that hit a bound (limit: header_bytes, headers, body_bytes).",
        labels=["process", "limit"])
    for name, process in sorted(supervisor.processes.items()):
        monitor = getattr(process, "health", None)
        for limit, count in sorted(getattr(monitor, "limitHits", {}).items()):
            hits.add_metric([name, limit], count)
    yield hits
    gate = supervisor.probeGate
    deferred = CounterMetricFamily(
        "orchestrator_probes_deferred",
        "Probes that waited for a slot (orchestrator.max_concurrent_probes).", labels=[])
    deferred.add_metric([], gate.deferred)
    yield deferred
    inFlight = GaugeMetricFamily("orchestrator_probes_in_flight",
                                 "Probes in flight now; waiting ones in the wait label.",
                                 labels=["state"])
    inFlight.add_metric(["running"], gate.inFlight)
    inFlight.add_metric(["waiting"], gate.waiting)
    yield inFlight
