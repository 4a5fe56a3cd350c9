"""
Reloading notifiers on the fake reactor: an unchanged notifier is kept
with its queue, a changed one is replaced and takes over what the old
one had not delivered, a removed one finishes within its close timeout
and counts what is left as dropped, and every counter stays monotonic
across reloads.
"""

from __future__ import annotations

import shutil
import tempfile

from treq.testing import RequestTraversalAgent
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from orchestrator.builtin.notifiers import WebhookNotifier
from orchestrator.config.load import loadConfig
from orchestrator.errors import ConfigError
from tests.fakes import FakeProcessReactor, ScriptedProbe, writeConfig, makeOrchestrator

START = 1_700_000_000

BASE = """
processes:
  backend:
    command: ["{python}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
    restart: {policy: backoff, max_attempts: 100, backoff: {initial: 0.1, factor: 1, max: 0.1}}
    health: {interval: 30}
"""


def webhook(timeout: float = 5, close_timeout: float = 5, events: str = "") -> str:
    return ("  - {type: webhook, url: \"http://hooks.example.com/in\", retry_initial: 1, "
            f"retry_max: 1, max_retries: 1000, timeout: {timeout}, close_timeout: {close_timeout}"
            + (f", events: [{events}]" if events else "") + "}\n")


class Receiver(Resource):
    """
    A webhook receiver that answers 503 while C{up} is false and records
    the events it accepted (by id, in arrival order).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.accepted: list[str] = []
        self.refused = 0

    def render_POST(self, request):
        if not self.up:
            self.refused += 1
            request.setResponseCode(503)
            return b""
        self.accepted.append(request.getHeader(b"webhook-id").decode())
        request.setResponseCode(204)
        return b""


class Reloading:
    """
    An orchestrator on the fake reactor whose configuration file the test
    rewrites and reloads; its webhooks POST in memory to one L{Receiver}.
    """

    def __init__(self, test: SynchronousTestCase, notifiers: str) -> None:
        self.directory = tempfile.mkdtemp(prefix="orch-reload-")
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.test = test
        self.receiver = Receiver()
        self.agents: list[RequestTraversalAgent] = []
        self.path = writeConfig(BASE + "notifiers:\n" + notifiers, self.directory)
        self.reactor = r = FakeProcessReactor()
        r.advance(START)
        self.orchestrator = makeOrchestrator(self._load(), r,
                                             reload=self._load,
                                             probeFactory=lambda health: ScriptedProbe(auto=True),
                                             random=lambda: 0.5)
        self.orchestrator.notifiers.factory = self._build
        self.orchestrator.startService()
        self.advance(1)

    def _load(self):
        return loadConfig(self.path, envFile="/dev/null", environ={}, entryPoints=False)

    def _build(self, kind, config, reactor):
        if kind is not WebhookNotifier:
            return kind(config, reactor)
        agent = RequestTraversalAgent(self.receiver)
        self.agents.append(agent)
        return WebhookNotifier(config, reactor, agent=agent, random=lambda: 0.5)

    def advance(self, seconds: float) -> None:
        for _ in range(max(1, int(seconds * 10))):
            self.reactor.advance(min(seconds, 0.1))
            for agent in self.agents:
                agent.flush()

    def crash(self) -> None:
        """
        The backend crashes and is restarted (five events).
        """
        self.reactor.last.exited(1)
        self.advance(1)

    def reload(self, notifiers: str) -> dict:
        writeConfig(BASE + "notifiers:\n" + notifiers, self.directory)
        summary = self.test.successResultOf(self.orchestrator.reload())
        self.advance(0.1)
        return summary

    @property
    def webhooks(self) -> list[WebhookNotifier]:
        return [n for n in self.orchestrator.notifiers.notifiers if isinstance(n, WebhookNotifier)]

    def eventIds(self, types=None) -> list[str]:
        return [e.id for e in self.orchestrator.events.recent if types is None or e.type in types]

    def scrape(self) -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in self.orchestrator.metrics.registry.collect() for s in family.samples}


class NotifierReloadTests(SynchronousTestCase):
    def test_unchangedNotifierIsKeptWithItsQueue(self) -> None:
        """A reload that leaves a webhook's config alone keeps the same object, queue included; all arrive later."""
        h = Reloading(self, webhook())
        h.receiver.up = False
        h.crash()
        [before] = h.webhooks
        queued = before.pending
        self.assertGreater(queued, 3)
        h.reload(webhook())
        [after] = h.webhooks
        self.assertIs(after, before)
        h.receiver.up = True
        h.advance(2)
        self.assertEqual(sorted(set(h.receiver.accepted)), sorted(h.eventIds()))
        self.assertEqual(len(h.receiver.accepted), len(set(h.receiver.accepted)))

    def test_unchangedNotifierThatMovedIsKept(self) -> None:
        """Removing the notifier before an unchanged webhook, then adding one back, keeps that webhook (same object, queue); everything arrives once."""
        h = Reloading(self, "  - {type: log}\n" + webhook())
        h.receiver.up = False
        h.crash()
        [before] = h.webhooks
        self.assertGreater(before.pending, 3)
        summaries = []
        for notifiers in (webhook(), "  - {type: log}\n" + webhook()):
            summaries += [line for line in self._log(lambda: h.reload(notifiers))
                          if line.get("log_format", "").startswith("notifiers reloaded")]
            self.assertEqual(h.webhooks, [before])
        self.assertEqual([(s["kept"], s["added"], s["removed"]) for s in summaries],
                         [("notifiers[1] (now notifiers[0])", "-", "notifiers[0]"),
                          ("notifiers[0] (now notifiers[1])", "notifiers[0]", "-")])
        h.receiver.up = True
        h.advance(2)
        self.assertEqual(sorted(h.receiver.accepted), sorted(h.eventIds()))

    def test_changedNotifierIsReplacedAndTakesOverItsQueue(self) -> None:
        """A changed webhook is rebuilt; the old one's undelivered events go to the new one: none lost, at most the in-flight one twice."""
        h = Reloading(self, webhook(timeout=5))
        h.receiver.up = False
        h.crash()
        [old] = h.webhooks
        undelivered = old.pending
        summary = [line for line in self._log(lambda: h.reload(webhook(timeout=6)))
                   if line.get("log_format", "").startswith("notifiers reloaded")]
        self.assertEqual(summary[0]["replaced"], "notifiers[0]")
        [new] = h.webhooks
        self.assertIsNot(new, old)
        self.assertEqual(old.pending, 0)
        self.assertGreaterEqual(new.pending, undelivered)
        h.receiver.up = True
        h.advance(2)
        self.assertEqual(sorted(set(h.receiver.accepted)), sorted(h.eventIds()))
        self.assertLessEqual(len(h.receiver.accepted) - len(set(h.receiver.accepted)), 1)

    def test_removedNotifierFinishesItsQueueWhenTheReceiverComesBack(self) -> None:
        """A removed webhook keeps delivering its queue for close_timeout; a receiver back in time gets everything."""
        h = Reloading(self, webhook(close_timeout=10))
        h.receiver.up = False
        h.crash()
        emitted = h.eventIds()
        h.reload("  - {type: log}\n")
        self.assertEqual(h.webhooks, [])
        h.advance(3)
        h.receiver.up = True
        h.advance(2)
        self.assertEqual(sorted(set(h.receiver.accepted)), sorted(emitted))
        self.assertEqual(h.orchestrator.notifiers._closing, [])

    def test_removedNotifierDropsWhatIsLeftAtCloseTimeoutCounted(self) -> None:
        """A removed webhook whose receiver stays down drops its queue after close_timeout: counted, logged, nothing left scheduled by it."""
        h = Reloading(self, webhook(close_timeout=2))
        h.receiver.up = False
        h.crash()
        [old] = h.webhooks
        queued = old.pending
        lines = self._log(lambda: (h.reload("  - {type: log}\n"), h.advance(3)))
        self.assertEqual(old.outcomes["dropped"], queued)
        [warning] = [e for e in lines if "undelivered" in e.get("log_format", "")]
        self.assertEqual(warning["n"], queued)
        metrics = h.scrape()
        self.assertEqual(metrics[("orchestrator_webhook_deliveries_total", (
            ("host", "hooks.example.com"), ("notifier", "notifiers[0]"), ("outcome", "dropped")))], queued)
        self.assertNotIn(("orchestrator_webhook_queue_length", (
            ("host", "hooks.example.com"), ("notifier", "notifiers[0]"))), metrics)
        refused = h.receiver.refused
        h.advance(5)
        self.assertEqual(h.receiver.refused, refused)

    def test_addedNotifierGetsLaterEvents(self) -> None:
        """A webhook added by a reload receives the events after it, starting with config_reloaded."""
        h = Reloading(self, "  - {type: log}\n")
        h.reload("  - {type: log}\n" + webhook())
        h.advance(0.1)
        self.assertEqual(len(h.receiver.accepted), 1)
        self.assertEqual(h.receiver.accepted, h.eventIds({"config_reloaded"}))

    def test_countersAreMonotonicAcrossTenReloads(self) -> None:
        """Ten reloads alternating kept, replaced, removed and re-added notifiers: no _total sample ever decreases."""
        configs = [
            "  - {type: prometheus}\n" + webhook(timeout=5),
            "  - {type: prometheus}\n" + webhook(timeout=6),
            "  - {type: prometheus, events: [crashed, config_reloaded, starting, running, "
            "restart_scheduled]}\n" + webhook(timeout=6),
            "  - {type: log}\n",
            "  - {type: prometheus}\n" + webhook(timeout=5),
        ]
        h = Reloading(self, configs[0])
        previous = h.scrape()
        for n in range(10):
            h.crash()
            h.reload(configs[(n + 1) % len(configs)])
            h.advance(1)
            metrics = h.scrape()
            for key, value in previous.items():
                if key[0].endswith("_total"):
                    self.assertIn(key, metrics, f"reload {n + 1}: {key} vanished")
                    self.assertGreaterEqual(metrics[key], value, f"reload {n + 1}: {key} went down")
            previous = metrics
            reloaded = metrics[("orchestrator_events_total", (("process", ""), ("type", "config_reloaded")))]
            expected = sum(1 for i in range(n + 1) if "prometheus" in configs[(i + 1) % len(configs)])
            self.assertEqual(reloaded, expected)
        crashed = previous[("orchestrator_events_total", (("process", "backend"), ("type", "crashed")))]
        self.assertGreater(crashed, 5)

    def test_malformedSecretOnReloadIsRejectedAndNotifiersKept(self) -> None:
        """A reload whose webhook secret is malformed is rejected: the running notifiers are untouched."""
        h = Reloading(self, webhook())
        [before] = h.webhooks
        writeConfig(BASE + "notifiers:\n" + webhook().replace(
            "timeout: 5,", "timeout: 5, secret_env: BAD,"), h.directory)
        h.orchestrator._reloader = lambda: loadConfig(h.path, envFile="/dev/null",
                                                      environ={"BAD": "whsec_%%%"}, entryPoints=False)
        failure = self.failureResultOf(h.orchestrator.reload(), ConfigError)
        self.assertIn("secret_env: BAD", failure.value.problems[0])
        self.assertEqual(h.webhooks, [before])

    def test_shutdownClosesNotifiersGracefully(self) -> None:
        """Stopping the orchestrator gives a webhook close_timeout to deliver the stop events."""
        h = Reloading(self, webhook(close_timeout=5))
        h.receiver.up = False
        h.advance(0.5)
        d = h.orchestrator.stopService()
        h.reactor.last.exited(0)
        h.advance(0.5)
        h.receiver.up = True
        h.advance(1)
        self.successResultOf(d)
        self.assertIn("stopped", [e.type for e in h.orchestrator.events.recent
                                  if e.id in h.receiver.accepted])

    def _log(self, action) -> list[dict]:
        seen: list[dict] = []
        globalLogPublisher.addObserver(seen.append)
        try:
            action()
        finally:
            globalLogPublisher.removeObserver(seen.append)
        return seen
