#!/usr/bin/env python3
"""
Cost of the orchestrator's spawn mechanism.

L{orchestrator.spawn.SessionProcess} forks (posix_spawn cannot run setsid
and PR_SET_PDEATHSIG in the child) where Twisted's default
C{reactor.spawnProcess} uses posix_spawn.  With a real epoll reactor, in a
process that has imported what the orchestrator imports, this spawns
C{/bin/true} N times with each mechanism (alternating in rounds, so drift
and noise hit both alike) and records:

- C{call}: how long the spawn call blocks the reactor (for the fork path
  this is when the child pid exists: fork returns in the parent after the
  child is created);
- C{exit}: spawn call to C{processExited} (child set-up, exec, exit, SIGCHLD,
  reaping).

Then the same with C{--ballast-mb} of touched memory in the parent, because
fork copies the page tables of the whole parent and posix_spawn (vfork)
does not.  Run with the project's venv Python.

Usage: .venv/bin/python bench/spawn_cost.py [--spawns 200] [--ballast-mb 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet import process as _process  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402

# What the orchestrator itself imports, so the parent's size is realistic.
import orchestrator.service  # noqa: E402,F401
import orchestrator.web.service  # noqa: E402,F401
import plugins.notifiers  # noqa: E402,F401
import plugins.probes  # noqa: E402,F401
from orchestrator.spawn import SessionProcess  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import rssMB, summary, table  # noqa: E402


class _Exited(ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred = Deferred()

    def processExited(self, reason) -> None:
        self.done.callback(time.perf_counter())


def _session(protocol):
    return SessionProcess(reactor, "/bin/true", ["/bin/true"], {"PATH": os.defpath}, None, protocol)


def _default(protocol):
    return reactor.spawnProcess(protocol, "/bin/true", ["/bin/true"], {"PATH": os.defpath}, None)


class _PlainFork(_process.Process):
    """
    Twisted's own fork path, without setsid and prctl: separates the price
    of forking from the price of what the child does before exec.
    """

    def _trySpawnInsteadOfFork(self, *args):
        return False


def _plainFork(protocol):
    return _PlainFork(reactor, "/bin/true", ["/bin/true"], {"PATH": os.defpath}, None, protocol)


_WRAPPED = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "/usr/bin/setsid", "/bin/true"]


def _wrapped(protocol):
    return reactor.spawnProcess(protocol, _WRAPPED[0], _WRAPPED, {"PATH": os.defpath}, None)


MECHANISMS = {"SessionProcess (fork+setsid+pdeathsig)": _session,
              "Twisted fork path (no setsid/pdeathsig)": _plainFork,
              "reactor.spawnProcess (posix_spawn)": _default}
if all(os.access(path, os.X_OK) for path in (_WRAPPED[0], _WRAPPED[3])):
    MECHANISMS["posix_spawn of setpriv --pdeathsig KILL setsid CMD"] = _wrapped


@inlineCallbacks
def _run(spawns: int, rounds: int, results: dict):
    perRound = max(1, spawns // rounds)
    for _ in range(rounds):
        for name, spawn in MECHANISMS.items():
            for _ in range(perRound):
                protocol = _Exited()
                t0 = time.perf_counter()
                spawn(protocol)
                t1 = time.perf_counter()
                exited = yield protocol.done
                results[name]["call"].append(t1 - t0)
                results[name]["exit"].append(exited - t0)


@inlineCallbacks
def measure(spawns: int, rounds: int = 5):
    results = {name: {"call": [], "exit": []} for name in MECHANISMS}
    yield _run(spawns, rounds, results)
    return {name: {"call": summary(v["call"]), "exit": summary(v["exit"])}
            for name, v in results.items()}


@inlineCallbacks
def _all(args, data):
    ballast = None
    for extra in ([0, args.ballast_mb] if args.ballast_mb else [0]):
        if extra:
            ballast = bytearray(extra * 1024 * 1024)
            for i in range(0, len(ballast), 4096):
                ballast[i] = 1  # touch every page
        rss = rssMB(os.getpid())
        results = yield measure(args.spawns)
        data["runs"].append({"ballast_mb": extra, "rss_mb": rss, "results": results})
    del ballast


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--ballast-mb", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data = {"spawns": args.spawns, "runs": []}
    failures = []

    def go():
        d = _all(args, data)
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()  # installs the SIGCHLD waker, as under twistd
    if failures:
        failures[0].raiseException()
    rows = []
    for run in data["runs"]:
        fork = run["results"]["SessionProcess (fork+setsid+pdeathsig)"]
        spawn = run["results"]["reactor.spawnProcess (posix_spawn)"]
        for name, r in run["results"].items():
            rows.append([f"{run['rss_mb']:.0f} MB", name,
                         f"{r['call']['median'] * 1e3:.3f} ms", f"{r['call']['p95'] * 1e3:.3f} ms",
                         f"{r['exit']['median'] * 1e3:.3f} ms", f"{r['exit']['p95'] * 1e3:.3f} ms",
                         r["call"]["n"]])
        rows.append([f"{run['rss_mb']:.0f} MB", "ratio SessionProcess / posix_spawn",
                     f"{fork['call']['median'] / spawn['call']['median']:.2f}x", "",
                     f"{fork['exit']['median'] / spawn['exit']['median']:.2f}x", "", ""])
    data["table"] = table(["parent RSS", "mechanism", "spawn call median", "call p95",
                           "spawn -> processExited median", "exited p95", "n"], rows)
    if args.json:
        print(json.dumps(data))
    else:
        print(data["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
