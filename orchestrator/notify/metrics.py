"""
Prometheus metrics, computed from live state at scrape time.

A L{MetricsCollector} on a per-instance L{CollectorRegistry} reads the
processes when C{/metrics} is scraped, so nothing has to be kept in step
with the state machine.  Only what cannot be recomputed (the health check
duration histogram) is accumulated, from the probe results.  The seed's
four C{backend_*} gauges describe the default process unchanged; turn them
off with C{metrics.seed_names: false}.
"""

from __future__ import annotations

import bisect
import platform
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web.resource import Resource

from orchestrator import __version__
from orchestrator.health.stats import probeFamilies
from orchestrator.supervision.counters import RESTART_REASONS
from orchestrator.supervision.process import STATUSES

__all__ = ["MetricsCollector", "MetricsResource", "SEED_STATUS_CODES"]

#: The seed's numeric encoding of a status in C{backend_status}.
SEED_STATUS_CODES = {
    "stopped": 0, "running": 1, "unhealthy": 2, "crashed": 3, "starting": 4, "stopping": 5,
    "unknown": 4,
}


class _Histogram:
    def __init__(self, buckets) -> None:
        # Duplicate bounds would expose the same C{le} twice (invalid).
        self.bounds = sorted({float(b) for b in buckets})
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self):
        cumulative = 0
        out = []
        for bound, count in zip(self.bounds + [float("inf")], self.counts):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        return out


class MetricsCollector(Collector):
    """
    Every orchestrator metric, on its own registry (C{self.registry}).
    """

    _log = Logger()

    def __init__(self, orchestrator) -> None:
        self._orchestrator = orchestrator
        self._durations: dict[str, _Histogram] = {}
        self._checks: dict[tuple[str, str], int] = defaultdict(int)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        orchestrator.supervisor.probeObservers.append(self.observeProbe)

    def describe(self):
        return []  # no collect() at registration time

    def observeProbe(self, name: str, result) -> None:
        histogram = self._durations.get(name)
        if histogram is None:
            histogram = self._durations[name] = _Histogram(
                self._orchestrator.config.metrics.health_buckets)
        histogram.observe(result.latency)
        self._checks[(name, "success" if result.healthy else "failure")] += 1

    def collect(self):
        # Families are merged by name: two notifiers of one kind (two
        # webhooks) each yield the same family, and a second HELP/TYPE
        # block for a name makes the whole exposition invalid.
        merged: dict[str, Any] = {}
        seen: set = set()
        for family in self._families():
            first = merged.get(family.name)
            if first is None:
                merged[family.name] = first = family
                samples, family.samples = family.samples, []
            elif first.type != family.type:
                self._log.warn("metric family {name} yielded twice with different types "
                               "({a}, {b}); the second is dropped",
                               name=family.name, a=first.type, b=family.type)
                continue
            else:
                samples = family.samples
            for sample in samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in seen:
                    seen.add(key)
                    first.samples.append(sample)
        return list(merged.values())

    def _families(self):
        orch = self._orchestrator
        config = orch.config
        snapshots = {name: p.snapshot() for name, p in orch.processes.items()}

        if config.metrics.seed_names:
            yield from self._seed(snapshots.get(config.admin.default_process))

        state = GaugeMetricFamily(
            "orchestrator_process_state", "1 for the current status of each process.",
            labels=["process", "state"])
        up = GaugeMetricFamily("orchestrator_process_up", "1 if the process is running or unhealthy (alive and ready).",
                               labels=["process"])
        uptime = GaugeMetricFamily("orchestrator_process_uptime_seconds",
                                   "Seconds since the current child was spawned.", labels=["process"])
        started = GaugeMetricFamily("orchestrator_process_start_time_seconds",
                                    "Unix time the current child was spawned.", labels=["process"])
        restarts = CounterMetricFamily("orchestrator_process_restarts",
                                       "Restarts by reason (crash, unhealthy, start_timeout, spawn_failed, manual, memory).",
                                       labels=["process", "reason"])
        exits = CounterMetricFamily("orchestrator_process_exits",
                                    "Child exits seen, by whether they were clean.",
                                    labels=["process", "clean"])
        gaveUp = GaugeMetricFamily("orchestrator_process_gave_up",
                                   "1 if automatic restarts were given up.", labels=["process"])
        attempts = GaugeMetricFamily("orchestrator_process_restart_attempts",
                                     "Automatic restart attempts in the current window.",
                                     labels=["process"])
        lastCheck = GaugeMetricFamily("orchestrator_health_check_healthy",
                                      "1 if the last health check passed, 0 if it failed (absent: none yet).",
                                      labels=["process"])
        rate = GaugeMetricFamily("orchestrator_health_check_success_ratio",
                                 "Share of passed checks over the last health.history checks.",
                                 labels=["process"])
        memory = GaugeMetricFamily(
            "orchestrator_process_memory_bytes",
            "Resident memory of the process's whole process group, read from /proc at scrape time "
            "(0 when no child runs).", labels=["process"])
        for name, snap in snapshots.items():
            reader = getattr(orch.processes[name], "memoryBytes", None)
            if reader is not None:
                memory.add_metric([name], float(reader() or 0))
            for status in STATUSES + (("unknown",) if not snap.managed else ()):
                state.add_metric([name, status], 1.0 if snap.status == status else 0.0)
            up.add_metric([name], 1.0 if snap.status in ("running", "unhealthy") else 0.0)
            uptime.add_metric([name], snap.uptime)
            if snap.started_at is not None:
                started.add_metric([name], snap.started_at)
            process = orch.processes[name]
            for reason in RESTART_REASONS:
                restarts.add_metric([name, reason], process.restartsByReason.get(reason, 0))
            exits.add_metric([name, "true"], process.exitCounts[True])
            exits.add_metric([name, "false"], process.exitCounts[False])
            gaveUp.add_metric([name], 1.0 if snap.gave_up else 0.0)
            attempts.add_metric([name], snap.attempts)
            if snap.health is not None:
                if snap.health.last is not None:
                    lastCheck.add_metric([name], 1.0 if snap.health.last.healthy else 0.0)
                rate.add_metric([name], snap.health.window_success_rate)
        yield from (state, up, uptime, started, restarts, exits, gaveUp, attempts, lastCheck, rate, memory)

        checks = CounterMetricFamily("orchestrator_health_checks", "Health checks by result.",
                                     labels=["process", "result"])
        for (name, result), count in sorted(self._checks.items()):
            checks.add_metric([name, result], count)
        yield checks
        durations = HistogramMetricFamily("orchestrator_health_check_duration_seconds",
                                          "Health check latency.", labels=["process"])
        for name, histogram in sorted(self._durations.items()):
            durations.add_metric([name], histogram.buckets(), histogram.sum)
        yield durations

        yield from probeFamilies(orch.supervisor)
        yield from _outputFamilies(orch.processes)

        events = CounterMetricFamily("orchestrator_events_emitted",
                                     "Events emitted since start.", labels=[])
        events.add_metric([], orch.events.emitted)
        yield events
        info = InfoMetricFamily("orchestrator_build", "Orchestrator version.")
        info.add_metric([], {"version": __version__, "python": platform.python_version(),
                             "mode": "managing" if config.enabled else "monitor-only"})
        yield info
        if orch.startedAt is not None:
            startTime = GaugeMetricFamily("orchestrator_start_time_seconds",
                                          "Unix time the orchestrator started.")
            startTime.add_metric([], orch.startedAt)
            yield startTime
        hookFailures = CounterMetricFamily(
            "orchestrator_plugin_hook_failures",
            "Life-cycle hook calls (startup, shutdown) that raised or failed, by plugin.",
            labels=["plugin", "hook"])
        for (plugin, hook), count in sorted(orch.pluginFailures.items()):
            hookFailures.add_metric([plugin, hook], count)
        yield hookFailures
        # Notifier families, summed with what replaced or removed notifiers
        # counted, so they stay monotonic across reloads.
        yield from orch.notifiers.collect()

    def _seed(self, snap):
        status = GaugeMetricFamily(
            "backend_status",
            "Backend status (0=stopped, 1=running, 2=unhealthy, 3=crashed, 4=starting, 5=stopping).")
        uptime = GaugeMetricFamily("backend_uptime_seconds", "Backend uptime in seconds.")
        restarts = GaugeMetricFamily("backend_restart_count", "Number of backend restarts.")
        rate = GaugeMetricFamily("backend_health_check_success_rate",
                                 "Health check success rate (0-1) since the orchestrator started.")
        if snap is not None:
            status.add_metric([], SEED_STATUS_CODES.get(snap.status, 0))
            uptime.add_metric([], snap.uptime)
            restarts.add_metric([], snap.restart_count)
            rate.add_metric([], snap.health.success_rate if snap.health is not None else 1.0)
        yield from (status, uptime, restarts, rate)


class MetricsResource(Resource):
    """
    Serve a registry synchronously on the reactor thread (prometheus_client's
    own Twisted resource renders in a thread pool of the global reactor).
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            # An error is JSON like every other admin API answer, never
            # twisted.web's HTML page.
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"application/json")
            return b'{"success": false, "error": "Method not allowed: use GET"}\n'
        return super().render(request)

    def render_HEAD(self, request):
        self.render_GET(request)
        return b""

    def render_GET(self, request):
        accept = request.getHeader(b"accept")
        encoder, contentType = choose_encoder(accept.decode("latin-1") if accept else "")
        output = encoder(self._registry)
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return output


def _outputFamilies(processes):
    """
    What the bounds on children's output did, per process name (read from
    its L{orchestrator.supervision.counters.ProcessCounters}, so monotonic
    across reloads).
    """
    hits = CounterMetricFamily(
        "orchestrator_output_limit_hits",
        "Output lines that hit a bound (limit: max_line_bytes = a line cut there, "
        "echo_rate = a line not echoed into the orchestrator's log).",
        labels=["process", "limit"])
    dropped = CounterMetricFamily(
        "orchestrator_output_dropped_bytes",
        "Output bytes dropped from earlier runs whose pipes were closed (3 runs read per process).",
        labels=["process"])
    for name, process in sorted(processes.items()):
        counters = process.counters
        for limit in ("max_line_bytes", "echo_rate"):
            hits.add_metric([name, limit], counters.outputLimitHits.get(limit, 0))
        dropped.add_metric([name], counters.outputDroppedBytes)
    yield hits
    yield dropped
