"""
Hooks are called through pluggy's rules: each implementation gets only the
arguments it declares, and a failing plugin is logged with its name,
counted and isolated from the others.  Plugins a reload adds get
C{startup}; plugins it removes get C{shutdown}.
"""

from __future__ import annotations

import shutil
import tempfile

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from orchestrator.config.load import loadConfig
from orchestrator.hooks.call import callHook
from orchestrator.hooks.manager import buildPluginManager
from orchestrator.hooks.specs import hookimpl
from orchestrator.web import buildRoot
from tests.fakes import FakeProcessReactor, ScriptedProbe, writeConfig, makeOrchestrator
from tests.plugin_samples import lifecycle_subset

BASE = """
processes:
  backend:
    command: ["{python}", "-c", "pass"]
    health: {probe: none}
notifiers: []
"""
SUBSET = "plugins: [tests.plugin_samples.lifecycle_subset]\n"


class Build:
    """
    An orchestrator on the fake reactor from a config file the test may
    rewrite and reload.
    """

    def __init__(self, test: SynchronousTestCase, extra: str = "") -> None:
        self.directory = tempfile.mkdtemp(prefix="orch-hooks-")
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.path = writeConfig(BASE + extra, self.directory)
        self.reactor = r = FakeProcessReactor()
        self.orchestrator = makeOrchestrator(self.load(), r,
                                             reload=self.load,
                                             probeFactory=lambda health: ScriptedProbe(auto=True))

    def load(self):
        return loadConfig(self.path, envFile="/dev/null", environ={}, entryPoints=False)

    def reload(self, test: SynchronousTestCase, extra: str):
        writeConfig(BASE + extra, self.directory)
        return test.successResultOf(self.orchestrator.reload())

    def stop(self):
        d = self.orchestrator.stopService()
        for child in self.reactor.spawned:
            if child.alive:
                child.exited(0)
        return d


class SubsetArgumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        lifecycle_subset.CALLS.clear()

    def test_startupWithoutArgumentsAndShutdownWithOrchestratorRun(self) -> None:
        """def startup(): and def shutdown(orchestrator): both run, each with what it declares."""
        b = Build(self, SUBSET)
        b.orchestrator.startService()
        self.assertEqual(lifecycle_subset.CALLS, [("startup",)])
        self.successResultOf(b.stop())
        self.assertEqual(lifecycle_subset.CALLS, [("startup",), ("shutdown", b.orchestrator)])
        self.assertEqual(dict(b.orchestrator.pluginFailures), {})

    def test_registerAdminResourcesWithoutArguments(self) -> None:
        """A register_admin_resources(self) that declares no orchestrator is called and its resource mounted."""

        class NoArgs:
            @hookimpl
            def register_admin_resources(self):
                return [("ping", Resource())]

        b = Build(self)
        b.orchestrator.pluginManager.register(NoArgs(), "noargs")
        root = buildRoot(b.orchestrator)
        plugins = root._tree.children[b"api"].children[b"v1"].children[b"plugins"]
        self.assertIn(b"ping", plugins.children)

    def test_callHookPassesOnlyDeclaredArgumentsAndReturnsFailures(self) -> None:
        """callHook gives each implementation its declared subset and returns a raising one's failure, the others still called."""
        got = []

        class Full:
            @hookimpl
            def startup(self, orchestrator):
                got.append(("full", orchestrator))

        class Raising:
            @hookimpl
            def startup(self):
                raise ValueError("no")

        class Empty:
            @hookimpl
            def startup(self):
                got.append(("empty",))

        pm = buildPluginManager(entryPoints=False)
        for name, plugin in (("full", Full()), ("raising", Raising()), ("empty", Empty())):
            pm.register(plugin, name)
        calls = callHook(pm, "startup", orchestrator="o")
        self.assertEqual(got, [("full", "o"), ("empty",)])
        self.assertEqual([(c.plugin, c.failure is not None) for c in calls],
                         [("full", False), ("raising", True), ("empty", False)])
        self.assertIsInstance(calls[1].failure.value, ValueError)

    def test_failingStartupIsLoggedWithItsNameCountedAndIsolated(self) -> None:
        """A startup hook that raises is logged with the plugin's name and counted, the other plugin's startup still runs, and the start fails (exit 1)."""
        seen: list[dict] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        b = Build(self, "plugins: [tests.plugin_samples.broken_startup, "
                        "tests.plugin_samples.lifecycle_subset]\n")
        b.orchestrator.startService()
        self.assertEqual(lifecycle_subset.CALLS, [("startup",)])
        [failed] = [e for e in seen if e.get("log_format") == "plugin {plugin} failed in {hook}"]
        self.assertEqual((failed["plugin"], failed["hook"]),
                         ("tests.plugin_samples.broken_startup", "startup"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in b.orchestrator.metrics.registry.collect() for s in f.samples}
        self.assertEqual(samples[("orchestrator_plugin_hook_failures_total", (
            ("hook", "startup"), ("plugin", "tests.plugin_samples.broken_startup")))], 1)
        self.assertEqual(b.orchestrator.exitStatus.code, 1)
        self.assertEqual(b.reactor.spawned, [])


class ReloadedPluginTests(SynchronousTestCase):
    def setUp(self) -> None:
        lifecycle_subset.CALLS.clear()

    def test_pluginAddedByReloadGetsStartupRemovedGetsShutdown(self) -> None:
        """A reload adding a plugin module calls its startup once; removing it calls its shutdown once; reloads that keep it call nothing."""
        b = Build(self)
        b.orchestrator.startService()
        b.reload(self, SUBSET)
        self.assertEqual(lifecycle_subset.CALLS, [("startup",)])
        b.reload(self, SUBSET)
        self.assertEqual(lifecycle_subset.CALLS, [("startup",)])
        b.reload(self, "")
        self.assertEqual(lifecycle_subset.CALLS, [("startup",), ("shutdown", b.orchestrator)])
        b.reload(self, "")
        self.assertEqual(len(lifecycle_subset.CALLS), 2)

    def test_failingStartupOfAPluginAddedByReloadIsNotFatal(self) -> None:
        """A plugin added by a reload whose startup raises is logged and counted; the orchestrator goes on."""
        b = Build(self)
        b.orchestrator.startService()
        b.reload(self, "plugins: [tests.plugin_samples.broken_startup]\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(b.orchestrator.exitStatus.code)
        self.assertEqual(b.orchestrator.pluginFailures[("tests.plugin_samples.broken_startup", "startup")], 1)
