"""
Serialising the commands an operator sends to one process.

Start, stop and restart arrive over the API at any time; two at once must
never double-spawn.  L{CommandQueue} runs them one after another, and lets
a stop jump the queue: a start waiting for readiness (up to
C{start_timeout}, or for ever) or a restart pausing between its stop and
start is interrupted (its caller gets a L{StateError}, a 409) so the stop
runs now.

Restarts coalesce (L{CommandQueue.runShared}): five operators pressing
restart at once get one restart and its one outcome, not five restarts
in a row, the last answered minutes later.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredLock

from orchestrator._deferreds import fireAll
from orchestrator.errors import StateError

__all__ = ["CommandQueue"]


class CommandQueue:
    """
    One process's commands, one at a time.

    @ivar interruptedBy: why the command in progress was interrupted, or
        C{None}.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = DeferredLock()
        self._readyWaiters: list[Deferred] = []
        self._shared: dict[str, list[Deferred]] = {}
        self.interruptedBy: str | None = None

    @property
    def busy(self) -> bool:
        """
        Whether a command is in progress (automatic restarts then wait:
        the command decides what happens next).
        """
        return self._lock.locked

    def run(self, f: Callable[..., Any], *args) -> Deferred:
        """
        Run C{f(*args)} once every earlier command is done.
        """
        return self._lock.run(self._fresh, f, *args)

    def runShared(self, key: str, f: Callable[..., Any], *args) -> tuple[Deferred, bool]:
        """
        Like L{run}, except that while a command run under C{key} is
        queued or in progress, asking again joins it instead of queueing
        another one: every caller gets that command's outcome.

        @return: the Deferred of the outcome, and whether it joined a
            command already there.
        """
        waiters = self._shared.get(key)
        if waiters is not None:
            d = Deferred()
            waiters.append(d)
            return d, True
        waiters = self._shared[key] = []

        def settle(result):
            if self._shared.get(key) is waiters:
                del self._shared[key]
            return fireAll(waiters, result)

        return self.run(f, *args).addBoth(settle), False

    def forget(self, key: str) -> None:
        """
        A later request under C{key} starts a new command rather than
        joining the one there (a stop or start came in between: a restart
        asked after it must restart after it).
        """
        self._shared.pop(key, None)

    def _fresh(self, f, *args):
        self.interruptedBy = None
        return f(*args)

    def waitReady(self) -> Deferred:
        """
        A Deferred fired by L{ready} or L{failed}.
        """
        d = Deferred()
        self._readyWaiters.append(d)
        return d

    def ready(self, result) -> None:
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.callback(result)

    def failed(self, error: Exception) -> None:
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.errback(error)

    def interrupt(self, why: str) -> None:
        """
        Fail a start waiting for readiness, so a queued stop can run.
        """
        self.interruptedBy = why
        self.failed(StateError(f"{self._name}: interrupted before it was ready ({why})"))
