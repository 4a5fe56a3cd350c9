"""
Events: every transition and action of a supervised process, as a value,
and the bus that hands each one to every notifier without letting one
notifier's failure or slowness reach another or the supervision itself.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

__all__ = ["Event", "EventBus", "EVENT_TYPES"]

#: Every event type the core emits.
EVENT_TYPES = (
    "starting",          # a child was spawned
    "running",           # it became ready (first probe success, or ready_after)
    "unhealthy",         # failure_threshold consecutive probe failures
    "crashed",           # it exited while meant to run, or failed to start
    "exited",            # it exited cleanly and the policy does not restart it
    "restart_scheduled", # an automatic restart is due in `delay` seconds
    "gave_up",           # automatic restarts stopped (cap reached or policy)
    "stopping",          # a stop signal was sent
    "stopped",           # it is gone after a stop
    "spawn_failed",      # it could not be spawned at all
    "dependency_failed", # a dependency failed its condition for good: not started
    "restarted",         # a restart ordered through the API completed
    "config_reloaded",   # a new configuration was applied
    "config_rejected",   # a reload found errors; the old one keeps running
)


@dataclass(frozen=True)
class Event:
    """
    One thing that happened.

    @ivar id: unique id (also the webhook-id of deliveries).
    @ivar type: one of L{EVENT_TYPES}.
    @ivar process: the process's name, or C{None} for orchestrator-wide events.
    @ivar from_: the status before (C{"from"} in JSON).
    @ivar to: the status after.
    @ivar reason: a short human explanation.
    @ivar timestamp: seconds since the epoch (the reactor's clock).
    @ivar output: the child's last output lines, on C{gave_up} (bounded by
        the emitter).
    """

    id: str
    type: str
    process: str | None
    from_: str | None
    to: str | None
    reason: str
    pid: int | None
    exit_code: int | None
    signal: int | None
    restart_count: int
    attempt: int
    timestamp: float
    sequence: int = 0
    output: tuple[str, ...] = ()

    def toJSON(self) -> dict[str, Any]:
        """
        The event as the API, the log and webhooks show it.
        """
        data = asdict(self)
        data["from"] = data.pop("from_")
        data["output"] = list(self.output)
        return data


class EventBus:
    """
    Hands events to notifiers and subscribers, and keeps the recent ones.

    @ivar recent: the last C{keep} events, oldest first.
    """

    log = Logger()

    def __init__(self, clock, keep: int = 500) -> None:
        self._clock = clock
        self._sequence = itertools.count(1)
        self.recent: deque[Event] = deque(maxlen=keep)
        self.emitted = 0
        self._notifiers: list[tuple[Any, Any]] = []  # (notifier, allowed types or None)
        self._subscribers: list[Callable[[Event], None]] = []
        self._pending: deque[Event] = deque()
        self._delivering = False

    def setNotifiers(self, notifiers: Iterable[tuple[Any, Any]]) -> None:
        """
        Replace the notifiers: pairs of C{(notifier, eventTypes or None)}.
        """
        self._notifiers = list(notifiers)

    @property
    def notifiers(self) -> list:
        return [n for n, _ in self._notifiers]

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """
        Call C{callback} with every later event (the API's event stream).

        @return: a function that unsubscribes.
        """
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def emit(self, type: str, process: str | None, *, from_=None, to=None, reason="",
             pid=None, exit_code=None, signal=None, restart_count=0, attempt=0,
             output=()) -> Event:
        """
        Create an event and deliver it to every notifier, then every
        subscriber.  Delivery is never re-entrant: an event emitted while
        one is being delivered (the supervisor starting a dependent when
        it sees C{running}) is queued and delivered right after, so every
        notifier and subscriber sees events in C{sequence} order.
        """
        event = Event(
            id="evt_" + uuid.uuid4().hex,
            type=type,
            process=process,
            from_=from_,
            to=to,
            reason=reason,
            pid=pid,
            exit_code=exit_code,
            signal=signal,
            restart_count=restart_count,
            attempt=attempt,
            timestamp=self._clock.seconds(),
            sequence=next(self._sequence),
            output=tuple(output),
        )
        self.recent.append(event)
        self.emitted += 1
        self._pending.append(event)
        if self._delivering:
            # A subscriber emitted while handling an event: this one waits
            # until every subscriber has seen the earlier ones, so all of
            # them see events in sequence order.
            return event
        self._delivering = True
        try:
            while self._pending:
                self._deliver(self._pending.popleft())
        finally:
            self._delivering = False
        return event

    def _deliver(self, event: Event) -> None:
        for notifier, types in list(self._notifiers):
            if types is not None and event.type not in types:
                continue
            d = maybeDeferred(notifier.notify, event)
            d.addErrback(self._notifierFailed, notifier, event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                self.log.failure("event subscriber {callback!r} failed", callback=callback)

    def _notifierFailed(self, failure, notifier, event) -> None:
        self.log.failure(
            "notifier {notifier} failed on event {type} of {process}",
            failure,
            notifier=getattr(notifier, "name", type(notifier).__name__),
            type=event.type,
            process=event.process,
        )
