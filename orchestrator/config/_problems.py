"""
Collect configuration problems and warnings, each located in the
operator's terms: C{FILE:LINE:COL: json.path: message} for a YAML value,
C{.env:LINE: NAME: ...} for a C{.env} line, C{env NAME: ...} for the
environment, C{option --NAME: ...} for the command line.
"""

from __future__ import annotations

from typing import Iterable

from orchestrator.config._yamlmarks import Located
from orchestrator.errors import ConfigError

__all__ = ["Problems", "dottedPath"]


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


class Problems:
    """
    Collects located problems (which reject the configuration) and
    warnings (which are reported and let it run).

    @ivar origins: JSON path -> how the override that set it is named
        (C{env GO_BACKEND_URL}, C{.env:3: GO_BACKEND_BINARY}); a problem at
        or below that path is blamed on the override, not on the YAML
        value it replaced.
    @ivar settled: JSON paths already reported (a bad duration), whose
        schema errors would only repeat the news.
    """

    def __init__(self, filename: str | None, valueMarks, keyMarks) -> None:
        self.filename = filename or "<defaults>"
        self.valueMarks = valueMarks
        self.keyMarks = keyMarks
        self.origins: dict[tuple, str] = {}
        self.settled: set[tuple] = set()
        self.items: list[tuple[tuple, str]] = []
        self.warnings: list[tuple[tuple, str]] = []

    def _location(self, path: tuple, atKey: bool) -> tuple[tuple, str]:
        # An override replaced the whole value at its path: anything at or
        # below it is the override's doing, whatever the YAML said there.
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return (1, 0, 0), self.origins[path[:n]]
        # Something the YAML never mentioned but a variable created (a
        # process made by GO_BACKEND_URL) is located at that variable.
        if path and path not in self.valueMarks:
            below = [where for origin, where in self.origins.items() if origin[:len(path)] == path]
            if below:
                return (1, 0, 0), below[0]
        # Otherwise the nearest YAML node at or above the path.
        for n in range(len(path), -1, -1):
            prefix = path[:n]
            marks = self.keyMarks if (atKey and n == len(path)) else self.valueMarks
            mark: Located | None = marks.get(prefix) or self.valueMarks.get(prefix)
            if mark is not None and (n > 0 or not path):
                return (0, mark.line, mark.column), f"{self.filename}:{mark.line}:{mark.column}"
        return (0, 0, 0), self.filename

    def located(self, path: tuple, message: str, atKey: bool = False) -> tuple[tuple, str]:
        order, where = self._location(path, atKey)
        return order, f"{where}: {dottedPath(path)}: {message}"

    def add(self, path: tuple, message: str, atKey: bool = False) -> None:
        self.items.append(self.located(path, message, atKey))

    def warn(self, path: tuple, message: str) -> None:
        self.warnings.append(self.located(path, message))

    def addRaw(self, message: str, order=(2, 0, 0)) -> None:
        self.items.append((order, message))

    def sortedWarnings(self) -> tuple[str, ...]:
        return tuple(m for _, m in sorted(self.warnings, key=lambda item: item[0]))

    def raiseIfAny(self) -> None:
        """
        @raise ConfigError: with every problem, in file order; its
            C{warnings} attribute carries the warnings found so far, so
            C{check-config} can show them too.
        """
        if self.items:
            self.items.sort(key=lambda item: item[0])
            error = ConfigError([m for _, m in self.items])
            error.warnings = self.sortedWarnings()
            raise error
