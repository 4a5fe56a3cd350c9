"""
The operator's toolbox (issue 12), on the fake process reactor: the
process options' validation, replicas' naming and substitution,
dependency conditions with one-shot tasks, restarts on memory growth with
an injected memory reader, and what a spawn asks of the child (user,
umask, limits).  No sleeps, no real children.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.types import OutputConfig
from orchestrator.errors import ConfigError
from orchestrator.notify.events import EventBus
from orchestrator.supervision.output import OutputCapture
from orchestrator.supervision.spawn import ChildSetup
from orchestrator.supervision.supervisor import Supervisor
from tests.fakes import EXECUTABLE, FakeProcessReactor, loadText, makeOrchestrator


def problems(text: str) -> str:
    try:
        loadText(text)
    except ConfigError as e:
        return "\n".join(e.problems)
    raise AssertionError("the configuration loaded")


class World:
    """
    A supervisor on a fake reactor, with a memory reader the test sets.
    """

    def __init__(self, text: str) -> None:
        self.loaded = loadText(text)
        self.reactor = FakeProcessReactor()
        self.bus = EventBus(self.reactor)
        self.events = []
        self.bus.subscribe(self.events.append)
        self.rss: dict[int, int] = {}
        self.supervisor = Supervisor(
            self.loaded.config, self.loaded.kinds, self.reactor, self.reactor.spawner, self.bus,
            environ={"PATH": "/usr/bin:/bin"}, killGroup=self.reactor.killGroup, random=lambda: 0.5,
            memory=self.rss.get)
        self.supervisor.startService()

    def process(self, name):
        return self.supervisor.processes[name]

    def child(self, name):
        alive = [t for t in self.reactor.spawned if t.alive and t.args[-1] == name]
        return alive[-1] if alive else None


class ConfigTests(SynchronousTestCase):
    """
    The new keys are validated at load, each problem located.
    """

    def test_replicasNamesAndSubstitution(self) -> None:
        """replicas: 3 with port 8080 gives web-0..web-2, {replica}/{port} substituted, PORT and ORCHESTRATOR_REPLICA set."""
        config = loadText(f"""
            processes:
              web:
                command: ["{{python}}", "--port", "{{port}}", "web"]
                replicas: 3
                port: 8080
                url: "http://127.0.0.1:{{port}}"
                env: {{NAME: "web-{{replica}}"}}
        """).config
        self.assertEqual(list(config.processes), ["web-0", "web-1", "web-2"])
        web2 = config.processes["web-2"]
        self.assertEqual(web2.command, (EXECUTABLE, "--port", "8082", "web"))
        self.assertEqual(web2.url, "http://127.0.0.1:8082")
        self.assertEqual(dict(web2.env), {"NAME": "web-2", "ORCHESTRATOR_REPLICA": "2", "PORT": "8082"})
        self.assertEqual(web2.health.process, "web-2")

    def test_dependingOnAReplicatedProcessMeansEveryInstance(self) -> None:
        """depends_on: [web] with web replicated waits for every instance."""
        config = loadText("""
            processes:
              web: {command: ["{python}"], replicas: 2}
              proxy: {command: ["{python}"], depends_on: [web]}
        """).config
        self.assertEqual(dict(config.processes["proxy"].depends_on), {"web-0": "running", "web-1": "running"})

    def test_replicaNameCollision(self) -> None:
        """A replica named like another process is a located configuration error."""
        text = """
            processes:
              web: {command: ["{python}"], replicas: 2}
              web-1: {command: ["{python}"]}
        """
        self.assertIn("processes.web-1: instance name 'web-1' collides with process 'web'", problems(text))

    def test_portPlaceholderWithoutPort(self) -> None:
        """{port} in a command without a port key is an error, not a literal."""
        text = 'processes:\n  web: {command: ["{python}", "{port}"]}\n'
        self.assertIn("processes.web.command[1]: uses {port} but the process sets no port", problems(text))

    def test_userNeedsRoot(self) -> None:
        """user: set while the orchestrator is not root is an error at load, never at spawn."""
        self.patch(os, "geteuid", lambda: 1000)
        text = 'processes:\n  web: {command: ["{python}"], user: nobody}\n'
        self.assertIn("processes.web.user: needs the orchestrator to run as root", problems(text))

    def test_unknownUserAndGroup(self) -> None:
        """An unknown user or group is a configuration error."""
        self.patch(os, "geteuid", lambda: 0)
        text = 'processes:\n  web: {command: ["{python}"], user: no-such-user-x, group: no-such-group-x}\n'
        found = problems(text)
        self.assertIn("processes.web.user: unknown user 'no-such-user-x'", found)
        self.assertIn("processes.web.group: unknown group 'no-such-group-x'", found)

    def test_healthyNeedsAProbe(self) -> None:
        """condition: healthy on a process without a probe is an error."""
        text = """
            processes:
              db: {command: ["{python}"]}
              web: {command: ["{python}"], depends_on: {db: {condition: healthy}}}
        """
        self.assertIn("processes.web.depends_on.db.condition: 'db' has no health probe", problems(text))

    def test_cycleThroughConditions(self) -> None:
        """A cycle written with conditions is found like one written as lists."""
        text = """
            processes:
              a: {command: ["{python}"], depends_on: {b: {condition: started}}}
              b: {command: ["{python}"], depends_on: [a]}
        """
        self.assertIn("dependency cycle", problems(text))

    def test_badValues(self) -> None:
        """A bad umask, an unknown rlimit and a bad memory size are each reported."""
        text = """
            processes:
              web:
                command: ["{python}"]
                umask: "999"
                rlimits: {nofiles: 10}
                max_memory: "12 parsecs"
        """
        found = problems(text)
        self.assertIn("processes.web.umask", found)
        self.assertIn("unknown key 'nofiles' (did you mean 'nofile'?)", found)
        self.assertIn("processes.web.max_memory", found)


class ChildSetupTests(SynchronousTestCase):
    """
    What a spawn asks the child to change about itself.
    """

    def test_setupFromConfig(self) -> None:
        """umask, rlimits and the user reach the spawner as one ChildSetup; a plain process passes none."""
        self.patch(os, "geteuid", lambda: 0)
        world = World("""
            processes:
              plain: {command: ["{python}", "plain"]}
              web:
                command: ["{python}", "web"]
                user: "0"
                umask: "027"
                rlimits: {nofile: {soft: 100, hard: 200}, core: unlimited}
        """)
        self.assertIsNone(world.child("plain").setup)
        setup = world.child("web").setup
        self.assertEqual(setup.umask, 0o027)
        self.assertEqual(setup.uid, 0)
        self.assertEqual(set(setup.rlimits), {(resource.RLIMIT_NOFILE, 100, 200),
                                              (resource.RLIMIT_CORE, resource.RLIM_INFINITY,
                                               resource.RLIM_INFINITY)})
        self.assertEqual(world.child("web").env["USER"], "root")
        self.assertEqual(ChildSetup.of(world.process("plain").config), None)

    def test_envOverridesLoginVariables(self) -> None:
        """HOME set in env wins over the user's home folder."""
        self.patch(os, "geteuid", lambda: 0)
        world = World('processes:\n  web: {command: ["{python}", "web"], user: "0", env: {HOME: /srv}}\n')
        self.assertEqual(world.child("web").env["HOME"], "/srv")
        self.assertEqual(world.child("web").env["LOGNAME"], "root")


ONE_SHOT = """
    processes:
      migrate:
        command: ["{python}", "migrate"]
        restart: {policy: never}
      server:
        command: ["{python}", "server"]
        depends_on: {migrate: {condition: completed_successfully}}
"""


class ConditionTests(SynchronousTestCase):
    """
    depends_on conditions, and one-shot tasks.
    """

    def test_completedSuccessfullyGates(self) -> None:
        """The server starts only after the migration exited 0; the migration then shows stopped and clean."""
        world = World(ONE_SHOT)
        world.reactor.advance(5)
        self.assertIsNone(world.child("server"))
        self.assertIn("waiting for migrate (completed_successfully)", world.process("server").waitingFor)
        world.child("migrate").exited(0)
        self.assertIsNotNone(world.child("server"))
        snapshot = world.process("migrate").snapshot()
        self.assertEqual(snapshot.status, "stopped")
        self.assertTrue(snapshot.last_exit.clean)
        self.assertEqual(world.process("migrate").exitCounts, {True: 1, False: 0})
        self.assertNotIn("crashed", [e.type for e in world.events if e.process == "migrate"])

    def test_failedMigrationKeepsTheServerDown(self) -> None:
        """A migration exiting 1 keeps the server stopped with the reason in its status, and an event."""
        world = World(ONE_SHOT)
        world.child("migrate").exited(1)
        world.reactor.advance(60)
        self.assertIsNone(world.child("server"))
        snapshot = world.process("server").snapshot()
        self.assertEqual(snapshot.status, "stopped")
        self.assertEqual(snapshot.waiting_for, "waiting for migrate: exited with code 1")
        failed = [e for e in world.events if e.type == "dependency_failed"]
        self.assertEqual([(e.process, e.reason) for e in failed],
                         [("server", "waiting for migrate: exited with code 1")])

    def test_startedCondition(self) -> None:
        """condition: started releases the dependent as soon as the dependency is spawned."""
        world = World("""
            processes:
              db: {command: ["{python}", "db"], start: {ready_after: 10}}
              web: {command: ["{python}", "web"], depends_on: {db: {condition: started}}}
        """)
        self.assertEqual(world.process("db").status, "starting")
        self.assertIsNotNone(world.child("web"))


MEMORY = """
    processes:
      web:
        command: ["{python}", "web"]
        max_memory: 100MiB
        memory_check_interval: 2
        restart: {delay: 1}
"""


class MemoryTests(SynchronousTestCase):
    """
    max_memory: the group's resident memory checked on the clock.
    """

    def test_restartAboveTheLimit(self) -> None:
        """Above max_memory the child is stopped and restarted with cause memory, counted and in the event."""
        world = World(MEMORY)
        child = world.child("web")
        world.rss[child.pid] = 50 * 2**20
        world.reactor.advance(2)
        self.assertEqual(child.signals, [])
        world.rss[child.pid] = 150 * 2**20
        world.reactor.advance(2)
        self.assertEqual(child.signals, [signal.SIGTERM])
        child.exited(0)  # even a clean exit: it was ended for its memory
        process = world.process("web")
        self.assertEqual(process.snapshot().last_exit.cause, "memory")
        crashed = [e for e in world.events if e.type == "crashed"]
        self.assertIn("max_memory", crashed[-1].reason)
        world.reactor.advance(5)
        self.assertIsNot(world.child("web"), child)
        self.assertEqual(process.restartsByReason.get("memory"), 1)

    def test_noTimerWithoutMaxMemory(self) -> None:
        """A process without max_memory arms no memory check: an idle orchestrator does not wake up."""
        world = World('processes:\n  web: {command: ["{python}", "web"], start: {ready_after: 1}}\n')
        world.reactor.advance(1)
        self.assertEqual(world.reactor.getDelayedCalls(), [])
        self.assertIsNone(world.process("web").timers.remaining("memory"))

    def test_reloadArmsTheCheck(self) -> None:
        """max_memory added by a reload is checked on the running child, same pid."""
        world = World('processes:\n  web: {command: ["{python}", "web"]}\n')
        child = world.child("web")
        loaded = loadText(MEMORY)
        world.supervisor.apply(loaded.config, loaded.kinds)
        world.rss[child.pid] = 200 * 2**20
        world.reactor.advance(2)
        self.assertEqual(child.signals, [signal.SIGTERM])


class MetricsTests(SynchronousTestCase):
    """
    orchestrator_process_memory_bytes, read at scrape time.
    """

    def test_memoryGaugeForEveryProcess(self) -> None:
        """Every managed process has the gauge: its group's bytes while a child runs, 0 without one."""
        loaded = loadText("""
            processes:
              web: {command: ["{python}", "web"]}
              idle: {command: ["{python}", "idle"], autostart: false}
        """)
        reactor = FakeProcessReactor()
        orchestrator = makeOrchestrator(loaded, reactor, memory=lambda pgid: 4096 * pgid)
        orchestrator.startService()
        self.addCleanup(orchestrator.stopService)
        web = orchestrator.supervisor.processes["web"]
        samples = {s.labels["process"]: s.value for family in orchestrator.metrics.collect()
                   if family.name == "orchestrator_process_memory_bytes" for s in family.samples}
        self.assertEqual(samples, {"web": 4096.0 * web.pid, "idle": 0.0})


class OutputFileTests(SynchronousTestCase):
    """
    log.stdout and log.stderr: each stream alone in its own rotated file.
    """

    def test_streamsSplit(self) -> None:
        """stdout lines go to log.stdout, stderr lines to log.stderr, both to log.file."""
        directory = tempfile.mkdtemp(prefix="orch-toolbox-out-")
        self.addCleanup(shutil.rmtree, directory, True)
        paths = {k: os.path.join(directory, "logs", k) for k in ("file", "stdout", "stderr")}
        capture = OutputCapture("web", OutputConfig(echo=False, **paths), Clock())
        capture.newRun(1)
        capture.received(1, b"out one\nout two\n")
        capture.received(2, b"err one\n")
        capture.close()

        def read(key):
            with open(paths[key], encoding="utf-8") as f:
                return f.read()

        self.assertEqual(read("stdout"), "out one\nout two\n")
        self.assertEqual(read("stderr"), "err one\n")
        self.assertEqual(read("file"), "out one\nout two\nerr one\n")

    def test_streamFilesRotate(self) -> None:
        """log.stdout rotates at log.max_bytes and keeps log.backups files."""
        directory = tempfile.mkdtemp(prefix="orch-toolbox-out-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "out.log")
        capture = OutputCapture("web", OutputConfig(echo=False, stdout=path, max_bytes=1024, backups=2),
                                Clock())
        capture.newRun(1)
        for _ in range(40):
            capture.received(1, b"x" * 99 + b"\n")
        capture.close()
        self.assertEqual(sorted(os.listdir(directory)), ["out.log", "out.log.1", "out.log.2"])


class LimitCheckTests(SynchronousTestCase):
    """
    Limits and identities that could only fail at spawn are refused at load.
    """

    def test_raisingAHardLimitNeedsRoot(self) -> None:
        """Without root, a hard limit above the orchestrator's own is a located error."""
        self.patch(os, "geteuid", lambda: 1000)
        self.patch(resource, "getrlimit", lambda number: (1024, 4096))
        text = 'processes:\n  web: {command: ["{python}"], rlimits: {nofile: 8192, core: 100}}\n'
        found = problems(text)
        self.assertIn("processes.web.rlimits.nofile: raising the hard limit above 4096 needs the "
                      "orchestrator to run as root", found)
        self.assertNotIn("rlimits.core", found)

    def test_numericUidWithoutEntryNeedsAGroup(self) -> None:
        """A uid with no passwd entry and no group is refused: the child would keep root's group."""
        self.patch(os, "geteuid", lambda: 0)
        text = 'processes:\n  web: {command: ["{python}"], user: 54321}\n'
        self.assertIn("processes.web.user: uid 54321 has no passwd entry: set group as well", problems(text))
