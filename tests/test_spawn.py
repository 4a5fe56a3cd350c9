"""
The spawners, on a real reactor with real children: own session and
process group, working directory, exact environment, group signalling,
and death with the parent — for both mechanisms.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from orchestrator.supervision.spawn import sessionSpawner, wrapperCommand
from tests.harness import pidAlive, waitFor

_REPORT = textwrap.dedent("""
    import json, os, sys, time
    print(json.dumps({"pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
                      "cwd": os.getcwd(), "env": dict(os.environ), "argv": sys.argv}), flush=True)
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 30)
""")


class _Collect(ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.firstLine: Deferred = Deferred()
        self.exited: Deferred = Deferred()

    def childDataReceived(self, fd, data):
        if fd == 1:
            self.out += data
            if b"\n" in self.out and not self.firstLine.called:
                self.firstLine.callback(json.loads(self.out.split(b"\n")[0]))

    def processExited(self, reason):
        self.exited.callback(reason.value)


class _SpawnerTests:
    """
    Shared by both mechanisms; C{wrapper} selects one.
    """

    timeout = 30
    wrapper: object = True

    def spawn(self, tmp, *args):
        spawner = sessionSpawner(reactor, wrapper=self.wrapper)
        protocol = _Collect()
        argv = [sys.executable, "-c", _REPORT, *args]
        transport = spawner(protocol, sys.executable, argv, {"ONLY": "this", "PATH": os.defpath}, tmp)
        self.addCleanup(self._reap, transport, protocol)
        return transport, protocol

    def _reap(self, transport, protocol):
        if transport.pid is not None:
            try:
                os.killpg(transport.pid, signal.SIGKILL)
            except OSError:
                pass
        return protocol.exited

    def _folder(self) -> str:
        """
        A temporary folder removed after the test (trial's C{mktemp} would
        leave one in the working directory).
        """
        folder = os.path.realpath(tempfile.mkdtemp(prefix="orch-spawn-"))
        self.addCleanup(shutil.rmtree, folder, True)
        return folder

    async def test_ownSessionCwdAndExactEnvironment(self):
        """The child leads its own session and group, runs in the given folder, with only the given environment."""
        tmp = self._folder()
        transport, protocol = self.spawn(tmp)
        report = await protocol.firstLine
        self.assertEqual(report["pid"], transport.pid)
        self.assertEqual(report["sid"], transport.pid)
        self.assertEqual(report["pgid"], transport.pid)
        self.assertEqual(report["cwd"], os.path.abspath(tmp))
        self.assertEqual({k: v for k, v in report["env"].items() if k != "LC_CTYPE"},
                         {"ONLY": "this", "PATH": os.defpath})
        self.assertEqual(report["argv"][0], "-c")

    async def test_signalReachesTheWholeGroup(self):
        """signalProcess signals the child's whole process group, grandchildren included."""
        tmp = self._folder()
        spawner = sessionSpawner(reactor, wrapper=self.wrapper)
        protocol = _Collect()
        script = ("import subprocess, sys, time, json, os\n"
                  "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                  "print(json.dumps({'grandchild': g.pid}), flush=True)\n"
                  "time.sleep(60)\n")
        transport = spawner(protocol, sys.executable, [sys.executable, "-c", script], dict(os.environ), tmp)
        self.addCleanup(self._reap, transport, protocol)
        grandchild = (await protocol.firstLine)["grandchild"]
        self.assertTrue(pidAlive(grandchild))
        transport.signalProcess("TERM")
        reason = await protocol.exited
        self.assertEqual(reason.signal, signal.SIGTERM)
        waitFor(lambda: not pidAlive(grandchild), 5, what="the grandchild to die")


class WrappedSpawnerTests(_SpawnerTests, TestCase):
    """posix_spawn behind env -C / setsid / setpriv --pdeathsig."""

    wrapper = True

    def setUp(self):
        if wrapperCommand() is None:
            raise self.skipTest("env -C, setsid or setpriv --pdeathsig not available here")

    async def test_ownSessionInOurOwnFolder(self):
        """A child whose folder is the orchestrator's (spawned without env -C, the session made by posix_spawn) still leads its own session there."""
        transport, protocol = self.spawn(os.getcwd())
        report = await protocol.firstLine
        self.assertEqual((report["sid"], report["pgid"]), (transport.pid, transport.pid))
        self.assertEqual(report["cwd"], os.getcwd())
        self.assertEqual(report["argv"][0], "-c")

    def test_mechanism(self):
        """With the tools present, the wrapped posix_spawn mechanism is chosen."""
        self.assertEqual(sessionSpawner(reactor).mechanism, "posix_spawn+wrappers")


class ForkSpawnerTests(_SpawnerTests, TestCase):
    """The fork fallback with setsid + prctl in the child."""

    wrapper = False

    def test_mechanism(self):
        """Without wrappers the fork mechanism is used."""
        self.assertEqual(sessionSpawner(reactor, wrapper=False).mechanism, "fork")


_PARENT = textwrap.dedent("""
    import os, sys
    from twisted.internet import reactor
    from twisted.internet.protocol import ProcessProtocol
    from orchestrator.supervision.spawn import sessionSpawner

    class P(ProcessProtocol):
        def childDataReceived(self, fd, data):
            sys.stdout.buffer.write(data); sys.stdout.flush()

    def go():
        spawn = sessionSpawner(reactor, wrapper=sys.argv[1] != "fork")
        t = spawn(P(), sys.executable, [sys.executable, "-c",
                  "import os, time; print(os.getpid(), flush=True); time.sleep(60)"], {},
                  os.getcwd() if sys.argv[1] == "wrapper-here" else "/")
    reactor.callWhenRunning(go)
    reactor.run()
""")


@pytest.mark.integration
@pytest.mark.parametrize("mechanism", ["wrapper", "wrapper-here", "fork"])
def test_child_dies_with_its_parent(mechanism):
    """When the spawning process is SIGKILLed, its child gets the parent-death signal and dies (also one spawned in the parent's own folder, without env -C)."""
    if mechanism != "fork" and wrapperCommand() is None:
        pytest.skip("env -C, setsid or setpriv --pdeathsig not available here")
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, mechanism], stdout=subprocess.PIPE,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        child = int(parent.stdout.readline())
        assert pidAlive(child)
        parent.kill()
        parent.wait(10)
        waitFor(lambda: not pidAlive(child), 5, what="the child to die with its parent")
    finally:
        parent.kill()
        parent.wait(10)
        try:
            os.killpg(child, signal.SIGKILL)
        except (OSError, UnboundLocalError):
            pass


_DESCRIPTORS = textwrap.dedent("""
    import json, os, resource, sys
    from twisted.internet import reactor
    from twisted.internet.protocol import ProcessProtocol
    from orchestrator.supervision import spawn

    limit, closeRange = int(sys.argv[1]), sys.argv[2] == "yes"
    r, w = os.pipe()
    os.dup2(r, 200, inheritable=True)  # as if inherited from whoever started us
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    if not closeRange:
        spawn._closeRangeCloexec = lambda: False
    out = []

    class P(ProcessProtocol):
        def childDataReceived(self, fd, data):
            out.append(data)

        def processEnded(self, reason):
            print(json.dumps({"child": json.loads(b"".join(out)),
                              "fellBack": spawn.WrappedProcess._fellBack}))
            reactor.stop()

    def go():
        spawner = spawn.sessionSpawner(reactor)
        spawner(P(), sys.executable, [sys.executable, "-c",
                "import json, os; print(json.dumps(sorted(int(f) for f in os.listdir('/proc/self/fd'))))"],
                {}, "/")
    reactor.callWhenRunning(go)
    reactor.run()
""")


@pytest.mark.parametrize("limit, closeRange, fellBack", [
    (64, "yes", False),     # close_range: no file action touches descriptor 200
    (64, "no", True),       # Twisted's close action on 200 >= the limit: EBADF, then fork
    (4096, "no", False),    # Twisted's own path, unchanged
])
def test_spawnWithInheritedDescriptorsAndLowFileLimit(limit, closeRange, fellBack):
    """A wrapped spawn succeeds under a low RLIMIT_NOFILE (close_range, or a fork fallback) and the child never inherits a stray descriptor."""
    if wrapperCommand() is None:
        pytest.skip("env -C, setsid or setpriv --pdeathsig not available here")
    result = subprocess.run([sys.executable, "-c", _DESCRIPTORS, str(limit), closeRange],
                            capture_output=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().splitlines()[-1])
    # 0, 1, 2 and the descriptor listdir itself opened; never 200.
    assert 200 not in report["child"]
    assert report["child"][:3] == [0, 1, 2] and len(report["child"]) == 4
    assert report["fellBack"] is fellBack
