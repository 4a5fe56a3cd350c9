"""
The layers above the YAML file: the C{.env} file, the process environment
and command-line options, as overrides of JSON paths.

The seed's flat variables (C{GO_BACKEND_URL}...) name paths of the default
process; C{ORCHESTRATOR__A__B=value} names any path.  A string from the
environment is converted to the type the schema wants at its path.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from orchestrator.config._durations import isDuration, parseDuration
from orchestrator.config.schema import schemaAt

__all__ = [
    "SEED_VARIABLES",
    "GENERIC_PREFIX",
    "Override",
    "parseBoolean",
    "convert",
    "environmentOverrides",
    "matchKeyCase",
    "anchorRelativePaths",
]

DEFAULT_PROCESS = object()

#: The seed's flat variables and the configuration path each one sets.
#: C{DEFAULT_PROCESS} stands for C{processes.<admin.default_process>}.
SEED_VARIABLES: Mapping[str, tuple] = {
    "ORCHESTRATOR_ENABLED": ("orchestrator", "enabled"),
    "GO_BACKEND_BINARY": (DEFAULT_PROCESS, "command"),
    "GO_BACKEND_URL": (DEFAULT_PROCESS, "url"),
    "BACKEND_WORKING_DIR": (DEFAULT_PROCESS, "working_dir"),
    "HEALTH_CHECK_INTERVAL": (DEFAULT_PROCESS, "health", "interval"),
    "HEALTH_CHECK_TIMEOUT": (DEFAULT_PROCESS, "health", "timeout"),
    "AUTO_RESTART": (DEFAULT_PROCESS, "restart", "auto"),
    "MAX_RESTART_ATTEMPTS": (DEFAULT_PROCESS, "restart", "max_attempts"),
    "ORCHESTRATOR_ADMIN_TOKEN": ("admin", "token"),
}

#: C{ORCHESTRATOR__A__B=value} sets the path C{a.b}.
GENERIC_PREFIX = "ORCHESTRATOR__"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Override:
    """
    One value from a layer above the YAML file.

    @ivar raw: a string from C{.env} or the environment; already typed
        from the command line.
    @ivar source: C{".env"}, C{"env"} or C{"cli"}.
    @ivar where: how an error names it (C{.env:3: AUTO_RESTART}).
    @ivar variable: the environment variable, if any.
    @ivar folder: where relative paths in the value resolve (the C{.env}
        file's folder), or C{None} for the configuration file's folder.
    """

    path: tuple
    raw: Any
    source: str
    where: str
    variable: str | None = None
    folder: str | None = None


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


def _types(schema: dict) -> list[str]:
    types = schema.get("type")
    if types is None and "enum" in schema:
        names = {type(v).__name__ for v in schema["enum"]}
        types = sorted({"null" if t == "NoneType" else ("string" if t == "str" else t) for t in names})
    if isinstance(types, str):
        types = [types]
    return types or ["string"]


def convert(raw: str, schema: dict) -> Any:
    """
    Convert an environment string to the type the schema wants.

    @raise ValueError: with the operator's explanation.
    """
    types = _types(schema)
    if "null" in types and raw.strip().lower() in ("", "null", "none"):
        return None
    if isDuration(schema):
        return parseDuration(raw)
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
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as e:
                raise ValueError(f"{raw!r} is not a JSON list: {e}") from None
        items = schema.get("items", {})
        words = shlex.split(raw) if items.get("type") == "string" else raw.split(",")
        if items.get("type") in ("integer", "number"):
            return [convert(w, items) for w in words if w.strip()]
        return words
    if "object" in types:
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{raw!r} is not a JSON object: {e}") from None
    return raw


def environmentOverrides(environ: Mapping[str, str], source: str, defaultProcess: str,
                         whereOf: Callable[[str], str], folder: str | None = None
                         ) -> tuple[list[Override], list[str]]:
    """
    The overrides a set of variables makes.

    @return: the overrides and the problems (malformed variable names).
    """
    overrides, problems = [], []
    for name, raw in environ.items():
        if name in SEED_VARIABLES:
            path = tuple(
                part
                for p in SEED_VARIABLES[name]
                for part in (("processes", defaultProcess) if p is DEFAULT_PROCESS else (p,))
            )
            overrides.append(Override(path, raw, source, whereOf(name), name, folder))
        elif name.startswith(GENERIC_PREFIX):
            parts = name[len(GENERIC_PREFIX):].split("__")
            if not all(parts):
                problems.append(f"{whereOf(name)}: malformed variable name")
                continue
            overrides.append(Override(tuple(parts), raw, source, whereOf(name), name, folder))
    return overrides, problems


def matchKeyCase(schema: dict, data: dict, path: tuple) -> tuple:
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


def anchorRelativePaths(value: Any, target: tuple, schema: dict, folder: str) -> Any:
    """
    Make the relative paths in an override's value absolute against
    C{folder} (a C{.env} file's folder): keys whose schema says
    C{"format": "path"}, and a command's executable when it names a path
    (has a separator) rather than a program on C{PATH}.
    """
    def anchored(path: str) -> str:
        return os.path.normpath(os.path.join(folder, os.path.expanduser(path)))

    if schema.get("format") == "path" and isinstance(value, str) and value:
        return anchored(value)
    if target[:1] == ("processes",) and target[-1:] == ("command",) and isinstance(value, list) \
            and value and isinstance(value[0], str) and os.sep in value[0]:
        return [anchored(value[0])] + value[1:]
    if target[:1] == ("processes",) and target[-2:-1] == ("command",) and target[-1] == 0 \
            and isinstance(value, str) and os.sep in value:
        return anchored(value)
    return value
