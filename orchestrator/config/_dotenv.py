"""
The C{.env} file: which one is read, and its values with the line that set
each one.

python-dotenv drops a line it cannot parse with only a warning; here such
a line is a configuration error naming its line, like every other
problem, and the file is read with the same bound as the YAML file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from dotenv.main import resolve_variables
from dotenv.parser import parse_stream

from orchestrator.config._read import readText
from orchestrator.errors import ConfigError

__all__ = ["DotenvFile", "findDotenv", "readDotenv"]


@dataclass(frozen=True)
class DotenvFile:
    """
    A C{.env} file as read.

    @ivar path: the file as messages name it, or C{None} when none is used.
    @ivar folder: the absolute folder relative paths in its values resolve
        against.
    @ivar values: name -> value (variables interpolated as python-dotenv
        does: C{${NAME}} from earlier lines or the environment).
    @ivar lines: name -> the line that set the value (the last one).
    """

    path: str | None = None
    folder: str | None = None
    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


def findDotenv(explicit: str | None, configPath: str | None) -> str | None:
    """
    Which C{.env} file a run uses: the one named on the command line; else
    C{./.env}; else the C{.env} beside the YAML file; else none.
    """
    if explicit is not None:
        return explicit
    if os.path.isfile(".env"):
        return ".env"
    if configPath is not None:
        beside = os.path.join(os.path.dirname(os.path.abspath(configPath)), ".env")
        if os.path.isfile(beside):
            return beside
    return None


def readDotenv(path: str | None) -> tuple[DotenvFile, list[str]]:
    """
    Read and parse a C{.env} file.

    @return: the file's values and the problems found (each
        C{PATH:LINE: message}); values of the lines that parsed are kept
        so that later checks still run.
    """
    if path is None:
        return DotenvFile(), []
    if path != os.devnull and not os.path.isfile(path):
        return DotenvFile(path), [f"{path}: no such .env file"]
    try:
        text = readText(path, ".env")
    except ConfigError as e:
        return DotenvFile(path), list(e.problems)
    problems, pairs, lines = [], [], {}
    for binding in parse_stream(io.StringIO(text)):
        # A binding's text starts with the blank lines before it.
        original = binding.original.string
        blank = len(original) - len(original.lstrip())
        line = binding.original.line + original.count("\n", 0, blank)
        if binding.error:
            # Never echo the line: it may hold a secret.
            problems.append(f"{path}:{line}: cannot parse this line "
                            "(expected NAME=value, a comment or a blank line)")
        elif binding.key is not None:
            pairs.append((binding.key, binding.value))
            lines[binding.key] = line
    values = {k: (v if v is not None else "") for k, v in resolve_variables(pairs, override=True).items()}
    folder = os.path.dirname(os.path.abspath(path))
    return DotenvFile(path, folder, MappingProxyType(values), MappingProxyType(lines)), problems
