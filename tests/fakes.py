"""
Test doubles: a fake process reactor, fake child transports whose death the
test decides, and a scripted probe.

The fakes bake in no timing: a child lives until the test calls
C{exited(code)} or C{killed(signum)}, which deliver C{processExited} then
C{processEnded} exactly as Twisted does.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from orchestrator.config.load import loadConfig
from orchestrator.health.results import ProbeResult

#: An executable that surely exists, for configurations under test.
EXECUTABLE = sys.executable


@implementer(IProcessTransport)
class FakeProcessTransport:
    """
    A child that only records the signals it is sent.
    """

    def __init__(self, reactor, protocol, executable, args, env, path, pid) -> None:
        self.reactor = reactor
        self.proto = protocol
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.pid = pid
        self.signals: list[Any] = []
        self.alive = True
        self.setup = None
        protocol.makeConnection(self)

    # IProcessTransport
    def signalProcess(self, signalID):
        if not self.alive:
            raise ProcessExitedAlready()
        self.signals.append(signalID)

    def signalLeader(self, signalID):
        """
        The child alone (not its group): recorded as C{("process", signal)}.
        """
        if not self.alive:
            raise ProcessExitedAlready()
        self.signals.append(("process", signalID))

    def closeStdin(self): pass
    def closeStdout(self): pass
    def closeStderr(self): pass
    def closeChildFD(self, descriptor): pass
    def writeToChild(self, childFD, data): pass
    def loseConnection(self): pass
    def write(self, data): pass
    def writeSequence(self, data): pass
    def getPeer(self): return None
    def getHost(self): return None

    # test controls
    def output(self, data: bytes, fd: int = 1) -> None:
        self.proto.childDataReceived(fd, data)

    def exited(self, code: int = 0) -> None:
        """
        The child exits with C{code}.
        """
        self._end(ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code))

    def killed(self, signum: int) -> None:
        """
        The child dies of signal C{signum}.
        """
        self._end(ProcessTerminated(signal=signum))

    def _end(self, reason) -> None:
        assert self.alive, "this child is already dead"
        self.alive = False
        self.pid = None
        self.proto.processExited(Failure(reason))
        self.proto.processEnded(Failure(reason))


class FakeProcessReactor(MemoryReactorClock):
    """
    MemoryReactorClock plus a recorded C{spawnProcess}.

    @ivar spawned: every L{FakeProcessTransport}, in spawn order.
    @ivar spawnError: if set, the next spawn raises it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcessTransport] = []
        self.spawnError: Exception | None = None
        self._nextPid = 1000
        self.groupKills: list[tuple[int, int]] = []

    def spawnProcess(self, processProtocol, executable, args=(), env=None, path=None,
                     uid=None, gid=None, usePTY=0, childFDs=None):
        if self.spawnError is not None:
            error, self.spawnError = self.spawnError, None
            raise error
        self._nextPid += 1
        transport = FakeProcessTransport(self, processProtocol, executable, list(args),
                                         env, path, self._nextPid)
        self.spawned.append(transport)
        return transport

    def spawner(self, protocol, executable, args, env, path, setup=None):
        """
        The signature L{orchestrator.supervision.process.ManagedProcess} wants;
        the L{orchestrator.supervision.spawn.ChildSetup} is kept on the transport.
        """
        transport = self.spawnProcess(protocol, executable, args, env, path)
        transport.setup = setup
        return transport

    def killGroup(self, pgid: int, signal: int) -> bool:
        self.groupKills.append((pgid, signal))
        return False

    @property
    def last(self) -> FakeProcessTransport:
        return self.spawned[-1]


class ScriptedProbe:
    """
    A probe whose every check waits for the test: C{pending} holds the
    Deferreds of checks in flight; C{answer(healthy, reason)} fires the
    oldest.  With C{auto} set, checks answer at once with that verdict (or
    with C{autoResult}, when the test sets one).
    """

    name = "scripted"
    config_schema = {"type": "object", "properties": {}}

    def __init__(self, auto: bool | None = None) -> None:
        self.pending: list[Deferred] = []
        self.auto = auto
        self.autoResult: ProbeResult | None = None
        self.checks = 0

    def check(self) -> Deferred:
        self.checks += 1
        if self.auto is not None:
            return succeed(self.autoResult or ProbeResult(self.auto, "ok" if self.auto else "HTTP 503"))
        d = Deferred()
        self.pending.append(d)
        return d

    def answer(self, healthy: bool, reason: str = "") -> None:
        self.pending.pop(0).callback(ProbeResult(healthy, reason or ("ok" if healthy else "HTTP 503")))


def writeConfig(text: str, directory: str | None = None, name: str = "orchestrator.yaml") -> str:
    """
    Write a YAML configuration (dedented; C{{python}} replaced by this
    interpreter's path) and return its path.
    """
    directory = directory or tempfile.mkdtemp(prefix="orch-test-")
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).replace("{python}", EXECUTABLE))
    return path


def loadText(text: str, environ=None, envFile=None, cli=None, **kwargs):
    """
    Load a configuration from YAML text with a controlled environment.
    """
    return loadConfig(writeConfig(text), envFile=envFile or os.devnull, environ=environ or {},
                      cliOverrides=cli, entryPoints=False, **kwargs)


def runNotifiers(orchestrator, *pairs) -> None:
    """
    Make C{orchestrator} hand events to exactly these notifiers (pairs of
    C{(notifier, eventTypes or None)}) from its start on, instead of
    building its configured ones.
    """
    orchestrator.notifiers.start = lambda config, kinds: orchestrator.events.setNotifiers(pairs)


def makeOrchestrator(loaded, reactor: FakeProcessReactor | None = None, **kwargs):
    """
    Build an L{orchestrator.app.Orchestrator} the way unit tests want it:
    on a L{FakeProcessReactor} (its own unless given; the orchestrator's
    C{reactor} attribute), with no state file, no admin listener, the
    fake's process-group killer and no memory reading (fake pids are not
    real process groups).
    Keyword arguments override or add to these.
    """
    from orchestrator.app import Orchestrator

    reactor = reactor if reactor is not None else FakeProcessReactor()
    options: dict[str, Any] = dict(stateFile=False, listen=False, killGroup=reactor.killGroup,
                                   memory=lambda pgid: None)
    options.update(kwargs)
    return Orchestrator(loaded, reactor, reactor.spawner, **options)


def resultOf(d):
    """
    The result of a Deferred that has already fired (its failure raised);
    for helpers outside a test case, where C{successResultOf} is not at hand.
    """
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
