"""
Tests for L{orchestrator.notify.metrics}: the seed's four gauges and the
per-process families, computed at scrape time, served in memory by
L{MetricsResource} through treq's L{StubTreq}, parsed back with
prometheus_client's parsers, and checked by C{promtool} where installed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess

import treq
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parseOpenMetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import Resource

from orchestrator import __version__
from orchestrator.notify.metrics import SLICE, MetricsResource
from orchestrator.builtin.notifiers import WebhookNotifier
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText, makeOrchestrator, resultOf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = 1_000.0
SEED_NAMES = {"backend_status", "backend_uptime_seconds", "backend_restart_count",
              "backend_health_check_success_rate"}
STATES = ("stopped", "starting", "running", "unhealthy", "crashed", "stopping")

CONFIG = """
processes:
  backend:
    command: ["{python}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
    restart: {policy: backoff, max_attempts: 10, backoff: {jitter: 0}}
    health: {probe: http, interval: 5, failure_threshold: 1, restart_on_unhealthy: false}
notifiers: []
"""


class Harness:
    """
    An orchestrator on a fake process reactor whose probes the test
    steers (C{probe.auto}, or C{probe.answer()} when C{auto} is None), and
    a scraper that GETs its C{/metrics} through L{StubTreq}.
    """

    def __init__(self, yaml: str = CONFIG, auto: bool | None = True, environ=None) -> None:
        self.loaded = loadText(yaml, environ=environ)
        self.reactor = FakeProcessReactor()
        self.reactor.advance(START)
        self.probes: list[ScriptedProbe] = []

        def probeFactory(health):
            probe = ScriptedProbe(auto=auto)
            self.probes.append(probe)
            return probe

        self.orchestrator = makeOrchestrator(self.loaded, self.reactor,
                                             probeFactory=probeFactory,
                                             random=lambda: 0.5)
        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.orchestrator.metrics))
        self.http = StubTreq(root)

    @property
    def probe(self) -> ScriptedProbe:
        return self.probes[0]

    def start(self) -> "Harness":
        self.orchestrator.startService()
        return self

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)

    def get(self, accept: str | None = None):
        """
        GET /metrics: the response and its body text.
        """
        headers = {"Accept": accept} if accept else {}
        d = self.http.get("http://127.0.0.1:8000/metrics", headers=headers)
        self.http.flush()
        self.turns = 0
        fired: list = []
        d.addBoth(lambda result: fired.append(True) or result)
        while not fired and self.turns < 1000:  # a large scrape is sliced over reactor turns
            self.turns += 1
            self.reactor.advance(0)
            self.http.flush()
        response = resultOf(d)
        return response, resultOf(treq.text_content(response, encoding="utf-8"))

    def scrape(self) -> "Samples":
        response, body = self.get()
        assert response.code == 200, response.code
        return Samples(body)



class Samples:
    """
    A parsed text exposition: families by name, sample values by name and
    labels.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.values = {(s.name, frozenset(s.labels.items())): s.value
                       for f in self.families.values() for s in f.samples}

    def __call__(self, name: str, **labels) -> float:
        return self.values[(name, frozenset(labels.items()))]

    def has(self, name: str, **labels) -> bool:
        return (name, frozenset(labels.items())) in self.values

    def names(self) -> set[str]:
        return {name for name, _ in self.values}

    def seed(self) -> tuple[float, ...]:
        return tuple(self(n) for n in ("backend_status", "backend_uptime_seconds",
                                       "backend_restart_count",
                                       "backend_health_check_success_rate"))


class SeedGaugeTests(SynchronousTestCase):
    def test_statusCodesFollowTheLifecycle(self) -> None:
        """backend_status is 0 stopped, 4 starting, 1 running, 2 unhealthy, 3 crashed, 5 stopping."""
        h = Harness()
        codes = [h.scrape()("backend_status")]
        h.start()
        codes.append(h.scrape()("backend_status"))
        h.advance(0.5)
        codes.append(h.scrape()("backend_status"))
        h.probe.auto = False
        h.advance(5)
        codes.append(h.scrape()("backend_status"))
        h.probe.auto = True
        h.advance(5)
        codes.append(h.scrape()("backend_status"))
        h.reactor.last.exited(1)  # after a ready run: respawned at once
        codes.append(h.scrape()("backend_status"))
        h.reactor.last.exited(1)  # again before ready: crashed while the backoff waits
        codes.append(h.scrape()("backend_status"))
        h.advance(h.orchestrator.process("backend").snapshot().next_restart_in)
        codes.append(h.scrape()("backend_status"))
        h.advance(0.5)
        h.orchestrator.process("backend").stop()
        codes.append(h.scrape()("backend_status"))
        h.reactor.last.exited(0)
        codes.append(h.scrape()("backend_status"))
        self.assertEqual(codes, [0, 4, 1, 2, 1, 4, 3, 4, 5, 0])

    def test_uptimeComesFromTheClock(self) -> None:
        """backend_uptime_seconds counts reactor time since the spawn, and restarts from 0 with a new child."""
        h = Harness().start()
        self.assertEqual(h.scrape()("backend_uptime_seconds"), 0)
        h.advance(0.5)
        self.assertEqual(h.scrape()("backend_uptime_seconds"), 0.5)
        h.advance(12)
        self.assertEqual(h.scrape()("backend_uptime_seconds"), 12.5)
        h.reactor.last.exited(1)
        self.assertEqual(h.scrape()("backend_uptime_seconds"), 0)
        h.advance(0)
        h.advance(2.25)
        self.assertEqual(h.scrape()("backend_uptime_seconds"), 2.25)

    def test_restartCountCountsEveryRestart(self) -> None:
        """backend_restart_count grows with automatic and API restarts."""
        h = Harness().start()
        h.advance(0.5)
        self.assertEqual(h.scrape()("backend_restart_count"), 0)
        h.reactor.last.exited(1)  # respawned at once
        self.assertEqual(h.scrape()("backend_restart_count"), 1)
        h.reactor.last.exited(1)  # before ready: the backoff waits, nothing counted yet
        self.assertEqual(h.scrape()("backend_restart_count"), 1)
        h.advance(h.orchestrator.process("backend").snapshot().next_restart_in)
        self.assertEqual(h.scrape()("backend_restart_count"), 2)
        h.advance(0.5)
        h.orchestrator.process("backend").restart()
        h.reactor.last.exited(0)
        h.advance(2)
        self.assertEqual(h.scrape()("backend_restart_count"), 3)

    def test_healthSuccessRate(self) -> None:
        """backend_health_check_success_rate is successes over all checks; 1 before any check."""
        h = Harness(CONFIG.replace("failure_threshold: 1", "failure_threshold: 3")).start()
        self.assertEqual(h.scrape()("backend_health_check_success_rate"), 1)
        h.advance(0.5)
        h.advance(5)
        h.advance(5)
        h.probe.auto = False
        h.advance(5)
        samples = h.scrape()
        self.assertEqual(samples("backend_health_check_success_rate"), 0.75)
        self.assertEqual(samples("orchestrator_health_check_success_ratio", process="backend"),
                         0.75)
        self.assertEqual(samples("orchestrator_health_checks_total", process="backend",
                                 result="success"), 3)
        self.assertEqual(samples("orchestrator_health_checks_total", process="backend",
                                 result="failure"), 1)
        self.assertEqual(samples("orchestrator_health_check_healthy", process="backend"), 0)

    def test_seedGaugesAreUnlabelledGauges(self) -> None:
        """The four seed names are plain gauges without labels, as the seed exposed them."""
        samples = Harness().start().scrape()
        for name in SEED_NAMES:
            family = samples.families[name]
            self.assertEqual(family.type, "gauge")
            self.assertEqual([s.labels for s in family.samples], [{}])
        self.assertEqual(samples.seed(), (4, 0, 0, 1))

    def test_seedNamesFalseDropsThem(self) -> None:
        """metrics.seed_names: false removes the four backend_* gauges and nothing else."""
        with_ = Harness().start().scrape().names()
        without = Harness(CONFIG + "metrics: {seed_names: false}\n").start().scrape().names()
        self.assertLessEqual(SEED_NAMES, with_)
        self.assertEqual(without, with_ - SEED_NAMES)


class ProcessFamilyTests(SynchronousTestCase):
    TWO = CONFIG.replace("notifiers: []", """\
  worker:
    command: ["{python}", "-c", "pass"]
    start: {ready_after: 2}
notifiers: []
""")

    def states(self, samples: Samples, process: str) -> dict[str, float]:
        return {state: samples("orchestrator_process_state", process=process, state=state)
                for state in STATES}

    def test_processStateIsOneHotPerProcess(self) -> None:
        """orchestrator_process_state{process,state} is 1 for the current status only, per process."""
        h = Harness(self.TWO).start()
        h.advance(0.5)
        samples = h.scrape()
        self.assertEqual(self.states(samples, "backend"),
                         {s: float(s == "running") for s in STATES})
        self.assertEqual(self.states(samples, "worker"),
                         {s: float(s == "starting") for s in STATES})
        self.assertEqual(samples("orchestrator_process_up", process="backend"), 1)
        self.assertEqual(samples("orchestrator_process_up", process="worker"), 0)
        workerChild = [t for t in h.reactor.spawned if t.args[-1] == "pass"][-1]
        workerChild.exited(1)
        samples = h.scrape()
        self.assertEqual(sum(self.states(samples, "worker").values()), 1)
        self.assertEqual(sum(self.states(samples, "backend").values()), 1)

    def test_outputLimitHitsAreCounted(self) -> None:
        """orchestrator_output_limit_hits_total counts lines cut at max_line_bytes and lines not echoed past echo_rate; they survive a reload that replaces the capture."""
        h = Harness(CONFIG.replace("notifiers: []", "").rstrip() + "\n    log: {echo_rate: 2, max_line_bytes: 80}\nnotifiers: []\n")
        h.start()
        h.advance(0.5)
        h.reactor.last.output(b"a\nb\nc\nd\n" + b"z" * 250 + b"\n")
        h.advance(1)  # the second ends: the suppressed lines are counted
        samples = h.scrape()
        self.assertEqual(samples("orchestrator_output_limit_hits_total", process="backend",
                                 limit="max_line_bytes"), 3)
        self.assertEqual(samples("orchestrator_output_limit_hits_total", process="backend",
                                 limit="echo_rate"), 6)  # a, b echoed; c, d and 4 pieces not
        self.assertEqual(samples("orchestrator_output_dropped_bytes_total", process="backend"), 0)
        # A reload that replaces the process (and its output capture) keeps the counts.
        reloaded = loadText(CONFIG.replace("notifiers: []", "").rstrip()
                            + "\n    log: {echo_rate: 3, max_line_bytes: 80}\nnotifiers: []\n")
        before = h.orchestrator.process("backend").output
        d = h.orchestrator.supervisor.apply(reloaded.config, reloaded.kinds)
        h.reactor.last.exited(0)
        h.advance(1)
        resultOf(d)
        self.assertIsNot(h.orchestrator.process("backend").output, before)
        h.reactor.last.output(b"y" * 100 + b"\n")
        self.assertEqual(h.scrape()("orchestrator_output_limit_hits_total", process="backend",
                                    limit="max_line_bytes"), 4)

    def test_restartsTotalByReason(self) -> None:
        """orchestrator_process_restarts_total{process,reason} counts crash, unhealthy and manual restarts."""
        h = Harness(CONFIG.replace("restart_on_unhealthy: false", "restart_on_unhealthy: true"))
        h.start()
        h.advance(0.5)
        h.reactor.last.exited(1)  # crash
        h.advance(0)
        h.advance(0.5)
        h.probe.auto = False  # unhealthy
        h.advance(5)
        self.assertEqual(h.orchestrator.process("backend").status, "unhealthy")
        h.reactor.last.killed(15)
        h.probe.auto = True
        h.advance(1)
        h.advance(0.5)
        h.orchestrator.process("backend").restart()  # manual
        h.reactor.last.exited(0)
        h.advance(2)
        h.advance(0.5)
        samples = h.scrape()
        self.assertEqual(
            {r: samples("orchestrator_process_restarts_total", process="backend", reason=r)
             for r in ("crash", "unhealthy", "start_timeout", "manual")},
            {"crash": 1, "unhealthy": 1, "start_timeout": 0, "manual": 1},
        )
        self.assertEqual(samples.families["orchestrator_process_restarts"].type, "counter")
        self.assertEqual(samples("backend_restart_count"), 3)
        self.assertEqual(samples("orchestrator_process_exits_total", process="backend",
                                 clean="false"), 2)
        self.assertEqual(samples("orchestrator_process_exits_total", process="backend",
                                 clean="true"), 1)

    def test_healthCheckDurationHistogramUsesConfiguredBuckets(self) -> None:
        """orchestrator_health_check_duration_seconds has the configured buckets, cumulative, with sum and count."""
        h = Harness(CONFIG.replace("failure_threshold: 1", "failure_threshold: 3")
                    + "metrics: {health_buckets: [0.5, 0.1, 2]}\n", auto=None)
        h.start()
        h.advance(0.01)  # the first check goes out
        h.advance(0.25)
        h.probe.answer(True)  # 0.25 s
        h.advance(5)
        h.advance(1)
        h.probe.answer(False)  # 1 s
        h.advance(4)
        h.advance(3)
        h.probe.answer(True)  # 3 s
        samples = h.scrape()
        family = samples.families["orchestrator_health_check_duration_seconds"]
        self.assertEqual(family.type, "histogram")
        buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
        self.assertEqual(buckets, {"0.1": 0, "0.5": 1, "2.0": 2, "+Inf": 3})
        self.assertEqual(samples("orchestrator_health_check_duration_seconds_count",
                                 process="backend"), 3)
        self.assertAlmostEqual(samples("orchestrator_health_check_duration_seconds_sum",
                                       process="backend"), 4.25)
        self.assertEqual(samples("orchestrator_health_checks_total", process="backend",
                                 result="success"), 2)
        self.assertEqual(samples("orchestrator_health_checks_total", process="backend",
                                 result="failure"), 1)

    def test_duplicateBucketsAreExposedOnce(self) -> None:
        """A bound listed twice in health_buckets gives one le series, not two."""
        h = Harness(CONFIG + "metrics: {health_buckets: [1, 1.0, 5]}\n").start()
        h.advance(0.5)
        family = h.scrape().families["orchestrator_health_check_duration_seconds"]
        les = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
        self.assertEqual(les, ["1.0", "5.0", "+Inf"])

    def test_buildInfo(self) -> None:
        """orchestrator_build_info carries the version, Python and mode, with value 1."""
        samples = Harness().start().scrape()
        self.assertEqual(samples.families["orchestrator_build_info"].type, "gauge")
        self.assertEqual(samples("orchestrator_build_info", version=__version__,
                                 python=platform.python_version(), mode="managing"), 1)
        self.assertEqual(samples("orchestrator_start_time_seconds"), START)

    def test_monitorOnlyMode(self) -> None:
        """In monitor-only mode build_info says so and the state is "unknown" until a probe answers."""
        h = Harness(CONFIG + "orchestrator: {enabled: false}\n").start()
        samples = h.scrape()
        self.assertEqual(samples("orchestrator_build_info", version=__version__,
                                 python=platform.python_version(), mode="monitor-only"), 1)
        self.assertEqual(samples("orchestrator_process_state", process="backend",
                                 state="unknown"), 1)
        self.assertEqual(h.reactor.spawned, [])
        h.advance(1.1)  # the first probe's phase is spread over start_interval (1 s)
        samples = h.scrape()
        self.assertEqual(samples("orchestrator_process_state", process="backend",
                                 state="running"), 1)
        self.assertEqual(samples("orchestrator_process_state", process="backend",
                                 state="unknown"), 0)
        self.assertEqual(samples("backend_status"), 1)

    def test_eventCounters(self) -> None:
        """orchestrator_events_emitted_total counts all events; the prometheus notifier counts them by type."""
        h = Harness(CONFIG.replace("notifiers: []", "notifiers: [{type: prometheus}]")).start()
        h.advance(0.5)
        h.reactor.last.exited(1)
        samples = h.scrape()
        self.assertEqual(samples("orchestrator_events_emitted_total"), 5)
        self.assertEqual(
            {t: samples("orchestrator_events_total", process="backend", type=t)
             for t in ("starting", "running", "crashed", "restart_scheduled")},
            {"starting": 2, "running": 1, "crashed": 1, "restart_scheduled": 1},
        )


class Hook(Resource):
    isLeaf = True

    def __init__(self, *codes) -> None:
        super().__init__()
        self.codes = list(codes)

    def render_POST(self, request):
        request.setResponseCode(self.codes.pop(0) if self.codes else 200)
        return b""


WEBHOOKS = CONFIG.replace("notifiers: []", """\
notifiers:
  - {type: prometheus}
  - {type: webhook, url: "https://hooks.example.com/services/T0/B0/s3cr3t", max_retries: 1}
  - {type: webhook, url: "https://hooks.example.com/other/s3cr3t2", max_retries: 0,
     events: [crashed]}
""")


def withStubWebhooks(h: Harness, *hooks: Hook) -> list[RequestTraversalAgent]:
    """
    Build the configured webhooks with an in-memory agent on C{hooks}
    (filled in when the orchestrator starts).
    """
    agents, hookIter = [], iter(hooks)

    def factory(kind, config, reactor):
        if kind is not WebhookNotifier:
            return kind(config, reactor)
        agent = RequestTraversalAgent(next(hookIter))
        agents.append(agent)
        return WebhookNotifier(config, reactor, agent=agent, random=lambda: 0.5)

    h.orchestrator.notifiers.factory = factory
    return agents


class WebhookMetricTests(SynchronousTestCase):
    def test_webhookDeliveryCountersAppear(self) -> None:
        """Each webhook's outcomes appear as orchestrator_webhook_deliveries_total{notifier,host,outcome}."""
        h = Harness(WEBHOOKS)
        stubs = withStubWebhooks(h, Hook(), Hook(500))
        h.start()
        h.advance(0.5)
        h.reactor.last.exited(1)
        for stub in stubs:
            stub.flush()
        samples = h.scrape()

        def outcomes(index):
            return {o: samples("orchestrator_webhook_deliveries_total", host="hooks.example.com",
                               notifier=f"notifiers[{index}]", outcome=o)
                    for o in ("delivered", "retried", "failed", "dropped")}

        # starting, running, crashed, restart_scheduled, starting (the respawn)
        self.assertEqual(outcomes(1), {"delivered": 5, "retried": 0, "failed": 0, "dropped": 0})
        self.assertEqual(outcomes(2), {"delivered": 0, "retried": 0, "failed": 1, "dropped": 0})
        self.assertEqual(samples("orchestrator_webhook_queue_length", notifier="notifiers[1]",
                                 host="hooks.example.com"), 0)
        self.assertNotIn("s3cr3t", samples.text)

    def test_familiesOfSeveralNotifiersAreMerged(self) -> None:
        """Two webhooks expose one HELP/TYPE block per family, each with its own series."""
        h = Harness(WEBHOOKS).start()
        text = h.scrape().text
        self.assertEqual(text.count("# TYPE orchestrator_webhook_deliveries_total counter"), 1)
        self.assertEqual(text.count("# TYPE orchestrator_webhook_queue_length gauge"), 1)
        self.assertEqual(text.count("orchestrator_webhook_deliveries_total{"), 8)

    def test_aNotifierFailingToCollectIsLoggedAndSkipped(self) -> None:
        """A notifier whose collect() raises is logged; the scrape still answers with everything else."""
        h = Harness(CONFIG.replace("notifiers: []", "notifiers: [{type: log}]"))

        class Broken:
            name = "broken"

            def notify(self, event):
                pass

            def collect(self):
                raise RuntimeError("collector bug")

        h.orchestrator.notifiers.factory = lambda kind, config, reactor: Broken()
        h.start()
        samples = h.scrape()
        self.assertIn("backend_status", samples.names())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MetricsResourceTests(SynchronousTestCase):
    def test_servesTextFormat004(self) -> None:
        """GET /metrics answers 200 with text/plain version 0.0.4 that prometheus_client parses."""
        h = Harness().start()
        response, body = h.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/plain; version=0.0.4; charset=utf-8"])
        self.assertIn("backend_status", {f.name for f in text_string_to_metric_families(body)})

    def test_servesOpenMetricsWhenAsked(self) -> None:
        """An Accept asking for OpenMetrics gets OpenMetrics 1.0.0, ending in # EOF."""
        h = Harness(CONFIG + "metrics: {seed_names: false}\n").start()
        h.advance(0.5)
        response, body = h.get(
            "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5")
        [contentType] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(contentType.startswith(b"application/openmetrics-text; version=1.0.0"),
                        contentType)
        self.assertTrue(body.endswith("# EOF\n"))
        families = {f.name: f for f in parseOpenMetrics(body)}
        self.assertEqual(families["orchestrator_process_restarts"].type, "counter")
        self.assertEqual(families["orchestrator_build"].type, "info")
        running = [s for s in families["orchestrator_process_state"].samples
                   if s.labels == {"process": "backend", "state": "running"}]
        self.assertEqual([s.value for s in running], [1])

    def test_valuesAreComputedAtScrapeTime(self) -> None:
        """Two scrapes around a state change show the new state without any update call."""
        h = Harness().start()
        h.advance(0.5)
        before = h.scrape()("backend_status")
        h.orchestrator.process("backend").stop()
        self.assertEqual((before, h.scrape()("backend_status")), (1, 5))

    def test_postIsNotAllowed(self) -> None:
        """POST /metrics answers a JSON 405 with Allow, never an HTML page."""
        h = Harness()
        d = h.http.post("http://127.0.0.1:8000/metrics", data=b"")
        h.http.flush()
        response = resultOf(d)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        body = h.http.content(response)
        h.http.flush()
        self.assertEqual(json.loads(resultOf(body)), {"success": False, "error": "Method not allowed: use GET"})


def manyProcesses(count: int, monitorOnly: bool = False) -> str:
    """
    A configuration of C{count} probed processes (names that need
    escaping among them).
    """
    lines = ["processes:"]
    for i in range(count):
        lines += [f"  'p{i}{'-x' if i % 7 else ''}':",
                  '    command: ["{python}", "-c", "pass"]',
                  f'    url: "http://127.0.0.1:{3000 + i}"',
                  "    restart: {policy: backoff, max_attempts: 10, backoff: {jitter: 0}}",
                  "    health: {probe: http, interval: 5, failure_threshold: 1, restart_on_unhealthy: false}"]
    lines += ["notifiers: []", "admin: {default_process: p0}"]
    if monitorOnly:
        lines.append("orchestrator: {enabled: false}")
    return "\n".join(lines) + "\n"


class IncrementalExpositionTests(SynchronousTestCase):
    """
    The scrape concatenates lines cached per process; they must be exactly
    what prometheus_client renders from scratch from the same state.
    """

    def assertSameAsFromScratch(self, h: Harness) -> None:
        from prometheus_client.exposition import generate_latest
        from prometheus_client.openmetrics.exposition import generate_latest as generateOpenMetrics

        _, text = h.get()
        self.assertEqual(text, generate_latest(h.orchestrator.metrics.registry).decode("utf-8"))
        _, openMetrics = h.get("application/openmetrics-text")
        self.assertEqual(openMetrics,
                         generateOpenMetrics(h.orchestrator.metrics.registry).decode("utf-8"))

    def test_incrementalScrapeEqualsFromScratchThroughTheLifecycle(self) -> None:
        """Through starts, probe results, failures, crashes, restarts and stops, both formats equal a from-scratch render."""
        h = Harness(CONFIG.replace("notifiers: []", 'notifiers: []\nprocesses:', 0).replace(
            "notifiers: []", '  other:\n    command: ["{python}", "-c", "pass"]\nnotifiers: []'), auto=None)
        self.assertSameAsFromScratch(h)
        h.start()
        self.assertSameAsFromScratch(h)
        h.advance(0.5)
        h.probe.answer(True)
        self.assertSameAsFromScratch(h)
        h.advance(5)
        h.probe.answer(False)
        self.assertSameAsFromScratch(h)
        h.reactor.last.exited(1)
        self.assertSameAsFromScratch(h)
        h.advance(0)
        h.advance(7.25)
        self.assertSameAsFromScratch(h)
        h.orchestrator.process("other").stop()
        h.reactor.last.exited(0)
        self.assertSameAsFromScratch(h)
        h.orchestrator.process("other").restart()
        h.advance(3)
        self.assertSameAsFromScratch(h)

    def test_monitorOnlyProcesses(self) -> None:
        """Monitor-only processes (with their unknown state) render like from scratch."""
        h = Harness(manyProcesses(3, monitorOnly=True), auto=True)
        h.start()
        h.advance(0.5)
        self.assertSameAsFromScratch(h)

    def test_largeScrapeIsSlicedOverReactorTurnsAndStillExact(self) -> None:
        """With more processes than one slice, a scrape spans several reactor turns (refresh, then assembly) and equals a from-scratch render."""
        count = 3 * SLICE + 5
        h = Harness(manyProcesses(count)).start()
        h.advance(0.5)
        h.advance(5)
        slices = []
        callLater = h.reactor.callLater
        h.reactor.callLater = lambda delay, f, *a, **kw: (
            slices.append(delay) if delay == 0 else None, callLater(delay, f, *a, **kw))[1]
        _, body = h.get()
        self.assertGreaterEqual(len(slices), 3)  # each slice in its own reactor turn
        samples = Samples(body)
        self.assertEqual(sum(1 for (name, _) in samples.values if name == "orchestrator_process_up"),
                         count)
        del slices[:]
        stale = h.orchestrator.metrics.stale()
        self.assertSameAsFromScratch(h)  # nothing re-rendered, the assembly still sliced
        self.assertEqual(stale, [])
        self.assertGreaterEqual(len(slices), 2)


def promtool() -> str:
    """
    promtool: on PATH or fetched from Debian's prometheus package into
    .cache/ (L{tests.tools.debianTool}); skip with the reason otherwise.
    """
    from tests.tools import debianTool

    return debianTool("promtool", "prometheus")


def promtoolCheck(text: str) -> tuple[int, list[str]]:
    done = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    return done.returncode, [l for l in (done.stdout + done.stderr).splitlines() if l.strip()]


def busyExposition(seed: bool = True) -> str:
    """
    An exposition with every family populated: two processes, crashes,
    health checks, the prometheus notifier, two webhooks with outcomes.
    """
    yaml = ProcessFamilyTests.TWO.replace(
        "notifiers: []", "notifiers:" + WEBHOOKS.split("notifiers:", 1)[1])
    if not seed:
        yaml += "metrics: {seed_names: false}\n"
    h = Harness(yaml)
    stubs = withStubWebhooks(h, Hook(), Hook(500))
    h.start()
    h.advance(0.5)
    h.reactor.last.exited(1)
    h.advance(0)
    h.advance(0.5)
    h.probe.auto = False
    h.advance(5)
    for stub in stubs:
        stub.flush()
    samples = h.scrape()
    for name in ("orchestrator_health_check_duration_seconds", "orchestrator_webhook_deliveries",
                 "orchestrator_events", "orchestrator_process_restarts"):
        assert samples.families[name].samples, name
    return samples.text


class PromtoolTests(SynchronousTestCase):
    def test_onlyTheSeedsCountNameIsReported(self) -> None:
        """promtool check metrics reports nothing but the seed's backend_restart_count."""
        code, problems = promtoolCheck(busyExposition())
        self.assertEqual(problems, ['backend_restart_count non-histogram and non-summary '
                                    'metrics should not have "_count" suffix'])
        self.assertNotEqual(code, 0)

    def test_cleanWithoutSeedNames(self) -> None:
        """With metrics.seed_names: false, promtool check metrics passes with no output."""
        self.assertEqual(promtoolCheck(busyExposition(seed=False)), (0, []))
