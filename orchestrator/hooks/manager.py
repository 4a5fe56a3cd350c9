"""
Build a fresh plugin manager and collect the kinds its plugins register.

One manager per service instance (as pytest makes one per run), never a
module global: tests and reloads get their own without unregistering
anything.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

import pluggy

from orchestrator.hooks import specs as hookspecs
from orchestrator.hooks.call import callHook
from orchestrator.errors import ConfigError

__all__ = ["DEFAULT_PLUGINS", "Kinds", "buildPluginManager", "collectKinds"]

#: The built-in plugins, registered through the same hooks as third-party ones.
DEFAULT_PLUGINS = (
    "orchestrator.builtin.probes",
    "orchestrator.builtin.policies",
    "orchestrator.builtin.notifiers",
)


def buildPluginManager(
    extraModules: Iterable[str] = (), entryPoints: bool = True
) -> pluggy.PluginManager:
    """
    Create a plugin manager with the built-ins, the C{orchestrator} entry
    point group and the given dotted module paths registered.

    @param extraModules: dotted module paths (the YAML C{plugins:} list).
    @param entryPoints: whether to load the setuptools entry point group.
    @raise ConfigError: a module cannot be imported, or implements a hook
        that does not exist (a misspelled name).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    problems = []
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name)
    if entryPoints:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
        except Exception as e:
            problems.append(f"plugins: an 'orchestrator' entry point failed to load: {e}")
    for i, dotted in enumerate(extraModules):
        if pm.get_plugin(dotted) is not None:
            continue
        try:
            module = importlib.import_module(dotted)
        except Exception as e:
            problems.append(f"plugins[{i}]: cannot import {dotted!r}: {e}")
            continue
        pm.register(module, dotted)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        problems.append(f"plugins: {e}")
    if problems:
        raise ConfigError(problems)
    return pm


@dataclass(frozen=True)
class Kinds:
    """
    The probe, restart policy and notifier kinds by name.
    """

    probes: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))
    policies: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))
    notifiers: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))


def _collect(pm, hookName: str, what: str, problems: list) -> Mapping[str, type]:
    found: dict[str, type] = {}
    owners: dict[str, str] = {}
    for call in callHook(pm, hookName):
        owner = call.plugin
        if call.failure is not None:
            problems.append(f"plugin {owner}: {hookName} failed: {call.failure.value!r}")
            continue
        for kind in call.result or []:
            name = getattr(kind, "name", None)
            schema = getattr(kind, "config_schema", None)
            if not isinstance(name, str) or not name:
                problems.append(f"plugin {owner}: {what} {kind!r} has no name")
                continue
            if not isinstance(schema, dict):
                problems.append(f"plugin {owner}: {what} {name!r} has no config_schema")
                continue
            if name in found:
                problems.append(
                    f"plugin {owner}: {what} {name!r} is already registered by {owners[name]}"
                )
                continue
            found[name] = kind
            owners[name] = owner
    return MappingProxyType(found)


def collectKinds(pm: pluggy.PluginManager) -> Kinds:
    """
    Call the registration hooks and index the kinds by name.

    @raise ConfigError: two plugins register the same name, or a kind lacks
        its C{name} or C{config_schema}.
    """
    problems: list[str] = []
    kinds = Kinds(
        probes=_collect(pm, "register_probe_kinds", "probe kind", problems),
        policies=_collect(pm, "register_restart_policies", "restart policy", problems),
        notifiers=_collect(pm, "register_notifiers", "notifier", problems),
    )
    if "none" in kinds.probes:
        problems.append("probe kind 'none' is reserved (it means: no probe)")
    if problems:
        raise ConfigError(problems)
    return kinds
