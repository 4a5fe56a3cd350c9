"""
Keeping Python's cyclic garbage collector off what lives as long as the
orchestrator.

A running orchestrator holds some 50,000 objects the collector tracks:
modules, classes, the plugins, the configuration, one L{ManagedProcess}
per process.  A full collection walks every one of them, about 45-60 ms
on the 2-core machine of C{bench/}, and under API load one came every
4-9 s: the slowest status answers and probe deadlines were those passes
(C{bench/status_profile.py}, C{bench/RESULTS.md}).  None of these objects
is garbage while the configuration that made them runs, so they are moved
to the permanent generation (C{gc.freeze()}) once loaded, before the first
spawn; what children, requests and probes make afterwards is collected as
usual, in passes that no longer walk the start-up heap.

A reload makes part of that heap garbage (removed processes, the old
configuration and plugins), in cycles the collector must see.  Once a
reload is applied, L{HeapSettler.settle} schedules one full pass with
everything unfrozen and then freezes what is left: a storm of reloads
costs one pass, C{delay} seconds after the last.
"""

from __future__ import annotations

import gc as _gc
from typing import Any

from twisted.logger import Logger

__all__ = ["HeapSettler"]


class HeapSettler:
    """
    Freezes the long-lived heap at start-up and after each reload.

    @param reactor: an L{IReactorTime}.
    @param delay: seconds between the last L{settle} and its collection.
    @param gc: the C{gc} module (tests pass a recording fake: freezing the
        test runner's own heap would keep its garbage for ever).
    """

    log = Logger()

    def __init__(self, reactor, delay: float = 1.0, gc: Any = _gc) -> None:
        self._reactor = reactor
        self._delay = delay
        self._gc = gc
        self._pending = None

    def freeze(self) -> int:
        """
        Move every object tracked now to the permanent generation.

        @return: how many objects are frozen.
        """
        self._gc.freeze()
        return self._gc.get_freeze_count()

    def settle(self) -> None:
        """
        After a reload: collect, with nothing frozen, once no reload came
        for C{delay} seconds, then freeze the survivors.
        """
        if self._pending is not None and self._pending.active():
            self._pending.reset(self._delay)
            return
        self._pending = self._reactor.callLater(self._delay, self._settle)

    def _settle(self) -> None:
        self._pending = None
        self._gc.unfreeze()
        freed = self._gc.collect()
        self.log.info("heap settled after the reload: {freed} unreachable objects freed, {frozen} frozen",
                      freed=freed, frozen=self.freeze())

    def stop(self) -> None:
        """
        Cancel a pending L{settle} (the orchestrator is stopping).
        """
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
