"""
Built-in notifiers: C{log}, C{prometheus} and C{webhook}.

The core hands each notifier every event its C{events} filter admits, one
call at a time and under its own error handling; a notifier that is slow
(C{webhook}) queues work of its own and returns at once, so supervision
never waits for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random as _random
from collections import Counter, deque

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import stringToDatetime
from twisted.web.http_headers import Headers

from orchestrator.plugin import NotifierDisabled, hookimpl

__all__ = ["LogNotifier", "PrometheusNotifier", "WebhookNotifier", "parseRetryAfter",
           "signWebhook"]


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
    """
    @raise ValueError: a C{whsec_} secret whose rest is not base64, or an
        empty secret.
    """
    if value.startswith("whsec_"):
        try:
            secret = base64.b64decode(value[len("whsec_"):], validate=True)
        except binascii.Error as e:
            raise ValueError(f"the whsec_ secret is not valid base64 ({e})") from None
    else:
        secret = value.encode("utf-8")
    if not secret:
        raise ValueError("the secret is empty")
    return secret


def parseRetryAfter(value: str, now: float) -> float | None:
    """
    Seconds to wait according to a C{Retry-After} header value: delta
    seconds or an HTTP date (relative to C{now}); C{None} when malformed.
    """
    text = value.strip()
    if text.isdigit():
        # Python refuses to parse more than 4300 digits; a day is plenty
        # anyway, the caller caps it at retry_max.
        return float(int(text)) if len(text) <= 9 else 86400.0 * 365
    try:
        return max(0.0, stringToDatetime(text.encode("latin-1")) - now)
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeError):
        return None


class _Refused(Exception):
    """
    The receiver answered with a status other than 2xx.
    """

    def __init__(self, code: int, retryAfter: float | None) -> None:
        super().__init__(f"HTTP {code}" + (f", Retry-After {retryAfter:g}s" if retryAfter is not None else ""))
        self.code = code
        self.retryAfter = retryAfter


class WebhookNotifier:
    """
    POST each event as JSON to C{url} with Standard Webhooks headers
    (C{webhook-id}, C{webhook-timestamp}, C{webhook-signature} when
    C{secret_env} names a secret).  Deliveries go one at a time from a
    bounded queue (the oldest is dropped when it is full); a failed delivery
    is retried with exponential backoff and jitter, or after the
    C{Retry-After} a 429 or 503 asks for (capped at C{retry_max}).  A
    receiver's answer is read up to C{max_response_bytes} (status line,
    headers and body together), then its connection is aborted; every
    attempt's connection is aborted when the attempt ends or times out.
    Outcomes are counted in C{orchestrator_webhook_deliveries_total}.
    """

    name = "webhook"
    config_schema = {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "webhook: where events are POSTed."},
            "secret_env": {"type": ["string", "null"], "default": None,
                           "description": "webhook: environment (or .env) variable holding the signing secret "
                                          "(whsec_<base64> or raw). A malformed secret is a configuration error; "
                                          "an unset variable disables this notifier (logged, counted in "
                                          "orchestrator_notifier_disabled)."},
            "timeout": {"format": "duration", "minimum": 0.1, "default": 5,
                        "description": "webhook: seconds per delivery attempt (connect, answer and body); "
                                       "the connection is aborted at the timeout."},
            "max_retries": {"type": "integer", "minimum": 0, "default": 5,
                            "description": "webhook: retries after a failed attempt."},
            "retry_initial": {"format": "duration", "minimum": 0, "default": 1,
                              "description": "webhook: first retry delay (seconds), doubling, +/-50% jitter."},
            "retry_max": {"format": "duration", "minimum": 0, "default": 60,
                          "description": "webhook: cap on the retry delay (seconds), Retry-After included."},
            "queue_size": {"type": "integer", "minimum": 1, "default": 1000,
                           "description": "webhook: events waiting at most; the oldest is dropped beyond."},
            "max_response_bytes": {"type": "integer", "minimum": 1024, "maximum": 16777216, "default": 65536,
                                   "description": "webhook: bytes of a receiver's answer (status line, headers "
                                                  "and body) read at most; the connection is aborted beyond, "
                                                  "counted in orchestrator_webhook_responses_cut_total."},
            "close_timeout": {"format": "duration", "minimum": 0, "default": 5,
                              "description": "webhook: seconds a notifier removed by a reload or stopped with the "
                                             "orchestrator may take to deliver what it has queued; what is left "
                                             "then is dropped (counted, logged)."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                        "description": "webhook: extra request headers."},
        },
    }
    log = Logger()

    @staticmethod
    def check(config) -> list[str]:
        """
        Problems a configuration error should report (the core calls this
        at load and on reload): a malformed secret.
        """
        name = config.options.get("secret_env")
        value = config.env.get(name) if name else None
        if value is None:
            return []
        try:
            _secretBytes(value)
        except ValueError as e:
            return [f"notifiers[{config.index}].secret_env: {name}: {e}"]
        return []

    def __init__(self, config, reactor, agent=None, random=None, endpointFor=None) -> None:
        options = config.options
        self.url = options["url"]
        self._reactor = reactor
        self._timeout = float(options.get("timeout", 5))
        self._retries = int(options.get("max_retries", 5))
        self._initial = float(options.get("retry_initial", 1))
        self._maxDelay = float(options.get("retry_max", 60))
        self._closeTimeout = float(options.get("close_timeout", 5))
        self._headers = dict(options.get("headers", {}))
        self._random = random or _random.random
        # Metrics and logs name the webhook by its place in the list and its
        # host only: webhook URLs often carry a secret token in their path
        # (Slack, Discord) and /metrics is readable without the admin token.
        self.label = f"notifiers[{config.index}]"
        self.host = _host(self.url)
        secretName = options.get("secret_env")
        self._secret = None
        if secretName:
            value = config.env.get(secretName)
            if value is None:
                raise NotifierDisabled(f"secret_env {secretName} is not set")
            try:
                self._secret = _secretBytes(value)
            except ValueError as e:
                raise NotifierDisabled(f"secret_env {secretName}: {e}") from None
        self._queue: deque = deque()
        self._queueSize = int(options.get("queue_size", 1000))
        self.outcomes: Counter = Counter()
        self.cut: Counter = Counter()
        self._busy = False
        self._current = None
        self._currentEvent = None
        self._closed = False
        self._closing: Deferred | None = None
        self._closeCall = None
        # Here, not at import: the HTTP client stack (twisted.web.client)
        # is loaded only when a webhook is configured, and after the TLS
        # decision (orchestrator.tls).
        from orchestrator.builtin._webhookhttp import BoundedConnections, boundedAgent

        self.connections = BoundedConnections(int(options.get("max_response_bytes", 65536)))
        self._agent = agent or boundedAgent(reactor, self.connections, self._timeout,
                                            endpointFor=endpointFor)

    def notify(self, event) -> None:
        """
        Queue C{event} and return at once (never a Deferred): delivery,
        retries and their waiting happen on the reactor later.
        """
        if self._closed or self._closing is not None:
            self.outcomes["dropped"] += 1
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
            self._currentEvent = event
            self._current = d = self._deliver(event, 0)
            d.addBoth(finished.append)
            if not finished:
                d.addCallback(lambda _: self._next())
                return
        self._busy = False
        # (_currentEvent is cleared by whoever settled it: delivered, given
        # up, handed over or dropped.)
        self._current = None
        if self._closing is not None:
            self._finishClosing()

    def retryDelay(self, attempt: int, retryAfter: float | None = None) -> float:
        """
        Seconds to wait after failed attempt number C{attempt} (0 for the
        first): what the receiver's C{Retry-After} asked for if it did,
        else C{retry_initial * 2**attempt} with +/-50% jitter; capped at
        C{retry_max} either way.
        """
        if retryAfter is not None:
            return min(self._maxDelay, retryAfter)
        return min(self._maxDelay, self._initial * 2 ** attempt * (0.5 + self._random()))

    def _attempt(self, event):
        body = json.dumps(event.toJSON(), separators=(",", ":")).encode()
        timestamp = int(self._reactor.seconds())
        headers = {"content-type": "application/json", **self._headers,
                   "webhook-id": event.id, "webhook-timestamp": str(timestamp)}
        if self._secret is not None:
            headers["webhook-signature"] = signWebhook(self._secret, event.id, timestamp, body)
        from orchestrator.builtin._webhookhttp import BytesProducer, discardBody

        overflows = self.connections.overflows
        answer: dict = {}
        d = self._agent.request(
            b"POST", self.url.encode("utf-8"),
            Headers({k.encode("utf-8"): [v.encode("utf-8")] for k, v in headers.items()}),
            BytesProducer(body))

        def answered(response):
            answer["code"] = response.code
            answer["retryAfter"] = response.headers.getRawHeaders(b"retry-after", [None])[-1]
            return discardBody(response)

        def ended(result):
            # Whatever happened, nothing of this attempt stays connected.
            if self.connections.abortAll() and isinstance(result, Failure):
                self.cut["timeout"] += 1
            if self.connections.overflows > overflows:
                self.cut["too_large"] += 1
            code = answer.get("code")
            if code is None:
                return result  # no answer: the failure says why
            if 200 <= code < 300:
                return None  # the receiver has the event, whatever its body did
            retryAfter = None
            if code in (429, 503) and answer["retryAfter"] is not None:
                retryAfter = parseRetryAfter(answer["retryAfter"].decode("latin-1"),
                                             self._reactor.seconds())
            raise _Refused(code, retryAfter)

        return d.addCallback(answered).addBoth(ended)

    def _deliver(self, event, attempt: int):
        # maybeDeferred: a client that raises (a malformed URL) must fail
        # this delivery, not wedge the queue with _busy set forever.
        d = maybeDeferred(self._attempt, event)
        # The timeout covers the whole attempt, the body included: a server
        # that sends headers and then stalls must not hold the queue.
        d.addTimeout(self._timeout, self._reactor)

        def delivered(_):
            self.outcomes["delivered"] += 1
            self._currentEvent = None

        def failed(failure):
            if self._closed:
                return None
            if attempt >= self._retries:
                self.outcomes["failed"] += 1
                self._currentEvent = None
                self.log.warn(
                    "webhook {notifier} ({host}): giving up on event {id} after {n} attempts: {why}",
                    notifier=self.label, host=self.host, id=event.id, n=attempt + 1,
                    why=failure.getErrorMessage(),
                )
                return None
            self.outcomes["retried"] += 1
            retryAfter = failure.value.retryAfter if failure.check(_Refused) else None
            delay = self.retryDelay(attempt, retryAfter)
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

    def collect(self):
        family = CounterMetricFamily(
            "orchestrator_webhook_deliveries", "Webhook deliveries by outcome.",
            labels=["notifier", "host", "outcome"],
        )
        for outcome in ("delivered", "retried", "failed", "dropped"):
            family.add_metric([self.label, self.host, outcome], self.outcomes[outcome])
        yield family
        cut = CounterMetricFamily(
            "orchestrator_webhook_responses_cut",
            "Receiver connections aborted: answer over max_response_bytes, or still open at the timeout.",
            labels=["notifier", "host", "reason"],
        )
        for reason in ("too_large", "timeout"):
            cut.add_metric([self.label, self.host, reason], self.cut[reason])
        yield cut
        queued = GaugeMetricFamily(
            "orchestrator_webhook_queue_length", "Events waiting for delivery.",
            labels=["notifier", "host"],
        )
        queued.add_metric([self.label, self.host], len(self._queue))
        yield queued

    @property
    def pending(self) -> int:
        """
        Events not delivered yet: queued, and the one in flight.
        """
        return len(self._queue) + (self._currentEvent is not None)

    def handOver(self) -> list:
        """
        Stop, and return every event not confirmed delivered, oldest first
        (the one in flight included: it may reach the receiver twice,
        never zero times), for the notifier that replaces this one.
        """
        self._closed = True
        if self._current is not None:
            self._current.cancel()
        events = ([self._currentEvent] if self._currentEvent is not None else []) + list(self._queue)
        self._queue.clear()
        self._currentEvent = None
        self.connections.abortAll()
        return events

    def close(self) -> Deferred:
        """
        Accept no more events and deliver what is queued, for at most
        C{close_timeout} seconds; then drop what is left (counted as
        C{dropped}, logged) and leave nothing scheduled or connected.

        @return: a Deferred firing when it is done.
        """
        if self._closing is not None:
            return _chain(self._closing)
        self._closing = Deferred()
        if not self._busy or self._closed:
            self._finishClosing()
        else:
            self._closeCall = self._reactor.callLater(self._closeTimeout, self._abandon)
        return _chain(self._closing)

    def _abandon(self) -> None:
        self._closeCall = None
        left = self.pending
        self.outcomes["dropped"] += left
        self.log.warn("webhook {notifier} ({host}): closed with {n} event(s) undelivered after "
                      "{timeout:g}s; dropped", notifier=self.label, host=self.host, n=left,
                      timeout=self._closeTimeout)
        self._closed = True
        self._queue.clear()
        self._currentEvent = None
        if self._current is not None:
            # Also when it already "fired" into a chained retry wait: then
            # cancel() reaches the waiting Deferred and its delayed call.
            self._current.cancel()
        self._finishClosing()

    def _finishClosing(self) -> None:
        self._closed = True
        if self._closeCall is not None:
            self._closeCall.cancel()
            self._closeCall = None
        self.connections.abortAll()
        closing = self._closing
        if closing is not None and not closing.called:
            closing.callback(None)


def _chain(d: Deferred) -> Deferred:
    result = Deferred()
    d.addBoth(lambda r: (result.callback(r), r)[1])
    return result


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
