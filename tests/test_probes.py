"""
The built-in probe kinds (http, tcp, exec) and a third-party probe kind.

HTTP runs in memory (L{tests._memhttp.MemoryHTTP} serves a real L{Site}
over a fake transport) on a L{Clock}; tcp and exec need the real reactor and real
processes, so those are trial test cases returning Deferreds, each bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, ProcessDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orchestrator.config.types import HealthConfig
from orchestrator.errors import ConfigError
from orchestrator.health.monitor import HealthMonitor
from orchestrator.hooks.manager import buildPluginManager, collectKinds
from orchestrator.health.results import ProbeResult
from orchestrator.supervision.spawn import sessionSpawner
from orchestrator.builtin.probes import ExecProbe, HTTPProbe, TCPProbe
from tests._memhttp import MemoryHTTP
from tests.fakes import FakeProcessReactor, loadText, makeOrchestrator
from tests.harness import pidAlive

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "custom_probe")
URL = "http://backend.test:3000"


class _Watched:
    """
    Stands in for a L{ManagedProcess}: records what a monitor tells it.
    """

    name = "backend"

    def __init__(self) -> None:
        self.told: list[tuple] = []

    def monitorStatus(self, status, reason):
        self.told.append((status, reason))


def probeOnce(probe, clock, timeout: float) -> Deferred:
    """
    Run one check through a L{HealthMonitor} (which enforces C{timeout} and
    turns failures into reasons) and fire with the stamped L{ProbeResult}.
    """
    config = HealthConfig(probe="test", timeout=timeout, interval=60, failure_threshold=1)
    done: Deferred = Deferred()

    def onResult(name, result):
        monitor.stop()
        done.callback(result)

    monitor = HealthMonitor(_Watched(), config, probe, clock, managed=False, onResult=onResult)
    monitor.start()
    return done


class _Backend(Resource):
    """
    A fake backend: C{/health} answers C{code} with C{body}, or never
    (C{hang}), or streams C{stream} bytes and never finishes.
    """

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b'{"status": "ok"}') -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.hang = False
        self.stream = 0
        self.headers: dict[bytes, bytes] = {}
        self.requests: list = []

    def render_GET(self, request):
        self.requests.append(request)
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        if self.stream:
            request.write(b"x" * self.stream)
            return NOT_DONE_YET
        return self.body


def httpProbe(resource, clock=None, **options) -> tuple[HTTPProbe, MemoryHTTP]:
    stub = MemoryHTTP(resource)
    config = HealthConfig(probe="http", url=URL, timeout=0.5, options=options)
    return HTTPProbe(config, clock or Clock(), connect=stub.connect), stub


class HTTPProbeTests(SynchronousTestCase):
    """
    The http probe against an in-memory backend.
    """

    def check(self, probe, stub) -> ProbeResult:
        d = probe.check()
        stub.flush()
        return self.successResultOf(d)

    def test_ok(self):
        """A 200 answer is healthy, with the status as reason and the body as detail."""
        backend = _Backend()
        probe, stub = httpProbe(backend)
        result = self.check(probe, stub)
        self.assertEqual((result.healthy, result.reason), (True, "HTTP 200"))
        self.assertIn('"ok"', result.detail)
        self.assertEqual(backend.requests[0].uri, b"/health")

    def test_path(self):
        """C{path} is appended to the process's url."""
        backend = _Backend()
        probe, stub = httpProbe(backend, path="/ready")
        self.check(probe, stub)
        self.assertEqual(probe.url, URL + "/ready")
        self.assertEqual(backend.requests[0].uri, b"/ready")

    def test_unavailable(self):
        """A 503 answer is unhealthy with reason C{HTTP 503}."""
        probe, stub = httpProbe(_Backend(503, b'{"status": "failing"}'))
        result = self.check(probe, stub)
        self.assertEqual((result.healthy, result.reason), (False, "HTTP 503"))

    def test_expectStatus(self):
        """C{expect_status} replaces the default 200-399 range."""
        probe, stub = httpProbe(_Backend(204, b""), expect_status=[200])
        self.assertEqual(self.check(probe, stub).reason, "HTTP 204")
        self.assertFalse(self.check(probe, stub).healthy)
        probe, stub = httpProbe(_Backend(418, b""), expect_status=["200-299", 418])
        self.assertTrue(self.check(probe, stub).healthy)

    def test_expectBodyMismatch(self):
        """A body lacking C{expect_body} is unhealthy even with a 200."""
        probe, stub = httpProbe(_Backend(200, b"starting"), expect_body="ready")
        result = self.check(probe, stub)
        self.assertFalse(result.healthy)
        self.assertEqual(result.reason, "HTTP 200: body lacks 'ready'")

    def test_expectBodyMatch(self):
        """A body containing C{expect_body} is healthy."""
        probe, stub = httpProbe(_Backend(200, b"all ready now"), expect_body="ready")
        self.assertTrue(self.check(probe, stub).healthy)

    def test_expectJSONMismatch(self):
        """A JSON field with another value than C{expect_json}'s is unhealthy, naming both."""
        probe, stub = httpProbe(_Backend(200, b'{"status": "degraded"}'), expect_json={"status": "ok"})
        result = self.check(probe, stub)
        self.assertFalse(result.healthy)
        self.assertEqual(result.reason, "HTTP 200: status is 'degraded', not 'ok'")

    def test_expectJSONNotJSON(self):
        """A body that is not JSON fails C{expect_json}."""
        probe, stub = httpProbe(_Backend(200, b"<html>"), expect_json={"status": "ok"})
        self.assertEqual(self.check(probe, stub).reason, "HTTP 200: body is not JSON")

    def test_expectJSONMatch(self):
        """Every C{expect_json} field present with its value is healthy."""
        body = json.dumps({"status": "ok", "db": True, "pid": 7}).encode()
        probe, stub = httpProbe(_Backend(200, body), expect_json={"status": "ok", "db": True})
        self.assertTrue(self.check(probe, stub).healthy)

    def test_headers(self):
        """Configured C{headers} are sent with each request."""
        backend = _Backend()
        probe, stub = httpProbe(backend, headers={"X-Probe": "orchestrator"})
        self.check(probe, stub)
        self.assertEqual(backend.requests[0].getHeader(b"x-probe"), b"orchestrator")

    def test_redirectNotFollowed(self):
        """A redirect is judged as itself (not followed) unless C{follow_redirects}."""
        root = Resource()
        health = _Backend(302, b"")
        health.headers[b"location"] = (URL + "/login").encode()
        login = _Backend(200, b"login page")
        root.putChild(b"health", health)
        root.putChild(b"login", login)

        probe, stub = httpProbe(root)
        result = self.check(probe, stub)
        self.assertEqual((result.healthy, result.reason), (True, "HTTP 302"))
        self.assertEqual(login.requests, [])

        probe, stub = httpProbe(root, expect_status=[200])
        result = self.check(probe, stub)
        self.assertEqual((result.healthy, result.reason), (False, "HTTP 302"))
        self.assertEqual(login.requests, [])

        probe, stub = httpProbe(root, expect_status=[200], follow_redirects=True)
        result = self.check(probe, stub)
        self.assertEqual((result.healthy, result.reason, result.detail), (True, "HTTP 200", "login page"))
        self.assertEqual(len(login.requests), 1)

    def test_bodyCapped(self):
        """Only the first C{max_body_bytes} bytes of the body are judged."""
        body = b"x" * 5000 + b"READY"
        probe, stub = httpProbe(_Backend(200, body), expect_body="READY", max_body_bytes=1000)
        result = self.check(probe, stub)
        self.assertEqual((result.healthy, result.reason), (False, "HTTP 200: body lacks 'READY'"))
        probe, stub = httpProbe(_Backend(200, body), expect_body="READY", max_body_bytes=10000)
        self.assertTrue(self.check(probe, stub).healthy)

    def test_endlessBodyStopsAtCap(self):
        """A body that never ends still gives a result once C{max_body_bytes} are read."""
        backend = _Backend()
        backend.stream = 4096
        probe, stub = httpProbe(backend, max_body_bytes=1000)
        d = probe.check()
        stub.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.healthy, result.reason), (True, "HTTP 200"))
        self.assertEqual(result.detail, "x" * 200)

    def test_timeoutExactly(self):
        """A backend that never answers fails at C{timeout} exactly, not before, and the request is aborted."""
        clock = Clock()
        backend = _Backend()
        backend.hang = True
        probe, stub = httpProbe(backend, clock)
        d = probeOnce(probe, clock, timeout=0.5)
        clock.advance(0.01)  # the first check goes out 10 ms after start
        stub.flush()
        self.assertEqual(len(backend.requests), 1)
        clock.advance(0.5 - 1e-6)
        self.assertNoResult(d)
        clock.advance(1e-6)
        result = self.successResultOf(d)
        self.assertEqual((result.healthy, result.reason), (False, "timeout after 0.5s"))
        self.assertAlmostEqual(result.latency, 0.5)
        stub.flush()
        self.assertTrue(backend.requests[0].channel is None or backend.requests[0]._disconnected)

    def test_connectionRefused(self):
        """A refused connection is unhealthy with reason C{Connection refused}."""
        reactor = MemoryReactorClock()
        config = HealthConfig(probe="http", url="http://127.0.0.1:3999", timeout=1.0)
        probe = HTTPProbe(config, reactor)  # a real Agent and pool on a memory reactor
        d = probeOnce(probe, reactor, timeout=1.0)
        reactor.advance(0.01)
        host, port, factory, timeout, _ = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 3999, 1.0))
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        reactor.advance(0.3)  # HostnameEndpoint gives up after its attempt delay
        result = self.successResultOf(d)
        self.assertEqual((result.healthy, result.reason), (False, "Connection refused"))
        self.successResultOf(probe.close())


class _Accepting(Protocol):
    def connectionLost(self, reason):
        self.factory.lost.callback(None)


class TCPProbeTests(TestCase):
    """
    The tcp probe against real sockets on 127.0.0.1.
    """

    timeout = 20

    def test_listening(self):
        """A listening port is healthy."""
        factory = Factory.forProtocol(_Accepting)
        factory.lost = Deferred()
        port = _globalReactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        probe = TCPProbe(HealthConfig(probe="tcp", url=f"http://127.0.0.1:{number}", timeout=5), _globalReactor)

        def checked(result):
            self.assertEqual((result.healthy, result.reason), (True, f"connected to 127.0.0.1:{number}"))
            return factory.lost  # the probe hangs up; wait for the server to see it

        return probeOnce(probe, _globalReactor, timeout=5).addCallback(checked)

    def test_explicitHostPort(self):
        """C{host} and C{port} override the url's."""
        probe = TCPProbe(HealthConfig(probe="tcp", url="http://example.invalid:1", timeout=1,
                                      options={"host": "127.0.0.1", "port": 8125}), _globalReactor)
        self.assertEqual((probe.host, probe.port), ("127.0.0.1", 8125))

    def test_refused(self):
        """A closed port is unhealthy with reason C{Connection refused}."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            number = s.getsockname()[1]
        probe = TCPProbe(HealthConfig(probe="tcp", url=f"http://127.0.0.1:{number}", timeout=5), _globalReactor)

        def checked(result):
            self.assertEqual((result.healthy, result.reason), (False, "Connection refused"))

        return probeOnce(probe, _globalReactor, timeout=5).addCallback(checked)


class _RecordingSpawner:
    """
    The real session spawner, remembering each probe child's protocol.
    """

    def __init__(self) -> None:
        self._spawn = sessionSpawner(_globalReactor)
        self.children: list = []

    def __call__(self, protocol, executable, args, env, path):
        transport = self._spawn(protocol, executable, args, env, path)
        self.children.append((protocol, transport.pid))
        return transport


class ExecProbeTests(TestCase):
    """
    The exec probe running real commands.
    """

    timeout = 30

    def execProbe(self, command, env=None, **options):
        spawner = _RecordingSpawner()
        config = HealthConfig(probe="exec", timeout=5, options={"command": command, **options},
                              env=env or {})
        return ExecProbe(config, _globalReactor, spawner=spawner), spawner

    def test_exitZero(self):
        """Exit 0 is healthy; the output is kept as detail."""
        probe, _ = self.execProbe([sys.executable, "-c", "print('fine')"])

        def checked(result):
            self.assertEqual((result.healthy, result.reason, result.detail), (True, "exit 0", "fine"))

        return probeOnce(probe, _globalReactor, timeout=10).addCallback(checked)

    def test_exitTwo(self):
        """A non-zero exit is unhealthy with the code and the tail of stderr as reason."""
        script = "import sys; sys.stderr.write('noise\\n' * 100 + 'database unreachable\\n'); sys.exit(2)"
        probe, _ = self.execProbe([sys.executable, "-c", script], max_output_bytes=64)

        def checked(result):
            self.assertFalse(result.healthy)
            self.assertEqual(result.reason, "exit 2: database unreachable")
            self.assertTrue(result.detail.endswith("noise\ndatabase unreachable"), result.detail)
            self.assertLessEqual(len(result.detail), 64)

        return probeOnce(probe, _globalReactor, timeout=10).addCallback(checked)

    def test_shell(self):
        """With C{shell}, a command string runs through /bin/sh -c, in the process's environment."""
        probe, _ = self.execProbe("test \"$PROBE_VAR\" = set && exit 3", shell=True,
                                  env={"PROBE_VAR": "set", "PATH": os.defpath})
        self.assertEqual(probe.argv[:2], ["/bin/sh", "-c"])

        def checked(result):
            self.assertEqual((result.healthy, result.reason), (False, "exit 3"))

        return probeOnce(probe, _globalReactor, timeout=10).addCallback(checked)

    def test_noShellByDefault(self):
        """A command string is split into argv, not given to a shell."""
        probe, _ = self.execProbe("echo $HOME; exit 1")
        self.assertEqual(probe.argv, ["echo", "$HOME;", "exit", "1"])

    def test_stdinClosed(self):
        """A probe command reading stdin gets end-of-file instead of hanging."""
        probe, _ = self.execProbe([sys.executable, "-c", "import sys; sys.exit(len(sys.stdin.read()))"])

        def checked(result):
            self.assertEqual((result.healthy, result.reason), (True, "exit 0"))

        return probeOnce(probe, _globalReactor, timeout=10).addCallback(checked)

    def test_leftoversKilledOnExit(self):
        """A background child left holding the pipes neither delays the result nor survives the check."""
        pidfile = tempfile.mktemp(prefix="orch-exec-probe-")
        self.addCleanup(lambda: os.path.exists(pidfile) and os.unlink(pidfile))
        probe, _ = self.execProbe(f"sleep 30 & echo $! > {pidfile}; echo up", shell=True)
        started = _globalReactor.seconds()

        def checked(result):
            self.assertEqual((result.healthy, result.reason, result.detail), (True, "exit 0", "up"))
            self.assertLess(_globalReactor.seconds() - started, 5)
            return _waitDead(int(open(pidfile).read()))

        return probeOnce(probe, _globalReactor, timeout=10).addCallback(checked)

    def test_timeoutKillsGroup(self):
        """At C{timeout} the probe fails and its whole process group (grandchildren too) is killed."""
        pidfile = tempfile.mktemp(prefix="orch-exec-probe-")
        self.addCleanup(lambda: os.path.exists(pidfile) and os.unlink(pidfile))
        script = f"sleep 30 & echo $! > {pidfile}; wait"
        probe, spawner = self.execProbe(script, shell=True)
        started = _globalReactor.seconds()

        def checked(result):
            self.assertEqual((result.healthy, result.reason), (False, "timeout after 0.5s"))
            self.assertLess(_globalReactor.seconds() - started, 10)
            protocol, pid = spawner.children[0]
            # The shell and its sleeping child both die: the probe child is
            # reaped (processEnded waits for every pipe holder) well before
            # the sleep's 30 s.
            return protocol.done.addCallback(lambda _: (pid, int(open(pidfile).read())))

        def reaped(pids):
            shell, grandchild = pids
            self.assertFalse(pidAlive(shell))
            return _waitDead(grandchild)

        return probeOnce(probe, _globalReactor, timeout=0.5).addCallback(checked).addCallback(reaped)



class _AlreadyGoneTransport:
    """
    What Twisted's C{Process} looks like when the child exited before
    the spawn returned: the pid is known at C{makeConnection}, and
    forgotten once C{registerReapProcessHandler} reaped it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def closeStdin(self) -> None:
        pass


class ExecProbeEarlyExitTests(SynchronousTestCase):
    """
    A probe whose shell is reaped inside the spawn (a loaded host: the
    child is quicker than the parent).
    """

    def test_groupKilledWhenReapedInsideTheSpawn(self):
        """The background child is still killed, so the result comes at once, not at the timeout."""
        killed = []

        def spawner(protocol, executable, args, env, path):
            transport = _AlreadyGoneTransport(4242)
            protocol.makeConnection(transport)
            protocol.childDataReceived(1, b"up\n")
            transport.pid = None  # reaped by registerReapProcessHandler
            protocol.processExited(Failure(ProcessDone(0)))
            return transport

        def killGroup(pgid, sig):
            killed.append((pgid, sig))
            protocol.processEnded(Failure(ProcessDone(0)))  # the pipes close
            return True

        config = HealthConfig(probe="exec", timeout=5, options={"command": "x &", "shell": True}, env={})
        probe = ExecProbe(config, Clock(), spawner=spawner, killGroup=killGroup)
        original = probe._spawn

        def remembering(proto, *args):
            nonlocal protocol
            protocol = proto
            return original(proto, *args)

        protocol = None
        probe._spawn = remembering
        result = self.successResultOf(probe.check())
        self.assertEqual(killed, [(4242, signal.SIGKILL)])
        self.assertEqual((result.healthy, result.reason, result.detail), (True, "exit 0", "up"))


def _waitDead(pid: int, within: float = 10.0) -> Deferred:
    deadline = _globalReactor.seconds() + within

    def poll():
        if not pidAlive(pid):
            return None
        if _globalReactor.seconds() > deadline:
            raise AssertionError(f"pid {pid} still alive")
        return deferLater(_globalReactor, 0.05, poll)

    return deferLater(_globalReactor, 0, poll)


class CustomProbeKindTests(SynchronousTestCase):
    """
    A probe kind from a third-party plugin module (examples/custom_probe)
    works like a built-in one.
    """

    def setUp(self):
        sys.path.insert(0, EXAMPLES)
        self.addCleanup(sys.path.remove, EXAMPLES)
        self.addCleanup(sys.modules.pop, "file_probe", None)
        self.file = tempfile.mktemp(prefix="orch-ready-")
        self.addCleanup(lambda: os.path.exists(self.file) and os.unlink(self.file))

    def config(self, health: str) -> str:
        return f"""
            plugins: [file_probe]
            processes:
              worker:
                command: ["{{python}}", "-c", "pass"]
                health: {health}
            """

    def test_registeredByPluginManager(self):
        """A module given to buildPluginManager registers its probe kind next to the built-ins."""
        kinds = collectKinds(buildPluginManager(["file_probe"], entryPoints=False))
        self.assertEqual(sorted(kinds.probes), ["exec", "file", "http", "tcp"])
        self.assertEqual(kinds.probes["file"].__module__, "file_probe")

    def test_selectedByName(self):
        """C{health.probe: file} from the YAML plugins list builds that kind with its options."""
        loaded = loadText(self.config(f"{{probe: file, file: {self.file}, contains: ok}}"))
        health = loaded.config.processes["worker"].health
        self.assertEqual(health.probe, "file")
        self.assertEqual(dict(health.options), {"file": self.file, "contains": "ok", "max_bytes": 4096})

    def test_schemaValidated(self):
        """The kind's config_schema is enforced: required keys, types and unknown keys are errors."""
        with self.assertRaises(ConfigError) as missing:
            loadText(self.config("{probe: file}"))
        self.assertIn("'file' is a required property", str(missing.exception))
        with self.assertRaises(ConfigError) as wrong:
            loadText(self.config(f"{{probe: file, file: {self.file}, max_bytes: many}}"))
        self.assertIn("processes.worker.health.max_bytes", str(wrong.exception))
        with self.assertRaises(ConfigError) as unknown:
            loadText(self.config(f"{{probe: file, file: {self.file}, contain: ok}}"))
        self.assertIn("unknown key 'contain'", str(unknown.exception))
        with self.assertRaises(ConfigError) as otherKind:
            loadText(self.config(f"{{probe: http, file: {self.file}}}"))
        self.assertIn("unknown key 'file'", str(otherKind.exception))

    def test_unknownKindWithoutPlugin(self):
        """Without the plugin, C{probe: file} is an unknown probe kind."""
        text = self.config(f"{{probe: file, file: {self.file}}}").replace("plugins: [file_probe]", "")
        with self.assertRaises(ConfigError) as e:
            loadText(text)
        self.assertIn("probe", str(e.exception))
        self.assertIn("file", str(e.exception))

    def test_drivesStatus(self):
        """The custom probe's verdicts make the process running, then unhealthy."""
        loaded = loadText(self.config(
            f"{{probe: file, file: {self.file}, contains: ok, interval: 1, failure_threshold: 2, "
            "restart_on_unhealthy: false}"))
        reactor = FakeProcessReactor()
        orchestrator = makeOrchestrator(loaded, reactor)
        orchestrator.startService()
        worker = orchestrator.process("worker")
        reactor.advance(0.01)
        self.assertEqual(worker.status, "starting")
        with open(self.file, "w") as f:
            f.write("ok\n")
        reactor.advance(0.02)
        self.assertEqual(worker.status, "running")
        self.assertEqual(worker.health.snapshot().last.reason, f"{self.file} present")
        with open(self.file, "w") as f:
            f.write("degraded\n")
        reactor.advance(1)
        reactor.advance(1)
        self.assertEqual(worker.status, "unhealthy")
        self.assertEqual(worker.health.snapshot().last.reason, f"{self.file} lacks 'ok'")


def test_exec_probe_never_sees_orchestrator_secrets(monkeypatch):
    """Built by the supervisor, an exec probe runs with its process's environment: no admin token, no webhook secret."""
    from tests.fakes import FakeProcessReactor, loadText

    monkeypatch.setenv("ORCHESTRATOR_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_c2VjcmV0")
    loaded = loadText(
        "processes:\n  backend:\n    command: ['{python}']\n    env: {MINE: 'yes'}\n"
        "    health: {probe: exec, command: ['true']}\n"
        "notifiers: [{type: webhook, url: 'https://hooks.example', secret_env: WEBHOOK_SECRET}]\n",
        environ=dict(os.environ))
    seen = []
    reactor = FakeProcessReactor()
    orchestrator = makeOrchestrator(loaded, reactor,
                                    environ=dict(os.environ),
                                    probeFactory=lambda health: seen.append(dict(health.env)) or _Never())
    orchestrator.startService()
    (env,) = seen
    assert env["MINE"] == "yes"
    assert "ORCHESTRATOR_ADMIN_TOKEN" not in env and "WEBHOOK_SECRET" not in env
    assert "s3cret" not in env.values()


class _Never:
    def check(self):
        return Deferred()
