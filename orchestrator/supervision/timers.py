"""
The timers of one process, owned in one place.

A process has a handful of pending calls at most (the restart pause, the
SIGKILL escalation after a stop signal, readiness after C{ready_after},
the reset of the restart window, the pause of an API restart).  Keeping
each in an attribute and cancelling it by name made it easy to forget one
(a SIGKILL meant for the previous child reaching the next) and hard to
prove that nothing is left after a stop.  L{Timers} keeps them by name:
starting one replaces the pending one of that name, a fired one forgets
itself, and L{Timers.cancelAll} leaves nothing behind.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred

__all__ = ["Timers"]


class Timers:
    """
    Named delayed calls on an injected clock.

    @param clock: provides C{seconds()} and C{callLater()}.
    """

    def __init__(self, clock) -> None:
        self._clock = clock
        self._calls: dict[str, Any] = {}
        self._sleepers: dict[str, Deferred] = {}

    def start(self, name: str, delay: float, f: Callable, *args) -> None:
        """
        Call C{f(*args)} after C{delay} seconds, replacing a pending timer
        of the same name.
        """
        self.cancel(name)
        self._calls[name] = self._clock.callLater(max(0.0, delay), self._fire, name, f, args)

    def sleep(self, name: str, delay: float) -> Deferred:
        """
        A Deferred firing with C{None} after C{delay} seconds; cancelling
        the timer (or the Deferred) errbacks it with C{CancelledError}.
        """
        d = Deferred(lambda _: self._drop(name))
        self.start(name, delay, self._wake, name, d)
        self._sleepers[name] = d
        return d

    def _wake(self, name: str, d: Deferred) -> None:
        self._sleepers.pop(name, None)
        d.callback(None)

    def _fire(self, name: str, f: Callable, args) -> None:
        self._calls.pop(name, None)
        f(*args)

    def _drop(self, name: str) -> None:
        self._sleepers.pop(name, None)
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def cancel(self, name: str) -> bool:
        """
        Cancel the pending timer C{name}.

        @return: whether one was pending.
        """
        sleeper = self._sleepers.pop(name, None)
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()
        if sleeper is not None:
            sleeper.cancel()
        return call is not None

    def fireDue(self, name: str) -> bool:
        """
        Call the pending timer C{name} now if its time has come (it was
        started with a delay of 0), rather than at the reactor's next
        turn, after everything else ready in this one.

        @return: whether it was called.
        """
        call = self._calls.get(name)
        if call is None or not call.active() or call.getTime() > self._clock.seconds():
            return False
        del self._calls[name]
        f, args, kw = call.func, call.args, call.kw  # (cancel() drops them)
        call.cancel()
        f(*args, **kw)
        return True

    def cancelAll(self) -> None:
        for name in list(self._calls):
            self.cancel(name)

    def active(self, name: str) -> bool:
        return name in self._calls

    def remaining(self, name: str) -> float | None:
        """
        Seconds until timer C{name} fires, or C{None} if none is pending.
        """
        call = self._calls.get(name)
        if call is None:
            return None
        return max(0.0, call.getTime() - self._clock.seconds())

    @property
    def pending(self) -> list[str]:
        """
        The names of the pending timers (for tests and diagnostics).
        """
        return sorted(self._calls)
