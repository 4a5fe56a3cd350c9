"""
Load, merge and validate the configuration.

The pipeline, in order: read the YAML file (keeping every node's position),
load the plugins it names and build the master schema, apply the overrides
(C{.env} file, then the process environment, then command-line options, each
beating the one before), fill schema defaults, validate once, run the checks
a schema cannot express (URLs, executables, dependency cycles, the admin
listener's safety), and build the typed L{Config}.

Every problem is collected and reported together, each located in the
operator's terms: C{FILE:LINE:COL: json.path: message} for YAML,
C{env NAME: ...} for the environment, C{FILE:LINE: NAME: ...} for C{.env}
and C{option --NAME: ...} for the command line.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from dotenv import dotenv_values

from orchestrator.config._build import buildConfig
from orchestrator.config._checks import checkSemantics, validateSchema
from orchestrator.config._yamlmarks import Located, YAMLLoadError, loadWithMarks
from orchestrator.config.types import Config
from orchestrator.errors import ConfigError
from orchestrator.hooks.manager import Kinds, buildPluginManager, collectKinds
from orchestrator.config.schema import fillDefaults, masterSchema, schemaAt

__all__ = [
    "SEED_VARIABLES",
    "GENERIC_PREFIX",
    "LoadedConfig",
    "loadConfig",
    "dottedPath",
    "parseBoolean",
]

_DEFAULT_PROCESS = object()

#: The seed's flat variables and the configuration path each one sets.
#: C{_DEFAULT_PROCESS} stands for C{processes.<admin.default_process>}.
SEED_VARIABLES: Mapping[str, tuple] = {
    "ORCHESTRATOR_ENABLED": ("orchestrator", "enabled"),
    "GO_BACKEND_BINARY": (_DEFAULT_PROCESS, "command"),
    "GO_BACKEND_URL": (_DEFAULT_PROCESS, "url"),
    "BACKEND_WORKING_DIR": (_DEFAULT_PROCESS, "working_dir"),
    "HEALTH_CHECK_INTERVAL": (_DEFAULT_PROCESS, "health", "interval"),
    "HEALTH_CHECK_TIMEOUT": (_DEFAULT_PROCESS, "health", "timeout"),
    "AUTO_RESTART": (_DEFAULT_PROCESS, "restart", "auto"),
    "MAX_RESTART_ATTEMPTS": (_DEFAULT_PROCESS, "restart", "max_attempts"),
    "ORCHESTRATOR_ADMIN_TOKEN": ("admin", "token"),
}

#: C{ORCHESTRATOR__A__B=value} sets the path C{a.b}.
GENERIC_PREFIX = "ORCHESTRATOR__"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parseBoolean(raw: str) -> bool:
    """
    Read a boolean the way operators write them in C{.env} files.

    @raise ValueError: for anything but true/false/1/0/yes/no/on/off.
    """
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false/1/0/yes/no/on/off)")


def dottedPath(path: Iterable) -> str:
    """
    Render a JSON path the way the documentation writes keys:
    C{processes.backend.health.interval}, C{notifiers[2].url}.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


@dataclass(frozen=True)
class LoadedConfig:
    """
    A validated configuration together with the plugin manager and kinds it
    was validated against (the runtime builds probes, policies and
    notifiers from the same kinds).
    """

    config: Config
    pluginManager: Any
    kinds: Kinds


@dataclass(frozen=True)
class _Override:
    path: tuple
    raw: Any  # str from env/.env; already typed from the command line
    source: str  # ".env", "env" or "cli"
    where: str  # how an error names it
    variable: str | None = None  # the environment variable, if any


class _Problems:
    """
    Collects located problems.
    """

    def __init__(self, filename: str | None, valueMarks, keyMarks) -> None:
        self.filename = filename or "<defaults>"
        self.valueMarks = valueMarks
        self.keyMarks = keyMarks
        self.origins: dict[tuple, str] = {}  # path -> override "where"
        self.items: list[tuple[tuple, str]] = []

    def _location(self, path: tuple, atKey: bool) -> tuple[tuple, str]:
        # Something the YAML never mentioned but a variable created (a
        # process made by GO_BACKEND_URL) is located at that variable.
        if path and path not in self.valueMarks:
            below = [where for origin, where in self.origins.items() if origin[:len(path)] == path]
            if below:
                return (1, 0, 0), below[0]
        # Otherwise the nearest override or YAML node at or above the path.
        for n in range(len(path), -1, -1):
            prefix = path[:n]
            if prefix in self.origins:
                return (1, 0, 0), self.origins[prefix]
            marks = self.keyMarks if (atKey and n == len(path)) else self.valueMarks
            mark: Located | None = marks.get(prefix) or self.valueMarks.get(prefix)
            if mark is not None and (n > 0 or not path):
                return (0, mark.line, mark.column), f"{self.filename}:{mark.line}:{mark.column}"
        return (0, 0, 0), self.filename

    def add(self, path: tuple, message: str, atKey: bool = False) -> None:
        order, where = self._location(path, atKey)
        self.items.append((order, f"{where}: {dottedPath(path)}: {message}"))

    def addRaw(self, message: str, order=(2, 0, 0)) -> None:
        self.items.append((order, message))

    def raiseIfAny(self) -> None:
        if self.items:
            self.items.sort(key=lambda item: item[0])
            raise ConfigError([m for _, m in self.items])


def _convert(raw: str, schema: dict) -> Any:
    """
    Convert an environment string to the type the schema wants.
    """
    types = schema.get("type")
    if types is None and "enum" in schema:
        types = sorted({type(v).__name__ for v in schema["enum"]})
        types = ["null" if t == "NoneType" else ("string" if t == "str" else t) for t in types]
    if isinstance(types, str):
        types = [types]
    types = types or ["string"]
    if "null" in types and raw.strip().lower() in ("", "null", "none"):
        return None
    if "boolean" in types:
        return parseBoolean(raw)
    if "integer" in types:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
    if "number" in types:
        try:
            number = float(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{raw!r} is not a finite number")
        return number
    if "array" in types:
        import json

        text = raw.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as e:
                raise ValueError(f"{raw!r} is not a JSON list: {e}") from None
            return value
        items = schema.get("items", {})
        words = shlex.split(raw) if items.get("type") == "string" else raw.split(",")
        if items.get("type") in ("integer", "number"):
            return [_convert(w, items) for w in words if w.strip()]
        return words
    if "object" in types:
        import json

        try:
            value = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{raw!r} is not a JSON object: {e}") from None
        return value
    return raw


def _dotenvLines(path: str) -> dict[str, int]:
    lines = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if text.startswith("export "):
                text = text[len("export "):].lstrip()
            if "=" in text and not text.startswith("#"):
                lines.setdefault(text.split("=", 1)[0].strip(), number)
    return lines


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


def _environmentOverrides(
    environ: Mapping[str, str], source: str, defaultProcess: str, whereOf, problems
) -> list[_Override]:
    overrides = []
    for name, raw in environ.items():
        if name in SEED_VARIABLES:
            path = tuple(
                ("processes", defaultProcess) if p is _DEFAULT_PROCESS else (p,)
                for p in SEED_VARIABLES[name]
            )
            path = tuple(part for group in path for part in group)
            overrides.append(_Override(path, raw, source, whereOf(name), name))
        elif name.startswith(GENERIC_PREFIX):
            parts = name[len(GENERIC_PREFIX):].split("__")
            if not all(parts):
                problems.addRaw(f"{whereOf(name)}: malformed variable name", (1, 0, 0))
                continue
            overrides.append(_Override(tuple(parts), raw, source, whereOf(name), name))
    return overrides


def _matchKeyCase(schema: dict, data: dict, path: tuple) -> tuple:
    """
    Environment variable names are upper case.  Match each segment to a
    schema key, or to an existing mapping key (a process named C{Backend})
    case-insensitively; a new key of a free-form string mapping (C{env})
    keeps its case, other new keys are lower-cased.
    """
    out: list = []
    node: Any = data
    for key in path:
        if isinstance(key, str):
            sub = schemaAt(schema, tuple(out), data) or {}
            known = set(sub.get("properties", {}))
            for branch in sub.get("allOf", ()):
                known |= set(branch.get("then", {}).get("properties", {}))
            existing = node if isinstance(node, dict) else {}
            match = next((k for k in list(known) + list(existing)
                          if isinstance(k, str) and k.lower() == key.lower()), None)
            if match is not None:
                key = match
            elif not (isinstance(sub.get("additionalProperties"), dict)
                      and sub["additionalProperties"].get("type") == "string"):
                key = key.lower()
        node = node.get(key) if isinstance(node, dict) else None
        out.append(key)
    return tuple(out)


def loadConfig(
    path: str | None,
    envFile: str | None = None,
    environ: Mapping[str, str] | None = None,
    cliOverrides: Mapping[tuple, Any] | None = None,
    entryPoints: bool = True,
    checkExecutables: bool = True,
) -> LoadedConfig:
    """
    Load, merge and validate a configuration.

    @param path: the YAML file, or C{None} for schema defaults only.
    @param envFile: a C{.env} file; C{None} reads C{./.env} if it exists.
    @param environ: the process environment (default C{os.environ}).
    @param cliOverrides: JSON path -> value (already typed) from the
        command line, e.g. C{{("admin", "listen"): "tcp:9000"}}.
    @param entryPoints: load the C{orchestrator} entry point group.
    @param checkExecutables: check that commands exist and are executable.
    @raise ConfigError: with every problem found, each located.
    """
    environ = os.environ if environ is None else environ
    cliOverrides = cliOverrides or {}
    filename = os.path.abspath(path) if path is not None else None
    baseDir = os.path.dirname(filename) if filename else os.getcwd()
    data: Any = {}
    valueMarks: dict = {}
    keyMarks: dict = {}
    if filename is not None:
        try:
            with open(filename, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError([f"{path}: cannot read configuration: {e.strerror}"]) from None
        except UnicodeDecodeError as e:
            raise ConfigError([f"{path}: not UTF-8 text (byte {e.start})"]) from None
        try:
            data, valueMarks, keyMarks = loadWithMarks(text)
        except YAMLLoadError as e:
            raise ConfigError(
                [f"{path}:{e.location.line}:{e.location.column}: YAML syntax error: {e.problem}"]
            ) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([f"{path}:1:1: (top level): expected a mapping of sections"])
    problems = _Problems(path, valueMarks, keyMarks)
    sources: dict[tuple, str] = {p: "yaml" for p, _ in _leaves(data)} if data else {}


    # The .env file, read first: it may name plugins or the default process.
    dotenv: dict[str, str] = {}
    dotenvLines: dict[str, int] = {}
    envPath = envFile
    if envPath is None and os.path.isfile(".env"):
        envPath = ".env"
    if envPath is not None:
        if not (os.path.isfile(envPath) or envPath == os.devnull):
            problems.addRaw(f"{envPath}: no such .env file", (1, 0, 0))
        else:
            try:
                dotenv = {k: (v if v is not None else "") for k, v in dotenv_values(envPath).items()}
                dotenvLines = _dotenvLines(envPath)
            except (OSError, UnicodeDecodeError) as e:
                problems.addRaw(f"{envPath}: cannot read: {e}", (1, 0, 0))

    def early(path: tuple):
        """The raw value the environment gives a path, before the schema exists."""
        name = GENERIC_PREFIX + "__".join(part.upper() for part in path)
        found = None
        for layer in (dotenv, environ):
            for key, value in layer.items():
                if key.upper() == name:
                    found = value
        return found

    # Plugins first: their kinds' options are part of the schema.
    pluginList = data.get("plugins", [])
    if early(("plugins",)) is not None:
        try:
            pluginList = _convert(early(("plugins",)), {"type": "array", "items": {"type": "string"}})
        except ValueError:
            pluginList = []  # reported with its variable's name below
    if not isinstance(pluginList, list) or not all(isinstance(p, str) for p in pluginList):
        problems.add(("plugins",), "expected a list of dotted module paths")
        pluginList = []
    try:
        pm = buildPluginManager(pluginList, entryPoints=entryPoints)
        kinds = collectKinds(pm)
    except ConfigError as e:
        for message in e.problems:
            problems.addRaw(f"{path or '<defaults>'}: {message}", (0, 0, 0))
        problems.raiseIfAny()
        raise  # pragma: no cover
    schema = masterSchema(kinds)

    # Overrides, lowest precedence first.  The seed's variables act on the
    # default process, which the environment itself may rename.
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    defaultProcess = early(("admin", "default_process")) or admin.get("default_process")
    if not isinstance(defaultProcess, str) or not defaultProcess:
        defaultProcess = "backend"
    overrides: list[_Override] = []
    if dotenv:
        overrides += _environmentOverrides(
            dotenv, ".env", defaultProcess,
            lambda n: f"{envPath}:{dotenvLines.get(n, 1)}: {n}", problems,
        )
    overrides += _environmentOverrides(
        environ, "env", defaultProcess, lambda n: f"env {n}", problems
    )
    for cliPath, value in cliOverrides.items():
        option = "--" + cliPath[-1]
        overrides.append(_Override(tuple(cliPath), value, "cli", f"option {option}"))

    secretNames: set[str] = set()  # variables holding the admin token: never passed on
    for override in overrides:
        target = _matchKeyCase(schema, data, override.path)
        node = schemaAt(schema, target, data)
        if node is None or target[0] not in schema["properties"]:
            problems.addRaw(
                f"{override.where}: unknown configuration path {dottedPath(target)}",
                (1, 0, 0),
            )
            continue
        value = override.raw
        if target == ("admin", "token") and not (isinstance(value, str) and value.strip()):
            problems.addRaw(f"{override.where}: empty token (unset the variable to keep "
                            "the configured one)", (1, 0, 0))
            continue
        if isinstance(value, str) and override.source != "cli":
            try:
                value = _convert(value, node)
            except ValueError as e:
                problems.addRaw(f"{override.where}: {e}", (1, 0, 0))
                continue
        try:
            _setPath(data, target, value)
        except TypeError:
            problems.addRaw(
                f"{override.where}: cannot set {dottedPath(target)}: a parent is not a mapping",
                (1, 0, 0),
            )
            continue
        problems.origins[target] = override.where
        if target == ("admin", "token") and override.variable:
            secretNames.add(override.variable)
        for leaf, _ in _leaves(value, target):
            sources[leaf] = override.source

    # A process probes over http when it has a url, unless told otherwise.
    processes = data.get("processes")
    if isinstance(processes, dict):
        for name, proc in processes.items():
            if isinstance(proc, dict):
                health = proc.setdefault("health", {})
                if isinstance(health, dict) and health.get("probe") is None:
                    health["probe"] = "http" if proc.get("url") else "none"
                    sources[("processes", name, "health", "probe")] = "default"

    filled: list[tuple] = []
    fillDefaults(schema, schema, data, (), filled)
    for p in filled:
        for leaf, _ in _leaves(_get(data, p), p):
            sources.setdefault(leaf, "default")

    validateSchema(schema, data, problems)
    checkSemantics(data, baseDir, problems, checkExecutables)
    problems.raiseIfAny()

    config = buildConfig(data, filename, baseDir, {dottedPath(p): s for p, s in sources.items()},
                         dotenv, kinds, environ, secretNames)
    return LoadedConfig(config=config, pluginManager=pm, kinds=kinds)


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data

