"""
A monitor-only process (C{orchestrator.enabled: false}): it runs elsewhere,
nothing is spawned, the probe alone decides its status, and commands are
refused with a clear reason (409).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed

from orchestrator.errors import StateError
from orchestrator.supervision.status import Input, Status
from orchestrator.supervision.supervised import SupervisedProcess

__all__ = ["MonitoredProcess"]


class MonitoredProcess(SupervisedProcess):
    """
    Probes a process that is managed elsewhere.
    """

    __slots__ = ()

    managed = False
    _initial = Status.UNKNOWN

    def _refusal(self, verb: str) -> StateError:
        return StateError(
            f"cannot {verb} {self.name}: the orchestrator is in monitor-only mode "
            "(orchestrator.enabled: false); the process is managed elsewhere")

    def _elsewhere(self, verb: str) -> Deferred:
        return fail(self._refusal(verb))

    def start(self, wait: bool = True) -> Deferred:
        return self._elsewhere("start")

    def stop(self) -> Deferred:
        return self._elsewhere("stop")

    def restart(self, wait: bool = True) -> Deferred:
        return self._elsewhere("restart")

    def sendSignal(self, signal: int, toGroup: bool = True):
        raise self._refusal("signal")

    def startMonitoring(self) -> None:
        """
        Begin probing.
        """
        if self._monitor is None:
            self._monitor = self._monitorFactory(self)
        if self._monitor is not None:
            self._monitor.start()

    def monitorStatus(self, status: str, reason: str) -> None:
        """
        The probe's verdict: C{running} or C{unhealthy}.
        """
        if status != self.status:
            self._transition(Input.PROBE_UP if status == "running" else Input.PROBE_DOWN,
                             reason=reason)

    def _probeAdded(self) -> None:
        self._monitor.start()

    def shutdown(self, why: str = "the orchestrator is shutting down") -> Deferred:
        """
        Stop probing for good and release the probe.
        """
        self.retire(why)
        return succeed(None).addBoth(self._close)
