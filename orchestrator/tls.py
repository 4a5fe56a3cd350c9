"""
TLS support is loaded only when the configuration uses it.

Twisted offers TLS through pyOpenSSL, and imports it as soon as the
reactor, C{twisted.internet.endpoints} or C{twisted.web.client} is
imported, whenever pyOpenSSL is installed (treq, which the webhooks use,
installs it).  pyOpenSSL brings cryptography's Rust extension and
service_identity: about 12 MiB of resident memory and 50 ms of start-up,
a fifth of the orchestrator's footprint, for nothing when the admin API
listens on plain TCP or a Unix socket and every probe and webhook is
C{http://}.

So when C{twistd orchestrator} starts, once the configuration is merged
and before anything imports the reactor, L{leaveOut} records pyOpenSSL
and service_identity as absent in C{sys.modules} (Python's own way to
say "this module cannot be imported").  Twisted was written for
installations without pyOpenSSL: its reactor, endpoints and web client
then simply offer no TLS.  Nothing else changes.

The decision is made once, at start: TLS cannot be loaded later into a
reactor that was built without it.  A reload that brings in the first
C{https://} URL (or an C{ssl:} listener) is therefore refused with a
located error saying so (L{problems}); C{orchestrator.tls: always} loads
TLS at every start, for such reloads and for plugins that open TLS
connections of their own.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Iterator

__all__ = ["MODULES", "available", "leaveOut", "leftOut", "problems", "uses"]

#: What Twisted imports for TLS, and is ready to find missing.
MODULES = ("OpenSSL", "service_identity")

# Values under these keys are handed to children or shells, not to the
# orchestrator's own TLS clients: a command that mentions an https URL
# does not need TLS here.
_NOT_OURS = frozenset({"command", "environment", "env", "args"})


def uses(data: Any) -> list[tuple]:
    """
    Where a merged configuration (plain data, before it is built) needs TLS
    in the orchestrator itself: an C{ssl:} admin listener, and every
    C{https://} URL (probes, webhooks, plugin options) outside commands and
    environments.

    @return: JSON paths, in document order.
    """
    found = []
    admin = data.get("admin") if isinstance(data, dict) else None
    listen = admin.get("listen") if isinstance(admin, dict) else None
    if isinstance(listen, str) and listen.strip().lower().startswith("ssl:"):
        found.append(("admin", "listen"))
    for path, value in _strings(data, ()):
        if value.strip().lower().startswith("https://"):
            found.append(path)
    return found


def _strings(value: Any, path: tuple) -> Iterator[tuple[tuple, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_OURS:
                yield from _strings(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, path + (index,))


def leftOut() -> bool:
    """
    Whether L{leaveOut} left TLS out of this process.
    """
    return sys.modules.get(MODULES[0], True) is None


def available() -> bool:
    """
    Whether this process can open TLS connections: pyOpenSSL is installed
    and was not left out.
    """
    if MODULES[0] in sys.modules:
        return sys.modules[MODULES[0]] is not None
    try:
        return importlib.util.find_spec(MODULES[0]) is not None
    except (ImportError, ValueError):
        return False


def leaveOut() -> bool:
    """
    Leave TLS out of this process, unless something imported pyOpenSSL
    already (a plugin that needs it at import: then it stays).

    @return: whether TLS is now left out.
    """
    if any(sys.modules.get(name) is not None for name in MODULES):
        return False
    for name in MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    return True


def problems(paths: list[tuple]) -> list[tuple[tuple, str]]:
    """
    The located reasons a configuration cannot run in this process: it
    needs TLS at C{paths} (what L{uses} found) but TLS is not available
    here.
    """
    if not paths or available():
        return []
    if leftOut():
        why = ("needs TLS, which this orchestrator left out at start because its configuration "
               "then used none; restart the orchestrator to load it (or set orchestrator.tls: "
               "always to load it at every start)")
    else:
        why = "needs TLS, but pyOpenSSL is not installed (pip install 'twisted[tls]')"
    return [(path, why) for path in paths]
