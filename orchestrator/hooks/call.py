"""
Call a hook's implementations one by one, the way pluggy would pass the
arguments, but with each plugin's failure isolated.

pluggy lets an implementation accept a subset of the hook's arguments
(C{def startup(): ...} for C{startup(orchestrator)}): it passes only the
names in C{impl.argnames}.  Calling C{impl.function(**everything)} breaks
that rule, and a broadcast through C{pm.hook.name(...)} stops at the
first implementation that raises.  Every call site of the core goes
through L{callHook} (synchronous, registration hooks) or
L{callHookDeferred} (life-cycle hooks that may return a Deferred).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

__all__ = ["HookCall", "callHook", "callHookDeferred", "pluginNames"]

_log = Logger(namespace="orchestrator.hooks")


@dataclass(frozen=True)
class HookCall:
    """
    What one plugin's implementation did: its C{result}, or the
    C{failure} it raised.
    """

    plugin: str
    result: Any = None
    failure: Failure | None = None


def pluginNames(pm) -> set[str]:
    """
    The names of the plugins registered on C{pm}.
    """
    return {name for name, _ in pm.list_name_plugin()}


def _impls(pm, hookName: str, only: Iterable[str] | None):
    wanted = set(only) if only is not None else None
    for impl in getattr(pm.hook, hookName).get_hookimpls():
        name = pm.get_name(impl.plugin) or repr(impl.plugin)
        if wanted is not None and name not in wanted:
            continue
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            _log.warn("plugin {plugin}: a wrapper implementation of {hook} is not supported; skipped",
                      plugin=name, hook=hookName)
            continue
        yield name, impl


def _arguments(impl, kwargs: dict) -> dict:
    return {name: kwargs[name] for name in impl.argnames if name in kwargs}


def callHook(pm, hookName: str, only: Iterable[str] | None = None, **kwargs) -> list[HookCall]:
    """
    Call every implementation of C{hookName} in registration order (the
    built-ins first), each with only the arguments it declares.

    @param only: plugin names to call (default: all).
    @return: one L{HookCall} per implementation; a failure is returned,
        never raised, so the caller decides (a registration hook makes it a
        configuration problem, a life-cycle hook logs it).
    """
    calls = []
    for name, impl in _impls(pm, hookName, only):
        try:
            calls.append(HookCall(name, impl.function(**_arguments(impl, kwargs))))
        except Exception:
            calls.append(HookCall(name, failure=Failure()))
    return calls


def callHookDeferred(pm, hookName: str, failures: Counter | None = None,
                     only: Iterable[str] | None = None,
                     onFailure: Callable[[str, Failure], None] | None = None, **kwargs) -> Deferred:
    """
    Call every implementation of a life-cycle hook, waiting for the
    Deferreds they return.  A plugin that raises or fails is logged with
    its name, counted in C{failures[(plugin, hookName)]} and reported to
    C{onFailure(plugin, failure)} if given; the others still run and the
    result is always a success.

    @return: a Deferred firing with C{None} when every call has ended.
    """
    waits = []
    for name, impl in _impls(pm, hookName, only):
        d = maybeDeferred(impl.function, **_arguments(impl, kwargs))

        def failed(failure, name=name):
            if failures is not None:
                failures[(name, hookName)] += 1
            _log.failure("plugin {plugin} failed in {hook}", failure, plugin=name, hook=hookName,
                         level=LogLevel.error)
            if onFailure is not None:
                onFailure(name, failure)

        waits.append(d.addErrback(failed))
    return DeferredList(waits).addCallback(lambda _: None)
