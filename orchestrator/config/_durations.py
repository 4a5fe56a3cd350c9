"""
Durations: plain seconds (C{30}, C{0.5}) or Go-style strings (C{500ms},
C{30s}, C{1m30s}, C{1h}), in the YAML file and in the environment alike.

A schema key holds a duration when it says C{"format": "duration"};
L{orchestrator.config.schema.masterSchema} widens such keys to accept the
strings (so an editor validating against the published schema agrees), and
L{convertDurations} turns every string into seconds before validation, so
C{minimum} and friends apply to the number.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["DURATION_PATTERN", "parseDuration", "convertDurations", "isDuration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})(ns|us|µs|ms|s|m|h)")

#: What a duration string looks like (published in the schema).
DURATION_PATTERN = rf"^\s*[-+]?(?:{_NUMBER}(?:[eE][-+]?\d+)?|(?:{_NUMBER}(?:ns|us|µs|ms|s|m|h))+)\s*$"

_EXPLAIN = "is not a duration (seconds, or like 500ms, 30s, 1m30s, 1h)"


def isDuration(schema: Any) -> bool:
    """
    Whether a schema node describes a duration.
    """
    return isinstance(schema, dict) and schema.get("format") == "duration"


def parseDuration(raw: str) -> float:
    """
    Seconds from C{"30"}, C{"30s"}, C{"1m30s"}, C{"500ms"}, C{"1.5h"}.

    @raise ValueError: for anything else, or a value that is not finite.
    """
    text = raw.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in "+-" else text
    try:
        seconds = float(body)
    except ValueError:
        parts = _PART.findall(body)
        if not parts or "".join(n + u for n, u in parts) != body:
            raise ValueError(f"{raw!r} {_EXPLAIN}") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or body.lower() in ("nan", "inf", "infinity"):
        raise ValueError(f"{raw!r} is not a finite number")
    return sign * seconds


def convertDurations(schemaAt, data: Any, path: tuple = ()):
    """
    Replace every duration string in C{data} (in place) by its seconds.

    @param schemaAt: C{schemaAt(path)} -> the schema node of a path, or
        C{None}.
    @return: an iterator of C{(path, message)} for strings that are not
        durations (left as they are).
    """
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return
    for key, value in items:
        here = path + (key,)
        if isinstance(value, (dict, list)):
            yield from convertDurations(schemaAt, value, here)
        elif isinstance(value, str) and isDuration(schemaAt(here)):
            try:
                data[key] = parseDuration(value)
            except ValueError as e:
                yield here, str(e)
