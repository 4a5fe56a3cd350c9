"""
Tests for the built-in notifiers in L{orchestrator.builtin.notifiers}: the webhook
(Standard Webhooks signature, retries, queue, timeouts, close) over
treq's in-memory L{StubTreq} with a L{Clock}, and the prometheus counter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orchestrator.config.types import NotifierConfig
from orchestrator.notify.events import Event
from orchestrator.builtin.notifiers import PrometheusNotifier, WebhookNotifier, signWebhook
from tests.fakes import loadText

URL = "http://hooks.example.com:8080/services/T00/B00/s3cr3tT0ken"
START = 1_700_000_000
KEY = b"sixteen byte key and more, all raw bytes \x00\xff"


@dataclass
class Recorded:
    headers: dict[str, str]
    body: bytes
    request: object


class Hook(Resource):
    """
    A webhook receiver recording every request and answering as scripted:
    an HTTP code, C{"hang"} (never answers) or C{"stall"} (sends the
    headers and part of the body, then nothing).  Unscripted requests get
    200.
    """

    isLeaf = True

    def __init__(self, *script) -> None:
        super().__init__()
        self.script = list(script)
        self.requests: list[Recorded] = []
        self.lost: list[object] = []

    def render_POST(self, request):
        headers = {
            k.decode().lower(): b", ".join(v).decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.requests.append(Recorded(headers, request.content.read(), request))
        action = self.script.pop(0) if self.script else 200
        if action in ("hang", "stall"):
            request.notifyFinish().addErrback(lambda f: self.lost.append(f))
            if action == "stall":
                request.setResponseCode(200)
                request.write(b'{"partial": ')
            return NOT_DONE_YET
        request.setResponseCode(action)
        return b"{}"

    @property
    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]


def makeEvent(n: int = 1, type: str = "crashed", timestamp: float = START) -> Event:
    return Event(
        id=f"evt_{n:04d}", type=type, process="backend", from_="running", to="crashed",
        reason="exit code 1", pid=4000 + n, exit_code=1, signal=None, restart_count=n,
        attempt=1, timestamp=timestamp, sequence=n,
    )


def webhookConfig(env=None, index=2, **options) -> NotifierConfig:
    return NotifierConfig(type="webhook", options={"url": URL, **options}, index=index,
                          env=env or {})


def verify(secret: bytes, recorded: Recorded) -> bool:
    """
    Verify a Standard Webhooks signature independently of the notifier.
    """
    h = recorded.headers
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + recorded.body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    versions = dict(part.split(",", 1) for part in h["webhook-signature"].split(" "))
    return hmac.compare_digest(versions["v1"], expected)


class WebhookTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)

    def make(self, hook: Hook, randoms=(0.5,), config: NotifierConfig | None = None, **options):
        self.stub = RequestTraversalAgent(hook)
        values = list(randoms)
        self.notifier = WebhookNotifier(
            config or webhookConfig(**options), self.clock, agent=self.stub,
            random=lambda: values.pop(0) if len(values) > 1 else values[0],
        )
        self.addCleanup(self.notifier.close)
        return self.notifier

    def notify(self, event: Event) -> None:
        self.assertIsNone(self.notifier.notify(event))
        self.stub.flush()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.stub.flush()


class WebhookDeliveryTests(WebhookTestCase):
    def test_postsTheEventAsJSONWithStandardHeaders(self) -> None:
        """An event is POSTed as its JSON with webhook-id (the event id) and webhook-timestamp."""
        hook = Hook()
        self.make(hook)
        event = makeEvent()
        self.notify(event)
        [request] = hook.requests
        self.assertEqual(json.loads(request.body), event.toJSON())
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertEqual(request.headers["webhook-id"], event.id)
        self.assertEqual(request.headers["webhook-timestamp"], str(START))
        self.assertNotIn("webhook-signature", request.headers)
        self.assertEqual(self.notifier.outcomes["delivered"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_signatureWithWhsecSecret(self) -> None:
        """A whsec_<base64> secret is decoded and signs "id.timestamp.body" with HMAC-SHA256."""
        hook = Hook()
        secret = "whsec_" + base64.b64encode(KEY).decode()
        self.make(hook, config=webhookConfig(env={"HOOK_SECRET": secret}, secret_env="HOOK_SECRET"))
        self.notify(makeEvent())
        [request] = hook.requests
        self.assertTrue(request.headers["webhook-signature"].startswith("v1,"))
        self.assertTrue(verify(KEY, request))
        self.assertFalse(verify(secret.encode(), request))

    def test_signatureWithRawSecret(self) -> None:
        """A secret without the whsec_ prefix is used as its UTF-8 bytes."""
        hook = Hook()
        self.make(hook, config=webhookConfig(env={"HOOK_SECRET": "plain-text secret"},
                                             secret_env="HOOK_SECRET"))
        self.notify(makeEvent())
        self.assertTrue(verify(b"plain-text secret", hook.requests[0]))

    def test_signWebhookMatchesTheStandardWebhooksExample(self) -> None:
        """signWebhook reproduces the Standard Webhooks reference test vector."""
        secret = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        body = b'{"test": 2432232314}'
        self.assertEqual(
            signWebhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )

    def test_secretFromEnvironmentAndDotEnvThroughConfig(self) -> None:
        """secret_env is resolved from the process environment, else from .env, via NotifierConfig.env."""
        yaml = """
            processes:
              backend: {command: ["{python}"]}
            notifiers:
              - {type: webhook, url: "%s", secret_env: HOOK_SECRET}
        """ % URL
        directory = tempfile.mkdtemp(prefix="orch-test-")
        envFile = os.path.join(directory, ".env")
        with open(envFile, "w") as f:
            f.write("HOOK_SECRET=from-dotenv\n")
        for environ, expected in [({}, b"from-dotenv"),
                                  ({"HOOK_SECRET": "from-environ"}, b"from-environ")]:
            loaded = loadText(yaml, environ=environ, envFile=envFile)
            hook = Hook()
            self.make(hook, config=loaded.config.notifiers[0])
            self.notify(makeEvent())
            self.assertTrue(verify(expected, hook.requests[0]), expected)

    def test_extraHeadersCannotForgeTheStandardOnes(self) -> None:
        """Configured headers are sent, but never replace webhook-id or webhook-timestamp."""
        hook = Hook()
        self.make(hook, headers={"x-team": "ops", "webhook-id": "forged",
                                 "webhook-timestamp": "0"})
        self.notify(makeEvent())
        headers = hook.requests[0].headers
        self.assertEqual(headers["x-team"], "ops")
        self.assertEqual(headers["webhook-id"], "evt_0001")
        self.assertEqual(headers["webhook-timestamp"], str(START))

    def test_eventsAreDeliveredOneAtATimeInOrder(self) -> None:
        """Events queued while one is in flight follow it, in order, one request at a time."""
        hook = Hook("hang")
        self.make(hook)
        for n in (1, 2, 3):
            self.notify(makeEvent(n))
        self.assertEqual(hook.ids, ["evt_0001"])
        hook.requests[0].request.setResponseCode(204)
        hook.requests[0].request.finish()
        self.stub.flush()
        self.assertEqual(hook.ids, ["evt_0001", "evt_0002", "evt_0003"])
        self.assertEqual(self.notifier.outcomes["delivered"], 3)


class WebhookRetryTests(WebhookTestCase):
    def test_retriesWithExactBackoffAndJitter(self) -> None:
        """500, 500, 200: retries after initial*2**n*(0.5+random) seconds, each re-signed, then delivered."""
        hook = Hook(500, 500, 200)
        secret = "whsec_" + base64.b64encode(KEY).decode()
        # jitter draws 0.25 then 0.0: delays 2*0.75 = 1.5 s, then 4*0.5 = 2 s
        self.make(hook, randoms=(0.25, 0.0), config=webhookConfig(
            env={"S": secret}, secret_env="S", retry_initial=2, max_retries=5))
        self.notify(makeEvent())
        self.assertEqual(len(hook.requests), 1)
        self.advance(1.25)
        self.assertEqual(len(hook.requests), 1)
        self.advance(0.25)
        self.assertEqual(len(hook.requests), 2)
        self.advance(1.75)
        self.assertEqual(len(hook.requests), 2)
        self.advance(0.25)
        self.assertEqual(len(hook.requests), 3)
        self.assertEqual([r.headers["webhook-timestamp"] for r in hook.requests],
                         [str(START), str(START + 1), str(START + 3)])
        self.assertEqual(set(hook.ids), {"evt_0001"})
        for request in hook.requests:
            self.assertTrue(verify(KEY, request))
        self.assertEqual(self.notifier.outcomes, {"retried": 2, "delivered": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_givesUpAfterMaxRetriesAndMovesOn(self) -> None:
        """After max_retries failed retries the event counts as failed and the next one is sent."""
        hook = Hook(500, 503, 502)
        self.make(hook, max_retries=2, retry_initial=1)
        self.notify(makeEvent(1))
        self.notify(makeEvent(2))
        self.advance(1)
        self.advance(2)
        self.assertEqual(hook.ids, ["evt_0001"] * 3 + ["evt_0002"])
        self.assertEqual(self.notifier.outcomes, {"retried": 2, "failed": 1, "delivered": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noRetriesWhenMaxRetriesIsZero(self) -> None:
        """max_retries 0: one attempt only, counted as failed."""
        hook = Hook(500)
        self.make(hook, max_retries=0)
        self.notify(makeEvent())
        self.advance(120)
        self.assertEqual(len(hook.requests), 1)
        self.assertEqual(self.notifier.outcomes, {"failed": 1})

    def test_retryDelayIsCappedAtRetryMax(self) -> None:
        """The jittered delay never exceeds retry_max."""
        notifier = self.make(Hook(), randoms=(0.99,), retry_initial=1, retry_max=10)
        self.assertEqual(notifier.retryDelay(0), 1.49)
        self.assertEqual(notifier.retryDelay(3), 10)
        self.assertEqual(notifier.retryDelay(20), 10)

    def test_timeoutWhileWaitingForTheAnswer(self) -> None:
        """A server that never answers fails the attempt after timeout seconds on the clock, then it is retried."""
        hook = Hook("hang")
        self.make(hook, timeout=3, retry_initial=1)
        self.notify(makeEvent())
        self.advance(2.5)
        self.assertEqual(self.notifier.outcomes, {})
        self.advance(0.5)
        self.assertEqual(self.notifier.outcomes, {"retried": 1})
        self.assertEqual(len(hook.lost), 1, "the timed-out connection is closed")
        self.advance(1)
        self.assertEqual(len(hook.requests), 2)
        self.assertEqual(self.notifier.outcomes, {"retried": 1, "delivered": 1})

    def test_timeoutCoversAStalledBody(self) -> None:
        """A 200 whose body stalls ends at the timeout (the connection dropped) and counts as delivered: the status said so."""
        hook = Hook("stall")
        self.make(hook, timeout=3, max_retries=0)
        self.notify(makeEvent(1))
        self.notify(makeEvent(2))
        self.assertEqual(hook.ids, ["evt_0001"])
        self.advance(3)
        self.assertEqual(len(hook.lost), 1)
        self.assertEqual(self.notifier.outcomes, {"delivered": 2})
        self.assertEqual(hook.ids, ["evt_0001", "evt_0002"])

    def test_clientErrorDoesNotWedgeTheQueue(self) -> None:
        """A client that raises synchronously fails that delivery; later events are still delivered."""
        hook = Hook()
        self.make(hook, max_retries=0)
        stub, calls = self.stub, []

        class Flaky:
            def request(self, method, uri, headers=None, bodyProducer=None):
                calls.append(uri)
                if len(calls) == 1:
                    raise ValueError("malformed URL")
                return stub.request(method, uri, headers, bodyProducer)

        self.notifier._agent = Flaky()
        self.notify(makeEvent(1))
        self.notify(makeEvent(2))
        self.assertEqual(self.notifier.outcomes, {"failed": 1, "delivered": 1})
        self.assertEqual(hook.ids, ["evt_0002"])


class WebhookQueueTests(WebhookTestCase):
    def test_notifyNeverBlocks(self) -> None:
        """notify() returns None at once while the receiver hangs; only the timeout is scheduled."""
        hook = Hook("hang")
        self.make(hook, timeout=5)
        event = makeEvent()
        self.assertIsNone(self.notifier.notify(event))
        self.assertIsNone(self.notifier.notify(makeEvent(2)))
        self.stub.flush()
        self.assertEqual(len(hook.requests), 1)
        [timeout] = self.clock.getDelayedCalls()
        self.assertEqual(timeout.getTime(), START + 5)

    def test_fullQueueDropsTheOldest(self) -> None:
        """With queue_size 2 and one delivery in flight, a fourth event drops the oldest waiting one."""
        hook = Hook("hang")
        self.make(hook, queue_size=2, timeout=30)
        for n in (1, 2, 3, 4):
            self.notify(makeEvent(n))
        self.assertEqual(self.notifier.outcomes, {"dropped": 1})
        metrics = {tuple(s.labels.values()): s.value
                   for f in self.notifier.collect() for s in f.samples}
        self.assertEqual(metrics[("notifiers[2]", "hooks.example.com:8080")], 2)
        hook.requests[0].request.setResponseCode(200)
        hook.requests[0].request.finish()
        self.stub.flush()
        self.assertEqual(hook.ids, ["evt_0001", "evt_0003", "evt_0004"])
        self.assertEqual(self.notifier.outcomes, {"dropped": 1, "delivered": 3})

    def test_closeDuringRetryWaitStopsDeliveriesAfterCloseTimeout(self) -> None:
        """close() while waiting to retry waits close_timeout, then drops what is left (counted): nothing scheduled, nothing sent later."""
        hook = Hook(500)
        self.make(hook, retry_initial=10, close_timeout=2)
        self.notify(makeEvent(1))
        self.notify(makeEvent(2))
        closed = self.notifier.close()
        self.assertNoResult(closed)
        self.advance(2)
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.notifier.outcomes, {"retried": 1, "dropped": 2})
        self.advance(600)
        self.notify(makeEvent(3))
        self.assertEqual(hook.ids, ["evt_0001"])
        self.assertEqual(self.notifier.outcomes, {"retried": 1, "dropped": 3})

    def test_closeDeliversWhatIsQueuedFirst(self) -> None:
        """close() with a receiver that answers delivers every queued event before it fires."""
        hook = Hook(500)
        self.make(hook, retry_initial=1, close_timeout=5)
        for n in (1, 2, 3):
            self.notify(makeEvent(n))
        closed = self.notifier.close()
        self.assertNoResult(closed)
        self.advance(1)
        self.successResultOf(closed)
        self.assertEqual(hook.ids, ["evt_0001", "evt_0001", "evt_0002", "evt_0003"])
        self.assertEqual(self.notifier.outcomes, {"retried": 1, "delivered": 3})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeAbandonsTheDeliveryInFlightAtCloseTimeout(self) -> None:
        """close() during a hanging request cancels it at close_timeout, counted as dropped, never as failed."""
        hook = Hook("hang")
        self.make(hook, timeout=30, close_timeout=1)
        self.notify(makeEvent())
        closed = self.notifier.close()
        self.advance(1)
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(hook.lost), 1)
        self.assertEqual(self.notifier.outcomes, {"dropped": 1})

    def test_closeWithNothingQueuedFiresAtOnce(self) -> None:
        """close() of an idle webhook fires at once and leaves nothing scheduled."""
        self.make(Hook())
        self.notify(makeEvent())
        self.successResultOf(self.notifier.close())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_metricsNameTheWebhookWithoutItsURL(self) -> None:
        """Delivery counters are labelled by notifier position and host, never the (secret-bearing) URL path."""
        hook = Hook(500)
        self.make(hook, max_retries=0)
        self.notify(makeEvent(1))
        self.notify(makeEvent(2))
        deliveries, cut, queued = list(self.notifier.collect())
        self.assertEqual(deliveries.name, "orchestrator_webhook_deliveries")
        self.assertEqual(deliveries.type, "counter")
        values = {s.labels["outcome"]: s.value for s in deliveries.samples}
        self.assertEqual(values, {"delivered": 1, "retried": 0, "failed": 1, "dropped": 0})
        for sample in deliveries.samples + cut.samples + queued.samples:
            self.assertEqual(sample.labels["notifier"], "notifiers[2]")
            self.assertEqual(sample.labels["host"], "hooks.example.com:8080")
            self.assertNotIn("s3cr3t", repr(sample))


class FailingDeferredNotifierTests(SynchronousTestCase):
    def test_webhookFailureNeverReachesTheBus(self) -> None:
        """Even a client failing every request leaves notify() returning None (nothing to errback)."""
        clock = Clock()
        agent = type("A", (), {"request": lambda self, *a, **kw: fail(ConnectionError("down"))})()
        notifier = WebhookNotifier(webhookConfig(max_retries=0), clock, agent=agent)
        self.assertIsNone(notifier.notify(makeEvent()))
        self.assertEqual(notifier.outcomes, {"failed": 1})


class PrometheusNotifierTests(SynchronousTestCase):
    def test_countsEventsByProcessAndType(self) -> None:
        """orchestrator_events_total counts each (process, type) pair; orchestrator-wide events have process ""."""
        notifier = PrometheusNotifier(NotifierConfig(type="prometheus"), Clock())
        for event in [makeEvent(1), makeEvent(2), makeEvent(3, type="running")]:
            notifier.notify(event)
        notifier.notify(Event(id="evt_x", type="config_reloaded", process=None, from_=None,
                              to=None, reason="", pid=None, exit_code=None, signal=None,
                              restart_count=0, attempt=0, timestamp=0.0))
        [family] = notifier.collect()
        self.assertEqual(family.name, "orchestrator_events")
        self.assertEqual(family.type, "counter")
        self.assertEqual(
            {(s.name, s.labels["process"], s.labels["type"]): s.value for s in family.samples},
            {("orchestrator_events_total", "backend", "crashed"): 2,
             ("orchestrator_events_total", "backend", "running"): 1,
             ("orchestrator_events_total", "", "config_reloaded"): 1},
        )


class WebhookDrainTests(SynchronousTestCase):
    def test_longQueueFailingAtOnceDrainsWithoutRecursion(self) -> None:
        """A full queue whose deliveries all fail synchronously drains in a loop, not by recursion."""
        clock = Clock()
        first = Deferred()
        posts = []

        class Agent:
            def request(self, method, uri, headers=None, bodyProducer=None):
                posts.append(headers.getRawHeaders(b"webhook-id")[0])
                return first if len(posts) == 1 else fail(ConnectionError("refused"))

        notifier = WebhookNotifier(webhookConfig(max_retries=0, queue_size=2000), clock,
                                   agent=Agent())
        for n in range(2001):
            notifier.notify(makeEvent(n))
        first.errback(ConnectionError("refused"))
        self.assertEqual(len(posts), 2001)
        self.assertEqual(notifier.outcomes, {"failed": 2001})
        self.assertEqual(clock.getDelayedCalls(), [])
        notifier.notify(makeEvent(9999))
        self.assertEqual(len(posts), 2002)
