"""
The plugin manager: built-ins through the same hooks, entry points, dotted
paths from the YAML, schema fragments validated, duplicates rejected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from orchestrator.config.load import loadConfig
from orchestrator.errors import ConfigError
from orchestrator.hooks.manager import DEFAULT_PLUGINS, buildPluginManager, collectKinds
from tests.fakes import FakeProcessReactor, writeConfig, makeOrchestrator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "notifier_plugin")

BASE = """\
processes:
  backend: {command: ["{python}", "-c", "pass"]}
"""


def load(text, entryPoints=False):
    return loadConfig(writeConfig(text), envFile=os.devnull, environ={}, entryPoints=entryPoints)


def test_builtins_registered_through_hooks():
    """The built-in kinds come from DEFAULT_PLUGINS through the registration hooks."""
    pm = buildPluginManager(entryPoints=False)
    assert set(DEFAULT_PLUGINS) <= {pm.get_name(p) for p in pm.get_plugins()}
    kinds = collectKinds(pm)
    assert sorted(kinds.probes) == ["exec", "http", "tcp"]
    assert sorted(kinds.policies) == ["always", "backoff", "never", "on-failure"]
    assert sorted(kinds.notifiers) == ["log", "prometheus", "webhook"]


def test_fresh_manager_per_call():
    """Each service gets its own plugin manager: registering in one leaves another untouched."""
    first = buildPluginManager(["tests.plugin_samples.broken_notifier"], entryPoints=False)
    second = buildPluginManager(entryPoints=False)
    assert first is not second
    assert "broken" in collectKinds(first).notifiers
    assert "broken" not in collectKinds(second).notifiers


def test_yaml_dotted_path_plugin_is_selected():
    """A module listed in the YAML plugins: list registers kinds the config can select."""
    loaded = load(BASE + "plugins: [tests.plugin_samples.broken_notifier]\nnotifiers: [{type: broken}]\n")
    assert [n.type for n in loaded.config.notifiers] == ["broken"]


def test_unimportable_plugin_module_is_an_error():
    """A plugins: entry that cannot be imported is a located error."""
    with pytest.raises(ConfigError) as caught:
        load(BASE + "plugins: [no_such_module_xyz]\n")
    assert "plugins[0]: cannot import 'no_such_module_xyz'" in caught.value.problems[0]


def test_duplicate_kind_names_rejected():
    """Two plugins registering the same kind name is a start-up error naming both."""
    with pytest.raises(ConfigError) as caught:
        load(BASE + "plugins: [tests.plugin_samples.duplicate_log]\n")
    assert ("plugin tests.plugin_samples.duplicate_log: notifier 'log' is already "
            "registered by orchestrator.builtin.notifiers") in caught.value.problems[0]


def test_misspelled_hook_rejected():
    """A hook implementation with an unknown name is an error, not silently ignored."""
    with pytest.raises(ConfigError) as caught:
        load(BASE + "plugins: [tests.plugin_samples.misspelled]\n")
    assert "register_notifier" in caught.value.problems[0]
    assert "unknown hook" in caught.value.problems[0]


def test_plugin_schema_fragments_are_validated():
    """A kind's own options are validated: required keys, types and typos."""
    with pytest.raises(ConfigError) as caught:
        load(BASE + 'notifiers:\n  - {type: webhook}\n  - {type: webhook, url: "https://x.example", timout: 3}\n')
    problems = caught.value.problems
    assert any(p.endswith("notifiers[0]: 'url' is a required property") for p in problems), problems
    assert any(p.endswith("notifiers[1].timout: unknown key 'timout' (did you mean 'timeout'?)")
               for p in problems), problems


def test_failing_notifier_is_isolated():
    """A notifier that raises is logged; the other notifiers and supervision go on."""
    from twisted.logger import globalLogPublisher

    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        loaded = load(BASE + "plugins: [tests.plugin_samples.broken_notifier]\n"
                             "notifiers: [{type: broken}, {type: prometheus}]\n")
        reactor = FakeProcessReactor()
        orchestrator = makeOrchestrator(loaded, reactor)
        orchestrator.startService()
        reactor.advance(0)
        assert orchestrator.processes["backend"].status == "starting"
        reactor.advance(1)
        assert orchestrator.processes["backend"].status == "running"
        prometheus = orchestrator.events.notifiers[1]
        assert prometheus._counts[("backend", "running")] == 1
    finally:
        globalLogPublisher.removeObserver(seen.append)
    failures = [e for e in seen if "log_failure" in e]
    assert any("this notifier is broken" in str(e["log_failure"].value) for e in failures)
    assert orchestrator.exitStatus.code is None


def test_failing_startup_hook_fails_the_start_before_any_spawn():
    """A startup hook that raises is a failure to come up: exit status 1 with its reason, nothing spawned."""
    loaded = load(BASE + "plugins: [tests.plugin_samples.broken_startup]\n")
    reactor = FakeProcessReactor()
    orchestrator = makeOrchestrator(loaded, reactor)
    orchestrator.startService()
    reactor.advance(5)
    assert reactor.spawned == []
    assert orchestrator.processes["backend"].status == "stopped"
    assert orchestrator.exitStatus.code == 1
    assert orchestrator.exitStatus.message == (
        "plugin tests.plugin_samples.broken_startup failed in startup: startup hook is broken")


@pytest.mark.slow
def test_entry_point_plugin_installed_and_selected(tmp_path, monkeypatch):
    """The example package, really installed, is found through its entry point and selected from YAML."""
    target = tmp_path / "site"
    source = tmp_path / "notifier_plugin"  # pip builds in the tree: never inside examples/
    shutil.copytree(EXAMPLE, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    monkeypatch.syspath_prepend(str(target))
    events = tmp_path / "events.jsonl"
    text = BASE + f"notifiers: [{{type: jsonl, path: {events}}}]\n"
    with pytest.raises(ConfigError):
        load(text, entryPoints=False)  # not found without the entry point group
    loaded = load(text, entryPoints=True)
    assert [n.type for n in loaded.config.notifiers] == ["jsonl"]
    reactor = FakeProcessReactor()
    orchestrator = makeOrchestrator(loaded, reactor)
    orchestrator.startService()
    reactor.advance(1)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["type"], e["process"]) for e in lines] == [("starting", "backend"), ("running", "backend")]
    with pytest.raises(ConfigError) as caught:
        load(BASE + "notifiers: [{type: jsonl}]\n", entryPoints=True)
    assert caught.value.problems[0].endswith("notifiers[0]: 'path' is a required property")


def test_old_import_paths_still_work():
    """A plugin written against the old paths (orchestrator.hookspecs, .probing, .policy) gets the very objects of orchestrator.plugin, so its hooks register."""
    import importlib

    import orchestrator.plugin as public

    old = {"orchestrator.hookspecs": ["hookimpl", "hookspec", "PROJECT_NAME"],
           "orchestrator.probing": ["ProbeResult"],
           "orchestrator.policy": ["RestartHistory", "ExitRecord"]}
    for module, names in old.items():
        imported = importlib.import_module(module)
        for name in names:
            assert getattr(imported, name) is getattr(public, name, getattr(imported, name)), (module, name)
    assert importlib.import_module("orchestrator.hookspecs").hookimpl is public.hookimpl

    class OldStyle:
        @importlib.import_module("orchestrator.hookspecs").hookimpl
        def register_probe_kinds(self):
            return {}

    pm = buildPluginManager(entryPoints=False)
    pm.register(OldStyle(), name="old-style")
    assert "old-style" in {name for name, _ in pm.list_name_plugin()}
    assert any(impl.plugin_name == "old-style" for impl in pm.hook.register_probe_kinds.get_hookimpls())
