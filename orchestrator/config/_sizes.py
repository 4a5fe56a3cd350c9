"""
Memory sizes: bytes as an integer, or a string such as C{"512MiB"},
C{"2G"}, C{"1.5GiB"} (K, M, G, T are powers of 1000; Ki, Mi, Gi, Ti of
1024), in the YAML file and in the environment alike.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parseBytes"]

_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}


def parseBytes(value: Any) -> int | None:
    """
    A memory size as bytes: an integer, or a string such as C{"512MiB"},
    C{"2G"}, C{"1.5GiB"}; C{None} for anything else.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
    if match is None or match.group(2).lower() not in _BYTE_UNITS:
        return None
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])
