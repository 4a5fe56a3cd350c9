"""
The configured notifiers, built when the service starts and diffed on
each reload, like buildbot's reconfigurable services.

A notifier is identified by its configuration: its place in the list, its
kind, its C{events} filter, its options, and the values of the variables
its C{*_env} options name (a changed secret is a changed notifier).  On a
reload an unchanged notifier is kept as it is (queue, counters,
connections), also when it only moved in the list; a changed one is replaced by a new one built first, to
which the old one hands over what it has not delivered (C{handOver()}),
or, when it cannot, which it finishes itself while closing; a removed one
is closed gracefully (C{close()}, bounded).  Counters survive all of it:
what a notifier counted is folded into a store that outlives it when it
is closed, and every scrape adds that store to the live notifiers'
samples, so no C{_total} series ever goes down.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger, LogLevel

from orchestrator.errors import ConfigError

__all__ = ["NotifierDisabled", "NotifierSet", "checkNotifiers", "CLOSE_LIMIT", "RETIRED_SERIES_LIMIT"]

#: Seconds the core waits at most for a notifier's C{close()} (a
#: third-party one that never fires must not hold a reload or the
#: shutdown forever); the built-in webhook's own C{close_timeout} is
#: shorter.
CLOSE_LIMIT = 60.0

#: Counter series of closed notifiers kept for their monotonicity; a new
#: one beyond this is not kept (logged), so endless reloads with
#: ever-new labels cannot grow memory without bound.
RETIRED_SERIES_LIMIT = 10_000

#: Metric types whose samples only grow and are kept after a notifier goes.
_MONOTONIC = ("counter", "histogram", "summary")


class NotifierDisabled(Exception):
    """
    Raised by a notifier kind's constructor when it cannot run with what it
    was given (the variable its secret comes from is unset): the core logs
    the reason as one error line, without a traceback, sets
    C{orchestrator_notifier_disabled} and runs without that notifier.
    """


def checkNotifiers(config, kinds) -> None:
    """
    Ask each notifier kind with a C{check(config)} what is wrong with its
    configuration (a malformed secret), before anything is built.

    @raise ConfigError: with every problem found.
    """
    problems: list[str] = []
    for nconfig in config.notifiers:
        check = getattr(kinds.notifiers.get(nconfig.type), "check", None)
        if check is None:
            continue
        try:
            problems.extend(check(nconfig) or [])
        except Exception as e:
            problems.append(f"notifiers[{nconfig.index}]: checking its configuration failed: {e!r}")
    if problems:
        raise ConfigError(problems)


def _identity(nconfig, kind) -> tuple:
    # The values of *_env options are part of the identity (a rotated
    # secret must rebuild the notifier), as digests, not copies.
    envValues = tuple(
        (key, hashlib.sha256(nconfig.env[value].encode()).hexdigest() if value in nconfig.env else None)
        for key, value in sorted(nconfig.options.items())
        if key.endswith("_env") and isinstance(value, str))
    return (nconfig.index, nconfig.type, kind, nconfig.events, nconfig.options, envValues)


@dataclass(eq=False)
class _Entry:
    """
    One configured notifier: what it was built from and the object (or
    C{None} when it could not be built: then C{disabled} says why).
    """

    config: Any
    identity: tuple
    notifier: Any = None
    disabled: str | None = None
    types: frozenset | None = field(default=None)
    done: Deferred | None = None

    @property
    def label(self) -> str:
        return f"notifiers[{self.config.index}]"


class NotifierSet:
    """
    The notifiers of one orchestrator, handed to its L{EventBus}.

    @ivar factory: C{factory(kind, config, reactor)} -> a notifier; tests
        set it before the service starts to build notifiers their way.
    """

    log = Logger()

    def __init__(self, bus, reactor) -> None:
        self._bus = bus
        self._reactor = reactor
        self._entries: list[_Entry] = []
        self._closing: list[_Entry] = []
        self._retired: dict[tuple, dict[tuple, float]] = {}
        self._retiredSeries = 0
        self.factory: Callable = lambda kind, nconfig, reactor: kind(nconfig, reactor)

    @property
    def notifiers(self) -> list:
        """
        The running notifiers, in configuration order.
        """
        return [e.notifier for e in self._entries if e.notifier is not None]

    def start(self, config, kinds) -> None:
        """
        Build every configured notifier and hand them to the bus.
        """
        self._entries = [self._build(n, kinds) for n in config.notifiers]
        self._publish()

    def apply(self, config, kinds) -> dict[str, list[str]]:
        """
        Diff the notifiers against a new configuration (see the module).

        @return: labels by outcome: C{kept}, C{replaced}, C{added},
            C{removed}.
        """
        summary: dict[str, list[str]] = {"kept": [], "replaced": [], "added": [], "removed": []}
        wanted = [(n, _identity(n, kinds.notifiers.get(n.type))) for n in config.notifiers]
        unmatched = list(self._entries)
        chosen: dict[int, _Entry] = {}
        # Kept: the same configuration at the same place, then the same
        # configuration that moved because a notifier before it was added or
        # removed (its identity but for the index).  A moved one keeps the
        # metric labels it was built with, so its series go on unbroken.
        for samePlace in (True, False):
            for position, (nconfig, identity) in enumerate(wanted):
                if position in chosen:
                    continue
                match = next((e for e in unmatched if (e.identity == identity if samePlace
                                                        else e.identity[1:] == identity[1:])), None)
                if match is not None:
                    chosen[position] = match
                    unmatched.remove(match)
        entries = []
        for position, (nconfig, identity) in enumerate(wanted):
            previous = chosen.get(position)
            if previous is not None:
                label = previous.label
                previous.config, previous.identity = nconfig, identity
                entries.append(previous)
                summary["kept"].append(label if label == previous.label
                                       else f"{label} (now {previous.label})")
                continue
            entry = self._build(nconfig, kinds)
            entries.append(entry)
            previous = next((e for e in unmatched if e.config.index == nconfig.index), None)
            if previous is None:
                summary["added"].append(entry.label)
                continue
            unmatched.remove(previous)
            summary["replaced"].append(entry.label)
            self._handOver(previous, entry)
            self._retire(previous)
        for previous in unmatched:
            summary["removed"].append(previous.label)
            self._retire(previous)
        self._entries = entries
        self._publish()
        return summary

    def close(self) -> Deferred:
        """
        Close every notifier gracefully (the orchestrator stops).

        @return: a Deferred firing when all are closed, each bounded.
        """
        entries, self._entries = self._entries, []
        self._publish()
        for entry in entries:
            self._retire(entry)
        return self.closed()

    def closed(self) -> Deferred:
        """
        @return: a Deferred firing when every notifier being closed is.
        """
        return DeferredList([self._waitClosed(e) for e in list(self._closing)]).addCallback(lambda _: None)

    # -- building and retiring ------------------------------------------------

    def _build(self, nconfig, kinds) -> _Entry:
        kind = kinds.notifiers[nconfig.type]
        entry = _Entry(config=nconfig, identity=_identity(nconfig, kind),
                       types=frozenset(nconfig.events) if nconfig.events is not None else None)
        try:
            notifier = self.factory(kind, nconfig, self._reactor)
        except NotifierDisabled as e:
            entry.disabled = str(e)
            self.log.error("notifier {type} ({label}) disabled: {why}",
                           type=nconfig.type, label=entry.label, why=entry.disabled)
            return entry
        except Exception as e:
            entry.disabled = f"failed to start: {e!r}"
            self.log.failure("notifier {type} ({label}) disabled: it failed to start",
                             type=nconfig.type, label=entry.label, level=LogLevel.error)
            return entry
        if not hasattr(notifier, "name"):
            notifier.name = nconfig.type
        entry.notifier = notifier
        return entry

    def _publish(self) -> None:
        self._bus.setNotifiers([(e.notifier, e.types) for e in self._entries if e.notifier is not None])

    def _handOver(self, previous: _Entry, entry: _Entry) -> None:
        old, new = previous.notifier, entry.notifier
        if old is None or new is None or previous.config.type != entry.config.type:
            return
        handOver = getattr(old, "handOver", None)
        if handOver is None:
            return  # it finishes its queue while closing
        try:
            events = list(handOver())
        except Exception:
            self.log.failure("notifier {label} failed to hand over its queue", label=previous.label,
                             level=LogLevel.error)
            return
        for event in events:
            maybeDeferred(new.notify, event).addErrback(
                lambda f: self.log.failure("notifier {label} failed on a handed-over event", f,
                                           label=entry.label, level=LogLevel.error))
        if events:
            self.log.info("notifier {label}: {n} undelivered event(s) handed over to its replacement",
                          label=entry.label, n=len(events))

    def _retire(self, entry: _Entry) -> None:
        notifier = entry.notifier
        if notifier is None:
            return
        close = getattr(notifier, "close", None)
        d = maybeDeferred(close) if close is not None else succeed(None)
        d.addTimeout(CLOSE_LIMIT, self._reactor)
        d.addErrback(lambda f: self.log.failure("notifier {label} failed to close", f,
                                                label=entry.label, level=LogLevel.error))
        entry.done = d.addBoth(lambda _: self._fold(entry))
        if not entry.done.called:
            self._closing.append(entry)

    def _waitClosed(self, entry: _Entry) -> Deferred:
        waiter: Deferred = Deferred()
        entry.done.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter

    def _fold(self, entry: _Entry) -> None:
        # Its counters join the store that outlives it; from now on only the
        # store reports them.
        if entry in self._closing:
            self._closing.remove(entry)
        for family in self._familiesOf(entry):
            if family.type not in _MONOTONIC:
                continue
            series = self._retired.setdefault((family.name, family.type, family.documentation), {})
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in series:
                    if self._retiredSeries >= RETIRED_SERIES_LIMIT:
                        self.log.warn("metric series {name}{labels} of a closed notifier not kept: "
                                      "{n} series kept already", name=sample.name,
                                      labels=dict(key[1]), n=RETIRED_SERIES_LIMIT)
                        continue
                    self._retiredSeries += 1
                    series[key] = 0.0
                series[key] += sample.value

    # -- metrics ------------------------------------------------------------------

    def _familiesOf(self, entry: _Entry) -> list:
        collect = getattr(entry.notifier, "collect", None)
        if collect is None:
            return []
        try:
            return list(collect())
        except Exception:
            self.log.failure("notifier {name} failed to collect metrics",
                             name=getattr(entry.notifier, "name", entry.label), level=LogLevel.error)
            return []

    def collect(self):
        """
        The notifiers' metric families, merged by name: samples with the
        same name and labels (a notifier and its replacement, a live one
        and what closed ones counted) are summed.
        """
        merged: dict[str, tuple[Metric, dict]] = {}

        def add(name, type_, documentation, samples):
            family = merged.get(name)
            if family is None:
                family = merged[name] = (Metric(name, documentation, type_), defaultdict(float))
            elif family[0].type != type_:
                self.log.warn("metric family {name} yielded with different types ({a}, {b}); "
                              "the second is dropped", name=name, a=family[0].type, b=type_)
                return
            for sampleName, labels, value in samples:
                family[1][(sampleName, labels)] += value

        for entry in self._entries + self._closing:
            for family in self._familiesOf(entry):
                add(family.name, family.type, family.documentation,
                    ((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples))
        for (name, type_, documentation), series in self._retired.items():
            add(name, type_, documentation, ((s, labels, v) for (s, labels), v in series.items()))
        disabled = GaugeMetricFamily(
            "orchestrator_notifier_disabled",
            "1 for each configured notifier that could not start (see the log for why).",
            labels=["notifier", "type"])
        for entry in self._entries:
            if entry.disabled is not None:
                disabled.add_metric([entry.label, entry.config.type], 1.0)
        yield disabled
        for family, samples in merged.values():
            for (sampleName, labels), value in samples.items():
                family.add_sample(sampleName, dict(labels), value)
            yield family
