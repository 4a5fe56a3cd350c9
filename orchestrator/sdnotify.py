"""
systemd's notification protocol (C{sd_notify(3)}), natively: datagrams of
C{KEY=VALUE} lines sent to the unix socket named by C{NOTIFY_SOCKET}, on a
Twisted datagram port (no libsystemd).

L{SystemdLink} says what a C{Type=notify} unit needs to hear:

  - C{READY=1} once the admin API listens and every autostart process
    reached C{running} (or failed for good: gave up, no automatic restart,
    or waits for a dependency that did), so C{systemctl start} returns
    when the service really serves;
  - C{STATUS=2/2 running} whenever that summary changes (C{systemctl status});
  - C{RELOADING=1} with C{MONOTONIC_USEC} when a reload begins, C{READY=1}
    when it is applied or rejected (what systemd 253+ expects);
  - C{STOPPING=1} when the shutdown begins;
  - C{WATCHDOG=1} every half C{WATCHDOG_USEC}, sent from a reactor timer:
    a reactor that is stuck stops the pings and systemd restarts us.

None of C{NOTIFY_SOCKET}, C{WATCHDOG_USEC}, C{WATCHDOG_PID} reaches a child
(L{orchestrator.config._build} removes them from the inherited environment).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from twisted.internet.protocol import ConnectedDatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["SystemdNotifier", "SystemdLink", "watchdogPeriod", "statusLine", "settled"]

#: The longest C{STATUS=} text sent (one line; systemd shows it as is).
MAX_STATUS = 200


def _monotonicUsec() -> int:
    # The clock systemd compares MONOTONIC_USEC with is CLOCK_MONOTONIC.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class _Datagrams(ConnectedDatagramProtocol):
    noisy = False

    def __init__(self, owner: "SystemdNotifier") -> None:
        self._owner = owner

    def connectionRefused(self) -> None:
        self._owner.refused += 1

    def connectionFailed(self, failure) -> None:
        self._owner.refused += 1


class SystemdNotifier:
    """
    Sends notifications to one C{NOTIFY_SOCKET} address.  Sending never
    blocks nor raises: a datagram that cannot be sent is dropped and
    counted (C{failed}), as C{sd_notify} itself does.

    @ivar sent: datagrams sent.
    @ivar failed: datagrams that could not be sent.
    @ivar refused: sends the socket refused (nobody listening any more).
    """

    log = Logger()

    def __init__(self, reactor, address: str,
                 monotonicUsec: Callable[[], int] = _monotonicUsec) -> None:
        self._reactor = reactor
        self.address = address
        self._monotonicUsec = monotonicUsec
        self._port = None
        self.sent = 0
        self.failed = 0
        self.refused = 0

    @classmethod
    def fromEnvironment(cls, reactor, environ: Mapping[str, str]) -> "SystemdNotifier | None":
        """
        The notifier C{NOTIFY_SOCKET} asks for, or C{None} when it is unset
        or not a unix socket (a path, or C{@name} in the abstract namespace).
        """
        value = environ.get("NOTIFY_SOCKET", "")
        if value.startswith("/"):
            return cls(reactor, value)
        if value.startswith("@") and len(value) > 1:
            return cls(reactor, "\0" + value[1:])
        if value:
            cls.log.warn("NOTIFY_SOCKET={value!r} is not a unix socket; not notifying", value=value)
        return None

    def notify(self, *assignments: str) -> bool:
        """
        Send one datagram with these C{KEY=VALUE} lines.

        @return: whether it was handed to the kernel.
        """
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._port is None:
                self._port = self._reactor.connectUNIXDatagram(self.address, _Datagrams(self))
            self._port.write(data)
        except Exception as e:
            self.failed += 1
            if self.failed == 1:
                self.log.warn("cannot notify the service manager at {address}: {e}",
                              address=self.address.replace("\0", "@"), e=e)
            self._drop()
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", "STATUS=" + _status(status))

    def status(self, status: str) -> bool:
        return self.notify("STATUS=" + _status(status))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={self._monotonicUsec()}",
                           "STATUS=reloading the configuration")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping every process")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        port, self._port = self._port, None
        if port is not None and getattr(port, "connected", False):
            port.stopListening()


def _status(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_STATUS else line[: MAX_STATUS - 3] + "..."


def watchdogPeriod(environ: Mapping[str, str], pid: int) -> float | None:
    """
    Seconds between C{WATCHDOG=1} pings: half of C{WATCHDOG_USEC}, as
    C{sd_watchdog_enabled(3)} recommends; C{None} when no watchdog is asked
    for, or when C{WATCHDOG_PID} names another process.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 2 / 1e6


def settled(process, processes) -> bool:
    """
    Whether an autostart process is done coming up: running (or running
    unhealthy), failed for good, or waiting for a dependency that did.
    """
    status = process.status
    if status in ("running", "unhealthy"):
        return True
    if status == "crashed":
        return bool(process.gaveUp) or not process.config.restart.auto
    if status == "stopped" and process.exits:
        return True  # it ran and exited cleanly (a one-shot job)
    if status == "stopped":
        deps = [processes[d] for d in process.config.depends_on if d in processes]
        return any(_failedForGood(d, processes) for d in deps)
    return False


def _failedForGood(process, processes) -> bool:
    if process.status == "crashed":
        return bool(process.gaveUp) or not process.config.restart.auto
    if process.status == "stopped" and not process.exits:
        deps = [processes[d] for d in process.config.depends_on if d in processes]
        return any(_failedForGood(d, processes) for d in deps)
    return False


def statusLine(processes, enabled: bool) -> str:
    """
    The one-line summary: C{2/2 running}, then the processes that are not
    (C{1/2 running; worker crashed (gave up)}).
    """
    total = len(processes)
    up = [p for p in processes.values() if p.status == "running"]
    line = f"{len(up)}/{total} running" if enabled else f"monitor-only: {len(up)}/{total} healthy"
    others = [f"{p.name} {p.status}" + (" (gave up)" if getattr(p, "gaveUp", False) else "")
              for p in processes.values() if p.status != "running"]
    if others:
        line += "; " + ", ".join(others[:5]) + (f", +{len(others) - 5} more" if len(others) > 5 else "")
    return line


class SystemdLink:
    """
    Keeps a service manager told: readiness, status, reloads, stopping and
    the watchdog, from the orchestrator's events.

    @param notifier: a L{SystemdNotifier}.
    @param clock: the reactor's time (the watchdog timer).
    @param watchdog: seconds between pings, or C{None}.
    """

    def __init__(self, notifier: SystemdNotifier, clock, watchdog: float | None = None) -> None:
        self.notifier = notifier
        self._clock = clock
        self._watchdogPeriod = watchdog
        self._watchdog: LoopingCall | None = None
        self._orchestrator = None
        self._unsubscribe = None
        self.ready = False
        self._reloading = False
        self._lastStatus: str | None = None

    def start(self, orchestrator) -> None:
        """
        Start the watchdog and follow events; readiness is checked from
        L{serving} on (the admin API listens, the processes are starting).
        """
        self._orchestrator = orchestrator
        if self._watchdogPeriod:
            self._watchdog = LoopingCall(self.notifier.watchdog)
            self._watchdog.clock = self._clock
            self._watchdog.start(self._watchdogPeriod, now=True)

    def serving(self) -> None:
        """
        The admin API listens and every autostart process was asked to
        start: from now on, READY=1 as soon as they all settled.
        """
        self._unsubscribe = self._orchestrator.events.subscribe(lambda event: self._check())
        self._check()

    def _check(self) -> None:
        orchestrator = self._orchestrator
        if orchestrator is None or self._reloading:
            return
        processes = orchestrator.processes
        line = statusLine(processes, orchestrator.config.enabled)
        if not self.ready:
            if orchestrator.config.enabled and not all(
                    settled(p, processes) for p in processes.values() if p.config.autostart):
                return
            self.ready = True
            self._lastStatus = line
            self.notifier.ready(line)
        elif line != self._lastStatus:
            self._lastStatus = line
            self.notifier.status(line)

    def reloading(self) -> None:
        self._reloading = True
        self.notifier.reloading()

    def reloaded(self) -> None:
        """
        The reload is applied or rejected: READY=1 again with the status.
        """
        self._reloading = False
        if self._orchestrator is None:
            return
        line = statusLine(self._orchestrator.processes, self._orchestrator.config.enabled)
        self._lastStatus = line
        if self.ready:
            self.notifier.ready(line)
        else:
            self._check()

    def stopping(self) -> None:
        """
        The shutdown begins: STOPPING=1, then only the watchdog pings (a
        long shutdown must not be taken for a hang).
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._orchestrator = None
        self.notifier.stopping()

    def stop(self) -> None:
        """
        Every process is gone: stop the watchdog and close the socket.
        """
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        self.notifier.close()
