"""
Prometheus metrics, read from live state, rendered incrementally.

A L{MetricsCollector} on a per-instance L{CollectorRegistry} reads the
processes when C{/metrics} is scraped, so nothing has to be kept in step
with the state machine; but it does not format every sample at every
scrape.  Each process keeps its sample lines as text, re-rendered only
when what they show changed (the process's C{stateKey()}, its probe
count); a scrape checks the keys, re-renders the stale ones and
concatenates (L{MetricsResource} spreads a large one over reactor turns).
The from-scratch C{collect()} renders the same text through
prometheus_client and is what a test compares with.  Only what cannot be
recomputed (the health check counts and duration histogram) is
accumulated, from the probe results.  The seed's four C{backend_*} gauges
describe the default process unchanged; turn them off with
C{metrics.seed_names: false}.
"""

from __future__ import annotations

import bisect
from itertools import accumulate
import platform
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from prometheus_client.registry import Collector
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

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


#: The per-process families, in exposition order: (class, name, help, labels).
_CORE = (
    (GaugeMetricFamily, "orchestrator_process_state", "1 for the current status of each process.",
     ["process", "state"]),
    (GaugeMetricFamily, "orchestrator_process_up",
     "1 if the process is running or unhealthy (alive and ready).", ["process"]),
    (GaugeMetricFamily, "orchestrator_process_uptime_seconds",
     "Seconds since the current child was spawned.", ["process"]),
    (GaugeMetricFamily, "orchestrator_process_start_time_seconds",
     "Unix time the current child was spawned.", ["process"]),
    (CounterMetricFamily, "orchestrator_process_restarts",
     "Restarts by reason (crash, unhealthy, start_timeout, spawn_failed, manual, memory).",
     ["process", "reason"]),
    (CounterMetricFamily, "orchestrator_process_exits",
     "Child exits seen, by whether they were clean.", ["process", "clean"]),
    (GaugeMetricFamily, "orchestrator_process_gave_up",
     "1 if automatic restarts were given up.", ["process"]),
    (GaugeMetricFamily, "orchestrator_process_restart_attempts",
     "Automatic restart attempts in the current window.", ["process"]),
    (GaugeMetricFamily, "orchestrator_health_check_healthy",
     "1 if the last health check passed, 0 if it failed (absent: none yet).", ["process"]),
    (GaugeMetricFamily, "orchestrator_health_check_success_ratio",
     "Share of passed checks over the last health.history checks.", ["process"]),
    (GaugeMetricFamily, "orchestrator_process_memory_bytes",
     "Resident memory of the process's whole process group, read from /proc at scrape time "
     "(0 when no child runs).", ["process"]),
    (CounterMetricFamily, "orchestrator_health_checks", "Health checks by result.",
     ["process", "result"]),
    (HistogramMetricFamily, "orchestrator_health_check_duration_seconds",
     "Health check latency.", ["process"]),
)
_UPTIME, _MEMORY, _CHECKS, _DURATIONS = 2, 10, 11, 12
_CORE_NAMES = frozenset(spec[1] for spec in _CORE)
_SEED_NAMES = frozenset({"backend_status", "backend_uptime_seconds", "backend_restart_count",
                         "backend_health_check_success_rate"})

#: Processes whose cached lines are refreshed in one reactor turn; a
#: scrape with more stale ones is spread over several turns (see
#: L{MetricsResource}), so it never holds the reactor for long.
SLICE = 100

#: Processes whose memory is read from /proc in one step of a scrape.
_MEMORY_STEP = 50


def _family(spec):
    kind, name, documentation, labels = spec
    return kind(name, documentation, labels=labels)


def _labelValue(value: str) -> str:
    # What prometheus_client does to a label value in both formats.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class _Histogram:
    """
    One process's health check latencies and results, accumulated from
    the probe results (they cannot be recomputed).

    @ivar observed: how many results were observed (what tells a cached
        rendering it is old).
    """

    def __init__(self, buckets) -> None:
        # Duplicate bounds would expose the same C{le} twice (invalid).
        self.bounds = sorted({float(b) for b in buckets})
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.observed = self.successes = self.failures = 0

    def observe(self, value: float, healthy: bool) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.observed += 1
        if healthy:
            self.successes += 1
        else:
            self.failures += 1

    def labels(self) -> list[str]:
        """
        The C{le} label of each bucket.
        """
        return ["+Inf" if bound == float("inf") else repr(bound) for bound in self.bounds] + ["+Inf"]

    def buckets(self):
        cumulative = 0
        out = []
        for le, count in zip(self.labels(), self.counts):
            cumulative += count
            out.append((le, cumulative))
        return out


def _merge(families, log) -> list:
    """
    Families merged by name: two notifiers of one kind (two webhooks) each
    yield the same family, and a second HELP/TYPE block for a name makes
    the whole exposition invalid.
    """
    merged: dict[str, Any] = {}
    seen: set = set()
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = first = family
            samples, family.samples = family.samples, []
        elif first.type != family.type:
            log.warn("metric family {name} yielded twice with different types "
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


class _Families:
    """
    A few families, as the collector an encoder wants.
    """

    def __init__(self, families) -> None:
        self._families = families

    def collect(self):
        return self._families


def _encode(encoder, families, openMetrics: bool) -> bytes:
    """
    C{families} in the encoder's format, without the OpenMetrics C{# EOF}
    (these are not the end of the exposition).
    """
    if not families:
        return b""
    text = encoder(_Families(families))
    return text[:-len(b"# EOF\n")] if openMetrics else text


class _ProcessLines:
    """
    One process's sample lines in the per-process families but uptime:
    those about its status re-rendered when its C{stateKey()} changed, those
    about its health when its monitor saw a probe result; and its uptime
    line's prefix (the value is read at each scrape).
    """

    __slots__ = ("process", "label", "state", "probes", "text", "uptimePrefix", "_output")

    def __init__(self, process, label: str) -> None:
        self.process = process
        self.label = label
        self.state = self.probes = None
        self.text = [""] * (_UPTIME + 8)
        self.uptimePrefix = f'orchestrator_process_uptime_seconds{{process="{label}"}} '
        self._output = (
            f'orchestrator_output_limit_hits_total{{limit="max_line_bytes",process="{label}"}} ',
            f'orchestrator_output_limit_hits_total{{limit="echo_rate",process="{label}"}} ',
            f'orchestrator_output_dropped_bytes_total{{process="{label}"}} ')

    def outputHits(self) -> str:
        hits = self.process.counters.outputLimitHits
        cut, unechoed, _ = self._output
        return (f"{cut}{_count(hits.get('max_line_bytes', 0))}\n"
                f"{unechoed}{_count(hits.get('echo_rate', 0))}\n")

    def memory(self) -> str:
        """
        The C{orchestrator_process_memory_bytes} line, read now (none for a
        process that cannot tell, as from scratch).
        """
        reader = getattr(self.process, "memoryBytes", None)
        if reader is None:
            return ""
        return f'orchestrator_process_memory_bytes{{process="{self.label}"}} {floatToGoString(float(reader() or 0))}\n'

    def outputDropped(self) -> str:
        return f"{self._output[2]}{_count(self.process.counters.outputDroppedBytes)}\n"

    def _probes(self):
        return self.process.healthKey()

    def stale(self) -> bool:
        return self.process.stateKey() != self.state or self._probes() != self.probes

    def render(self) -> None:
        state = self.process.stateKey()
        if state != self.state:
            self._renderStatus(state)
        probes = self._probes()
        if probes != self.probes:
            self.probes = probes
            self._renderHealth()

    def _renderStatus(self, state) -> None:
        process, p, text = self.process, self.label, self.text
        self.state = state
        snap = process.snapshot()
        status = snap.status
        text[0] = "".join(
            f'orchestrator_process_state{{process="{p}",state="{state}"}} '
            f'{"1.0" if status == state else "0.0"}\n'
            for state in STATUSES + (("unknown",) if not snap.managed else ()))
        up = "1.0" if status in ("running", "unhealthy") else "0.0"
        text[1] = f'orchestrator_process_up{{process="{p}"}} {up}\n'
        text[3] = "" if snap.started_at is None else (
            f'orchestrator_process_start_time_seconds{{process="{p}"}} '
            f"{floatToGoString(snap.started_at)}\n")
        text[4] = "".join(
            f'orchestrator_process_restarts_total{{process="{p}",reason="{reason}"}} '
            f"{_count(process.restartsByReason.get(reason, 0))}\n" for reason in RESTART_REASONS)
        text[5] = (f'orchestrator_process_exits_total{{clean="true",process="{p}"}} '
                   f"{_count(process.exitCounts[True])}\n"
                   f'orchestrator_process_exits_total{{clean="false",process="{p}"}} '
                   f"{_count(process.exitCounts[False])}\n")
        text[6] = f'orchestrator_process_gave_up{{process="{p}"}} {"1.0" if snap.gave_up else "0.0"}\n'
        text[7] = f'orchestrator_process_restart_attempts{{process="{p}"}} {_count(snap.attempts)}\n'
        # Whether there is a monitor can change with the status (the first
        # spawn builds it): the health lines follow.
        self._renderHealth()

    def _renderHealth(self) -> None:
        monitor, p, text = self.process.health, self.label, self.text
        text[8] = text[9] = ""
        if monitor is None:
            return
        # (What HealthSnapshot says, without copying the history for it.)
        results = monitor.results
        if results:
            text[8] = (f'orchestrator_health_check_healthy{{process="{p}"}} '
                       f'{"1.0" if results[-1].healthy else "0.0"}\n')
            ratio = sum(1 for r in results if r.healthy) / len(results)
        else:
            ratio = 1.0
        text[9] = f'orchestrator_health_check_success_ratio{{process="{p}"}} {floatToGoString(ratio)}\n'



def _count(n: int) -> str:
    """
    C{floatToGoString(n)} for a count, without its float round trip below
    the million (where it switches to an exponent).
    """
    return f"{n}.0" if 0 <= n < 1_000_000 else floatToGoString(n)


class _HealthLines:
    """
    One name's lines in the health check counter and histogram, rendered
    when a probe was observed since (C{observed}) into a template made
    once (a probed process's lines are stale at nearly every scrape).
    """

    __slots__ = ("name", "histogram", "observed", "checks", "durations", "_template", "_checks")

    def __init__(self, name: str, label: str, histogram: "_Histogram") -> None:
        self.name = name
        self.histogram = histogram
        self.observed = -1
        self.checks = self.durations = ""
        base = "orchestrator_health_check_duration_seconds"
        label = label.replace("{", "{{").replace("}", "}}")
        self._template = "".join(
            [f'{base}_bucket{{{{le="{le}",process="{label}"}}}} {{}}\n' for le in histogram.labels()]
            + [f'{base}_count{{{{process="{label}"}}}} {{}}\n{base}_sum{{{{process="{label}"}}}} {{}}\n'])
        self._checks = tuple(f'orchestrator_health_checks_total{{{{process="{label}",result="{result}"}}}} {{}}\n'
                             for result in ("failure", "success"))

    def render(self) -> None:
        histogram = self.histogram
        self.observed = histogram.observed
        cumulative = list(map(_count, accumulate(histogram.counts)))
        self.durations = self._template.format(*cumulative, cumulative[-1],
                                               floatToGoString(histogram.sum))
        failure, success = self._checks
        self.checks = ((failure.format(_count(histogram.failures)) if histogram.failures else "")
                       + (success.format(_count(histogram.successes)) if histogram.successes else ""))


class MetricsCollector(Collector):
    """
    Every orchestrator metric, on its own registry (C{self.registry}).
    """

    _log = Logger()

    def __init__(self, orchestrator) -> None:
        self._orchestrator = orchestrator
        self._durations: dict[str, _Histogram] = {}
        self._lines: dict[str, _ProcessLines] = {}
        self._health: dict[str, _HealthLines] = {}
        self._names: list[str] | None = None
        self._prepared: list | None = None
        #: What schedules a scrape's slices (see L{MetricsResource}).
        self.clock = getattr(orchestrator, "reactor", None)
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
        histogram.observe(result.latency, result.healthy)

    def collect(self):
        # Families are merged by name: two notifiers of one kind (two
        # webhooks) each yield the same family, and a second HELP/TYPE
        # block for a name makes the whole exposition invalid.
        if self._prepared is not None:
            return self._prepared  # see render
        return _merge(self._families(), self._log)

    # -- the incremental exposition ------------------------------------------------

    def stale(self) -> list:
        """
        What a scrape must re-render first: the processes whose status or
        health changed since their lines were last rendered, and the names
        whose health histogram saw a probe since.  Cheap (a key comparison
        per process); the work is in L{refresh}.
        """
        work: list = []
        for name, process in self._orchestrator.processes.items():
            lines = self._lines.get(name)
            if lines is None or lines.process is not process:
                lines = self._lines[name] = _ProcessLines(process, _labelValue(name))
            if lines.stale():
                work.append(lines)
        for name, histogram in self._durations.items():
            lines = self._health.get(name)
            if lines is None:
                lines = self._health[name] = _HealthLines(name, _labelValue(name), histogram)
                self._names = None
            if lines.observed != histogram.observed:
                work.append(lines)
        return work

    def processes(self):
        """
        The processes the exposition covers.
        """
        return self._orchestrator.processes

    @staticmethod
    def refresh(lines) -> None:
        """
        Re-render one entry of L{stale}.
        """
        lines.render()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """
        The exposition in the format C{accept} asks for, from the cached
        lines (refresh what L{stale} lists first, or the values are old).
        Exactly what C{encoder(self.registry)} writes: the cached lines are
        the per-process samples, everything else (the seed's gauges, the
        build info, notifier families, other collectors on the registry)
        goes through prometheus_client's own encoder.

        @return: the body and its content type.
        """
        result: list = []
        for _ in self.renderSteps(accept, result):
            pass
        return result[0], result[1]

    def renderSteps(self, accept: str, result: list):
        """
        L{render} in pieces: an iterator that does a part of the work at
        each step (one family of every process, or the other families),
        then puts the body and content type in C{result}.
        """
        encoder, contentType = choose_encoder(accept)
        openMetrics = contentType.startswith("application/openmetrics-text")
        probes = _merge(probeFamilies(self._orchestrator.supervisor), self._log)
        outputs = list(_outputFamilies({}))
        tail = _merge(self._tailAfter(), self._log)
        if {family.name for family in tail} & (_CORE_NAMES | _SEED_NAMES | {
                family.name for family in probes + outputs}):
            # A notifier family named like one rendered here would be
            # merged into it: render from scratch, which does that.
            result[:] = [encoder(self.registry), contentType]
            return
        probes = _encode(encoder, probes, openMetrics)
        self._prepared = tail
        try:
            tail = encoder(self.registry)
        finally:
            self._prepared = None
        yield
        out = [_encode(encoder, list(_merge(self._head(), self._log)), openMetrics)]
        processes = self._orchestrator.processes
        if len(self._lines) > len(processes):
            self._lines = {name: lines for name, lines in self._lines.items() if name in processes}
        if self._names is None:
            self._names = sorted(self._health)
        blocks = [self._lines[name] for name in processes]
        health = [self._health[name] for name in self._names]
        for index, spec in enumerate(_CORE):
            text = [_encode(encoder, [_family(spec)], openMetrics).decode("utf-8")]
            if index == _UPTIME:
                text.extend(f"{lines.uptimePrefix}{floatToGoString(lines.process.uptime())}\n"
                            for lines in blocks)
            elif index == _MEMORY:
                # Read from /proc at each scrape, as from scratch: a few
                # processes per step, /proc reads are not free.
                for start in range(0, len(blocks), _MEMORY_STEP):
                    text.extend(lines.memory() for lines in blocks[start:start + _MEMORY_STEP])
                    if start + _MEMORY_STEP < len(blocks):
                        yield
            elif index == _CHECKS:
                text.extend(lines.checks for lines in health)
            elif index == _DURATIONS:
                text.extend(lines.durations for lines in health)
            else:
                text.extend(lines.text[index] for lines in blocks)
            out.append("".join(text).encode("utf-8"))
            yield
        out.append(probes)
        # The output bounds' families, per process name in name order, as
        # _outputFamilies yields them (its counters move without events:
        # formatted at each scrape, three lines a process).
        ordered = [self._lines[name] for name in sorted(processes)]
        hits, dropped = (_encode(encoder, [family], openMetrics).decode("utf-8") for family in outputs)
        out.append("".join([hits] + [lines.outputHits() for lines in ordered]).encode("utf-8"))
        yield
        out.append("".join([dropped] + [lines.outputDropped() for lines in ordered]).encode("utf-8"))
        out.append(tail)
        result[:] = [b"".join(out), contentType]

    def _families(self):
        yield from self._head()
        yield from self._core()
        yield from self._tail()

    def _head(self):
        config = self._orchestrator.config
        if config.metrics.seed_names:
            process = self._orchestrator.processes.get(config.admin.default_process)
            yield from self._seed(process.snapshot() if process is not None else None)

    def _core(self):
        """
        The per-process families, from scratch (what L{render} builds
        incrementally: the two must agree, and a test compares them).
        """
        orch = self._orchestrator
        snapshots = {name: p.snapshot() for name, p in orch.processes.items()}
        (state, up, uptime, started, restarts, exits, gaveUp, attempts, lastCheck, rate, memory,
         checks, durations) = (_family(spec) for spec in _CORE)
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
        for name, histogram in sorted(self._durations.items()):
            for result, count in (("failure", histogram.failures), ("success", histogram.successes)):
                if count:
                    checks.add_metric([name, result], count)
            durations.add_metric([name], histogram.buckets(), histogram.sum)
        return (state, up, uptime, started, restarts, exits, gaveUp, attempts, lastCheck, rate, memory,
                checks, durations)

    def _tail(self):
        yield from probeFamilies(self._orchestrator.supervisor)
        yield from _outputFamilies(self._orchestrator.processes)
        yield from self._tailAfter()

    def _tailAfter(self):
        orch = self._orchestrator
        config = orch.config
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
    Serve the metrics synchronously on the reactor thread (prometheus_client's
    own Twisted resource renders in a thread pool of the global reactor).

    Given a L{MetricsCollector}, a scrape re-renders only the processes
    that changed since the last one and concatenates cached lines; when
    more than L{SLICE} changed (a thousand probed processes between two
    scrapes) that work is spread over reactor turns with a
    L{twisted.internet.task.Cooperator}, so probes, respawns and the API
    never wait behind a scrape for more than a slice.

    @param source: a L{MetricsCollector}, or any C{CollectorRegistry}
        (rendered from scratch).
    @param clock: schedules the slices (default: the orchestrator's reactor).
    """

    isLeaf = True

    def __init__(self, source, clock=None) -> None:
        super().__init__()
        self._collector = source if isinstance(source, MetricsCollector) else None
        self._registry = source.registry if self._collector is not None else source
        clock = clock if clock is not None else getattr(self._collector, "clock", None)
        self._cooperator = None
        if clock is not None:
            self._cooperator = Cooperator(terminationPredicateFactory=self._newBudget,
                                          scheduler=lambda work: clock.callLater(0, work))
        self._budget = _Countdown(SLICE)

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
        return self.render_GET(request)

    def render_GET(self, request):
        accept = request.getHeader(b"accept")
        accept = accept.decode("latin-1") if accept else ""
        collector = self._collector
        if collector is None:
            encoder, contentType = choose_encoder(accept)
            return self._answer(request, encoder(self._registry), contentType)
        work = collector.stale()
        processes = len(collector.processes())
        if (len(work) <= SLICE and processes <= SLICE) or self._cooperator is None:
            for lines in work:
                collector.refresh(lines)
            return self._answer(request, *collector.render(accept))
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        result: list = []
        # A step of the rendering joins one family of every process: at
        # most a few of them per turn, the same budget as SLICE refreshes.
        weight = max(1, processes * SLICE // 2000)

        def steps():
            for lines in work:
                collector.refresh(lines)
                yield
            for _ in collector.renderSteps(accept, result):
                self._budget.spend(weight)
                yield

        def answer(_):
            if not gone:
                request.write(self._answer(request, *result))
                request.finish()

        d = self._cooperator.coiterate(steps())
        d.addCallback(answer)
        d.addErrback(lambda f: MetricsCollector._log.failure("/metrics: cannot answer", f))
        return NOT_DONE_YET

    def _newBudget(self) -> "_Countdown":
        self._budget = _Countdown(SLICE)
        return self._budget

    @staticmethod
    def _answer(request, body: bytes, contentType: str) -> bytes:
        request.setHeader(b"content-type", contentType.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


class _Countdown:
    """
    A L{Cooperator} termination predicate: true after C{n} steps (one step
    re-renders one process, tens of microseconds; a heavier one says so
    with L{spend}).
    """

    def __init__(self, n: int) -> None:
        self._left = n

    def spend(self, steps: int) -> None:
        """
        Count a step as C{steps} (it costs that much more than one).
        """
        self._left -= steps - 1

    def __call__(self) -> bool:
        self._left -= 1
        return self._left <= 0


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
