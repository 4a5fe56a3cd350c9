"""
One shared copy of equal immutable values.

Five hundred processes configured alike hold five hundred equal restart,
stop and output settings, probe options and environments: a few kilobytes
each that an L{Interner} turns into one object, so a configuration's memory
grows with what differs between its processes, not with their number.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Mapping, TypeVar

__all__ = ["Interner"]

T = TypeVar("T")


class Interner:
    """
    Hands back the first of equal values it was given.

    Values are compared by type and content, every field included (also
    those left out of a dataclass's C{==}, such as L{HealthConfig.env}), so
    a shared object is indistinguishable from the one it replaces.  Meant
    for one load of a configuration: it keeps every value it saw until it
    is dropped.

    @see: L{orchestrator.config.types.freeze}, whose read-only mappings and
        tuples are what it shares.
    """

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def __call__(self, value: T) -> T:
        try:
            key = _key(value)
            return self._seen.setdefault(key, value)
        except TypeError:  # something unhashable inside: not shared
            return value


def _key(value: Any) -> Any:
    """
    A hashable key equal only for values of the same types and contents.

    @raise TypeError: a leaf is unhashable.
    """
    if isinstance(value, Mapping):
        return (type(value), tuple((_key(k), _key(v)) for k, v in value.items()))
    if isinstance(value, tuple):
        return (type(value), tuple(_key(v) for v in value))
    if is_dataclass(value) and not isinstance(value, type):
        return (type(value), tuple(_key(getattr(value, f.name)) for f in fields(value)))
    hash(value)
    return (type(value), value)
