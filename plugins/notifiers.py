"""
Built-in notifiers: C{log}, C{prometheus} and C{webhook}.

The core hands each notifier every event its C{events} filter admits, one
call at a time and under its own error handling; a notifier that is slow
(C{webhook}) queues work of its own and returns at once, so supervision
never waits for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random as _random
from collections import Counter, deque

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from orchestrator.plugin import hookimpl

__all__ = ["LogNotifier", "PrometheusNotifier", "WebhookNotifier", "signWebhook"]


class LogNotifier:
    """
    Write each event to the orchestrator's log (text or JSON lines, as
    C{logging.format} says), with every event field attached.
    """

    name = "log"
    config_schema = {
        "type": "object",
        "properties": {
            "level": {"enum": ["debug", "info", "warn", "error"], "default": "info",
                      "description": "log notifier: level the events are logged at."},
        },
    }

    def __init__(self, config, reactor) -> None:
        self._level = config.options.get("level", "info")
        # An instance attribute: a Logger class attribute is a descriptor
        # that would replace this namespace with "orchestrator.builtin.notifiers.LogNotifier".
        self.log = Logger(namespace="orchestrator.events", source=self)

    def notify(self, event) -> None:
        emit = getattr(self.log, self._level)
        fields = event.toJSON()
        fields["event_type"] = fields.pop("type")
        fields["event_id"] = fields.pop("id")
        fields["from_status"] = fields.pop("from")
        fields["to_status"] = fields.pop("to")
        emit(
            "event {event_type}: {process} {from_status} -> {to_status}"
            + (" ({reason})" if event.reason else ""),
            **fields,
        )


class PrometheusNotifier:
    """
    Count events by process and type (C{orchestrator_events_total}) for
    C{/metrics}; process state gauges are computed at scrape time by the
    core's collector.
    """

    name = "prometheus"
    config_schema: dict = {"type": "object", "properties": {}}

    def __init__(self, config, reactor) -> None:
        self._counts: Counter = Counter()

    def notify(self, event) -> None:
        self._counts[(event.process or "", event.type)] += 1

    def collect(self):
        family = CounterMetricFamily(
            "orchestrator_events", "Events emitted, by process and type.",
            labels=["process", "type"],
        )
        for (process, kind), count in sorted(self._counts.items()):
            family.add_metric([process, kind], count)
        yield family


def signWebhook(secret: bytes, messageId: str, timestamp: int, body: bytes) -> str:
    """
    The Standard Webhooks signature header value: C{v1,<base64 HMAC-SHA256
    of "id.timestamp.body">}.
    """
    signed = f"{messageId}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _secretBytes(value: str) -> bytes:
    if value.startswith("whsec_"):
        return base64.b64decode(value[len("whsec_"):])
    return value.encode("utf-8")


class WebhookNotifier:
    """
    POST each event as JSON to C{url} with Standard Webhooks headers
    (C{webhook-id}, C{webhook-timestamp}, C{webhook-signature} when
    C{secret_env} names a secret).  Deliveries go one at a time from a
    bounded queue (the oldest is dropped when it is full); a failed delivery
    is retried with exponential backoff and jitter.  Outcomes are counted in
    C{orchestrator_webhook_deliveries_total}.
    """

    name = "webhook"
    config_schema = {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "webhook: where events are POSTed."},
            "secret_env": {"type": ["string", "null"], "default": None,
                           "description": "webhook: environment (or .env) variable holding the signing secret (whsec_<base64> or raw)."},
            "timeout": {"format": "duration", "minimum": 0.1, "default": 5,
                        "description": "webhook: seconds per delivery attempt."},
            "max_retries": {"type": "integer", "minimum": 0, "default": 5,
                            "description": "webhook: retries after a failed attempt."},
            "retry_initial": {"format": "duration", "minimum": 0, "default": 1,
                              "description": "webhook: first retry delay (seconds), doubling, +/-50% jitter."},
            "retry_max": {"format": "duration", "minimum": 0, "default": 60,
                          "description": "webhook: cap on the retry delay (seconds)."},
            "queue_size": {"type": "integer", "minimum": 1, "default": 1000,
                           "description": "webhook: events waiting at most; the oldest is dropped beyond."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                        "description": "webhook: extra request headers."},
        },
    }
    log = Logger()

    def __init__(self, config, reactor, client=None, random=None) -> None:
        options = config.options
        self.url = options["url"]
        self._reactor = reactor
        self._timeout = float(options.get("timeout", 5))
        self._retries = int(options.get("max_retries", 5))
        self._initial = float(options.get("retry_initial", 1))
        self._maxDelay = float(options.get("retry_max", 60))
        self._headers = dict(options.get("headers", {}))
        self._random = random or _random.random
        secretName = options.get("secret_env")
        secret = config.env.get(secretName) if secretName else None
        self._secret = _secretBytes(secret) if secret else None
        self._queue: deque = deque()
        self._queueSize = int(options.get("queue_size", 1000))
        self.outcomes: Counter = Counter()
        self._busy = False
        self._current = None
        self._closed = False
        if client is None:
            import treq

            client = treq
        self._client = client
        # Metrics and logs name the webhook by its place in the list and its
        # host only: webhook URLs often carry a secret token in their path
        # (Slack, Discord) and /metrics is readable without the admin token.
        self.label = f"notifiers[{config.index}]"
        self.host = _host(self.url)

    def notify(self, event) -> None:
        """
        Queue C{event} and return at once (never a Deferred): delivery,
        retries and their waiting happen on the reactor later.
        """
        if self._closed:
            return
        if len(self._queue) >= self._queueSize:
            self._queue.popleft()
            self.outcomes["dropped"] += 1
        self._queue.append(event)
        if not self._busy:
            self._next()

    def _next(self) -> None:
        # A loop, not recursion through callbacks: deliveries that end at
        # once (a client failing synchronously) would otherwise nest one
        # stack frame set per queued event and overflow on a long queue.
        while self._queue and not self._closed:
            self._busy = True
            event = self._queue.popleft()
            finished: list = []
            self._current = d = self._deliver(event, 0)
            d.addBoth(finished.append)
            if not finished:
                d.addCallback(lambda _: self._next())
                return
        self._busy = False
        self._current = None

    def retryDelay(self, attempt: int) -> float:
        """
        Seconds to wait after failed attempt number C{attempt} (0 for the
        first): C{retry_initial * 2**attempt} with +/-50% jitter, capped at
        C{retry_max}.
        """
        return min(self._maxDelay, self._initial * 2 ** attempt * (0.5 + self._random()))

    def _attempt(self, event):
        body = json.dumps(event.toJSON(), separators=(",", ":")).encode()
        timestamp = int(self._reactor.seconds())
        headers = {"content-type": "application/json", **self._headers,
                   "webhook-id": event.id, "webhook-timestamp": str(timestamp)}
        if self._secret is not None:
            headers["webhook-signature"] = signWebhook(self._secret, event.id, timestamp, body)
        d = self._client.post(self.url, headers=headers, data=body, **self._clientOptions())

        def answered(response):
            content = getattr(response, "content", None)
            d2 = content() if content is not None else succeed(None)

            def judged(_):
                if not 200 <= response.code < 300:
                    raise RuntimeError(f"HTTP {response.code}")

            return d2.addCallback(judged)

        return d.addCallback(answered)

    def _deliver(self, event, attempt: int):
        # maybeDeferred: a client that raises (a malformed URL) must fail
        # this delivery, not wedge the queue with _busy set forever.
        d = maybeDeferred(self._attempt, event)
        # The timeout covers the whole attempt, the body included: a server
        # that sends headers and then stalls must not hold the queue.
        d.addTimeout(self._timeout, self._reactor)

        def delivered(_):
            self.outcomes["delivered"] += 1

        def failed(failure):
            if self._closed:
                return None
            if attempt >= self._retries:
                self.outcomes["failed"] += 1
                self.log.warn(
                    "webhook {notifier} ({host}): giving up on event {id} after {n} attempts: {why}",
                    notifier=self.label, host=self.host, id=event.id, n=attempt + 1,
                    why=failure.getErrorMessage(),
                )
                return None
            self.outcomes["retried"] += 1
            delay = self.retryDelay(attempt)
            self.log.info(
                "webhook {notifier} ({host}): attempt {n} for event {id} failed ({why}); "
                "retrying in {delay:.3g}s",
                notifier=self.label, host=self.host, id=event.id, n=attempt + 1,
                why=failure.getErrorMessage(), delay=delay,
            )
            return deferLater(self._reactor, delay, lambda: None).addCallback(
                lambda _: None if self._closed else self._deliver(event, attempt + 1)
            )

        return d.addCallbacks(delivered, failed)

    def _clientOptions(self) -> dict:
        import treq

        return {"reactor": self._reactor} if self._client is treq else {}

    def collect(self):
        family = CounterMetricFamily(
            "orchestrator_webhook_deliveries", "Webhook deliveries by outcome.",
            labels=["notifier", "host", "outcome"],
        )
        for outcome in ("delivered", "retried", "failed", "dropped"):
            family.add_metric([self.label, self.host, outcome], self.outcomes[outcome])
        yield family
        queued = GaugeMetricFamily(
            "orchestrator_webhook_queue_length", "Events waiting for delivery.",
            labels=["notifier", "host"],
        )
        queued.add_metric([self.label, self.host], len(self._queue))
        yield queued

    def close(self):
        """
        Stop delivering; a delivery in flight (or waiting to retry) is
        abandoned and nothing is left scheduled on the reactor.
        """
        self._closed = True
        self._queue.clear()
        if self._current is not None:
            # Also when it already "fired" into a chained retry wait: then
            # cancel() reaches the waiting Deferred and its delayed call.
            self._current.cancel()


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return ""


@hookimpl
def register_notifiers():
    return [LogNotifier, PrometheusNotifier, WebhookNotifier]
