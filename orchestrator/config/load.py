"""
Load, merge and validate the configuration.

L{loadConfig} runs named steps, in order: read the YAML file (bounded,
keeping every node's position); read the C{.env} file; load the plugins it
names and build the master schema; collect and apply the overrides
(C{.env} file, then the process environment, then command-line options,
each beating the one before); choose default probes; fill schema
defaults; convert durations; validate once; run the checks a schema cannot
express; build the typed L{Config}.

Every problem is collected and reported together, each located in the
operator's terms (see L{orchestrator.config._problems}).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from orchestrator import tls
from orchestrator.config._build import buildConfig
from orchestrator.config._checks import checkSemantics, validateSchema
from orchestrator.config._dotenv import DotenvFile, findDotenv, readDotenv
from orchestrator.config._durations import convertDurations
from orchestrator.config._overrides import (
    GENERIC_PREFIX,
    SEED_VARIABLES,
    Override,
    anchorRelativePaths,
    convert,
    environmentOverrides,
    matchKeyCase,
    parseBoolean,
)
from orchestrator.config._problems import Problems, dottedPath
from orchestrator.config._read import readText
from orchestrator.config._yamlmarks import YAMLLoadError, loadWithMarks
from orchestrator.config.schema import fillDefaults, masterSchema, schemaAt
from orchestrator.config.types import Config
from orchestrator.errors import ConfigError
from orchestrator.hooks.manager import Kinds, buildPluginManager, collectKinds

__all__ = [
    "SEED_VARIABLES",
    "GENERIC_PREFIX",
    "LoadedConfig",
    "loadConfig",
    "dottedPath",
    "parseBoolean",
]


@dataclass(frozen=True)
class LoadedConfig:
    """
    A validated configuration together with the plugin manager and kinds it
    was validated against (the runtime builds probes, policies and
    notifiers from the same kinds).

    @ivar warnings: located problems that do not stop a run (a
        C{working_dir} that does not exist yet), for the log and
        C{check-config}.
    @ivar envFile: the C{.env} file that was read, or C{None}.
    """

    config: Config
    pluginManager: Any
    kinds: Kinds
    warnings: tuple[str, ...] = ()
    envFile: str | None = None


def loadConfig(
    path: str | None,
    envFile: str | None = None,
    environ: Mapping[str, str] | None = None,
    cliOverrides: Mapping[tuple, Any] | None = None,
    entryPoints: bool = True,
    checkExecutables: bool = True,
    leaveOutTLS: bool = False,
) -> LoadedConfig:
    """
    Load, merge and validate a configuration.

    Safe to call off the reactor thread: it touches files and imports
    plugin modules, nothing of the running service.

    @param path: the YAML file, or C{None} for schema defaults only.
    @param envFile: a C{.env} file; C{None} reads C{./.env}, else the
        C{.env} beside the YAML file, if either exists.
    @param environ: the process environment (default C{os.environ}).
    @param cliOverrides: JSON path -> value (already typed) from the
        command line, e.g. C{{("admin", "listen"): "tcp:9000"}}.
    @param entryPoints: load the C{orchestrator} entry point group.
    @param checkExecutables: check that commands exist and are executable.
    @param leaveOutTLS: leave TLS out of this process if the merged
        configuration does not use it (L{orchestrator.tls}); only
        C{twistd orchestrator}'s start asks for it, before the reactor is
        imported.
    @raise ConfigError: with every problem found, each located.
    """
    environ = os.environ if environ is None else environ
    filename = os.path.abspath(path) if path is not None else None
    baseDir = os.path.dirname(filename) if filename else os.getcwd()

    data, valueMarks, keyMarks = _readYAML(path)
    problems = Problems(path, valueMarks, keyMarks)
    sources: dict[tuple, str] = {p: "yaml" for p, _ in _leaves(data)} if data else {}
    dotenv = _readDotenv(findDotenv(envFile, filename), problems)
    pm, kinds = _loadPlugins(data, dotenv, environ, path, entryPoints, problems)
    schema = masterSchema(kinds)
    overrides = _collectOverrides(data, dotenv, environ, cliOverrides or {}, problems)
    secretNames = _applyOverrides(schema, data, overrides, sources, problems)
    _chooseDefaultProbes(data, sources)
    _fillDefaults(schema, data, sources)
    _convertDurations(schema, data, problems)
    _settleTLS(data, leaveOutTLS, problems)
    validateSchema(schema, data, problems)
    checkSemantics(data, baseDir, problems, checkExecutables,
                   explicitDefaultProcess=sources.get(("admin", "default_process"), "default") != "default")
    problems.raiseIfAny()

    config = buildConfig(data, filename, baseDir, sources,
                         dict(dotenv.values), kinds, environ, secretNames)
    _checkKinds(config, kinds)
    return LoadedConfig(config=config, pluginManager=pm, kinds=kinds,
                        warnings=problems.sortedWarnings(), envFile=dotenv.path)


# -- the steps -------------------------------------------------------------------------


def _checkKinds(config: Config, kinds: Kinds) -> None:
    """
    Let each notifier kind judge what only the built configuration shows
    (a secret named by C{secret_env} that is not valid base64), so that
    C{check-config}, a start and a reload all refuse it alike.
    """
    from orchestrator.notify.registry import checkNotifiers

    checkNotifiers(config, kinds)


def _readYAML(path: str | None) -> tuple[dict, dict, dict]:
    """
    Read and parse the YAML file, bounded in size, nodes and depth.  An
    empty file is an error: an editor that truncates before writing must
    not make a reload stop every process.
    """
    if path is None:
        return {}, {}, {}
    text = readText(path, "configuration")
    if not text.strip():
        raise ConfigError([f"{path}: configuration file is empty"])
    try:
        data, valueMarks, keyMarks = loadWithMarks(text)
    except YAMLLoadError as e:
        problem = (f"{path}:{e.location.line}:{e.location.column}: "
                   f"{'YAML syntax error' if e.syntax else 'YAML'}: {e.problem}")
    else:
        problem = None
    if problem is not None:
        raise ConfigError([problem])
    if data is None:
        raise ConfigError([f"{path}: configuration file is empty (only comments); "
                           "write `processes: {}` for a configuration without processes"])
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1:1: (top level): expected a mapping of sections"])
    return data, valueMarks, keyMarks


def _readDotenv(envPath: str | None, problems: Problems) -> DotenvFile:
    dotenv, found = readDotenv(envPath)
    for message in found:
        problems.addRaw(message, (1, 0, 0))
    return dotenv


def _early(path: tuple, dotenv: DotenvFile, environ: Mapping[str, str]) -> str | None:
    """
    The raw value the environment gives a path, before the schema exists.
    """
    name = GENERIC_PREFIX + "__".join(part.upper() for part in path)
    found = None
    for layer in (dotenv.values, environ):
        for key, value in layer.items():
            if key.upper() == name:
                found = value
    return found


def _loadPlugins(data, dotenv, environ, path, entryPoints, problems) -> tuple[Any, Kinds]:
    """
    Plugins come first: their kinds' options are part of the schema.
    """
    pluginList = data.get("plugins", [])
    raw = _early(("plugins",), dotenv, environ)
    if raw is not None:
        try:
            pluginList = convert(raw, {"type": "array", "items": {"type": "string"}})
        except ValueError:
            pluginList = []  # reported with its variable's name later
    if not isinstance(pluginList, list) or not all(isinstance(p, str) for p in pluginList):
        problems.add(("plugins",), "expected a list of dotted module paths")
        pluginList = []
    try:
        pm = buildPluginManager(pluginList, entryPoints=entryPoints)
        return pm, collectKinds(pm)
    except ConfigError as e:
        for message in e.problems:
            problems.addRaw(f"{path or '<defaults>'}: {message}", (0, 0, 0))
        problems.raiseIfAny()
        raise  # pragma: no cover


def _collectOverrides(data, dotenv: DotenvFile, environ, cliOverrides, problems) -> list[Override]:
    """
    Overrides, lowest precedence first.  The seed's variables act on the
    default process, which the environment itself may rename.
    """
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    defaultProcess = _early(("admin", "default_process"), dotenv, environ) or admin.get("default_process")
    if not isinstance(defaultProcess, str) or not defaultProcess:
        defaultProcess = "backend"
    overrides: list[Override] = []
    layers = [(dotenv.values, ".env", lambda n: f"{dotenv.path}:{dotenv.lines.get(n, 1)}: {n}",
               dotenv.folder),
              (environ, "env", lambda n: f"env {n}", None)]
    for variables, source, whereOf, folder in layers:
        found, bad = environmentOverrides(variables, source, defaultProcess, whereOf, folder)
        overrides += found
        for message in bad:
            problems.addRaw(message, (1, 0, 0))
    for cliPath, value in cliOverrides.items():
        overrides.append(Override(tuple(cliPath), value, "cli", f"option --{cliPath[-1]}"))
    return overrides


def _applyOverrides(schema, data, overrides, sources, problems) -> set[str]:
    """
    Set each override's value at its path, converted to the schema's type.

    @return: the variables holding the admin token (never passed on).
    """
    secretNames: set[str] = set()
    for override in overrides:
        target = matchKeyCase(schema, data, override.path)
        node = schemaAt(schema, target, data)
        if node is None or target[0] not in schema["properties"]:
            problems.addRaw(f"{override.where}: unknown configuration path {dottedPath(target)}",
                            (1, 0, 0))
            continue
        value = override.raw
        if target == ("admin", "token") and not (isinstance(value, str) and value.strip()):
            problems.addRaw(f"{override.where}: empty token (unset the variable to keep "
                            "the configured one)", (1, 0, 0))
            continue
        if isinstance(value, str) and override.source != "cli":
            try:
                value = convert(value, node)
            except ValueError as e:
                problems.addRaw(f"{override.where}: {e}", (1, 0, 0))
                continue
        if override.folder is not None:
            value = anchorRelativePaths(value, target, node, override.folder)
        try:
            _setPath(data, target, value)
        except TypeError:
            problems.addRaw(f"{override.where}: cannot set {dottedPath(target)}: "
                            "a parent is not a mapping", (1, 0, 0))
            continue
        problems.origins[target] = override.where
        if target == ("admin", "token") and override.variable:
            secretNames.add(override.variable)
        for leaf, _ in _leaves(value, target):
            sources[leaf] = override.source
    return secretNames


def _chooseDefaultProbes(data, sources) -> None:
    """
    A process probes over http when it has a url, unless told otherwise.
    """
    processes = data.get("processes")
    if not isinstance(processes, dict):
        return
    for name, proc in processes.items():
        if isinstance(proc, dict):
            health = proc.setdefault("health", {})
            if isinstance(health, dict) and health.get("probe") is None:
                health["probe"] = "http" if proc.get("url") else "none"
                sources[("processes", name, "health", "probe")] = "default"


def _fillDefaults(schema, data, sources) -> None:
    filled: list[tuple] = []
    fillDefaults(schema, schema, data, (), filled)
    for p in filled:
        for leaf, _ in _leaves(_get(data, p), p):
            sources.setdefault(leaf, "default")


def _convertDurations(schema, data, problems: Problems) -> None:
    for path, message in convertDurations(lambda p: schemaAt(schema, p, data), data):
        problems.add(path, message)
        problems.settled.add(path)


# -- helpers ------------------------------------------------------------------------------


def _settleTLS(data: dict, leaveOut: bool, problems: Problems) -> None:
    """
    Leave TLS out if asked and unused; then refuse whatever needs TLS this
    process cannot offer (a reload bringing in the first https URL).  Here,
    before the checks that import Twisted's endpoints.
    """
    orchestrator = data.get("orchestrator") if isinstance(data.get("orchestrator"), dict) else {}
    needed = tls.uses(data)
    if leaveOut and orchestrator.get("tls", "auto") == "auto" and not needed:
        tls.leaveOut()
    for path, why in tls.problems(needed):
        problems.add(path, why)


def _setPath(data: dict, path: tuple, value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _leaves(value: Any, path: tuple = ()):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, path + (key,))
    else:
        yield path, value


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data
